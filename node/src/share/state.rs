//! The share-partition states of one `__share_group_state` partition, as its share
//! coordinator holds them (Kafka's ShareCoordinatorShard): what each request would
//! write, and the replay of what was written. Nothing here changes the state except
//! [`PartitionStates::replay`], which the coordinator calls for a record once the log
//! has it (and the load calls for every record of the log), so the state in memory is
//! always the replay of the log.

use std::collections::HashMap;

use spate_net::ErrorCode;

use super::persister::{
    PersisterError, ShareKey, ShareState, StateBatch, StateSummary, StateWrite,
};

/// Most state batches one write may carry. A share-partition leader holds at most
/// `group.share.partition.max.record.locks` (a few thousand) records in flight, so a
/// real write carries far fewer; more is a broken or hostile caller.
pub const MAX_WRITE_BATCHES: usize = 10_000;
/// Most state batches a share-partition's state may hold after a write (the bound of
/// its memory).
pub const MAX_STATE_BATCHES: usize = 100_000;

/// One share-partition's state (Kafka's `ShareGroupOffset`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offsets {
    pub snapshot_epoch: i32,
    pub state_epoch: i32,
    pub leader_epoch: i32,
    pub start_offset: i64,
    pub delivery_complete_count: i32,
    pub batches: Vec<StateBatch>,
    pub create_ms: i64,
    pub write_ms: i64,
}

/// What a ShareUpdate record carries: the changed batches, the new start offset (-1:
/// unchanged) and leader epoch (-1: unchanged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub snapshot_epoch: i32,
    pub leader_epoch: i32,
    pub start_offset: i64,
    pub delivery_complete_count: i32,
    pub batches: Vec<StateBatch>,
}

/// A record of `__share_group_state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The whole state of a share-partition.
    Snapshot(ShareKey, Offsets),
    /// A change to the state of the latest snapshot.
    Update(ShareKey, Update),
    /// The share-partition's state is deleted (a ShareSnapshot key with a null value).
    Tombstone(ShareKey),
}

impl Record {
    pub fn key(&self) -> &ShareKey {
        match self {
            Record::Snapshot(k, _) | Record::Update(k, _) | Record::Tombstone(k) => k,
        }
    }
}

/// A share-partition's state and what fences its callers.
#[derive(Debug, Clone)]
struct KeyState {
    offsets: Offsets,
    /// The highest leader epoch recorded: reads and writes of older leaders are fenced.
    leader_fence: i32,
    /// The highest state epoch recorded: writes and initializations of older state
    /// epochs are fenced.
    state_fence: i32,
    /// ShareUpdate records since the last ShareSnapshot that restarted the count.
    updates: u32,
    /// Offset of the record the state's replay starts at (its latest snapshot): the
    /// records before it are not needed for this key any more.
    needed_from: i64,
}

/// The share-partition states of one `__share_group_state` partition.
#[derive(Debug, Default)]
pub struct PartitionStates {
    keys: HashMap<ShareKey, KeyState>,
    /// `share.coordinator.snapshot.update.records.per.snapshot`.
    updates_per_snapshot: u32,
    /// The offset after the last record replayed.
    end: i64,
}

fn invalid(message: &str) -> PersisterError {
    (ErrorCode::InvalidRequest.code(), Some(message.to_string()))
}

fn fenced(code: ErrorCode, current: i32, asked: i32) -> PersisterError {
    (
        code.code(),
        Some(format!("epoch {asked} is older than the current {current}")),
    )
}

fn check_partition(key: &ShareKey) -> Result<(), PersisterError> {
    if key.partition < 0 {
        return Err(invalid("negative partition index"));
    }
    Ok(())
}

