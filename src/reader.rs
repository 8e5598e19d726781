//! One run of the reader: open (or replay) an iteration, read its shards at
//! once, write them through the deterministic merge, fix each shard's
//! boundary as soon as its records are delivered, and close the iteration.

use crate::config::{MapMode, ReaderConfig};
use crate::error::ExitError;
use crate::expiry::{self, OnExpired};
use crate::format::Formatter;
use crate::iteration::{self, LeaseOptions, Opened};
use crate::merge::{merge, MergeShard, MergeStats};
use crate::pages::{Budget, PAGES_PER_SHARD};
use crate::ports::checkpoint::{
    CheckpointStore, Holder, IterationState, LogicalKey, ShardCheckpoint, ShardEnd, StoreError,
};
use crate::ports::stream::{ShardInfo, StreamApi, StreamError, StreamInfo};
use crate::position::Position;
use crate::shard_reader::{EndRules, Outcome, ReadSettings, ShardEvent, ShardTask, Target, Until};
use anyhow::{anyhow, Context, Result};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Bytes of output gathered before a write to stdout.
const OUTPUT_BUFFER: usize = 256 * 1024;

/// What a run did, for the closing line on stderr.
#[derive(Debug, Default)]
pub struct Summary {
    pub iteration: Option<u64>,
    pub records: u64,
    pub bytes: u64,
    pub shards: usize,
    pub fixed_now: usize,
    pub replayed: usize,
    pub elapsed: Duration,
    /// With `hold`: the iteration waiting for its final state.
    pub held: Option<Held>,
}

fn stream_error(e: StreamError) -> anyhow::Error {
    match e {
        StreamError::Other(e) => e,
        e => anyhow!(e),
    }
}

pub use crate::stop::Stop;

/// A run with its stream looked at and, with checkpoints, its iteration
/// opened and leased: what a child process is told before records flow.
pub struct Prepared {
    api: Arc<dyn StreamApi>,
    info: StreamInfo,
    listed: Vec<ShardInfo>,
    /// The run's read settings, with the enhanced fan-out consumer's ARN.
    read: ReadSettings,
    iteration: Option<(Arc<dyn CheckpointStore>, LogicalKey, Opened, LeaseOptions)>,
    started: Instant,
}

impl Prepared {
    /// How many shards this run reads (this task's, in map mode).
    pub fn shard_count(&self) -> usize {
        match &self.iteration {
            Some((_, _, opened, _)) => opened.shards.len(),
            None => self.listed.len(),
        }
    }

    /// Gives the lease back before anything was read (the run could not
    /// start its output), so that the next run need not wait for it. The
    /// iteration is recorded as failed; a map task's shards are only released.
    pub async fn abandon(self) {
        if let Some((store, key, opened, lease)) = &self.iteration {
            if opened.leased {
                release(
                    store.as_ref(),
                    key,
                    opened.header.number,
                    lease,
                    IterationState::Failed,
                )
                .await;
            }
        }
    }

    /// The iteration whose outcome this run records (it holds its lease, or
    /// a map task's), and whether it is a map task's share; `None` for a
    /// replay of a succeeded iteration or a read without checkpoints.
    pub fn recorded(&self) -> Option<(u64, bool)> {
        match &self.iteration {
            Some((_, _, opened, lease)) if opened.leased => {
                Some((opened.header.number, lease.task.is_some()))
            }
            _ => None,
        }
    }

    /// The stream's name, and the logical name, iteration number and opening
    /// time (epoch ms) when checkpointing.
    pub fn context(&self) -> (String, Option<(String, u64, i64)>) {
        let it = self
            .iteration
            .as_ref()
            .map(|(_, k, o, _)| (k.logical_name.clone(), o.header.number, o.header.opened_ms));
        (self.info.name.clone(), it)
    }
}

/// A checkpointed run's stream, iteration number and lease.
struct Located {
    info: StreamInfo,
    listed: Vec<ShardInfo>,
    key: LogicalKey,
    n: u64,
    lease: LeaseOptions,
}

