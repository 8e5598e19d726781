-- The log-analysis example's "top 10 errors" in HiveQL over one planned iteration. TRANSFORM
-- runs kinesis-reader in map mode over the manifest lines `kinesis-reader plan` wrote; the
-- parsing, grouping and ordering are Hive's. Run by top-errors.sh, which plans and finishes.
--
-- Variables: manifest (the plan's output, a local file), table (the checkpoint table), reader
-- (the kinesis-reader binary, added to the job so that its tasks find it).
--
-- Hive hands TRANSFORM's script the job's settings as environment variables, '.' turned into
-- '_': that is how the reader gets its table, under the name EMR's connector used.
SET kinesis.checkpoint.metastore.table.name=${hivevar:table};
ADD FILE ${hivevar:reader};

CREATE TEMPORARY TABLE manifest (line STRING);
LOAD DATA LOCAL INPATH '${hivevar:manifest}' INTO TABLE manifest;

WITH records AS (
  -- TRANSFORM's rows are tab-separated both ways, as the reader's lines are.
  SELECT TRANSFORM(line)
    USING 'kinesis-reader --shards-from-stdin'
    AS (partition_key STRING, data STRING)
  FROM manifest
),
parsed AS (
  -- The same pattern as log-analysis/mapper.py: the status and region of an access-log line.
  SELECT regexp_extract(data, '"[A-Z]+ [^"]*" (\\d{3}) .* region=(\\S+)', 1) AS status,
         regexp_extract(data, '"[A-Z]+ [^"]*" (\\d{3}) .* region=(\\S+)', 2) AS region
  FROM records
)
SELECT concat(status, ' ', region) AS key, count(*) AS n
FROM parsed
WHERE status != '' AND CAST(status AS INT) >= 400
GROUP BY status, region
ORDER BY n DESC, key
LIMIT 10;
