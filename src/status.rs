//! `kinesis-reader status`: the iterations of a logical name, one row per
//! shard, as an aligned table or JSON, with the leases held on them: the
//! whole run's, or a map task's on each shard it reads.

use crate::clock::fmt_ms;
use crate::ports::checkpoint::{
    CheckpointStore, IterationHeader, IterationState, LogicalKey, ShardCheckpoint, TaskLease,
};
use anyhow::Result;
use serde_json::json;
use std::io::Write;

pub async fn status(
    store: &dyn CheckpointStore,
    key: &LogicalKey,
    last: usize,
    as_json: bool,
    now_ms: i64,
    out: &mut impl Write,
) -> Result<usize> {
    let mut headers = store.headers(key).await?;
    if last > 0 && headers.len() > last {
        headers.drain(..headers.len() - last);
    }
    let mut all = Vec::new();
    for h in headers {
        let shards = store.shards(key, h.number).await?;
        // A succeeded iteration takes no leases: only replays.
        let tasks = match h.state {
            IterationState::Succeeded => Vec::new(),
            _ => store.task_leases(key, h.number).await?,
        };
        all.push(Iteration { h, shards, tasks });
    }
    if as_json {
        let v: Vec<_> = all.iter().map(|i| to_json(i, now_ms)).collect();
        serde_json::to_writer_pretty(&mut *out, &v)?;
        writeln!(out)?;
    } else {
        write_table(&all, now_ms, out)?;
    }
    Ok(all.len())
}

struct Iteration {
    h: IterationHeader,
    shards: Vec<ShardCheckpoint>,
    tasks: Vec<TaskLease>,
}

impl Iteration {
    fn task_lease(&self, shard_id: &str) -> Option<&TaskLease> {
        self.tasks.iter().find(|t| t.shard_id == shard_id)
    }
}

fn to_json(it: &Iteration, now_ms: i64) -> serde_json::Value {
    let (h, shards) = (&it.h, &it.shards);
    json!({
        "iteration": h.number,
        "state": h.state.as_str(),
        "stream_arn": h.stream_arn,
        "start_spec": h.start_spec,
        "opened_at": fmt_ms(h.opened_ms),
        "opened_by": h.opened_by,
        "finished_at": h.finished_ms.map(fmt_ms),
        "lease_owner": h.owner,
        "lease_expires_at": h.owner.as_ref().map(|_| fmt_ms(h.lease_expires_ms)),
        "taken_over": h.taken_over.as_ref().map(|t| json!({
            "from": t.from,
            "by": t.by,
            "at": fmt_ms(t.at_ms),
        })),
        "records": shards.iter().filter_map(|s| s.end.as_ref()).map(|e| e.records).sum::<u64>(),
        "shards": shards.iter().map(|s| json!({
            "shard_id": s.shard_id,
            "parents": s.parents,
            "joined": s.joined,
            "start": s.start.to_string(),
            "last_sequence_number": s.end.as_ref().and_then(|e| e.last_sequence.clone()),
            "next": s.end.as_ref().map(|e| e.next.to_string()),
            "closed": s.end.as_ref().map(|e| e.closed),
            "records": s.end.as_ref().map(|e| e.records),
            "bytes": s.end.as_ref().map(|e| e.bytes),
            "fixed_at": s.end.as_ref().map(|e| fmt_ms(e.fixed_ms)),
            "fixed_by": s.end.as_ref().map(|e| e.fixed_by.clone()),
            "read_from": s.end.as_ref().and_then(|e| e.read_from.as_ref().map(|p| p.to_string())),
            "expired_skip": s.end.as_ref().and_then(|e| e.expired_skip.clone()),
            "task_lease": it.task_lease(&s.shard_id).map(|t| json!({
                "owner": t.owner,
                "expires_at": fmt_ms(t.expires_ms),
                "lapsed": t.expires_ms <= now_ms,
            })),
        })).collect::<Vec<_>>(),
    })
}

fn write_table(all: &[Iteration], now_ms: i64, out: &mut impl Write) -> Result<()> {
    let mut rows = vec![[
        "ITERATION",
        "STATE",
        "SHARD",
        "START",
        "LAST_RECORD",
        "RECORDS",
        "OPENED",
        "FIXED",
        "BY",
    ]
    .map(String::from)];
    for it in all {
        let (h, shards) = (&it.h, &it.shards);
        let mut state = match &h.owner {
            Some(o) => format!(
                "{} (lease {o} until {})",
                h.state.as_str(),
                fmt_ms(h.lease_expires_ms)
            ),
            None => h.state.as_str().to_string(),
        };
        if let Some(t) = &h.taken_over {
            state.push_str(&format!(
                " (taken over from {} by {} at {})",
                t.from,
                t.by,
                fmt_ms(t.at_ms)
            ));
        }
        for s in shards {
            let e = s.end.as_ref();
            let state = match it.task_lease(&s.shard_id) {
                Some(t) if t.expires_ms > now_ms => format!(
                    "{} (map task {} until {})",
                    h.state.as_str(),
                    t.owner,
                    fmt_ms(t.expires_ms)
                ),
                Some(t) => format!(
                    "{} (map task {}: lease lapsed {})",
                    h.state.as_str(),
                    t.owner,
                    fmt_ms(t.expires_ms)
                ),
                None => state.clone(),
            };
            rows.push([
                h.number.to_string(),
                state,
                s.shard_id.clone(),
                s.start.to_string(),
                e.map_or("-".into(), |e| {
                    let mut t = e.last_sequence.clone().unwrap_or_else(|| "(none)".into());
                    if e.closed {
                        t.push_str(" closed");
                    }
                    t
                }),
                e.map_or("-".into(), |e| e.records.to_string()),
                fmt_ms(h.opened_ms),
                e.map_or("-".into(), |e| fmt_ms(e.fixed_ms)),
                e.map_or_else(|| h.opened_by.clone(), |e| e.fixed_by.clone()),
            ]);
        }
    }
    let widths: Vec<usize> = (0..9)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}
