#!/usr/bin/env bash
# The log-analysis job on an EMR (or any Hadoop) cluster with hadoop-streaming, one iteration
# per run: `kinesis-reader plan` fixes the iteration and writes a manifest (one line per shard),
# NLineInputFormat gives each map task one line, each map task is kinesis-reader in map mode
# piping its shards' records into mapper.py, the reducers pipe their totals into kinesis-writer
# (one S3 object per reducer and iteration), and `kinesis-reader finish` marks the iteration
# succeeded only after the whole job did — so a failed job is planned again, unchanged, by the
# next run (`--iteration next`), and replays exactly the same records.
#
# Settings go in as -D with their EMR names; tasks see them as kinesis_* environment variables.
# Speculative map attempts are safe: a second attempt of a task waits for the first one's lease
# and then replays its fixed shards byte for byte (it never moves a boundary).
#
# Not run by the tests (there is no Hadoop cluster here): mrjob_top_errors.py is the same job,
# and the tests run it on mrjob's local runner, which starts map and reduce tasks the way
# Hadoop Streaming does.
#
#   emr-streaming-job.sh access-logs emr-checkpoints top-errors s3://my-results/top-errors/
set -euo pipefail
STREAM=$1 TABLE=$2 LOGICAL=$3 OUTPUT=$4
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${KINESIS_BIN:-/usr/local/bin}        # where kinesis-reader and kinesis-writer are
STREAMING_JAR=${STREAMING_JAR:-/usr/lib/hadoop/hadoop-streaming.jar}

MANIFEST=$(mktemp)
trap 'rm -f "$MANIFEST"' EXIT
"$BIN/kinesis-reader" plan --stream "$STREAM" --checkpoint-table "$TABLE" \
    --logical-name "$LOGICAL" --iteration next >"$MANIFEST"
N=$(sed -n '1s/.*"iteration":\([0-9]*\).*/\1/p' "$MANIFEST")
hdfs dfs -mkdir -p /tmp/kinesis-manifests
hdfs dfs -put -f "$MANIFEST" "/tmp/kinesis-manifests/$LOGICAL-$N.txt"

hadoop jar "$STREAMING_JAR" \
  -D mapreduce.job.name="$LOGICAL iteration $N" \
  -D kinesis.stream.name="$STREAM" \
  -D kinesis.checkpoint.metastore.table.name="$TABLE" \
  -D kinesis.checkpoint.logical.name="$LOGICAL" \
  -D kinesis.checkpoint.iteration.no="$N" \
  -D mapreduce.map.speculative=true \
  -D mapreduce.job.reduces=2 \
  -files "$BIN/kinesis-reader,$BIN/kinesis-writer,$HERE/../log-analysis/mapper.py,$HERE/../log-analysis/reducer.py" \
  -inputformat org.apache.hadoop.mapred.lib.NLineInputFormat \
  -input "/tmp/kinesis-manifests/$LOGICAL-$N.txt" \
  -output "/tmp/$LOGICAL-$N" \
  -mapper "./kinesis-reader --shards-from-stdin -- python3 mapper.py" \
  -reducer "sh -c 'python3 reducer.py --all | ./kinesis-writer $OUTPUT'"

"$BIN/kinesis-reader" finish --stream "$STREAM" --checkpoint-table "$TABLE" \
    --logical-name "$LOGICAL" --iteration "$N"
