//! Reading one shard: from its start position to its end rule (a live read),
//! or exactly its fixed range again (a replay).
//!
//! A shard task sends its pages, in order, to the merge; it takes a page slot
//! before each call, which the merge frees when the page is written
//! ([`crate::pages`]), so memory is bounded by pages, not by the stream, and a
//! stalled consumer stops the reading.

use crate::ports::stream::{Page, StreamApi, StreamError, Subscription};
use crate::position::{seq_cmp, Position};
use crate::records::Records;
use crate::words::count;
use anyhow::{anyhow, Context, Result};
use std::cmp::Ordering;
use std::sync::Arc;
use std::time::Duration;
// tokio's clock, so that tests can run timeouts on paused time.
use crate::pages::ShardPages;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Kinesis allows 5 GetRecords calls per second per shard.
const MIN_CALL_INTERVAL: Duration = Duration::from_millis(200);
/// How often a caught-up shard polls for new records.
const IDLE_POLL: Duration = Duration::from_millis(1000);
/// Records arriving after a caught-up poll are assumed to carry an arrival
/// time no earlier than this much before the poll (clock skew allowance).
const WATERMARK_MARGIN_MS: i64 = 1000;

/// `--until`: which rule ends a live read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Until {
    /// What was in the stream when the iteration opened.
    Snapshot,
    /// EMR's rules: no new record for a while, or the iteration's time is up.
    Timeouts,
}

/// When a live read stops.
#[derive(Clone, Debug, Default)]
pub struct EndRules {
    /// `--until snapshot`: stop at the first record that arrived after this time
    /// (the iteration's opening), or when caught up.
    pub snapshot_ms: Option<i64>,
    /// Stop after no new record for this long.
    pub nodata: Option<Duration>,
    /// Hard stop for the whole iteration.
    pub deadline: Option<Instant>,
}

/// How much of one shard to read: up to its end rule, or a fixed range.
#[derive(Clone, Debug)]
pub enum Extent {
    Live {
        start: Position,
        /// Set when the shard is closed (from ListShards): its last record's
        /// sequence number. A closed shard ends at that record, at a null
        /// NextShardIterator, or when caught up, whichever comes first.
        ending_sequence: Option<String>,
        rules: EndRules,
        /// Carried into the outcome (see `ShardCheckpoint::known_until_ms`).
        known_until_ms: Option<i64>,
    },
    /// The range is fixed: from `start` up to and including `last`.
    Replay {
        start: Position,
        last: Option<String>,
        /// What the range recorded of itself; its replay must yield it again.
        recorded: Option<Recorded>,
    },
}

/// A fixed range's own facts, as its item records them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub records: u64,
    pub bytes: u64,
    /// The first record's sequence number (items of old versions lack it).
    pub first: Option<String>,
}

/// Where a live read ended: the boundary to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub last_sequence: Option<String>,
    pub next: Position,
    pub closed: bool,
    pub records: u64,
    pub bytes: u64,
    /// Every record after `next` that arrived before this time has been read.
    pub known_until_ms: Option<i64>,
    /// The first record read, and when it arrived.
    pub first: Option<(String, i64)>,
}

#[derive(Debug)]
pub enum ShardEvent {
    Page(Records),
    /// Caught up: no record of this shard that arrived before `watermark_ms`
    /// is still to come.
    Idle {
        watermark_ms: i64,
    },
    /// No more records; for a live read, where it ended.
    Done(Option<Outcome>),
    /// The shard's reader failed (the error is kept by the caller).
    Failed,
}

/// How every shard of a run is read.
#[derive(Clone, Debug)]
pub struct ReadSettings {
    /// Records per GetRecords call at most.
    pub batch_size: i32,
    /// `--max-memory`: what the pages a run holds may take together.
    pub max_memory: usize,
    /// The bytes one page should hold at most: the memory budget shared out
    /// over the pages a group of shards may hold ([`crate::pages::page_bytes`]).
    /// Each call's `Limit` is sized to it from the shard's records so far.
    pub page_bytes: usize,
    /// A shard's typical record (bytes, with its overhead), known from the
    /// checkpoints (this iteration's replayed end, or the last one's), so
    /// that its first call need not assume 1 MiB records.
    pub record_sizes: Arc<std::collections::HashMap<String, usize>>,
    /// Expand KPL aggregates into their sub-records (boundaries stay on the
    /// outer record, so an aggregate is never split between iterations).
    pub deaggregate: bool,
    /// Bytes per second per shard at most (the service allows 2 MiB/s per
    /// shard for all its readers together).
    pub bytes_per_sec: f64,
    /// Least time between two GetRecords calls on a shard (the service allows 5 a second).
    pub min_call_interval: Duration,
    /// Enhanced fan-out: the consumer's ARN, once registered (else GetRecords polling).
    pub efo: Option<Arc<str>>,
    /// Per-shard progress for a terminal display.
    pub meter: Option<Arc<crate::progress::Shards>>,
}

