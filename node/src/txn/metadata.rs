//! The state machine of one transactional id (Kafka's `TransactionMetadata`), for the
//! classic protocol (transaction version 1) and KIP-890's version 2, where every EndTxn
//! bumps the producer epoch so that a late write of the ended transaction is fenced.
//! Every change is prepared as a [`Transit`] (the
//! record to write to `__transaction_state`); the id is *pending* until the write is
//! done, and requests that arrive meanwhile get CONCURRENT_TRANSACTIONS. The transit is
//! applied only once written ([`TxnMetadata::complete`]) and forgotten if the write
//! fails ([`TxnMetadata::abandon`]).

use std::collections::BTreeSet;

use spate_net::ErrorCode;

use super::state_log::{TxnRecord, TxnStatus};

/// Epochs at or above this belong to the coordinator (fencing), never to a client.
const EPOCH_EXHAUSTED: i16 = i16::MAX - 1;

/// A partition of a transaction: (topic, partition).
pub type TxnPartition = (String, i32);

/// The state of one transactional id as of its last written record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub producer_id: i64,
    /// The producer id before the last rotation (-1: none).
    pub last_producer_id: i64,
    pub producer_epoch: i16,
    /// The epoch a producer may retry InitProducerId with (KIP-360; -1: none).
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub status: TxnStatus,
    pub partitions: BTreeSet<TxnPartition>,
    /// When the ongoing transaction started (-1: none).
    pub start_ms: i64,
    pub last_update_ms: i64,
    /// The transaction is on transaction version 2 (its EndTxn bumps the epoch).
    pub tv2: bool,
    /// Version 2, epochs exhausted: the producer id the ending transaction hands over to
    /// once complete (-1: none).
    pub next_producer_id: i64,
    /// The status a written-but-not-yet-applied transit moves to.
    pub pending: Option<TxnStatus>,
}

/// A prepared change: the whole state after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transit {
    pub producer_id: i64,
    pub last_producer_id: i64,
    pub producer_epoch: i16,
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub status: TxnStatus,
    pub partitions: BTreeSet<TxnPartition>,
    pub start_ms: i64,
    pub last_update_ms: i64,
    pub tv2: bool,
    pub next_producer_id: i64,
}

impl Transit {
    /// The record that makes this transit durable.
    pub fn record(&self) -> TxnRecord {
        let mut topics: Vec<(String, Vec<i32>)> = Vec::new();
        for (t, p) in &self.partitions {
            match topics.last_mut() {
                Some((last, parts)) if last == t => parts.push(*p),
                _ => topics.push((t.clone(), vec![*p])),
            }
        }
        TxnRecord {
            producer_id: self.producer_id,
            previous_producer_id: self.last_producer_id,
            next_producer_id: self.next_producer_id,
            producer_epoch: self.producer_epoch,
            next_producer_epoch: -1,
            timeout_ms: self.timeout_ms,
            status: self.status,
            partitions: topics,
            last_update_ms: self.last_update_ms,
            start_ms: self.start_ms,
            client_transaction_version: if self.tv2 { 2 } else { 0 },
        }
    }
}

/// Which statuses a status may follow (Kafka's `validPreviousStates`).
fn may_follow(to: TxnStatus, from: TxnStatus) -> bool {
    use TxnStatus::*;
    match to {
        Empty => matches!(from, Empty | CompleteCommit | CompleteAbort),
        Ongoing => matches!(from, Ongoing | Empty | CompleteCommit | CompleteAbort),
        PrepareCommit => from == Ongoing,
        // From a resting state: a version 2 producer aborting a transaction none of
        // whose partitions the coordinator heard of (it only bumps the epoch).
        PrepareAbort => matches!(
            from,
            Ongoing | PrepareEpochFence | Empty | CompleteCommit | CompleteAbort
        ),
        CompleteCommit => from == PrepareCommit,
        CompleteAbort => from == PrepareAbort,
        Dead => matches!(from, Empty | CompleteCommit | CompleteAbort),
        PrepareEpochFence => from == Ongoing,
    }
}

impl TxnMetadata {
    /// A new transactional id with a fresh producer id and no epoch yet.
    pub fn new(producer_id: i64, timeout_ms: i32, now_ms: i64) -> TxnMetadata {
        TxnMetadata {
            producer_id,
            last_producer_id: -1,
            producer_epoch: -1,
            last_producer_epoch: -1,
            timeout_ms,
            status: TxnStatus::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            last_update_ms: now_ms,
            tv2: false,
            next_producer_id: -1,
            pending: None,
        }
    }

