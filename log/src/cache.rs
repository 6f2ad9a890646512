//! Bounded cache of recently written batches, shared by every log of a shard.
//!
//! One budget and one least-recently-used order span all the logs that share the
//! cache, so a shard's cache memory stays bounded however many partitions it owns and
//! goes where the readers are. Each log reaches it through a [`CacheHandle`] (its
//! entries are dropped with the handle).
//!
//! Entries are `Bytes` slices of the buffers the batches were written from. Every
//! entry is charged what it really keeps alive: a slice of a large write buffer pins
//! the whole allocation, so the writer passes the buffer's share (see
//! [`CacheHandle::insert_written`], which copies batches out instead when they would
//! pin much more memory than their own size).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use bytes::{Bytes, BytesMut};

#[derive(Debug)]
struct Entry {
    last_offset: i64,
    bytes: Bytes,
    /// Memory this entry keeps alive (its share of the buffer it slices).
    charge: usize,
    /// Position in the LRU order.
    seq: u64,
}

/// Cache of whole batches, keyed by (log, base offset), with one LRU order.
#[derive(Debug, Default)]
pub struct BatchCache {
    logs: HashMap<u64, BTreeMap<i64, Entry>>,
    /// seq -> (log, base offset); the first entry is the least recently used.
    lru: BTreeMap<u64, (u64, i64)>,
    next_seq: u64,
    next_log: u64,
    used: usize,
    budget: usize,
    hits: u64,
    misses: u64,
    /// Bytes of read-ahead buffers held (see [`CacheHandle::reserve_read_ahead`]).
    read_ahead_held: usize,
}

/// A cache shared by the logs of one thread.
pub type SharedBatchCache = Rc<RefCell<BatchCache>>;

impl BatchCache {
    /// An empty cache with a byte budget (0 disables it).
    pub fn new(budget: usize) -> Self {
        BatchCache {
            budget,
            ..Default::default()
        }
    }

    /// An empty cache to share between logs.
    pub fn shared(budget: usize) -> SharedBatchCache {
        Rc::new(RefCell::new(Self::new(budget)))
    }

    /// Change the budget, evicting as needed.
    pub fn set_budget(&mut self, budget: usize) {
        self.budget = budget;
        self.evict();
    }

    /// The byte budget.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Memory currently charged to cached batches.
    pub fn used_bytes(&self) -> usize {
        self.used
    }

    /// Bytes of read-ahead buffers held (reading or read and not yet consumed).
    pub fn read_ahead_bytes(&self) -> usize {
        self.read_ahead_held
    }

    /// (hits, misses) of `collect`.
    pub fn hit_stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    fn touch(&mut self, log: u64, base: i64) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.lru.insert(seq, (log, base));
        seq
    }

    fn insert(
        &mut self,
        log: u64,
        base_offset: i64,
        last_offset: i64,
        bytes: Bytes,
        charge: usize,
    ) {
        if charge > self.budget {
            return;
        }
        self.remove(log, base_offset);
        let seq = self.touch(log, base_offset);
        self.used += charge;
        self.logs.entry(log).or_default().insert(
            base_offset,
            Entry {
                last_offset,
                bytes,
                charge,
                seq,
            },
        );
        self.evict();
    }

    fn remove(&mut self, log: u64, base: i64) {
        if let Some(e) = self.logs.get_mut(&log).and_then(|m| m.remove(&base)) {
            self.used -= e.charge;
            self.lru.remove(&e.seq);
        }
    }

    fn evict(&mut self) {
        while self.used + self.read_ahead_held > self.budget {
            let Some((_, (log, base))) = self.lru.pop_first() else {
                break;
            };
            if let Some(e) = self.logs.get_mut(&log).and_then(|m| m.remove(&base)) {
                self.used -= e.charge;
            }
        }
        debug_assert_eq!(
            self.lru.len(),
            self.logs.values().map(|m| m.len()).sum::<usize>()
        );
    }

    fn retain_range(&mut self, log: u64, below: i64, offset: i64) {
        let Some(m) = self.logs.get(&log) else { return };
        let doomed: Vec<i64> = m
            .iter()
            .filter(|(b, e)| **b >= offset || e.last_offset < below)
            .map(|(b, _)| *b)
            .collect();
        for b in doomed {
            self.remove(log, b);
        }
    }

    fn remove_range(&mut self, log: u64, from: i64, to: i64) {
        let Some(m) = self.logs.get(&log) else { return };
        let doomed: Vec<i64> = m.range(from..to).map(|(b, _)| *b).collect();
        for b in doomed {
            self.remove(log, b);
        }
    }

    fn remove_log(&mut self, log: u64) {
        if let Some(m) = self.logs.remove(&log) {
            for e in m.into_values() {
                self.used -= e.charge;
                self.lru.remove(&e.seq);
            }
        }
    }

    fn collect(
        &mut self,
        log: u64,
        start: i64,
        end: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Option<Vec<Bytes>> {
        let Some(m) = self.logs.get_mut(&log) else {
            self.misses += 1;
            return None;
        };
        let base = match m.range(..=start).next_back() {
            Some((b, e)) if e.last_offset >= start && e.last_offset < end => *b,
            _ => {
                self.misses += 1;
                return None;
            }
        };
        let mut out = Vec::new();
        let mut total = 0usize;
        let mut next = base;
        let mut touched = Vec::new();
        for (&b, e) in m.range(base..) {
            if b != next || e.last_offset >= end {
                break;
            }
            if total + e.bytes.len() > max_bytes && !(out.is_empty() && min_one) {
                break;
            }
            total += e.bytes.len();
            out.push(e.bytes.clone());
            touched.push((b, e.seq));
            next = e.last_offset + 1;
        }
        for (b, old) in touched {
            self.lru.remove(&old);
            let seq = self.touch(log, b);
            if let Some(e) = self.logs.get_mut(&log).and_then(|m| m.get_mut(&b)) {
                e.seq = seq;
            }
        }
        self.hits += 1;
        Some(out)
    }
}

