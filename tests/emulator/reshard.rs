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

/// Checks a run of iterations against what was put: each record exactly once,
/// shard order kept, and every parent's records in iterations before any of
/// its children's.
pub(crate) fn check(
    iterations: &[Vec<(String, String, String, String)>],
    put: &[Put],
    parents: &BTreeMap<String, Vec<String>>,
) {
    let mut seen = BTreeSet::new();
    let mut last_seq: BTreeMap<String, String> = BTreeMap::new();
    let mut first_iter: BTreeMap<String, usize> = BTreeMap::new();
    let mut last_iter: BTreeMap<String, usize> = BTreeMap::new();
    for (i, lines) in iterations.iter().enumerate() {
        for (shard, seq, pk, data) in lines {
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
            first_iter.entry(shard.clone()).or_insert(i);
            last_iter.insert(shard.clone(), i);
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
            if let (Some(pl), Some(cf)) = (last_iter.get(p), first_iter.get(child)) {
                assert!(
                    pl < cf,
                    "child {child} read in iteration {cf}, parent {p} still in {pl}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn split_then_merge_between_iterations_reads_parents_before_children() {
    let k = kinesis_local_client().await;
    let stream = unique("rs");
    create_stream(&k, &stream, 1).await;
    wait_active(&k, &stream).await;
    let table = table();
    let mut put = put_many(&k, &stream, 0, 8).await;
    let mut iterations = vec![next(&stream, &table, "L")];
    // Split the only shard, then write to both halves.
    split(&k, &stream, &open_shards(&k, &stream).await[0]).await;
    put.extend(put_many(&k, &stream, 8, 12).await);
    iterations.push(next(&stream, &table, "L"));
    // Merge the two children back into one, then write again.
    let halves = open_shards(&k, &stream).await;
    assert_eq!(halves.len(), 2);
    merge(&k, &stream, halves[0].shard_id(), halves[1].shard_id()).await;
    put.extend(put_many(&k, &stream, 20, 10).await);
    for _ in 0..3 {
        iterations.push(next(&stream, &table, "L"));
    }
    check(&iterations, &put, &lineage(&k, &stream).await);
    // A replay of the iteration that read the children is identical.
    let replay = ok(reader_kl(&args(&stream, &table, "L", "1")));
    assert_eq!(parse_lines(&replay), iterations[1]);
    // The last iterations are empty: nothing is read twice.
    assert!(iterations[4].is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn five_iterations_with_a_producer_splitting_and_merging_meanwhile() {
    let k = kinesis_local_client().await;
    let stream = unique("live");
    create_stream(&k, &stream, 1).await;
    wait_active(&k, &stream).await;
    let table = table();
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
    let k = kinesis_local_client().await;
    let stream = unique("rsf");
    create_stream(&k, &stream, 1).await;
    wait_active(&k, &stream).await;
    let table = table();
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
    let k = kinesis_local_client().await;
    let stream = unique("efo");
    create_stream(&k, &stream, 2).await;
    wait_active(&k, &stream).await;
    let table = table();
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
    let k = kinesis_local_client().await;
    let stream = unique("efo-map");
    create_stream(&k, &stream, 2).await;
    wait_active(&k, &stream).await;
    let table = table();
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
