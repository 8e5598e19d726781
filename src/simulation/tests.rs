//! The invariants (the architecture notes' list, as the simulation can see
//! them), a fixed set of seeds for every test run, and the proof that the
//! simulation finds the protocol bugs found before.
//!
//! `KINESIS_SIM_SEEDS=N` (and `KINESIS_SIM_FIRST=S`) runs N seeds from S;
//! `KINESIS_SIM_SEED=S` prints one seed's whole schedule.

use super::harness::{headers, replay, shards, simulate, succeeded, Report, Role, View, SKEW_MS};
use super::Bug;
use crate::error::Exit;
use crate::ports::stream::StreamApi;
use std::collections::BTreeMap;

/// Every invariant that fails once the runs of a seed have ended.
pub async fn invariants(v: &View, stuck: bool) -> Vec<String> {
    let mut bad = Vec::new();
    if stuck {
        bad.push("the runs did not all end: a run waits forever".to_string());
    }
    let hs = headers(v).await;
    // Exact replay: a succeeded iteration prints the same bytes every time.
    let mut replays: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for h in hs.iter().filter(|h| succeeded(h)) {
        match replay(v, h.number).await {
            Ok(b) => {
                replays.insert(h.number, b);
            }
            Err(e) => bad.push(format!(
                "iteration {} succeeded but does not replay: {e}",
                h.number
            )),
        }
    }
    // A succeeded iteration has every shard fixed.
    for h in hs.iter().filter(|h| succeeded(h)) {
        let unfixed = shards(v, h.number)
            .await
            .into_iter()
            .filter(|s| s.end.is_none());
        for s in unfixed {
            let n = h.number;
            bad.push(format!(
                "iteration {n} succeeded with shard {} not fixed",
                s.shard_id
            ));
        }
    }
    // What each run reports is true; `next` never delivers a succeeded
    // iteration again.
    let mut by_next: BTreeMap<u64, usize> = BTreeMap::new();
    for (id, r) in v.runs.iter().enumerate() {
        match (&r.role, &r.ended) {
            (Role::Plan, _) => {}
            (Role::Finish, Some(Ok((Some(n), _))))
                if !hs.iter().any(|h| h.number == *n && succeeded(h)) =>
            {
                bad.push(format!(
                    "run {id}'s finish of iteration {n} left it unfinished"
                ))
            }
            (Role::Task(mine), Some(Ok((Some(n), records)))) => {
                let lines = r.out.iter().filter(|b| **b == b'\n').count() as u64;
                if lines != *records {
                    bad.push(format!(
                        "map task {id} reported {records} records, printed {lines}"
                    ));
                }
                let Some(whole) = replays.get(n) else {
                    continue;
                };
                // Its shards' lines of the iteration's replay, in order.
                let theirs: String = String::from_utf8_lossy(whole)
                    .lines()
                    .filter(|l| mine.iter().any(|s| l.starts_with(&format!("{s}\t"))))
                    .map(|l| format!("{l}\n"))
                    .collect();
                if theirs.as_bytes() != r.out {
                    bad.push(format!(
                        "map task {id} of {mine:?} printed iteration {n} otherwise than its \
                         replay:\n{}\nreplay:\n{theirs}",
                        String::from_utf8_lossy(&r.out)
                    ));
                }
            }
            (Role::Read { next }, Some(Ok((Some(n), records)))) => {
                let lines = r.out.iter().filter(|b| **b == b'\n').count() as u64;
                if lines != *records {
                    bad.push(format!(
                        "run {id} reported {records} records but printed {lines}"
                    ));
                }
                if !hs.iter().any(|h| h.number == *n && succeeded(h)) {
                    bad.push(format!(
                        "run {id} succeeded on iteration {n}, which is not recorded as succeeded"
                    ));
                }
                if replays.get(n).is_some_and(|b| *b != r.out) {
                    bad.push(format!(
                        "run {id} printed iteration {n} otherwise than its replay:\n{}\nreplay:\n{}",
                        String::from_utf8_lossy(&r.out),
                        String::from_utf8_lossy(&replays[n])
                    ));
                }
                if *next {
                    if let Some(other) = by_next.insert(*n, id) {
                        bad.push(format!(
                            "runs {other} and {id}, both --iteration next, delivered iteration {n}"
                        ));
                    }
                }
            }
            (_, Some(Ok((None, _)))) => {
                bad.push(format!("run {id} succeeded without an iteration"))
            }
            (_, Some(Err((Exit::IterationOwned, msg))))
                if msg.contains(&format!("by {}", r.owner)) =>
            {
                bad.push(format!(
                    "run {id} exited 3 naming itself as the holder: {msg}"
                ))
            }
            _ => {}
        }
        if let Some(polls) = gave_up_waiting(r) {
            bad.push(format!(
                "run {id} failed after {polls} failed lease poll(s) in a row while it waited \
                 (a waiting run polls again after up to {} in a row): {:.160}",
                crate::iteration::WAIT_POLL_FAILURES,
                match &r.ended {
                    Some(Err((_, msg))) => msg.as_str(),
                    _ => "",
                }
            ));
        }
    }
    // Consecutive iterations: the earlier one succeeded before the later one
    // opened (a failed iteration is rerun first), and each shard starts where
    // it ended: no gap, no overlap.
    for pair in hs.windows(2) {
        let (p, q) = (&pair[0], &pair[1]);
        if !succeeded(p) {
            bad.push(format!(
                "iteration {} was opened while iteration {} was {:?}",
                q.number, p.number, p.state
            ));
        } else if p.finished_ms.is_some_and(|f| f > q.opened_ms + 2 * SKEW_MS) {
            bad.push(format!(
                "iteration {} was opened before iteration {} succeeded",
                q.number, p.number
            ));
        }
        let before = shards(v, p.number).await;
        for s in shards(v, q.number).await {
            match before.iter().find(|b| b.shard_id == s.shard_id) {
                Some(b) => match &b.end {
                    Some(e) if e.next == s.start => {}
                    Some(e) => bad.push(format!(
                        "shard {} ends iteration {} at {} but starts iteration {} at {}",
                        s.shard_id, p.number, e.next, q.number, s.start
                    )),
                    None => bad.push(format!(
                        "iteration {} starts shard {}, which iteration {} did not fix",
                        q.number, s.shard_id, p.number
                    )),
                },
                // A child enters after its parents (checked below).
                None if !s.parents.is_empty() => {}
                None => bad.push(format!(
                    "iteration {} reads shard {}, which iteration {} did not have",
                    q.number, s.shard_id, p.number
                )),
            }
        }
    }
    // Lineage: a shard with parents enters an iteration once every parent
    // was read to its end in an earlier one or is in the same one; there it
    // reads something only if each such parent was read to its end, and its
    // lines follow all of theirs.
    let mut closed_before: Vec<String> = Vec::new();
    for h in &hs {
        let its = shards(v, h.number).await;
        let lines: Vec<&str> = replays
            .get(&h.number)
            .map(|b| std::str::from_utf8(b).unwrap_or("").lines().collect())
            .unwrap_or_default();
        let at = |shard: &str| -> Vec<usize> {
            let prefix = format!("{shard}\t");
            (0..lines.len())
                .filter(|i| lines[*i].starts_with(&prefix))
                .collect()
        };
        for s in &its {
            for p in s.parents.iter().filter(|p| !closed_before.contains(p)) {
                let Some(parent) = its.iter().find(|o| &o.shard_id == p) else {
                    bad.push(format!(
                        "iteration {} reads shard {} before its parent {p} was read to its end",
                        h.number, s.shard_id
                    ));
                    continue;
                };
                let read = s.end.as_ref().is_some_and(|e| e.last_sequence.is_some());
                let parent_closed = parent.end.as_ref().is_some_and(|e| e.closed);
                if read && !parent_closed {
                    bad.push(format!(
                        "iteration {} reads shard {} although its parent {p} was not read to \
                         its end there",
                        h.number, s.shard_id
                    ));
                }
                let (mine, theirs) = (at(&s.shard_id), at(p));
                if let (Some(first), Some(last)) = (mine.first(), theirs.last()) {
                    if first < last {
                        bad.push(format!(
                            "iteration {} writes a line of shard {} (line {first}) before the \
                             last of its parent {p} (line {last})",
                            h.number, s.shard_id
                        ));
                    }
                }
            }
        }
        let ended = its
            .into_iter()
            .filter(|s| s.end.as_ref().is_some_and(|e| e.closed));
        closed_before.extend(ended.map(|s| s.shard_id));
    }
    // The stream: the succeeded iterations, in order, hold each shard's
    // records once each and in order, and every record that arrived before
    // the last one's snapshot (less the clock's skew).
    let done: Vec<u64> = (0..).take_while(|n| replays.contains_key(n)).collect();
    let mut read: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in &done {
        for line in String::from_utf8_lossy(&replays[n]).lines() {
            let mut f = line.split('\t');
            let (shard, seq) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
            read.entry(shard.to_string())
                .or_default()
                .push(seq.to_string());
        }
    }
    let snapshot = done
        .last()
        .and_then(|n| hs.iter().find(|h| h.number == *n))
        .map(|h| h.opened_ms);
    let last_shards: Vec<String> = match done.last() {
        Some(n) => shards(v, *n)
            .await
            .into_iter()
            .map(|s| s.shard_id)
            .collect(),
        None => Vec::new(),
    };
    let mut delivered: BTreeMap<String, usize> = BTreeMap::new();
    for (shard, recs) in &v.records {
        let got = read.remove(shard).unwrap_or_default();
        delivered.insert(shard.clone(), got.len());
        let want: Vec<String> = recs.iter().map(|r| r.sequence_number.clone()).collect();
        if got.len() > want.len() || got[..] != want[..got.len()] {
            bad.push(format!(
                "the succeeded iterations hold shard {shard}'s records {got:?}, not a prefix of \
                 {want:?}"
            ));
            continue;
        }
        // (A child not yet in the last iteration waits for its parents' end.)
        let due = match (snapshot, last_shards.contains(shard)) {
            (Some(t), true) => recs.iter().filter(|r| r.arrival_ms < t - SKEW_MS).count(),
            _ => 0,
        };
        if got.len() < due {
            bad.push(format!(
                "shard {shard}: {due} records arrived before iteration {:?}'s snapshot, but the \
                 iterations hold {}",
                done.last(),
                got.len()
            ));
        }
    }
    bad.extend(
        read.keys()
            .map(|s| format!("records of unknown shard {s:?}")),
    );
    // Nothing lost: a record the succeeded iterations do not hold is on a
    // shard of the last one, or on a descendant of one (still to come).
    if let Some(k) = done.last() {
        let listed = v.stream.list_shards().await.unwrap_or_default();
        let mut to_come: Vec<String> = last_shards.clone();
        loop {
            let more: Vec<String> = listed
                .iter()
                .filter(|c| !to_come.contains(&c.shard_id))
                .filter(|c| c.parents().iter().any(|p| to_come.contains(p)))
                .map(|c| c.shard_id.clone())
                .collect();
            if more.is_empty() {
                break;
            }
            to_come.extend(more);
        }
        for (shard, recs) in &v.records {
            let held = delivered.get(shard).copied().unwrap_or(0);
            if held < recs.len() && !to_come.contains(shard) {
                bad.push(format!(
                    "shard {shard}: {} of its records are in no iteration up to {k} and it is not \
                     to come after it (lost from the lineage)",
                    recs.len() - held
                ));
            }
        }
    }
    bad
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

/// The message for a seed that broke an invariant: what broke, the end of
/// its schedule, and how to replay it.
fn failure(seed: u64, r: &Report) -> String {
    let tail = r.trace.len().saturating_sub(60);
    format!(
        "seed {seed} broke {} invariant(s):\n  {}\nlast steps of its schedule:\n{}\nreplay it \
         step by step: KINESIS_SIM_SEED={seed} cargo test --lib simulation::tests::one_seed -- \
         --nocapture",
        r.violations.len(),
        r.violations.join("\n  "),
        r.trace[tail..].join("\n")
    )
}

/// Seeds 1..=200 on every test run (more with `KINESIS_SIM_SEEDS`).
#[test]
fn every_seed_keeps_every_invariant() {
    let first = env_u64("KINESIS_SIM_FIRST").unwrap_or(1);
    let count = env_u64("KINESIS_SIM_SEEDS").unwrap_or(200);
    let (mut steps, mut outcomes, mut iterations, mut later) = (0, (0, 0, 0), 0, 0);
    let (mut map_mode, mut children, mut joined, mut edits) = ((0, 0), 0, 0, 0);
    for seed in first..first + count {
        let r = simulate(seed, None);
        assert!(r.violations.is_empty(), "{}", failure(seed, &r));
        steps += r.steps;
        iterations += r.iterations;
        later += r.later_records;
        map_mode = (map_mode.0 + r.map_mode.0, map_mode.1 + r.map_mode.1);
        children += r.child_records;
        joined += r.joined_records;
        edits += r.hand_edits;
        outcomes = (
            outcomes.0 + r.outcomes.0,
            outcomes.1 + r.outcomes.1,
            outcomes.2 + r.outcomes.2,
        );
    }
    eprintln!(
        "{count} seeds from {first}: {steps} scheduling steps; runs {} succeeded, {} failed, {} \
         killed; {iterations} iterations succeeded, {later} records in those after the first; \
         {} map tasks and {} finishes succeeded; {children} records of split or merged shards' \
         children, {joined} of them in children that joined a run; {edits} hand edits of the \
         table, each refused",
        outcomes.0, outcomes.1, outcomes.2, map_mode.0, map_mode.1
    );
    // The seeds must exercise the protocol, not only fail: runs of every
    // ending, iterations after the first that carry records, map mode,
    // children of splits and merges.
    let count = count as usize;
    assert!(outcomes.0 > count, "{outcomes:?}");
    assert!(outcomes.1 > 0 && outcomes.2 > 0, "{outcomes:?}");
    assert!(
        iterations > count && later > count as u64,
        "{iterations} {later}"
    );
    assert!(
        map_mode.0 > count / 10 && map_mode.1 > count / 20,
        "{map_mode:?}"
    );
    assert!(
        children > count as u64 / 4 && joined > 0,
        "{children} records of children, {joined} of joined children"
    );
    assert!(edits > count / 2, "{edits} hand edits");
}

/// One seed, one schedule: the trace is the same every time.
#[test]
fn a_seed_replays_its_schedule_exactly() {
    for seed in [7, 1_234] {
        let (a, b) = (simulate(seed, None), simulate(seed, None));
        assert!(a.trace.len() > 50, "{}", a.trace.join("\n"));
        assert_eq!(a.trace, b.trace, "seed {seed}");
    }
}

/// Each protocol bug found before, put back, breaks an invariant within a
/// few seeds.
#[test]
fn bugs_found_before_are_found_again() {
    for bug in [
        Bug::NextReplaysASuccess,
        Bug::OwnLeaseIsARival,
        Bug::PollGivesUp,
        Bug::TableTrusted,
    ] {
        let found = (1..=300u64).find_map(|s| {
            let broke = simulate(s, Some(bug)).violations;
            Some((s, broke.into_iter().next()?))
        });
        let (seed, what) = found.unwrap_or_else(|| panic!("{bug:?} not found in 300 seeds"));
        eprintln!("{bug:?}: found by seed {seed}: {what:.200}");
    }
}

/// A run that failed right after lease polls that failed, fewer in a row
/// than a waiting run rides out: how many. It was waiting if an answered
/// poll came before them (an answered lease request that the run follows
/// with another can only have found the lease held).
fn gave_up_waiting(r: &super::harness::RunView) -> Option<usize> {
    if r.killed || !matches!(r.ended, Some(Err(_))) {
        return None;
    }
    let polls: Vec<bool> = r
        .calls
        .iter()
        .rev()
        .take_while(|(method, _)| *method == "acquire")
        .map(|(_, fault)| {
            matches!(
                fault,
                Some(
                    crate::fakes::Fault::Fail
                        | crate::fakes::Fault::Dropped
                        | crate::fakes::Fault::Lost
                )
            )
        })
        .collect();
    let failed = polls.iter().take_while(|f| **f).count();
    let waited = polls.len() > failed;
    let tolerated = crate::iteration::WAIT_POLL_FAILURES as usize;
    (waited && (1..=tolerated).contains(&failed)).then_some(failed)
}

/// `KINESIS_SIM_SEED=S`: seed S's whole schedule and what it broke.
#[test]
fn one_seed() {
    let Some(seed) = env_u64("KINESIS_SIM_SEED") else {
        return;
    };
    let r = simulate(seed, None);
    eprintln!("{}", r.trace.join("\n"));
    assert!(r.violations.is_empty(), "{}", failure(seed, &r));
}
