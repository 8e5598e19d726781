//! Turning a record into one output line.
//!
//! The field list and encoding are parsed once at start-up (an unknown field
//! fails before any I/O); each record is then written straight into the
//! output buffer with no per-record allocation for the TSV path.

use crate::records::RecordRef;
use base64::Engine;
use std::io::{self, Write};
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    ShardId,
    SequenceNumber,
    SubSequenceNumber,
    PartitionKey,
    ArrivalTimestamp,
    ArrivalMillis,
    Data,
    Stream,
    Iteration,
}

impl Field {
    pub const ALL: [Field; 9] = [
        Field::ShardId,
        Field::SequenceNumber,
        Field::SubSequenceNumber,
        Field::PartitionKey,
        Field::ArrivalTimestamp,
        Field::ArrivalMillis,
        Field::Data,
        Field::Stream,
        Field::Iteration,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::ShardId => "shard_id",
            Field::SequenceNumber => "sequence_number",
            Field::SubSequenceNumber => "sub_sequence_number",
            Field::PartitionKey => "partition_key",
            Field::ArrivalTimestamp => "arrival_timestamp",
            Field::ArrivalMillis => "arrival_millis",
            Field::Data => "data",
            Field::Stream => "stream",
            Field::Iteration => "iteration",
        }
    }
}

impl FromStr for Field {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Field::ALL
            .into_iter()
            .find(|f| f.name() == s.trim())
            .ok_or_else(|| {
                let names: Vec<_> = Field::ALL.iter().map(|f| f.name()).collect();
                format!("unknown field {s:?}; fields are: {}", names.join(", "))
            })
    }
}

