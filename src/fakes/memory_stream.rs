//! [`MemoryStream`]: a Kinesis stream in memory, scripted by the test: its
//! shards, their lineage, their records, what has aged out, and how pages and
//! enhanced fan-out subscriptions are cut.

use crate::ports::stream::*;
use crate::position::Position;
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// One shard: what ListShards says of it, its records, and how many of
/// them have aged out of the stream's retention.
#[derive(Clone, Debug)]
struct MemoryShard {
    info: ShardInfo,
    records: Vec<Record>,
    trimmed: usize,
}

/// A stream in memory. Iterators are `<shard id>/<record index>`. A clone
/// is another client of the same stream.
#[derive(Clone)]
pub struct MemoryStream {
    info: StreamInfo,
    shards: Arc<Mutex<Vec<MemoryShard>>>,
    consumers: Arc<Mutex<BTreeSet<String>>>,
    /// Records per GetRecords page (and per fan-out event) at most.
    pub page: usize,
    /// Like moto, a closed shard's iterator never ends (the reader must stop
    /// at the shard's ending sequence number by itself).
    pub endless_iterators: bool,
    /// Events before a fan-out subscription ends (the service ends one after
    /// 5 minutes).
    pub subscription_events: usize,
}

/// A record with data `data`, as the service would return it.
pub fn record(sequence_number: &str, data: &str, arrival_ms: i64) -> Record {
    Record {
        sequence_number: sequence_number.to_string(),
        sub_sequence_number: None,
        partition_key: "k".into(),
        data: Bytes::from(data.to_string()),
        arrival_ms,
    }
}

impl MemoryStream {
    /// A stream without shards, created at 1,000 ms, keeping records 24 hours.
    pub fn new(name: &str) -> Self {
        MemoryStream {
            info: StreamInfo {
                name: name.to_string(),
                arn: format!("arn:aws:kinesis:us-east-1:123456789012:stream/{name}"),
                created_ms: 1_000,
                retention_hours: 24,
            },
            shards: Arc::default(),
            consumers: Arc::default(),
            page: 10_000,
            endless_iterators: false,
            subscription_events: 2,
        }
    }

    /// Adds an open shard with `parents` (one for a split, two for a merge)
    /// and `records`, in shard-id order.
    pub fn with_shard(self, shard_id: &str, parents: &[&str], records: Vec<Record>) -> Self {
        let info = ShardInfo {
            shard_id: shard_id.to_string(),
            parent: parents.first().map(|p| p.to_string()),
            adjacent_parent: parents.get(1).map(|p| p.to_string()),
            starting_sequence_number: records
                .first()
                .map_or("1".into(), |r| r.sequence_number.clone()),
            ending_sequence_number: None,
        };
        {
            let mut shards = self.shards.lock().unwrap();
            shards.push(MemoryShard {
                info,
                records,
                trimmed: 0,
            });
            shards.sort_by(|a, b| a.info.shard_id.cmp(&b.info.shard_id));
        }
        self
    }

    /// Records arrive in an open shard.
    pub fn put(&self, shard_id: &str, records: Vec<Record>) {
        self.shard(shard_id, |s| {
            assert!(
                s.info.ending_sequence_number.is_none(),
                "{shard_id} is closed"
            );
            s.records.extend(records)
        });
    }

    /// Closes a shard (as a split or merge does) after its last record.
    pub fn close(&self, shard_id: &str) {
        self.shard(shard_id, |s| {
            s.info.ending_sequence_number = Some(
                s.records
                    .last()
                    .map_or(s.info.starting_sequence_number.clone(), |r| {
                        r.sequence_number.clone()
                    }),
            )
        });
    }

    /// The shard's first `n` records age out of the stream's retention.
    pub fn trim(&self, shard_id: &str, n: usize) {
        self.shard(shard_id, |s| s.trimmed = n.min(s.records.len()));
    }

    fn shard<T>(&self, shard_id: &str, f: impl FnOnce(&mut MemoryShard) -> T) -> T {
        let mut shards = self.shards.lock().unwrap();
        let s = shards
            .iter_mut()
            .find(|s| s.info.shard_id == shard_id)
            .unwrap_or_else(|| panic!("no shard {shard_id}"));
        f(s)
    }