async fn locate(
    api: &dyn StreamApi,
    store: &dyn CheckpointStore,
    cfg: &ReaderConfig,
    owner: &str,
) -> Result<Located> {
    let cp = cfg
        .checkpoint
        .as_ref()
        .ok_or_else(|| ExitError::Usage("this needs a checkpoint table".into()))?;
    let info = api.describe().await.map_err(stream_error)?;
    let listed = api.list_shards().await.map_err(stream_error)?;
    let key = LogicalKey {
        stream: info.name.clone(),
        logical_name: cp.logical_name.clone(),
    };
    let n = iteration::resolve(store, &key, cp.iteration).await?;
    let task = cfg.map.as_ref().map(|m| match m {
        MapMode::Manifest(shards) => crate::manifest::task_name(shards),
        MapMode::Task { index, count } => format!("task-{index}-of-{count}"),
    });
    // A map task leases each of its shards (known from the manifest, or
    // dealt from the planned iteration's shards).
    let shards = match &cfg.map {
        None => Vec::new(),
        Some(MapMode::Manifest(shards)) => shards.iter().cloned().collect(),
        Some(MapMode::Task { index, count }) => {
            let ids: Vec<String> = store
                .shards(&key, n)
                .await?
                .into_iter()
                .map(|s| s.shard_id)
                .collect();
            crate::manifest::task_share(&ids, *index, *count)
                .into_iter()
                .collect()
        }
    };
    let lease = LeaseOptions {
        owner: owner.to_string(),
        task,
        shards,
        duration: cp.lease_duration,
        wait: cp.lease_wait,
        takeover: cp.takeover,
    };
    Ok(Located {
        info,
        listed,
        key,
        n,
        lease,
    })
}

/// Opens (or, for `plan`, plans) the located iteration. Invariant 8 of the
/// README's "Iterations: the semantics": `--iteration next` never delivers a
/// succeeded iteration again. A run that waited for another run's lease
/// finds the iteration succeeded when that run ends well; it then resolves
/// `next` anew and opens what follows (or a failed iteration) instead.
async fn open_located(
    store: &dyn CheckpointStore,
    l: &mut Located,
    cfg: &ReaderConfig,
    planning: bool,
) -> Result<Opened> {
    let next = cfg
        .checkpoint
        .as_ref()
        .is_some_and(|c| c.iteration == iteration::IterationRequest::Next);
    loop {
        let (key, n, info, listed, start, lease) =
            (&l.key, l.n, &l.info, &l.listed, &cfg.start, &l.lease);
        let opened = if planning {
            iteration::plan(store, key, n, info, listed, start, lease, &crate::now_ms).await
        } else {
            iteration::open(store, key, n, info, listed, start, lease, &crate::now_ms).await
        }
        .with_context(|| opening(n, key))?;
        if !(next && opened.header.state == IterationState::Succeeded) {
            return Ok(opened);
        }
        let again = iteration::resolve(store, &l.key, iteration::IterationRequest::Next).await?;
        if again == l.n {
            return Ok(opened);
        }
        log::info!(
            "iteration {} succeeded while this run waited for it, so --iteration next is now \
             iteration {again}",
            l.n
        );
        l.n = again;
    }
}

fn opening(n: u64, key: &LogicalKey) -> String {
    format!(
        "opening iteration {n} of logical name {:?}",
        key.logical_name
    )
}

