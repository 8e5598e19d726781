//! Wall-clock time as the checkpoint table stores and shows it: epoch
//! milliseconds, written as RFC 3339.

use std::time::Duration;

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
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
