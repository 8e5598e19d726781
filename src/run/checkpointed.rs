//! Reading an opened iteration: aged-out positions checked, every shard read
//! to its end rule (or replayed), each shard's end fixed as soon as its
//! records are delivered, and the iteration recorded as succeeded or failed.

use super::joins::Joins;
use super::leases::{lease_lost, printed_whole, record_ends, release, Held, Renewal};
use super::pump::Pump;
use super::Summary;
use crate::config::ReaderConfig;
use crate::error::{exit_for, Exit, ExitError};
use crate::expiry::{self, OnExpired};
use crate::format::Formatter;
use crate::iteration::{LeaseOptions, Opened};
use crate::ports::checkpoint::{
    CheckpointStore, IterationState, LogicalKey, ShardCheckpoint, ShardEnd, ShardFix, StoreError,
};
use crate::ports::stream::StreamApi;
use crate::position::Position;
use crate::shard::{EndRules, Outcome, ReadSettings, Until};
use crate::stop::Stop;
use anyhow::{anyhow, Result};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// At most this many ends in one `fix_shards` call (the store splits it into
/// transactions): enough for a thousand shards in one group commit.
const FIXES_PER_WRITE: usize = 1_000;

/// What to skip in a shard whose stored position aged out (`--on-expired
/// skip`), by shard: where it now reads from, and what was lost.
type Skipped = HashMap<String, (Option<Position>, String)>;

/// An opened iteration and everything reading it needs.
pub struct IterationRun<'a> {
    pub api: Arc<dyn StreamApi>,
    pub store: Arc<dyn CheckpointStore>,
    pub key: LogicalKey,
    pub opened: Opened,
    pub lease: LeaseOptions,
    /// Closed shards' last sequence numbers, and how long the stream keeps records.
    pub closed: &'a BTreeMap<String, String>,
    pub retention_hours: i64,
    pub read: ReadSettings,
    pub cfg: &'a ReaderConfig,
}

/// The end rules of a live read that started at `snapshot_ms`.
pub fn end_rules(cfg: &ReaderConfig, snapshot_ms: i64) -> EndRules {
    EndRules {
        snapshot_ms: (cfg.until == Until::Snapshot).then_some(snapshot_ms),
        nodata: cfg.nodata_timeout,
        deadline: cfg
            .iteration_timeout
            .map(|d| tokio::time::Instant::now() + d),
    }
}

/// The boundary to fix for a shard that was read to its end rule.
pub fn end_from(
    o: Outcome,
    fixed_by: &str,
    skipped: Option<&(Option<Position>, String)>,
) -> ShardEnd {
    ShardEnd {
        last_sequence: o.last_sequence,
        next: o.next,
        closed: o.closed,
        records: o.records,
        bytes: o.bytes,
        fixed_ms: crate::clock::now_ms(),
        fixed_by: fixed_by.to_string(),
        known_until_ms: o.known_until_ms,
        read_from: skipped.and_then(|s| s.0.clone()),
        expired_skip: skipped.map(|s| s.1.clone()),
        first_sequence: o.first.as_ref().map(|f| f.0.clone()),
        first_arrival_ms: o.first.map(|f| f.1),
    }
}

