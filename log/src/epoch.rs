//! Kafka's leader-epoch cache of one partition (`LeaderEpochFileCache`): for every
//! leader epoch that wrote to the log, the offset its first batch got. Replication
//! needs it to answer `OffsetForLeaderEpoch` (where did epoch N end?) and to tell a
//! follower where its log diverges from the leader's.
//!
//! This module is the data structure and its checkpoint file format only (Kafka's
//! `leader-epoch-checkpoint`: a version line `0`, a count line, then one `epoch
//! startOffset` line per entry); `PartitionLog` decides when to change it and persists
//! it (see `log::epochs`).

/// Name of the checkpoint file in the partition directory (Kafka's).
pub(crate) const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";

/// Kafka's `UNDEFINED_EPOCH`: no epoch known (also what clients stamp into batches).
pub const UNDEFINED_EPOCH: i32 = -1;
/// Kafka's `UNDEFINED_EPOCH_OFFSET`: no end offset known.
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;

/// The epochs of a log, oldest first: `(epoch, start offset)`, strictly increasing in
/// both (an invariant every change keeps and asserts).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct EpochCache {
    entries: Vec<(i32, i64)>,
}

impl EpochCache {
    /// The entries, oldest first.
    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    /// The newest entry.
    pub fn latest(&self) -> Option<(i32, i64)> {
        self.entries.last().copied()
    }

    /// Kafka's `assign(epoch, startOffset)`: nothing changes when `epoch` is the latest
    /// epoch and `start` not below its start; otherwise every entry from the end whose
    /// epoch is >= `epoch` or whose start is >= `start` goes (they contradict the new
    /// one: a log's epochs and offsets grow together), and the new entry is added.
    /// Returns whether the cache changed.
    ///
    /// Panics on a negative epoch or offset (callers filter clients' `-1`).
    pub fn assign(&mut self, epoch: i32, start: i64) -> bool {
        assert!(
            epoch >= 0 && start >= 0,
            "invalid leader epoch entry ({epoch}, {start})"
        );
        if self.latest().is_some_and(|(e, s)| e == epoch && start >= s) {
            return false;
        }
        while self
            .entries
            .last()
            .is_some_and(|&(e, s)| e >= epoch || s >= start)
        {
            self.entries.pop();
        }
        self.entries.push((epoch, start));
        self.check();
        true
    }

    /// Kafka's `endOffsetFor(requestedEpoch, logEndOffset)`: `(epoch, end offset)` of
    /// the largest epoch <= `requested`, its end being the start of the next epoch (the
    /// log end for the latest one). [`UNDEFINED_EPOCH`] asked, or an epoch above every
    /// known one, gives `(UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET)`; an epoch below every
    /// known one gives `(requested, start of the first epoch)` (its data is gone: the
    /// follower goes on from there).
    pub fn end_offset_for(&self, requested: i32, log_end: i64) -> (i32, i64) {
        const UNDEFINED: (i32, i64) = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        if requested == UNDEFINED_EPOCH {
            return UNDEFINED;
        }
        if self.latest().is_some_and(|(e, _)| e == requested) {
            return (requested, log_end);
        }
        let higher = self.entries.partition_point(|&(e, _)| e <= requested);
        let Some(&(_, next_start)) = self.entries.get(higher) else {
            return UNDEFINED;
        };
        match higher.checked_sub(1).map(|i| self.entries[i]) {
            Some((floor, _)) => (floor, next_start),
            None => (requested, next_start),
        }
    }

