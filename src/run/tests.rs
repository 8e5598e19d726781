//! The run logic on the in-memory ports: what a run prints, fixes and
//! records, with and without faults.

use super::*;
use crate::cli::ReaderCli;
use crate::config::Layers;
use crate::error::{exit_for, Exit};
use crate::fakes::{record, Fault, Faulty, MemoryStore, MemoryStream};
use crate::ports::checkpoint::{Holder, IterationHeader};
use clap::Parser;
use std::sync::Mutex;
use std::time::Duration;

fn config(args: &[&str]) -> ReaderConfig {
    let mut argv = vec![
        "kinesis-reader",
        "--stream",
        "logs",
        "--fields",
        "shard_id,sequence_number,data",
    ];
    // No pacing, unless a test asks for it.
    if !args.contains(&"--min-call-interval") {
        argv.extend(["--min-call-interval", "0ms"]);
    }
    argv.extend_from_slice(args);
    let cli = ReaderCli::try_parse_from(argv).unwrap();
    let none = |_: &str| None;
    let layers = Layers::new(&cli.common.define, &none).unwrap();
    ReaderConfig::resolve(&cli.common, &cli.read, &layers, None).unwrap()
}

fn checkpointed(iteration: &str) -> ReaderConfig {
    config(&[
        "--checkpoint-table",
        "cp-table",
        "--logical-name",
        "top",
        "--iteration",
        iteration,
    ])
}

/// Output kept in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// `n` records per shard, sequence numbers `first`, `first + 1`, …, all
/// arrived long before any iteration opens.
fn records(first: u64, n: u64, tag: &str) -> Vec<crate::records::Record> {
    (first..first + n)
        .map(|i| record(&i.to_string(), &format!("{tag}{i}"), 1_000 + i as i64))
        .collect()
}

/// Two records of a child, `first` and `first + 1`, that arrived "earlier"
/// by their clocks than some of [`records`]: lineage order must win over
/// arrival order.
fn early(first: u64, tag: &str) -> Vec<crate::records::Record> {
    (first..first + 2)
        .map(|i| {
            record(
                &i.to_string(),
                &format!("{tag}{i}"),
                1_000 + (i % 100) as i64,
            )
        })
        .collect()
}

/// Asserts that every line of shardId-0 comes before any of its children
/// shardId-2 and shardId-3.
fn children_after_parent(out: &str) {
    let lines: Vec<&str> = out.lines().collect();
    let last_parent = (lines.iter())
        .rposition(|l| l.starts_with("shardId-0\t"))
        .unwrap();
    let first_child = (lines.iter())
        .position(|l| l.starts_with("shardId-2\t") || l.starts_with("shardId-3\t"))
        .unwrap();
    assert!(last_parent < first_child, "{out}");
}

fn two_shards() -> Arc<MemoryStream> {
    Arc::new(
        MemoryStream::new("logs")
            .with_shard("shardId-0", &[], records(100, 5, "a"))
            .with_shard("shardId-1", &[], records(200, 5, "b")),
    )
}

fn key() -> LogicalKey {
    LogicalKey {
        stream: "logs".into(),
        logical_name: "top".into(),
    }
}

async fn read(
    api: Arc<dyn StreamApi>,
    store: Option<Arc<dyn CheckpointStore>>,
    cfg: &ReaderConfig,
) -> Result<(String, Summary)> {
    read_as("host:1:1", api, store, cfg).await
}

/// [`read`] by the run `owner`.
async fn read_as(
    owner: &str,
    api: Arc<dyn StreamApi>,
    store: Option<Arc<dyn CheckpointStore>>,
    cfg: &ReaderConfig,
) -> Result<(String, Summary)> {
    let out = Captured::default();
    let p = prepare(api, store, cfg, owner, None).await?;
    let s = run(p, cfg, Box::new(out.clone()), crate::stop::never(), false).await?;
    Ok((out.text(), s))
}

