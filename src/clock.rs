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

/// The deterministic simulation's wall clock (`simulation.rs`): on the
/// thread that installs it, `now_ms` follows tokio's paused clock from a
/// fixed start, plus jumps the simulation makes (as a host's clock steps).
#[cfg(test)]
pub mod simulated {
    use std::cell::Cell;

    thread_local! {
        static CLOCK: Cell<Option<(i64, tokio::time::Instant)>> = const { Cell::new(None) };
        static JUMP: Cell<i64> = const { Cell::new(0) };
    }

    /// Starts the clock at `start_ms` (call inside a paused tokio runtime).
    pub fn install(start_ms: i64) {
        CLOCK.set(Some((start_ms, tokio::time::Instant::now())));
        JUMP.set(0);
    }

    pub fn uninstall() {
        CLOCK.set(None);
    }

    /// The time of the service (what Kinesis stamps records with): no jumps.
    pub fn service_ms() -> Option<i64> {
        CLOCK
            .get()
            .map(|(ms, at)| ms + at.elapsed().as_millis() as i64)
    }

    /// Steps this host's clock to `offset_ms` from the service's.
    pub fn set_jump(offset_ms: i64) {
        JUMP.set(offset_ms);
    }

    pub(super) fn now_ms() -> Option<i64> {
        service_ms().map(|t| t + JUMP.get())
    }
}
