//! A fault-injecting HTTP proxy between the binaries and the emulators.
//!
//! Every request is forwarded to its emulator (Kinesis calls to one upstream,
//! everything else — DynamoDB, S3 — to another) unless a seeded random draw
//! picks a fault for it:
//! - `throttle`: 400 ProvisionedThroughputExceededException (Kinesis) or
//!   ThrottlingException (DynamoDB), SlowDown (S3), without forwarding;
//! - `server_error`: 500 or 503, without forwarding;
//! - `expired_iterator`: 400 ExpiredIteratorException for GetRecords;
//! - `delay`: forwarded only after `delay` (past the client's attempt timeout,
//!   so the client gives up and retries while the first attempt still lands);
//! - `lost_answer`: forwarded (the emulator applies it), then the connection
//!   is closed without an answer;
//! - `cut_body`: forwarded, then the answer is cut off halfway through its body.
//!
//! The last three are the hard ones: a write the server applied whose
//! answer the client never saw, so the client's retry meets its own write.
//!
//! A [`RateLimit`] throttles chosen operations above a rate, as the service's
//! per-account and per-stream limits do. `conflicts` models what moto does
//! not: DynamoDB refuses a write that touches an item a transaction is
//! writing at that moment (a forced `Conflict` refuses one write so). The proxy also counts every
//! operation it sees, so a test can say how many calls a run made.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// How often each fault is injected (per request), and the delay used.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    pub seed: u64,
    pub throttle: f64,
    pub server_error: f64,
    pub expired_iterator: f64,
    pub delay: f64,
    pub lost_answer: f64,
    pub cut_body: f64,
    pub delay_for: Duration,
    /// Only these operations get faults (all when empty).
    pub only: Vec<&'static str>,
    /// Throttling above a rate, besides the random faults.
    pub rate: Option<RateLimit>,
    /// Faults the plan guarantees whatever the seed draws: the first request
    /// of each operation named gets its fault, so that a test asserting a
    /// kind of fault never depends on the draw.
    pub force: Vec<(Fault, &'static str)>,
    /// DynamoDB's transaction conflicts: each TransactWriteItems is held this
    /// long before it is forwarded, its items marked as in a transaction; a
    /// write that touches a marked item meanwhile is refused as the service
    /// refuses it (TransactionCanceledException with a TransactionConflict
    /// reason, or TransactionConflictException), counted as `Conflict`.
    pub conflicts: Option<Duration>,
}

impl FaultPlan {
    /// No random faults at all.
    pub fn quiet() -> FaultPlan {
        FaultPlan {
            seed: 1,
            throttle: 0.0,
            server_error: 0.0,
            expired_iterator: 0.0,
            delay: 0.0,
            lost_answer: 0.0,
            cut_body: 0.0,
            delay_for: Duration::ZERO,
            only: vec![],
            rate: None,
            force: vec![],
            conflicts: None,
        }
    }
}

/// A token bucket over some operations: `burst` calls at once, then
/// `per_second`; a call above it is throttled without being forwarded.
#[derive(Clone, Debug)]
pub struct RateLimit {
    pub ops: Vec<&'static str>,
    pub per_second: f64,
    pub burst: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    Throttle,
    ServerError,
    ExpiredIterator,
    Delay,
    LostAnswer,
    CutBody,
    Conflict,
}

