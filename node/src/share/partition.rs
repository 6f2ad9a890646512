//! The in-flight records of one share-partition (a share group reading one topic
//! partition), kept by the partition's leader: which records between the share-partition
//! start offset (SPSO) and its end are available, acquired by a member (until a lock
//! deadline), acknowledged or archived, and how often each was delivered (KIP-932).
//!
//! This is the state machine only: reading the log, persisting the state and timing
//! are the caller's (`leader.rs`). Every offset in `[start, end)` has one slot, so the
//! memory is bounded by the in-flight limit plus one record batch.

use std::collections::VecDeque;
use std::rc::Rc;

use spate_net::ErrorCode;

use super::persister::{ShareState, StateBatch};

/// Kafka's persisted delivery states (`RecordState` ids).
pub const AVAILABLE: i8 = 0;
pub const ACKNOWLEDGED: i8 = 2;
pub const ARCHIVED: i8 = 4;

/// Acknowledgement types of ShareFetch/ShareAcknowledge.
pub const GAP: i8 = 0;
pub const ACCEPT: i8 = 1;
pub const RELEASE: i8 = 2;
pub const REJECT: i8 = 3;
pub const RENEW: i8 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Available,
    /// Held by `owner` (an index into `owners`) until `deadline_ms`.
    Acquired {
        owner: u32,
        deadline_ms: i64,
    },
    Acknowledged,
    Archived,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    state: State,
    delivery_count: i16,
}

/// A fetched record batch, as acquisition sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSpan {
    pub base: i64,
    /// Inclusive.
    pub last: i64,
    /// Control batches (transaction markers) are never delivered.
    pub control: bool,
    /// read_committed: the batch belongs to an aborted transaction.
    pub aborted: bool,
}

/// What one acquisition asks for.
#[derive(Debug, Clone, Copy)]
pub struct Acquire<'a> {
    pub member: &'a str,
    pub now_ms: i64,
    pub lock_ms: i64,
    /// Stop after this many records.
    pub max_records: usize,
    /// Record-limit mode (ShareFetch v2 `ShareAcquireMode` 1): never more than
    /// `max_records`, splitting a batch if needed; otherwise whole batches.
    pub record_limit: bool,
    /// Most records in flight (`group.share.partition.max.record.locks`).
    pub max_in_flight: usize,
}

/// One acknowledgement batch of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckBatch {
    pub first_offset: i64,
    pub last_offset: i64,
    /// One type for the whole range, or one per offset.
    pub types: Vec<i8>,
}

/// The share-partition's records in flight.
#[derive(Debug)]
pub struct SharePartition {
    start: i64,
    slots: VecDeque<Slot>,
    /// Member ids of acquisitions (slots hold indices, so a slot stays small).
    owners: Vec<Rc<str>>,
    /// Earliest lock deadline of an acquired record (i64::MAX: none).
    next_deadline_ms: i64,
    delivery_limit: i16,
}

impl SharePartition {
    /// A share-partition that starts at `start` with nothing in flight.
    pub fn new(start: i64, delivery_limit: i16) -> SharePartition {
        SharePartition {
            start,
            slots: VecDeque::new(),
            owners: Vec::new(),
            next_deadline_ms: i64::MAX,
            delivery_limit: delivery_limit.max(1),
        }
    }

    /// The share-partition as its persisted state says; the offsets between the start
    /// and the batches are available and were never delivered.
    pub fn restore(state: &ShareState, delivery_limit: i16) -> SharePartition {
        let mut p = SharePartition::new(state.start_offset, delivery_limit);
        let mut batches = state.batches.clone();
        batches.sort_by_key(|b| b.first_offset);
        for b in batches {
            let first = b.first_offset.max(p.end());
            for _ in p.end()..first {
                p.slots.push_back(Slot {
                    state: State::Available,
                    delivery_count: 0,
                });
            }
            let state = match b.delivery_state {
                ACKNOWLEDGED => State::Acknowledged,
                ARCHIVED => State::Archived,
                _ => State::Available,
            };
            for _ in first..=b.last_offset {
                p.slots.push_back(Slot {
                    state,
                    delivery_count: b.delivery_count.max(0),
                });
            }
        }
        p.advance_start();
        p
    }

