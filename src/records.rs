//! A page of records, stored compactly.
//!
//! Why: a page is up to 10,000 records, and the reader holds about one page
//! per shard. As a `Vec` of owned records (two `String`s each) a page of
//! 100-byte records took twice its data again in metadata and allocations
//! (BENCHMARKS.md). Here a page is three allocations whatever its size: every
//! record's data back to back, every sequence number and partition key back to
//! back, and one fixed 32-byte entry per record that points into them.
//! Records are read as [`RecordRef`] views; dropping records (a filter, the
//! end of a range) only touches the entries.

use bytes::Bytes;
use std::ops::Range;

/// One Kinesis record as the reader passes it on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub sequence_number: String,
    /// For a sub-record of a KPL aggregate: its index in the aggregate.
    pub sub_sequence_number: Option<u64>,
    pub partition_key: String,
    pub data: Bytes,
    /// `ApproximateArrivalTimestamp` in epoch milliseconds.
    pub arrival_ms: i64,
}

/// One record of a [`Records`] page, borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub sequence_number: &'a str,
    /// For a sub-record of a KPL aggregate: its index in the aggregate.
    pub sub_sequence_number: Option<u64>,
    pub partition_key: &'a str,
    pub data: &'a [u8],
    /// `ApproximateArrivalTimestamp` in epoch milliseconds.
    pub arrival_ms: i64,
}

impl RecordRef<'_> {
    pub fn to_owned(&self) -> Record {
        Record {
            sequence_number: self.sequence_number.to_string(),
            sub_sequence_number: self.sub_sequence_number,
            partition_key: self.partition_key.to_string(),
            data: Bytes::copy_from_slice(self.data),
            arrival_ms: self.arrival_ms,
        }
    }
}

impl Record {
    pub fn as_ref(&self) -> RecordRef<'_> {
        RecordRef {
            sequence_number: &self.sequence_number,
            sub_sequence_number: self.sub_sequence_number,
            partition_key: &self.partition_key,
            data: &self.data,
            arrival_ms: self.arrival_ms,
        }
    }
}

/// Where one record's parts are. Lengths of text are 16 bits: a sequence
/// number has at most 129 digits and a partition key at most 256 characters.
#[derive(Clone, Copy, Debug)]
struct Entry {
    data: u32,
    data_len: u32,
    seq: u32,
    key: u32,
    seq_len: u16,
    key_len: u16,
    /// The sub-sequence number, or `NO_SUB`.
    sub: u32,
    arrival_ms: i64,
}

const NO_SUB: u32 = u32::MAX;

/// A page's records (see the module doc).
#[derive(Debug, Default)]
pub struct Records {
    data: Bytes,
    /// A `String`, so that reading a record's text checks only that its
    /// range falls on character boundaries: UTF-8 is checked once, when the
    /// text is added (checking it at every read cost 7 % of the reader's CPU).
    text: String,
    entries: Vec<Entry>,
}

impl Records {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Record `i`; panics if there is none.
    pub fn get(&self, i: usize) -> RecordRef<'_> {
        let e = &self.entries[i];
        let text = |at: u32, len: u16| &self.text[at as usize..at as usize + len as usize];
        RecordRef {
            sequence_number: text(e.seq, e.seq_len),
            sub_sequence_number: (e.sub != NO_SUB).then_some(e.sub as u64),
            partition_key: text(e.key, e.key_len),
            data: &self.data[e.data as usize..(e.data + e.data_len) as usize],
            arrival_ms: e.arrival_ms,
        }
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = RecordRef<'_>> + ExactSizeIterator {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Record `i`'s data as a slice of the page's buffer.
    pub fn data_bytes(&self, i: usize) -> Bytes {
        let e = &self.entries[i];
        self.data
            .slice(e.data as usize..(e.data + e.data_len) as usize)
    }

    /// The data bytes of all records.
    pub fn data_len(&self) -> u64 {
        self.entries.iter().map(|e| e.data_len as u64).sum()
    }

    /// Keeps record `i` if `keep[i]` is true; records past `keep`'s end go.
    pub fn keep(&mut self, keep: &[bool]) {
        if keep.len() == self.len() && keep.iter().all(|k| *k) {
            return; // the usual page: all of it
        }
        let mut i = 0;
        self.entries.retain(|_| {
            i += 1;
            keep.get(i - 1).copied().unwrap_or(false)
        });
    }

    /// Owned copies (tests and the rare single record).
    pub fn to_vec(&self) -> Vec<Record> {
        self.iter().map(|r| r.to_owned()).collect()
    }
}

impl From<Vec<Record>> for Records {
    fn from(records: Vec<Record>) -> Records {
        let data = records.iter().map(|r| r.data.len()).sum();
        let mut b = Builder::with_capacity(records.len(), data);
        for r in &records {
            b.push(r.as_ref())
                .expect("a record within the service's limits");
        }
        b.finish()
    }
}

impl PartialEq for Records {
    fn eq(&self, other: &Records) -> bool {
        self.iter().eq(other.iter())
    }
}

/// Builds a [`Records`] page. A decoder may write a record's data straight
/// into [`Builder::data`] and its strings onto [`Builder::text`], then
/// [`Builder::push_parts`] the ranges.
#[derive(Default)]
pub struct Builder {
    pub data: Vec<u8>,
    pub text: String,
    entries: Vec<Entry>,
}

/// A record that does not fit an entry: a page over 4 GiB, or a sequence
/// number or partition key over 64 KiB (the service allows 129 digits and 256
/// characters).
#[derive(Debug, PartialEq, Eq)]
pub struct TooLarge;

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a record beyond the service's limits (a sequence number or partition key over 64 KiB, or a page over 4 GiB)")
    }
}

impl std::error::Error for TooLarge {}

