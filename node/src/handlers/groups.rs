//! Consumer-group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, DescribeGroups, ListGroups, DeleteGroups, OffsetDelete, and
//! KIP-848's ConsumerGroupHeartbeat and ConsumerGroupDescribe.
//! Each request goes to the shard owning the group's `__consumer_offsets` partition.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::rc::Rc;

use spate_net::messages::consumer_group_describe_response as describe_response;
use spate_net::messages::consumer_group_heartbeat_response as heartbeat_response;
use spate_net::messages::delete_groups_response::DeletableGroupResult;
use spate_net::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use spate_net::messages::find_coordinator_response::Coordinator as CoordinatorEntry;
use spate_net::messages::leave_group_response::MemberResponse;
use spate_net::messages::list_groups_response::ListedGroup;
use spate_net::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use spate_net::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use spate_net::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use spate_net::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use spate_net::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse,
};
use spate_net::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest,
    OffsetDeleteResponse, OffsetFetchRequest, OffsetFetchResponse, SyncGroupRequest,
    SyncGroupResponse,
};
use spate_net::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use spate_net::{ErrorCode, Uuid};

use super::metadata::AUTHORIZED_OPERATIONS_UNKNOWN;
use crate::group::consumer::{self, member::Assignment, GroupError, HeartbeatArgs};
use crate::group::{partition_for, GroupRequest, JoinArgs, OFFSETS_TOPIC};
use crate::mesh::ShardMsg;
use crate::security::authorizer::acl::{Operation, ResourceType};
use crate::security::authorizer::Caller;
use crate::security::Listener;
use crate::shard::ShardContext;

/// FindCoordinator key types.
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;
/// FindCoordinator v4 batches keys; LeaveGroup v3 batches members; OffsetFetch v8 groups.
const BATCHED_KEYS_FROM: i16 = 4;
const BATCHED_MEMBERS_FROM: i16 = 3;
const BATCHED_GROUPS_FROM: i16 = 8;

/// The `__consumer_offsets` partition of `group_id`.
fn group_partition(ctx: &ShardContext, group_id: &str) -> Option<i32> {
    let count = ctx.image().topic(OFFSETS_TOPIC)?.partitions.len() as i32;
    Some(partition_for(group_id, count))
}

/// The shard coordinating `group_id`, when this broker is its coordinator (leads its
/// `__consumer_offsets` partition).
fn coordinator_shard(ctx: &ShardContext, group_id: &str) -> Option<usize> {
    ctx.leading_shard(OFFSETS_TOPIC, group_partition(ctx, group_id)?)
}

/// Send a request to the group's coordinator and wait for its answer; the error code
/// when this broker is not the coordinator: NOT_COORDINATOR when a live broker is
/// (the client looks it up again), COORDINATOR_NOT_AVAILABLE when none is.
pub(super) async fn ask<T>(
    ctx: &ShardContext,
    group_id: &str,
    make: impl FnOnce(flume::Sender<T>) -> GroupRequest,
) -> Result<T, i16> {
    let Some(shard) = coordinator_shard(ctx, group_id) else {
        let led_elsewhere = group_partition(ctx, group_id)
            .and_then(|p| ctx.live_leader_elsewhere(OFFSETS_TOPIC, p))
            .is_some();
        return Err(if led_elsewhere {
            ErrorCode::NotCoordinator.code()
        } else {
            NOT_AVAILABLE
        });
    };
    let (tx, rx) = flume::bounded(1);
    let (refused, refusal) = flume::bounded(1);
    ctx.senders[shard]
        .send_async(ShardMsg::Group {
            request: make(tx),
            refused,
        })
        .await
        .map_err(|_| NOT_AVAILABLE)?;
    // A refused request is dropped after its code was sent.
    rx.recv_async()
        .await
        .map_err(|_| refusal.try_recv().unwrap_or(NOT_AVAILABLE))
}

const NOT_AVAILABLE: i16 = ErrorCode::CoordinatorNotAvailable as i16;

