//! The GetRecords answer decoder: the `Records` array of the service's JSON
//! parsed as it arrives, each record's base64 data decoded into one buffer
//! that the page's records slice, and the rest of the answer kept for the
//! SDK. Pure: bytes in, records out.

use crate::records::{Builder, Records};

/// A GetRecords answer: its records, and the answer with `"Records":[]`.
#[derive(Debug)]
pub struct Decoded {
    pub records: Records,
    pub rest: Vec<u8>,
}

/// Why an answer was not decoded; `body` is the answer as sent when the SDK
/// can still have it (nothing of `Records` was consumed yet).
#[derive(Debug)]
pub struct Undecoded {
    pub body: Option<Vec<u8>>,
    pub why: &'static str,
}

/// Decodes a whole answer (tests and fuzzing; the connector feeds chunks).
pub fn decode(body: Vec<u8>) -> Result<Decoded, Undecoded> {
    let mut d = Decoder::new(Some(body.len()));
    d.feed(&body);
    d.finish()
}

/// Decodes a GetRecords answer as it arrives, so the whole answer (base64,
/// ~1.4× its data) is never held: each record is parsed once it is complete
/// and its data decoded at once onto one buffer that all the page's records
/// slice. Only a partial record waits for the next chunk.
pub struct Decoder {
    /// Received, not yet parsed: empty, or the start of a unit.
    pending: Vec<u8>,
    /// Parse `pending` again once it holds this many bytes (a large record
    /// arriving in small chunks is not re-scanned at every chunk).
    retry_at: usize,
    /// `pending` was already parsed once at a likely end of its unit.
    guessed: bool,
    out: Out,
    failed: Option<Failed>,
}

