//! The share-state APIs brokers send each other (KIP-932): InitializeShareGroupState,
//! ReadShareGroupState, WriteShareGroupState, DeleteShareGroupState and
//! ReadShareGroupStateSummary, for share-partitions whose `__share_group_state`
//! partition this broker leads. Each share-partition of a request goes to the shard
//! coordinating it (`share::coordinator::ask_local`); one this broker does not
//! coordinate is answered NOT_COORDINATOR, as Kafka answers, and the caller looks
//! the coordinator up again. As Kafka, the caller needs CLUSTER_ACTION on the cluster.

use futures_util::future::join_all;
use spate_net::messages::{
    delete_share_group_state_response as delete_resp,
    initialize_share_group_state_response as init_resp,
    read_share_group_state_response as read_resp,
    read_share_group_state_summary_response as summary_resp,
    write_share_group_state_response as write_resp, DeleteShareGroupStateRequest,
    DeleteShareGroupStateResponse, InitializeShareGroupStateRequest,
    InitializeShareGroupStateResponse, ReadShareGroupStateRequest, ReadShareGroupStateResponse,
    ReadShareGroupStateSummaryRequest, ReadShareGroupStateSummaryResponse,
    WriteShareGroupStateRequest, WriteShareGroupStateResponse,
};
use spate_net::{ErrorCode, Uuid};

use crate::security::authorizer::acl::Operation;
use crate::security::authorizer::Caller;
use crate::shard::ShardContext;
use crate::share::coordinator::{ask_local, ShareAnswer, ShareOp, ShareResult};
use crate::share::persister::{ShareKey, StateBatch, StateWrite};

/// Kafka's answer to a caller without CLUSTER_ACTION, for every share-partition.
fn denied(ctx: &ShardContext, caller: &Caller) -> Option<ShareResult> {
    (!ctx.authorized_on_cluster(caller, Operation::ClusterAction))
        .then(|| Err((ErrorCode::ClusterAuthorizationFailed.code(), None)))
}

/// Run `op` for every (topic, partition) of a request, concurrently: the answers in
/// the request's order, grouped by topic.
async fn for_each<P>(
    ctx: &ShardContext,
    caller: &Caller,
    group_id: &str,
    topics: Vec<(Uuid, Vec<P>)>,
    op: impl Fn(&P) -> (i32, ShareOp),
) -> Vec<(Uuid, Vec<(i32, ShareResult)>)> {
    let refused = denied(ctx, caller);
    let mut out = Vec::with_capacity(topics.len());
    for (topic_id, partitions) in topics {
        let asks = partitions.iter().map(|p| {
            let (partition, op) = op(p);
            let key = ShareKey {
                group_id: group_id.to_string(),
                topic_id,
                partition,
            };
            let refused = refused.clone();
            async move {
                let answer = match refused {
                    Some(r) => r,
                    None => ask_local(ctx, &key, op).await,
                };
                (partition, answer)
            }
        });
        out.push((topic_id, join_all(asks).await));
    }
    out
}

fn code_of(answer: &ShareResult) -> (i16, Option<String>) {
    match answer {
        Ok(_) => (0, None),
        Err((code, message)) => (*code, message.clone()),
    }
}

pub async fn initialize(
    ctx: &ShardContext,
    req: InitializeShareGroupStateRequest,
    caller: &Caller,
) -> InitializeShareGroupStateResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| (t.topic_id, t.partitions))
        .collect();
    let answers = for_each(ctx, caller, &req.group_id, topics, |p| {
        let op = ShareOp::Initialize {
            state_epoch: p.state_epoch,
            start_offset: p.start_offset,
        };
        (p.partition, op)
    })
    .await;
    InitializeShareGroupStateResponse {
        results: answers
            .into_iter()
            .map(|(topic_id, partitions)| init_resp::InitializeStateResult {
                topic_id,
                partitions: partitions
                    .into_iter()
                    .map(|(partition, answer)| {
                        let (error_code, error_message) = code_of(&answer);
                        init_resp::PartitionResult {
                            partition,
                            error_code,
                            error_message,
                        }
                    })
                    .collect(),
            })
            .collect(),
    }
}

