//! [`StreamApi`] on the Kinesis SDK client.

use super::{code, full, get_records};
use crate::ports::stream::{
    stream_name, Page, Record, ShardInfo, StreamApi, StreamError, StreamInfo, Subscription,
};
use crate::position::Position;
use crate::records::{Builder, RecordRef, Records};
use async_trait::async_trait;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::{
    ConsumerStatus, ShardIteratorType, StartingPosition, SubscribeToShardEventStream,
};
use aws_sdk_kinesis::Client;

pub struct KinesisStream {
    client: Client,
    /// As the user gave it: a name or an ARN.
    stream: String,
    /// Where the stream was given, for the message when it does not exist.
    named_by: String,
    region: String,
}

impl KinesisStream {
    pub fn new(config: &aws_config::SdkConfig, stream: &str) -> Self {
        KinesisStream {
            client: Client::from_conf(
                aws_sdk_kinesis::config::Builder::from(config)
                    .interceptor(super::counters::Counter)
                    .http_client(get_records::http_client(config.http_client()))
                    .build(),
            ),
            stream: stream.to_string(),
            named_by: "--stream".into(),
            region: config.region().map(|r| r.to_string()).unwrap_or_default(),
        }
    }

    /// Names where the stream was given (`-D kinesis.stream.name=s`), so that
    /// a missing stream's message says what to check.
    pub fn named_by(mut self, setting: &str) -> Self {
        self.named_by = setting.to_string();
        self
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

    /// The stream's ARN (the consumer calls take only ARNs).
    async fn arn(&self) -> Result<String, StreamError> {
        if self.is_arn() {
            return Ok(self.stream.clone());
        }
        Ok(self.describe().await?.arn)
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
            // A shard's call names the shard: its stream was looked at already.
            "ResourceNotFoundException"
                if matches!(what, "GetShardIterator" | "GetRecords" | "SubscribeToShard") =>
            {
                StreamError::NotFound(format!(
                    "{what}: stream {:?} in region {} has no such shard (or is gone): a shard \
                     that the checkpoint table names but the stream does not have was edited \
                     in by hand, or the stream was deleted",
                    self.stream, self.region
                ))
            }
            "ResourceNotFoundException" => StreamError::NotFound(format!(
                "{what}: stream {:?} does not exist in region {}; check {} and the region",
                self.stream, self.region, self.named_by
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
            // A thousand shards a page (the default, said explicitly):
            // `plan` of a 1,000-shard stream is one ListShards call.
            let mut req = self.client.list_shards().max_results(1000);
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
        // The connector decodes the answer into `decoded` (the fast path).
        let decoded = get_records::DecodedRecords::default();
        let slot = decoded.clone();
        let out = req
            .customize()
            .mutate_request(move |r| slot.attach(r))
            .send()
            .await;
        let out = out.map_err(|e| self.map_err(e, "GetRecords"))?;
        let millis_behind_latest = out.millis_behind_latest();
        let next_iterator = out.next_shard_iterator().map(str::to_string);
        let records = match decoded.take() {
            Some(records) => records,
            None => records(out.records)?,
        };
        Ok(Page {
            records,
            next_iterator,
            millis_behind_latest,
        })
    }

    async fn consumer(&self, name: &str) -> Result<String, StreamError> {
        let stream_arn = self.arn().await?;
        let describe = || {
            self.client
                .describe_stream_consumer()
                .stream_arn(&stream_arn)
                .consumer_name(name)
                .send()
        };
        let existing = match describe().await {
            Ok(out) => out.consumer_description,
            Err(e) if error_code(&e) == "ResourceNotFoundException" => None,
            Err(e) => return Err(self.map_err(e, "DescribeStreamConsumer")),
        };
        if existing.is_none() {
            log::info!("registering enhanced fan-out consumer {name:?} on {stream_arn}");
            match self
                .client
                .register_stream_consumer()
                .stream_arn(&stream_arn)
                .consumer_name(name)
                .send()
                .await
            {
                Ok(_) => {}
                // Registered by another run meanwhile: use it.
                Err(e) if error_code(&e) == "ResourceInUseException" => {}
                Err(e) => return Err(self.map_err(e, "RegisterStreamConsumer")),
            }
        }
        // A new consumer takes a few seconds to become active.
        for _ in 0..600 {
            let d = describe()
                .await
                .map_err(|e| self.map_err(e, "DescribeStreamConsumer"))?;
            if let Some(c) = d.consumer_description {
                if c.consumer_status == ConsumerStatus::Active {
                    return Ok(c.consumer_arn);
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Err(StreamError::Other(anyhow::anyhow!(
            "consumer {name:?} did not become active within a minute"
        )))
    }

    async fn deregister_consumer(&self, name: &str) -> Result<bool, StreamError> {
        let stream_arn = self.arn().await?;
        match self
            .client
            .deregister_stream_consumer()
            .stream_arn(&stream_arn)
            .consumer_name(name)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            // Not there, or already being deleted (no longer ACTIVE).
            Err(e)
                if matches!(
                    error_code(&e),
                    "ResourceNotFoundException" | "ResourceInUseException"
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.map_err(e, "DeregisterStreamConsumer")),
        }
    }

    async fn subscribe(
        &self,
        consumer_arn: &str,
        shard_id: &str,
        from: &Position,
    ) -> Result<Box<dyn Subscription>, StreamError> {
        let start = StartingPosition::builder();
        let start = match from {
            Position::At(s) => start
                .r#type(ShardIteratorType::AtSequenceNumber)
                .sequence_number(s),
            Position::After(s) => start
                .r#type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(s),
            Position::Timestamp(ms) => start
                .r#type(ShardIteratorType::AtTimestamp)
                .timestamp(DateTime::from_millis(*ms)),
        }
        .build()
        .map_err(|e| StreamError::Other(anyhow::anyhow!("{e}")))?;
        match self
            .client
            .subscribe_to_shard()
            .consumer_arn(consumer_arn)
            .shard_id(shard_id)
            .starting_position(start)
            .send()
            .await
        {
            Ok(out) => Ok(Box::new(Events(out.event_stream))),
            Err(e) if error_code(&e) == "ResourceInUseException" => Err(
                StreamError::SubscriptionInUse(format!("SubscribeToShard {shard_id}: {}", full(e))),
            ),
            Err(e) => Err(self.map_err(e, "SubscribeToShard")),
        }
    }

    async fn oldest(&self, shard_id: &str) -> Result<Option<Record>, StreamError> {
        let mut it = Some(self.shard_iterator(shard_id, None).await?);
        // A sparse shard can answer empty pages before its first record.
        for _ in 0..20 {
            let Some(i) = it.take() else { return Ok(None) };
            let page = self.get_records(&i, 1).await?;
            if let Some(r) = page.records.iter().next() {
                return Ok(Some(r.to_owned()));
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

/// The service's error code of an SDK error, or "".
fn error_code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> &str {
    match e {
        SdkError::ServiceError(s) => code(s.err()),
        _ => "",
    }
}

/// A SubscribeToShard event stream.
struct Events(
    aws_sdk_kinesis::primitives::event_stream::EventReceiver<
        SubscribeToShardEventStream,
        aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError,
    >,
);

#[async_trait]
impl Subscription for Events {
    async fn next(&mut self) -> Result<Option<Page>, StreamError> {
        use aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError as E;
        let ev = self.0.recv().await.map_err(|e| {
            let in_use = matches!(&e, SdkError::ServiceError(s) if matches!(s.err(), E::ResourceInUseException(_)));
            if in_use {
                StreamError::SubscriptionInUse("another subscription of this consumer is active".into())
            } else {
                StreamError::Other(full(e).context("SubscribeToShard event"))
            }
        })?;
        match ev {
            None => Ok(None),
            Some(SubscribeToShardEventStream::SubscribeToShardEvent(e)) => {
                let closed = e.child_shards.as_ref().is_some_and(|c| !c.is_empty())
                    && e.continuation_sequence_number.is_empty();
                Ok(Some(Page {
                    records: records(e.records)?,
                    next_iterator: (!closed).then_some(e.continuation_sequence_number),
                    millis_behind_latest: Some(e.millis_behind_latest),
                }))
            }
            Some(other) => Err(StreamError::Other(anyhow::anyhow!(
                "unexpected SubscribeToShard event {other:?}"
            ))),
        }
    }
}

/// The SDK's records (an answer the fast path left to the SDK, or a
/// SubscribeToShard event) as a page.
fn records(sdk: Vec<aws_sdk_kinesis::types::Record>) -> Result<Records, StreamError> {
    let data = sdk.iter().map(|r| r.data.as_ref().len()).sum();
    let mut b = Builder::with_capacity(sdk.len(), data);
    for r in &sdk {
        b.push(RecordRef {
            sequence_number: &r.sequence_number,
            sub_sequence_number: None,
            partition_key: r.partition_key.as_deref().unwrap_or_default(),
            data: r.data.as_ref(),
            arrival_ms: r
                .approximate_arrival_timestamp
                .and_then(|t| t.to_millis().ok())
                .unwrap_or(0),
        })
        .map_err(|e| StreamError::Other(e.into()))?;
    }
    Ok(b.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_runtime_api::client::http::{
        HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
    };
    use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
    use aws_smithy_types::body::SdkBody;
    use std::sync::{Arc, Mutex};

    /// Answers every request with the body set last, after answering the
    /// number in `.1` of them with a 500 (which the SDK retries).
    #[derive(Clone, Debug, Default)]
    struct Canned(Arc<Mutex<Vec<u8>>>, Arc<Mutex<usize>>);

    impl HttpClient for Canned {
        fn http_connector(
            &self,
            _: &HttpConnectorSettings,
            _: &RuntimeComponents,
        ) -> SharedHttpConnector {
            SharedHttpConnector::new(self.clone())
        }
    }

    impl HttpConnector for Canned {
        fn call(&self, _: HttpRequest) -> HttpConnectorFuture {
            let mut failures = self.1.lock().unwrap();
            let (status, body) = match *failures {
                0 => (200u16, self.0.lock().unwrap().clone()),
                _ => {
                    *failures -= 1;
                    (
                        500,
                        br#"{"__type":"InternalFailure","message":"try again"}"#.to_vec(),
                    )
                }
            };
            let mut answer = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
            answer
                .headers_mut()
                .insert("content-length", body.len().to_string());
            *answer.body_mut() = SdkBody::from(body);
            HttpConnectorFuture::ready(Ok(answer))
        }
    }

    use crate::fuzzing::Rng;

    /// A GetRecords answer in the shapes a JSON encoder may give it: escaped
    /// or plain '/', any partition key, timestamps in either notation.
    fn page(rng: &mut Rng, big: bool) -> Vec<u8> {
        // Big answers (over a MiB) are read into recycled buffers.
        let n = if big { 1000 } else { rng.below(40) };
        let records: Vec<String> = (0..n)
            .map(|i| {
                let data: Vec<u8> = (0..rng.below(3000)).map(|_| rng.next_u64() as u8).collect();
                let mut b64 = base64_simd::STANDARD.encode_to_string(&data);
                if rng.below(4) == 0 {
                    b64 = b64.replace('/', "\\/");
                }
                let key: String = (0..1 + rng.below(20))
                    .map(|_| ['a', '"', '\\', '\t', '\u{1}', 'é', '🦀', '/'][rng.below(8)])
                    .collect();
                let secs = 1.6e9 + (rng.below(1 << 40) as f64) / 1024.0;
                let ts = if rng.below(2) == 0 {
                    format!("{secs:e}")
                } else {
                    format!("{secs}")
                };
                format!(
                    "{{\"SequenceNumber\":\"{}{i:05}\",\"ApproximateArrivalTimestamp\":{ts},\
                     \"Data\":\"{b64}\",\"PartitionKey\":{},\"EncryptionType\":\"NONE\"}}",
                    rng.below(1 << 60),
                    serde_json::to_string(&key).unwrap()
                )
            })
            .collect();
        let tail = if rng.below(3) == 0 {
            r#""ChildShards":[{"ShardId":"shardId-000000000001","ParentShards":["shardId-000000000000"],"HashKeyRange":{"StartingHashKey":"0","EndingHashKey":"1"}}]"#
        } else {
            r#""NextShardIterator":"AAAA+/bb==""#
        };
        format!(
            "{{\"MillisBehindLatest\":{},\"Records\":[{}],{tail}}}",
            rng.below(100_000),
            records.join(",")
        )
        .into_bytes()
    }

    fn canned_stream(canned: &Canned) -> KinesisStream {
        let config = aws_config::SdkConfig::builder()
            .region(aws_config::Region::new("us-east-1"))
            .behavior_version(aws_config::BehaviorVersion::latest())
            .credentials_provider(aws_sdk_kinesis::config::SharedCredentialsProvider::new(
                aws_sdk_kinesis::config::Credentials::new("a", "b", None, None, "test"),
            ))
            .retry_config(
                aws_config::retry::RetryConfig::standard()
                    .with_max_attempts(3)
                    .with_initial_backoff(std::time::Duration::from_millis(1)),
            )
            .sleep_impl(aws_sdk_kinesis::config::SharedAsyncSleep::new(TokioSleep))
            .http_client(canned.clone())
            .build();
        KinesisStream::new(&config, "s")
    }

    #[derive(Debug)]
    struct TokioSleep;

    impl aws_sdk_kinesis::config::AsyncSleep for TokioSleep {
        fn sleep(&self, d: std::time::Duration) -> aws_sdk_kinesis::config::Sleep {
            aws_sdk_kinesis::config::Sleep::new(tokio::time::sleep(d))
        }
    }

    /// A retried attempt is a fresh copy of the request: it must still carry
    /// the slot, or the fast path would silently stop after any retry.
    #[tokio::test]
    async fn a_retried_get_records_still_takes_the_fast_path() {
        let canned = Canned::default();
        let stream = canned_stream(&canned);
        *canned.0.lock().unwrap() = page(&mut Rng(7), true);
        *canned.1.lock().unwrap() = 2;
        let decoded = get_records::DecodedRecords::default();
        let slot = decoded.clone();
        let out = stream
            .client
            .get_records()
            .shard_iterator("it")
            .customize()
            .mutate_request(move |r| slot.attach(r))
            .send()
            .await
            .unwrap();
        assert_eq!(*canned.1.lock().unwrap(), 0, "both failures were retried");
        assert!(out.records.is_empty(), "the SDK was handed no records");
        assert_eq!(
            decoded.take().expect("decoded by the fast path").len(),
            1000
        );
    }

    /// The fast path gives exactly the SDK's records, on the SDK's own client.
    #[tokio::test]
    async fn fast_path_equals_the_sdk() {
        let canned = Canned::default();
        let stream = canned_stream(&canned);
        let mut rng = Rng(0x5eed_1234_abcd);
        let mut total = 0;
        for i in 0..200 {
            *canned.0.lock().unwrap() = page(&mut rng, i % 20 == 0);
            let (direct, _) = get_records::pages();
            let fast = stream.get_records("it", 10_000).await.unwrap();
            assert!(
                get_records::pages().0 > direct,
                "the fast path was not taken"
            );
            // Without a slot, the same connector leaves the answer to the SDK.
            let sdk = stream
                .client
                .get_records()
                .shard_iterator("it")
                .send()
                .await
                .unwrap();
            assert_eq!(fast.next_iterator.as_deref(), sdk.next_shard_iterator());
            assert_eq!(fast.millis_behind_latest, sdk.millis_behind_latest());
            let sdk = records(sdk.records).unwrap();
            assert_eq!(fast.records, sdk);
            total += sdk.len();
        }
        assert!(total > 10_000, "{total}");
    }
}