    pub fn start(&self) -> i64 {
        self.start
    }

    /// The first offset never acquired.
    pub fn end(&self) -> i64 {
        self.start + self.slots.len() as i64
    }

    pub fn in_flight(&self) -> usize {
        self.slots.len()
    }

    fn slot(&self, offset: i64) -> Option<&Slot> {
        let i = usize::try_from(offset.checked_sub(self.start)?).ok()?;
        self.slots.get(i)
    }

    fn slot_mut(&mut self, offset: i64) -> Option<&mut Slot> {
        let i = usize::try_from(offset.checked_sub(self.start)?).ok()?;
        self.slots.get_mut(i)
    }

    /// Where the next acquisition should read the log from: the first available record
    /// in flight, else the end when the in-flight limit leaves room; None when nothing
    /// can be acquired.
    pub fn fetch_offset(&self, max_in_flight: usize) -> Option<i64> {
        if let Some(i) = self.slots.iter().position(|s| s.state == State::Available) {
            return Some(self.start + i as i64);
        }
        (self.slots.len() < max_in_flight).then(|| self.end())
    }

    /// Whether records in flight wait to be acquired again.
    pub fn has_available(&self) -> bool {
        self.slots.iter().any(|s| s.state == State::Available)
    }

    /// The log starts past the share-partition's start (retention, DeleteRecords):
    /// the records before it are gone, so the start moves there.
    pub fn skip_to(&mut self, log_start: i64) {
        while self.start < log_start {
            if self.slots.pop_front().is_none() {
                self.start = log_start;
                break;
            }
            self.start += 1;
        }
        self.advance_start();
    }

    fn owner_index(&mut self, member: &str) -> u32 {
        if let Some(i) = self.owners.iter().position(|m| &**m == member) {
            return i as u32;
        }
        if self.owners.len() >= 1024 {
            self.compact_owners();
        }
        self.owners.push(Rc::from(member));
        (self.owners.len() - 1) as u32
    }

    /// Drop the member ids no acquired record refers to any more.
    fn compact_owners(&mut self) {
        let mut live: Vec<Rc<str>> = Vec::new();
        for slot in self.slots.iter_mut() {
            if let State::Acquired { owner, .. } = &mut slot.state {
                let id = &self.owners[*owner as usize];
                let i = match live.iter().position(|m| m == id) {
                    Some(i) => i,
                    None => {
                        live.push(id.clone());
                        live.len() - 1
                    }
                };
                *owner = i as u32;
            }
        }
        self.owners = live;
    }

    /// Acquire records of `batches` (read from the log from `from`, in offset order) for
    /// a member: available records in flight and records past the end. Available
    /// records the read passed over are gone from the log (compacted) and archived.
    /// Returns the acquired ranges (first, last, delivery count) and which batches hold
    /// acquired records.
    pub fn acquire(&mut self, req: &Acquire, from: i64, batches: &[BatchSpan]) -> Acquired {
        let owner = self.owner_index(req.member);
        let deadline_ms = req.now_ms.saturating_add(req.lock_ms);
        let mut from = from;
        let mut out = Acquired::default();
        let mut taken = 0usize;
        for (bi, batch) in batches.iter().enumerate() {
            if taken >= req.max_records {
                break;
            }
            if batch.last < self.start {
                continue;
            }
            self.archive_missing(from, batch.base);
            from = from.max(batch.last.saturating_add(1));
            // Offsets the log does not have between what is in flight and this batch
            // (compacted away) are never delivered.
            if batch.base > self.end() {
                if self.slots.len() >= req.max_in_flight {
                    break;
                }
                while self.end() < batch.base {
                    self.slots.push_back(Slot {
                        state: State::Archived,
                        delivery_count: 0,
                    });
                }
            }
            let mut got_any = false;
            for offset in batch.base.max(self.start)..=batch.last {
                if req.record_limit && taken >= req.max_records {
                    break;
                }
                if offset == self.end() {
                    // Whole batches may go past the in-flight limit (as Kafka's batch
                    // alignment); record-limit mode stops at it.
                    if self.slots.len() >= req.max_in_flight && (req.record_limit || !got_any) {
                        break;
                    }
                    let state = if batch.control || batch.aborted {
                        State::Archived
                    } else {
                        State::Available
                    };
                    self.slots.push_back(Slot {
                        state,
                        delivery_count: 0,
                    });
                }
                let limit = self.delivery_limit;
                let Some(slot) = self.slot_mut(offset) else {
                    break;
                };
                if slot.state != State::Available {
                    continue;
                }
                if batch.control || batch.aborted || slot.delivery_count >= limit {
                    slot.state = State::Archived;
                    continue;
                }
                slot.delivery_count += 1;
                slot.state = State::Acquired { owner, deadline_ms };
                taken += 1;
                got_any = true;
                out.push(offset, slot.delivery_count);
            }
            if got_any {
                out.batches.push(bi);
            }
            // Whole batches: the limit is checked between them.
            if !req.record_limit && self.slots.len() >= req.max_in_flight {
                break;
            }
        }
        if taken > 0 {
            self.next_deadline_ms = self.next_deadline_ms.min(deadline_ms);
        }
        self.advance_start();
        out
    }

