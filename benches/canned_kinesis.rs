//! A canned Kinesis endpoint: answers DescribeStreamSummary, ListShards,
//! GetShardIterator and GetRecords from pre-rendered pages as fast as it can,
//! so that a reader's own CPU cost is what a benchmark measures.
//!
//!     cargo bench --bench canned_kinesis -- --port 4599 --shards 8 --record-size 1000 --pages 10
//!
//! Every shard holds `pages` pages of 10,000 records of `record-size` bytes —
//! fewer when that would pass the service's 10 MiB per GetRecords answer —
//! (JSON-like text, base64 in the answer exactly as the service sends it),
//! then answers empty pages with MillisBehindLatest 0 (caught up). A
//! GetRecords `Limit` is honoured, as the service does: the answer holds
//! that many records of the page, and the next one goes on from there.
//! Sequence numbers grow within a shard. It listens on 127.0.0.1 only and stops when
//! its stdin closes (or after --seconds).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::sync::Arc;

/// The service answers at most 10,000 records and 10 MiB per GetRecords.
fn records_per_page(size: usize) -> usize {
    (10 * 1024 * 1024 / size.max(1)).clamp(1, 10_000)
}

struct Canned {
    shards: usize,
    pages: usize,
    page: Template,
}

/// One page's records as JSON, comma-separated, the page number's 9 digits
/// left at `digits[i]` in record i, which spans `records[i]` (without its
/// comma).
struct Template {
    text: Vec<u8>,
    digits: Vec<usize>,
    records: Vec<std::ops::Range<usize>>,
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn render(size: usize) -> Template {
    use base64::Engine;
    // A realistic record: a JSON log line padded to the size.
    let mut payload =
        br#"{"ts":"2026-11-26T14:05:00.123Z","level":"ERROR","region":"eu-west-1","msg":""#
            .to_vec();
    while payload.len() + 2 < size {
        payload.push(b'a' + (payload.len() % 26) as u8);
    }
    payload.extend_from_slice(b"\"}");
    payload.truncate(size.max(1));
    let data = base64::engine::general_purpose::STANDARD.encode(&payload);
    let mut out = Vec::new();
    let n = records_per_page(size);
    let (mut digits, mut records) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        if i > 0 {
            out.push(b',');
        }
        let start = out.len();
        // 56 digits like the service's: a fixed head, then the page and the record.
        out.extend_from_slice(br#"{"SequenceNumber":"495903382714902566085596925383615710959215"#);
        digits.push(out.len());
        out.extend_from_slice(format!("000000000{i:05}\",\"ApproximateArrivalTimestamp\":1764165900.123,\"PartitionKey\":\"client-{}\",\"Data\":\"{data}\"}}", i % 500).as_bytes());
        records.push(start..out.len());
    }
    Template {
        text: out,
        digits,
        records,
    }
}

impl Canned {
    /// Up to `limit` records of page `page` from record `from` on.
    fn page(&self, shard: usize, page: usize, from: usize, limit: usize) -> Vec<u8> {
        if page >= self.pages {
            return format!(
                r#"{{"Records":[],"NextShardIterator":"{shard}:{page}:0","MillisBehindLatest":0}}"#
            )
            .into_bytes();
        }
        let t = &self.page;
        let n = t.records.len();
        let from = from.min(n - 1);
        let to = (from + limit.max(1)).min(n);
        let mut body = br#"{"Records":["#.to_vec();
        let base = body.len();
        let (first, last) = (t.records[from].start, t.records[to - 1].end);
        body.extend_from_slice(&t.text[first..last]);
        let p = format!("{page:09}");
        for i in from..to {
            let at = base + t.digits[i] - first;
            body[at..at + 9].copy_from_slice(p.as_bytes());
        }
        let next = if to == n {
            format!("{}:0", page + 1)
        } else {
            format!("{page}:{to}")
        };
        body.extend_from_slice(
            format!(r#"],"NextShardIterator":"{shard}:{next}","MillisBehindLatest":1000}}"#)
                .as_bytes(),
        );
        body
    }

    fn answer(&self, target: &str, body: &serde_json::Value) -> Vec<u8> {
        let op = target.rsplit('.').next().unwrap_or("");
        match op {
            "DescribeStreamSummary" => format!(
                r#"{{"StreamDescriptionSummary":{{"StreamName":"bench","StreamARN":"arn:aws:kinesis:us-east-1:000000000000:stream/bench","StreamStatus":"ACTIVE","RetentionPeriodHours":24,"StreamCreationTimestamp":1764000000.0,"EnhancedMonitoring":[],"OpenShardCount":{}}}}}"#,
                self.shards
            )
            .into_bytes(),
            "ListShards" => {
                let shards: Vec<String> = (0..self.shards)
                    .map(|s| format!(r#"{{"ShardId":"shardId-{s:012}","HashKeyRange":{{"StartingHashKey":"{s}","EndingHashKey":"{s}"}},"SequenceNumberRange":{{"StartingSequenceNumber":"1"}}}}"#))
                    .collect();
                format!(r#"{{"Shards":[{}]}}"#, shards.join(",")).into_bytes()
            }
            "GetShardIterator" => {
                let shard: usize = body["ShardId"].as_str().unwrap_or("shardId-0")[8..].parse().unwrap_or(0);
                // Only whole-shard reads are benchmarked: every start is page 0.
                format!(r#"{{"ShardIterator":"{shard}:0:0"}}"#).into_bytes()
            }
            "GetRecords" => {
                let it = body["ShardIterator"].as_str().unwrap_or("0:0:0");
                let at: Vec<usize> = it.split(':').map(|n| n.parse().unwrap_or(0)).collect();
                let limit = body["Limit"].as_u64().unwrap_or(10_000) as usize;
                self.page(at[0], at[1], at.get(2).copied().unwrap_or(0), limit)
            }
            other => format!(r#"{{"__type":"UnknownOperationException","message":"{other}"}}"#).into_bytes(),
        }
    }
}

async fn serve(
    c: Arc<Canned>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = req.into_body().collect().await?.to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let out = c.answer(&target, &json);
    Ok(Response::builder()
        .header("content-type", "application/x-amz-json-1.1")
        .body(Full::new(Bytes::from(out)))
        .expect("response"))
}

fn main() {
    if std::env::args().any(|a| a == "--bench") && !std::env::args().any(|a| a == "--port") {
        // `cargo bench` without arguments: nothing to run (the harness drives it).
        return;
    }
    let port = arg("--port", 4599) as u16;
    let canned = Arc::new(Canned {
        shards: arg("--shards", 1),
        pages: arg("--pages", 10),
        page: render(arg("--record-size", 1000)),
    });
    let seconds = arg("--seconds", 3600) as u64;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind 127.0.0.1");
        eprintln!("canned kinesis on http://127.0.0.1:{port}");
        let stop = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        });
        let accept = async {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let c = canned.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |r| serve(c.clone(), r));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
                });
            }
        };
        tokio::select! {
            _ = accept => {}
            _ = stop => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(seconds)) => {}
        }
    });
}
