//! GetRecords answers decoded straight from the response bytes.
//!
//! Why: the reader's profile (BENCHMARKS.md) showed the SDK's JSON
//! deserialiser reading each base64 `Data` string a byte at a time, then one
//! allocation per record, as the largest cost of the whole reader. Here an HTTP
//! connector wraps the SDK's own one. For a GetRecords request that carries a
//! [`DecodedRecords`], it decodes the `Records` array of a 200 answer itself
//! (with `decoder`), chunk by chunk as it arrives (string ends found with `memchr`, SIMD base64 into
//! one buffer that every record of the page slices), and hands the SDK the
//! same JSON with `"Records":[]`. The SDK still does everything else: signing,
//! retries, timeouts, errors, and parsing `NextShardIterator`,
//! `MillisBehindLatest` and `ChildShards`. An answer that surprises the decoder
//! before any record was consumed goes to the SDK untouched; a malformed
//! record fails the call, as it would in the SDK. Never a wrong record.

mod decoder;

pub use decoder::{decode, Decoded, Decoder, Undecoded};

use crate::records::Records;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Where the connector leaves the records it decoded for one GetRecords
/// request. The caller attaches it to the request (every attempt carries it,
/// see [`DecodedRecords::attach`]) and takes the records after `send()`;
/// empty means the SDK's output holds them. Concurrent shards each have
/// their own, so they never see each other's pages.
#[derive(Clone, Debug, Default)]
pub struct DecodedRecords(Arc<Mutex<Option<Records>>>);

impl DecodedRecords {
    /// Attaches this slot to a request. Call it from the operation's
    /// `mutate_request`, which runs before every attempt: a retried attempt
    /// is a fresh copy of the request, without the first one's extensions.
    pub fn attach(&self, request: &mut HttpRequest) {
        request.add_extension(self.clone());
    }

    /// The records the connector decoded for the last attempt, if it did.
    pub fn take(&self) -> Option<Records> {
        self.0.lock().unwrap().take()
    }

    fn set(&self, records: Option<Records>) {
        *self.0.lock().unwrap() = records;
    }
}

static DIRECT: AtomicU64 = AtomicU64::new(0);
static BY_SDK: AtomicU64 = AtomicU64::new(0);

/// GetRecords answers decoded here, and those left to the SDK, so far.
pub fn pages() -> (u64, u64) {
    (
        DIRECT.load(Ordering::Relaxed),
        BY_SDK.load(Ordering::Relaxed),
    )
}

/// The HTTP client for the Kinesis client: `inner` (the SDK's default when
/// `None`) with GetRecords answers decoded here.
pub fn http_client(inner: Option<SharedHttpClient>) -> SharedHttpClient {
    SharedHttpClient::new(Client {
        inner: inner.unwrap_or_else(default_client),
    })
}

/// The SDK's default HTTPS client, built as the SDK builds it (rustls with
/// aws-lc, proxy settings from the environment), which it only does for a
/// client given none.
fn default_client() -> SharedHttpClient {
    use aws_smithy_http_client::{proxy::ProxyConfig, tls, Builder, ConnectorBuilder};
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut b = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ));
        b.set_connector_settings(settings.cloned());
        if let Some(c) = components {
            b.set_sleep_impl(c.sleep_impl());
        }
        b.set_proxy_config(Some(ProxyConfig::from_env()));
        b.build()
    })
}

#[derive(Debug)]
struct Client {
    inner: SharedHttpClient,
}

impl HttpClient for Client {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(Connector(self.inner.http_connector(settings, components)))
    }
}

#[derive(Debug)]
struct Connector(SharedHttpConnector);

impl HttpConnector for Connector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let get_records = request
            .headers()
            .get("x-amz-target")
            .is_some_and(|t| t.ends_with(".GetRecords"));
        let slot = request
            .extension::<DecodedRecords>()
            .cloned()
            .filter(|_| get_records);
        let answer = self.0.call(request);
        let Some(slot) = slot else { return answer };
        HttpConnectorFuture::new(async move {
            use http_body_util::BodyExt;
            let mut response = answer.await?;
            if response.status().as_u16() != 200 {
                return Ok(response);
            }
            let size = response
                .headers()
                .get("content-length")
                .and_then(|l| l.parse::<usize>().ok());
            let mut decoder = Decoder::new(size);
            let mut body = response.take_body();
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.map_err(ConnectorError::io)?.into_data() {
                    decoder.feed(&data);
                }
            }
            let new_body = match decoder.finish() {
                Ok(page) => {
                    DIRECT.fetch_add(1, Ordering::Relaxed);
                    slot.set(Some(page.records));
                    page.rest
                }
                Err(Undecoded {
                    body: Some(body),
                    why,
                }) => {
                    if BY_SDK.fetch_add(1, Ordering::Relaxed) == 0 {
                        log::warn!(
                            "a GetRecords answer was not decoded by the fast path ({why}); \
                             the SDK decodes it"
                        );
                    }
                    slot.set(None);
                    body
                }
                Err(Undecoded { body: None, why }) => {
                    return Err(ConnectorError::other(
                        format!("a GetRecords answer is malformed: {why}").into(),
                        None,
                    ))
                }
            };
            response
                .headers_mut()
                .insert("content-length", new_body.len().to_string());
            *response.body_mut() = SdkBody::from(new_body);
            Ok(response)
        })
    }
}