    /// The state a record read back from `__transaction_state` describes.
    pub fn from_record(r: &TxnRecord) -> TxnMetadata {
        TxnMetadata {
            producer_id: r.producer_id,
            last_producer_id: r.previous_producer_id,
            producer_epoch: r.producer_epoch,
            last_producer_epoch: -1,
            timeout_ms: r.timeout_ms,
            status: r.status,
            partitions: r
                .partitions
                .iter()
                .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
                .collect(),
            start_ms: r.start_ms,
            last_update_ms: r.last_update_ms,
            tv2: r.client_transaction_version >= 2,
            next_producer_id: r.next_producer_id,
            pending: None,
        }
    }

    pub fn epoch_exhausted(&self) -> bool {
        self.producer_epoch >= EPOCH_EXHAUSTED
    }

    fn base(&self, status: TxnStatus) -> Transit {
        Transit {
            producer_id: self.producer_id,
            last_producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            last_producer_epoch: self.last_producer_epoch,
            timeout_ms: self.timeout_ms,
            status,
            partitions: self.partitions.clone(),
            start_ms: self.start_ms,
            last_update_ms: self.last_update_ms,
            tv2: self.tv2,
            next_producer_id: self.next_producer_id,
        }
    }

    /// Mark `t` as being written. Panics on a transition Kafka forbids: the callers
    /// check the status first, so one would be a bug.
    fn prepare(&mut self, t: Transit) -> Transit {
        assert!(self.pending.is_none(), "a transition is already pending");
        assert!(
            may_follow(t.status, self.status),
            "{:?} cannot follow {:?}",
            t.status,
            self.status
        );
        assert!(t.producer_id >= 0, "producer id {}", t.producer_id);
        self.pending = Some(t.status);
        t
    }

    /// InitProducerId on an idle id: bump the epoch (KIP-360: a producer that names its
    /// current epoch gets the next; one that names the previous epoch is retrying and gets
    /// the current one again; any other epoch is fenced).
    pub fn prepare_increment_epoch(
        &mut self,
        timeout_ms: i32,
        expected_epoch: Option<i16>,
        now_ms: i64,
    ) -> Result<Transit, ErrorCode> {
        assert!(
            !self.epoch_exhausted(),
            "epochs of {} exhausted",
            self.producer_id
        );
        let bumped = self.producer_epoch + 1;
        let (epoch, last) = match expected_epoch {
            None => (bumped, -1),
            Some(e) if self.producer_epoch == -1 || e == self.producer_epoch => {
                (bumped, self.producer_epoch)
            }
            Some(e) if e == self.last_producer_epoch => {
                (self.producer_epoch, self.last_producer_epoch)
            }
            Some(_) => return Err(ErrorCode::ProducerFenced),
        };
        let mut t = self.base(TxnStatus::Empty);
        t.producer_epoch = epoch;
        t.last_producer_epoch = last;
        t.timeout_ms = timeout_ms;
        t.partitions.clear();
        t.start_ms = -1;
        t.last_update_ms = now_ms;
        Ok(self.prepare(t))
    }

    /// InitProducerId when the epochs of the producer id are used up: a new producer id.
    pub fn prepare_rotation(
        &mut self,
        new_producer_id: i64,
        timeout_ms: i32,
        now_ms: i64,
        keep_last_epoch: bool,
    ) -> Transit {
        let mut t = self.base(TxnStatus::Empty);
        t.producer_id = new_producer_id;
        t.producer_epoch = 0;
        t.last_producer_epoch = if keep_last_epoch {
            self.producer_epoch
        } else {
            -1
        };
        t.timeout_ms = timeout_ms;
        t.partitions.clear();
        t.start_ms = -1;
        t.last_update_ms = now_ms;
        self.prepare(t)
    }

    /// InitProducerId during an ongoing transaction: fence the old producer by bumping
    /// the epoch, then abort (the caller does; the client retries meanwhile).
    pub fn prepare_fence(&mut self) -> Transit {
        let mut t = self.base(TxnStatus::PrepareEpochFence);
        if self.producer_epoch < i16::MAX {
            t.producer_epoch = self.producer_epoch + 1;
        }
        // Not written: the abort that follows carries the bumped epoch.
        self.pending = Some(TxnStatus::PrepareEpochFence);
        t
    }

    /// AddPartitionsToTxn / AddOffsetsToTxn, or (`tv2`) a partition leader adding a
    /// partition on a version 2 producer's first write to it.
    pub fn prepare_add_partitions(
        &mut self,
        added: impl IntoIterator<Item = TxnPartition>,
        tv2: bool,
        now_ms: i64,
    ) -> Transit {
        use TxnStatus::*;
        let mut t = self.base(Ongoing);
        if matches!(self.status, Empty | CompleteCommit | CompleteAbort) {
            t.start_ms = now_ms;
            t.tv2 = tv2;
        } else {
            t.tv2 |= tv2;
        }
        t.partitions.extend(added);
        t.last_update_ms = now_ms;
        self.prepare(t)
    }