pub fn find_coordinator(
    ctx: &Rc<ShardContext>,
    req: FindCoordinatorRequest,
    version: i16,
    listener: &Listener,
    caller: &Caller,
) -> FindCoordinatorResponse {
    let (host, port) = listener.advertised.clone();
    let node = ctx.config.node_id;
    let image = ctx.image();
    let entry = |key: String| {
        // Kafka: DESCRIBE on the group or transactional id, checked before anything else
        // (no internal topic is created for a caller that may not).
        let denied = match req.key_type {
            KEY_TYPE_GROUP => {
                (!ctx.authorized(caller, Operation::Describe, ResourceType::Group, &key))
                    .then_some(ErrorCode::GroupAuthorizationFailed)
            }
            KEY_TYPE_TRANSACTION => (!ctx.authorized(
                caller,
                Operation::Describe,
                ResourceType::TransactionalId,
                &key,
            ))
            .then_some(ErrorCode::TransactionalIdAuthorizationFailed),
            _ => None,
        };
        if let Some(error) = denied {
            return CoordinatorEntry {
                key,
                node_id: -1,
                host: String::new(),
                port: -1,
                error_code: error.code(),
                error_message: Some(
                    match error {
                        ErrorCode::GroupAuthorizationFailed => "Group authorization failed.",
                        _ => "Transactional Id authorization failed.",
                    }
                    .to_string(),
                ),
            };
        }
        // The coordinator is the leader of the key's internal partition, if it is live.
        let partition = match req.key_type {
            KEY_TYPE_GROUP => group_partition(ctx, &key).map(|p| (OFFSETS_TOPIC, p)),
            KEY_TYPE_TRANSACTION => crate::txn::coordinator::state_partition(ctx, &key)
                .map(|p| (crate::txn::TXN_STATE_TOPIC, p)),
            _ => None,
        };
        if partition.is_none() && matches!(req.key_type, KEY_TYPE_GROUP | KEY_TYPE_TRANSACTION) {
            let topic = if req.key_type == KEY_TYPE_GROUP {
                OFFSETS_TOPIC
            } else {
                crate::txn::TXN_STATE_TOPIC
            };
            crate::internal_topics::create_on_first_use(ctx, topic);
        }
        let coordinator = partition
            .and_then(|(topic, p)| image.partition(topic, p))
            .and_then(|info| {
                if info.leader == node {
                    Some((node, host.clone(), port))
                } else {
                    super::metadata::endpoint(&image, info.leader, listener)
                        .map(|(h, p)| (info.leader, h, p))
                }
            });
        let (error_code, error_message) =
            if !matches!(req.key_type, KEY_TYPE_GROUP | KEY_TYPE_TRANSACTION) {
                (
                    ErrorCode::InvalidRequest.code(),
                    Some(format!("Unknown coordinator type {}", req.key_type)),
                )
            } else if coordinator.is_none() {
                (
                    NOT_AVAILABLE,
                    Some("The coordinator is not available.".to_string()),
                )
            } else {
                (0, None)
            };
        // Kafka's answer without a coordinator: node -1, empty host, port -1.
        let (node_id, host, port) = coordinator.unwrap_or((-1, String::new(), -1));
        CoordinatorEntry {
            key,
            node_id,
            host,
            port,
            error_code,
            error_message,
        }
    };
    if version >= BATCHED_KEYS_FROM {
        FindCoordinatorResponse {
            coordinators: req.coordinator_keys.iter().cloned().map(entry).collect(),
            ..Default::default()
        }
    } else {
        let e = entry(req.key.clone());
        FindCoordinatorResponse {
            error_code: e.error_code,
            error_message: e.error_message,
            node_id: e.node_id,
            host: e.host,
            port: e.port,
            ..Default::default()
        }
    }
}

pub async fn join_group(
    ctx: &Rc<ShardContext>,
    req: JoinGroupRequest,
    version: i16,
    client_id: String,
    peer: SocketAddr,
) -> JoinGroupResponse {
    if req.group_id.is_empty() {
        return JoinGroupResponse {
            error_code: ErrorCode::InvalidGroupId.code(),
            generation_id: -1,
            member_id: req.member_id,
            ..Default::default()
        };
    }
    let member_id = req.member_id.clone();
    let args = JoinArgs {
        member_id: req.member_id,
        group_instance_id: req.group_instance_id,
        client_id,
        client_host: format!("/{}", peer.ip()),
        session_timeout_ms: req.session_timeout_ms,
        // Version 0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if version == 0 {
            req.session_timeout_ms
        } else {
            req.rebalance_timeout_ms
        },
        protocol_type: req.protocol_type,
        protocols: req
            .protocols
            .into_iter()
            .map(|p| (p.name, p.metadata))
            .collect(),
        version,
    };
    let group_id = req.group_id;
    match ask(ctx, &group_id.clone(), |reply| GroupRequest::Join {
        group_id,
        args,
        reply,
    })
    .await
    {
        Ok(resp) => resp,
        Err(code) => JoinGroupResponse {
            error_code: code,
            generation_id: -1,
            member_id,
            ..Default::default()
        },
    }
}

pub async fn sync_group(ctx: &Rc<ShardContext>, req: SyncGroupRequest) -> SyncGroupResponse {
    let group_id = req.group_id.clone();
    let reply = ask(ctx, &group_id, |reply| GroupRequest::Sync {
        group_id: req.group_id,
        member_id: req.member_id,
        instance_id: req.group_instance_id,
        generation: req.generation_id,
        protocol_type: req.protocol_type,
        protocol_name: req.protocol_name,
        assignments: req
            .assignments
            .into_iter()
            .map(|a| (a.member_id, a.assignment))
            .collect(),
        reply,
    })
    .await;
    reply.unwrap_or_else(|code| SyncGroupResponse {
        error_code: code,
        ..Default::default()
    })
}

