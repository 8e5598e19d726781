//! Which iteration a checkpointed run reads, and opening it: `next`
//! resolved (again after a wait), a map task's shards and leases, and the
//! `plan` and `finish` sub-commands' run logic.

use super::stream_error;
use crate::config::{MapMode, ReaderConfig};
use crate::error::ExitError;
use crate::iteration::{self, LeaseOptions, Opened, Opening};
use crate::ports::checkpoint::{CheckpointStore, IterationState, LogicalKey};
use crate::ports::stream::{ShardInfo, StreamApi, StreamInfo};
use anyhow::Result;
use std::collections::BTreeMap;

/// A checkpointed run's stream, iteration number and lease.
pub struct Located {
    pub info: StreamInfo,
    /// The stream's shards as ListShards gave them; `None` for a map task
    /// whose manifest carries what it needs (it then never asked).
    pub listed: Option<Vec<ShardInfo>>,
    /// Closed shards' last sequence numbers, by shard.
    pub closed: BTreeMap<String, String>,
    pub key: LogicalKey,
    pub n: u64,
    pub lease: LeaseOptions,
}

impl Located {
    fn opening<'a>(&'a self, store: &'a dyn CheckpointStore) -> Opening<'a> {
        Opening {
            store,
            key: &self.key,
            n: self.n,
            stream: &self.info,
            listed: self.listed.as_deref(),
            lease: &self.lease,
            now: &crate::clock::now_ms,
        }
    }
}

pub async fn locate(
    api: &dyn StreamApi,
    store: &dyn CheckpointStore,
    cfg: &ReaderConfig,
    owner: &str,
) -> Result<Located> {
    let cp = cfg
        .checkpoint
        .as_ref()
        .ok_or_else(|| ExitError::Usage("this needs a checkpoint table".into()))?;
    // A map task given the plan's facts asks the control plane nothing:
    // hundreds of tasks starting at once would be throttled.
    let (info, listed, closed) = match &cfg.map {
        Some(MapMode::Manifest { facts: Some(f), .. }) => {
            let info = StreamInfo {
                name: crate::ports::stream::stream_name(&cfg.stream).to_string(),
                arn: f.arn.clone(),
                created_ms: f.created_ms,
                retention_hours: f.retention_hours,
            };
            (info, None, f.closed.clone())
        }
        _ => {
            let info = api.describe().await.map_err(stream_error)?;
            let listed = api.list_shards().await.map_err(stream_error)?;
            let closed = closed_shards(&listed);
            (info, Some(listed), closed)
        }
    };
    let key = LogicalKey {
        stream: info.name.clone(),
        logical_name: cp.logical_name.clone(),
    };
    let n = iteration::resolve(store, &key, cp.iteration).await?;
    let task = cfg.map.as_ref().map(|m| match m {
        MapMode::Manifest { shards, .. } => crate::manifest::task_name(shards),
        MapMode::Task { index, count } => format!("task-{index}-of-{count}"),
    });
    // A map task leases each of its shards (known from the manifest, or
    // dealt from the planned iteration's shards).
    let shards = match &cfg.map {
        None => Vec::new(),
        Some(MapMode::Manifest { shards, .. }) => shards.iter().cloned().collect(),
        Some(MapMode::Task { index, count }) => {
            let families = crate::lineage::families(&store.shards(&key, n).await?);
            crate::manifest::task_share(&families, *index, *count)
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
        closed,
        key,
        n,
        lease,
    })
}

/// The closed shards of a shard list, with their last sequence numbers.
pub fn closed_shards(listed: &[ShardInfo]) -> BTreeMap<String, String> {
    listed
        .iter()
        .filter_map(|s| Some((s.shard_id.clone(), s.ending_sequence_number.clone()?)))
        .collect()
}

/// Opens (or, for `plan`, plans) the located iteration. `--iteration next`
/// never delivers a succeeded iteration again (the README's "Iterations: the
/// semantics"). A run that waited for another run's lease
/// finds the iteration succeeded when that run ends well; it then resolves
/// `next` anew and opens what follows (or a failed iteration) instead.
pub async fn open_located(
    api: &dyn StreamApi,
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
        let it = l.opening(store);
        let opened = if planning {
            it.plan(&cfg.start).await
        } else {
            it.open(&cfg.start).await
        }
        // The run's own errors (a lease held by another run) already name
        // the iteration; others get the context.
        .map_err(|e| match e.is::<crate::error::ExitError>() {
            true => e,
            false => e.context(opening(l.n, &l.key)),
        })?;
        let bug = crate::simulation::reintroduced(crate::simulation::Bug::NextReplaysASuccess);
        if !(next && opened.header.state == IterationState::Succeeded) || bug {
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
        // The shard list is as old as the wait: the new iteration is planned
        // from a fresh one (a reshard meanwhile would otherwise wait an
        // iteration more).
        if l.listed.is_some() {
            let listed = api.list_shards().await.map_err(stream_error)?;
            l.closed = closed_shards(&listed);
            l.listed = Some(listed);
        }
    }
}

fn opening(n: u64, key: &LogicalKey) -> String {
    format!(
        "opening iteration {n} of logical name {:?}",
        key.logical_name
    )
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
    let opened = open_located(api, store, &mut l, cfg, true).await?;
    let families = crate::lineage::families(&opened.shards);
    // The consumer is registered (or found) here, once, not by each task.
    let efo = match &cfg.efo_consumer {
        Some(name) => Some(crate::manifest::EfoConsumer {
            name: name.clone(),
            arn: api.consumer(name).await.map_err(stream_error)?,
        }),
        None => None,
    };
    let facts = crate::manifest::StreamFacts {
        arn: l.info.arn.clone(),
        created_ms: l.info.created_ms,
        retention_hours: l.info.retention_hours,
        closed: l.closed.clone(),
        efo,
    };
    let (stream, name) = (&l.key.stream, &l.key.logical_name);
    Ok(Planned {
        iteration: l.n,
        logical_name: l.key.logical_name.clone(),
        lines: crate::manifest::manifest(stream, name, l.n, &families, per_line, Some(&facts)),
        shards: opened.shards.len(),
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
    let done = l.opening(store).confirm().await?;
    Ok((l.n, done))
}

/// Map mode: keeps only this task's shards of the opened iteration.
pub fn select(opened: &mut Opened, m: &MapMode, key: &LogicalKey) -> Result<()> {
    let n = opened.header.number;
    let wanted = match m {
        MapMode::Manifest { shards, .. } => shards.clone(),
        MapMode::Task { index, count } => {
            let families = crate::lineage::families(&opened.shards);
            crate::manifest::task_share(&families, *index, *count)
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
    // A child is read after its parents by the task that reads them.
    let planned: Vec<&str> = opened.shards.iter().map(|s| s.shard_id.as_str()).collect();
    for s in opened
        .shards
        .iter()
        .filter(|s| wanted.contains(&s.shard_id))
    {
        if let Some(p) =
            (s.parents.iter()).find(|p| planned.contains(&p.as_str()) && !wanted.contains(*p))
        {
            return Err(ExitError::Usage(format!(
                "shard {} of iteration {n} of {:?} is read after its parent {p}, which this task \
                 was not given: a map task reads a shard's whole family (plan keeps each family \
                 on one manifest line; give the task that line whole)",
                s.shard_id, key.logical_name
            ))
            .into());
        }
    }
    opened.shards.retain(|s| wanted.contains(&s.shard_id));
    Ok(())
}
