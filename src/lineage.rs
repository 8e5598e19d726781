//! Which shards an iteration reads, from the stream's shard list: pure
//! functions, no I/O.
//!
//! The first iteration's shards come from the shard list and the start
//! position; iteration N+1's come from iteration N's fixed ends and the
//! shard list. An iteration never holds a shard together with one of its
//! descendants, so within an iteration every shard can be read at once;
//! children enter the iteration after the one in which their last parent was
//! read to its end (the README's "Iterations: the semantics", lineage order).

use crate::ports::checkpoint::{ShardCheckpoint, ShardEnd};
use crate::ports::stream::ShardInfo;
use crate::position::Position;
use std::collections::{BTreeMap, BTreeSet};

/// Where the first iteration of a logical name starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartSpec {
    TrimHorizon,
    Latest,
    AtTimestamp(i64),
}

impl StartSpec {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "trim-horizon" | "TRIM_HORIZON" => Ok(StartSpec::TrimHorizon),
            "latest" | "LATEST" => Ok(StartSpec::Latest),
            _ => {
                let ts = s.strip_prefix("at-timestamp=").ok_or_else(|| {
                    format!("{s:?}: expected trim-horizon, latest or at-timestamp=RFC3339")
                })?;
                let t = humantime::parse_rfc3339_weak(ts)
                    .map_err(|e| format!("{ts:?} is not an RFC 3339 time: {e}"))?;
                let ms = t
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_err(|_| format!("{ts:?} is before 1970"))?
                    .as_millis() as i64;
                Ok(StartSpec::AtTimestamp(ms))
            }
        }
    }

    /// The stored description, and the time later generations of shards start
    /// from (children of a shard start at this time rather than at their first
    /// record when the user asked to start at a time).
    pub fn describe(&self, now_ms: i64) -> (String, Option<i64>) {
        match self {
            StartSpec::TrimHorizon => ("trim-horizon".into(), None),
            StartSpec::Latest => (format!("latest@{now_ms}"), Some(now_ms)),
            StartSpec::AtTimestamp(ms) => (format!("at-timestamp@{ms}"), Some(*ms)),
        }
    }
}

/// The time bound recorded in a header's start spec (`latest@MS`, `at-timestamp@MS`).
pub fn spec_time(start_spec: &str) -> Option<i64> {
    start_spec
        .split_once('@')
        .and_then(|(_, ms)| ms.parse().ok())
}

