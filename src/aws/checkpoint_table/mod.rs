//! [`CheckpointStore`] on a DynamoDB table: the item layout and its
//! conditional writes.
//!
//! The table has a string hash key and a string range key whose *names* the
//! user chooses (EMR's `HashKey` / `RangeKey` by default). Three kinds of
//! items (their layout is in `codec`): iteration headers, the shards of an
//! iteration, and map tasks' leases.
//!
//! Headers of one logical name share a partition key and sort by number, so
//! the latest iteration is one Query (descending, limit 1) and `next` reads
//! only headers from the lowest possibly-unfinished one. Each iteration's
//! shards are one Query of their own partition key (a wide iteration's, one
//! per key it is spread over); a boundary write touches one small shard
//! item, never a big document.

mod admin;
mod codec;

pub use codec::MAX_ITERATION;

use super::{code, full};
use crate::config::TableSettings;
use crate::ports::checkpoint::{
    CheckpointStore, Holder, IterationHeader, IterationState, Lease, LogicalKey, ShardCheckpoint,
    ShardFix, StoreError, TaskLease,
};
use anyhow::anyhow;
use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{
    AttributeValue as AV, ConditionCheck, Put, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use codec::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

/// TransactWriteItems takes at most 100 items.
const TRANSACTION_ITEMS: usize = 100;

/// Transactions at once when creating an iteration's shard items needs
/// several: enough to open a thousand-shard iteration in two round trips'
/// time, few enough not to meet the table's throttling all at once.
///
/// Only writes that share no item may overlap: DynamoDB cancels a
/// transaction that touches an item another transaction is writing at that
/// moment (TransactionConflict), and every fix checks the same lease item.
/// So fixes go one transaction after another, and ends that arrive one by
/// one are batched by the run's group commit instead.
const TRANSACTIONS_IN_FLIGHT: usize = 8;

/// Runs the writes, [`TRANSACTIONS_IN_FLIGHT`] at a time; the first error
/// ends it (the writes already made stay, as they would one by one).
async fn all_of<F>(writes: impl Iterator<Item = F>) -> Result<(), StoreError>
where
    F: std::future::Future<Output = Result<(), StoreError>>,
{
    use futures_util::stream::{self, StreamExt, TryStreamExt};
    stream::iter(writes)
        .buffer_unordered(TRANSACTIONS_IN_FLIGHT)
        .try_collect::<()>()
        .await
}

/// Tries after a transaction conflict. A conflict means another
/// transaction was writing one of our items (our own lease renewal and a
/// fix, say); nothing of ours was written, and it lasts as long as that
/// transaction, tens of milliseconds. Pauses of 20 ms doubling: 1.3 s in all.
const CONFLICT_TRIES: u32 = 7;

fn conflict_pause(attempt: u32) -> std::time::Duration {
    std::time::Duration::from_millis(20 << attempt)
}

/// Splits fixes into transactions of at most [`TRANSACTION_ITEMS`] items: one
/// lease check per distinct holder, and one update per shard.
fn fix_chunks(fixes: &[ShardFix]) -> Vec<&[ShardFix]> {
    let mut chunks = Vec::new();
    let (mut start, mut holders): (usize, Vec<&Holder>) = (0, Vec::new());
    for (n, f) in fixes.iter().enumerate() {
        let new_holder = !holders.contains(&&f.holder);
        let items = holders.len() + usize::from(new_holder) + (n - start + 1);
        if items > TRANSACTION_ITEMS {
            chunks.push(&fixes[start..n]);
            start = n;
            holders.clear();
        }
        if !holders.contains(&&f.holder) {
            holders.push(&f.holder);
        }
    }
    if start < fixes.len() {
        chunks.push(&fixes[start..]);
    }
    chunks
}

pub struct DynamoStore {
    client: Client,
    t: TableSettings,
    usage: Usage,
    /// How many partition keys each iteration seen so far spreads its shards
    /// over; fixed when the iteration is created.
    partitions: std::sync::Mutex<HashMap<(LogicalKey, u64), u32>>,
}

/// Requests this store sent, for the cost figures in the README (shown with
/// `RUST_LOG=debug`). Every item here is under 1 KB.
#[derive(Default)]
struct Usage {
    get_item: AtomicU64,
    query_pages: AtomicU64,
    query_items: AtomicU64,
    update_item: AtomicU64,
    transactions: AtomicU64,
    transaction_items: AtomicU64,
}

fn bump(c: &AtomicU64, by: u64) {
    c.fetch_add(by, AtomicOrdering::Relaxed);
}

fn is_condition_failure<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R>(
    e: &SdkError<E, R>,
) -> bool {
    matches!(e, SdkError::ServiceError(se) if code(se.err()) == "ConditionalCheckFailedException")
}

/// A single-item write refused because a transaction was writing the item.
fn in_conflict<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    matches!(e, SdkError::ServiceError(se) if code(se.err()) == "TransactionConflictException")
}

