//! Interleaving the shards of an iteration on one output, deterministically.
//!
//! Records are written in order of (arrival time, shard), taking the next
//! record of each shard in sequence order. That order depends only on the
//! records themselves, so a replay of an iteration prints exactly the bytes
//! of its first run, while every shard is read at once.
//!
//! To pick the next record the merge needs the next record of every shard
//! that may still produce one. A caught-up shard (an empty page with nothing
//! behind) sends a *watermark* instead: records of other shards that arrived
//! before it can go out; later ones wait until that shard has data, moves its
//! watermark, or ends. This keeps a quiet shard from stalling the output for
//! more than about a poll interval.
//!
//! When a shard has ended and all of its records are written and flushed, the
//! shard's `on_done` callback runs (it fixes the shard's boundary): a boundary
//! is never fixed past what was delivered.
//!
//! A child shard (of a split or merge) read in the same run as its parents
//! joins the merge when its last parent has finished: until then it neither
//! holds the others back nor has its records written. So its records follow
//! all of its parents', at a point of the output fixed by the records alone.
//!
//! A child may also join while the merge runs, when a parent is read to its
//! end because it closed during the run: `on_done` then answers with the
//! lanes that join (maybe none), and nothing else is written until they are
//! in. They take the next lane numbers, so a replay that has them from the
//! start, after every other lane and waiting for their parents, writes the
//! same bytes.

use crate::format::Formatter;
use crate::pages::ShardPages;
use crate::records::{RecordRef, Records};
use crate::shard::{Outcome, ShardEvent};
use anyhow::{Context, Result};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::Write;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// What `on_done` answers for a finished shard: `Some` when children may
/// join the merge now; they come through the receiver.
pub type Joining = Option<oneshot::Receiver<Vec<MergeShard>>>;

#[derive(Debug, PartialEq)]
enum State {
    Active,
    Idle(i64),
    Done,
}

/// One shard's lane in the merge: its pages waiting to be written, and its state.
struct Lane {
    shard_id: String,
    /// Pages not fully written yet, each with its next record's index.
    pages: VecDeque<(Records, usize)>,
    state: State,
    outcome: Option<Outcome>,
    finished: bool,
    page_slots: Arc<ShardPages>,
    /// Parents in this merge not finished yet: the lane waits while any is.
    waiting: usize,
    /// Lanes that wait for this one.
    children: Vec<usize>,
}

impl Lane {
    /// A lane with nothing read yet, waiting for `waiting` parents.
    fn new(
        shard_id: String,
        page_slots: Arc<ShardPages>,
        waiting: usize,
        children: Vec<usize>,
    ) -> Lane {
        Lane {
            shard_id,
            pages: VecDeque::new(),
            state: State::Active,
            outcome: None,
            finished: false,
            page_slots,
            waiting,
            children,
        }
    }
    fn head(&self) -> Option<RecordRef<'_>> {
        self.pages.front().map(|(p, next)| p.get(*next))
    }
    fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }
}

/// A shard as the merge sees it.
pub struct MergeShard {
    pub shard_id: String,
    pub page_slots: Arc<ShardPages>,
    /// The lanes of this shard's parents in the same merge.
    pub parents: Vec<usize>,
}

/// Counts for the run summary.
#[derive(Debug, Default, Clone, Copy)]
pub struct MergeStats {
    pub records: u64,
    pub bytes: u64,
    /// Shards that joined while the merge ran.
    pub joined: usize,
}

