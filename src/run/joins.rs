//! Children that join a whole iteration's run while it reads.
//!
//! A shard that closes after its iteration was planned (a split or merge
//! during the run, or between the plan's shard listing and its snapshot) is
//! read to its end in the run. Its children whose parents have all been read
//! to their end in this run then join it, so that what arrived in them
//! before the end rule is in this iteration instead of held back to the
//! next. A child is recorded in the iteration under the lease, with the
//! order it joined in, before it is read: a rerun or a replay then reads it
//! in the same place of the output (`merge`).
//!
//! Only a run that reads a whole iteration at once does this. A map task
//! reads a share of the plan, and `--max-concurrent-shards` groups are cut
//! before the run starts; there such children enter the next iteration.

use super::stream_error;
use crate::error::ExitError;
use crate::lineage;
use crate::ports::checkpoint::{CheckpointStore, Holder, LogicalKey, ShardCheckpoint, StoreError};
use crate::ports::stream::{ShardInfo, StreamApi};
use anyhow::Result;
use std::collections::BTreeSet;
use std::sync::Arc;

/// What a run needs to let children join.
pub struct Joins {
    api: Arc<dyn StreamApi>,
    store: Arc<dyn CheckpointStore>,
    key: LogicalKey,
    n: u64,
    holder: Holder,
    /// Where children start when the logical name started at a time.
    not_before_ms: Option<i64>,
    /// One join at a time: the merge waits for each answer anyway.
    state: tokio::sync::Mutex<State>,
}

struct State {
    /// The stream's shards as last listed (listed again when a closed
    /// shard's children are not in it).
    listed: Vec<ShardInfo>,
    /// The last `joined` number given.
    joined: u32,
}

/// A child that joins, and its last record if it is already closed.
pub struct Child {
    pub checkpoint: ShardCheckpoint,
    pub ending_sequence: Option<String>,
}

impl Joins {
    /// For a run that holds the whole iteration `n`'s lease as `holder` and
    /// reads `shards`.
    pub fn new(
        api: Arc<dyn StreamApi>,
        store: Arc<dyn CheckpointStore>,
        key: LogicalKey,
        n: u64,
        holder: Holder,
        not_before_ms: Option<i64>,
        shards: &[ShardCheckpoint],
    ) -> Joins {
        Joins {
            api,
            store,
            key,
            n,
            holder,
            not_before_ms,
            state: tokio::sync::Mutex::new(State {
                listed: Vec::new(),
                joined: shards.iter().filter_map(|s| s.joined).max().unwrap_or(0),
            }),
        }
    }

    /// The children that join now that `parent` has been read to its end;
    /// `in_run`: every shard of the run, joined ones included; `ended`:
    /// those read to their end so far. They are recorded in the iteration
    /// before this returns.
    pub async fn children_of(
        &self,
        parent: &str,
        in_run: &BTreeSet<String>,
        ended: &BTreeSet<String>,
    ) -> Result<Vec<Child>> {
        let mut st = self.state.lock().await;
        let listed_children =
            |l: &[ShardInfo]| l.iter().any(|c| c.parents().iter().any(|p| p == parent));
        if !listed_children(&st.listed) {
            st.listed = self.api.list_shards().await.map_err(stream_error)?;
        }
        let mut joining = lineage::joining(parent, &st.listed, in_run, ended, self.not_before_ms);
        if joining.is_empty() {
            return Ok(Vec::new());
        }
        for c in &mut joining {
            st.joined += 1;
            c.joined = Some(st.joined);
        }
        let (key, n) = (&self.key, self.n);
        match self.store.add_shards(key, n, &self.holder, &joining).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => {
                return Err(ExitError::IterationOwned(format!(
                    "iteration {n} of {:?}: the children of shard {parent} could not join it \
                     because another run took the iteration over: this run's output is \
                     incomplete (discard it); the other run's counts",
                    key.logical_name
                ))
                .into())
            }
            Err(e) => {
                return Err(anyhow::anyhow!(e).context(format!(
                    "recording the children of shard {parent} in iteration {n}"
                )))
            }
        }
        let ids: Vec<&str> = joining.iter().map(|c| c.shard_id.as_str()).collect();
        log::info!(
            "shard {parent} closed during the run: {} ({}) joined iteration {n}",
            crate::words::count(ids.len(), "child shard"),
            ids.join(", ")
        );
        let children = joining
            .into_iter()
            .map(|c| {
                let ending_sequence = (st.listed.iter())
                    .find(|l| l.shard_id == c.shard_id)
                    .and_then(|l| l.ending_sequence_number.clone());
                Child {
                    checkpoint: c,
                    ending_sequence,
                }
            })
            .collect();
        Ok(children)
    }
}
