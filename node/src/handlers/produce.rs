//! Produce: route each partition's batches to its owner (in request order), then wait
//! for the appends and answer; acks=0 gets no answer. A transactional producer's first
//! write to a partition waits at the owner for its transaction coordinator (KIP-890,
//! `txn::gate`); the coordinator's refusals are answered as Kafka words them.

use crate::security::authorizer::acl::{Operation, ResourceType};
use crate::security::authorizer::Caller;
use std::rc::Rc;
use std::sync::Arc;

use spate_net::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse,
    TopicProduceResponse,
};
use spate_net::messages::{ProduceRequest, ProduceResponse, RequestHeader};
use spate_net::ErrorCode;

use super::{leader_hints, respond, spawn_response, Dispatched, Quota};
use crate::mesh::{PartitionKey, PartitionOp, PartitionReply, TxnCheck};
use crate::route;
use crate::schema_registry::SchemaCheck;
use crate::security::Listener;
use crate::shard::ShardContext;

/// Produce from this version on names topics by id (KIP-516).
const TOPIC_IDS_FROM: i16 = 13;
/// Produce from this version on is transaction version 2: the partition leader adds the
/// partition to the transaction itself (KIP-890 part 2).
const TV2_FROM: i16 = 12;

/// One partition's append.
struct Append {
    /// (topic index, partition index) in the request.
    position: (usize, usize),
    key: PartitionKey,
}

