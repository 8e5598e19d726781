-- The log-analysis job (errors per status and region) in Pig Latin over one planned iteration.
-- STREAM runs kinesis-reader in map mode over the manifest lines `kinesis-reader plan` wrote;
-- the grouping and counting are Pig's. Run by top-errors.sh, which plans and finishes.
--
-- Parameters: MANIFEST (the plan's output), OUTPUT (a directory), TABLE (the checkpoint
-- table), READER (the kinesis-reader binary, shipped to the tasks).
--
-- Pig passes a task only the jobconf keys named in pig.streaming.environment, as
-- environment variables with '.' turned into '_': that is how the reader gets its table.
SET kinesis.checkpoint.metastore.table.name '$TABLE';
SET pig.streaming.environment 'kinesis.checkpoint.metastore.table.name';

DEFINE kinesis_reader `kinesis-reader --shards-from-stdin --fields partition_key,data`
    SHIP('$READER');

manifest = LOAD '$MANIFEST' USING PigStorage('\n') AS (line:chararray);
records = STREAM manifest THROUGH kinesis_reader AS (partition_key:chararray, data:chararray);
-- The same pattern as log-analysis/mapper.py: the status and region of an access-log line.
parsed = FOREACH records GENERATE
    REGEX_EXTRACT(data, '"[A-Z]+ [^"]*" (\\d{3}) .* region=(\\S+)', 1) AS status,
    REGEX_EXTRACT(data, '"[A-Z]+ [^"]*" (\\d{3}) .* region=(\\S+)', 2) AS region;
errors = FILTER parsed BY status IS NOT NULL AND (int)status >= 400;
grouped = GROUP errors BY (status, region);
counts = FOREACH grouped GENERATE CONCAT(CONCAT(group.status, ' '), group.region), COUNT(errors);
STORE counts INTO '$OUTPUT' USING PigStorage('\t');
