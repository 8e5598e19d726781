//! Many shards: what opening and closing an iteration costs in checkpoint
//! writes. Counts, not times (times are in the benchmark harness).

use crate::harness::*;

/// TransactWriteItems calls and items, from the reader's `-v` summary.
fn transactions(stderr: &str) -> (u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.contains("checkpoint table requests:"))
        .unwrap_or_else(|| panic!("no request summary in:\n{stderr}"));
    let after = line.split("TransactWriteItems ").nth(1).unwrap();
    let (calls, items) = after.split_once(" calls/").unwrap();
    let items = items.trim_end_matches(" items");
    (calls.parse().unwrap(), items.parse().unwrap())
}

/// A 150-shard iteration: its shards are created in two transactions and
/// their ends fixed in group commits, far fewer writes than one per shard;
/// the next (empty) iteration likewise; the replay is the same bytes.
#[tokio::test(flavor = "multi_thread")]
async fn a_wide_iteration_opens_and_closes_in_few_transactions() {
    let k = kinesis().await;
    let stream = unique("wide");
    let shards = 150;
    create_stream(&k, &stream, shards).await;
    put_many(&k, &stream, 0, 300).await;
    let table = table();
    let mut first = args(&stream, &table, "W", "next");
    first.push("-v");
    let o = reader(&first);
    let out = ok(o.clone());
    assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 300);
    let (calls, items) = transactions(&stderr(&o));
    // Items: the header, 150 shard items, 150 ends and a lease check per write.
    assert!(items > 1 + 2 * shards as u64, "{items} items");
    assert!(
        calls <= shards as u64 / 2,
        "{calls} TransactWriteItems for {shards} shards (one per shard would be {})",
        shards + 2
    );
    let o = reader(&first);
    assert!(o.status.success(), "{}", stderr(&o));
    let (calls, _) = transactions(&stderr(&o));
    assert!(
        calls <= 20,
        "{calls} TransactWriteItems for an empty {shards}-shard iteration"
    );
    let replay = ok(reader(&args(&stream, &table, "W", "0")));
    assert_eq!(replay, out);
}

/// Control-plane calls (DescribeStreamSummary, ListShards) seen by `proxy`.
fn control_plane(p: &crate::proxy::Proxy) -> (u64, u64) {
    (
        p.calls("Kinesis DescribeStreamSummary"),
        p.calls("Kinesis ListShards"),
    )
}

/// A 1,000-shard stream: `plan` makes one DescribeStreamSummary and one
/// ListShards call, and map tasks given its manifest lines make none (they
/// call only GetShardIterator, GetRecords and the checkpoint table), yet
/// read exactly their shards' records. A line from an older plan, without
/// the stream's facts, still works: its task asks the control plane once.
#[tokio::test(flavor = "multi_thread")]
async fn map_tasks_of_a_thousand_shard_plan_never_call_the_control_plane() {
    use crate::proxy::{self, FaultPlan};
    let k = kinesis().await;
    let stream = unique("k-shards");
    create_stream(&k, &stream, 1000).await;
    let puts = put_many(&k, &stream, 0, 60).await;
    let table = table();
    let p = proxy::start(endpoint(), endpoint(), FaultPlan::quiet());
    let via = [("AWS_ENDPOINT_URL", p.url.as_str())];
    let planned = reader_env(
        &[
            "plan",
            "--stream",
            &stream,
            "--checkpoint-table",
            &table,
            "--logical-name",
            "K",
            "--shards-per-line",
            "10",
        ],
        &via,
    );
    let manifest = String::from_utf8(ok(planned)).unwrap();
    let lines: Vec<&str> = manifest.lines().collect();
    assert_eq!(lines.len(), 100);
    assert_eq!(control_plane(&p), (1, 1), "plan: {:?}", p.seen());

    // Three lines whose shards hold records, each read by its own map task.
    let shards_of = |line: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        serde_json::from_value(v["shards"].clone()).unwrap()
    };
    let busy: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| puts.iter().any(|r| shards_of(l).contains(&r.shard_id)))
        .take(3)
        .collect();
    assert_eq!(busy.len(), 3);
    let task = |input: String| {
        let args = [
            "--shards-from-stdin",
            "--checkpoint-table",
            &table,
            "--fields",
            "shard_id,sequence_number",
        ];
        String::from_utf8(ok(reader_input(&args, input.as_bytes(), &via))).unwrap()
    };
    for (i, line) in busy[..2].iter().enumerate() {
        let out = task(format!("{}\t{line}\n", i * 1000));
        let shards = shards_of(line);
        let mut got: Vec<String> = out.lines().map(str::to_string).collect();
        let mut want: Vec<String> = puts
            .iter()
            .filter(|r| shards.contains(&r.shard_id))
            .map(|r| format!("{}\t{}", r.shard_id, r.sequence_number))
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "map task of line {line:.120}");
    }
    assert_eq!(control_plane(&p), (1, 1), "map tasks: {:?}", p.seen());
    let kinesis: Vec<String> = p
        .seen()
        .into_iter()
        .filter(|op| op.starts_with("Kinesis "))
        .collect();
    assert_eq!(
        kinesis,
        [
            "Kinesis DescribeStreamSummary",
            "Kinesis GetRecords",
            "Kinesis GetShardIterator",
            "Kinesis ListShards"
        ]
    );

    // The third line as an older `plan` wrote it: only stream, name,
    // iteration and shards.
    let v: serde_json::Value = serde_json::from_str(busy[2]).unwrap();
    let old = serde_json::json!({
        "stream": v["stream"], "logical_name": v["logical_name"],
        "iteration": v["iteration"], "shards": v["shards"],
    });
    let out = task(format!("{old}\n"));
    let shards = shards_of(busy[2]);
    let want = puts.iter().filter(|r| shards.contains(&r.shard_id)).count();
    assert_eq!(out.lines().count(), want);
    assert_eq!(control_plane(&p), (2, 2));
}

