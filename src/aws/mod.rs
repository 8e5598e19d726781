//! The only place that touches the AWS SDK: building clients (region,
//! profile, endpoints, retries, timeouts) and the adapters that implement the
//! crate's small traits on top of the SDK clients.

pub mod checkpoint_table;
pub mod item_table;
pub mod kinesis;
pub mod s3;

use crate::config::AwsSettings;
use crate::error::ReaderError;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata};
use std::time::Duration;

/// Loads the shared SDK configuration: the standard credential chain and
/// region resolution, plus our flags. `AWS_ENDPOINT_URL` and the per-service
/// `AWS_ENDPOINT_URL_KINESIS` / `_DYNAMODB` are honoured by the SDK itself.
pub async fn sdk_config(s: &AwsSettings) -> Result<SdkConfig, ReaderError> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        // Standard retries (throttling, 5xx) with a few more attempts than the
        // default 3: a reader should ride out a short throttling burst.
        .retry_config(RetryConfig::standard().with_max_attempts(5))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(30))
                .operation_timeout(Duration::from_secs(120))
                .build(),
        );
    if let Some(r) = &s.region {
        loader = loader.region(Region::new(r.clone()));
    }
    if let Some(p) = &s.profile {
        loader = loader.profile_name(p);
    }
    if let Some(e) = &s.endpoint_url {
        loader = loader.endpoint_url(e);
    }
    let config = loader.load().await;
    if config.region().is_none() {
        return Err(ReaderError::Usage(
            "no AWS region: use --region, -D kinesis.endpoint.region=R, AWS_REGION, or a profile \
             with a region"
                .into(),
        ));
    }
    Ok(config)
}

/// The service's error code (e.g. `ResourceNotFoundException`), if any.
pub(crate) fn code<E: ProvideErrorMetadata>(e: &E) -> &str {
    e.code().unwrap_or("")
}

/// An SDK error with its whole cause chain, as an `anyhow::Error`.
pub(crate) fn full<E: std::error::Error + Send + Sync + 'static>(e: E) -> anyhow::Error {
    anyhow::anyhow!("{}", DisplayErrorContext(e))
}