    /// Available records in `[from, to)` that a read of the log did not return: the log
    /// no longer has them.
    fn archive_missing(&mut self, from: i64, to: i64) {
        for offset in from.max(self.start)..to.min(self.end()) {
            if let Some(slot) = self.slot_mut(offset) {
                if slot.state == State::Available {
                    slot.state = State::Archived;
                }
            }
        }
    }

    /// Check and apply a member's acknowledgements; INVALID_RECORD_STATE (nothing
    /// applied) when a record is not acquired by that member, INVALID_REQUEST for a
    /// malformed batch. Returns whether the persisted state changed (renewals only
    /// move lock deadlines, which are not persisted).
    pub fn acknowledge(
        &mut self,
        member: &str,
        batches: &[AckBatch],
        now_ms: i64,
        lock_ms: i64,
    ) -> Result<bool, i16> {
        let owner = self.owners.iter().position(|m| &**m == member);
        for b in batches {
            let len = b
                .last_offset
                .checked_sub(b.first_offset)
                .and_then(|d| d.checked_add(1))
                .filter(|&n| n > 0)
                .ok_or(ErrorCode::InvalidRequest.code())?;
            if b.types.len() != 1 && b.types.len() as i64 != len {
                return Err(ErrorCode::InvalidRequest.code());
            }
            if b.types.iter().any(|t| !(GAP..=RENEW).contains(t)) {
                return Err(ErrorCode::InvalidRequest.code());
            }
            for offset in b.first_offset..=b.last_offset {
                let held = match (self.slot(offset), owner) {
                    (
                        Some(Slot {
                            state: State::Acquired { owner: o, .. },
                            ..
                        }),
                        Some(me),
                    ) => *o as usize == me,
                    _ => false,
                };
                if !held {
                    return Err(ErrorCode::InvalidRecordState.code());
                }
            }
        }
        let mut changed = false;
        let limit = self.delivery_limit;
        for b in batches {
            for (k, offset) in (b.first_offset..=b.last_offset).enumerate() {
                let t = if b.types.len() == 1 {
                    b.types[0]
                } else {
                    b.types[k]
                };
                let slot = self.slot_mut(offset).expect("checked above");
                match t {
                    ACCEPT => slot.state = State::Acknowledged,
                    RELEASE => slot.state = release(slot.delivery_count, limit),
                    RENEW => {
                        if let State::Acquired { deadline_ms, .. } = &mut slot.state {
                            *deadline_ms = now_ms.saturating_add(lock_ms);
                        }
                        continue;
                    }
                    // No record at that offset, or one the consumer could not process.
                    GAP | REJECT => slot.state = State::Archived,
                    _ => unreachable!("types checked above"),
                }
                changed = true;
            }
        }
        self.advance_start();
        Ok(changed)
    }

