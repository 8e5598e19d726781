//! The simulation itself: a world (the in-memory stream and store), runs of
//! the real run logic whose every port call waits for the scheduler's turn,
//! the seeded scheduler, and the invariants checked at the end.
//!
//! Everything runs on one current-thread tokio runtime with a paused clock,
//! so one seed gives one schedule: a failing seed replays step by step.

use super::{Bug, ACTIVE, BUG};
use crate::cli::ReaderCli;
use crate::clock::simulated;
use crate::config::{Layers, ReaderConfig};
use crate::error::{exit_for, Exit};
use crate::fakes::{Fault, Faulty, Gate, MemoryStore, MemoryStream};
use crate::ports::checkpoint::{
    CheckpointStore, IterationState, LogicalKey, ShardCheckpoint, ShardEnd,
};
use crate::ports::stream::{Record, StreamApi};
use crate::position::Position;
use crate::run::{prepare, run, Summary};
use async_trait::async_trait;
use clap::Parser;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// Each run is on a host of its own, whose clock is off the service's by at
/// most this much either way (and steps within it).
pub const SKEW_MS: i64 = 2_000;
const SHARDS: [&str; 2] = ["shardId-00", "shardId-01"];
/// Splits and merges per seed at most, and open shards at most.
const RESHARDS: usize = 3;
const MAX_OPEN: usize = 4;
const START_MS: i64 = 1_800_000_000_000;
/// Runs per seed, and at most this many at once.
const RUNS: usize = 8;
const AT_ONCE: usize = 4;
/// A seed whose runs have not all ended after this many steps is stuck.
const MAX_STEPS: usize = 200_000;

/// What a seed explored and what it broke.
#[derive(Debug, Default)]
pub struct Report {
    pub steps: usize,
    pub trace: Vec<String>,
    pub violations: Vec<String>,
    /// Runs that succeeded, failed, were killed.
    pub outcomes: (usize, usize, usize),
    /// Succeeded iterations, and the records of those after the first.
    pub iterations: usize,
    pub later_records: u64,
    /// Map tasks and `finish` runs that succeeded.
    pub map_mode: (usize, usize),
    /// Records of split or merged shards' children in succeeded iterations.
    pub child_records: u64,
    /// Of those, records of children that joined a run while it read.
    pub joined_records: u64,
    /// Hand edits of the table made after the runs (0 or 1).
    pub hand_edits: usize,
}

/// How a run was asked to run.
#[derive(Clone, Debug)]
enum Kind {
    /// A whole iteration: `--iteration next`, or a number.
    Next,
    Number(u64),
    /// `plan --iteration next`, a map task given one manifest line of a
    /// plan, and `finish` of a planned iteration.
    Plan,
    Task(String),
    Finish(u64),
}

/// A run's request, and whether it waits for another run's lease (30 s)
/// or gives up at once (`--lease-wait 0s`, as a cron job might).
#[derive(Clone, Debug)]
struct Ask {
    kind: Kind,
    waits: bool,
}

/// What a run that ended well did.
enum Done {
    Read(Summary),
    Planned(crate::run::Planned),
    Finished(u64),
}

