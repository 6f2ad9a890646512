//! The persister: how a share-partition leader and the group coordinator read and write
//! the durable state of a share-partition (group, topic id, partition), kept by the share
//! coordinator of the `__share_group_state` partition its key hashes to, on this broker
//! or another (Kafka's `Persister`, with the InitializeShareGroupState,
//! ReadShareGroupState, WriteShareGroupState, DeleteShareGroupState and
//! ReadShareGroupStateSummary APIs between brokers).
//!
//! Every call is for one share-partition. Errors are Kafka's error codes with an optional
//! message, as the share coordinator answers them (e.g. FENCED_STATE_EPOCH,
//! FENCED_LEADER_EPOCH, COORDINATOR_NOT_AVAILABLE after bounded retries).
//!
//! A call goes to the shard of this broker that owns the key's partition (over the
//! mesh) when this broker leads it, else over the inter-broker client to the broker
//! that does; while the coordinator is moving or loading it is asked again with a
//! growing back-off, for a bounded time.

use std::time::{Duration, Instant};

use spate_net::{ErrorCode, Uuid};

use super::coordinator::{
    ask_local, state_partition, ShareAnswer, ShareOp, ShareResult, SHARE_STATE_TOPIC,
};
use crate::shard::ShardContext;

/// A share-partition: the key of its state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShareKey {
    pub group_id: String,
    pub topic_id: Uuid,
    pub partition: i32,
}

/// A run of offsets in one delivery state, as the state is persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateBatch {
    pub first_offset: i64,
    /// Inclusive.
    pub last_offset: i64,
    /// 0 available, 2 acknowledged, 4 archived (Kafka's `RecordState` ids).
    pub delivery_state: i8,
    pub delivery_count: i16,
}

/// A share-partition's whole state, as ReadShareGroupState returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareState {
    pub state_epoch: i32,
    /// -1 when the state was initialized without a start offset (the leader resolves it
    /// by the group's `share.auto.offset.reset`).
    pub start_offset: i64,
    pub batches: Vec<StateBatch>,
}

/// What ReadShareGroupStateSummary returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateSummary {
    pub state_epoch: i32,
    pub leader_epoch: i32,
    pub start_offset: i64,
    /// -1 when not known.
    pub delivery_complete_count: i32,
}

/// A write of a share-partition's state (WriteShareGroupState).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateWrite {
    pub state_epoch: i32,
    pub leader_epoch: i32,
    pub start_offset: i64,
    /// -1 when not known.
    pub delivery_complete_count: i32,
    pub batches: Vec<StateBatch>,
}

/// A persister error: Kafka's error code and an optional message.
pub type PersisterError = (i16, Option<String>);

/// InitializeShareGroupState: (re)start the state at `start_offset` with `state_epoch`.
pub async fn initialize(
    ctx: &ShardContext,
    key: &ShareKey,
    state_epoch: i32,
    start_offset: i64,
) -> Result<(), PersisterError> {
    let op = ShareOp::Initialize {
        state_epoch,
        start_offset,
    };
    call(ctx, key, op).await.map(|_| ())
}

/// ReadShareGroupState, by the share-partition's leader in `leader_epoch`.
pub async fn read(
    ctx: &ShardContext,
    key: &ShareKey,
    leader_epoch: i32,
) -> Result<ShareState, PersisterError> {
    match call(ctx, key, ShareOp::Read { leader_epoch }).await? {
        ShareAnswer::State(state) => Ok(state),
        _ => Err(unexpected()),
    }
}

/// WriteShareGroupState.
pub async fn write(
    ctx: &ShardContext,
    key: &ShareKey,
    write: StateWrite,
) -> Result<(), PersisterError> {
    call(ctx, key, ShareOp::Write(write)).await.map(|_| ())
}

/// DeleteShareGroupState.
pub async fn delete(ctx: &ShardContext, key: &ShareKey) -> Result<(), PersisterError> {
    call(ctx, key, ShareOp::Delete).await.map(|_| ())
}

/// ReadShareGroupStateSummary. As in Kafka, the leader epoch is carried but fences
/// nothing.
pub async fn read_summary(
    ctx: &ShardContext,
    key: &ShareKey,
    leader_epoch: i32,
) -> Result<StateSummary, PersisterError> {
    match call(ctx, key, ShareOp::Summary).await {
        Ok(ShareAnswer::Summary(summary)) => Ok(summary),
        Ok(_) => Err(unexpected()),
        Err(e) => {
            tracing::debug!(group = %key.group_id, partition = key.partition, leader_epoch, code = e.0, "reading a share-group state summary failed");
            Err(e)
        }
    }
}

fn unexpected() -> PersisterError {
    (
        ErrorCode::UnknownServerError.code(),
        Some("unexpected answer from the share coordinator".to_string()),
    )
}

/// The first pause before asking again, doubled after each try up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a call keeps trying while the coordinator moves or loads (Kafka's
/// persister retries finding and asking the coordinator a bounded number of times
/// with a growing back-off too).
const PATIENCE: Duration = Duration::from_secs(15);

/// Errors after which the coordinator is looked up and asked again.
fn retriable(code: i16) -> bool {
    matches!(
        ErrorCode::from_code(code),
        Some(
            ErrorCode::NotCoordinator
                | ErrorCode::CoordinatorLoadInProgress
                | ErrorCode::CoordinatorNotAvailable
                | ErrorCode::NetworkException
                | ErrorCode::RequestTimedOut
        )
    )
}

/// Ask the coordinator of `key` (a shard of this broker, or the broker leading its
/// partition), again with back-off while it answers a retriable error, for at most
/// [`PATIENCE`]; then the last error.
async fn call(ctx: &ShardContext, key: &ShareKey, op: ShareOp) -> ShareResult {
    let deadline = Instant::now() + PATIENCE;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let answer = attempt(ctx, key, op.clone()).await;
        match &answer {
            Err((code, _)) if retriable(*code) && Instant::now() + backoff < deadline => {
                compio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            _ => return answer,
        }
    }
}

async fn attempt(ctx: &ShardContext, key: &ShareKey, op: ShareOp) -> ShareResult {
    let remote = state_partition(ctx, key)
        .and_then(|index| ctx.live_leader_elsewhere(SHARE_STATE_TOPIC, index));
    match remote {
        Some(broker) => super::remote::ask(ctx, broker, key, op).await,
        None => ask_local(ctx, key, op).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_coordinator_moves_are_retried() {
        for code in [
            ErrorCode::NotCoordinator,
            ErrorCode::CoordinatorLoadInProgress,
            ErrorCode::CoordinatorNotAvailable,
            ErrorCode::NetworkException,
        ] {
            assert!(retriable(code.code()), "{code:?}");
        }
        for code in [
            ErrorCode::FencedStateEpoch,
            ErrorCode::FencedLeaderEpoch,
            ErrorCode::InvalidRequest,
            ErrorCode::UnknownTopicOrPartition,
        ] {
            assert!(!retriable(code.code()), "{code:?}");
        }
    }
}
