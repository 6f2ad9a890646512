//! The transaction coordinator of one shard: the transactional ids whose
//! `__transaction_state` partition this shard owns (see docs/adr/0003-transactions.md).
//! Each id's state machine is in `metadata.rs`; this module runs the requests against it,
//! writes every transition to the partition before it takes effect, and drives a
//! transaction's end: Prepare record, markers to every partition, Complete record.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use spate_net::compression::Compression;
use spate_net::messages::write_txn_markers_request::{WritableTxnMarker, WritableTxnMarkerTopic};
use spate_net::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use spate_net::record_batch::RecordBatchBuilder;
use spate_net::{ApiKey, ErrorCode};

use super::metadata::{Transit, TxnMetadata, TxnPartition};
use super::state_log::{self, TxnStatus};
use crate::controller::{ControllerReply, ControllerRequest};
use crate::mesh::{PartitionKey, PartitionOp, PartitionReply, ShardMsg};
use crate::partition::{now_ms, Partition};
use crate::shard::ShardContext;

pub const TXN_STATE_TOPIC: &str = "__transaction_state";
/// Kafka's `transaction.max.timeout.ms`.
pub const MAX_TIMEOUT_MS: i32 = 900_000;
/// Largest decompressed batch read back from `__transaction_state`.
const MAX_STATE_BATCH: usize = 64 << 20;
/// Back-off between attempts to write a marker to a partition that refused it.
const MARKER_RETRY: Duration = Duration::from_millis(200);

/// A request for the coordinator of a transactional id.
pub enum TxnRequest {
    InitProducerId {
        transactional_id: String,
        timeout_ms: i32,
        /// KIP-360: the producer id and epoch the client had, if any.
        expected: Option<(i64, i16)>,
        /// (error, producer id, epoch).
        reply: flume::Sender<(i16, i64, i16)>,
    },
    AddPartitions {
        transactional_id: String,
        producer_id: i64,
        producer_epoch: i16,
        partitions: Vec<TxnPartition>,
        /// KIP-890: only check that they are in the transaction.
        verify_only: bool,
        /// A partition leader adding partitions for a transaction version 2 producer.
        tv2: bool,
        reply: flume::Sender<i16>,
    },
    EndTxn {
        transactional_id: String,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        /// EndTxn v5+: transaction version 2, the epoch is bumped.
        tv2: bool,
        /// (error, producer id, epoch the client continues with).
        reply: flume::Sender<(i16, i64, i16)>,
    },
    /// DescribeTransactions of one id.
    Describe {
        transactional_id: String,
        reply: flume::Sender<Result<TxnDescription, i16>>,
    },
    /// ListTransactions: every id this shard coordinates.
    List {
        reply: flume::Sender<Vec<TxnDescription>>,
    },
}

/// What DescribeTransactions and ListTransactions report of an id.
#[derive(Debug, Clone)]
pub struct TxnDescription {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub state: &'static str,
    pub timeout_ms: i32,
    pub start_ms: i64,
    pub partitions: Vec<TxnPartition>,
}

impl TxnDescription {
    fn of(id: &str, m: &TxnMetadata) -> TxnDescription {
        TxnDescription {
            transactional_id: id.to_string(),
            producer_id: m.producer_id,
            producer_epoch: m.producer_epoch,
            state: m.status.name(),
            timeout_ms: m.timeout_ms,
            start_ms: m.start_ms,
            partitions: m.partitions.iter().cloned().collect(),
        }
    }
}

/// The transactional ids one shard coordinates.
#[derive(Default)]
pub struct TxnCoordinator {
    txns: HashMap<String, TxnMetadata>,
    /// `__transaction_state` partitions this shard leads, loading or loaded.
    pub loads: crate::coordinators::Loads,
}