/// One run: what it was asked, what it printed, how it ended.
struct RunRecord {
    kind: Kind,
    owner: String,
    out: Captured,
    task: Option<tokio::task::JoinHandle<anyhow::Result<Done>>>,
    ended: Option<Ended>,
    killed: bool,
    /// Its host's clock offset (what `clock::now_ms` adds in its tasks).
    host: Arc<std::sync::atomic::AtomicI64>,
    /// The port calls it made, in order, and the fault each met.
    calls: Vec<(&'static str, Option<Fault>)>,
}

/// A run's output, kept in memory.
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
    fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

/// What the scheduler lets a waiting call do.
enum Turn {
    Go(Option<Fault>),
    Kill,
}

struct Waiting {
    run: usize,
    method: &'static str,
    turn: oneshot::Sender<Turn>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    killed: BTreeSet<usize>,
}

/// One run's gate: its calls queue for their turn; a killed run's calls
/// never get one (a process killed with -9 makes no more calls).
struct RunGate {
    run: usize,
    queue: Arc<Mutex<Queue>>,
}

#[async_trait]
impl Gate for RunGate {
    async fn turn(&self, method: &'static str) -> Option<Fault> {
        let rx = {
            let mut q = self.queue.lock().unwrap();
            if q.killed.contains(&self.run) {
                None
            } else {
                let (turn, rx) = oneshot::channel();
                q.waiting.push(Waiting {
                    run: self.run,
                    method,
                    turn,
                });
                Some(rx)
            }
        };
        match rx {
            Some(rx) => match rx.await {
                Ok(Turn::Go(f)) => f,
                _ => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }
}

/// xorshift64*: small, seeded, the same sequence for a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let x = &mut self.0;
        *x ^= *x >> 12;
        *x ^= *x << 25;
        *x ^= *x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }
}

/// The fault a store or stream call may meet (besides none).
fn faults_for(method: &str) -> &'static [Fault] {
    match method {
        "get_records" => &[Fault::Fail, Fault::IteratorExpired],
        "iterator" | "oldest" | "describe" | "list_shards" => &[Fault::Fail],
        // Store reads: refused or timed out, never applied twice.
        "latest" | "header" | "lowest_unfinished" | "headers" | "shards" | "task_leases" => {
            &[Fault::Fail, Fault::Dropped]
        }
        _ => &[
            Fault::Fail,
            Fault::Dropped,
            Fault::Lost,
            Fault::AppliedTwice,
        ],
    }
}

fn config(ask: &Ask) -> ReaderConfig {
    let iteration = match &ask.kind {
        Kind::Number(n) | Kind::Finish(n) => n.to_string(),
        _ => "next".to_string(),
    };
    let mut args = vec!["kinesis-reader", "--checkpoint-table", "cp-table"];
    if let Kind::Task(_) = ask.kind {
        args.push("--shards-from-stdin");
    } else {
        args.extend(["--stream", "logs", "--logical-name", "sim"]);
        args.extend(["--iteration", &iteration]);
    }
    let cli = ReaderCli::try_parse_from(args.into_iter().chain([
        "--lease-duration",
        "3s",
        "--lease-wait",
        if ask.waits { "30s" } else { "0s" },
        "--min-call-interval",
        "0ms",
        "--fields",
        "shard_id,sequence_number,data",
    ]))
    .expect("simulation flags");
    let none = |_: &str| None;
    let layers = Layers::new(&cli.common.define, &none).expect("no defines");
    let manifest = match &ask.kind {
        Kind::Task(line) => Some(crate::manifest::assignment(line).expect("a planned line")),
        _ => None,
    };
    ReaderConfig::resolve(&cli.common, &cli.read, &layers, manifest.as_ref())
        .expect("simulation config")
}

/// Runs `ask` as the binary would, printing onto `out`.
async fn perform(
    ask: Ask,
    api: Arc<dyn StreamApi>,
    store: Arc<dyn CheckpointStore>,
    owner: String,
    out: Captured,
) -> anyhow::Result<Done> {
    let cfg = config(&ask);
    match ask.kind {
        Kind::Plan => {
            let p = crate::run::plan(api.as_ref(), store.as_ref(), &cfg, &owner, 1).await?;
            Ok(Done::Planned(p))
        }
        Kind::Finish(_) => {
            let (n, _) =
                crate::run::confirm(api.as_ref(), store.as_ref(), &cfg, &owner, false).await?;
            Ok(Done::Finished(n))
        }
        _ => {
            let p = prepare(api, Some(store), &cfg, &owner, None).await?;
            let s = run(p, &cfg, Box::new(out), crate::stop::never(), false).await?;
            Ok(Done::Read(s))
        }
    }
}

fn key() -> LogicalKey {
    LogicalKey {
        stream: "logs".into(),
        logical_name: "sim".into(),
    }
}

