#!/usr/bin/env python3
"""The log-analysis example's "top 10 errors" in Spark SQL over one checkpointed iteration.

`kinesis-reader plan` fixes the iteration and writes its manifest; Spark SQL's
`SELECT TRANSFORM(line) USING 'kinesis-reader --shards-from-stdin …'` runs the reader in map
mode over the manifest (Hive support off: Spark's own script transform); the parsing, grouping
and ordering are SQL; `kinesis-reader finish` marks the iteration succeeded only after the query
did. Prints the top 10 as `<status> <region><TAB><count>`, largest first (ties by key), as
log-analysis/reducer.py does.

    top_errors_sql.py --stream access-logs --checkpoint-table emr-checkpoints --logical-name top

Needs pyspark (PyPI) and Java 17; kinesis-reader on the PATH (or --reader PATH).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

from pyspark.sql import SparkSession

QUERY = r"""
WITH records AS (
  SELECT TRANSFORM(line)
    USING '{reader} --shards-from-stdin --checkpoint-table {table}'
    AS (partition_key STRING, data STRING)
    -- the reader's lines are tab-separated (Spark's own default is \u0001)
    ROW FORMAT DELIMITED FIELDS TERMINATED BY '\t'
  FROM manifest
),
parsed AS (
  SELECT regexp_extract(data, '"[A-Z]+ [^"]*" (\\d{{3}}) .* region=(\\S+)', 1) AS status,
         regexp_extract(data, '"[A-Z]+ [^"]*" (\\d{{3}}) .* region=(\\S+)', 2) AS region
  FROM records
)
SELECT concat(status, ' ', region) AS key, count(*) AS n
FROM parsed
WHERE status != '' AND CAST(status AS INT) >= 400
GROUP BY status, region
ORDER BY n DESC, key
LIMIT 10
"""


def reader(args, *extra):
    cmd = [args.reader, *extra, "--stream", args.stream, "--checkpoint-table", args.table,
           "--logical-name", args.logical_name]
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE).stdout.decode()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stream", required=True)
    p.add_argument("--checkpoint-table", dest="table", required=True)
    p.add_argument("--logical-name", required=True)
    p.add_argument("--iteration", default="next")
    p.add_argument("--reader", default="kinesis-reader")
    args = p.parse_args()

    manifest = reader(args, "plan", "--iteration", args.iteration)
    n = json.loads(manifest.splitlines()[0])["iteration"]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "manifest.txt")
        with open(path, "w") as f:
            f.write(manifest)
        spark = (SparkSession.builder.master("local[2]").appName(f"top errors, iteration {n}")
                 .config("spark.sql.catalogImplementation", "in-memory")
                 .config("spark.ui.enabled", "false")
                 .config("spark.driver.bindAddress", "127.0.0.1")
                 .config("spark.driver.host", "127.0.0.1")
                 .getOrCreate())
        try:
            spark.read.text(path).withColumnRenamed("value", "line").createOrReplaceTempView(
                "manifest")
            rows = spark.sql(QUERY.format(reader=args.reader, table=args.table)).collect()
        finally:
            spark.stop()
    for row in rows:
        print(f"{row['key']}\t{row['n']}")
    sys.stdout.flush()
    reader(args, "finish", "--iteration", str(n))


if __name__ == "__main__":
    main()