    /// Release every record `member` holds (its share session ended); whether any was.
    pub fn release_member(&mut self, member: &str) -> bool {
        let Some(me) = self.owners.iter().position(|m| &**m == member) else {
            return false;
        };
        let limit = self.delivery_limit;
        let mut changed = false;
        for slot in self.slots.iter_mut() {
            if matches!(slot.state, State::Acquired { owner, .. } if owner as usize == me) {
                slot.state = release(slot.delivery_count, limit);
                changed = true;
            }
        }
        self.advance_start();
        changed
    }

    /// Release the records whose acquisition lock expired; whether any did.
    pub fn expire_locks(&mut self, now_ms: i64) -> bool {
        if now_ms < self.next_deadline_ms {
            return false;
        }
        let limit = self.delivery_limit;
        let mut next = i64::MAX;
        let mut changed = false;
        for slot in self.slots.iter_mut() {
            if let State::Acquired { deadline_ms, .. } = slot.state {
                if deadline_ms <= now_ms {
                    slot.state = release(slot.delivery_count, limit);
                    changed = true;
                } else {
                    next = next.min(deadline_ms);
                }
            }
        }
        self.next_deadline_ms = next;
        self.advance_start();
        changed
    }

    /// The start moves past acknowledged and archived records.
    fn advance_start(&mut self) {
        while let Some(front) = self.slots.front() {
            if matches!(front.state, State::Acknowledged | State::Archived) {
                self.slots.pop_front();
                self.start += 1;
            } else {
                break;
            }
        }
    }

    /// Records acknowledged or archived past the start (Kafka's delivery-complete count
    /// of what is in flight).
    pub fn delivery_complete(&self) -> i32 {
        self.slots
            .iter()
            .filter(|s| matches!(s.state, State::Acknowledged | State::Archived))
            .count()
            .try_into()
            .unwrap_or(i32::MAX)
    }

    /// The in-flight records as persisted state batches: runs of one delivery state and
    /// count. An acquired record is persisted as available (locks do not survive the
    /// leader), with its delivery count.
    pub fn state_batches(&self) -> Vec<StateBatch> {
        let mut out: Vec<StateBatch> = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            let offset = self.start + i as i64;
            let state = match slot.state {
                State::Available | State::Acquired { .. } => AVAILABLE,
                State::Acknowledged => ACKNOWLEDGED,
                State::Archived => ARCHIVED,
            };
            match out.last_mut() {
                Some(b)
                    if b.delivery_state == state
                        && b.delivery_count == slot.delivery_count
                        && b.last_offset + 1 == offset =>
                {
                    b.last_offset = offset
                }
                _ => out.push(StateBatch {
                    first_offset: offset,
                    last_offset: offset,
                    delivery_state: state,
                    delivery_count: slot.delivery_count,
                }),
            }
        }
        out
    }

    /// Records acquired by anyone (for metrics).
    pub fn acquired(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s.state, State::Acquired { .. }))
            .count()
    }
}

/// A released (or lock-expired) record: available again, or archived once it was
/// delivered as often as the group allows.
fn release(delivery_count: i16, limit: i16) -> State {
    if delivery_count >= limit {
        State::Archived
    } else {
        State::Available
    }
}

/// The result of an acquisition.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Acquired {
    /// (first offset, last offset, delivery count), in offset order.
    pub ranges: Vec<(i64, i64, i16)>,
    /// Indices of the batches that hold acquired records.
    pub batches: Vec<usize>,
}

impl Acquired {
    fn push(&mut self, offset: i64, count: i16) {
        match self.ranges.last_mut() {
            Some((_, last, c)) if *last + 1 == offset && *c == count => *last = offset,
            _ => self.ranges.push((offset, offset, count)),
        }
    }