impl TxnCoordinator {
    /// Rebuild one `__transaction_state` partition's transactions from its whole log
    /// (this broker now leads it: load `generation`), and install them unless that
    /// leadership ended meanwhile; then transactions found half-ended (Prepare*
    /// without Complete*) have their markers written again, as Kafka's new coordinator
    /// does. `None` when the load was superseded.
    pub async fn load(
        ctx: &Rc<ShardContext>,
        index: i32,
        generation: u64,
        partition: &Partition,
    ) -> Result<Option<usize>, spate_log::LogError> {
        let mut applied = 0;
        let mut loaded: HashMap<String, TxnMetadata> = HashMap::new();
        partition
            .replay(|batch| {
                let Ok(records) = batch.records(MAX_STATE_BATCH) else {
                    return;
                };
                for record in records.flatten() {
                    let Some(id) = record.key.and_then(state_log::decode_key) else {
                        continue;
                    };
                    match record.value.and_then(state_log::decode_value) {
                        Some(r) => {
                            loaded.insert(id, TxnMetadata::from_record(&r));
                        }
                        None => {
                            loaded.remove(&id);
                        }
                    }
                    applied += 1;
                }
            })
            .await?;
        let unfinished: Vec<String> = {
            let mut coord = ctx.txns.borrow_mut();
            if !coord.loads.finish(index, generation) {
                return Ok(None);
            }
            let unfinished = loaded
                .iter()
                .filter(|(_, m)| {
                    matches!(m.status, TxnStatus::PrepareCommit | TxnStatus::PrepareAbort)
                })
                .map(|(id, _)| id.clone())
                .collect();
            coord.txns.extend(loaded);
            unfinished
        };
        for id in unfinished {
            tracing::info!(transactional_id = %id, partition = index, "completing a transaction found prepared at load");
            let ctx2 = ctx.clone();
            compio::runtime::spawn(async move { finish_transaction(&ctx2, id).await }).detach();
        }
        Ok(Some(applied))
    }

    /// Drop the transactions of `__transaction_state` partition `index` (of `count`);
    /// true if the partition was led here. Work still running for them stops at its
    /// next step (`write`, `finish_transaction`: their load generation is gone).
    pub fn unload(&mut self, index: i32, count: i32) -> bool {
        self.txns
            .retain(|id, _| state_log::partition_for(id, count) != index);
        self.loads.end(index)
    }

    /// Transactions open or ending.
    pub fn ongoing(&self) -> usize {
        self.txns
            .values()
            .filter(|m| {
                matches!(
                    m.status,
                    TxnStatus::Ongoing | TxnStatus::PrepareCommit | TxnStatus::PrepareAbort
                )
            })
            .count()
    }

    /// Is the id's partition loaded on this shard? COORDINATOR_LOAD_IN_PROGRESS while
    /// it loads, NOT_COORDINATOR when it is not led here.
    fn owns(&self, ctx: &ShardContext, transactional_id: &str) -> Result<(), ErrorCode> {
        match partition_of(ctx, transactional_id) {
            Some(p) => self.loads.check(p),
            None => Err(ErrorCode::CoordinatorNotAvailable),
        }
    }

    /// The id's partition and the generation of its loaded state, if loaded here.
    fn loaded_state(&self, ctx: &ShardContext, transactional_id: &str) -> Option<(i32, u64)> {
        let p = partition_of(ctx, transactional_id)?;
        Some((p, self.loads.loaded(p)?))
    }
}

/// The `__transaction_state` partition of a transactional id.
pub fn partition_of(ctx: &ShardContext, transactional_id: &str) -> Option<i32> {
    let image = ctx.image();
    let topic = image.topic(TXN_STATE_TOPIC)?;
    Some(state_log::partition_for(
        transactional_id,
        topic.partitions.len() as i32,
    ))
}

/// The shard coordinating a transactional id.
pub fn coordinator_shard(ctx: &ShardContext, transactional_id: &str) -> Option<usize> {
    ctx.leading_shard(TXN_STATE_TOPIC, state_partition(ctx, transactional_id)?)
}

/// The `__transaction_state` partition of `transactional_id`.
pub fn state_partition(ctx: &ShardContext, transactional_id: &str) -> Option<i32> {
    let count = ctx.image().topic(TXN_STATE_TOPIC)?.partitions.len() as i32;
    Some(state_log::partition_for(transactional_id, count))
}