/// Why each item of a cancelled transaction was cancelled (`None` for one
/// that was fine), or `None` if the transaction was not cancelled.
fn cancellation_reasons<R>(
    e: &SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError, R>,
) -> Option<Vec<String>> {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as E;
    match e {
        SdkError::ServiceError(se) => match se.err() {
            E::TransactionCanceledException(c) => Some(
                c.cancellation_reasons()
                    .iter()
                    .map(|r| r.code().unwrap_or("None").to_string())
                    .collect(),
            ),
            _ => None,
        },
        _ => None,
    }
}

/// Attempts per checkpoint-table call. Map tasks start by the hundred and
/// each makes a few calls at once, so a provisioned table throttles them in
/// a burst; five attempts (about 7 s of backoff) ran out in a hundred-task
/// test, and a task that gives up fails its job. Ten attempts back off for
/// about a minute, like the AWS SDK for Java's DynamoDB client (10 retries).
const TABLE_ATTEMPTS: u32 = 10;

impl DynamoStore {
    fn codec(&self) -> Codec<'_> {
        Codec { t: &self.t }
    }

    pub fn new(config: &aws_config::SdkConfig, t: TableSettings) -> Self {
        DynamoStore {
            client: Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(config)
                    .interceptor(super::counters::Counter)
                    .retry_config(RetryConfig::standard().with_max_attempts(TABLE_ATTEMPTS))
                    .build(),
            ),
            t,
            usage: Usage::default(),
            partitions: Default::default(),
        }
    }

    fn remember_partitions(&self, k: &LogicalKey, i: u64, parts: u32) {
        let mut known = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        known.insert((k.clone(), i), parts);
    }

    /// How many partition keys iteration `i`'s shards are spread over: known
    /// from its creation or a read of its shards, else from the first item
    /// under its shards' key (a wide iteration's layout item sorts first).
    async fn partitions_of(&self, k: &LogicalKey, i: u64) -> Result<u32, StoreError> {
        let known = {
            let known = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
            known.get(&(k.clone(), i)).copied()
        };
        if let Some(parts) = known {
            return Ok(parts);
        }
        let mut parts = 1;
        self.query(shard_pk(k, i), None, false, true, Some(1), |item| {
            parts = self.codec().parse_layout(item, i)?.unwrap_or(1);
            Ok(false)
        })
        .await?;
        self.remember_partitions(k, i, parts);
        Ok(parts)
    }

    /// Every shard item under one partition key of iteration `i`; the layout
    /// item, if there, gives how many keys there are.
    async fn shards_under(
        &self,
        pk: String,
        i: u64,
    ) -> Result<(Vec<ShardCheckpoint>, Option<u32>), StoreError> {
        let (mut all, mut parts) = (Vec::new(), None);
        self.query(pk, None, false, true, None, |item| {
            match self.codec().parse_layout(item, i)? {
                Some(p) => parts = Some(p),
                None => all.push(self.codec().parse_shard(item)?),
            }
            Ok(true)
        })
        .await?;
        Ok((all, parts))
    }

    /// The requests sent so far, e.g. `GetItem 2, Query 3 pages/12 items, …`.
    pub fn usage(&self) -> String {
        let u = &self.usage;
        let g = |c: &AtomicU64| c.load(AtomicOrdering::Relaxed);
        format!(
            "GetItem {}, Query {} pages/{} items, UpdateItem {}, TransactWriteItems {} calls/{} items",
            g(&u.get_item),
            g(&u.query_pages),
            g(&u.query_items),
            g(&u.update_item),
            g(&u.transactions),
            g(&u.transaction_items)
        )
    }

    /// One item, read consistently.
    async fn get(&self, key: Item) -> Result<Option<Item>, StoreError> {
        bump(&self.usage.get_item, 1);
        let out = self
            .client
            .get_item()
            .table_name(&self.t.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| full(e).context(format!("reading table {}", self.t.table)))?;
        Ok(out.item)
    }

    /// Pages through a Query, calling `each` until it returns false.
    async fn query(
        &self,
        pk: String,
        between: Option<(String, String)>,
        filter_unfinished: bool,
        forward: bool,
        limit: Option<i32>,
        mut each: impl FnMut(&Item) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let mut start: Option<Item> = None;
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.t.table)
                .consistent_read(true)
                .scan_index_forward(forward)
                .expression_attribute_names("#h", &self.t.hash_key)
                .expression_attribute_values(":h", s(pk.clone()))
                .set_exclusive_start_key(start.take())
                .set_limit(limit);
            q = match &between {
                Some((a, b)) => q
                    .key_condition_expression("#h = :h AND #r BETWEEN :a AND :b")
                    .expression_attribute_names("#r", &self.t.range_key)
                    .expression_attribute_values(":a", s(a))
                    .expression_attribute_values(":b", s(b)),
                None => q.key_condition_expression("#h = :h"),
            };
            if filter_unfinished {
                q = q
                    .filter_expression("#st <> :ok")
                    .expression_attribute_names("#st", "state")
                    .expression_attribute_values(":ok", s("succeeded"));
            }
            let out = q
                .send()
                .await
                .map_err(|e| full(e).context(format!("querying table {}", self.t.table)))?;
            bump(&self.usage.query_pages, 1);
            bump(&self.usage.query_items, out.items().len() as u64);
            for item in out.items() {
                if !each(item)? {
                    return Ok(());
                }
            }
            match out.last_evaluated_key() {
                Some(k) if limit.is_none() || filter_unfinished => start = Some(k.clone()),
                _ => return Ok(()),
            }
        }
    }

    async fn transact(&self, items: Vec<TransactWriteItem>, what: &str) -> Result<(), StoreError> {
        let mut attempt = 0;
        loop {
            bump(&self.usage.transactions, 1);
            bump(&self.usage.transaction_items, items.len() as u64);
            let e = match self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let reasons = cancellation_reasons(&e).unwrap_or_default();
            let failed: Vec<usize> = (0..reasons.len())
                .filter(|i| reasons[*i] == "ConditionalCheckFailed")
                .collect();
            if !failed.is_empty() {
                return Err(StoreError::Conflict(format!(
                    "{what} (conditions failed on items {failed:?})"
                )));
            }
            attempt += 1;
            if reasons.iter().any(|r| r == "TransactionConflict") && attempt < CONFLICT_TRIES {
                log::debug!("{what}: a transaction conflict, trying again");
                tokio::time::sleep(conflict_pause(attempt)).await;
                continue;
            }
            return Err(StoreError::Other(full(e).context(what.to_string())));
        }
    }

    fn conditional_put(&self, item: Item) -> TransactWriteItem {
        TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(&self.t.table)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(#h)")
                    .expression_attribute_names("#h", &self.t.hash_key)
                    .build()
                    .expect("complete"),
            )
            .build()
    }

    /// A conditional UpdateItem of the item at `key` (of iteration `i`).
    async fn update_at(
        &self,
        key: Item,
        i: u64,
        update: &str,
        condition: &str,
        names: &[(&str, &str)],
        values: Vec<(&str, AV)>,
    ) -> Result<(), StoreError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.t.table)
            .set_key(Some(key))
            .update_expression(update);
        if !condition.is_empty() {
            req = req.condition_expression(condition);
        }
        // DynamoDB rejects names that the expressions do not use.
        if condition.contains("#h") {
            req = req.expression_attribute_names("#h", &self.t.hash_key);
        }
        for (a, b) in names {
            req = req.expression_attribute_names(*a, *b);
        }
        for (a, v) in values {
            req = req.expression_attribute_values(a, v);
        }
        let mut attempt = 0;
        loop {
            bump(&self.usage.update_item, 1);
            match req.clone().send().await {
                Ok(_) => return Ok(()),
                Err(e) if is_condition_failure(&e) => {
                    return Err(StoreError::Conflict(format!("iteration {i}: {condition}")))
                }
                Err(e) if in_conflict(&e) && attempt + 1 < CONFLICT_TRIES => {
                    attempt += 1;
                    log::debug!("iteration {i}: an update met a transaction, trying again");
                    tokio::time::sleep(conflict_pause(attempt)).await;
                }
                Err(e) => {
                    return Err(StoreError::Other(full(e).context(format!(
                        "updating iteration {i} in table {}",
                        self.t.table
                    ))))
                }
            }
        }
    }

    async fn take_over_once(
        &self,
        k: &LogicalKey,
        i: u64,
        holder: &Holder,
        (now_ms, expires_ms): (i64, i64),
        (update, condition): (&str, &str),
    ) -> Result<(), StoreError> {
        let names = [
            ("#o", "owner"),
            ("#exp", "lease_expires"),
            ("#st", "state"),
            ("#from", TAKEN_OVER_FROM),
            ("#by", TAKEN_OVER_BY),
            ("#at", TAKEN_OVER_AT),
        ];
        let names: Vec<(&str, &str)> = names
            .into_iter()
            .filter(|(a, _)| update.contains(a) || condition.contains(a))
            .collect();
        let values = vec![
            (":me", s(&holder.owner)),
            (":exp", n(expires_ms)),
            (":now", n(now_ms)),
            (":open", s("open")),
            (":ok", s("succeeded")),
        ];
        let values = values
            .into_iter()
            .filter(|(a, _)| update.contains(a) || condition.contains(a))
            .collect();
        let key = self.codec().lease_key(k, i, holder);
        self.update_at(key, i, update, condition, &names, values)
            .await
    }

    /// `--rerun-without-wait` on a whole iteration. Taking a live lease from
    /// another run leaves a trace in the header (from whom, by whom, when)
    /// for `status`; that write is conditional on the lease being live and
    /// not ours, so the trace is exactly what happened. A lease that is free,
    /// expired or ours is taken as usual, without a trace.
    async fn take_over(
        &self,
        k: &LogicalKey,
        i: u64,
        holder: &Holder,
        now_ms: i64,
        expires_ms: i64,
        free: &str,
    ) -> Result<Lease, StoreError> {
        let times = (now_ms, expires_ms);
        let live = "attribute_exists(#h) AND #st <> :ok AND attribute_exists(#o) AND #o <> :me \
                    AND #exp >= :now";
        let traced = "SET #from = #o, #by = :me, #at = :now, #o = :me, #exp = :exp, #st = :open";
        let plain = "SET #o = :me, #exp = :exp, #st = :open";
        let unheld = format!("attribute_exists(#h) AND #st <> :ok AND {free}");
        // Each loses only if the lease changed hands in between.
        for _ in 0..5 {
            match self
                .take_over_once(k, i, holder, times, (traced, live))
                .await
            {
                Err(StoreError::Conflict(_)) => {}
                r => return r.map(|()| Lease::Acquired),
            }
            match self
                .take_over_once(k, i, holder, times, (plain, &unheld))
                .await
            {
                Err(StoreError::Conflict(_)) => {}
                r => return r.map(|()| Lease::Acquired),
            }
            match self.header(k, i).await? {
                None => return Err(StoreError::Other(anyhow!("iteration {i} does not exist"))),
                Some(h) if h.state == IterationState::Succeeded => return Ok(Lease::Succeeded),
                Some(_) => {}
            }
        }
        Err(StoreError::Other(anyhow!(
            "taking iteration {i} over: its lease kept changing hands"
        )))
    }
}

