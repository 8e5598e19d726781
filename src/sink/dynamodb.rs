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
use crate::ports::items::{Item, ItemTable, TableInfo, Value, APPLIED_ATTRIBUTE};
use crate::sink::lines::{unescape, BadLines};
use crate::stop::Stop;
use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};

impl Value {
    /// DynamoDB's size rules, near enough to enforce the 400 KB item limit.
    fn size(&self) -> usize {
        match self {
            Value::S(s) | Value::N(s) => s.len(),
            Value::B(b) => b.len(),
            Value::Bool(_) | Value::Null => 1,
            Value::Ss(v) | Value::Ns(v) => v.iter().map(String::len).sum(),
            Value::L(v) => 3 + v.iter().map(|x| 1 + x.size()).sum::<usize>(),
            Value::M(m) => 3 + m.iter().map(|(k, x)| 1 + k.len() + x.size()).sum::<usize>(),
        }
    }
}

pub const MAX_ITEM_BYTES: usize = 400 * 1024;
pub const BATCH_ITEMS: usize = 25;
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    S,
    N,
    B,
    Bool,
    Null,
    Ss,
    Ns,
    Json,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
}

/// `--columns error:S,region:S,count:N`.
pub fn parse_columns(s: &str) -> Result<Vec<Column>, String> {
    let mut cols = Vec::new();
    // `k:S, v:N` is meant as `k:S,v:N`: a name never starts or ends with a space.
    for part in s.split(',').map(str::trim) {
        let (name, ty) = part
            .rsplit_once(':')
            .ok_or_else(|| format!("column {part:?}: expected NAME:TYPE"))?;
        let (name, ty) = (name.trim(), ty.trim());
        let ty = match ty {
            "S" => ColumnType::S,
            "N" => ColumnType::N,
            "B" => ColumnType::B,
            "BOOL" => ColumnType::Bool,
            "NULL" => ColumnType::Null,
            "SS" => ColumnType::Ss,
            "NS" => ColumnType::Ns,
            "JSON" => ColumnType::Json,
            _ => {
                return Err(format!(
                "column {part:?}: unknown type {ty:?}; types are S, N, B, BOOL, NULL, SS, NS, JSON"
            ))
            }
        };
        if name.is_empty() || cols.iter().any(|c: &Column| c.name == name) {
            return Err(format!(
                "column {part:?}: names must be unique and not empty"
            ));
        }
        if name == APPLIED_ATTRIBUTE {
            return Err(format!(
                "column name {APPLIED_ATTRIBUTE} is kept for add mode"
            ));
        }
        cols.push(Column {
            name: name.to_string(),
            ty,
        });
    }
    Ok(cols)
}

fn is_number(s: &str) -> bool {
    // DynamoDB numbers: up to 38 significant digits; we accept what parses as a finite f64.
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
        && s.parse::<f64>().is_ok_and(f64::is_finite)
}

fn json_value(v: serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(b),
        J::Number(n) => Value::N(n.to_string()),
        J::String(s) => Value::S(s),
        J::Array(a) => Value::L(a.into_iter().map(json_value).collect()),
        J::Object(o) => Value::M(o.into_iter().map(|(k, v)| (k, json_value(v))).collect()),
    }
}

/// One field as an attribute; `None` leaves the attribute out (an empty set).
fn field_value(c: &Column, raw: &str) -> Result<Option<Value>, String> {
    let list = |s: &str| -> Vec<String> {
        let mut v: Vec<String> = s
            .split(',')
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect();
        v.sort();
        v.dedup();
        v
    };
    Ok(Some(match c.ty {
        ColumnType::S => Value::S(raw.to_string()),
        ColumnType::N if is_number(raw) => Value::N(raw.to_string()),
        ColumnType::N => return Err(format!("{raw:?} is not a number")),
        ColumnType::B => Value::B(
            base64::engine::general_purpose::STANDARD
                .decode(raw)
                .map_err(|e| format!("{raw:?} is not valid base64 ({e})"))?,
        ),
        ColumnType::Bool => match raw {
            "true" | "TRUE" | "True" | "1" => Value::Bool(true),
            "false" | "FALSE" | "False" | "0" => Value::Bool(false),
            _ => return Err(format!("{raw:?} is not true or false")),
        },
        ColumnType::Null => Value::Null,
        ColumnType::Ss => {
            let v = list(raw);
            if v.is_empty() {
                return Ok(None);
            }
            Value::Ss(v)
        }
        ColumnType::Ns => {
            let v = list(raw);
            if let Some(bad) = v.iter().find(|x| !is_number(x)) {
                return Err(format!("{bad:?} in the list is not a number"));
            }
            if v.is_empty() {
                return Ok(None);
            }
            Value::Ns(v)
        }
        ColumnType::Json => {
            json_value(serde_json::from_str(raw).map_err(|e| format!("not valid JSON ({e})"))?)
        }
    }))
}