/// Serve one request on the coordinating shard.
pub fn serve(ctx: &Rc<ShardContext>, request: TxnRequest) {
    let ctx = ctx.clone();
    compio::runtime::spawn(async move {
        match request {
            TxnRequest::InitProducerId {
                transactional_id,
                timeout_ms,
                expected,
                reply,
            } => {
                let out = init_producer_id(&ctx, &transactional_id, timeout_ms, expected).await;
                let _ = reply.send(match out {
                    Ok((pid, epoch)) => (0, pid, epoch),
                    Err(code) => (code.code(), -1, -1),
                });
            }
            TxnRequest::AddPartitions {
                transactional_id,
                producer_id,
                producer_epoch,
                partitions,
                verify_only,
                tv2,
                reply,
            } => {
                let code = add_partitions(
                    &ctx,
                    &transactional_id,
                    producer_id,
                    producer_epoch,
                    partitions,
                    verify_only,
                    tv2,
                )
                .await;
                let _ = reply.send(code.map_or_else(|c| c.code(), |()| 0));
            }
            TxnRequest::EndTxn {
                transactional_id,
                producer_id,
                producer_epoch,
                commit,
                tv2,
                reply,
            } => {
                let out = end_txn(
                    &ctx,
                    &transactional_id,
                    producer_id,
                    producer_epoch,
                    commit,
                    tv2,
                )
                .await;
                let _ = reply.send(match out {
                    Ok((pid, epoch)) => (0, pid, epoch),
                    Err(code) => (code.code(), -1, -1),
                });
            }
            TxnRequest::Describe {
                transactional_id,
                reply,
            } => {
                let coord = ctx.txns.borrow();
                let out = match coord.owns(&ctx, &transactional_id) {
                    Err(code) => Err(code.code()),
                    Ok(()) => match coord.txns.get(&transactional_id) {
                        Some(m) if m.status != TxnStatus::Dead => {
                            Ok(TxnDescription::of(&transactional_id, m))
                        }
                        _ => Err(ErrorCode::TransactionalIdNotFound.code()),
                    },
                };
                let _ = reply.send(out);
            }
            TxnRequest::List { reply } => {
                let coord = ctx.txns.borrow();
                let all = coord
                    .txns
                    .iter()
                    .filter(|(_, m)| m.status != TxnStatus::Dead)
                    .map(|(id, m)| TxnDescription::of(id, m))
                    .collect();
                let _ = reply.send(all);
            }
        }
    })
    .detach();
}

async fn allocate_producer_id(ctx: &ShardContext) -> Result<i64, ErrorCode> {
    match ctx.controller(ControllerRequest::AllocateProducerId).await {
        Some(ControllerReply::ProducerId(Ok(pid))) => Ok(pid),
        _ => Err(ErrorCode::CoordinatorNotAvailable),
    }
}

/// Write a prepared transit of `id` to its partition; on success it takes effect
/// (unless the partition's state was unloaded meanwhile: its next leader replays it).
async fn write(ctx: &Rc<ShardContext>, id: &str, t: Transit) -> Result<(), ErrorCode> {
    let state = ctx.txns.borrow().loaded_state(ctx, id);
    let written = append_state(ctx, id, Some(state_log::encode_value(&t.record()))).await;
    let mut coord = ctx.txns.borrow_mut();
    if state.is_none() || coord.loaded_state(ctx, id) != state {
        return Err(ErrorCode::NotCoordinator);
    }
    let Some(m) = coord.txns.get_mut(id) else {
        return Err(ErrorCode::NotCoordinator);
    };
    match written {
        Ok(()) => {
            m.complete(t);
            Ok(())
        }
        Err(code) => {
            m.abandon();
            Err(code)
        }
    }
}

/// Write the state of transactional id `id` (`None`: its tombstone) to its partition of
/// the transaction log, and wait until the log's ISR has it.
async fn append_state(ctx: &ShardContext, id: &str, value: Option<Bytes>) -> Result<(), ErrorCode> {
    let partition = partition_of(ctx, id)
        .and_then(|p| {
            ctx.partition(&PartitionKey {
                topic: TXN_STATE_TOPIC.into(),
                partition: p,
            })
        })
        .ok_or(ErrorCode::NotCoordinator)?;
    let mut builder = RecordBatchBuilder::new(Compression::None);
    builder.append(
        now_ms(),
        Some(&state_log::encode_key(id)),
        value.as_deref(),
        &[],
    );
    let batch = builder.build().map_err(|_| ErrorCode::UnknownServerError)?;
    match partition
        .produce(
            batch,
            -1,
            crate::partition::INTERNAL_APPEND_TIMEOUT,
            None,
            None,
        )
        .await
    {
        PartitionReply::Produced { .. } => Ok(()),
        // Kafka maps a failed append to the transaction log to a retriable error.
        _ => Err(ErrorCode::CoordinatorNotAvailable),
    }
}