pub async fn heartbeat(ctx: &Rc<ShardContext>, req: HeartbeatRequest) -> HeartbeatResponse {
    let group_id = req.group_id.clone();
    let code = ask(ctx, &group_id, |reply| GroupRequest::Heartbeat {
        group_id: req.group_id,
        member_id: req.member_id,
        instance_id: req.group_instance_id,
        generation: req.generation_id,
        reply,
    })
    .await;
    HeartbeatResponse {
        error_code: code.unwrap_or_else(|code| code),
        ..Default::default()
    }
}

pub async fn leave_group(
    ctx: &Rc<ShardContext>,
    req: LeaveGroupRequest,
    version: i16,
) -> LeaveGroupResponse {
    let members: Vec<(String, Option<String>)> = if version >= BATCHED_MEMBERS_FROM {
        req.members
            .iter()
            .map(|m| (m.member_id.clone(), m.group_instance_id.clone()))
            .collect()
    } else {
        vec![(req.member_id.clone(), None)]
    };
    let group_id = req.group_id.clone();
    let asked = members.clone();
    let codes = ask(ctx, &group_id, |reply| GroupRequest::Leave {
        group_id: req.group_id,
        members: asked,
        reply,
    })
    .await;
    let codes = match codes {
        Ok(codes) => codes,
        Err(code) => {
            return LeaveGroupResponse {
                error_code: code,
                ..Default::default()
            }
        }
    };
    if version >= BATCHED_MEMBERS_FROM {
        LeaveGroupResponse {
            members: members
                .into_iter()
                .zip(codes)
                .map(
                    |((member_id, group_instance_id), error_code)| MemberResponse {
                        member_id,
                        group_instance_id,
                        error_code,
                    },
                )
                .collect(),
            ..Default::default()
        }
    } else {
        LeaveGroupResponse {
            error_code: codes.first().copied().unwrap_or(0),
            ..Default::default()
        }
    }
}

pub async fn offset_commit(
    ctx: &Rc<ShardContext>,
    req: OffsetCommitRequest,
    version: i16,
    caller: &Caller,
) -> OffsetCommitResponse {
    // Kafka: READ on the group (else every partition fails), then READ on each topic.
    let group_denied = !ctx.authorized(caller, Operation::Read, ResourceType::Group, &req.group_id);
    let denied = if group_denied {
        Default::default()
    } else {
        ctx.denied_topics(
            caller,
            Operation::Read,
            req.topics.iter().map(|t| t.name.as_str()),
        )
    };
    let entries: Vec<_> = req
        .topics
        .iter()
        .filter(|t| !group_denied && !denied.contains(&t.name))
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.clone(),
                    p.partition_index,
                    p.committed_offset,
                    p.committed_leader_epoch,
                    p.committed_metadata.clone(),
                )
            })
        })
        .collect();
    let group_id = req.group_id.clone();
    let codes = if group_denied || (entries.is_empty() && !denied.is_empty()) {
        Ok(Vec::new())
    } else {
        ask(ctx, &group_id, |reply| GroupRequest::Commit {
            group_id: req.group_id.clone(),
            generation: req.generation_id_or_member_epoch,
            member_id: req.member_id.clone(),
            instance_id: req.group_instance_id.clone(),
            version,
            entries,
            reply,
        })
        .await
    };
    // Without the coordinator, every partition gets the same error.
    let missing = codes.as_ref().err().copied().unwrap_or(NOT_AVAILABLE);
    let mut codes = codes.unwrap_or_default().into_iter();
    OffsetCommitResponse {
        topics: req
            .topics
            .iter()
            .map(|t| OffsetCommitResponseTopic {
                name: t.name.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| OffsetCommitResponsePartition {
                        partition_index: p.partition_index,
                        error_code: if group_denied {
                            ErrorCode::GroupAuthorizationFailed.code()
                        } else if denied.contains(&t.name) {
                            ErrorCode::TopicAuthorizationFailed.code()
                        } else {
                            codes.next().unwrap_or(missing)
                        },
                    })
                    .collect(),
            })
            .collect(),
        ..Default::default()
    }
}

/// One group's committed offsets as (topic, [(partition, offset, epoch, metadata, error)]).
type FetchedTopics = Vec<(String, Vec<(i32, i64, i32, String, i16)>)>;

async fn fetch_group(
    ctx: &ShardContext,
    group_id: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
    member: Option<(String, i32)>,
) -> Result<FetchedTopics, i16> {
    let partitions = topics.as_ref().map(|ts| {
        ts.iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
            .collect()
    });
    let gid = group_id.to_string();
    let fetched = ask(ctx, group_id, |reply| GroupRequest::Fetch {
        group_id: gid,
        partitions,
        require_stable,
        member,
        reply,
    })
    .await??;
    let mut out: FetchedTopics = Vec::new();
    for (topic, partition, committed) in fetched {
        let row = match committed {
            Ok(Some(c)) => (partition, c.offset, c.leader_epoch, c.metadata, 0),
            Ok(None) => (partition, -1, -1, String::new(), 0),
            Err(code) => (partition, -1, -1, String::new(), code),
        };
        match out.last_mut() {
            Some((t, rows)) if *t == topic => rows.push(row),
            _ => out.push((topic, vec![row])),
        }
    }
    Ok(out)
}

