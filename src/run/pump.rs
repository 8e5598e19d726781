//! Shards in, lines out: every shard of a group read at once by its own
//! task, pages through the deterministic merge onto one buffered output, and
//! each shard's end sent back once its last record has been flushed.

use crate::error::ExitError;
use crate::format::Formatter;
use crate::merge::{merge, MergeShard, MergeStats};
use crate::pages::{page_bytes, Budget, PAGES_PER_SHARD};
use crate::ports::checkpoint::ShardCheckpoint;
use crate::ports::stream::StreamApi;
use crate::shard::{EndRules, Extent, Outcome, ReadSettings, ShardEvent, ShardTask};
use anyhow::{anyhow, Context, Result};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Bytes of output gathered before a write to stdout.
const OUTPUT_BUFFER: usize = 256 * 1024;

/// Where shard ends go: (index into the shards pumped, how the shard ended),
/// sent once the shard's last record has left the output buffer.
pub type Ends = mpsc::UnboundedSender<(usize, Outcome)>;

/// How shards are read and written.
#[derive(Clone)]
pub struct Pump<'a> {
    pub api: Arc<dyn StreamApi>,
    /// Closed shards' last sequence numbers, by shard.
    pub closed: &'a BTreeMap<String, String>,
    pub rules: EndRules,
    pub settings: ReadSettings,
    pub fmt: Formatter,
    /// `--max-concurrent-shards`: read this many at a time, group after group.
    pub limit: Option<usize>,
}

impl Pump<'_> {
    /// Reads `shards` `limit` at a time (all at once without a limit), group
    /// after group in their order, onto `out`. Within a group lines are
    /// interleaved by the merge.
    pub async fn run(
        &self,
        shards: &[ShardCheckpoint],
        out: Box<dyn Write + Send>,
        ends: Ends,
    ) -> Result<MergeStats> {
        let size = self.limit.unwrap_or(shards.len()).max(1);
        if size >= shards.len() {
            return self.group(shards, 0, out, ends).await;
        }
        let out = Arc::new(Mutex::new(out));
        let mut total = MergeStats::default();
        for (g, group) in shards.chunks(size).enumerate() {
            let shared = Box::new(SharedWriter(out.clone()));
            let stats = self.group(group, g * size, shared, ends.clone()).await?;
            total.records += stats.records;
            total.bytes += stats.bytes;
        }
        Ok(total)
    }

    /// Reads `shards` at once and merges them onto `out`; their ends are
    /// sent numbered from `first`.
    async fn group(
        &self,
        shards: &[ShardCheckpoint],
        first: usize,
        mut out: Box<dyn Write + Send>,
        ends: Ends,
    ) -> Result<MergeStats> {
        let mut settings = self.settings.clone();
        settings.page_bytes = page_bytes(settings.max_memory, shards.len()).map_err(|need| {
            ExitError::Usage(format!(
                "--max-memory {} MiB is too small to read {} shards at once: give at least {} \
                 MiB, or read fewer at once with --max-concurrent-shards",
                settings.max_memory >> 20,
                shards.len(),
                need.div_ceil(1 << 20)
            ))
        })?;
        let (tx, rx) = mpsc::channel(shards.len() * (PAGES_PER_SHARD + 2) + 8);
        let budget = Budget::default();
        let failure: Arc<Mutex<Option<anyhow::Error>>> = Arc::default();
        let mut tasks = tokio::task::JoinSet::new();
        let mut merge_shards = Vec::new();
        for (index, s) in shards.iter().enumerate() {
            let page_slots = budget.shard();
            merge_shards.push(MergeShard {
                shard_id: s.shard_id.clone(),
                page_slots: page_slots.clone(),
            });
            let extent = match &s.end {
                Some(e) => Extent::Replay {
                    start: e.read_from.clone().unwrap_or_else(|| s.start.clone()),
                    last: e.last_sequence.clone(),
                },
                None => Extent::Live {
                    start: s.start.clone(),
                    ending_sequence: self.closed.get(&s.shard_id).cloned(),
                    rules: self.rules.clone(),
                    known_until_ms: s.known_until_ms,
                },
            };
            let task = ShardTask {
                index,
                shard_id: s.shard_id.clone(),
                extent,
                settings: settings.clone(),
                page_slots,
                events: tx.clone(),
            };
            let (api, failure, tx) = (self.api.clone(), failure.clone(), tx.clone());
            tasks.spawn(crate::clock::carry(async move {
                if let Err(e) = task.run(api).await {
                    failure.lock().unwrap().get_or_insert(e);
                    // Wake the merge so it stops.
                    let _ = tx.send((index, ShardEvent::Failed)).await;
                }
            }));
        }
        drop(tx);
        let fmt = self.fmt.clone();
        let merging = async move {
            // Lines are written field by field into one large buffer; what is
            // under it (stdout, a child's stdin) gets whole blocks.
            let mut out = std::io::BufWriter::with_capacity(OUTPUT_BUFFER, &mut out);
            let on_done = |i: usize, outcome: Option<Outcome>| match outcome {
                // A replayed shard has no new end.
                None => Ok(()),
                Some(o) => ends
                    .send((first + i, o))
                    .map_err(|_| anyhow!("shard ends are no longer recorded")),
            };
            merge(merge_shards, rx, &mut out, &fmt, on_done).await
        };
        let merging = match crate::simulation::active() {
            // One thread, so that the simulation's schedule decides everything.
            true => tokio::spawn(crate::clock::carry(merging)),
            false => {
                let h = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || h.block_on(merging))
            }
        };
        let merged = merging.await.context("the output thread panicked")?;
        tasks.abort_all();
        if let Some(e) = failure.lock().unwrap().take() {
            return Err(e);
        }
        merged
    }
}

/// Lets several groups write to one buffered output.
pub struct SharedWriter(pub Arc<Mutex<Box<dyn Write + Send>>>);

impl Write for SharedWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap().flush()
    }
}