enum Failed {
    /// Nothing of `Records` consumed: the answer as sent, for the SDK.
    Raw(Vec<u8>, &'static str),
    Broken(&'static str),
}

struct Out {
    state: State,
    saw_records: bool,
    /// The answer without its records; verbatim until `Records` starts.
    rest: Vec<u8>,
    /// The answer's length, if known (to size the page's buffers).
    size: usize,
    records: Builder,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum State {
    Start,
    Member,
    FirstRecord,
    Record,
    AfterRecords,
    End,
}

impl Decoder {
    pub fn new(size: Option<usize>) -> Decoder {
        let size = size.unwrap_or(0).min(64 << 20);
        Decoder {
            pending: Vec::new(),
            retry_at: 0,
            guessed: false,
            out: Out {
                state: State::Start,
                saw_records: false,
                rest: Vec::with_capacity(256),
                size,
                records: Builder::default(),
            },
            failed: None,
        }
    }

    pub fn feed(&mut self, mut chunk: &[u8]) {
        // A unit cut by the last chunk's end waits in `pending`. Copy only up
        // to where it likely ends (the next `}` and the separator after it: a
        // record's end; never inside base64), parse it there, and parse the
        // rest of the chunk where it lies — not the whole chunk copied behind
        // it (5 % of the CPU at 10 KB records, which most chunks cut). A wrong
        // guess (a `}` inside a key) is tried once; then `retry_at` doubles,
        // as for small chunks.
        while !chunk.is_empty() {
            match &mut self.failed {
                Some(Failed::Raw(raw, _)) => return raw.extend_from_slice(chunk),
                Some(Failed::Broken(_)) => return,
                None => {}
            }
            if self.pending.is_empty() {
                // The common case: parse the chunk where it is, keep its tail.
                return self.take_in(chunk);
            }
            let end = memchr::memchr(b'}', chunk).filter(|i| i + 2 <= chunk.len());
            let n = end.map_or(chunk.len(), |i| i + 2);
            self.pending.extend_from_slice(&chunk[..n]);
            chunk = &chunk[n..];
            let guess = end.is_some() && !self.guessed;
            self.guessed |= guess;
            if guess || self.pending.len() >= self.retry_at {
                let pending = std::mem::take(&mut self.pending);
                self.take_in(&pending);
            }
        }
    }

    /// Parses `b` (with `pending` empty); what is left waits in `pending`.
    fn take_in(&mut self, b: &[u8]) {
        let (used, r) = parse(b, &mut self.out);
        self.settle(r, &b[used..]);
        if self.failed.is_none() {
            self.pending.extend_from_slice(&b[used..]);
            self.retry_at = 2 * self.pending.len();
            if used > 0 {
                self.guessed = false; // a new unit waits
            }
        }
    }

    /// After a parse: a real error ends the decoding (`left` is what was not parsed).
    fn settle(&mut self, r: Result<(), &'static str>, left: &[u8]) {
        match r {
            Err(why) if why != MORE => self.fail(why, left),
            _ => {}
        }
    }

    fn fail(&mut self, why: &'static str, left: &[u8]) {
        self.failed = Some(if self.out.verbatim() {
            let mut raw = std::mem::take(&mut self.out.rest);
            raw.extend_from_slice(left);
            Failed::Raw(raw, why)
        } else {
            Failed::Broken(why)
        });
    }

    pub fn finish(mut self) -> Result<Decoded, Undecoded> {
        if self.failed.is_none() && !self.pending.is_empty() {
            // What waited for more bytes gets its last chance; anything still
            // left after it is an answer cut short.
            let pending = std::mem::take(&mut self.pending);
            self.take_in(&pending);
        }
        let done = self.out.state == State::End && self.out.saw_records;
        if self.failed.is_none() && (!done || !self.pending.is_empty()) {
            let left = std::mem::take(&mut self.pending);
            let why = if self.out.state != State::End {
                MORE
            } else if !self.out.saw_records {
                "no Records"
            } else {
                "bytes after the answer"
            };
            self.fail(why, &left);
        }
        match self.failed {
            Some(Failed::Raw(raw, why)) => {
                return Err(Undecoded {
                    body: Some(raw),
                    why,
                })
            }
            Some(Failed::Broken(why)) => return Err(Undecoded { body: None, why }),
            None => {}
        }
        Ok(Decoded {
            records: self.out.records.finish(),
            rest: self.out.rest,
        })
    }
}

impl Out {
    /// Everything consumed so far is in `rest` as it was sent.
    fn verbatim(&self) -> bool {
        !self.saw_records
    }
}

/// Parses whole units (a member, a record) from `b`; how many bytes it used,
/// and `Err(MORE)` when the next unit is not complete yet. A unit changes
/// `out` only once it parsed whole, so it can be parsed again with more bytes.
fn parse(b: &[u8], out: &mut Out) -> (usize, Result<(), &'static str>) {
    let mut c = Cursor { b, i: 0 };
    loop {
        let mark = c.i;
        let r = unit(&mut c, out, mark);
        match r {
            Ok(true) => continue,
            Ok(false) => return (c.i, Ok(())),
            Err(e) => return (mark, Err(e)),
        }
    }
}

/// One unit; `Ok(false)` when there is nothing more to parse.
fn unit(c: &mut Cursor, out: &mut Out, mark: usize) -> Result<bool, &'static str> {
    c.ws();
    match out.state {
        State::Start => {
            c.eat(b'{')?;
            c.ws();
            if c.peek().ok_or(MORE)? == b'}' {
                return Err("no Records");
            }
            out.rest.extend_from_slice(&c.b[mark..c.i]);
            out.state = State::Member;
        }
        State::Member => {
            let key = c.string()?;
            c.ws();
            c.eat(b':')?;
            c.ws();
            if key.raw == b"Records" {
                if out.saw_records {
                    return Err("two Records keys");
                }
                let at = c.i;
                c.eat(b'[')?;
                out.saw_records = true;
                out.rest.extend_from_slice(&c.b[mark..at]);
                out.rest.extend_from_slice(b"[]");
                out.state = State::FirstRecord;
            } else {
                c.skip_value(0)?;
                c.ws();
                out.state = separator(c, b'}', State::Member, State::End)?;
                out.rest.extend_from_slice(&c.b[mark..c.i]);
            }
        }
        State::FirstRecord => match c.peek().ok_or(MORE)? {
            b']' => {
                c.i += 1;
                out.state = State::AfterRecords;
            }
            _ => out.state = State::Record,
        },
        State::Record => {
            let f = record(c)?;
            c.ws();
            let next = separator(c, b']', State::Record, State::AfterRecords)?;
            // Complete: decode its data now.
            let b = &mut out.records;
            if b.is_empty() {
                reserve(b, out.size, c.i - mark, &f);
            }
            let seq = f.sequence_number.append_to(&mut b.text)?;
            let key = match &f.partition_key {
                Some(k) => k.append_to(&mut b.text)?,
                None => seq.end..seq.end,
            };
            let start = b.data.len();
            let decoded = if f.data.escaped {
                base64_simd::STANDARD.decode_append(f.data.text()?, &mut b.data)
            } else {
                base64_simd::STANDARD.decode_append(f.data.raw, &mut b.data)
            };
            decoded.map_err(|_| "Data is not base64")?;
            let data = start..b.data.len();
            b.push_parts(seq, key, data, None, f.arrival_ms)
                .map_err(|_| "a record beyond the service's limits")?;
            out.state = next;
        }
        State::AfterRecords => {
            let at = c.i;
            out.state = separator(c, b'}', State::Member, State::End)?;
            out.rest.extend_from_slice(&c.b[at..c.i]);
        }
        State::End => {
            if c.i < c.b.len() {
                return Err("bytes after the answer");
            }
            // Trailing white space, kept so that `rest` stays verbatim.
            out.rest.extend_from_slice(&c.b[mark..c.i]);
            return Ok(false);
        }
    }
    if c.i == c.b.len() {
        return Ok(false);
    }
    Ok(true)
}

/// Sizes the page's buffers from its first record (`json` bytes of the
/// answer's `size`), as if every record were like it: records of one stream
/// are mostly alike, and a wrong guess only costs a reallocation. Reserving
/// for the whole answer instead (base64 is 4/3 of the data) doubled the
/// buffer for small records, whose answer is mostly sequence numbers, keys
/// and time stamps — memory that a reused heap makes resident.
fn reserve(b: &mut Builder, size: usize, json: usize, first: &Fields) {
    let records = size / json.max(1) + 1;
    let data = first.data.raw.len() / 4 * 3 + 3;
    let text =
        first.sequence_number.raw.len() + first.partition_key.as_ref().map_or(0, |k| k.raw.len());
    b.reserve(records, records * data, records * text);
}

/// `,` (then `again`) or `close` (then `closed`).
fn separator(
    c: &mut Cursor,
    close: u8,
    again: State,
    closed: State,
) -> Result<State, &'static str> {
    match c.next()? {
        b',' => Ok(again),
        x if x == close => Ok(closed),
        _ => Err("expected , or a closing bracket"),
    }
}

/// A record's strings as they are in the answer (data still base64).
struct Fields<'a> {
    sequence_number: Str<'a>,
    partition_key: Option<Str<'a>>,
    data: Str<'a>,
    arrival_ms: i64,
}