    pub fn records(&self) -> usize {
        self.ranges
            .iter()
            .map(|(f, l, _)| (l - f + 1) as usize)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(base: i64, last: i64) -> BatchSpan {
        BatchSpan {
            base,
            last,
            control: false,
            aborted: false,
        }
    }

    fn req(member: &str, now_ms: i64) -> Acquire<'_> {
        Acquire {
            member,
            now_ms,
            lock_ms: 1000,
            max_records: 500,
            record_limit: false,
            max_in_flight: 2000,
        }
    }

    fn ack(first: i64, last: i64, t: i8) -> AckBatch {
        AckBatch {
            first_offset: first,
            last_offset: last,
            types: vec![t],
        }
    }

    #[test]
    fn acquire_accept_moves_the_start() {
        let mut p = SharePartition::new(0, 5);
        let got = p.acquire(&req("a", 0), 0, &[span(0, 4), span(5, 9)]);
        assert_eq!(got.ranges, vec![(0, 9, 1)]);
        assert_eq!(got.batches, vec![0, 1]);
        assert_eq!(p.fetch_offset(2000), Some(10));
        // Nobody else gets them.
        let again = p.acquire(&req("b", 0), 0, &[span(0, 4)]);
        assert!(again.ranges.is_empty());
        assert_eq!(p.acknowledge("a", &[ack(0, 4, ACCEPT)], 0, 1000), Ok(true));
        assert_eq!(p.start(), 5);
        // b cannot acknowledge a's records.
        assert_eq!(
            p.acknowledge("b", &[ack(5, 9, ACCEPT)], 0, 1000),
            Err(ErrorCode::InvalidRecordState.code())
        );
        assert_eq!(p.start(), 5);
    }

    #[test]
    fn release_redelivers_with_a_higher_count_until_the_limit() {
        let mut p = SharePartition::new(0, 2);
        p.acquire(&req("a", 0), 0, &[span(0, 2)]);
        p.acknowledge("a", &[ack(0, 2, RELEASE)], 0, 1000).unwrap();
        assert_eq!(p.fetch_offset(2000), Some(0));
        let got = p.acquire(&req("b", 0), 0, &[span(0, 2)]);
        assert_eq!(got.ranges, vec![(0, 2, 2)]);
        // Second release at the limit archives them.
        p.acknowledge("b", &[ack(0, 2, RELEASE)], 0, 1000).unwrap();
        assert_eq!(p.start(), 3);
        assert!(p.state_batches().is_empty());
    }

    #[test]
    fn reject_archives_and_per_offset_types_apply() {
        let mut p = SharePartition::new(10, 5);
        p.acquire(&req("a", 0), 10, &[span(10, 13)]);
        let b = AckBatch {
            first_offset: 10,
            last_offset: 13,
            types: vec![ACCEPT, RELEASE, REJECT, GAP],
        };
        p.acknowledge("a", &[b], 0, 1000).unwrap();
        assert_eq!(p.start(), 11);
        assert_eq!(
            p.state_batches(),
            vec![
                StateBatch {
                    first_offset: 11,
                    last_offset: 11,
                    delivery_state: AVAILABLE,
                    delivery_count: 1
                },
                StateBatch {
                    first_offset: 12,
                    last_offset: 13,
                    delivery_state: ARCHIVED,
                    delivery_count: 1
                },
            ]
        );
    }

    #[test]
    fn locks_expire_and_renew() {
        let mut p = SharePartition::new(0, 5);
        p.acquire(&req("a", 0), 0, &[span(0, 1)]);
        assert!(!p.expire_locks(999));
        p.acknowledge("a", &[ack(1, 1, RENEW)], 500, 1000).unwrap();
        assert!(p.expire_locks(1000));
        // Offset 0 expired and is available; offset 1 was renewed until 1500.
        assert_eq!(p.fetch_offset(2000), Some(0));
        assert_eq!(p.acquired(), 1);
        assert!(p.expire_locks(1500));
        assert_eq!(p.acquired(), 0);
    }

