//! Which records of a batch a clean keeps (Kafka's `LogCleaner` rules), and the batch
//! that results.
//!
//! A record survives when it has a key, no later record of that key is in the offset
//! map, and, for a tombstone (null value), its batch's KIP-534 delete horizon has not
//! passed. The first clean that keeps a tombstone stamps the horizon (now +
//! `delete.retention.ms`) on its batch; a later clean removes it once that time has
//! come. A batch left without records is dropped, unless it is the last batch of a
//! producer id still tracked, which stays as an empty batch so that the producer's
//! sequence state can be rebuilt from the log (as Kafka keeps it).
//!
//! A transaction marker stays while any batch of its transaction is still in the log
//! (the clean reads the log in offset order and notes which producers' transactions it
//! has seen data of). Once none is, the marker gets a delete horizon like a tombstone,
//! and goes with the first clean after it: readers that were past it by then saw it;
//! later ones have nothing for it to decide.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use spate_net::record_batch::{self, BatchError, RecordBatch};

use super::offset_map::OffsetMap;
use crate::partition::AbortedTxn;

/// Largest decompressed batch the cleaner inflates (as the produce path's cap).
pub const MAX_INFLATED_BATCH: usize = 256 << 20;

/// What the rules see besides the batch.
pub struct Rules<'a> {
    pub map: &'a OffsetMap,
    pub now_ms: i64,
    pub delete_retention_ms: i64,
    /// Producer id → last offset of its last batch, for producers still tracked.
    pub producer_last_offsets: &'a HashMap<i64, i64>,
    /// The partition's aborted transactions.
    pub aborted: &'a [AbortedTxn],
}

/// What one clean has read so far of transactions: producers whose data it has seen
/// since their last marker.
#[derive(Debug, Default)]
pub struct TxnTracker {
    with_data: HashSet<i64>,
}

