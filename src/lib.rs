//! kinesis-streaming: checkpointed, replayable *iterations* of an Amazon Kinesis
//! stream, printed as lines for Hadoop Streaming and Unix pipelines.
//!
//! Nothing in the library touches the process's stdin, stdout or environment
//! directly: the binaries in `src/bin/` hand those in.
//!
//! Layout (each concept in the file named after it):
//! - [`config`]: settings from flags, `-D` EMR names and Hadoop-mangled env vars.
//! - [`position`]: shard positions and sequence-number ordering.
//! - [`stream`]: the small trait the reader needs from Kinesis, and its types.
//! - [`records`]: a page of records, stored compactly.
//! - [`checkpoint`]: the checkpoint store trait and the iteration/shard records.
//! - [`iteration`]: planning and opening an iteration (pure logic + the store).
//! - [`shard_reader`]: reading one shard to its end rule.
//! - [`kpl`]: de-aggregating KPL records.
//! - [`expiry`]: noticing positions that aged out of the stream's retention.
//! - [`merge`]: deterministic interleaving of shards on stdout, boundary fixing.
//! - [`pages`]: page slots, the reader's memory bound.
//! - [`format`]: record → output line.
//! - [`status`]: the `status` sub-command's table.
//! - [`sink`]: `kinesis-writer`'s targets (S3 objects, DynamoDB items) and input lines.
//! - [`progress`]: progress on a terminal, Hadoop counters.
//! - [`aws`]: the only place that touches the AWS SDK (clients and adapters).

pub mod aws;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod exec;
pub mod expiry;
#[cfg(any(test, feature = "fakes"))]
pub mod fakes;
pub mod format;
#[doc(hidden)]
pub mod fuzzing;
pub mod iteration;
pub mod kpl;
pub mod manifest;
pub mod merge;
pub mod pages;
pub mod ports;
pub mod position;
pub mod progress;
pub mod reader;
pub mod records;
pub mod shard_reader;
pub mod status;
pub mod stop;

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
pub mod sink;
