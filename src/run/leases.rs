//! The leases a run holds while it reads: kept renewed, given back with the
//! iteration's outcome, and noticed when another run took one over.

use crate::error::ExitError;
use crate::iteration::LeaseOptions;
use crate::ports::checkpoint::{CheckpointStore, Holder, IterationState, LogicalKey, StoreError};
use anyhow::{anyhow, Result};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Gives up our leases, recording `state` for a whole iteration. A failure is
/// only logged: the run's own result decides its exit, and the lease expires.
pub async fn release(
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
pub fn lease_lost(key: &LogicalKey, n: u64, holder: &Holder) -> anyhow::Error {
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
    match store
        .finish(key, n, holder, state, crate::clock::now_ms())
        .await
    {
        Ok(()) => Ok(()),
        Err(StoreError::Conflict(_)) => Err(lease_lost(key, n, holder)),
        Err(e) => Err(anyhow!(e).context(format!("recording iteration {n} as {}", state.as_str()))),
    }
}

/// Records the end of every lease we hold (all are given back, whatever
/// one of them answers); the first failure is the answer.
pub async fn record_ends(
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

/// Our leases, renewed every third of their duration until stopped.
pub struct Renewal {
    task: tokio::task::JoinHandle<()>,
    lost: oneshot::Receiver<()>,
}

impl Renewal {
    pub fn start(
        store: Arc<dyn CheckpointStore>,
        key: LogicalKey,
        n: u64,
        holders: Vec<Holder>,
        duration: Duration,
    ) -> Self {
        let (lost, lost_rx) = oneshot::channel();
        let every = duration / 3;
        let task = tokio::spawn(crate::clock::carry(async move {
            loop {
                tokio::time::sleep(every).await;
                let exp = crate::clock::now_ms() + duration.as_millis() as i64;
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
        }));
        Renewal {
            task,
            lost: lost_rx,
        }
    }

    /// Splits a run's renewal, if it has one, into the renewing task and a
    /// future that resolves only if another run took one of our leases (a
    /// run without leases, a replay, never loses one).
    pub fn split(
        renewal: Option<Self>,
    ) -> (
        Option<tokio::task::JoinHandle<()>>,
        impl std::future::Future<Output = ()>,
    ) {
        let (task, lost) = match renewal {
            Some(r) => (Some(r.task), Some(r.lost)),
            None => (None, None),
        };
        let taken = async move {
            // A renewal that ends without a loss (aborted) never resolves this.
            let taken = match lost {
                Some(rx) => rx.await.is_ok(),
                None => false,
            };
            if !taken {
                std::future::pending::<()>().await;
            }
        };
        (task, taken)
    }
}

/// An iteration read to its end whose final state waits for a decision.
pub struct Held {
    pub(super) store: Arc<dyn CheckpointStore>,
    pub(super) key: LogicalKey,
    pub(super) n: u64,
    pub(super) holders: Vec<Holder>,
    pub(super) renewal: Option<tokio::task::JoinHandle<()>>,
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