struct State {
    kinesis: String,
    other: String,
    plan: FaultPlan,
    rng: Mutex<u64>,
    /// Faults injected, by kind and operation.
    injected: Mutex<BTreeMap<(Fault, String), u64>>,
    requests: Mutex<u64>,
    /// Every operation seen, e.g. `Kinesis GetRecords`, `DynamoDB Query`,
    /// `S3 UploadPart`, with how many times.
    seen: Mutex<BTreeMap<String, u64>>,
    /// The rate limit's tokens, and when they were last topped up.
    bucket: Mutex<(f64, Instant)>,
    /// The forced faults not injected yet.
    forced: Mutex<Vec<(Fault, &'static str)>>,
    /// The DynamoDB items of the transactions in flight (with `conflicts`).
    in_transaction: Mutex<Vec<String>>,
}

impl State {
    /// xorshift64*: small, seeded, and the same sequence for a seed.
    fn next(&self) -> f64 {
        let mut x = self.rng.lock().unwrap();
        *x ^= *x >> 12;
        *x ^= *x << 25;
        *x ^= *x >> 27;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Takes a token of the rate limit; false when there is none left.
    fn within_rate(&self, op: &str) -> bool {
        let Some(r) = self.plan.rate.as_ref().filter(|r| r.ops.contains(&op)) else {
            return true;
        };
        let mut b = self.bucket.lock().unwrap();
        let now = Instant::now();
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * r.per_second).min(r.burst);
        b.1 = now;
        if b.0 < 1.0 {
            return false;
        }
        b.0 -= 1.0;
        true
    }

    fn count(&self, f: Fault, op: &str) {
        *self
            .injected
            .lock()
            .unwrap()
            .entry((f, op.to_string()))
            .or_default() += 1;
    }

    fn draw(&self, op: &str) -> Option<Fault> {
        *self.requests.lock().unwrap() += 1;
        if !self.within_rate(op) {
            self.count(Fault::Throttle, op);
            return Some(Fault::Throttle);
        }
        let forced = {
            let mut f = self.forced.lock().unwrap();
            let i = f.iter().position(|(_, o)| *o == op);
            i.map(|i| f.remove(i).0)
        };
        if let Some(f) = forced {
            self.count(f, op);
            return Some(f);
        }
        let p = &self.plan;
        if !p.only.is_empty() && !p.only.contains(&op) {
            return None;
        }
        let mut x = self.next();
        let mut pick = |chance: f64, f: Fault| {
            if x < chance {
                return Some(f);
            }
            x -= chance;
            None
        };
        let expired = if op == "GetRecords" {
            p.expired_iterator
        } else {
            0.0
        };
        let f = pick(p.throttle, Fault::Throttle)
            .or_else(|| pick(p.server_error, Fault::ServerError))
            .or_else(|| pick(expired, Fault::ExpiredIterator))
            .or_else(|| pick(p.delay, Fault::Delay))
            .or_else(|| pick(p.lost_answer, Fault::LostAnswer))
            .or_else(|| pick(p.cut_body, Fault::CutBody));
        if let Some(f) = f {
            self.count(f, op);
        }
        f
    }
}

pub struct Proxy {
    pub url: String,
    state: Arc<State>,
}

impl Proxy {
    /// Faults injected so far, by kind and operation.
    pub fn injected(&self) -> BTreeMap<(Fault, String), u64> {
        self.state.injected.lock().unwrap().clone()
    }
    pub fn count(&self, f: Fault) -> u64 {
        self.injected()
            .iter()
            .filter(|((k, _), _)| *k == f)
            .map(|(_, n)| n)
            .sum()
    }
    pub fn requests(&self) -> u64 {
        *self.state.requests.lock().unwrap()
    }
    pub fn seen(&self) -> std::collections::BTreeSet<String> {
        self.state.seen.lock().unwrap().keys().cloned().collect()
    }
    /// How many times operation `name` (e.g. `Kinesis ListShards`) was seen.
    pub fn calls(&self, name: &str) -> u64 {
        self.state
            .seen
            .lock()
            .unwrap()
            .get(name)
            .copied()
            .unwrap_or(0)
    }
}

type Out = BoxBody<Bytes, std::io::Error>;

fn full(b: impl Into<Bytes>) -> Out {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// Starts a proxy on 127.0.0.1 (its own thread and runtime, for the rest of
/// the test process). Upstreams are `host:port`.
pub fn start(kinesis: &str, other: &str, plan: FaultPlan) -> Proxy {
    let strip = |u: &str| {
        u.trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string()
    };
    let state = Arc::new(State {
        kinesis: strip(kinesis),
        other: strip(other),
        rng: Mutex::new(plan.seed.max(1)),
        bucket: Mutex::new((plan.rate.as_ref().map_or(0.0, |r| r.burst), Instant::now())),
        forced: Mutex::new(plan.force.clone()),
        in_transaction: Mutex::default(),
        plan,
        injected: Mutex::default(),
        requests: Mutex::default(),
        seen: Mutex::default(),
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let st = state.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(req, st.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(sock), svc)
                        .await;
                });
            }
        });
    });
    Proxy { url, state }
}

