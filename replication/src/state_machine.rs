//! The replicated state machine: applies committed batches to the application's
//! metadata state, builds and installs snapshots, and feeds subscribers.

use std::io::{self, Cursor};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder, Snapshot};
use spate_net::metadata_frame::ApiMessageAndVersion;

use crate::files::{invalid, state_machine_error};
use crate::snapshot::{self, SnapshotStore};
use crate::types::{
    Entry, LogId, MetadataBatch, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// The application's metadata state (the node's metadata image), driven by the quorum.
///
/// Every controller applies the same records in the same order, so the methods must be
/// deterministic. They run on the controller thread: keep them short.
pub trait MetadataStateMachine: Send + Sync + 'static {
    /// Applies the records of one committed entry, at Raft log index `index`.
    fn apply(&mut self, index: u64, records: &[ApiMessageAndVersion]);

    /// The whole state as records which, applied in order to an empty state, rebuild it
    /// (what a KRaft snapshot holds).
    fn snapshot_records(&self) -> Vec<ApiMessageAndVersion>;

    /// Replaces the state with the one `records` describe (a snapshot's records).
    fn restore(&mut self, records: &[ApiMessageAndVersion]);
}

/// What a subscriber receives, in log order.
#[derive(Clone, Debug, PartialEq)]
pub enum Committed {
    /// Replace the state with these records: the state at `index` (`None`: nothing
    /// applied yet). Always the first event of a subscription, and sent again when a
    /// snapshot from the leader replaces the state.
    Snapshot {
        index: Option<u64>,
        records: Arc<[ApiMessageAndVersion]>,
    },
    /// The records of the committed entry at `index`, proposed in `term`; empty for
    /// an entry that carries none (a leader's blank entry, a membership change).
    Batch {
        index: u64,
        term: u64,
        records: Arc<[ApiMessageAndVersion]>,
    },
}

/// The state shared by the openraft state machine, its snapshot builders and the
/// quorum handle (for subscriptions).
pub(crate) struct Shared<M> {
    app: M,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    subscribers: Vec<flume::Sender<Committed>>,
}

pub(crate) type SharedState<M> = Arc<Mutex<Shared<M>>>;

/// Held only for synchronous work, never across an await; poisoning means the
/// application panicked while applying, so the state cannot be trusted any more.
pub(crate) fn lock<M>(s: &Mutex<Shared<M>>) -> MutexGuard<'_, Shared<M>> {
    s.lock().expect("state machine lock poisoned")
}

impl<M: MetadataStateMachine> Shared<M> {
    /// Sends an event to every subscriber. One whose queue is full is dropped rather
    /// than waited for (a slow reader must not stall the quorum): it sees its channel
    /// close and subscribes again, starting from a fresh snapshot.
    fn publish(&mut self, event: Committed) {
        self.subscribers
            .retain(|s| match s.try_send(event.clone()) {
                Ok(()) => true,
                Err(flume::TrySendError::Full(_)) => {
                    tracing::warn!("dropping a metadata subscriber that fell behind");
                    false
                }
                Err(flume::TrySendError::Disconnected(_)) => false,
            });
    }

    fn restore(&mut self, meta: &SnapshotMeta, records: Vec<ApiMessageAndVersion>) {
        self.app.restore(&records);
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.publish(Committed::Snapshot {
            index: meta.last_log_id.map(|l| l.index),
            records: records.into(),
        });
    }
}

/// Runs `f` on the application state as applied so far.
pub(crate) fn read<M, R>(shared: &SharedState<M>, f: impl FnOnce(&M) -> R) -> R {
    f(&lock(shared).app)
}

/// Registers a subscriber with a queue of `capacity` events; its first event is the
/// current state.
pub(crate) fn subscribe<M: MetadataStateMachine>(
    shared: &SharedState<M>,
    capacity: usize,
) -> flume::Receiver<Committed> {
    let (tx, rx) = flume::bounded(capacity.max(1));
    let mut s = lock(shared);
    let first = Committed::Snapshot {
        index: s.last_applied.map(|l| l.index),
        records: s.app.snapshot_records().into(),
    };
    // The queue is new and holds at least one event.
    if tx.try_send(first).is_ok() {
        s.subscribers.push(tx);
    }
    rx
}

