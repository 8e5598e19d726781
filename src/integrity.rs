//! The checkpoint table, checked rather than trusted. People edit checkpoint
//! items by hand ("rewind this logical name"), and a wrong edit or a deleted
//! item must never be read as truth: a shard left out of an iteration is
//! lost for good, a range moved by hand repeats or skips records. So every
//! read that relies on the table checks what it read:
//! - an iteration's shard items agree with its header: as many planned
//!   shards as its `shard_count`, and children that joined the run numbered
//!   1, 2, … without a gap ([`items`]);
//! - each fixed range agrees with its own facts: `last_seq` present exactly
//!   when `records` is not 0, `first_seq` (items of old versions lack it)
//!   between `start` and `last_seq`, and `next` just after `last_seq` (or at
//!   `start` when nothing was read) ([`range`]);
//! - iteration N's starts continue N−1's ends, and every shard N−1 left open
//!   is in N ([`chain`]);
//! - a replay yields the records, bytes and first record its range recorded
//!   (checked as it reads, in `shard.rs`).
//!
//! Each refusal is one line naming the item, the attribute and what to do;
//! it is a usage error (exit 2): a person has to look. The README's "The
//! checkpoint table" says which edits are supported and what the checks cost.

use crate::error::ExitError;
use crate::ports::checkpoint::{IterationHeader, LogicalKey, ShardCheckpoint};
use crate::position::{seq_cmp, Position};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// The hash key of an iteration's shard items, as a person finds them in
/// the table (a wide iteration spreads them over `…/<p>` keys).
pub fn shard_items_key(key: &LogicalKey, n: u64) -> String {
    format!("{}/{}/{n:010}", key.stream, key.logical_name)
}

fn refuse(what: String) -> ExitError {
    ExitError::Usage(what)
}

/// What to do about an iteration whose items do not agree: restore them, or
/// rewind, which the README supports.
fn rewind(key: &LogicalKey, n: u64) -> String {
    format!(
        "restore the item, or rewind: delete iteration {n} and every later one whole (their \
         headers under hash key {}/{} from range key {n:010} up, and all items whose hash key \
         begins {}/{}/<iteration>), so that `--iteration next` reads on from where iteration {} \
         ended",
        key.stream,
        key.logical_name,
        key.stream,
        key.logical_name,
        n.saturating_sub(1)
    )
}

/// Every check of an iteration that does not read the stream: each fixed
/// range against itself, then (given the previous iteration's items) the
/// chain, which names a deleted shard, then the items against the header.
pub fn iteration(
    key: &LogicalKey,
    header: &IterationHeader,
    shards: &[ShardCheckpoint],
    prev: Option<&[ShardCheckpoint]>,
) -> Result<(), ExitError> {
    if crate::simulation::reintroduced(crate::simulation::Bug::TableTrusted) {
        return Ok(());
    }
    for s in shards {
        range(key, header.number, s)?;
    }
    if let Some(prev) = prev {
        chain(key, header.number, prev, shards)?;
    }
    items(key, header, shards)
}

