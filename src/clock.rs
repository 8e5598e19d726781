//! Wall-clock time as the checkpoint table stores and shows it: epoch
//! milliseconds, written as RFC 3339.

use std::time::Duration;

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    #[cfg(test)]
    if let Some(t) = simulated::now_ms() {
        return t;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Epoch milliseconds as RFC 3339 with milliseconds, UTC (written without allocating).
pub fn rfc3339(ms: i64) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64),
    )
}

/// [`rfc3339`] as a string.
pub fn fmt_ms(ms: i64) -> String {
    rfc3339(ms).to_string()
}

/// Runs `f` on the clock of the task that calls this. In the product that
/// is the one wall clock; the simulation gives each run its own host clock,
/// which the tasks a run spawns (lease renewal, shard readers) keep.
#[cfg(not(test))]
pub fn carry<F: std::future::Future>(f: F) -> F {
    f
}

/// Runs `f` on the clock of the task that calls this (taken now, not when
/// `f` is first polled, which is in another task).
#[cfg(test)]
pub fn carry<F: std::future::Future>(f: F) -> impl std::future::Future<Output = F::Output> {
    let host = simulated::HOST.try_with(|h| h.clone()).ok();
    async move {
        match host {
            Some(h) => simulated::HOST.scope(h, f).await,
            None => f.await,
        }
    }
}

/// The deterministic simulation's wall clock (`simulation.rs`): on the
/// thread that installs it, `now_ms` follows tokio's paused clock from a
/// fixed start, plus the offset of the host a run is on (its task's
/// [`HOST`]), which the simulation sets and steps.
#[cfg(test)]
pub mod simulated {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    thread_local! {
        static CLOCK: Cell<Option<(i64, tokio::time::Instant)>> = const { Cell::new(None) };
    }

    tokio::task_local! {
        /// A run's host clock: its offset from the service's, in ms.
        pub static HOST: Arc<AtomicI64>;
    }

    /// The offset of the host the current task runs on (0 outside a run).
    fn host_ms() -> i64 {
        HOST.try_with(|h| h.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Starts the clock at `start_ms` (call inside a paused tokio runtime).
    pub fn install(start_ms: i64) {
        CLOCK.set(Some((start_ms, tokio::time::Instant::now())));
    }

    pub fn uninstall() {
        CLOCK.set(None);
    }

    /// The time of the service (what Kinesis stamps records with), on no host.
    pub fn service_ms() -> Option<i64> {
        CLOCK
            .get()
            .map(|(ms, at)| ms + at.elapsed().as_millis() as i64)
    }

    pub(super) fn now_ms() -> Option<i64> {
        service_ms().map(|t| t + host_ms())
    }
}
