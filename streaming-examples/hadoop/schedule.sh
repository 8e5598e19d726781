#!/usr/bin/env bash
# A scheduled job: one iteration of the log analysis per run, from cron, e.g. every 5 minutes:
#
#   */5 * * * *  /opt/jobs/schedule.sh >>/var/log/top-errors.log 2>&1
#
# flock keeps runs from overlapping (a slow run makes the next one skip, not pile up).
# `--iteration next` runs a failed iteration again before opening a new one, and exec mode marks
# an iteration succeeded only when the whole pipeline after `--` exits 0 — unlike AWS's old
# scheduling sample, which advanced its iteration counter even when the job failed.
#
# Settings: STREAM, CHECKPOINTS, LOGICAL_NAME, OUTPUT (an s3:// prefix), LOCK.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
STREAM=${STREAM:-access-logs}
CHECKPOINTS=${CHECKPOINTS:-emr-checkpoints}
LOGICAL_NAME=${LOGICAL_NAME:-top-errors-scheduled}
OUTPUT=${OUTPUT:-s3://results/top-errors-scheduled/}
LOCK=${LOCK:-/tmp/kinesis-$LOGICAL_NAME.lock}
EX="$HERE/../log-analysis"

exec flock --nonblock --conflict-exit-code 0 "$LOCK" \
  kinesis-reader --stream "$STREAM" --checkpoint-table "$CHECKPOINTS" \
    --logical-name "$LOGICAL_NAME" --iteration next -- sh -c "
      python3 '$EX/mapper.py' | sort | python3 '$EX/reducer.py' | kinesis-writer '$OUTPUT'"