    /// EndTxn: PrepareCommit or PrepareAbort. `fence_epoch` is the bumped epoch of an
    /// InitProducerId that interrupted the transaction (the pending fence is replaced).
    /// `bump`: a version 2 EndTxn, which moves the producer to the next epoch, or, when
    /// the epochs are used up, to `next_producer_id` once the transaction is complete.
    pub fn prepare_end(
        &mut self,
        commit: bool,
        fence_epoch: Option<i16>,
        bump: Option<i64>,
        now_ms: i64,
    ) -> Transit {
        if let Some(epoch) = fence_epoch {
            assert_eq!(self.pending, Some(TxnStatus::PrepareEpochFence));
            self.pending = None;
            self.producer_epoch = epoch;
            self.last_producer_epoch = -1;
        }
        let status = if commit {
            TxnStatus::PrepareCommit
        } else {
            TxnStatus::PrepareAbort
        };
        let mut t = self.base(status);
        t.last_update_ms = now_ms;
        if let Some(next_producer_id) = bump {
            assert!(
                self.producer_epoch < i16::MAX,
                "epoch of {} overflows",
                self.producer_id
            );
            assert_eq!(
                next_producer_id >= 0,
                self.epoch_exhausted(),
                "a new producer id exactly when the epochs are used up"
            );
            t.tv2 = true;
            t.producer_epoch = self.producer_epoch + 1;
            t.last_producer_epoch = self.producer_epoch;
            t.next_producer_id = next_producer_id;
        }
        self.prepare(t)
    }

    /// The producer id and epoch a version 2 client continues with after this
    /// transaction (EndTxn's answer).
    pub fn continues_with(&self) -> (i64, i16) {
        if self.next_producer_id >= 0 {
            (self.next_producer_id, 0)
        } else {
            (self.producer_id, self.producer_epoch)
        }
    }

    /// After every marker is written: CompleteCommit or CompleteAbort.
    pub fn prepare_complete(&mut self, now_ms: i64) -> Transit {
        let status = if self.status == TxnStatus::PrepareCommit {
            TxnStatus::CompleteCommit
        } else {
            TxnStatus::CompleteAbort
        };
        let mut t = self.base(status);
        t.partitions.clear();
        t.last_update_ms = now_ms;
        if self.next_producer_id >= 0 {
            // Version 2 with the epochs used up: the markers are written, so the producer
            // moves to its new id now.
            t.producer_id = self.next_producer_id;
            t.producer_epoch = 0;
            t.last_producer_epoch = self.producer_epoch;
            t.next_producer_id = -1;
        }
        self.prepare(t)
    }

    /// The transit was written: it is the state now.
    pub fn complete(&mut self, t: Transit) {
        assert_eq!(
            self.pending,
            Some(t.status),
            "completing an unprepared transit"
        );
        if t.producer_id != self.producer_id {
            self.last_producer_id = self.producer_id;
        }
        self.producer_id = t.producer_id;
        self.producer_epoch = t.producer_epoch;
        self.last_producer_epoch = t.last_producer_epoch;
        self.timeout_ms = t.timeout_ms;
        self.status = t.status;
        self.partitions = t.partitions;
        self.start_ms = t.start_ms;
        self.last_update_ms = t.last_update_ms;
        self.tv2 = t.tv2;
        self.next_producer_id = t.next_producer_id;
        self.pending = None;
    }