async fn init_producer_id(
    ctx: &Rc<ShardContext>,
    id: &str,
    timeout_ms: i32,
    expected: Option<(i64, i16)>,
) -> Result<(i64, i16), ErrorCode> {
    if id.is_empty() {
        return Err(ErrorCode::InvalidRequest);
    }
    if timeout_ms <= 0 || timeout_ms > MAX_TIMEOUT_MS {
        return Err(ErrorCode::InvalidTransactionTimeout);
    }
    ctx.txns.borrow().owns(ctx, id)?;
    if !ctx.txns.borrow().txns.contains_key(id) {
        let pid = allocate_producer_id(ctx).await?;
        // The partition may have been unloaded while the id was allocated.
        ctx.txns.borrow().owns(ctx, id)?;
        ctx.txns
            .borrow_mut()
            .txns
            .entry(id.to_string())
            .or_insert_with(|| TxnMetadata::new(pid, timeout_ms, now_ms()));
    }
    let now = now_ms();
    enum Next {
        Write(Transit),
        Rotate,
        Fence(i16),
    }
    let next = {
        let mut coord = ctx.txns.borrow_mut();
        let Some(m) = coord.txns.get_mut(id) else {
            return Err(ErrorCode::NotCoordinator);
        };
        if m.pending.is_some() {
            return Err(ErrorCode::ConcurrentTransactions);
        }
        // KIP-360: a producer that names an id must be the id's owner (or its
        // predecessor retrying after an exhausted epoch).
        if let Some((pid, epoch)) = expected {
            let valid = m.producer_epoch == -1
                || pid == m.producer_id
                || (pid == m.last_producer_id && epoch >= i16::MAX - 1);
            if !valid {
                return Err(ErrorCode::ProducerFenced);
            }
        }
        match m.status {
            TxnStatus::PrepareAbort | TxnStatus::PrepareCommit => {
                return Err(ErrorCode::ConcurrentTransactions)
            }
            TxnStatus::Empty | TxnStatus::CompleteAbort | TxnStatus::CompleteCommit => {
                if m.epoch_exhausted() && expected.is_none_or(|(_, e)| e == m.producer_epoch) {
                    Next::Rotate
                } else {
                    Next::Write(m.prepare_increment_epoch(
                        timeout_ms,
                        expected.map(|(_, e)| e),
                        now,
                    )?)
                }
            }
            TxnStatus::Ongoing => Next::Fence(m.prepare_fence().producer_epoch),
            TxnStatus::Dead | TxnStatus::PrepareEpochFence => {
                unreachable!("{id}: {:?} is never a resting state", m.status)
            }
        }
    };
    let t = match next {
        Next::Write(t) => t,
        Next::Rotate => {
            let pid = allocate_producer_id(ctx).await?;
            let mut coord = ctx.txns.borrow_mut();
            let m = coord.txns.get_mut(id).ok_or(ErrorCode::NotCoordinator)?;
            if m.pending.is_some() {
                return Err(ErrorCode::ConcurrentTransactions);
            }
            m.prepare_rotation(pid, timeout_ms, now, expected.is_some())
        }
        Next::Fence(epoch) => {
            // Abort the ongoing transaction under the bumped epoch; the client retries
            // (CONCURRENT_TRANSACTIONS) until it is done, then gets the next epoch.
            let (pid, ctx2, id2) = {
                let coord = ctx.txns.borrow();
                (
                    coord.txns.get(id).map(|m| m.producer_id).unwrap_or(-1),
                    ctx.clone(),
                    id.to_string(),
                )
            };
            end(&ctx2, &id2, pid, epoch, false, Some(epoch), None).await?;
            return Err(ErrorCode::ConcurrentTransactions);
        }
    };
    let (pid, epoch) = (t.producer_id, t.producer_epoch);
    write(ctx, id, t).await?;
    Ok((pid, epoch))
}

async fn add_partitions(
    ctx: &Rc<ShardContext>,
    id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partitions: Vec<TxnPartition>,
    verify_only: bool,
    tv2: bool,
) -> Result<(), ErrorCode> {
    if id.is_empty() {
        return Err(ErrorCode::InvalidRequest);
    }
    ctx.txns.borrow().owns(ctx, id)?;
    let t = {
        let mut coord = ctx.txns.borrow_mut();
        let Some(m) = coord.txns.get_mut(id) else {
            return Err(ErrorCode::InvalidProducerIdMapping);
        };
        if m.producer_id != producer_id {
            return Err(ErrorCode::InvalidProducerIdMapping);
        }
        if m.producer_epoch != producer_epoch {
            return Err(ErrorCode::ProducerFenced);
        }
        if verify_only {
            // KIP-890: a partition may take transactional data only when it is part of
            // the transaction (partitions are forgotten when it completes).
            if matches!(m.status, TxnStatus::PrepareCommit | TxnStatus::PrepareAbort) {
                return Err(ErrorCode::ConcurrentTransactions);
            }
            return if partitions.iter().all(|p| m.partitions.contains(p)) {
                Ok(())
            } else {
                Err(ErrorCode::TransactionAbortable)
            };
        }
        if m.pending.is_some()
            || matches!(m.status, TxnStatus::PrepareCommit | TxnStatus::PrepareAbort)
        {
            return Err(ErrorCode::ConcurrentTransactions);
        }
        if m.status == TxnStatus::Ongoing && partitions.iter().all(|p| m.partitions.contains(p)) {
            return Ok(());
        }
        m.prepare_add_partitions(partitions, tv2, now_ms())
    };
    write(ctx, id, t).await
}

