//! De-aggregating KPL (Kinesis Producer Library) records.
//!
//! An aggregated record is the magic `F3 89 9A C2`, a protobuf
//! `AggregatedRecord`, and the MD5 of the protobuf bytes. Its sub-records
//! share the outer sequence number and are numbered 0, 1, 2… (the
//! sub-sequence number). A record that fails any check — magic, length, MD5,
//! protobuf, table index — is passed on as a plain record, as the KCL does.

use crate::records::{Builder, Record, Records};
use bytes::Bytes;

pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const MD5_LEN: usize = 16;

/// The KPL's protobuf messages (`messages.proto`), declared for prost.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AggregatedRecord {
    #[prost(string, repeated, tag = "1")]
    pub partition_key_table: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub explicit_hash_key_table: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    pub records: Vec<SubRecord>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SubRecord {
    #[prost(uint64, required, tag = "1")]
    pub partition_key_index: u64,
    #[prost(uint64, optional, tag = "2")]
    pub explicit_hash_key_index: Option<u64>,
    #[prost(bytes = "bytes", required, tag = "3")]
    pub data: Bytes,
    #[prost(message, repeated, tag = "4")]
    pub tags: Vec<Tag>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Tag {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

/// The aggregate in `data` if it is a valid one: magic, MD5, protobuf, and
/// every table index in range. Sub-record data are slices of `data`.
fn parse(data: Bytes) -> Option<AggregatedRecord> {
    use md5::{Digest, Md5};
    use prost::Message;
    let d = &data;
    if d.len() < MAGIC.len() + MD5_LEN || d[..4] != MAGIC {
        return None;
    }
    let body = d.slice(4..d.len() - MD5_LEN);
    if Md5::digest(&body)[..] != d[d.len() - MD5_LEN..] {
        log::debug!("a record with the KPL magic but a wrong MD5; passed on as is");
        return None;
    }
    let agg = AggregatedRecord::decode(body).ok()?;
    let (keys, hash_keys) = (
        agg.partition_key_table.len() as u64,
        agg.explicit_hash_key_table.len() as u64,
    );
    let indices_ok = agg.records.iter().all(|sub| {
        sub.partition_key_index < keys && sub.explicit_hash_key_index.is_none_or(|e| e < hash_keys)
    });
    // A key no real partition key comes near (256 characters) could not be
    // stored in a page.
    let keys_ok = agg.partition_key_table.iter().all(|k| k.len() <= 4096);
    (indices_ok && keys_ok).then_some(agg)
}

/// The sub-records of `r` if it is a valid aggregate, each with the outer
/// record's sequence number and arrival time; `None` for a plain record.
pub fn deaggregate(r: &Record) -> Option<Vec<Record>> {
    parse(r.data.clone())?;
    Some(expand(Records::from(vec![r.clone()])).to_vec())
}

/// Builds an aggregated record as the KPL does, from (partition key,
/// explicit hash key, data) per sub-record.
pub fn aggregate(subs: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    use md5::{Digest, Md5};
    use prost::Message;
    let mut agg = AggregatedRecord::default();
    let index = |table: &mut Vec<String>, v: &str| match table.iter().position(|x| x == v) {
        Some(i) => i as u64,
        None => {
            table.push(v.to_string());
            table.len() as u64 - 1
        }
    };
    for (pk, ehk, data) in subs {
        let partition_key_index = index(&mut agg.partition_key_table, pk);
        let explicit_hash_key_index = ehk.map(|e| index(&mut agg.explicit_hash_key_table, e));
        agg.records.push(SubRecord {
            partition_key_index,
            explicit_hash_key_index,
            data: Bytes::copy_from_slice(data),
            tags: Vec::new(),
        });
    }
    let body = agg.encode_to_vec();
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&body);
    out.extend_from_slice(&Md5::digest(&body));
    out
}

/// Replaces every valid aggregate in `records` by its sub-records.
pub fn expand(records: Records) -> Records {
    if !records.iter().any(|r| r.data.starts_with(&MAGIC)) {
        return records;
    }
    let mut out = Builder::with_capacity(records.len(), records.data_len() as usize);
    for (i, r) in records.iter().enumerate() {
        let Some(agg) = parse(records.data_bytes(i)) else {
            out.push(r).expect("a record of a page fits a page");
            continue;
        };
        // The sub-records share the outer record's sequence number.
        let seq = out.append_text(r.sequence_number);
        for (n, sub) in agg.records.iter().enumerate() {
            let key = out.append_text(&agg.partition_key_table[sub.partition_key_index as usize]);
            let at = out.data.len();
            out.data.extend_from_slice(&sub.data);
            let data = at..out.data.len();
            out.push_parts(seq.clone(), key, data, Some(n as u64), r.arrival_ms)
                .expect("an aggregate's parts fit a page");
        }
    }
    out.finish()
}

#[cfg(test)]
pub mod tests {
    use super::*;

    // A protobuf writer built from the wire format itself (not from the prost
    // declarations above), so the parser is checked against the format.
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn field_bytes(tag: u64, b: &[u8], out: &mut Vec<u8>) {
        varint(tag << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }
    fn field_varint(tag: u64, v: u64, out: &mut Vec<u8>) {
        varint(tag << 3, out);
        varint(v, out);
    }

    /// An aggregated record as the KPL writes it: partition keys, explicit
    /// hash keys, and (pk index, ehk index, data) per sub-record.
    pub fn aggregate_wire(
        pks: &[&str],
        ehks: &[&str],
        subs: &[(u64, Option<u64>, &[u8])],
    ) -> Vec<u8> {
        use md5::{Digest, Md5};
        let mut body = Vec::new();
        for pk in pks {
            field_bytes(1, pk.as_bytes(), &mut body);
        }
        for e in ehks {
            field_bytes(2, e.as_bytes(), &mut body);
        }
        for (pk, ehk, data) in subs {
            let mut rec = Vec::new();
            field_varint(1, *pk, &mut rec);
            if let Some(e) = ehk {
                field_varint(2, *e, &mut rec);
            }
            field_bytes(3, data, &mut rec);
            field_bytes(3, &rec, &mut body);
        }
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&body);
        out.extend_from_slice(&Md5::digest(&body));
        out
    }

    fn rec(data: Vec<u8>) -> Record {
        Record {
            sequence_number: "42".into(),
            sub_sequence_number: None,
            partition_key: "outer".into(),
            data: Bytes::from(data),
            arrival_ms: 7,
        }
    }

    #[test]
    fn sub_records_get_their_keys_data_and_sub_sequence_numbers() {
        let a = aggregate_wire(
            &["ключ-1", "clé-2"],
            &["340282366920938463463374607431768211455"],
            &[(0, None, b"first"), (1, Some(0), b"second"), (0, None, b"")],
        );
        let subs = deaggregate(&rec(a)).unwrap();
        let got: Vec<(&str, &[u8], Option<u64>)> = subs
            .iter()
            .map(|s| (s.partition_key.as_str(), &s.data[..], s.sub_sequence_number))
            .collect();
        assert_eq!(
            got,
            [
                ("ключ-1", &b"first"[..], Some(0)),
                ("clé-2", &b"second"[..], Some(1)),
                ("ключ-1", &b""[..], Some(2))
            ]
        );
        assert!(subs
            .iter()
            .all(|s| s.sequence_number == "42" && s.arrival_ms == 7));
    }

    #[test]
    fn our_encoder_matches_the_wire_format() {
        let by_hand = aggregate_wire(&["a", "b"], &["9"], &[(0, None, b"x"), (1, Some(0), b"y")]);
        let ours = super::aggregate(&[("a", None, b"x"), ("b", Some("9"), b"y")]);
        assert_eq!(ours, by_hand);
    }

    #[test]
    fn anything_invalid_passes_through_as_a_plain_record() {
        let good = aggregate_wire(&["k"], &[], &[(0, None, b"x")]);
        let mut bad_md5 = good.clone();
        *bad_md5.last_mut().unwrap() ^= 1;
        let mut bad_body = good.clone();
        bad_body[5] ^= 0xff;
        let bad_index = aggregate_wire(&["k"], &[], &[(3, None, b"x")]);
        let bad_ehk = aggregate_wire(&["k"], &[], &[(0, Some(1), b"x")]);
        for (name, d) in [
            ("md5", bad_md5),
            ("body", bad_body),
            ("index", bad_index),
            ("explicit hash key", bad_ehk),
            ("short", MAGIC.to_vec()),
            ("plain", b"hello".to_vec()),
        ] {
            assert!(deaggregate(&rec(d.clone())).is_none(), "{name}");
            let page = Records::from(vec![rec(d.clone())]);
            assert_eq!(expand(page).to_vec(), vec![rec(d)], "{name}");
        }
        let mixed = expand(Records::from(vec![rec(b"plain".to_vec()), rec(good)])).to_vec();
        assert_eq!(mixed.len(), 2);
        assert_eq!(mixed[0].data, &b"plain"[..]);
        assert_eq!(mixed[1].sub_sequence_number, Some(0));
        assert_eq!(mixed[1].partition_key, "k");
    }
}