impl Default for ReadSettings {
    fn default() -> Self {
        ReadSettings {
            batch_size: 10_000,
            max_memory: crate::pages::DEFAULT_MAX_MEMORY,
            page_bytes: MAX_PAGE_BYTES,
            record_sizes: Arc::default(),
            deaggregate: true,
            bytes_per_sec: 2.0 * 1024.0 * 1024.0,
            min_call_interval: MIN_CALL_INTERVAL,
            efo: None,
            meter: None,
        }
    }
}

pub struct ShardTask {
    pub index: usize,
    pub shard_id: String,
    pub extent: Extent,
    pub settings: ReadSettings,
    pub page_slots: Arc<ShardPages>,
    pub events: mpsc::Sender<(usize, ShardEvent)>,
}

impl ShardTask {
    pub async fn run(self, api: Arc<dyn StreamApi>) -> Result<()> {
        let id = self.shard_id.clone();
        let r = match self.extent.clone() {
            Extent::Live {
                start,
                ending_sequence,
                rules,
                known_until_ms,
            } => {
                self.live(api.as_ref(), start, ending_sequence, rules, known_until_ms)
                    .await
            }
            Extent::Replay {
                start,
                last,
                recorded,
            } => {
                self.replay(api.as_ref(), start, last, recorded.as_ref())
                    .await
            }
        };
        r.with_context(|| format!("reading shard {id}"))
    }

    /// Ends a live shard where it starts, without reading it: a child whose
    /// parents were not all read to their end in this run (an iteration
    /// timeout stopped one), so that the next iteration reads it after them.
    pub async fn unread(self) {
        if let Extent::Live {
            start,
            known_until_ms,
            ..
        } = self.extent.clone()
        {
            let o = Outcome {
                last_sequence: None,
                next: start,
                closed: false,
                records: 0,
                bytes: 0,
                known_until_ms,
                first: None,
            };
            self.send(ShardEvent::Done(Some(o))).await;
        }
    }

    /// Sends an event; `false` when the merge has stopped (nothing more to do).
    async fn send(&self, mut ev: ShardEvent) -> bool {
        if let Some(m) = &self.settings.meter {
            match &ev {
                ShardEvent::Page(records) => {
                    let bytes = records.data_len();
                    m.page(&self.shard_id, records.len() as u64, bytes, None);
                }
                ShardEvent::Done(_) => m.done(&self.shard_id),
                _ => {}
            }
        }
        if let ShardEvent::Page(records) = &mut ev {
            if self.settings.deaggregate {
                *records = crate::kpl::expand(std::mem::take(records));
            }
        }
        self.events.send((self.index, ev)).await.is_ok()
    }