/// Memory of one read-ahead buffer, counted in its cache's budget while this lives.
#[derive(Debug)]
pub struct ReadAheadReservation {
    cache: SharedBatchCache,
    bytes: usize,
}

impl Drop for ReadAheadReservation {
    fn drop(&mut self) {
        if let Ok(mut c) = self.cache.try_borrow_mut() {
            c.read_ahead_held = c.read_ahead_held.saturating_sub(self.bytes);
        }
    }
}

/// Read-ahead buffers of all the logs sharing a cache may hold at most this part of
/// its budget (1/2): the rest stays for written batches.
const READ_AHEAD_SHARE: usize = 2;

/// One log's view of a shared cache. Dropping it drops the log's entries.
#[derive(Debug)]
pub struct CacheHandle {
    cache: SharedBatchCache,
    id: u64,
    /// Bumped whenever entries of this log are dropped for a change of the log
    /// (truncation, retention, compaction): data read before such a change must not
    /// be cached after it (see [`CacheHandle::generation`]).
    generation: std::cell::Cell<u64>,
}

impl CacheHandle {
    /// Register a new log with `cache`.
    pub fn new(cache: SharedBatchCache) -> CacheHandle {
        let id = {
            let mut c = cache.borrow_mut();
            c.next_log += 1;
            c.next_log
        };
        CacheHandle {
            cache,
            id,
            generation: std::cell::Cell::new(0),
        }
    }

    /// The cache behind this handle.
    pub fn shared(&self) -> &SharedBatchCache {
        &self.cache
    }

    /// Is caching on (a non-zero budget)?
    pub fn enabled(&self) -> bool {
        self.cache.borrow().budget > 0
    }

    /// Add one batch, charged `charge` bytes of memory.
    pub fn insert(&self, base_offset: i64, last_offset: i64, bytes: Bytes, charge: usize) {
        self.cache
            .borrow_mut()
            .insert(self.id, base_offset, last_offset, bytes, charge);
    }

    /// Add the batches of one completed write: `(base, last, start, len)` ranges of
    /// `buf`, a buffer of `capacity` bytes. When the batches fill less than half of the
    /// buffer they are copied out into one exactly sized allocation (so a few small
    /// batches do not keep a large write buffer alive); otherwise they are cached as
    /// slices of it, each charged its share of the whole buffer.
    pub fn insert_written(
        &self,
        buf: Bytes,
        capacity: usize,
        batches: &[(i64, i64, usize, usize)],
    ) {
        let payload: usize = batches.iter().map(|b| b.3).sum();
        if payload == 0 {
            return;
        }
        if payload * 2 < capacity {
            let mut out = BytesMut::with_capacity(payload);
            let mut ranges = Vec::with_capacity(batches.len());
            for &(b, l, off, len) in batches {
                ranges.push((b, l, out.len(), len));
                out.extend_from_slice(&buf[off..off + len]);
            }
            let out = out.freeze();
            for (b, l, off, len) in ranges {
                self.insert(b, l, out.slice(off..off + len), len);
            }
            return;
        }
        for &(b, l, off, len) in batches {
            // Each batch carries its share of the capacity (rounded up, never zero).
            let charge = (len * capacity).div_ceil(payload);
            self.insert(b, l, buf.slice(off..off + len), charge);
        }
    }

    /// Changes with every `retain_range` and `remove_range`: a reader that read from
    /// disk under one generation may cache what it read only if it is still current.
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// Reserve `bytes` for a read-ahead buffer: they count against the cache budget
    /// (cached batches are evicted to make room) until the reservation is dropped. The
    /// read-ahead buffers of all logs sharing the cache hold at most half its budget;
    /// `None` when that is spent or the cache is off (skip the read-ahead).
    pub fn reserve_read_ahead(&self, bytes: usize) -> Option<ReadAheadReservation> {
        let mut c = self.cache.borrow_mut();
        if c.budget == 0 || c.read_ahead_held + bytes > c.budget / READ_AHEAD_SHARE {
            return None;
        }
        c.read_ahead_held += bytes;
        c.evict();
        Some(ReadAheadReservation {
            cache: self.cache.clone(),
            bytes,
        })
    }

