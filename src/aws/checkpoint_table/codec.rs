//! The checkpoint items as DynamoDB attribute maps: keys, headers, shards
//! and their ends, written and read back. Pure: no requests here.
//!
//! The layout:
//!
//! | item | hash key | range key |
//! |---|---|---|
//! | iteration header | `<stream>/<logical name>` | iteration number, 10 digits (`0000000007`) |
//! | shard of an iteration | `<stream>/<logical name>/<iteration, 10 digits>` | shard id |
//! | … of a wide iteration | `<stream>/<logical name>/<iteration, 10 digits>/<partition>` | shard id |
//! | a wide iteration's layout | `<stream>/<logical name>/<iteration, 10 digits>` | `!layout` |
//! | a map task's lease | `<stream>/<logical name>/<iteration, 10 digits>/tasks` | task name |
//!
//! A wide iteration (over [`SHARDS_PER_PARTITION`] shards) spreads its shard
//! items over several partition keys, because DynamoDB serves one key about
//! 1,000 WCU/s. Its layout item sits where a narrow iteration's shards are:
//! this version finds the partitions there, and a version that knows only
//! one key fails on it (it has no `start`) instead of finding no shards and
//! planning the iteration again.

use crate::config::TableSettings;
use crate::error::ExitError;
use crate::ports::checkpoint::{
    Holder, IterationHeader, IterationState, LogicalKey, ShardCheckpoint, ShardEnd, StoreError,
    Takeover,
};
use crate::position::Position;
use anyhow::anyhow;
use aws_sdk_dynamodb::types::AttributeValue as AV;
use std::collections::HashMap;

/// Iteration numbers are stored as 10 digits so that they sort as strings.
pub const MAX_ITERATION: u64 = 9_999_999_999;
pub type Item = HashMap<String, AV>;

/// Attribute names of the checkpoint items (besides the two keys).
pub const RESERVED: [&str; 35] = [
    "kind",
    "layout",
    "shard_partitions",
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
    "joined_children",
    RELEASED_BY,
    TAKEN_OVER_FROM,
    TAKEN_OVER_BY,
    TAKEN_OVER_AT,
];

/// The header's trace of the last takeover of a live lease (for `status`).
pub const TAKEN_OVER_FROM: &str = "taken_over_from";
pub const TAKEN_OVER_BY: &str = "taken_over_by";
pub const TAKEN_OVER_AT: &str = "taken_over_at";

/// The header attribute naming the run that last released the iteration's
/// lease, so that a retried release after a lost answer can tell its own
/// write from a takeover's.
pub const RELEASED_BY: &str = "released_by";

pub fn s(v: impl Into<String>) -> AV {
    AV::S(v.into())
}
pub fn n(v: impl ToString) -> AV {
    AV::N(v.to_string())
}

pub fn header_pk(k: &LogicalKey) -> String {
    format!("{}/{}", k.stream, k.logical_name)
}
pub fn iteration_sk(i: u64) -> String {
    format!("{i:010}")
}
pub fn shard_pk(k: &LogicalKey, i: u64) -> String {
    format!("{}/{}/{i:010}", k.stream, k.logical_name)
}

/// Shard items per partition key. An iteration costs about 4 WCU per shard
/// (its items are created and fixed in transactions, 2 WCU an item), so 200
/// shards put about 800 WCU on a key per iteration: under the 1,000 WCU/s
/// one partition key is served, even when opening and closing come at once.
pub const SHARDS_PER_PARTITION: usize = 200;

/// The table layout this version writes, and the newest it reads, in each
/// iteration header (and a wide iteration's layout item):
/// - 1 (or none): an iteration's shard items under one key, and a child in
///   the iteration after the one that read its parents to their end (every
///   iteration before layouts were numbered);
/// - 2: a wide iteration's shard items spread over `shard_partitions` keys;
/// - 3: besides, a child may be in the same iteration as its parents, to be
///   read after them (the README's "Iterations: the semantics");
/// - 4: besides, a child joined the run after the iteration was opened
///   (shard items with `joined`), and a replay must put its lane where that
///   run did. An iteration is created as 3 and becomes 4 when a child joins.
///
/// A header or layout item of a higher layout is refused, not misread.
pub const LAYOUT: u32 = 4;