/// Iteration 0 of [`two_shards`] on a new store, opened by `host:1:1`.
async fn opened() -> (Arc<dyn CheckpointStore>, ReaderConfig, Prepared) {
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::default());
    let cfg = checkpointed("next");
    let p = prepare(two_shards(), Some(store.clone()), &cfg, "host:1:1", None)
        .await
        .unwrap();
    (store, cfg, p)
}

async fn header(store: &dyn CheckpointStore, n: u64) -> IterationHeader {
    store.header(&key(), n).await.unwrap().unwrap()
}

#[tokio::test]
async fn an_iteration_is_read_recorded_replayed_byte_for_byte_and_followed() {
    let api = two_shards();
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::default());
    let (first, s) = read(api.clone(), Some(store.clone()), &checkpointed("next"))
        .await
        .unwrap();
    assert_eq!(first.lines().count(), 10, "{first}");
    assert_eq!((s.iteration, s.records, s.fixed_now), (Some(0), 10, 2));
    assert_eq!(
        header(store.as_ref(), 0).await.state,
        IterationState::Succeeded
    );
    // New records arrive: a replay of 0 prints exactly what it printed.
    api.put("shardId-0", records(105, 3, "a"));
    let (again, s) = read(api.clone(), Some(store.clone()), &checkpointed("0"))
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!((s.replayed, s.fixed_now), (2, 0));
    // `next` is iteration 1, and holds exactly the new records.
    let (next, s) = read(api.clone(), Some(store.clone()), &checkpointed("next"))
        .await
        .unwrap();
    assert_eq!(s.iteration, Some(1));
    assert_eq!(
        next,
        "shardId-0\t105\ta105\nshardId-0\t106\ta106\nshardId-0\t107\ta107\n"
    );
}

#[tokio::test]
async fn a_boundary_that_cannot_be_fixed_fails_the_iteration_and_next_reruns_it() {
    let api = two_shards();
    let store = Arc::new(Faulty::new(MemoryStore::default()).on("fix_shards", 1..=1, Fault::Fail));
    let e = read(api.clone(), Some(store.clone()), &checkpointed("next"))
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("fixing shard"), "{e:#}");
    assert_eq!(header(store.inner(), 0).await.state, IterationState::Failed);
    // The rerun reads iteration 0 again, and every record of it.
    let (out, s) = read(api, Some(store), &checkpointed("next")).await.unwrap();
    assert_eq!(s.iteration, Some(0));
    assert_eq!(out.lines().count(), 10);
}

#[tokio::test]
async fn a_lease_taken_over_during_the_read_is_exit_3_and_left_to_the_taker() {
    let (store, cfg, p) = opened().await;
    // Another run takes the iteration over (--rerun-without-wait).
    let now = crate::clock::now_ms();
    store
        .acquire(&key(), 0, &Holder::whole("other"), now, now + 30_000, true)
        .await
        .unwrap();
    let out = Captured::default();
    let e = run(p, &cfg, Box::new(out), crate::stop::never(), false)
        .await
        .unwrap_err();
    assert_eq!(exit_for(&e), Exit::IterationOwned, "{e:#}");
    let h = header(store.as_ref(), 0).await;
    assert_eq!(h.state, IterationState::Open);
    assert_eq!(h.owner.as_deref(), Some("other"));
}

#[tokio::test]
async fn a_stopped_run_is_interrupted_and_its_iteration_released_as_failed() {
    let (store, cfg, p) = opened().await;
    let stop: Stop = Box::pin(async { "SIGTERM".to_string() });
    let e = run(p, &cfg, Box::new(Captured::default()), stop, false)
        .await
        .unwrap_err();
    assert_eq!(exit_for(&e), Exit::Interrupted, "{e:#}");
    let h = header(store.as_ref(), 0).await;
    assert_eq!((h.state, h.owner), (IterationState::Failed, None));
}