/// [`fetch_group`] with Kafka's checks: DESCRIBE on the group, and on each topic (a
/// named topic the caller may not describe fails its partitions with
/// TOPIC_AUTHORIZATION_FAILED; a listing of every topic leaves it out).
async fn fetch_group_authorized(
    ctx: &ShardContext,
    caller: &Caller,
    group_id: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
    member: Option<(String, i32)>,
) -> Result<FetchedTopics, i16> {
    if ctx.authorizer.is_none() {
        return fetch_group(ctx, group_id, topics, require_stable, member).await;
    }
    if !ctx.authorized(caller, Operation::Describe, ResourceType::Group, group_id) {
        return Err(ErrorCode::GroupAuthorizationFailed.code());
    }
    let Some(topics) = topics else {
        let mut all = fetch_group(ctx, group_id, None, require_stable, member).await?;
        let denied = ctx.denied_topics(
            caller,
            Operation::Describe,
            all.iter().map(|(t, _)| t.as_str()),
        );
        all.retain(|(t, _)| !denied.contains(t));
        return Ok(all);
    };
    let denied = ctx.denied_topics(
        caller,
        Operation::Describe,
        topics.iter().map(|(t, _)| t.as_str()),
    );
    let (refused, allowed): (Vec<_>, Vec<_>) =
        topics.into_iter().partition(|(t, _)| denied.contains(t));
    let mut out = fetch_group(ctx, group_id, Some(allowed), require_stable, member).await?;
    for (topic, partitions) in refused {
        let code = ErrorCode::TopicAuthorizationFailed.code();
        let rows = partitions
            .into_iter()
            .map(|p| (p, -1, -1, String::new(), code))
            .collect();
        out.push((topic, rows));
    }
    Ok(out)
}

pub async fn offset_fetch(
    ctx: &Rc<ShardContext>,
    req: OffsetFetchRequest,
    version: i16,
    caller: &Caller,
) -> OffsetFetchResponse {
    if version >= BATCHED_GROUPS_FROM {
        let mut groups = Vec::with_capacity(req.groups.len());
        for g in req.groups {
            let topics = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name, t.partition_indexes))
                    .collect()
            });
            // OffsetFetch v9+: a consumer-group member fetches at its member epoch
            // (-1 and no member id: not a member).
            let member = g
                .member_id
                .filter(|m| !m.is_empty() || g.member_epoch >= 0)
                .map(|m| (m, g.member_epoch));
            let (topics, error_code) = match fetch_group_authorized(
                ctx,
                caller,
                &g.group_id,
                topics,
                req.require_stable,
                member,
            )
            .await
            {
                Ok(t) => (t, 0),
                Err(code) => (Vec::new(), code),
            };
            groups.push(OffsetFetchResponseGroup {
                group_id: g.group_id,
                topics: topics
                    .into_iter()
                    .map(|(name, rows)| OffsetFetchResponseTopics {
                        name,
                        partitions: rows
                            .into_iter()
                            .map(
                                |(
                                    partition_index,
                                    committed_offset,
                                    committed_leader_epoch,
                                    metadata,
                                    error_code,
                                )| OffsetFetchResponsePartitions {
                                    partition_index,
                                    committed_offset,
                                    committed_leader_epoch,
                                    metadata: Some(metadata),
                                    error_code,
                                },
                            )
                            .collect(),
                    })
                    .collect(),
                error_code,
            });
        }
        return OffsetFetchResponse {
            groups,
            ..Default::default()
        };
    }
    let topics = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect()
    });
    match fetch_group_authorized(ctx, caller, &req.group_id, topics, req.require_stable, None).await
    {
        Ok(topics) => OffsetFetchResponse {
            topics: topics
                .into_iter()
                .map(|(name, rows)| OffsetFetchResponseTopic {
                    name,
                    partitions: rows
                        .into_iter()
                        .map(
                            |(
                                partition_index,
                                committed_offset,
                                committed_leader_epoch,
                                metadata,
                                error_code,
                            )| OffsetFetchResponsePartition {
                                partition_index,
                                committed_offset,
                                committed_leader_epoch,
                                metadata: Some(metadata),
                                error_code,
                            },
                        )
                        .collect(),
                })
                .collect(),
            ..Default::default()
        },
        Err(code) => OffsetFetchResponse {
            error_code: code,
            ..Default::default()
        },
    }
}

