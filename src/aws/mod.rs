//! The only place that touches the AWS SDK: building clients (region,
//! profile, endpoints, retries, timeouts) and the adapters that implement the
//! crate's small traits on top of the SDK clients.

pub mod checkpoint_table;
pub mod counters;
pub mod get_records;
pub mod item_table;
pub mod kinesis;
pub mod s3_objects;

use crate::config::AwsSettings;
use crate::error::ExitError;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata};
use std::time::Duration;

/// The writer's store for its destination, on the SDK's clients.
pub async fn writer_store(
    cfg: &crate::config::WriterConfig,
) -> Result<crate::sink::Store, ExitError> {
    use crate::sink::{Destination, Store};
    let sdk = sdk_config(&cfg.aws).await?;
    Ok(match &cfg.destination {
        Destination::S3(o) => Store::Objects(std::sync::Arc::new(s3_objects::S3Objects::new(
            &sdk,
            &o.bucket,
            o.path_style,
        ))),
        Destination::DynamoDb(t) => Store::Items(std::sync::Arc::new(
            item_table::DynamoItems::new(&sdk, &t.table),
        )),
    })
}

/// Loads the shared SDK configuration: the standard credential chain and
/// region resolution, plus our flags. `AWS_ENDPOINT_URL` and the per-service
/// `AWS_ENDPOINT_URL_KINESIS` / `_DYNAMODB` are honoured by the SDK itself.
pub async fn sdk_config(s: &AwsSettings) -> Result<SdkConfig, ExitError> {
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
        check_profile(p).await?;
        // A profile on the command line wins over credentials in the
        // environment, as with the AWS CLI: the SDK's default chain would
        // take AWS_ACCESS_KEY_ID first and ignore the profile silently.
        loader = loader.profile_name(p).credentials_provider(
            aws_config::profile::ProfileFileCredentialsProvider::builder()
                .profile_name(p)
                .build(),
        );
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
        return Err(ExitError::Usage(
            "no AWS region: use --region, -D kinesis.endpoint.region=R, AWS_REGION, or a profile \
             with a region"
                .into(),
        ));
    }
    Ok(config)
}