#[tokio::test]
async fn a_held_iteration_waits_for_the_callers_verdict() {
    let (store, cfg, p) = opened().await;
    let mut s = run(
        p,
        &cfg,
        Box::new(Captured::default()),
        crate::stop::never(),
        true,
    )
    .await
    .unwrap();
    let h = header(store.as_ref(), 0).await;
    assert_eq!(
        h.state,
        IterationState::Open,
        "not recorded before the verdict"
    );
    assert_eq!(h.owner.as_deref(), Some("host:1:1"));
    // Every end was fixed before the read returned.
    let shards = store.shards(&key(), 0).await.unwrap();
    assert!(shards.iter().all(|s| s.end.is_some()));
    s.held.take().unwrap().finish(false).await.unwrap();
    assert_eq!(
        header(store.as_ref(), 0).await.state,
        IterationState::Failed
    );
}

#[tokio::test]
async fn without_a_table_parents_are_read_before_their_children() {
    // shardId-0 was split into shardId-1 and shardId-2.
    let api = MemoryStream::new("logs")
        .with_shard("shardId-0", &[], records(100, 3, "p"))
        .with_shard("shardId-1", &["shardId-0"], records(200, 2, "c"))
        .with_shard("shardId-2", &["shardId-0"], records(300, 2, "d"));
    api.close("shardId-0");
    let (out, s) = read(Arc::new(api), None, &config(&[])).await.unwrap();
    let shards: Vec<&str> = out.lines().map(|l| l.split('\t').next().unwrap()).collect();
    assert_eq!(s.records, 7);
    assert_eq!(&shards[..3], ["shardId-0"; 3]);
    assert!(shards[3..].iter().all(|s| *s != "shardId-0"), "{out}");
}

/// Shard ends that arrive while a fix is in flight go together in the next
/// one: forty shards ending at once on a slow store cost a few writes, and
/// every end is fixed and replays the same.
#[tokio::test]
async fn ends_that_arrive_together_are_fixed_in_one_write() {
    let mut stream = MemoryStream::new("logs");
    for s in 0..40u64 {
        stream = stream.with_shard(&format!("shardId-{s:02}"), &[], records(100 * s, 3, "r"));
    }
    let api = Arc::new(stream);
    let store =
        Arc::new(Faulty::new(MemoryStore::default()).on("fix_shards", 1..=1000, Fault::Slow(100)));
    let (first, s) = read(api.clone(), Some(store.clone()), &checkpointed("next"))
        .await
        .unwrap();
    assert_eq!((s.iteration, first.lines().count()), (Some(0), 120));
    let writes = store.calls("fix_shards");
    assert!(writes <= 4, "{writes} writes for 40 ends");
    let fixed = store.inner().shards(&key(), 0).await.unwrap();
    assert!(fixed.iter().all(|s| s.end.is_some()), "{fixed:?}");
    assert_eq!(
        header(store.inner(), 0).await.state,
        IterationState::Succeeded
    );
    let (again, _) = read(api, Some(store), &checkpointed("0")).await.unwrap();
    assert_eq!(again, first);
}

/// A map task's settings (`--shards-from-stdin` with `args`) for the
/// manifest lines it was given.
fn map_task(args: &[&str], a: &crate::manifest::Assignment) -> ReaderConfig {
    let mut argv = vec![
        "kinesis-reader",
        "--min-call-interval",
        "0ms",
        "--nodata-timeout",
        "1",
        "--fields",
        "shard_id,sequence_number,data",
        "--checkpoint-table",
        "cp-table",
        "--shards-from-stdin",
    ];
    argv.extend(args);
    let cli = ReaderCli::try_parse_from(argv).unwrap();
    let none = |_: &str| None;
    let layers = Layers::new(&cli.common.define, &none).unwrap();
    ReaderConfig::resolve(&cli.common, &cli.read, &layers, Some(a)).unwrap()
}