/// Looks at the stream and opens the iteration (waiting for its lease).
/// `meter`: per-shard progress, when a person watches.
pub async fn prepare(
    api: Arc<dyn StreamApi>,
    store: Option<Arc<dyn CheckpointStore>>,
    cfg: &ReaderConfig,
    owner: &str,
    meter: Option<Arc<crate::progress::Shards>>,
) -> Result<Prepared> {
    let started = Instant::now();
    let mut read = read_settings(api.as_ref(), cfg).await?;
    read.meter = meter;
    let Some(store) = store.filter(|_| cfg.checkpoint.is_some()) else {
        let info = api.describe().await.map_err(stream_error)?;
        let listed = api.list_shards().await.map_err(stream_error)?;
        return Ok(Prepared {
            api,
            info,
            listed,
            read,
            iteration: None,
            started,
        });
    };
    let mut located = locate(api.as_ref(), store.as_ref(), cfg, owner).await?;
    let mut opened = open_located(store.as_ref(), &mut located, cfg, false).await?;
    let Located {
        info,
        listed,
        key,
        n,
        lease,
    } = located;
    if let Some(m) = &cfg.map {
        if let Err(e) = select(&mut opened, m, &key) {
            if opened.leased {
                release(store.as_ref(), &key, n, &lease, IterationState::Open).await;
            }
            return Err(e);
        }
    }
    Ok(Prepared {
        api,
        info,
        listed,
        read,
        iteration: Some((store, key, opened, lease)),
        started,
    })
}

/// The read settings, with the enhanced fan-out consumer registered (or
/// found) when one is asked for.
async fn read_settings(api: &dyn StreamApi, cfg: &ReaderConfig) -> Result<ReadSettings> {
    let mut read = cfg.read.clone();
    if let Some(name) = &cfg.efo_consumer {
        let arn = api.consumer(name).await.map_err(stream_error)?;
        log::info!("reading with enhanced fan-out as consumer {name:?}");
        read.efo = Some(Arc::from(arn));
    }
    Ok(read)
}

/// What `plan` did: the iteration, its manifest, and how many of its shards
/// are fixed already (a replay).
pub struct Planned {
    pub iteration: u64,
    pub logical_name: String,
    pub lines: Vec<crate::manifest::ManifestLine>,
    pub shards: usize,
    pub fixed: usize,
    pub state: IterationState,
}

/// `plan`: opens the iteration for map tasks and returns its manifest.
pub async fn plan(
    api: &dyn StreamApi,
    store: &dyn CheckpointStore,
    cfg: &ReaderConfig,
    owner: &str,
    per_line: usize,
) -> Result<Planned> {
    let mut l = locate(api, store, cfg, owner).await?;
    let opened = open_located(store, &mut l, cfg, true).await?;
    let ids: Vec<String> = opened.shards.iter().map(|s| s.shard_id.clone()).collect();
    Ok(Planned {
        iteration: l.n,
        logical_name: l.key.logical_name.clone(),
        lines: crate::manifest::manifest(&l.key.stream, &l.key.logical_name, l.n, &ids, per_line),
        shards: ids.len(),
        fixed: opened.shards.iter().filter(|s| s.end.is_some()).count(),
        state: opened.header.state,
    })
}

/// `finish`: marks a planned iteration succeeded (false: it had already).
/// An iteration that a run recorded as failed is refused without `force`:
/// its output may be incomplete, and marking it succeeded would move `next`
/// past it for good.
pub async fn confirm(
    api: &dyn StreamApi,
    store: &dyn CheckpointStore,
    cfg: &ReaderConfig,
    owner: &str,
    force: bool,
) -> Result<(u64, bool)> {
    let l = locate(api, store, cfg, owner).await?;
    let failed = store
        .header(&l.key, l.n)
        .await?
        .is_some_and(|h| h.state == IterationState::Failed);
    if failed && !force {
        return Err(ExitError::Usage(format!(
            "iteration {} of {:?} is recorded as failed (a run of it ended in an error, or its \
             command failed or was killed), so its output may be incomplete: rerun it \
             (--iteration {} or --iteration next), or mark it succeeded anyway with \
             `finish --force`",
            l.n, l.key.logical_name, l.n
        ))
        .into());
    }
    let done = iteration::confirm(
        store,
        &l.key,
        l.n,
        &l.info,
        &l.listed,
        &l.lease,
        &crate::now_ms,
    )
    .await?;
    Ok((l.n, done))
}

