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
# The tests run this script as it is under Hadoop's LocalJobRunner (scripts/engines): see the
# README's "Real engines" table.
#
#   emr-streaming-job.sh access-logs emr-checkpoints top-errors s3://my-results/top-errors/
#
# Everything a cluster may differ in comes from the environment:
#   KINESIS_BIN      where kinesis-reader and kinesis-writer are      (/usr/local/bin)
#   STREAMING_JAR    the hadoop-streaming jar        (/usr/lib/hadoop/hadoop-streaming.jar)
#   HADOOP           the hadoop command                                            (hadoop)
#   JOB_DIR          where manifests and job output go: an HDFS path, or file:///… for a
#                    local runner                                            (/tmp/kinesis-jobs)
#   JOB_DEFINES      more generic options for the job, e.g. "-D mapreduce.job.reduces=4"
#   STREAMING_OPTS   more streaming options, e.g. "-cmdenv AWS_REGION=us-east-1" (a YARN
#                    container sees only the NodeManager's environment whitelist)
#   PYTHON           the mappers' and reducers' interpreter                        (python3)
set -euo pipefail
STREAM=$1 TABLE=$2 LOGICAL=$3 OUTPUT=$4
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${KINESIS_BIN:-/usr/local/bin}
STREAMING_JAR=${STREAMING_JAR:-/usr/lib/hadoop/hadoop-streaming.jar}
HADOOP=${HADOOP:-hadoop}
JOB_DIR=${JOB_DIR:-/tmp/kinesis-jobs}
PYTHON=${PYTHON:-python3}
# Word splitting is wanted here: each is a list of options.
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
  -D mapreduce.job.name="$LOGICAL iteration $N" \
  -D kinesis.stream.name="$STREAM" \
  -D kinesis.checkpoint.metastore.table.name="$TABLE" \
  -D kinesis.checkpoint.logical.name="$LOGICAL" \
  -D kinesis.checkpoint.iteration.no="$N" \
  -D mapreduce.map.speculative=true \
  -D mapreduce.job.reduces=2 \
  "${DEFINES[@]}" \
  -files "$BIN/kinesis-reader,$BIN/kinesis-writer,$HERE/../log-analysis/mapper.py,$HERE/../log-analysis/reducer.py" \
  -inputformat org.apache.hadoop.mapred.lib.NLineInputFormat \
  -input "$JOB_DIR/manifests/$LOGICAL-$N.txt" \
  -output "$JOB_DIR/output/$LOGICAL-$N" \
  -mapper "./kinesis-reader --shards-from-stdin -- $PYTHON mapper.py" \
  -reducer "bash -o pipefail -c '$PYTHON reducer.py --all | ./kinesis-writer $OUTPUT'" \
  "${EXTRA[@]}"

"$BIN/kinesis-reader" finish --stream "$STREAM" --checkpoint-table "$TABLE" \
    --logical-name "$LOGICAL" --iteration "$N"
