#!/usr/bin/env python3
"""How many records a reshard holds back by one or more iterations.

    .venv/bin/python benches/reshard_lag.py [--baseline OLD_BIN_DIR] [--records 40] [--during]

Starts moto (checkpoint table) on 127.0.0.1:4613 and kinesis-local (the stream, which
reshards like the service) on 127.0.0.1:4614 with scripts/emulator.sh. For each build (this
one, target/release, and the baseline's kinesis-reader in OLD_BIN_DIR), on a new 2-shard
stream, a producer writes `--records` records per open shard in each step, then one
`--iteration next` run follows. The steps:

  0. plain writes;
  1. writes, a split of one shard, writes (the later ones land in the children);
  2. writes, a merge of two adjacent shards, writes;
  3. writes, UpdateShardCount to twice the open shards, writes;
  4. writes, UpdateShardCount to half, writes;
  5. nothing (an iteration that only catches up).

Every record written in step k arrived before iteration k was opened, so the snapshot rule
puts it in iteration k. A record that comes out in iteration k + d is held back d iterations.
The script reports, per build and step, the records written and how many came out late
(d >= 1), and checks that every record came out exactly once.

With --during, the reshard comes while the run reads: each step writes, starts the run with
`--until timeouts --nodata-timeout 5s`, waits until it has opened its iteration, reshards and
writes the second half while the run reads. Every record of step k was written before run k
ended, into a shard it was reading or into a child of one.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MOTO_PORT, KL_PORT = 4613, 4614
CREDS = dict(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1")
ENV = dict(os.environ, **CREDS, AWS_ENDPOINT_URL=f"http://127.0.0.1:{MOTO_PORT}",
           AWS_ENDPOINT_URL_KINESIS=f"http://127.0.0.1:{KL_PORT}")
STEPS = ["plain", "split", "merge", "update x2", "update /2", "catch up"]


def kinesis():
    import boto3
    return boto3.client("kinesis", endpoint_url=f"http://127.0.0.1:{KL_PORT}",
                        region_name="us-east-1", aws_access_key_id="bench",
                        aws_secret_access_key="bench")


def wait_active(k, stream: str) -> None:
    for _ in range(500):
        if k.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"][
                "StreamStatus"] == "ACTIVE":
            return
        time.sleep(0.02)
    sys.exit(f"stream {stream} never became active")


def open_shards(k, stream: str) -> list[dict]:
    shards = k.list_shards(StreamName=stream)["Shards"]
    return sorted((s for s in shards if "EndingSequenceNumber" not in s["SequenceNumberRange"]),
                  key=lambda s: int(s["HashKeyRange"]["StartingHashKey"]))


def write(k, stream: str, step: int, part: str, per_shard: int, written: dict) -> None:
    """`per_shard` records into every open shard, each tagged with its step."""
    for s in open_shards(k, stream):
        low = int(s["HashKeyRange"]["StartingHashKey"])
        for i in range(per_shard):
            data = f"{step}:{part}:{s['ShardId']}:{i}"
            k.put_record(StreamName=stream, Data=data.encode(), PartitionKey="p",
                         ExplicitHashKey=str(low))
            written[data] = step


def reshard(k, stream: str, step: int) -> None:
    shards = open_shards(k, stream)
    if STEPS[step] == "split":
        r = shards[0]["HashKeyRange"]
        lo, hi = int(r["StartingHashKey"]), int(r["EndingHashKey"])
        k.split_shard(StreamName=stream, ShardToSplit=shards[0]["ShardId"],
                      NewStartingHashKey=str(lo + (hi - lo) // 2 + 1))
    elif STEPS[step] == "merge":
        k.merge_shards(StreamName=stream, ShardToMerge=shards[0]["ShardId"],
                       AdjacentShardToMerge=shards[1]["ShardId"])
    elif STEPS[step] == "update x2":
        k.update_shard_count(StreamName=stream, TargetShardCount=2 * len(shards),
                             ScalingType="UNIFORM_SCALING")
    elif STEPS[step] == "update /2":
        k.update_shard_count(StreamName=stream, TargetShardCount=max(1, len(shards) // 2),
                             ScalingType="UNIFORM_SCALING")
    else:
        return
    wait_active(k, stream)


def opened(reader: str, stream: str, table: str, n: int) -> bool:
    """Whether iteration `n` exists (its run has opened it), from `status --json`."""
    out = subprocess.run([reader, "status", "--stream", stream, "--checkpoint-table", table,
                          "--logical-name", "L", "--json"], env=ENV, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    if out.returncode != 0:
        return False
    return any(i.get("iteration") == n for i in json.loads(out.stdout or b"[]"))


def measure(label: str, reader: str, per_shard: int, during: bool) -> list[tuple[int, int, int]]:
    k = kinesis()
    stream = f"lag-{label.replace(' ', '-')}-{os.getpid()}"
    k.create_stream(StreamName=stream, ShardCount=2)
    wait_active(k, stream)
    table = f"{stream}-cp"
    subprocess.run([reader, "create-table", "--checkpoint-table", table], env=ENV, check=True,
                   stderr=subprocess.DEVNULL)
    run = [reader, "--stream", stream, "--checkpoint-table", table, "--logical-name", "L",
           "--iteration", "next", "--fields", "data"]
    if during:
        run += ["--until", "timeouts", "--nodata-timeout", "5s"]
    written: dict[str, int] = {}
    seen: dict[str, int] = {}
    # Up to three more iterations after the last step, for records held back.
    for it in range(len(STEPS) + 3):
        stepping = it < len(STEPS) and STEPS[it] != "catch up"
        if stepping:
            write(k, stream, it, "a", per_shard, written)
        if stepping and during:
            proc = subprocess.Popen(run, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(600):
                if opened(reader, stream, table, it):
                    break
                time.sleep(0.05)
            reshard(k, stream, it)
            write(k, stream, it, "b", per_shard, written)
            stdout, stderr = proc.communicate()
            out = subprocess.CompletedProcess(run, proc.returncode, stdout, stderr)
        else:
            if stepping:
                reshard(k, stream, it)
                write(k, stream, it, "b", per_shard, written)
            out = subprocess.run(run, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if out.returncode != 0:
            sys.exit(f"{label}: iteration {it} failed:\n{out.stderr.decode()}")
        for line in out.stdout.decode().splitlines():
            if line in seen:
                sys.exit(f"{label}: {line!r} in iterations {seen[line]} and {it}")
            seen[line] = it
    missing = set(written) - set(seen)
    if missing:
        sys.exit(f"{label}: {len(missing)} records never came out, e.g. {sorted(missing)[:3]}")
    rows = []
    for step in range(len(STEPS)):
        mine = [d for d, s in written.items() if s == step]
        late = sum(1 for d in mine if seen[d] > step)
        rows.append((step, len(mine), late))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", help="directory with another build's kinesis-reader")
    ap.add_argument("--records", type=int, default=40, help="records per open shard, per half step")
    ap.add_argument("--during", action="store_true", help="reshard while each run reads")
    a = ap.parse_args()
    builds = [("this build", os.path.join(ROOT, "target", "release", "kinesis-reader"))]
    if a.baseline:
        builds.append(("baseline", os.path.join(a.baseline, "kinesis-reader")))
    subprocess.run(["scripts/emulator.sh", "start", str(MOTO_PORT)], cwd=ROOT, check=True)
    subprocess.run(["scripts/emulator.sh", "start-kinesis-local", str(KL_PORT)], cwd=ROOT,
                   check=True)
    try:
        results = {label: measure(label, reader, a.records, a.during) for label, reader in builds}
        print("| step | what | " + " | ".join(f"{b} written | {b} late" for b, _ in builds) + " |")
        print("|---:|---|" + "---:|---:|" * len(builds))
        for step, what in enumerate(STEPS):
            cells = " | ".join(f"{results[b][step][1]} | {results[b][step][2]}" for b, _ in builds)
            print(f"| {step} | {what} | {cells} |")
        for b, _ in builds:
            total = sum(r[1] for r in results[b])
            late = sum(r[2] for r in results[b])
            print(f"{b}: {late} of {total} records late ({100 * late / max(1, total):.0f} %)")
    finally:
        subprocess.run(["scripts/emulator.sh", "stop", str(MOTO_PORT)], cwd=ROOT)
        subprocess.run(["scripts/emulator.sh", "stop-kinesis-local", str(KL_PORT)], cwd=ROOT)


if __name__ == "__main__":
    main()