/// Gives up our lease, recording `state` for a whole iteration. A failure is
/// only logged: the run's own result decides its exit, and the lease expires.
async fn release(
    store: &dyn CheckpointStore,
    key: &LogicalKey,
    n: u64,
    lease: &LeaseOptions,
    state: IterationState,
) {
    if let Err(e) = record_ends(store, key, n, &lease.holders(), state).await {
        log::warn!("iteration {n}: could not record its end: {e:#}");
    }
}

/// A lease this run held was taken by another run (`--rerun-without-wait`,
/// or after it expired): whatever this run delivered is not the iteration's
/// output, so it ends with exit code 3, never as a success.
fn lease_lost(key: &LogicalKey, n: u64, holder: &Holder) -> anyhow::Error {
    let what = match &holder.task {
        None => format!("iteration {n} of {:?}", key.logical_name),
        Some(t) => format!("task {t} of iteration {n} of {:?}", key.logical_name),
    };
    ExitError::IterationOwned(format!(
        "{what}: another run took the iteration over while this run read it, so this run's \
         output is incomplete (discard it); the other run delivers the iteration"
    ))
    .into()
}

/// Records the end of our lease; a lease no longer ours is [`lease_lost`].
async fn record_end(
    store: &dyn CheckpointStore,
    key: &LogicalKey,
    n: u64,
    holder: &Holder,
    state: IterationState,
) -> Result<()> {
    match store.finish(key, n, holder, state, crate::now_ms()).await {
        Ok(()) => Ok(()),
        Err(StoreError::Conflict(_)) => Err(lease_lost(key, n, holder)),
        Err(e) => Err(anyhow!(e).context(format!("recording iteration {n} as {}", state.as_str()))),
    }
}

/// Records the end of every lease we hold (all are given back, whatever
/// one of them answers); the first failure is the answer.
async fn record_ends(
    store: &dyn CheckpointStore,
    key: &LogicalKey,
    n: u64,
    holders: &[Holder],
    state: IterationState,
) -> Result<()> {
    let mut first = None;
    for h in holders {
        if let Err(e) = record_end(store, key, n, h, state).await {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// Keeps our leases renewed; the receiver resolves if another run took one.
fn spawn_renewal(
    store: Arc<dyn CheckpointStore>,
    key: LogicalKey,
    n: u64,
    holders: Vec<Holder>,
    duration: Duration,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::oneshot::Receiver<()>,
) {
    let (lost, lost_rx) = tokio::sync::oneshot::channel();
    let every = duration / 3;
    let task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let exp = crate::now_ms() + duration.as_millis() as i64;
            for holder in &holders {
                match store.renew(&key, n, holder, exp).await {
                    Ok(()) => {}
                    Err(StoreError::Conflict(_)) => {
                        let _ = lost.send(());
                        return;
                    }
                    Err(e) => log::warn!("iteration {n}: could not renew a lease: {e:#}"),
                }
            }
        }
    });
    (task, lost_rx)
}

/// Map mode: keeps only this task's shards of the opened iteration.
fn select(opened: &mut Opened, m: &MapMode, key: &LogicalKey) -> Result<()> {
    let n = opened.header.number;
    let wanted = match m {
        MapMode::Manifest(shards) => shards.clone(),
        MapMode::Task { index, count } => {
            let ids: Vec<String> = opened.shards.iter().map(|s| s.shard_id.clone()).collect();
            crate::manifest::task_share(&ids, *index, *count)
                .into_iter()
                .collect()
        }
    };
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|w| !opened.shards.iter().any(|s| &&s.shard_id == w))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(ExitError::Usage(format!(
            "shard{} {} {} not part of iteration {n} of {:?}, whose shards are {}: the manifest \
             comes from another plan",
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", "),
            if missing.len() == 1 { "is" } else { "are" },
            key.logical_name,
            opened
                .shards
                .iter()
                .map(|s| s.shard_id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into());
    }
    opened.shards.retain(|s| wanted.contains(&s.shard_id));
    Ok(())
}