    /// Kafka's `truncateFromEnd`: remove every entry starting at or above `end` (the
    /// new log end offset). Returns whether the cache changed.
    pub fn truncate_from_end(&mut self, end: i64) -> bool {
        let keep = self.entries.partition_point(|&(_, s)| s < end);
        let changed = keep < self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// Kafka's `truncateFromStart`: entries starting at or below `start` (the new log
    /// start offset) go, except the newest of them, which now starts at `start` (the
    /// data at the log start belongs to it). Returns whether the cache changed.
    pub fn truncate_from_start(&mut self, start: i64) -> bool {
        let below = self.entries.partition_point(|&(_, s)| s <= start);
        if below == 0 || (below == 1 && self.entries[0].1 == start) {
            return false;
        }
        let (epoch, _) = self.entries[below - 1];
        self.entries.drain(..below - 1);
        self.entries[0] = (epoch, start);
        self.check();
        true
    }

    /// Remove every entry. Returns whether the cache changed.
    pub fn clear(&mut self) -> bool {
        let changed = !self.entries.is_empty();
        self.entries.clear();
        changed
    }

    /// The checkpoint file's contents.
    pub fn checkpoint_bytes(&self) -> Vec<u8> {
        let mut s = format!("0\n{}\n", self.entries.len());
        for (e, o) in &self.entries {
            s.push_str(&format!("{e} {o}\n"));
        }
        s.into_bytes()
    }

    /// Parse a checkpoint file. Its entries go through [`assign`](Self::assign), as in
    /// Kafka, so entries out of order leave a consistent cache. An empty file is an
    /// empty cache (Kafka reads it so); anything not in the format is an error.
    pub fn parse_checkpoint(data: &[u8]) -> Result<EpochCache, String> {
        let text = std::str::from_utf8(data).map_err(|_| "not UTF-8".to_string())?;
        let mut lines = text.lines();
        let mut cache = EpochCache::default();
        let Some(version) = lines.next() else {
            return Ok(cache);
        };
        if version.trim() != "0" {
            return Err(format!("unknown version {version:?}"));
        }
        let count: usize = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or("missing or bad entry count")?;
        let mut seen = 0usize;
        for line in lines {
            let mut fields = line.split_whitespace();
            let entry = match (fields.next(), fields.next(), fields.next()) {
                (Some(e), Some(o), None) => e.parse::<i32>().ok().zip(o.parse::<i64>().ok()),
                _ => None,
            };
            match entry {
                Some((e, o)) if e >= 0 && o >= 0 => {
                    cache.assign(e, o);
                }
                _ => return Err(format!("malformed entry {line:?}")),
            }
            seen += 1;
        }
        if seen != count {
            return Err(format!("{seen} entries, the count line says {count}"));
        }
        Ok(cache)
    }

    /// The invariant: epochs and start offsets strictly increase.
    fn check(&self) {
        assert!(
            self.entries
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1),
            "leader epoch entries must strictly increase: {:?}",
            self.entries
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: &[(i32, i64)]) -> EpochCache {
        let mut c = EpochCache::default();
        for &(e, o) in entries {
            assert!(c.assign(e, o));
        }
        assert_eq!(c.entries(), entries);
        c
    }

    const UNDEFINED: (i32, i64) = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);

    #[test]
    fn assign_adds_increasing_entries_and_ignores_repeats() {
        let mut c = cache(&[(2, 6)]);
        // Same epoch, same or later offset: nothing to do.
        assert!(!c.assign(2, 6));
        assert!(!c.assign(2, 10));
        assert!(c.assign(3, 10));
        assert_eq!(c.entries(), &[(2, 6), (3, 10)]);
        assert_eq!(c.latest(), Some((3, 10)));
    }

    #[test]
    fn assign_same_epoch_earlier_offset_moves_its_start() {
        let mut c = cache(&[(1, 5), (2, 6)]);
        assert!(c.assign(2, 5));
        // (1, 5) starts at the new entry's offset: it contradicts it and goes.
        assert_eq!(c.entries(), &[(2, 5)]);
    }

    #[test]
    fn assign_lower_epoch_drops_the_conflicting_newer_entries() {
        let mut c = cache(&[(2, 6), (3, 8), (4, 11)]);
        assert!(c.assign(3, 9));
        assert_eq!(c.entries(), &[(2, 6), (3, 9)]);
        // A higher epoch starting below the latest start also truncates.
        let mut c = cache(&[(2, 6), (3, 8)]);
        assert!(c.assign(4, 7));
        assert_eq!(c.entries(), &[(2, 6), (4, 7)]);
        // An entry contradicting everything leaves only itself.
        let mut c = cache(&[(2, 6), (3, 8)]);
        assert!(c.assign(1, 2));
        assert_eq!(c.entries(), &[(1, 2)]);
    }

    #[test]
    #[should_panic(expected = "invalid leader epoch entry")]
    fn assign_rejects_negative_epochs() {
        EpochCache::default().assign(-1, 0);
    }

    // The cases of Kafka's LeaderEpochFileCacheTest for endOffsetFor.
    #[test]
    fn end_offset_for_undefined_epoch_is_undefined() {
        assert_eq!(
            cache(&[(2, 6)]).end_offset_for(UNDEFINED_EPOCH, 10),
            UNDEFINED
        );
    }

    #[test]
    fn end_offset_for_an_empty_cache_is_undefined() {
        let c = EpochCache::default();
        assert_eq!(c.end_offset_for(0, 0), UNDEFINED);
        assert_eq!(c.end_offset_for(7, 100), UNDEFINED);
    }

    #[test]
    fn end_offset_for_the_latest_epoch_is_the_log_end() {
        let c = cache(&[(2, 6), (3, 8)]);
        assert_eq!(c.end_offset_for(3, 12), (3, 12));
        // The leader's new epoch before anything was appended in it.
        assert_eq!(cache(&[(2, 6)]).end_offset_for(2, 6), (2, 6));
    }