pub async fn dispatch(
    ctx: Rc<ShardContext>,
    (header, quota): (RequestHeader, Quota),
    req: ProduceRequest,
    arrived: std::time::Instant,
    (listener, caller): (Arc<Listener>, Caller),
    throttle_time_ms: i32,
) -> Dispatched {
    let version = header.request_api_version;
    let acks = req.acks;
    let acks_valid = matches!(acks, -1..=1);
    let txn = match &req.transactional_id {
        Some(id) => TxnCheck::Verify {
            transactional_id: id.as_str().into(),
            tv2: version >= TV2_FROM,
        },
        None => TxnCheck::Skip,
    };
    let image = ctx.image();
    let mut appends = Vec::new();
    let mut ops = Vec::new();
    // Partitions answered without an append: (topic index, partition index, error).
    let mut early: Vec<(usize, usize, i16)> = Vec::new();
    // Topic names (v13+: looked up by id).
    let names: Vec<Option<Arc<str>>> = req
        .topic_data
        .iter()
        .map(|topic| {
            if version >= TOPIC_IDS_FROM {
                image
                    .topic_by_id(&topic.topic_id.0)
                    .map(|t| t.name.as_str().into())
            } else {
                Some(topic.name.as_str().into())
            }
        })
        .collect();
    // Authorization (Kafka's order: the transactional id, then each topic, before
    // whether it exists, so that names do not leak). Nothing to allocate without ACLs.
    let txn_denied = req.transactional_id.as_deref().is_some_and(|id| {
        !ctx.authorized(&caller, Operation::Write, ResourceType::TransactionalId, id)
    });
    let topic_denied: Vec<bool> = if ctx.authorizer.is_some() {
        names
            .iter()
            .map(|n| {
                n.as_deref().is_some_and(|n| {
                    !ctx.authorized(&caller, Operation::Write, ResourceType::Topic, n)
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    // Broker-side schema validation, per topic (docs/schema-registry.md): a topic
    // without overrides costs one map lookup.
    // `checks` stays empty (no allocation) unless a topic has validation on.
    let mut checks: Vec<Option<Arc<SchemaCheck>>> = Vec::new();
    for (ti, name) in names.iter().enumerate() {
        let Some(name) = name.as_deref() else {
            continue;
        };
        let check = image
            .topic(name)
            .filter(|t| !t.configs.is_empty())
            .and_then(|t| ctx.schemas.check_for(name, &t.configs));
        if let Some(check) = check {
            if checks.is_empty() {
                checks.resize(req.topic_data.len(), None);
            }
            checks[ti] = Some(check);
        }
    }
    for (ti, topic) in req.topic_data.iter().enumerate() {
        let name = names[ti].clone();
        for (pi, part) in topic.partition_data.iter().enumerate() {
            let refused = if !acks_valid {
                Some(ErrorCode::InvalidRequiredAcks.code())
            } else if txn_denied {
                Some(ErrorCode::TransactionalIdAuthorizationFailed.code())
            } else if topic_denied.get(ti) == Some(&true) {
                Some(ErrorCode::TopicAuthorizationFailed.code())
            } else if name.is_none() {
                Some(ErrorCode::UnknownTopicId.code())
            } else if name.as_deref() == Some(crate::group::OFFSETS_TOPIC) {
                // Kafka: "Cannot append to internal topic".
                Some(ErrorCode::InvalidTopicException.code())
            } else {
                None
            };
            match (refused, &part.records, &name) {
                (None, Some(records), Some(name)) => {
                    let key = PartitionKey {
                        topic: name.clone(),
                        partition: part.index,
                    };
                    let op = PartitionOp::Produce {
                        records: records.to_contiguous(),
                        acks,
                        txn: txn.clone(),
                        check: checks.get(ti).cloned().flatten(),
                        timeout: std::time::Duration::from_millis(req.timeout_ms.max(0) as u64),
                    };
                    appends.push(Append {
                        position: (ti, pi),
                        key: key.clone(),
                    });
                    ops.push((key, op));
                }
                (code, _, _) => {
                    early.push((ti, pi, code.unwrap_or(ErrorCode::CorruptMessage.code())))
                }
            }
        }
    }
    drop(image);
    let routed = route::send_from(&ctx, ops, arrived).await;
    let request_quota = quota.clone();
    spawn_response(&request_quota, async move {
        let replies = routed.collect().await;
        if acks == 0 {
            return None;
        }
        let mut responses: Vec<TopicProduceResponse> = req
            .topic_data
            .iter()
            .map(|t| TopicProduceResponse {
                name: t.name.clone(),
                topic_id: t.topic_id,
                partition_responses: t
                    .partition_data
                    .iter()
                    .map(|p| PartitionProduceResponse {
                        index: p.index,
                        ..Default::default()
                    })
                    .collect(),
            })
            .collect();
        for (ti, pi, code) in early {
            let out = &mut responses[ti].partition_responses[pi];
            out.error_code = code;
            out.base_offset = -1;
        }
        let mut metrics = ctx.metrics.borrow_mut();
        let transactional = req.transactional_id.is_some();
        for (append, reply) in appends.iter().zip(replies) {
            let (ti, pi) = append.position;
            let out = &mut responses[ti].partition_responses[pi];
            match reply {
                PartitionReply::Produced {
                    base_offset,
                    log_append_time,
                    log_start_offset,
                    ..
                } => {
                    out.base_offset = base_offset;
                    out.log_append_time_ms = log_append_time;
                    out.log_start_offset = log_start_offset;
                }
                PartitionReply::MissingKeys {
                    count,
                    records,
                    log_start_offset,
                } => {
                    missing_keys(out, &append.key.topic, count, &records);
                    out.log_start_offset = log_start_offset;
                }
                PartitionReply::Refused {
                    count,
                    records,
                    log_start_offset,
                } => {
                    ctx.schemas.count_refusal(count);
                    let reason = checks
                        .get(ti)
                        .and_then(Option::as_ref)
                        .map(|c| c.describe())
                        .unwrap_or_else(|| "Schema validation failed".to_string());
                    record_errors(out, &reason, count, &records);
                    out.log_start_offset = log_start_offset;
                }
                other => {
                    out.base_offset = -1;
                    let code = match route::error_of(&other) {
                        0 => ErrorCode::UnknownServerError.code(),
                        code => code,
                    };
                    if transactional {
                        let (code, message) = producer_error(code, version);
                        out.error_code = code;
                        out.error_message = (!message.is_empty()).then_some(message);
                    } else {
                        out.error_code = code;
                    }
                }
            }
        }
        for p in responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .filter(|p| p.error_code != 0)
        {
            metrics.error("Produce", p.error_code);
        }
        drop(metrics);
        let node_endpoints = if version >= LEADER_HINTS_FROM {
            leader_hints_for(&ctx, &names, &mut responses, &listener)
        } else {
            Vec::new()
        };
        Some(respond(
            &quota,
            &header,
            ProduceResponse {
                responses,
                node_endpoints,
                throttle_time_ms,
            },
        ))
    })
}

/// Produce from this version on carries KIP-951's leader hints.
const LEADER_HINTS_FROM: i16 = 10;

/// KIP-951: fills the current leader of every partition answered
/// NOT_LEADER_OR_FOLLOWER; the endpoints of those leaders.
fn leader_hints_for(
    ctx: &ShardContext,
    names: &[Option<Arc<str>>],
    responses: &mut [TopicProduceResponse],
    listener: &Listener,
) -> Vec<NodeEndpoint> {
    let not_leader = ErrorCode::NotLeaderOrFollower.code();
    if !responses
        .iter()
        .flat_map(|t| &t.partition_responses)
        .any(|p| p.error_code == not_leader)
    {
        // The common case: nothing to look up.
        return Vec::new();
    }
    let image = ctx.image();
    let mut leaders = std::collections::BTreeSet::new();
    for (t, name) in responses.iter_mut().zip(names) {
        let Some(name) = name else { continue };
        for p in t
            .partition_responses
            .iter_mut()
            .filter(|p| p.error_code == not_leader)
        {
            if let Some((leader_id, leader_epoch)) =
                leader_hints::current_leader(&image, name, p.index)
            {
                p.current_leader = LeaderIdAndEpoch {
                    leader_id,
                    leader_epoch,
                };
                leaders.insert(leader_id);
            }
        }
    }
    leader_hints::endpoints(&image, &leaders, listener, ctx.config.node_id)
        .into_iter()
        .map(|(node_id, host, port, rack)| NodeEndpoint {
            node_id,
            host,
            port,
            rack,
        })
        .collect()
}

/// Produce from this version on may answer TRANSACTION_ABORTABLE.
const TRANSACTION_ABORTABLE_FROM: i16 = 11;

/// A coordinator's verification error as a producer sees it (Kafka's ReplicaManager;
/// a partition's own errors are none of these and pass unchanged):
/// retriable coordinator trouble becomes NOT_ENOUGH_REPLICAS, which every client
/// retries without a metadata refresh; a fenced producer gets INVALID_PRODUCER_EPOCH;
/// a partition outside the transaction is TRANSACTION_ABORTABLE, or
/// INVALID_TXN_STATE for clients that predate it.
fn producer_error(code: i16, version: i16) -> (i16, String) {
    use crate::txn::client::RETRIABLE_VERIFICATION_ERRORS;
    use ErrorCode::{
        InvalidProducerEpoch, InvalidTxnState, NotEnoughReplicas, ProducerFenced,
        TransactionAbortable,
    };
    if let Some(e) = RETRIABLE_VERIFICATION_ERRORS
        .iter()
        .find(|e| e.code() == code)
    {
        return (
            NotEnoughReplicas.code(),
            format!(
                "Unable to verify the partition has been added to the transaction. \
                 Underlying error: {e:?}"
            ),
        );
    }
    let code = if code == TransactionAbortable.code() && version < TRANSACTION_ABORTABLE_FROM {
        InvalidTxnState.code()
    } else {
        code
    };
    if code == ProducerFenced.code() {
        return (InvalidProducerEpoch.code(), String::new());
    }
    if code == InvalidTxnState.code() {
        return (code, "Partition was not added to the transaction".into());
    }
    (code, String::new())
}

/// Kafka's answer to records without a key in a compacted topic (LogValidator's
/// RecordValidationException): INVALID_RECORD, one record error per record (Produce v8+),
/// and a message quoting the first three.
fn missing_keys(out: &mut PartitionProduceResponse, topic: &str, count: u32, records: &[u32]) {
    let reason = format!(
        "Compacted topic cannot accept message without key in topic partition {topic}-{}",
        out.index
    );
    record_errors(out, &reason, count, records);
}

/// INVALID_RECORD with one record error per record listed, and a message quoting the
/// first three (Kafka's RecordValidationException answer).
fn record_errors(out: &mut PartitionProduceResponse, reason: &str, count: u32, records: &[u32]) {
    let shown: Vec<String> = records
        .iter()
        .take(3)
        .map(|i| format!("RecordError(batchIndex={i}, message='{reason}')"))
        .collect();
    out.error_code = ErrorCode::InvalidRecord.code();
    out.base_offset = -1;
    out.error_message = Some(format!(
        "One or more records have been rejected due to {count} record errors in total, and \
         only showing the first three errors at most: [{}]",
        shown.join(", ")
    ));
    out.record_errors = records
        .iter()
        .map(|&i| BatchIndexAndErrorMessage {
            batch_index: i as i32,
            batch_index_error_message: Some(reason.to_string()),
        })
        .collect();
}