#[async_trait]
impl CheckpointStore for DynamoStore {
    async fn latest(&self, k: &LogicalKey) -> Result<Option<IterationHeader>, StoreError> {
        let mut found = None;
        self.query(header_pk(k), None, false, false, Some(1), |item| {
            found = Some(self.codec().parse_header(item)?);
            Ok(false)
        })
        .await?;
        Ok(found)
    }

    async fn header(&self, k: &LogicalKey, i: u64) -> Result<Option<IterationHeader>, StoreError> {
        check_number(i)?;
        bump(&self.usage.get_item, 1);
        let out = self
            .client
            .get_item()
            .table_name(&self.t.table)
            .set_key(Some(self.codec().key(header_pk(k), iteration_sk(i))))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| full(e).context(format!("reading iteration {i}")))?;
        out.item()
            .map(|it| self.codec().parse_header(it))
            .transpose()
    }

    async fn lowest_unfinished(
        &self,
        k: &LogicalKey,
        from: u64,
        to: u64,
    ) -> Result<Option<u64>, StoreError> {
        let mut found = None;
        self.query(
            header_pk(k),
            Some((iteration_sk(from), iteration_sk(to))),
            true,
            true,
            Some(100),
            |item| {
                found = Some(self.codec().parse_header(item)?.number);
                Ok(false)
            },
        )
        .await?;
        Ok(found)
    }

    async fn headers(&self, k: &LogicalKey) -> Result<Vec<IterationHeader>, StoreError> {
        let mut all = Vec::new();
        self.query(header_pk(k), None, false, true, None, |item| {
            all.push(self.codec().parse_header(item)?);
            Ok(true)
        })
        .await?;
        Ok(all)
    }

    async fn shards(&self, k: &LogicalKey, i: u64) -> Result<Vec<ShardCheckpoint>, StoreError> {
        let (mut all, parts) = self.shards_under(shard_pk(k, i), i).await?;
        let parts = parts.unwrap_or(1);
        self.remember_partitions(k, i, parts);
        if parts > 1 {
            let spread = futures_util::future::try_join_all(
                (0..parts).map(|p| self.shards_under(partition_pk(k, i, p), i)),
            )
            .await?;
            all.extend(spread.into_iter().flat_map(|(shards, _)| shards));
            // The order one key gives: by shard id.
            all.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
        }
        Ok(all)
    }

    async fn task_leases(&self, k: &LogicalKey, i: u64) -> Result<Vec<TaskLease>, StoreError> {
        let mut held = Vec::new();
        let range_key = self.codec().t.range_key.clone();
        self.query(tasks_pk(k, i), None, false, true, None, |item| {
            // A released lease keeps its item, without an owner.
            if let (Some(shard), Some(owner)) = (get_s(item, &range_key), get_s(item, "owner")) {
                held.push(TaskLease {
                    shard_id: shard.to_string(),
                    owner: owner.to_string(),
                    expires_ms: get_n(item, "lease_expires").unwrap_or(0),
                });
            }
            Ok(true)
        })
        .await?;
        Ok(held)
    }

    async fn create(
        &self,
        k: &LogicalKey,
        h: &IterationHeader,
        shards: &[ShardCheckpoint],
    ) -> Result<(), StoreError> {
        check_number(h.number)?;
        // The header goes in the first transaction: if it exists, nothing is
        // written. Later chunks (over 99 shards) only add shard items, several
        // at once; a creator that dies between them leaves a short plan that
        // the next lease holder completes (see iteration::open).
        // A wide iteration's layout item goes with the header, so that no one
        // reads the header without it.
        let what = format!("creating iteration {}", h.number);
        let parts = partitions_for(shards.len());
        let c = self.codec();
        let mut items = vec![self.conditional_put(c.header_item(k, h, parts))];
        if parts > 1 {
            items.push(self.conditional_put(c.layout_item(k, h.number, parts)));
        }
        let (first, rest) = shards.split_at(shards.len().min(TRANSACTION_ITEMS - items.len()));
        let put = |sc| self.conditional_put(c.shard_item(k, h.number, parts, sc));
        items.extend(first.iter().map(put));
        self.transact(items, &what).await?;
        self.remember_partitions(k, h.number, parts);
        let rest: Vec<Vec<TransactWriteItem>> = rest
            .chunks(TRANSACTION_ITEMS - 1)
            .map(|chunk| chunk.iter().map(put).collect())
            .collect();
        let what = &what;
        // New shard items only: these transactions share no item.
        let writes = rest.into_iter().map(|items| async move {
            match self.transact(items, what).await {
                Err(StoreError::Conflict(c)) => {
                    Err(StoreError::Other(anyhow!("{c}: shard items exist already")))
                }
                r => r,
            }
        });
        all_of(writes).await
    }

    async fn add_shards(
        &self,
        k: &LogicalKey,
        i: u64,
        holder: &Holder,
        shards: &[ShardCheckpoint],
    ) -> Result<(), StoreError> {
        let joining = shards.iter().any(|s| s.joined.is_some());
        let what = match joining {
            true => format!("adding joined children to iteration {i}"),
            false => format!("completing iteration {i}"),
        };
        let parts = self.partitions_of(k, i).await?;
        let chunks: Vec<Vec<TransactWriteItem>> = shards
            .chunks(TRANSACTION_ITEMS - 1)
            .map(|chunk| {
                // A joined child raises the header's layout in the same
                // transaction: an older version then refuses the iteration
                // rather than replay it in another order.
                let joined = chunk.iter().filter_map(|s| s.joined).max();
                let mut items = vec![match joined {
                    Some(j) => self.lease_check_raising_layout(k, i, holder, j),
                    None => self.lease_check(k, i, holder),
                }];
                items.extend(
                    chunk
                        .iter()
                        .map(|sc| self.conditional_put(self.codec().shard_item(k, i, parts, sc))),
                );
                items
            })
            .collect();
        // Each checks the lease item: one after another.
        for items in chunks {
            match self.transact(items, &what).await {
                // As for fixes: a retry that meets the items its lost first
                // try wrote has succeeded.
                Err(StoreError::Conflict(c)) if joining => {
                    let stored = self.shards(k, i).await?;
                    let ours = |sc: &ShardCheckpoint| stored.iter().any(|x| x == sc);
                    if !shards.iter().all(ours) {
                        return Err(StoreError::Conflict(c));
                    }
                }
                r => r?,
            }
        }
        Ok(())
    }

    async fn acquire(
        &self,
        k: &LogicalKey,
        i: u64,
        holder: &Holder,
        now_ms: i64,
        expires_ms: i64,
        takeover: bool,
    ) -> Result<Lease, StoreError> {
        let free = "(attribute_not_exists(#o) OR #o = :me OR #exp < :now)";
        if holder.task.is_none() && takeover {
            return self.take_over(k, i, holder, now_ms, expires_ms, free).await;
        }
        let (update, condition) = match (&holder.task, takeover) {
            (None, _) => (
                "SET #o = :me, #exp = :exp, #st = :open",
                format!("attribute_exists(#h) AND #st <> :ok AND {free}"),
            ),
            // A task's item is created by its first lease; the header is
            // only read (it must exist, and a succeeded iteration needs no lease).
            (Some(_), _) => {
                match self.header(k, i).await? {
                    None => {
                        return Err(StoreError::Conflict(format!(
                            "iteration {i} does not exist"
                        )))
                    }
                    Some(h) if h.state == IterationState::Succeeded => return Ok(Lease::Succeeded),
                    Some(_) => {}
                }
                (
                    "SET #o = :me, #exp = :exp",
                    if takeover {
                        String::new()
                    } else {
                        free.to_string()
                    },
                )
            }
        };
        let mut names = vec![("#o", "owner"), ("#exp", "lease_expires")];
        let mut values = vec![(":me", s(&holder.owner)), (":exp", n(expires_ms))];
        if update.contains("#st") {
            names.push(("#st", "state"));
            values.push((":open", s("open")));
            values.push((":ok", s("succeeded")));
        }
        if condition.contains(":now") {
            values.push((":now", n(now_ms)));
        }
        let r = self
            .update_at(
                self.codec().lease_key(k, i, holder),
                i,
                update,
                &condition,
                &names,
                values,
            )
            .await;
        match r {
            Ok(()) => Ok(Lease::Acquired),
            Err(StoreError::Conflict(_)) => {
                let (owner, expires_ms) = match &holder.task {
                    None => {
                        let h = self.header(k, i).await?.ok_or_else(|| {
                            StoreError::Other(anyhow!("iteration {i} does not exist"))
                        })?;
                        if h.state == IterationState::Succeeded {
                            return Ok(Lease::Succeeded);
                        }
                        (h.owner, h.lease_expires_ms)
                    }
                    Some(_) => {
                        let item = self.get(self.codec().lease_key(k, i, holder)).await?;
                        (
                            item.as_ref()
                                .and_then(|it| get_s(it, "owner"))
                                .map(str::to_string),
                            item.as_ref()
                                .and_then(|it| get_n(it, "lease_expires"))
                                .unwrap_or(0),
                        )
                    }
                };
                Ok(Lease::HeldBy {
                    // Released between our write and our read: try again.
                    owner: owner.unwrap_or_else(|| "nobody".into()),
                    expires_ms,
                })
            }
            Err(e) => Err(e),
        }
    }

    async fn renew(
        &self,
        k: &LogicalKey,
        i: u64,
        holder: &Holder,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        self.update_at(
            self.codec().lease_key(k, i, holder),
            i,
            "SET #exp = :exp",
            "#o = :me",
            &[("#o", "owner"), ("#exp", "lease_expires")],
            vec![(":me", s(&holder.owner)), (":exp", n(expires_ms))],
        )
        .await
    }

    async fn fix_shards(
        &self,
        k: &LogicalKey,
        i: u64,
        fixes: &[ShardFix],
    ) -> Result<(), StoreError> {
        let parts = self.partitions_of(k, i).await?;
        // Each checks a lease item that the next may check too: one after another.
        for chunk in fix_chunks(fixes) {
            self.fix_chunk(k, i, parts, chunk).await?;
        }
        Ok(())
    }

    async fn finish(
        &self,
        k: &LogicalKey,
        i: u64,
        holder: &Holder,
        state: IterationState,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let key = self.codec().lease_key(k, i, holder);
        if holder.task.is_some() {
            // A task's lease is released, not deleted: the item keeps who
            // released it, so that a retry after a lost answer can tell its
            // own release from that of a run that took the lease over. The
            // iteration's state is not the task's to set.
            let released = self
                .update_at(
                    key.clone(),
                    i,
                    "SET #rel = :me REMOVE #o, #exp",
                    "#o = :me",
                    &[
                        ("#o", "owner"),
                        ("#exp", "lease_expires"),
                        ("#rel", RELEASED_BY),
                    ],
                    vec![(":me", s(&holder.owner))],
                )
                .await;
            return match released {
                Err(StoreError::Conflict(c)) => {
                    let item = self.get(key).await?;
                    let field = |name: &str| item.as_ref().and_then(|it| get_s(it, name));
                    if field("owner").is_none() && field(RELEASED_BY) == Some(holder.owner.as_str())
                    {
                        Ok(())
                    } else {
                        Err(StoreError::Conflict(c))
                    }
                }
                r => r,
            };
        }
        let names = [
            ("#o", "owner"),
            ("#exp", "lease_expires"),
            ("#st", "state"),
            ("#fin", "finished_at"),
            ("#rel", RELEASED_BY),
        ];
        let mut values = vec![(":me", s(&holder.owner)), (":st", s(state.as_str()))];
        // Released without an outcome (`plan`): no finishing time.
        let update = if state == IterationState::Open {
            "SET #st = :st, #rel = :me REMOVE #o, #exp"
        } else {
            values.push((":now", n(now_ms)));
            "SET #st = :st, #fin = :now, #rel = :me REMOVE #o, #exp"
        };
        let names: Vec<(&str, &str)> = names
            .into_iter()
            .filter(|(a, _)| update.contains(a))
            .collect();
        match self
            .update_at(key, i, update, "#o = :me", &names, values)
            .await
        {
            // A retry after a lost answer: our release landed already. It is
            // ours only if we released it: a run that took the iteration over
            // and ended it the same way is not us.
            Err(StoreError::Conflict(c)) => {
                let item = self.get(self.codec().lease_key(k, i, holder)).await?;
                let field = |name: &str| item.as_ref().and_then(|it| get_s(it, name));
                let ours = field("owner").is_none()
                    && field("state") == Some(state.as_str())
                    && field(RELEASED_BY) == Some(holder.owner.as_str());
                if ours {
                    Ok(())
                } else {
                    Err(StoreError::Conflict(c))
                }
            }
            r => r,
        }
    }
}

