//! Where the AWS clients point, and as whom: the same settings for both binaries.

use super::layers::{names, usage, Layers};
use crate::cli::CommonArgs;
use crate::error::ExitError;

/// Where the AWS clients point, and as whom.
#[derive(Clone, Debug, Default)]
pub struct AwsSettings {
    pub region: Option<String>,
    pub profile: Option<String>,
    pub endpoint_url: Option<String>,
    /// `kinesis.accessKey` / `kinesis.secretKey`; otherwise the SDK's standard chain.
    pub keys: Option<StaticKeys>,
    /// `--allow-insecure-endpoint`: plain HTTP to a host other than this one.
    pub allow_insecure_endpoint: bool,
}

/// Static credentials; `Debug` shows neither half.
#[derive(Clone, Default)]
pub struct StaticKeys {
    pub access_key: String,
    pub secret_key: String,
}

impl std::fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticKeys(***)")
    }
}

/// The AWS settings of either binary: flags, then EMR names.
pub fn aws_from(
    region: Option<&str>,
    profile: Option<String>,
    endpoint_url: Option<String>,
    allow_insecure_endpoint: bool,
    l: &Layers,
) -> Result<AwsSettings, ExitError> {
    let access = l.get("", None, &[names::ACCESS_KEY])?.map(|v| v.0);
    let secret = l.get("", None, &[names::SECRET_KEY])?.map(|v| v.0);
    let keys = match (access, secret) {
        (Some(access_key), Some(secret_key)) => Some(StaticKeys {
            access_key,
            secret_key,
        }),
        (None, None) => None,
        _ => {
            return Err(usage(format!(
                "{} and {} go together: give both, or neither (and let the SDK find \
                 credentials)",
                names::ACCESS_KEY,
                names::SECRET_KEY
            )))
        }
    };
    if let Some(url) = &endpoint_url {
        let host = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
        if host.is_none_or(str::is_empty) {
            return Err(usage(format!(
                "--endpoint-url {url:?}: expected a URL such as http://127.0.0.1:4566 or \
                 https://kinesis.us-east-1.amazonaws.com"
            )));
        }
    }
    Ok(AwsSettings {
        region: l.get("region", region, &[names::REGION])?.map(|v| v.0),
        profile,
        endpoint_url,
        keys,
        allow_insecure_endpoint,
    })
}

pub fn aws_settings(c: &CommonArgs, l: &Layers) -> Result<AwsSettings, ExitError> {
    aws_from(
        c.region.as_deref(),
        c.profile.clone(),
        c.endpoint_url.clone(),
        c.allow_insecure_endpoint,
        l,
    )
}