fn error(status: u16, code: &str, json: &str) -> Response<Out> {
    let body = format!(r#"{{"__type":"{code}","message":"injected by the test proxy"}}"#);
    Response::builder()
        .status(status)
        .header("content-type", json)
        .header("x-amzn-errortype", code)
        .body(full(body))
        .unwrap()
}

async fn handle(req: Request<Incoming>, st: Arc<State>) -> Result<Response<Out>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let kinesis = target.starts_with("Kinesis_");
    let op = match target.rsplit_once('.') {
        Some((_, op)) => op.to_string(),
        None => s3_operation(&parts),
    };
    let service = match (kinesis, target.is_empty()) {
        (true, _) => "Kinesis",
        (false, false) => "DynamoDB",
        (false, true) => "",
    };
    *st.seen
        .lock()
        .unwrap()
        .entry(format!("{service} {op}").trim().to_string())
        .or_default() += 1;
    let fault = st.draw(&op);
    let json = if kinesis {
        "application/x-amz-json-1.1"
    } else {
        "application/x-amz-json-1.0"
    };
    match fault {
        Some(Fault::Throttle) if target.is_empty() => {
            let xml = "<Error><Code>SlowDown</Code><Message>injected</Message></Error>";
            return Ok(Response::builder()
                .status(503)
                .header("content-type", "application/xml")
                .body(full(xml))
                .unwrap());
        }
        Some(Fault::Throttle) if kinesis => {
            return Ok(error(400, "ProvisionedThroughputExceededException", json))
        }
        Some(Fault::Throttle) => return Ok(error(400, "ThrottlingException", json)),
        Some(Fault::ServerError) => {
            let (status, code) = if st.next() < 0.5 {
                (500, "InternalFailure")
            } else {
                (503, "ServiceUnavailable")
            };
            return Ok(error(status, code, json));
        }
        Some(Fault::ExpiredIterator) => return Ok(error(400, "ExpiredIteratorException", json)),
        Some(Fault::Delay) => tokio::time::sleep(st.plan.delay_for).await,
        Some(Fault::Conflict) => return Ok(conflict(&op, &vec![true; items_of(&op, &body).len()])),
        _ => {}
    }
    let upstream = if kinesis { &st.kinesis } else { &st.other };
    let mut held = Held(&st, Vec::new());
    if let (Some(hold), "DynamoDB") = (st.plan.conflicts, service) {
        let items = items_of(&op, &body);
        {
            let mut busy = st.in_transaction.lock().unwrap();
            let clash: Vec<bool> = items.iter().map(|i| busy.contains(i)).collect();
            if clash.contains(&true) {
                drop(busy);
                st.count(Fault::Conflict, &op);
                return Ok(conflict(&op, &clash));
            }
            if op == "TransactWriteItems" {
                busy.extend(items.iter().cloned());
                held.1 = items;
            }
        }
        if !held.1.is_empty() {
            tokio::time::sleep(hold).await;
        }
    }
    let resp = forward(upstream, parts, body).await;
    drop(held);
    let resp = resp?;
    match fault {
        Some(Fault::LostAnswer) => Err(std::io::Error::other("injected: answer lost")),
        Some(Fault::CutBody) => {
            let (parts, body) = resp.into_parts();
            let b = body.collect().await?.to_bytes();
            let mut r = Response::from_parts(parts, Cut(Some(b.slice(..b.len() / 2))).boxed());
            r.headers_mut().insert("content-length", b.len().into());
            Ok(r)
        }
        _ => Ok(resp),
    }
}

/// A transaction's items, unmarked when it has its answer (or failed).
struct Held<'a>(&'a State, Vec<String>);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut busy = self.0.in_transaction.lock().unwrap();
        for item in &self.1 {
            if let Some(i) = busy.iter().position(|b| b == item) {
                busy.remove(i);
            }
        }
    }
}

