#!/usr/bin/env python3
"""What opening and closing a checkpointed iteration costs, against shard count.

    .venv/bin/python benches/iteration_cost.py --baseline OLD_BIN_DIR [--shards 150,300]

Starts moto (scripts/emulator.sh) on 127.0.0.1:4612. For each shard count and each build
(this one, target/release, and the baseline's kinesis-reader in OLD_BIN_DIR), in turn: a new
stream with that many shards and two records per shard, a new checkpoint table, then
iteration 0 (a fresh iteration: every shard created and fixed) and iteration 1 (an empty one),
each run with -v. Reports per run the wall time and the TransactWriteItems calls and items
from the reader's own request summary. moto answers every request locally, so the times are
mostly moto's per-transaction cost: read the calls column for what a real table would see.
"""
import argparse
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PORT = 4612
ENDPOINT = f"http://127.0.0.1:{PORT}"
ENV = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
           AWS_REGION="us-east-1", AWS_ENDPOINT_URL=ENDPOINT)


def stream_with(name: str, shards: int) -> None:
    import boto3
    k = boto3.client("kinesis", endpoint_url=ENDPOINT, region_name="us-east-1",
                     aws_access_key_id="bench", aws_secret_access_key="bench")
    k.create_stream(StreamName=name, ShardCount=shards)
    listed = []
    token = None
    while True:
        page = k.list_shards(NextToken=token) if token else k.list_shards(StreamName=name)
        listed += page["Shards"]
        token = page.get("NextToken")
        if not token:
            break
    for s in listed:
        low = int(s["HashKeyRange"]["StartingHashKey"])
        for i in range(2):
            k.put_record(StreamName=name, Data=f"{s['ShardId']}-{i}".encode(),
                         PartitionKey="p", ExplicitHashKey=str(low))


def run(reader: str, args: list[str]) -> tuple[float, int, int]:
    start = time.monotonic()
    p = subprocess.run([reader, *args, "-v"], env=ENV, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    took = time.monotonic() - start
    if p.returncode != 0:
        sys.exit(f"{reader} {' '.join(args)} failed:\n{p.stderr}")
    m = re.search(r"TransactWriteItems (\d+) calls/(\d+) items", p.stderr)
    return took, int(m.group(1)), int(m.group(2))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", required=True, help="directory with the other build's kinesis-reader")
    ap.add_argument("--shards", default="150,300")
    a = ap.parse_args()
    builds = [("this build", os.path.join(ROOT, "target", "release", "kinesis-reader")),
              ("baseline", os.path.join(a.baseline, "kinesis-reader"))]
    subprocess.run(["scripts/emulator.sh", "start", str(PORT)], cwd=ROOT, check=True)
    try:
        print("| shards | build | iteration | wall s | TransactWriteItems calls | items |")
        print("|---:|---|---|---:|---:|---:|")
        for shards in [int(s) for s in a.shards.split(",")]:
            for label, reader in builds:
                name = f"cost-{shards}-{label.replace(' ', '-')}-{os.getpid()}"
                stream_with(name, shards)
                table = f"{name}-cp"
                subprocess.run([reader, "create-table", "--checkpoint-table", table], env=ENV,
                               check=True, stderr=subprocess.DEVNULL)
                common = ["--stream", name, "--checkpoint-table", table, "--logical-name", "C",
                          "--iteration", "next"]
                for what in ["0 (fresh)", "1 (empty)"]:
                    took, calls, items = run(reader, common)
                    print(f"| {shards} | {label} | {what} | {took:.1f} | {calls} | {items} |",
                          flush=True)
    finally:
        subprocess.run(["scripts/emulator.sh", "stop", str(PORT)], cwd=ROOT)


if __name__ == "__main__":
    main()