pub async fn describe_groups(
    ctx: &Rc<ShardContext>,
    req: DescribeGroupsRequest,
    caller: &Caller,
) -> DescribeGroupsResponse {
    let mut groups = Vec::with_capacity(req.groups.len());
    for group_id in req.groups {
        // Kafka: DESCRIBE on each group.
        if !ctx.authorized(caller, Operation::Describe, ResourceType::Group, &group_id) {
            groups.push(DescribedGroup {
                error_code: ErrorCode::GroupAuthorizationFailed.code(),
                group_id,
                authorized_operations: AUTHORIZED_OPERATIONS_UNKNOWN,
                ..Default::default()
            });
            continue;
        }
        let gid = group_id.clone();
        let described = match ask(ctx, &group_id, |reply| GroupRequest::Describe {
            group_id: gid,
            reply,
        })
        .await
        {
            Ok(d) => DescribedGroup {
                error_code: 0,
                group_id: d.group_id,
                group_state: d.state.to_string(),
                protocol_type: d.protocol_type,
                protocol_data: d.protocol,
                members: d
                    .members
                    .into_iter()
                    .map(
                        |(
                            member_id,
                            group_instance_id,
                            client_id,
                            client_host,
                            member_metadata,
                            member_assignment,
                        )| DescribedGroupMember {
                            member_id,
                            group_instance_id,
                            client_id,
                            client_host,
                            member_metadata,
                            member_assignment,
                        },
                    )
                    .collect(),
                authorized_operations: ctx.authorized_operations(
                    req.include_authorized_operations,
                    caller,
                    ResourceType::Group,
                    &group_id,
                ),
            },
            Err(code) => DescribedGroup {
                error_code: code,
                group_id,
                authorized_operations: AUTHORIZED_OPERATIONS_UNKNOWN,
                ..Default::default()
            },
        };
        groups.push(described);
    }
    DescribeGroupsResponse {
        groups,
        ..Default::default()
    }
}

pub async fn list_groups(
    ctx: &Rc<ShardContext>,
    req: ListGroupsRequest,
    caller: &Caller,
) -> ListGroupsResponse {
    // Kafka: DESCRIBE on the cluster lists every group; else the groups the caller may
    // DESCRIBE (quietly).
    let every_group = ctx.authorizer.is_none()
        || ctx.may_see(
            caller,
            Operation::Describe,
            ResourceType::Cluster,
            crate::security::authorizer::acl::CLUSTER_NAME,
        );
    let mut waits = Vec::with_capacity(ctx.shard_count);
    for sender in &ctx.senders {
        let (tx, rx) = flume::bounded(1);
        if sender
            .send_async(ShardMsg::Group {
                request: GroupRequest::List { reply: tx },
                // A listing is never refused.
                refused: flume::bounded(1).0,
            })
            .await
            .is_ok()
        {
            waits.push(rx);
        }
    }
    let states: Vec<String> = req
        .states_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let types: Vec<String> = req
        .types_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let mut groups = Vec::new();
    let mut error_code = 0;
    for rx in waits {
        let listing = match rx.recv_async().await {
            Ok(Ok(listing)) => listing,
            Ok(Err(code)) => {
                error_code = code;
                Vec::new()
            }
            // The shard stops.
            Err(_) => Vec::new(),
        };
        for g in listing {
            if !states.is_empty() && !states.contains(&g.state.to_ascii_lowercase()) {
                continue;
            }
            if !types.is_empty() && !types.iter().any(|t| t == g.group_type) {
                continue;
            }
            if !every_group
                && !ctx.may_see(
                    caller,
                    Operation::Describe,
                    ResourceType::Group,
                    &g.group_id,
                )
            {
                continue;
            }
            groups.push(ListedGroup {
                group_id: g.group_id,
                protocol_type: g.protocol_type,
                group_state: g.state.to_string(),
                group_type: g.group_type.into(),
            });
        }
    }
    if error_code != 0 {
        groups.clear();
    }
    groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    ListGroupsResponse {
        error_code,
        groups,
        ..Default::default()
    }
}

pub async fn delete_groups(
    ctx: &Rc<ShardContext>,
    req: DeleteGroupsRequest,
    caller: &Caller,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for group_id in req.groups_names {
        // Kafka: DELETE on each group.
        if !ctx.authorized(caller, Operation::Delete, ResourceType::Group, &group_id) {
            results.push(DeletableGroupResult {
                group_id,
                error_code: ErrorCode::GroupAuthorizationFailed.code(),
            });
            continue;
        }
        let gid = group_id.clone();
        let code = ask(ctx, &group_id, |reply| GroupRequest::Delete {
            group_id: gid,
            reply,
        })
        .await
        .unwrap_or_else(|code| code);
        results.push(DeletableGroupResult {
            group_id,
            error_code: code,
        });
    }
    DeleteGroupsResponse {
        results,
        ..Default::default()
    }
}