/// The layout an iteration is created with.
pub const LAYOUT_CREATED: u32 = 3;

/// The range key of a wide iteration's layout item; `!` sorts before every
/// shard id.
pub const LAYOUT_MARKER: &str = "!layout";

/// How many partition keys an iteration of `shards` shards spreads over.
pub fn partitions_for(shards: usize) -> u32 {
    shards.div_ceil(SHARDS_PER_PARTITION).max(1) as u32
}

/// Which of `parts` partitions holds a shard: its number (`shardId-000000000123`)
/// modulo `parts`, so that a stream's shards, numbered one after another,
/// fill the partitions evenly; a name without a number goes by its hash.
pub fn partition_of(shard_id: &str, parts: u32) -> u32 {
    let number = shard_id
        .rsplit('-')
        .next()
        .and_then(|d| d.parse::<u64>().ok())
        .unwrap_or_else(|| {
            // FNV-1a: the same on every host and in every version.
            shard_id.bytes().fold(0xcbf29ce484222325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
            })
        });
    (number % u64::from(parts.max(1))) as u32
}

/// The partition key of partition `p` of a wide iteration's shard items.
pub fn partition_pk(k: &LogicalKey, i: u64, p: u32) -> String {
    format!("{}/{p}", shard_pk(k, i))
}

/// The partition key of a shard's item in an iteration of `parts` partitions.
pub fn shard_item_pk(k: &LogicalKey, i: u64, parts: u32, shard_id: &str) -> String {
    if parts <= 1 {
        shard_pk(k, i)
    } else {
        partition_pk(k, i, partition_of(shard_id, parts))
    }
}

pub fn tasks_pk(k: &LogicalKey, i: u64) -> String {
    format!("{}/tasks", shard_pk(k, i))
}

pub fn get_s<'a>(item: &'a Item, k: &str) -> Option<&'a str> {
    item.get(k).and_then(|v| v.as_s().ok()).map(String::as_str)
}
pub fn get_n<T: std::str::FromStr>(item: &Item, k: &str) -> Option<T> {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

/// Items for the table whose key names are `t`'s.
#[derive(Clone, Copy)]
pub struct Codec<'a> {
    pub t: &'a TableSettings,
}

