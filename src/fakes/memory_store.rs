//! [`MemoryStore`]: the checkpoint store in memory, with the same conditional
//! semantics as the DynamoDB table, for unit tests of the run logic. Never a
//! replacement for the emulator tests.

use crate::ports::checkpoint::*;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// One iteration in the in-memory store: header, shards, and task leases
/// (owner, expiry) by task name.
#[derive(Clone, Debug)]
struct MemoryIteration {
    header: IterationHeader,
    shards: BTreeMap<String, ShardCheckpoint>,
    tasks: BTreeMap<String, (String, i64)>,
}

type MemoryIterations = BTreeMap<(LogicalKey, u64), MemoryIteration>;

/// The checkpoint store in memory. A clone is another client of the same table.
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: std::sync::Arc<Mutex<MemoryIterations>>,
}

impl MemoryStore {
    fn with<T>(&self, f: impl FnOnce(&mut MemoryIterations) -> T) -> T {
        f(&mut self.inner.lock().unwrap())
    }

    /// A person's hand edit of one shard item, unconditional as the console's
    /// is: `f` gets the item (`None` when absent) and may change, add or
    /// delete it. Returns the item as it was.
    pub fn edit_shard(
        &self,
        key: &LogicalKey,
        n: u64,
        shard_id: &str,
        f: impl FnOnce(&mut Option<ShardCheckpoint>),
    ) -> Option<ShardCheckpoint> {
        self.with(|m| {
            let it = m.get_mut(&(key.clone(), n))?;
            let was = it.shards.get(shard_id).cloned();
            let mut item = was.clone();
            f(&mut item);
            match item {
                Some(sc) => it.shards.insert(shard_id.to_string(), sc),
                None => it.shards.remove(shard_id),
            };
            was
        })
    }

    /// Runs `f` on iteration `n` while `holder` holds its lease; `Conflict` otherwise.
    fn leased<T>(
        &self,
        key: &LogicalKey,
        n: u64,
        holder: &Holder,
        f: impl FnOnce(&mut MemoryIteration) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with(|m| {
            let it = m
                .get_mut(&(key.clone(), n))
                .ok_or_else(|| conflict("no iteration"))?;
            check_holds(it, holder)?;
            f(it)
        })
    }
}

/// `Conflict` unless `holder` holds its lease on the iteration.
fn check_holds(it: &MemoryIteration, holder: &Holder) -> Result<(), StoreError> {
    let owner = match &holder.task {
        None => it.header.owner.as_deref(),
        Some(t) => it.tasks.get(t).map(|(o, _)| o.as_str()),
    };
    match owner == Some(holder.owner.as_str()) {
        true => Ok(()),
        false => Err(conflict("lease lost")),
    }
}

fn conflict(what: impl Into<String>) -> StoreError {
    StoreError::Conflict(what.into())
}