/// The simulated world of one seed.
struct World {
    rng: Rng,
    stream: MemoryStream,
    store: MemoryStore,
    queue: Arc<Mutex<Queue>>,
    runs: Vec<RunRecord>,
    /// Every record put, per shard, in order.
    records: BTreeMap<String, Vec<Record>>,
    next_seq: u64,
    /// The open shards, and how many shards there are in all.
    open: Vec<String>,
    shards: usize,
    reshards: usize,
    /// The manifest lines of each plan that ended well.
    manifests: BTreeMap<u64, Vec<String>>,
    trace: Vec<String>,
}

impl World {
    fn new(seed: u64) -> Self {
        let mut w = World {
            rng: Rng(seed.max(1)),
            stream: SHARDS.iter().fold(MemoryStream::new("logs"), |s, id| {
                s.with_shard(id, &[], vec![])
            }),
            store: MemoryStore::default(),
            queue: Arc::default(),
            runs: Vec::new(),
            records: BTreeMap::new(),
            next_seq: 1_000,
            open: SHARDS.iter().map(|s| s.to_string()).collect(),
            shards: SHARDS.len(),
            reshards: 0,
            manifests: BTreeMap::new(),
            trace: Vec::new(),
        };
        w.stream.page = 3;
        for _ in 0..4 {
            w.put();
        }
        w
    }

    fn log(&mut self, step: usize, what: String) {
        let t = simulated::service_ms().unwrap_or(START_MS) - START_MS;
        self.trace.push(format!("{step:>6} t+{t:>6}ms  {what}"));
    }

    /// A producer puts one to three records on an open shard.
    fn put(&mut self) -> String {
        let shard = self.open[self.rng.below(self.open.len())].clone();
        let arrival = simulated::service_ms().unwrap_or(START_MS);
        let n = 1 + self.rng.below(3);
        let recs: Vec<Record> = (0..n)
            .map(|_| {
                self.next_seq += 1;
                let seq = self.next_seq.to_string();
                crate::fakes::record(&seq, &format!("r{seq}"), arrival)
            })
            .collect();
        self.stream.put(&shard, recs.clone());
        self.records.entry(shard.clone()).or_default().extend(recs);
        format!("{n} record(s) put on {shard}")
    }

    /// Splits an open shard in two, or merges two open shards into one.
    fn reshard(&mut self) -> String {
        self.reshards += 1;
        let mut new_id = || {
            self.shards += 1;
            format!("shardId-{:02}", self.shards - 1)
        };
        let split = self.open.len() < 2 || (self.open.len() < MAX_OPEN && self.rng.chance(0.5));
        let (parents, children) = if split {
            let p = self.open.remove(self.rng.below(self.open.len()));
            (vec![p], vec![new_id(), new_id()])
        } else {
            let a = self.open.remove(self.rng.below(self.open.len()));
            let b = self.open.remove(self.rng.below(self.open.len()));
            (vec![a, b], vec![new_id()])
        };
        for p in &parents {
            self.stream.close(p);
        }
        let parent_ids: Vec<&str> = parents.iter().map(String::as_str).collect();
        for c in &children {
            let _ = self.stream.clone().with_shard(c, &parent_ids, vec![]);
            self.open.push(c.clone());
        }
        format!(
            "{parents:?} {} into {children:?}",
            if split { "split" } else { "merged" }
        )
    }