pub async fn offset_delete(
    ctx: &Rc<ShardContext>,
    req: OffsetDeleteRequest,
    caller: &Caller,
) -> OffsetDeleteResponse {
    // Kafka: DELETE on the group, then READ on each topic.
    if !ctx.authorized(
        caller,
        Operation::Delete,
        ResourceType::Group,
        &req.group_id,
    ) {
        return OffsetDeleteResponse {
            error_code: ErrorCode::GroupAuthorizationFailed.code(),
            ..Default::default()
        };
    }
    let denied = ctx.denied_topics(
        caller,
        Operation::Read,
        req.topics.iter().map(|t| t.name.as_str()),
    );
    let image = ctx.image();
    let known = |t: &str, p: i32| {
        image
            .topic(t)
            .is_some_and(|x| p >= 0 && (p as usize) < x.partitions.len())
    };
    let partitions: Vec<(String, i32)> = req
        .topics
        .iter()
        .filter(|t| !denied.contains(&t.name))
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|p| known(&t.name, p.partition_index))
                .map(move |p| (t.name.clone(), p.partition_index))
        })
        .collect();
    let gid = req.group_id.clone();
    let result = ask(ctx, &req.group_id, |reply| GroupRequest::DeleteOffsets {
        group_id: gid,
        partitions,
        reply,
    })
    .await
    .unwrap_or_else(Err);
    let codes = match result {
        Ok(codes) => codes,
        Err(code) => {
            return OffsetDeleteResponse {
                error_code: code,
                ..Default::default()
            }
        }
    };
    let mut codes = codes.into_iter();
    OffsetDeleteResponse {
        topics: req
            .topics
            .iter()
            .map(|t| OffsetDeleteResponseTopic {
                name: t.name.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| OffsetDeleteResponsePartition {
                        partition_index: p.partition_index,
                        error_code: if denied.contains(&t.name) {
                            ErrorCode::TopicAuthorizationFailed.code()
                        } else if known(&t.name, p.partition_index) {
                            codes.next().unwrap_or(0)
                        } else {
                            ErrorCode::UnknownTopicOrPartition.code()
                        },
                    })
                    .collect(),
            })
            .collect(),
        ..Default::default()
    }
}

/// TxnOffsetCommit: offsets a transactional producer commits for a group; they become
/// visible to the group when the transaction commits.
pub async fn txn_offset_commit(
    ctx: &Rc<ShardContext>,
    req: TxnOffsetCommitRequest,
    version: i16,
    caller: &Caller,
) -> TxnOffsetCommitResponse {
    // Kafka: WRITE on the transactional id, READ on the group (else every partition
    // fails), then READ on each topic.
    let whole = if !ctx.authorized(
        caller,
        Operation::Write,
        ResourceType::TransactionalId,
        &req.transactional_id,
    ) {
        Some(ErrorCode::TransactionalIdAuthorizationFailed.code())
    } else if !ctx.authorized(caller, Operation::Read, ResourceType::Group, &req.group_id) {
        Some(ErrorCode::GroupAuthorizationFailed.code())
    } else {
        None
    };
    // v6+ names topics by id; an unknown id fails its partitions alone.
    let names: Vec<Option<String>> = {
        let image = ctx.image();
        req.topics
            .iter()
            .map(|t| {
                if version >= TXN_COMMIT_TOPIC_IDS_FROM {
                    image.topic_by_id(&t.topic_id.0).map(|x| x.name.clone())
                } else {
                    Some(t.name.clone())
                }
            })
            .collect()
    };
    let denied = match whole {
        Some(_) => Default::default(),
        None => ctx.denied_topics(
            caller,
            Operation::Read,
            names.iter().flatten().map(|n| n.as_str()),
        ),
    };
    let entries: Vec<_> = req
        .topics
        .iter()
        .zip(&names)
        .filter_map(|(t, name)| Some((t, name.clone()?)))
        .filter(|(_, name)| !denied.contains(name))
        .flat_map(|(t, name)| {
            t.partitions.iter().map(move |p| {
                (
                    name.clone(),
                    p.partition_index,
                    p.committed_offset,
                    p.committed_leader_epoch,
                    p.committed_metadata.clone(),
                )
            })
        })
        .collect();
    let verified = match whole {
        Some(code) => code,
        None => verify_offsets_partition(ctx, &req, version).await,
    };
    let codes = match verified {
        0 => {
            ask(ctx, &req.group_id, |reply| GroupRequest::TxnCommit {
                group_id: req.group_id.clone(),
                producer_id: req.producer_id,
                producer_epoch: req.producer_epoch,
                generation: req.generation_id_or_member_epoch,
                member_id: req.member_id.clone(),
                instance_id: req.group_instance_id.clone(),
                entries,
                reply,
            })
            .await
        }
        code => Ok(vec![code; entries.len()]),
    };
    // Before v3 (KIP-447) clients do not know the member errors they may get now.
    let convert = |code: i16| {
        if version < 3
            && (code == ErrorCode::UnknownMemberId.code()
                || code == ErrorCode::IllegalGeneration.code()
                || code == ErrorCode::FencedInstanceId.code())
        {
            ErrorCode::UnknownServerError.code()
        } else {
            code
        }
    };
    let missing = codes.as_ref().err().copied().unwrap_or(NOT_AVAILABLE);
    let mut codes = codes.unwrap_or_default().into_iter();
    TxnOffsetCommitResponse {
        topics: req
            .topics
            .iter()
            .zip(&names)
            .map(|(t, name)| TxnOffsetCommitResponseTopic {
                name: t.name.clone(),
                topic_id: t.topic_id,
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| TxnOffsetCommitResponsePartition {
                        partition_index: p.partition_index,
                        error_code: match name {
                            _ if whole.is_some() => whole.unwrap_or_default(),
                            Some(n) if denied.contains(n) => {
                                ErrorCode::TopicAuthorizationFailed.code()
                            }
                            None => ErrorCode::UnknownTopicId.code(),
                            Some(_) => convert(codes.next().unwrap_or(missing)),
                        },
                    })
                    .collect(),
            })
            .collect(),
        ..Default::default()
    }
}

