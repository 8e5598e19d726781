#!/usr/bin/env bash
# Ad-hoc interactive queries: each iteration of an access-log stream is loaded into S3 as one
# partition of a table (s3://BUCKET/access_logs/iteration_no=N/part-00000), ready for the
# Hive/Impala/Athena DDL in tables.hql.
#
# What it shows: kinesis-writer's key template (a rerun of an iteration overwrites its own
# partition, never adds a second copy), two iterations continuing one another, and — since no
# Hive runs here — the first query of tables.hql computed with awk over the loaded partition.
#
#   streaming-examples/adhoc-queries/run.sh     # on AWS, or on the emulator (AWS_ENDPOINT_URL)
# Needs kinesis-reader and kinesis-writer on the PATH, python3 with boto3. Names: STREAM, BUCKET,
# CHECKPOINTS.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
STREAM=${STREAM:-access-logs-adhoc}
BUCKET=${BUCKET:-adhoc-queries}
CHECKPOINTS=${CHECKPOINTS:-emr-checkpoints}
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

kinesis-reader create-table --checkpoint-table "$CHECKPOINTS"
$PY -c "import boto3,sys; boto3.client('s3').create_bucket(Bucket=sys.argv[1])" "$BUCKET"
load() {
  kinesis-reader --stream "$STREAM" --checkpoint-table "$CHECKPOINTS" \
      --logical-name adhoc --iteration next -- sh -c "
    python3 '$HERE/to_columns.py' | kinesis-writer s3://$BUCKET/access_logs/ \
        --key-template 'iteration_no={iteration}/part-{partition}'"
}
$PY "$HERE/../log-analysis/produce.py" --stream "$STREAM" --shards 2 --records 800 --seed 3
load
$PY "$HERE/../log-analysis/produce.py" --stream "$STREAM" --records 300 --seed 4
load

echo "== partitions"
$PY - "$BUCKET" "$WORK" <<'PY'
import sys, boto3
s3 = boto3.client("s3")
bucket, work = sys.argv[1], sys.argv[2]
for o in s3.list_objects_v2(Bucket=bucket, Prefix="access_logs/")["Contents"]:
    body = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
    rows = body.count(b"\n")
    print(f"s3://{bucket}/{o['Key']}\t{rows} rows")
    if o["Key"].startswith("access_logs/iteration_no=1/"):
        open(f"{work}/iteration1.tsv", "wb").write(body)
PY
echo "== SELECT region, count(*) FROM access_logs WHERE iteration_no = 1 AND status >= 500 GROUP BY region"
awk -F'\t' '$5 >= 500 { n[$8]++ } END { for (r in n) print r "\t" n[r] }' "$WORK/iteration1.tsv" \
  | sort -t "$(printf '\t')" -k2,2nr -k1,1