/// A map task given a manifest line from `plan` asks the control plane
/// nothing (no DescribeStreamSummary, no ListShards), and still reads a
/// shard that the plan saw closed to its end, on a stream that, like moto,
/// never ends a closed shard's iterator.
#[tokio::test]
async fn a_map_task_takes_the_stream_from_its_manifest_not_the_control_plane() {
    let mut stream = MemoryStream::new("logs")
        .with_shard("shardId-0", &[], records(100, 5, "a"))
        .with_shard("shardId-1", &[], records(200, 5, "b"));
    stream.endless_iterators = true;
    stream.close("shardId-0");
    let api = Arc::new(Faulty::new(stream));
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::default());
    let planned = plan(
        api.as_ref(),
        store.as_ref(),
        &checkpointed("next"),
        "host:1:1",
        1,
    )
    .await
    .unwrap();
    assert_eq!((api.calls("describe"), api.calls("list_shards")), (1, 1));
    let line = planned.lines[0].to_line();
    let a = crate::manifest::assignment(&line).unwrap();
    let cfg = map_task(&[], &a);
    let (out, s) = read(api.clone(), Some(store.clone()), &cfg).await.unwrap();
    assert_eq!((api.calls("describe"), api.calls("list_shards")), (1, 1));
    assert_eq!((s.records, out.lines().count()), (5, 5), "{out}");
    assert!(out.lines().all(|l| l.starts_with("shardId-0\t")), "{out}");
    let fixed = store.shards(&key(), 0).await.unwrap();
    let end = fixed[0].end.as_ref().expect("shardId-0 fixed");
    assert!(end.closed, "the plan saw shardId-0 closed: {end:?}");
    assert!(fixed[1].end.is_none());
}

/// `plan --efo-consumer C` registers (or finds) the consumer once and puts
/// it in the manifest: map tasks reading as C subscribe without asking the
/// control plane for it; a task reading as another consumer asks.
#[tokio::test]
async fn map_tasks_take_the_plans_efo_consumer_from_the_manifest() {
    let stream = MemoryStream::new("logs")
        .with_shard("shardId-0", &[], records(100, 5, "a"))
        .with_shard("shardId-1", &[], records(200, 5, "b"));
    let api = Arc::new(Faulty::new(stream));
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::default());
    let mut planning = checkpointed("next");
    planning.efo_consumer = Some("top".into());
    let planned = plan(api.as_ref(), store.as_ref(), &planning, "host:1:1", 1)
        .await
        .unwrap();
    assert_eq!(api.calls("consumer"), 1);
    // The second task is run as the README's Hadoop example runs it, with
    // no --efo-consumer: it reads as the plan's consumer all the same.
    let flags: [&[&str]; 2] = [&["--efo-consumer", "top"], &[]];
    for ((line, shard), flags) in planned
        .lines
        .iter()
        .zip(["shardId-0", "shardId-1"])
        .zip(flags)
    {
        let a = crate::manifest::assignment(&line.to_line()).unwrap();
        let task = map_task(flags, &a);
        let (out, s) = read(api.clone(), Some(store.clone()), &task).await.unwrap();
        assert_eq!(s.records, 5, "{out}");
        assert!(out.lines().all(|l| l.starts_with(&format!("{shard}\t"))));
    }
    assert_eq!(
        api.calls("consumer"),
        1,
        "the map tasks asked for the consumer"
    );
    assert!(
        api.calls("subscribe") >= 2,
        "the tasks read by enhanced fan-out"
    );
    // A replay as another consumer: that one is looked up.
    let a = crate::manifest::assignment(&planned.lines[0].to_line()).unwrap();
    let other = map_task(&["--efo-consumer", "audit"], &a);
    read(api.clone(), Some(store.clone()), &other)
        .await
        .unwrap();
    assert_eq!(api.calls("consumer"), 2);
}

