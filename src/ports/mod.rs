//! The ports: every outside service the crate calls, as a small trait with
//! its own error enum. The AWS SDK implements them in `aws/`; in-memory
//! versions for tests are in `fakes/`. Nothing outside `aws/` sees the SDK.
//!
//! - [`StreamApi`]: the Kinesis stream the reader reads.
//! - [`CheckpointStore`]: where iteration boundaries and leases live.
//! - [`ObjectStore`]: the S3 bucket the writer writes objects to.
//! - [`ItemTable`]: the DynamoDB table the writer writes items to.

pub mod checkpoint;
pub mod items;
pub mod objects;
pub mod stream;

pub use checkpoint::{CheckpointStore, StoreError};
pub use items::ItemTable;
pub use objects::ObjectStore;
pub use stream::{StreamApi, StreamError};

/// What the writer's ports ([`ObjectStore`], [`ItemTable`]) fail with.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The bucket or table is not there, or not usable as the settings name
    /// it: a usage error (exit code 2).
    #[error("{0}")]
    NotUsable(String),
    /// The table is not there (the writer says how to create it, from its columns).
    #[error("table {0} does not exist")]
    NoSuchTable(String),
    /// The service refused these items themselves as invalid (DynamoDB's
    /// ValidationException, say an item over 400 KB): the same request
    /// would fail again, but the other items can go on.
    #[error("{0}")]
    Refused(String),
    /// No usable answer, or the service was busy, after the SDK's own
    /// retries: the same request may succeed a little later.
    #[error("{0:#}")]
    Transient(anyhow::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A port's error under the run's context reads as one chain, each cause
    /// once (`{:#}` is how `main` prints an error).
    #[test]
    fn a_ports_error_says_each_cause_once() {
        let cause = || anyhow::anyhow!("timed out").context("GetItem on table cp");
        let said = |e: anyhow::Error| format!("{:#}", e.context("reading the latest iteration"));
        let want = "reading the latest iteration: GetItem on table cp: timed out";
        assert_eq!(said(StoreError::Other(cause()).into()), want);
        assert_eq!(said(StreamError::Other(cause()).into()), want);
        assert_eq!(said(SinkError::Other(cause()).into()), want);
        assert_eq!(said(SinkError::Transient(cause()).into()), want);
    }
}