/// Runs until every shard is done. Its only wait is for the next shard
/// event; writes to `out` block, so the reader runs it on a blocking thread
/// (`Handle::block_on`), and the simulation inline on its own runtime.
pub async fn merge(
    shards: Vec<MergeShard>,
    mut events: mpsc::Receiver<(usize, ShardEvent)>,
    out: &mut impl Write,
    fmt: &Formatter,
    mut on_done: impl FnMut(usize, Option<Outcome>) -> Result<Joining>,
) -> Result<MergeStats> {
    let mut children = vec![Vec::new(); shards.len()];
    for (i, s) in shards.iter().enumerate() {
        for p in &s.parents {
            children[*p].push(i);
        }
    }
    let mut lanes: Vec<Lane> = shards
        .into_iter()
        .zip(children)
        .map(|(s, children)| Lane::new(s.shard_id, s.page_slots, s.parents.len(), children))
        .collect();
    let mut heap: BinaryHeap<Reverse<(i64, usize)>> = BinaryHeap::new();
    let mut stats = MergeStats::default();
    let mut unfinished = lanes.len();

    // Applies one event; returns the shard index if it may have finished.
    let apply = |lanes: &mut Vec<Lane>,
                 heap: &mut BinaryHeap<Reverse<(i64, usize)>>,
                 (i, ev): (usize, ShardEvent)|
     -> Result<()> {
        let s = &mut lanes[i];
        match ev {
            ShardEvent::Page(records) => {
                if records.is_empty() {
                    s.page_slots.release();
                    return Ok(());
                }
                let was_empty = s.is_empty();
                s.pages.push_back((records, 0));
                s.state = State::Active;
                if was_empty && s.waiting == 0 {
                    let h = s.head().expect("non-empty page");
                    heap.push(Reverse((h.arrival_ms, i)));
                }
            }
            ShardEvent::Idle { watermark_ms } => s.state = State::Idle(watermark_ms),
            ShardEvent::Done(o) => {
                s.state = State::Done;
                s.outcome = o;
            }
            ShardEvent::Failed => return Err(anyhow::anyhow!("shard {} failed", s.shard_id)),
        }
        Ok(())
    };

    loop {
        // Finish every shard that is done and fully written; its children
        // whose parents are all finished join.
        let mut i = 0;
        while i < lanes.len() {
            let s = &mut lanes[i];
            if !s.finished && s.waiting == 0 && s.state == State::Done && s.is_empty() {
                s.finished = true;
                unfinished -= 1;
                out.flush().context("writing to stdout")?;
                let id = s.shard_id.clone();
                if let Some(joining) = on_done(i, s.outcome.take())? {
                    let joined = joining.await.map_err(|_| {
                        anyhow::anyhow!("the children of shard {id} could not join the run")
                    })?;
                    stats.joined += joined.len();
                    for j in joined {
                        let c = lanes.len();
                        let waiting: Vec<usize> = j
                            .parents
                            .into_iter()
                            .filter(|p| !lanes[*p].finished)
                            .collect();
                        for p in &waiting {
                            lanes[*p].children.push(c);
                        }
                        lanes.push(Lane::new(
                            j.shard_id,
                            j.page_slots,
                            waiting.len(),
                            Vec::new(),
                        ));
                        unfinished += 1;
                    }
                }
                for c in lanes[i].children.clone() {
                    let child = &mut lanes[c];
                    child.waiting -= 1;
                    if child.waiting == 0 {
                        if let Some(h) = child.head() {
                            heap.push(Reverse((h.arrival_ms, c)));
                        }
                    }
                }
            }
            i += 1;
        }
        if unfinished == 0 {
            break;
        }
        while let Ok(ev) = events.try_recv() {
            apply(&mut lanes, &mut heap, ev)?;
        }
        // A shard that may still produce a record and has none buffered blocks
        // the merge; an idle one only bounds it. So does one that is done but
        // not finished yet: its children join when it is, before anything
        // else goes out.
        let mut blocked = false;
        let mut bound: Option<i64> = None;
        for s in lanes.iter().filter(|s| s.waiting == 0) {
            if s.is_empty() {
                match s.state {
                    State::Active => blocked = true,
                    State::Idle(w) => bound = Some(bound.map_or(w, |b: i64| b.min(w))),
                    State::Done => blocked |= !s.finished,
                }
            }
        }
        let next = heap.peek().map(|Reverse(k)| *k);
        let emit = match next {
            Some((ts, _)) if !blocked => bound.is_none_or(|b| ts < b),
            _ => false,
        };
        if !emit {
            if lanes
                .iter()
                .any(|s| s.state == State::Done && s.is_empty() && !s.finished && s.waiting == 0)
            {
                continue;
            }
            out.flush().context("writing to stdout")?;
            match events.recv().await {
                Some(ev) => apply(&mut lanes, &mut heap, ev)?,
                None => anyhow::bail!("all shard readers stopped before their shards were done"),
            }
            continue;
        }
        // Emit every record we can from the heap before looking at events again.
        while let Some(&Reverse((ts, i))) = heap.peek() {
            if bound.is_some_and(|b| ts >= b) {
                break;
            }
            heap.pop();
            let s = &mut lanes[i];
            let (page, next) = s.pages.front_mut().expect("heap entry has a page");
            let r = page.get(*next);
            fmt.write(out, &s.shard_id, r)
                .context("writing to stdout")?;
            stats.records += 1;
            stats.bytes += r.data.len() as u64;
            *next += 1;
            if *next == page.len() {
                s.pages.pop_front();
                s.page_slots.release();
            }
            match s.head() {
                Some(h) => heap.push(Reverse((h.arrival_ms, i))),
                // This shard now needs its next page (or its watermark/end).
                None => break,
            }
        }
    }
    out.flush().context("writing to stdout")?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{DataEncoding, Field, OutputFormat};
    use crate::ports::stream::Record;
    use bytes::Bytes;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread().build();
        rt.unwrap().block_on(f)
    }

    /// Lines of the shard id and the data.
    fn shard_and_data() -> Formatter {
        Formatter::new(
            vec![Field::ShardId, Field::Data],
            DataEncoding::Escape,
            OutputFormat::Tsv,
            "s",
            None,
        )
    }

    fn rec(seq: u32, ts: i64) -> Record {
        Record {
            sequence_number: seq.to_string(),
            sub_sequence_number: None,
            partition_key: "k".into(),
            data: Bytes::from(format!("r{seq}")),
            arrival_ms: ts,
        }
    }

    /// Feeds the same per-shard records in different page splits and event
    /// orders: the output must be the same bytes every time.
    #[test]
    fn output_order_depends_only_on_records() {
        let a = vec![rec(1, 10), rec(2, 30), rec(3, 30), rec(4, 50)];
        let b = vec![rec(1, 20), rec(2, 30), rec(3, 40)];
        let fmt = shard_and_data();
        let run = |split: usize, b_first: bool| {
            let (tx, rx) = mpsc::channel(64);
            let mut evs = Vec::new();
            for (i, recs) in [(0usize, &a), (1usize, &b)] {
                let mut e: Vec<(usize, ShardEvent)> = recs
                    .chunks(split)
                    .map(|c| (i, ShardEvent::Page(c.to_vec().into())))
                    .collect();
                e.push((i, ShardEvent::Done(None)));
                evs.push(e);
            }
            if b_first {
                evs.reverse();
            }
            for e in evs.into_iter().flatten() {
                tx.try_send(e).unwrap();
            }
            drop(tx);
            let shards = ["a", "b"]
                .iter()
                .map(|s| MergeShard {
                    shard_id: s.to_string(),
                    page_slots: ShardPages::alone(),
                    parents: vec![],
                })
                .collect();
            let mut out = Vec::new();
            let mut done = Vec::new();
            block_on(merge(shards, rx, &mut out, &fmt, |i, _| {
                done.push(i);
                Ok(None)
            }))
            .unwrap();
            assert_eq!(done.len(), 2);
            String::from_utf8(out).unwrap()
        };
        let first = run(1, false);
        assert_eq!(first, "a\tr1\nb\tr1\na\tr2\na\tr3\nb\tr2\nb\tr3\na\tr4\n");
        for split in 1..5 {
            assert_eq!(run(split, true), first);
            assert_eq!(run(split, false), first);
        }
    }

    /// p is split into c1 and c2, which merge-by-arrival alone would
    /// interleave with p (their clocks are off); o is unrelated. Whatever the
    /// event order, each child's records follow all of p's, the output is the
    /// same bytes, and a child finishes only after its parent.
    #[test]
    fn children_follow_their_parents_whatever_the_arrival_times() {
        let p = vec![rec(1, 10), rec(2, 40), rec(3, 70)];
        let c1 = vec![rec(1, 20), rec(2, 80)];
        let c2 = vec![rec(1, 30)];
        let o = vec![rec(1, 15), rec(2, 50), rec(3, 90)];
        let fmt = shard_and_data();
        let run = |order: &[usize]| {
            let (tx, rx) = mpsc::channel(64);
            let lanes = [&p, &c1, &c2, &o];
            for &i in order {
                for r in lanes[i] {
                    tx.try_send((i, ShardEvent::Page(vec![r.clone()].into())))
                        .unwrap();
                }
                tx.try_send((i, ShardEvent::Done(None))).unwrap();
            }
            drop(tx);
            let shards = [
                ("p", vec![]),
                ("c1", vec![0]),
                ("c2", vec![0]),
                ("o", vec![]),
            ]
            .into_iter()
            .map(|(s, parents)| MergeShard {
                shard_id: s.to_string(),
                page_slots: ShardPages::alone(),
                parents,
            })
            .collect();
            let mut out = Vec::new();
            let mut done = Vec::new();
            block_on(merge(shards, rx, &mut out, &fmt, |i, _| {
                done.push(i);
                Ok(None)
            }))
            .unwrap();
            let at = |i| done.iter().position(|d| *d == i).unwrap();
            assert!(at(0) < at(1) && at(0) < at(2), "{done:?}");
            String::from_utf8(out).unwrap()
        };
        let first = run(&[0, 1, 2, 3]);
        assert_eq!(
            first,
            "p\tr1\no\tr1\np\tr2\no\tr2\np\tr3\nc1\tr1\nc2\tr1\nc1\tr2\no\tr3\n"
        );
        for order in [[3, 2, 1, 0], [1, 2, 3, 0], [2, 0, 3, 1]] {
            assert_eq!(run(&order), first, "events in the order {order:?}");
        }
    }

    /// q, read to its end before with nothing left, is done at once; its
    /// child k joins before o's later record can go out.
    #[test]
    fn a_parent_done_at_once_lets_its_child_join_before_anything_else() {
        let fmt = shard_and_data();
        let (tx, rx) = mpsc::channel(64);
        tx.try_send((2, ShardEvent::Page(vec![rec(1, 50)].into())))
            .unwrap();
        tx.try_send((0, ShardEvent::Done(None))).unwrap();
        tx.try_send((1, ShardEvent::Page(vec![rec(1, 10)].into())))
            .unwrap();
        tx.try_send((1, ShardEvent::Done(None))).unwrap();
        tx.try_send((2, ShardEvent::Done(None))).unwrap();
        drop(tx);
        let shards = [("q", vec![]), ("k", vec![0]), ("o", vec![])]
            .into_iter()
            .map(|(s, parents)| MergeShard {
                shard_id: s.to_string(),
                page_slots: ShardPages::alone(),
                parents,
            })
            .collect();
        let mut out = Vec::new();
        block_on(merge(shards, rx, &mut out, &fmt, |_, _| Ok(None))).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "k\tr1\no\tr1\n");
    }

    /// p splits into c1 and c2 while the merge runs: they join when p is
    /// finished, as lanes 2 and 3. The bytes are those of a merge that had
    /// them from the start as lanes 2 and 3 waiting for p (a replay), even
    /// where c1's record has the same arrival time as o's second one.
    #[test]
    fn children_that_join_while_the_merge_runs_print_as_a_replay_does() {
        let fmt = shard_and_data();
        let (p, o) = (vec![rec(1, 10), rec(2, 40)], vec![rec(1, 20), rec(2, 50)]);
        let (c1, c2) = (vec![rec(1, 50), rec(2, 60)], vec![rec(1, 30)]);
        let lane = |s: &str, parents: Vec<usize>| MergeShard {
            shard_id: s.to_string(),
            page_slots: ShardPages::alone(),
            parents,
        };
        let feed = |tx: &mpsc::Sender<(usize, ShardEvent)>, i: usize, recs: &[Record]| {
            for r in recs {
                tx.try_send((i, ShardEvent::Page(vec![r.clone()].into())))
                    .unwrap();
            }
            tx.try_send((i, ShardEvent::Done(None))).unwrap();
        };

        let (tx, rx) = mpsc::channel(64);
        for (i, recs) in [&p, &o, &c1, &c2].into_iter().enumerate() {
            feed(&tx, i, recs);
        }
        drop(tx);
        let lanes = vec![
            lane("p", vec![]),
            lane("o", vec![]),
            lane("c1", vec![0]),
            lane("c2", vec![0]),
        ];
        let mut replayed = Vec::new();
        block_on(merge(lanes, rx, &mut replayed, &fmt, |_, _| Ok(None))).unwrap();

        let (tx, rx) = mpsc::channel(64);
        feed(&tx, 0, &p);
        feed(&tx, 1, &o);
        let mut late = Some(tx.clone());
        drop(tx);
        let mut asked = Vec::new();
        let mut joined = Vec::new();
        let stats = block_on(merge(
            vec![lane("p", vec![]), lane("o", vec![])],
            rx,
            &mut joined,
            &fmt,
            |i, _| {
                asked.push(i);
                if i != 0 {
                    return Ok(None);
                }
                // The children's pages come once they have joined.
                let tx = late.take().unwrap();
                feed(&tx, 2, &c1);
                feed(&tx, 3, &c2);
                let (answer, joining) = oneshot::channel();
                answer
                    .send(vec![lane("c1", vec![0]), lane("c2", vec![0])])
                    .unwrap_or_else(|_| panic!("the merge waits"));
                Ok(Some(joining))
            },
        ))
        .unwrap();
        assert_eq!(stats.joined, 2);
        assert_eq!(asked.len(), 4, "every lane finishes once: {asked:?}");
        let out = String::from_utf8(joined).unwrap();
        assert_eq!(out, "p\tr1\no\tr1\np\tr2\nc2\tr1\no\tr2\nc1\tr1\nc1\tr2\n");
        assert_eq!(out.as_bytes(), replayed);
    }

    #[test]
    fn idle_watermark_lets_older_records_through_only() {
        let fmt = Formatter::new(
            vec![Field::Data],
            DataEncoding::Escape,
            OutputFormat::Tsv,
            "s",
            None,
        );
        let (tx, rx) = mpsc::channel(64);
        tx.try_send((0, ShardEvent::Page(vec![rec(1, 10), rec(2, 100)].into())))
            .unwrap();
        tx.try_send((1, ShardEvent::Idle { watermark_ms: 50 }))
            .unwrap();
        let shards = ["a", "b"]
            .iter()
            .map(|s| MergeShard {
                shard_id: s.to_string(),
                page_slots: ShardPages::alone(),
                parents: vec![],
            })
            .collect();
        let handle = std::thread::spawn(move || {
            let mut out = Vec::new();
            block_on(merge(shards, rx, &mut out, &fmt, |_, _| Ok(None))).map(|_| out)
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        // The idle shard then produces a record older than a's second one.
        tx.try_send((1, ShardEvent::Page(vec![rec(1, 60)].into())))
            .unwrap();
        tx.try_send((1, ShardEvent::Done(None))).unwrap();
        tx.try_send((0, ShardEvent::Done(None))).unwrap();
        let out = String::from_utf8(handle.join().unwrap().unwrap()).unwrap();
        assert_eq!(out, "r1\nr1\nr2\n");
    }
}
