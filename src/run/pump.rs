//! Shards in, lines out: every shard of a group read at once by its own
//! task, pages through the deterministic merge onto one buffered output, and
//! each shard's end sent back once its last record has been flushed.
//!
//! A child read in the same run as its parents (an iteration's family, see
//! `lineage`) starts reading only when every parent in the run has finished,
//! and reads only if each of them was read to its end (closed): a parent
//! stopped early by a timeout leaves its child unread, where it starts.

use crate::error::ExitError;
use crate::format::Formatter;
use crate::merge::{merge, MergeShard, MergeStats};
use crate::pages::{page_bytes, Budget, PAGES_PER_SHARD};
use crate::ports::checkpoint::ShardCheckpoint;
use crate::ports::stream::StreamApi;
use crate::shard::{EndRules, Extent, Outcome, ReadSettings, ShardEvent, ShardTask};
use anyhow::{anyhow, Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, Notify};

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

/// The shards of a run that have finished, each with whether it was read to
/// its end (closed): what a child waits for. (One `Notify`, whose waiters
/// wake in a fixed order, so that the simulation's schedules repeat.)
#[derive(Default)]
struct Finished {
    shards: Mutex<HashMap<String, bool>>,
    changed: Notify,
}

impl Finished {
    fn record(&self, shard_id: &str, closed: bool) {
        let mut f = self.shards.lock().unwrap_or_else(|p| p.into_inner());
        f.insert(shard_id.to_string(), closed);
        self.changed.notify_waiters();
    }

    /// Waits until every one of `parents` has finished; whether all of
    /// them were read to their end.
    async fn wait(&self, parents: &[String]) -> bool {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let f = self.shards.lock().unwrap_or_else(|p| p.into_inner());
                if parents.iter().all(|p| f.contains_key(p)) {
                    return parents.iter().all(|p| f[p]);
                }
            }
            changed.await;
        }
    }
}

impl Pump<'_> {
    /// Reads `shards` `limit` at a time (all at once without a limit), group
    /// after group, onto `out`: in their order, except that a child goes
    /// after its parents. Within a group lines are interleaved by the merge.
    pub async fn run(
        &self,
        shards: &[ShardCheckpoint],
        out: Box<dyn Write + Send>,
        ends: Ends,
    ) -> Result<MergeStats> {
        let order = lineage_order(shards);
        let finished = Arc::new(Finished::default());
        let size = self.limit.unwrap_or(shards.len()).max(1);
        if size >= shards.len() {
            return self.group(shards, &order, &finished, out, ends).await;
        }
        let out = Arc::new(Mutex::new(out));
        let mut total = MergeStats::default();
        for group in order.chunks(size) {
            let shared = Box::new(SharedWriter(out.clone()));
            let stats = self
                .group(shards, group, &finished, shared, ends.clone())
                .await?;
            total.records += stats.records;
            total.bytes += stats.bytes;
        }
        Ok(total)
    }

    /// Reads the shards at `members` (indices into `all`) at once and merges
    /// them onto `out`; their ends are sent with those indices.
    async fn group(
        &self,
        all: &[ShardCheckpoint],
        members: &[usize],
        finished: &Arc<Finished>,
        mut out: Box<dyn Write + Send>,
        ends: Ends,
    ) -> Result<MergeStats> {
        let shards: Vec<&ShardCheckpoint> = members.iter().map(|i| &all[*i]).collect();
        let in_run = |p: &String| all.iter().any(|s| &s.shard_id == p);
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
                parents: (s.parents.iter())
                    .filter_map(|p| shards.iter().position(|o| &o.shard_id == p))
                    .collect(),
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
            // A live child waits for its parents in this run (a replayed one
            // reads its fixed range whatever they did).
            let parents: Vec<String> = match &s.end {
                None => s.parents.iter().filter(|p| in_run(p)).cloned().collect(),
                Some(_) => Vec::new(),
            };
            let finished = finished.clone();
            tasks.spawn(crate::clock::carry(async move {
                if !parents.is_empty() && !finished.wait(&parents).await {
                    return task.unread().await;
                }
                if let Err(e) = task.run(api).await {
                    failure.lock().unwrap().get_or_insert(e);
                    // Wake the merge so it stops.
                    let _ = tx.send((index, ShardEvent::Failed)).await;
                }
            }));
        }
        drop(tx);
        let fmt = self.fmt.clone();
        let members = members.to_vec();
        let lanes: Vec<(String, bool)> = (shards.iter())
            .map(|s| (s.shard_id.clone(), s.end.as_ref().is_some_and(|e| e.closed)))
            .collect();
        let finished = finished.clone();
        let merging = async move {
            // Lines are written field by field into one large buffer; what is
            // under it (stdout, a child's stdin) gets whole blocks.
            let mut out = std::io::BufWriter::with_capacity(OUTPUT_BUFFER, &mut out);
            let on_done = |i: usize, outcome: Option<Outcome>| {
                let (id, replayed_closed) = &lanes[i];
                let closed = outcome.as_ref().map_or(*replayed_closed, |o| o.closed);
                finished.record(id, closed);
                match outcome {
                    // A replayed shard has no new end.
                    None => Ok(()),
                    Some(o) => ends
                        .send((members[i], o))
                        .map_err(|_| anyhow!("shard ends are no longer recorded")),
                }
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

/// The order shards are read in, as indices: their own order, except that a
/// shard goes after its parents in the run (by generation: the roots, then
/// their children, and so on).
fn lineage_order(shards: &[ShardCheckpoint]) -> Vec<usize> {
    let index: HashMap<&str, usize> = (shards.iter().enumerate())
        .map(|(i, s)| (s.shard_id.as_str(), i))
        .collect();
    // A shard's generation is one more than its latest parent's in the run.
    // Lineage has no cycles, so this settles within as many rounds as there
    // are shards; the bound only guards against a corrupt table.
    let mut generation = vec![0usize; shards.len()];
    for _ in 0..shards.len() {
        let mut changed = false;
        for (i, s) in shards.iter().enumerate() {
            let g = (s.parents.iter())
                .filter_map(|p| index.get(p.as_str()))
                .map(|p| generation[*p] + 1)
                .max()
                .unwrap_or(0);
            changed |= g != generation[i];
            generation[i] = g;
        }
        if !changed {
            break;
        }
    }
    let mut order: Vec<usize> = (0..shards.len()).collect();
    order.sort_by_key(|i| generation[*i]);
    order
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::Position;

    fn shard(id: &str, parents: &[&str]) -> ShardCheckpoint {
        ShardCheckpoint {
            shard_id: id.into(),
            parents: parents.iter().map(|p| p.to_string()).collect(),
            start: Position::At("1".into()),
            known_until_ms: None,
            end: None,
        }
    }

    /// Groups of `--max-concurrent-shards` are cut from this order: a child
    /// never comes before its parent, whatever the ids; a parent outside the
    /// run does not count.
    #[test]
    fn a_child_is_read_after_its_parents() {
        let shards = [
            shard("m", &["c", "q"]),
            shard("c", &["p"]),
            shard("o", &["gone"]),
            shard("p", &[]),
            shard("q", &[]),
        ];
        let ids: Vec<&str> = lineage_order(&shards)
            .into_iter()
            .map(|i| shards[i].shard_id.as_str())
            .collect();
        assert_eq!(ids, ["o", "p", "q", "c", "m"]);
    }
}
