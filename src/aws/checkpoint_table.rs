//! [`CheckpointStore`] on a DynamoDB table: the item layout and its
//! conditional writes.
//!
//! The table has a string hash key and a string range key whose *names* the
//! user chooses (EMR's `HashKey` / `RangeKey` by default). Two kinds of items:
//!
//! | item | hash key | range key |
//! |---|---|---|
//! | iteration header | `<stream>/<logical name>` | iteration number, 10 digits (`0000000007`) |
//! | shard of an iteration | `<stream>/<logical name>/<iteration, 10 digits>` | shard id |
//! | a map task's lease | `<stream>/<logical name>/<iteration, 10 digits>/tasks` | task name |
//!
//! Headers of one logical name share a partition key and sort by number, so
//! the latest iteration is one Query (descending, limit 1) and `next` reads
//! only headers from the lowest possibly-unfinished one. Each iteration's
//! shards are one Query of their own partition; a boundary write touches one
//! small shard item, never a big document.

use super::{code, full};
use crate::config::TableSettings;
use crate::error::ExitError;
use crate::ports::checkpoint::{
    CheckpointStore, Holder, IterationHeader, IterationState, Lease, LogicalKey, ShardCheckpoint,
    ShardEnd, StoreError,
};
use crate::position::Position;
use anyhow::anyhow;
use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue as AV, BillingMode, ConditionCheck, KeySchemaElement,
    KeyType, Put, ScalarAttributeType, TableStatus, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::Duration;

/// Iteration numbers are stored as 10 digits so that they sort as strings.
pub const MAX_ITERATION: u64 = 9_999_999_999;
/// TransactWriteItems takes at most 100 items.
const TRANSACTION_ITEMS: usize = 100;

type Item = HashMap<String, AV>;

/// Attribute names of the checkpoint items (besides the two keys).
const RESERVED: [&str; 29] = [
    "kind",
    "state",
    "stream_arn",
    "stream_created",
    "start_spec",
    "opened_at",
    "opened_by",
    "shard_count",
    "low_water",
    "owner",
    "lease_expires",
    "finished_at",
    "iteration",
    "start",
    "parents",
    "next",
    "last_seq",
    "closed",
    "records",
    "bytes",
    "fixed_at",
    "fixed_by",
    "known_until",
    "start_known_until",
    "read_from",
    "expired_skip",
    "first_seq",
    "first_arrival",
    RELEASED_BY,
];