/// openraft's view of the state machine.
pub struct StateMachineStore<M> {
    shared: SharedState<M>,
    snapshots: Arc<SnapshotStore>,
}

impl<M: MetadataStateMachine> StateMachineStore<M> {
    /// Opens the snapshot directory and restores `app` from the newest snapshot there.
    pub(crate) fn open(dir: &std::path::Path, mut app: M) -> io::Result<(Self, SharedState<M>)> {
        let (snapshots, newest) = SnapshotStore::open(dir)?;
        let mut last_applied = None;
        let mut membership = StoredMembership::default();
        if let Some(d) = newest {
            app.restore(&d.records);
            last_applied = d.meta.last_log_id;
            membership = d.meta.last_membership;
        }
        let shared = Arc::new(Mutex::new(Shared {
            app,
            last_applied,
            membership,
            subscribers: Vec::new(),
        }));
        Ok((
            StateMachineStore {
                shared: shared.clone(),
                snapshots: Arc::new(snapshots),
            },
            shared,
        ))
    }
}

/// Decodes the framed records of a committed batch.
fn decode_batch(batch: &MetadataBatch) -> io::Result<Vec<ApiMessageAndVersion>> {
    batch
        .records
        .iter()
        .map(|r| {
            ApiMessageAndVersion::decode(r.clone())
                .map_err(|e| invalid(format!("committed metadata record does not decode: {e}")))
        })
        .collect()
}

impl<M: MetadataStateMachine> RaftStateMachine<TypeConfig> for StateMachineStore<M> {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let s = lock(&self.shared);
        Ok((s.last_applied, s.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut s = lock(&self.shared);
        let mut responses = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            assert!(
                s.last_applied < Some(log_id),
                "entry {log_id} applied after {:?}",
                s.last_applied
            );
            let records = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(batch) => {
                    // Proposals are checked before they enter the log, so a failure
                    // here is disk or memory corruption: stop this controller.
                    let records = decode_batch(&batch).map_err(state_machine_error)?;
                    s.app.apply(log_id.index, &records);
                    records
                }
                EntryPayload::Membership(m) => {
                    s.membership = StoredMembership::new(Some(log_id), m);
                    Vec::new()
                }
            };
            // Entries without records (a new leader's blank entry, a membership change)
            // are published too, empty, so that subscribers see every applied index:
            // a read barrier may return one of theirs.
            s.publish(Committed::Batch {
                index: log_id.index,
                term: log_id.leader_id.term,
                records: records.into(),
            });
            s.last_applied = Some(log_id);
            responses.push(());
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        // Capture the state now, under the lock, so the snapshot matches
        // `last_applied` exactly; encoding and writing happen in the builder.
        let s = lock(&self.shared);
        SnapshotBuilder {
            last_applied: s.last_applied,
            membership: s.membership.clone(),
            records: s
                .app
                .snapshot_records()
                .iter()
                .map(ApiMessageAndVersion::to_bytes)
                .collect(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let decoded = snapshot::decode(&bytes).map_err(state_machine_error)?;
        if decoded.meta.last_log_id != meta.last_log_id {
            return Err(state_machine_error(invalid(format!(
                "snapshot data is at {:?}, its metadata says {:?}",
                decoded.meta.last_log_id, meta.last_log_id
            ))));
        }
        // Durable before the state changes: openraft purges the log after this returns.
        self.snapshots
            .store(meta, &bytes)
            .map_err(state_machine_error)?;
        lock(&self.shared).restore(meta, decoded.records);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let Some((meta, bytes)) = self.snapshots.read().map_err(state_machine_error)? else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}

/// A snapshot of the state taken when openraft asked for a builder.
pub struct SnapshotBuilder {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    records: Vec<Bytes>,
    snapshots: Arc<SnapshotStore>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}", l.leader_id.term, l.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let bytes = snapshot::encode(&meta, &self.records).map_err(state_machine_error)?;
        self.snapshots
            .store(&meta, &bytes)
            .map_err(state_machine_error)?;
        tracing::info!(
            last = ?meta.last_log_id,
            records = self.records.len(),
            bytes = bytes.len(),
            "controller snapshot written"
        );
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;
    use spate_net::metadata_records::{MetadataRecord, NoOpRecord};

    use super::*;

    /// Counts applied records.
    #[derive(Default)]
    struct Count(usize);

    impl MetadataStateMachine for Count {
        fn apply(&mut self, _index: u64, records: &[ApiMessageAndVersion]) {
            self.0 += records.len();
        }
        fn snapshot_records(&self) -> Vec<ApiMessageAndVersion> {
            let noop = ApiMessageAndVersion::latest(MetadataRecord::NoOp(NoOpRecord {}));
            vec![noop; self.0]
        }
        fn restore(&mut self, records: &[ApiMessageAndVersion]) {
            self.0 = records.len();
        }
    }

    fn entry(index: u64) -> Entry {
        let noop = ApiMessageAndVersion::latest(MetadataRecord::NoOp(NoOpRecord {}));
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Normal(MetadataBatch {
                records: vec![noop.to_bytes()],
            }),
        }
    }

    #[test]
    fn subscribers_get_the_state_then_batches_and_laggards_are_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut sm, shared) = StateMachineStore::open(dir.path(), Count::default()).expect("open");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(sm.apply(vec![entry(1)])).expect("apply");
        let keeps_up = subscribe(&shared, 8);
        let lags = subscribe(&shared, 2);
        rt.block_on(sm.apply(vec![entry(2), entry(3)]))
            .expect("apply");

