#!/usr/bin/env python3
"""Mapper: ad impressions -> "<site><TAB><category><TAB><clicks><TAB><impressions>".

Joins each impression with its campaign: the ad -> category table is read from DynamoDB
(the table named by CAMPAIGN_TABLE, default `campaigns`) once when the mapper starts, so new
campaigns need no code change. Every impression counts; a click counts as a click too; an ad
missing from the table is counted under category `unknown`. Input is kinesis-reader's default
output (`partition_key<TAB>data`). Needs boto3 (it talks to DynamoDB itself).
"""
import os
import sys

import boto3


def load_categories(table: str) -> dict:
    ddb = boto3.client("dynamodb")
    ads = {}
    for page in ddb.get_paginator("scan").paginate(TableName=table):
        for item in page["Items"]:
            ads[item["ad_id"]["S"]] = item["category"]["S"]
    return ads


def main() -> None:
    categories = load_categories(os.environ.get("CAMPAIGN_TABLE", "campaigns"))
    counts = {}
    for raw in sys.stdin:
        _key, _, data = raw.rstrip("\n").partition("\t")
        fields = dict(f.split("=", 1) for f in data.split() if "=" in f)
        if "site" not in fields or "ad" not in fields:
            continue
        key = (fields["site"], categories.get(fields["ad"], "unknown"))
        clicks, views = counts.get(key, (0, 0))
        counts[key] = (clicks + (fields.get("action") == "click"), views + 1)
    # Summed in the mapper (a combiner's work): one line per site and category.
    for (site, category), (clicks, views) in counts.items():
        print(f"{site}\t{category}\t{clicks}\t{views}")


if __name__ == "__main__":
    main()