/// `--fields a,b,c`.
pub fn parse_fields(s: &str) -> Result<Vec<Field>, String> {
    let fields: Vec<Field> = s.split(',').map(str::parse).collect::<Result<_, _>>()?;
    if fields.is_empty() {
        return Err("--fields needs at least one field".into());
    }
    Ok(fields)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DataEncoding {
    /// Backslash-escape tab, newline, carriage return and backslash.
    Escape,
    Base64,
    Hex,
    /// The bytes as they are: a record containing a newline splits its line.
    Raw,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Tsv,
    Jsonl,
    /// Hadoop typed bytes, for `-io typedbytes` jobs (binary data kept as it is).
    Typedbytes,
}

/// Writes records as lines.
#[derive(Clone)]
pub struct Formatter {
    fields: Vec<Field>,
    encoding: DataEncoding,
    format: OutputFormat,
    stream: String,
    iteration: String,
}

impl Formatter {
    pub fn new(
        fields: Vec<Field>,
        encoding: DataEncoding,
        format: OutputFormat,
        stream: &str,
        iteration: Option<u64>,
    ) -> Self {
        Formatter {
            fields,
            encoding,
            format,
            stream: stream.to_string(),
            iteration: iteration.map(|n| n.to_string()).unwrap_or_default(),
        }
    }

    pub fn write(&self, out: &mut impl Write, shard_id: &str, r: RecordRef<'_>) -> io::Result<()> {
        match self.format {
            OutputFormat::Tsv => self.write_tsv(out, shard_id, r),
            OutputFormat::Jsonl => self.write_json(out, shard_id, r),
            OutputFormat::Typedbytes => self.write_typed(out, shard_id, r),
        }
    }

    /// Hadoop typed bytes: a key and a value per record, no separators. The
    /// key is the first field; the value is the second, a vector (type 8) of
    /// the others when there are more, or empty bytes when there is one.
    /// Data is bytes (type 0) whatever it holds; numbers are longs (type 4);
    /// everything else is a string (type 7). Lengths are 4-byte big-endian.
    fn write_typed(
        &self,
        out: &mut impl Write,
        shard_id: &str,
        r: RecordRef<'_>,
    ) -> io::Result<()> {
        let (key, rest) = self.fields.split_first().expect("at least one field");
        self.typed_field(out, *key, shard_id, r)?;
        match rest {
            [] => typed(out, 0, b""),
            [one] => self.typed_field(out, *one, shard_id, r),
            many => {
                out.write_all(&[8])?;
                out.write_all(&(many.len() as u32).to_be_bytes())?;
                for f in many {
                    self.typed_field(out, *f, shard_id, r)?;
                }
                Ok(())
            }
        }
    }

    fn typed_field(
        &self,
        out: &mut impl Write,
        f: Field,
        shard_id: &str,
        r: RecordRef<'_>,
    ) -> io::Result<()> {
        let long = |out: &mut dyn Write, v: i64| -> io::Result<()> {
            out.write_all(&[4])?;
            out.write_all(&v.to_be_bytes())
        };
        match f {
            Field::Data => typed(out, 0, r.data),
            Field::ShardId => typed(out, 7, shard_id.as_bytes()),
            Field::SequenceNumber => typed(out, 7, r.sequence_number.as_bytes()),
            Field::PartitionKey => typed(out, 7, r.partition_key.as_bytes()),
            Field::Stream => typed(out, 7, self.stream.as_bytes()),
            Field::ArrivalTimestamp => typed(out, 7, crate::clock::fmt_ms(r.arrival_ms).as_bytes()),
            Field::SubSequenceNumber => long(out, r.sub_sequence_number.unwrap_or(0) as i64),
            Field::ArrivalMillis => long(out, r.arrival_ms),
            // -1 when reading without checkpoints.
            Field::Iteration => long(out, self.iteration.parse::<i64>().unwrap_or(-1)),
        }
    }

    fn write_tsv(&self, out: &mut impl Write, shard_id: &str, r: RecordRef<'_>) -> io::Result<()> {
        for (i, f) in self.fields.iter().enumerate() {
            if i > 0 {
                out.write_all(b"\t")?;
            }
            match f {
                Field::ShardId => out.write_all(shard_id.as_bytes())?,
                Field::SequenceNumber => out.write_all(r.sequence_number.as_bytes())?,
                Field::SubSequenceNumber => write!(out, "{}", r.sub_sequence_number.unwrap_or(0))?,
                Field::PartitionKey => self.encode(out, r.partition_key.as_bytes())?,
                Field::ArrivalTimestamp => write!(out, "{}", crate::clock::rfc3339(r.arrival_ms))?,
                Field::ArrivalMillis => write!(out, "{}", r.arrival_ms)?,
                Field::Data => self.encode(out, r.data)?,
                Field::Stream => out.write_all(self.stream.as_bytes())?,
                Field::Iteration => out.write_all(self.iteration.as_bytes())?,
            }
        }
        out.write_all(b"\n")
    }

    fn encode(&self, out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
        match self.encoding {
            DataEncoding::Escape => write_escaped(out, bytes),
            DataEncoding::Raw => out.write_all(bytes),
            DataEncoding::Base64 => {
                let s = base64::engine::general_purpose::STANDARD.encode(bytes);
                out.write_all(s.as_bytes())
            }
            DataEncoding::Hex => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                for chunk in bytes.chunks(512) {
                    let mut buf = [0u8; 1024];
                    for (i, b) in chunk.iter().enumerate() {
                        buf[2 * i] = HEX[(b >> 4) as usize];
                        buf[2 * i + 1] = HEX[(b & 15) as usize];
                    }
                    out.write_all(&buf[..chunk.len() * 2])?;
                }
                Ok(())
            }
        }
    }

    /// One JSON object per record, its keys in `--fields` order (binary data
    /// is base64, announced by a `data_encoding` key just before it).
    fn write_json(&self, out: &mut impl Write, shard_id: &str, r: RecordRef<'_>) -> io::Result<()> {
        use serde_json::Value;
        let mut entries: Vec<(&str, Value)> = Vec::with_capacity(self.fields.len() + 1);
        for f in &self.fields {
            let v = match f {
                Field::ShardId => Value::from(shard_id),
                Field::SequenceNumber => Value::from(r.sequence_number),
                Field::SubSequenceNumber => Value::from(r.sub_sequence_number.unwrap_or(0)),
                Field::PartitionKey => Value::from(r.partition_key),
                Field::ArrivalTimestamp => Value::from(crate::clock::fmt_ms(r.arrival_ms)),
                Field::ArrivalMillis => Value::from(r.arrival_ms),
                Field::Stream => Value::from(self.stream.as_str()),
                Field::Iteration if self.iteration.is_empty() => Value::Null,
                Field::Iteration => Value::from(self.iteration.parse::<u64>().unwrap_or(0)),
                Field::Data => match std::str::from_utf8(r.data) {
                    Ok(s) => Value::from(s),
                    Err(_) => {
                        entries.push(("data_encoding", Value::from("base64")));
                        Value::from(base64::engine::general_purpose::STANDARD.encode(r.data))
                    }
                },
            };
            entries.push((f.name(), v));
        }
        out.write_all(b"{")?;
        for (i, (name, v)) in entries.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            serde_json::to_writer(&mut *out, name)?;
            out.write_all(b":")?;
            serde_json::to_writer(&mut *out, v)?;
        }
        out.write_all(b"}\n")
    }
}

