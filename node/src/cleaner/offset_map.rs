//! The cleaner's key map: for each key of the dirty part of a log, the offset of its
//! latest record. Fixed memory (Kafka's `log.cleaner.dedupe.buffer.size`): keys are
//! stored as 128-bit hashes (xxh3), in open addressing with linear probing, filled at
//! most to the load factor. A hash collision between two keys would make the older
//! record of one look superseded; at 128 bits it is not a practical concern (Kafka uses
//! the same scheme with MD5).

use twox_hash::XxHash3_128;

/// Bytes one slot takes: the key hash and the offset.
pub const SLOT_BYTES: usize = 24;

#[derive(Clone, Copy, Default)]
struct Slot {
    /// Key hash; `(0, 0)` marks an empty slot (a key hashing to it is stored as `(0, 1)`).
    hi: u64,
    lo: u64,
    offset: i64,
}

pub struct OffsetMap {
    slots: Vec<Slot>,
    /// Entries allowed before the map counts as full.
    max_entries: usize,
    entries: usize,
}

fn hash(key: &[u8]) -> (u64, u64) {
    let h = XxHash3_128::oneshot(key);
    let (hi, lo) = ((h >> 64) as u64, h as u64);
    if hi == 0 && lo == 0 {
        (0, 1)
    } else {
        (hi, lo)
    }
}

impl OffsetMap {
    /// A map for about `wanted` keys, taking at most `max_bytes`, filled at most to
    /// `load_factor`.
    pub fn new(max_bytes: usize, load_factor: f64, wanted: usize) -> OffsetMap {
        let load_factor = load_factor.clamp(0.1, 0.95);
        let max_slots = (max_bytes / SLOT_BYTES).max(2);
        let want_slots = ((wanted as f64 / load_factor).ceil() as usize).max(16);
        let slots = want_slots.min(max_slots);
        OffsetMap {
            slots: vec![Slot::default(); slots],
            max_entries: ((slots as f64 * load_factor) as usize).max(1),
            entries: 0,
        }
    }

    /// Keys that still fit.
    pub fn free(&self) -> usize {
        self.max_entries - self.entries
    }

    /// Share of the usable capacity in use, 0 to 1.
    pub fn utilization(&self) -> f64 {
        self.entries as f64 / self.max_entries as f64
    }

    /// Bytes the map holds.
    pub fn memory_bytes(&self) -> usize {
        self.slots.len() * SLOT_BYTES
    }

    fn position(&self, hi: u64, lo: u64) -> (usize, bool) {
        let n = self.slots.len();
        let mut i = (lo as usize) % n;
        loop {
            let s = &self.slots[i];
            if s.hi == hi && s.lo == lo {
                return (i, true);
            }
            if s.hi == 0 && s.lo == 0 {
                return (i, false);
            }
            i = (i + 1) % n;
        }
    }

    /// Record `offset` as the latest of `key`. The caller checks [`free`](Self::free)
    /// first: a full map refuses new keys (updates of known keys always fit).
    pub fn put(&mut self, key: &[u8], offset: i64) {
        let (hi, lo) = hash(key);
        let (i, found) = self.position(hi, lo);
        if !found {
            assert!(self.entries < self.max_entries, "offset map over capacity");
            self.entries += 1;
        }
        self.slots[i] = Slot { hi, lo, offset };
    }

    /// The latest offset of `key`, if it is in the map.
    pub fn get(&self, key: &[u8]) -> Option<i64> {
        let (hi, lo) = hash(key);
        match self.position(hi, lo) {
            (i, true) => Some(self.slots[i].offset),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_offset_per_key() {
        let mut m = OffsetMap::new(1 << 20, 0.9, 100);
        for i in 0..1000i64 {
            let key = format!("k{}", i % 50);
            assert!(m.free() > 0);
            m.put(key.as_bytes(), i);
        }
        assert_eq!(m.free(), m.max_entries - 50);
        assert_eq!(m.get(b"k0"), Some(950));
        assert_eq!(m.get(b"k49"), Some(999));
        assert_eq!(m.get(b"other"), None);
    }

    #[test]
    fn bounded_by_memory_and_load_factor() {
        let mut m = OffsetMap::new(100 * SLOT_BYTES, 0.5, 1_000_000);
        assert_eq!(m.memory_bytes(), 100 * SLOT_BYTES);
        let mut put = 0;
        while m.free() > 0 {
            m.put(format!("key-{put}").as_bytes(), put);
            put += 1;
        }
        assert_eq!(put, 50);
        // A known key still updates in a full map.
        m.put(b"key-3", 1000);
        assert_eq!(m.get(b"key-3"), Some(1000));
        assert!((m.utilization() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn small_wanted_sizes_stay_small() {
        let m = OffsetMap::new(128 << 20, 0.9, 10);
        assert!(m.memory_bytes() < 1024);
    }
}
