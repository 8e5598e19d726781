//! Progress for a person watching (stderr is a terminal) and counters for
//! Hadoop (`reporter:counter:` lines on stderr).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// The progress display being drawn, if any: log lines go around it
/// ([`Stderr`]), so that none is appended to it and clearing it leaves
/// nothing behind.
static LIVE: Mutex<Option<indicatif::ProgressBar>> = Mutex::new(None);

/// A display redrawn twice a second on stderr until [`stop_display`].
pub type Display = (tokio::task::JoinHandle<()>, indicatif::ProgressBar);

/// stderr for the logger: a line written while a display is drawn is
/// written above it (the display is cleared, the line written, the display
/// drawn again).
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let live = LIVE.lock().unwrap().clone();
        match live {
            Some(bar) => bar
                .suspend(|| std::io::stderr().write_all(b))
                .map(|()| b.len()),
            None => std::io::stderr().write(b),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The terminal's settings before a display turned its `^C` echo off.
#[cfg(unix)]
static ECHO: Mutex<Option<libc::termios>> = Mutex::new(None);

/// While a display is drawn, Ctrl-C is not echoed as `^C`: the echo lands
/// below the display's last line (which fills the terminal's width), and
/// clearing the display would then leave its first line behind.
#[cfg(unix)]
fn quiet_ctrl_c(quiet: bool) {
    let mut saved = ECHO.lock().unwrap();
    // SAFETY: tcgetattr/tcsetattr on stderr with a termios owned here.
    unsafe {
        match (quiet, saved.take()) {
            (true, None) => {
                let mut t: libc::termios = std::mem::zeroed();
                if libc::tcgetattr(2, &mut t) == 0 {
                    let before = t;
                    t.c_lflag &= !libc::ECHOCTL;
                    if libc::tcsetattr(2, libc::TCSANOW, &t) == 0 {
                        *saved = Some(before);
                    }
                }
            }
            (false, Some(before)) => {
                libc::tcsetattr(2, libc::TCSANOW, &before);
            }
            (_, other) => *saved = other,
        }
    }
}

#[cfg(not(unix))]
fn quiet_ctrl_c(_quiet: bool) {}

/// Draws `message()` on stderr twice a second until [`stop_display`].
fn spawn_redraw(message: impl Fn() -> String + Send + 'static) -> Display {
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(indicatif::ProgressStyle::with_template("{msg}").expect("a valid template"));
    *LIVE.lock().unwrap() = Some(bar.clone());
    if std::io::stderr().is_terminal() {
        quiet_ctrl_c(true);
    }
    let b = bar.clone();
    let task = tokio::spawn(async move {
        loop {
            b.set_message(message());
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    (task, bar)
}

/// The writer's one progress line: lines and bytes so far, and the rate.
pub fn spawn_ticker(p: Arc<Progress>, label: &'static str) -> Display {
    let started = Instant::now();
    spawn_redraw(move || {
        let (l, b) = (
            p.lines.load(Ordering::Relaxed),
            p.bytes.load(Ordering::Relaxed),
        );
        let secs = started.elapsed().as_secs_f64().max(0.001);
        format!(
            "{label}: {}, {:.1} MB, {:.1} MB/s",
            crate::words::count(l, "line"),
            b as f64 / 1e6,
            b as f64 / 1e6 / secs
        )
    })
}

/// Per-shard reading progress for the terminal display: records and bytes
/// read so far, how far behind the stream's tip (MillisBehindLatest), done.
#[derive(Debug, Default)]
pub struct Shards {
    inner: Mutex<BTreeMap<String, ShardStat>>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ShardStat {
    pub records: u64,
    pub bytes: u64,
    pub behind_ms: Option<i64>,
    pub done: bool,
}

impl Shards {
    /// A shard read a page.
    pub fn page(&self, shard: &str, records: u64, bytes: u64, behind_ms: Option<i64>) {
        let mut m = self.inner.lock().unwrap();
        let s = m.entry(shard.to_string()).or_default();
        s.records += records;
        s.bytes += bytes;
        if behind_ms.is_some() {
            s.behind_ms = behind_ms;
        }
    }
    /// A shard reached its end rule (or its fixed range's end).
    pub fn done(&self, shard: &str) {
        self.inner
            .lock()
            .unwrap()
            .entry(shard.to_string())
            .or_default()
            .done = true;
    }
    /// The display: a total line, then the shards still reading, the most
    /// behind first (at most `rows`). The total counts children that joined
    /// the run after it started, beyond the `total_shards` it began with.
    pub fn render(&self, total_shards: usize, rows: usize) -> String {
        let m = self.inner.lock().unwrap();
        let total_shards = total_shards.max(m.len());
        let done = m.values().filter(|s| s.done).count();
        let (records, bytes) = m
            .values()
            .fold((0, 0), |(r, b), s| (r + s.records, b + s.bytes));
        let mut out = format!(
            "shards {done}/{total_shards} done, {records} records, {:.1} MB read",
            bytes as f64 / 1e6
        );
        let mut reading: Vec<(&String, &ShardStat)> = m.iter().filter(|(_, s)| !s.done).collect();
        reading.sort_by_key(|(id, s)| (std::cmp::Reverse(s.behind_ms.unwrap_or(i64::MAX)), *id));
        for (id, s) in reading.iter().take(rows) {
            out.push_str(&format!(
                "\n  {id}: {} records, {:.1} MB, {}",
                s.records,
                s.bytes as f64 / 1e6,
                match s.behind_ms {
                    Some(0) => "caught up".to_string(),
                    Some(ms) if ms < 1000 => format!("{ms} ms behind"),
                    Some(ms) => format!(
                        "{} behind",
                        humantime::format_duration(Duration::from_secs((ms / 1000) as u64))
                    ),
                    None => "starting".to_string(),
                }
            ));
        }
        if reading.len() > rows {
            out.push_str(&format!(
                "\n  … and {} reading",
                crate::words::count(reading.len() - rows, "more shard")
            ));
        }
        out
    }
}

/// The reader's per-shard display (see [`Shards::render`]) and its output.
pub fn spawn_display(p: Arc<Progress>, shards: Arc<Shards>, total: usize) -> Display {
    let started = Instant::now();
    spawn_redraw(move || {
        let bytes = p.bytes.load(Ordering::Relaxed);
        let secs = started.elapsed().as_secs_f64().max(0.001);
        format!(
            "{}\n  output: {}, {:.1} MB/s",
            shards.render(total, 8),
            crate::words::count(p.lines.load(Ordering::Relaxed), "line"),
            bytes as f64 / 1e6 / secs
        )
    })
}

/// Ends a display and clears its lines.
pub fn stop_display(d: Option<Display>) {
    if let Some((task, bar)) = d {
        task.abort();
        *LIVE.lock().unwrap() = None;
        bar.finish_and_clear();
        quiet_ctrl_c(false);
    }
}

/// Under Hadoop: a `reporter:status:` line every `every` (30 s unless set),
/// so that a task waiting on a quiet stream is not killed for silence
/// (mapreduce.task.timeout, 600 s by default). It is the task's status in
/// Hadoop's task reports and web UI, so it says what the reader does.
pub fn spawn_heartbeat(
    p: Arc<Progress>,
    label: &'static str,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let waiting = WAITING.lock().unwrap().clone();
            let _ = writeln!(std::io::stderr(), "{}", status_line(label, &p, waiting));
        }
    })
}

fn status_line(label: &str, p: &Progress, waiting: Option<String>) -> String {
    let (lines, bytes) = (
        p.lines.load(Ordering::Relaxed),
        p.bytes.load(Ordering::Relaxed),
    );
    match waiting {
        Some(what) => format!("reporter:status:{label}: waiting: {what}"),
        None => format!("reporter:status:{label}: {lines} lines, {bytes} bytes"),
    }
}

/// What the run is waiting for, if it waits (another run's lease), for the
/// heartbeat. One per process: a Hadoop task runs one reader.
static WAITING: Mutex<Option<String>> = Mutex::new(None);

/// While it lives, what it `show`s is the heartbeat's text; dropped, the
/// heartbeat counts lines again.
pub struct Waiting(());

impl Waiting {
    pub fn begin() -> Waiting {
        Waiting(())
    }

    pub fn show(&self, what: String) {
        *WAITING.lock().unwrap() = Some(what);
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        *WAITING.lock().unwrap() = None;
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
    task_attempt(env).is_some()
}

/// The Hadoop task attempt this process runs in, e.g.
/// `attempt_1700000000000_0001_m_000000_0` (`mapred_task_id` is the old name).
pub fn task_attempt(env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    ["mapreduce_task_attempt_id", "mapred_task_id"]
        .iter()
        .find_map(|v| env(v).filter(|a| !a.is_empty()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shard_display_shows_totals_and_the_most_behind_first() {
        let s = super::Shards::default();
        s.page("shardId-1", 10, 2_000_000, Some(0));
        s.page("shardId-2", 5, 1_000_000, Some(90_000));
        s.page("shardId-2", 5, 1_000_000, Some(65_000));
        s.page("shardId-3", 7, 100, None);
        s.done("shardId-3");
        let text = s.render(4, 1);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "shards 1/4 done, 27 records, 4.0 MB read");
        assert_eq!(lines[1], "  shardId-2: 10 records, 2.0 MB, 1m 5s behind");
        assert_eq!(lines[2], "  … and 1 more shard reading");
        // A run that began with 2 shards, and a child that joined it.
        assert!(
            s.render(2, 1).starts_with("shards 1/3 done"),
            "{}",
            s.render(2, 1)
        );
    }

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
        assert_eq!(
            super::task_attempt(&|v| (v == "mapreduce_task_attempt_id").then(|| "attempt_1".into())),
            Some("attempt_1".into())
        );
    }

    #[test]
    fn the_heartbeat_says_what_a_waiting_run_waits_for() {
        let p = super::Progress::default();
        p.add(2, 10);
        let beat = |w: Option<&str>| super::status_line("kinesis-reader", &p, w.map(Into::into));
        assert_eq!(
            beat(None),
            "reporter:status:kinesis-reader: 2 lines, 10 bytes"
        );
        assert_eq!(
            beat(Some("task x of iteration 3 is held by h:1:2 until T")),
            "reporter:status:kinesis-reader: waiting: task x of iteration 3 is held by h:1:2 until T"
        );
    }
}