    /// The write failed: nothing changed.
    pub fn abandon(&mut self) {
        self.pending = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(list: &[(&str, i32)]) -> Vec<TxnPartition> {
        list.iter().map(|(t, p)| (t.to_string(), *p)).collect()
    }

    #[test]
    fn a_transaction_from_init_to_commit() {
        let mut m = TxnMetadata::new(1000, 60_000, 1);
        let t = m.prepare_increment_epoch(60_000, None, 2).unwrap();
        assert_eq!((t.producer_epoch, t.status), (0, TxnStatus::Empty));
        m.complete(t);
        let t = m.prepare_add_partitions(parts(&[("a", 0), ("a", 1)]), false, 3);
        assert_eq!(t.start_ms, 3);
        m.complete(t);
        let t = m.prepare_add_partitions(parts(&[("b", 0)]), false, 4);
        assert_eq!((t.start_ms, t.partitions.len()), (3, 3));
        m.complete(t);
        let t = m.prepare_end(true, None, None, 5);
        assert_eq!(t.status, TxnStatus::PrepareCommit);
        m.complete(t);
        let t = m.prepare_complete(6);
        assert!(t.partitions.is_empty());
        m.complete(t);
        assert_eq!((m.status, m.producer_epoch), (TxnStatus::CompleteCommit, 0));
        let r = m.base(m.status).record();
        assert_eq!(
            TxnMetadata::from_record(&r).status,
            TxnStatus::CompleteCommit
        );
    }

    #[test]
    fn kip_360_epochs() {
        let mut m = TxnMetadata::new(7, 1000, 0);
        let t = m.prepare_increment_epoch(1000, None, 0).unwrap();
        m.complete(t);
        // Current epoch 0: naming it bumps to 1 and remembers 0.
        let t = m.prepare_increment_epoch(1000, Some(0), 1).unwrap();
        assert_eq!((t.producer_epoch, t.last_producer_epoch), (1, 0));
        m.complete(t);
        // A retry naming the previous epoch gets the current one again.
        let t = m.prepare_increment_epoch(1000, Some(0), 2).unwrap();
        assert_eq!(t.producer_epoch, 1);
        m.complete(t);
        // Anything else is fenced.
        assert_eq!(
            m.prepare_increment_epoch(1000, Some(5), 3),
            Err(ErrorCode::ProducerFenced)
        );
    }

    #[test]
    fn a_pending_write_blocks_the_next_transition_and_a_failed_one_changes_nothing() {
        let mut m = TxnMetadata::new(7, 1000, 0);
        let before = m.clone();
        let _t = m.prepare_increment_epoch(1000, None, 1).unwrap();
        assert_eq!(m.pending, Some(TxnStatus::Empty));
        m.abandon();
        assert_eq!(m, before);
    }

    #[test]
    fn fencing_an_ongoing_transaction_aborts_it_with_the_bumped_epoch() {
        let mut m = TxnMetadata::new(7, 1000, 0);
        let t = m.prepare_increment_epoch(1000, None, 0).unwrap();
        m.complete(t);
        let t = m.prepare_add_partitions(parts(&[("a", 0)]), false, 1);
        m.complete(t);
        let fence = m.prepare_fence();
        assert_eq!(fence.producer_epoch, 1);
        let t = m.prepare_end(false, Some(fence.producer_epoch), None, 2);
        assert_eq!((t.status, t.producer_epoch), (TxnStatus::PrepareAbort, 1));
        m.complete(t);
        let t = m.prepare_complete(3);
        m.complete(t);
        assert_eq!((m.status, m.producer_epoch), (TxnStatus::CompleteAbort, 1));
    }

    #[test]
    #[should_panic(expected = "cannot follow")]
    fn forbidden_transitions_are_bugs() {
        let mut m = TxnMetadata::new(7, 1000, 0);
        m.prepare_end(true, None, None, 1);
    }

    #[test]
    fn version_2_bumps_the_epoch_at_every_end() {
        let mut m = TxnMetadata::new(7, 1000, 0);
        let t = m.prepare_increment_epoch(1000, None, 0).unwrap();
        m.complete(t);
        for epoch in 0..3 {
            let t = m.prepare_add_partitions(parts(&[("a", 0)]), true, 1);
            m.complete(t);
            assert!(m.tv2);
            let t = m.prepare_end(epoch % 2 == 0, None, Some(-1), 2);
            assert_eq!(
                (t.producer_epoch, t.last_producer_epoch),
                (epoch + 1, epoch)
            );
            m.complete(t);
            assert_eq!(m.continues_with(), (7, epoch + 1));
            let t = m.prepare_complete(3);
            m.complete(t);
            assert_eq!((m.producer_id, m.producer_epoch), (7, epoch + 1));
        }
        let r = m.base(m.status).record();
        assert_eq!(r.client_transaction_version, 2);
        assert!(TxnMetadata::from_record(&r).tv2);
    }

    #[test]
    fn version_2_moves_to_a_new_producer_id_when_the_epochs_run_out() {
        let mut m = TxnMetadata::new(7, 1000, 0);
        m.producer_epoch = EPOCH_EXHAUSTED;
        let t = m.prepare_add_partitions(parts(&[("a", 0)]), true, 1);
        m.complete(t);
        let t = m.prepare_end(true, None, Some(8), 2);
        assert_eq!(
            (t.producer_id, t.producer_epoch, t.next_producer_id),
            (7, i16::MAX, 8)
        );
        m.complete(t);
        // Markers go out as producer 7 at the last epoch; the client continues as 8.
        assert_eq!(m.continues_with(), (8, 0));
        let t = m.prepare_complete(3);
        m.complete(t);
        assert_eq!(
            (
                m.producer_id,
                m.producer_epoch,
                m.last_producer_id,
                m.next_producer_id
            ),
            (8, 0, 7, -1)
        );
    }
}
