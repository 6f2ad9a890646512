//! DescribeShareGroupOffsets, AlterShareGroupOffsets and DeleteShareGroupOffsets
//! (KIP-932): a share group's start offsets are its share-partitions' state, read,
//! (re)initialized and deleted through the persister; the group coordinator records which
//! share-partitions have state and refuses changes while the group has members.
//! Authorized as Kafka does: DESCRIBE on the group and topics to describe, READ on both
//! to alter, DELETE on the group and READ on the topics to delete.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;

use spate_net::messages::alter_share_group_offsets_response::{
    AlterShareGroupOffsetsResponsePartition, AlterShareGroupOffsetsResponseTopic,
};
use spate_net::messages::delete_share_group_offsets_response::DeleteShareGroupOffsetsResponseTopic;
use spate_net::messages::describe_share_group_offsets_response::{
    DescribeShareGroupOffsetsResponseGroup, DescribeShareGroupOffsetsResponsePartition,
    DescribeShareGroupOffsetsResponseTopic,
};
use spate_net::messages::{
    AlterShareGroupOffsetsRequest, AlterShareGroupOffsetsResponse, DeleteShareGroupOffsetsRequest,
    DeleteShareGroupOffsetsResponse, DescribeShareGroupOffsetsRequest,
    DescribeShareGroupOffsetsResponse,
};
use spate_net::{ErrorCode, Uuid};

use super::groups::ask;
use crate::group::consumer::member::TopicId;
use crate::group::consumer::GroupError;
use crate::group::share::group::{InitRequest, TopicPartitions};
use crate::group::GroupRequest;
use crate::mesh::{PartitionKey, PartitionOp, PartitionReply};
use crate::route;
use crate::security::authorizer::acl::{Operation, ResourceType};
use crate::security::authorizer::Caller;
use crate::shard::ShardContext;
use crate::share::persister::{self, ShareKey};

/// The messages Kafka's errors carry by default.
const GROUP_DENIED: &str = "Group authorization failed.";
const TOPIC_DENIED: &str = "Topic authorization failed.";
const UNKNOWN_TOPIC: &str = "This server does not host this topic-partition.";

fn coordinator_error(code: i16) -> GroupError {
    GroupError {
        code: ErrorCode::from_code(code).unwrap_or(ErrorCode::CoordinatorNotAvailable),
        message: None,
    }
}

fn share_key(group_id: &str, topic: TopicId, partition: i32) -> ShareKey {
    ShareKey {
        group_id: group_id.to_string(),
        topic_id: Uuid(topic),
        partition,
    }
}

/// The partitions' latest offsets (high watermarks, as Kafka's coordinator reads them
/// with a read-uncommitted ListOffsets), or None where they could not be read.
async fn latest_offsets(ctx: &Rc<ShardContext>, partitions: &[(String, i32)]) -> Vec<Option<i64>> {
    let ops = partitions
        .iter()
        .map(|(t, p)| {
            (
                PartitionKey {
                    topic: Arc::from(t.as_str()),
                    partition: *p,
                },
                PartitionOp::ListOffset {
                    timestamp: -1,
                    read_committed: false,
                    current_leader_epoch: -1,
                },
            )
        })
        .collect();
    route::run(ctx, ops)
        .await
        .into_iter()
        .map(|r| match r {
            PartitionReply::Offset { offset, .. } => Some(offset),
            _ => None,
        })
        .collect()
}

/// The lag Kafka 4.4 reports (v1): the latest offset less the start offset and the
/// records already delivered, when all three are known; else -1.
fn lag(latest: Option<i64>, start: i64, delivery_complete: i32) -> i64 {
    match latest {
        Some(end) if start >= 0 && delivery_complete >= 0 => {
            end - start - i64::from(delivery_complete)
        }
        _ => -1,
    }
}