fn record<'a>(c: &mut Cursor<'a>) -> Result<Fields<'a>, &'static str> {
    let (mut seq, mut key, mut data, mut arrival) = (None, None, None, None);
    c.eat(b'{')?;
    c.ws();
    if c.peek().ok_or(MORE)? == b'}' {
        return Err("a record without fields");
    }
    loop {
        c.ws();
        let name = c.string()?;
        c.ws();
        c.eat(b':')?;
        c.ws();
        if c.word(b"null")? {
            // The SDK reads a null member as absent (and the last of
            // repeated members wins).
            match name.raw {
                b"SequenceNumber" => seq = None,
                b"PartitionKey" => key = None,
                b"Data" => data = None,
                b"ApproximateArrivalTimestamp" => arrival = None,
                _ => {}
            }
        } else {
            match name.raw {
                b"SequenceNumber" => seq = Some(c.string()?),
                b"PartitionKey" => key = Some(c.string()?),
                b"Data" => data = Some(c.string()?),
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
    Ok(Fields {
        sequence_number: seq.ok_or("a record without SequenceNumber")?,
        data: data.ok_or("a record without Data")?,
        partition_key: key,
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
    /// Appends the string's text to `to`; where it is there.
    fn append_to(&self, to: &mut String) -> Result<std::ops::Range<usize>, &'static str> {
        let at = to.len();
        if self.escaped {
            to.push_str(&self.text()?);
        } else {
            to.push_str(std::str::from_utf8(self.raw).map_err(|_| "a string is not UTF-8")?);
        }
        Ok(at..to.len())
    }

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

/// The input ends inside a unit: parse it again with more bytes (and, at the
/// end of the answer, the answer is cut short).
const MORE: &str = "the answer ends early";

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Result<u8, &'static str> {
        let c = self.peek().ok_or(MORE)?;
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
            let at = memchr::memchr2(b'"', b'\\', &self.b[self.i..]).ok_or(MORE)?;
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
                return Err(MORE);
            }
        }
    }

    /// Consumes `w` if it is next; `MORE` if the input ends inside it.
    fn word(&mut self, w: &[u8]) -> Result<bool, &'static str> {
        let left = &self.b[self.i..];
        if left.starts_with(w) {
            self.i += w.len();
            Ok(true)
        } else if left.len() < w.len() && w.starts_with(left) {
            Err(MORE)
        } else {
            Ok(false)
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
        if self.i == self.b.len() {
            // It may go on in the next chunk (a number never ends an answer).
            return Err(MORE);
        }
        Ok(&self.b[start..self.i])
    }

    /// Skips any JSON value (checked only as far as finding its end).
    fn skip_value(&mut self, depth: usize) -> Result<(), &'static str> {
        if depth > 64 {
            return Err("nested too deep");
        }
        match self.peek().ok_or(MORE)? {
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
                    if self.word(word)? {
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
        let r = &d.records.get(0);
        assert_eq!(r.sequence_number, "4960");
        assert_eq!(r.data, b"hello\tworld\n");
        assert_eq!(r.partition_key, "k1");
        assert_eq!(r.arrival_ms, 1_700_000_000_500);
        let r = &d.records.get(1);
        assert_eq!(r.partition_key, "caf\u{e9} \"quoted\"");
        assert_eq!(r.data, b"");
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
        assert_eq!(d.records.get(0).data, &[0x3f, 0xff]);
        assert_eq!(d.records.get(0).partition_key, "");
        assert_eq!(d.records.get(0).arrival_ms, 0);
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
        // Back to back in one buffer.
        let base = d.records.get(0).data.as_ptr() as usize;
        assert_eq!(d.records.get(99).data.as_ptr() as usize, base + 99 * 1000);
    }

    #[test]
    fn anything_unexpected_is_refused() {
        // Refused before any record was consumed: the SDK gets the answer as sent.
        for bad in [
            &b""[..],
            b"[]",
            b"{}",
            b"{\"NextShardIterator\":\"x\"}",
            b" {\"NextShardIterator\":\"x\"} x",
            b"{\"X\":nul}",
            b"{\"X\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]], \"Records\":[]}",
        ] {
            for piece in [1, 3, bad.len().max(1)] {
                let e = in_pieces(bad, piece).unwrap_err();
                assert_eq!(e.body.as_deref(), Some(bad), "{} ({piece})", e.why);
            }
        }
        // Inside Records the answer is consumed as it arrives: an error.
        for bad in [
            &b"{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"!!\"}]}"[..],
            b"{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"QQ\"}]}",
            b"{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"QQ==\"},{\"SequenceNumber\":\"2\",\"Data\":\"Q!==\"}]}",
            b"{\"Records\":[{\"SequenceNumber\":\"1\"}]}",
            b"{\"Records\":[{\"Data\":\"QQ==\"}]}",
            b"{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"QQ==\"}]",
            b"{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"QQ==\"}]} x",
            b"{\"Records\":[],\"Records\":[]}",
            b"{\"Records\":[{\"SequenceNumber\":\"1\",\"Data\":\"QQ==\",\"ApproximateArrivalTimestamp\":\"x\"}]}",
            b"{\"Records\":[{\"SequenceNumber\":\"1\\",
            b"{\"Records\":[], \"X\": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}",
        ] {
            for piece in [1, 3, bad.len()] {
                let e = in_pieces(bad, piece).unwrap_err();
                assert!(e.body.is_none(), "{} ({piece}): {e:?}", String::from_utf8_lossy(bad));
            }
        }
        let ok = br#"{"Records":[{"SequenceNumber":"1","Data":"QQ=="}]}"#;
        assert_eq!(&decode(ok.to_vec()).unwrap().records.get(0).data, b"A");
    }

    fn in_pieces(body: &[u8], piece: usize) -> Result<Decoded, Undecoded> {
        let mut d = Decoder::new(Some(body.len()));
        body.chunks(piece).for_each(|c| d.feed(c));
        d.finish()
    }

    /// Any cut of the answer into chunks decodes to the same records and
    /// rest: compact (a record's end guessed right) or pretty, with `}` inside
    /// records (guessed wrong).
    #[test]
    fn chunks_of_any_size_decode_alike() {
        let recs: Vec<_> = (0..50)
            .map(|i| {
                json!({"SequenceNumber": format!("{i:03}"), "ApproximateArrivalTimestamp": 1.7e9 + i as f64,
                       "Data": b64(&vec![i as u8; i * 37]), "PartitionKey": format!("k\t{i}}},"), "X": [i, {"y": null}]})
            })
            .collect();
        let body = json!({"MillisBehindLatest": 7, "Records": recs, "NextShardIterator": "A/B=="});
        for text in [
            serde_json::to_vec(&body).unwrap(),
            serde_json::to_vec_pretty(&body).unwrap(),
        ] {
            let whole = decode(text.clone()).unwrap();
            assert_eq!(whole.records.len(), 50);
            assert_eq!(whole.records.get(3).partition_key, "k\t3},");
            for piece in [1, 2, 5, 64, 1000, 4096] {
                let d = in_pieces(&text, piece).unwrap();
                assert_eq!(d.records, whole.records, "{piece}");
                assert_eq!(d.rest, whole.rest, "{piece}");
            }
        }
    }
}
