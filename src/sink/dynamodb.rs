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
use crate::ports::SinkError;
use crate::sink::columns::{parse_row, Column, ColumnType, Row};
use crate::sink::lines::BadLines;
use crate::stop::Stop;
use anyhow::{anyhow, bail, Context, Result};
use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::sync::{Arc, Mutex};
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
    /// `add` mode: apply nothing until the input has ended whole. An add is
    /// recorded under its tag, so a rerun skips it: one applied from an
    /// input cut short (its reader killed) would stay short for good.
    pub hold_until_whole: bool,
}

impl LoadOptions {
    /// The table's key attributes: the first one or two columns.
    fn key_names(&self) -> Arc<[String]> {
        self.columns[..self.key_len]
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }
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
    /// Of those, the ones found so only after a try of this run that got no
    /// answer: that try may have applied them.
    pub applied_after_retry: u64,
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

/// Backoff with jitter: between half and all of 50 ms × 2^attempt, at most 5 s.
fn backoff(attempt: u32) -> Duration {
    let cap = (50u64 << attempt.min(7)).min(5_000);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    Duration::from_millis(cap / 2 + nanos % (cap / 2 + 1))
}

/// How long a write is tried again while it keeps failing transiently (no
/// answer, throttled, a 5xx, each after the SDK's own retries). The SDK's
/// retry quota is per process and runs dry in a long storm of faults, after
/// which it tries each call once; a batch loader that then gave up would
/// only make its scheduler rerun the whole load. A longer outage ends it.
const TRANSIENT_FOR: Duration = Duration::from_secs(120);

/// Transient failures in a row of one write.
#[derive(Default)]
struct Storm {
    since: Option<tokio::time::Instant>,
    tries: u32,
}

impl Storm {
    /// After a transient failure of `what`: waits before the next try, or
    /// gives the error back once the failures have lasted [`TRANSIENT_FOR`].
    async fn ride(&mut self, e: anyhow::Error, what: impl Fn() -> String) -> Result<()> {
        let since = *self.since.get_or_insert_with(tokio::time::Instant::now);
        self.tries += 1;
        if since.elapsed() >= TRANSIENT_FOR {
            return Err(e.context(format!(
                "{} failed {} times in a row over {} s",
                what(),
                self.tries,
                since.elapsed().as_secs()
            )));
        }
        log::debug!("{}: {e:#}; trying again", what());
        tokio::time::sleep(backoff(self.tries - 1)).await;
        Ok(())
    }
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
            "stopped by {why}; {}",
            match (opts.mode, opts.hold_until_whole) {
                (Mode::Put, _) => "the items written so far stay (put is idempotent: run the \
                                   same whole input again)",
                (Mode::Add, true) => "nothing is added before the input has ended whole, and \
                                      what was added after that stays, each recorded under its \
                                      iteration: a rerun adds the rest once",
                (Mode::Add, false) => "the items added so far stay, recorded under their \
                                       iteration: rerun only with the same whole input",
            }
        )).into()),
    }
}

/// Bad lines are found by the input thread (lines that do not parse) and by
/// the writing tasks (items the service refused).
type SharedBadLines = Arc<Mutex<BadLines>>;

async fn load_all(
    table: Arc<dyn ItemTable>,
    input: impl BufRead + Send + 'static,
    opts: &LoadOptions,
    bad: BadLines,
) -> Result<(LoadSummary, BadLines)> {
    let bad = Arc::new(Mutex::new(bad));
    let (tx, rx) = mpsc::channel::<Row>(4 * BATCH_ITEMS * opts.batches_in_flight.max(1));
    let (columns, key_len, escaped) = (opts.columns.clone(), opts.key_len, opts.escaped);
    let progress = opts.progress.clone();
    let bad_lines = bad.clone();
    let whole = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let read_whole = whole.clone();
    let reading = tokio::task::spawn_blocking(move || {
        let r = read_rows(
            input, &columns, key_len, escaped, &tx, &bad_lines, &progress,
        );
        read_whole.store(r.is_ok(), std::sync::atomic::Ordering::SeqCst);
        r
    });
    let rows = Rows { rx, whole };
    let mut summary = LoadSummary::default();
    let written = match opts.mode {
        Mode::Put => put_rows(&table, rows, opts, &bad, &mut summary).await,
        Mode::Add => add_rows(&table, rows, opts, &bad, &mut summary).await,
    };
    let read = reading.await.context("the input thread panicked")?;
    let lines = match (written, read) {
        (Ok(()), Ok(lines)) => lines,
        (Err(e), _) | (Ok(()), Err(e)) => {
            return Err(anyhow!("{e:#}; {}", after_failure(opts, &summary)))
        }
    };
    summary.lines = lines;
    let bad = Arc::into_inner(bad).expect("every writing task has ended");
    Ok((summary, bad.into_inner().expect("not poisoned")))
}

