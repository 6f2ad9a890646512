//! Bounded cache of recently written batches.
//!
//! Kept as its own type so that the node can later replace the per-log budget with
//! a per-shard one. Batches are `Bytes` slices of the write buffers they went to
//! disk in, so caching costs no copy. Eviction drops the lowest offsets first
//! (batches enter in offset order, so that is also the oldest).

use std::collections::BTreeMap;

use bytes::Bytes;

#[derive(Debug)]
struct Entry {
    last_offset: i64,
    bytes: Bytes,
}

/// Cache of whole batches keyed by base offset.
#[derive(Debug, Default)]
pub struct BatchCache {
    map: BTreeMap<i64, Entry>,
    used: usize,
    budget: usize,
    hits: u64,
    misses: u64,
}

impl BatchCache {
    /// An empty cache with a byte budget (0 disables it).
    pub fn new(budget: usize) -> Self {
        BatchCache { budget, ..Default::default() }
    }

    /// Change the budget, evicting as needed.
    pub fn set_budget(&mut self, budget: usize) {
        self.budget = budget;
        self.evict();
    }

    /// Bytes currently cached.
    pub fn used_bytes(&self) -> usize {
        self.used
    }

    /// (hits, misses) of `collect`.
    pub fn hit_stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// Add a batch. Batches larger than the whole budget are not cached.
    pub fn insert(&mut self, base_offset: i64, last_offset: i64, bytes: Bytes) {
        if bytes.len() > self.budget {
            return;
        }
        self.used += bytes.len();
        if let Some(old) = self.map.insert(base_offset, Entry { last_offset, bytes }) {
            self.used -= old.bytes.len();
        }
        self.evict();
    }

    fn evict(&mut self) {
        while self.used > self.budget {
            match self.map.pop_first() {
                Some((_, e)) => self.used -= e.bytes.len(),
                None => break,
            }
        }
    }

    /// Drop every batch with a base offset >= `offset` or whose last offset is < `below`.
    pub fn retain_range(&mut self, below: i64, offset: i64) {
        let removed: Vec<i64> = self
            .map
            .iter()
            .filter(|(b, e)| **b >= offset || e.last_offset < below)
            .map(|(b, _)| *b)
            .collect();
        for b in removed {
            if let Some(e) = self.map.remove(&b) {
                self.used -= e.bytes.len();
            }
        }
    }

    /// Consecutive cached batches starting with the one containing `start`, all ending
    /// below `end`, up to `max_bytes` (at least one when `min_one`). `None` when the
    /// batch containing `start` is not cached.
    pub fn collect(&mut self, start: i64, end: i64, max_bytes: usize, min_one: bool) -> Option<Vec<Bytes>> {
        let first = self.map.range(..=start).next_back();
        let base = match first {
            Some((b, e)) if e.last_offset >= start && e.last_offset < end => *b,
            _ => {
                self.misses += 1;
                return None;
            }
        };
        let mut out = Vec::new();
        let mut total = 0usize;
        let mut next = base;
        for (&b, e) in self.map.range(base..) {
            if b != next || e.last_offset >= end {
                break;
            }
            if total + e.bytes.len() > max_bytes && !(out.is_empty() && min_one) {
                break;
            }
            total += e.bytes.len();
            out.push(e.bytes.clone());
            next = e.last_offset + 1;
        }
        self.hits += 1;
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_and_collects_runs() {
        let mut c = BatchCache::new(30);
        c.insert(0, 4, Bytes::from(vec![0u8; 10]));
        c.insert(5, 9, Bytes::from(vec![0u8; 10]));
        c.insert(10, 10, Bytes::from(vec![0u8; 10]));
        assert_eq!(c.collect(7, 11, 100, true).map(|v| v.len()), Some(2));
        assert_eq!(c.collect(7, 10, 100, true).map(|v| v.len()), Some(1));
        assert_eq!(c.collect(7, 11, 5, true).map(|v| v.len()), Some(1));
        assert_eq!(c.collect(7, 11, 5, false).map(|v| v.len()), Some(0));
        c.insert(11, 11, Bytes::from(vec![0u8; 10]));
        assert!(c.collect(2, 12, 100, true).is_none());
        assert_eq!(c.used_bytes(), 30);
    }
}
