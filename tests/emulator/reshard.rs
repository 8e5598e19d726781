//! Resharding on kinesis-local, which reshards like the service (moto copies
//! parents' records into children and can put into a closed parent, so these
//! tests do not run there).

use crate::harness::*;
use aws_sdk_kinesis::Client as Kinesis;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

fn next(stream: &str, table: &str, logical: &str) -> Vec<(String, String, String, String)> {
    parse_lines(&ok(reader_kl(&args(stream, table, logical, "next"))))
}

async fn open_shards(k: &Kinesis, stream: &str) -> Vec<aws_sdk_kinesis::types::Shard> {
    let out = k.list_shards().stream_name(stream).send().await.unwrap();
    out.shards()
        .iter()
        .filter(|s| {
            s.sequence_number_range()
                .and_then(|r| r.ending_sequence_number())
                .is_none()
        })
        .cloned()
        .collect()
}

async fn wait_active(k: &Kinesis, stream: &str) {
    for _ in 0..200 {
        let d = k
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .unwrap();
        if d.stream_description_summary()
            .unwrap()
            .stream_status()
            .as_str()
            == "ACTIVE"
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("stream {stream} never became active");
}

async fn split(k: &Kinesis, stream: &str, shard: &aws_sdk_kinesis::types::Shard) {
    let r = shard.hash_key_range().unwrap();
    let (lo, hi): (u128, u128) = (
        r.starting_hash_key().parse().unwrap(),
        r.ending_hash_key().parse().unwrap(),
    );
    k.split_shard()
        .stream_name(stream)
        .shard_to_split(shard.shard_id())
        .new_starting_hash_key((lo + (hi - lo) / 2 + 1).to_string())
        .send()
        .await
        .unwrap();
    wait_active(k, stream).await;
}

async fn merge(k: &Kinesis, stream: &str, a: &str, b: &str) {
    k.merge_shards()
        .stream_name(stream)
        .shard_to_merge(a)
        .adjacent_shard_to_merge(b)
        .send()
        .await
        .unwrap();
    wait_active(k, stream).await;
}

/// A new stream of `shards` on kinesis-local, active, and a new checkpoint table.
async fn new_stream(prefix: &str, shards: i32) -> (Kinesis, String, String) {
    let k = kinesis_local_client().await;
    let stream = unique(prefix);
    create_stream(&k, &stream, shards).await;
    wait_active(&k, &stream).await;
    (k, stream, table())
}

/// Parents of every shard, from ListShards.
async fn lineage(k: &Kinesis, stream: &str) -> BTreeMap<String, Vec<String>> {
    let out = k.list_shards().stream_name(stream).send().await.unwrap();
    out.shards()
        .iter()
        .map(|s| {
            let p = s
                .parent_shard_id()
                .iter()
                .chain(s.adjacent_parent_shard_id().iter())
                .map(|x| x.to_string())
                .collect();
            (s.shard_id().to_string(), p)
        })
        .collect()
}

/// A number in the header item of iteration `i` of a logical name.
async fn header_number(table: &str, stream: &str, logical: &str, i: usize, attr: &str) -> i64 {
    let s = aws_sdk_dynamodb::types::AttributeValue::S;
    let h = dynamo()
        .await
        .get_item()
        .table_name(table)
        .key("HashKey", s(format!("{stream}/{logical}")))
        .key("RangeKey", s(format!("{i:010}")))
        .send()
        .await
        .unwrap();
    h.item().unwrap()[attr].as_n().unwrap().parse().unwrap()
}

/// Checks a run of iterations against what was put: each record exactly once,
/// shard order kept, and every parent's records before any of its
/// children's (in an earlier iteration, or earlier in the same one).
pub(crate) fn check(
    iterations: &[Vec<(String, String, String, String)>],
    put: &[Put],
    parents: &BTreeMap<String, Vec<String>>,
) {
    let mut seen = BTreeSet::new();
    let mut last_seq: BTreeMap<String, String> = BTreeMap::new();
    // (iteration, line) of each shard's first and last record.
    let mut first_at: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut last_at: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (i, lines) in iterations.iter().enumerate() {
        for (l, (shard, seq, pk, data)) in lines.iter().enumerate() {
            assert!(
                seen.insert((shard.clone(), seq.clone(), pk.clone(), data.clone())),
                "record twice: {seq}"
            );
            if let Some(prev) = last_seq.get(shard) {
                assert!(
                    prev.len() < seq.len() || (prev.len() == seq.len() && prev < seq),
                    "shard {shard} out of order"
                );
            }
            last_seq.insert(shard.clone(), seq.clone());
            first_at.entry(shard.clone()).or_insert((i, l));
            last_at.insert(shard.clone(), (i, l));
        }
    }
    let expected: BTreeSet<_> = put.iter().map(Put::line).collect();
    if seen != expected {
        let missing: Vec<_> = expected.difference(&seen).collect();
        let extra: Vec<_> = seen.difference(&expected).collect();
        panic!(
            "the iterations together are exactly the stream: {} of {} records missing (first: {:?}), {} not put (first: {:?})",
            missing.len(),
            expected.len(),
            &missing[..missing.len().min(5)],
            extra.len(),
            &extra[..extra.len().min(5)]
        );
    }
    for (child, ps) in parents {
        for p in ps {
            if let (Some(pl), Some(cf)) = (last_at.get(p), first_at.get(child)) {
                assert!(
                    pl < cf,
                    "child {child} read from (iteration, line) {cf:?}, parent {p} until {pl:?}"
                );
            }
        }
    }
}

/// A split, then a merge, between iterations: each iteration holds exactly
/// the records put before it, on whichever shard they landed (the children
/// join the iteration of their parents' end), in shard order, parents'
/// records before their children's, and every replay is byte-identical.
#[tokio::test(flavor = "multi_thread")]
async fn split_then_merge_between_iterations_each_iteration_holds_what_arrived_before_it() {
    let (k, stream, table) = new_stream("rs", 1).await;
    let mut steps = vec![put_many(&k, &stream, 0, 8).await];
    let mut raw = vec![ok(reader_kl(&args(&stream, &table, "L", "next")))];
    // Split the only shard, then write to both halves.
    split(&k, &stream, &open_shards(&k, &stream).await[0]).await;
    steps.push(put_many(&k, &stream, 8, 12).await);
    raw.push(ok(reader_kl(&args(&stream, &table, "L", "next"))));
    // Merge the two children back into one, then write again.
    let halves = open_shards(&k, &stream).await;
    assert_eq!(halves.len(), 2);
    merge(&k, &stream, halves[0].shard_id(), halves[1].shard_id()).await;
    steps.push(put_many(&k, &stream, 20, 10).await);
    raw.push(ok(reader_kl(&args(&stream, &table, "L", "next"))));
    raw.push(ok(reader_kl(&args(&stream, &table, "L", "next"))));
    let iterations: Vec<_> = raw.iter().map(|o| parse_lines(o)).collect();
    for (i, put) in steps.iter().enumerate() {
        let mut got = iterations[i].clone();
        let mut want: Vec<_> = put.iter().map(Put::line).collect();
        got.sort();
        want.sort();
        assert_eq!(
            got, want,
            "iteration {i} holds exactly the records put before it"
        );
    }
    assert!(iterations[3].is_empty(), "nothing is held back");
    let put: Vec<Put> = steps.into_iter().flatten().collect();
    check(&iterations, &put, &lineage(&k, &stream).await);
    for (i, first) in raw.iter().enumerate() {
        let replay = ok(reader_kl(&args(&stream, &table, "L", &i.to_string())));
        assert_eq!(&replay, first, "replay of iteration {i}");
    }
}

/// A split, then a merge of the two halves, while one run reads (`--until
/// timeouts`): each child joins that run once its parents are read to their
/// end, so the iteration holds every record put during it, each parent's
/// before its children's. `status` names the joined children in the order
/// they joined, a replay prints the same bytes, and the next iteration
/// holds only what came after.
#[tokio::test(flavor = "multi_thread")]
async fn a_split_and_a_merge_during_a_run_join_that_run() {
    let (k, stream, table) = new_stream("rsjoin", 1).await;
    let mut put = put_many(&k, &stream, 0, 10).await;
    let parent = open_shards(&k, &stream).await[0].shard_id().to_string();
    let until = ["--until", "timeouts", "--nodata-timeout", "10s"];
    let mut a = args(&stream, &table, "J", "next");
    a.extend(until);
    let run = spawn_reader_kl(&a);
    tokio::task::block_in_place(|| {
        wait_until("iteration 0 is open", 30, || {
            status_kl(&stream, &table, "J")
                .as_array()
                .is_some_and(|v| !v.is_empty())
        })
    });
    split(&k, &stream, &open_shards(&k, &stream).await[0]).await;
    put.extend(put_many(&k, &stream, 10, 20).await);
    let halves = open_shards(&k, &stream).await;
    merge(&k, &stream, halves[0].shard_id(), halves[1].shard_id()).await;
    put.extend(put_many(&k, &stream, 30, 10).await);
    let first = tokio::task::block_in_place(|| ok(run.wait_with_output().unwrap()));
    let parents = lineage(&k, &stream).await;
    check(&[parse_lines(&first)], &put, &parents);

    let st = status_kl(&stream, &table, "J");
    let mut joined: Vec<(String, Option<u64>)> = st[0]["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["shard_id"].as_str().unwrap().to_string(),
                s["joined"].as_u64(),
            )
        })
        .collect();
    let merged = open_shards(&k, &stream).await[0].shard_id().to_string();
    let mut want = vec![(parent.clone(), None), (merged.clone(), Some(3))];
    want.extend(halves.iter().map(|h| {
        let n = if h.shard_id() == halves[0].shard_id() {
            1
        } else {
            2
        };
        (h.shard_id().to_string(), Some(n))
    }));
    want.sort();
    joined.sort();
    assert_eq!(joined, want, "{st}");
    assert_eq!(st[0]["state"], "succeeded");
    // Raised when the first child joined: a binary that knows only layout
    // 3 refuses the iteration rather than replay it in another order.
    assert_eq!(header_number(&table, &stream, "J", 0, "layout").await, 4);
    // And it counts the joined children, so that one's item deleted is seen.
    assert_eq!(
        header_number(&table, &stream, "J", 0, "joined_children").await,
        want.iter().filter(|(_, j)| j.is_some()).count() as i64
    );

    let replay = ok(reader_kl(&args(&stream, &table, "J", "0")));
    assert_eq!(replay, first, "replay of iteration 0");
    let later = put_many(&k, &stream, 40, 5).await;
    let mut a = args(&stream, &table, "J", "next");
    a.extend(["--until", "timeouts", "--nodata-timeout", "2s"]);
    let next = parse_lines(&ok(reader_kl(&a)));
    check(&[next], &later, &parents);
    assert_eq!(header_number(&table, &stream, "J", 1, "layout").await, 3);
}

