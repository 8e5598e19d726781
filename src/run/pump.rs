//! Shards in, lines out: every shard of a group read at once by its own
//! task, pages through the deterministic merge onto one buffered output, and
//! each shard's end sent back once its last record has been flushed.
//!
//! A child read in the same run as its parents (an iteration's family, see
//! `lineage`) starts reading only when every parent in the run has finished,
//! and reads only if each of them was read to its end (closed): a parent
//! stopped early by a timeout leaves its child unread, where it starts.
//! A child whose parent closes during the run joins it when that parent is
//! read to its end (`joins`): the merge waits while it is recorded, then
//! reads it in a lane of its own after every other.

use super::joins::Joins;
use crate::error::ExitError;
use crate::format::Formatter;
use crate::merge::{merge, Joining, MergeShard, MergeStats};
use crate::pages::{page_bytes, Budget, PAGES_PER_SHARD};
use crate::ports::checkpoint::ShardCheckpoint;
use crate::ports::stream::StreamApi;
use crate::shard::{EndRules, Extent, Outcome, ReadSettings, ShardEvent, ShardTask};
use anyhow::{anyhow, Context, Result};
use futures_util::FutureExt;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, Notify};

/// Bytes of output gathered before a write to stdout.
const OUTPUT_BUFFER: usize = 256 * 1024;

/// Where shard ends go: (the shard, how it ended), sent once the shard's
/// last record has left the output buffer.
pub type Ends = mpsc::UnboundedSender<(String, Outcome)>;

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
    /// Children that join while the run reads (a whole iteration's run).
    pub joins: Option<Arc<Joins>>,
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

    /// The shards read to their end so far.
    fn ended(&self) -> BTreeSet<String> {
        let f = self.shards.lock().unwrap_or_else(|p| p.into_inner());
        (f.iter())
            .filter(|(_, c)| **c)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// A group's lanes as the pump knows them, by merge lane: the shard, whether
/// a replayed one was read to its end, and its page size.
type Lanes = Arc<Mutex<Vec<(String, bool, usize)>>>;

/// Where a group's readers send their pages, by merge lane.
type Events = mpsc::Sender<(usize, ShardEvent)>;

/// What starts a group's shard readers, now or when children join.
#[derive(Clone)]
struct Readers {
    api: Arc<dyn StreamApi>,
    /// Where readers send their pages: taken away when the group stops, so
    /// that the merge sees the end of its events once the readers are gone.
    events: Arc<Mutex<Option<Events>>>,
    failure: Arc<Mutex<Option<anyhow::Error>>>,
    finished: Arc<Finished>,
    tasks: Arc<Mutex<tokio::task::JoinSet<()>>>,
}

impl Readers {
    /// Reads `task` once every one of `parents` has finished, if they were
    /// all read to their end (else the shard is fixed unread, where it starts).
    /// A reader that fails, or panics, stops the merge.
    fn start(&self, task: ShardTask, parents: Vec<String>) {
        let readers = self.clone();
        let events = task.events.clone();
        self.spawn(async move {
            if !parents.is_empty() && !readers.finished.wait(&parents).await {
                return task.unread().await;
            }
            let index = task.index;
            let read = std::panic::AssertUnwindSafe(task.run(readers.api.clone())).catch_unwind();
            let failed = match read.await {
                Ok(r) => r.err(),
                Err(_) => Some(anyhow!("the reader of a shard panicked")),
            };
            if let Some(e) = failed {
                readers.fail(e);
                // Wake the merge so it stops.
                let _ = events.send((index, ShardEvent::Failed)).await;
            }
        });
    }

    /// A sender of events, while the group runs.
    fn events(&self) -> Option<Events> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stops the readers, and lets the merge see the end of their events.
    fn stop(&self) {
        self.events.lock().unwrap_or_else(|p| p.into_inner()).take();
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.abort_all();
    }

    fn spawn(&self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.spawn(crate::clock::carry(f));
    }

    fn fail(&self, e: anyhow::Error) {
        self.failure.lock().unwrap().get_or_insert(e);
    }
}

impl Pump<'_> {
    /// Reads `shards` `limit` at a time (all at once without a limit), group
    /// after group, onto `out`: in their order, except that a child goes
    /// after its parents. Within a group lines are interleaved by the merge.
    /// Children join (`joins`) only when all are read at once.
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
            let joins = self.joins.clone();
            return self
                .group(shards, &order, &finished, out, ends, joins)
                .await;
        }
        let out = Arc::new(Mutex::new(out));
        let mut total = MergeStats::default();
        for group in order.chunks(size) {
            let shared = Box::new(SharedWriter(out.clone()));
            let stats = self
                .group(shards, group, &finished, shared, ends.clone(), None)
                .await?;
            total.records += stats.records;
            total.bytes += stats.bytes;
        }
        Ok(total)
    }

    /// Reads the shards at `members` (indices into `all`) at once and merges
    /// them onto `out`, letting children join with `joins`.
    async fn group(
        &self,
        all: &[ShardCheckpoint],
        members: &[usize],
        finished: &Arc<Finished>,
        mut out: Box<dyn Write + Send>,
        ends: Ends,
        joins: Option<Arc<Joins>>,
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
        let readers = Readers {
            api: self.api.clone(),
            events: Arc::new(Mutex::new(Some(tx))),
            failure: Arc::default(),
            finished: finished.clone(),
            tasks: Arc::default(),
        };
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
            let task = ShardTask {
                index,
                shard_id: s.shard_id.clone(),
                extent: extent(s, self.closed.get(&s.shard_id).cloned(), &self.rules),
                settings: settings.clone(),
                page_slots,
                events: readers.events().expect("the group runs"),
            };
            // A live child waits for its parents in this run (a replayed one
            // reads its fixed range whatever they did).
            let parents: Vec<String> = match &s.end {
                None => s.parents.iter().filter(|p| in_run(p)).cloned().collect(),
                Some(_) => Vec::new(),
            };
            readers.start(task, parents);
        }
        let fmt = self.fmt.clone();
        let lanes: Lanes = Arc::new(Mutex::new(
            (shards.iter())
                .map(|s| {
                    let closed = s.end.as_ref().is_some_and(|e| e.closed);
                    (s.shard_id.clone(), closed, settings.page_bytes)
                })
                .collect(),
        ));
        let joiner = Joiner {
            rules: self.rules.clone(),
            joins,
            lanes: lanes.clone(),
            readers: readers.clone(),
            budget,
            settings,
        };
        let finished = finished.clone();
        let merging = async move {
            // Lines are written field by field into one large buffer; what is
            // under it (stdout, a child's stdin) gets whole blocks.
            let mut out = std::io::BufWriter::with_capacity(OUTPUT_BUFFER, &mut out);
            let on_done = |i: usize, outcome: Option<Outcome>| -> Result<Joining> {
                let (id, replayed_closed, _) = lanes.lock().unwrap()[i].clone();
                let closed = outcome.as_ref().map_or(replayed_closed, |o| o.closed);
                finished.record(&id, closed);
                if let Some(o) = outcome {
                    ends.send((id.clone(), o))
                        .map_err(|_| anyhow!("shard ends are no longer recorded"))?;
                }
                Ok(closed.then(|| joiner.join(i, id)).flatten())
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
        // Dropped (the run stopped) or done, the group stops its readers.
        let _stop = OnDrop(readers.clone());
        let merged = merging.await.context("the output thread panicked")?;
        if let Some(e) = readers.failure.lock().unwrap().take() {
            return Err(e);
        }
        merged
    }
}