    async fn start_run(&mut self) -> String {
        let id = self.runs.len();
        let latest = self
            .store
            .latest(&key())
            .await
            .ok()
            .flatten()
            .map(|h| h.number);
        let planned = self
            .manifests
            .last_key_value()
            .map(|(n, l)| (*n, l.clone()));
        let kind = match (self.rng.below(20), latest, planned) {
            (0..=5, Some(l), _) => Kind::Number(self.rng.below(l as usize + 1) as u64),
            (6..=8, _, _) => Kind::Plan,
            (9..=12, _, Some((_, lines))) => Kind::Task(lines[self.rng.below(lines.len())].clone()),
            (13..=15, _, Some((n, _))) => Kind::Finish(n),
            _ => Kind::Next,
        };
        let ask = Ask {
            kind: kind.clone(),
            waits: self.rng.chance(0.7),
        };
        let owner = format!("sim{id}:1:0");
        let gate: Arc<dyn Gate> = Arc::new(RunGate {
            run: id,
            queue: self.queue.clone(),
        });
        let api: Arc<dyn StreamApi> = Arc::new(Faulty::gated(self.stream.clone(), gate.clone()));
        let store: Arc<dyn CheckpointStore> = Arc::new(Faulty::gated(self.store.clone(), gate));
        let out = Captured::default();
        let offset = self.offset();
        let host = Arc::new(std::sync::atomic::AtomicI64::new(offset));
        let what = format!("run {id} starts on a host {offset:+} ms off: {ask:?}");
        // The run logic holds its clock as `&dyn Fn`, so it is not `Send`:
        // a local task, as `block_on` runs it in the binary.
        let performed = perform(ask, api, store, owner.clone(), out.clone());
        let task = tokio::task::spawn_local(simulated::HOST.scope(host.clone(), performed));
        self.runs.push(RunRecord {
            kind,
            owner,
            out,
            task: Some(task),
            ended: None,
            killed: false,
            host,
            calls: Vec::new(),
        });
        what
    }

    /// Notes the runs that have ended.
    async fn collect(&mut self, step: usize) {
        for id in 0..self.runs.len() {
            let done = self.runs[id].task.as_ref().is_some_and(|t| t.is_finished());
            if !done {
                continue;
            }
            let task = self.runs[id].task.take().expect("checked");
            let ended = match task.await {
                Ok(Ok(Done::Read(s))) => Ok((s.iteration, s.records)),
                Ok(Ok(Done::Planned(p))) => {
                    let lines = p.lines.iter().map(|l| l.to_line()).collect();
                    self.manifests.insert(p.iteration, lines);
                    Ok((Some(p.iteration), 0))
                }
                Ok(Ok(Done::Finished(n))) => Ok((Some(n), 0)),
                Ok(Err(e)) => Err((exit_for(&e), format!("{e:#}"))),
                Err(e) => Err((Exit::Failure, format!("panicked: {e}"))),
            };
            let what = match &ended {
                Ok((n, records)) => {
                    format!("run {id} succeeded: iteration {n:?}, {records} records")
                }
                Err((code, e)) => format!("run {id} failed ({code:?}): {e:.160}"),
            };
            self.runs[id].ended = Some(ended);
            self.log(step, what);
        }
    }

    /// A host clock's offset from the service's, within the skew.
    fn offset(&mut self) -> i64 {
        self.rng.below(2 * SKEW_MS as usize + 1) as i64 - SKEW_MS
    }

    /// A live run's host clock steps to a new offset.
    fn step_clock(&mut self) -> Option<String> {
        let live: Vec<usize> = (0..self.runs.len())
            .filter(|r| self.runs[*r].task.is_some())
            .collect();
        let id = *live.get(self.rng.below(live.len()))?;
        let offset = self.offset();
        let host = &self.runs[id].host;
        host.store(offset, std::sync::atomic::Ordering::Relaxed);
        Some(format!("run {id}'s host clock steps to {offset:+} ms"))
    }

    fn live(&self) -> usize {
        self.runs.iter().filter(|r| r.task.is_some()).count()
    }

    /// One scheduling decision.
    fn decide(&mut self, step: usize) {
        let mut waiting = std::mem::take(&mut self.queue.lock().unwrap().waiting);
        if waiting.is_empty() {
            return;
        }
        let w = waiting.swap_remove(self.rng.below(waiting.len()));
        self.queue.lock().unwrap().waiting.extend(waiting);
        // A kill: the run's process ends here (its lease is left to expire).
        if self.rng.chance(0.004) {
            self.queue.lock().unwrap().killed.insert(w.run);
            if let Some(t) = self.runs[w.run].task.take() {
                t.abort();
            }
            self.runs[w.run].killed = true;
            let _ = w.turn.send(Turn::Kill);
            self.log(step, format!("run {} KILLED at {}", w.run, w.method));
            return;
        }
        let fault = match self.rng.chance(0.03) {
            true => {
                let kinds = faults_for(w.method);
                Some(kinds[self.rng.below(kinds.len())])
            }
            false => None,
        };
        self.runs[w.run].calls.push((w.method, fault));
        if let Some(f) = fault {
            self.log(step, format!("run {} {} → {f:?}", w.run, w.method));
        } else {
            self.log(step, format!("run {} {}", w.run, w.method));
        }
        let _ = w.turn.send(Turn::Go(fault));
    }
}

