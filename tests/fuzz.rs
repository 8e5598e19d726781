//! The fuzz targets (src/fuzzing.rs) on stable Rust: every committed corpus
//! input, then seeded random mutations of them (bit flips, boundary bytes,
//! hostile varint lengths, splices, truncations). libFuzzer runs the same
//! targets for longer with `cargo +nightly fuzz run <target>` (see fuzz/).
//!
//! `KINESIS_STREAMING_FUZZ_RUNS` sets the mutations per target (default
//! 20,000); `KINESIS_STREAMING_FAULT_SEED` the seed.

use kinesis_streaming::fuzzing;
use std::path::Path;

use kinesis_streaming::fuzzing::Rng;

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(7) {
            0 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] = [0x00, 0xff, 0x7f, 0x80, b'\t', b'\\', b','][rng.below(7)];
            }
            2 => {
                let extra: Vec<u8> = (0..1 + rng.below(8))
                    .map(|_| rng.next_u64() as u8)
                    .collect();
                v.splice(at..at, extra);
            }
            3 => {
                let end = (at + rng.below(16)).min(v.len());
                v.drain(at..end);
            }
            4 if !v.is_empty() => {
                let start = rng.below(v.len());
                let end = (start + 1 + rng.below(32)).min(v.len());
                let chunk = v[start..end].to_vec();
                v.splice(at..at, chunk);
            }
            // A hostile length: a varint (or 4-byte length) of a huge value.
            5 => {
                let huge: &[u8] = if rng.below(2) == 0 {
                    &[0xff, 0xff, 0xff, 0xff, 0x0f]
                } else {
                    &[0x7f, 0xff, 0xff, 0xff]
                };
                v.splice(at..at, huge.iter().copied());
            }
            _ => v.truncate(at),
        }
    }
    v
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let inputs: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(!inputs.is_empty(), "no corpus in {}", dir.display());
    inputs
}

fn fuzz(target: &str, run: fn(&[u8])) {
    let runs: usize = std::env::var("KINESIS_STREAMING_FUZZ_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let seed = std::env::var("KINESIS_STREAMING_FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20261126u64);
    let inputs = corpus(target);
    for input in &inputs {
        run(input);
    }
    let mut rng = Rng(seed.max(1));
    for i in 0..runs {
        let base = &inputs[rng.below(inputs.len())];
        let input = mutate(&mut rng, base);
        let r = std::panic::catch_unwind(|| run(&input));
        assert!(
            r.is_ok(),
            "{target} panicked on mutation {i} (seed {seed}); input: {input:?}"
        );
    }
}

#[test]
fn kpl_record() {
    fuzz("kpl_record", fuzzing::kpl_record);
}

#[test]
fn kpl_protobuf() {
    fuzz("kpl_protobuf", fuzzing::kpl_protobuf);
}

#[test]
fn writer_lines() {
    fuzz("writer_lines", fuzzing::writer_lines);
}

#[test]
fn get_records_answer() {
    fuzz("get_records_answer", fuzzing::get_records_answer);
}

#[test]
fn settings() {
    fuzz("settings", fuzzing::settings);
}

/// Writes the KPL seeds of the corpus (run once with
/// `KINESIS_STREAMING_WRITE_CORPUS=1`; the files are committed).
#[test]
fn kpl_seed_corpus() {
    if std::env::var_os("KINESIS_STREAMING_WRITE_CORPUS").is_none() {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let aggregates: [(&str, Vec<u8>); 3] = [
        (
            "three",
            kinesis_streaming::kpl::aggregate(&[
                ("pk-1", None, b"first"),
                ("ключ", Some("12345678901234567890"), b"second\n"),
                ("pk-1", None, &[0, 255, 9]),
            ]),
        ),
        (
            "one",
            kinesis_streaming::kpl::aggregate(&[("k", None, b"")]),
        ),
        (
            "many",
            kinesis_streaming::kpl::aggregate(
                &(0..20)
                    .map(|i| ("p", None, &b"0123456789"[..i % 10]))
                    .collect::<Vec<_>>(),
            ),
        ),
    ];
    for (name, record) in aggregates {
        std::fs::write(dir.join("kpl_record").join(name), &record).unwrap();
        // The protobuf alone, between the magic and the MD5.
        let body = &record[4..record.len() - 16];
        std::fs::write(dir.join("kpl_protobuf").join(name), body).unwrap();
    }
    std::fs::write(dir.join("kpl_record/plain"), b"not an aggregate").unwrap();
}