/// An iteration's shard items against its header: as many planned shards as
/// it records (a creator that died between its transactions leaves fewer,
/// none of them read, and the next run completes the plan), and joined
/// children numbered without a gap.
pub fn items(
    key: &LogicalKey,
    header: &IterationHeader,
    shards: &[ShardCheckpoint],
) -> Result<(), ExitError> {
    let n = header.number;
    let planned = shards.iter().filter(|s| s.joined.is_none()).count();
    let expected = header.shard_count as usize;
    if planned > expected || (planned < expected && !may_be_unfinished(shards)) {
        return Err(refuse(format!(
            "iteration {n} of logical name {:?}: its header records {expected} planned \
             {} (shard_count), but the table holds {planned} planned shard {} under {}: an \
             item was deleted or added by hand; {}",
            key.logical_name,
            plural(expected, "shard", "shards"),
            plural(planned, "item", "items"),
            shard_items_key(key, n),
            rewind(key, n)
        )));
    }
    let mut joined: Vec<(u32, &str)> = shards
        .iter()
        .filter_map(|s| s.joined.map(|j| (j, s.shard_id.as_str())))
        .collect();
    joined.sort();
    if let Some(recorded) = header
        .joined_children
        .filter(|c| *c as usize != joined.len())
    {
        return Err(refuse(format!(
            "iteration {n} of logical name {:?}: its header records {recorded} joined \
             {} (joined_children), but the table holds {} joined shard {} under {}: an item \
             was deleted or added by hand; {}",
            key.logical_name,
            plural(recorded as usize, "child", "children"),
            joined.len(),
            plural(joined.len(), "item", "items"),
            shard_items_key(key, n),
            rewind(key, n)
        )));
    }
    for (i, (j, id)) in joined.iter().enumerate() {
        if *j as usize != i + 1 {
            return Err(refuse(format!(
                "iteration {n} of logical name {:?}: the item of shard {id} has joined = {j}, \
                 but the children that joined its run are numbered 1 to {} without a gap: an \
                 item was deleted or its joined attribute edited; {}",
                key.logical_name,
                joined.len(),
                rewind(key, n)
            )));
        }
    }
    Ok(())
}

/// Fewer planned items than the header says can be a creation cut short
/// only while no shard of it has been read, and only with some items: the
/// header is created in one transaction with the first shard items.
pub fn may_be_unfinished(shards: &[ShardCheckpoint]) -> bool {
    !shards.is_empty() && shards.iter().all(|s| s.end.is_none() && s.joined.is_none())
}

