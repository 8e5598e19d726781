#!/usr/bin/env bash
# The log-analysis example's "top 10 errors" with Hive, one iteration per run: `kinesis-reader
# plan` fixes the iteration and writes its manifest, top_errors.hql runs kinesis-reader in map
# mode over the manifest with Hive's TRANSFORM and does the parsing, grouping and ordering in
# HiveQL, and `kinesis-reader finish` marks the iteration succeeded only after Hive did. A
# failed run is planned again, with the same records. Prints the top 10 as
# `<status> <region><TAB><count>`, largest first (ties by key), as log-analysis/reducer.py does.
#
#   top-errors.sh access-logs emr-checkpoints top-errors
#
# HIVE is the hive command (default `hive`), KINESIS_BIN where kinesis-reader is (default
# /usr/local/bin). The manifest must be where Hive's LOAD DATA LOCAL reads it: this machine.
set -euo pipefail
STREAM=$1 TABLE=$2 LOGICAL=$3
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${KINESIS_BIN:-/usr/local/bin}
read -r -a HIVE <<<"${HIVE:-hive}"

MANIFEST=$(mktemp)
trap 'rm -f "$MANIFEST"' EXIT
"$BIN/kinesis-reader" plan --stream "$STREAM" --checkpoint-table "$TABLE" \
    --logical-name "$LOGICAL" --iteration next >"$MANIFEST"
N=$(sed -n '1s/.*"iteration":\([0-9]*\).*/\1/p' "$MANIFEST")
"${HIVE[@]}" -f "$HERE/top_errors.hql" --hivevar manifest="$MANIFEST" --hivevar table="$TABLE" \
    --hivevar reader="$BIN/kinesis-reader"
"$BIN/kinesis-reader" finish --stream "$STREAM" --checkpoint-table "$TABLE" \
    --logical-name "$LOGICAL" --iteration "$N"