/// Kafka's PersisterStateBatchCombiner: the batches of `so_far` and `new` below
/// `start_offset` are dropped (or cut at it), and where batches overlap the one with
/// the higher delivery count wins, then the higher delivery state; adjacent pieces in
/// the same state are joined. The result is sorted and without overlaps.
pub fn combine(so_far: &[StateBatch], new: &[StateBatch], start_offset: i64) -> Vec<StateBatch> {
    let mut kept: Vec<StateBatch> = Vec::with_capacity(so_far.len() + new.len());
    for b in so_far.iter().chain(new) {
        if start_offset == -1 || b.first_offset >= start_offset {
            kept.push(*b);
        } else if b.last_offset >= start_offset {
            kept.push(StateBatch {
                first_offset: start_offset,
                ..*b
            });
        }
    }
    if kept.len() <= 1 {
        return kept;
    }
    // A sweep over the batches' boundaries: at each, the batches covering the offsets
    // up to the next boundary are counted by (delivery count, state); the highest wins.
    let mut events: Vec<(i64, bool, (i16, i8))> = Vec::with_capacity(kept.len() * 2);
    for b in &kept {
        let priority = (b.delivery_count, b.delivery_state);
        events.push((b.first_offset, true, priority));
        events.push((b.last_offset.saturating_add(1), false, priority));
    }
    // Ends before begins at the same offset.
    events.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut active: std::collections::BTreeMap<(i16, i8), u32> = Default::default();
    let mut out: Vec<StateBatch> = Vec::new();
    let mut from = -1i64;
    let mut current: Option<(i16, i8)> = None;
    let mut i = 0;
    while i < events.len() {
        let at = events[i].0;
        if let Some((count, state)) = current {
            if at > from {
                append_joined(&mut out, from, at - 1, count, state);
            }
        }
        while i < events.len() && events[i].0 == at {
            let (_, begin, priority) = events[i];
            if begin {
                *active.entry(priority).or_insert(0) += 1;
            } else if let Some(n) = active.get_mut(&priority) {
                *n -= 1;
                if *n == 0 {
                    active.remove(&priority);
                }
            }
            i += 1;
        }
        current = active.keys().next_back().copied();
        from = at;
    }
    out
}

fn append_joined(out: &mut Vec<StateBatch>, first: i64, last: i64, count: i16, state: i8) {
    if let Some(prev) = out.last_mut() {
        if prev.last_offset.saturating_add(1) == first
            && prev.delivery_count == count
            && prev.delivery_state == state
        {
            prev.last_offset = last;
            return;
        }
    }
    out.push(StateBatch {
        first_offset: first,
        last_offset: last,
        delivery_state: state,
        delivery_count: count,
    });
}

impl PartitionStates {
    pub fn new(updates_per_snapshot: u32) -> PartitionStates {
        PartitionStates {
            keys: HashMap::new(),
            updates_per_snapshot,
            end: 0,
        }
    }

    /// Share-partitions with a state.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The records of the partition below this offset are needed by no state (Kafka's
    /// last redundant offset + 1): the oldest latest snapshot, or everything replayed
    /// when no state is left.
    pub fn needed_from(&self) -> i64 {
        self.keys
            .values()
            .map(|k| k.needed_from)
            .min()
            .unwrap_or(self.end)
    }

    /// InitializeShareGroupState: the snapshot that (re)starts the state.
    pub fn initialize(
        &self,
        key: &ShareKey,
        state_epoch: i32,
        start_offset: i64,
        now: i64,
    ) -> Result<Record, PersisterError> {
        check_partition(key)?;
        if state_epoch < 0 {
            return Err(invalid("negative state epoch"));
        }
        let current = self.keys.get(key);
        if let Some(k) = current {
            if k.state_fence > state_epoch {
                return Err(fenced(
                    ErrorCode::FencedStateEpoch,
                    k.state_fence,
                    state_epoch,
                ));
            }
        }
        Ok(Record::Snapshot(
            key.clone(),
            Offsets {
                snapshot_epoch: current.map_or(0, |k| k.offsets.snapshot_epoch + 1),
                state_epoch,
                leader_epoch: 0,
                start_offset,
                delivery_complete_count: if start_offset == -1 { -1 } else { 0 },
                batches: Vec::new(),
                create_ms: now,
                write_ms: now,
            },
        ))
    }

