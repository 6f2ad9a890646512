//! Idempotent-producer state of one partition: per producer id, its epoch and the
//! last five batches it wrote (sequence range and offsets), as in Kafka. Retried
//! batches are recognised and answered with their original offsets instead of being
//! written again; gaps in sequences and stale epochs are refused.
//!
//! A batch enters the state when its offsets are assigned, with the log's ticket for
//! its write, so that the producer's next batches (sent before this one is written)
//! pass the sequence check. Until the write completes it is only provisional: a retry
//! of it is answered once the original is written, and if the write fails the batch is
//! pruned from the state (its sequence numbers are free again for the retry).

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use spate_log::WriteTicket;
use spate_net::ErrorCode;

/// Kafka keeps the last five batches per producer (the client's max in-flight).
const CACHED_BATCHES: usize = 5;

/// One batch written by a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
    /// The write that makes this batch durable, while it may still be pending; `None`
    /// for batches read back from the log or a snapshot.
    #[serde(skip)]
    pub ticket: Option<WriteTicket>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMeta>,
    /// When the producer last wrote (ms since the epoch), for expiry.
    last_write_ms: i64,
    /// First offset of the producer's ongoing transaction on this partition.
    #[serde(default)]
    txn_first_offset: Option<i64>,
}

/// Kafka's `producer.id.expiration.ms` default: a producer silent for a day is forgotten.
pub const PRODUCER_ID_EXPIRATION_MS: i64 = 24 * 60 * 60 * 1000;

/// What to do with an incoming batch.
#[derive(Debug, PartialEq, Eq)]
pub enum SequenceCheck {
    /// New and in order: write it.
    Append,
    /// Already written: answer with the original offsets, write nothing.
    Duplicate(BatchMeta),
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
    /// KIP-890: transactional producers whose first batch here waits for the
    /// coordinator to confirm (or, under transaction version 2, make) this partition part
    /// of their transaction. In memory only: a restart makes the producer verify again.
    #[serde(skip)]
    verifying: HashMap<i64, Verification>,
    #[serde(skip)]
    next_guard: u64,
    /// Producers whose batch was refused before its append with a retriable error: the
    /// sequence gap it leaves (see [`ProducerStates::refuse`]). In memory only.
    #[serde(skip)]
    refused: HashMap<i64, RefusedBatch>,
}

/// A batch refused before its append, with the error it got.
#[derive(Debug, Clone, Copy)]
struct RefusedBatch {
    epoch: i16,
    first_seq: i32,
    code: i16,
    since_ms: i64,
}

/// At most this many refused batches remembered per partition; past it, the batches
/// behind a refused one get OUT_OF_ORDER_SEQUENCE_NUMBER as plain gaps.
const MAX_REFUSED: usize = 10_000;

/// A verification in progress: the guard the producer's batch must come back with, and
/// the epoch of that batch.
#[derive(Debug, Clone, Copy)]
struct Verification {
    guard: u64,
    epoch: i16,
    since_ms: i64,
}

/// A verification older than this is dropped by [`ProducerStates::expire`]: its batch
/// would have timed out at the client long before (Kafka's `request.timeout.ms` is 30 s).
const VERIFICATION_MAX_AGE_MS: i64 = 120_000;

/// At most this many verifications in progress per partition (each is one producer
/// between its first transactional batch here and the coordinator's answer).
const MAX_VERIFYING: usize = 10_000;

/// The outcome of [`ProducerStates::verify_txn`].
#[derive(Debug, PartialEq, Eq)]
pub enum TxnVerification {
    /// The producer's transaction is already ongoing here, or the batch brings a valid
    /// guard: append.
    Append,
    /// Ask the coordinator, then send the batch again with this guard.
    Ask(u64),
    /// Refuse the batch with this error.
    Refuse(i16),
}

/// The sequence after `seq`; sequences wrap from i32::MAX to 0.
fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

/// Whether `seq` comes after `earlier` (within half the sequence space, which wraps).
fn seq_after(seq: i32, earlier: i32) -> bool {
    let distance = (i64::from(seq) - i64::from(earlier)).rem_euclid(i64::from(i32::MAX) + 1);
    distance > 0 && distance < 1 << 30
}

