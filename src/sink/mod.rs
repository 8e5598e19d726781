//! `kinesis-writer`'s targets: where reduced output goes, and under which
//! name, so that a rerun of an iteration overwrites instead of adding.

pub mod dynamodb;
pub mod lines;
pub mod s3;

use crate::error::ReaderError;

/// `s3://bucket/prefix/`, `s3://bucket/key`, or `dynamodb://table`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    S3 { bucket: String, key: S3Key },
    DynamoDb { table: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum S3Key {
    /// Ends with `/`: the object name comes from the iteration context.
    Prefix(String),
    Exact(String),
}

impl Target {
    pub fn parse(s: &str) -> Result<Self, ReaderError> {
        let usage = |m: &str| {
            ReaderError::Usage(format!(
                "target {s:?}: {m}; expected s3://BUCKET/PREFIX/, s3://BUCKET/KEY or dynamodb://TABLE"
            ))
        };
        if let Some(rest) = s.strip_prefix("s3://") {
            let Some((bucket, key)) = rest.split_once('/') else {
                // Without a trailing '/' a target is an exact key, and this one names none.
                return Err(ReaderError::Usage(format!(
                    "target {s:?} names a bucket but no object: use s3://{rest}/ to write \
                     under the bucket's top level (objects named from the iteration), or \
                     s3://{rest}/KEY for one exact key"
                )));
            };
            if bucket.is_empty() {
                return Err(usage("no bucket"));
            }
            let key = if key.is_empty() || key.ends_with('/') {
                S3Key::Prefix(key.to_string())
            } else {
                S3Key::Exact(key.to_string())
            };
            Ok(Target::S3 {
                bucket: bucket.to_string(),
                key,
            })
        } else if let Some(table) = s.strip_prefix("dynamodb://") {
            check_table_name(table)?;
            Ok(Target::DynamoDb {
                table: table.to_string(),
            })
        } else {
            Err(usage("unknown scheme"))
        }
    }
}

/// Which iteration's output this is (from flags, EMR names, or the
/// environment the reader gives its child).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IterationContext {
    pub logical_name: Option<String>,
    pub iteration: Option<u64>,
    pub stream: Option<String>,
    /// Hadoop's task partition (`mapreduce_task_partition`): which reducer's part.
    pub partition: u32,
    /// When the iteration was opened (epoch ms), for `{date}` / `{hour}`.
    pub opened_ms: Option<i64>,
}

/// The default object name under a prefix: one object per iteration and
/// partition, so a rerun writes the same key.
pub const DEFAULT_KEY_TEMPLATE: &str = "iteration={iteration}/part-{partition}";

/// An S3 key this tool will write: at most 1,024 bytes, no empty segment
/// (`a//b`, a leading `/`), no `.` or `..` segment, no control characters —
/// so a logical name or stream substituted into a template cannot climb out
/// of its prefix or make a key that tools mangle.
pub fn check_key(key: &str) -> Result<(), ReaderError> {
    let bad = |why: &str| Err(ReaderError::Usage(format!("S3 key {key:?}: {why}")));
    if key.is_empty() {
        return bad("empty");
    }
    if key.len() > 1024 {
        return bad("longer than S3's 1,024 bytes");
    }
    if key.chars().any(char::is_control) {
        return bad("contains a control character");
    }
    let segments: Vec<&str> = key.split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        if seg.is_empty() && i != last {
            return bad("has an empty path segment (a leading '/' or '//')");
        }
        if *seg == "." || *seg == ".." {
            return bad("has a '.' or '..' segment");
        }
    }
    if segments[last].is_empty() {
        return bad("ends with '/', so it names no object");
    }
    Ok(())
}

/// Endings that tools (Hadoop's codecs, Athena, Spark) read as a compression.
const COMPRESSED_ENDINGS: [&str; 8] = [
    ".gz", ".gzip", ".zst", ".bz2", ".xz", ".lz4", ".snappy", ".deflate",
];

/// A key's ending must say how the object is compressed, because the tools
/// that read it pick the codec from the name alone.
pub fn check_extension(key: &str, compression: s3::Compression) -> Result<(), ReaderError> {
    let lower = key.to_ascii_lowercase();
    let ending = COMPRESSED_ENDINGS.iter().find(|e| lower.ends_with(*e));
    let want = compression.extension();
    match (ending, compression) {
        (None, s3::Compression::None) => Ok(()),
        (Some(e), s3::Compression::None) => Err(ReaderError::Usage(format!(
            "S3 key {key:?} ends with {e}, but the object would be stored uncompressed, and \
             readers pick the codec from the name: add --compress {}, or drop {e} from the key",
            if *e == ".zst" { "zstd" } else { "gzip" }
        ))),
        (Some(e), _) if *e == want => Ok(()),
        (_, c) => Err(ReaderError::Usage(format!(
            "S3 key {key:?}: --compress {} stores {} bytes, and readers pick the codec from the \
             name: end the key with {want}",
            c.name(),
            c.name()
        ))),
    }
}

/// A DynamoDB table name as the service allows it: 3–255 of `A-Z a-z 0-9 _ - .`.
pub fn check_table_name(name: &str) -> Result<(), ReaderError> {
    let ok = (3..=255).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ReaderError::Usage(format!(
            "table name {name:?}: DynamoDB tables are 3 to 255 characters of A-Z, a-z, 0-9, \
             '_', '-' and '.'"
        )))
    }
}