/// How a shard is read: its fixed range when replayed, else live to the
/// end `rules` (or to `ending_sequence`, its last record when closed).
fn extent(s: &ShardCheckpoint, ending_sequence: Option<String>, rules: &EndRules) -> Extent {
    match &s.end {
        Some(e) => Extent::Replay {
            start: e.read_from.clone().unwrap_or_else(|| s.start.clone()),
            last: e.last_sequence.clone(),
            recorded: Some(crate::shard::Recorded {
                records: e.records,
                bytes: e.bytes,
                first: e.first_sequence.clone(),
            }),
        },
        None => Extent::Live {
            start: s.start.clone(),
            ending_sequence,
            rules: rules.clone(),
            known_until_ms: s.known_until_ms,
        },
    }
}

/// Stops a group's readers when dropped.
struct OnDrop(Readers);

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Starts the readers of children that join a group, and tells the merge.
struct Joiner {
    rules: EndRules,
    joins: Option<Arc<Joins>>,
    lanes: Lanes,
    readers: Readers,
    budget: Budget,
    settings: ReadSettings,
}

impl Joiner {
    /// Asks which children join now that lane `i` (`parent`) was read to
    /// its end, and starts their readers; `None` where children do not join.
    fn join(&self, i: usize, parent: String) -> Joining {
        let joins = self.joins.clone()?;
        let (answer, joining) = oneshot::channel();
        let (lanes, readers, budget) = (
            self.lanes.clone(),
            self.readers.clone(),
            self.budget.clone(),
        );
        let (settings, rules) = (self.settings.clone(), self.rules.clone());
        self.readers.spawn(async move {
            let in_run: BTreeSet<String> = {
                let lanes = lanes.lock().unwrap_or_else(|p| p.into_inner());
                lanes.iter().map(|l| l.0.clone()).collect()
            };
            let ended = readers.finished.ended();
            let children = match joins.children_of(&parent, &in_run, &ended).await {
                Ok(c) => c,
                // Dropping `answer` stops the merge; the error is the run's.
                Err(e) => return readers.fail(e),
            };
            let Some(events) = readers.events() else {
                return;
            };
            let mut joined = Vec::new();
            let mut lanes = lanes.lock().unwrap_or_else(|p| p.into_inner());
            // The parent's page is shared among its children, so that a
            // split does not take the run past its memory budget.
            let page = (lanes[i].2 / children.len().max(1)).max(1);
            for c in children {
                let s = c.checkpoint;
                let index = lanes.len();
                lanes.push((s.shard_id.clone(), false, page));
                let page_slots = budget.shard();
                let mut settings = settings.clone();
                settings.page_bytes = page;
                let task = ShardTask {
                    index,
                    shard_id: s.shard_id.clone(),
                    events: events.clone(),
                    extent: extent(&s, c.ending_sequence, &rules),
                    settings,
                    page_slots: page_slots.clone(),
                };
                joined.push(MergeShard {
                    shard_id: s.shard_id.clone(),
                    page_slots,
                    parents: (s.parents.iter())
                        .filter_map(|p| lanes.iter().position(|l| &l.0 == p))
                        .collect(),
                });
                readers.start(task, Vec::new());
            }
            let _ = answer.send(joined);
        });
        Some(joining)
    }
}

/// The order shards are read in, as indices: their own order, except that a
/// shard goes after its parents in the run (by generation: the roots, then
/// their children, and so on), and children that joined a run go last.
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
    // Children that joined a run come last, in the order they joined: where
    // that run's merge had their lanes.
    let mut order: Vec<usize> = (0..shards.len()).collect();
    order.sort_by_key(|i| (shards[*i].joined.unwrap_or(0), generation[*i]));
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
            joined: None,
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