impl DynamoStore {
    /// One transaction: every holder's lease still holds, and none of the
    /// ends is fixed yet.
    async fn fix_chunk(
        &self,
        k: &LogicalKey,
        i: u64,
        parts: u32,
        fixes: &[ShardFix],
    ) -> Result<(), StoreError> {
        let mut holders: Vec<&Holder> = Vec::new();
        for f in fixes {
            if !holders.contains(&&f.holder) {
                holders.push(&f.holder);
            }
        }
        let mut items: Vec<TransactWriteItem> =
            holders.iter().map(|h| self.lease_check(k, i, h)).collect();
        items.extend(fixes.iter().map(|f| self.end_update(k, i, parts, f)));
        let ids: Vec<&str> = fixes.iter().map(|f| f.shard_id.as_str()).collect();
        let what = format!("fixing shards {} of iteration {i}", ids.join(", "));
        match self.transact(items, &what).await {
            // The SDK retries a call whose answer was lost; if the first try
            // landed, the retry meets our own ends: that is success, not a
            // rival. A transaction lands whole or not at all, so every end
            // is ours or the conflict is real.
            Err(StoreError::Conflict(c)) => {
                for f in fixes {
                    let stored = self
                        .get(self.codec().shard_key(k, i, parts, &f.shard_id))
                        .await?;
                    match stored.map(|it| self.codec().parse_shard(&it)).transpose()? {
                        Some(ShardCheckpoint { end: Some(e), .. }) if e.same_fix(&f.end) => {}
                        _ => return Err(StoreError::Conflict(c)),
                    }
                }
                Ok(())
            }
            r => r,
        }
    }

