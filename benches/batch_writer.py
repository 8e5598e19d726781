#!/usr/bin/env python3
"""The boto3 baseline for kinesis-writer's DynamoDB benchmark: `key<TAB>number` lines from
stdin into a table with boto3's batch_writer (which batches 25 items and retries unprocessed
ones; overwrite_by_pkeys makes a later line with the same key win, like kinesis-writer).

    batch_writer.py TABLE < lines.tsv
"""
import sys
from decimal import Decimal

import boto3


def main() -> None:
    table = boto3.resource("dynamodb").Table(sys.argv[1])
    with table.batch_writer(overwrite_by_pkeys=["k"]) as batch:
        for line in sys.stdin:
            k, v = line.rstrip("\n").split("\t")
            batch.put_item(Item={"k": k, "v": Decimal(v)})


if __name__ == "__main__":
    main()