/// A key attribute as text that is equal exactly when DynamoDB takes the two
/// keys for the same item: numbers compare by value (`7`, `7.0`, `07` and
/// `0.7e1` are one key), binary by its bytes.
fn key_text(v: &Value) -> String {
    match v {
        Value::N(n) => canonical_number(n).unwrap_or_else(|| n.clone()),
        Value::B(b) => base64::engine::general_purpose::STANDARD.encode(b),
        Value::S(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// A number's value as `[-]DIGITSeEXP` with no leading or trailing zeros in
/// DIGITS (zero is `0`), so that equal values give equal text.
fn canonical_number(s: &str) -> Option<String> {
    let (negative, s) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(at) => (&s[..at], s[at + 1..].parse::<i64>().ok()?),
        None => (s, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if !(int.bytes().chain(frac.bytes())).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let all = format!("{int}{frac}");
    let digits = all.trim_start_matches('0');
    let trimmed = digits.trim_end_matches('0');
    if trimmed.is_empty() {
        return Some("0".into());
    }
    let exp = exp - frac.len() as i64 + (digits.len() - trimmed.len()) as i64;
    Some(format!(
        "{}{trimmed}e{exp}",
        if negative { "-" } else { "" }
    ))
}

/// A parsed line: its key (as text, for de-duplication) and its item.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub line: u64,
    pub key: String,
    pub item: Item,
}

/// Parses one line (without its newline) against the columns; `key_len` is 1 or 2.
pub fn parse_row(
    columns: &[Column],
    key_len: usize,
    line_no: u64,
    line: &str,
    escaped: bool,
) -> Result<Row, String> {
    let fields: Vec<&str> = line.split('\t').collect();
    if fields.len() != columns.len() {
        let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
        return Err(format!(
            "{} field{}, expected {} ({})",
            fields.len(),
            if fields.len() == 1 { "" } else { "s" },
            columns.len(),
            names.join(", ")
        ));
    }
    let mut item = Item::new();
    let mut key = String::new();
    for (i, (c, raw)) in columns.iter().zip(fields).enumerate() {
        let raw = if escaped { unescape(raw) } else { raw.into() };
        let what = |e: String| format!("field {} ({}): {e}", i + 1, c.name);
        if i < key_len && raw.is_empty() {
            return Err(what("a key cannot be empty".into()));
        }
        if let Some(v) = field_value(c, &raw).map_err(what)? {
            if i < key_len {
                key.push_str(&key_text(&v));
                key.push('\u{0}');
            }
            item.insert(c.name.clone(), v);
        }
    }
    let size: usize = item.iter().map(|(k, v)| k.len() + v.size()).sum();
    if size > MAX_ITEM_BYTES {
        return Err(format!(
            "the item is {size} bytes, over DynamoDB's 400 KB limit"
        ));
    }
    Ok(Row {
        line: line_no,
        key,
        item,
    })
}

/// Checks the columns against the table's key schema; returns the key length.
pub fn key_columns(columns: &[Column], info: &TableInfo, table: &str) -> Result<usize> {
    let ty = |c: &Column| match c.ty {
        ColumnType::S => "S",
        ColumnType::N => "N",
        ColumnType::B => "B",
        _ => "?",
    };
    let want: Vec<String> = info
        .keys
        .iter()
        .map(|k| format!("{}:{}", k.name, k.ty))
        .collect();
    let got: Vec<String> = columns
        .iter()
        .take(info.keys.len())
        .map(|c| format!("{}:{}", c.name, ty(c)))
        .collect();
    if want != got {
        bail!(ExitError::Usage(format!(
            "table {table} has the key {}, so --columns must start with {} (it starts with {})",
            want.join(" + "),
            want.join(","),
            got.join(",")
        )));
    }
    Ok(info.keys.len())
}

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
    use crate::ports::items::KeyAttr;
    use std::collections::BTreeMap;

    fn cols() -> Vec<Column> {
        parse_columns("error:S,region:S,count:N,tags:SS,blob:B,ok:BOOL,doc:JSON").unwrap()
    }

    #[test]
    fn lines_become_items() {
        let r = parse_row(
            &cols(),
            2,
            1,
            "503\teu\\tw\t12\tb,a,a\taGk=\ttrue\t{\"x\":[1,\"y\"]}",
            true,
        )
        .unwrap();
        assert_eq!(r.key, "503\u{0}eu\tw\u{0}");
        assert_eq!(r.item["region"], Value::S("eu\tw".into()));
        assert_eq!(r.item["count"], Value::N("12".into()));
        assert_eq!(r.item["tags"], Value::Ss(vec!["a".into(), "b".into()]));
        assert_eq!(r.item["blob"], Value::B(b"hi".to_vec()));
        assert_eq!(r.item["ok"], Value::Bool(true));
        assert_eq!(
            r.item["doc"],
            Value::M(BTreeMap::from([(
                "x".to_string(),
                Value::L(vec![Value::N("1".into()), Value::S("y".into())])
            )]))
        );
        // An empty set is left out (DynamoDB has no empty sets).
        let r = parse_row(&cols(), 2, 1, "a\tb\t1\t\taGk=\tfalse\tnull", true).unwrap();
        assert!(!r.item.contains_key("tags"));
    }

    #[test]
    fn column_lists_with_spaces_name_the_same_columns() {
        assert_eq!(
            parse_columns("k:S, v:N").unwrap(),
            parse_columns("k:S,v:N").unwrap()
        );
        let cols = parse_columns("k:S,v:N").unwrap();
        assert!(parse_row(&cols, 1, 1, "x", true)
            .unwrap_err()
            .starts_with("1 field, expected 2"));
    }

    #[test]
    fn number_keys_are_one_key_when_dynamodb_takes_them_as_one() {
        for same in [
            &["7", "7.0", "07", "+7", "0.7e1", "70E-1", "7.000"][..],
            &["0", "-0", "0.0", "0e5", "00"],
            &["-1.5", "-15e-1", "-1.50"],
            &["100", "1e2", "1E+2", "100.0"],
        ] {
            let texts: Vec<String> = same.iter().map(|n| canonical_number(n).unwrap()).collect();
            assert!(texts.iter().all(|t| *t == texts[0]), "{same:?}: {texts:?}");
        }
        for (a, b) in [("7", "70"), ("1", "-1"), ("0.1", "1"), ("1e2", "1e3")] {
            assert_ne!(canonical_number(a), canonical_number(b), "{a} {b}");
        }
        let cols = parse_columns("k:N,c:N").unwrap();
        let row = |l: &str| parse_row(&cols, 1, 1, l, true).unwrap().key;
        assert_eq!(row("7\t5"), row("7.0\t7"));
        assert_eq!(row("1\t1"), row("01\t1"));
        assert_ne!(row("7\t1"), row("8\t1"));
        let cols = parse_columns("k:B,c:N").unwrap();
        let row = |l: &str| parse_row(&cols, 1, 1, l, true).unwrap().key;
        assert_ne!(row("AAE=\t1"), row("AAI=\t1"));
    }

    #[test]
    fn bad_fields_name_field_and_reason() {
        let c = cols();
        let e = |l: &str| parse_row(&c, 2, 9, l, true).unwrap_err();
        assert!(e("a\tb\t1").contains("3 fields, expected 7"));
        assert_eq!(
            e("a\tb\tmany\tx\taGk=\ttrue\t1"),
            "field 3 (count): \"many\" is not a number"
        );
        assert!(e("\tb\t1\tx\taGk=\ttrue\t1").contains("field 1 (error): a key cannot be empty"));
        assert!(e("a\tb\t1\tx\t!!\ttrue\t1").contains("field 5 (blob): \"!!\" is not valid base64"));
        assert!(e("a\tb\t1\tx\taGk=\tyes\t1").contains("field 6 (ok)"));
        assert!(e("a\tb\t1\tx\taGk=\ttrue\t{").contains("field 7 (doc): not valid JSON"));
        let big = "x".repeat(MAX_ITEM_BYTES);
        let e = parse_row(
            &parse_columns("k:S,v:S").unwrap(),
            1,
            1,
            &format!("k\t{big}"),
            true,
        )
        .unwrap_err();
        assert!(e.contains("400 KB"), "{e}");
    }

    #[test]
    fn column_specs() {
        assert!(parse_columns("a:S,a:N").is_err());
        assert!(parse_columns("a:STRING")
            .unwrap_err()
            .contains("unknown type"));
        assert!(parse_columns("a").is_err());
        assert!(parse_columns("kinesis_applied:SS").is_err());
    }

    #[test]
    fn key_schema_must_match_the_first_columns() {
        let info = TableInfo {
            keys: vec![
                KeyAttr {
                    name: "error".into(),
                    ty: "S".into(),
                },
                KeyAttr {
                    name: "region".into(),
                    ty: "S".into(),
                },
            ],
            write_capacity: None,
        };
        assert_eq!(key_columns(&cols(), &info, "t").unwrap(), 2);
        let wrong = parse_columns("region:S,error:S").unwrap();
        let e = key_columns(&wrong, &info, "t").unwrap_err();
        assert!(
            e.to_string().contains("must start with error:S,region:S"),
            "{e}"
        );
    }

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