pub async fn read(
    ctx: &ShardContext,
    req: ReadShareGroupStateRequest,
    caller: &Caller,
) -> ReadShareGroupStateResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| (t.topic_id, t.partitions))
        .collect();
    let answers = for_each(ctx, caller, &req.group_id, topics, |p| {
        let op = ShareOp::Read {
            leader_epoch: p.leader_epoch,
        };
        (p.partition, op)
    })
    .await;
    ReadShareGroupStateResponse {
        results: answers
            .into_iter()
            .map(|(topic_id, partitions)| read_resp::ReadStateResult {
                topic_id,
                partitions: partitions
                    .into_iter()
                    .map(|(partition, answer)| {
                        let (error_code, error_message) = code_of(&answer);
                        match answer {
                            Ok(ShareAnswer::State(s)) => read_resp::PartitionResult {
                                partition,
                                error_code,
                                error_message,
                                state_epoch: s.state_epoch,
                                start_offset: s.start_offset,
                                state_batches: s
                                    .batches
                                    .iter()
                                    .map(|b| read_resp::StateBatch {
                                        first_offset: b.first_offset,
                                        last_offset: b.last_offset,
                                        delivery_state: b.delivery_state,
                                        delivery_count: b.delivery_count,
                                    })
                                    .collect(),
                            },
                            // Kafka's error result: epoch 0, start offset 0, no batches.
                            _ => read_resp::PartitionResult {
                                partition,
                                error_code,
                                error_message,
                                ..Default::default()
                            },
                        }
                    })
                    .collect(),
            })
            .collect(),
    }
}

pub async fn write(
    ctx: &ShardContext,
    req: WriteShareGroupStateRequest,
    caller: &Caller,
) -> WriteShareGroupStateResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| (t.topic_id, t.partitions))
        .collect();
    let answers = for_each(ctx, caller, &req.group_id, topics, |p| {
        let op = ShareOp::Write(StateWrite {
            state_epoch: p.state_epoch,
            leader_epoch: p.leader_epoch,
            start_offset: p.start_offset,
            delivery_complete_count: p.delivery_complete_count,
            batches: p
                .state_batches
                .iter()
                .map(|b| StateBatch {
                    first_offset: b.first_offset,
                    last_offset: b.last_offset,
                    delivery_state: b.delivery_state,
                    delivery_count: b.delivery_count,
                })
                .collect(),
        });
        (p.partition, op)
    })
    .await;
    WriteShareGroupStateResponse {
        results: answers
            .into_iter()
            .map(|(topic_id, partitions)| write_resp::WriteStateResult {
                topic_id,
                partitions: partitions
                    .into_iter()
                    .map(|(partition, answer)| {
                        let (error_code, error_message) = code_of(&answer);
                        write_resp::PartitionResult {
                            partition,
                            error_code,
                            error_message,
                        }
                    })
                    .collect(),
            })
            .collect(),
    }
}

pub async fn delete(
    ctx: &ShardContext,
    req: DeleteShareGroupStateRequest,
    caller: &Caller,
) -> DeleteShareGroupStateResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| (t.topic_id, t.partitions))
        .collect();
    let answers = for_each(ctx, caller, &req.group_id, topics, |p| {
        (p.partition, ShareOp::Delete)
    })
    .await;
    DeleteShareGroupStateResponse {
        results: answers
            .into_iter()
            .map(|(topic_id, partitions)| delete_resp::DeleteStateResult {
                topic_id,
                partitions: partitions
                    .into_iter()
                    .map(|(partition, answer)| {
                        let (error_code, error_message) = code_of(&answer);
                        delete_resp::PartitionResult {
                            partition,
                            error_code,
                            error_message,
                        }
                    })
                    .collect(),
            })
            .collect(),
    }
}

pub async fn read_summary(
    ctx: &ShardContext,
    req: ReadShareGroupStateSummaryRequest,
    caller: &Caller,
) -> ReadShareGroupStateSummaryResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| (t.topic_id, t.partitions))
        .collect();
    // The leader epoch is carried but, as in Kafka, fences nothing.
    let answers = for_each(ctx, caller, &req.group_id, topics, |p| {
        (p.partition, ShareOp::Summary)
    })
    .await;
    ReadShareGroupStateSummaryResponse {
        results: answers
            .into_iter()
            .map(
                |(topic_id, partitions)| summary_resp::ReadStateSummaryResult {
                    topic_id,
                    partitions: partitions
                        .into_iter()
                        .map(|(partition, answer)| {
                            let (error_code, error_message) = code_of(&answer);
                            match answer {
                                Ok(ShareAnswer::Summary(s)) => summary_resp::PartitionResult {
                                    partition,
                                    error_code,
                                    error_message,
                                    state_epoch: s.state_epoch,
                                    leader_epoch: s.leader_epoch,
                                    start_offset: s.start_offset,
                                    delivery_complete_count: s.delivery_complete_count,
                                },
                                _ => summary_resp::PartitionResult {
                                    partition,
                                    error_code,
                                    error_message,
                                    ..Default::default()
                                },
                            }
                        })
                        .collect(),
                },
            )
            .collect(),
    }
}