impl IterationRun<'_> {
    /// Reads the iteration onto `out` until its end rules, `stop`, or the
    /// loss of a lease. With `hold`, a successful read is not recorded yet:
    /// its leases stay renewed in [`Summary::held`].
    pub async fn read(self, out: Box<dyn Write + Send>, stop: Stop, hold: bool) -> Result<Summary> {
        let n = self.opened.header.number;
        let leased = self.opened.leased;
        let rules = end_rules(self.cfg, self.opened.header.opened_ms);
        let shards = self.opened.shards.clone();
        let replayed = shards.iter().filter(|s| s.end.is_some()).count();
        log::info!(
            "iteration {n} of {:?}: {} ({} to read to their end rule, {} to replay){}",
            self.key.logical_name,
            crate::words::count(shards.len(), "shard"),
            shards.len() - replayed,
            replayed,
            if leased {
                ""
            } else {
                " — a replay of a finished iteration"
            }
        );
        let renewal = leased.then(|| {
            Renewal::start(
                self.store.clone(),
                self.key.clone(),
                n,
                self.lease.holders(),
                self.lease.duration,
            )
        });
        let (renewal, lost) = Renewal::split(renewal);
        let (read_shards, skipped) = match self.check_expired(&shards).await {
            Ok(v) => v,
            Err(e) => {
                if leased {
                    release(
                        self.store.as_ref(),
                        &self.key,
                        n,
                        &self.lease,
                        IterationState::Failed,
                    )
                    .await;
                }
                return Err(e);
            }
        };
        let mut settings = self.read.clone();
        settings.record_sizes = Arc::new(self.record_sizes(&read_shards).await);
        // Children join a run that holds the whole iteration.
        let joins = (leased && self.lease.task.is_none()).then(|| {
            Arc::new(Joins::new(
                self.api.clone(),
                self.store.clone(),
                self.key.clone(),
                n,
                self.lease.holder(),
                crate::lineage::spec_time(&self.opened.header.start_spec),
                &shards,
            ))
        });
        let pump = Pump {
            api: self.api.clone(),
            closed: self.closed,
            rules,
            settings,
            fmt: Formatter::new(
                self.cfg.fields.clone(),
                self.cfg.encoding,
                self.cfg.format,
                &self.key.stream,
                Some(n),
            ),
            limit: self.cfg.max_concurrent_shards,
            joins,
        };
        let (ends, fixes) = mpsc::unbounded_channel();
        let reading = async {
            let (stats, ()) = tokio::try_join!(
                pump.run(&read_shards, out, ends),
                self.fix_ends(fixes, &skipped)
            )?;
            Ok(stats)
        };
        let result: Result<_> = tokio::select! {
            // In this order when several are ready: a read that ended has
            // fixed its shards under the lease.
            biased;
            r = reading => r,
            why = stop => Err(ExitError::Interrupted(format!(
                "stopped by {why}; iteration {n} is released as failed, and no shard is fixed \
                 past its last delivered record"
            )).into()),
            () = lost => Err(lease_lost(&self.key, n, &self.lease.holder())),
        };
        // Held: keep the lease renewed until the caller records the outcome.
        if hold && leased && result.is_ok() {
            let stats = result?;
            return Ok(Summary {
                iteration: Some(n),
                records: stats.records,
                bytes: stats.bytes,
                shards: shards.len() + stats.joined,
                fixed_now: shards.len() + stats.joined - replayed,
                replayed,
                elapsed: Duration::ZERO,
                held: Some(Held {
                    store: self.store,
                    key: self.key,
                    n,
                    holders: self.lease.holders(),
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
            .is_some_and(|e| exit_for(e) == Exit::IterationOwned);
        if leased && !lost {
            let store = self.store.as_ref();
            match &result {
                Ok(_) => {
                    let holders = self.lease.holders();
                    let recorded =
                        record_ends(store, &self.key, n, &holders, IterationState::Succeeded).await;
                    printed_whole(recorded, &self.key, n, self.lease.task.as_deref())?
                }
                Err(_) => release(store, &self.key, n, &self.lease, IterationState::Failed).await,
            }
        }
        let stats = result?;
        Ok(Summary {
            iteration: Some(n),
            records: stats.records,
            bytes: stats.bytes,
            shards: shards.len() + stats.joined,
            fixed_now: if leased {
                shards.len() + stats.joined - replayed
            } else {
                0
            },
            replayed,
            elapsed: Duration::ZERO,
            held: None,
        })
    }

    /// Fixes shards' ends as they arrive, until the pump is done. Ends that
    /// arrive while a write is in flight go together in the next one (a
    /// group commit), so that a thousand shards ending at once cost a few
    /// round trips. A fix that loses its condition ends the run with exit
    /// code 3. A replay fixes nothing.
    async fn fix_ends(
        &self,
        mut ends: mpsc::UnboundedReceiver<(String, Outcome)>,
        skipped: &Skipped,
    ) -> Result<()> {
        let n = self.opened.header.number;
        while let Some(first) = ends.recv().await {
            let mut arrived = vec![first];
            while arrived.len() < FIXES_PER_WRITE {
                match ends.try_recv() {
                    Ok(end) => arrived.push(end),
                    Err(_) => break,
                }
            }
            if !self.opened.leased {
                continue;
            }
            let fixes: Vec<ShardFix> = arrived
                .into_iter()
                .map(|(id, o)| {
                    let holder = self.lease.holder_of(&id);
                    let end = end_from(o, &holder.owner, skipped.get(&id));
                    ShardFix {
                        holder,
                        shard_id: id,
                        end,
                    }
                })
                .collect();
            let ids = || {
                let ids: Vec<&str> = fixes.iter().map(|f| f.shard_id.as_str()).collect();
                ids.join(", ")
            };
            match self.store.fix_shards(&self.key, n, &fixes).await {
                Ok(()) => {}
                Err(StoreError::Conflict(_)) => {
                    return Err(ExitError::IterationOwned(format!(
                        "iteration {n} of {:?}: {} could not be fixed because another run took \
                         the iteration over or fixed it first: this run's output is incomplete \
                         (discard it); the other run's counts",
                        self.key.logical_name,
                        match fixes.len() {
                            1 => format!("shard {}", ids()),
                            _ => format!("shards {}", ids()),
                        }
                    ))
                    .into())
                }
                Err(e) => return Err(anyhow!(e).context(format!("fixing shard(s) {}", ids()))),
            }
        }
        Ok(())
    }

    /// Each shard's typical record, from the checkpoints: its own end when it
    /// is replayed, else the previous iteration's end of it or of a parent.
    /// The previous iteration is read (one Query) only when the memory budget
    /// makes pages smaller than the service's, where the first call's
    /// `Limit` depends on it; a read that fails only costs the hint.
    async fn record_sizes(&self, shards: &[ShardCheckpoint]) -> HashMap<String, usize> {
        let typical = |s: &ShardCheckpoint| {
            let e = s.end.as_ref()?;
            crate::shard::typical_record(e.records, e.bytes)
        };
        let mut sizes: HashMap<String, usize> = shards
            .iter()
            .filter_map(|s| Some((s.shard_id.clone(), typical(s)?)))
            .collect();
        let at_once = self.cfg.max_concurrent_shards.unwrap_or(shards.len());
        let tight = crate::pages::page_bytes(self.read.max_memory, at_once.min(shards.len()))
            .map_or(true, |b| b < crate::shard::MAX_PAGE_BYTES);
        let n = self.opened.header.number;
        if !tight || n == 0 || sizes.len() == shards.len() {
            return sizes;
        }
        let Ok(prev) = self.store.shards(&self.key, n - 1).await else {
            return sizes;
        };
        let before: HashMap<&str, usize> = prev
            .iter()
            .filter_map(|s| Some((s.shard_id.as_str(), typical(s)?)))
            .collect();
        for s in shards.iter().filter(|s| s.end.is_none()) {
            let known = std::iter::once(&s.shard_id)
                .chain(&s.parents)
                .find_map(|id| before.get(id.as_str()));
            if let Some(t) = known {
                sizes.insert(s.shard_id.clone(), *t);
            }
        }
        sizes
    }

    /// Checks the shards for aged-out positions; with `--on-expired skip`,
    /// returns the shards with their new starts and what was skipped per shard.
    async fn check_expired(
        &self,
        shards: &[ShardCheckpoint],
    ) -> Result<(Vec<ShardCheckpoint>, Skipped)> {
        let (stream, retention) = (&self.key.stream, self.retention_hours);
        let expired =
            expiry::check(self.api.as_ref(), retention, shards, crate::clock::now_ms()).await?;
        let mut shards = shards.to_vec();
        if expired.is_empty() {
            return Ok((shards, HashMap::new()));
        }
        if self.cfg.on_expired == OnExpired::Fail {
            return Err(
                ExitError::DataExpired(expiry::message(stream, retention, &expired)).into(),
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
            skipped.insert(s.shard_id.clone(), (to, e.missing));
        }
        Ok((shards, skipped))
    }
}
