//! The share coordinator of one shard (Kafka's ShareCoordinatorService and its shards):
//! the share-partition states of the `__share_group_state` partitions this shard leads.
//! It follows their leadership as the group and transaction coordinators do
//! (`coordinators.rs`): a partition is loaded by replaying its log when it starts
//! leading here and dropped when it stops. Every change is a record appended to the
//! partition with acks=all and applied to the state only once the in-sync replicas
//! have it, so the state in memory is always the replay of what is durable.
//!
//! Requests for one share-partition are served one at a time (a lock per key): a
//! ShareUpdate is computed against the state its predecessor left, and the log holds
//! each key's records in the order they were applied.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use futures_util::lock::Mutex;
use spate_net::compression::Compression;
use spate_net::record_batch::RecordBatchBuilder;
use spate_net::ErrorCode;

use super::persister::{PersisterError, ShareKey, ShareState, StateSummary, StateWrite};
use super::records;
use super::state::{PartitionStates, Record};
use crate::coordinators::Loads;
use crate::mesh::{PartitionKey, PartitionOp, PartitionReply, ShardMsg};
use crate::partition::{now_ms, Partition};
use crate::shard::ShardContext;

pub const SHARE_STATE_TOPIC: &str = "__share_group_state";
/// Largest decompressed batch read back from `__share_group_state`.
const MAX_STATE_BATCH: usize = 64 << 20;

/// What is asked of the coordinator of a share-partition.
#[derive(Debug, Clone)]
pub enum ShareOp {
    Initialize { state_epoch: i32, start_offset: i64 },
    Read { leader_epoch: i32 },
    Write(StateWrite),
    Delete,
    Summary,
}

/// The coordinator's answer.
#[derive(Debug, Clone)]
pub enum ShareAnswer {
    Done,
    State(ShareState),
    Summary(StateSummary),
}

pub type ShareResult = Result<ShareAnswer, PersisterError>;

/// A request for the shard coordinating `key` (`ShardMsg::Share`).
pub struct ShareRequest {
    pub key: ShareKey,
    pub op: ShareOp,
    pub reply: flume::Sender<ShareResult>,
}

/// The share-partition states one shard coordinates.
#[derive(Default)]
pub struct ShareCoordinator {
    /// `__share_group_state` partitions this shard leads, loading or loaded.
    pub loads: Loads,
    partitions: HashMap<i32, PartitionStates>,
    /// One lock per share-partition with a request running (removed with the last).
    locks: HashMap<ShareKey, Rc<Mutex<()>>>,
    /// Appends running per partition: pruning waits until none is (a record written
    /// but not applied yet must not be deleted).
    appending: HashMap<i32, usize>,
    /// Records written (each a ShareUpdate, ShareSnapshot or tombstone) and of them
    /// ShareSnapshots.
    pub writes: u64,
    pub snapshots: u64,
}

impl ShareCoordinator {
    /// Drop the states of `__share_group_state` partition `index`; true if it was led
    /// here. Requests still running for it answer NOT_COORDINATOR (their generation
    /// is gone).
    pub fn unload(&mut self, index: i32) -> bool {
        self.partitions.remove(&index);
        self.loads.end(index)
    }

    /// Partitions loaded (serving).
    pub fn loaded_partitions(&self) -> usize {
        self.partitions.len()
    }

    /// Share-partition states held.
    pub fn states(&self) -> usize {
        self.partitions.values().map(PartitionStates::len).sum()
    }
}

fn error(code: ErrorCode) -> PersisterError {
    (code.code(), None)
}

/// The `__share_group_state` partition of `key`, once the topic exists.
pub fn state_partition(ctx: &ShardContext, key: &ShareKey) -> Option<i32> {
    let count = ctx.image().topic(SHARE_STATE_TOPIC)?.partitions.len() as i32;
    Some(records::partition_for(key, count))
}

fn partition_key(index: i32) -> PartitionKey {
    PartitionKey {
        topic: SHARE_STATE_TOPIC.into(),
        partition: index,
    }
}

