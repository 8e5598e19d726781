#!/usr/bin/env python3
"""A straightforward boto3 Kinesis reader, the baseline for kinesis-reader's benchmark.

Reads every shard of a stream from TRIM_HORIZON until caught up (an empty page with
MillisBehindLatest 0) and prints `partition_key<TAB>data` lines, as kinesis-reader does by
default. Endpoint and credentials from the usual AWS environment variables.

    boto3_reader.py STREAM > /dev/null
"""
import sys

import boto3


def main() -> None:
    stream = sys.argv[1]
    k = boto3.client("kinesis")
    out = sys.stdout.buffer
    for shard in k.list_shards(StreamName=stream)["Shards"]:
        it = k.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while it:
            page = k.get_records(ShardIterator=it, Limit=10000)
            for r in page["Records"]:
                data = r["Data"].replace(b"\\", b"\\\\").replace(b"\t", b"\\t").replace(b"\n", b"\\n")
                out.write(r["PartitionKey"].encode() + b"\t" + data + b"\n")
            if not page["Records"] and page.get("MillisBehindLatest") == 0:
                break
            it = page.get("NextShardIterator")
    out.flush()


if __name__ == "__main__":
    main()
