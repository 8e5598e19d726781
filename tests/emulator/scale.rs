//! Many shards: what opening and closing an iteration costs in checkpoint
//! writes. Counts, not times (times are in the benchmark harness).

use crate::harness::*;
use aws_sdk_dynamodb::types::AttributeValue as AV;
use std::collections::HashMap;

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

/// Every item of `table` whose hash key starts with `prefix`, by hash key.
async fn items_under(
    table: &str,
    prefix: &str,
) -> std::collections::BTreeMap<String, Vec<HashMap<String, AV>>> {
    let d = dynamo().await;
    let mut by_key = std::collections::BTreeMap::<String, Vec<_>>::new();
    let mut start = None;
    loop {
        let page = d
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .unwrap();
        for item in page.items() {
            let h = item["HashKey"].as_s().unwrap();
            if h.starts_with(prefix) {
                by_key.entry(h.clone()).or_default().push(item.clone());
            }
        }
        match page.last_evaluated_key() {
            Some(k) => start = Some(k.clone()),
            None => return by_key,
        }
    }
}

/// A 300-shard iteration spreads its shard items over two partition keys
/// (DynamoDB serves one key about 1,000 WCU/s, and an iteration writes about
/// 4 WCU per shard), with a layout item where a one-key iteration keeps its
/// shards. An iteration in the one-key layout that earlier versions wrote,
/// however wide, still replays the same bytes, and `next` continues after it.
#[tokio::test(flavor = "multi_thread")]
async fn a_wide_iteration_spreads_its_items_over_keys_and_the_one_key_layout_still_reads() {
    let k = kinesis().await;
    let stream = unique("spread");
    create_stream(&k, &stream, 300).await;
    put_many(&k, &stream, 0, 300).await;
    let table = table();
    let first = ok(reader(&args(&stream, &table, "S", "next")));
    assert_eq!(first.iter().filter(|b| **b == b'\n').count(), 300);

    let iteration = format!("{stream}/S/0000000000");
    let items = items_under(&table, &iteration).await;
    let counts: Vec<(String, usize)> = items.iter().map(|(k, v)| (k.clone(), v.len())).collect();
    assert_eq!(
        counts,
        [
            (iteration.clone(), 1),
            (format!("{iteration}/0"), 150),
            (format!("{iteration}/1"), 150)
        ],
        "items per hash key"
    );
    let marker = &items[&iteration][0];
    assert_eq!(marker["RangeKey"].as_s().unwrap(), "!layout");
    assert!(items[&format!("{iteration}/0")]
        .iter()
        .all(|i| i.contains_key("next")));

    // Rewrite iteration 0 as an earlier version wrote it: every shard item
    // under one key, no layout item, no layout in the header.
    let d = dynamo().await;
    for (key, list) in &items {
        for item in list {
            let range = item["RangeKey"].clone();
            d.delete_item()
                .table_name(&table)
                .key("HashKey", AV::S(key.clone()))
                .key("RangeKey", range)
                .send()
                .await
                .unwrap();
            if key != &iteration {
                let mut moved = item.clone();
                moved.insert("HashKey".into(), AV::S(iteration.clone()));
                d.put_item()
                    .table_name(&table)
                    .set_item(Some(moved))
                    .send()
                    .await
                    .unwrap();
            }
        }
    }
    d.update_item()
        .table_name(&table)
        .key("HashKey", AV::S(format!("{stream}/S")))
        .key("RangeKey", AV::S("0000000000".into()))
        .update_expression("REMOVE layout, shard_partitions")
        .send()
        .await
        .unwrap();
    assert_eq!(items_under(&table, &iteration).await[&iteration].len(), 300);

    let replay = ok(reader(&args(&stream, &table, "S", "0")));
    assert_eq!(
        replay, first,
        "the one-key iteration replays the same bytes"
    );
    let more = put_many(&k, &stream, 300, 40).await;
    let next = ok(reader(&args(&stream, &table, "S", "next")));
    let mut got = parse_lines(&next);
    let mut want: Vec<_> = more.iter().map(Put::line).collect();
    got.sort();
    want.sort();
    assert_eq!(
        got, want,
        "iteration 1 holds exactly the records after iteration 0"
    );
    let spread = items_under(&table, &format!("{stream}/S/0000000001")).await;
    assert_eq!(
        spread.len(),
        3,
        "iteration 1 is spread again: {:?}",
        spread.keys()
    );
}

/// DynamoDB cancels a transaction that touches an item another transaction
/// is writing at that moment; moto does not, so the proxy does, holding
/// each transaction 300 ms. Every fix checks the one lease item, so a
/// 250-shard iteration whose ends arrive together (three transactions) must
/// fix them one transaction after another. A conflict forced on the
/// iteration's creation and on a lease update is tried again, as the
/// service's conflicts pass once the other transaction is done.
#[tokio::test(flavor = "multi_thread")]
async fn a_wide_iterations_fixes_never_conflict_and_a_conflict_is_tried_again() {
    use crate::proxy::{self, Fault, FaultPlan};
    let k = kinesis().await;
    let stream = unique("conflict");
    create_stream(&k, &stream, 250).await;
    put_many(&k, &stream, 0, 250).await;
    let table = table();
    let p = proxy::start(
        endpoint(),
        endpoint(),
        FaultPlan {
            conflicts: Some(std::time::Duration::from_millis(300)),
            force: vec![
                (Fault::Conflict, "TransactWriteItems"),
                (Fault::Conflict, "UpdateItem"),
            ],
            ..FaultPlan::quiet()
        },
    );
    let via = [("AWS_ENDPOINT_URL", p.url.as_str())];
    let run = args(&stream, &table, "C", "next");
    let first = ok(reader_env(&run, &via));
    assert_eq!(first.iter().filter(|b| **b == b'\n').count(), 250);
    // The next iteration is empty: all 250 ends arrive at once.
    let o = reader_env(&run, &via);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, b"");
    let injected = p.injected();
    assert_eq!(
        injected.get(&(Fault::Conflict, "TransactWriteItems".into())),
        Some(&1),
        "only the forced conflict: {injected:?}"
    );
    assert!(injected.contains_key(&(Fault::Conflict, "UpdateItem".into())));
    let s = status(&stream, &table, "C");
    let states: Vec<&str> = s
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["succeeded", "succeeded"]);
    assert_eq!(ok(reader(&args(&stream, &table, "C", "0"))), first);
}
