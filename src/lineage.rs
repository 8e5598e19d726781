//! Which shards an iteration reads, from the stream's shard list: pure
//! functions, no I/O.
//!
//! The first iteration's shards come from the shard list and the start
//! position; iteration N+1's come from iteration N's fixed ends and the
//! shard list. Then each iteration takes in its *family*: the children of
//! its shards that were closed when it was planned (a split or merge before
//! its snapshot), and theirs, so that what arrived in a child before the
//! snapshot is in this iteration, not held back to the next. A child is read
//! in the run after every parent has been read to its end (see
//! `run::pump`); children of a shard still open at plan time enter the next
//! iteration (the README's "Iterations: the semantics", lineage order).

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
    let roots: Vec<ShardCheckpoint> = listed
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
            joined: None,
        })
        .collect();
    let not_before = match start {
        StartSpec::TrimHorizon => None,
        StartSpec::Latest => Some(now_ms),
        StartSpec::AtTimestamp(ms) => Some(*ms),
    };
    let lineage = with_descendants(&roots, listed);
    with_family(roots, &BTreeSet::new(), &lineage, listed, not_before)
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineageError {
    #[error("shard {0} of the previous iteration has no fixed end yet")]
    Unfinished(String),
}

/// The shards of the iteration after `prev` (whose ends must all be fixed).
/// - a shard that did not reach its end continues where it ended;
/// - a closed shard hands over to its children once every parent of a child
///   is closed; until then it is carried along (it reads nothing) so that the
///   lineage is remembered;
/// - a child starts at its first record, or at `not_before_ms` when the
///   logical name started at a time;
/// - then the family joins (see [`with_family`]).
pub fn next_shards(
    prev: &[ShardCheckpoint],
    listed: &[ShardInfo],
    not_before_ms: Option<i64>,
) -> Result<Vec<ShardCheckpoint>, LineageError> {
    let mut closed = BTreeSet::new();
    let mut next = BTreeMap::new();
    let in_prev: BTreeSet<&str> = prev.iter().map(|s| s.shard_id.as_str()).collect();
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
    let lineage = with_descendants(prev, listed);
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
        // A child read in `prev` beside its parent goes on from its own end.
        for c in children
            .into_iter()
            .filter(|c| !in_prev.contains(c.shard_id.as_str()))
        {
            // A parent outside the lineage (never read, or long gone) does
            // not hold a child back.
            let ready = c
                .parents()
                .iter()
                .all(|p| closed.contains(p.as_str()) || !lineage.contains(p.as_str()));
            if ready {
                next.entry(c.shard_id.clone())
                    .or_insert_with(|| entering(c, not_before_ms));
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
    Ok(with_family(
        next.into_values().collect(),
        &closed,
        &lineage,
        listed,
        not_before_ms,
    ))
}

/// `shards` with their family: every listed descendant whose parents are
/// each either in the iteration and closed when it was listed, or `ended`
/// (read to their end in the previous iteration), or outside the `lineage`
/// (never read, or long gone).
/// Such a child is read after its parents in the same run, and only if they
/// are read to their end there (a parent that an iteration timeout stops
/// early leaves its child unread, to go on from its start next time).
fn with_family(
    mut shards: Vec<ShardCheckpoint>,
    ended: &BTreeSet<&str>,
    lineage: &BTreeSet<String>,
    listed: &[ShardInfo],
    not_before_ms: Option<i64>,
) -> Vec<ShardCheckpoint> {
    let listed_closed: BTreeSet<&str> = listed
        .iter()
        .filter(|s| s.ending_sequence_number.is_some())
        .map(|s| s.shard_id.as_str())
        .collect();
    loop {
        let ids: BTreeSet<String> = shards.iter().map(|s| s.shard_id.clone()).collect();
        let joining: Vec<ShardCheckpoint> = listed
            .iter()
            .filter(|c| !ids.contains(&c.shard_id) && !ended.contains(c.shard_id.as_str()))
            .filter(|c| c.parents().iter().any(|p| ids.contains(p)))
            .filter(|c| {
                c.parents().iter().all(|p| {
                    (ids.contains(p) && listed_closed.contains(p.as_str()))
                        || (ended.contains(p.as_str()) && !ids.contains(p))
                        || !lineage.contains(p)
                })
            })
            .map(|c| entering(c, not_before_ms))
            .collect();
        if joining.is_empty() {
            break;
        }
        shards.extend(joining);
    }
    shards.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
    shards
}

/// The lineage: the ids of `shards` and of every listed descendant of them.
fn with_descendants(shards: &[ShardCheckpoint], listed: &[ShardInfo]) -> BTreeSet<String> {
    let mut lineage: BTreeSet<String> = shards.iter().map(|s| s.shard_id.clone()).collect();
    loop {
        let more: Vec<String> = listed
            .iter()
            .filter(|c| !lineage.contains(&c.shard_id))
            .filter(|c| c.parents().iter().any(|p| lineage.contains(p)))
            .map(|c| c.shard_id.clone())
            .collect();
        if more.is_empty() {
            return lineage;
        }
        lineage.extend(more);
    }
}

/// The children of `parent` that join a run in which `parent` was just read
/// to its end, having closed after the run's iteration was planned: listed
/// children not in the run yet (`in_run`) every parent of which is in the
/// run and read to its end (`ended`). So a child of a merge joins with its
/// last parent, and a child whose parent is not in the run waits for the
/// next iteration, as [`next_shards`] then plans it.
pub fn joining(
    parent: &str,
    listed: &[ShardInfo],
    in_run: &BTreeSet<String>,
    ended: &BTreeSet<String>,
    not_before_ms: Option<i64>,
) -> Vec<ShardCheckpoint> {
    listed
        .iter()
        .filter(|c| !in_run.contains(&c.shard_id))
        .filter(|c| {
            let parents = c.parents();
            parents.iter().any(|p| p == parent)
                && parents
                    .iter()
                    .all(|p| in_run.contains(p) && ended.contains(p))
        })
        .map(|c| entering(c, not_before_ms))
        .collect()
}

/// A child entering an iteration: at its first record, or at
/// `not_before_ms` when the logical name started at a time.
fn entering(c: &ShardInfo, not_before_ms: Option<i64>) -> ShardCheckpoint {
    ShardCheckpoint {
        shard_id: c.shard_id.clone(),
        parents: c.parents(),
        start: match not_before_ms {
            Some(ms) => Position::Timestamp(ms),
            None => Position::At(c.starting_sequence_number.clone()),
        },
        known_until_ms: not_before_ms,
        end: None,
        joined: None,
    }
}

/// An iteration's shards in families: each shard with its parents and
/// children in the same iteration, which one reader must read in lineage
/// order. A shard with no relative in the iteration is a family of one.
/// Families are in the order of their first shard id, each sorted.
pub fn families(shards: &[ShardCheckpoint]) -> Vec<Vec<String>> {
    let index: BTreeMap<&str, usize> = shards
        .iter()
        .enumerate()
        .map(|(i, s)| (s.shard_id.as_str(), i))
        .collect();
    // Union-find over the parent links inside the iteration.
    let mut root: Vec<usize> = (0..shards.len()).collect();
    fn find(root: &mut [usize], mut i: usize) -> usize {
        while root[i] != i {
            root[i] = root[root[i]];
            i = root[i];
        }
        i
    }
    for (i, s) in shards.iter().enumerate() {
        for p in s.parents.iter().filter_map(|p| index.get(p.as_str())) {
            let (a, b) = (find(&mut root, i), find(&mut root, *p));
            root[a.max(b)] = a.min(b);
        }
    }
    let mut by_root: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (i, s) in shards.iter().enumerate() {
        let r = find(&mut root, i);
        by_root.entry(r).or_default().push(s.shard_id.clone());
    }
    let mut all: Vec<Vec<String>> = by_root
        .into_values()
        .map(|mut f| {
            f.sort();
            f
        })
        .collect();
    all.sort();
    all
}

/// The same shard in the next iteration, from where it ended.
fn carry(s: &ShardCheckpoint, end: &ShardEnd) -> ShardCheckpoint {
    ShardCheckpoint {
        shard_id: s.shard_id.clone(),
        parents: s.parents.clone(),
        start: end.next.clone(),
        known_until_ms: end.known_until_ms.or(s.known_until_ms),
        end: None,
        joined: None,
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
    fn first_iteration_reads_lineage_roots_and_their_closed_family_from_concrete_positions() {
        // s0 was split into s1 and s2; s3 is an unrelated open shard.
        let listed = [
            shard_info("s0", &[], "100", Some("199")),
            shard_info("s1", &["s0"], "200", None),
            shard_info("s2", &["s0"], "201", None),
            shard_info("s3", &[], "300", None),
        ];
        let p = first_shards(&listed, &StartSpec::TrimHorizon, 5);
        assert_eq!(ids(&p), ["s0", "s1", "s2", "s3"]);
        assert_eq!(p[0].start, Position::At("100".into()));
        assert_eq!(p[1].start, Position::At("200".into()));
        assert_eq!(p[1].parents, ["s0"]);
        let p = first_shards(&listed, &StartSpec::Latest, 5);
        assert_eq!(ids(&p), ["s1", "s2", "s3"]);
        assert!(p.iter().all(|s| s.start == Position::Timestamp(5)));
        let p = first_shards(&listed, &StartSpec::AtTimestamp(42), 5);
        assert_eq!(ids(&p), ["s0", "s1", "s2", "s3"]);
        assert!(p.iter().all(|s| s.start == Position::Timestamp(42)));
    }

    /// s0 was split after the first iteration was planned: its children
    /// enter the next one.
    #[test]
    fn children_of_a_shard_closed_after_the_plan_enter_the_next_iteration() {
        let before = [
            shard_info("s0", &[], "100", None),
            shard_info("s3", &[], "300", None),
        ];
        let after = [
            shard_info("s0", &[], "100", Some("199")),
            shard_info("s1", &["s0"], "200", None),
            shard_info("s2", &["s0"], "201", None),
            shard_info("s3", &[], "300", None),
        ];
        let first = first_shards(&before, &StartSpec::TrimHorizon, 5);
        assert_eq!(ids(&first), ["s0", "s3"]);
        let prev = [
            ended(&first[0], Some("199"), true),
            ended(&first[1], None, false),
        ];
        let next = next_shards(&prev, &after, None).unwrap();
        assert_eq!(ids(&next), ["s1", "s2", "s3"]);
        assert_eq!(next[0].start, Position::At("200".into()));
        // s3 read nothing: it starts again where it started.
        assert_eq!(next[2].start, Position::At("300".into()));
        // Started at a time: children start at that time too.
        let next = next_shards(&prev, &after, Some(77)).unwrap();
        assert_eq!(next[0].start, Position::Timestamp(77));
    }

    #[test]
    fn a_merge_child_waits_for_both_parents_and_lineage_can_be_deep() {
        // a and b merge into m; m is later split into x and y. The listing
        // is the last one: b is listed open until it closes.
        let mut listed = vec![
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
        // Now b closes too: m follows, and neither parent is read again;
        // m was closed when listed, so its children join it.
        listed[1] = shard_info("b", &[], "2", Some("9"));
        let i2 = next_shards(
            &[ended(&i1[0], None, true), ended(&i1[1], Some("9"), true)],
            &listed,
            None,
        )
        .unwrap();
        assert_eq!(ids(&i2), ["m", "x", "y"]);
        let i3 = next_shards(
            &[
                ended(&i2[0], Some("60"), true),
                ended(&i2[1], Some("75"), false),
                ended(&i2[2], None, false),
            ],
            &listed,
            None,
        )
        .unwrap();
        assert_eq!(ids(&i3), ["x", "y"]);
        assert_eq!(i3[0].start, Position::After("75".into()));
        assert_eq!(i3[1].start, Position::At("71".into()));
    }

    /// b was closed (merged into m with a) when the iteration after a's end
    /// was planned: m joins b there, and a, read to its end before, does not
    /// hold it back.
    #[test]
    fn a_merge_child_joins_its_last_open_parent() {
        let listed = [
            shard_info("a", &[], "1", Some("10")),
            shard_info("b", &[], "2", Some("20")),
            shard_info("m", &["a", "b"], "50", None),
        ];
        let i0 = [
            ended(
                &first_shards(&listed, &StartSpec::TrimHorizon, 0)[0],
                Some("10"),
                true,
            ),
            ended(
                &ShardCheckpoint {
                    shard_id: "b".into(),
                    parents: vec![],
                    start: Position::At("2".into()),
                    known_until_ms: None,
                    end: None,
                    joined: None,
                },
                Some("15"),
                false,
            ),
        ];
        let i1 = next_shards(&i0, &listed, None).unwrap();
        assert_eq!(ids(&i1), ["a", "b", "m"]);
    }

    /// Between two iterations p was split into c1 and c2, and c2 merged
    /// with q into m: the whole family joins, each child to be read after
    /// its parents; then it goes on from each shard's end.
    #[test]
    fn a_split_and_a_merge_of_a_split_child_join_their_parents_iteration() {
        let listed = [
            shard_info("c1", &["p"], "20", None),
            shard_info("c2", &["p"], "21", Some("29")),
            shard_info("m", &["c2", "q"], "30", None),
            shard_info("p", &[], "1", Some("10")),
            shard_info("q", &[], "2", Some("12")),
        ];
        let i0 = first_shards(&listed, &StartSpec::TrimHorizon, 0);
        assert_eq!(ids(&i0), ["c1", "c2", "m", "p", "q"]);
        assert_eq!(i0[2].parents, ["c2", "q"]);
        let read = [
            ended(&i0[0], Some("25"), false),
            ended(&i0[1], Some("29"), true),
            ended(&i0[2], None, false),
            ended(&i0[3], Some("10"), true),
            ended(&i0[4], Some("12"), true),
        ];
        let i1 = next_shards(&read, &listed, None).unwrap();
        assert_eq!(ids(&i1), ["c1", "m"]);
        assert_eq!(i1[0].start, Position::After("25".into()));
        assert_eq!(i1[1].start, Position::At("30".into()));
        // A timeout stopped p before its end: its children read nothing and
        // the family is read again from where each shard stands; q, read to
        // its end, is not (m then waits only for c2).
        let stopped = [
            ended(&i0[0], None, false),
            ended(&i0[1], None, false),
            ended(&i0[2], None, false),
            ended(&i0[3], Some("5"), false),
            ended(&i0[4], Some("12"), true),
        ];
        let again = next_shards(&stopped, &listed, None).unwrap();
        assert_eq!(ids(&again), ["c1", "c2", "m", "p"]);
        assert_eq!(again[0].start, Position::At("20".into()));
        assert_eq!(again[3].start, Position::After("5".into()));
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
    fn a_family_is_every_shard_linked_by_parents_inside_the_iteration() {
        let listed = [
            shard_info("c1", &["p"], "20", None),
            shard_info("c2", &["p"], "21", Some("29")),
            shard_info("m", &["c2", "q"], "30", None),
            shard_info("p", &[], "1", Some("10")),
            shard_info("q", &[], "2", Some("12")),
            shard_info("z", &[], "3", None),
        ];
        let i0 = first_shards(&listed, &StartSpec::TrimHorizon, 0);
        assert_eq!(families(&i0), [vec!["c1", "c2", "m", "p", "q"], vec!["z"]]);
        // A parent outside the iteration links nothing.
        let i1 = next_shards(
            &i0.iter()
                .map(|s| {
                    ended(
                        s,
                        None,
                        s.shard_id != "z" && s.shard_id != "c1" && s.shard_id != "m",
                    )
                })
                .collect::<Vec<_>>(),
            &listed,
            None,
        )
        .unwrap();
        assert_eq!(ids(&i1), ["c1", "m", "z"]);
        assert_eq!(families(&i1), [vec!["c1"], vec!["m"], vec!["z"]]);
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

    /// A split's children join as soon as their parent was read to its end;
    /// a merge's child only with its last parent; a child already in the
    /// run, or one with a parent outside the run, does not.
    #[test]
    fn children_join_a_run_once_every_parent_in_it_was_read_to_its_end() {
        let listed = [
            shard_info("a", &[], "1", Some("9")),
            shard_info("b", &[], "1", Some("9")),
            shard_info("x", &[], "1", Some("9")),
            shard_info("a1", &["a"], "10", None),
            shard_info("a2", &["a"], "20", None),
            shard_info("ab", &["a1", "b"], "30", None),
            shard_info("xy", &["x", "y"], "40", None),
        ];
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let in_run = set(&["a", "b", "x", "y"]);
        let joined = joining("a", &listed, &in_run, &set(&["a"]), None);
        assert_eq!(ids(&joined), ["a1", "a2"]);
        assert_eq!(joined[0].start, Position::At("10".into()));
        assert_eq!(joined[0].parents, ["a"]);
        let in_run = set(&["a", "b", "x", "y", "a1", "a2"]);
        assert!(joining("a1", &listed, &in_run, &set(&["a", "a1"]), None).is_empty());
        let ab = joining("b", &listed, &in_run, &set(&["a", "a1", "b"]), Some(5));
        assert_eq!(ids(&ab), ["ab"]);
        assert_eq!(ab[0].start, Position::Timestamp(5));
        let in_run = set(&["a", "b", "x", "a1", "a2", "ab"]);
        assert!(joining("x", &listed, &in_run, &set(&["x"]), None).is_empty());
        assert!(joining("a", &listed, &in_run, &set(&["a"]), None).is_empty());
    }
}