/// A typed-bytes item with a length: bytes (0) or a string (7).
fn typed(out: &mut impl Write, code: u8, bytes: &[u8]) -> io::Result<()> {
    out.write_all(&[code])?;
    out.write_all(&(bytes.len() as u32).to_be_bytes())?;
    out.write_all(bytes)
}

/// Tab, newline, carriage return and backslash become `\t`, `\n`, `\r`, `\\`,
/// so a record can never split or add a line; all other bytes pass unchanged.
pub fn write_escaped(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    // Most records have none of these bytes: SIMD searches skip the plain runs.
    let mut start = 0;
    while let Some(i) = next_special(&bytes[start..]) {
        let at = start + i;
        let esc: &[u8] = match bytes[at] {
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => b"\\\\",
        };
        out.write_all(&bytes[start..at])?;
        out.write_all(esc)?;
        start = at + 1;
    }
    out.write_all(&bytes[start..])
}

/// The first tab, newline, carriage return or backslash.
fn next_special(b: &[u8]) -> Option<usize> {
    let three = memchr::memchr3(b'\t', b'\n', b'\\', b);
    let limit = three.unwrap_or(b.len());
    match memchr::memchr(b'\r', &b[..limit]) {
        Some(r) => Some(r),
        None => three,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::stream::Record;
    use bytes::Bytes;

    fn rec(data: &[u8], pk: &str) -> Record {
        Record {
            sequence_number: "495903382714902566085596925383615710959215759891365".into(),
            sub_sequence_number: None,
            partition_key: pk.into(),
            data: Bytes::copy_from_slice(data),
            arrival_ms: 1_700_000_000_123,
        }
    }

    fn line(f: &Formatter, r: &Record) -> String {
        let mut v = Vec::new();
        f.write(&mut v, "shardId-000000000001", r.as_ref()).unwrap();
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn default_line_is_key_tab_escaped_data() {
        let f = Formatter::new(
            vec![Field::PartitionKey, Field::Data],
            DataEncoding::Escape,
            OutputFormat::Tsv,
            "s",
            Some(3),
        );
        assert_eq!(
            line(&f, &rec(b"a\tb\nc\\d\re", "k\t1")),
            "k\\t1\ta\\tb\\nc\\\\d\\re\n"
        );
        assert_eq!(
            line(&f, &rec("plain ünïcode".as_bytes(), "k")),
            "k\tplain ünïcode\n"
        );
        // Carriage returns before and after the other special bytes, and long plain runs.
        let long = "x".repeat(1000);
        let data = format!("\r{long}\\{long}\t\r\n{long}\r");
        let want = format!("k\t\\r{long}\\\\{long}\\t\\r\\n{long}\\r\n");
        assert_eq!(line(&f, &rec(data.as_bytes(), "k")), want);
    }

    #[test]
    fn every_field_in_chosen_order() {
        let f = Formatter::new(
            parse_fields("iteration,stream,shard_id,arrival_timestamp,arrival_millis,sub_sequence_number,data").unwrap(),
            DataEncoding::Hex,
            OutputFormat::Tsv,
            "logs",
            Some(7),
        );
        assert_eq!(
            line(&f, &rec(&[0, 255, 16], "k")),
            "7\tlogs\tshardId-000000000001\t2023-11-14T22:13:20.123Z\t1700000000123\t0\t00ff10\n"
        );
    }

    #[test]
    fn base64_and_unknown_field() {
        let f = Formatter::new(
            vec![Field::Data],
            DataEncoding::Base64,
            OutputFormat::Tsv,
            "s",
            None,
        );
        assert_eq!(line(&f, &rec(b"hello", "k")), "aGVsbG8=\n");
        let e = parse_fields("data,colour").unwrap_err();
        assert!(e.contains("colour") && e.contains("partition_key"), "{e}");
    }

    /// Reads one typed-bytes item (the types `write_typed` produces).
    fn read_typed(b: &mut &[u8]) -> String {
        let code = b[0];
        *b = &b[1..];
        let take = |b: &mut &[u8], n: usize| {
            let (x, rest) = b.split_at(n);
            *b = rest;
            x.to_vec()
        };
        match code {
            0 | 7 => {
                let n = u32::from_be_bytes(take(b, 4).try_into().unwrap()) as usize;
                let v = take(b, n);
                if code == 0 {
                    format!("bytes{v:?}")
                } else {
                    String::from_utf8(v).unwrap()
                }
            }
            4 => i64::from_be_bytes(take(b, 8).try_into().unwrap()).to_string(),
            8 => {
                let n = u32::from_be_bytes(take(b, 4).try_into().unwrap());
                let items: Vec<String> = (0..n).map(|_| read_typed(b)).collect();
                format!("[{}]", items.join(","))
            }
            c => panic!("unexpected type code {c}"),
        }
    }

    #[test]
    fn typedbytes_pairs_keep_binary_data_as_it_is() {
        let data = [b'a', b'\n', 0, 255, b'\t'];
        let mut v = Vec::new();
        let pair = Formatter::new(
            vec![Field::PartitionKey, Field::Data],
            DataEncoding::Escape,
            OutputFormat::Typedbytes,
            "s",
            Some(3),
        );
        pair.write(&mut v, "shardId-1", rec(&data, "ключ").as_ref())
            .unwrap();
        pair.write(&mut v, "shardId-1", rec(b"", "k2").as_ref())
            .unwrap();
        let more = Formatter::new(
            parse_fields("shard_id,arrival_millis,iteration,data").unwrap(),
            DataEncoding::Escape,
            OutputFormat::Typedbytes,
            "s",
            None,
        );
        more.write(&mut v, "shardId-1", rec(b"x", "k").as_ref())
            .unwrap();
        let mut b = v.as_slice();
        let got: Vec<String> = (0..6).map(|_| read_typed(&mut b)).collect();
        assert!(b.is_empty(), "nothing after the last item");
        assert_eq!(
            got,
            [
                "ключ".to_string(),
                "bytes[97, 10, 0, 255, 9]".into(),
                "k2".into(),
                "bytes[]".into(),
                "shardId-1".into(),
                "[1700000000123,-1,bytes[120]]".into(),
            ]
        );
    }

    #[test]
    fn jsonl_marks_binary_data() {
        let f = Formatter::new(
            vec![Field::PartitionKey, Field::Data],
            DataEncoding::Escape,
            OutputFormat::Jsonl,
            "s",
            None,
        );
        let v: serde_json::Value =
            serde_json::from_str(&line(&f, &rec(&[0xff, 0xfe], "k"))).unwrap();
        assert_eq!(v["data"], "//4=");
        assert_eq!(v["data_encoding"], "base64");
        let v: serde_json::Value = serde_json::from_str(&line(&f, &rec(b"a\nb", "k"))).unwrap();
        assert_eq!(v["data"], "a\nb");
        assert!(v.get("data_encoding").is_none());
    }

    #[test]
    fn jsonl_keys_follow_the_fields_order() {
        let f = Formatter::new(
            vec![Field::Data, Field::ShardId, Field::PartitionKey],
            DataEncoding::Escape,
            OutputFormat::Jsonl,
            "s",
            None,
        );
        assert_eq!(
            line(&f, &rec(b"x", "k")),
            "{\"data\":\"x\",\"shard_id\":\"shardId-000000000001\",\"partition_key\":\"k\"}\n"
        );
        assert!(line(&f, &rec(&[0xff], "k")).starts_with("{\"data_encoding\":\"base64\",\"data\":"));
    }
}
