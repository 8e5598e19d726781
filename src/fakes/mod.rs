//! In-memory versions of the ports, for unit tests of the run logic: a
//! checkpoint store, a scripted stream, S3 objects and DynamoDB items, and a
//! wrapper that makes chosen calls of any of them fail. Built for the crate's
//! own tests, and for other crates' with the `fakes` feature. They never
//! replace the emulator tests, which talk to real service APIs.

mod faulty;
mod memory_items;
mod memory_objects;
mod memory_store;
mod memory_stream;

pub use faulty::{Fault, Faulty, Gate};
pub use memory_items::MemoryItems;
pub use memory_objects::MemoryObjects;
pub use memory_store::MemoryStore;
pub use memory_stream::{record, MemoryStream};

use crate::ports::checkpoint::{ShardCheckpoint, ShardEnd};
use crate::ports::stream::ShardInfo;
use crate::position::Position;

/// A shard as ListShards describes it: closed when it has an `end`.
pub fn shard_info(id: &str, parents: &[&str], start: &str, end: Option<&str>) -> ShardInfo {
    ShardInfo {
        shard_id: id.into(),
        parent: parents.first().map(|p| p.to_string()),
        adjacent_parent: parents.get(1).map(|p| p.to_string()),
        starting_sequence_number: start.into(),
        ending_sequence_number: end.map(str::to_string),
    }
}

/// `sc` with a fixed end after `last` (or where it started, having read
/// nothing), `closed` if the shard was read to its end.
pub fn ended(sc: &ShardCheckpoint, last: Option<&str>, closed: bool) -> ShardCheckpoint {
    ShardCheckpoint {
        end: Some(ShardEnd {
            last_sequence: last.map(str::to_string),
            next: last.map_or(sc.start.clone(), |l| Position::After(l.into())),
            closed,
            records: u64::from(last.is_some()),
            bytes: u64::from(last.is_some()),
            fixed_ms: 1,
            fixed_by: "t".into(),
            known_until_ms: None,
            read_from: None,
            expired_skip: None,
            first_sequence: None,
            first_arrival_ms: None,
        }),
        ..sc.clone()
    }
}