    #[test]
    fn in_flight_limit_and_record_limit() {
        let mut p = SharePartition::new(0, 5);
        let mut r = req("a", 0);
        r.max_in_flight = 3;
        // Whole batches: one batch may go past the limit, the next one does not start.
        let got = p.acquire(&r, 0, &[span(0, 4), span(5, 9)]);
        assert_eq!(got.ranges, vec![(0, 4, 1)]);
        assert_eq!(p.fetch_offset(3), None);
        let mut q = SharePartition::new(0, 5);
        let mut r = req("a", 0);
        r.record_limit = true;
        r.max_records = 2;
        let got = q.acquire(&r, q.end(), &[span(0, 4)]);
        assert_eq!(got.ranges, vec![(0, 1, 1)]);
        assert_eq!(q.end(), 2);
        let got = q.acquire(&r, q.end(), &[span(0, 4)]);
        assert_eq!(got.ranges, vec![(2, 3, 1)]);
    }

    #[test]
    fn control_batches_and_gaps_are_archived() {
        let mut p = SharePartition::new(0, 5);
        let marker = BatchSpan {
            base: 3,
            last: 3,
            control: true,
            aborted: false,
        };
        let got = p.acquire(&req("a", 0), 0, &[span(0, 1), marker, span(6, 7)]);
        assert_eq!(got.ranges, vec![(0, 1, 1), (6, 7, 1)]);
        assert_eq!(got.batches, vec![0, 2]);
        p.acknowledge("a", &[ack(0, 1, ACCEPT)], 0, 1000).unwrap();
        // 2 (missing), 3 (marker), 4-5 (missing) are archived: the start jumps to 6.
        assert_eq!(p.start(), 6);
    }

    #[test]
    fn restore_and_member_release() {
        let state = ShareState {
            state_epoch: 1,
            start_offset: 5,
            batches: vec![
                StateBatch {
                    first_offset: 7,
                    last_offset: 8,
                    delivery_state: ACKNOWLEDGED,
                    delivery_count: 1,
                },
                StateBatch {
                    first_offset: 9,
                    last_offset: 9,
                    delivery_state: AVAILABLE,
                    delivery_count: 3,
                },
            ],
        };
        let mut p = SharePartition::restore(&state, 5);
        assert_eq!((p.start(), p.end()), (5, 10));
        let got = p.acquire(&req("a", 0), 5, &[span(5, 12)]);
        assert_eq!(got.ranges, vec![(5, 6, 1), (9, 9, 4), (10, 12, 1)]);
        assert!(p.release_member("a"));
        assert_eq!(p.acquired(), 0);
        assert!(!p.release_member("nobody"));
    }

    #[test]
    fn available_records_gone_from_the_log_are_archived() {
        let mut p = SharePartition::new(0, 5);
        p.acquire(&req("a", 0), 0, &[span(0, 5)]);
        p.acknowledge("a", &[ack(0, 5, RELEASE)], 0, 1000).unwrap();
        // Compaction removed 0-3: the next read from 0 starts at 4.
        let got = p.acquire(&req("b", 0), 0, &[span(4, 5)]);
        assert_eq!(got.ranges, vec![(4, 5, 2)]);
        assert_eq!(p.start(), 4);
        assert!(!p.has_available());
    }

    #[test]
    fn malformed_acknowledgements_are_refused() {
        let mut p = SharePartition::new(0, 5);
        p.acquire(&req("a", 0), 0, &[span(0, 3)]);
        let two_types_for_four = AckBatch {
            first_offset: 0,
            last_offset: 3,
            types: vec![ACCEPT, ACCEPT],
        };
        assert_eq!(
            p.acknowledge("a", &[two_types_for_four], 0, 1000),
            Err(ErrorCode::InvalidRequest.code())
        );
        assert_eq!(
            p.acknowledge("a", &[ack(3, 0, ACCEPT)], 0, 1000),
            Err(ErrorCode::InvalidRequest.code())
        );
        assert_eq!(
            p.acknowledge("a", &[ack(0, 0, 9)], 0, 1000),
            Err(ErrorCode::InvalidRequest.code())
        );
        assert_eq!(
            p.acknowledge("a", &[ack(0, 10, ACCEPT)], 0, 1000),
            Err(ErrorCode::InvalidRecordState.code())
        );
    }
}