/// Runs seed `seed` (with `bug` put back, if any) and checks the invariants.
pub fn simulate(seed: u64, bug: Option<Bug>) -> Report {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    ACTIVE.set(true);
    BUG.set(bug);
    let local = tokio::task::LocalSet::new();
    let report = local.block_on(&rt, async {
        simulated::install(START_MS);
        let mut w = World::new(seed);
        let mut step = 0;
        loop {
            // Every run goes on until it waits for its turn or its timer.
            tokio::time::sleep(Duration::from_millis(1)).await;
            for _ in 0..4 {
                tokio::task::yield_now().await;
            }
            w.collect(step).await;
            let started = w.runs.len();
            if started == RUNS && w.live() == 0 {
                break;
            }
            step += 1;
            if step > MAX_STEPS {
                w.trace.push(format!("STUCK after {MAX_STEPS} steps"));
                break;
            }
            if started < RUNS && w.live() < AT_ONCE && (w.live() == 0 || w.rng.chance(0.15)) {
                let what = w.start_run().await;
                w.log(step, what);
            }
            if w.rng.chance(0.04) {
                let what = w.put();
                w.log(step, what);
            }
            if w.reshards < RESHARDS && w.rng.chance(0.003) {
                let what = w.reshard();
                w.log(step, what);
            }
            if w.rng.chance(0.002) {
                if let Some(what) = w.step_clock() {
                    w.log(step, what);
                }
            }
            w.decide(step);
        }
        let stuck = step > MAX_STEPS;
        let view = w.view();
        let mut violations = super::tests::invariants(&view, stuck).await;
        let mut hand_edits = 0;
        if !stuck {
            let (what, refused) = hand_edit(&view, &mut w.rng).await;
            if let Some(what) = what {
                w.log(step, what);
                hand_edits = 1;
            }
            violations.extend(refused);
        }
        let done: Vec<u64> = headers(&view)
            .await
            .iter()
            .filter(|h| succeeded(h))
            .map(|h| h.number)
            .collect();
        let (mut later_records, mut child_records, mut joined_records) = (0, 0, 0);
        for n in &done {
            let ends = shards(&view, *n).await;
            let joined = ends.iter().filter(|s| s.joined.is_some());
            joined_records += (joined.filter_map(|s| s.end.as_ref()))
                .map(|e| e.records)
                .sum::<u64>();
            let children = ends.iter().filter(|s| !s.parents.is_empty());
            child_records += children
                .filter_map(|s| s.end.as_ref())
                .map(|e| e.records)
                .sum::<u64>();
            if *n == 0 {
                continue;
            }
            later_records += ends
                .iter()
                .filter_map(|s| s.end.as_ref())
                .map(|e| e.records)
                .sum::<u64>();
        }
        let outcomes = w
            .runs
            .iter()
            .fold((0, 0, 0), |(s, f, k), r| match (&r.ended, r.killed) {
                (_, true) => (s, f, k + 1),
                (Some(Ok(_)), _) => (s + 1, f, k),
                _ => (s, f + 1, k),
            });
        let ok = |f: fn(&Kind) -> bool| {
            let ended_well = |r: &&RunRecord| matches!(r.ended, Some(Ok(_)));
            w.runs
                .iter()
                .filter(ended_well)
                .filter(|r| f(&r.kind))
                .count()
        };
        let map_mode = (
            ok(|k| matches!(k, Kind::Task(_))),
            ok(|k| matches!(k, Kind::Finish(_))),
        );
        simulated::uninstall();
        Report {
            steps: step,
            trace: w.trace,
            violations,
            outcomes,
            iterations: done.len(),
            later_records,
            map_mode,
            child_records,
            joined_records,
            hand_edits,
        }
    });
    ACTIVE.set(false);
    BUG.set(None);
    report
}

