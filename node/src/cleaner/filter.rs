//! Which records of a batch a clean keeps (Kafka's `LogCleaner` rules), and the batch
//! that results.
//!
//! A record survives when it has a key, no later record of that key is in the offset
//! map, and, for a tombstone (null value), its batch's KIP-534 delete horizon has not
//! passed. The first clean that keeps a tombstone stamps the horizon (now +
//! `delete.retention.ms`) on its batch; a later clean removes it once that time has
//! come. A batch left without records is dropped, unless it is the last batch of a
//! producer id still tracked, which stays as an empty batch so that the producer's
//! sequence state can be rebuilt from the log (as Kafka keeps it). Control batches
//! (transaction markers) are kept as they are.

use std::collections::HashMap;

use bytes::Bytes;
use spate_net::record_batch::{self, BatchError, RecordBatch};

use super::offset_map::OffsetMap;

/// Largest decompressed batch the cleaner inflates (as the produce path's cap).
pub const MAX_INFLATED_BATCH: usize = 256 << 20;

/// What the rules see besides the batch.
pub struct Rules<'a> {
    pub map: &'a OffsetMap,
    pub now_ms: i64,
    pub delete_retention_ms: i64,
    /// Producer id → last offset of its last batch, for producers still tracked.
    pub producer_last_offsets: &'a HashMap<i64, i64>,
}

/// What becomes of one batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Filtered {
    /// Kept byte for byte.
    Unchanged,
    /// Replaced by this batch (same base and last offset).
    Rewritten(Bytes),
    /// Gone.
    Dropped,
}

/// Counts of one batch's filtering.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FilterStats {
    pub records_read: u64,
    pub records_kept: u64,
    /// The delete horizon the kept batch carries when it keeps tombstones.
    pub delete_horizon_ms: Option<i64>,
}

/// Apply the rules to one whole batch.
pub fn filter_batch(batch: &Bytes, rules: &Rules) -> Result<(Filtered, FilterStats), BatchError> {
    let rb = RecordBatch::parse(batch.clone())?;
    let mut stats = FilterStats::default();
    if rb.is_control() {
        return Ok((Filtered::Unchanged, stats));
    }
    let horizon = rb.delete_horizon_ms();
    let mut keep = Vec::with_capacity(rb.record_count().max(0) as usize);
    let mut tombstones_kept = false;
    for record in rb.records(MAX_INFLATED_BATCH)? {
        let record = record?;
        let offset = record.offset_in(&rb);
        let kept = match &record.key {
            // Compacted topics refuse null keys; older ones go (Kafka counts them invalid).
            None => false,
            Some(key) => {
                let latest = rules.map.get(key).is_none_or(|o| offset >= o);
                let alive = record.value.is_some() || horizon.is_none_or(|h| rules.now_ms < h);
                latest && alive
            }
        };
        tombstones_kept |= kept && record.value.is_none();
        keep.push(kept);
    }
    stats.records_read = keep.len() as u64;
    stats.records_kept = keep.iter().filter(|k| **k).count() as u64;
    let new_horizon = (tombstones_kept && horizon.is_none())
        .then(|| rules.now_ms.saturating_add(rules.delete_retention_ms));
    if tombstones_kept {
        stats.delete_horizon_ms = horizon.or(new_horizon);
    }
    if stats.records_kept == stats.records_read && new_horizon.is_none() {
        return Ok((Filtered::Unchanged, stats));
    }
    if stats.records_kept == 0 {
        let last_of_producer = rb.producer_id() >= 0
            && rules.producer_last_offsets.get(&rb.producer_id()) == Some(&rb.last_offset());
        if !last_of_producer {
            return Ok((Filtered::Dropped, stats));
        }
    }
    let mut verdicts = keep.iter();
    let rebuilt = record_batch::retain_records(&rb, MAX_INFLATED_BATCH, new_horizon, |_| {
        verdicts.next().copied().unwrap_or(false)
    })?;
    Ok((Filtered::Rewritten(rebuilt), stats))
}