/// TxnOffsetCommit from this version on names topics by id.
const TXN_COMMIT_TOPIC_IDS_FROM: i16 = 6;
/// TxnOffsetCommit from this version on is transaction version 2: the group's offsets
/// partition joins the transaction here, without AddOffsetsToTxn (KIP-890 part 2).
const TXN_COMMIT_TV2_FROM: i16 = 5;

/// KIP-890 for transactional offsets: the group's `__consumer_offsets` partition must be
/// in the producer's transaction (version 1: verified; version 2: added). Coordinator
/// errors come back as the group coordinator reports them (Kafka's
/// GroupCoordinatorService): retriable ones as COORDINATOR_NOT_AVAILABLE.
async fn verify_offsets_partition(
    ctx: &Rc<ShardContext>,
    req: &TxnOffsetCommitRequest,
    version: i16,
) -> i16 {
    let partitions = match ctx.image().topic(OFFSETS_TOPIC) {
        Some(t) => partition_for(&req.group_id, t.partitions.len() as i32),
        None => return NOT_AVAILABLE,
    };
    let code = crate::txn::client::verify_or_add(
        ctx,
        &req.transactional_id,
        req.producer_id,
        req.producer_epoch,
        vec![(OFFSETS_TOPIC.to_string(), partitions)],
        version >= TXN_COMMIT_TV2_FROM,
    )
    .await;
    match code {
        0 => 0,
        c if c == ErrorCode::ProducerFenced.code() => ErrorCode::InvalidProducerEpoch.code(),
        // Before v4 clients do not know TRANSACTION_ABORTABLE.
        c if c == ErrorCode::TransactionAbortable.code() && version < 4 => {
            ErrorCode::InvalidTxnState.code()
        }
        c if crate::txn::client::RETRIABLE_VERIFICATION_ERRORS
            .iter()
            .any(|e| e.code() == c) =>
        {
            NOT_AVAILABLE
        }
        c => c,
    }
}

/// ConsumerGroupDescribe's MemberType (v1+) of a consumer-protocol member, and of a
/// member using the classic protocol (KIP-848's migration).
const MEMBER_TYPE_CONSUMER: i8 = 1;
const MEMBER_TYPE_CLASSIC: i8 = 0;

pub async fn consumer_group_heartbeat(
    ctx: &Rc<ShardContext>,
    req: ConsumerGroupHeartbeatRequest,
    version: i16,
    client_id: String,
    peer: SocketAddr,
    caller: Caller,
) -> ConsumerGroupHeartbeatResponse {
    let failed = |e: GroupError| ConsumerGroupHeartbeatResponse {
        error_code: e.code.code(),
        error_message: e.message,
        ..Default::default()
    };
    let group_id = req.group_id.clone();
    let settings = crate::group::Coordinator::consumer_settings(ctx);
    let args = match consumer::validate(
        req,
        version,
        &settings.assignors,
        client_id,
        format!("/{}", peer.ip()),
    ) {
        Ok(a) => HeartbeatArgs {
            caller: Some(caller),
            ..a
        },
        Err(e) => return failed(e),
    };
    let gid = group_id.clone();
    let answer = ask(ctx, &group_id, |reply| GroupRequest::ConsumerHeartbeat {
        group_id: gid,
        args: Box::new(args),
        reply,
    })
    .await;
    match answer {
        Err(code) => failed(GroupError {
            code: ErrorCode::from_code(code).unwrap_or(ErrorCode::CoordinatorNotAvailable),
            message: None,
        }),
        Ok(Err(e)) => failed(e),
        Ok(Ok(r)) => ConsumerGroupHeartbeatResponse {
            member_id: Some(r.member_id),
            member_epoch: r.member_epoch,
            heartbeat_interval_ms: r.heartbeat_interval_ms,
            assignment: r.assignment.map(|a| heartbeat_response::Assignment {
                topic_partitions: a
                    .into_iter()
                    .map(|(t, p)| heartbeat_response::TopicPartitions {
                        topic_id: Uuid(t),
                        partitions: p.into_iter().collect(),
                    })
                    .collect(),
            }),
            ..Default::default()
        },
    }
}