/// Reads the prepared run to its end. With `hold`, a successful iteration is
/// not marked succeeded: its lease stays renewed in [`Summary::held`] until
/// the caller decides (exec mode: when the child has exited).
pub async fn run(
    p: Prepared,
    cfg: &ReaderConfig,
    out: Box<dyn Write + Send>,
    stop: Stop,
    hold: bool,
) -> Result<Summary> {
    let Prepared {
        api,
        info,
        listed,
        read,
        iteration,
        started,
    } = p;
    let mut summary = match iteration {
        Some((store, key, opened, lease)) => {
            let stream = IterationStream {
                listed: &listed,
                retention_hours: info.retention_hours,
                read,
            };
            run_iteration(api, store, key, opened, stream, cfg, lease, out, stop, hold).await?
        }
        None => tokio::select! {
            r = read_unchecked(api, &listed, cfg, &read, &info.name, out) => r?,
            why = stop => return Err(ExitError::Interrupted(format!("stopped by {why}")).into()),
        },
    };
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// An iteration read to its end whose final state waits for a decision.
pub struct Held {
    store: Arc<dyn CheckpointStore>,
    key: LogicalKey,
    n: u64,
    holders: Vec<Holder>,
    renewal: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Held({} #{})", self.key.logical_name, self.n)
    }
}

impl Held {
    /// Marks the iteration succeeded or failed and releases its lease.
    pub async fn finish(mut self, succeeded: bool) -> Result<()> {
        if let Some(r) = self.renewal.take() {
            r.abort();
        }
        let state = if succeeded {
            IterationState::Succeeded
        } else {
            IterationState::Failed
        };
        record_ends(self.store.as_ref(), &self.key, self.n, &self.holders, state).await
    }
}

fn end_rules(cfg: &ReaderConfig, snapshot_ms: i64) -> EndRules {
    EndRules {
        snapshot_ms: (cfg.until == Until::Snapshot).then_some(snapshot_ms),
        nodata: cfg.nodata_timeout,
        deadline: cfg
            .iteration_timeout
            .map(|d| tokio::time::Instant::now() + d),
    }
}

/// What a run knows of the stream beside the iteration.
struct IterationStream<'a> {
    listed: &'a [ShardInfo],
    retention_hours: i64,
    read: ReadSettings,
}

/// The boundary to fix for a shard that was read to its end rule.
fn end_from(o: Outcome, fixed_by: &str, skipped: Option<&(Option<Position>, String)>) -> ShardEnd {
    ShardEnd {
        last_sequence: o.last_sequence,
        next: o.next,
        closed: o.closed,
        records: o.records,
        bytes: o.bytes,
        fixed_ms: crate::now_ms(),
        fixed_by: fixed_by.to_string(),
        known_until_ms: o.known_until_ms,
        read_from: skipped.and_then(|s| s.0.clone()),
        expired_skip: skipped.map(|s| s.1.clone()),
        first_sequence: o.first.as_ref().map(|f| f.0.clone()),
        first_arrival_ms: o.first.map(|f| f.1),
    }
}

/// Checks the shards for aged-out positions; with `--on-expired skip`,
/// returns the shards with their new starts and what was skipped per shard.
async fn handle_expired(
    api: &dyn StreamApi,
    stream: &str,
    retention_hours: i64,
    mut shards: Vec<ShardCheckpoint>,
    policy: OnExpired,
) -> Result<(
    Vec<ShardCheckpoint>,
    HashMap<usize, (Option<Position>, String)>,
)> {
    let expired = expiry::check(api, retention_hours, &shards, crate::now_ms()).await?;
    if expired.is_empty() {
        return Ok((shards, HashMap::new()));
    }
    if policy == OnExpired::Fail {
        return Err(
            ExitError::DataExpired(expiry::message(stream, retention_hours, &expired)).into(),
        );
    }
    let mut skipped = HashMap::new();
    for e in expired {
        let to = e.resume_at();
        log::warn!(
            "SKIPPING expired data in shard {}: {} may have aged out unread; reading from {} \
             (--on-expired skip; recorded in the checkpoint table)",
            e.shard_id,
            e.missing,
            to.as_ref()
                .map_or("new records".to_string(), |p| p.to_string())
        );
        let s = &mut shards[e.index];
        if let Some(p) = &to {
            match &mut s.end {
                Some(end) => end.read_from = Some(p.clone()),
                None => s.start = p.clone(),
            }
        }
        skipped.insert(e.index, (to, e.missing));
    }
    Ok((shards, skipped))
}