/// The ways a person edits a fixed range by hand that the table's checks
/// refuse (`integrity`; README: "Checked, not trusted").
#[derive(Clone, Copy, Debug)]
enum Edit {
    Deleted,
    LastSeqRemoved,
    NextRewound,
    StartPastFirst,
    RecordsChanged,
    StartIntoPrevious,
}

/// After the runs, a person edits one fixed range of a succeeded iteration
/// by hand. A replay of that iteration must refuse it (exit 2) rather than
/// print it as truth, and so must `next` when the edit changes where the
/// next iteration would start. The edit is undone after. Returns what was
/// edited, and the violations.
async fn hand_edit(v: &View, rng: &mut Rng) -> (Option<String>, Vec<String>) {
    let headers = headers(v).await;
    let mut candidates = Vec::new();
    for h in headers.iter().filter(|h| succeeded(h)) {
        for s in shards(v, h.number).await {
            if s.end.as_ref().is_some_and(|e| e.records > 0) {
                candidates.push((h.number, s));
            }
        }
    }
    if candidates.is_empty() {
        return (None, Vec::new());
    }
    let (n, item) = candidates.swap_remove(rng.below(candidates.len()));
    let prev_start = match n {
        0 => None,
        _ => shards(v, n - 1)
            .await
            .into_iter()
            .find(|p| p.shard_id == item.shard_id && p.end.is_some() && p.start != item.start)
            .map(|p| p.start),
    };
    let kinds = [
        Edit::Deleted,
        Edit::LastSeqRemoved,
        Edit::NextRewound,
        Edit::StartPastFirst,
        Edit::RecordsChanged,
        Edit::StartIntoPrevious,
    ];
    let edit = kinds[rng.below(kinds.len())];
    let end = item.end.clone().expect("a fixed range");
    let last = end.last_sequence.clone().expect("records > 0");
    let edited = match edit {
        Edit::Deleted => None,
        Edit::LastSeqRemoved => Some(ShardCheckpoint {
            end: Some(ShardEnd {
                last_sequence: None,
                ..end.clone()
            }),
            ..item.clone()
        }),
        Edit::NextRewound => Some(ShardCheckpoint {
            end: Some(ShardEnd {
                next: Position::At(last.clone()),
                ..end.clone()
            }),
            ..item.clone()
        }),
        Edit::StartPastFirst => Some(ShardCheckpoint {
            start: Position::After(end.first_sequence.clone().unwrap_or(last.clone())),
            ..item.clone()
        }),
        Edit::RecordsChanged => Some(ShardCheckpoint {
            end: Some(ShardEnd {
                records: end.records + 1,
                ..end.clone()
            }),
            ..item.clone()
        }),
        Edit::StartIntoPrevious => match prev_start {
            Some(start) => Some(ShardCheckpoint {
                start,
                ..item.clone()
            }),
            None => return (None, Vec::new()),
        },
    };
    let what = format!(
        "a HAND EDIT of iteration {n}, shard {}: {edit:?}",
        item.shard_id
    );
    v.store
        .edit_shard(&key(), n, &item.shard_id, |i| *i = edited);
    let mut violations = Vec::new();
    let refused = |kind: Kind| async {
        let ask = Ask { kind, waits: true };
        let api: Arc<dyn StreamApi> = Arc::new(v.stream.clone());
        let store: Arc<dyn CheckpointStore> = Arc::new(v.store.clone());
        match perform(ask, api, store, "editor:1:0".into(), Captured::default()).await {
            Ok(_) => Err("ended well".to_string()),
            Err(e) if exit_for(&e) == Exit::Usage => Ok(()),
            Err(e) => Err(format!("failed with {:?}: {e:#}", exit_for(&e))),
        }
    };
    if let Err(e) = refused(Kind::Number(n)).await {
        violations.push(format!("{what}: its replay {e}, where it must be refused"));
    }
    // `next` plans from the latest iteration's ends, when every iteration succeeded.
    let plans_from_it =
        headers.iter().all(succeeded) && headers.last().map(|h| h.number) == Some(n);
    let moves_next = matches!(
        edit,
        Edit::Deleted | Edit::LastSeqRemoved | Edit::NextRewound | Edit::StartPastFirst
    );
    if plans_from_it && moves_next {
        if let Err(e) = refused(Kind::Next).await {
            violations.push(format!("{what}: `next` {e}, where it must be refused"));
        }
    }
    v.store
        .edit_shard(&key(), n, &item.shard_id, |i| *i = Some(item.clone()));
    (Some(what), violations)
}