    async fn live(
        &self,
        api: &dyn StreamApi,
        start: Position,
        ending: Option<String>,
        rules: EndRules,
        mut known: Option<i64>,
    ) -> Result<()> {
        let mut last: Option<String> = None;
        let mut first: Option<(String, i64)> = None;
        let (mut records, mut bytes) = (0u64, 0u64);
        let later = |k: Option<i64>, t: i64| Some(k.map_or(t, |k| k.max(t)));
        let mut src = Source::open(api, &self.shard_id, &start, &self.settings).await?;
        let mut last_data = Instant::now();
        let closed = loop {
            if !src.more() {
                break true;
            }
            if rules.deadline.is_some_and(|d| Instant::now() >= d) {
                break false;
            }
            // A page slot before the call (see crate::pages).
            let slot = self.page_slots.acquire().await;
            let asked_ms = crate::clock::now_ms();
            // An expired iterator or an ended subscription continues just
            // after the last record passed on.
            let resume = last.clone().map_or_else(|| start.clone(), Position::After);
            let page = src.next(api, &self.shard_id, &resume).await?;
            if let Some(m) = &self.settings.meter {
                m.page(&self.shard_id, 0, 0, page.millis_behind_latest);
            }
            let caught_up = page.records.is_empty() && page.millis_behind_latest == Some(0);
            if caught_up {
                known = later(known, asked_ms - WATERMARK_MARGIN_MS);
            }
            let mut batch = page.records;
            // Which records go on: a mask over the page, then one `keep`.
            let mut keep = Vec::with_capacity(batch.len());
            let mut prev = last.as_deref();
            let mut stop = false;
            let mut reached_end = false;
            for r in batch.iter() {
                if !start.admits(r.sequence_number)
                    || prev.is_some_and(|l| seq_cmp(r.sequence_number, l) != Ordering::Greater)
                {
                    keep.push(false); // never emit a record twice, whatever the service sends
                    continue;
                }
                if let Some(t) = rules.snapshot_ms.filter(|t| r.arrival_ms > *t) {
                    // Everything that arrived up to the snapshot time is read.
                    known = later(known, t);
                    stop = true;
                    break;
                }
                // The shard's last record (an emulator may never end the
                // iterator of a closed shard; the service ends it here too).
                // Only equality counts: the contract says nothing of larger numbers.
                if ending.as_deref() == Some(r.sequence_number) {
                    reached_end = true;
                }
                records += 1;
                bytes += r.data.len() as u64;
                prev = Some(r.sequence_number);
                known = later(known, r.arrival_ms);
                first.get_or_insert_with(|| (r.sequence_number.to_string(), r.arrival_ms));
                keep.push(true);
                if reached_end {
                    break;
                }
            }
            last = prev.map(str::to_string); // unchanged when nothing was kept
            batch.keep(&keep);
            if !batch.is_empty() {
                last_data = Instant::now();
                slot.sent(); // the merge frees it when the page is written
                if !self.send(ShardEvent::Page(batch)).await {
                    return Ok(());
                }
            }
            if reached_end {
                break true;
            }
            if stop {
                break false;
            }
            if !src.more() {
                break true;
            }
            if caught_up {
                if ending.is_some() {
                    break true; // closed and nothing more: read to its end
                }
                if rules.snapshot_ms.is_some() {
                    break false;
                }
                if rules.nodata.is_some_and(|d| last_data.elapsed() >= d) {
                    break false;
                }
                let wm = asked_ms - WATERMARK_MARGIN_MS;
                if !self.send(ShardEvent::Idle { watermark_ms: wm }).await {
                    return Ok(());
                }
                if src.pushed() {
                    continue; // the next event comes when there is news
                }
                let mut wait = IDLE_POLL;
                if let Some(d) = rules.deadline {
                    wait = wait.min(d.saturating_duration_since(Instant::now()));
                }
                tokio::time::sleep(wait).await;
            }
        };
        let outcome = Outcome {
            next: last.clone().map_or_else(|| start.clone(), Position::After),
            last_sequence: last,
            closed,
            records,
            bytes,
            known_until_ms: known,
            first,
        };
        self.send(ShardEvent::Done(Some(outcome))).await;
        Ok(())
    }

    async fn replay(
        &self,
        api: &dyn StreamApi,
        start: Position,
        last: Option<String>,
        recorded: Option<&Recorded>,
    ) -> Result<()> {
        let Some(last) = last else {
            self.send(ShardEvent::Done(None)).await;
            return Ok(());
        };
        let mut emitted: Option<String> = None;
        let (mut records, mut bytes) = (0u64, 0u64);
        let mut src = Source::open(api, &self.shard_id, &start, &self.settings).await?;
        loop {
            if !src.more() {
                return Err(missing(&last, &emitted));
            }
            // A page slot before the call (see crate::pages).
            let slot = self.page_slots.acquire().await;
            let resume = emitted
                .clone()
                .map_or_else(|| start.clone(), Position::After);
            let page = src.next(api, &self.shard_id, &resume).await?;
            let caught_up = page.records.is_empty() && page.millis_behind_latest == Some(0);
            let mut batch = page.records;
            let mut keep = Vec::with_capacity(batch.len());
            let mut prev = emitted.as_deref();
            let mut done = false;
            for r in batch.iter() {
                if !start.admits(r.sequence_number)
                    || prev.is_some_and(|l| seq_cmp(r.sequence_number, l) != Ordering::Greater)
                {
                    keep.push(false);
                    continue;
                }
                match seq_cmp(r.sequence_number, &last) {
                    Ordering::Greater => {
                        return Err(missing(&last, &prev.map(str::to_string)));
                    }
                    Ordering::Equal => done = true,
                    Ordering::Less => {}
                }
                // The first record is checked before anything of it is sent.
                if let Some(want) = recorded.and_then(|r| r.first.as_deref()) {
                    if prev.is_none() && r.sequence_number != want {
                        return Err(not_as_recorded(format!(
                            "its replay begins with record {}, but its item records first_seq \
                             {want}",
                            r.sequence_number
                        )));
                    }
                }
                // More records than the range recorded: stop before printing one.
                if let Some(want) = recorded.filter(|w| records == w.records) {
                    return Err(not_as_recorded(format!(
                        "its replay reaches a record past the {} its item records, before its \
                         last_seq {last}",
                        count(want.records, "record")
                    )));
                }
                records += 1;
                bytes += r.data.len() as u64;
                prev = Some(r.sequence_number);
                keep.push(true);
                if done {
                    break;
                }
            }
            emitted = prev.map(str::to_string);
            batch.keep(&keep);
            if !batch.is_empty() {
                slot.sent();
            }
            if !batch.is_empty() && !self.send(ShardEvent::Page(batch)).await {
                return Ok(());
            }
            if done {
                if let Some(want) = recorded.filter(|w| (w.records, w.bytes) != (records, bytes)) {
                    return Err(not_as_recorded(format!(
                        "its replay yields {} ({}) up to its last_seq {last}, but its item \
                         records {} ({})",
                        count(records, "record"),
                        count(bytes, "byte"),
                        count(want.records, "record"),
                        count(want.bytes, "byte")
                    )));
                }
                self.send(ShardEvent::Done(None)).await;
                return Ok(());
            }
            if caught_up {
                return Err(missing(&last, &emitted));
            }
        }
    }
}

