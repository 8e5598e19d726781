#!/usr/bin/env bash
# The log-analysis job with Pig, one iteration per run: `kinesis-reader plan` fixes the iteration
# and writes its manifest, top_errors.pig streams the manifest through kinesis-reader in map mode
# and counts errors per status and region in Pig Latin, and `kinesis-reader finish` marks the
# iteration succeeded only after Pig did. A failed run is planned again, with the same records.
#
#   top-errors.sh access-logs emr-checkpoints top-errors /tmp/top-errors-out
#
# PIG is the pig command (default `pig`; `pig -x local` runs it on this machine), KINESIS_BIN
# where kinesis-reader is (default /usr/local/bin). The result goes to OUTPUT/iteration=N.
set -euo pipefail
STREAM=$1 TABLE=$2 LOGICAL=$3 OUTPUT=$4
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${KINESIS_BIN:-/usr/local/bin}
read -r -a PIG <<<"${PIG:-pig}"

MANIFEST=$(mktemp)
trap 'rm -f "$MANIFEST"' EXIT
"$BIN/kinesis-reader" plan --stream "$STREAM" --checkpoint-table "$TABLE" \
    --logical-name "$LOGICAL" --iteration next >"$MANIFEST"
N=$(sed -n '1s/.*"iteration":\([0-9]*\).*/\1/p' "$MANIFEST")
"${PIG[@]}" -param MANIFEST="$MANIFEST" -param OUTPUT="$OUTPUT/iteration=$N" \
    -param TABLE="$TABLE" -param READER="$BIN/kinesis-reader" "$HERE/top_errors.pig"
"$BIN/kinesis-reader" finish --stream "$STREAM" --checkpoint-table "$TABLE" \
    --logical-name "$LOGICAL" --iteration "$N"
