//! Asking a transaction coordinator from any shard: the request goes to the shard that
//! owns the transactional id's `__transaction_state` partition.

use spate_net::ErrorCode;

use spate_net::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use spate_net::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse};
use spate_net::ApiKey;

use super::coordinator::{coordinator_shard, state_partition, TxnRequest};
use super::TXN_STATE_TOPIC;
use crate::mesh::ShardMsg;
use crate::shard::ShardContext;

const NOT_AVAILABLE: i16 = ErrorCode::CoordinatorNotAvailable as i16;

/// Send a request to the coordinator of `transactional_id` and wait for its answer; the
/// error code when this broker is not the coordinator: NOT_COORDINATOR when another live
/// broker is (the client looks it up again), COORDINATOR_NOT_AVAILABLE when none is.
pub async fn ask<T>(
    ctx: &ShardContext,
    transactional_id: &str,
    make: impl FnOnce(flume::Sender<T>) -> TxnRequest,
) -> Result<T, i16> {
    let Some(shard) = coordinator_shard(ctx, transactional_id) else {
        return Err(if remote_coordinator(ctx, transactional_id).is_some() {
            ErrorCode::NotCoordinator.code()
        } else {
            NOT_AVAILABLE
        });
    };
    let (tx, rx) = flume::bounded(1);
    ctx.senders[shard]
        .send_async(ShardMsg::Txn(make(tx)))
        .await
        .map_err(|_| NOT_AVAILABLE)?;
    rx.recv_async().await.map_err(|_| NOT_AVAILABLE)
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
        let code = match remote_coordinator(ctx, transactional_id) {
            Some(broker) => {
                let partitions = partitions.clone();
                ask_remote(
                    ctx,
                    broker,
                    transactional_id,
                    producer_id,
                    producer_epoch,
                    partitions,
                    tv2,
                )
                .await
            }
            None => ask(ctx, transactional_id, |reply| TxnRequest::AddPartitions {
                transactional_id: transactional_id.to_string(),
                producer_id,
                producer_epoch,
                partitions: partitions.clone(),
                verify_only: !tv2,
                tv2,
                reply,
            })
            .await
            .unwrap_or_else(|code| code),
        };
        if code != ErrorCode::ConcurrentTransactions.code() || std::time::Instant::now() >= deadline
        {
            return code;
        }
        compio::time::sleep(VERIFY_RETRY).await;
    }
}

/// The broker coordinating `transactional_id` when it is another live one.
fn remote_coordinator(ctx: &ShardContext, transactional_id: &str) -> Option<i32> {
    ctx.live_leader_elsewhere(TXN_STATE_TOPIC, state_partition(ctx, transactional_id)?)
}

/// AddPartitionsToTxn to the coordinator on another broker (v4+, as Kafka's partition
/// leaders send it): a verification, or transaction version 2's add. The first error
/// of any partition, or of the call itself (a retriable NOT_COORDINATOR when the
/// broker could not be reached: the leader answers the producer with a retriable error).
async fn ask_remote(
    ctx: &ShardContext,
    broker: i32,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partitions: Vec<(String, i32)>,
    tv2: bool,
) -> i16 {
    let mut topics: Vec<AddPartitionsToTxnTopic> = Vec::new();
    for (name, p) in partitions {
        match topics.iter_mut().find(|t| t.name == name) {
            Some(t) => t.partitions.push(p),
            None => topics.push(AddPartitionsToTxnTopic {
                name,
                partitions: vec![p],
            }),
        }
    }
    let request = AddPartitionsToTxnRequest {
        transactions: vec![AddPartitionsToTxnTransaction {
            transactional_id: transactional_id.to_string(),
            producer_id,
            producer_epoch,
            verify_only: !tv2,
            topics,
        }],
        ..Default::default()
    };
    let answer: Result<AddPartitionsToTxnResponse, _> = ctx
        .brokers
        .call(
            &ctx.image(),
            broker,
            ApiKey::AddPartitionsToTxn,
            REMOTE_ADD_VERSION,
            &request,
        )
        .await;
    match answer {
        Ok(r) if r.error_code != 0 => r.error_code,
        Ok(r) => r
            .results_by_transaction
            .iter()
            .flat_map(|t| &t.topic_results)
            .flat_map(|t| &t.results_by_partition)
            .map(|p| p.partition_error_code)
            .find(|&c| c != 0)
            .unwrap_or(0),
        Err(e) => {
            tracing::warn!(error = %e, "asking a transaction coordinator on another broker failed");
            ErrorCode::NotCoordinator.code()
        }
    }
}

/// The AddPartitionsToTxn version partition leaders send (batched, with verify_only).
const REMOTE_ADD_VERSION: i16 = 5;