/// A named profile must be in the AWS config files: otherwise every request
/// would fail later with a message about missing credentials.
async fn check_profile(name: &str) -> Result<(), ExitError> {
    use aws_types::os_shim_internal::{Env, Fs};
    let files = aws_runtime::env_config::file::EnvConfigFiles::default();
    let set = aws_config::profile::load(&Fs::real(), &Env::real(), &files, None)
        .await
        .map_err(|e| {
            ExitError::Usage(format!(
                "--profile {name}: reading the AWS config files: {e}"
            ))
        })?;
    if set.get_profile(name).is_some() {
        return Ok(());
    }
    let known: Vec<&str> = set.profiles().collect();
    Err(ExitError::Usage(format!(
        "--profile {name}: no such profile in the AWS config files (~/.aws/config and \
         ~/.aws/credentials, or AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE); {}",
        if known.is_empty() {
            "they define none".to_string()
        } else {
            format!("they define {}", known.join(", "))
        }
    )))
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
fn check_endpoints(s: &AwsSettings) -> Result<(), ExitError> {
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
            return Err(ExitError::Usage(format!(
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

type AnySdkError<E> = aws_smithy_runtime_api::client::result::SdkError<
    E,
    aws_smithy_runtime_api::client::orchestrator::HttpResponse,
>;

/// Whether a call got no usable answer (a timeout, a lost connection, a body
/// that does not parse): the request may or may not have been applied.
pub(crate) fn no_answer<E>(e: &AnySdkError<E>) -> bool {
    use aws_smithy_runtime_api::client::result::SdkError;
    matches!(
        e,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_)
    )
}

/// Whether a failed call may well succeed if made again a little later: no
/// usable answer came ([`no_answer`]), or the service said it was busy
/// (throttling, a 5xx). The SDK has already retried it; but its retry quota
/// is per process and runs dry in a long storm of faults, after which it
/// tries each call once. A caller whose request is safe to repeat retries
/// such a failure itself.
pub(crate) fn transient<E: ProvideErrorMetadata>(e: &AnySdkError<E>) -> bool {
    use aws_smithy_runtime_api::client::result::SdkError;
    if no_answer(e) {
        return true;
    }
    match e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            status == 429
                || status >= 500
                || matches!(
                    code(se.err()),
                    "ThrottlingException"
                        | "ProvisionedThroughputExceededException"
                        | "RequestLimitExceeded"
                        | "InternalServerError"
                        | "ServiceUnavailable"
                )
        }
        _ => false,
    }
}

/// An SDK error as one line that says what went wrong and what to do
/// (the README promises that); its whole cause chain goes to the debug log
/// (`-v`).
pub(crate) fn full<E>(e: E) -> anyhow::Error
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
{
    let detail = DisplayErrorContext(&e).to_string();
    log::debug!("the AWS SDK's error: {detail}");
    anyhow::anyhow!("{}", explain(e.code(), e.message(), &detail))
}

/// The one line for an AWS error: the service's own code and message when it
/// answered, else what the client could not do (credentials, connection).
fn explain(code: Option<&str>, message: Option<&str>, detail: &str) -> String {
    let msg = message.unwrap_or("").trim();
    let said = |what: &str| match msg {
        "" => format!("{what} ({})", code.unwrap_or("")),
        m => format!("{what} ({}: {m})", code.unwrap_or("")),
    };
    match code {
        Some("NoSuchBucket") => {
            return said("the bucket does not exist: create it, or check the name")
        }
        Some(
            "AccessDenied"
            | "AccessDeniedException"
            | "UnauthorizedOperation"
            | "AllAccessDisabled",
        ) => {
            return said(
                "access denied: these credentials lack a permission (the README's \
                 \"Minimal IAM policies\" lists what each binary needs)",
            )
        }
        Some(
            "UnrecognizedClientException"
            | "InvalidAccessKeyId"
            | "InvalidClientTokenId"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "ExpiredTokenException"
            | "InvalidSignatureException",
        ) => {
            return said(
                "the AWS credentials were refused: check them, or the profile or role they \
                 come from",
            )
        }
        Some(c) if !c.is_empty() => {
            return match msg {
                "" => c.to_string(),
                m => format!("{c}: {m}"),
            }
        }
        _ => {}
    }
    let has = |s: &str| detail.contains(s);
    if has("no credentials found") || has("credential provider was not enabled") {
        return "no AWS credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
                pass --profile, or run where an instance or task role provides them"
            .into();
    }
    if has("Connection refused") {
        return "cannot connect to the endpoint (connection refused): check --endpoint-url or \
                AWS_ENDPOINT_URL, and that the service is running"
            .into();
    }
    if has("dns error") || has("failed to lookup address") {
        return "cannot resolve the endpoint's host name: check --endpoint-url, \
                AWS_ENDPOINT_URL and --region"
            .into();
    }
    if has("timeout") || has("timed out") {
        return "no answer from the endpoint in time: check the network and --endpoint-url \
                (-v shows each attempt)"
            .into();
    }
    // Anything else: the SDK's own words, without its debug dump.
    let cut = [
        " (DispatchFailure(",
        " (ServiceError(",
        " (ResponseError(",
        " (TimeoutError(",
        " (ConstructionFailure(",
    ]
    .iter()
    .filter_map(|m| detail.find(m))
    .min()
    .unwrap_or(detail.len());
    detail[..cut].to_string()
}

#[cfg(test)]
mod tests {
    /// What the writer retries itself: no answer, or a busy service; not a
    /// refusal that would come again.
    #[test]
    fn transient_errors_are_no_answer_or_a_busy_service() {
        use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
        use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
        use aws_smithy_runtime_api::client::result::SdkError;
        use aws_smithy_types::body::SdkBody;
        use aws_smithy_types::error::ErrorMetadata;
        let said = |status: u16, code: &str| {
            let e = UpdateItemError::generic(ErrorMetadata::builder().code(code).build());
            let raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
            super::transient(&SdkError::service_error(e, raw))
        };
        assert!(said(400, "ThrottlingException"));
        assert!(said(400, "ProvisionedThroughputExceededException"));
        assert!(said(500, "InternalServerError"));
        assert!(said(503, ""));
        assert!(!said(400, "ValidationException"));
        assert!(!said(400, "ResourceNotFoundException"));
        assert!(!said(400, "AccessDeniedException"));
        let timeout: SdkError<UpdateItemError, HttpResponse> = SdkError::timeout_error("1.5s");
        assert!(super::transient(&timeout));
        let nothing: SdkError<UpdateItemError, HttpResponse> =
            SdkError::construction_failure("no region");
        assert!(!super::transient(&nothing));
    }

    #[test]
    fn aws_errors_are_one_line_with_what_to_do() {
        use super::explain as x;
        let e = x(
            Some("NoSuchBucket"),
            Some("The specified bucket does not exist"),
            "…",
        );
        assert!(e.starts_with("the bucket does not exist"), "{e}");
        assert!(x(Some("AccessDeniedException"), None, "").contains("Minimal IAM policies"));
        assert!(x(Some("UnrecognizedClientException"), Some("bad"), "").contains("refused"));
        assert_eq!(
            x(Some("ThrottlingException"), Some("slow down"), ""),
            "ThrottlingException: slow down"
        );
        let none = "dispatch failure: other: the credential provider was not enabled: no \
                    credentials found in chain. Attempted:\n  Environment: …";
        assert!(x(None, None, none).starts_with("no AWS credentials found"));
        let refused = "dispatch failure: io error: client error (Connect): tcp connect error: \
                       Connection refused (os error 111) (DispatchFailure(DispatchFailure { … }))";
        assert!(x(None, None, refused).contains("connection refused"));
        let other = "dispatch failure: something new (DispatchFailure(DispatchFailure { x }))";
        assert_eq!(x(None, None, other), "dispatch failure: something new");
    }

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