async fn end_txn(
    ctx: &Rc<ShardContext>,
    id: &str,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    tv2: bool,
) -> Result<(i64, i16), ErrorCode> {
    if id.is_empty() {
        return Err(ErrorCode::InvalidRequest);
    }
    ctx.txns.borrow().owns(ctx, id)?;
    // Version 2 with the epochs used up: the producer id the client moves to.
    let exhausted = tv2
        && ctx
            .txns
            .borrow()
            .txns
            .get(id)
            .is_some_and(|m| m.epoch_exhausted() && m.pending.is_none());
    let next_producer_id = if exhausted {
        allocate_producer_id(ctx).await?
    } else {
        -1
    };
    end(
        ctx,
        id,
        producer_id,
        producer_epoch,
        commit,
        None,
        tv2.then_some(next_producer_id),
    )
    .await
}

/// What an EndTxn finds: the transition to write, or the answer without one.
enum EndStep {
    Write(Transit),
    Answer((i64, i16)),
}

/// Check an EndTxn against the id's state (Kafka's `endTransaction`) and prepare its
/// transition. `bump`: a version 2 EndTxn (with the next producer id when the epochs are
/// used up, else -1). Answers (producer id, epoch) the client continues with.
fn end_step(
    m: &mut TxnMetadata,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    fence_epoch: Option<i16>,
    bump: Option<i64>,
) -> Result<EndStep, ErrorCode> {
    use TxnStatus::*;
    let fencing = m.pending == Some(PrepareEpochFence);
    // Version 2 answers a retry of the EndTxn that bumped the epoch, so the epochs to
    // compare differ by one (or, after a move to a new producer id, the old id's last).
    let on_v2 = m.tv2 && !fencing;
    let retry_after_bump = on_v2 && i32::from(m.producer_epoch) == i32::from(producer_epoch) + 1;
    let retry_after_new_id = on_v2
        && m.last_producer_id == producer_id
        && producer_epoch == i16::MAX - 1
        && m.producer_epoch == 0;
    if m.producer_id != producer_id && !retry_after_new_id {
        return Err(ErrorCode::InvalidProducerIdMapping);
    }
    let same_epoch = producer_epoch == m.producer_epoch;
    let valid_epoch = if on_v2 {
        match m.status {
            Ongoing | Empty | Dead | PrepareEpochFence => same_epoch,
            // At the bumped epoch: the client's next EndTxn while this one's markers
            // are still being written (answered CONCURRENT_TRANSACTIONS below).
            PrepareCommit | PrepareAbort => retry_after_bump || same_epoch,
            // Or a version 2 abort of a transaction whose writes never reached a partition.
            CompleteCommit | CompleteAbort => {
                retry_after_bump || retry_after_new_id || (same_epoch && !commit && bump.is_some())
            }
        }
    } else {
        (fence_epoch.is_some() || same_epoch) && producer_epoch >= m.producer_epoch
    };
    if !valid_epoch {
        return Err(ErrorCode::ProducerFenced);
    }
    let ending = matches!(m.status, PrepareCommit | PrepareAbort);
    if (m.pending.is_some() && !fencing) || (on_v2 && same_epoch && ending) {
        return Err(ErrorCode::ConcurrentTransactions);
    }
    let now = now_ms();
    match (m.status, commit) {
        (Ongoing, _) => Ok(EndStep::Write(m.prepare_end(
            commit,
            fence_epoch,
            bump,
            now,
        ))),
        (Empty | CompleteCommit | CompleteAbort, false) if same_epoch && bump.is_some() => {
            // Nothing to mark: the Prepare/Complete pair only moves the producer on.
            Ok(EndStep::Write(m.prepare_end(false, None, bump, now)))
        }
        (CompleteCommit, true) | (CompleteAbort, false) => {
            Ok(EndStep::Answer((m.producer_id, m.producer_epoch)))
        }
        (PrepareCommit, true) | (PrepareAbort, false) => Err(ErrorCode::ConcurrentTransactions),
        _ => Err(ErrorCode::InvalidTxnState),
    }
}

