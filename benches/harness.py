#!/usr/bin/env python3
"""kinesis-reader's benchmark harness (see BENCHMARKS.md for the method and results).

    benches/harness.py            full mode: 3 record sizes x 3 shard counts, 5 runs each
    benches/harness.py --short    one small configuration, one run (CI keeps the harness alive)
    benches/harness.py --baseline PATH [--no-boto3]
                                  also runs another build of kinesis-reader (PATH), its runs
                                  alternating with this build's, and prints the two side by side
    benches/harness.py --scale [--baseline PATH]
                                  the memory budget: 1 KB and 10 KB records on 1, 64, 256 and
                                  1,000 shards, one run each, without boto3

Starts the canned Kinesis endpoint (benches/canned_kinesis.rs) on 127.0.0.1 for each
configuration, runs kinesis-reader and the boto3 baseline (benches/boto3_reader.py) against
the same endpoint and data, output to /dev/null, and reports per tool the median and min-max
of wall time, payload MB/s, records/s, CPU seconds per million records and peak RSS, measured
by wait4(2) on the process itself. Writes target/bench/results.json, a Markdown table to
stdout, and target/bench/throughput.png when matplotlib is importable.
"""
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "target", "bench")
PORT = 4611


def records_per_page(size: int) -> int:
    """As the canned endpoint (and the service): 10,000 records or 10 MiB per page."""
    return max(1, min(10_000, 10 * 1024 * 1024 // size))


def build(profile: str) -> tuple[str, str]:
    """The reader and the canned endpoint, built with `profile` (the short mode uses the
    debug build the tests already made, so CI does not pay for a release build)."""
    subprocess.run(["cargo", "build", "--profile", profile, "--bin", "kinesis-reader"], cwd=ROOT, check=True)
    msg = subprocess.run(
        ["cargo", "build", "--profile", profile, "--bench", "canned_kinesis", "--message-format=json"],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout
    canned = [json.loads(l)["executable"] for l in msg.splitlines()
              if '"executable":"' in l and "canned_kinesis" in l][-1]
    folder = "debug" if profile == "dev" else profile
    return os.path.join(ROOT, "target", folder, "kinesis-reader"), canned


def measure(cmd: list[str], env: dict, stdout=subprocess.DEVNULL) -> dict:
    """Runs cmd to its end; wall seconds, CPU seconds and peak RSS of that process."""
    start = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=stdout, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - start
    err = p.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[0]} failed: {err}")
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss_mib": ru.ru_maxrss / 1024}


def summarise(runs: list[dict], records: int, payload: int) -> dict:
    walls = [r["wall"] for r in runs]
    return {
        "runs": len(runs),
        "wall_median": statistics.median(walls), "wall_min": min(walls), "wall_max": max(walls),
        "mb_s_median": payload / 1e6 / statistics.median(walls),
        "mb_s_min": payload / 1e6 / max(walls), "mb_s_max": payload / 1e6 / min(walls),
        "records_s_median": records / statistics.median(walls),
        "cpu_s_per_million": statistics.median(r["cpu"] for r in runs) / records * 1e6,
        "rss_mib_median": statistics.median(r["rss_mib"] for r in runs),
        "rss_mib_max": max(r["rss_mib"] for r in runs),
    }


def option(name: str):
    """The value after `name` on the command line, if given."""
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else None


def main() -> None:
    short = "--short" in sys.argv
    scale = "--scale" in sys.argv
    baseline = option("--baseline")
    with_boto3 = "--no-boto3" not in sys.argv and not scale
    reader, canned = build("dev" if short else "release")
    python = os.path.join(ROOT, ".venv", "bin", "python")
    if not os.path.exists(python):
        subprocess.run([os.path.join(ROOT, "scripts", "emulator.sh"), "install"], check=True)
    env = dict(os.environ, AWS_ENDPOINT_URL=f"http://127.0.0.1:{PORT}", AWS_ACCESS_KEY_ID="bench",
               AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1", AWS_DEFAULT_REGION="us-east-1",
               AWS_EC2_METADATA_DISABLED="true", RUST_LOG="warn")
    if short:
        configs, repeats = [(1000, 2, 1)], 1
    elif scale:
        # One page per shard beyond one shard: 10 MB each, so 1,000 shards are 10 GB.
        configs = [(size, shards, 10 if shards == 1 else 1)
                   for size in (1000, 10000) for shards in (1, 64, 256, 1000)]
        repeats = 1
    else:
        # (record size, shards, pages per shard): about 100-600 MB of payload each.
        configs = [(100, 1, 20), (100, 8, 8), (100, 64, 1),
                   (1000, 1, 30), (1000, 8, 5), (1000, 64, 1),
                   (10000, 1, 30), (10000, 8, 5), (10000, 64, 1)]
        repeats = 5
    ours = [reader, "--stream", "bench", "--max-read-rate", "1000000", "--min-call-interval", "0ms"]
    results = []
    for size, shards, pages in configs:
        records = shards * pages * records_per_page(size)
        payload = records * size
        server = subprocess.Popen(
            [canned, "--port", str(PORT), "--shards", str(shards), "--record-size", str(size),
             "--pages", str(pages)], stdin=subprocess.PIPE, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        try:
            row = {"size": size, "shards": shards, "records": records}
            # With a baseline, the two builds' runs alternate, so that the
            # machine's drift touches both alike.
            runs, base_runs = [], []
            # A build without a memory budget holds a 10 MB page per shard, and the canned
            # endpoint renders each answer whole: at 1,000 shards that is over 20 GB together,
            # more than this machine has. So the baseline runs up to 256 shards.
            with_base = baseline and not (scale and shards > 256)
            for _ in range(repeats):
                runs.append(measure(ours, env))
                if with_base:
                    base_runs.append(measure([baseline] + ours[1:], env))
            row["kinesis-reader"] = summarise(runs, records, payload)
            if baseline:
                row["baseline"] = summarise(base_runs, records, payload) if with_base else None
            # The consumer stalls for 3 s before reading: memory must stay flat (backpressure).
            if not scale:
                stalled = subprocess.Popen(["sh", "-c", "sleep 3; cat >/dev/null"], stdin=subprocess.PIPE)
                row["kinesis-reader stalled consumer"] = summarise([measure(ours, env, stdout=stalled.stdin)], records, payload)
                stalled.stdin.close()
                stalled.wait()
            boto_repeats = 1 if short or records > 200_000 else min(repeats, 3)
            if with_boto3:
                row["boto3"] = summarise(
                    [measure([python, os.path.join(ROOT, "benches", "boto3_reader.py"), "bench"], env)
                     for _ in range(boto_repeats)], records, payload)
        finally:
            server.stdin.close()
            server.wait()
        if baseline and row["baseline"]:
            r, o = row["kinesis-reader"], row["baseline"]
            print(f"{size:>6} B x {shards:>2} shards: this build {r['mb_s_median']:7.1f} MB/s "
                  f"{r['cpu_s_per_million']:6.2f} CPU-s/M {r['rss_mib_median']:6.1f} MiB | baseline "
                  f"{o['mb_s_median']:7.1f} MB/s {o['cpu_s_per_million']:6.2f} CPU-s/M "
                  f"{o['rss_mib_median']:6.1f} MiB", file=sys.stderr)
        results.append(row)
        if not with_boto3:
            continue
        r, b = row["kinesis-reader"], row["boto3"]
        row["ratio_cpu"] = b["cpu_s_per_million"] / r["cpu_s_per_million"]
        row["ratio_wall"] = b["wall_median"] / r["wall_median"]
        print(f"{size:>6} B x {shards:>2} shards: ours {r['mb_s_median']:7.1f} MB/s "
              f"{r['cpu_s_per_million']:6.2f} CPU-s/M {r['rss_mib_median']:6.1f} MiB | boto3 "
              f"{b['mb_s_median']:6.1f} MB/s {b['cpu_s_per_million']:6.2f} CPU-s/M "
              f"{b['rss_mib_median']:6.1f} MiB | CPU ratio {row['ratio_cpu']:5.1f}x", file=sys.stderr)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump({"short": short, "baseline": baseline, "results": results}, f, indent=1)
    if baseline:
        print("| record | shards | this build MB/s (min-max) | baseline MB/s (min-max) | this build CPU s / M | "
              "baseline CPU s / M | this build RSS MiB | baseline RSS MiB |")
        print("|---|---|---|---|---|---|---|---|")
        for row in results:
            r, o = row["kinesis-reader"], row["baseline"]
            if o is None:
                print(f"| {row['size']} B | {row['shards']} | {r['mb_s_median']:.0f} | not run | "
                      f"{r['cpu_s_per_million']:.2f} | — | {r['rss_mib_median']:.0f} | — |")
                continue
            print(f"| {row['size']} B | {row['shards']} | {r['mb_s_median']:.0f} ({r['mb_s_min']:.0f}-"
                  f"{r['mb_s_max']:.0f}) | {o['mb_s_median']:.0f} ({o['mb_s_min']:.0f}-{o['mb_s_max']:.0f}) | "
                  f"{r['cpu_s_per_million']:.2f} | {o['cpu_s_per_million']:.2f} | {r['rss_mib_median']:.0f} | "
                  f"{o['rss_mib_median']:.0f} |")
    if not with_boto3:
        return
    print("| record | shards | records | kinesis-reader MB/s (min-max) | CPU s / M records | peak RSS MiB | "
          "RSS, stalled consumer | boto3 MB/s | boto3 CPU s / M | boto3 RSS MiB | CPU ratio | wall ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in results:
        r, s, b = row["kinesis-reader"], row["kinesis-reader stalled consumer"], row["boto3"]
        print(f"| {row['size']} B | {row['shards']} | {row['records']:,} | {r['mb_s_median']:.0f} "
              f"({r['mb_s_min']:.0f}-{r['mb_s_max']:.0f}) | {r['cpu_s_per_million']:.2f} | "
              f"{r['rss_mib_median']:.0f} | {s['rss_mib_max']:.0f} | {b['mb_s_median']:.1f} | "
              f"{b['cpu_s_per_million']:.1f} | {b['rss_mib_median']:.0f} | {row['ratio_cpu']:.1f}x | "
              f"{row['ratio_wall']:.1f}x |")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for shards in sorted({r["shards"] for r in results}):
        rows = [r for r in results if r["shards"] == shards]
        ax.plot([r["size"] for r in rows], [r["kinesis-reader"]["mb_s_median"] for r in rows],
                marker="o", label=f"kinesis-reader, {shards} shards")
        ax.plot([r["size"] for r in rows], [r["boto3"]["mb_s_median"] for r in rows],
                marker="x", linestyle="--", label=f"boto3, {shards} shards")
    ax.set_xscale("log")
    ax.set_xlabel("record size (bytes)")
    ax.set_ylabel("payload MB/s (median)")
    ax.set_title("Reading from the canned Kinesis endpoint, 2 cores")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "throughput.png"), dpi=110)


if __name__ == "__main__":
    main()
