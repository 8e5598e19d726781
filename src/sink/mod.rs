//! `kinesis-writer`'s targets: where reduced output goes, and under which
//! name, so that a rerun of an iteration overwrites instead of adding.
//! [`run`] writes one input to the configured destination.

pub mod columns;
pub mod dynamodb;
pub mod lines;
pub mod s3;

use crate::error::ExitError;
use crate::ports::{ItemTable, ObjectStore};
use crate::progress::Progress;
use crate::stop::Stop;
use crate::words::count;
use anyhow::Result;
use columns::Column;
use dynamodb::Mode;
use lines::{BadLinePolicy, BadLines};
use s3::Compression;
use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

/// Where the lines go.
#[derive(Clone, Debug)]
pub enum Destination {
    S3(S3Output),
    DynamoDb(TableOutput),
}

/// One S3 object, named for its iteration and partition.
#[derive(Clone, Debug)]
pub struct S3Output {
    pub bucket: String,
    /// The whole key, template expanded and checked.
    pub key: String,
    /// Path-style addressing, for a custom endpoint (an emulator).
    pub path_style: bool,
    pub part_size: usize,
    pub parts_in_flight: usize,
    pub compression: Compression,
    /// Write nothing (rather than an empty object) when the input is empty.
    pub skip_empty: bool,
    /// An empty `_SUCCESS` object beside the output, as Hadoop writes.
    pub success_marker: bool,
}

/// Items of one DynamoDB table.
#[derive(Clone, Debug)]
pub struct TableOutput {
    pub table: String,
    pub columns: Vec<Column>,
    pub mode: Mode,
    /// Fields are escaped as `kinesis-reader` writes them.
    pub escaped: bool,
    pub batches_in_flight: usize,
    pub rate: Option<WriteRate>,
    /// `add` mode: what each changed item records (`<logical name>#<iteration>`).
    pub tag: Option<String>,
    /// `add` mode under an exec-mode reader: nothing is applied until the
    /// input has ended whole (see `dynamodb::LoadOptions`).
    pub hold_until_whole: bool,
}

/// `--write-rate` or `--write-capacity-percent`; the percentage becomes a rate
/// once the table's provisioned capacity is known.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WriteRate {
    ItemsPerSecond(f64),
    PercentOfCapacity(f64),
}

