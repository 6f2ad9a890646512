//! The leader-epoch cache of a log (Kafka's `LeaderEpochFileCache`, see `crate::epoch`):
//! what replication asks of it, and when its checkpoint file is written.
//!
//! When the cache changes:
//! * `assign_leader_epoch` (a new leader epoch, at the log end);
//! * every append, for each batch carrying an epoch (`append::begin_append`, as Kafka's
//!   `UnifiedLog.append`): a leader's batches carry the latest epoch (stamped there; a
//!   client's own value is not recorded), a follower's keep the leader's;
//! * truncation from the end (`truncate_to`, a roll-back after a failed write), from the
//!   start (retention, DeleteRecords), and fully (`truncate_fully_and_start_at`);
//! * at open, from the checkpoint and the recovery scan (`open`).
//!
//! When the checkpoint file is written: an epoch assigned by an append is persisted by
//! the writer task before the write of that append's batches (so no batch is reported
//! written while the file lacks its epoch: `writer::run_job`); `assign_leader_epoch`
//! and truncations persist before they return. An entry past the data (its batches
//! discarded, or never written before a crash) is harmless: open truncates the cache at
//! the recovered log end, as Kafka's recovery does.

use crate::epoch::CHECKPOINT_FILE;
use crate::error::Result;
use crate::io as fio;

use super::{io_err, PartitionLog, Shared};

impl PartitionLog {
    /// Kafka's `maybeAssignEpochStartOffset(epoch, logEndOffset)` for a leader: when
    /// `epoch` is above every epoch in the cache, it starts at the log end offset, the
    /// checkpoint is written, and every `begin_append(_, true)` from now on stamps it
    /// into its batches. An epoch not above the latest changes nothing (a stale
    /// leadership change must not rewrite the history of a newer one).
    ///
    /// Panics if `epoch` is negative.
    pub async fn assign_leader_epoch(&self, epoch: i32) -> Result<()> {
        assert!(epoch >= 0, "leader epoch {epoch} is negative");
        {
            let mut st = self.shared.state.borrow_mut();
            if st.epochs.latest().is_some_and(|(e, _)| e >= epoch) {
                return Ok(());
            }
            let leo = st.leo;
            st.change_epochs(|c| c.assign(epoch, leo));
        }
        persist(&self.shared).await
    }

    /// The latest epoch in the cache (what a follower sends as its last fetched epoch).
    pub fn latest_epoch(&self) -> Option<i32> {
        self.shared.state.borrow().epochs.latest().map(|(e, _)| e)
    }

    /// The cache's entries: `(epoch, start offset)`, oldest first.
    pub fn epoch_entries(&self) -> Vec<(i32, i64)> {
        self.shared.state.borrow().epochs.entries().to_vec()
    }

    /// Kafka's `endOffsetFor(requested, logEndOffset)` (OffsetForLeaderEpoch): `(epoch,
    /// end offset)` of the largest epoch <= `requested`; `(-1, -1)` when unknown
    /// ([`UNDEFINED_EPOCH`](crate::UNDEFINED_EPOCH),
    /// [`UNDEFINED_EPOCH_OFFSET`](crate::UNDEFINED_EPOCH_OFFSET)). The latest epoch
    /// ends at the *written* end offset: data not yet written may still be rolled back
    /// by a failed write.
    pub fn end_offset_for_epoch(&self, requested: i32) -> (i32, i64) {
        let st = self.shared.state.borrow();
        st.epochs.end_offset_for(requested, st.written_end)
    }
}

/// Write the checkpoint file if the cache changed since it was last written. Writes
/// are serialised, and each writes the cache as it is once its turn came, so the file
/// never goes back to an older state.
pub(super) async fn persist(shared: &Shared) -> Result<()> {
    let current = |shared: &Shared| {
        let st = shared.state.borrow();
        st.epochs_persisted == st.epochs_version
    };
    if current(shared) {
        return Ok(());
    }
    let _guard = shared.epoch_file.lock().await;
    if current(shared) {
        return Ok(());
    }
    let (version, data, dir) = {
        let st = shared.state.borrow();
        (
            st.epochs_version,
            st.epochs.checkpoint_bytes(),
            st.dir.clone(),
        )
    };
    let path = dir.join(CHECKPOINT_FILE);
    fio::replace_file(&dir, &path, data)
        .await
        .map_err(io_err(format!("writing {}", path.display())))?;
    let mut st = shared.state.borrow_mut();
    assert!(
        version >= st.epochs_persisted,
        "the epoch checkpoint only moves forward"
    );
    st.epochs_persisted = version;
    Ok(())
}
