//! What log compaction needs from the log, without knowing records: a view of the
//! sealed segments a cleaner may rewrite ([`CleanableView`]), reading them and writing
//! cleaned replacements from any thread ([`SegmentBatches`], [`CleanedSegmentWriter`]),
//! and the crash-safe swap that puts cleaned segments in place of the old ones
//! (`swap`, used by `PartitionLog::replace_segments` and by recovery at open). Which
//! records a cleaned segment keeps is the caller's decision.

mod reader;
pub(crate) mod swap;
mod writer;

use std::path::PathBuf;

pub use reader::SegmentBatches;
pub use writer::{CleanedSegment, CleanedSegmentWriter};

/// A sealed segment as the cleaner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedSegment {
    /// Base offset (the file name).
    pub base: i64,
    /// Base offset of the segment after it: the segment covers `[base, end)`.
    pub end: i64,
    /// Bytes of batches in the file.
    pub size: u64,
    /// Largest batch max timestamp, `-1` if none.
    pub max_timestamp: i64,
    /// Modification time of the file, in ms since the epoch.
    pub modified_ms: i64,
    /// The data file.
    pub path: PathBuf,
}

/// What of a log may be cleaned now, and how dirty it is.
#[derive(Clone, Debug)]
pub struct CleanableView {
    /// The log's directory.
    pub dir: PathBuf,
    /// Log start offset.
    pub log_start: i64,
    /// The cleaner checkpoint: offsets below it were cleaned (compacted against every
    /// key up to it) by an earlier run.
    pub first_dirty: i64,
    /// Nothing from here on may be cleaned now: the first offset of the active segment,
    /// or of the first sealed segment younger than `min.compaction.lag.ms`.
    pub first_uncleanable: i64,
    /// Sealed segments below `first_uncleanable`, oldest first, gap-free in their
    /// `[base, end)` ranges.
    pub segments: Vec<SealedSegment>,
    /// Largest KIP-534 delete horizon the last clean stamped on tombstones (`-1`: none
    /// known): once it has passed, a clean would remove every tombstone it set.
    pub delete_horizon_ms: i64,
}

impl CleanableView {
    /// Bytes of the cleaned part (segments below `first_dirty`).
    pub fn clean_bytes(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.end <= self.first_dirty)
            .map(|s| s.size)
            .sum()
    }

    /// Bytes of the cleanable dirty part (segments at or after `first_dirty`).
    pub fn dirty_bytes(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.end > self.first_dirty)
            .map(|s| s.size)
            .sum()
    }

    /// Kafka's cleanable ratio: dirty bytes over all cleanable bytes (0 when empty).
    pub fn dirty_ratio(&self) -> f64 {
        let (clean, dirty) = (self.clean_bytes(), self.dirty_bytes());
        if clean + dirty == 0 {
            0.0
        } else {
            dirty as f64 / (clean + dirty) as f64
        }
    }

    /// The first sealed segment holding dirty offsets.
    pub fn first_dirty_segment(&self) -> Option<&SealedSegment> {
        self.segments.iter().find(|s| s.end > self.first_dirty)
    }
}

/// One cleaned segment to put in place of consecutive sealed segments.
#[derive(Debug)]
pub struct CleanedGroup {
    /// The segments it replaces, oldest first (the first one's base is its base).
    pub replaced: Vec<SealedSegment>,
    /// The written `.cleaned` files.
    pub cleaned: CleanedSegment,
    /// Offsets below this are clean once the group is in place (the cleaner checkpoint
    /// it advances to): at most the end of its last replaced segment.
    pub clean_end: i64,
    /// Largest KIP-534 delete horizon stamped on its batches (`-1`: none).
    pub delete_horizon_ms: i64,
}

/// Split consecutive sealed segments into groups that each become one cleaned segment:
/// Kafka's rule, a group's source segments together take at most `max_bytes` (the
/// topic's `segment.bytes`) and span less than 2^31 offsets (index entries hold 32-bit
/// relative offsets). A segment larger than `max_bytes` forms a group of its own.
pub fn group_segments(segments: &[SealedSegment], max_bytes: u64) -> Vec<Vec<SealedSegment>> {
    let mut groups: Vec<Vec<SealedSegment>> = Vec::new();
    let mut size = 0u64;
    for s in segments {
        let fits = groups.last().is_some_and(|g| {
            size + s.size <= max_bytes && s.end - 1 - g[0].base <= i32::MAX as i64
        });
        if fits {
            size += s.size;
            if let Some(g) = groups.last_mut() {
                g.push(s.clone());
            }
        } else {
            size = s.size;
            groups.push(vec![s.clone()]);
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: i64, end: i64, size: u64) -> SealedSegment {
        SealedSegment {
            base,
            end,
            size,
            max_timestamp: -1,
            modified_ms: 0,
            path: PathBuf::new(),
        }
    }

    #[test]
    fn groups_by_size_and_offset_span() {
        let segs = vec![
            seg(0, 10, 400),
            seg(10, 20, 500),
            seg(20, 30, 200),
            seg(30, 40, 2000),
            seg(40, 50, 10),
        ];
        let g = group_segments(&segs, 1000);
        let bases: Vec<Vec<i64>> = g
            .iter()
            .map(|g| g.iter().map(|s| s.base).collect())
            .collect();
        assert_eq!(bases, vec![vec![0, 10], vec![20], vec![30], vec![40]]);

        let wide = vec![seg(0, 10, 1), seg(10, i32::MAX as i64 + 5, 1)];
        assert_eq!(group_segments(&wide, 1000).len(), 2);
    }

    #[test]
    fn dirty_ratio() {
        let v = CleanableView {
            dir: PathBuf::new(),
            log_start: 0,
            first_dirty: 20,
            first_uncleanable: 40,
            segments: vec![seg(0, 10, 100), seg(10, 20, 100), seg(20, 40, 200)],
            delete_horizon_ms: -1,
        };
        assert_eq!(v.clean_bytes(), 200);
        assert_eq!(v.dirty_bytes(), 200);
        assert!((v.dirty_ratio() - 0.5).abs() < 1e-9);
        assert_eq!(v.first_dirty_segment().map(|s| s.base), Some(20));
    }
}