/// Where a shard's pages come from: GetRecords polling (paced; an expired
/// iterator is sought again) or an enhanced fan-out subscription (pushed by
/// the service; renewed when it ends after its 5 minutes).
enum Source {
    Poll {
        iterator: Option<String>,
        pacer: Pacer,
        limit: Limit,
    },
    Push {
        consumer: Arc<str>,
        sub: Option<Box<dyn Subscription>>,
        ended: bool,
        /// Subscriptions refused in a row because another one was active.
        busy: u32,
    },
}

/// The most a GetRecords page holds (the service's cap), and the largest
/// record (a shard with no record read yet may hold records this big).
pub const MAX_PAGE_BYTES: usize = 10 * 1024 * 1024;
const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// What a record takes in a page beyond its data and key: its sequence
/// number, arrival time and entry.
const RECORD_OVERHEAD: usize = 96;

/// A shard's typical record as a page holds it, from the records and bytes
/// of an end (`None` when it read nothing).
pub fn typical_record(records: u64, bytes: u64) -> Option<usize> {
    (records > 0).then(|| (bytes / records) as usize + RECORD_OVERHEAD)
}

/// A page's data and partition keys: what the read rate and the memory
/// budget count.
fn payload_bytes(page: &Page) -> usize {
    page.records
        .iter()
        .map(|r| r.data.len() + r.partition_key.len())
        .sum()
}

/// The `Limit` of a shard's next GetRecords call: as many records as fit in
/// the page budget, by the shard's average record so far (before any record,
/// its typical record from the checkpoints, else as if every record were as
/// large as the service allows).
struct Limit {
    now: i32,
    most: i32,
    page_bytes: usize,
    records: u64,
    bytes: u64,
}

impl Limit {
    fn new(settings: &ReadSettings, shard: &str) -> Self {
        let typical = settings.record_sizes.get(shard).copied();
        let (most, page_bytes) = (settings.batch_size, settings.page_bytes);
        Limit {
            now: fitting(page_bytes, most, typical.unwrap_or(MAX_RECORD_BYTES)),
            most,
            page_bytes,
            records: 0,
            bytes: 0,
        }
    }

    /// After a page of `records` holding `bytes` of payload.
    fn after(&mut self, records: usize, bytes: usize) {
        self.records += records as u64;
        self.bytes += bytes as u64;
        if let Some(typical) = typical_record(self.records, self.bytes) {
            self.now = fitting(self.page_bytes, self.most, typical);
        }
    }
}

/// As many records of `record_bytes` as fit in `page_bytes`, from 1 to `most`.
fn fitting(page_bytes: usize, most: i32, record_bytes: usize) -> i32 {
    if page_bytes >= MAX_PAGE_BYTES {
        return most; // the service's own cap is within the budget
    }
    let n = page_bytes / record_bytes.max(1);
    n.clamp(1, most.max(1) as usize) as i32
}

/// How long to keep asking while another subscription of the consumer to
/// the shard is active (a run that just ended, or a renewal too soon).
const SUBSCRIPTION_BUSY_TRIES: u32 = 60;

