//! What AWS and the checkpoint table accept as names, checked while settings
//! are resolved, so that a bad name fails before any request is made.

use crate::error::ExitError;
use crate::sink::s3::Compression;

/// A stream name, or an ARN ending in `stream/NAME`: names are Kinesis's
/// 1 to 128 of `A-Z a-z 0-9 _ - .`. `src` says where the value came from.
/// Kinesis's rule for stream and consumer names: 1 to 128 characters of
/// A-Z, a-z, 0-9, '_', '-' and '.'.
fn kinesis_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

pub fn check_stream_name(stream: &str, src: &str) -> Result<(), ExitError> {
    if !kinesis_name(crate::ports::stream::stream_name(stream)) {
        return Err(ExitError::Usage(format!(
            "{src}: a stream name is 1 to 128 characters of A-Z, a-z, 0-9, '_', '-' and '.' \
             (or give the stream's ARN)"
        )));
    }
    Ok(())
}

/// An enhanced fan-out consumer's name, as Kinesis accepts it: refused here,
/// before `plan` registers (and the account is billed for) anything.
pub fn check_consumer_name(name: &str) -> Result<(), ExitError> {
    if !kinesis_name(name) {
        return Err(ExitError::Usage(format!(
            "--efo-consumer {name:?}: a consumer name is 1 to 128 characters of A-Z, a-z, 0-9, \
             '_', '-' and '.'"
        )));
    }
    Ok(())
}

/// A logical name is part of the checkpoint table's keys (`<stream>/<logical
/// name>/<iteration>`): a '/' in it could make one logical name's header
/// collide with another's shard items, so it is refused.
pub fn check_logical_name(name: &str) -> Result<(), ExitError> {
    if name.is_empty()
        || name.len() > 255
        || name.contains('/')
        || name.chars().any(char::is_control)
    {
        return Err(ExitError::Usage(format!(
            "logical name {name:?}: use 1 to 255 characters without '/' or control characters"
        )));
    }
    Ok(())
}

/// A DynamoDB table name as the service allows it: 3–255 of `A-Z a-z 0-9 _ - .`.
pub fn check_table_name(name: &str) -> Result<(), ExitError> {
    let ok = (3..=255).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ExitError::Usage(format!(
            "table name {name:?}: DynamoDB tables are 3 to 255 characters of A-Z, a-z, 0-9, \
             '_', '-' and '.'"
        )))
    }
}

/// An S3 key this tool will write: at most 1,024 bytes, no empty segment
/// (`a//b`, a leading `/`), no `.` or `..` segment, no control characters —
/// so a logical name or stream substituted into a template cannot climb out
/// of its prefix or make a key that tools mangle.
pub fn check_object_key(key: &str) -> Result<(), ExitError> {
    let bad = |why: &str| Err(ExitError::Usage(format!("S3 key {key:?}: {why}")));
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
pub fn check_extension(key: &str, compression: Compression) -> Result<(), ExitError> {
    let lower = key.to_ascii_lowercase();
    let ending = COMPRESSED_ENDINGS.iter().find(|e| lower.ends_with(*e));
    let want = compression.extension();
    match (ending, compression) {
        (None, Compression::None) => Ok(()),
        (Some(e), Compression::None) => Err(ExitError::Usage(format!(
            "S3 key {key:?} ends with {e}, but the object would be stored uncompressed, and \
             readers pick the codec from the name: add --compress {}, or drop {e} from the key",
            if *e == ".zst" { "zstd" } else { "gzip" }
        ))),
        (Some(e), _) if *e == want => Ok(()),
        (_, c) => Err(ExitError::Usage(format!(
            "S3 key {key:?}: --compress {} stores {} bytes, and readers pick the codec from the \
             name: end the key with {want}",
            c.name(),
            c.name()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_and_table_names() {
        for key in ["a/b", "iteration=0/part-00000", "x"] {
            assert!(check_object_key(key).is_ok(), "{key}");
        }
        for key in ["", "/a", "a//b", "a/../b", "..", "a/./b", "a/", "a\nb"] {
            assert!(check_object_key(key).is_err(), "{key:?}");
        }
        assert!(check_object_key(&"k".repeat(1025)).is_err());
        assert!(check_table_name("ab").is_err() && check_table_name("a/b/c").is_err());
        assert!(check_table_name("emr-checkpoints_1.x").is_ok());
    }

    #[test]
    fn a_key_says_how_its_object_is_compressed() {
        use Compression::*;
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
}