#[allow(clippy::too_many_arguments)]
async fn run_iteration(
    api: Arc<dyn StreamApi>,
    store: Arc<dyn CheckpointStore>,
    key: LogicalKey,
    opened: Opened,
    stream: IterationStream<'_>,
    cfg: &ReaderConfig,
    lease: LeaseOptions,
    out: Box<dyn Write + Send>,
    stop: Stop,
    hold: bool,
) -> Result<Summary> {
    let n = opened.header.number;
    let rules = end_rules(cfg, opened.header.opened_ms);
    let shards = opened.shards.clone();
    let replayed = shards.iter().filter(|s| s.end.is_some()).count();
    log::info!(
        "iteration {n} of {:?}: {} shards ({} to read to their end rule, {} to replay){}",
        key.logical_name,
        shards.len(),
        shards.len() - replayed,
        replayed,
        if opened.leased {
            ""
        } else {
            " — a replay of a finished iteration"
        }
    );
    let fmt = Formatter::new(
        cfg.fields.clone(),
        cfg.encoding,
        cfg.format,
        &key.stream,
        Some(n),
    );
    let (renewal, lost) = match opened.leased {
        true => {
            let (task, lost) = spawn_renewal(
                store.clone(),
                key.clone(),
                n,
                lease.holders(),
                lease.duration,
            );
            (Some(task), Some(lost))
        }
        false => (None, None),
    };
    let lost = async move {
        // A renewal that ends without a loss (aborted) never resolves this.
        let taken = match lost {
            Some(rx) => rx.await.is_ok(),
            None => false,
        };
        if !taken {
            std::future::pending::<()>().await;
        }
    };
    let handle = tokio::runtime::Handle::current();
    let checked = handle_expired(
        api.as_ref(),
        &key.stream,
        stream.retention_hours,
        shards.clone(),
        cfg.on_expired,
    )
    .await;
    let (read_shards, skipped) = match checked {
        Ok(v) => v,
        Err(e) => {
            if opened.leased {
                release(store.as_ref(), &key, n, &lease, IterationState::Failed).await;
            }
            return Err(e);
        }
    };
    let fixer = {
        let (store, key, lease) = (store.clone(), key.clone(), lease.clone());
        let ids: Vec<String> = shards.iter().map(|s| s.shard_id.clone()).collect();
        let leased = opened.leased;
        move |i: usize, outcome: Option<Outcome>| -> Result<()> {
            let Some(o) = outcome else { return Ok(()) };
            if !leased {
                return Ok(());
            }
            let holder = lease.holder_of(&ids[i]);
            let end = end_from(o, &holder.owner, skipped.get(&i));
            match handle.block_on(store.fix_shard(&key, n, &holder, &ids[i], &end)) {
                Ok(()) => Ok(()),
                Err(StoreError::Conflict(_)) => Err(ExitError::IterationOwned(format!(
                    "iteration {n} of {:?}: shard {} could not be fixed because another run \
                     took the iteration over or fixed it first: this run's output is \
                     incomplete (discard it); the other run's counts",
                    key.logical_name, ids[i]
                ))
                .into()),
                Err(e) => Err(anyhow!(e).context(format!("fixing shard {}", ids[i]))),
            }
        }
    };
    let result = tokio::select! {
        r = pump_groups(api, &read_shards, stream.listed, rules, stream.read, fmt, out, fixer,
                        cfg.max_concurrent_shards) => r,
        why = stop => Err(ExitError::Interrupted(format!(
            "stopped by {why}; iteration {n} is released as failed, and no shard is fixed past \
             its last delivered record"
        )).into()),
        () = lost => Err(lease_lost(&key, n, &lease.holder())),
    };
    // Held: keep the lease renewed until the caller records the outcome.
    if hold && opened.leased && result.is_ok() {
        let stats = result?;
        return Ok(Summary {
            iteration: Some(n),
            records: stats.records,
            bytes: stats.bytes,
            shards: shards.len(),
            fixed_now: shards.len() - replayed,
            replayed,
            elapsed: Duration::ZERO,
            held: Some(Held {
                store,
                key,
                n,
                holders: lease.holders(),
                renewal,
            }),
        });
    }
    if let Some(r) = renewal {
        r.abort();
    }
    let lost = result
        .as_ref()
        .err()
        .is_some_and(|e| crate::error::exit_for(e) == crate::error::Exit::IterationOwned);
    if opened.leased && !lost {
        match &result {
            Ok(_) => {
                let holders = lease.holders();
                record_ends(store.as_ref(), &key, n, &holders, IterationState::Succeeded).await?
            }
            Err(_) => release(store.as_ref(), &key, n, &lease, IterationState::Failed).await,
        }
    }
    let stats = result?;
    Ok(Summary {
        iteration: Some(n),
        records: stats.records,
        bytes: stats.bytes,
        shards: shards.len(),
        fixed_now: if opened.leased {
            shards.len() - replayed
        } else {
            0
        },
        replayed,
        elapsed: Duration::ZERO,
        held: None,
    })
}

