//! [`StreamApi`] on the Kinesis SDK client.

use super::{code, full};
use crate::position::Position;
use crate::stream::{stream_name, Page, Record, ShardInfo, StreamApi, StreamError, StreamInfo};
use async_trait::async_trait;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::ShardIteratorType;
use aws_sdk_kinesis::Client;
use bytes::Bytes;

pub struct KinesisStream {
    client: Client,
    /// As the user gave it: a name or an ARN.
    stream: String,
    region: String,
}

impl KinesisStream {
    pub fn new(config: &aws_config::SdkConfig, stream: &str) -> Self {
        KinesisStream {
            client: Client::new(config),
            stream: stream.to_string(),
            region: config.region().map(|r| r.to_string()).unwrap_or_default(),
        }
    }

    fn is_arn(&self) -> bool {
        self.stream.starts_with("arn:")
    }

    /// GetShardIterator at a position, or at the trim horizon for `None`.
    async fn shard_iterator(
        &self,
        shard_id: &str,
        from: Option<&Position>,
    ) -> Result<String, StreamError> {
        let mut req = self.client.get_shard_iterator().shard_id(shard_id);
        req = if self.is_arn() {
            req.stream_arn(&self.stream)
        } else {
            req.stream_name(&self.stream)
        };
        req = match from {
            None => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
            Some(Position::At(s)) => req
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(s),
            Some(Position::After(s)) => req
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(s),
            Some(Position::Timestamp(ms)) => req
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(DateTime::from_millis(*ms)),
        };
        let out = req
            .send()
            .await
            .map_err(|e| self.map_err(e, "GetShardIterator"))?;
        out.shard_iterator().map(str::to_string).ok_or_else(|| {
            StreamError::Other(anyhow::anyhow!("GetShardIterator returned no iterator"))
        })
    }

    fn map_err<E, R>(&self, e: SdkError<E, R>, what: &str) -> StreamError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let c = match &e {
            SdkError::ServiceError(s) => code(s.err()).to_string(),
            _ => String::new(),
        };
        match c.as_str() {
            "ResourceNotFoundException" => StreamError::NotFound(format!(
                "{what}: stream {:?} (or its shard) does not exist in region {}; check --stream \
                 and --region",
                self.stream, self.region
            )),
            "ExpiredIteratorException" => StreamError::IteratorExpired,
            "AccessDeniedException" => StreamError::AccessDenied(format!(
                "{what}: access denied to stream {:?}: the credentials need kinesis:{what}",
                self.stream
            )),
            _ => StreamError::Other(full(e).context(format!("{what} on stream {:?}", self.stream))),
        }
    }
}

#[async_trait]
impl StreamApi for KinesisStream {
    async fn describe(&self) -> Result<StreamInfo, StreamError> {
        let mut req = self.client.describe_stream_summary();
        req = if self.is_arn() {
            req.stream_arn(&self.stream)
        } else {
            req.stream_name(&self.stream)
        };
        let out = req
            .send()
            .await
            .map_err(|e| self.map_err(e, "DescribeStreamSummary"))?;
        let d = out.stream_description_summary().ok_or_else(|| {
            StreamError::Other(anyhow::anyhow!("DescribeStreamSummary: empty answer"))
        })?;
        Ok(StreamInfo {
            name: d.stream_name().to_string(),
            arn: d.stream_arn().to_string(),
            created_ms: d.stream_creation_timestamp().to_millis().unwrap_or(0),
            retention_hours: d.retention_period_hours() as i64,
        })
    }

    async fn list_shards(&self) -> Result<Vec<ShardInfo>, StreamError> {
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = self.client.list_shards();
            req = match &token {
                // With a token the stream must not be named again.
                Some(t) => req.next_token(t),
                None if self.is_arn() => req.stream_arn(&self.stream),
                None => req.stream_name(stream_name(&self.stream)),
            };
            let out = req
                .send()
                .await
                .map_err(|e| self.map_err(e, "ListShards"))?;
            for s in out.shards() {
                let range = s.sequence_number_range();
                shards.push(ShardInfo {
                    shard_id: s.shard_id().to_string(),
                    parent: s.parent_shard_id().map(str::to_string),
                    adjacent_parent: s.adjacent_parent_shard_id().map(str::to_string),
                    starting_sequence_number: range
                        .map(|r| r.starting_sequence_number().to_string())
                        .unwrap_or_else(|| "0".into()),
                    ending_sequence_number: range
                        .and_then(|r| r.ending_sequence_number())
                        .map(str::to_string),
                });
            }
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        shards.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
        Ok(shards)
    }

    async fn iterator(&self, shard_id: &str, from: &Position) -> Result<String, StreamError> {
        self.shard_iterator(shard_id, Some(from)).await
    }

    async fn get_records(&self, iterator: &str, limit: i32) -> Result<Page, StreamError> {
        let mut req = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(limit);
        if self.is_arn() {
            req = req.stream_arn(&self.stream);
        }
        let out = req
            .send()
            .await
            .map_err(|e| self.map_err(e, "GetRecords"))?;
        let millis_behind_latest = out.millis_behind_latest();
        let next_iterator = out.next_shard_iterator().map(str::to_string);
        let records = out
            .records
            .into_iter()
            .map(|r| Record {
                arrival_ms: r
                    .approximate_arrival_timestamp
                    .and_then(|t| t.to_millis().ok())
                    .unwrap_or(0),
                sequence_number: r.sequence_number,
                sub_sequence_number: None,
                partition_key: r.partition_key.unwrap_or_default(),
                data: Bytes::from(r.data.into_inner()),
            })
            .collect();
        Ok(Page {
            records,
            next_iterator,
            millis_behind_latest,
        })
    }

    async fn oldest(&self, shard_id: &str) -> Result<Option<Record>, StreamError> {
        let mut it = Some(self.shard_iterator(shard_id, None).await?);
        // A sparse shard can answer empty pages before its first record.
        for _ in 0..20 {
            let Some(i) = it.take() else { return Ok(None) };
            let page = self.get_records(&i, 1).await?;
            if let Some(r) = page.records.into_iter().next() {
                return Ok(Some(r));
            }
            if page.millis_behind_latest == Some(0) {
                return Ok(None);
            }
            it = page.next_iterator;
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        Ok(None)
    }
}