/// EndTxn (from a client, or an abort the coordinator starts: a fence, a timeout):
/// write the Prepare record, answer, then write the markers and the Complete record.
async fn end(
    ctx: &Rc<ShardContext>,
    id: &str,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    fence_epoch: Option<i16>,
    bump: Option<i64>,
) -> Result<(i64, i16), ErrorCode> {
    let step = {
        let mut coord = ctx.txns.borrow_mut();
        let Some(m) = coord.txns.get_mut(id) else {
            return Err(ErrorCode::InvalidProducerIdMapping);
        };
        end_step(m, producer_id, producer_epoch, commit, fence_epoch, bump)?
    };
    let t = match step {
        EndStep::Answer(continues) => return Ok(continues),
        EndStep::Write(t) => t,
    };
    write(ctx, id, t).await?;
    let continues = ctx
        .txns
        .borrow()
        .txns
        .get(id)
        .map(TxnMetadata::continues_with)
        .ok_or(ErrorCode::NotCoordinator)?;
    let ctx2 = ctx.clone();
    let id2 = id.to_string();
    compio::runtime::spawn(async move { finish_transaction(&ctx2, id2).await }).detach();
    Ok(continues)
}

/// Abort the ongoing transactions older than their timeout (Kafka's
/// `abortTimedOutTransactions`): the producer's epoch is bumped, which fences it, and the
/// transaction is aborted under the new epoch.
pub async fn abort_timed_out(ctx: &Rc<ShardContext>) {
    let now = now_ms();
    let expired: Vec<(String, i64, i16)> = {
        let mut coord = ctx.txns.borrow_mut();
        let ids: Vec<String> = coord
            .txns
            .iter()
            .filter(|(_, m)| {
                m.status == TxnStatus::Ongoing
                    && m.pending.is_none()
                    && m.start_ms >= 0
                    && now.saturating_sub(m.start_ms) > i64::from(m.timeout_ms)
            })
            .map(|(id, _)| id.clone())
            .collect();
        ids.into_iter()
            .filter_map(|id| {
                let m = coord.txns.get_mut(&id)?;
                let fence = m.prepare_fence();
                Some((id, m.producer_id, fence.producer_epoch))
            })
            .collect()
    };
    for (id, pid, epoch) in expired {
        tracing::info!(transactional_id = %id, producer_id = pid, "aborting a transaction past its timeout");
        if let Err(e) = end(ctx, &id, pid, epoch, false, Some(epoch), None).await {
            tracing::warn!(transactional_id = %id, error = ?e, "aborting a timed-out transaction failed");
            if let Some(m) = ctx.txns.borrow_mut().txns.get_mut(&id) {
                if m.pending == Some(TxnStatus::PrepareEpochFence) {
                    m.abandon();
                }
            }
        }
    }
}

/// Forget transactional ids idle for `transactional.id.expiration.ms` (Kafka's
/// `removeExpiredTransactionalIds`): a tombstone goes to the log, then the id is dropped,
/// so the coordinator's memory does not grow with every id ever used.
pub async fn expire_idle_ids(ctx: &Rc<ShardContext>, max_idle_ms: i64) {
    let now = now_ms();
    let idle: Vec<String> = ctx
        .txns
        .borrow()
        .txns
        .iter()
        .filter(|(_, m)| {
            m.pending.is_none()
                && matches!(
                    m.status,
                    TxnStatus::Empty | TxnStatus::CompleteCommit | TxnStatus::CompleteAbort
                )
                && now.saturating_sub(m.last_update_ms) > max_idle_ms
        })
        .map(|(id, _)| id.clone())
        .collect();
    for id in idle {
        // Dead: no request may start a transition while the tombstone is written.
        let last_update = {
            let mut coord = ctx.txns.borrow_mut();
            let Some(m) = coord.txns.get_mut(&id) else {
                continue;
            };
            if m.pending.is_some() {
                continue;
            }
            m.pending = Some(TxnStatus::Dead);
            m.last_update_ms
        };
        let written = append_state(ctx, &id, None).await;
        let mut coord = ctx.txns.borrow_mut();
        match coord.txns.get_mut(&id) {
            Some(m) if written.is_ok() && m.last_update_ms == last_update => {
                coord.txns.remove(&id);
                tracing::debug!(transactional_id = %id, "expired an idle transactional id");
            }
            Some(m) => m.abandon(),
            None => {}
        }
    }
}