/// The items a DynamoDB write touches, each as `table key-JSON`. A Put's
/// key is read from its item by the project's default key names.
fn items_of(op: &str, body: &[u8]) -> Vec<String> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let item = |w: &serde_json::Value| -> String {
        let key = match w.get("Key") {
            Some(k) => k.clone(),
            None => {
                let all = &w["Item"];
                serde_json::json!({"HashKey": all["HashKey"], "RangeKey": all["RangeKey"]})
            }
        };
        format!("{} {key}", w["TableName"].as_str().unwrap_or(""))
    };
    match op {
        "TransactWriteItems" => v["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_object()?.values().next().map(item))
            .collect(),
        "PutItem" | "UpdateItem" | "DeleteItem" => vec![item(&v)],
        _ => Vec::new(),
    }
}

/// DynamoDB's answer to a write that touched an item in a transaction:
/// `clash` says which of a transaction's items did.
fn conflict(op: &str, clash: &[bool]) -> Response<Out> {
    let json = "application/x-amz-json-1.0";
    if op != "TransactWriteItems" {
        return error(400, "TransactionConflictException", json);
    }
    let reasons: Vec<serde_json::Value> = clash
        .iter()
        .map(|c| match c {
            true => serde_json::json!({"Code": "TransactionConflict",
                                       "Message": "Transaction is ongoing for the item"}),
            false => serde_json::json!({"Code": "None"}),
        })
        .collect();
    let body = serde_json::json!({
        "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
        "Message": "Transaction cancelled, please refer cancellation reasons for specific reasons",
        "CancellationReasons": reasons,
    });
    Response::builder()
        .status(400)
        .header("content-type", json)
        .header("x-amzn-errortype", "TransactionCanceledException")
        .body(full(body.to_string()))
        .unwrap()
}

/// S3's REST operations, told apart by method and query.
fn s3_operation(parts: &hyper::http::request::Parts) -> String {
    let query = parts.uri.query().unwrap_or("");
    let has = |k: &str| {
        query
            .split('&')
            .any(|p| p == k || p.starts_with(&format!("{k}=")))
    };
    let op = match parts.method.as_str() {
        "PUT" if has("partNumber") => "UploadPart",
        "PUT" if parts.uri.path().trim_matches('/').contains('/') => "PutObject",
        "PUT" => "CreateBucket",
        "POST" if has("uploads") => "CreateMultipartUpload",
        "POST" if has("uploadId") => "CompleteMultipartUpload",
        "DELETE" if has("uploadId") => "AbortMultipartUpload",
        "DELETE" => "DeleteObject",
        "HEAD" => "HeadObject",
        "GET" if has("uploads") => "ListMultipartUploads",
        "GET" if parts.uri.path().trim_matches('/').contains('/') => "GetObject",
        "GET" => "ListObjects",
        other => other,
    };
    format!("S3 {op}")
}

async fn forward(
    upstream: &str,
    parts: hyper::http::request::Parts,
    body: Bytes,
) -> Result<Response<Out>, std::io::Error> {
    let sock = tokio::net::TcpStream::connect(upstream).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(sock))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    // The body is whole now: send it with its length, not as it came.
    let mut parts = parts;
    parts.headers.remove("transfer-encoding");
    parts.headers.insert("content-length", body.len().into());
    let mut req = Request::from_parts(parts, Full::new(body));
    *req.uri_mut() = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse()
        .unwrap();
    let resp = send
        .send_request(req)
        .await
        .map_err(std::io::Error::other)?;
    let (mut parts, body) = resp.into_parts();
    let b = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    parts.headers.remove("transfer-encoding");
    parts.headers.insert("content-length", b.len().into());
    Ok(Response::from_parts(parts, full(b)))
}

/// A body that sends its first half, then fails: the client sees a
/// connection cut in the middle of an answer.
struct Cut(Option<Bytes>);

impl Body for Cut {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.0.take() {
            Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
            None => Poll::Ready(Some(Err(std::io::Error::other("injected: cut off")))),
        }
    }
}