/// UpdateShardCount from 2 to 4, then to 3, between iterations, while a
/// producer writes all along: each iteration holds exactly the records that
/// arrived between the previous one's snapshot and its own, on whichever
/// shard they landed. (A record put within half a second of a snapshot may
/// fall on either side of it: it may not be visible yet when its shard is
/// caught up.)
#[tokio::test(flavor = "multi_thread")]
async fn update_shard_count_while_a_producer_writes_delays_no_record() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let (k, stream, table) = new_stream("usc", 2).await;
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (k, stream, stop) = (k.clone(), stream.clone(), stop.clone());
        tokio::spawn(async move {
            // Each record with the times before and after its put.
            let mut put: Vec<(Put, i64, i64)> = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let before = now();
                let p = crate::harness::put(
                    &k,
                    &stream,
                    &format!("key-{}", i % 23),
                    format!("u{i}").as_bytes(),
                )
                .await;
                put.push((p, before, now()));
                i += 1;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            put
        })
    };
    let next = || {
        let (s, t) = (stream.clone(), table.clone());
        tokio::task::spawn_blocking(move || parse_lines(&ok(reader_kl(&args(&s, &t, "U", "next")))))
    };
    let update = |to: i32| {
        let (k, s) = (k.clone(), stream.clone());
        async move {
            k.update_shard_count()
                .stream_name(&s)
                .target_shard_count(to)
                .scaling_type(aws_sdk_kinesis::types::ScalingType::UniformScaling)
                .send()
                .await
                .unwrap();
            wait_active(&k, &s).await;
        }
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut iterations = vec![next().await.unwrap()];
    update(4).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    iterations.push(next().await.unwrap());
    update(3).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    iterations.push(next().await.unwrap());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    iterations.push(next().await.unwrap());
    stop.store(true, Ordering::SeqCst);
    let put = producer.await.unwrap();
    iterations.push(next().await.unwrap());

    // Each iteration's snapshot, from its header.
    let mut snapshot = Vec::new();
    for i in 0..iterations.len() {
        let opened_at = header_number(&table, &stream, "U", i, "opened_at").await;
        snapshot.push(opened_at);
    }
    let in_iteration: BTreeMap<(String, String, String, String), usize> = iterations
        .iter()
        .enumerate()
        .flat_map(|(i, lines)| lines.iter().map(move |l| (l.clone(), i)))
        .collect();
    let mut late = Vec::new();
    for (p, before, after) in &put {
        let Some(&i) = in_iteration.get(&p.line()) else {
            panic!(
                "record {:?} ({before}..{after}) is in no iteration",
                p.line()
            );
        };
        // It arrived before its iteration's snapshot, and not well before
        // the previous one's.
        assert!(
            *before < snapshot[i],
            "{:?} put at {before}, after iteration {i}'s snapshot {}",
            p.line(),
            snapshot[i]
        );
        if i > 0 && *after < snapshot[i - 1] - 500 {
            late.push(format!(
                "{:?} put at {after}, before iteration {}'s snapshot {}, read in {i}",
                p.line(),
                i - 1,
                snapshot[i - 1]
            ));
        }
    }
    assert!(
        late.is_empty(),
        "{} of {} records held back: {late:#?}",
        late.len(),
        put.len()
    );
    let children: usize = iterations[1..3]
        .iter()
        .map(|it| it.iter().filter(|l| open_shard_ids_before(&l.0)).count())
        .sum();
    assert!(
        children > 0,
        "no record of a child in the iterations that span the reshards"
    );
    check(
        &iterations,
        &put.into_iter().map(|p| p.0).collect::<Vec<_>>(),
        &lineage(&k, &stream).await,
    );
}

