//! What the reader needs from Kinesis, as a small trait, so that the reading
//! logic can be tested against the in-memory stream in `fakes/` and the SDK
//! stays in `aws/`.

use crate::position::Position;
pub use crate::records::Record;
use crate::records::Records;
use async_trait::async_trait;

/// A shard as ListShards describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardInfo {
    pub shard_id: String,
    pub parent: Option<String>,
    pub adjacent_parent: Option<String>,
    pub starting_sequence_number: String,
    /// Set when the shard is closed (after a split or merge): its last record.
    pub ending_sequence_number: Option<String>,
}

impl ShardInfo {
    pub fn parents(&self) -> Vec<String> {
        self.parent
            .iter()
            .chain(self.adjacent_parent.iter())
            .cloned()
            .collect()
    }
}

/// What identifies a stream: a stream deleted and re-created under the same
/// name has a new creation time, so old checkpoints are not mistaken for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    pub name: String,
    pub arn: String,
    pub created_ms: i64,
    /// How long the stream keeps records.
    pub retention_hours: i64,
}

/// One GetRecords answer.
#[derive(Debug, Default)]
pub struct Page {
    pub records: Records,
    /// `None` when the shard is closed and fully read.
    pub next_iterator: Option<String>,
    pub millis_behind_latest: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("{0}")]
    NotFound(String),
    #[error("shard iterator expired")]
    IteratorExpired,
    /// Enhanced fan-out: another subscription of this consumer to this shard
    /// is still active (the service allows one, and a new one 5 s after the last).
    #[error("{0}")]
    SubscriptionInUse(String),
    #[error("{0}")]
    AccessDenied(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

#[async_trait]
pub trait StreamApi: Send + Sync {
    async fn describe(&self) -> Result<StreamInfo, StreamError>;
    /// Every shard of the stream, open and closed, in shard-id order.
    async fn list_shards(&self) -> Result<Vec<ShardInfo>, StreamError>;
    async fn iterator(&self, shard_id: &str, from: &Position) -> Result<String, StreamError>;
    async fn get_records(&self, iterator: &str, limit: i32) -> Result<Page, StreamError>;
    /// The oldest record still in the shard (at its trim horizon), if any.
    async fn oldest(&self, shard_id: &str) -> Result<Option<Record>, StreamError>;
    /// Enhanced fan-out: the ARN of the stream consumer `name`, registered
    /// first if it does not exist, once it is active.
    async fn consumer(&self, name: &str) -> Result<String, StreamError>;
    /// Deregisters consumer `name`; false if there was none (or it is already
    /// being deregistered).
    async fn deregister_consumer(&self, name: &str) -> Result<bool, StreamError>;
    /// A SubscribeToShard subscription (up to 5 minutes) from `from`.
    async fn subscribe(
        &self,
        consumer_arn: &str,
        shard_id: &str,
        from: &Position,
    ) -> Result<Box<dyn Subscription>, StreamError>;
}

/// The events of one SubscribeToShard call, as pages: `next_iterator` holds
/// the continuation sequence number, and is `None` once the shard is closed
/// and read to its end.
#[async_trait]
pub trait Subscription: Send {
    /// The next event; `None` when the subscription has ended (after 5 minutes).
    async fn next(&mut self) -> Result<Option<Page>, StreamError>;
}

/// The stream name inside an ARN (`arn:aws:kinesis:REGION:ACCOUNT:stream/NAME`),
/// or the argument itself when it is a plain name.
pub fn stream_name(name_or_arn: &str) -> &str {
    match name_or_arn.strip_prefix("arn:") {
        Some(rest) => rest.rsplit_once(":stream/").map_or(name_or_arn, |(_, n)| n),
        None => name_or_arn,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stream_name_from_arn_or_name() {
        assert_eq!(
            super::stream_name("arn:aws:kinesis:us-east-1:123456789012:stream/access-logs"),
            "access-logs"
        );
        assert_eq!(super::stream_name("access-logs"), "access-logs");
    }
}
