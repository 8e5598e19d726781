//! Reading without a checkpoint table: from the start position to the end
//! rule, one lineage generation after another, recording nothing.

use super::checkpointed::{end_from, end_rules};
use super::pump::{Pump, SharedWriter};
use super::Summary;
use crate::config::ReaderConfig;
use crate::format::Formatter;
use crate::lineage;
use crate::ports::checkpoint::ShardCheckpoint;
use crate::ports::stream::{ShardInfo, StreamApi};
use crate::shard::{Outcome, ReadSettings};
use anyhow::Result;
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

pub async fn read(
    api: Arc<dyn StreamApi>,
    listed: &[ShardInfo],
    cfg: &ReaderConfig,
    read: &ReadSettings,
    stream: &str,
    out: Box<dyn Write + Send>,
) -> Result<Summary> {
    let now = crate::clock::now_ms();
    let (_, not_before) = cfg.start.describe(now);
    let mut shards = lineage::first_shards(listed, &cfg.start, now);
    let mut summary = Summary::default();
    let out = Arc::new(Mutex::new(out));
    let closed = super::locate::closed_shards(listed);
    let pump = Pump {
        api,
        closed: &closed,
        rules: end_rules(cfg, now),
        settings: read.clone(),
        fmt: Formatter::new(cfg.fields.clone(), cfg.encoding, cfg.format, stream, None),
        limit: cfg.max_concurrent_shards,
        joins: None,
    };
    loop {
        let (ends_tx, mut ends_rx) = mpsc::unbounded_channel();
        let stats = pump
            .run(&shards, Box::new(SharedWriter(out.clone())), ends_tx)
            .await?;
        summary.records += stats.records;
        summary.bytes += stats.bytes;
        summary.shards += shards.len();
        let mut ends: HashMap<String, Outcome> = HashMap::new();
        while let Ok((id, o)) = ends_rx.try_recv() {
            ends.insert(id, o);
        }
        let done: Vec<ShardCheckpoint> = shards
            .iter()
            .map(|s| {
                let o = (ends.remove(&s.shard_id)).expect("every live shard reports its end");
                ShardCheckpoint {
                    end: Some(end_from(o, "", None)),
                    ..s.clone()
                }
            })
            .collect();
        // Only children of shards read to their end are read next.
        let next = lineage::next_shards(&done, listed, not_before)?;
        let new: Vec<ShardCheckpoint> = next
            .into_iter()
            .filter(|s| !done.iter().any(|d| d.shard_id == s.shard_id))
            .collect();
        if new.is_empty() {
            return Ok(summary);
        }
        shards = new;
    }
}