    #[test]
    fn end_offset_for_an_epoch_above_all_is_undefined() {
        assert_eq!(cache(&[(2, 6), (3, 8)]).end_offset_for(4, 12), UNDEFINED);
    }

    #[test]
    fn end_offset_for_an_epoch_below_all_is_the_first_start() {
        let c = cache(&[(5, 11), (6, 12)]);
        assert_eq!(c.end_offset_for(4, 20), (4, 11));
        assert_eq!(c.end_offset_for(0, 20), (0, 11));
    }

    #[test]
    fn end_offset_for_an_older_epoch_ends_where_the_next_starts() {
        let c = cache(&[(2, 6), (5, 10), (7, 15)]);
        assert_eq!(c.end_offset_for(2, 20), (2, 10));
        assert_eq!(c.end_offset_for(5, 20), (5, 15));
        // An epoch never seen between two known ones: the one below it ends there.
        assert_eq!(c.end_offset_for(3, 20), (2, 10));
        assert_eq!(c.end_offset_for(6, 20), (5, 15));
    }

    #[test]
    fn truncate_from_end_removes_entries_at_or_above_the_end() {
        let mut c = cache(&[(2, 6), (3, 8), (4, 11)]);
        assert!(!c.truncate_from_end(12));
        assert!(c.truncate_from_end(11));
        assert_eq!(c.entries(), &[(2, 6), (3, 8)]);
        assert!(c.truncate_from_end(7));
        assert_eq!(c.entries(), &[(2, 6)]);
        assert!(c.truncate_from_end(0));
        assert!(c.entries().is_empty());
        assert!(!c.truncate_from_end(0));
    }

    #[test]
    fn truncate_from_start_keeps_the_epoch_of_the_new_start() {
        let mut c = cache(&[(2, 6), (3, 8), (4, 11)]);
        assert!(!c.truncate_from_start(5));
        assert!(!c.truncate_from_start(6));
        // Start inside epoch 3: epoch 2 goes, epoch 3 starts at 9.
        assert!(c.truncate_from_start(9));
        assert_eq!(c.entries(), &[(3, 9), (4, 11)]);
        // Start exactly at an entry's start: older entries go, it stays as it is.
        let mut c = cache(&[(2, 6), (3, 8), (4, 11)]);
        assert!(c.truncate_from_start(11));
        assert_eq!(c.entries(), &[(4, 11)]);
        // Start past every entry: the latest epoch starts there.
        let mut c = cache(&[(2, 6), (3, 8)]);
        assert!(c.truncate_from_start(20));
        assert_eq!(c.entries(), &[(3, 20)]);
        assert!(!EpochCache::default().truncate_from_start(3));
    }

    #[test]
    fn clear_empties() {
        let mut c = cache(&[(2, 6)]);
        assert!(c.clear());
        assert!(!c.clear());
        assert_eq!(c.latest(), None);
    }

    #[test]
    fn checkpoint_round_trips_in_kafkas_format() {
        let c = cache(&[(0, 0), (3, 120), (7, 4_000_000_000)]);
        let bytes = c.checkpoint_bytes();
        assert_eq!(bytes, b"0\n3\n0 0\n3 120\n7 4000000000\n");
        assert_eq!(EpochCache::parse_checkpoint(&bytes).unwrap(), c);
        assert_eq!(
            EpochCache::parse_checkpoint(b"0\n0\n").unwrap(),
            EpochCache::default()
        );
        assert_eq!(
            EpochCache::parse_checkpoint(b"").unwrap(),
            EpochCache::default()
        );
        // Kafka splits on any whitespace.
        assert_eq!(
            EpochCache::parse_checkpoint(b"0\n1\n4  17\n").unwrap(),
            cache(&[(4, 17)])
        );
    }

    #[test]
    fn malformed_checkpoints_are_errors() {
        for bad in [
            &b"1\n0\n"[..],
            b"0\n",
            b"0\nx\n",
            b"0\n2\n1 5\n",
            b"0\n1\n1 5\n2 6\n",
            b"0\n1\n1\n",
            b"0\n1\n1 5 6\n",
            b"0\n1\n-1 5\n",
            b"0\n1\n1 -5\n",
            b"0\n1\nx 5\n",
            b"\xff\n",
        ] {
            assert!(
                EpochCache::parse_checkpoint(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn out_of_order_checkpoint_entries_are_resolved_by_assign() {
        let c = EpochCache::parse_checkpoint(b"0\n3\n1 0\n3 10\n2 5\n").unwrap();
        assert_eq!(c.entries(), &[(1, 0), (2, 5)]);
    }
}
