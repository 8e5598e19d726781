//! Reading one shard: from its start position to its end rule (a live read),
//! or exactly its fixed range again (a replay).
//!
//! A shard task sends its pages, in order, to the merge; it holds at most
//! [`PAGES_IN_FLIGHT`] pages at a time (a permit per page, given back by the
//! merge when the page is written), so memory is bounded by pages, not by the
//! stream.

use crate::position::{seq_cmp, Position};
use crate::stream::{Record, StreamApi, StreamError};
use anyhow::{anyhow, Context, Result};
use std::cmp::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};

/// Pages a shard may have fetched but not yet written.
pub const PAGES_IN_FLIGHT: usize = 2;
/// Kinesis allows 5 GetRecords calls per second per shard.
const MIN_CALL_INTERVAL: Duration = Duration::from_millis(200);
/// How often a caught-up shard polls for new records.
const IDLE_POLL: Duration = Duration::from_millis(1000);
/// Records arriving after a caught-up poll are assumed to carry an arrival
/// time no earlier than this much before the poll (clock skew allowance).
const WATERMARK_MARGIN_MS: i64 = 1000;

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

/// What to read from one shard.
#[derive(Clone, Debug)]
pub enum Target {
    Live {
        start: Position,
        /// The shard's last sequence number if it is closed (from ListShards).
        ending_sequence: Option<String>,
        rules: EndRules,
    },
    /// The range is fixed: from `start` up to and including `last`.
    Replay {
        start: Position,
        last: Option<String>,
    },
}

/// Where a live read ended: the boundary to fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub last_sequence: Option<String>,
    pub next: Position,
    pub closed: bool,
    pub records: u64,
    pub bytes: u64,
}

#[derive(Debug)]
pub enum ShardEvent {
    Page(Vec<Record>),
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

pub struct ShardTask {
    pub index: usize,
    pub shard_id: String,
    pub target: Target,
    pub batch_size: i32,
    pub permits: Arc<Semaphore>,
    pub events: mpsc::Sender<(usize, ShardEvent)>,
}

impl ShardTask {
    pub async fn run(self, api: Arc<dyn StreamApi>) -> Result<()> {
        let id = self.shard_id.clone();
        let r = match self.target.clone() {
            Target::Live {
                start,
                ending_sequence,
                rules,
            } => self.live(api.as_ref(), start, ending_sequence, rules).await,
            Target::Replay { start, last } => self.replay(api.as_ref(), start, last).await,
        };
        r.with_context(|| format!("reading shard {id}"))
    }

