//! The only place that touches the AWS SDK: building clients (region,
//! profile, endpoints, retries, timeouts) and the adapters that implement the
//! crate's small traits on top of the SDK clients.

pub mod checkpoint_table;
pub mod counters;
pub mod get_records;
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
                .operation_attempt_timeout(attempt_timeout())
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
    check_endpoints(s)?;
    if let Some(k) = &s.keys {
        loader = loader.credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            &k.access_key,
            &k.secret_key,
            None,
            None,
            "kinesis.accessKey",
        ));
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

/// 30 s per attempt; `KINESIS_STREAMING_ATTEMPT_TIMEOUT` (e.g. `2s`) shortens
/// it for the fault-injection tests, which delay answers past it.
fn attempt_timeout() -> Duration {
    std::env::var("KINESIS_STREAMING_ATTEMPT_TIMEOUT")
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
        .unwrap_or(Duration::from_secs(30))
}

/// Refuses a plain-HTTP endpoint on another host (signed requests and data
/// would cross the network unencrypted) unless explicitly allowed.
fn check_endpoints(s: &AwsSettings) -> Result<(), ReaderError> {
    if s.allow_insecure_endpoint {
        return Ok(());
    }
    let vars = [
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_KINESIS",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_ENDPOINT_URL_S3",
    ];
    let given = s
        .endpoint_url
        .iter()
        .map(|u| (u.clone(), "--endpoint-url".to_string()))
        .chain(
            vars.iter()
                .filter_map(|v| std::env::var(v).ok().map(|u| (u, v.to_string()))),
        );
    for (url, source) in given {
        if let Some(host) = insecure_host(&url) {
            return Err(ReaderError::Usage(format!(
                "{source} {url} is plain HTTP to {host}, which is not this machine: use https, \
                 or pass --allow-insecure-endpoint if you mean it"
            )));
        }
    }
    Ok(())
}

/// The host of a plain-HTTP URL that is not a loopback address.
fn insecure_host(url: &str) -> Option<String> {
    let rest = url.trim().strip_prefix("http://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    (!loopback).then(|| host.to_string())
}

/// The service's error code (e.g. `ResourceNotFoundException`), if any.
pub(crate) fn code<E: ProvideErrorMetadata>(e: &E) -> &str {
    e.code().unwrap_or("")
}

/// An SDK error with its whole cause chain, as an `anyhow::Error`.
pub(crate) fn full<E: std::error::Error + Send + Sync + 'static>(e: E) -> anyhow::Error {
    anyhow::anyhow!("{}", DisplayErrorContext(e))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_plain_http_off_this_machine_is_insecure() {
        use super::insecure_host as h;
        assert_eq!(h("http://127.0.0.1:4566"), None);
        assert_eq!(h("http://127.8.9.1:4566/x"), None);
        assert_eq!(h("http://localhost:4566"), None);
        assert_eq!(h("http://[::1]:4566"), None);
        assert_eq!(h("https://kinesis.example.com"), None);
        assert_eq!(h("http://10.0.0.5:4566"), Some("10.0.0.5".into()));
        assert_eq!(
            h("http://kinesis.example.com/"),
            Some("kinesis.example.com".into())
        );
        assert_eq!(h("http://u@192.168.1.2"), Some("192.168.1.2".into()));
    }
}