impl Source {
    async fn open(
        api: &dyn StreamApi,
        shard: &str,
        start: &Position,
        settings: &ReadSettings,
    ) -> Result<Self> {
        Ok(match &settings.efo {
            None => Source::Poll {
                iterator: Some(api.iterator(shard, start).await?),
                pacer: Pacer::new(settings),
                limit: Limit::new(settings, shard),
            },
            Some(c) => Source::Push {
                consumer: c.clone(),
                sub: None,
                ended: false,
                busy: 0,
            },
        })
    }

    /// False once a closed shard has been read to its very end.
    fn more(&self) -> bool {
        match self {
            Source::Poll { iterator, .. } => iterator.is_some(),
            Source::Push { ended, .. } => !ended,
        }
    }

    fn pushed(&self) -> bool {
        matches!(self, Source::Push { .. })
    }

    /// The next page. `resume` is where to go on from if the iterator has
    /// expired (e.g. stdout blocked by a slow mapper for over 5 minutes) or
    /// the subscription has ended.
    async fn next(&mut self, api: &dyn StreamApi, shard: &str, resume: &Position) -> Result<Page> {
        loop {
            match self {
                Source::Poll {
                    iterator,
                    pacer,
                    limit,
                } => {
                    let it = iterator.take().expect("more() was checked");
                    pacer.wait().await;
                    match api.get_records(&it, limit.now).await {
                        Ok(page) => {
                            let bytes = payload_bytes(&page);
                            pacer.paid(bytes);
                            limit.after(page.records.len(), bytes);
                            iterator.clone_from(&page.next_iterator);
                            return Ok(page);
                        }
                        Err(StreamError::IteratorExpired) => {
                            log::info!("shard {shard}: iterator expired, seeking to {resume}");
                            *iterator = Some(api.iterator(shard, resume).await?);
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Source::Push {
                    consumer,
                    sub,
                    ended,
                    busy,
                } => {
                    let next = match sub {
                        Some(s) => s.next().await,
                        None => match api.subscribe(consumer, shard, resume).await {
                            Ok(s) => sub.insert(s).next().await,
                            Err(e) => Err(e),
                        },
                    };
                    match next {
                        Ok(Some(page)) => {
                            *busy = 0;
                            *ended = page.next_iterator.is_none();
                            return Ok(page);
                        }
                        Err(StreamError::SubscriptionInUse(why))
                            if *busy < SUBSCRIPTION_BUSY_TRIES =>
                        {
                            *busy += 1;
                            log::debug!("shard {shard}: {why}; asking again in 1 s");
                            *sub = None;
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        Err(e) => return Err(e.into()),
                        Ok(None) => {
                            log::debug!(
                                "shard {shard}: subscription ended, renewing from {resume}"
                            );
                            *sub = None;
                        }
                    }
                }
            }
        }
    }
}

/// A replay that does not yield what its range recorded: the item was
/// edited by hand (see `integrity`), and what was printed is not the
/// iteration's output.
fn not_as_recorded(what: String) -> anyhow::Error {
    crate::error::ExitError::Usage(format!(
        "{what}: the item was edited by hand, so this output is not the iteration's (discard \
         it); restore the item's records, bytes and first_seq as they were, or rewind the \
         logical name (README: The checkpoint table)"
    ))
    .into()
}

fn missing(last: &str, emitted: &Option<String>) -> anyhow::Error {
    anyhow!(
        "the iteration's fixed last record {last} is no longer in the shard (read up to {}); \
         the stream no longer holds this iteration's records (or its item's last_seq was edited \
         by hand)",
        emitted.as_deref().unwrap_or("nothing")
    )
}

/// Keeps one shard's GetRecords calls under the service's limits: at most
/// 5 calls a second, and the bytes of each page paid for at the shard's
/// byte rate before the next call (so after a 10 MiB page at 2 MiB/s, 5 s).
struct Pacer {
    next: Option<Instant>,
    bytes_per_sec: f64,
    every: Duration,
}

impl Pacer {
    fn new(s: &ReadSettings) -> Self {
        Pacer {
            next: None,
            bytes_per_sec: s.bytes_per_sec.max(1.0),
            every: s.min_call_interval,
        }
    }
    async fn wait(&mut self) {
        if let Some(t) = self.next {
            tokio::time::sleep_until(t).await;
        }
        self.next = Some(Instant::now() + self.every);
    }
    /// Accounts for a page of `bytes` just received.
    fn paid(&mut self, bytes: usize) {
        let due = Instant::now() + Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec);
        self.next = Some(self.next.map_or(due, |n| n.max(due)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::{record, Fault, Faulty, MemoryStream};
    use crate::ports::stream::Record;
    use bytes::Bytes;

    /// Shard "s" of `n` records (sequence numbers 10, 20, …), `page` per
    /// GetRecords call. Like moto, its iterator never ends.
    fn shard(n: u64, page: usize) -> MemoryStream {
        let records = (1..=n)
            .map(|i| record(&(i * 10).to_string(), &format!("r{i}"), 1000 + i as i64))
            .collect();
        let mut stream = MemoryStream::new("logs").with_shard("s", &[], records);
        stream.page = page;
        stream.endless_iterators = true;
        stream
    }

    /// [`shard`], whose GetRecords calls `expired` (counted from 1) answer
    /// that the iterator expired.
    fn fake(n: u64, page: usize, expired: &[usize]) -> Arc<Faulty<MemoryStream>> {
        let mut api = Faulty::new(shard(n, page));
        for &k in expired {
            api = api.on("get_records", k..=k, Fault::IteratorExpired);
        }
        Arc::new(api)
    }

    /// Runs a shard task, consuming its pages, and returns (sequence numbers, outcome).
    async fn run(api: Arc<dyn StreamApi>, extent: Extent) -> (Vec<String>, Option<Outcome>) {
        run_with(api, extent, ReadSettings::default()).await
    }

    async fn run_with(
        api: Arc<dyn StreamApi>,
        extent: Extent,
        settings: ReadSettings,
    ) -> (Vec<String>, Option<Outcome>) {
        let (pages, outcome) = run_pages(api, extent, settings).await;
        (pages.concat(), outcome)
    }

    /// Shard "s" read alone: its task, its page slots, and its events.
    fn lone_task(
        extent: Extent,
        settings: ReadSettings,
    ) -> (
        ShardTask,
        Arc<ShardPages>,
        mpsc::Receiver<(usize, ShardEvent)>,
    ) {
        let (tx, rx) = mpsc::channel(4);
        let page_slots = ShardPages::alone();
        let task = ShardTask {
            index: 0,
            shard_id: "s".into(),
            extent,
            settings,
            page_slots: page_slots.clone(),
            events: tx,
        };
        (task, page_slots, rx)
    }

    /// As [`run_with`], page by page.
    async fn run_pages(
        api: Arc<dyn StreamApi>,
        extent: Extent,
        settings: ReadSettings,
    ) -> (Vec<Vec<String>>, Option<Outcome>) {
        let (task, page_slots, mut rx) = lone_task(extent, settings);
        let h = tokio::spawn(task.run(api));
        let mut seqs = Vec::new();
        let outcome = loop {
            match rx.recv().await.expect("task ends with Done") {
                (_, ShardEvent::Page(p)) => {
                    seqs.push(p.iter().map(|r| r.sequence_number.to_string()).collect());
                    page_slots.release();
                }
                (_, ShardEvent::Done(o)) => break o,
                (_, ev) => panic!("unexpected {ev:?}"),
            }
        };
        h.await.unwrap().unwrap();
        (seqs, outcome)
    }

    fn live(start: Position, ending: Option<&str>, snapshot_ms: Option<i64>) -> Extent {
        Extent::Live {
            start,
            ending_sequence: ending.map(str::to_string),
            rules: EndRules {
                snapshot_ms,
                ..Default::default()
            },
            known_until_ms: None,
        }
    }

    fn seqs(range: std::ops::RangeInclusive<u64>) -> Vec<String> {
        range.map(|i| (i * 10).to_string()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn snapshot_stops_at_records_that_arrived_after_the_opening() {
        let (got, o) = run(
            fake(20, 3, &[]),
            live(Position::At("10".into()), None, Some(1012)),
        )
        .await;
        assert_eq!(got, seqs(1..=12));
        let o = o.unwrap();
        assert_eq!(o.next, Position::After("120".into()));
        assert!(!o.closed);
        assert_eq!(o.records, 12);
    }

    #[tokio::test(start_paused = true)]
    async fn fan_out_subscriptions_are_renewed_after_the_last_record_and_wait_while_busy() {
        let api =
            Arc::new(Faulty::new(shard(20, 3)).on("subscribe", 1..=3, Fault::SubscriptionInUse));
        let settings = ReadSettings {
            efo: Some(Arc::from("consumer-arn")),
            ..ReadSettings::default()
        };
        let extent = live(Position::After("30".into()), None, Some(i64::MAX));
        let (got, o) = run_with(api.clone(), extent, settings).await;
        // Every record once, in order, across subscriptions of two pages each.
        assert_eq!(got, seqs(4..=20));
        assert_eq!(o.unwrap().last_sequence.as_deref(), Some("200"));
        // 3 refused, then one per two pages of 3 records (17 records: 6 pages, the
        // last one followed by the caught-up event).
        let subscribes = api.calls("subscribe");
        assert!(subscribes >= 3 + 3, "{subscribes}");
        assert_eq!(api.calls("get_records"), 0, "no GetRecords with fan-out");
    }

    #[tokio::test(start_paused = true)]
    async fn expired_iterators_reseek_after_the_last_record_without_loss_or_duplicate() {
        let (got, o) = run(
            fake(20, 4, &[2, 3, 5]),
            live(Position::After("30".into()), None, Some(i64::MAX)),
        )
        .await;
        assert_eq!(got, seqs(4..=20));
        assert_eq!(o.unwrap().last_sequence.as_deref(), Some("200"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_shard_ends_at_its_ending_sequence_number_even_if_the_iterator_does_not() {
        let (got, o) = run(
            fake(9, 4, &[]),
            live(Position::At("10".into()), Some("70"), None),
        )
        .await;
        assert_eq!(got, seqs(1..=7));
        assert!(o.as_ref().unwrap().closed);
        // Started after its last record: caught up at once, closed.
        let (got, o) = run(
            fake(7, 4, &[]),
            live(Position::After("70".into()), Some("70"), None),
        )
        .await;
        assert!(got.is_empty());
        let o = o.unwrap();
        assert!(o.closed);
        assert_eq!(o.next, Position::After("70".into()));
    }

    /// Runs a shard task to its end, consuming its pages: its result, and
    /// how many records it sent.
    async fn run_result(api: Arc<dyn StreamApi>, extent: Extent) -> (Result<()>, usize) {
        let (task, page_slots, mut rx) = lone_task(extent, ReadSettings::default());
        let h = tokio::spawn(task.run(api));
        let mut sent = 0;
        while let Some((_, ev)) = rx.recv().await {
            if let ShardEvent::Page(p) = ev {
                sent += p.len();
                page_slots.release();
            }
        }
        (h.await.unwrap(), sent)
    }

    #[tokio::test(start_paused = true)]
    async fn a_replay_that_does_not_yield_what_its_range_recorded_is_refused() {
        // Records 60 to 220 (r6 … r22): 17 records, 47 bytes, the first 60.
        let replay = |records, bytes, first: &str| Extent::Replay {
            start: Position::After("50".into()),
            last: Some("220".into()),
            recorded: Some(Recorded {
                records,
                bytes,
                first: Some(first.into()),
            }),
        };
        let (r, sent) = run_result(fake(30, 7, &[]), replay(17, 47, "60")).await;
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(sent, 17);
        // `records` raised: found at the end, after the records were sent.
        let (r, sent) = run_result(fake(30, 7, &[]), replay(18, 47, "60")).await;
        let e = format!("{:#}", r.unwrap_err());
        assert!(
            e.contains("yields 17 records") && e.contains("records 18 records"),
            "{e}"
        );
        assert_eq!(sent, 17);
        // Lowered (or last_seq moved on): it stops at the first record past
        // the count, before the page holding it is sent.
        let (r, sent) = run_result(fake(30, 7, &[]), replay(5, 47, "60")).await;
        let e = format!("{:#}", r.unwrap_err());
        assert!(e.contains("past the 5 records its item records"), "{e}");
        assert_eq!(sent, 0);
        // A first record other than the recorded one stops before it is sent.
        let (r, sent) = run_result(fake(30, 7, &[]), replay(17, 47, "90")).await;
        let e = format!("{:#}", r.unwrap_err());
        assert!(
            e.contains("begins with record 60") && e.contains("first_seq 90"),
            "{e}"
        );
        assert_eq!(sent, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn replay_reads_exactly_the_fixed_range() {
        let api = fake(30, 7, &[4]);
        let (got, o) = run(
            api,
            Extent::Replay {
                start: Position::After("50".into()),
                last: Some("220".into()),
                recorded: None,
            },
        )
        .await;
        assert_eq!(got, seqs(6..=22));
        assert!(o.is_none());
        let (got, _) = run(
            fake(30, 7, &[]),
            Extent::Replay {
                start: Position::At("10".into()),
                last: None,
                recorded: None,
            },
        )
        .await;
        assert!(got.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn pages_are_paid_for_at_the_shard_byte_rate() {
        // Three 4 MiB records, one per page, at 2 MiB/s: two 2 s pauses.
        let big = Bytes::from(vec![b'x'; 4 << 20]);
        let records = (1..=3u64)
            .map(|i| Record {
                sequence_number: i.to_string(),
                sub_sequence_number: None,
                partition_key: String::new(),
                data: big.clone(),
                arrival_ms: 1,
            })
            .collect();
        let mut api = MemoryStream::new("logs").with_shard("s", &[], records);
        api.page = 1;
        let api = Arc::new(api);
        let start = Instant::now();
        let (got, _) = run(api, live(Position::At("1".into()), None, Some(i64::MAX))).await;
        assert_eq!(got.len(), 3);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(4) && took < Duration::from_secs(7),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn nodata_timeout_ends_a_quiet_shard() {
        let extent = Extent::Live {
            start: Position::At("10".into()),
            ending_sequence: None,
            rules: EndRules {
                nodata: Some(Duration::from_secs(3)),
                ..Default::default()
            },
            known_until_ms: None,
        };
        let (tx, mut rx) = mpsc::channel(16);
        let page_slots = ShardPages::alone();
        let task = ShardTask {
            index: 0,
            shard_id: "s".into(),
            extent,
            settings: ReadSettings {
                batch_size: 100,
                ..Default::default()
            },
            page_slots: page_slots.clone(),
            events: tx,
        };
        let h = tokio::spawn(task.run(fake(5, 10, &[])));
        let (mut records, mut idles) = (0, 0);
        let o = loop {
            match rx.recv().await.unwrap().1 {
                ShardEvent::Page(p) => {
                    records += p.len();
                    page_slots.release();
                }
                ShardEvent::Idle { .. } => idles += 1,
                ShardEvent::Done(o) => break o.unwrap(),
                ShardEvent::Failed => panic!(),
            }
        };
        h.await.unwrap().unwrap();
        assert_eq!(records, 5);
        assert!(
            idles >= 2,
            "a quiet shard reports its watermark while it waits"
        );
        assert_eq!(o.last_sequence.as_deref(), Some("50"));
    }

    /// Shard "s" of `n` records of 1,000 bytes, all in one page if asked.
    fn kilobyte_records(n: u64) -> MemoryStream {
        let records = (1..=n)
            .map(|i| record(&(i * 10).to_string(), &"x".repeat(1_000), 1000 + i as i64))
            .collect();
        let mut stream = MemoryStream::new("logs").with_shard("s", &[], records);
        stream.page = 10_000;
        stream.endless_iterators = true;
        stream
    }

    #[tokio::test(start_paused = true)]
    async fn each_call_asks_for_as_many_records_as_fit_the_page_budget() {
        // 1 KB records, pages of at most 20 KB: the first call asks for one
        // record (it might be 1 MiB), then as many as fit.
        let stream = kilobyte_records(100);
        let settings = ReadSettings {
            page_bytes: 20_000,
            min_call_interval: Duration::ZERO,
            ..Default::default()
        };
        let (pages, _) = run_pages(
            Arc::new(stream),
            live(Position::At("10".into()), None, Some(2_000)),
            settings,
        )
        .await;
        let sizes: Vec<usize> = pages.iter().map(Vec::len).filter(|n| *n > 0).collect();
        assert_eq!(sizes[0], 1, "{sizes:?}");
        let per_page = 20_000 / (1_000 + 1 + RECORD_OVERHEAD);
        assert!(
            sizes[1..sizes.len() - 1].iter().all(|n| *n == per_page),
            "{sizes:?}"
        );
        assert_eq!(sizes.iter().sum::<usize>(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn a_typical_record_from_the_checkpoints_sizes_the_first_call_too() {
        let stream = kilobyte_records(40);
        let typical = typical_record(10, 10_010).unwrap();
        let settings = ReadSettings {
            page_bytes: 20_000,
            min_call_interval: Duration::ZERO,
            record_sizes: Arc::new([("s".to_string(), typical)].into()),
            ..Default::default()
        };
        let (pages, _) = run_pages(
            Arc::new(stream),
            live(Position::At("10".into()), None, Some(2_000)),
            settings,
        )
        .await;
        let sizes: Vec<usize> = pages.iter().map(Vec::len).filter(|n| *n > 0).collect();
        let per_page = 20_000 / typical;
        assert_eq!(sizes, [per_page, per_page, 40 - 2 * per_page]);
    }
}
