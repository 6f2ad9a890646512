//! One clean of one partition, run on a cleaner thread: map the dirty part's keys to
//! their latest offsets, then rewrite the sealed segments up to where the map reaches,
//! group by group, into `.cleaned` files for the owner shard to swap in.

use std::collections::HashMap;
use std::io;
use std::time::Instant;

use spate_log::clean::{
    group_segments, CleanableView, CleanedGroup, CleanedSegmentWriter, SegmentBatches,
};
use spate_net::record_batch::RecordBatch;

use super::filter::{filter_batch, Filtered, Rules, TxnTracker, MAX_INFLATED_BATCH};
use super::offset_map::OffsetMap;
use super::throttle::Throttle;
use crate::mesh::PartitionKey;
use crate::partition::AbortedTxn;

/// A partition's clean, as its owner shard hands it to the cleaner threads.
pub struct CleanJob {
    pub partition: PartitionKey,
    pub topic_id: [u8; 16],
    pub view: CleanableView,
    /// The topic's `segment.bytes`: cleaned segments merge up to this size.
    pub segment_bytes: u64,
    pub index_interval_bytes: u32,
    pub delete_retention_ms: i64,
    pub producer_last_offsets: HashMap<i64, i64>,
    /// The partition's aborted transactions: their records are removed, and never
    /// supersede anything.
    pub aborted: Vec<AbortedTxn>,
    pub now_ms: i64,
    /// Cleaner threads take the dirtiest job first.
    pub dirty_ratio: f64,
    pub reply: flume::Sender<CleanOutcome>,
}

/// What came of a job, sent back to the owner shard.
pub struct CleanOutcome {
    pub partition: PartitionKey,
    pub topic_id: [u8; 16],
    pub result: Result<CleanReport, String>,
}

/// A finished clean: the cleaned segments to swap in and what it took.
pub struct CleanReport {
    pub groups: Vec<CleanedGroup>,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_read: u64,
    pub records_kept: u64,
    pub map_utilization: f64,
    pub seconds: f64,
}

/// Sizes the cleaner works with (Kafka's `log.cleaner.*`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Memory of one thread's offset map.
    pub map_bytes: usize,
    pub load_factor: f64,
    /// Read chunk.
    pub io_buffer_bytes: usize,
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Run one job. On error, whatever `.cleaned` files it wrote stay behind for the shard
/// (which discards them) or the next open (which removes them).
pub fn run(job: &CleanJob, limits: &Limits, throttle: &Throttle) -> io::Result<CleanReport> {
    let started = Instant::now();
    let view = &job.view;
    let mut report = CleanReport {
        groups: Vec::new(),
        bytes_read: 0,
        bytes_written: 0,
        records_read: 0,
        records_kept: 0,
        map_utilization: 0.0,
        seconds: 0.0,
    };
    // Offsets in the dirty part bound the number of keys in it.
    let dirty_offsets = (view.first_uncleanable - view.first_dirty).max(0) as usize;
    let mut map = OffsetMap::new(limits.map_bytes, limits.load_factor, dirty_offsets);
    let clean_end = build_map(job, limits, throttle, &mut map, &mut report)?;
    report.map_utilization = map.utilization();
    if clean_end <= view.first_dirty && view.first_dirty < view.first_uncleanable {
        return Err(io::Error::other(format!(
            "the cleaner's offset map ({} bytes) cannot hold the keys of one batch",
            map.memory_bytes()
        )));
    }
    let rules = Rules {
        map: &map,
        now_ms: job.now_ms,
        delete_retention_ms: job.delete_retention_ms,
        producer_last_offsets: &job.producer_last_offsets,
        aborted: &job.aborted,
    };
    let rewrite: Vec<_> = view
        .segments
        .iter()
        .filter(|s| s.base < clean_end)
        .cloned()
        .collect();
    // The rewrite reads the log from its start, in offset order.
    let mut txns = TxnTracker::default();
    for group in group_segments(&rewrite, job.segment_bytes) {
        let base = group[0].base;
        let mut out = CleanedSegmentWriter::create(&view.dir, base, job.index_interval_bytes)?;
        let mut horizon = -1i64;
        for seg in &group {
            let mut batches = SegmentBatches::open(&seg.path, seg.size, limits.io_buffer_bytes)?;
            let mut read = 0;
            while let Some((_, batch)) = batches.next_batch()? {
                let (filtered, stats) = filter_batch(&batch, &rules, &mut txns).map_err(invalid)?;
                report.records_read += stats.records_read;
                report.records_kept += stats.records_kept;
                horizon = horizon.max(stats.delete_horizon_ms.unwrap_or(-1));
                let before = out.bytes_appended();
                match filtered {
                    Filtered::Unchanged => out.append(&batch)?,
                    Filtered::Rewritten(b) => out.append(&b)?,
                    Filtered::Dropped => {}
                }
                let wrote = out.bytes_appended() - before;
                report.bytes_written += wrote;
                throttle.pace(batches.bytes_read() - read + wrote);
                read = batches.bytes_read();
            }
            report.bytes_read += batches.bytes_read();
        }
        let modified = group.iter().map(|s| s.modified_ms).max().unwrap_or(0);
        let cleaned = out.finish(modified)?;
        let group_end = group[group.len() - 1].end;
        report.groups.push(CleanedGroup {
            cleaned,
            replaced: group,
            clean_end: clean_end.min(group_end),
            delete_horizon_ms: horizon,
        });
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Map every key of the dirty part to its latest offset, batch by batch, until the
/// map is full. Returns the offset the map covers up to (the new cleaner checkpoint).
fn build_map(
    job: &CleanJob,
    limits: &Limits,
    throttle: &Throttle,
    map: &mut OffsetMap,
    report: &mut CleanReport,
) -> io::Result<i64> {
    let view = &job.view;
    let mut covered = view.first_dirty;
    for seg in view.segments.iter().filter(|s| s.end > view.first_dirty) {
        let mut batches = SegmentBatches::open(&seg.path, seg.size, limits.io_buffer_bytes)?;
        let mut read = 0;
        while let Some((h, batch)) = batches.next_batch()? {
            throttle.pace(batches.bytes_read() - read);
            read = batches.bytes_read();
            if h.last_offset() < view.first_dirty {
                continue;
            }
            let rb = RecordBatch::parse(batch).map_err(invalid)?;
            // Markers and aborted transactional data supersede nothing.
            if rb.is_control() || super::filter::is_aborted(&rb, &job.aborted) {
                covered = h.last_offset() + 1;
                continue;
            }
            // Whole batches only: stop before one whose keys might not fit.
            if map.free() < rb.record_count().max(0) as usize {
                report.bytes_read += batches.bytes_read();
                return Ok(covered);
            }
            for record in rb.records(MAX_INFLATED_BATCH).map_err(invalid)? {
                let record = record.map_err(invalid)?;
                if let Some(key) = &record.key {
                    map.put(key, record.offset_in(&rb));
                }
            }
            covered = h.last_offset() + 1;
        }
        report.bytes_read += batches.bytes_read();
        covered = covered.max(seg.end);
    }
    Ok(covered.min(view.first_uncleanable))
}
