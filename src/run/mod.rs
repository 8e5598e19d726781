//! One run of the reader: open (or replay) an iteration, read its shards at
//! once, write them through the deterministic merge, fix each shard's
//! boundary as soon as its records are delivered, and close the iteration.
//!
//! [`prepare`] looks at the stream and opens the iteration (a child process
//! is told which one before records flow); [`run`] reads it. The parts:
//! - `locate`: which iteration, opening it, `plan` and `finish`;
//! - `checkpointed`: reading an opened iteration and recording its end;
//! - `unchecked`: reading without a checkpoint table;
//! - `pump`: shards through the merge onto the output;
//! - `leases`: renewing, releasing and losing leases.

mod checkpointed;
mod joins;
mod leases;
mod locate;
mod pump;
mod unchecked;

pub use leases::Held;
pub use locate::{confirm, plan, Planned};

use crate::config::{MapMode, ReaderConfig};
use crate::error::ExitError;
use crate::iteration::{LeaseOptions, Opened};
use crate::ports::checkpoint::{CheckpointStore, IterationState, LogicalKey};
use crate::ports::stream::{ShardInfo, StreamApi, StreamError, StreamInfo};
use crate::progress::Shards;
use crate::shard::ReadSettings;
use crate::stop::Stop;
use anyhow::{anyhow, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// An opened iteration and the run's hold on it.
struct Checkpointed {
    store: Arc<dyn CheckpointStore>,
    key: LogicalKey,
    opened: Opened,
    lease: LeaseOptions,
    /// Closed shards' last sequence numbers, by shard.
    closed: BTreeMap<String, String>,
}

/// A run with its stream looked at and, with checkpoints, its iteration
/// opened and leased: what a child process is told before records flow.
pub struct Prepared {
    api: Arc<dyn StreamApi>,
    info: StreamInfo,
    /// The shards a read without checkpoints reads (a checkpointed run's
    /// come from its iteration).
    listed: Vec<ShardInfo>,
    /// The run's read settings, with the enhanced fan-out consumer's ARN.
    read: ReadSettings,
    iteration: Option<Checkpointed>,
    started: Instant,
}

impl Prepared {
    /// How many shards this run reads (this task's, in map mode).
    pub fn shard_count(&self) -> usize {
        match &self.iteration {
            Some(c) => c.opened.shards.len(),
            None => self.listed.len(),
        }
    }

    /// Gives the lease back before anything was read (the run could not
    /// start its output), so that the next run need not wait for it. The
    /// iteration is recorded as failed; a map task's shards are only released.
    pub async fn abandon(self) {
        if let Some(c) = &self.iteration {
            if c.opened.leased {
                let n = c.opened.header.number;
                leases::release(
                    c.store.as_ref(),
                    &c.key,
                    n,
                    &c.lease,
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
            Some(c) if c.opened.leased => Some((c.opened.header.number, c.lease.task.is_some())),
            _ => None,
        }
    }

    /// What the command is told: the stream, and when checkpointing the
    /// logical name, iteration number and opening time (epoch ms), and a map
    /// task's name.
    pub fn context(&self) -> crate::exec::RunContext {
        let it = self.iteration.as_ref();
        crate::exec::RunContext {
            stream: self.info.name.clone(),
            iteration: it.map(|c| {
                (
                    c.key.logical_name.clone(),
                    c.opened.header.number,
                    c.opened.header.opened_ms,
                )
            }),
            task: it.and_then(|c| c.lease.task.clone()),
        }
    }
}

/// Looks at the stream and opens the iteration (waiting for its lease).
/// `meter`: per-shard progress, when a person watches.
pub async fn prepare(
    api: Arc<dyn StreamApi>,
    store: Option<Arc<dyn CheckpointStore>>,
    cfg: &ReaderConfig,
    owner: &str,
    meter: Option<Arc<Shards>>,
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
    let mut located = locate::locate(api.as_ref(), store.as_ref(), cfg, owner).await?;
    let mut opened =
        locate::open_located(api.as_ref(), store.as_ref(), &mut located, cfg, false).await?;
    let locate::Located {
        info,
        closed,
        key,
        n,
        lease,
        ..
    } = located;
    if let Some(m) = &cfg.map {
        if let Err(e) = locate::select(&mut opened, m, &key) {
            if opened.leased {
                leases::release(store.as_ref(), &key, n, &lease, IterationState::Open).await;
            }
            return Err(e);
        }
    }
    Ok(Prepared {
        api,
        info,
        listed: Vec::new(),
        read,
        iteration: Some(Checkpointed {
            store,
            key,
            opened,
            lease,
            closed,
        }),
        started,
    })
}

/// The read settings, with the enhanced fan-out consumer registered (or
/// found) when one is asked for: a map task takes it from its manifest when
/// `plan` named the same consumer.
async fn read_settings(api: &dyn StreamApi, cfg: &ReaderConfig) -> Result<ReadSettings> {
    let mut read = cfg.read.clone();
    let planned = match &cfg.map {
        Some(MapMode::Manifest { facts: Some(f), .. }) => f.efo.as_ref(),
        _ => None,
    };
    // A task without --efo-consumer reads as the plan's consumer: it was
    // registered (and is billed) for the job's tasks.
    let name = cfg.efo_consumer.as_ref().or(planned.map(|c| &c.name));
    if let Some(name) = name {
        let arn = match planned.filter(|c| &c.name == name) {
            Some(c) => c.arn.clone(),
            None => api.consumer(name).await.map_err(stream_error)?,
        };
        log::info!("reading with enhanced fan-out as consumer {name:?}");
        read.efo = Some(Arc::from(arn));
    }
    Ok(read)
}

/// Reads the prepared run to its end, writing lines to `out`. When `stop`
/// resolves, the run ends with [`ExitError::Interrupted`] and its iteration
/// is released as failed. With `hold`, a successful iteration is not marked
/// succeeded: its lease stays renewed in [`Summary::held`] until the caller
/// decides (exec mode: when the child has exited).
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
        Some(c) => {
            let it = checkpointed::IterationRun {
                api,
                store: c.store,
                key: c.key,
                opened: c.opened,
                lease: c.lease,
                closed: &c.closed,
                retention_hours: info.retention_hours,
                read,
                cfg,
            };
            it.read(out, stop, hold).await?
        }
        None => tokio::select! {
            r = unchecked::read(api, &listed, cfg, &read, &info.name, out) => r?,
            why = stop => return Err(ExitError::Interrupted(format!("stopped by {why}")).into()),
        },
    };
    summary.elapsed = started.elapsed();
    Ok(summary)
}

#[cfg(test)]
mod tests;
