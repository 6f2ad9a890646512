//! Asking a transaction coordinator from any shard: the request goes to the shard that
//! owns the transactional id's `__transaction_state` partition.

use spate_net::ErrorCode;

use super::coordinator::{coordinator_shard, TxnRequest};
use crate::mesh::ShardMsg;
use crate::shard::ShardContext;

const NOT_AVAILABLE: i16 = ErrorCode::CoordinatorNotAvailable as i16;

/// Send a request to the coordinator of `transactional_id` and wait for its answer.
pub async fn ask<T>(
    ctx: &ShardContext,
    transactional_id: &str,
    make: impl FnOnce(flume::Sender<T>) -> TxnRequest,
) -> Option<T> {
    let shard = coordinator_shard(ctx, transactional_id)?;
    let (tx, rx) = flume::bounded(1);
    ctx.senders[shard]
        .send_async(ShardMsg::Txn(make(tx)))
        .await
        .ok()?;
    rx.recv_async().await.ok()
}

/// The coordinator's answers to [`verify_or_add`] that only mean "not now": each caller
/// turns them into the retriable error its clients know (Kafka's ReplicaManager and
/// GroupCoordinatorService do the same).
pub const RETRIABLE_VERIFICATION_ERRORS: [ErrorCode; 5] = [
    ErrorCode::ConcurrentTransactions,
    ErrorCode::NetworkException,
    ErrorCode::CoordinatorLoadInProgress,
    ErrorCode::CoordinatorNotAvailable,
    ErrorCode::NotCoordinator,
];

/// Longest a partition's write waits for the coordinator to finish the producer's
/// previous transaction before answering with a retriable error (Kafka's
/// `add.partitions.to.txn.retry.backoff.max.ms`).
const VERIFY_PATIENCE: std::time::Duration = std::time::Duration::from_millis(100);
const VERIFY_RETRY: std::time::Duration = std::time::Duration::from_millis(5);

/// KIP-890, for a partition leader about to append a producer's first transactional
/// write to `partitions`: transaction version 1 (`tv2` false) checks that the producer
/// added them to its ongoing transaction; version 2 adds them itself, starting the
/// transaction if needed. A transaction still ending (CONCURRENT_TRANSACTIONS) is waited
/// for, briefly: a version 2 producer starts its next one as soon as EndTxn answers.
pub async fn verify_or_add(
    ctx: &ShardContext,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partitions: Vec<(String, i32)>,
    tv2: bool,
) -> i16 {
    let deadline = std::time::Instant::now() + VERIFY_PATIENCE;
    loop {
        let code = ask(ctx, transactional_id, |reply| TxnRequest::AddPartitions {
            transactional_id: transactional_id.to_string(),
            producer_id,
            producer_epoch,
            partitions: partitions.clone(),
            verify_only: !tv2,
            tv2,
            reply,
        })
        .await
        .unwrap_or(NOT_AVAILABLE);
        if code != ErrorCode::ConcurrentTransactions.code() || std::time::Instant::now() >= deadline
        {
            return code;
        }
        compio::time::sleep(VERIFY_RETRY).await;
    }
}
