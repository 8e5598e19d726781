//! The checkpoint items as DynamoDB attribute maps: keys, headers, shards
//! and their ends, written and read back. Pure: no requests here.
//!
//! The layout:
//!
//! | item | hash key | range key |
//! |---|---|---|
//! | iteration header | `<stream>/<logical name>` | iteration number, 10 digits (`0000000007`) |
//! | shard of an iteration | `<stream>/<logical name>/<iteration, 10 digits>` | shard id |
//! | a map task's lease | `<stream>/<logical name>/<iteration, 10 digits>/tasks` | task name |

use crate::config::TableSettings;
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
pub const RESERVED: [&str; 32] = [
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

    pub fn header_item(&self, k: &LogicalKey, h: &IterationHeader) -> Item {
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

    pub fn parse_header(&self, item: &Item) -> Result<IterationHeader, StoreError> {
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

    pub fn shard_item(&self, k: &LogicalKey, i: u64, sc: &ShardCheckpoint) -> Item {
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

    pub fn parse_shard(&self, item: &Item) -> Result<ShardCheckpoint, StoreError> {
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
        }
    }

    #[test]
    fn keys_sort_iterations_as_numbers_and_keep_each_iterations_items_apart() {
        let t = table();
        let c = Codec { t: &t };
        let item = c.header_item(&key(), &header());
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
            c.parse_header(&c.header_item(&key(), &header())).unwrap(),
            header()
        );
        let open = ShardCheckpoint {
            shard_id: "shardId-2".into(),
            parents: vec!["shardId-0".into(), "shardId-1".into()],
            start: Position::Timestamp(5),
            known_until_ms: Some(5),
            end: None,
        };
        let item = c.shard_item(&key(), 7, &open);
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
            ..open
        };
        let item = c.shard_item(&key(), 7, &fixed);
        assert_eq!(c.parse_shard(&item).unwrap(), fixed);
        // An end is written on its own, by UpdateItem, with the same names.
        let mut by_update = c.shard_item(
            &key(),
            7,
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
        let mut item = c.header_item(&key(), &header());
        item.insert("state".into(), s("half-done"));
        let e = c.parse_header(&item).unwrap_err().to_string();
        assert!(e.contains("cannot read"), "{e}");
        let mut shard = c.shard_item(
            &key(),
            7,
            &ShardCheckpoint {
                shard_id: "s".into(),
                parents: vec![],
                start: Position::At("1".into()),
                known_until_ms: None,
                end: None,
            },
        );
        shard.insert("start".into(), s("somewhere"));
        assert!(c.parse_shard(&shard).is_err());
        shard.remove("start");
        let e = c.parse_shard(&shard).unwrap_err().to_string();
        assert!(e.contains("start"), "{e}");
    }
}