pub async fn describe(
    ctx: &Rc<ShardContext>,
    req: DescribeShareGroupOffsetsRequest,
    caller: &Caller,
) -> DescribeShareGroupOffsetsResponse {
    let mut groups = Vec::with_capacity(req.groups.len());
    for g in req.groups {
        let failed = |e: GroupError| DescribeShareGroupOffsetsResponseGroup {
            group_id: g.group_id.clone(),
            error_code: e.code.code(),
            error_message: e.message,
            ..Default::default()
        };
        if !ctx.authorized(
            caller,
            Operation::Describe,
            ResourceType::Group,
            &g.group_id,
        ) {
            groups.push(failed(GroupError::new(
                ErrorCode::GroupAuthorizationFailed,
                GROUP_DENIED,
            )));
            continue;
        }
        // (name, id, partitions) to read; topics answered without reading.
        let mut wanted: Vec<(String, TopicId, Vec<i32>)> = Vec::new();
        let mut answered = Vec::new();
        match g.topics {
            None => {
                let gid = g.group_id.clone();
                match ask(ctx, &g.group_id, |reply| {
                    GroupRequest::ShareStatePartitions {
                        group_id: gid,
                        reply,
                    }
                })
                .await
                {
                    Err(code) => {
                        groups.push(failed(coordinator_error(code)));
                        continue;
                    }
                    Ok(Err(e)) => {
                        groups.push(failed(e));
                        continue;
                    }
                    Ok(Ok(state)) => {
                        for (id, (name, ps)) in state {
                            wanted.push((name, id, ps.into_iter().collect()));
                        }
                    }
                }
            }
            Some(topics) => {
                let image = ctx.image();
                let denied = ctx.denied_topics(
                    caller,
                    Operation::Describe,
                    topics.iter().map(|t| t.topic_name.as_str()),
                );
                for t in topics {
                    let refused =
                        |code: ErrorCode, message: &str| DescribeShareGroupOffsetsResponseTopic {
                            topic_name: t.topic_name.clone(),
                            partitions: t
                                .partitions
                                .iter()
                                .map(|p| DescribeShareGroupOffsetsResponsePartition {
                                    partition_index: *p,
                                    start_offset: -1,
                                    leader_epoch: -1,
                                    lag: -1,
                                    error_code: code.code(),
                                    error_message: Some(message.to_string()),
                                })
                                .collect(),
                            ..Default::default()
                        };
                    if denied.contains(&t.topic_name) {
                        answered.push(refused(ErrorCode::TopicAuthorizationFailed, TOPIC_DENIED));
                    } else if let Some(topic) = image.topic(&t.topic_name) {
                        wanted.push((t.topic_name.clone(), topic.id, t.partitions.clone()));
                    } else {
                        // Kafka 4.4 answers an unknown topic as one without state: no
                        // start offset, leader epoch 0, no lag, no error.
                        answered.push(DescribeShareGroupOffsetsResponseTopic {
                            topic_name: t.topic_name.clone(),
                            partitions: t
                                .partitions
                                .iter()
                                .map(|p| DescribeShareGroupOffsetsResponsePartition {
                                    partition_index: *p,
                                    start_offset: -1,
                                    leader_epoch: 0,
                                    lag: -1,
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        });
                    }
                }
            }
        }
        let flat: Vec<(String, i32)> = wanted
            .iter()
            .flat_map(|(n, _, ps)| ps.iter().map(move |p| (n.clone(), *p)))
            .collect();
        let mut ends = latest_offsets(ctx, &flat).await.into_iter();
        let mut topics = Vec::new();
        for (name, id, partitions) in wanted {
            let mut out = Vec::with_capacity(partitions.len());
            for p in partitions {
                let end = ends.next().flatten();
                let key = share_key(&g.group_id, id, p);
                out.push(match persister::read_summary(ctx, &key, -1).await {
                    Ok(s) => DescribeShareGroupOffsetsResponsePartition {
                        partition_index: p,
                        start_offset: s.start_offset,
                        leader_epoch: s.leader_epoch,
                        lag: lag(end, s.start_offset, s.delivery_complete_count),
                        ..Default::default()
                    },
                    Err((code, message)) => DescribeShareGroupOffsetsResponsePartition {
                        partition_index: p,
                        start_offset: -1,
                        leader_epoch: -1,
                        lag: -1,
                        error_code: code,
                        error_message: message,
                    },
                });
            }
            topics.push(DescribeShareGroupOffsetsResponseTopic {
                topic_name: name,
                topic_id: Uuid(id),
                partitions: out,
            });
        }
        topics.extend(answered);
        groups.push(DescribeShareGroupOffsetsResponseGroup {
            group_id: g.group_id,
            topics,
            ..Default::default()
        });
    }
    DescribeShareGroupOffsetsResponse {
        groups,
        ..Default::default()
    }
}

pub async fn alter(
    ctx: &Rc<ShardContext>,
    req: AlterShareGroupOffsetsRequest,
    caller: &Caller,
) -> AlterShareGroupOffsetsResponse {
    let failed = |e: GroupError| AlterShareGroupOffsetsResponse {
        error_code: e.code.code(),
        error_message: e.message,
        ..Default::default()
    };
    if !ctx.authorized(caller, Operation::Read, ResourceType::Group, &req.group_id) {
        return failed(GroupError::new(
            ErrorCode::GroupAuthorizationFailed,
            GROUP_DENIED,
        ));
    }
    let image = ctx.image();
    let denied = ctx.denied_topics(
        caller,
        Operation::Read,
        req.topics.iter().map(|t| t.topic_name.as_str()),
    );
    let mut responses = Vec::new();
    // topic id → (name, partitions) to initialize, and their start offsets.
    let mut valid = TopicPartitions::new();
    let mut offsets: BTreeMap<(TopicId, i32), i64> = BTreeMap::new();
    for t in &req.topics {
        let topic = image.topic(&t.topic_name);
        let mut out = AlterShareGroupOffsetsResponseTopic {
            topic_name: t.topic_name.clone(),
            topic_id: Uuid(topic.map_or([0; 16], |x| x.id)),
            partitions: Vec::new(),
        };
        for p in &t.partitions {
            let code = match topic {
                _ if denied.contains(&t.topic_name) => {
                    Some((ErrorCode::TopicAuthorizationFailed, TOPIC_DENIED))
                }
                Some(x)
                    if p.partition_index >= 0
                        && (p.partition_index as usize) < x.partitions.len() =>
                {
                    None
                }
                _ => Some((ErrorCode::UnknownTopicOrPartition, UNKNOWN_TOPIC)),
            };
            match (code, topic) {
                (None, Some(x)) => {
                    valid
                        .entry(x.id)
                        .or_insert_with(|| (t.topic_name.clone(), BTreeSet::new()))
                        .1
                        .insert(p.partition_index);
                    offsets.insert((x.id, p.partition_index), p.start_offset);
                    out.partitions
                        .push(AlterShareGroupOffsetsResponsePartition {
                            partition_index: p.partition_index,
                            ..Default::default()
                        });
                }
                (code, _) => {
                    let (code, message) =
                        code.unwrap_or((ErrorCode::UnknownTopicOrPartition, UNKNOWN_TOPIC));
                    out.partitions
                        .push(AlterShareGroupOffsetsResponsePartition {
                            partition_index: p.partition_index,
                            error_code: code.code(),
                            error_message: Some(message.to_string()),
                        });
                }
            }
        }
        responses.push(out);
    }
    let gid = req.group_id.clone();
    let topics = valid.clone();
    let epoch = match ask(ctx, &req.group_id, |reply| {
        GroupRequest::ShareAlterOffsets {
            group_id: gid,
            topics,
            reply,
        }
    })
    .await
    {
        Err(code) => return failed(coordinator_error(code)),
        Ok(Err(e)) => return failed(e),
        Ok(Ok(epoch)) => epoch,
    };
    let mut done = InitRequest::new();
    for ((topic, p), start) in offsets {
        let result =
            persister::initialize(ctx, &share_key(&req.group_id, topic, p), epoch, start).await;
        let slot = responses
            .iter_mut()
            .filter(|r| r.topic_id.0 == topic)
            .flat_map(|r| r.partitions.iter_mut())
            .find(|x| x.partition_index == p && x.error_code == 0);
        match result {
            Ok(()) => {
                done.entry(topic)
                    .or_insert_with(|| (BTreeSet::new(), start))
                    .0
                    .insert(p);
            }
            Err((code, message)) => {
                if let Some(slot) = slot {
                    slot.error_code = code;
                    slot.error_message = message;
                }
            }
        }
    }
    if !done.is_empty() {
        let gid = req.group_id.clone();
        // What failed stays initializing; a member's heartbeat asks again later.
        let _ = ask(ctx, &req.group_id, |reply| GroupRequest::ShareStateDone {
            group_id: gid,
            initialized: done,
            deleted: BTreeSet::new(),
            reply,
        })
        .await;
    }
    AlterShareGroupOffsetsResponse {
        responses,
        ..Default::default()
    }
}

pub async fn delete(
    ctx: &Rc<ShardContext>,
    req: DeleteShareGroupOffsetsRequest,
    caller: &Caller,
) -> DeleteShareGroupOffsetsResponse {
    let failed = |e: GroupError| DeleteShareGroupOffsetsResponse {
        error_code: e.code.code(),
        error_message: e.message,
        ..Default::default()
    };
    if !ctx.authorized(
        caller,
        Operation::Delete,
        ResourceType::Group,
        &req.group_id,
    ) {
        return failed(GroupError::new(
            ErrorCode::GroupAuthorizationFailed,
            GROUP_DENIED,
        ));
    }
    let image = ctx.image();
    let denied = ctx.denied_topics(
        caller,
        Operation::Read,
        req.topics.iter().map(|t| t.topic_name.as_str()),
    );
    let mut responses = Vec::new();
    let mut ids: BTreeMap<TopicId, String> = BTreeMap::new();
    for t in &req.topics {
        let refused = |code: ErrorCode, message: &str| DeleteShareGroupOffsetsResponseTopic {
            topic_name: t.topic_name.clone(),
            error_code: code.code(),
            error_message: Some(message.to_string()),
            ..Default::default()
        };
        if denied.contains(&t.topic_name) {
            responses.push(refused(ErrorCode::TopicAuthorizationFailed, TOPIC_DENIED));
        } else if let Some(x) = image.topic(&t.topic_name) {
            ids.insert(x.id, t.topic_name.clone());
        } else {
            responses.push(refused(ErrorCode::UnknownTopicOrPartition, UNKNOWN_TOPIC));
        }
    }
    let gid = req.group_id.clone();
    let topics = ids.keys().copied().collect();
    let doomed = match ask(ctx, &req.group_id, |reply| {
        GroupRequest::ShareDeleteOffsets {
            group_id: gid,
            topics,
            reply,
        }
    })
    .await
    {
        Err(code) => return failed(coordinator_error(code)),
        Ok(Err(e)) => return failed(e),
        Ok(Ok(doomed)) => doomed,
    };
    let mut deleted = BTreeSet::new();
    for (id, name) in ids {
        let Some((_, partitions)) = doomed.get(&id) else {
            // No share state for this topic.
            responses.push(DeleteShareGroupOffsetsResponseTopic {
                topic_name: name,
                topic_id: Uuid(id),
                error_code: ErrorCode::UnknownTopicOrPartition.code(),
                error_message: Some(UNKNOWN_TOPIC.to_string()),
            });
            continue;
        };
        let mut error = None;
        for p in partitions {
            if let Err(e) = persister::delete(ctx, &share_key(&req.group_id, id, *p)).await {
                error = Some(e);
                break;
            }
        }
        if error.is_none() {
            deleted.insert(id);
        }
        let (code, message) = error.unwrap_or((0, None));
        responses.push(DeleteShareGroupOffsetsResponseTopic {
            topic_name: name,
            topic_id: Uuid(id),
            error_code: code,
            error_message: message,
        });
    }
    if !deleted.is_empty() {
        let gid = req.group_id.clone();
        // Topics whose deletion failed stay deleting.
        let _ = ask(ctx, &req.group_id, |reply| GroupRequest::ShareStateDone {
            group_id: gid,
            initialized: InitRequest::new(),
            deleted,
            reply,
        })
        .await;
    }
    DeleteShareGroupOffsetsResponse {
        responses,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::lag;

    #[test]
    fn lag_as_kafka_computes_it() {
        assert_eq!(lag(Some(100), 40, 10), 50);
        assert_eq!(lag(Some(100), -1, 10), -1);
        assert_eq!(lag(Some(100), 40, -1), -1);
        assert_eq!(lag(None, 40, 0), -1);
    }
}
