//! Sparse offset and time indexes, in Kafka's file formats.
//!
//! * offset index: 8-byte entries `(relative offset u32 BE, position u32 BE)`; the
//!   offset is the base offset of the batch that starts at `position`.
//! * time index: 12-byte entries `(timestamp i64 BE, relative offset u32 BE)`: the
//!   largest timestamp seen so far in the segment and the base offset of the batch in
//!   which it was first seen. Timestamps strictly increase from entry to entry.
//!
//! The active segment keeps its entries in memory (they are rebuilt by the recovery
//! scan after a crash) and writes them out when the segment is closed; closed
//! segments map their index files read-only with `memmap2`.

use memmap2::Mmap;

/// Storage of an index: growing in memory, or a read-only map of a closed file.
#[derive(Debug)]
enum Data {
    Mem(Vec<u8>),
    Map(Mmap),
}

impl Data {
    fn bytes(&self) -> &[u8] {
        match self {
            Data::Mem(v) => v,
            Data::Map(m) => m,
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Offset index of one segment.
#[derive(Debug)]
pub struct OffsetIndex {
    base: i64,
    data: Data,
}

impl OffsetIndex {
    /// An empty in-memory index.
    pub fn new(base: i64) -> Self {
        OffsetIndex {
            base,
            data: Data::Mem(Vec::new()),
        }
    }

    /// Wrap a mapped file; checks the entry size, order and that every position is
    /// below `segment_size`. Returns a reason string when the file is not sane.
    pub fn from_map(base: i64, map: Mmap, segment_size: u64) -> Result<Self, String> {
        let idx = OffsetIndex {
            base,
            data: Data::Map(map),
        };
        idx.check(segment_size)?;
        Ok(idx)
    }

    fn check(&self, segment_size: u64) -> Result<(), String> {
        let b = self.data.bytes();
        if !b.len().is_multiple_of(8) {
            return Err(format!(
                "offset index size {} is not a multiple of 8",
                b.len()
            ));
        }
        let mut prev: Option<(u32, u32)> = None;
        for i in 0..self.len() {
            let (rel, pos) = self.raw(i);
            if u64::from(pos) >= segment_size.max(1) {
                return Err(format!(
                    "entry {i} position {pos} beyond segment size {segment_size}"
                ));
            }
            if let Some((pr, pp)) = prev {
                if rel <= pr || pos <= pp {
                    return Err(format!("entry {i} ({rel}, {pos}) not after ({pr}, {pp})"));
                }
            }
            prev = Some((rel, pos));
        }
        Ok(())
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.data.bytes().len() / 8
    }

    /// Copy a mapped index into memory so that it can grow again.
    pub fn into_mem(self) -> Self {
        let v = self.data.bytes().to_vec();
        OffsetIndex {
            base: self.base,
            data: Data::Mem(v),
        }
    }

    /// True if there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn raw(&self, i: usize) -> (u32, u32) {
        let b = self.data.bytes();
        (u32_at(b, i * 8), u32_at(b, i * 8 + 4))
    }

    /// Entry `i` as (absolute offset, position).
    pub fn entry(&self, i: usize) -> (i64, u32) {
        let (rel, pos) = self.raw(i);
        (self.base + rel as i64, pos)
    }

    /// Add an entry (in-memory indexes only; ignored for mapped ones). The caller keeps
    /// offsets and positions increasing.
    pub fn append(&mut self, offset: i64, position: u32) {
        if let Data::Mem(v) = &mut self.data {
            let rel = (offset - self.base) as u32;
            v.extend_from_slice(&rel.to_be_bytes());
            v.extend_from_slice(&position.to_be_bytes());
        }
    }

    /// Position of the last indexed batch whose base offset is <= `target`
    /// (0 when there is none): a place to start scanning for `target`.
    pub fn lookup(&self, target: i64) -> (i64, u32) {
        let n = self.len();
        let (mut lo, mut hi) = (0usize, n);
        // First entry with offset > target.
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.entry(mid).0 <= target {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == 0 {
            (self.base, 0)
        } else {
            self.entry(lo - 1)
        }
    }

    /// Drop every entry at or above `position` (in-memory indexes only).
    pub fn truncate_to_position(&mut self, position: u32) {
        let keep = (0..self.len())
            .take_while(|&i| self.raw(i).1 < position)
            .count();
        if let Data::Mem(v) = &mut self.data {
            v.truncate(keep * 8);
        }
    }

    /// The raw file content.
    pub fn bytes(&self) -> &[u8] {
        self.data.bytes()
    }
}

/// Time index of one segment.
#[derive(Debug)]
pub struct TimeIndex {
    base: i64,
    data: Data,
}

impl TimeIndex {
    /// An empty in-memory index.
    pub fn new(base: i64) -> Self {
        TimeIndex {
            base,
            data: Data::Mem(Vec::new()),
        }
    }

    /// Wrap a mapped file; checks entry size and order.
    pub fn from_map(base: i64, map: Mmap) -> Result<Self, String> {
        let idx = TimeIndex {
            base,
            data: Data::Map(map),
        };
        let b = idx.data.bytes();
        if !b.len().is_multiple_of(12) {
            return Err(format!(
                "time index size {} is not a multiple of 12",
                b.len()
            ));
        }
        for i in 1..idx.len() {
            if idx.entry(i).0 <= idx.entry(i - 1).0 || idx.entry(i).1 < idx.entry(i - 1).1 {
                return Err(format!("time index entry {i} out of order"));
            }
        }
        Ok(idx)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.data.bytes().len() / 12
    }

    /// Copy a mapped index into memory so that it can grow again.
    pub fn into_mem(self) -> Self {
        let v = self.data.bytes().to_vec();
        TimeIndex {
            base: self.base,
            data: Data::Mem(v),
        }
    }

    /// True if there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entry `i` as (timestamp, absolute offset).
    pub fn entry(&self, i: usize) -> (i64, i64) {
        let b = self.data.bytes();
        (i64_at(b, i * 12), self.base + u32_at(b, i * 12 + 8) as i64)
    }

    /// Last entry, if any.
    pub fn last(&self) -> Option<(i64, i64)> {
        self.len().checked_sub(1).map(|i| self.entry(i))
    }

    /// Add an entry if `timestamp` is larger than the last one (in-memory only).
    pub fn maybe_append(&mut self, timestamp: i64, offset: i64) {
        if let Some((last_ts, _)) = self.last() {
            if timestamp <= last_ts {
                return;
            }
        }
        if let Data::Mem(v) = &mut self.data {
            v.extend_from_slice(&timestamp.to_be_bytes());
            v.extend_from_slice(&((offset - self.base) as u32).to_be_bytes());
        }
    }

    /// The last entry whose timestamp is <= `ts` (where a scan for the first batch
    /// with max timestamp >= `ts` may start), or `None` if all entries are larger.
    pub fn lookup(&self, ts: i64) -> Option<(i64, i64)> {
        let n = self.len();
        let (mut lo, mut hi) = (0usize, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.entry(mid).0 <= ts {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1).map(|i| self.entry(i))
    }

    /// Drop every entry whose offset is >= `offset` (in-memory only).
    pub fn truncate_to_offset(&mut self, offset: i64) {
        let keep = (0..self.len())
            .take_while(|&i| self.entry(i).1 < offset)
            .count();
        if let Data::Mem(v) = &mut self.data {
            v.truncate(keep * 12);
        }
    }

    /// The raw file content.
    pub fn bytes(&self) -> &[u8] {
        self.data.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_lookup() {
        let mut i = OffsetIndex::new(100);
        assert_eq!(i.lookup(150), (100, 0));
        i.append(110, 4100);
        i.append(130, 9000);
        assert_eq!(i.lookup(105), (100, 0));
        assert_eq!(i.lookup(110), (110, 4100));
        assert_eq!(i.lookup(129), (110, 4100));
        assert_eq!(i.lookup(1000), (130, 9000));
        i.truncate_to_position(9000);
        assert_eq!(i.len(), 1);
    }

    #[test]
    fn time_lookup() {
        let mut t = TimeIndex::new(0);
        t.maybe_append(10, 0);
        t.maybe_append(10, 5);
        t.maybe_append(20, 7);
        assert_eq!(t.len(), 2);
        assert_eq!(t.lookup(5), None);
        assert_eq!(t.lookup(10), Some((10, 0)));
        assert_eq!(t.lookup(15), Some((10, 0)));
        assert_eq!(t.lookup(25), Some((20, 7)));
        t.truncate_to_offset(7);
        assert_eq!(t.len(), 1);
    }
}
