//! Transaction APIs: InitProducerId with a transactional id, AddPartitionsToTxn,
//! AddOffsetsToTxn, EndTxn. Each goes to the shard coordinating the transactional id
//! (`txn::coordinator`); the protocol details (versions, response shapes, which error
//! older clients understand) are handled here.

use spate_net::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use spate_net::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, EndTxnRequest, EndTxnResponse,
};
use spate_net::ErrorCode;

use crate::group::{partition_for, OFFSETS_TOPIC};
use crate::mesh::ShardMsg;
use crate::shard::ShardContext;
use crate::txn::coordinator::{coordinator_shard, TxnRequest};

/// PRODUCER_FENCED exists from these versions on; older clients get
/// INVALID_PRODUCER_EPOCH (Kafka's `maybeConvertProducerFencedError`).
const PRODUCER_FENCED_FROM_ADD: i16 = 2;
const PRODUCER_FENCED_FROM_END: i16 = 2;
const PRODUCER_FENCED_FROM_OFFSETS: i16 = 2;
pub const PRODUCER_FENCED_FROM_INIT: i16 = 4;

fn fenced_for(code: i16, version: i16, from: i16) -> i16 {
    if code == ErrorCode::ProducerFenced.code() && version < from {
        ErrorCode::InvalidProducerEpoch.code()
    } else {
        code
    }
}

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

const NOT_AVAILABLE: i16 = ErrorCode::CoordinatorNotAvailable as i16;

async fn add(
    ctx: &ShardContext,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partitions: Vec<(String, i32)>,
    verify_only: bool,
) -> i16 {
    ask(ctx, transactional_id, |reply| TxnRequest::AddPartitions {
        transactional_id: transactional_id.to_string(),
        producer_id,
        producer_epoch,
        partitions,
        verify_only,
        reply,
    })
    .await
    .unwrap_or(NOT_AVAILABLE)
}

pub async fn add_partitions(
    ctx: &ShardContext,
    req: AddPartitionsToTxnRequest,
    version: i16,
) -> AddPartitionsToTxnResponse {
    let image = ctx.image();
    // Unknown partitions fail the whole request (Kafka: UNKNOWN_TOPIC_OR_PARTITION for
    // them, OPERATION_NOT_ATTEMPTED for the rest).
    let results = |topics: &[spate_net::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic],
                   code: Option<i16>| {
        topics
            .iter()
            .map(|t| AddPartitionsToTxnTopicResult {
                name: t.name.clone(),
                results_by_partition: t
                    .partitions
                    .iter()
                    .map(|&p| {
                        let exists = image
                            .topic(&t.name)
                            .is_some_and(|tp| p >= 0 && (p as usize) < tp.partitions.len());
                        AddPartitionsToTxnPartitionResult {
                            partition_index: p,
                            partition_error_code: match code {
                                Some(c) => c,
                                None if exists => ErrorCode::OperationNotAttempted.code(),
                                None => ErrorCode::UnknownTopicOrPartition.code(),
                            },
                            ..Default::default()
                        }
                    })
                    .collect(),
                ..Default::default()
            })
            .collect::<Vec<_>>()
    };
    let all_exist = |topics: &[spate_net::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic]| {
        topics.iter().all(|t| {
            image.topic(&t.name).is_some_and(|tp| {
                t.partitions
                    .iter()
                    .all(|&p| p >= 0 && (p as usize) < tp.partitions.len())
            })
        })
    };
    let list = |topics: &[spate_net::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic]| {
        topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |&p| (t.name.clone(), p)))
            .collect::<Vec<_>>()
    };
    if version < 4 {
        let topics = &req.v3_and_below_topics;
        let code = if all_exist(topics) {
            let c = add(
                ctx,
                &req.v3_and_below_transactional_id,
                req.v3_and_below_producer_id,
                req.v3_and_below_producer_epoch,
                list(topics),
                false,
            )
            .await;
            Some(fenced_for(c, version, PRODUCER_FENCED_FROM_ADD))
        } else {
            None
        };
        return AddPartitionsToTxnResponse {
            results_by_topic_v3_and_below: results(topics, code),
            ..Default::default()
        };
    }
    let mut out = Vec::with_capacity(req.transactions.len());
    for t in &req.transactions {
        let code = if all_exist(&t.topics) {
            Some(
                add(
                    ctx,
                    &t.transactional_id,
                    t.producer_id,
                    t.producer_epoch,
                    list(&t.topics),
                    t.verify_only,
                )
                .await,
            )
        } else {
            None
        };
        out.push(AddPartitionsToTxnResult {
            transactional_id: t.transactional_id.clone(),
            topic_results: results(&t.topics, code),
            ..Default::default()
        });
    }
    AddPartitionsToTxnResponse {
        results_by_transaction: out,
        ..Default::default()
    }
}

/// AddOffsetsToTxn: the group's `__consumer_offsets` partition joins the transaction.
pub async fn add_offsets(
    ctx: &ShardContext,
    req: AddOffsetsToTxnRequest,
    version: i16,
) -> AddOffsetsToTxnResponse {
    let image = ctx.image();
    let code = match image.topic(OFFSETS_TOPIC) {
        Some(t) => {
            let p = partition_for(&req.group_id, t.partitions.len() as i32);
            let c = add(
                ctx,
                &req.transactional_id,
                req.producer_id,
                req.producer_epoch,
                vec![(OFFSETS_TOPIC.to_string(), p)],
                false,
            )
            .await;
            fenced_for(c, version, PRODUCER_FENCED_FROM_OFFSETS)
        }
        None => NOT_AVAILABLE,
    };
    AddOffsetsToTxnResponse {
        error_code: code,
        ..Default::default()
    }
}

pub async fn end_txn(ctx: &ShardContext, req: EndTxnRequest, version: i16) -> EndTxnResponse {
    let code = ask(ctx, &req.transactional_id, |reply| TxnRequest::EndTxn {
        transactional_id: req.transactional_id.clone(),
        producer_id: req.producer_id,
        producer_epoch: req.producer_epoch,
        commit: req.committed,
        reply,
    })
    .await
    .unwrap_or(NOT_AVAILABLE);
    EndTxnResponse {
        error_code: fenced_for(code, version, PRODUCER_FENCED_FROM_END),
        producer_id: -1,
        producer_epoch: -1,
        ..Default::default()
    }
}

/// InitProducerId for a transactional id: (error, producer id, epoch).
pub async fn init_producer_id(
    ctx: &ShardContext,
    transactional_id: &str,
    timeout_ms: i32,
    expected: Option<(i64, i16)>,
    version: i16,
) -> (i16, i64, i16) {
    let (code, pid, epoch) = ask(ctx, transactional_id, |reply| TxnRequest::InitProducerId {
        transactional_id: transactional_id.to_string(),
        timeout_ms,
        expected,
        reply,
    })
    .await
    .unwrap_or((NOT_AVAILABLE, -1, -1));
    (
        fenced_for(code, version, PRODUCER_FENCED_FROM_INIT),
        pid,
        epoch,
    )
}