/// Whether a transactional batch belongs to an aborted transaction.
pub fn is_aborted(batch: &RecordBatch, aborted: &[AbortedTxn]) -> bool {
    batch.is_transactional()
        && aborted.iter().any(|a| {
            a.producer_id == batch.producer_id()
                && a.first_offset <= batch.base_offset()
                && batch.base_offset() <= a.last_offset
        })
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

/// Apply the rules to one whole batch; batches come in offset order, with one
/// `txns` for the whole clean.
pub fn filter_batch(
    batch: &Bytes,
    rules: &Rules,
    txns: &mut TxnTracker,
) -> Result<(Filtered, FilterStats), BatchError> {
    let rb = RecordBatch::parse(batch.clone())?;
    if rb.is_control() {
        return filter_marker(&rb, rules, txns);
    }
    let out = filter_data(&rb, rules)?;
    if rb.is_transactional() && rb.producer_id() >= 0 && out.0 != Filtered::Dropped {
        // Data that stays holds its marker (aborted data too: the marker tells readers
        // to skip it). Data this clean drops does not: both go out together.
        txns.with_data.insert(rb.producer_id());
    }
    Ok(out)
}

/// A data batch: which records stay.
fn filter_data(rb: &RecordBatch, rules: &Rules) -> Result<(Filtered, FilterStats), BatchError> {
    let mut stats = FilterStats::default();
    let horizon = rb.delete_horizon_ms();
    // Aborted transactional data goes whole (Kafka's cleaner discards it too).
    let aborted = is_aborted(rb, rules.aborted);
    let mut keep = Vec::with_capacity(rb.record_count().max(0) as usize);
    let mut tombstones_kept = false;
    for record in rb.records(MAX_INFLATED_BATCH)? {
        let record = record?;
        let offset = record.offset_in(rb);
        let kept = match &record.key {
            _ if aborted => false,
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
    let rebuilt = record_batch::retain_records(rb, MAX_INFLATED_BATCH, new_horizon, |_| {
        verdicts.next().copied().unwrap_or(false)
    })?;
    Ok((Filtered::Rewritten(rebuilt), stats))
}

/// A transaction marker: kept while data of its transaction is; then stamped with a
/// delete horizon; removed once the horizon has passed.
fn filter_marker(
    rb: &RecordBatch,
    rules: &Rules,
    txns: &mut TxnTracker,
) -> Result<(Filtered, FilterStats), BatchError> {
    let mut stats = FilterStats::default();
    if txns.with_data.remove(&rb.producer_id()) {
        return Ok((Filtered::Unchanged, stats));
    }
    match rb.delete_horizon_ms() {
        Some(h) if rules.now_ms >= h => Ok((Filtered::Dropped, stats)),
        Some(h) => {
            // Reported like a tombstone's, so that a clean comes when it has passed.
            stats.delete_horizon_ms = Some(h);
            Ok((Filtered::Unchanged, stats))
        }
        None => {
            let horizon = rules.now_ms.saturating_add(rules.delete_retention_ms);
            stats.delete_horizon_ms = Some(horizon);
            let stamped =
                record_batch::retain_records(rb, MAX_INFLATED_BATCH, Some(horizon), |_| true)?;
            Ok((Filtered::Rewritten(stamped), stats))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spate_net::compression::Compression;
    use spate_net::record_batch::RecordBatchBuilder;

    /// A batch at `base` of (key, value) records, timestamps 1000 + i.
    fn batch(base: i64, records: &[(Option<&str>, Option<&str>)], pid: i64) -> Bytes {
        let mut b = RecordBatchBuilder::new(Compression::Lz4)
            .base_offset(base)
            .producer(pid, 0, if pid >= 0 { 0 } else { -1 });
        for (i, (k, v)) in records.iter().enumerate() {
            b.append(
                1000 + i as i64,
                k.map(str::as_bytes),
                v.map(str::as_bytes),
                &[],
            );
        }
        b.build().unwrap()
    }

    /// (offset, key, value) of one record.
    type Kept = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

    fn records(b: &Bytes) -> Vec<Kept> {
        let rb = RecordBatch::parse(b.clone()).unwrap();
        rb.records(1 << 20)
            .unwrap()
            .map(|r| {
                let r = r.unwrap();
                (
                    r.offset_in(&rb),
                    r.key.map(|k| k.to_vec()),
                    r.value.map(|v| v.to_vec()),
                )
            })
            .collect()
    }

    fn rules<'a>(map: &'a OffsetMap, last: &'a HashMap<i64, i64>, now: i64) -> Rules<'a> {
        Rules {
            map,
            now_ms: now,
            delete_retention_ms: 500,
            producer_last_offsets: last,
            aborted: &[],
        }
    }

    #[test]
    fn superseded_and_keyless_records_go_offsets_stay() {
        let mut map = OffsetMap::new(1 << 20, 0.9, 10);
        map.put(b"a", 12);
        map.put(b"b", 11);
        let none = HashMap::new();
        let b = batch(
            10,
            &[
                (Some("a"), Some("1")),
                (Some("b"), Some("2")),
                (None, Some("3")),
            ],
            -1,
        );
        let (f, stats) =
            filter_batch(&b, &rules(&map, &none, 0), &mut TxnTracker::default()).unwrap();
        let Filtered::Rewritten(out) = f else {
            panic!("{f:?}")
        };
        assert_eq!(
            records(&out),
            vec![(11, Some(b"b".to_vec()), Some(b"2".to_vec()))]
        );
        let rb = RecordBatch::parse(out).unwrap();
        assert_eq!((rb.base_offset(), rb.last_offset()), (10, 12));
        assert_eq!((stats.records_read, stats.records_kept), (3, 1));

        // Records after the map's offset for their key stay; a batch kept whole is unchanged.
        let later = batch(20, &[(Some("a"), Some("4"))], -1);
        assert_eq!(
            filter_batch(&later, &rules(&map, &none, 0), &mut TxnTracker::default())
                .unwrap()
                .0,
            Filtered::Unchanged
        );
        let gone = batch(0, &[(Some("a"), Some("0"))], -1);
        assert_eq!(
            filter_batch(&gone, &rules(&map, &none, 0), &mut TxnTracker::default())
                .unwrap()
                .0,
            Filtered::Dropped
        );
    }

    #[test]
    fn tombstones_get_a_horizon_then_go_after_it() {
        let map = OffsetMap::new(1 << 20, 0.9, 10);
        let none = HashMap::new();
        let b = batch(0, &[(Some("a"), None), (Some("b"), Some("x"))], -1);
        let (f, stats) =
            filter_batch(&b, &rules(&map, &none, 10_000), &mut TxnTracker::default()).unwrap();
        let Filtered::Rewritten(stamped) = f else {
            panic!("{f:?}")
        };
        assert_eq!(stats.delete_horizon_ms, Some(10_500));
        let rb = RecordBatch::parse(stamped.clone()).unwrap();
        assert_eq!(rb.delete_horizon_ms(), Some(10_500));
        assert_eq!(
            records(&stamped).len(),
            2,
            "the tombstone stays until its horizon"
        );
        // Before the horizon: unchanged (already stamped). After it: the tombstone goes.
        let (f, _) = filter_batch(
            &stamped,
            &rules(&map, &none, 10_499),
            &mut TxnTracker::default(),
        )
        .unwrap();
        assert_eq!(f, Filtered::Unchanged);
        let (f, stats) = filter_batch(
            &stamped,
            &rules(&map, &none, 10_500),
            &mut TxnTracker::default(),
        )
        .unwrap();
        let Filtered::Rewritten(out) = f else {
            panic!("{f:?}")
        };
        assert_eq!(
            records(&out),
            vec![(1, Some(b"b".to_vec()), Some(b"x".to_vec()))]
        );
        assert_eq!(stats.delete_horizon_ms, None);
    }

    #[test]
    fn the_last_batch_of_a_producer_stays_empty() {
        let mut map = OffsetMap::new(1 << 20, 0.9, 10);
        map.put(b"a", 99);
        let b = batch(5, &[(Some("a"), Some("1")), (Some("a"), Some("2"))], 42);
        let last = HashMap::from([(42, 6)]);
        let (f, _) = filter_batch(&b, &rules(&map, &last, 0), &mut TxnTracker::default()).unwrap();
        let Filtered::Rewritten(out) = f else {
            panic!("{f:?}")
        };
        let rb = RecordBatch::parse(out).unwrap();
        assert_eq!(rb.record_count(), 0);
        assert_eq!(
            (rb.base_offset(), rb.last_offset(), rb.producer_id()),
            (5, 6, 42)
        );
        // Not its last batch any more: dropped.
        let moved_on = HashMap::from([(42, 60)]);
        assert_eq!(
            filter_batch(&b, &rules(&map, &moved_on, 0), &mut TxnTracker::default())
                .unwrap()
                .0,
            Filtered::Dropped
        );
    }

    #[test]
    fn aborted_transactional_data_goes_whole() {
        let map = OffsetMap::new(1 << 20, 0.9, 10);
        let none = HashMap::new();
        let mut b = RecordBatchBuilder::new(Compression::None)
            .base_offset(4)
            .transactional(true)
            .producer(9, 0, 0);
        b.append(1, Some(b"a"), Some(b"x"), &[]);
        let b = b.build().unwrap();
        let aborted = [AbortedTxn {
            producer_id: 9,
            first_offset: 2,
            last_offset: 7,
        }];
        let mut r = rules(&map, &none, 0);
        r.aborted = &aborted;
        assert_eq!(
            filter_batch(&b, &r, &mut TxnTracker::default()).unwrap().0,
            Filtered::Dropped
        );
        // Committed (not in the list): kept.
        assert_eq!(
            filter_batch(&b, &rules(&map, &none, 0), &mut TxnTracker::default())
                .unwrap()
                .0,
            Filtered::Unchanged
        );
    }

    fn marker(base: i64, pid: i64) -> Bytes {
        let mut b = RecordBatchBuilder::new(Compression::None)
            .base_offset(base)
            .control(true)
            .transactional(true)
            .producer(pid, 0, -1);
        b.append(1, Some(&[0, 0, 0, 1]), Some(&[0, 0, 0, 0, 0, 0]), &[]);
        b.build().unwrap()
    }

    fn txn_data(base: i64, pid: i64, key: &str) -> Bytes {
        let mut b = RecordBatchBuilder::new(Compression::None)
            .base_offset(base)
            .transactional(true)
            .producer(pid, 0, 0);
        b.append(1, Some(key.as_bytes()), Some(b"v"), &[]);
        b.build().unwrap()
    }

    #[test]
    fn markers_stay_with_their_data_then_go_after_a_horizon() {
        let mut map = OffsetMap::new(1 << 20, 0.9, 10);
        let none = HashMap::new();
        let r = rules(&map, &none, 1000);
        // Data of producer 7's transaction precedes its marker: both stay.
        let mut txns = TxnTracker::default();
        let data = txn_data(0, 7, "a");
        assert_eq!(
            filter_batch(&data, &r, &mut txns).unwrap().0,
            Filtered::Unchanged
        );
        let m = marker(1, 7);
        assert_eq!(
            filter_batch(&m, &r, &mut txns).unwrap().0,
            Filtered::Unchanged
        );
        // A later clean finds the data superseded (gone): the marker gets a horizon...
        map.put(b"a", 5);
        let r = rules(&map, &none, 1000);
        let mut txns = TxnTracker::default();
        assert_eq!(
            filter_batch(&data, &r, &mut txns).unwrap().0,
            Filtered::Dropped
        );
        let mut txns = TxnTracker::default();
        let (f, _) = filter_batch(&m, &r, &mut txns).unwrap();
        let Filtered::Rewritten(stamped) = f else {
            panic!("{f:?}")
        };
        let rb = RecordBatch::parse(stamped.clone()).unwrap();
        assert!(rb.is_control() && rb.is_transactional());
        assert_eq!(
            (rb.base_offset(), rb.producer_id(), rb.delete_horizon_ms()),
            (1, 7, Some(1500))
        );
        assert_eq!(records(&stamped).len(), 1);
        // ...and goes once it has passed.
        let before = rules(&map, &none, 1499);
        assert_eq!(
            filter_batch(&stamped, &before, &mut TxnTracker::default())
                .unwrap()
                .0,
            Filtered::Unchanged
        );
        let after = rules(&map, &none, 1500);
        assert_eq!(
            filter_batch(&stamped, &after, &mut TxnTracker::default())
                .unwrap()
                .0,
            Filtered::Dropped
        );
        // Another producer's data does not hold producer 7's marker.
        let mut txns = TxnTracker::default();
        filter_batch(&txn_data(0, 8, "b"), &after, &mut txns).unwrap();
        assert_eq!(
            filter_batch(&stamped, &after, &mut txns).unwrap().0,
            Filtered::Dropped
        );
    }
}
