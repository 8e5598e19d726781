#!/usr/bin/env python3
"""Puts a synthetic clickstream into a Kinesis stream and the advertising campaigns into a
DynamoDB table (creating both if needed).

What it shows: the producer side of the customer-engagement example. Each record is one ad
impression on a website, `site=<host> ad=<ad id> action=view|click`; which ad belongs to which
campaign and category lives only in the `campaigns` table. The click rates are planted per
website and category (PLANTED below), so the best category of each site is known in advance.
Runs against the local emulator (AWS_ENDPOINT_URL) or AWS itself; needs boto3.

    produce.py --stream clicks --campaign-table campaigns --records 6000 --seed 1
"""
import argparse
import random

import boto3

SITES = ["news.example", "shop.example", "travel.example"]
CATEGORIES = ["sports", "travel", "tech", "fashion"]
# Click probability per site and category; the best category per site is the largest.
PLANTED = {
    "news.example": {"sports": 0.12, "travel": 0.03, "tech": 0.06, "fashion": 0.02},
    "shop.example": {"sports": 0.03, "travel": 0.02, "tech": 0.05, "fashion": 0.14},
    "travel.example": {"sports": 0.02, "travel": 0.15, "tech": 0.03, "fashion": 0.05},
}
ADS_PER_CATEGORY = 5


def campaigns():
    """ad id -> (campaign, category): five ads per category, in two campaigns each."""
    ads = {}
    for c in CATEGORIES:
        for i in range(ADS_PER_CATEGORY):
            ads[f"ad-{c[:3]}-{i}"] = (f"{c}-campaign-{i % 2}", c)
    return ads


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stream", required=True)
    ap.add_argument("--campaign-table", required=True)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--records", type=int, default=6000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()

    ddb = boto3.client("dynamodb")
    ads = campaigns()
    try:
        ddb.create_table(
            TableName=a.campaign_table,
            BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "ad_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "ad_id", "AttributeType": "S"}],
        )
        ddb.get_waiter("table_exists").wait(TableName=a.campaign_table)
    except ddb.exceptions.ResourceInUseException:
        pass
    for ad, (campaign, category) in ads.items():
        ddb.put_item(
            TableName=a.campaign_table,
            Item={"ad_id": {"S": ad}, "campaign": {"S": campaign}, "category": {"S": category}},
        )

    k = boto3.client("kinesis")
    try:
        k.create_stream(StreamName=a.stream, ShardCount=a.shards)
        k.get_waiter("stream_exists").wait(StreamName=a.stream, WaiterConfig={"Delay": 1})
    except k.exceptions.ResourceInUseException:
        pass
    rng = random.Random(a.seed)
    ad_ids = sorted(ads)
    batch = []
    for i in range(a.records):
        site = rng.choice(SITES)
        ad = rng.choice(ad_ids)
        clicked = rng.random() < PLANTED[site][ads[ad][1]]
        user = f"user-{rng.randint(1, 900)}"
        data = f"site={site} ad={ad} action={'click' if clicked else 'view'} user={user}"
        batch.append({"Data": data.encode(), "PartitionKey": user})
        if len(batch) == 500 or i == a.records - 1:
            out = k.put_records(StreamName=a.stream, Records=batch)
            if out.get("FailedRecordCount"):
                raise SystemExit(f"{out['FailedRecordCount']} records were not accepted")
            batch = []
    print(f"put {a.records} impressions into {a.stream}; {len(ads)} ads in {a.campaign_table}")


if __name__ == "__main__":
    main()