/// Without a checkpoint table: read from the start position to the end rule,
/// one lineage generation after another, and record nothing.
async fn read_unchecked(
    api: Arc<dyn StreamApi>,
    listed: &[ShardInfo],
    cfg: &ReaderConfig,
    read: &ReadSettings,
    stream: &str,
    out: Box<dyn Write + Send>,
) -> Result<Summary> {
    let now = crate::now_ms();
    let rules = end_rules(cfg, now);
    let (_, not_before) = cfg.start.describe(now);
    let mut shards = iteration::plan_first(listed, &cfg.start, now);
    let mut summary = Summary::default();
    let out = Arc::new(Mutex::new(out));
    loop {
        let fmt = Formatter::new(cfg.fields.clone(), cfg.encoding, cfg.format, stream, None);
        let ends: Arc<Mutex<HashMap<usize, Outcome>>> = Arc::default();
        let recorder = {
            let ends = ends.clone();
            move |i: usize, o: Option<Outcome>| -> Result<()> {
                if let Some(o) = o {
                    ends.lock().unwrap().insert(i, o);
                }
                Ok(())
            }
        };
        let sink = SharedWriter(out.clone());
        let stats = pump_groups(
            api.clone(),
            &shards,
            listed,
            rules.clone(),
            read.clone(),
            fmt,
            Box::new(sink),
            recorder,
            cfg.max_concurrent_shards,
        )
        .await?;
        summary.records += stats.records;
        summary.bytes += stats.bytes;
        summary.shards += shards.len();
        let ends = ends.lock().unwrap();
        let done: Vec<ShardCheckpoint> = shards
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let o = ends
                    .get(&i)
                    .cloned()
                    .expect("every live shard reports its end");
                ShardCheckpoint {
                    end: Some(end_from(o, "", None)),
                    ..s.clone()
                }
            })
            .collect();
        // Only children of shards read to their end are read next.
        let next = iteration::plan_next(&done, listed, not_before)?;
        let new: Vec<ShardCheckpoint> = next
            .into_iter()
            .filter(|s| !done.iter().any(|d| d.shard_id == s.shard_id))
            .collect();
        if new.is_empty() {
            return Ok(summary);
        }
        shards = new;
    }
}

/// Lets several passes write to one buffered stdout.
struct SharedWriter(Arc<Mutex<Box<dyn Write + Send>>>);
impl Write for SharedWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap().flush()
    }
}