/// Kafka (KAFKA-18813): a group is not described to a caller that may not DESCRIBE
/// every topic its members subscribe to or are assigned.
fn uses_hidden_topics(
    ctx: &ShardContext,
    caller: &Caller,
    group: &describe_response::DescribedGroup,
) -> bool {
    let mut topics = BTreeSet::new();
    for m in &group.members {
        topics.extend(m.subscribed_topic_names.iter().map(String::as_str));
        for a in [&m.assignment, &m.target_assignment] {
            topics.extend(a.topic_partitions.iter().map(|t| t.topic_name.as_str()));
        }
    }
    topics
        .into_iter()
        .any(|t| !ctx.authorized(caller, Operation::Describe, ResourceType::Topic, t))
}

pub async fn consumer_group_describe(
    ctx: &Rc<ShardContext>,
    req: ConsumerGroupDescribeRequest,
    caller: &Caller,
) -> ConsumerGroupDescribeResponse {
    let mut groups = Vec::with_capacity(req.group_ids.len());
    for group_id in req.group_ids {
        // Kafka: DESCRIBE on each group.
        if !ctx.authorized(caller, Operation::Describe, ResourceType::Group, &group_id) {
            groups.push(describe_response::DescribedGroup {
                error_code: ErrorCode::GroupAuthorizationFailed.code(),
                error_message: Some("Group authorization failed.".into()),
                group_id,
                authorized_operations: AUTHORIZED_OPERATIONS_UNKNOWN,
                ..Default::default()
            });
            continue;
        }
        let gid = group_id.clone();
        let view = ask(ctx, &group_id, |reply| GroupRequest::ConsumerDescribe {
            group_id: gid,
            reply,
        })
        .await;
        let failed = |code: ErrorCode, message: String| describe_response::DescribedGroup {
            error_code: code.code(),
            error_message: Some(message),
            group_id: group_id.clone(),
            authorized_operations: AUTHORIZED_OPERATIONS_UNKNOWN,
            ..Default::default()
        };
        groups.push(match view {
            Err(code) => describe_response::DescribedGroup {
                error_code: code,
                group_id: group_id.clone(),
                authorized_operations: AUTHORIZED_OPERATIONS_UNKNOWN,
                ..Default::default()
            },
            Ok(Err(())) => failed(
                ErrorCode::GroupIdNotFound,
                format!("Group {group_id} is not a consumer group."),
            ),
            Ok(Ok(None)) => failed(
                ErrorCode::GroupIdNotFound,
                format!("Group {group_id} not found."),
            ),
            Ok(Ok(Some(v))) => {
                let assignment = |a: &Assignment| describe_response::Assignment {
                    topic_partitions: a
                        .iter()
                        .map(|(t, p)| describe_response::TopicPartitions {
                            topic_id: Uuid(*t),
                            topic_name: v.topics.name_of(t).unwrap_or_default().to_string(),
                            partitions: p.iter().copied().collect(),
                        })
                        .collect(),
                };
                let described = describe_response::DescribedGroup {
                    group_id: group_id.clone(),
                    group_state: v.state.to_string(),
                    group_epoch: v.group_epoch,
                    assignment_epoch: v.assignment_epoch,
                    assignor_name: v.assignor.to_string(),
                    members: v
                        .members
                        .iter()
                        .map(|(m, target)| describe_response::Member {
                            member_id: m.member_id.clone(),
                            instance_id: m.instance_id.clone(),
                            rack_id: m.rack_id.clone(),
                            member_epoch: m.member_epoch,
                            client_id: m.client_id.clone(),
                            client_host: m.client_host.clone(),
                            subscribed_topic_names: m.subscribed_topic_names.clone(),
                            subscribed_topic_regex: m.subscribed_topic_regex.clone(),
                            assignment: assignment(&m.assigned),
                            target_assignment: assignment(target),
                            member_type: if m.classic.is_some() {
                                MEMBER_TYPE_CLASSIC
                            } else {
                                MEMBER_TYPE_CONSUMER
                            },
                        })
                        .collect(),
                    authorized_operations: ctx.authorized_operations(
                        req.include_authorized_operations,
                        caller,
                        ResourceType::Group,
                        &group_id,
                    ),
                    ..Default::default()
                };
                if uses_hidden_topics(ctx, caller, &described) {
                    failed(
                        ErrorCode::TopicAuthorizationFailed,
                        "The described group uses topics that the client is not authorized to describe.".into(),
                    )
                } else {
                    described
                }
            }
        });
    }
    ConsumerGroupDescribeResponse {
        groups,
        ..Default::default()
    }
}