        let events: Vec<Committed> = keeps_up.try_iter().collect();
        assert_eq!(events.len(), 3);
        assert!(
            matches!(&events[0], Committed::Snapshot { index: Some(1), records } if records.len() == 1)
        );
        assert!(matches!(
            &events[1],
            Committed::Batch {
                index: 2,
                term: 1,
                ..
            }
        ));
        assert!(matches!(
            &events[2],
            Committed::Batch {
                index: 3,
                term: 1,
                ..
            }
        ));

        // The second queue held two events (the state and batch 2); batch 3 found it
        // full, so that subscriber was dropped: it drains and then sees the end.
        assert_eq!(lags.try_iter().count(), 2);
        assert!(matches!(
            lags.try_recv(),
            Err(flume::TryRecvError::Disconnected)
        ));
        assert_eq!(lock(&shared).subscribers.len(), 1);
    }

    #[test]
    fn entries_without_records_reach_subscribers_as_empty_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut sm, shared) = StateMachineStore::open(dir.path(), Count::default()).expect("open");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let rx = subscribe(&shared, 8);
        let blank = Entry {
            log_id: LogId::new(CommittedLeaderId::new(2, 0), 1),
            payload: EntryPayload::Blank,
        };
        rt.block_on(sm.apply(vec![blank])).expect("apply");
        let events: Vec<Committed> = rx.try_iter().collect();
        assert_eq!(events.len(), 2);
        assert!(matches!(
            &events[1],
            Committed::Batch { index: 1, term: 2, records } if records.is_empty()
        ));
        assert_eq!(lock(&shared).app.0, 0);
    }

    #[test]
    fn an_undecodable_committed_record_is_a_storage_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut sm, _shared) =
            StateMachineStore::open(dir.path(), Count::default()).expect("open");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let bad = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), 1),
            payload: EntryPayload::Normal(MetadataBatch {
                records: vec![Bytes::from_static(&[9, 9, 9])],
            }),
        };
        assert!(rt.block_on(sm.apply(vec![bad])).is_err());
    }
}
