//! Loading TSV lines into a DynamoDB table.
//!
//! `--columns name:TYPE,...` maps fields to attributes; the first one (or two)
//! are the table's key. In `put` mode items are written with BatchWriteItem,
//! 25 at a time, several batches in flight; two lines with the same key in
//! one batch window collapse to the last one (last wins), and a key never
//! goes out while an earlier batch holding it is still in flight, so the
//! table ends in input order. In `add` mode numeric columns are added to the
//! stored values with one conditional UpdateItem per key that also records
//! the iteration in the item, so a rerun of an iteration adds nothing twice.

use crate::error::ExitError;
use crate::ports::items::{Item, ItemTable, Value};
use crate::sink::columns::{parse_row, Column, ColumnType, Row};
use crate::sink::lines::BadLines;
use crate::stop::Stop;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};

/// BatchWriteItem takes at most 25 items.
pub const BATCH_ITEMS: usize = 25;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Overwrite items: a rerun gives the same table.
    Put,
    /// Add numeric columns to the stored values, once per iteration.
    Add,
}

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub columns: Vec<Column>,
    pub key_len: usize,
    pub mode: Mode,
    pub escaped: bool,
    pub batches_in_flight: usize,
    /// Items per second at most, across all batches.
    pub rate: Option<f64>,
    /// `add` mode: what is recorded in each item (`<logical name>#<iteration>`).
    pub tag: Option<String>,
    pub max_attempts: u32,
    pub progress: Arc<crate::progress::Progress>,
}

#[derive(Debug, Default, Clone)]
pub struct LoadSummary {
    pub lines: u64,
    pub items_written: u64,
    /// Lines folded into a later line with the same key (put) or summed (add).
    pub collapsed: u64,
    pub retries: u64,
    /// `add` items that already had this iteration.
    pub already_applied: u64,
}

/// Paces item writes to a rate (a token bucket of one second's worth).
struct Pace {
    rate: f64,
    next: tokio::time::Instant,
}

impl Pace {
    async fn take(&mut self, items: usize) {
        let now = tokio::time::Instant::now();
        let burst = Duration::from_secs(1);
        if self.next + burst < now {
            self.next = now - burst;
        }
        self.next += Duration::from_secs_f64(items as f64 / self.rate);
        if self.next > now {
            tokio::time::sleep_until(self.next).await;
        }
    }
}

/// Backoff with full jitter: up to 50 ms × 2^attempt, at most 5 s.
fn backoff(attempt: u32) -> Duration {
    let cap = (50u64 << attempt.min(7)).min(5_000);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    Duration::from_millis(cap / 2 + nanos % (cap / 2 + 1))
}

/// Reads lines from `input` (on a blocking thread) and loads them, until
/// `stop` resolves: the items written by then stay, and a rerun of the same
/// input is safe.
pub async fn load(
    table: Arc<dyn ItemTable>,
    input: impl BufRead + Send + 'static,
    opts: &LoadOptions,
    bad: BadLines,
    stop: Stop,
) -> Result<(LoadSummary, BadLines)> {
    tokio::select! {
        r = load_all(table, input, opts, bad) => r,
        why = stop => Err(ExitError::Interrupted(format!(
            "stopped by {why}; the items written so far stay (put and add are idempotent: \
             run the same input again)"
        )).into()),
    }
}

async fn load_all(
    table: Arc<dyn ItemTable>,
    input: impl BufRead + Send + 'static,
    opts: &LoadOptions,
    bad: BadLines,
) -> Result<(LoadSummary, BadLines)> {
    let (tx, rx) = mpsc::channel::<Row>(4 * BATCH_ITEMS * opts.batches_in_flight.max(1));
    let (columns, key_len, escaped) = (opts.columns.clone(), opts.key_len, opts.escaped);
    let progress = opts.progress.clone();
    let reading = tokio::task::spawn_blocking(move || {
        read_rows(input, &columns, key_len, escaped, tx, bad, &progress)
    });
    let mut summary = LoadSummary::default();
    let written = match opts.mode {
        Mode::Put => put_rows(&table, rx, opts, &mut summary).await,
        Mode::Add => add_rows(&table, rx, opts, &mut summary).await,
    };
    let (read, bad) = reading.await.context("the input thread panicked")?;
    let lines = match (written, read) {
        (Ok(()), Ok(lines)) => lines,
        (Err(e), _) | (Ok(()), Err(e)) => {
            return Err(anyhow!(
                "{e:#}; {} items had been written — put and add are idempotent, so running the \
                 same input again is safe",
                summary.items_written
            ))
        }
    };
    summary.lines = lines;
    Ok((summary, bad))
}

