//! Transaction APIs: InitProducerId with a transactional id, AddPartitionsToTxn,
//! AddOffsetsToTxn, EndTxn. Each goes to the shard coordinating the transactional id
//! (`txn::coordinator`); the protocol details (versions, response shapes, which error
//! older clients understand) are handled here.

use spate_net::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use spate_net::messages::{
    describe_producers_response, describe_transactions_response, list_transactions_response,
    write_txn_markers_response,
};
use spate_net::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeProducersRequest, DescribeProducersResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse,
    ListTransactionsRequest, ListTransactionsResponse, WriteTxnMarkersRequest,
    WriteTxnMarkersResponse,
};
use spate_net::ErrorCode;

use crate::group::{partition_for, OFFSETS_TOPIC};
use crate::mesh::{PartitionKey, PartitionOp, PartitionReply, ShardMsg};
use crate::security::authorizer::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::security::authorizer::Caller;
use crate::shard::ShardContext;
use crate::txn::client::ask;
use crate::txn::coordinator::TxnRequest;

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

const NOT_AVAILABLE: i16 = ErrorCode::CoordinatorNotAvailable as i16;

async fn add(
    ctx: &ShardContext,
    transactional_id: &str,
    producer_id: i64,
    producer_epoch: i16,
    partitions: Vec<(String, i32)>,
    verify_only: bool,
    tv2: bool,
) -> i16 {
    ask(ctx, transactional_id, |reply| TxnRequest::AddPartitions {
        transactional_id: transactional_id.to_string(),
        producer_id,
        producer_epoch,
        partitions,
        verify_only,
        tv2,
        reply,
    })
    .await
    .unwrap_or_else(|code| code)
}