/// Write the markers of a prepared transaction to all its partitions, retrying each
/// until it is written (or the partition no longer exists), then the Complete record.
async fn finish_transaction(ctx: &Rc<ShardContext>, id: String) {
    let (state, pid, epoch, commit, bumped, partitions) = {
        let coord = ctx.txns.borrow();
        let Some(m) = coord.txns.get(&id) else { return };
        let Some(state) = coord.loaded_state(ctx, &id) else {
            return;
        };
        (
            state,
            m.producer_id,
            m.producer_epoch,
            m.status == TxnStatus::PrepareCommit,
            m.tv2,
            m.partitions.iter().cloned().collect::<Vec<_>>(),
        )
    };
    let mut left = partitions;
    while !left.is_empty() {
        let mut failed = Vec::new();
        for p in left {
            if !write_marker(ctx, &p, pid, epoch, commit, bumped).await {
                failed.push(p);
            }
        }
        left = failed;
        if !left.is_empty() {
            // Shutting down, or no longer the coordinator: the next one finishes it.
            if ctx.is_shutting_down() || ctx.txns.borrow().loaded_state(ctx, &id) != Some(state) {
                return;
            }
            compio::time::sleep(MARKER_RETRY).await;
        }
    }
    loop {
        let t = {
            let mut coord = ctx.txns.borrow_mut();
            if coord.loaded_state(ctx, &id) != Some(state) {
                return;
            }
            let Some(m) = coord.txns.get_mut(&id) else {
                return;
            };
            if m.pending.is_some() {
                None
            } else {
                Some(m.prepare_complete(now_ms()))
            }
        };
        if let Some(t) = t {
            let committed = t.status == TxnStatus::CompleteCommit;
            if write(ctx, &id, t).await.is_ok() {
                let mut m = ctx.metrics.borrow_mut();
                if committed {
                    m.transactions_committed += 1;
                } else {
                    m.transactions_aborted += 1;
                }
                return;
            }
        }
        if ctx.is_shutting_down() {
            return;
        }
        compio::time::sleep(MARKER_RETRY).await;
    }
}

/// Ask the owner of one partition to write a marker; true once it is written (or the
/// partition is gone, as Kafka drops markers for deleted partitions).
async fn write_marker(
    ctx: &ShardContext,
    (topic, partition): &TxnPartition,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    bumped: bool,
) -> bool {
    let image = ctx.image();
    let Some(info) = image
        .topic(topic)
        .and_then(|t| t.partitions.get(*partition as usize))
    else {
        return true;
    };
    if info.leader != ctx.config.node_id {
        // Led elsewhere: written by its leader; without one, tried again later.
        return info.leader >= 0
            && write_remote_marker(
                ctx,
                info.leader,
                topic,
                *partition,
                producer_id,
                producer_epoch,
                commit,
                bumped,
            )
            .await;
    }
    let owner = ctx.owner_of(info.slot);
    let (tx, rx) = flume::bounded(1);
    let key = PartitionKey {
        topic: topic.as_str().into(),
        partition: *partition,
    };
    let op = PartitionOp::WriteTxnMarker {
        producer_id,
        producer_epoch,
        commit,
        bumped,
    };
    let sent = ctx.senders[owner]
        .send_async(ShardMsg::Partitions {
            ops: vec![(key, op)],
            sent: std::time::Instant::now(),
            arrived: std::time::Instant::now(),
            reply: tx,
        })
        .await;
    if sent.is_err() {
        return false;
    }
    match rx.recv_async().await.ok().and_then(|mut r| r.pop()) {
        Some(PartitionReply::MarkerWritten) => true,
        Some(PartitionReply::Error(code)) => code == ErrorCode::UnknownTopicOrPartition.code(),
        _ => false,
    }
}

/// WriteTxnMarkers for one partition to its leader on another broker; true once
/// written (or the partition is gone there).
#[allow(clippy::too_many_arguments)]
async fn write_remote_marker(
    ctx: &ShardContext,
    leader: i32,
    topic: &str,
    partition: i32,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    bumped: bool,
) -> bool {
    let request = WriteTxnMarkersRequest {
        markers: vec![WritableTxnMarker {
            producer_id,
            producer_epoch,
            transaction_result: commit,
            topics: vec![WritableTxnMarkerTopic {
                name: topic.to_string(),
                partition_indexes: vec![partition],
            }],
            coordinator_epoch: 0,
            // The receiver takes 2 as a marker at the epoch bumped by EndTxn.
            transaction_version: if bumped { 2 } else { 1 },
        }],
    };
    let answer: Result<WriteTxnMarkersResponse, _> = ctx
        .brokers
        .call(
            &ctx.image(),
            leader,
            ApiKey::WriteTxnMarkers,
            REMOTE_MARKERS_VERSION,
            &request,
        )
        .await;
    match answer {
        Ok(r) => {
            let code = r
                .markers
                .iter()
                .flat_map(|m| &m.topics)
                .flat_map(|t| &t.partitions)
                .map(|p| p.error_code)
                .next()
                .unwrap_or(ErrorCode::UnknownServerError.code());
            code == 0 || code == ErrorCode::UnknownTopicOrPartition.code()
        }
        Err(e) => {
            tracing::warn!(topic, partition, leader, error = %e, "writing a transaction marker on another broker failed; retrying");
            false
        }
    }
}

