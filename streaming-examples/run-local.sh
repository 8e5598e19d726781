#!/usr/bin/env bash
# The main job, end to end, on the local emulator: web access logs go into a
# Kinesis stream; two checkpointed iterations are analysed by a Python
# mapper/reducer (top error types per region); each iteration's top 10 goes to
# S3 (one object per iteration, overwritten if rerun) and the running error
# totals to DynamoDB (added exactly once per iteration, even if rerun); a
# replay of iteration 0 prints byte-identical records. Needs only python3 and
# cargo; installs moto into .venv.
#
#   streaming-examples/run-local.sh
#   KINESIS_BIN=DIR streaming-examples/run-local.sh   # installed binaries in DIR, no cargo
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${EMULATOR_PORT:-4566}
scripts/emulator.sh stop "$PORT"
scripts/emulator.sh start "$PORT"
trap 'scripts/emulator.sh stop "$PORT"' EXIT
export AWS_ENDPOINT_URL="http://127.0.0.1:$PORT" AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
if [ -n "${KINESIS_BIN:-}" ]; then
  READER=$KINESIS_BIN/kinesis-reader
  WRITER=$KINESIS_BIN/kinesis-writer
else
  cargo build --quiet --bins
  READER=target/debug/kinesis-reader
  WRITER=target/debug/kinesis-writer
fi
PY=.venv/bin/python
EX=streaming-examples/log-analysis
OUT=target/example
rm -rf "$OUT" && mkdir -p "$OUT"
CHECKPOINTS=(--stream access-logs --checkpoint-table emr-checkpoints --logical-name top-errors)

$PY $EX/produce.py --stream access-logs --shards 4 --records 2000 --seed 1
$READER create-table --checkpoint-table emr-checkpoints
$PY - <<'PY'
import boto3
boto3.client("s3").create_bucket(Bucket="results")
boto3.client("dynamodb").create_table(
    TableName="error-totals", BillingMode="PAY_PER_REQUEST",
    KeySchema=[{"AttributeName": "error", "KeyType": "HASH"}],
    AttributeDefinitions=[{"AttributeName": "error", "AttributeType": "S"}])
PY

for n in 0 1; do
  echo "== iteration $n: top 10 errors by status and region"
  $READER "${CHECKPOINTS[@]}" --iteration $n >"$OUT/records-$n.tsv"
  python3 $EX/mapper.py <"$OUT/records-$n.tsv" | sort >"$OUT/mapped-$n.tsv"
  python3 $EX/reducer.py <"$OUT/mapped-$n.tsv" | tee "$OUT/top-$n.tsv"
  $WRITER s3://results/top-errors/ --logical-name top-errors --iteration $n <"$OUT/top-$n.tsv"
  python3 $EX/reducer.py --all <"$OUT/mapped-$n.tsv" \
    | $WRITER dynamodb://error-totals --columns error:S,count:N --mode add \
        --logical-name top-errors --iteration $n
  [ "$n" = 0 ] && $PY $EX/produce.py --stream access-logs --records 500 --seed 2
done

echo "== rerun of iteration 1 into DynamoDB: adds nothing twice"
python3 $EX/reducer.py --all <"$OUT/mapped-1.tsv" \
  | $WRITER dynamodb://error-totals --columns error:S,count:N --mode add \
      --logical-name top-errors --iteration 1

echo "== status"
$READER status "${CHECKPOINTS[@]}"

echo "== results"
$PY - <<'PY'
import boto3
s3 = boto3.client("s3")
for o in s3.list_objects_v2(Bucket="results")["Contents"]:
    print(f"s3://results/{o['Key']}  {o['Size']} bytes")
items = boto3.client("dynamodb").scan(TableName="error-totals")["Items"]
top = sorted(items, key=lambda i: -int(i["count"]["N"]))[:5]
print("error-totals (top 5 of %d):" % len(items),
      ", ".join(f"{i['error']['S']}={i['count']['N']}" for i in top))
PY

echo "== replay of iteration 0"
$READER "${CHECKPOINTS[@]}" --iteration 0 >"$OUT/replay-0.tsv"
if cmp -s "$OUT/records-0.tsv" "$OUT/replay-0.tsv"; then
  echo "replay of iteration 0 is byte-identical ($(wc -l <"$OUT/replay-0.tsv") records)"
else
  echo "replay of iteration 0 differs from its first run" >&2
  exit 1
fi