impl Codec<'_> {
    pub fn key(&self, pk: String, sk: String) -> Item {
        HashMap::from([
            (self.t.hash_key.clone(), s(pk)),
            (self.t.range_key.clone(), s(sk)),
        ])
    }

    /// The item that holds a lease: the header, or the task's own item.
    pub fn lease_key(&self, k: &LogicalKey, i: u64, h: &Holder) -> Item {
        match &h.task {
            None => self.key(header_pk(k), iteration_sk(i)),
            Some(t) => self.key(tasks_pk(k, i), t.clone()),
        }
    }

    /// The header of an iteration whose shard items are spread over `parts`
    /// partition keys.
    pub fn header_item(&self, k: &LogicalKey, h: &IterationHeader, parts: u32) -> Item {
        let mut item = self.key(header_pk(k), iteration_sk(h.number));
        item.insert("kind".into(), s("iteration"));
        item.insert("layout".into(), n(LAYOUT_CREATED));
        if parts > 1 {
            item.insert("shard_partitions".into(), n(parts));
        }
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

    pub fn parse_header(&self, item: &Item) -> Result<IterationHeader, StoreError> {
        let bad = |attribute: &str| self.unreadable(item, attribute, "iteration header");
        let range_key = self.t.range_key.as_str();
        let number = get_s(item, range_key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(range_key))?;
        self.check_layout(item, &format!("iteration {number}"))?;
        Ok(IterationHeader {
            number,
            state: get_s(item, "state")
                .and_then(IterationState::parse)
                .ok_or_else(|| bad("state"))?,
            stream_arn: get_s(item, "stream_arn")
                .ok_or_else(|| bad("stream_arn"))?
                .to_string(),
            stream_created_ms: get_n(item, "stream_created")
                .ok_or_else(|| bad("stream_created"))?,
            start_spec: get_s(item, "start_spec").unwrap_or_default().to_string(),
            opened_ms: get_n(item, "opened_at").unwrap_or(0),
            opened_by: get_s(item, "opened_by").unwrap_or_default().to_string(),
            shard_count: get_n(item, "shard_count").unwrap_or(0),
            low_water: get_n(item, "low_water").unwrap_or(0),
            owner: get_s(item, "owner").map(str::to_string),
            lease_expires_ms: get_n(item, "lease_expires").unwrap_or(0),
            finished_ms: get_n(item, "finished_at"),
            joined_children: get_n(item, "joined_children"),
            taken_over: match (get_s(item, TAKEN_OVER_FROM), get_s(item, TAKEN_OVER_BY)) {
                (Some(from), Some(by)) => Some(Takeover {
                    from: from.to_string(),
                    by: by.to_string(),
                    at_ms: get_n(item, TAKEN_OVER_AT).unwrap_or(0),
                }),
                _ => None,
            },
        })
    }

    /// An item written by a newer layout than this version knows is refused.
    fn check_layout(&self, item: &Item, what: &str) -> Result<(), StoreError> {
        match get_n::<u32>(item, "layout") {
            Some(l) if l > LAYOUT => Err(StoreError::Other(anyhow!(
                "{what} in checkpoint table {:?} was written by a newer version of \
                 kinesis-streaming (table layout {l}; this version reads layouts 1 to {LAYOUT}): \
                 upgrade kinesis-reader and kinesis-writer",
                self.t.table
            ))),
            _ => Ok(()),
        }
    }

    /// A shard's item key in an iteration of `parts` partitions.
    pub fn shard_key(&self, k: &LogicalKey, i: u64, parts: u32, shard_id: &str) -> Item {
        self.key(shard_item_pk(k, i, parts, shard_id), shard_id.to_string())
    }

    /// The item that says a wide iteration's shards are spread over `parts` keys.
    pub fn layout_item(&self, k: &LogicalKey, i: u64, parts: u32) -> Item {
        let mut item = self.key(shard_pk(k, i), LAYOUT_MARKER.to_string());
        item.insert("kind".into(), s("layout"));
        item.insert("layout".into(), n(2));
        item.insert("shard_partitions".into(), n(parts));
        item
    }

    /// `Some(parts)` if `item` is a layout item, `None` if it is a shard's.
    pub fn parse_layout(&self, item: &Item, i: u64) -> Result<Option<u32>, StoreError> {
        if get_s(item, &self.t.range_key) != Some(LAYOUT_MARKER) {
            return Ok(None);
        }
        self.check_layout(item, &format!("the shards of iteration {i}"))?;
        match get_n::<u32>(item, "shard_partitions") {
            Some(p) if p >= 1 => Ok(Some(p)),
            _ => Err(StoreError::Other(anyhow!(
                "checkpoint table {:?}: the layout item of iteration {i} has no shard_partitions",
                self.t.table
            ))),
        }
    }

    pub fn shard_item(&self, k: &LogicalKey, i: u64, parts: u32, sc: &ShardCheckpoint) -> Item {
        let mut item = self.shard_key(k, i, parts, &sc.shard_id);
        item.insert("kind".into(), s("shard"));
        item.insert("iteration".into(), n(i));
        item.insert("start".into(), s(sc.start.to_string()));
        if !sc.parents.is_empty() {
            item.insert("parents".into(), s(sc.parents.join(",")));
        }
        if let Some(k) = sc.known_until_ms {
            item.insert("start_known_until".into(), n(k));
        }
        if let Some(j) = sc.joined {
            item.insert("joined".into(), n(j));
        }
        if let Some(e) = &sc.end {
            item.extend(end_attributes(e));
        }
        item
    }

    pub fn parse_shard(&self, item: &Item) -> Result<ShardCheckpoint, StoreError> {
        let bad = |attribute: &str| self.unreadable(item, attribute, "shard item");
        let pos = |k: &str| -> Result<Option<Position>, StoreError> {
            get_s(item, k)
                .map(|v| Position::parse(v).map_err(|_| bad(k)))
                .transpose()
        };
        // A count that is there must be a whole number (not a string, not negative).
        let count = |k: &str| -> Result<u64, StoreError> {
            match (item.contains_key(k), get_n::<u64>(item, k)) {
                (true, None) => Err(bad(k)),
                (_, n) => Ok(n.unwrap_or(0)),
            }
        };
        let read_from = pos("read_from")?;
        let next = pos("next")?;
        // A fixed range without its `next` would be read as unfixed, and read again.
        if next.is_none()
            && ["fixed_at", "last_seq", "records"]
                .iter()
                .any(|k| item.contains_key(*k))
        {
            return Err(bad("next"));
        }
        let end = match next {
            None => None,
            Some(next) => Some(ShardEnd {
                last_sequence: get_s(item, "last_seq").map(str::to_string),
                next,
                closed: item
                    .get("closed")
                    .and_then(|v| v.as_bool().ok())
                    .copied()
                    .unwrap_or(false),
                records: count("records")?,
                bytes: count("bytes")?,
                fixed_ms: get_n(item, "fixed_at").unwrap_or(0),
                fixed_by: get_s(item, "fixed_by").unwrap_or_default().to_string(),
                known_until_ms: get_n(item, "known_until"),
                read_from,
                expired_skip: get_s(item, "expired_skip").map(str::to_string),
                first_sequence: get_s(item, "first_seq").map(str::to_string),
                first_arrival_ms: get_n(item, "first_arrival"),
            }),
        };
        Ok(ShardCheckpoint {
            shard_id: get_s(item, &self.t.range_key)
                .ok_or_else(|| bad(&self.t.range_key))?
                .to_string(),
            parents: get_s(item, "parents")
                .map(|p| p.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
            start: pos("start")?.ok_or_else(|| bad("start"))?,
            known_until_ms: get_n(item, "start_known_until"),
            end,
            joined: get_n(item, "joined"),
        })
    }

    /// An item this version cannot read, naming it and the one attribute
    /// (with its value): a usage error, since a person edited it.
    fn unreadable(&self, item: &Item, attribute: &str, what: &str) -> StoreError {
        let has = match item.get(attribute) {
            None => format!("no {attribute}"),
            Some(v) => format!("{attribute} = {v:?}"),
        };
        let hint = match attribute {
            "state" => " (it is open, succeeded or failed)",
            "start" | "next" | "read_from" => " (a position: at:SEQ, after:SEQ or ts:MILLIS)",
            "records" | "bytes" => " (a whole number)",
            _ => "",
        };
        StoreError::Other(anyhow::Error::new(ExitError::Usage(format!(
            "checkpoint table {:?}: the {what} {}/{} has {has}, which this version cannot \
             read{hint}: restore it, or rewind the logical name (README: The checkpoint table)",
            self.t.table,
            get_s(item, &self.t.hash_key).unwrap_or("?"),
            get_s(item, &self.t.range_key).unwrap_or("?"),
        ))))
    }
}

pub fn end_attributes(e: &ShardEnd) -> Item {
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

pub fn check_number(i: u64) -> Result<(), StoreError> {
    if i > MAX_ITERATION {
        return Err(StoreError::Other(anyhow!(
            "iteration {i} is too large (the highest is {MAX_ITERATION})"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> TableSettings {
        TableSettings {
            table: "cp".into(),
            hash_key: "H".into(),
            range_key: "R".into(),
        }
    }

    fn key() -> LogicalKey {
        LogicalKey {
            stream: "logs".into(),
            logical_name: "top".into(),
        }
    }

    fn header() -> IterationHeader {
        IterationHeader {
            number: 7,
            state: IterationState::Failed,
            stream_arn: "arn:aws:kinesis:us-east-1:1:stream/logs".into(),
            stream_created_ms: 1_000,
            start_spec: "at-timestamp@5".into(),
            opened_ms: 2_000,
            opened_by: "host:1:2".into(),
            shard_count: 3,
            low_water: 4,
            owner: Some("host:1:2".into()),
            lease_expires_ms: 32_000,
            finished_ms: None,
            taken_over: None,
            joined_children: None,
        }
    }

    #[test]
    fn keys_sort_iterations_as_numbers_and_keep_each_iterations_items_apart() {
        let t = table();
        let c = Codec { t: &t };
        let item = c.header_item(&key(), &header(), 1);
        assert_eq!(get_s(&item, "H"), Some("logs/top"));
        assert_eq!(get_s(&item, "R"), Some("0000000007"));
        assert!(iteration_sk(9) < iteration_sk(10));
        assert_eq!(shard_pk(&key(), 7), "logs/top/0000000007");
        let task = Holder {
            owner: "o".into(),
            task: Some("shardId-1".into()),
        };
        let lease = c.lease_key(&key(), 7, &task);
        assert_eq!(get_s(&lease, "H"), Some("logs/top/0000000007/tasks"));
        assert_eq!(get_s(&lease, "R"), Some("shardId-1"));
        let whole = c.lease_key(&key(), 7, &Holder::whole("o"));
        assert_eq!(get_s(&whole, "R"), Some("0000000007"));
        assert!(check_number(MAX_ITERATION).is_ok() && check_number(MAX_ITERATION + 1).is_err());
    }

    #[test]
    fn headers_and_shards_read_back_as_written() {
        let t = table();
        let c = Codec { t: &t };
        assert_eq!(
            c.parse_header(&c.header_item(&key(), &header(), 1))
                .unwrap(),
            header()
        );
        let open = ShardCheckpoint {
            shard_id: "shardId-2".into(),
            parents: vec!["shardId-0".into(), "shardId-1".into()],
            start: Position::Timestamp(5),
            known_until_ms: Some(5),
            end: None,
            joined: None,
        };
        let item = c.shard_item(&key(), 7, 1, &open);
        assert_eq!(c.parse_shard(&item).unwrap(), open);
        let fixed = ShardCheckpoint {
            end: Some(ShardEnd {
                last_sequence: Some("49".into()),
                next: Position::After("49".into()),
                closed: true,
                records: 10,
                bytes: 300,
                fixed_ms: 9_000,
                fixed_by: "host:1:2".into(),
                known_until_ms: Some(8_000),
                read_from: Some(Position::At("40".into())),
                expired_skip: Some("records 1 to 39".into()),
                first_sequence: Some("40".into()),
                first_arrival_ms: Some(6_000),
            }),
            joined: Some(2),
            ..open
        };
        let item = c.shard_item(&key(), 7, 1, &fixed);
        assert_eq!(c.parse_shard(&item).unwrap(), fixed);
        // An end is written on its own, by UpdateItem, with the same names.
        let mut by_update = c.shard_item(
            &key(),
            7,
            1,
            &ShardCheckpoint {
                end: None,
                ..fixed.clone()
            },
        );
        by_update.extend(end_attributes(fixed.end.as_ref().unwrap()));
        assert_eq!(c.parse_shard(&by_update).unwrap(), fixed);
    }

    #[test]
    fn an_item_this_version_cannot_read_is_an_error_not_a_guess() {
        let t = table();
        let c = Codec { t: &t };
        let mut item = c.header_item(&key(), &header(), 1);
        item.insert("state".into(), s("half-done"));
        let e = c.parse_header(&item).unwrap_err().to_string();
        assert!(e.contains("cannot read"), "{e}");
        // The bad attribute is named, with its value, not every attribute.
        assert!(e.contains("has state = S(\"half-done\")"), "{e}");
        assert!(!e.contains("stream_arn"), "{e}");
        let mut shard = c.shard_item(
            &key(),
            7,
            1,
            &ShardCheckpoint {
                shard_id: "s".into(),
                parents: vec![],
                start: Position::At("1".into()),
                known_until_ms: None,
                end: None,
                joined: None,
            },
        );
        shard.insert("start".into(), s("somewhere"));
        assert!(c.parse_shard(&shard).is_err());
        shard.remove("start");
        let e = c.parse_shard(&shard).unwrap_err().to_string();
        assert!(e.contains("start"), "{e}");
    }

    #[test]
    fn a_wide_iteration_spreads_its_shards_evenly_over_partition_keys() {
        assert_eq!(
            [1, 200, 201, 400, 1_000].map(partitions_for),
            [1, 1, 2, 2, 5]
        );
        let mut per_key = std::collections::BTreeMap::new();
        for s in 0..1_000 {
            let id = format!("shardId-{s:012}");
            *per_key.entry(shard_item_pk(&key(), 7, 5, &id)).or_insert(0) += 1;
        }
        let keys: Vec<&String> = per_key.keys().collect();
        assert_eq!(
            keys,
            (0..5)
                .map(|p| format!("logs/top/0000000007/{p}"))
                .collect::<Vec<_>>()
                .iter()
                .collect::<Vec<_>>()
        );
        assert!(per_key.values().all(|n| *n == 200), "{per_key:?}");
        // A narrow iteration keeps the one key every earlier version wrote.
        assert_eq!(
            shard_item_pk(&key(), 7, 1, "shardId-000000000003"),
            "logs/top/0000000007"
        );
        // A name without a number still has one fixed partition.
        let p = partition_of("odd-name-x", 5);
        assert!(p < 5 && partition_of("odd-name-x", 5) == p);
    }

    #[test]
    fn a_layout_item_is_read_by_this_version_and_stops_one_that_knows_one_key() {
        let t = table();
        let c = Codec { t: &t };
        let marker = c.layout_item(&key(), 7, 5);
        assert_eq!(get_s(&marker, "H"), Some("logs/top/0000000007"));
        assert_eq!(c.parse_layout(&marker, 7).unwrap(), Some(5));
        let shard = c.shard_item(
            &key(),
            7,
            5,
            &ShardCheckpoint {
                shard_id: "shardId-000000000003".into(),
                parents: vec![],
                start: Position::At("1".into()),
                known_until_ms: None,
                end: None,
                joined: None,
            },
        );
        assert_eq!(get_s(&shard, "H"), Some("logs/top/0000000007/3"));
        assert_eq!(c.parse_layout(&shard, 7).unwrap(), None);
        // An earlier version reads every item under the one key as a shard:
        // this one is none, and it says so instead of seeing no shards.
        let e = c.parse_shard(&marker).unwrap_err().to_string();
        assert!(e.contains("has no start"), "{e}");
    }

    #[test]
    fn a_header_or_layout_of_a_newer_layout_is_refused() {
        let t = table();
        let c = Codec { t: &t };
        let wide = c.header_item(&key(), &header(), 5);
        assert_eq!(get_n::<u32>(&wide, "layout"), Some(LAYOUT_CREATED));
        assert_eq!(c.parse_header(&wide).unwrap(), header());
        let mut newer = wide.clone();
        newer.insert("layout".into(), n(LAYOUT + 1));
        let e = c.parse_header(&newer).unwrap_err().to_string();
        assert!(
            e.contains("newer version") && e.contains("iteration 7"),
            "{e}"
        );
        let mut marker = c.layout_item(&key(), 7, 5);
        marker.insert("layout".into(), n(LAYOUT + 1));
        assert!(c.parse_layout(&marker, 7).is_err());
    }
}