/// A Hadoop counter from a task's stderr, e.g. `KinesisReader,throttles`.
fn counter(stderr: &str, name: &str) -> u64 {
    let prefix = format!("reporter:counter:{name},");
    stderr
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
        .unwrap_or_else(|| panic!("no counter {name} in:\n{stderr}"))
}

/// A hundred map tasks start at once against a checkpoint table that, like
/// a provisioned one, throttles above a rate: every task succeeds by
/// backing off, between them they read every record once, the throttles
/// they report are the ones the proxy sent, and `finish` closes the
/// iteration.
#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_map_tasks_at_once_back_off_from_a_throttled_table_and_all_succeed() {
    use crate::proxy::{self, FaultPlan, RateLimit};
    let k = kinesis().await;
    let stream = unique("hundred");
    create_stream(&k, &stream, 100).await;
    let puts = put_many(&k, &stream, 0, 300).await;
    let table = table();
    let manifest = ok(reader(&[
        "plan",
        "--stream",
        &stream,
        "--checkpoint-table",
        &table,
        "--logical-name",
        "H",
    ]));
    let manifest = String::from_utf8(manifest).unwrap();
    let lines: Vec<String> = manifest.lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 100);
    let rate = RateLimit {
        ops: vec![
            "GetItem",
            "Query",
            "UpdateItem",
            "PutItem",
            "DeleteItem",
            "TransactWriteItems",
        ],
        per_second: 60.0,
        burst: 30.0,
    };
    let p = proxy::start(
        endpoint(),
        endpoint(),
        FaultPlan {
            rate: Some(rate),
            ..FaultPlan::quiet()
        },
    );
    let outputs: Vec<std::process::Output> = std::thread::scope(|s| {
        let tasks: Vec<_> = lines
            .iter()
            .enumerate()
            .map(|(i, line)| {
                let (table, url) = (&table, &p.url);
                s.spawn(move || {
                    let attempt = format!("attempt_test_m_{i:06}_0");
                    reader_input(
                        &[
                            "--shards-from-stdin",
                            "--checkpoint-table",
                            table,
                            "--fields",
                            "shard_id,sequence_number",
                        ],
                        format!("{}\t{line}\n", i * 300).as_bytes(),
                        &[
                            ("AWS_ENDPOINT_URL", url),
                            ("mapreduce_task_attempt_id", &attempt),
                        ],
                    )
                })
            })
            .collect();
        tasks.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let mut got = Vec::new();
    let (mut reported, mut most_retries) = (0, 0);
    for o in &outputs {
        assert!(o.status.success(), "a map task failed:\n{}", stderr(o));
        reported += counter(&stderr(o), "KinesisReader,throttles");
        most_retries = most_retries.max(counter(&stderr(o), "KinesisReader,retries"));
        got.extend(
            String::from_utf8(o.stdout.clone())
                .unwrap()
                .lines()
                .map(str::to_string),
        );
    }
    let throttled = p.count(proxy::Fault::Throttle);
    assert!(
        throttled >= 50,
        "only {throttled} throttles: the rate did not bite"
    );
    assert_eq!(reported, throttled, "throttles the tasks reported vs. sent");
    eprintln!("100 map tasks: {throttled} throttles, at most {most_retries} retries in one task");
    let mut want: Vec<String> = puts
        .iter()
        .map(|r| format!("{}\t{}", r.shard_id, r.sequence_number))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let fin = reader(&[
        "finish",
        "--stream",
        &stream,
        "--checkpoint-table",
        &table,
        "--logical-name",
        "H",
        "--iteration",
        "0",
    ]);
    assert!(fin.status.success(), "{}", stderr(&fin));
}
