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