    /// ReadShareGroupState by the leader in `leader_epoch`: the state, and the record
    /// that records a new leader epoch (to be written before the answer).
    pub fn read(
        &self,
        key: &ShareKey,
        leader_epoch: i32,
        now: i64,
    ) -> Result<(ShareState, Option<Record>), PersisterError> {
        check_partition(key)?;
        if leader_epoch < 0 {
            return Err(invalid("negative leader epoch"));
        }
        let Some(k) = self.keys.get(key) else {
            return Err(invalid("the share-partition's state is not initialized"));
        };
        if k.leader_fence > leader_epoch {
            return Err(fenced(
                ErrorCode::FencedLeaderEpoch,
                k.leader_fence,
                leader_epoch,
            ));
        }
        let state = ShareState {
            state_epoch: k.offsets.state_epoch,
            start_offset: k.offsets.start_offset,
            batches: k.offsets.batches.clone(),
        };
        if k.leader_fence == leader_epoch {
            return Ok((state, None));
        }
        // A new leader: its epoch is recorded, the rest of the state unchanged.
        let change = StateWrite {
            state_epoch: k.offsets.state_epoch,
            leader_epoch,
            start_offset: k.offsets.start_offset,
            delivery_complete_count: k.offsets.delivery_complete_count,
            batches: Vec::new(),
        };
        Ok((state, Some(self.state_record(key, k, &change, true, now))))
    }

    /// WriteShareGroupState: a ShareUpdate, or a ShareSnapshot when the key has had
    /// `updates_per_snapshot` updates since its last one.
    pub fn write(
        &self,
        key: &ShareKey,
        write: &StateWrite,
        now: i64,
    ) -> Result<Record, PersisterError> {
        check_partition(key)?;
        if write.leader_epoch < 0 {
            return Err(invalid("negative leader epoch"));
        }
        if write.state_epoch < 0 {
            return Err(invalid("negative state epoch"));
        }
        if write.batches.len() > MAX_WRITE_BATCHES {
            return Err(invalid("too many state batches"));
        }
        if write
            .batches
            .iter()
            .any(|b| b.first_offset < 0 || b.last_offset < b.first_offset)
        {
            return Err(invalid("a state batch's offsets are out of order"));
        }
        let Some(k) = self.keys.get(key) else {
            return Err(invalid("the share-partition's state is not initialized"));
        };
        if k.leader_fence > write.leader_epoch {
            return Err(fenced(
                ErrorCode::FencedLeaderEpoch,
                k.leader_fence,
                write.leader_epoch,
            ));
        }
        if k.state_fence > write.state_epoch {
            return Err(fenced(
                ErrorCode::FencedStateEpoch,
                k.state_fence,
                write.state_epoch,
            ));
        }
        let record = self.state_record(key, k, write, false, now);
        let batches = match &record {
            Record::Snapshot(_, o) => o.batches.len(),
            Record::Update(_, u) => k.offsets.batches.len() + u.batches.len(),
            Record::Tombstone(_) => 0,
        };
        if batches > MAX_STATE_BATCHES {
            return Err(invalid(
                "the share-partition's state would hold too many batches",
            ));
        }
        Ok(record)
    }

    /// The record of a write (or of a read's new leader epoch, `new_leader`): Kafka's
    /// rules for the start offset (never moves back) and the delivery complete count.
    fn state_record(
        &self,
        key: &ShareKey,
        k: &KeyState,
        write: &StateWrite,
        new_leader: bool,
        now: i64,
    ) -> Record {
        let cur = &k.offsets;
        let leader_epoch = if new_leader {
            write.leader_epoch
        } else {
            cur.leader_epoch
        };
        let start_offset = write.start_offset.max(cur.start_offset);
        let delivery_complete_count = match write.start_offset.cmp(&cur.start_offset) {
            std::cmp::Ordering::Equal => write
                .delivery_complete_count
                .max(cur.delivery_complete_count),
            std::cmp::Ordering::Less => cur.delivery_complete_count,
            std::cmp::Ordering::Greater => write.delivery_complete_count,
        };
        if k.updates >= self.updates_per_snapshot {
            Record::Snapshot(
                key.clone(),
                Offsets {
                    snapshot_epoch: cur.snapshot_epoch + 1,
                    state_epoch: cur.state_epoch,
                    leader_epoch,
                    start_offset,
                    delivery_complete_count,
                    batches: combine(&cur.batches, &write.batches, start_offset),
                    create_ms: now,
                    write_ms: now,
                },
            )
        } else {
            Record::Update(
                key.clone(),
                Update {
                    snapshot_epoch: cur.snapshot_epoch,
                    leader_epoch,
                    start_offset,
                    delivery_complete_count,
                    batches: combine(&[], &write.batches, start_offset),
                },
            )
        }
    }