/// Reads the shards `limit` at a time (all at once without a limit), group
/// after group in their order, onto one output. Within a group lines are
/// interleaved by the merge; `on_done` gets indices into `shards`.
#[allow(clippy::too_many_arguments)]
async fn pump_groups(
    api: Arc<dyn StreamApi>,
    shards: &[ShardCheckpoint],
    listed: &[ShardInfo],
    rules: EndRules,
    settings: ReadSettings,
    fmt: Formatter,
    out: Box<dyn Write + Send>,
    on_done: impl FnMut(usize, Option<Outcome>) -> Result<()> + Send + 'static,
    limit: Option<usize>,
) -> Result<MergeStats> {
    let size = limit.unwrap_or(shards.len()).max(1);
    if size >= shards.len() {
        return pump(api, shards, listed, rules, settings, fmt, out, on_done).await;
    }
    let out = Arc::new(Mutex::new(out));
    let on_done = Arc::new(Mutex::new(on_done));
    let mut total = MergeStats::default();
    for (g, group) in shards.chunks(size).enumerate() {
        let done = on_done.clone();
        let stats = pump(
            api.clone(),
            group,
            listed,
            rules.clone(),
            settings.clone(),
            fmt.clone(),
            Box::new(SharedWriter(out.clone())),
            move |i, o| (done.lock().unwrap())(g * size + i, o),
        )
        .await?;
        total.records += stats.records;
        total.bytes += stats.bytes;
    }
    Ok(total)
}

/// Reads `shards` at once and merges them onto `out`. `on_done` runs for each
/// shard after its last record is flushed.
#[allow(clippy::too_many_arguments)]
async fn pump(
    api: Arc<dyn StreamApi>,
    shards: &[ShardCheckpoint],
    listed: &[ShardInfo],
    rules: EndRules,
    settings: ReadSettings,
    fmt: Formatter,
    mut out: Box<dyn Write + Send>,
    on_done: impl FnMut(usize, Option<Outcome>) -> Result<()> + Send + 'static,
) -> Result<MergeStats> {
    let ending: HashMap<&str, Option<String>> = listed
        .iter()
        .map(|s| (s.shard_id.as_str(), s.ending_sequence_number.clone()))
        .collect();
    let (tx, rx) = mpsc::channel(shards.len() * (PAGES_PER_SHARD + 2) + 8);
    let budget = Budget::default();
    let failure: Arc<Mutex<Option<anyhow::Error>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    let mut merge_shards = Vec::new();
    for (index, s) in shards.iter().enumerate() {
        let page_slots = budget.shard();
        merge_shards.push(MergeShard {
            shard_id: s.shard_id.clone(),
            page_slots: page_slots.clone(),
        });
        let target = match &s.end {
            Some(e) => Target::Replay {
                start: e.read_from.clone().unwrap_or_else(|| s.start.clone()),
                last: e.last_sequence.clone(),
            },
            None => Target::Live {
                start: s.start.clone(),
                ending_sequence: ending.get(s.shard_id.as_str()).cloned().flatten(),
                rules: rules.clone(),
                known_until_ms: s.known_until_ms,
            },
        };
        let task = ShardTask {
            index,
            shard_id: s.shard_id.clone(),
            target,
            settings: settings.clone(),
            page_slots,
            events: tx.clone(),
        };
        let (api, failure, tx) = (api.clone(), failure.clone(), tx.clone());
        tasks.spawn(async move {
            if let Err(e) = task.run(api).await {
                failure.lock().unwrap().get_or_insert(e);
                // Wake the merge so it stops.
                let _ = tx.send((index, ShardEvent::Failed)).await;
            }
        });
    }
    drop(tx);
    let merged = tokio::task::spawn_blocking(move || {
        // Lines are written field by field into one large buffer; what is
        // under it (stdout, a child's stdin) gets whole blocks.
        let mut out = std::io::BufWriter::with_capacity(OUTPUT_BUFFER, &mut out);
        merge(merge_shards, rx, &mut out, &fmt, on_done)
    })
    .await
    .context("the output thread panicked")?;
    tasks.abort_all();
    if let Some(e) = failure.lock().unwrap().take() {
        return Err(e);
    }
    merged
}