    fn find(&self, shard_id: &str) -> Result<MemoryShard, StreamError> {
        self.shards
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.info.shard_id == shard_id)
            .cloned()
            .ok_or_else(|| StreamError::NotFound(format!("shard {shard_id} not found")))
    }
}

/// The index of the first record at or after `from`, among those kept.
fn first_index(s: &MemoryShard, from: &Position) -> usize {
    s.records
        .iter()
        .enumerate()
        .skip(s.trimmed)
        .find(|(_, r)| match from {
            Position::Timestamp(t) => r.arrival_ms >= *t,
            p => p.admits(&r.sequence_number),
        })
        .map_or(s.records.len(), |(i, _)| i)
}

#[async_trait]
impl StreamApi for MemoryStream {
    async fn describe(&self) -> Result<StreamInfo, StreamError> {
        Ok(self.info.clone())
    }

    async fn list_shards(&self) -> Result<Vec<ShardInfo>, StreamError> {
        Ok(self
            .shards
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.info.clone())
            .collect())
    }

    async fn iterator(&self, shard_id: &str, from: &Position) -> Result<String, StreamError> {
        let s = self.find(shard_id)?;
        Ok(format!("{shard_id}/{}", first_index(&s, from)))
    }

    async fn get_records(&self, iterator: &str, limit: i32) -> Result<Page, StreamError> {
        let (shard_id, at) = iterator
            .rsplit_once('/')
            .and_then(|(s, i)| Some((s, i.parse::<usize>().ok()?)))
            .ok_or_else(|| StreamError::Other(anyhow::anyhow!("bad iterator {iterator:?}")))?;
        let s = self.find(shard_id)?;
        let at = at.max(s.trimmed);
        let end = (at + self.page.min(limit.max(1) as usize)).min(s.records.len());
        let drained = end == s.records.len();
        let closed = s.info.ending_sequence_number.is_some();
        Ok(Page {
            records: s.records[at..end].to_vec().into(),
            next_iterator: (!(drained && closed) || self.endless_iterators)
                .then(|| format!("{shard_id}/{end}")),
            millis_behind_latest: Some(if drained { 0 } else { 5 }),
        })
    }

    async fn oldest(&self, shard_id: &str) -> Result<Option<Record>, StreamError> {
        let s = self.find(shard_id)?;
        Ok(s.records.get(s.trimmed).cloned())
    }

    async fn consumer(&self, name: &str) -> Result<String, StreamError> {
        self.consumers.lock().unwrap().insert(name.to_string());
        Ok(format!("{}/consumer/{name}", self.info.arn))
    }

    async fn deregister_consumer(&self, name: &str) -> Result<bool, StreamError> {
        Ok(self.consumers.lock().unwrap().remove(name))
    }

    async fn subscribe(
        &self,
        _consumer_arn: &str,
        shard_id: &str,
        from: &Position,
    ) -> Result<Box<dyn Subscription>, StreamError> {
        let s = self.find(shard_id)?;
        let at = first_index(&s, from);
        Ok(Box::new(MemorySubscription {
            records: s.records[at..].to_vec(),
            closed: s.info.ending_sequence_number.is_some(),
            page: self.page,
            events_left: self.subscription_events,
        }))
    }
}

/// A fan-out subscription: the shard's records from its start, a page per
/// event, until its events run out.
struct MemorySubscription {
    records: Vec<Record>,
    closed: bool,
    page: usize,
    events_left: usize,
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Result<Option<Page>, StreamError> {
        if self.events_left == 0 {
            return Ok(None);
        }
        self.events_left -= 1;
        let n = self.page.min(self.records.len());
        let records: Vec<Record> = self.records.drain(..n).collect();
        let drained = self.records.is_empty();
        Ok(Some(Page {
            next_iterator: (!(drained && self.closed)).then(|| {
                records
                    .last()
                    .map_or("-".into(), |r| r.sequence_number.clone())
            }),
            millis_behind_latest: Some(if drained { 0 } else { 5 }),
            records: records.into(),
        }))
    }
}