/// One shard's fixed range against its own facts.
pub fn range(key: &LogicalKey, n: u64, s: &ShardCheckpoint) -> Result<(), ExitError> {
    let Some(e) = &s.end else { return Ok(()) };
    let bad = |attribute: &str, why: String| {
        refuse(format!(
            "iteration {n} of logical name {:?}: the item of shard {} under {} has {attribute} \
             {why}, so its range was edited by hand and cannot be replayed as recorded; {}",
            key.logical_name,
            s.shard_id,
            shard_items_key(key, n),
            rewind(key, n)
        ))
    };
    let from = e.read_from.as_ref().unwrap_or(&s.start);
    match (&e.last_sequence, e.records) {
        (None, 0) => {
            if let Some(f) = &e.first_sequence {
                return Err(bad("first_seq", format!("{f} while records is 0")));
            }
            if &e.next != from {
                return Err(bad(
                    "next",
                    format!("{} where it read nothing from {from}", e.next),
                ));
            }
        }
        (None, r) => {
            return Err(bad(
                "records",
                format!("{r} but no last_seq (the last record it read)"),
            ))
        }
        (Some(l), 0) => return Err(bad("last_seq", format!("{l} while records is 0"))),
        (Some(last), _) => {
            if e.next != Position::After(last.clone()) {
                return Err(bad(
                    "next",
                    format!("{}, not after:{last} (just after its last_seq)", e.next),
                ));
            }
            if !from.admits(last) {
                return Err(bad("last_seq", format!("{last}, before its start {from}")));
            }
            if let Some(first) = &e.first_sequence {
                if !from.admits(first) {
                    return Err(bad(
                        "start",
                        format!("{from}, past its first_seq {first} (the first record it read)"),
                    ));
                }
                if seq_cmp(first, last) == Ordering::Greater {
                    return Err(bad(
                        "first_seq",
                        format!("{first}, after its last_seq {last}"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Iteration `n`'s starts against iteration `n − 1`'s ends: a shard in both
/// starts exactly where it ended (`next`), and a shard that `n − 1` read
/// without reaching its end is in `n`. Shards `n − 1` has not fixed yet are
/// not compared.
pub fn chain(
    key: &LogicalKey,
    n: u64,
    prev: &[ShardCheckpoint],
    shards: &[ShardCheckpoint],
) -> Result<(), ExitError> {
    let here: BTreeMap<&str, &ShardCheckpoint> =
        shards.iter().map(|s| (s.shard_id.as_str(), s)).collect();
    for p in prev {
        let Some(end) = &p.end else { continue };
        match here.get(p.shard_id.as_str()) {
            Some(s) if s.start != end.next => {
                return Err(refuse(format!(
                    "iteration {n} of logical name {:?}: the item of shard {} under {} has start \
                     {}, but iteration {} ended that shard with next = {}, so the two would {} \
                     records; {}",
                    key.logical_name,
                    s.shard_id,
                    shard_items_key(key, n),
                    s.start,
                    n - 1,
                    end.next,
                    if position_before(&s.start, &end.next) {
                        "both hold"
                    } else {
                        "skip"
                    },
                    rewind(key, n)
                )))
            }
            None if !end.closed => {
                return Err(refuse(format!(
                    "iteration {n} of logical name {:?} has no item for shard {}, which iteration \
                     {} read up to {} and left open: the item under {} was deleted by hand, and \
                     the shard would never be read again; {}",
                    key.logical_name,
                    p.shard_id,
                    n - 1,
                    end.next,
                    shard_items_key(key, n),
                    rewind(key, n)
                )))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether `a` comes before `b` in a shard (for the message only).
fn position_before(a: &Position, b: &Position) -> bool {
    let seq = |p: &Position| match p {
        Position::At(s) | Position::After(s) => Some(s.clone()),
        Position::Timestamp(_) => None,
    };
    match (seq(a), seq(b)) {
        (Some(x), Some(y)) => seq_cmp(&x, &y) == Ordering::Less,
        _ => false,
    }
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::checkpoint::{IterationState, ShardEnd};

    fn key() -> LogicalKey {
        LogicalKey {
            stream: "del".into(),
            logical_name: "d".into(),
        }
    }

    fn header(n: u64, shard_count: u32) -> IterationHeader {
        IterationHeader {
            number: n,
            state: IterationState::Succeeded,
            stream_arn: "arn".into(),
            stream_created_ms: 0,
            start_spec: "trim-horizon".into(),
            opened_ms: 0,
            opened_by: "me".into(),
            shard_count,
            low_water: 0,
            owner: None,
            lease_expires_ms: 0,
            finished_ms: None,
            taken_over: None,
            joined_children: None,
        }
    }

    /// A shard read from `at:<from>` through `<last>`, `records` records.
    fn fixed(id: &str, from: u64, last: Option<(u64, u64)>) -> ShardCheckpoint {
        let start = Position::At(format!("{from:05}"));
        let (last_sequence, next, records, first) = match last {
            Some((first, last)) => (
                Some(format!("{last:05}")),
                Position::After(format!("{last:05}")),
                last - first + 1,
                Some(format!("{first:05}")),
            ),
            None => (None, start.clone(), 0, None),
        };
        ShardCheckpoint {
            shard_id: id.into(),
            parents: vec![],
            start,
            known_until_ms: None,
            end: Some(ShardEnd {
                last_sequence,
                next,
                closed: false,
                records,
                bytes: records * 9,
                fixed_ms: 1,
                fixed_by: "me".into(),
                known_until_ms: None,
                read_from: None,
                expired_skip: None,
                first_sequence: first,
                first_arrival_ms: None,
            }),
            joined: None,
        }
    }

    fn refused(r: Result<(), ExitError>, words: &[&str]) {
        let e = r.expect_err("refused").to_string();
        assert!(words.iter().all(|w| e.contains(w)), "{words:?} in {e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn a_deleted_or_added_shard_item_disagrees_with_the_header() {
        let two = [fixed("s-0", 10, Some((10, 20))), fixed("s-1", 10, None)];
        assert!(items(&key(), &header(1, 2), &two).is_ok());
        refused(
            items(&key(), &header(1, 2), &two[..1]),
            &[
                "iteration 1",
                "2 planned shards",
                "1 planned shard item",
                "del/d/0000000001",
            ],
        );
        refused(items(&key(), &header(1, 1), &two), &["holds 2 planned"]);
        // A creation cut short (nothing read yet) is for the next run to complete.
        let mut unread = fixed("s-0", 10, None);
        unread.end = None;
        assert!(items(&key(), &header(1, 2), &[unread]).is_ok());
        // But never none at all: the header is written with the first items.
        refused(
            items(&key(), &header(1, 2), &[]),
            &["holds 0 planned shard items"],
        );
        // Joined children: 1, 2, … without a gap.
        let mut j = fixed("s-2", 1, None);
        j.joined = Some(2);
        refused(
            items(
                &key(),
                &header(1, 2),
                &[two[0].clone(), two[1].clone(), j.clone()],
            ),
            &["joined = 2", "s-2"],
        );
        j.joined = Some(1);
        assert!(items(
            &key(),
            &header(1, 2),
            &[two[0].clone(), two[1].clone(), j.clone()]
        )
        .is_ok());
        // The header counts them: the highest one's item deleted is noticed.
        let mut counted = header(1, 2);
        counted.joined_children = Some(2);
        refused(
            items(&key(), &counted, &[two[0].clone(), two[1].clone(), j]),
            &["2 joined children", "1 joined shard item"],
        );
    }

    #[test]
    fn each_edit_of_a_fixed_range_is_refused_by_name() {
        let k = key();
        let good = fixed("s-1", 10, Some((12, 40)));
        assert!(range(&k, 1, &good).is_ok());
        let edit = |f: &dyn Fn(&mut ShardCheckpoint)| {
            let mut s = good.clone();
            f(&mut s);
            range(&k, 1, &s)
        };
        fn end(s: &mut ShardCheckpoint) -> &mut ShardEnd {
            s.end.as_mut().unwrap()
        }
        // last_seq removed.
        refused(
            edit(&|s| end(s).last_sequence = None),
            &["records 29", "no last_seq", "s-1"],
        );
        // start moved past the first record.
        refused(
            edit(&|s| s.start = Position::At("00013".into())),
            &["start at:00013", "past its first_seq 00012"],
        );
        // next rewound below last_seq.
        refused(
            edit(&|s| end(s).next = Position::After("00030".into())),
            &["next after:00030", "not after:00040"],
        );
        // records zeroed with a last record left.
        refused(
            edit(&|s| end(s).records = 0),
            &["last_seq 00040 while records is 0"],
        );
        // An empty range whose next moved.
        let empty = fixed("s-0", 10, None);
        assert!(range(&k, 1, &empty).is_ok());
        let mut moved = empty.clone();
        moved.end.as_mut().unwrap().next = Position::At("00020".into());
        refused(range(&k, 1, &moved), &["next at:00020", "read nothing"]);
    }

    #[test]
    fn starts_continue_the_previous_iterations_ends() {
        let k = key();
        let prev = [fixed("s-0", 1, Some((1, 9))), fixed("s-1", 1, Some((1, 5)))];
        let mut next: Vec<ShardCheckpoint> = prev
            .iter()
            .map(|p| {
                let mut s = p.clone();
                s.start = p.end.as_ref().unwrap().next.clone();
                s.end = None;
                s
            })
            .collect();
        assert!(chain(&k, 2, &prev, &next).is_ok());
        // Moved back into the previous range: records in both.
        next[1].start = Position::After("00003".into());
        refused(
            chain(&k, 2, &prev, &next),
            &["start after:00003", "next = after:00005", "both hold"],
        );
        next[1].start = Position::After("00007".into());
        refused(chain(&k, 2, &prev, &next), &["skip"]);
        // A shard left open, missing from the next iteration.
        refused(
            chain(&k, 2, &prev, &next[..1]),
            &["no item for shard s-1", "never be read"],
        );
        // A closed one is followed by its children instead.
        let mut closed = prev.clone();
        closed[1].end.as_mut().unwrap().closed = true;
        assert!(chain(&k, 2, &closed, &next[..1]).is_ok());
    }
}