/// WriteTxnMarkers with the transaction version field.
const REMOTE_MARKERS_VERSION: i16 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unloading_a_partition_drops_only_its_transactions() {
        let count = 4;
        let on = |p: i32| {
            (0..)
                .map(|i| format!("txn-{i}"))
                .find(|id| state_log::partition_for(id, count) == p)
                .unwrap_or_default()
        };
        let mut c = TxnCoordinator::default();
        for p in [0, 1] {
            let generation = c.loads.begin(p);
            assert_eq!(c.loads.check(p), Err(ErrorCode::CoordinatorLoadInProgress));
            assert!(c.loads.finish(p, generation));
            c.txns.insert(on(p), TxnMetadata::new(p.into(), 60_000, 0));
        }
        assert!(c.unload(0, count));
        assert_eq!(c.txns.keys().collect::<Vec<_>>(), vec![&on(1)]);
        assert_eq!(c.loads.check(0), Err(ErrorCode::NotCoordinator));
        assert_eq!(c.loads.check(1), Ok(()));
    }

    /// An id on transaction version 2 with an ongoing transaction at epoch 3.
    fn ongoing_v2() -> TxnMetadata {
        let mut m = TxnMetadata::new(9, 60_000, 0);
        m.producer_epoch = 3;
        let t = m.prepare_add_partitions([("t".to_string(), 0)], true, 1);
        m.complete(t);
        m
    }

    fn write(step: Result<EndStep, ErrorCode>) -> Transit {
        match step {
            Ok(EndStep::Write(t)) => t,
            Ok(EndStep::Answer(a)) => panic!("answered {a:?} without a transition"),
            Err(e) => panic!("refused: {e:?}"),
        }
    }

    fn refused(step: Result<EndStep, ErrorCode>) -> ErrorCode {
        match step {
            Err(e) => e,
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn version_2_end_bumps_and_recognises_its_retries() {
        let mut m = ongoing_v2();
        let t = write(end_step(&mut m, 9, 3, true, None, Some(-1)));
        assert_eq!((t.status, t.producer_epoch), (TxnStatus::PrepareCommit, 4));
        m.complete(t);
        // While the markers are written: the retry (old epoch) and the client's next
        // EndTxn (new epoch) both wait.
        assert_eq!(
            refused(end_step(&mut m, 9, 3, true, None, Some(-1))),
            ErrorCode::ConcurrentTransactions
        );
        assert_eq!(
            refused(end_step(&mut m, 9, 4, false, None, Some(-1))),
            ErrorCode::ConcurrentTransactions
        );
        let t = m.prepare_complete(2);
        m.complete(t);
        // A retry once complete gets the same answer.
        assert!(matches!(
            end_step(&mut m, 9, 3, true, None, Some(-1)),
            Ok(EndStep::Answer((9, 4)))
        ));
        // An abort at the new epoch with nothing added bumps again, without markers.
        let t = write(end_step(&mut m, 9, 4, false, None, Some(-1)));
        assert_eq!((t.status, t.producer_epoch), (TxnStatus::PrepareAbort, 5));
        assert!(t.partitions.is_empty());
        m.abandon();
        // A commit of nothing is not a thing, and an epoch from further back is fenced.
        assert_eq!(
            refused(end_step(&mut m, 9, 4, true, None, Some(-1))),
            ErrorCode::ProducerFenced
        );
        assert_eq!(
            refused(end_step(&mut m, 9, 2, false, None, Some(-1))),
            ErrorCode::ProducerFenced
        );
        assert_eq!(
            refused(end_step(&mut m, 8, 4, false, None, Some(-1))),
            ErrorCode::InvalidProducerIdMapping
        );
    }

    #[test]
    fn version_1_end_keeps_the_epoch_and_demands_it() {
        let mut m = ongoing_v2();
        m.tv2 = false;
        assert_eq!(
            refused(end_step(&mut m, 9, 2, true, None, None)),
            ErrorCode::ProducerFenced
        );
        let t = write(end_step(&mut m, 9, 3, true, None, None));
        assert_eq!((t.status, t.producer_epoch), (TxnStatus::PrepareCommit, 3));
        m.complete(t);
        assert_eq!(
            refused(end_step(&mut m, 9, 3, true, None, None)),
            ErrorCode::ConcurrentTransactions
        );
        assert_eq!(
            refused(end_step(&mut m, 9, 3, false, None, None)),
            ErrorCode::InvalidTxnState
        );
    }
}
