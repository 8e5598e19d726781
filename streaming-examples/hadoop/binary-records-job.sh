#!/usr/bin/env bash
# Binary records through Hadoop Streaming with typed bytes (`-io typedbytes`): the map tasks
# are kinesis-reader in map mode writing `--format typedbytes` (the partition key as a string,
# the record's data as raw bytes, so tabs, newlines and every other byte value stay as they
# are), Hadoop sorts by key, and the reducer (typedbytes_reducer.py) re-encodes each record as
# `<partition key><TAB><base64 of the data>` lines for kinesis-writer. One iteration per run,
# planned first and finished after the job, as in emr-streaming-job.sh (whose environment
# settings this takes too: KINESIS_BIN, STREAMING_JAR, HADOOP, JOB_DIR, JOB_DEFINES,
# STREAMING_OPTS, PYTHON).
#
#   binary-records-job.sh sensor-frames emr-checkpoints frames s3://my-results/frames/
set -euo pipefail
STREAM=$1 TABLE=$2 LOGICAL=$3 OUTPUT=$4
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${KINESIS_BIN:-/usr/local/bin}
STREAMING_JAR=${STREAMING_JAR:-/usr/lib/hadoop/hadoop-streaming.jar}
HADOOP=${HADOOP:-hadoop}
JOB_DIR=${JOB_DIR:-/tmp/kinesis-jobs}
PYTHON=${PYTHON:-python3}
read -r -a DEFINES <<<"${JOB_DEFINES:-}"
read -r -a EXTRA <<<"${STREAMING_OPTS:-}"

MANIFEST=$(mktemp)
trap 'rm -f "$MANIFEST"' EXIT
"$BIN/kinesis-reader" plan --stream "$STREAM" --checkpoint-table "$TABLE" \
    --logical-name "$LOGICAL" --iteration next >"$MANIFEST"
N=$(sed -n '1s/.*"iteration":\([0-9]*\).*/\1/p' "$MANIFEST")
$HADOOP fs -mkdir -p "$JOB_DIR/manifests"
$HADOOP fs -put -f "$MANIFEST" "$JOB_DIR/manifests/$LOGICAL-$N.txt"

$HADOOP jar "$STREAMING_JAR" \
  -D mapreduce.job.name="$LOGICAL iteration $N (typed bytes)" \
  -D kinesis.stream.name="$STREAM" \
  -D kinesis.checkpoint.metastore.table.name="$TABLE" \
  -D kinesis.checkpoint.logical.name="$LOGICAL" \
  -D kinesis.checkpoint.iteration.no="$N" \
  -D mapreduce.job.reduces=2 \
  "${DEFINES[@]}" \
  -files "$BIN/kinesis-reader,$BIN/kinesis-writer,$HERE/typedbytes_reducer.py" \
  -io typedbytes \
  -inputformat org.apache.hadoop.mapred.lib.NLineInputFormat \
  -input "$JOB_DIR/manifests/$LOGICAL-$N.txt" \
  -output "$JOB_DIR/output/$LOGICAL-$N" \
  -mapper "./kinesis-reader --shards-from-stdin --format typedbytes --fields partition_key,data" \
  -reducer "bash -o pipefail -c '$PYTHON typedbytes_reducer.py | ./kinesis-writer $OUTPUT'" \
  "${EXTRA[@]}"

"$BIN/kinesis-reader" finish --stream "$STREAM" --checkpoint-table "$TABLE" \
    --logical-name "$LOGICAL" --iteration "$N"