/// What the invariants look at once the runs have ended.
pub struct View {
    pub stream: MemoryStream,
    pub store: MemoryStore,
    pub records: BTreeMap<String, Vec<Record>>,
    pub runs: Vec<RunView>,
}

pub type Ended = Result<(Option<u64>, u64), (Exit, String)>;

/// What a run was, as the invariants tell them apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// A whole iteration, with `--iteration next` or not.
    Read {
        next: bool,
    },
    /// A map task, with its shards.
    Task(Vec<String>),
    Plan,
    Finish,
}

pub struct RunView {
    pub role: Role,
    pub owner: String,
    pub out: Vec<u8>,
    /// The iteration and records it reported, or its exit and error.
    pub ended: Option<Ended>,
    pub killed: bool,
    /// The port calls it made, in order, and the fault each met.
    pub calls: Vec<(&'static str, Option<Fault>)>,
}

impl World {
    fn view(&self) -> View {
        View {
            stream: self.stream.clone(),
            store: self.store.clone(),
            records: self.records.clone(),
            runs: self
                .runs
                .iter()
                .map(|r| RunView {
                    role: match &r.kind {
                        Kind::Next => Role::Read { next: true },
                        Kind::Number(_) => Role::Read { next: false },
                        Kind::Plan => Role::Plan,
                        Kind::Finish(_) => Role::Finish,
                        Kind::Task(line) => Role::Task(
                            crate::manifest::assignment(line)
                                .map(|a| a.shards.into_iter().collect())
                                .unwrap_or_default(),
                        ),
                    },
                    owner: r.owner.clone(),
                    out: r.out.bytes(),
                    ended: r.ended.clone(),
                    killed: r.killed,
                    calls: r.calls.clone(),
                })
                .collect(),
        }
    }
}

/// Replays iteration `n` without faults: its bytes, or why not.
pub async fn replay(v: &View, n: u64) -> Result<Vec<u8>, String> {
    let cfg = config(&Ask {
        kind: Kind::Number(n),
        waits: true,
    });
    let out = Captured::default();
    let api: Arc<dyn StreamApi> = Arc::new(v.stream.clone());
    let store: Arc<dyn CheckpointStore> = Arc::new(v.store.clone());
    let p = prepare(api, Some(store), &cfg, "replayer:1:0", None)
        .await
        .map_err(|e| format!("{e:#}"))?;
    run(p, &cfg, Box::new(out.clone()), crate::stop::never(), false)
        .await
        .map_err(|e| format!("{e:#}"))?;
    Ok(out.bytes())
}

/// The iteration headers as they are now.
pub async fn headers(v: &View) -> Vec<crate::ports::checkpoint::IterationHeader> {
    v.store.headers(&key()).await.unwrap_or_default()
}

/// An iteration's shards as they are now.
pub async fn shards(v: &View, n: u64) -> Vec<crate::ports::checkpoint::ShardCheckpoint> {
    v.store.shards(&key(), n).await.unwrap_or_default()
}

pub fn succeeded(h: &crate::ports::checkpoint::IterationHeader) -> bool {
    h.state == IterationState::Succeeded
}
