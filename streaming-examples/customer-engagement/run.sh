#!/usr/bin/env bash
# Customer engagement: clickstream records joined with advertising-campaign data kept in
# DynamoDB -> the most effective ad categories per website, for each iteration.
#
# What it shows: a mapper that enriches records from a DynamoDB table at run time (the campaign
# of each ad is never in the code), the reader's exec mode (the iteration succeeds only if the
# whole pipeline does) and kinesis-writer loading each iteration's ranking into DynamoDB.
#
#   streaming-examples/customer-engagement/run.sh     # on AWS, or on the emulator when
#                                                     # AWS_ENDPOINT_URL points at one
# Needs kinesis-reader and kinesis-writer on the PATH, python3 with boto3; names can be changed
# with STREAM, CHECKPOINTS, CAMPAIGNS and RESULTS.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
STREAM=${STREAM:-clicks}
CHECKPOINTS=${CHECKPOINTS:-emr-checkpoints}
CAMPAIGNS=${CAMPAIGNS:-campaigns}
RESULTS=${RESULTS:-category-ranking}
PY=${PYTHON:-python3}
export CAMPAIGN_TABLE=$CAMPAIGNS

$PY "$HERE/produce.py" --stream "$STREAM" --campaign-table "$CAMPAIGNS" --records 6000 --seed 1
kinesis-reader create-table --checkpoint-table "$CHECKPOINTS"
$PY - "$RESULTS" <<'PY'
import sys, boto3
ddb = boto3.client("dynamodb")
try:
    ddb.create_table(
        TableName=sys.argv[1], BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "site", "KeyType": "HASH"},
                   {"AttributeName": "rank", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "site", "AttributeType": "S"},
                              {"AttributeName": "rank", "AttributeType": "N"}])
except ddb.exceptions.ResourceInUseException:
    pass
PY

# One iteration: records -> join + count -> sort by site -> rank -> stdout and DynamoDB.
kinesis-reader --stream "$STREAM" --checkpoint-table "$CHECKPOINTS" \
    --logical-name engagement --iteration next -- sh -c "
  $PY '$HERE/mapper.py' | sort -t '	' -k1,1 -k2,2 | python3 '$HERE/reducer.py' \
    | tee /dev/stderr \
    | kinesis-writer dynamodb://$RESULTS --columns site:S,rank:N,category:S,ctr:N,clicks:N,impressions:N"
echo "best category per site:"
kinesis-reader status --stream "$STREAM" --checkpoint-table "$CHECKPOINTS" \
    --logical-name engagement --last 1 >&2
$PY - "$RESULTS" <<'PY'
import sys, boto3
items = boto3.client("dynamodb").scan(TableName=sys.argv[1])["Items"]
for i in sorted(items, key=lambda i: i["site"]["S"]):
    if i["rank"]["N"] == "1":
        print(f"{i['site']['S']}\t{i['category']['S']}\t{i['ctr']['N']}")
PY