/// Shards created by a reshard have numbers past the stream's first two.
fn open_shard_ids_before(shard: &str) -> bool {
    shard
        .rsplit('-')
        .next()
        .and_then(|n| n.parse::<u64>().ok())
        .is_some_and(|n| n >= 2)
}

/// kill -9 while a run reads the children of a split (their parent's end
/// already fixed), then a rerun: it prints what an undisturbed run prints.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_while_reading_a_child_then_rerun_gives_the_undisturbed_bytes() {
    let (k, stream, table) = new_stream("rskill", 1).await;
    put_many(&k, &stream, 0, 20).await;
    let parent = open_shards(&k, &stream).await[0].shard_id().to_string();
    split(&k, &stream, &open_shards(&k, &stream).await[0]).await;
    // Small pages: each child takes a couple of seconds to read.
    put_many(&k, &stream, 20, 400).await;
    let run = |logical: &str| {
        let mut a = args(&stream, &table, logical, "0");
        a.extend(["--batch-size", "20", "--rerun-without-wait"]);
        a.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let strs = |a: &[String]| a.iter().map(String::clone).collect::<Vec<_>>();
    let read = |a: &[String]| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        tokio::task::block_in_place(|| ok(reader_kl(&a)))
    };
    let undisturbed = read(&run("U"));
    assert_eq!(parse_lines(&undisturbed).len(), 420);
    let fixed = |logical: &str| -> Vec<(String, bool)> {
        let v = status_kl(&stream, &table, logical);
        v.as_array().unwrap().first().map_or(Vec::new(), |i| {
            i["shards"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let id = s["shard_id"].as_str().unwrap().to_string();
                    (id, !s["fixed_by"].is_null())
                })
                .collect()
        })
    };
    for name in ["K0", "K1", "K2"] {
        let a = strs(&run(name));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let mut child = spawn_reader_kl(&a);
        // Kill as soon as the parent's end is fixed.
        let shards = tokio::task::block_in_place(|| loop {
            let f = fixed(name);
            if f.iter().any(|(s, done)| *s == parent && *done) {
                let _ = child.kill();
                let _ = child.wait();
                break fixed(name);
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "{name} ended before its parent was fixed"
            );
            std::thread::sleep(Duration::from_millis(20));
        });
        assert_eq!(shards.len(), 3, "{shards:?}");
        assert!(
            shards.iter().any(|(s, done)| *s != parent && !done),
            "{name} was killed while reading a child: {shards:?}"
        );
        assert_eq!(read(&run(name)), undisturbed, "{name} after its kill");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn five_iterations_with_a_producer_splitting_and_merging_meanwhile() {
    let (k, stream, table) = new_stream("live", 1).await;
    let producer = {
        let (k, stream) = (k.clone(), stream.clone());
        tokio::spawn(async move {
            let mut put = Vec::new();
            for i in 0..90 {
                put.push(
                    crate::harness::put(
                        &k,
                        &stream,
                        &format!("key-{}", i % 13),
                        format!("r{i}").as_bytes(),
                    )
                    .await,
                );
                if i == 30 {
                    split(&k, &stream, &open_shards(&k, &stream).await[0]).await;
                }
                if i == 60 {
                    let halves = open_shards(&k, &stream).await;
                    merge(&k, &stream, halves[0].shard_id(), halves[1].shard_id()).await;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            put
        })
    };
    let mut iterations = Vec::new();
    for _ in 0..5 {
        let (s, t) = (stream.clone(), table.clone());
        iterations.push(
            tokio::task::spawn_blocking(move || next(&s, &t, "P"))
                .await
                .unwrap(),
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let put = producer.await.unwrap();
    // Then until two empty iterations in a row: every generation has had its turn.
    let mut empty = 0;
    while empty < 2 {
        let it = next(&stream, &table, "P");
        empty = if it.is_empty() { empty + 1 } else { 0 };
        iterations.push(it);
        assert!(iterations.len() < 20, "iterations never ran dry");
    }
    check(&iterations, &put, &lineage(&k, &stream).await);
}

/// The five-iteration run above, with a split and a merge while a producer
/// writes, through the fault-injecting proxy (Kinesis on kinesis-local,
/// DynamoDB on moto): a run that gives up is rerun, as a scheduler would,
/// and the successful iterations together are still exactly the stream,
/// in shard order, parents before children.
#[tokio::test(flavor = "multi_thread")]
async fn a_split_and_a_merge_under_faults_lose_and_duplicate_nothing() {
    let (k, stream, table) = new_stream("rsf", 1).await;
    let p = crate::proxy::start(
        kinesis_local(),
        endpoint(),
        crate::faults::plan(crate::faults::seed(8)),
    );
    let env = crate::faults::via(&p);
    let producer = {
        let (k, stream) = (k.clone(), stream.clone());
        tokio::spawn(async move {
            let mut put = Vec::new();
            for i in 0..60 {
                put.push(
                    crate::harness::put(
                        &k,
                        &stream,
                        &format!("key-{}", i % 11),
                        format!("f{i}").as_bytes(),
                    )
                    .await,
                );
                if i == 20 {
                    split(&k, &stream, &open_shards(&k, &stream).await[0]).await;
                }
                if i == 40 {
                    let halves = open_shards(&k, &stream).await;
                    merge(&k, &stream, halves[0].shard_id(), halves[1].shard_id()).await;
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
            put
        })
    };
    let run = || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut a = args(&stream, &table, "F", "next");
        a.extend(["--lease-duration", "3s", "--lease-wait", "30s"]);
        tokio::task::block_in_place(|| reader_env(&a, &env))
    };
    let (mut iterations, mut failed, mut empty) = (Vec::new(), 0, 0);
    let mut producing = true;
    while empty < 2 {
        let o = run();
        if o.status.success() {
            let it = parse_lines(&o.stdout);
            empty = if it.is_empty() && !producing {
                empty + 1
            } else {
                0
            };
            iterations.push(it);
        } else {
            failed += 1;
        }
        if producing && producer.is_finished() {
            producing = false;
        }
        assert!(iterations.len() + failed < 40, "iterations never ran dry");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let put = producer.await.unwrap();
    check(&iterations, &put, &lineage(&k, &stream).await);
    eprintln!(
        "{} iterations ({failed} failed runs rerun), faults: {:?}",
        iterations.len(),
        p.injected()
    );
    // Which faults a seed draws varies; that some were drawn must not.
    assert!(!p.injected().is_empty(), "no fault was injected");
}

/// Enhanced fan-out (`--efo-consumer`) reads exactly the iterations polling
/// reads — through a split — and either kind of run replays the other's
/// iterations byte for byte. The consumer is registered once, reused, and
/// removed only when asked.
#[tokio::test(flavor = "multi_thread")]
async fn enhanced_fan_out_reads_the_same_iterations_as_polling() {
    let (k, stream, table) = new_stream("efo", 2).await;
    let efo = |logical: &str, it: &str| {
        let mut a = args(&stream, &table, logical, it);
        a.extend(["--efo-consumer", "efo-test"]);
        ok(reader_kl(&a))
    };
    let poll = |logical: &str, it: &str| ok(reader_kl(&args(&stream, &table, logical, it)));
    let mut put = put_many(&k, &stream, 0, 30).await;
    let mut pushed = vec![efo("E", "next")];
    let mut polled = vec![poll("P", "next")];
    assert_eq!(parse_lines(&pushed[0]).len(), 30);
    assert_eq!(pushed[0], polled[0]);
    split(&k, &stream, &open_shards(&k, &stream).await[0]).await;
    put.extend(put_many(&k, &stream, 30, 20).await);
    // Until both run dry: the closed parent, then its children.
    for _ in 0..3 {
        pushed.push(efo("E", "next"));
        polled.push(poll("P", "next"));
    }
    assert_eq!(pushed, polled, "the same iterations, byte for byte");
    let lines: Vec<_> = pushed.iter().map(|o| parse_lines(o)).collect();
    check(&lines, &put, &lineage(&k, &stream).await);
    // A replay by polling of a pushed iteration, and the other way round.
    assert_eq!(poll("E", "1"), pushed[1]);
    assert_eq!(efo("P", "2"), polled[2]);
    let o = reader_kl(&["deregister-consumer", "efo-test", "--stream", &stream]);
    assert!(stderr(&o).contains("deregistered"), "{}", stderr(&o));
    let o = reader_kl(&["deregister-consumer", "efo-test", "--stream", &stream]);
    assert!(stderr(&o).contains("was not registered"), "{}", stderr(&o));
}

/// Map tasks of a plan made with `--efo-consumer` read by enhanced fan-out
/// as the consumer the plan registered and put in the manifest: together
/// they print exactly the records a polling replay of the iteration prints.
#[tokio::test(flavor = "multi_thread")]
async fn map_tasks_read_by_enhanced_fan_out_as_the_plans_consumer() {
    let (k, stream, table) = new_stream("efo-map", 2).await;
    put_many(&k, &stream, 0, 40).await;
    let kl = [("AWS_ENDPOINT_URL_KINESIS", kinesis_local())];
    let plan = [
        "plan",
        "--stream",
        &stream,
        "--checkpoint-table",
        &table,
        "--logical-name",
        "M",
        "--efo-consumer",
        "efo-map",
    ];
    let manifest = String::from_utf8(ok(reader_kl(&plan))).unwrap();
    let lines: Vec<&str> = manifest.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(
        lines.iter().all(|l| l.contains("\"efo_consumer\"")),
        "{manifest}"
    );
    let task_args = [
        "--shards-from-stdin",
        "--checkpoint-table",
        &table,
        "--efo-consumer",
        "efo-map",
        "--fields",
        "shard_id,sequence_number,partition_key,data",
    ];
    let mut tasks: Vec<u8> = Vec::new();
    for line in &lines {
        let o = reader_input(&task_args, format!("{line}\n").as_bytes(), &kl);
        assert!(o.status.success(), "{}", stderr(&o));
        tasks.extend(o.stdout);
    }
    let o = reader_kl(&[
        "finish",
        "--stream",
        &stream,
        "--checkpoint-table",
        &table,
        "--logical-name",
        "M",
        "--iteration",
        "0",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The whole-iteration replay interleaves the shards; the tasks print
    // one shard each: the same lines.
    let replay = ok(reader_kl(&args(&stream, &table, "M", "0")));
    let (mut got, mut want) = (parse_lines(&tasks), parse_lines(&replay));
    assert_eq!(want.len(), 40);
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let o = reader_kl(&["deregister-consumer", "efo-map", "--stream", &stream]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Map mode after a split: `plan` keeps the family (the closed parent and
/// its children) on one manifest line whatever `--shards-per-line` says, its
/// task prints the parent's lines before the children's, the tasks together
/// print exactly the iteration, and a task given a child without its parent
/// refuses to start.
#[tokio::test(flavor = "multi_thread")]
async fn map_mode_keeps_a_family_on_one_line_read_in_lineage_order() {
    let (k, stream, table) = new_stream("rsmap", 2).await;
    let mut put = put_many(&k, &stream, 0, 20).await;
    let parent = open_shards(&k, &stream).await[0].clone();
    split(&k, &stream, &parent).await;
    put.extend(put_many(&k, &stream, 20, 30).await);
    let plan = [
        "plan",
        "--stream",
        &stream,
        "--checkpoint-table",
        &table,
        "--logical-name",
        "F",
        "--shards-per-line",
        "1",
    ];
    let manifest = String::from_utf8(ok(reader_kl(&plan))).unwrap();
    let lines: Vec<serde_json::Value> = manifest
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let shards: Vec<Vec<&str>> = lines
        .iter()
        .map(|l| {
            l["shards"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(shards.len(), 2, "{manifest}");
    let family = shards.iter().find(|s| s.len() == 3).expect("a line of 3");
    assert!(family.contains(&parent.shard_id()), "{family:?}");
    let kl = [("AWS_ENDPOINT_URL_KINESIS", kinesis_local())];
    let task_args = [
        "--shards-from-stdin",
        "--checkpoint-table",
        &table,
        "--fields",
        "shard_id,sequence_number,partition_key,data",
    ];
    // A line that names a child but not its parent is refused.
    let child = family.iter().find(|s| **s != parent.shard_id()).unwrap();
    let mut cut = lines[shards.iter().position(|s| s.len() == 3).unwrap()].clone();
    cut["shards"] = serde_json::json!([child]);
    let o = reader_input(&task_args, format!("{cut}\n").as_bytes(), &kl);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("after its parent shardId-")
            && stderr(&o).contains(", which this task was not given: a map task reads"),
        "{}",
        stderr(&o)
    );
    let mut tasks = Vec::new();
    for line in manifest.lines() {
        let o = reader_input(&task_args, format!("{line}\n").as_bytes(), &kl);
        assert!(o.status.success(), "{}", stderr(&o));
        tasks.push(parse_lines(&o.stdout));
    }
    // In the family's task, the parent's lines come before its children's.
    let fam = &tasks[shards.iter().position(|s| s.len() == 3).unwrap()];
    let last_parent = fam.iter().rposition(|l| l.0 == parent.shard_id()).unwrap();
    let first_child = fam.iter().position(|l| l.0 != parent.shard_id()).unwrap();
    assert!(last_parent < first_child, "{fam:?}");
    let mut got: Vec<_> = tasks.into_iter().flatten().collect();
    let mut want: Vec<_> = put.iter().map(Put::line).collect();
    got.sort();
    want.sort();
    assert_eq!(
        got, want,
        "the tasks print exactly the records put before the plan"
    );
}
