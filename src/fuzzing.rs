//! Entry points for fuzzing: each takes arbitrary bytes and must neither
//! panic nor allocate without bound. The cargo-fuzz targets in `fuzz/`
//! (libFuzzer, nightly Rust) and the seeded mutation runs in `tests/fuzz.rs`
//! (stable Rust, in CI) call the same functions.

use crate::cli::ReaderCli;
use crate::config::{Layers, ReaderConfig};
use crate::ports::stream::Record;
use bytes::Bytes;
use clap::Parser;

/// A small seeded generator (xorshift) for the seeded fuzz runs and
/// generated test inputs: the same seed gives the same inputs everywhere.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

fn record(data: &[u8]) -> Record {
    Record {
        sequence_number: "49590338271490256608559692538361571095921575989136588898".into(),
        sub_sequence_number: None,
        partition_key: "pk".into(),
        data: Bytes::copy_from_slice(data),
        arrival_ms: 1_700_000_000_000,
    }
}

/// A record's bytes as they come from the stream.
pub fn kpl_record(data: &[u8]) {
    if let Some(subs) = crate::kpl::deaggregate(&record(data)) {
        // Sub-records are slices of the outer record: never more data than it had.
        let total: usize = subs.iter().map(|s| s.data.len()).sum();
        assert!(total <= data.len());
    }
}

/// Arbitrary protobuf bytes inside a valid frame (magic and a correct MD5), so
/// that the fuzzer gets past the checksum to the protobuf parser.
pub fn kpl_protobuf(body: &[u8]) {
    use md5::{Digest, Md5};
    let mut framed = crate::kpl::MAGIC.to_vec();
    framed.extend_from_slice(body);
    framed.extend_from_slice(&Md5::digest(body));
    kpl_record(&framed);
}

/// The writer's line parsing: the first line is a `--columns` list, the rest
/// are rows for it (escaped, as the reader writes them).
pub fn writer_lines(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let spec = lines.next().unwrap_or("");
    let columns = crate::sink::columns::parse_columns(spec).unwrap_or_else(|_| {
        crate::sink::columns::parse_columns("k:S,r:N,b:B,t:BOOL,z:NULL,ss:SS,ns:NS,j:JSON")
            .expect("a valid column list")
    });
    let key_len = columns.len().min(2);
    for (i, line) in lines.enumerate() {
        let _ = crate::sink::columns::parse_row(&columns, key_len, i as u64 + 2, line, true);
        let _ = crate::sink::columns::parse_row(&columns, key_len, i as u64 + 2, line, false);
        let _ = crate::sink::lines::unescape(line);
    }
}

/// Settings: each line is a `-D NAME=VALUE` pair, or `env NAME=VALUE` for the
/// environment; then the reader's whole resolution runs on them, and a
/// manifest parse on the same text.
pub fn settings(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut defines = Vec::new();
    let mut env = Vec::new();
    for line in text.lines() {
        match line.strip_prefix("env ") {
            Some(kv) => {
                if let Some((k, v)) = kv.split_once('=') {
                    env.push((k.to_string(), v.to_string()));
                }
            }
            None => defines.push(line.to_string()),
        }
    }
    let lookup = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    if let Ok(layers) = Layers::new(&defines, &lookup) {
        let cli = ReaderCli::try_parse_from(["kinesis-reader"]).expect("no arguments parse");
        let _ = ReaderConfig::resolve(&cli.common, &cli.read, &layers, None);
    }
    let _ = crate::manifest::assignment(&text);
}

/// A GetRecords answer, decoded by the reader's fast path and, as the
/// oracle, by serde_json: whatever the fast path accepts must mean the same
/// records to a full JSON parser, and what it hands the SDK must be the same
/// answer with `"Records":[]`.
pub fn get_records_answer(data: &[u8]) {
    use crate::aws::get_records::{decode, Decoder};
    let whole = decode(data.to_vec());
    // The connector decodes as chunks arrive: any cut must give the same.
    for piece in [1, 2 + data.len() % 13, 64] {
        let mut d = Decoder::new(Some(data.len()));
        data.chunks(piece).for_each(|c| d.feed(c));
        match (&whole, d.finish()) {
            (Ok(a), Ok(b)) => assert!(a.records == b.records && a.rest == b.rest),
            (Err(a), Err(b)) => assert_eq!(a.body, b.body),
            (a, b) => panic!("whole {a:?} but in pieces of {piece} {b:?}"),
        }
    }
    let Ok(d) = whole else {
        return;
    };
    let Ok(full) = serde_json::from_slice::<serde_json::Value>(data) else {
        // Only JSON-looking input gets this far; the fast path checks less
        // than a full parser (e.g. number syntax or UTF-8 in skipped
        // members), so it may accept what serde_json refuses. The SDK
        // still parses every member other than Records.
        return;
    };
    let records = full["Records"].as_array().expect("Records is an array");
    assert_eq!(records.len(), d.records.len());
    for (want, got) in records.iter().zip(d.records.iter()) {
        assert_eq!(want["SequenceNumber"].as_str(), Some(got.sequence_number));
        let key = want["PartitionKey"].as_str().unwrap_or("");
        assert_eq!(key, got.partition_key);
        let bytes = base64_simd::STANDARD
            .decode_to_vec(want["Data"].as_str().expect("Data is a string"))
            .expect("Data is base64");
        assert_eq!(bytes, got.data);
    }
    let mut rest: serde_json::Value =
        serde_json::from_slice(&d.rest).expect("the SDK's part is JSON");
    rest["Records"] = full["Records"].clone();
    assert_eq!(rest, full);
}