/// What a write did, as Hadoop counters (name, value).
pub type Counters = Vec<(&'static str, u64)>;

/// The store behind a destination: S3 objects, or a DynamoDB table's items.
pub enum Store {
    Objects(Arc<dyn ObjectStore>),
    Items(Arc<dyn ItemTable>),
}

/// Writes `input` to the configured destination. When `stop` resolves, the
/// write ends with [`ExitError::Interrupted`]: an S3 object is not created,
/// and DynamoDB items written so far stay (both modes are idempotent).
pub async fn run(
    destination: &Destination,
    on_bad_line: &BadLinePolicy,
    store: Store,
    input: impl Read + Send + 'static,
    stop: Stop,
    progress: Arc<Progress>,
) -> Result<Counters> {
    let lines = Lines {
        input,
        bad: BadLines::new(on_bad_line.clone())?,
        stop,
        progress,
        started: Instant::now(),
    };
    match (destination, store) {
        (Destination::S3(out), Store::Objects(objects)) => to_s3(out, objects, lines).await,
        (Destination::DynamoDb(out), Store::Items(items)) => to_table(out, items, lines).await,
        _ => anyhow::bail!("the store given is not the destination's"),
    }
}

/// One input on its way to a destination: its lines, what to do with bad
/// ones, when to stop, and what a person watching sees.
struct Lines<R> {
    input: R,
    bad: BadLines,
    stop: Stop,
    progress: Arc<Progress>,
    started: Instant,
}

async fn to_s3(
    out: &S3Output,
    store: Arc<dyn ObjectStore>,
    lines: Lines<impl Read + Send + 'static>,
) -> Result<Counters> {
    let opts = s3::UploadOptions {
        part_size: out.part_size,
        parts_in_flight: out.parts_in_flight,
        compression: out.compression,
        skip_empty: out.skip_empty,
        progress: lines.progress,
    };
    let key = &out.key;
    let (s, mut bad) = s3::upload(
        store.clone(),
        key,
        lines.input,
        &opts,
        lines.bad,
        lines.stop,
    )
    .await?;
    bad.finish()?;
    if s.written && out.success_marker {
        let marker = match key.rsplit_once('/') {
            Some((dir, _)) => format!("{dir}/_SUCCESS"),
            None => "_SUCCESS".to_string(),
        };
        store.put_object(&marker, bytes::Bytes::new()).await?;
    }
    log::info!(
        "{} s3://{}/{key}: {}, {} in, {} stored in {}, \
         {} skipped, peak buffers {} MiB, {:.1}s",
        if s.written {
            "wrote"
        } else {
            "empty input, nothing written to"
        },
        out.bucket,
        count(s.lines, "line"),
        count(s.input_bytes, "byte"),
        count(s.object_bytes, "byte"),
        count(s.parts, "part"),
        bad.skipped,
        s.peak_buffered >> 20,
        lines.started.elapsed().as_secs_f64()
    );
    Ok(vec![
        ("lines", s.lines),
        ("input_bytes", s.input_bytes),
        ("object_bytes", s.object_bytes),
        ("parts", s.parts as u64),
        ("skipped_lines", bad.skipped),
    ])
}

/// A missing table, and the command that creates it with the first column
/// as its key, as `--columns` names it.
fn no_such_table(table: &str, columns: &[Column]) -> String {
    let Some(key) = columns.first() else {
        return format!("table {table} does not exist");
    };
    let kind = match key.ty {
        columns::ColumnType::N => "N",
        columns::ColumnType::B => "B",
        _ => "S",
    };
    format!(
        "table {table} does not exist; create it with its key as --columns' first column, e.g. \
         aws dynamodb create-table --table-name {table} --billing-mode PAY_PER_REQUEST \
         --attribute-definitions AttributeName={name},AttributeType={kind} --key-schema \
         AttributeName={name},KeyType=HASH (a second column can be its sort key: add it as RANGE)",
        name = key.name
    )
}

async fn to_table(
    out: &TableOutput,
    items: Arc<dyn ItemTable>,
    lines: Lines<impl Read + Send + 'static>,
) -> Result<Counters> {
    let table = &out.table;
    let info = match items.describe().await {
        Err(crate::ports::SinkError::NoSuchTable(t)) => {
            return Err(ExitError::Usage(no_such_table(&t, &out.columns)).into())
        }
        r => r?,
    };
    let key_len = columns::key_columns(&out.columns, &info, table)?;
    let rate = match out.rate {
        None => None,
        Some(WriteRate::ItemsPerSecond(r)) => Some(r),
        Some(WriteRate::PercentOfCapacity(p)) => match info.write_capacity {
            Some(wcu) => Some(wcu as f64 * p / 100.0),
            None => {
                return Err(ExitError::Usage(format!(
                    "table {table} has no provisioned write capacity (on-demand): use --write-rate"
                ))
                .into())
            }
        },
    };
    if let Some(r) = rate {
        log::info!("writing at most {r:.1} items/s");
    }
    let opts = dynamodb::LoadOptions {
        columns: out.columns.clone(),
        key_len,
        mode: out.mode,
        escaped: out.escaped,
        batches_in_flight: out.batches_in_flight,
        rate,
        tag: out.tag.clone(),
        max_attempts: 10,
        progress: lines.progress,
        hold_until_whole: out.hold_until_whole,
    };
    let input = std::io::BufReader::with_capacity(256 * 1024, lines.input);
    let (s, mut bad) = dynamodb::load(items, input, &opts, lines.bad, lines.stop).await?;
    bad.finish()?;
    log::info!(
        "dynamodb://{table}: {}, {} written, {} {}, \
         {} already applied{}, {}, {} skipped, {:.1}s",
        count(s.lines, "line"),
        count(s.items_written, "item"),
        s.collapsed,
        match out.mode {
            Mode::Put => "collapsed into later lines (the last of a key wins)",
            Mode::Add => "summed into the line before (same key)",
        },
        s.already_applied,
        match s.applied_after_retry {
            0 => String::new(),
            n => format!(" ({n} only after a retry: possibly by this run's unanswered try)"),
        },
        count(s.retries, "retry"),
        bad.skipped,
        lines.started.elapsed().as_secs_f64()
    );
    Ok(vec![
        ("lines", s.lines),
        ("items_written", s.items_written),
        ("already_applied", s.already_applied),
        ("retries", s.retries),
        ("skipped_lines", bad.skipped),
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_missing_table_is_named_with_the_command_that_creates_it() {
        let cols = super::columns::parse_columns("k:S,v:N").unwrap();
        let e = super::no_such_table("nosuch", &cols);
        assert!(
            e.starts_with("table nosuch does not exist; create it")
                && e.contains("--table-name nosuch")
                && e.contains("AttributeName=k,AttributeType=S")
                && e.contains("AttributeName=k,KeyType=HASH"),
            "{e}"
        );
    }
}
