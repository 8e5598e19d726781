//! GetRecords answers decoded straight from the response bytes.
//!
//! Why: the reader's profile (BENCHMARKS.md) showed the SDK's JSON
//! deserialiser reading each base64 `Data` string a byte at a time, then one
//! allocation per record, as the largest cost of the whole reader. Here an HTTP
//! connector wraps the SDK's own one. For a GetRecords call made inside
//! [`decoding`], it reads the 200 answer, decodes the `Records` array itself
//! (string ends found with `memchr`, SIMD base64 into one buffer that every
//! record of the page slices) and hands the SDK the same JSON with
//! `"Records":[]`. The SDK still does everything else: signing, retries,
//! timeouts, errors, and parsing `NextShardIterator`, `MillisBehindLatest` and
//! `ChildShards`. An answer this decoder does not fully understand goes to the
//! SDK untouched, so the worst case is the old speed, never a wrong record.

use crate::stream::Record;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use bytes::Bytes;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Records decoded by the connector for the call in flight.
type Slot = Arc<Mutex<Option<Vec<Record>>>>;

tokio::task_local! {
    // Task-local, not a header or a global map: the SDK polls the connector
    // inside the `send()` future, so the call and its slot meet without any
    // trace on the wire, and concurrent shards never see each other's pages.
    static SLOT: Slot;
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

/// Runs `call` (a GetRecords `send()`), returning its result and the records
/// the connector decoded, if it did. `None` means the SDK's output holds them.
pub async fn decoding<T>(call: impl Future<Output = T>) -> (T, Option<Vec<Record>>) {
    let slot = Slot::default();
    let out = SLOT.scope(slot.clone(), call).await;
    let records = slot.lock().unwrap().take();
    (out, records)
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
        let slot = SLOT.try_with(Slot::clone).ok().filter(|_| get_records);
        let answer = self.0.call(request);
        let Some(slot) = slot else { return answer };
        HttpConnectorFuture::new(async move {
            let mut response = answer.await?;
            if response.status().as_u16() != 200 {
                return Ok(response);
            }
            let size = response
                .headers()
                .get("content-length")
                .and_then(|l| l.parse::<usize>().ok());
            let body = read_body(response.take_body(), size).await?;
            let new_body = match decode(body) {
                Ok(page) => {
                    DIRECT.fetch_add(1, Ordering::Relaxed);
                    *slot.lock().unwrap() = Some(page.records);
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
                    *slot.lock().unwrap() = None;
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

/// The whole body, in one buffer sized by `Content-Length` when given.
async fn read_body(mut body: SdkBody, size: Option<usize>) -> Result<Vec<u8>, ConnectorError> {
    use http_body_util::BodyExt;
    // The service's answers are at most about 14 MiB (10 MiB of data in base64).
    let mut buf = Vec::with_capacity(size.unwrap_or(0).min(64 << 20));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ConnectorError::io)?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

/// A GetRecords answer: its records, and the answer with `"Records":[]`.
#[derive(Debug)]
pub struct Decoded {
    pub records: Vec<Record>,
    pub rest: Vec<u8>,
}

/// Why an answer was not decoded; `body` is the answer, untouched, when the
/// SDK can still have it.
#[derive(Debug)]
pub struct Undecoded {
    pub body: Option<Vec<u8>>,
    pub why: &'static str,
}

/// Decodes the `Records` of a GetRecords answer into one buffer, exactly
/// sized, that every record's data slices.
pub fn decode(body: Vec<u8>) -> Result<Decoded, Undecoded> {
    // Pass 1 reads only: any surprise leaves the answer intact for the SDK.
    let (fields, (start, end)) = match layout(&body) {
        Ok(l) => l,
        Err(why) => {
            return Err(Undecoded {
                body: Some(body),
                why,
            })
        }
    };
    let mut rest = Vec::with_capacity(body.len() - (end - start) + 2);
    rest.extend_from_slice(&body[..start]);
    rest.extend_from_slice(b"[]");
    rest.extend_from_slice(&body[end..]);
    // Pass 2 decodes.
    let broken = |why| Undecoded { body: None, why };
    let mut data = Vec::with_capacity(fields.iter().map(|f| f.size).sum());
    let mut spans = Vec::with_capacity(fields.len());
    for f in &fields {
        let raw = &body[f.data.0..f.data.1];
        let start = data.len();
        if f.escaped {
            let text = Str { raw, escaped: true }.text().map_err(broken)?;
            base64_simd::STANDARD
                .decode_append(text, &mut data)
                .map_err(|_| broken("Data is not base64"))?;
        } else {
            base64_simd::STANDARD
                .decode_append(raw, &mut data)
                .map_err(|_| broken("Data is not base64"))?;
        }
        spans.push((start, data.len()));
    }
    drop(body);
    let data = Bytes::from(data);
    let records = fields
        .into_iter()
        .zip(spans)
        .map(|(f, (s, e))| Record {
            sequence_number: f.sequence_number,
            sub_sequence_number: None,
            partition_key: f.partition_key,
            data: data.slice(s..e),
            arrival_ms: f.arrival_ms,
        })
        .collect();
    Ok(Decoded { records, rest })
}

/// One record, with its data still base64 at `data` in the answer.
struct Fields {
    sequence_number: String,
    partition_key: String,
    data: (usize, usize),
    escaped: bool,
    /// Decoded size (an upper bound when escaped).
    size: usize,
    arrival_ms: i64,
}

/// Pass 1: the records, and where the `Records` array is.
#[allow(clippy::type_complexity)]
fn layout(body: &[u8]) -> Result<(Vec<Fields>, (usize, usize)), &'static str> {
    let mut c = Cursor { b: body, i: 0 };
    let mut fields = Vec::new();
    let mut span = None;
    c.ws();
    c.eat(b'{')?;
    c.ws();
    if c.peek() == Some(b'}') {
        return Err("no Records");
    }
    loop {
        c.ws();
        let key = c.string()?;
        c.ws();
        c.eat(b':')?;
        c.ws();
        if key.raw == b"Records" {
            if span.is_some() {
                return Err("two Records keys");
            }
            let start = c.i;
            records(&mut c, &mut fields)?;
            span = Some((start, c.i));
        } else {
            c.skip_value(0)?;
        }
        c.ws();
        match c.next()? {
            b',' => continue,
            b'}' => break,
            _ => return Err("expected , or } after a value"),
        }
    }
    c.ws();
    if c.i != body.len() {
        return Err("bytes after the answer");
    }
    Ok((fields, span.ok_or("no Records")?))
}

fn records(c: &mut Cursor, out: &mut Vec<Fields>) -> Result<(), &'static str> {
    c.eat(b'[')?;
    c.ws();
    if c.peek() == Some(b']') {
        c.i += 1;
        return Ok(());
    }
    loop {
        c.ws();
        out.push(record(c)?);
        c.ws();
        match c.next()? {
            b',' => continue,
            b']' => return Ok(()),
            _ => return Err("expected , or ] in Records"),
        }
    }
}

fn record(c: &mut Cursor) -> Result<Fields, &'static str> {
    let (mut seq, mut key, mut data, mut arrival) = (None, None, None, None);
    c.eat(b'{')?;
    c.ws();
    if c.peek() == Some(b'}') {
        return Err("a record without fields");
    }
    loop {
        c.ws();
        let name = c.string()?;
        c.ws();
        c.eat(b':')?;
        c.ws();
        if c.b[c.i..].starts_with(b"null") {
            // The SDK reads a null member as absent (and the last of
            // repeated members wins).
            c.i += 4;
            match name.raw {
                b"SequenceNumber" => seq = None,
                b"PartitionKey" => key = None,
                b"Data" => data = None,
                b"ApproximateArrivalTimestamp" => arrival = None,
                _ => {}
            }
        } else {
            match name.raw {
                b"SequenceNumber" => seq = Some(c.string()?.text()?),
                b"PartitionKey" => key = Some(c.string()?.text()?),
                b"Data" => {
                    let start = c.i + 1;
                    let s = c.string()?;
                    // Its length is checked now, while the SDK can still
                    // have the answer; a bad character shows when decoding,
                    // and then the call fails, as it would in the SDK.
                    let size = if s.escaped {
                        s.raw.len() / 4 * 3 + 3
                    } else {
                        base64_simd::STANDARD
                            .decoded_length(s.raw)
                            .map_err(|_| "Data is not base64")?
                    };
                    data = Some(((start, start + s.raw.len()), s.escaped, size));
                }
                b"ApproximateArrivalTimestamp" => arrival = Some(epoch_millis(c.number()?)?),
                _ => c.skip_value(0)?,
            }
        }
        c.ws();
        match c.next()? {
            b',' => continue,
            b'}' => break,
            _ => return Err("expected , or } in a record"),
        }
    }
    // A record without these is malformed: let the SDK say so.
    let (data, escaped, size) = data.ok_or("a record without Data")?;
    Ok(Fields {
        sequence_number: seq.ok_or("a record without SequenceNumber")?,
        data,
        escaped,
        size,
        partition_key: key.unwrap_or_default(),
        arrival_ms: arrival.unwrap_or(0),
    })
}

/// `ApproximateArrivalTimestamp` (epoch seconds) in epoch milliseconds, as the SDK computes it.
fn epoch_millis(number: &[u8]) -> Result<i64, &'static str> {
    let v: f64 = std::str::from_utf8(number)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|v: &f64| v.is_finite())
        .ok_or("a bad ApproximateArrivalTimestamp")?;
    aws_smithy_types::DateTime::from_secs_f64(v)
        .to_millis()
        .map_err(|_| "ApproximateArrivalTimestamp out of range")
}

/// A JSON string's bytes between its quotes.
struct Str<'a> {
    raw: &'a [u8],
    escaped: bool,
}