pub struct DynamoStore {
    client: Client,
    t: TableSettings,
    usage: Usage,
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

fn s(v: impl Into<String>) -> AV {
    AV::S(v.into())
}
fn n(v: impl ToString) -> AV {
    AV::N(v.to_string())
}

fn header_pk(k: &LogicalKey) -> String {
    format!("{}/{}", k.stream, k.logical_name)
}
fn iteration_sk(i: u64) -> String {
    format!("{i:010}")
}
fn shard_pk(k: &LogicalKey, i: u64) -> String {
    format!("{}/{}/{i:010}", k.stream, k.logical_name)
}

fn tasks_pk(k: &LogicalKey, i: u64) -> String {
    format!("{}/tasks", shard_pk(k, i))
}

fn get_s<'a>(item: &'a Item, k: &str) -> Option<&'a str> {
    item.get(k).and_then(|v| v.as_s().ok()).map(String::as_str)
}
fn get_n<T: std::str::FromStr>(item: &Item, k: &str) -> Option<T> {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

fn is_condition_failure<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R>(
    e: &SdkError<E, R>,
) -> bool {
    matches!(e, SdkError::ServiceError(se) if code(se.err()) == "ConditionalCheckFailedException")
}

/// Which items of a cancelled transaction failed their condition.
fn cancelled_conditions<R>(
    e: &SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError, R>,
) -> Option<Vec<bool>> {
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError as E;
    match e {
        SdkError::ServiceError(se) => match se.err() {
            E::TransactionCanceledException(c) => Some(
                c.cancellation_reasons()
                    .iter()
                    .map(|r| r.code() == Some("ConditionalCheckFailed"))
                    .collect(),
            ),
            _ => None,
        },
        _ => None,
    }
}

impl DynamoStore {
    pub fn new(config: &aws_config::SdkConfig, t: TableSettings) -> Self {
        DynamoStore {
            client: Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(config)
                    .interceptor(super::counters::Counter)
                    .build(),
            ),
            t,
            usage: Usage::default(),
        }
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

    fn key(&self, pk: String, sk: String) -> Item {
        HashMap::from([
            (self.t.hash_key.clone(), s(pk)),
            (self.t.range_key.clone(), s(sk)),
        ])
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

    /// The item that holds a lease: the header, or the task's own item.
    fn lease_key(&self, k: &LogicalKey, i: u64, h: &Holder) -> Item {
        match &h.task {
            None => self.key(header_pk(k), iteration_sk(i)),
            Some(t) => self.key(tasks_pk(k, i), t.clone()),
        }
    }

    /// Creates the table (on-demand) unless it exists, then waits until it is
    /// active and checks its key schema.
    pub async fn create_table(&self) -> anyhow::Result<bool> {
        self.check_key_names()?;
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("complete")
        };
        let key = |name: &str, kt| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kt)
                .build()
                .expect("complete")
        };
        let created = match self
            .client
            .create_table()
            .table_name(&self.t.table)
            .attribute_definitions(attr(&self.t.hash_key))
            .attribute_definitions(attr(&self.t.range_key))
            .key_schema(key(&self.t.hash_key, KeyType::Hash))
            .key_schema(key(&self.t.range_key, KeyType::Range))
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
        {
            Ok(_) => true,
            Err(SdkError::ServiceError(se)) if code(se.err()) == "ResourceInUseException" => false,
            Err(e) => {
                return Err(full(e).context(format!("creating table {}", self.t.table)));
            }
        };
        for _ in 0..600 {
            if self.check_table().await? == TableStatus::Active {
                return Ok(created);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(anyhow!(
            "table {} did not become active within 5 minutes",
            self.t.table
        ))
    }

    /// The key names must not clash with each other or with the attributes
    /// this layout writes.
    fn check_key_names(&self) -> Result<(), ExitError> {
        for k in [&self.t.hash_key, &self.t.range_key] {
            if k.is_empty() || RESERVED.contains(&k.as_str()) {
                return Err(ExitError::Usage(format!(
                    "{k:?} cannot be a checkpoint table key name: the checkpoint items use \
                     these attribute names: {}",
                    RESERVED.join(", ")
                )));
            }
        }
        if self.t.hash_key == self.t.range_key {
            return Err(ExitError::Usage(format!(
                "the hash key and the range key cannot both be named {:?}",
                self.t.hash_key
            )));
        }
        Ok(())
    }

    /// Checks that the table exists with the expected string keys; returns its status.
    pub async fn check_table(&self) -> anyhow::Result<TableStatus> {
        self.check_key_names()?;
        let out = match self
            .client
            .describe_table()
            .table_name(&self.t.table)
            .send()
            .await
        {
            Ok(o) => o,
            Err(SdkError::ServiceError(se)) if code(se.err()) == "ResourceNotFoundException" => {
                return Err(ExitError::Usage(format!(
                    "checkpoint table {:?} does not exist; create it with: kinesis-reader \
                     create-table --checkpoint-table {} (add --hash-key/--range-key if you use \
                     other key names)",
                    self.t.table, self.t.table
                ))
                .into())
            }
            Err(SdkError::ServiceError(se)) if code(se.err()) == "AccessDeniedException" => {
                return Err(anyhow!(
                    "access denied to checkpoint table {:?}: the credentials need \
                     dynamodb:DescribeTable, GetItem, Query, PutItem, UpdateItem and \
                     TransactWriteItems on it",
                    self.t.table
                ))
            }
            Err(e) => return Err(full(e).context(format!("describing table {}", self.t.table))),
        };
        let table = out
            .table()
            .ok_or_else(|| anyhow!("DescribeTable: empty answer"))?;
        let types: HashMap<&str, &ScalarAttributeType> = table
            .attribute_definitions()
            .iter()
            .map(|a| (a.attribute_name(), a.attribute_type()))
            .collect();
        let mut hash = None;
        let mut range = None;
        for k in table.key_schema() {
            let desc = format!(
                "{} ({})",
                k.attribute_name(),
                types.get(k.attribute_name()).map_or("?", |t| t.as_str())
            );
            match k.key_type() {
                KeyType::Hash => hash = Some((k.attribute_name().to_string(), desc)),
                _ => range = Some((k.attribute_name().to_string(), desc)),
            }
        }
        let want_ok = |got: &Option<(String, String)>, name: &str| {
            got.as_ref().is_some_and(|(g, _)| g == name)
                && types
                    .get(name)
                    .is_some_and(|t| **t == ScalarAttributeType::S)
        };
        if !want_ok(&hash, &self.t.hash_key) || !want_ok(&range, &self.t.range_key) {
            return Err(ExitError::Usage(format!(
                "checkpoint table {:?} has key schema hash={} range={}, but this run expects hash \
                 key {:?} and range key {:?}, both strings; pass --hash-key/--range-key (or \
                 -D kinesis.checkpoint.metastore.hash.key.name / .range.key.name) to match the \
                 table, or use another table",
                self.t.table,
                hash.map_or("none".into(), |h| h.1),
                range.map_or("none".into(), |r| r.1),
                self.t.hash_key,
                self.t.range_key
            ))
            .into());
        }
        Ok(table.table_status().cloned().unwrap_or(TableStatus::Active))
    }

    fn header_item(&self, k: &LogicalKey, h: &IterationHeader) -> Item {
        let mut item = self.key(header_pk(k), iteration_sk(h.number));
        item.insert("kind".into(), s("iteration"));
        item.insert("state".into(), s(h.state.as_str()));
        item.insert("stream_arn".into(), s(&h.stream_arn));
        item.insert("stream_created".into(), n(h.stream_created_ms));
        item.insert("start_spec".into(), s(&h.start_spec));
        item.insert("opened_at".into(), n(h.opened_ms));
        item.insert("opened_by".into(), s(&h.opened_by));
        item.insert("shard_count".into(), n(h.shard_count));
        item.insert("low_water".into(), n(h.low_water));
        if let Some(o) = &h.owner {
            item.insert("owner".into(), s(o));
        }
        item.insert("lease_expires".into(), n(h.lease_expires_ms));
        item
    }

    fn parse_header(&self, item: &Item) -> Result<IterationHeader, StoreError> {
        let bad = || {
            StoreError::Other(anyhow!(
                "checkpoint table {:?} has an iteration item that this version cannot read: {:?}",
                self.t.table,
                item.keys().collect::<Vec<_>>()
            ))
        };
        Ok(IterationHeader {
            number: get_s(item, &self.t.range_key)
                .and_then(|v| v.parse().ok())
                .ok_or_else(bad)?,
            state: get_s(item, "state")
                .and_then(IterationState::parse)
                .ok_or_else(bad)?,
            stream_arn: get_s(item, "stream_arn").ok_or_else(bad)?.to_string(),
            stream_created_ms: get_n(item, "stream_created").ok_or_else(bad)?,
            start_spec: get_s(item, "start_spec").unwrap_or_default().to_string(),
            opened_ms: get_n(item, "opened_at").unwrap_or(0),
            opened_by: get_s(item, "opened_by").unwrap_or_default().to_string(),
            shard_count: get_n(item, "shard_count").unwrap_or(0),
            low_water: get_n(item, "low_water").unwrap_or(0),
            owner: get_s(item, "owner").map(str::to_string),
            lease_expires_ms: get_n(item, "lease_expires").unwrap_or(0),
            finished_ms: get_n(item, "finished_at"),
        })
    }

    fn shard_item(&self, k: &LogicalKey, i: u64, sc: &ShardCheckpoint) -> Item {
        let mut item = self.key(shard_pk(k, i), sc.shard_id.clone());
        item.insert("kind".into(), s("shard"));
        item.insert("iteration".into(), n(i));
        item.insert("start".into(), s(sc.start.to_string()));
        if !sc.parents.is_empty() {
            item.insert("parents".into(), s(sc.parents.join(",")));
        }
        if let Some(k) = sc.known_until_ms {
            item.insert("start_known_until".into(), n(k));
        }
        if let Some(e) = &sc.end {
            item.extend(end_attributes(e));
        }
        item
    }

    fn parse_shard(&self, item: &Item) -> Result<ShardCheckpoint, StoreError> {
        let bad = |what: &str| {
            StoreError::Other(anyhow!(
                "checkpoint table {:?}: a shard item has a bad or missing {what}",
                self.t.table
            ))
        };
        let pos = |k: &str| -> Result<Option<Position>, StoreError> {
            get_s(item, k)
                .map(|v| Position::parse(v).map_err(|e| StoreError::Other(anyhow!(e))))
                .transpose()
        };
        let read_from = pos("read_from")?;
        let end = pos("next")?.map(|next| ShardEnd {
            last_sequence: get_s(item, "last_seq").map(str::to_string),
            next,
            closed: item
                .get("closed")
                .and_then(|v| v.as_bool().ok())
                .copied()
                .unwrap_or(false),
            records: get_n(item, "records").unwrap_or(0),
            bytes: get_n(item, "bytes").unwrap_or(0),
            fixed_ms: get_n(item, "fixed_at").unwrap_or(0),
            fixed_by: get_s(item, "fixed_by").unwrap_or_default().to_string(),
            known_until_ms: get_n(item, "known_until"),
            read_from,
            expired_skip: get_s(item, "expired_skip").map(str::to_string),
            first_sequence: get_s(item, "first_seq").map(str::to_string),
            first_arrival_ms: get_n(item, "first_arrival"),
        });
        Ok(ShardCheckpoint {
            shard_id: get_s(item, &self.t.range_key)
                .ok_or_else(|| bad("shard id"))?
                .to_string(),
            parents: get_s(item, "parents")
                .map(|p| p.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
            start: pos("start")?.ok_or_else(|| bad("start"))?,
            known_until_ms: get_n(item, "start_known_until"),
            end,
        })
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
        bump(&self.usage.transactions, 1);
        bump(&self.usage.transaction_items, items.len() as u64);
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match cancelled_conditions(&e) {
                Some(failed) if failed.iter().any(|f| *f) => Err(StoreError::Conflict(format!(
                    "{what} (conditions failed on items {:?})",
                    failed
                        .iter()
                        .enumerate()
                        .filter(|(_, f)| **f)
                        .map(|(i, _)| i)
                        .collect::<Vec<_>>()
                ))),
                _ => Err(StoreError::Other(full(e).context(what.to_string()))),
            },
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
    #[allow(clippy::too_many_arguments)]
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
        bump(&self.usage.update_item, 1);
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => {
                Err(StoreError::Conflict(format!("iteration {i}: {condition}")))
            }
            Err(e) => Err(StoreError::Other(
                full(e).context(format!("updating iteration {i} in table {}", self.t.table)),
            )),
        }
    }
}

fn end_attributes(e: &ShardEnd) -> Item {
    let mut m = Item::new();
    m.insert("next".into(), s(e.next.to_string()));
    if let Some(l) = &e.last_sequence {
        m.insert("last_seq".into(), s(l));
    }
    m.insert("closed".into(), AV::Bool(e.closed));
    m.insert("records".into(), n(e.records));
    m.insert("bytes".into(), n(e.bytes));
    m.insert("fixed_at".into(), n(e.fixed_ms));
    m.insert("fixed_by".into(), s(&e.fixed_by));
    if let Some(k) = e.known_until_ms {
        m.insert("known_until".into(), n(k));
    }
    if let Some(p) = &e.read_from {
        m.insert("read_from".into(), s(p.to_string()));
    }
    if let Some(x) = &e.expired_skip {
        m.insert("expired_skip".into(), s(x));
    }
    if let Some(x) = &e.first_sequence {
        m.insert("first_seq".into(), s(x));
    }
    if let Some(x) = e.first_arrival_ms {
        m.insert("first_arrival".into(), n(x));
    }
    m
}

fn check_number(i: u64) -> Result<(), StoreError> {
    if i > MAX_ITERATION {
        return Err(StoreError::Other(anyhow!(
            "iteration {i} is too large (the highest is {MAX_ITERATION})"
        )));
    }
    Ok(())
}

#[async_trait]
impl CheckpointStore for DynamoStore {
    async fn latest(&self, k: &LogicalKey) -> Result<Option<IterationHeader>, StoreError> {
        let mut found = None;
        self.query(header_pk(k), None, false, false, Some(1), |item| {
            found = Some(self.parse_header(item)?);
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
            .set_key(Some(self.key(header_pk(k), iteration_sk(i))))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| full(e).context(format!("reading iteration {i}")))?;
        out.item().map(|it| self.parse_header(it)).transpose()
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
                found = Some(self.parse_header(item)?.number);
                Ok(false)
            },
        )
        .await?;
        Ok(found)
    }

    async fn headers(&self, k: &LogicalKey) -> Result<Vec<IterationHeader>, StoreError> {
        let mut all = Vec::new();
        self.query(header_pk(k), None, false, true, None, |item| {
            all.push(self.parse_header(item)?);
            Ok(true)
        })
        .await?;
        Ok(all)
    }

    async fn shards(&self, k: &LogicalKey, i: u64) -> Result<Vec<ShardCheckpoint>, StoreError> {
        let mut all = Vec::new();
        self.query(shard_pk(k, i), None, false, true, None, |item| {
            all.push(self.parse_shard(item)?);
            Ok(true)
        })
        .await?;
        Ok(all)
    }

    async fn create(
        &self,
        k: &LogicalKey,
        h: &IterationHeader,
        shards: &[ShardCheckpoint],
    ) -> Result<(), StoreError> {
        check_number(h.number)?;
        // The header goes in the first transaction: if it exists, nothing is
        // written. Later chunks (over 99 shards) only add shard items; a creator
        // that dies between chunks leaves a short plan that the next lease
        // holder completes (see iteration::open).
        let mut items = vec![self.conditional_put(self.header_item(k, h))];
        let mut first = true;
        for chunk in shards.chunks(TRANSACTION_ITEMS - 1) {
            items.extend(
                chunk
                    .iter()
                    .map(|sc| self.conditional_put(self.shard_item(k, h.number, sc))),
            );
            let what = format!("creating iteration {}", h.number);
            match self.transact(std::mem::take(&mut items), &what).await {
                Err(StoreError::Conflict(c)) if !first => {
                    return Err(StoreError::Other(anyhow!("{c}: shard items exist already")))
                }
                r => r?,
            }
            first = false;
        }
        Ok(())
    }

    async fn add_shards(
        &self,
        k: &LogicalKey,
        i: u64,
        holder: &Holder,
        shards: &[ShardCheckpoint],
    ) -> Result<(), StoreError> {
        for chunk in shards.chunks(TRANSACTION_ITEMS - 1) {
            let mut items = vec![self.lease_check(k, i, holder)];
            items.extend(
                chunk
                    .iter()
                    .map(|sc| self.conditional_put(self.shard_item(k, i, sc))),
            );
            self.transact(items, &format!("completing iteration {i}"))
                .await?;
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
        let (update, condition) = match (&holder.task, takeover) {
            (None, true) => (
                "SET #o = :me, #exp = :exp, #st = :open",
                "attribute_exists(#h) AND #st <> :ok".to_string(),
            ),
            (None, false) => (
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
                self.lease_key(k, i, holder),
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
                        let item = self.get(self.lease_key(k, i, holder)).await?;
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
            self.lease_key(k, i, holder),
            i,
            "SET #exp = :exp",
            "#o = :me",
            &[("#o", "owner"), ("#exp", "lease_expires")],
            vec![(":me", s(&holder.owner)), (":exp", n(expires_ms))],
        )
        .await
    }

    async fn fix_shard(
        &self,
        k: &LogicalKey,
        i: u64,
        holder: &Holder,
        shard_id: &str,
        end: &ShardEnd,
    ) -> Result<(), StoreError> {
        // One transaction: our lease still holds, and the end is not fixed yet.
        let mut set = Vec::new();
        let mut names = HashMap::from([("#h".to_string(), self.t.hash_key.clone())]);
        let mut values = HashMap::new();
        for (idx, (attr, v)) in end_attributes(end).into_iter().enumerate() {
            set.push(format!("#a{idx} = :v{idx}"));
            names.insert(format!("#a{idx}"), attr);
            values.insert(format!(":v{idx}"), v);
        }
        names.insert("#next".into(), "next".into());
        let update = Update::builder()
            .table_name(&self.t.table)
            .set_key(Some(self.key(shard_pk(k, i), shard_id.to_string())))
            .update_expression(format!("SET {}", set.join(", ")))
            .condition_expression("attribute_exists(#h) AND attribute_not_exists(#next)")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .build()
            .expect("complete");
        let items = vec![
            self.lease_check(k, i, holder),
            TransactWriteItem::builder().update(update).build(),
        ];
        match self
            .transact(items, &format!("fixing shard {shard_id} of iteration {i}"))
            .await
        {
            // The SDK retries a call whose answer was lost; if the first try
            // landed, the retry meets our own end: that is success, not a rival.
            Err(StoreError::Conflict(c)) => {
                let stored = self
                    .get(self.key(shard_pk(k, i), shard_id.to_string()))
                    .await?;
                match stored.map(|it| self.parse_shard(&it)).transpose()? {
                    Some(ShardCheckpoint { end: Some(e), .. }) if e.same_fix(end) => Ok(()),
                    _ => Err(StoreError::Conflict(c)),
                }
            }
            r => r,
        }
    }

    async fn finish(
        &self,
        k: &LogicalKey,
        i: u64,
        holder: &Holder,
        state: IterationState,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let key = self.lease_key(k, i, holder);
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
                let item = self.get(self.lease_key(k, i, holder)).await?;
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

/// The header attribute naming the run that last released the iteration's
/// lease, so that a retried release after a lost answer can tell its own
/// write from a takeover's.
const RELEASED_BY: &str = "released_by";

impl DynamoStore {
    /// A transaction item that holds only while `owner` has the lease.
    fn lease_check(&self, k: &LogicalKey, i: u64, holder: &Holder) -> TransactWriteItem {
        TransactWriteItem::builder()
            .condition_check(
                ConditionCheck::builder()
                    .table_name(&self.t.table)
                    .set_key(Some(self.lease_key(k, i, holder)))
                    .condition_expression("#o = :me")
                    .expression_attribute_names("#o", "owner")
                    .expression_attribute_values(":me", s(&holder.owner))
                    .build()
                    .expect("complete"),
            )
            .build()
    }
}