/// A `next` run that waited for another run's lease opens the iteration
/// after it from a shard list taken after the wait: a split during the wait
/// puts its children in that iteration, not one later.
#[tokio::test]
async fn a_run_that_waited_for_a_lease_plans_from_a_fresh_shard_list() {
    let stream = Arc::new(
        MemoryStream::new("logs")
            .with_shard("shardId-0", &[], records(100, 3, "p"))
            .with_shard("shardId-1", &[], records(200, 3, "b")),
    );
    let api: Arc<dyn StreamApi> = stream.clone();
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::default());
    let cfg = checkpointed("next");
    // The holder reads a shard at a time, so that the children do not join
    // its run (groups are cut before the run starts).
    let one_at_a_time = config(&[
        "--checkpoint-table",
        "cp-table",
        "--logical-name",
        "top",
        "--iteration",
        "next",
        "--max-concurrent-shards",
        "1",
    ]);
    let holder = prepare(
        api.clone(),
        Some(store.clone()),
        &one_at_a_time,
        "host:1:1",
        None,
    )
    .await
    .unwrap();
    // The waiter lists the shards now, then waits for the holder's lease;
    // meanwhile shardId-0 splits, and the holder reads it to its end.
    let waiter = read_as("other:1:1", api.clone(), Some(store.clone()), &cfg);
    let holding = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stream.close("shardId-0");
        // A clone of the stream shares its shards: this adds the children.
        let _ = stream
            .as_ref()
            .clone()
            .with_shard("shardId-2", &["shardId-0"], records(300, 2, "c"))
            .with_shard("shardId-3", &["shardId-0"], records(400, 2, "d"));
        let s = run(
            holder,
            &one_at_a_time,
            Box::new(Captured::default()),
            crate::stop::never(),
            false,
        )
        .await
        .unwrap();
        assert_eq!((s.iteration, s.records), (Some(0), 6));
    };
    let (waited, ()) = tokio::join!(waiter, holding);
    let ended = store.shards(&key(), 0).await.unwrap();
    assert!(ended[0].end.as_ref().unwrap().closed, "{ended:?}");
    let (out, s) = waited.unwrap();
    assert_eq!(s.iteration, Some(1));
    let ids: Vec<String> = store
        .shards(&key(), 1)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.shard_id)
        .collect();
    assert_eq!(ids, ["shardId-1", "shardId-2", "shardId-3"]);
    assert_eq!(out.lines().count(), 4, "{out}");
}

/// p was split into c and d before the iteration was planned: one run reads
/// the family, each child after p, and fixes every shard; a replay prints the
/// same bytes; the next iteration goes on from the children alone.
#[tokio::test]
async fn a_split_family_is_read_in_one_iteration_children_after_their_parent() {
    let api = Arc::new(
        MemoryStream::new("logs")
            .with_shard("shardId-0", &[], records(100, 3, "p"))
            .with_shard("shardId-1", &[], records(200, 2, "o"))
            .with_shard("shardId-2", &["shardId-0"], early(300, "c"))
            .with_shard("shardId-3", &["shardId-0"], early(400, "d")),
    );
    api.close("shardId-0");
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::default());
    let (first, s) = read(api.clone(), Some(store.clone()), &checkpointed("next"))
        .await
        .unwrap();
    assert_eq!(
        (s.iteration, s.records, s.fixed_now),
        (Some(0), 9, 4),
        "{first}"
    );
    children_after_parent(&first);
    let (again, _) = read(api.clone(), Some(store.clone()), &checkpointed("0"))
        .await
        .unwrap();
    assert_eq!(again, first);
    api.put("shardId-2", records(302, 1, "c"));
    let (next, _) = read(api.clone(), Some(store.clone()), &checkpointed("next"))
        .await
        .unwrap();
    assert_eq!(next, "shardId-2\t302\tc302\n");
    let ids: Vec<String> = store
        .shards(&key(), 1)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.shard_id)
        .collect();
    assert_eq!(ids, ["shardId-1", "shardId-2", "shardId-3"]);
}