/// The last sequence of a batch of `count` records starting at `first`.
pub fn last_seq(first: i32, last_offset_delta: i32) -> i32 {
    ((first as i64 + last_offset_delta as i64) % (i32::MAX as i64 + 1)) as i32
}

impl ProducerStates {
    /// Check a batch of producer `pid` at `epoch` with sequences `first..=last`.
    /// Returns the Kafka error code when the batch must be refused.
    pub fn check(&self, pid: i64, epoch: i16, first: i32, last: i32) -> Result<SequenceCheck, i16> {
        let Some(entry) = self.producers.get(&pid) else {
            // As Kafka: a producer with no state here (new, expired, or its batches
            // removed by retention or DeleteRecords) may start at any sequence.
            return Ok(SequenceCheck::Append);
        };
        if epoch < entry.epoch {
            return Err(ErrorCode::InvalidProducerEpoch.code());
        }
        if epoch > entry.epoch {
            // A bumped epoch restarts the sequence.
            return if first == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(self.gap(pid, epoch, first))
            };
        }
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == first && b.last_seq == last)
        {
            return Ok(SequenceCheck::Duplicate(*dup));
        }
        match entry.batches.back() {
            Some(prev) if first != next_seq(prev.last_seq) => Err(self.gap(pid, epoch, first)),
            None if first != 0 => Err(self.gap(pid, epoch, first)),
            _ => Ok(SequenceCheck::Append),
        }
    }

    /// The answer to a batch of `pid` at `epoch` that skips sequences before `first`:
    /// OUT_OF_ORDER_SEQUENCE_NUMBER, unless an earlier batch of the producer was refused
    /// before its append and made the gap; then the error that batch got.
    ///
    /// Why: Kafka works through a connection's requests one at a time, so the batches a
    /// producer pipelined behind a refused one are checked right after it, and get the
    /// same refusal (NOT_ENOUGH_REPLICAS, NOT_LEADER_OR_FOLLOWER). Spate checks each batch
    /// when it arrives, while earlier ones still wait for their replication; if the
    /// cause of the refusal has passed by then, the next batch finds a gap. librdkafka
    /// answers a gap behind a failed request by bumping its epoch and sending every
    /// unacknowledged batch again under new sequence numbers, written ones included:
    /// duplicates. Answering with the refused batch's error instead makes the producer
    /// retry in order, as it does against Kafka.
    fn gap(&self, pid: i64, epoch: i16, first: i32) -> i16 {
        match self.refused.get(&pid) {
            Some(r) if r.epoch == epoch && seq_after(first, r.first_seq) => r.code,
            _ => ErrorCode::OutOfOrderSequenceNumber.code(),
        }
    }

    /// A batch of `pid` at `epoch` from sequence `first` on was refused with the
    /// retriable error `code` before its append (its sequences stay free). The earliest
    /// such batch is kept until the producer's sequences pass it.
    pub fn refuse(&mut self, pid: i64, epoch: i16, first: i32, code: i16, now_ms: i64) {
        if let Some(r) = self.refused.get(&pid) {
            if r.epoch == epoch && !seq_after(r.first_seq, first) {
                return;
            }
        } else if self.refused.len() >= MAX_REFUSED {
            return;
        }
        let batch = RefusedBatch {
            epoch,
            first_seq: first,
            code,
            since_ms: now_ms,
        };
        self.refused.insert(pid, batch);
    }

    /// Record a written batch (after `check` said `Append`, or while replaying the log),
    /// written at `write_ms`.
    pub fn record(&mut self, pid: i64, epoch: i16, meta: BatchMeta, write_ms: i64) {
        if let Some(r) = self.refused.get(&pid) {
            // The refused batch's sequences are taken now (its retry), or it belongs
            // to an older epoch.
            if r.epoch != epoch || !seq_after(r.first_seq, meta.last_seq) {
                self.refused.remove(&pid);
            }
        }
        let entry = self.producers.entry(pid).or_default();
        entry.last_write_ms = entry.last_write_ms.max(write_ms);
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == CACHED_BATCHES {
            entry.batches.pop_front();
        }
        entry.batches.push_back(meta);
    }

    /// Settle the provisional batches of `pid` (of every producer with `None`) with
    /// `outcome(ticket)`: `Some(true)` written (the batch becomes plain state),
    /// `Some(false)` discarded by a failed write (it is forgotten: its sequence numbers
    /// are free again), `None` still waiting. Settling early keeps the log's memory of
    /// roll-backs, which answers `outcome`, short.
    pub fn settle(&mut self, pid: Option<i64>, outcome: impl Fn(WriteTicket) -> Option<bool>) {
        let settle_one = |entry: &mut ProducerEntry| {
            entry.batches.retain_mut(|b| match b.ticket.map(&outcome) {
                Some(Some(true)) => {
                    b.ticket = None;
                    true
                }
                Some(Some(false)) => false,
                _ => true,
            });
        };
        match pid {
            Some(pid) => self
                .producers
                .get_mut(&pid)
                .into_iter()
                .for_each(settle_one),
            None => self.producers.values_mut().for_each(settle_one),
        }
    }

    /// A copy holding only the batches for which `written(ticket)` holds (what a
    /// snapshot at the written end offset may contain).
    pub fn written_only(&self, written: impl Fn(WriteTicket) -> bool) -> ProducerStates {
        let producers = self
            .producers
            .iter()
            .map(|(pid, e)| {
                let batches = e
                    .batches
                    .iter()
                    .filter(|b| b.ticket.is_none_or(&written))
                    .map(|b| BatchMeta { ticket: None, ..*b })
                    .collect();
                (
                    *pid,
                    ProducerEntry {
                        epoch: e.epoch,
                        batches,
                        last_write_ms: e.last_write_ms,
                        txn_first_offset: e.txn_first_offset,
                    },
                )
            })
            .collect();
        ProducerStates {
            producers,
            ..Default::default()
        }
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// A transactional batch of `pid` at `offset`: it starts the producer's transaction
    /// here unless one is ongoing.
    pub fn begin_txn(&mut self, pid: i64, offset: i64) {
        self.verifying.remove(&pid);
        let entry = self.producers.entry(pid).or_default();
        entry.txn_first_offset.get_or_insert(offset);
    }

    /// KIP-890's defence against hanging transactions: may a transactional batch of
    /// `pid` at `epoch` be appended? Yes when its transaction is ongoing here. Otherwise the
    /// coordinator must first confirm the partition is in the transaction; the guard made
    /// now is withdrawn by any marker that could end that transaction, so a batch whose
    /// transaction ended meanwhile is refused instead of opening one no marker would end.
    /// `guard` is the one the batch comes back with after the coordinator's answer.
    pub fn verify_txn(
        &mut self,
        pid: i64,
        epoch: i16,
        guard: Option<u64>,
        now_ms: i64,
    ) -> TxnVerification {
        let ongoing = self
            .producers
            .get(&pid)
            .is_some_and(|e| e.txn_first_offset.is_some() && e.epoch == epoch);
        if ongoing {
            return TxnVerification::Append;
        }
        let pending = self.verifying.get(&pid).copied();
        match (guard, pending) {
            (Some(g), Some(v)) if v.guard == g && v.epoch == epoch => TxnVerification::Append,
            (Some(_), _) => TxnVerification::Refuse(ErrorCode::InvalidTxnState.code()),
            (None, Some(v)) if v.epoch == epoch => TxnVerification::Ask(v.guard),
            (None, _) => {
                if self.verifying.len() >= MAX_VERIFYING && !self.verifying.contains_key(&pid) {
                    // Retriable for every client version (Kafka's choice for verification
                    // it cannot do now).
                    return TxnVerification::Refuse(ErrorCode::NotEnoughReplicas.code());
                }
                self.next_guard += 1;
                let guard = self.next_guard;
                self.verifying.insert(
                    pid,
                    Verification {
                        guard,
                        epoch,
                        since_ms: now_ms,
                    },
                );
                TxnVerification::Ask(guard)
            }
        }
    }

    /// A marker written at `epoch` ended `pid`'s transaction: its first offset, if one
    /// was ongoing. A marker of a newer epoch (the coordinator fenced the producer) moves
    /// the producer to it, so that the fenced instance's later writes are refused with
    /// INVALID_PRODUCER_EPOCH instead of opening a transaction no marker would end.
    pub fn end_txn(&mut self, pid: i64, epoch: i16) -> Option<i64> {
        let entry = self.producers.entry(pid).or_default();
        if epoch > entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.txn_first_offset.take()
    }

    /// A marker of `pid` at `epoch` takes its place in the log: it withdraws the guard of
    /// a verification whose transaction it may end. `bumped`: the marker is of transaction
    /// version 2, whose markers carry the epoch after the transaction's, so it ends the
    /// transactions written below `epoch` (a version 1 marker: at `epoch` or below). A
    /// version 2 producer's next transaction, written at the marker's epoch, keeps its
    /// guard when its first batch overtakes the previous transaction's marker.
    pub fn withdraw_verification(&mut self, pid: i64, epoch: i16, bumped: bool) {
        if let Some(v) = self.verifying.get(&pid) {
            if v.epoch < epoch || (!bumped && v.epoch == epoch) {
                self.verifying.remove(&pid);
            }
        }
    }

    /// The epoch `pid` writes with, if known.
    pub fn epoch_of(&self, pid: i64) -> Option<i16> {
        self.producers.get(&pid).map(|e| e.epoch)
    }

    /// The smallest first offset of the ongoing transactions: nothing from there on is
    /// stable yet (Kafka's first unstable offset).
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.producers
            .values()
            .filter_map(|e| e.txn_first_offset)
            .min()
    }

    /// Every producer (DescribeProducers): id, epoch, last sequence (-1: none), last
    /// write time, first offset of its ongoing transaction (-1: none).
    pub fn describe(&self) -> Vec<(i64, i16, i32, i64, i64)> {
        self.producers
            .iter()
            .map(|(pid, e)| {
                (
                    *pid,
                    e.epoch,
                    e.batches.back().map_or(-1, |b| b.last_seq),
                    e.last_write_ms,
                    e.txn_first_offset.unwrap_or(-1),
                )
            })
            .collect()
    }

    /// Producer id → last offset of its newest batch.
    pub fn last_offsets(&self) -> HashMap<i64, i64> {
        self.producers
            .iter()
            .filter_map(|(pid, e)| e.batches.back().map(|b| (*pid, b.last_offset)))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Forget producers that have not written since `now_ms - max_age_ms`; returns how many.
    pub fn expire(&mut self, now_ms: i64, max_age_ms: i64) -> usize {
        let before = self.producers.len();
        // A producer inside a transaction stays until its marker (or the coordinator's
        // abort of it) comes.
        self.producers.retain(|_, e| {
            e.txn_first_offset.is_some() || e.last_write_ms >= now_ms.saturating_sub(max_age_ms)
        });
        // A verification whose batch never came back (the client gave up).
        self.verifying
            .retain(|_, v| v.since_ms >= now_ms.saturating_sub(VERIFICATION_MAX_AGE_MS));
        // A refused batch whose retry never came (the client gave up on it).
        self.refused
            .retain(|_, r| r.since_ms >= now_ms.saturating_sub(VERIFICATION_MAX_AGE_MS));
        before - self.producers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transactional_write_outside_a_known_transaction_needs_the_coordinator() {
        let mut s = ProducerStates::default();
        let TxnVerification::Ask(guard) = s.verify_txn(7, 0, None, 0) else {
            panic!("a first transactional write must be verified")
        };
        // A retry before the answer waits on the same verification.
        assert_eq!(s.verify_txn(7, 0, None, 1), TxnVerification::Ask(guard));
        // Back with the guard: append, and the transaction is ongoing from then on.
        assert_eq!(s.verify_txn(7, 0, Some(guard), 2), TxnVerification::Append);
        s.begin_txn(7, 10);
        assert_eq!(s.verify_txn(7, 0, None, 3), TxnVerification::Append);
        // A forged or stale guard is refused.
        assert_eq!(s.end_txn(7, 0), Some(10));
        assert_eq!(
            s.verify_txn(7, 0, Some(guard), 4),
            TxnVerification::Refuse(ErrorCode::InvalidTxnState.code())
        );
    }

    #[test]
    fn a_marker_withdraws_the_verifications_of_the_transactions_it_ends() {
        let mut s = ProducerStates::default();
        // Version 1: the marker carries the transaction's own epoch.
        let TxnVerification::Ask(g) = s.verify_txn(7, 3, None, 0) else {
            panic!()
        };
        s.withdraw_verification(7, 3, false);
        assert_eq!(
            s.verify_txn(7, 3, Some(g), 1),
            TxnVerification::Refuse(ErrorCode::InvalidTxnState.code())
        );
        // Version 2: the previous transaction's marker carries the epoch the next
        // transaction writes with; the next one's verification survives it.
        let TxnVerification::Ask(g) = s.verify_txn(8, 4, None, 0) else {
            panic!()
        };
        s.withdraw_verification(8, 4, true);
        assert_eq!(s.verify_txn(8, 4, Some(g), 1), TxnVerification::Append);
        // ...but not the marker that ends it.
        s.withdraw_verification(8, 5, true);
        assert_eq!(
            s.verify_txn(8, 4, Some(g), 2),
            TxnVerification::Refuse(ErrorCode::InvalidTxnState.code())
        );
    }

    #[test]
    fn abandoned_verifications_expire() {
        let mut s = ProducerStates::default();
        let TxnVerification::Ask(g) = s.verify_txn(7, 0, None, 0) else {
            panic!()
        };
        s.expire(VERIFICATION_MAX_AGE_MS + 1, PRODUCER_ID_EXPIRATION_MS);
        assert_eq!(
            s.verify_txn(7, 0, Some(g), VERIFICATION_MAX_AGE_MS + 2),
            TxnVerification::Refuse(ErrorCode::InvalidTxnState.code())
        );
    }

    #[test]
    fn a_fencing_marker_refuses_the_old_epoch() {
        let mut s = ProducerStates::default();
        let meta = BatchMeta {
            first_seq: 0,
            last_seq: 0,
            base_offset: 10,
            last_offset: 10,
            ticket: None,
        };
        s.record(7, 0, meta, 1);
        s.begin_txn(7, 10);
        assert_eq!(s.first_unstable_offset(), Some(10));
        // The coordinator aborted with the bumped epoch 1.
        assert_eq!(s.end_txn(7, 1), Some(10));
        assert_eq!(s.first_unstable_offset(), None);
        assert_eq!(
            s.check(7, 0, 1, 1),
            Err(ErrorCode::InvalidProducerEpoch.code())
        );
        // The new instance (epoch 1) starts at sequence 0.
        assert_eq!(s.check(7, 1, 0, 0), Ok(SequenceCheck::Append));
    }

    fn meta(first: i32, last: i32, base: i64) -> BatchMeta {
        BatchMeta {
            first_seq: first,
            last_seq: last,
            base_offset: base,
            last_offset: base + (last - first) as i64,
            ticket: None,
        }
    }

    #[test]
    fn in_order_duplicate_and_gap() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check(7, 0, 0, 4), Ok(SequenceCheck::Append));
        s.record(7, 0, meta(0, 4, 100), 0);
        assert_eq!(s.check(7, 0, 5, 9), Ok(SequenceCheck::Append));
        s.record(7, 0, meta(5, 9, 105), 0);
        // A retry of the first batch is a duplicate with its original offsets.
        assert_eq!(
            s.check(7, 0, 0, 4),
            Ok(SequenceCheck::Duplicate(meta(0, 4, 100)))
        );
        // A gap is refused.
        assert_eq!(
            s.check(7, 0, 11, 12),
            Err(ErrorCode::OutOfOrderSequenceNumber.code())
        );
        // As in Kafka, a producer with no state here may start anywhere.
        assert_eq!(s.check(8, 0, 3, 3), Ok(SequenceCheck::Append));
    }

    #[test]
    fn a_gap_behind_a_refused_batch_gets_its_error() {
        let nes = ErrorCode::NotEnoughReplicas.code();
        let mut s = ProducerStates::default();
        s.record(7, 0, meta(0, 4, 0), 0);
        // Sequences 5..9 refused before their append; 10.. arrive meanwhile.
        s.refuse(7, 0, 5, nes, 0);
        assert_eq!(s.check(7, 0, 10, 14), Err(nes));
        // A later refusal behind it does not move the gap.
        s.refuse(7, 0, 10, ErrorCode::NotLeaderOrFollower.code(), 0);
        assert_eq!(s.check(7, 0, 15, 19), Err(nes));
        // Another epoch's gap is a plain one.
        assert_eq!(
            s.check(7, 1, 3, 3),
            Err(ErrorCode::OutOfOrderSequenceNumber.code())
        );
        // The retry fills the gap; a gap after that is a plain one again.
        assert_eq!(s.check(7, 0, 5, 9), Ok(SequenceCheck::Append));
        s.record(7, 0, meta(5, 9, 5), 0);
        assert_eq!(
            s.check(7, 0, 15, 19),
            Err(ErrorCode::OutOfOrderSequenceNumber.code())
        );
        // A refusal the producer never retries is forgotten.
        s.refuse(7, 0, 10, nes, 1_000);
        assert_eq!(s.check(7, 0, 15, 19), Err(nes));
        s.expire(1_000 + VERIFICATION_MAX_AGE_MS + 1, i64::MAX);
        assert_eq!(
            s.check(7, 0, 15, 19),
            Err(ErrorCode::OutOfOrderSequenceNumber.code())
        );
    }

    #[test]
    fn seq_after_wraps() {
        assert!(seq_after(0, i32::MAX));
        assert!(seq_after(5, 3));
        assert!(!seq_after(3, 5));
        assert!(!seq_after(3, 3));
    }

    #[test]
    fn epochs() {
        let mut s = ProducerStates::default();
        s.record(1, 2, meta(0, 0, 0), 0);
        assert_eq!(
            s.check(1, 1, 1, 1),
            Err(ErrorCode::InvalidProducerEpoch.code())
        );
        assert_eq!(
            s.check(1, 3, 5, 5),
            Err(ErrorCode::OutOfOrderSequenceNumber.code())
        );
        assert_eq!(s.check(1, 3, 0, 0), Ok(SequenceCheck::Append));
        s.record(1, 3, meta(0, 0, 1), 0);
        assert_eq!(
            s.check(1, 3, 0, 0),
            Ok(SequenceCheck::Duplicate(meta(0, 0, 1)))
        );
    }

    #[test]
    fn only_five_batches_are_remembered() {
        let mut s = ProducerStates::default();
        for i in 0..6 {
            s.record(1, 0, meta(i, i, i as i64), 0);
        }
        assert_eq!(
            s.check(1, 0, 0, 0),
            Err(ErrorCode::OutOfOrderSequenceNumber.code())
        );
        assert_eq!(
            s.check(1, 0, 1, 1),
            Ok(SequenceCheck::Duplicate(meta(1, 1, 1)))
        );
        assert_eq!(s.check(1, 0, 6, 6), Ok(SequenceCheck::Append));
    }

    #[test]
    fn silent_producers_expire() {
        let mut s = ProducerStates::default();
        s.record(1, 0, meta(0, 0, 0), 1_000);
        s.record(2, 0, meta(0, 0, 1), 5_000);
        assert_eq!(s.expire(10_000, 6_000), 1);
        assert_eq!(s.check(1, 0, 1, 1), Ok(SequenceCheck::Append));
        assert_eq!(
            s.check(2, 0, 0, 0),
            Ok(SequenceCheck::Duplicate(meta(0, 0, 1)))
        );
    }

    #[test]
    fn sequences_wrap() {
        assert_eq!(last_seq(i32::MAX, 0), i32::MAX);
        assert_eq!(last_seq(i32::MAX, 1), 0);
        let mut s = ProducerStates::default();
        s.record(1, 0, meta(0, 0, 0), 0);
        s.record(
            1,
            0,
            BatchMeta {
                first_seq: i32::MAX - 1,
                last_seq: i32::MAX,
                base_offset: 1,
                last_offset: 2,
                ticket: None,
            },
            0,
        );
        assert_eq!(s.check(1, 0, 0, 3), Ok(SequenceCheck::Append));
    }
}
