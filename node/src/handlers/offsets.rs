//! ListOffsets, OffsetForLeaderEpoch and DeleteRecords: per-partition offset work done
//! by the owner shards.

use std::rc::Rc;
use std::sync::Arc;

use spate_net::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use spate_net::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use spate_net::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use spate_net::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, ListOffsetsRequest, ListOffsetsResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
};
use spate_net::ErrorCode;

use crate::mesh::{PartitionKey, PartitionOp, PartitionReply};
use crate::route;
use crate::security::authorizer::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::security::authorizer::Caller;
use crate::shard::ShardContext;

fn key(topic: &str, partition: i32) -> PartitionKey {
    PartitionKey {
        topic: Arc::from(topic),
        partition,
    }
}

pub async fn list_offsets(
    ctx: &Rc<ShardContext>,
    req: ListOffsetsRequest,
    version: i16,
    caller: &Caller,
) -> ListOffsetsResponse {
    // Kafka: DESCRIBE on each topic, else TOPIC_AUTHORIZATION_FAILED per partition.
    let denied = ctx.denied_topics(
        caller,
        Operation::Describe,
        req.topics.iter().map(|t| t.name.as_str()),
    );
    let mut ops = Vec::new();
    for t in req.topics.iter().filter(|t| !denied.contains(&t.name)) {
        for p in &t.partitions {
            ops.push((
                key(&t.name, p.partition_index),
                PartitionOp::ListOffset {
                    timestamp: p.timestamp,
                    read_committed: req.isolation_level == 1,
                    current_leader_epoch: p.current_leader_epoch,
                },
            ));
        }
    }
    let mut replies = route::run(ctx, ops).await.into_iter();
    let topics = req
        .topics
        .iter()
        .map(|t| ListOffsetsTopicResponse {
            name: t.name.clone(),
            partitions: t
                .partitions
                .iter()
                .map(|p| {
                    let mut out = ListOffsetsPartitionResponse {
                        partition_index: p.partition_index,
                        ..Default::default()
                    };
                    if denied.contains(&t.name) {
                        out.error_code = ErrorCode::TopicAuthorizationFailed.code();
                        return out;
                    }
                    match replies.next() {
                        Some(PartitionReply::Offset {
                            offset,
                            timestamp,
                            leader_epoch,
                        }) => {
                            out.offset = offset;
                            out.timestamp = timestamp;
                            out.leader_epoch = leader_epoch;
                            // Version 0 answers with a list of offsets.
                            if version == 0 && offset >= 0 {
                                out.old_style_offsets = vec![offset];
                            }
                        }
                        Some(other) => out.error_code = route::error_of(&other),
                        None => out.error_code = ErrorCode::UnknownServerError.code(),
                    }
                    out
                })
                .collect(),
        })
        .collect();
    ListOffsetsResponse {
        topics,
        ..Default::default()
    }
}

pub async fn offset_for_leader_epoch(
    ctx: &Rc<ShardContext>,
    req: OffsetForLeaderEpochRequest,
    caller: &Caller,
) -> OffsetForLeaderEpochResponse {
    // Kafka: CLUSTER_ACTION (followers) or DESCRIBE on each topic (consumers, KIP-320).
    let denied = if ctx.may_see(
        caller,
        Operation::ClusterAction,
        ResourceType::Cluster,
        CLUSTER_NAME,
    ) {
        Default::default()
    } else {
        ctx.denied_topics(
            caller,
            Operation::Describe,
            req.topics.iter().map(|t| t.topic.as_str()),
        )
    };
    let mut ops = Vec::new();
    for t in req.topics.iter().filter(|t| !denied.contains(&t.topic)) {
        for p in &t.partitions {
            ops.push((
                key(&t.topic, p.partition),
                PartitionOp::EndOffsetForEpoch {
                    current_leader_epoch: p.current_leader_epoch,
                    epoch: p.leader_epoch,
                },
            ));
        }
    }
    let mut replies = route::run(ctx, ops).await.into_iter();
    let topics = req
        .topics
        .iter()
        .map(|t| OffsetForLeaderTopicResult {
            topic: t.topic.clone(),
            partitions: t
                .partitions
                .iter()
                .map(|p| {
                    let mut out = EpochEndOffset {
                        partition: p.partition,
                        ..Default::default()
                    };
                    if denied.contains(&t.topic) {
                        out.error_code = ErrorCode::TopicAuthorizationFailed.code();
                        return out;
                    }
                    match replies.next() {
                        Some(PartitionReply::EpochEnd {
                            leader_epoch,
                            end_offset,
                        }) => {
                            out.leader_epoch = leader_epoch;
                            out.end_offset = end_offset;
                        }
                        Some(other) => out.error_code = route::error_of(&other),
                        None => out.error_code = ErrorCode::UnknownServerError.code(),
                    }
                    out
                })
                .collect(),
        })
        .collect();
    OffsetForLeaderEpochResponse {
        topics,
        ..Default::default()
    }
}

pub async fn delete_records(
    ctx: &Rc<ShardContext>,
    req: DeleteRecordsRequest,
    caller: &Caller,
) -> DeleteRecordsResponse {
    // Kafka: DELETE on each topic, else TOPIC_AUTHORIZATION_FAILED per partition.
    let denied = ctx.denied_topics(
        caller,
        Operation::Delete,
        req.topics.iter().map(|t| t.name.as_str()),
    );
    let mut ops = Vec::new();
    for t in req.topics.iter().filter(|t| !denied.contains(&t.name)) {
        for p in &t.partitions {
            ops.push((
                key(&t.name, p.partition_index),
                PartitionOp::DeleteRecords { offset: p.offset },
            ));
        }
    }
    let mut replies = route::run(ctx, ops).await.into_iter();
    let topics = req
        .topics
        .iter()
        .map(|t| DeleteRecordsTopicResult {
            name: t.name.clone(),
            partitions: t
                .partitions
                .iter()
                .map(|p| {
                    let mut out = DeleteRecordsPartitionResult {
                        partition_index: p.partition_index,
                        low_watermark: -1,
                        error_code: 0,
                    };
                    if denied.contains(&t.name) {
                        out.error_code = ErrorCode::TopicAuthorizationFailed.code();
                        return out;
                    }
                    match replies.next() {
                        Some(PartitionReply::LowWatermark(lw)) => out.low_watermark = lw,
                        Some(other) => out.error_code = route::error_of(&other),
                        None => out.error_code = ErrorCode::UnknownServerError.code(),
                    }
                    out
                })
                .collect(),
        })
        .collect();
    DeleteRecordsResponse {
        topics,
        ..Default::default()
    }
}
