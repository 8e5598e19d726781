//! [`Faulty`]: wraps any port and makes chosen calls go wrong the ways a
//! network and a service do: refused, timed out before or after being
//! applied, applied twice by a retry, or answered from a stale read.

use crate::ports::checkpoint::*;
use crate::ports::items::{Item, ItemTable, TableInfo};
use crate::ports::objects::{ObjectStore, Part};
use crate::ports::stream::*;
use crate::ports::SinkError;
use crate::position::Position;
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::HashMap;
use std::future::Future;
use std::ops::{Bound, RangeBounds};
use std::sync::Mutex;

/// How a call goes wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Refused before it was applied (a service error).
    Fail,
    /// Timed out before it was applied: the caller cannot tell it from `Lost`.
    Dropped,
    /// Applied, but its answer was lost (a timeout).
    Lost,
    /// Applied, its answer lost, and applied again by the client's retry,
    /// whose answer arrives.
    AppliedTwice,
    /// A read answered as if recent writes had not happened (`header` and
    /// `latest`: nothing there yet).
    StaleRead,
    /// GetRecords: the shard iterator expired.
    IteratorExpired,
    /// SubscribeToShard: another subscription of the consumer is active.
    SubscriptionInUse,
    /// Applied, and answered after this many milliseconds (a slow service).
    Slow(u64),
}

/// Every port method a fault can be put on.
const METHODS: [&str; 29] = [
    "latest",
    "header",
    "lowest_unfinished",
    "headers",
    "shards",
    "task_leases",
    "create",
    "add_shards",
    "acquire",
    "renew",
    "fix_shards",
    "finish",
    "describe",
    "list_shards",
    "iterator",
    "get_records",
    "oldest",
    "consumer",
    "deregister_consumer",
    "subscribe",
    "put_object",
    "create_upload",
    "upload_part",
    "complete",
    "abort",
    "head_etag",
    "uploads_of",
    "batch_put",
    "add_once",
];

struct Planned {
    method: &'static str,
    calls: (usize, usize),
    fault: Fault,
}

/// Decides the fate of each call when it is made, and may hold it until
/// then: the deterministic simulation's scheduler (`simulation.rs`). A call
/// whose turn never comes is a process killed at that point.
#[async_trait]
pub trait Gate: Send + Sync {
    async fn turn(&self, method: &'static str) -> Option<Fault>;
}

/// A port whose chosen calls fail. Calls are counted per method from 1.
pub struct Faulty<T> {
    inner: T,
    planned: Vec<Planned>,
    calls: Mutex<HashMap<&'static str, usize>>,
    gate: Option<std::sync::Arc<dyn Gate>>,
}

impl<T> Faulty<T> {
    pub fn new(inner: T) -> Self {
        Faulty {
            inner,
            planned: Vec::new(),
            calls: Mutex::default(),
            gate: None,
        }
    }

    /// Every call waits for its turn from `gate`, which also picks its fault
    /// (the planned faults are then not used).
    pub fn gated(inner: T, gate: std::sync::Arc<dyn Gate>) -> Self {
        Faulty {
            gate: Some(gate),
            ..Faulty::new(inner)
        }
    }

    /// Makes calls `calls` (counted from 1) of `method` go wrong as `fault`.
    pub fn on(
        mut self,
        method: &'static str,
        calls: impl RangeBounds<usize>,
        fault: Fault,
    ) -> Self {
        assert!(METHODS.contains(&method), "no port method {method}");
        let from = match calls.start_bound() {
            Bound::Included(&n) => n,
            Bound::Excluded(&n) => n + 1,
            Bound::Unbounded => 1,
        };
        let to = match calls.end_bound() {
            Bound::Included(&n) => n,
            Bound::Excluded(&n) => n - 1,
            Bound::Unbounded => usize::MAX,
        };
        self.planned.push(Planned {
            method,
            calls: (from, to),
            fault,
        });
        self
    }

    /// How many times `method` was called.
    pub fn calls(&self, method: &str) -> usize {
        self.calls.lock().unwrap().get(method).copied().unwrap_or(0)
    }

    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// Counts a call of `method`; the fault planned for it (or the gate's), if any.
    async fn next(&self, method: &'static str) -> Option<Fault> {
        let n = {
            let mut calls = self.calls.lock().unwrap();
            let n = calls.entry(method).or_insert(0);
            *n += 1;
            *n
        };
        if let Some(g) = &self.gate {
            return g.turn(method).await;
        }
        self.planned
            .iter()
            .find(|p| p.method == method && (p.calls.0..=p.calls.1).contains(&n))
            .map(|p| p.fault)
    }

    /// Counts a call of `method` and runs it as the fault planned for it says.
    async fn call<R, E, Fut>(
        &self,
        method: &'static str,
        call: impl Fn() -> Fut,
        injected: impl Fn(Fault, String) -> E,
    ) -> Result<R, E>
    where
        Fut: Future<Output = Result<R, E>>,
    {
        Self::run(method, self.next(method).await, call, injected).await
    }