/// An iteration timeout stops the parent before its end: its child reads
/// nothing in that iteration (its end is fixed where it starts), and the
/// next iteration reads the rest of the family, the child after its parent.
/// (Pages of one record, a call every 200 ms: the parent's 20 records take
/// about 4 s, the child's 2 would take 200 ms, the timeout is 1 s.)
#[tokio::test]
async fn a_parent_stopped_by_a_timeout_leaves_its_child_unread() {
    let api = Arc::new(
        MemoryStream::new("logs")
            .with_shard("shardId-0", &[], records(100, 20, "p"))
            .with_shard("shardId-1", &["shardId-0"], records(300, 2, "c")),
    );
    api.close("shardId-0");
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::default());
    let limited = config(&[
        "--checkpoint-table",
        "cp-table",
        "--logical-name",
        "top",
        "--iteration",
        "next",
        "--until",
        "timeouts",
        "--iteration-timeout",
        "1s",
        "--batch-size",
        "1",
        "--min-call-interval",
        "200ms",
    ]);
    let (first, _) = read(api.clone(), Some(store.clone()), &limited)
        .await
        .unwrap();
    assert!(!first.contains("shardId-1"), "{first}");
    let fixed = store.shards(&key(), 0).await.unwrap();
    let child = fixed.iter().find(|s| s.shard_id == "shardId-1").unwrap();
    let end = child.end.as_ref().unwrap();
    assert_eq!(
        (end.records, end.closed, &end.next),
        (0, false, &child.start)
    );
    assert!(
        !fixed[0].end.as_ref().unwrap().closed,
        "the parent was stopped early"
    );
    let (rest, _) = read(api.clone(), Some(store.clone()), &checkpointed("next"))
        .await
        .unwrap();
    let want: String = (100..120)
        .map(|i| format!("shardId-0\t{i}\tp{i}\n"))
        .chain((300..302).map(|i| format!("shardId-1\t{i}\tc{i}\n")))
        .collect();
    assert_eq!(format!("{first}{rest}"), want);
}

/// shardId-0 splits after the iteration was planned, before the run has
/// read it to its end: its children join the run, recorded with the order
/// they joined in, their records after all of shardId-0's even where their
/// clocks say earlier; a replay prints the same bytes, and the next
/// iteration goes on from the children without repeating a record.
#[tokio::test]
async fn children_of_a_shard_that_closes_during_the_run_join_it() {
    let stream = two_shards();
    let api: Arc<dyn StreamApi> = stream.clone();
    let store: Arc<dyn CheckpointStore> = Arc::new(MemoryStore::default());
    let cfg = checkpointed("next");
    let p = prepare(api.clone(), Some(store.clone()), &cfg, "host:1:1", None)
        .await
        .unwrap();
    assert_eq!(p.shard_count(), 2);
    stream.close("shardId-0");
    // A clone of the stream shares its shards: this adds the children.
    let _ = stream
        .as_ref()
        .clone()
        .with_shard("shardId-2", &["shardId-0"], early(300, "c"))
        .with_shard("shardId-3", &["shardId-0"], early(400, "d"));
    let out = Captured::default();
    let s = run(p, &cfg, Box::new(out.clone()), crate::stop::never(), false)
        .await
        .unwrap();
    let first = out.text();
    assert_eq!(
        (s.iteration, s.records, s.shards, s.fixed_now),
        (Some(0), 14, 4, 4),
        "{first}"
    );
    children_after_parent(&first);
    let stored = store.shards(&key(), 0).await.unwrap();
    let joined: Vec<(&str, Option<u32>, bool)> = (stored.iter())
        .map(|s| (s.shard_id.as_str(), s.joined, s.end.is_some()))
        .collect();
    assert_eq!(
        joined,
        [
            ("shardId-0", None, true),
            ("shardId-1", None, true),
            ("shardId-2", Some(1), true),
            ("shardId-3", Some(2), true),
        ]
    );
    let (again, _) = read(api.clone(), Some(store.clone()), &checkpointed("0"))
        .await
        .unwrap();
    assert_eq!(again, first);
    stream.put("shardId-3", records(402, 1, "d"));
    let (next, s) = read(api.clone(), Some(store.clone()), &checkpointed("next"))
        .await
        .unwrap();
    assert_eq!(
        (s.iteration, next.as_str()),
        (Some(1), "shardId-3\t402\td402\n")
    );
}