    /// Sets a shard's end, on the condition that it has none yet.
    fn end_update(&self, k: &LogicalKey, i: u64, parts: u32, f: &ShardFix) -> TransactWriteItem {
        let mut set = Vec::new();
        let mut names = HashMap::from([("#h".to_string(), self.t.hash_key.clone())]);
        let mut values = HashMap::new();
        for (idx, (attr, v)) in end_attributes(&f.end).into_iter().enumerate() {
            set.push(format!("#a{idx} = :v{idx}"));
            names.insert(format!("#a{idx}"), attr);
            values.insert(format!(":v{idx}"), v);
        }
        names.insert("#next".into(), "next".into());
        let update = Update::builder()
            .table_name(&self.t.table)
            .set_key(Some(self.codec().shard_key(k, i, parts, &f.shard_id)))
            .update_expression(format!("SET {}", set.join(", ")))
            .condition_expression("attribute_exists(#h) AND attribute_not_exists(#next)")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .build()
            .expect("complete");
        TransactWriteItem::builder().update(update).build()
    }

    /// [`Self::lease_check`] of a whole iteration's lease (its header) that
    /// also sets the header's layout to [`LAYOUT`].
    /// The lease check of a transaction that records joined children, up to
    /// the `joined`-th: it raises the header's layout and its count of them.
    fn lease_check_raising_layout(
        &self,
        k: &LogicalKey,
        i: u64,
        holder: &Holder,
        joined: u32,
    ) -> TransactWriteItem {
        let update = Update::builder()
            .table_name(&self.t.table)
            .set_key(Some(self.codec().lease_key(k, i, holder)))
            .update_expression("SET #l = :l, #j = :j")
            .condition_expression("#o = :me")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_names("#l", "layout")
            .expression_attribute_names("#j", "joined_children")
            .expression_attribute_values(":me", s(&holder.owner))
            .expression_attribute_values(":l", n(LAYOUT))
            .expression_attribute_values(":j", n(joined))
            .build()
            .expect("complete");
        TransactWriteItem::builder().update(update).build()
    }