pub async fn add_partitions(
    ctx: &ShardContext,
    req: AddPartitionsToTxnRequest,
    version: i16,
    caller: &Caller,
) -> AddPartitionsToTxnResponse {
    // Kafka: v4+ comes from brokers and needs CLUSTER_ACTION; clients' versions need
    // WRITE on the transactional id, then on each topic.
    if version >= 4 && !ctx.authorized_on_cluster(caller, Operation::ClusterAction) {
        return AddPartitionsToTxnResponse {
            error_code: ErrorCode::ClusterAuthorizationFailed.code(),
            ..Default::default()
        };
    }
    let (id_denied, denied) = if version < 4 {
        let id_denied = !ctx.authorized(
            caller,
            Operation::Write,
            ResourceType::TransactionalId,
            &req.v3_and_below_transactional_id,
        );
        let denied = if id_denied {
            Default::default()
        } else {
            ctx.denied_topics(
                caller,
                Operation::Write,
                req.v3_and_below_topics.iter().map(|t| t.name.as_str()),
            )
        };
        (id_denied, denied)
    } else {
        (false, Default::default())
    };
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
                        if id_denied {
                            return AddPartitionsToTxnPartitionResult {
                                partition_index: p,
                                partition_error_code: ErrorCode::TransactionalIdAuthorizationFailed
                                    .code(),
                            };
                        }
                        if denied.contains(&t.name) {
                            return AddPartitionsToTxnPartitionResult {
                                partition_index: p,
                                partition_error_code: ErrorCode::TopicAuthorizationFailed.code(),
                            };
                        }
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
                        }
                    })
                    .collect(),
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
        let code = if !id_denied && denied.is_empty() && all_exist(topics) {
            let c = add(
                ctx,
                &req.v3_and_below_transactional_id,
                req.v3_and_below_producer_id,
                req.v3_and_below_producer_epoch,
                list(topics),
                false,
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
                    // v4+ comes from partition leaders (clients send v3 and below): an
                    // add that is not a verification is transaction version 2's, by the
                    // leader of the partition (KIP-890 part 2).
                    !t.verify_only,
                )
                .await,
            )
        } else {
            None
        };
        out.push(AddPartitionsToTxnResult {
            transactional_id: t.transactional_id.clone(),
            topic_results: results(&t.topics, code),
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
    caller: &Caller,
) -> AddOffsetsToTxnResponse {
    // Kafka: WRITE on the transactional id, then READ on the group.
    let denied = if !ctx.authorized(
        caller,
        Operation::Write,
        ResourceType::TransactionalId,
        &req.transactional_id,
    ) {
        Some(ErrorCode::TransactionalIdAuthorizationFailed)
    } else if !ctx.authorized(caller, Operation::Read, ResourceType::Group, &req.group_id) {
        Some(ErrorCode::GroupAuthorizationFailed)
    } else {
        None
    };
    if let Some(error) = denied {
        return AddOffsetsToTxnResponse {
            error_code: error.code(),
            ..Default::default()
        };
    }
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

/// EndTxn from this version on is transaction version 2 (KIP-890): the coordinator
/// bumps the epoch and answers the producer id and epoch to continue with.
const END_TXN_TV2_FROM: i16 = 5;

pub async fn end_txn(
    ctx: &ShardContext,
    req: EndTxnRequest,
    version: i16,
    caller: &Caller,
) -> EndTxnResponse {
    // Kafka: WRITE on the transactional id.
    if !ctx.authorized(
        caller,
        Operation::Write,
        ResourceType::TransactionalId,
        &req.transactional_id,
    ) {
        return EndTxnResponse {
            error_code: ErrorCode::TransactionalIdAuthorizationFailed.code(),
            producer_id: -1,
            producer_epoch: -1,
            ..Default::default()
        };
    }
    let (code, producer_id, producer_epoch) =
        ask(ctx, &req.transactional_id, |reply| TxnRequest::EndTxn {
            transactional_id: req.transactional_id.clone(),
            producer_id: req.producer_id,
            producer_epoch: req.producer_epoch,
            commit: req.committed,
            tv2: version >= END_TXN_TV2_FROM,
            reply,
        })
        .await
        .unwrap_or_else(|code| (code, -1, -1));
    EndTxnResponse {
        error_code: fenced_for(code, version, PRODUCER_FENCED_FROM_END),
        producer_id,
        producer_epoch,
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
    .unwrap_or_else(|code| (code, -1, -1));
    (
        fenced_for(code, version, PRODUCER_FENCED_FROM_INIT),
        pid,
        epoch,
    )
}

pub async fn describe_transactions(
    ctx: &ShardContext,
    req: DescribeTransactionsRequest,
    caller: &Caller,
) -> DescribeTransactionsResponse {
    let mut states = Vec::with_capacity(req.transactional_ids.len());
    for id in req.transactional_ids {
        // Kafka: DESCRIBE on the transactional id; partitions of topics the caller may
        // not DESCRIBE are left out.
        let answer = if !ctx.authorized(
            caller,
            Operation::Describe,
            ResourceType::TransactionalId,
            &id,
        ) {
            Err(ErrorCode::TransactionalIdAuthorizationFailed.code())
        } else if id.is_empty() {
            Err(ErrorCode::InvalidRequest.code())
        } else {
            ask(ctx, &id, |reply| TxnRequest::Describe {
                transactional_id: id.clone(),
                reply,
            })
            .await
            .unwrap_or_else(Err)
        };
        states.push(match answer {
            Ok(d) => {
                let mut topics: Vec<describe_transactions_response::TopicData> = Vec::new();
                for (t, p) in d.partitions {
                    if !ctx.authorized(caller, Operation::Describe, ResourceType::Topic, &t) {
                        continue;
                    }
                    match topics.iter_mut().find(|x| x.topic == t) {
                        Some(x) => x.partitions.push(p),
                        None => topics.push(describe_transactions_response::TopicData {
                            topic: t,
                            partitions: vec![p],
                        }),
                    }
                }
                describe_transactions_response::TransactionState {
                    transactional_id: id,
                    transaction_state: d.state.to_string(),
                    transaction_timeout_ms: d.timeout_ms,
                    transaction_start_time_ms: d.start_ms,
                    producer_id: d.producer_id,
                    producer_epoch: d.producer_epoch,
                    topics,
                    ..Default::default()
                }
            }
            Err(code) => describe_transactions_response::TransactionState {
                error_code: code,
                transactional_id: id,
                transaction_start_time_ms: -1,
                producer_id: -1,
                producer_epoch: -1,
                ..Default::default()
            },
        });
    }
    DescribeTransactionsResponse {
        transaction_states: states,
        ..Default::default()
    }
}

/// Kafka's transaction state names (ListTransactions filters must be among them).
const STATE_NAMES: [&str; 8] = [
    "Empty",
    "Ongoing",
    "PrepareCommit",
    "PrepareAbort",
    "CompleteCommit",
    "CompleteAbort",
    "Dead",
    "PrepareEpochFence",
];

pub async fn list_transactions(
    ctx: &ShardContext,
    req: ListTransactionsRequest,
    caller: &Caller,
) -> ListTransactionsResponse {
    let unknown: Vec<String> = req
        .state_filters
        .iter()
        .filter(|s| !STATE_NAMES.contains(&s.as_str()))
        .cloned()
        .collect();
    let now = crate::partition::now_ms();
    let mut out = Vec::new();
    // Every shard coordinates some partitions of __transaction_state.
    for sender in &ctx.senders {
        let (tx, rx) = flume::bounded(1);
        if sender
            .send_async(ShardMsg::Txn(TxnRequest::List { reply: tx }))
            .await
            .is_err()
        {
            continue;
        }
        for d in rx.recv_async().await.unwrap_or_default() {
            let state_ok =
                req.state_filters.is_empty() || req.state_filters.iter().any(|s| s == d.state);
            let pid_ok = req.producer_id_filters.is_empty()
                || req.producer_id_filters.contains(&d.producer_id);
            // KIP-994: only transactions running longer than the filter (-1: all).
            let duration_ok = req.duration_filter < 0
                || (d.start_ms >= 0 && now - d.start_ms > req.duration_filter);
            // Kafka: only the transactional ids the caller may DESCRIBE.
            let visible = || {
                ctx.may_see(
                    caller,
                    Operation::Describe,
                    ResourceType::TransactionalId,
                    &d.transactional_id,
                )
            };
            if state_ok && pid_ok && duration_ok && visible() {
                out.push(list_transactions_response::TransactionState {
                    transactional_id: d.transactional_id,
                    producer_id: d.producer_id,
                    transaction_state: d.state.to_string(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
    ListTransactionsResponse {
        unknown_state_filters: unknown,
        transaction_states: out,
        ..Default::default()
    }
}

pub async fn describe_producers(
    ctx: &std::rc::Rc<ShardContext>,
    req: DescribeProducersRequest,
    caller: &Caller,
) -> DescribeProducersResponse {
    // Kafka: READ on each topic, else TOPIC_AUTHORIZATION_FAILED per partition.
    let denied = ctx.denied_topics(
        caller,
        Operation::Read,
        req.topics.iter().map(|t| t.name.as_str()),
    );
    let mut ops = Vec::new();
    for t in req.topics.iter().filter(|t| !denied.contains(&t.name)) {
        for &p in &t.partition_indexes {
            ops.push((
                PartitionKey {
                    topic: t.name.as_str().into(),
                    partition: p,
                },
                PartitionOp::DescribeProducers,
            ));
        }
    }
    let mut replies = crate::route::run(ctx, ops).await.into_iter();
    let topics = req
        .topics
        .iter()
        .map(|t| describe_producers_response::TopicResponse {
            name: t.name.clone(),
            partitions: t
                .partition_indexes
                .iter()
                .map(
                    // Refused topics have no replies.
                    |&p| match (!denied.contains(&t.name)).then(|| replies.next()) {
                        None => describe_producers_response::PartitionResponse {
                            partition_index: p,
                            error_code: ErrorCode::TopicAuthorizationFailed.code(),
                            error_message: Some("Topic authorization failed.".into()),
                            ..Default::default()
                        },
                        Some(Some(PartitionReply::Producers(list))) => {
                            describe_producers_response::PartitionResponse {
                                partition_index: p,
                                active_producers: list
                                    .into_iter()
                                    .map(|(pid, epoch, seq, ts, txn_start)| {
                                        describe_producers_response::ProducerState {
                                            producer_id: pid,
                                            producer_epoch: i32::from(epoch),
                                            last_sequence: seq,
                                            last_timestamp: ts,
                                            coordinator_epoch: -1,
                                            current_txn_start_offset: txn_start,
                                        }
                                    })
                                    .collect(),
                                ..Default::default()
                            }
                        }
                        Some(other) => describe_producers_response::PartitionResponse {
                            partition_index: p,
                            error_code: other
                                .map(|r| crate::route::error_of(&r))
                                .filter(|c| *c != 0)
                                .unwrap_or(ErrorCode::UnknownServerError.code()),
                            ..Default::default()
                        },
                    },
                )
                .collect(),
        })
        .collect();
    DescribeProducersResponse {
        topics,
        ..Default::default()
    }
}

/// WriteTxnMarkers refused: CLUSTER_AUTHORIZATION_FAILED for every partition.
fn refuse_markers(req: &WriteTxnMarkersRequest) -> WriteTxnMarkersResponse {
    let code = ErrorCode::ClusterAuthorizationFailed.code();
    WriteTxnMarkersResponse {
        markers: req
            .markers
            .iter()
            .map(|m| write_txn_markers_response::WritableTxnMarkerResult {
                producer_id: m.producer_id,
                topics: m
                    .topics
                    .iter()
                    .map(
                        |t| write_txn_markers_response::WritableTxnMarkerTopicResult {
                            name: t.name.clone(),
                            partitions: t
                                .partition_indexes
                                .iter()
                                .map(|&p| {
                                    write_txn_markers_response::WritableTxnMarkerPartitionResult {
                                        partition_index: p,
                                        error_code: code,
                                    }
                                })
                                .collect(),
                        },
                    )
                    .collect(),
            })
            .collect(),
    }
}

/// WriteTxnMarkers (what a transaction coordinator sends partition leaders): write each
/// marker to its partitions. This node's own coordinator writes its markers directly;
/// the API serves coordinators elsewhere and Kafka's tools.
pub async fn write_txn_markers(
    ctx: &std::rc::Rc<ShardContext>,
    req: WriteTxnMarkersRequest,
    caller: &Caller,
) -> WriteTxnMarkersResponse {
    // Kafka: ALTER on the cluster, or else CLUSTER_ACTION (brokers send this to each
    // other: their principal must be a super user or hold it).
    if !ctx.may_see(
        caller,
        Operation::Alter,
        ResourceType::Cluster,
        CLUSTER_NAME,
    ) && !ctx.authorized_on_cluster(caller, Operation::ClusterAction)
    {
        return refuse_markers(&req);
    }
    let mut ops = Vec::new();
    for m in &req.markers {
        for t in &m.topics {
            for &p in &t.partition_indexes {
                ops.push((
                    PartitionKey {
                        topic: t.name.as_str().into(),
                        partition: p,
                    },
                    PartitionOp::WriteTxnMarker {
                        producer_id: m.producer_id,
                        producer_epoch: m.producer_epoch,
                        commit: m.transaction_result,
                        bumped: m.transaction_version >= 2,
                    },
                ));
            }
        }
    }
    let mut replies = crate::route::run(ctx, ops).await.into_iter();
    let markers = req
        .markers
        .iter()
        .map(|m| write_txn_markers_response::WritableTxnMarkerResult {
            producer_id: m.producer_id,
            topics: m
                .topics
                .iter()
                .map(
                    |t| write_txn_markers_response::WritableTxnMarkerTopicResult {
                        name: t.name.clone(),
                        partitions: t
                            .partition_indexes
                            .iter()
                            .map(|&p| {
                                write_txn_markers_response::WritableTxnMarkerPartitionResult {
                                    partition_index: p,
                                    error_code: match replies.next() {
                                        Some(PartitionReply::MarkerWritten) => 0,
                                        Some(other) => match crate::route::error_of(&other) {
                                            0 => ErrorCode::UnknownServerError.code(),
                                            code => code,
                                        },
                                        None => ErrorCode::UnknownServerError.code(),
                                    },
                                }
                            })
                            .collect(),
                    },
                )
                .collect(),
        })
        .collect();
    WriteTxnMarkersResponse { markers }
}