fn read_rows(
    mut input: impl BufRead,
    columns: &[Column],
    key_len: usize,
    escaped: bool,
    tx: mpsc::Sender<Row>,
    mut bad: BadLines,
    progress: &crate::progress::Progress,
) -> (Result<u64>, BadLines) {
    let mut buf = Vec::new();
    let mut n = 0u64;
    let r = (|| loop {
        buf.clear();
        if input
            .read_until(b'\n', &mut buf)
            .context("reading standard input")?
            == 0
        {
            return Ok(n);
        }
        n += 1;
        progress.add(1, buf.len() as u64);
        let complete = buf.last() == Some(&b'\n');
        if complete {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        let parsed = match std::str::from_utf8(&buf) {
            Err(e) => Err(format!("not UTF-8 ({e})")),
            Ok(_) if !complete => Err("the input ends in the middle of a line (no newline at the end): it looks truncated".to_string()),
            Ok(line) => parse_row(columns, key_len, n, line, escaped),
        };
        match parsed {
            Ok(row) => {
                if tx.blocking_send(row).is_err() {
                    return Ok(n); // the writer stopped; its error is reported
                }
            }
            Err(reason) => bad.bad(n, &buf, reason)?,
        }
    })();
    (r, bad)
}

type BatchResult = Result<(Vec<String>, u64, u64)>;

async fn put_rows(
    table: &Arc<dyn ItemTable>,
    mut rx: mpsc::Receiver<Row>,
    opts: &LoadOptions,
    summary: &mut LoadSummary,
) -> Result<()> {
    let mut pace = opts.rate.map(|rate| Pace {
        rate,
        next: tokio::time::Instant::now(),
    });
    let mut in_flight_keys: HashSet<String> = HashSet::new();
    let mut tasks: tokio::task::JoinSet<BatchResult> = tokio::task::JoinSet::new();
    // The batch being filled, in first-seen order, last value per key.
    let mut order: Vec<String> = Vec::new();
    let mut items: HashMap<String, Item> = HashMap::new();
    let mut done = false;
    while !done {
        match rx.recv().await {
            Some(row) => {
                if items.insert(row.key.clone(), row.item).is_some() {
                    summary.collapsed += 1;
                } else {
                    order.push(row.key);
                }
                if order.len() < BATCH_ITEMS {
                    continue;
                }
            }
            None => done = true,
        }
        if order.is_empty() {
            continue;
        }
        // In order per key: wait while an earlier batch with one of these keys
        // is in flight, and keep at most `batches_in_flight` batches going.
        while tasks.len() >= opts.batches_in_flight.max(1)
            || order.iter().any(|k| in_flight_keys.contains(k))
        {
            let finished = tasks.join_next().await.expect("a batch is in flight")??;
            settle(finished, &mut in_flight_keys, summary);
        }
        let keys = std::mem::take(&mut order);
        let batch: Vec<Item> = keys
            .iter()
            .map(|k| items.remove(k).expect("queued"))
            .collect();
        if let Some(p) = pace.as_mut() {
            p.take(batch.len()).await;
        }
        in_flight_keys.extend(keys.iter().cloned());
        let (table, max) = (table.clone(), opts.max_attempts);
        tasks.spawn(async move {
            let n = batch.len() as u64;
            let mut pending = batch;
            let mut retries = 0u64;
            for attempt in 0.. {
                pending = table.batch_put(pending).await?;
                if pending.is_empty() {
                    break;
                }
                if attempt + 1 >= max {
                    bail!(
                        "{} items were still unprocessed after {max} attempts (throttled?)",
                        pending.len()
                    );
                }
                retries += 1;
                tokio::time::sleep(backoff(attempt)).await;
            }
            Ok((keys, n, retries))
        });
    }
    while let Some(finished) = tasks.join_next().await {
        settle(finished??, &mut in_flight_keys, summary);
    }
    Ok(())
}

fn settle(
    (keys, n, retries): (Vec<String>, u64, u64),
    in_flight: &mut HashSet<String>,
    s: &mut LoadSummary,
) {
    for k in keys {
        in_flight.remove(&k);
    }
    s.items_written += n;
    s.retries += retries;
}

/// Adds two DynamoDB numbers: exactly for integers, else as f64.
pub(crate) fn add_numbers(a: &str, b: &str) -> String {
    match (a.parse::<i128>(), b.parse::<i128>()) {
        (Ok(x), Ok(y)) => (x + y).to_string(),
        _ => (a.parse::<f64>().unwrap_or(0.0) + b.parse::<f64>().unwrap_or(0.0)).to_string(),
    }
}

async fn add_rows(
    table: &Arc<dyn ItemTable>,
    mut rx: mpsc::Receiver<Row>,
    opts: &LoadOptions,
    summary: &mut LoadSummary,
) -> Result<()> {
    let tag = opts
        .tag
        .clone()
        .ok_or_else(|| anyhow!("add mode needs the iteration (--iteration and --logical-name)"))?;
    let key_names: Vec<String> = opts.columns[..opts.key_len]
        .iter()
        .map(|c| c.name.clone())
        .collect();
    let numeric: HashSet<String> = opts.columns[opts.key_len..]
        .iter()
        .filter(|c| c.ty == ColumnType::N)
        .map(|c| c.name.clone())
        .collect();
    let concurrency = Arc::new(Semaphore::new(opts.batches_in_flight.max(1) * BATCH_ITEMS));
    let mut tasks: tokio::task::JoinSet<Result<bool>> = tokio::task::JoinSet::new();
    let mut pace = opts.rate.map(|rate| Pace {
        rate,
        next: tokio::time::Instant::now(),
    });
    // Keys already sent: a key may come back only on the next line (sorted
    // input), where it is summed; later, it would be added under the same tag.
    let mut seen: HashSet<u64> = HashSet::new();
    let mut current: Option<Row> = None;
    let flush = |row: Row, tasks: &mut tokio::task::JoinSet<Result<bool>>| {
        let mut key = Item::new();
        let mut adds = Item::new();
        let mut sets = Item::new();
        for (name, v) in row.item {
            if key_names.contains(&name) {
                key.insert(name, v);
            } else if numeric.contains(&name) {
                adds.insert(name, v);
            } else {
                sets.insert(name, v);
            }
        }
        let (table, tag, sem) = (table.clone(), tag.clone(), concurrency.clone());
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("never closed");
            table
                .add_once(key, adds, sets, &tag)
                .await
                .map_err(anyhow::Error::from)
        });
    };
    loop {
        let next = rx.recv().await;
        match (&mut current, next) {
            (Some(cur), Some(row)) if cur.key == row.key => {
                summary.collapsed += 1;
                for (name, v) in row.item {
                    match (cur.item.get_mut(&name), &v) {
                        (Some(Value::N(a)), Value::N(b)) if numeric.contains(&name) => {
                            *a = add_numbers(a, b)
                        }
                        _ => {
                            cur.item.insert(name, v);
                        }
                    }
                }
            }
            (_, next) => {
                if let Some(done) = current.take() {
                    if let Some(p) = pace.as_mut() {
                        p.take(1).await;
                    }
                    flush(done, &mut tasks);
                }
                let Some(row) = next else { break };
                if !seen.insert(hash(&row.key)) {
                    bail!(
                        "line {}: this key appeared on an earlier, non-adjacent line; add mode \
                         needs input sorted by key (a reducer's output is; else pipe through sort)",
                        row.line
                    );
                }
                current = Some(row);
            }
        }
        while let Some(r) = tasks.try_join_next() {
            count_add(r??, summary);
        }
    }
    while let Some(r) = tasks.join_next().await {
        count_add(r??, summary);
    }
    Ok(())
}