/// Ask the shard of this broker that coordinates `key`: NOT_COORDINATOR when this
/// broker does not lead its partition (COORDINATOR_NOT_AVAILABLE before the topic
/// exists, whose creation this asks for).
pub async fn ask_local(ctx: &ShardContext, key: &ShareKey, op: ShareOp) -> ShareResult {
    let Some(index) = state_partition(ctx, key) else {
        crate::internal_topics::create_on_first_use(ctx, SHARE_STATE_TOPIC);
        return Err(error(ErrorCode::CoordinatorNotAvailable));
    };
    let Some(shard) = ctx.leading_shard(SHARE_STATE_TOPIC, index) else {
        return Err(error(ErrorCode::NotCoordinator));
    };
    let (tx, rx) = flume::bounded(1);
    let request = ShareRequest {
        key: key.clone(),
        op,
        reply: tx,
    };
    if ctx.senders[shard]
        .send_async(ShardMsg::Share(request))
        .await
        .is_err()
    {
        return Err(error(ErrorCode::CoordinatorNotAvailable));
    }
    rx.recv_async()
        .await
        .unwrap_or_else(|_| Err(error(ErrorCode::CoordinatorNotAvailable)))
}

/// Serve one request on the coordinating shard.
pub fn serve(ctx: &Rc<ShardContext>, request: ShareRequest) {
    let ctx = ctx.clone();
    compio::runtime::spawn(async move {
        let ShareRequest { key, op, reply } = request;
        let lock = ctx
            .shares
            .borrow_mut()
            .locks
            .entry(key.clone())
            .or_default()
            .clone();
        let answer = {
            let _held = lock.lock().await;
            run(&ctx, &key, op).await
        };
        // The map's reference and this one: nobody else waits for the key.
        if Rc::strong_count(&lock) == 2 {
            ctx.shares.borrow_mut().locks.remove(&key);
        }
        let _ = reply.send(answer);
    })
    .detach();
}

/// One request, under its key's lock: what it would write is computed from the
/// state, written, then applied.
async fn run(ctx: &ShardContext, key: &ShareKey, op: ShareOp) -> ShareResult {
    let index = state_partition(ctx, key).ok_or(error(ErrorCode::NotCoordinator))?;
    let now = now_ms();
    let (generation, answer, record) = {
        let coord = ctx.shares.borrow();
        coord.loads.check(index).map_err(error)?;
        let generation = coord
            .loads
            .loaded(index)
            .ok_or(error(ErrorCode::NotCoordinator))?;
        let states = coord
            .partitions
            .get(&index)
            .ok_or(error(ErrorCode::NotCoordinator))?;
        let (answer, record) = match op {
            ShareOp::Initialize {
                state_epoch,
                start_offset,
            } => (
                ShareAnswer::Done,
                Some(states.initialize(key, state_epoch, start_offset, now)?),
            ),
            ShareOp::Read { leader_epoch } => {
                let (state, record) = states.read(key, leader_epoch, now)?;
                (ShareAnswer::State(state), record)
            }
            ShareOp::Write(write) => (ShareAnswer::Done, Some(states.write(key, &write, now)?)),
            ShareOp::Delete => (ShareAnswer::Done, states.delete(key)?),
            ShareOp::Summary => (ShareAnswer::Summary(states.summary(key)?), None),
        };
        (generation, answer, record)
    };
    // Kafka checks the share-partition's topic after the request's own checks.
    let image = ctx.image();
    let exists = image
        .topic_by_id(&key.topic_id.0)
        .is_some_and(|t| (key.partition as usize) < t.partitions.len());
    if !exists {
        return Err(error(ErrorCode::UnknownTopicOrPartition));
    }
    let Some(record) = record else {
        return Ok(answer);
    };
    *ctx.shares.borrow_mut().appending.entry(index).or_insert(0) += 1;
    let written = append(ctx, index, &record).await;
    let mut coord = ctx.shares.borrow_mut();
    if let Some(n) = coord.appending.get_mut(&index) {
        *n -= 1;
        if *n == 0 {
            coord.appending.remove(&index);
        }
    }
    let offset = written?;
    // Unloaded meanwhile: the next leader replays the record from the log.
    if coord.loads.loaded(index) != Some(generation) {
        return Err(error(ErrorCode::NotCoordinator));
    }
    let snapshot = matches!(record, Record::Snapshot(..));
    if let Some(states) = coord.partitions.get_mut(&index) {
        states.replay(record, offset);
    }
    coord.writes += 1;
    coord.snapshots += u64::from(snapshot);
    Ok(answer)
}