#[async_trait]
impl CheckpointStore for MemoryStore {
    async fn latest(&self, key: &LogicalKey) -> Result<Option<IterationHeader>, StoreError> {
        Ok(self.with(|m| {
            m.iter()
                .filter(|((k, _), _)| k == key)
                .map(|(_, it)| it.header.clone())
                .next_back()
        }))
    }
    async fn header(
        &self,
        key: &LogicalKey,
        n: u64,
    ) -> Result<Option<IterationHeader>, StoreError> {
        Ok(self.with(|m| m.get(&(key.clone(), n)).map(|it| it.header.clone())))
    }
    async fn lowest_unfinished(
        &self,
        key: &LogicalKey,
        from: u64,
        to: u64,
    ) -> Result<Option<u64>, StoreError> {
        Ok(self.with(|m| {
            (from..=to).find(|n| {
                m.get(&(key.clone(), *n))
                    .is_some_and(|it| it.header.state != IterationState::Succeeded)
            })
        }))
    }
    async fn headers(&self, key: &LogicalKey) -> Result<Vec<IterationHeader>, StoreError> {
        Ok(self.with(|m| {
            m.iter()
                .filter(|((k, _), _)| k == key)
                .map(|(_, it)| it.header.clone())
                .collect()
        }))
    }
    async fn shards(&self, key: &LogicalKey, n: u64) -> Result<Vec<ShardCheckpoint>, StoreError> {
        Ok(self.with(|m| {
            m.get(&(key.clone(), n))
                .map(|it| it.shards.values().cloned().collect())
                .unwrap_or_default()
        }))
    }
    async fn task_leases(&self, key: &LogicalKey, n: u64) -> Result<Vec<TaskLease>, StoreError> {
        Ok(self.with(|m| {
            m.get(&(key.clone(), n))
                .map(|it| {
                    it.tasks
                        .iter()
                        .map(|(t, (owner, expires_ms))| TaskLease {
                            shard_id: t.clone(),
                            owner: owner.clone(),
                            expires_ms: *expires_ms,
                        })
                        .collect()
                })
                .unwrap_or_default()
        }))
    }
    async fn create(
        &self,
        key: &LogicalKey,
        header: &IterationHeader,
        shards: &[ShardCheckpoint],
    ) -> Result<(), StoreError> {
        self.with(|m| {
            let k = (key.clone(), header.number);
            if m.contains_key(&k) {
                return Err(conflict(format!("iteration {} exists", header.number)));
            }
            let shards = shards
                .iter()
                .map(|s| (s.shard_id.clone(), s.clone()))
                .collect();
            m.insert(
                k,
                MemoryIteration {
                    header: header.clone(),
                    shards,
                    tasks: BTreeMap::new(),
                },
            );
            Ok(())
        })
    }
    async fn add_shards(
        &self,
        key: &LogicalKey,
        n: u64,
        holder: &Holder,
        shards: &[ShardCheckpoint],
    ) -> Result<(), StoreError> {
        self.leased(key, n, holder, |it| {
            for sh in shards {
                it.shards
                    .entry(sh.shard_id.clone())
                    .or_insert_with(|| sh.clone());
            }
            if let Some(j) = shards.iter().filter_map(|s| s.joined).max() {
                it.header.joined_children = Some(j);
            }
            Ok(())
        })
    }
    async fn acquire(
        &self,
        key: &LogicalKey,
        n: u64,
        holder: &Holder,
        now_ms: i64,
        expires_ms: i64,
        takeover: bool,
    ) -> Result<Lease, StoreError> {
        self.with(|m| {
            let it = m
                .get_mut(&(key.clone(), n))
                .ok_or_else(|| conflict("no iteration"))?;
            if it.header.state == IterationState::Succeeded {
                return Ok(Lease::Succeeded);
            }
            let (owner, expires) = match &holder.task {
                None => (it.header.owner.clone(), it.header.lease_expires_ms),
                Some(t) => match it.tasks.get(t) {
                    Some((o, e)) => (Some(o.clone()), *e),
                    None => (None, 0),
                },
            };
            let rival = crate::simulation::reintroduced(crate::simulation::Bug::OwnLeaseIsARival);
            let free = match &owner {
                None => true,
                Some(o) => (*o == holder.owner && !rival) || expires < now_ms,
            };
            if !(free || takeover) {
                return Ok(Lease::HeldBy {
                    owner: owner.unwrap_or_default(),
                    expires_ms: expires,
                });
            }
            match &holder.task {
                None => {
                    // As the table does: a live lease taken from another run
                    // leaves a trace.
                    if let (Some(from), false) = (&owner, free) {
                        it.header.taken_over = Some(Takeover {
                            from: from.clone(),
                            by: holder.owner.clone(),
                            at_ms: now_ms,
                        });
                    }
                    it.header.owner = Some(holder.owner.clone());
                    it.header.lease_expires_ms = expires_ms;
                    it.header.state = IterationState::Open;
                }
                Some(t) => {
                    it.tasks
                        .insert(t.clone(), (holder.owner.clone(), expires_ms));
                }
            }
            Ok(Lease::Acquired)
        })
    }
    async fn renew(
        &self,
        key: &LogicalKey,
        n: u64,
        holder: &Holder,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        self.leased(key, n, holder, |it| {
            match &holder.task {
                None => it.header.lease_expires_ms = expires_ms,
                Some(t) => {
                    it.tasks
                        .insert(t.clone(), (holder.owner.clone(), expires_ms));
                }
            }
            Ok(())
        })
    }
    async fn fix_shards(
        &self,
        key: &LogicalKey,
        n: u64,
        fixes: &[ShardFix],
    ) -> Result<(), StoreError> {
        // All or nothing, as one transaction of the table is.
        self.with(|m| {
            let it = m
                .get_mut(&(key.clone(), n))
                .ok_or_else(|| conflict("no iteration"))?;
            let mut ids = std::collections::BTreeSet::new();
            for f in fixes {
                if !ids.insert(&f.shard_id) {
                    return Err(StoreError::Other(anyhow::anyhow!(
                        "shard {} twice in one write",
                        f.shard_id
                    )));
                }
                check_holds(it, &f.holder)?;
                let sh = it
                    .shards
                    .get(&f.shard_id)
                    .ok_or_else(|| conflict("no such shard"))?;
                match &sh.end {
                    // Our own fix, again (a retry after a lost answer).
                    Some(e) if e.same_fix(&f.end) => {}
                    Some(_) => return Err(conflict("already fixed")),
                    None => {}
                }
            }
            for f in fixes {
                let sh = it.shards.get_mut(&f.shard_id).expect("checked above");
                sh.end = Some(f.end.clone());
            }
            Ok(())
        })
    }
    async fn finish(
        &self,
        key: &LogicalKey,
        n: u64,
        holder: &Holder,
        state: IterationState,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.leased(key, n, holder, |it| {
            match &holder.task {
                Some(t) => {
                    it.tasks.remove(t);
                }
                None => {
                    let h = &mut it.header;
                    h.owner = None;
                    h.state = state;
                    if state != IterationState::Open {
                        h.finished_ms = Some(now_ms);
                    }
                }
            }
            Ok(())
        })
    }
}