fn count_add(applied: bool, s: &mut LoadSummary) {
    if applied {
        s.items_written += 1;
    } else {
        s.already_applied += 1;
    }
}

fn hash(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::columns::parse_columns;

    #[tokio::test(start_paused = true)]
    async fn pace_holds_writes_to_the_rate_after_a_one_second_burst() {
        let start = tokio::time::Instant::now();
        let mut p = Pace {
            rate: 100.0,
            next: start,
        };
        for _ in 0..40 {
            p.take(25).await; // 1,000 items at 100 items/s
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(9) && took <= Duration::from_secs(10),
            "{took:?}"
        );
    }

    #[test]
    fn numbers_add_exactly() {
        assert_eq!(
            add_numbers("170141183460469231731687303715884105", "1"),
            "170141183460469231731687303715884106"
        );
        assert_eq!(add_numbers("1.5", "2"), "3.5");
    }

    #[tokio::test]
    async fn put_is_last_wins_in_input_order_despite_retries_and_concurrency() {
        let columns = parse_columns("k:S,v:N").unwrap();
        let mut input = String::new();
        let mut expected = HashMap::new();
        for i in 0..2_000 {
            let k = format!("key{}", (i * 7) % 60);
            input.push_str(&format!("{k}\t{i}\n"));
            expected.insert(k, i.to_string());
        }
        // A throttled table: every other batch leaves items unprocessed.
        let mut table = crate::fakes::MemoryItems::new(&[("k", "S")], None);
        table.unprocessed = true;
        let table = Arc::new(table);
        let opts = LoadOptions {
            columns,
            key_len: 1,
            mode: Mode::Put,
            escaped: true,
            batches_in_flight: 4,
            rate: None,
            tag: None,
            max_attempts: 10,
            progress: Default::default(),
        };
        let bad = BadLines::new(crate::sink::lines::BadLinePolicy::Fail).unwrap();
        let (s, _) = load(
            table.clone(),
            std::io::Cursor::new(input),
            &opts,
            bad,
            crate::stop::never(),
        )
        .await
        .unwrap();
        assert_eq!(s.lines, 2_000);
        assert!(s.retries > 0);
        let got: HashMap<String, String> = table
            .items()
            .iter()
            .map(|(k, i)| {
                (
                    k.clone(),
                    match &i["v"] {
                        Value::N(n) => n.clone(),
                        _ => panic!(),
                    },
                )
            })
            .collect();
        assert_eq!(got, expected);
    }
}