/// Append `record` to partition `index` and wait until its in-sync replicas have it;
/// the record's offset.
async fn append(ctx: &ShardContext, index: i32, record: &Record) -> Result<i64, PersisterError> {
    let partition = ctx
        .partition(&partition_key(index))
        .ok_or(error(ErrorCode::NotCoordinator))?;
    let (key, value) = records::encode(record);
    let mut builder = RecordBatchBuilder::new(Compression::None);
    builder.append(now_ms(), Some(&key), value.as_deref(), &[]);
    let batch = builder
        .build()
        .map_err(|_| error(ErrorCode::UnknownServerError))?;
    let timeout = Duration::from_millis(ctx.config.share_coordinator_write_timeout_ms);
    match partition.produce(batch, -1, timeout, None, None).await {
        PartitionReply::Produced { base_offset, .. } => Ok(base_offset),
        other => Err((
            crate::group::write_error(crate::route::error_of(&other)),
            None,
        )),
    }
}

/// Rebuild the states of `__share_group_state` partition `index` from its log (this
/// broker now leads it: load `generation`), and install them unless that leadership
/// ended meanwhile. The records applied, or `None` when the load was superseded.
pub async fn load(
    ctx: &ShardContext,
    index: i32,
    generation: u64,
    partition: &Partition,
) -> Result<Option<usize>, spate_log::LogError> {
    let mut states = PartitionStates::new(
        ctx.config
            .share_coordinator_snapshot_update_records_per_snapshot,
    );
    let mut applied = 0;
    partition
        .replay(|batch| {
            if batch.is_control() {
                return;
            }
            let Ok(iter) = batch.records(MAX_STATE_BATCH) else {
                return;
            };
            for record in iter.flatten() {
                let offset = record.offset_in(&batch);
                let Some(key) = record.key else {
                    continue;
                };
                if let Some(r) = records::decode(key, record.value) {
                    states.replay(r, offset);
                    applied += 1;
                }
            }
        })
        .await?;
    let mut coord = ctx.shares.borrow_mut();
    if !coord.loads.finish(index, generation) {
        return Ok(None);
    }
    coord.partitions.insert(index, states);
    Ok(Some(applied))
}

/// Delete the records of this shard's loaded partitions that no state needs any more
/// (below each one's oldest latest snapshot, or everything when no state is left),
/// with the log's DeleteRecords (Kafka's pruning of `__share_group_state`).
pub async fn prune(ctx: &ShardContext) {
    let candidates: Vec<(i32, i64)> = {
        let coord = ctx.shares.borrow();
        coord
            .partitions
            .iter()
            .filter(|(index, _)| !coord.appending.contains_key(index))
            .map(|(index, states)| (*index, states.needed_from()))
            .collect()
    };
    // Records appended from now on land at or past the log's end, so at or past each
    // `needed`: deleting below it stays safe while later writes run.
    for (index, needed) in candidates {
        let Some(partition) = ctx.partition(&partition_key(index)) else {
            continue;
        };
        let target = needed.min(partition.high_watermark());
        if target <= partition.log.log_start_offset() {
            continue;
        }
        match partition
            .run(PartitionOp::DeleteRecords { offset: target })
            .await
        {
            PartitionReply::LowWatermark(start) => {
                tracing::debug!(
                    partition = index,
                    log_start_offset = start,
                    "share-group state pruned"
                );
            }
            other => {
                tracing::debug!(partition = index, reply = ?other, "pruning share-group state failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unloading_forgets_the_partition() {
        let mut coord = ShareCoordinator::default();
        let generation = coord.loads.begin(4);
        assert!(coord.loads.finish(4, generation));
        coord.partitions.insert(4, PartitionStates::new(500));
        assert_eq!(coord.loaded_partitions(), 1);
        assert!(coord.unload(4));
        assert_eq!(coord.loaded_partitions(), 0);
        assert_eq!(coord.loads.check(4), Err(ErrorCode::NotCoordinator));
        assert!(!coord.unload(4));
    }
}