    /// DeleteShareGroupState: a tombstone, or nothing when there is no state.
    pub fn delete(&self, key: &ShareKey) -> Result<Option<Record>, PersisterError> {
        check_partition(key)?;
        Ok(self
            .keys
            .contains_key(key)
            .then(|| Record::Tombstone(key.clone())))
    }

    /// ReadShareGroupStateSummary (not fenced, and recording nothing: Kafka's too).
    /// Without a state: start offset -1, epochs 0.
    pub fn summary(&self, key: &ShareKey) -> Result<StateSummary, PersisterError> {
        check_partition(key)?;
        Ok(match self.keys.get(key) {
            Some(k) => StateSummary {
                state_epoch: k.offsets.state_epoch,
                leader_epoch: k.offsets.leader_epoch,
                start_offset: k.offsets.start_offset,
                delivery_complete_count: k.offsets.delivery_complete_count,
            },
            None => StateSummary {
                state_epoch: 0,
                leader_epoch: 0,
                start_offset: -1,
                delivery_complete_count: -1,
            },
        })
    }

    /// Apply a record written at `offset`.
    pub fn replay(&mut self, record: Record, offset: i64) {
        self.end = self.end.max(offset.saturating_add(1));
        match record {
            Record::Tombstone(key) => {
                self.keys.remove(&key);
            }
            Record::Snapshot(key, offsets) => {
                let limit = self.updates_per_snapshot;
                match self.keys.get_mut(&key) {
                    Some(k) => {
                        k.leader_fence = k.leader_fence.max(offsets.leader_epoch);
                        k.state_fence = k.state_fence.max(offsets.state_epoch);
                        if k.updates >= limit {
                            k.updates = 0;
                        }
                        k.offsets = offsets;
                        k.needed_from = offset;
                    }
                    None => {
                        self.keys.insert(
                            key,
                            KeyState {
                                leader_fence: offsets.leader_epoch,
                                state_fence: offsets.state_epoch,
                                offsets,
                                updates: 0,
                                needed_from: offset,
                            },
                        );
                    }
                }
            }
            Record::Update(key, update) => match self.keys.get_mut(&key) {
                Some(k) => {
                    k.leader_fence = k.leader_fence.max(update.leader_epoch);
                    let cur = &mut k.offsets;
                    if update.start_offset != -1 {
                        cur.start_offset = update.start_offset;
                    }
                    if update.leader_epoch != -1 {
                        cur.leader_epoch = update.leader_epoch;
                    }
                    cur.delivery_complete_count = update.delivery_complete_count;
                    cur.batches = combine(&cur.batches, &update.batches, cur.start_offset);
                    k.updates = k.updates.saturating_add(1);
                }
                // An update without a snapshot before it (the snapshot was pruned,
                // which pruning never does, or written by another implementation):
                // Kafka starts the state from the update alone.
                None => {
                    let offsets = Offsets {
                        snapshot_epoch: update.snapshot_epoch,
                        state_epoch: 0,
                        leader_epoch: update.leader_epoch,
                        start_offset: update.start_offset,
                        delivery_complete_count: update.delivery_complete_count,
                        batches: update.batches,
                        create_ms: 0,
                        write_ms: 0,
                    };
                    self.keys.insert(
                        key,
                        KeyState {
                            leader_fence: offsets.leader_epoch,
                            state_fence: 0,
                            offsets,
                            updates: 1,
                            needed_from: offset,
                        },
                    );
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spate_net::Uuid;

    fn b(first: i64, last: i64, state: i8, count: i16) -> StateBatch {
        StateBatch {
            first_offset: first,
            last_offset: last,
            delivery_state: state,
            delivery_count: count,
        }
    }

    fn key(p: i32) -> ShareKey {
        ShareKey {
            group_id: "g".into(),
            topic_id: Uuid([7; 16]),
            partition: p,
        }
    }

    fn write(
        state_epoch: i32,
        leader_epoch: i32,
        start: i64,
        batches: Vec<StateBatch>,
    ) -> StateWrite {
        StateWrite {
            state_epoch,
            leader_epoch,
            start_offset: start,
            delivery_complete_count: -1,
            batches,
        }
    }

    /// Apply what a request would write, at the next offset.
    fn apply(s: &mut PartitionStates, r: Record) {
        let at = s.end;
        s.replay(r, at);
    }

    #[test]
    fn combining_prunes_below_the_start_and_the_higher_delivery_count_wins() {
        // Nothing, one batch: as they are (after pruning).
        assert_eq!(combine(&[], &[], 0), vec![]);
        assert_eq!(combine(&[b(5, 9, 0, 1)], &[], 7), vec![b(7, 9, 0, 1)]);
        assert_eq!(combine(&[b(5, 9, 0, 1)], &[], 10), vec![]);
        // -1: no pruning.
        assert_eq!(combine(&[b(0, 3, 0, 1)], &[], -1), vec![b(0, 3, 0, 1)]);
        // An acknowledged middle replaces the available run around it.
        assert_eq!(
            combine(&[b(0, 9, 0, 1)], &[b(3, 5, 2, 1)], 0),
            vec![b(0, 2, 0, 1), b(3, 5, 2, 1), b(6, 9, 0, 1)]
        );
        // The higher delivery count wins whichever list it is in.
        assert_eq!(
            combine(&[b(0, 9, 0, 3)], &[b(3, 5, 2, 1)], 0),
            vec![b(0, 9, 0, 3)]
        );
        // Same state and count: joined.
        assert_eq!(
            combine(&[b(0, 4, 2, 1)], &[b(5, 9, 2, 1)], 0),
            vec![b(0, 9, 2, 1)]
        );
        // Gaps stay gaps; unsorted input comes out sorted.
        assert_eq!(
            combine(&[b(20, 25, 4, 1)], &[b(0, 4, 0, 1)], 0),
            vec![b(0, 4, 0, 1), b(20, 25, 4, 1)]
        );
        // Overlapping ties on count: the higher state (archived over acknowledged).
        assert_eq!(
            combine(&[b(0, 5, 2, 2)], &[b(3, 8, 4, 2)], 0),
            vec![b(0, 2, 2, 2), b(3, 8, 4, 2)]
        );
    }

    #[test]
    fn write_and_read_need_an_initialized_state_and_fence_old_epochs() {
        let mut s = PartitionStates::new(500);
        let k = key(0);
        let code = |r: Result<Record, PersisterError>| r.err().map(|e| e.0);
        assert_eq!(
            code(s.write(&k, &write(0, 0, 0, vec![]), 1)),
            Some(ErrorCode::InvalidRequest.code())
        );
        assert_eq!(
            s.read(&k, 0, 1).err().map(|e| e.0),
            Some(ErrorCode::InvalidRequest.code())
        );
        let r = s.initialize(&k, 1, 10, 1).unwrap();
        apply(&mut s, r);
        // The first read by leader epoch 3 records it.
        let (state, rec) = s.read(&k, 3, 2).unwrap();
        assert_eq!((state.state_epoch, state.start_offset), (1, 10));
        let r = rec.expect("a new leader epoch is written");
        apply(&mut s, r);
        assert!(s.read(&k, 3, 2).unwrap().1.is_none());
        assert_eq!(
            s.read(&k, 2, 2).err().map(|e| e.0),
            Some(ErrorCode::FencedLeaderEpoch.code())
        );
        assert_eq!(
            code(s.write(&k, &write(1, 2, 10, vec![]), 3)),
            Some(ErrorCode::FencedLeaderEpoch.code())
        );
        assert_eq!(
            code(s.write(&k, &write(0, 3, 10, vec![]), 3)),
            Some(ErrorCode::FencedStateEpoch.code())
        );
        assert_eq!(
            code(s.write(&k, &write(1, -1, 10, vec![]), 3)),
            Some(ErrorCode::InvalidRequest.code())
        );
        assert_eq!(
            code(s.write(&k, &write(1, 3, 10, vec![b(12, 11, 0, 1)]), 3)),
            Some(ErrorCode::InvalidRequest.code())
        );
        assert_eq!(
            code(s.initialize(&k, 0, 0, 3)),
            Some(ErrorCode::FencedStateEpoch.code())
        );
        assert_eq!(s.summary(&k).unwrap().leader_epoch, 3);
    }

    #[test]
    fn writes_combine_and_the_start_offset_never_moves_back() {
        let mut s = PartitionStates::new(500);
        let k = key(1);
        let r = s.initialize(&k, 0, 0, 1).unwrap();
        apply(&mut s, r);
        let r = s
            .write(&k, &write(0, 0, 0, vec![b(0, 9, 0, 1)]), 2)
            .unwrap();
        apply(&mut s, r);
        let r = s
            .write(&k, &write(0, 0, 5, vec![b(5, 6, 2, 1)]), 3)
            .unwrap();
        apply(&mut s, r);
        let (state, _) = s.read(&k, 0, 4).unwrap();
        assert_eq!(state.start_offset, 5);
        assert_eq!(state.batches, vec![b(5, 6, 2, 1), b(7, 9, 0, 1)]);
        // An older start offset does not move it back.
        let r = s.write(&k, &write(0, 0, 2, vec![]), 5).unwrap();
        apply(&mut s, r);
        assert_eq!(s.read(&k, 0, 6).unwrap().0.start_offset, 5);
        let sum = s.summary(&k).unwrap();
        assert_eq!((sum.state_epoch, sum.start_offset), (0, 5));
    }

    #[test]
    fn a_snapshot_follows_every_n_updates_and_replay_rebuilds_the_same_state() {
        let mut s = PartitionStates::new(2);
        let k = key(2);
        let mut log = Vec::new();
        let mut push = |s: &mut PartitionStates, r: Record| {
            log.push(r.clone());
            apply(s, r);
        };
        let r = s.initialize(&k, 0, 0, 1).unwrap();
        push(&mut s, r);
        let mut kinds = Vec::new();
        for i in 0..5 {
            let r = s
                .write(&k, &write(0, 0, 0, vec![b(i, i, 2, 1)]), 2)
                .unwrap();
            kinds.push(matches!(r, Record::Snapshot(..)));
            push(&mut s, r);
        }
        // Two updates, then a snapshot (restarting the count), then updates again.
        assert_eq!(kinds, vec![false, false, true, false, false]);
        let Record::Snapshot(_, snap) = &log[3] else {
            panic!("expected a snapshot");
        };
        assert_eq!(snap.snapshot_epoch, 1);
        assert_eq!(snap.batches, vec![b(0, 2, 2, 1)]);
        // Records before the latest snapshot (offset 3) are not needed.
        assert_eq!(s.needed_from(), 3);
        // Replaying the whole log, or only from the latest snapshot, gives the same state.
        let want = s.read(&k, 0, 9).unwrap().0;
        assert_eq!(want.batches, vec![b(0, 4, 2, 1)]);
        for from in [0, 3] {
            let mut again = PartitionStates::new(2);
            for (i, r) in log.iter().enumerate().skip(from) {
                again.replay(r.clone(), i as i64);
            }
            assert_eq!(again.read(&k, 0, 9).unwrap().0, want, "from {from}");
        }
    }

    #[test]
    fn delete_leaves_a_tombstone_and_forgets_the_state() {
        let mut s = PartitionStates::new(500);
        let k = key(3);
        assert_eq!(s.delete(&k).unwrap(), None);
        let r = s.initialize(&k, 4, 100, 1).unwrap();
        apply(&mut s, r);
        assert_eq!(s.len(), 1);
        let r = s.delete(&k).unwrap().expect("a tombstone");
        apply(&mut s, r);
        assert_eq!(s.len(), 0);
        assert_eq!(s.needed_from(), 2);
        let sum = s.summary(&k).unwrap();
        assert_eq!((sum.start_offset, sum.state_epoch), (-1, 0));
        // After a delete the epochs start over.
        assert!(s.initialize(&k, 0, 0, 2).is_ok());
        assert_eq!(
            s.delete(&ShareKey { partition: -1, ..k })
                .err()
                .map(|e| e.0),
            Some(ErrorCode::InvalidRequest.code())
        );
    }
}
