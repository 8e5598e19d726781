#!/usr/bin/env python3
"""Puts synthetic web access-log lines into a Kinesis stream (creating it if needed).

What it shows: the producer side of the log-analysis example. Runs against the local
emulator (AWS_ENDPOINT_URL) or AWS itself (your usual credentials); needs boto3.

    produce.py --stream access-logs --shards 4 --records 2000 --seed 1
"""
import argparse
import random
import time

import boto3

REGIONS = ["us-east-1", "eu-west-1", "ap-south-1"]
BROWSERS = ["Firefox/120.0", "Chrome/119.0", "Safari/17.1", "curl/8.4"]
PATHS = ["/", "/api/orders", "/api/cart", "/login", "/static/app.js", "/search?q=tea"]
STATUSES = [200] * 14 + [301, 304, 400, 403, 404, 404, 500, 502, 503, 503]


def line(rng: random.Random) -> str:
    ip = f"203.0.113.{rng.randint(1, 254)}"
    when = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
    return (
        f'{ip} - - [{when}] "GET {rng.choice(PATHS)} HTTP/1.1" {rng.choice(STATUSES)} '
        f'{rng.randint(200, 9000)} "-" "Mozilla/5.0 {rng.choice(BROWSERS)}" '
        f"region={rng.choice(REGIONS)}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stream", required=True)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    k = boto3.client("kinesis")
    try:
        k.create_stream(StreamName=a.stream, ShardCount=a.shards)
        k.get_waiter("stream_exists").wait(StreamName=a.stream, WaiterConfig={"Delay": 1})
    except k.exceptions.ResourceInUseException:
        pass
    rng = random.Random(a.seed)
    batch = []
    for i in range(a.records):
        batch.append({"Data": line(rng).encode(), "PartitionKey": f"client-{rng.randint(1, 500)}"})
        if len(batch) == 500 or i == a.records - 1:
            out = k.put_records(StreamName=a.stream, Records=batch)
            if out.get("FailedRecordCount"):
                raise SystemExit(f"{out['FailedRecordCount']} records were not accepted")
            batch = []
    print(f"put {a.records} records into {a.stream}")


if __name__ == "__main__":
    main()
