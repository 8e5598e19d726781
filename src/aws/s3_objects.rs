//! [`ObjectStore`] on the S3 SDK client.

use super::{code, full, no_answer};
use crate::ports::objects::{ObjectStore, Part};
use crate::ports::SinkError;
use anyhow::anyhow;
use async_trait::async_trait;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::Bytes;

type Result<T> = std::result::Result<T, SinkError>;

pub struct S3Objects {
    client: Client,
    bucket: String,
}

impl S3Objects {
    /// Path-style addressing when an endpoint is set (emulators have no
    /// per-bucket host names).
    pub fn new(config: &aws_config::SdkConfig, bucket: &str, path_style: bool) -> Self {
        let conf = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(path_style)
            .interceptor(super::counters::Counter)
            .build();
        S3Objects {
            client: Client::from_conf(conf),
            bucket: bucket.to_string(),
        }
    }

    fn context<E, R>(&self, e: SdkError<E, R>, what: &str, key: &str) -> anyhow::Error
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        // The permission a refused call needs; `full` says the rest.
        let hint = match &e {
            SdkError::ServiceError(se) if code(se.err()) == "AccessDenied" => {
                format!(" (needs s3:{what} on {})", self.bucket)
            }
            _ => String::new(),
        };
        full(e).context(format!("{what} s3://{}/{key}{hint}", self.bucket))
    }
}

#[async_trait]
impl ObjectStore for S3Objects {
    async fn put_object(&self, key: &str, body: Bytes) -> Result<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.context(e, "PutObject", key))?;
        Ok(())
    }

    async fn create_upload(&self, key: &str) -> Result<String> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .send()
            .await
            .map_err(|e| self.context(e, "CreateMultipartUpload", key))?;
        out.upload_id()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("CreateMultipartUpload returned no upload id").into())
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<Part> {
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.context(e, "UploadPart", key))?;
        Ok(Part {
            number,
            etag: out.e_tag().unwrap_or_default().to_string(),
            checksum_crc32: out.checksum_crc32().map(str::to_string),
        })
    }

    async fn complete(&self, key: &str, upload_id: &str, parts: &[Part]) -> Result<bool> {
        let done = CompletedMultipartUpload::builder()
            .set_parts(Some(
                parts
                    .iter()
                    .map(|p| {
                        CompletedPart::builder()
                            .part_number(p.number)
                            .e_tag(&p.etag)
                            .set_checksum_crc32(p.checksum_crc32.clone())
                            .build()
                    })
                    .collect(),
            ))
            .build();
        match self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(done)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            // No usable answer (timeout, connection lost, a body that does not
            // parse and carries no error code): it may have completed.
            Err(e) if no_answer(&e) => Ok(false),
            Err(SdkError::ServiceError(se)) if code(se.err()).is_empty() => {
                log::debug!(
                    "CompleteMultipartUpload answer not understood: {:?}",
                    se.raw().status()
                );
                Ok(false)
            }
            Err(e) => Err(self.context(e, "CompleteMultipartUpload", key).into()),
        }
    }

    async fn abort(&self, key: &str, upload_id: &str) -> Result<()> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| self.context(e, "AbortMultipartUpload", key))?;
        Ok(())
    }

    async fn uploads_of(&self, key: &str) -> Result<Vec<(String, i64)>> {
        let out = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(key)
            .send()
            .await
            .map_err(|e| self.context(e, "ListBucketMultipartUploads", key))?;
        Ok(out
            .uploads()
            .iter()
            .filter(|u| u.key() == Some(key))
            .filter_map(|u| {
                let id = u.upload_id()?.to_string();
                let at = u.initiated()?.to_millis().ok()?;
                Some((id, at))
            })
            .collect())
    }

    async fn head_etag(&self, key: &str) -> Result<Option<String>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(o) => Ok(o.e_tag().map(str::to_string)),
            Err(SdkError::ServiceError(se)) if se.err().is_not_found() => Ok(None),
            Err(e) => Err(self.context(e, "HeadObject", key).into()),
        }
    }
}
