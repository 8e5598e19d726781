#!/usr/bin/env python3
"""kinesis-writer's benchmark harness (see BENCHMARKS.md), against moto on 127.0.0.1:

- S3: a TSV file through `kinesis-writer s3://…` and through `aws s3 cp - s3://…` (awscli,
  in its own venv), same input, same endpoint;
- DynamoDB: `key<TAB>number` lines through `kinesis-writer dynamodb://… --columns k:S,v:N`
  and through boto3's batch_writer (benches/batch_writer.py), into fresh tables, and the
  two tables compared.

    benches/writer_harness.py [--short]

Each tool runs 3 times (1 with --short); wall time, CPU and peak RSS come from wait4(2).
"""
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "target", "bench")
PORT = 4612


def measure(cmd, env, stdin_path):
    with open(stdin_path, "rb") as f:
        start = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, stdin=f, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[0]} failed: {p.stderr.read().decode(errors='replace')}")
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss_mib": ru.ru_maxrss / 1024}


def median(runs, k):
    return statistics.median(r[k] for r in runs)


def main() -> None:
    short = "--short" in sys.argv
    repeats = 1 if short else 3
    profile = "dev" if short else "release"
    subprocess.run(["cargo", "build", "--profile", profile, "--bin", "kinesis-writer"], cwd=ROOT, check=True)
    writer = os.path.join(ROOT, "target", "debug" if short else "release", "kinesis-writer")
    venv = os.path.join(ROOT, ".venv", "bin", "python")
    awsvenv = os.path.join(ROOT, ".venv-awscli")
    if not os.path.exists(os.path.join(awsvenv, "bin", "aws")):
        subprocess.run([sys.executable, "-m", "venv", awsvenv], check=True)
        subprocess.run([os.path.join(awsvenv, "bin", "pip"), "install", "--quiet",
                        "--disable-pip-version-check", "awscli"], check=True)
    subprocess.run([os.path.join(ROOT, "scripts", "emulator.sh"), "start", str(PORT)], check=True)
    env = dict(os.environ, AWS_ENDPOINT_URL=f"http://127.0.0.1:{PORT}", AWS_ACCESS_KEY_ID="bench",
               AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1",
               AWS_EC2_METADATA_DISABLED="true", RUST_LOG="warn")
    os.makedirs(OUT, exist_ok=True)
    try:
        import boto3
    except ImportError:
        boto3 = None
    results = {}
    try:
        # S3: about 200 MB of reducer-like lines (20 MB with --short).
        mb = 20 if short else 200
        tsv = os.path.join(OUT, "s3-input.tsv")
        with open(tsv, "w") as f:
            i = 0
            while f.tell() < mb * 1_000_000:
                f.write(f"error-{i % 997} region-{i % 7}\t{i}\t{'x' * 60}\n")
                i += 1
        size = os.path.getsize(tsv)
        subprocess.run([venv, "-c", "import boto3; boto3.client('s3').create_bucket(Bucket='bench')"],
                       env=env, check=True)
        ours = [measure([writer, f"s3://bench/ours/run{r}.tsv"], env, tsv) for r in range(repeats)]
        cli = [measure([os.path.join(awsvenv, "bin", "aws"), "s3", "cp", "-", f"s3://bench/cli/run{r}.tsv"], env, tsv)
               for r in range(repeats)]
        results["s3"] = {"bytes": size, "kinesis-writer": ours, "aws s3 cp -": cli}
        # DynamoDB: 20,000 lines (2,000 with --short) over 5,000 keys, so keys repeat.
        n = 2_000 if short else 20_000
        lines = os.path.join(OUT, "ddb-input.tsv")
        with open(lines, "w") as f:
            for i in range(n):
                f.write(f"key-{(i * 7919) % 5000}\t{i}\n")
        def table(name):
            subprocess.run([venv, "-c", f"""
import boto3
boto3.client('dynamodb').create_table(TableName='{name}', BillingMode='PAY_PER_REQUEST',
    KeySchema=[{{'AttributeName':'k','KeyType':'HASH'}}],
    AttributeDefinitions=[{{'AttributeName':'k','AttributeType':'S'}}])"""], env=env, check=True)
        def scan(name):
            out = subprocess.run([venv, "-c", f"""
import boto3, json
t = boto3.resource('dynamodb').Table('{name}')
items, kw = [], {{}}
while True:
    page = t.scan(**kw)
    items += [(i['k'], int(i['v'])) for i in page['Items']]
    if 'LastEvaluatedKey' not in page: break
    kw['ExclusiveStartKey'] = page['LastEvaluatedKey']
print(json.dumps(sorted(items)))"""], env=env, check=True, capture_output=True, text=True).stdout
            return json.loads(out)
        ours, boto = [], []
        for r in range(repeats):
            table(f"ours{r}")
            ours.append(measure([writer, f"dynamodb://ours{r}", "--columns", "k:S,v:N"], env, lines))
            table(f"boto{r}")
            boto.append(measure([venv, os.path.join(ROOT, "benches", "batch_writer.py"), f"boto{r}"], env, lines))
        same = scan("ours0") == scan("boto0")
        results["dynamodb"] = {"items": n, "kinesis-writer": ours, "boto3 batch_writer": boto, "same_table": same}
    finally:
        subprocess.run([os.path.join(ROOT, "scripts", "emulator.sh"), "stop", str(PORT)], check=True)
    with open(os.path.join(OUT, "writer-results.json"), "w") as f:
        json.dump(results, f, indent=1)
    s3 = results["s3"]
    print("| S3, %d MB | MB/s (median) | CPU s | peak RSS MiB |" % (s3["bytes"] // 1_000_000))
    print("|---|---|---|---|")
    for tool in ("kinesis-writer", "aws s3 cp -"):
        runs = s3[tool]
        print(f"| {tool} | {s3['bytes'] / 1e6 / median(runs, 'wall'):.0f} | {median(runs, 'cpu'):.2f} | "
              f"{median(runs, 'rss_mib'):.0f} |")
    d = results["dynamodb"]
    print()
    print("| DynamoDB, %d lines | items/s (median) | CPU µs per line | peak RSS MiB |" % d["items"])
    print("|---|---|---|---|")
    for tool in ("kinesis-writer", "boto3 batch_writer"):
        runs = d[tool]
        print(f"| {tool} | {d['items'] / median(runs, 'wall'):.0f} | "
              f"{median(runs, 'cpu') / d['items'] * 1e6:.0f} | {median(runs, 'rss_mib'):.0f} |")
    print(f"\nsame final table: {d['same_table']}")
    if not d["same_table"]:
        raise SystemExit("the two DynamoDB tables differ")


if __name__ == "__main__":
    main()