    /// Sends an event; `false` when the merge has stopped (nothing more to do).
    async fn send(&self, ev: ShardEvent) -> bool {
        if matches!(ev, ShardEvent::Page(_)) {
            match self.permits.acquire().await {
                Ok(p) => p.forget(),
                Err(_) => return false,
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
    ) -> Result<()> {
        let mut last: Option<String> = None;
        let (mut records, mut bytes) = (0u64, 0u64);
        let outcome = |last: &Option<String>, closed: bool, records: u64, bytes: u64| Outcome {
            next: last.clone().map_or_else(|| start.clone(), Position::After),
            last_sequence: last.clone(),
            closed,
            records,
            bytes,
        };
        // A closed shard whose end is already behind the start has nothing left.
        if let Some(end) = &ending {
            let exhausted = match &start {
                Position::After(s) => seq_cmp(s, end) != Ordering::Less,
                Position::At(s) => seq_cmp(s, end) == Ordering::Greater,
                Position::Timestamp(_) => false,
            };
            if exhausted {
                self.send(ShardEvent::Done(Some(outcome(&None, true, 0, 0))))
                    .await;
                return Ok(());
            }
        }
        let mut iterator = Some(api.iterator(&self.shard_id, &start).await?);
        let mut last_data = Instant::now();
        let mut last_call: Option<Instant> = None;
        let closed = loop {
            let Some(it) = iterator.take() else {
                break true;
            };
            if rules.deadline.is_some_and(|d| Instant::now() >= d) {
                break false;
            }
            pace(&mut last_call, MIN_CALL_INTERVAL).await;
            let asked_ms = crate::now_ms();
            let page = match api.get_records(&it, self.batch_size).await {
                Ok(p) => p,
                Err(StreamError::IteratorExpired) => {
                    // e.g. stdout blocked by a slow mapper for over 5 minutes:
                    // seek again just after the last record we passed on.
                    let from = last.clone().map_or_else(|| start.clone(), Position::After);
                    log::info!(
                        "shard {}: iterator expired, seeking to {from}",
                        self.shard_id
                    );
                    iterator = Some(api.iterator(&self.shard_id, &from).await?);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let caught_up = page.records.is_empty() && page.millis_behind_latest == Some(0);
            let mut batch = Vec::with_capacity(page.records.len());
            let mut stop = false;
            let mut reached_end = false;
            for r in page.records {
                if !start.admits(&r.sequence_number)
                    || last
                        .as_deref()
                        .is_some_and(|l| seq_cmp(&r.sequence_number, l) != Ordering::Greater)
                {
                    continue; // never emit a record twice, whatever the service sends
                }
                if rules.snapshot_ms.is_some_and(|t| r.arrival_ms > t) {
                    stop = true;
                    break;
                }
                if let Some(end) = &ending {
                    match seq_cmp(&r.sequence_number, end) {
                        Ordering::Greater => {
                            reached_end = true;
                            break;
                        }
                        Ordering::Equal => reached_end = true,
                        Ordering::Less => {}
                    }
                }
                records += 1;
                bytes += r.data.len() as u64;
                last = Some(r.sequence_number.clone());
                batch.push(r);
                if reached_end {
                    break;
                }
            }
            if !batch.is_empty() {
                last_data = Instant::now();
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
            iterator = page.next_iterator;
            if iterator.is_none() {
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
                let mut wait = IDLE_POLL;
                if let Some(d) = rules.deadline {
                    wait = wait.min(d.saturating_duration_since(Instant::now()));
                }
                tokio::time::sleep(wait).await;
            }
        };
        self.send(ShardEvent::Done(Some(outcome(
            &last, closed, records, bytes,
        ))))
        .await;
        Ok(())
    }

    async fn replay(
        &self,
        api: &dyn StreamApi,
        start: Position,
        last: Option<String>,
    ) -> Result<()> {
        let Some(last) = last else {
            self.send(ShardEvent::Done(None)).await;
            return Ok(());
        };
        let mut emitted: Option<String> = None;
        let mut iterator = Some(api.iterator(&self.shard_id, &start).await?);
        let mut last_call: Option<Instant> = None;
        loop {
            let Some(it) = iterator.take() else {
                return Err(missing(&last, &emitted));
            };
            pace(&mut last_call, MIN_CALL_INTERVAL).await;
            let page = match api.get_records(&it, self.batch_size).await {
                Ok(p) => p,
                Err(StreamError::IteratorExpired) => {
                    let from = emitted
                        .clone()
                        .map_or_else(|| start.clone(), Position::After);
                    iterator = Some(api.iterator(&self.shard_id, &from).await?);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let caught_up = page.records.is_empty() && page.millis_behind_latest == Some(0);
            let mut batch = Vec::with_capacity(page.records.len());
            let mut done = false;
            for r in page.records {
                if !start.admits(&r.sequence_number)
                    || emitted
                        .as_deref()
                        .is_some_and(|l| seq_cmp(&r.sequence_number, l) != Ordering::Greater)
                {
                    continue;
                }
                match seq_cmp(&r.sequence_number, &last) {
                    Ordering::Greater => {
                        return Err(missing(&last, &emitted));
                    }
                    Ordering::Equal => done = true,
                    Ordering::Less => {}
                }
                emitted = Some(r.sequence_number.clone());
                batch.push(r);
                if done {
                    break;
                }
            }
            if !batch.is_empty() && !self.send(ShardEvent::Page(batch)).await {
                return Ok(());
            }
            if done {
                self.send(ShardEvent::Done(None)).await;
                return Ok(());
            }
            if caught_up {
                return Err(missing(&last, &emitted));
            }
            iterator = page.next_iterator;
        }
    }
}

fn missing(last: &str, emitted: &Option<String>) -> anyhow::Error {
    anyhow!(
        "the iteration's fixed last record {last} is no longer in the shard (read up to {}); \
         the stream no longer holds this iteration's records",
        emitted.as_deref().unwrap_or("nothing")
    )
}

async fn pace(last_call: &mut Option<Instant>, every: Duration) {
    if let Some(t) = *last_call {
        let next = t + every;
        if next > Instant::now() {
            tokio::time::sleep_until(next.into()).await;
        }
    }
    *last_call = Some(Instant::now());
}
