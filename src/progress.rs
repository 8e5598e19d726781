//! Progress for a person watching (stderr is a terminal) and counters for
//! Hadoop (`reporter:counter:` lines on stderr).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Counts that the working threads bump and the ticker reads.
#[derive(Debug, Default)]
pub struct Progress {
    pub lines: AtomicU64,
    pub bytes: AtomicU64,
}

impl Progress {
    pub fn add(&self, lines: u64, bytes: u64) {
        self.lines.fetch_add(lines, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// A writer that counts the lines and bytes going through it.
pub struct Counting<W> {
    pub inner: W,
    pub progress: Arc<Progress>,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(b)?;
        let lines = memchr::memchr_iter(b'\n', &b[..n]).count() as u64;
        self.progress.add(lines, n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Rewrites one status line on stderr twice a second until aborted.
pub fn spawn_ticker(p: Arc<Progress>, label: &'static str) -> tokio::task::JoinHandle<()> {
    let started = Instant::now();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let (l, b) = (
                p.lines.load(Ordering::Relaxed),
                p.bytes.load(Ordering::Relaxed),
            );
            let secs = started.elapsed().as_secs_f64().max(0.001);
            let _ = write!(
                std::io::stderr(),
                "\r{label}: {l} lines, {:.1} MB, {:.1} MB/s   ",
                b as f64 / 1e6,
                b as f64 / 1e6 / secs
            );
        }
    })
}

/// Under Hadoop: a `reporter:status:` line every 30 s, so that a task
/// waiting on a quiet stream is not killed for silence (600 s by default).
pub fn spawn_heartbeat(p: Arc<Progress>, label: &'static str) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(30)).await;
            let _ = writeln!(
                std::io::stderr(),
                "reporter:status:{label}: {} lines, {} bytes",
                p.lines.load(Ordering::Relaxed),
                p.bytes.load(Ordering::Relaxed)
            );
        }
    })
}

/// Ends a ticker and its line.
pub fn stop_ticker(t: Option<tokio::task::JoinHandle<()>>) {
    if let Some(t) = t {
        t.abort();
        let _ = writeln!(std::io::stderr());
    }
}

/// Hadoop Streaming counter lines, e.g. `reporter:counter:KinesisWriter,lines,42`.
pub fn counter_lines(group: &str, counters: &[(&str, u64)]) -> String {
    counters
        .iter()
        .map(|(name, n)| format!("reporter:counter:{group},{name},{n}\n"))
        .collect()
}

/// Is this process a Hadoop task? (Hadoop sets these for every task.)
pub fn under_hadoop(env: &dyn Fn(&str) -> Option<String>) -> bool {
    ["mapreduce_task_attempt_id", "mapred_task_id"]
        .iter()
        .any(|v| env(v).is_some())
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters() {
        assert_eq!(
            super::counter_lines("KinesisWriter", &[("lines", 3), ("retries", 0)]),
            "reporter:counter:KinesisWriter,lines,3\nreporter:counter:KinesisWriter,retries,0\n"
        );
        assert!(super::under_hadoop(
            &|v| (v == "mapred_task_id").then(|| "x".into())
        ));
        assert!(!super::under_hadoop(&|_| None));
    }
}