/// The shards of a logical name's first iteration: the lineage roots (shards
/// none of whose parents is still listed), or for `latest` the open shards.
/// Every start is concrete: a sequence number or a timestamp.
pub fn first_shards(listed: &[ShardInfo], start: &StartSpec, now_ms: i64) -> Vec<ShardCheckpoint> {
    let ids: BTreeSet<&str> = listed.iter().map(|s| s.shard_id.as_str()).collect();
    listed
        .iter()
        .filter(|s| match start {
            StartSpec::Latest => s.ending_sequence_number.is_none(),
            _ => s.parents().iter().all(|p| !ids.contains(p.as_str())),
        })
        .map(|s| ShardCheckpoint {
            shard_id: s.shard_id.clone(),
            parents: s.parents(),
            start: match start {
                StartSpec::TrimHorizon => Position::At(s.starting_sequence_number.clone()),
                StartSpec::Latest => Position::Timestamp(now_ms),
                StartSpec::AtTimestamp(ms) => Position::Timestamp(*ms),
            },
            // Starting at a time: what arrived before it is not wanted.
            known_until_ms: match start {
                StartSpec::TrimHorizon => None,
                StartSpec::Latest => Some(now_ms),
                StartSpec::AtTimestamp(ms) => Some(*ms),
            },
            end: None,
        })
        .collect()
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineageError {
    #[error("shard {0} of the previous iteration has no fixed end yet")]
    Unfinished(String),
}

/// The shards of the iteration after `prev` (whose ends must all be fixed).
/// - an open shard continues where it ended;
/// - a closed shard hands over to its children once every parent of a child
///   is closed; until then it is carried along (it reads nothing) so that the
///   lineage is remembered;
/// - a child starts at its first record, or at `not_before_ms` when the
///   logical name started at a time.
pub fn next_shards(
    prev: &[ShardCheckpoint],
    listed: &[ShardInfo],
    not_before_ms: Option<i64>,
) -> Result<Vec<ShardCheckpoint>, LineageError> {
    let mut closed = BTreeSet::new();
    let mut next = BTreeMap::new();
    for s in prev {
        let end = s
            .end
            .as_ref()
            .ok_or_else(|| LineageError::Unfinished(s.shard_id.clone()))?;
        if end.closed {
            closed.insert(s.shard_id.as_str());
        }
    }
    // The lineage: the shards read so far and every listed descendant of
    // them. A parent in it that is not closed yet holds its children back,
    // even when it enters only now (a split, then a merge of one of the
    // split's children, both between two iterations).
    let mut lineage: BTreeSet<&str> = prev.iter().map(|s| s.shard_id.as_str()).collect();
    loop {
        let more: Vec<&str> = listed
            .iter()
            .filter(|c| !lineage.contains(c.shard_id.as_str()))
            .filter(|c| c.parents().iter().any(|p| lineage.contains(p.as_str())))
            .map(|c| c.shard_id.as_str())
            .collect();
        if more.is_empty() {
            break;
        }
        lineage.extend(more);
    }
    for s in prev {
        let end = s.end.as_ref().expect("checked above");
        if !end.closed {
            next.insert(s.shard_id.clone(), carry(s, end));
            continue;
        }
        let children: Vec<&ShardInfo> = listed
            .iter()
            .filter(|c| c.parents().iter().any(|p| p == &s.shard_id))
            .collect();
        let no_children = children.is_empty();
        let mut all_ready = true;
        for c in children {
            // A parent outside the lineage (never read, or long gone) does
            // not hold a child back.
            let ready = c
                .parents()
                .iter()
                .all(|p| closed.contains(p.as_str()) || !lineage.contains(p.as_str()));
            if ready {
                next.entry(c.shard_id.clone())
                    .or_insert_with(|| ShardCheckpoint {
                        shard_id: c.shard_id.clone(),
                        parents: c.parents(),
                        start: match not_before_ms {
                            Some(ms) => Position::Timestamp(ms),
                            None => Position::At(c.starting_sequence_number.clone()),
                        },
                        known_until_ms: not_before_ms,
                        end: None,
                    });
            } else {
                all_ready = false;
            }
        }
        // A closed shard always has children (only a split or a merge closes
        // one); when none is listed, the listing is older than the end that
        // said closed, so the shard waits for them rather than being dropped
        // with its whole lineage.
        if !all_ready || no_children {
            next.insert(s.shard_id.clone(), carry(s, end));
        }
    }
    Ok(next.into_values().collect())
}

/// The same shard in the next iteration, from where it ended.
fn carry(s: &ShardCheckpoint, end: &ShardEnd) -> ShardCheckpoint {
    ShardCheckpoint {
        shard_id: s.shard_id.clone(),
        parents: s.parents.clone(),
        start: end.next.clone(),
        known_until_ms: end.known_until_ms.or(s.known_until_ms),
        end: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::{ended, shard_info};

    fn ids(v: &[ShardCheckpoint]) -> Vec<&str> {
        v.iter().map(|s| s.shard_id.as_str()).collect()
    }

    #[test]
    fn first_iteration_reads_lineage_roots_from_concrete_positions() {
        // s0 was split into s1 and s2; s3 is an unrelated open shard.
        let listed = [
            shard_info("s0", &[], "100", Some("199")),
            shard_info("s1", &["s0"], "200", None),
            shard_info("s2", &["s0"], "201", None),
            shard_info("s3", &[], "300", None),
        ];
        let p = first_shards(&listed, &StartSpec::TrimHorizon, 5);
        assert_eq!(ids(&p), ["s0", "s3"]);
        assert_eq!(p[0].start, Position::At("100".into()));
        let p = first_shards(&listed, &StartSpec::Latest, 5);
        assert_eq!(ids(&p), ["s1", "s2", "s3"]);
        assert!(p.iter().all(|s| s.start == Position::Timestamp(5)));
        let p = first_shards(&listed, &StartSpec::AtTimestamp(42), 5);
        assert_eq!(ids(&p), ["s0", "s3"]);
        assert_eq!(p[1].start, Position::Timestamp(42));
    }

    #[test]
    fn next_iteration_continues_after_each_end_and_children_follow_closed_parents() {
        let listed = [
            shard_info("s0", &[], "100", Some("199")),
            shard_info("s1", &["s0"], "200", None),
            shard_info("s2", &["s0"], "201", None),
            shard_info("s3", &[], "300", None),
        ];
        let first = first_shards(&listed, &StartSpec::TrimHorizon, 5);
        let prev = [
            ended(&first[0], Some("199"), true),
            ended(&first[1], None, false),
        ];
        let next = next_shards(&prev, &listed, None).unwrap();
        assert_eq!(ids(&next), ["s1", "s2", "s3"]);
        assert_eq!(next[0].start, Position::At("200".into()));
        // s3 read nothing: it starts again where it started.
        assert_eq!(next[2].start, Position::At("300".into()));
        // Started at a time: children start at that time too.
        let next = next_shards(&prev, &listed, Some(77)).unwrap();
        assert_eq!(next[0].start, Position::Timestamp(77));
    }

    #[test]
    fn a_merge_child_waits_for_both_parents_and_lineage_can_be_deep() {
        // a and b merge into m; m is later split into x and y.
        let listed = [
            shard_info("a", &[], "1", Some("10")),
            shard_info("b", &[], "2", None),
            shard_info("m", &["a", "b"], "50", Some("60")),
            shard_info("x", &["m"], "70", None),
            shard_info("y", &["m"], "71", None),
        ];
        let i0 = first_shards(&listed, &StartSpec::TrimHorizon, 0);
        assert_eq!(ids(&i0), ["a", "b"]);
        // Only a is closed: m must wait, a is carried so the lineage is kept.
        let i1 = next_shards(
            &[
                ended(&i0[0], Some("10"), true),
                ended(&i0[1], Some("5"), false),
            ],
            &listed,
            None,
        )
        .unwrap();
        assert_eq!(ids(&i1), ["a", "b"]);
        assert_eq!(i1[0].start, Position::After("10".into()));
        assert_eq!(i1[1].start, Position::After("5".into()));
        // Now b closes too: m follows, and neither parent is read again.
        let i2 = next_shards(
            &[ended(&i1[0], None, true), ended(&i1[1], Some("9"), true)],
            &listed,
            None,
        )
        .unwrap();
        assert_eq!(ids(&i2), ["m"]);
        let i3 = next_shards(&[ended(&i2[0], Some("60"), true)], &listed, None).unwrap();
        assert_eq!(ids(&i3), ["x", "y"]);
    }

    /// Between two iterations p was split into c1 and c2, and c2 merged
    /// with q into m: m must wait for c2, which enters only now.
    #[test]
    fn a_merge_of_a_split_child_waits_for_that_child() {
        let listed = [
            shard_info("c1", &["p"], "20", None),
            shard_info("c2", &["p"], "21", Some("29")),
            shard_info("m", &["c2", "q"], "30", None),
            shard_info("p", &[], "1", Some("10")),
            shard_info("q", &[], "2", Some("12")),
        ];
        let i0 = first_shards(&listed, &StartSpec::TrimHorizon, 0);
        assert_eq!(ids(&i0), ["p", "q"]);
        let prev = [
            ended(&i0[0], Some("10"), true),
            ended(&i0[1], Some("12"), true),
        ];
        let i1 = next_shards(&prev, &listed, None).unwrap();
        assert_eq!(
            ids(&i1),
            ["c1", "c2", "q"],
            "m is not read beside its parent c2"
        );
        let i2 = next_shards(
            &[
                ended(&i1[0], None, false),
                ended(&i1[1], Some("29"), true),
                ended(&i1[2], None, true),
            ],
            &listed,
            None,
        )
        .unwrap();
        assert_eq!(ids(&i2), ["c1", "m"]);
    }

    /// A listing taken before a split (a run that waited for a lease, or
    /// ListShards lagging) shows the parent, closed since, without
    /// children: the parent is carried until they are listed, not dropped.
    #[test]
    fn a_closed_shard_whose_children_are_not_listed_yet_is_kept() {
        let before = [shard_info("p", &[], "1", None)];
        let i0 = first_shards(&before, &StartSpec::TrimHorizon, 0);
        let prev = [ended(&i0[0], Some("9"), true)];
        let i1 = next_shards(&prev, &before, None).unwrap();
        assert_eq!(ids(&i1), ["p"]);
        assert_eq!(i1[0].start, Position::After("9".into()));
        let after = [
            shard_info("c1", &["p"], "20", None),
            shard_info("c2", &["p"], "21", None),
            shard_info("p", &[], "1", Some("9")),
        ];
        let i2 = next_shards(&[ended(&i1[0], None, true)], &after, None).unwrap();
        assert_eq!(ids(&i2), ["c1", "c2"]);
    }

    #[test]
    fn an_unfinished_previous_iteration_cannot_be_followed() {
        let listed = [shard_info("s", &[], "1", None)];
        let i0 = first_shards(&listed, &StartSpec::TrimHorizon, 0);
        assert_eq!(
            next_shards(&i0, &listed, None),
            Err(LineageError::Unfinished("s".into()))
        );
    }
}
