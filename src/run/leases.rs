//! The leases a run holds while it reads: kept renewed, given back with the
//! iteration's outcome, and noticed when another run took one over.

use crate::error::{exit_for, Exit, ExitError};
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

/// What a run that printed its whole share does when recording its success
/// finds its lease taken over (it lapsed under a slow table, and another run
/// took it): every shard it printed has a fixed end, so what it printed is
/// exactly the iteration's, whoever records it. A map task (`task`) records
/// nothing anyway, and succeeds; a run of the whole iteration leaves the
/// outcome to the run that took it over, and says so with exit 3, since that
/// run delivers the same records again.
pub fn printed_whole(
    recorded: Result<()>,
    key: &LogicalKey,
    n: u64,
    task: Option<&str>,
) -> Result<()> {
    match (recorded, task) {
        (Err(e), Some(task)) if exit_for(&e) == Exit::IterationOwned => {
            log::warn!(
                "task {task} of iteration {n}: another attempt took its lease over after this one \
                 printed its share whole; every shard of it has a fixed end, so both print the \
                 same records"
            );
            Ok(())
        }
        (Err(e), None) if exit_for(&e) == Exit::IterationOwned => {
            Err(ExitError::IterationOwned(format!(
                "iteration {n} of {:?}: this run printed it whole, but another run took the \
                 iteration over before this one could record it succeeded; that run records it \
                 and delivers the same records, so deliver only one of the two outputs",
                key.logical_name
            ))
            .into())
        }
        (r, _) => r,
    }
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
        let recorded =
            record_ends(self.store.as_ref(), &self.key, self.n, &self.holders, state).await;
        match succeeded {
            true => {
                let task = self.holders.first().and_then(|h| h.task.as_deref());
                printed_whole(recorded, &self.key, self.n, task)
            }
            false => recorded,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_lost_after_the_whole_share_was_printed_is_true_to_what_was_printed() {
        let key = LogicalKey {
            stream: "s".into(),
            logical_name: "l".into(),
        };
        let taken = |task: Option<&str>| {
            let holder = Holder {
                owner: "me".into(),
                task: task.map(str::to_string),
            };
            Err(lease_lost(&key, 4, &holder))
        };
        // A map task's share was printed whole: it succeeds.
        assert!(printed_whole(taken(Some("t0")), &key, 4, Some("t0")).is_ok());
        // A whole iteration's run leaves the outcome to the taker, and says
        // that it printed everything (not that its output is incomplete).
        let e = printed_whole(taken(None), &key, 4, None).unwrap_err();
        assert_eq!(exit_for(&e), Exit::IterationOwned);
        let text = e.to_string();
        assert!(
            text.contains("printed it whole") && !text.contains("incomplete"),
            "{text}"
        );
        // Any other failure to record stays what it is.
        let other = printed_whole(Err(anyhow!("table gone")), &key, 4, Some("t0"));
        assert_eq!(exit_for(&other.unwrap_err()), Exit::Failure);
    }
}