/// Expands a key template. Placeholders: `{logical_name}`, `{iteration}`,
/// `{partition}` (5 digits), `{stream}`, `{date}` (YYYY-MM-DD) and `{hour}`
/// (HH) of the iteration's opening. A placeholder without a value is an error.
pub fn expand_key(template: &str, ctx: &IterationContext) -> Result<String, ReaderError> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').ok_or_else(|| {
            ReaderError::Usage(format!("key template {template:?}: a '{{' is never closed"))
        })? + open;
        let name = &rest[open + 1..close];
        let missing = |what: &str| {
            ReaderError::Usage(format!(
                "key template {template:?} uses {{{name}}} but no {what} is known: pass {}",
                match name {
                    "logical_name" => "--logical-name (or -D kinesis.checkpoint.logical.name)",
                    "iteration" => "--iteration (or -D kinesis.checkpoint.iteration.no)",
                    "stream" => "--stream (or -D kinesis.stream.name)",
                    _ => "--iteration-start RFC3339",
                }
            ))
        };
        let value = match name {
            "logical_name" => ctx
                .logical_name
                .clone()
                .ok_or_else(|| missing("logical name"))?,
            "iteration" => ctx
                .iteration
                .ok_or_else(|| missing("iteration"))?
                .to_string(),
            "partition" => format!("{:05}", ctx.partition),
            "stream" => ctx.stream.clone().ok_or_else(|| missing("stream"))?,
            "date" | "hour" => {
                let ms = ctx.opened_ms.ok_or_else(|| missing("iteration start"))?;
                let t = crate::iteration::fmt_ms(ms); // 2026-11-26T14:05:00.000Z
                if name == "date" {
                    t[..10].to_string()
                } else {
                    t[11..13].to_string()
                }
            }
            other => {
                return Err(ReaderError::Usage(format!(
                    "key template {template:?}: unknown placeholder {{{other}}}; known: \
                     {{logical_name}} {{iteration}} {{partition}} {{stream}} {{date}} {{hour}}"
                )))
            }
        };
        out.push_str(&value);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("s3://results/top-errors/").unwrap(),
            Target::S3 {
                bucket: "results".into(),
                key: S3Key::Prefix("top-errors/".into())
            }
        );
        assert_eq!(
            Target::parse("s3://results/").unwrap(),
            Target::S3 {
                bucket: "results".into(),
                key: S3Key::Prefix("".into())
            }
        );
        // No '/': an exact key, and there is none.
        let e = Target::parse("s3://results").unwrap_err().to_string();
        assert!(e.contains("s3://results/"), "{e}");
        assert_eq!(
            Target::parse("s3://b/x/out.tsv").unwrap(),
            Target::S3 {
                bucket: "b".into(),
                key: S3Key::Exact("x/out.tsv".into())
            }
        );
        assert_eq!(
            Target::parse("dynamodb://counts").unwrap(),
            Target::DynamoDb {
                table: "counts".into()
            }
        );
        for key in ["a/b", "iteration=0/part-00000", "x"] {
            assert!(check_key(key).is_ok(), "{key}");
        }
        for key in ["", "/a", "a//b", "a/../b", "..", "a/./b", "a/", "a\nb"] {
            assert!(check_key(key).is_err(), "{key:?}");
        }
        assert!(check_key(&"k".repeat(1025)).is_err());
        assert!(check_table_name("ab").is_err() && check_table_name("a/b/c").is_err());
        assert!(check_table_name("emr-checkpoints_1.x").is_ok());
        for bad in [
            "s3:///k",
            "file:///tmp/x",
            "dynamodb://",
            "results/",
            "dynamodb://a b",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_key_says_how_its_object_is_compressed() {
        use s3::Compression::*;
        for (key, c) in [
            ("a/plain.tsv", None),
            ("a/f.tsv.gz", Gzip),
            ("a/F.TSV.GZ", Gzip),
            ("f.zst", Zstd),
        ] {
            assert!(check_extension(key, c).is_ok(), "{key} {c:?}");
        }
        for (key, c, says) in [
            ("b/plain.tsv", Gzip, "end the key with .gz"),
            ("d.tsv.gz", None, "add --compress gzip"),
            ("f.tsv.zst", Gzip, "end the key with .gz"),
            ("f.tsv.gz", Zstd, "end the key with .zst"),
            ("x.bz2", None, "drop .bz2"),
        ] {
            let e = check_extension(key, c).unwrap_err().to_string();
            assert!(e.contains(says), "{key} {c:?}: {e}");
        }
    }

    #[test]
    fn keys_are_deterministic_per_iteration_and_partition() {
        let ctx = IterationContext {
            logical_name: Some("top".into()),
            iteration: Some(7),
            stream: Some("logs".into()),
            partition: 3,
            opened_ms: Some(1_764_165_900_000), // 2025-11-26T14:05:00Z
        };
        assert_eq!(
            expand_key(DEFAULT_KEY_TEMPLATE, &ctx).unwrap(),
            "iteration=7/part-00003"
        );
        assert_eq!(
            expand_key(
                "{stream}/{logical_name}/dt={date}/hr={hour}/{iteration}.tsv",
                &ctx
            )
            .unwrap(),
            "logs/top/dt=2025-11-26/hr=14/7.tsv"
        );
        let e = expand_key(DEFAULT_KEY_TEMPLATE, &IterationContext::default()).unwrap_err();
        assert!(e.to_string().contains("--iteration"), "{e}");
        assert!(expand_key("{colour}", &ctx)
            .unwrap_err()
            .to_string()
            .contains("unknown placeholder"));
        assert!(expand_key("a{iteration", &ctx).is_err());
    }
}