impl Str<'_> {
    fn text(&self) -> Result<String, &'static str> {
        if !self.escaped {
            return String::from_utf8(self.raw.to_vec()).map_err(|_| "a string is not UTF-8");
        }
        // Rare (the service escapes only what JSON requires): the exact rules
        // are serde_json's, on the string with its quotes.
        let mut quoted = Vec::with_capacity(self.raw.len() + 2);
        quoted.push(b'"');
        quoted.extend_from_slice(self.raw);
        quoted.push(b'"');
        serde_json::from_slice(&quoted).map_err(|_| "a bad escape in a string")
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Result<u8, &'static str> {
        let c = self.peek().ok_or("the answer ends early")?;
        self.i += 1;
        Ok(c)
    }

    fn eat(&mut self, want: u8) -> Result<(), &'static str> {
        if self.next()? == want {
            Ok(())
        } else {
            Err("unexpected character")
        }
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.i += 1;
        }
    }

    fn string(&mut self) -> Result<Str<'a>, &'static str> {
        self.eat(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            let at =
                memchr::memchr2(b'"', b'\\', &self.b[self.i..]).ok_or("a string never ends")?;
            self.i += at;
            if self.b[self.i] == b'"' {
                self.i += 1;
                return Ok(Str {
                    raw: &self.b[start..self.i - 1],
                    escaped,
                });
            }
            // A backslash: the next byte is escaped, whatever it is.
            escaped = true;
            self.i += 2;
            if self.i > self.b.len() {
                return Err("a string never ends");
            }
        }
    }

    fn number(&mut self) -> Result<&'a [u8], &'static str> {
        let start = self.i;
        while matches!(
            self.peek(),
            Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
        ) {
            self.i += 1;
        }
        if self.i == start {
            return Err("expected a number");
        }
        Ok(&self.b[start..self.i])
    }

    /// Skips any JSON value (checked only as far as finding its end).
    fn skip_value(&mut self, depth: usize) -> Result<(), &'static str> {
        if depth > 64 {
            return Err("nested too deep");
        }
        match self.peek().ok_or("the answer ends early")? {
            b'"' => self.string().map(drop),
            b'{' | b'[' => {
                let close = if self.next()? == b'{' { b'}' } else { b']' };
                self.ws();
                if self.peek() == Some(close) {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.ws();
                    if close == b'}' {
                        self.string()?;
                        self.ws();
                        self.eat(b':')?;
                        self.ws();
                    }
                    self.skip_value(depth + 1)?;
                    self.ws();
                    match self.next()? {
                        b',' => continue,
                        c if c == close => return Ok(()),
                        _ => return Err("expected , or a closing bracket"),
                    }
                }
            }
            b't' | b'f' | b'n' => {
                for word in [&b"true"[..], b"false", b"null"] {
                    if self.b[self.i..].starts_with(word) {
                        self.i += word.len();
                        return Ok(());
                    }
                }
                Err("unexpected word")
            }
            _ => self.number().map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(d: &[u8]) -> String {
        base64_simd::STANDARD.encode_to_string(d)
    }

    #[test]
    fn decodes_the_records_and_leaves_the_rest_to_the_sdk() {
        let body = json!({
            "Records": [
                {"SequenceNumber": "4960", "ApproximateArrivalTimestamp": 1.7000000005e9,
                 "Data": b64(b"hello\tworld\n"), "PartitionKey": "k1", "EncryptionType": "NONE"},
                {"Data": b64(b""), "PartitionKey": "caf\u{e9} \"quoted\"",
                 "SequenceNumber": "4961", "ApproximateArrivalTimestamp": 1700000001},
            ],
            "NextShardIterator": "AAA/BBB==",
            "MillisBehindLatest": 0,
            "ChildShards": [{"ShardId": "shardId-1", "ParentShards": ["shardId-0"],
                             "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "9"}}],
        });
        let text = serde_json::to_vec(&body).unwrap();
        let d = decode(text).unwrap();
        assert_eq!(d.records.len(), 2);
        let r = &d.records[0];
        assert_eq!(r.sequence_number, "4960");
        assert_eq!(&r.data[..], b"hello\tworld\n");
        assert_eq!(r.partition_key, "k1");
        assert_eq!(r.arrival_ms, 1_700_000_000_500);
        let r = &d.records[1];
        assert_eq!(r.partition_key, "caf\u{e9} \"quoted\"");
        assert_eq!(&r.data[..], b"");
        assert_eq!(r.arrival_ms, 1_700_000_001_000);
        let mut expected = body.clone();
        expected["Records"] = json!([]);
        let rest: serde_json::Value = serde_json::from_slice(&d.rest).unwrap();
        assert_eq!(rest, expected);
    }

    #[test]
    fn escaped_slashes_nulls_spaces_and_unknown_members() {
        // JSON may escape '/', which base64 uses; members may be null.
        let text = br#" { "Unknown" : {"a":[1,2.5e3,true,false,null,"x\"y"]},
            "Records" : [ { "SequenceNumber" : "1" , "Data" : "P\/8=" , "PartitionKey" : null ,
            "ApproximateArrivalTimestamp" : null, "Extra": [] } ] ,
            "NextShardIterator" : null } "#;
        let d = decode(text.to_vec()).unwrap();
        assert_eq!(&d.records[0].data[..], &[0x3f, 0xff]);
        assert_eq!(d.records[0].partition_key, "");
        assert_eq!(d.records[0].arrival_ms, 0);
        let rest: serde_json::Value = serde_json::from_slice(&d.rest).unwrap();
        assert_eq!(rest["Records"], json!([]));
        assert_eq!(rest["Unknown"]["a"][5], "x\"y");
    }

    #[test]
    fn records_share_one_buffer() {
        let recs: Vec<_> = (0..100)
            .map(|i| json!({"SequenceNumber": i.to_string(), "Data": b64(&vec![i as u8; 1000]), "PartitionKey": "p"}))
            .collect();
        let text = serde_json::to_vec(&json!({"Records": recs, "MillisBehindLatest": 5})).unwrap();
        let d = decode(text).unwrap();
        for (i, r) in d.records.iter().enumerate() {
            assert_eq!(r.data, vec![i as u8; 1000]);
        }
        let base = d.records[0].data.as_ptr() as usize;
        assert_eq!(d.records[99].data.as_ptr() as usize, base + 99 * 1000);
    }

    #[test]
    fn anything_unexpected_is_left_to_the_sdk() {
        for bad in [
            &b""[..],
            b"[]",
            b"{}",
            b"{\"NextShardIterator\":\"x\"}",
            b"{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"!!\"}]}",
            b"{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"QQ\"}]}",
            b"{\"Records\":[{\"SequenceNumber\":\"1\"}]}",
            b"{\"Records\":[{\"Data\":\"QQ==\"}]}",
            b"{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"QQ==\"}]",
            b"{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"QQ==\"}]} x",
            b"{\"Records\":[],\"Records\":[]}",
            b"{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"QQ==\",\"ApproximateArrivalTimestamp\":\"x\"}]}",
            b"{\"Records\":[{\"SequenceNumber\":\"1\\",
            b"{\"Records\":[], \"X\": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
        ] {
            // Refused before anything changed: the SDK gets the answer as sent.
            let e = decode(bad.to_vec()).unwrap_err();
            assert_eq!(e.body.as_deref(), Some(bad), "{}", e.why);
        }
        let ok = br#"{"Records":[{"SequenceNumber":"1","Data":"QQ=="}]}"#;
        assert_eq!(&decode(ok.to_vec()).unwrap().records[0].data[..], b"A");
        // A bad character is found while decoding over the answer: an error.
        let bad = br#"{"Records":[{"SequenceNumber":"1","Data":"QQ=="},{"SequenceNumber":"2","Data":"Q!=="}]}"#;
        let e = decode(bad.to_vec()).unwrap_err();
        assert!(e.body.is_none() && e.why.contains("base64"), "{e:?}");
    }
}