impl Builder {
    pub fn with_capacity(records: usize, data: usize) -> Builder {
        Builder {
            data: Vec::with_capacity(data),
            text: String::with_capacity(records * 32),
            entries: Vec::with_capacity(records),
        }
    }

    /// No record yet (the decoder sizes the page at its first).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Room for `records` more records with `data` and `text` bytes in all.
    pub fn reserve(&mut self, records: usize, data: usize, text: usize) {
        self.entries.reserve(records);
        self.data.reserve(data);
        self.text.reserve(text);
    }

    /// Appends a copy of `r`.
    pub fn push(&mut self, r: RecordRef<'_>) -> Result<(), TooLarge> {
        let seq = self.append_text(r.sequence_number);
        let key = self.append_text(r.partition_key);
        let at = self.data.len();
        self.data.extend_from_slice(r.data);
        let data = at..self.data.len();
        self.push_parts(seq, key, data, r.sub_sequence_number, r.arrival_ms)
    }

    /// Appends `s` to the text; its range there.
    pub fn append_text(&mut self, s: &str) -> Range<usize> {
        let at = self.text.len();
        self.text.push_str(s);
        at..self.text.len()
    }

    /// Adds a record whose parts are already in `text` and `data`. The ranges
    /// may be shared with other records (the sub-records of an aggregate
    /// share its sequence number). Ranges of text must fall on character
    /// boundaries (as those of [`Builder::append_text`] do).
    pub fn push_parts(
        &mut self,
        seq: Range<usize>,
        key: Range<usize>,
        data: Range<usize>,
        sub: Option<u64>,
        arrival_ms: i64,
    ) -> Result<(), TooLarge> {
        for r in [&seq, &key] {
            assert!(
                self.text.get(r.clone()).is_some(),
                "text range {r:?} is not text"
            );
        }
        assert!(data.end <= self.data.len() && data.start <= data.end);
        let small = |n: usize| u16::try_from(n).map_err(|_| TooLarge);
        let offset = |n: usize| u32::try_from(n).map_err(|_| TooLarge);
        let sub = match sub {
            None => NO_SUB,
            Some(s) => u32::try_from(s)
                .ok()
                .filter(|s| *s != NO_SUB)
                .ok_or(TooLarge)?,
        };
        self.entries.push(Entry {
            data: offset(data.start)?,
            data_len: offset(data.len())?,
            seq: offset(seq.start)?,
            key: offset(key.start)?,
            seq_len: small(seq.len())?,
            key_len: small(key.len())?,
            sub,
            arrival_ms,
        });
        Ok(())
    }

    pub fn finish(mut self) -> Records {
        // Grown by doubling: give back the unused tail (a shrink in place).
        self.text.shrink_to_fit();
        self.entries.shrink_to_fit();
        Records {
            data: Bytes::from(self.data),
            text: self.text,
            entries: self.entries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: &str, sub: Option<u64>, key: &str, data: &[u8], ms: i64) -> Record {
        Record {
            sequence_number: seq.into(),
            sub_sequence_number: sub,
            partition_key: key.into(),
            data: Bytes::copy_from_slice(data),
            arrival_ms: ms,
        }
    }

    #[test]
    fn every_part_of_every_record_comes_back() {
        let records = vec![
            rec(
                "49590338271490256608559692538361571095921575989136588898",
                None,
                "k-1",
                b"one",
                1,
            ),
            rec("2", Some(0), "", b"", -5),
            rec("2", Some(7), "ключ\u{1F600}", &[0, 0xff, b'\t'], i64::MAX),
        ];
        let page = Records::from(records.clone());
        assert_eq!(page.len(), 3);
        assert_eq!(page.to_vec(), records);
        assert_eq!(page.data_len(), 6);
        assert_eq!(page.get(2).partition_key, "ключ\u{1F600}");
        assert_eq!(
            page.iter().next_back().unwrap().sub_sequence_number,
            Some(7)
        );
    }

    #[test]
    fn keep_drops_the_unwanted_and_everything_past_the_mask() {
        let records: Vec<Record> = (0..6)
            .map(|i| rec(&i.to_string(), None, "k", &[i as u8; 3], i))
            .collect();
        let mut page = Records::from(records.clone());
        page.keep(&[false, true, true, false, true]);
        let kept: Vec<String> = page.iter().map(|r| r.sequence_number.into()).collect();
        assert_eq!(kept, ["1", "2", "4"]);
        assert_eq!(page.get(2).data, &[4u8; 3]);
        assert_eq!(page.data_len(), 9);
    }

    #[test]
    fn shared_text_and_limits() {
        let mut b = Builder::default();
        let seq = b.append_text("17");
        for (i, key) in ["a", "b"].into_iter().enumerate() {
            let key = b.append_text(key);
            b.data.push(i as u8);
            let d = b.data.len() - 1..b.data.len();
            b.push_parts(seq.clone(), key, d, Some(i as u64), 9)
                .unwrap();
        }
        let long = b.append_text(&"k".repeat(70_000));
        assert_eq!(
            b.push_parts(seq.clone(), long, 0..0, None, 0),
            Err(TooLarge)
        );
        assert_eq!(
            b.push_parts(seq.clone(), 0..0, 0..0, Some(1 << 40), 0),
            Err(TooLarge)
        );
        let page = b.finish();
        assert_eq!(page.len(), 2);
        assert_eq!(page.get(1).sequence_number, "17");
        assert_eq!(page.get(1).partition_key, "b");
        assert_eq!(page.get(1).data, &[1]);
        assert_eq!(page.get(0).sub_sequence_number, Some(0));
    }

    #[test]
    fn an_entry_is_32_bytes() {
        // The point of this type: metadata per record is small and fixed.
        assert_eq!(std::mem::size_of::<Entry>(), 32);
    }
}
