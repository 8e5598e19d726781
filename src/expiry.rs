//! Loud data loss: has a stored position aged out of the stream's retention?
//!
//! Kinesis does not say when a position is gone: an iterator after a trimmed
//! sequence number silently starts at the trim horizon. So each shard
//! remembers how far its records are known to have been read
//! (`known_until_ms`), and each fixed range its first record. Only when that
//! is older than the retention (less a margin) is the shard probed: its
//! oldest record (TRIM_HORIZON) tells whether the start is still there.

use crate::clock::fmt_ms;
use crate::ports::checkpoint::ShardCheckpoint;
use crate::ports::stream::{Record, StreamApi};
use crate::position::{seq_cmp, Position};
use anyhow::Result;
use std::cmp::Ordering;

/// Records this close to the trim horizon may vanish during the read.
const MARGIN_MS: i64 = 5 * 60 * 1000;

/// `--on-expired fail|skip`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnExpired {
    Fail,
    Skip,
}

/// A shard whose start has (or may have) aged out.
#[derive(Clone, Debug)]
pub struct Expired {
    pub index: usize,
    pub shard_id: String,
    /// What is missing, for the message and the checkpoint table.
    pub missing: String,
    /// The oldest record still in the shard.
    pub oldest: Option<Record>,
}

impl Expired {
    /// Where to read from instead, when skipping.
    pub fn resume_at(&self) -> Option<Position> {
        self.oldest
            .as_ref()
            .map(|r| Position::At(r.sequence_number.clone()))
    }
}

/// Probes the shards whose positions could have aged out; returns those that did.
pub async fn check(
    api: &dyn StreamApi,
    retention_hours: i64,
    shards: &[ShardCheckpoint],
    now_ms: i64,
) -> Result<Vec<Expired>> {
    let horizon = now_ms - retention_hours * 3_600_000;
    let mut out = Vec::new();
    for (index, s) in shards.iter().enumerate() {
        // What must still be there, and since when it is at risk.
        let (at_risk_since, first) = match &s.end {
            // A replay needs its range's first record.
            Some(e) => match (&e.first_sequence, e.first_arrival_ms) {
                (Some(f), Some(t)) => (t, Position::At(f.clone())),
                _ => continue,
            },
            None => match s.known_until_ms {
                Some(k) => (k, s.start.clone()),
                None => continue,
            },
        };
        if at_risk_since >= horizon + MARGIN_MS {
            continue;
        }
        let oldest = api.oldest(&s.shard_id).await?;
        let gone = match (&first, &oldest) {
            (_, None) => true,
            (Position::At(q), Some(r)) => seq_cmp(&r.sequence_number, q) == Ordering::Greater,
            (Position::After(q), Some(r)) => seq_cmp(&r.sequence_number, q) == Ordering::Greater,
            (Position::Timestamp(t), Some(r)) => r.arrival_ms > *t,
        };
        if !gone {
            continue;
        }
        let missing = match &s.end {
            Some(e) => format!(
                "its fixed records from {} (arrived {}) on",
                e.first_sequence.as_deref().unwrap_or("?"),
                fmt_ms(at_risk_since)
            ),
            None => format!(
                "records from {} that arrived after {} and before the trim horizon {}",
                s.start,
                fmt_ms(at_risk_since),
                fmt_ms(horizon)
            ),
        };
        out.push(Expired {
            index,
            shard_id: s.shard_id.clone(),
            missing,
            oldest,
        });
    }
    Ok(out)
}

/// The message for `--on-expired fail`.
pub fn message(stream: &str, retention_hours: i64, expired: &[Expired]) -> String {
    let each: Vec<String> = expired
        .iter()
        .map(|e| {
            let oldest = match &e.oldest {
                Some(r) => format!(
                    "the oldest record still there is {} from {}",
                    r.sequence_number,
                    fmt_ms(r.arrival_ms)
                ),
                None => "no record is left in it".into(),
            };
            format!(
                "shard {}: {} may have aged out unread ({oldest})",
                e.shard_id, e.missing
            )
        })
        .collect();
    format!(
        "data expired in stream {stream} (retention {retention_hours} h): {}. Nothing was \
         printed. To go on from the oldest records, accepting the loss, rerun with \
         --on-expired skip (the skip is recorded in the checkpoint table)",
        each.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::{record, Faulty, MemoryStream};
    use crate::ports::checkpoint::ShardEnd;

    const H: i64 = 3_600_000;
    const NOW: i64 = 1_000 * H;

    fn live(start: Position, known: Option<i64>) -> ShardCheckpoint {
        ShardCheckpoint {
            shard_id: "s".into(),
            parents: vec![],
            start,
            known_until_ms: known,
            end: None,
            joined: None,
        }
    }

    /// Checks `s` on a shard whose oldest record is `oldest` (sequence,
    /// arrival), or that has none left; returns what expired and how many
    /// times the shard's oldest record was asked for.
    async fn run(oldest: Option<(&str, i64)>, s: ShardCheckpoint) -> (usize, usize) {
        let records = match oldest {
            Some((seq, t)) => vec![record(seq, "", t)],
            None => vec![record("1", "", 0)],
        };
        let stream = MemoryStream::new("logs").with_shard("s", &[], records);
        if oldest.is_none() {
            stream.trim("s", 1);
        }
        let api = Faulty::new(stream);
        let e = check(&api, 24, &[s], NOW).await.unwrap();
        (e.len(), api.calls("oldest"))
    }

    #[tokio::test]
    async fn recent_positions_are_not_even_probed() {
        assert_eq!(
            run(
                Some(("100", NOW)),
                live(Position::After("5".into()), Some(NOW - H))
            )
            .await,
            (0, 0)
        );
        // A shard's own beginning (trim horizon) is never "expired".
        assert_eq!(
            run(Some(("100", NOW)), live(Position::At("5".into()), None)).await,
            (0, 0)
        );
    }

    #[tokio::test]
    async fn an_old_position_is_expired_only_if_its_record_is_gone() {
        let old = Some(NOW - 30 * H);
        // The record after which we start is still there: nothing was lost.
        assert_eq!(
            run(
                Some(("5", NOW - 23 * H)),
                live(Position::After("5".into()), old)
            )
            .await,
            (0, 1)
        );
        assert_eq!(
            run(
                Some(("6", NOW - 23 * H)),
                live(Position::After("5".into()), old)
            )
            .await
            .0,
            1
        );
        assert_eq!(run(None, live(Position::After("5".into()), old)).await.0, 1);
        // Starting at a time older than anything left.
        assert_eq!(
            run(
                Some(("9", NOW - 23 * H)),
                live(Position::Timestamp(NOW - 30 * H), old)
            )
            .await
            .0,
            1
        );
    }

    #[tokio::test]
    async fn a_replay_needs_its_first_record() {
        let mut s = live(Position::After("5".into()), None);
        s.end = Some(ShardEnd {
            last_sequence: Some("9".into()),
            next: Position::After("9".into()),
            closed: false,
            records: 3,
            bytes: 3,
            fixed_ms: 0,
            fixed_by: String::new(),
            known_until_ms: None,
            read_from: None,
            expired_skip: None,
            first_sequence: Some("7".into()),
            first_arrival_ms: Some(NOW - 30 * H),
        });
        assert_eq!(run(Some(("7", NOW - 30 * H)), s.clone()).await.0, 0);
        assert_eq!(run(Some(("8", NOW - 23 * H)), s).await.0, 1);
    }
}
