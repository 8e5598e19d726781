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