    /// Is the batch containing `offset` cached? (Does not count as a use.)
    pub fn contains(&self, offset: i64) -> bool {
        let c = self.cache.borrow();
        c.logs.get(&self.id).is_some_and(|m| {
            m.range(..=offset)
                .next_back()
                .is_some_and(|(_, e)| e.last_offset >= offset)
        })
    }

    /// Drop every batch with a base offset >= `offset` or whose last offset is < `below`.
    pub fn retain_range(&self, below: i64, offset: i64) {
        self.generation.set(self.generation.get() + 1);
        self.cache.borrow_mut().retain_range(self.id, below, offset);
    }

    /// Drop every batch with a base offset in `[from, to)` (a range compaction rewrote).
    pub fn remove_range(&self, from: i64, to: i64) {
        self.generation.set(self.generation.get() + 1);
        self.cache.borrow_mut().remove_range(self.id, from, to);
    }

    /// Consecutive cached batches starting with the one containing `start`, all ending
    /// below `end`, up to `max_bytes` (at least one when `min_one`). `None` when the
    /// batch containing `start` is not cached. Served batches become the most recently
    /// used.
    pub fn collect(
        &self,
        start: i64,
        end: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Option<Vec<Bytes>> {
        self.cache
            .borrow_mut()
            .collect(self.id, start, end, max_bytes, min_one)
    }
}

impl Drop for CacheHandle {
    fn drop(&mut self) {
        if let Ok(mut c) = self.cache.try_borrow_mut() {
            c.remove_log(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(n: usize) -> Bytes {
        Bytes::from(vec![0u8; n])
    }

    #[test]
    fn evicts_least_recently_used_and_collects_runs() {
        let cache = BatchCache::shared(30);
        let c = CacheHandle::new(cache.clone());
        c.insert(0, 4, b(10), 10);
        c.insert(5, 9, b(10), 10);
        c.insert(10, 10, b(10), 10);
        assert_eq!(c.collect(7, 11, 100, true).map(|v| v.len()), Some(2));
        assert_eq!(c.collect(7, 10, 100, true).map(|v| v.len()), Some(1));
        assert_eq!(c.collect(7, 11, 5, true).map(|v| v.len()), Some(1));
        assert_eq!(c.collect(7, 11, 5, false).map(|v| v.len()), Some(0));
        // 0..4 is the least recently used: it goes first.
        c.insert(11, 11, b(10), 10);
        assert!(c.collect(2, 12, 100, true).is_none());
        assert_eq!(c.collect(5, 12, 100, true).map(|v| v.len()), Some(3));
        assert_eq!(cache.borrow().used_bytes(), 30);
    }

    #[test]
    fn one_budget_across_logs_and_entries_leave_with_their_log() {
        let cache = BatchCache::shared(25);
        let a = CacheHandle::new(cache.clone());
        let other = CacheHandle::new(cache.clone());
        a.insert(0, 0, b(10), 10);
        other.insert(0, 0, b(10), 10);
        a.insert(1, 1, b(10), 10);
        // Three entries do not fit in 25: the oldest (a's first) went.
        assert!(a.collect(0, 5, 100, true).is_none());
        assert!(other.collect(0, 5, 100, true).is_some());
        drop(other);
        assert_eq!(cache.borrow().used_bytes(), 10);
    }

    #[test]
    fn read_ahead_memory_is_bounded_and_counts_against_the_budget() {
        let cache = BatchCache::shared(100);
        let c = CacheHandle::new(cache.clone());
        c.insert(0, 0, b(40), 40);
        c.insert(1, 1, b(40), 40);
        let r1 = c.reserve_read_ahead(30).unwrap();
        // 30 held: 80 + 30 > 100, so the oldest batch went.
        assert!(c.collect(0, 5, 100, true).is_none());
        assert_eq!(cache.borrow().read_ahead_bytes(), 30);
        // At most half the budget for read-ahead.
        assert!(c.reserve_read_ahead(30).is_none());
        let r2 = c.reserve_read_ahead(20).unwrap();
        drop(r1);
        drop(r2);
        assert_eq!(cache.borrow().read_ahead_bytes(), 0);
        let gen = c.generation();
        c.retain_range(i64::MIN, 1);
        assert_ne!(c.generation(), gen);
        assert!(!c.contains(1));
    }

    #[test]
    fn small_writes_are_copied_out_and_large_ones_charged_their_buffer() {
        let cache = BatchCache::shared(1 << 20);
        let c = CacheHandle::new(cache.clone());
        // 200 bytes of batches in a 64 KiB buffer: copied, charged 200.
        let big = Bytes::from(vec![7u8; 65536]);
        c.insert_written(big.clone(), 65536, &[(0, 0, 4096, 100), (1, 1, 4196, 100)]);
        assert_eq!(cache.borrow().used_bytes(), 200);
        // 40 KiB of batches in the same buffer: sliced, charged the whole 64 KiB.
        c.insert_written(big, 65536, &[(2, 2, 0, 20480), (3, 3, 20480, 20480)]);
        assert_eq!(cache.borrow().used_bytes(), 200 + 65536);
    }
}
