//! Shard positions as they are stored in the checkpoint table, and the
//! ordering of Kinesis sequence numbers.
//!
//! Sequence numbers are decimal strings of up to 129 digits (more than fits in
//! a `u128`), so they are compared as numbers written in decimal: shorter is
//! smaller, equal lengths compare lexicographically.

use std::cmp::Ordering;
use std::fmt;

/// A concrete, replayable place in a shard. `LATEST` and `TRIM_HORIZON` are
/// never stored: they are turned into one of these before anything is recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Position {
    /// The record with this sequence number and everything after it.
    At(String),
    /// Everything after the record with this sequence number.
    After(String),
    /// The first record that arrived at or after this time (epoch ms).
    Timestamp(i64),
}

impl Position {
    /// Parses the stored form (`at:SEQ`, `after:SEQ`, `ts:MILLIS`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (kind, value) = s
            .split_once(':')
            .ok_or_else(|| format!("position {s:?} has no kind prefix"))?;
        match kind {
            "at" if is_sequence_number(value) => Ok(Position::At(value.to_string())),
            "after" if is_sequence_number(value) => Ok(Position::After(value.to_string())),
            "ts" => value
                .parse()
                .map(Position::Timestamp)
                .map_err(|_| format!("position {s:?} has a bad timestamp")),
            _ => Err(format!(
                "position {s:?} is not at:SEQ, after:SEQ or ts:MILLIS"
            )),
        }
    }

    /// True when a record with sequence number `seq` lies at or after this position.
    /// For timestamps the caller must check arrival times instead, so this says yes.
    pub fn admits(&self, seq: &str) -> bool {
        match self {
            Position::At(s) => seq_cmp(seq, s) != Ordering::Less,
            Position::After(s) => seq_cmp(seq, s) == Ordering::Greater,
            Position::Timestamp(_) => true,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::At(s) => write!(f, "at:{s}"),
            Position::After(s) => write!(f, "after:{s}"),
            Position::Timestamp(ms) => write!(f, "ts:{ms}"),
        }
    }
}

/// A Kinesis sequence number: one or more decimal digits without a leading zero (or "0").
pub fn is_sequence_number(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'))
        && s.len() <= 129
}

/// Numeric order of two decimal sequence numbers.
pub fn seq_cmp(a: &str, b: &str) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_order_numerically_beyond_u128() {
        let big = "49590338271490256608559692538361571095921575989136588898";
        let bigger = "49590338271490256608559692538361571095921575989136588899";
        assert_eq!(seq_cmp(big, bigger), Ordering::Less);
        assert_eq!(seq_cmp("9", "10"), Ordering::Less);
        assert_eq!(seq_cmp("10", "10"), Ordering::Equal);
        assert_eq!(seq_cmp(bigger, "7"), Ordering::Greater);
    }

    #[test]
    fn positions_round_trip_and_reject_garbage() {
        for p in [
            Position::At("12".into()),
            Position::After("4959033827149025660855969253836157".into()),
            Position::Timestamp(1_700_000_000_123),
        ] {
            assert_eq!(Position::parse(&p.to_string()).unwrap(), p);
        }
        for bad in ["12", "at:", "at:012", "after:x1", "ts:soon", "latest:1"] {
            assert!(Position::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn admits_respects_at_versus_after() {
        assert!(Position::At("5".into()).admits("5"));
        assert!(!Position::After("5".into()).admits("5"));
        assert!(Position::After("5".into()).admits("6"));
        assert!(!Position::At("10".into()).admits("9"));
    }
}