    /// Runs `call` as `fault` says; `injected` makes the port's error.
    async fn run<R, E, Fut>(
        method: &'static str,
        fault: Option<Fault>,
        call: impl Fn() -> Fut,
        injected: impl Fn(Fault, String) -> E,
    ) -> Result<R, E>
    where
        Fut: Future<Output = Result<R, E>>,
    {
        match fault {
            None => call().await,
            Some(Fault::Fail) => Err(injected(
                Fault::Fail,
                format!("injected: {method} was refused"),
            )),
            Some(Fault::Dropped) => Err(injected(
                Fault::Dropped,
                format!("injected: {method} timed out before it was applied"),
            )),
            Some(Fault::Lost) => {
                let _ = call().await;
                Err(injected(
                    Fault::Lost,
                    format!("injected: {method}'s answer was lost"),
                ))
            }
            Some(Fault::AppliedTwice) => {
                let _ = call().await;
                call().await
            }
            Some(Fault::Slow(ms)) => {
                let answer = call().await;
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                answer
            }
            Some(f) => panic!("{f:?} does not apply to {method}"),
        }
    }
}

fn store_error(_: Fault, m: String) -> StoreError {
    StoreError::Other(anyhow::anyhow!(m))
}

fn stream_error(_: Fault, m: String) -> StreamError {
    StreamError::Other(anyhow::anyhow!(m))
}

/// A refusal ends a load; no answer is for the sink to retry.
fn sink_error(f: Fault, m: String) -> SinkError {
    match f {
        Fault::Fail => SinkError::Other(anyhow::anyhow!(m)),
        _ => SinkError::Transient(anyhow::anyhow!(m)),
    }
}

#[async_trait]
impl<T: CheckpointStore> CheckpointStore for Faulty<T> {
    async fn latest(&self, key: &LogicalKey) -> Result<Option<IterationHeader>, StoreError> {
        match self.next("latest").await {
            Some(Fault::StaleRead) => Ok(None),
            f => Self::run("latest", f, || self.inner.latest(key), store_error).await,
        }
    }
    async fn header(
        &self,
        key: &LogicalKey,
        n: u64,
    ) -> Result<Option<IterationHeader>, StoreError> {
        match self.next("header").await {
            Some(Fault::StaleRead) => Ok(None),
            f => Self::run("header", f, || self.inner.header(key, n), store_error).await,
        }
    }
    async fn lowest_unfinished(
        &self,
        key: &LogicalKey,
        from: u64,
        to: u64,
    ) -> Result<Option<u64>, StoreError> {
        let call = || self.inner.lowest_unfinished(key, from, to);
        self.call("lowest_unfinished", call, store_error).await
    }
    async fn headers(&self, key: &LogicalKey) -> Result<Vec<IterationHeader>, StoreError> {
        self.call("headers", || self.inner.headers(key), store_error)
            .await
    }
    async fn shards(&self, key: &LogicalKey, n: u64) -> Result<Vec<ShardCheckpoint>, StoreError> {
        self.call("shards", || self.inner.shards(key, n), store_error)
            .await
    }
    async fn task_leases(&self, key: &LogicalKey, n: u64) -> Result<Vec<TaskLease>, StoreError> {
        self.call(
            "task_leases",
            || self.inner.task_leases(key, n),
            store_error,
        )
        .await
    }
    async fn create(
        &self,
        key: &LogicalKey,
        header: &IterationHeader,
        shards: &[ShardCheckpoint],
    ) -> Result<(), StoreError> {
        let call = || self.inner.create(key, header, shards);
        self.call("create", call, store_error).await
    }
    async fn add_shards(
        &self,
        key: &LogicalKey,
        n: u64,
        holder: &Holder,
        shards: &[ShardCheckpoint],
    ) -> Result<(), StoreError> {
        let call = || self.inner.add_shards(key, n, holder, shards);
        self.call("add_shards", call, store_error).await
    }
    async fn acquire(
        &self,
        key: &LogicalKey,
        n: u64,
        holder: &Holder,
        now_ms: i64,
        expires_ms: i64,
        takeover: bool,
    ) -> Result<Lease, StoreError> {
        let call = || {
            self.inner
                .acquire(key, n, holder, now_ms, expires_ms, takeover)
        };
        self.call("acquire", call, store_error).await
    }
    async fn renew(
        &self,
        key: &LogicalKey,
        n: u64,
        holder: &Holder,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        let call = || self.inner.renew(key, n, holder, expires_ms);
        self.call("renew", call, store_error).await
    }
    async fn fix_shards(
        &self,
        key: &LogicalKey,
        n: u64,
        fixes: &[ShardFix],
    ) -> Result<(), StoreError> {
        let call = || self.inner.fix_shards(key, n, fixes);
        self.call("fix_shards", call, store_error).await
    }
    async fn finish(
        &self,
        key: &LogicalKey,
        n: u64,
        holder: &Holder,
        state: IterationState,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let call = || self.inner.finish(key, n, holder, state, now_ms);
        self.call("finish", call, store_error).await
    }
}

#[async_trait]
impl<T: StreamApi> StreamApi for Faulty<T> {
    async fn describe(&self) -> Result<StreamInfo, StreamError> {
        self.call("describe", || self.inner.describe(), stream_error)
            .await
    }
    async fn list_shards(&self) -> Result<Vec<ShardInfo>, StreamError> {
        self.call("list_shards", || self.inner.list_shards(), stream_error)
            .await
    }
    async fn iterator(&self, shard_id: &str, from: &Position) -> Result<String, StreamError> {
        let call = || self.inner.iterator(shard_id, from);
        self.call("iterator", call, stream_error).await
    }
    async fn get_records(&self, iterator: &str, limit: i32) -> Result<Page, StreamError> {
        match self.next("get_records").await {
            Some(Fault::IteratorExpired) => Err(StreamError::IteratorExpired),
            f => {
                let call = || self.inner.get_records(iterator, limit);
                Self::run("get_records", f, call, stream_error).await
            }
        }
    }
    async fn oldest(&self, shard_id: &str) -> Result<Option<Record>, StreamError> {
        self.call("oldest", || self.inner.oldest(shard_id), stream_error)
            .await
    }
    async fn consumer(&self, name: &str) -> Result<String, StreamError> {
        self.call("consumer", || self.inner.consumer(name), stream_error)
            .await
    }
    async fn deregister_consumer(&self, name: &str) -> Result<bool, StreamError> {
        let call = || self.inner.deregister_consumer(name);
        self.call("deregister_consumer", call, stream_error).await
    }
    async fn subscribe(
        &self,
        consumer_arn: &str,
        shard_id: &str,
        from: &Position,
    ) -> Result<Box<dyn Subscription>, StreamError> {
        match self.next("subscribe").await {
            Some(Fault::SubscriptionInUse) => Err(StreamError::SubscriptionInUse(format!(
                "injected: another subscription to {shard_id} is active"
            ))),
            f => {
                let call = || self.inner.subscribe(consumer_arn, shard_id, from);
                Self::run("subscribe", f, call, stream_error).await
            }
        }
    }
}

#[async_trait]
impl<T: ObjectStore> ObjectStore for Faulty<T> {
    async fn put_object(&self, key: &str, body: Bytes) -> Result<(), SinkError> {
        let call = || self.inner.put_object(key, body.clone());
        self.call("put_object", call, sink_error).await
    }
    async fn create_upload(&self, key: &str) -> Result<String, SinkError> {
        let call = || self.inner.create_upload(key);
        self.call("create_upload", call, sink_error).await
    }
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<Part, SinkError> {
        let call = || self.inner.upload_part(key, upload_id, number, body.clone());
        self.call("upload_part", call, sink_error).await
    }
    async fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[Part],
    ) -> Result<bool, SinkError> {
        // The port answers a lost answer with `Ok(false)`.
        match self.next("complete").await {
            Some(Fault::Dropped) => Ok(false),
            Some(Fault::Lost) => self
                .inner
                .complete(key, upload_id, parts)
                .await
                .map(|_| false),
            f => {
                let call = || self.inner.complete(key, upload_id, parts);
                Self::run("complete", f, call, sink_error).await
            }
        }
    }
    async fn abort(&self, key: &str, upload_id: &str) -> Result<(), SinkError> {
        self.call("abort", || self.inner.abort(key, upload_id), sink_error)
            .await
    }
    async fn head_etag(&self, key: &str) -> Result<Option<String>, SinkError> {
        self.call("head_etag", || self.inner.head_etag(key), sink_error)
            .await
    }
    async fn uploads_of(&self, key: &str) -> Result<Vec<(String, i64)>, SinkError> {
        self.call("uploads_of", || self.inner.uploads_of(key), sink_error)
            .await
    }
}

#[async_trait]
impl<T: ItemTable> ItemTable for Faulty<T> {
    async fn describe(&self) -> Result<TableInfo, SinkError> {
        self.call("describe", || self.inner.describe(), sink_error)
            .await
    }
    async fn batch_put(&self, items: Vec<Item>) -> Result<Vec<Item>, SinkError> {
        let call = || self.inner.batch_put(items.clone());
        self.call("batch_put", call, sink_error).await
    }
    async fn add_once(
        &self,
        key: Item,
        adds: Item,
        sets: Item,
        tag: &str,
    ) -> Result<bool, SinkError> {
        let call = || {
            self.inner
                .add_once(key.clone(), adds.clone(), sets.clone(), tag)
        };
        self.call("add_once", call, sink_error).await
    }
}