/// The rows as they are read, and how the input ended.
struct Rows {
    rx: mpsc::Receiver<Row>,
    /// Set before the sender goes: the input was read to its end.
    whole: Arc<std::sync::atomic::AtomicBool>,
}

impl Rows {
    /// The next row; `None` at the end of the input. An input that failed
    /// (a read error, or a reader upstream that did not deliver everything)
    /// has no end: the rows not yet sent are dropped, never applied as if
    /// they were the last batch of a whole input, and its error is reported.
    async fn next(&mut self) -> Option<Row> {
        self.rx.recv().await
    }

    fn ended_whole(&self) -> bool {
        self.whole.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// What a load that failed leaves, and what a rerun does about it.
fn after_failure(opts: &LoadOptions, s: &LoadSummary) -> String {
    let items = crate::words::count(s.items_written, "item");
    let nothing_yet = s.items_written == 0 && s.already_applied == 0;
    match (opts.mode, opts.hold_until_whole && nothing_yet) {
        (Mode::Put, _) => format!(
            "{items} had been written; put is idempotent, so running the same whole input again \
             makes the table what it would have been"
        ),
        (Mode::Add, true) => "nothing was added (an add waits for its input to end whole); a \
                              rerun of the iteration adds it once"
            .to_string(),
        (Mode::Add, false) => format!(
            "{items} had been added, each recorded under its iteration, so a rerun skips them: \
             rerun only with the same whole input (a sum from an input cut short stays)"
        ),
    }
}

fn read_rows(
    mut input: impl BufRead,
    columns: &[Column],
    key_len: usize,
    escaped: bool,
    tx: &mpsc::Sender<Row>,
    bad: &SharedBadLines,
    progress: &crate::progress::Progress,
) -> Result<u64> {
    let mut buf = Vec::new();
    let mut n = 0u64;
    // A refused item's line goes to the dead-letter file, if there is one.
    let keep_raw = bad.lock().unwrap().keeps_lines();
    loop {
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
            Ok(mut row) => {
                if keep_raw {
                    row.raw = buf.clone();
                }
                if tx.blocking_send(row).is_err() {
                    return Ok(n); // the writer stopped; its error is reported
                }
            }
            Err(reason) => bad.lock().unwrap().bad(n, &buf, reason)?,
        }
    }
}

/// A batch's keys, the items it wrote and its retries.
type BatchResult = Result<(Vec<String>, u64, u64)>;

async fn put_rows(
    table: &Arc<dyn ItemTable>,
    mut rows: Rows,
    opts: &LoadOptions,
    bad: &SharedBadLines,
    summary: &mut LoadSummary,
) -> Result<()> {
    let mut pace = opts.rate.map(|rate| Pace {
        rate,
        next: tokio::time::Instant::now(),
    });
    let key_names = opts.key_names();
    let mut in_flight_keys: HashSet<String> = HashSet::new();
    let mut tasks: tokio::task::JoinSet<BatchResult> = tokio::task::JoinSet::new();
    // The batch being filled, in first-seen order, last value per key.
    let mut order: Vec<String> = Vec::new();
    let mut items: HashMap<String, Row> = HashMap::new();
    let mut done = false;
    while !done {
        match rows.next().await {
            Some(row) => {
                let key = row.key.clone();
                if items.insert(row.key.clone(), row).is_some() {
                    summary.collapsed += 1;
                } else {
                    order.push(key);
                }
                if order.len() < BATCH_ITEMS {
                    continue;
                }
            }
            None => {
                done = true;
                if !rows.ended_whole() {
                    order.clear();
                }
            }
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
        let batch: Vec<Row> = keys
            .iter()
            .map(|k| items.remove(k).expect("queued"))
            .collect();
        if let Some(p) = pace.as_mut() {
            p.take(batch.len()).await;
        }
        in_flight_keys.extend(keys.iter().cloned());
        let (table, max, names, bad) = (
            table.clone(),
            opts.max_attempts,
            key_names.clone(),
            bad.clone(),
        );
        tasks.spawn(async move {
            let (written, retries) = put_batch(&*table, batch, max, &names, &bad).await?;
            Ok((keys, written, retries))
        });
    }
    while let Some(finished) = tasks.join_next().await {
        settle(finished??, &mut in_flight_keys, summary);
    }
    Ok(())
}

/// Writes one batch, sending unprocessed items again. If the service refuses
/// the batch, its items go one by one, so that only a refused item is a bad
/// line. Returns the items written and the retries.
async fn put_batch(
    table: &dyn ItemTable,
    mut pending: Vec<Row>,
    max_attempts: u32,
    key_names: &[String],
    bad: &SharedBadLines,
) -> Result<(u64, u64)> {
    let (mut written, mut retries) = (0u64, 0u64);
    let mut storm = Storm::default();
    let mut attempt = 0;
    loop {
        let sent = pending.len();
        match table
            .batch_put(pending.iter().map(|r| r.item.clone()).collect())
            .await
        {
            Ok(left) => {
                storm = Storm::default();
                let same_key = |a: &Item, b: &Item| key_names.iter().all(|k| a.get(k) == b.get(k));
                pending.retain(|r| left.iter().any(|l| same_key(l, &r.item)));
                written += (sent - pending.len()) as u64;
            }
            Err(SinkError::Refused(why)) if sent == 1 => {
                let row = &pending[0];
                bad.lock().unwrap().bad(row.line, &row.raw, why)?;
                return Ok((written, retries));
            }
            Err(SinkError::Refused(_)) => {
                for row in pending {
                    let (w, r) =
                        Box::pin(put_batch(table, vec![row], max_attempts, key_names, bad)).await?;
                    written += w;
                    retries += r;
                }
                return Ok((written, retries));
            }
            // Putting an item again is harmless: the batch goes again whole.
            Err(SinkError::Transient(e)) => {
                let what = || format!("a batch of {}", crate::words::count(sent, "item"));
                storm.ride(e, what).await?;
                retries += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        if pending.is_empty() {
            break;
        }
        if attempt + 1 >= max_attempts {
            bail!(
                "{} still unprocessed after {max_attempts} attempts (throttled?)",
                crate::words::count(pending.len(), "item")
            );
        }
        retries += 1;
        tokio::time::sleep(backoff(attempt)).await;
        attempt += 1;
    }
    Ok((written, retries))
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
    mut rows: Rows,
    opts: &LoadOptions,
    bad: &SharedBadLines,
    summary: &mut LoadSummary,
) -> Result<()> {
    let tag = opts
        .tag
        .clone()
        .ok_or_else(|| anyhow!("add mode needs the iteration (--iteration and --logical-name)"))?;
    let key_names = opts.key_names();
    let numeric: HashSet<String> = opts.columns[opts.key_len..]
        .iter()
        .filter(|c| c.ty == ColumnType::N)
        .map(|c| c.name.clone())
        .collect();
    let concurrency = Arc::new(Semaphore::new(opts.batches_in_flight.max(1) * BATCH_ITEMS));
    // Some(applied), or None for an item the service refused (a bad line),
    // and the retries it took.
    let mut tasks: tokio::task::JoinSet<Result<(Option<bool>, u64)>> = tokio::task::JoinSet::new();
    let mut pace = opts.rate.map(|rate| Pace {
        rate,
        next: tokio::time::Instant::now(),
    });
    // Keys already sent: a key may come back only on the next line (sorted
    // input), where it is summed; later, it would be added under the same tag.
    let mut seen: HashSet<u64> = HashSet::new();
    let mut current: Option<Row> = None;
    // With `hold_until_whole`: every summed row, until the input has ended whole.
    let mut held: Vec<Row> = Vec::new();
    let flush = |row: Row, tasks: &mut tokio::task::JoinSet<Result<(Option<bool>, u64)>>| {
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
        let (table, tag, sem, bad) = (table.clone(), tag.clone(), concurrency.clone(), bad.clone());
        let (line, raw) = (row.line, row.raw);
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await.expect("never closed");
            // The tag makes a repeated add a no-op, so a transient failure
            // (applied or not) is simply tried again.
            let mut storm = Storm::default();
            loop {
                match table
                    .add_once(key.clone(), adds.clone(), sets.clone(), &tag)
                    .await
                {
                    Ok(applied) => return Ok((Some(applied), storm.tries as u64)),
                    Err(SinkError::Refused(why)) => {
                        bad.lock().unwrap().bad(line, &raw, why)?;
                        return Ok((None, storm.tries as u64));
                    }
                    Err(SinkError::Transient(e)) => {
                        storm.ride(e, || format!("line {line}: the add")).await?
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        });
    };
    loop {
        let next = rows.next().await;
        if next.is_none() && !rows.ended_whole() {
            // Cut short: what is held was never applied, and a rerun applies it whole.
            held.clear();
            break;
        }
        match (&mut current, next) {
            (Some(cur), Some(row)) if cur.key == row.key => {
                summary.collapsed += 1;
                if !row.raw.is_empty() {
                    cur.raw.push(b'\n');
                    cur.raw.extend_from_slice(&row.raw);
                }
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
                    match opts.hold_until_whole {
                        true => held.push(done),
                        false => {
                            if let Some(p) = pace.as_mut() {
                                p.take(1).await;
                            }
                            flush(done, &mut tasks);
                        }
                    }
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
    // The input ended whole: what was held goes now.
    for row in held {
        if let Some(p) = pace.as_mut() {
            p.take(1).await;
        }
        flush(row, &mut tasks);
        while let Some(r) = tasks.try_join_next() {
            count_add(r??, summary);
        }
    }
    while let Some(r) = tasks.join_next().await {
        count_add(r??, summary);
    }
    Ok(())
}

fn count_add((applied, retries): (Option<bool>, u64), s: &mut LoadSummary) {
    s.retries += retries;
    match applied {
        Some(true) => s.items_written += 1,
        Some(false) => {
            s.already_applied += 1;
            if retries > 0 {
                s.applied_after_retry += 1;
            }
        }
        None => {}
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
            hold_until_whole: false,
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

    fn options(columns: &str, mode: Mode) -> LoadOptions {
        LoadOptions {
            columns: parse_columns(columns).unwrap(),
            key_len: 1,
            mode,
            escaped: true,
            batches_in_flight: 2,
            rate: None,
            tag: Some("A#1".into()),
            max_attempts: 10,
            hold_until_whole: false,
            progress: Default::default(),
        }
    }

    async fn load_with(
        table: &Arc<crate::fakes::MemoryItems>,
        opts: &LoadOptions,
        policy: crate::sink::lines::BadLinePolicy,
        input: String,
    ) -> Result<(LoadSummary, BadLines)> {
        let bad = BadLines::new(policy).unwrap();
        let table: Arc<dyn ItemTable> = table.clone();
        load(
            table,
            std::io::Cursor::new(input),
            opts,
            bad,
            crate::stop::never(),
        )
        .await
    }

    #[tokio::test]
    async fn an_item_the_service_refuses_is_a_bad_line_and_the_rest_of_its_batch_is_written() {
        use crate::sink::lines::BadLinePolicy;
        // The table refuses items over 1,000 bytes, which the writer's own
        // 400 KB check lets through, as the service may refuse what the
        // writer's estimate let through.
        let mut table = crate::fakes::MemoryItems::new(&[("k", "S")], None);
        table.max_item_bytes = 1_000;
        let table = Arc::new(table);
        let big = "x".repeat(2_000);
        let input: String = (1..=40)
            .map(|i| {
                let v = if i == 7 { big.as_str() } else { "small" };
                format!("k{i}\t{v}\n")
            })
            .collect();
        let opts = options("k:S,v:S", Mode::Put);

        let Err(e) = load_with(&table, &opts, BadLinePolicy::Fail, input.clone()).await else {
            panic!("the refused item failed the load under --on-bad-line fail");
        };
        let e = format!("{e:#}");
        assert!(
            e.contains("line 7: DynamoDB refused the item: Item size has exceeded"),
            "{e}"
        );

        let dead = std::env::temp_dir().join(format!("dead-letter-{}", std::process::id()));
        let policy = BadLinePolicy::DeadLetter(dead.clone());
        let (s, mut bad) = load_with(&table, &opts, policy, input).await.unwrap();
        bad.finish().unwrap();
        assert_eq!((s.lines, s.items_written, bad.skipped), (40, 39, 1));
        assert_eq!(table.items().len(), 39);
        assert!(!table.items().contains_key("k7"));
        let written = std::fs::read_to_string(&dead).unwrap();
        std::fs::remove_file(&dead).unwrap();
        assert_eq!(written, format!("k7\t{big}\n"));
    }

    #[tokio::test]
    async fn an_add_the_service_refuses_as_too_big_is_skipped_and_the_others_add() {
        use crate::sink::lines::BadLinePolicy;
        let mut table = crate::fakes::MemoryItems::new(&[("k", "S")], None);
        table.max_item_bytes = 1_000;
        let table = Arc::new(table);
        let big = "x".repeat(2_000);
        let input = format!("a\t1\tn\nb\t2\tm\nb\t3\t{big}\nc\t4\tn\n");
        let opts = options("k:S,c:N,note:S", Mode::Add);
        let (s, bad) = load_with(&table, &opts, BadLinePolicy::Skip, input)
            .await
            .unwrap();
        assert_eq!((s.items_written, bad.skipped), (2, 1));
        let items = table.items();
        assert_eq!(items["a"]["c"], Value::N("1".into()));
        assert_eq!(items["c"]["c"], Value::N("4".into()));
        assert!(!items.contains_key("b"), "the refused update left nothing");
    }

    async fn load_faulty(
        table: &Arc<crate::fakes::Faulty<crate::fakes::MemoryItems>>,
        opts: &LoadOptions,
        input: String,
    ) -> Result<LoadSummary> {
        let bad = BadLines::new(crate::sink::lines::BadLinePolicy::Fail).unwrap();
        let t: Arc<dyn ItemTable> = table.clone();
        let (s, _) = load(
            t,
            std::io::Cursor::new(input),
            opts,
            bad,
            crate::stop::never(),
        )
        .await?;
        Ok(s)
    }

    /// A storm of lost answers and timeouts (beyond what the SDK's own
    /// retries ride out) does not end a load: each add is tried again, and
    /// each key is added exactly once.
    #[tokio::test(start_paused = true)]
    async fn adds_whose_answers_are_lost_are_tried_again_and_added_once() {
        use crate::fakes::{Fault, Faulty, MemoryItems};
        let table = Arc::new(
            Faulty::new(MemoryItems::new(&[("k", "S")], None))
                .on("add_once", 1..=9, Fault::Lost)
                .on("add_once", 10..=20, Fault::Dropped),
        );
        let input: String = (0..30).map(|i| format!("k{i:02}\t{i}\n")).collect();
        let s = load_faulty(&table, &options("k:S,c:N", Mode::Add), input.clone())
            .await
            .unwrap();
        assert_eq!(s.retries, 20);
        assert_eq!(s.items_written + s.already_applied, 30);
        assert_eq!(s.applied_after_retry, s.already_applied);
        assert!(
            s.already_applied >= 1,
            "a lost answer's retry finds its tag"
        );
        let items = table.inner().items();
        assert_eq!(items.len(), 30);
        for i in 0..30 {
            assert_eq!(items[&format!("k{i:02}")]["c"], Value::N(i.to_string()));
        }
        // Rerun: every add is already applied, nothing changes.
        let s = load_faulty(&table, &options("k:S,c:N", Mode::Add), input)
            .await
            .unwrap();
        assert_eq!((s.items_written, s.already_applied), (0, 30));
        assert_eq!(s.applied_after_retry, 0);
        assert_eq!(table.inner().items(), items);
    }

    /// A batch that times out goes again whole; one the service refuses
    /// outright ends the load at once, naming the operation.
    #[tokio::test(start_paused = true)]
    async fn a_batch_that_times_out_is_sent_again_and_a_refused_one_is_not() {
        use crate::fakes::{Fault, Faulty, MemoryItems};
        let input: String = (0..60).map(|i| format!("k{i:02}\t{i}\n")).collect();
        let opts = options("k:S,c:N", Mode::Put);
        let table = Arc::new(Faulty::new(MemoryItems::new(&[("k", "S")], None)).on(
            "batch_put",
            1..=3,
            Fault::Dropped,
        ));
        let s = load_faulty(&table, &opts, input.clone()).await.unwrap();
        assert_eq!((s.items_written, s.retries), (60, 3));
        assert_eq!(table.inner().items().len(), 60);
        let table = Arc::new(Faulty::new(MemoryItems::new(&[("k", "S")], None)).on(
            "batch_put",
            1..,
            Fault::Fail,
        ));
        let e = load_faulty(&table, &opts, input).await.unwrap_err();
        assert!(format!("{e:#}").contains("batch_put was refused"), "{e:#}");
        let calls = table.calls("batch_put");
        assert!(
            calls <= 2,
            "{calls} calls: more than one per batch in flight"
        );
    }

    /// A table that never answers ends the load once an item's tries have
    /// failed for two minutes, saying so.
    #[tokio::test(start_paused = true)]
    async fn an_add_that_never_gets_an_answer_fails_after_two_minutes_of_tries() {
        use crate::fakes::{Fault, Faulty, MemoryItems};
        let table = Arc::new(Faulty::new(MemoryItems::new(&[("k", "S")], None)).on(
            "add_once",
            1..,
            Fault::Dropped,
        ));
        let e = load_faulty(&table, &options("k:S,c:N", Mode::Add), "a\t1\n".into())
            .await
            .unwrap_err();
        let calls = table.calls("add_once");
        assert!(calls >= 20, "{calls} tries in {TRANSIENT_FOR:?}");
        let e = format!("{e:#}");
        let said = format!("line 1: the add failed {calls} times in a row over 12");
        assert!(e.contains(&said), "{e}");
        assert!(e.contains("add_once timed out"), "{e}");
    }
}
