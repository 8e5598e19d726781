//! What `kinesis-writer` needs from S3: one bucket's objects, written whole
//! or as a multipart upload.

use super::SinkError;
use async_trait::async_trait;
use bytes::Bytes;

/// A finished part: its number and what S3 said about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub number: i32,
    pub etag: String,
    pub checksum_crc32: Option<String>,
}

/// What the uploader needs from S3 (the SDK adapter is `aws/s3_objects.rs`), for
/// the objects of one bucket.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    async fn put_object(&self, key: &str, body: Bytes) -> Result<(), SinkError>;
    async fn create_upload(&self, key: &str) -> Result<String, SinkError>;
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<Part, SinkError>;
    /// `Ok(false)` when the answer was lost (timeout, connection): the caller
    /// then checks whether the object is there.
    async fn complete(&self, key: &str, upload_id: &str, parts: &[Part])
        -> Result<bool, SinkError>;
    async fn abort(&self, key: &str, upload_id: &str) -> Result<(), SinkError>;
    /// The object's ETag, if it exists.
    async fn head_etag(&self, key: &str) -> Result<Option<String>, SinkError>;
    /// Multipart uploads in progress for exactly this key: (id, initiated, epoch ms).
    async fn uploads_of(&self, key: &str) -> Result<Vec<(String, i64)>, SinkError>;
}