    /// A transaction item that holds only while `owner` has the lease.
    fn lease_check(&self, k: &LogicalKey, i: u64, holder: &Holder) -> TransactWriteItem {
        TransactWriteItem::builder()
            .condition_check(
                ConditionCheck::builder()
                    .table_name(&self.t.table)
                    .set_key(Some(self.codec().lease_key(k, i, holder)))
                    .condition_expression("#o = :me")
                    .expression_attribute_names("#o", "owner")
                    .expression_attribute_values(":me", s(&holder.owner))
                    .build()
                    .expect("complete"),
            )
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::ended;
    use crate::position::Position;

    fn fixes(n: usize, per_shard_leases: bool) -> Vec<ShardFix> {
        let start = ShardCheckpoint {
            shard_id: "s".into(),
            parents: Vec::new(),
            start: Position::At("0".into()),
            known_until_ms: None,
            end: None,
            joined: None,
        };
        let end = ended(&start, Some("1"), false).end.unwrap();
        (0..n)
            .map(|i| {
                let id = format!("shardId-{i:04}");
                let holder = Holder {
                    owner: "o".into(),
                    task: per_shard_leases.then(|| id.clone()),
                };
                ShardFix {
                    holder,
                    shard_id: id,
                    end: end.clone(),
                }
            })
            .collect()
    }

    #[test]
    fn fixes_go_in_transactions_of_at_most_100_items_with_one_lease_check_per_holder() {
        // One run's lease: 99 ends and the check per transaction.
        let all = fixes(1_000, false);
        let chunks = fix_chunks(&all);
        assert_eq!(chunks.len(), 11);
        assert!(chunks[..10].iter().all(|c| c.len() == 99));
        assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), 1_000);
        // Map mode leases each shard: a check and an end per shard.
        let all = fixes(120, true);
        let sizes: Vec<usize> = fix_chunks(&all).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [50, 50, 20]);
        assert!(fix_chunks(&[]).is_empty());
    }
}
