//! KIP-932's ShareGroupHeartbeat and ShareGroupDescribe, served by the group's
//! coordinator (the shard leading its `__consumer_offsets` partition), authorized as
//! Kafka does: READ on the group and DESCRIBE on the subscribed topics for the heartbeat,
//! DESCRIBE on the group for describe.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::rc::Rc;

use spate_net::messages::share_group_describe_response as describe_response;
use spate_net::messages::share_group_heartbeat_response as heartbeat_response;
use spate_net::messages::{
    ShareGroupDescribeRequest, ShareGroupDescribeResponse, ShareGroupHeartbeatRequest,
    ShareGroupHeartbeatResponse,
};
use spate_net::{ErrorCode, Uuid};

use super::groups::ask;
use super::metadata::AUTHORIZED_OPERATIONS_UNKNOWN;
use crate::group::consumer::GroupError;
use crate::group::{share, GroupRequest};
use crate::security::authorizer::acl::{Operation, ResourceType};
use crate::security::authorizer::Caller;
use crate::shard::ShardContext;

/// The share assignor's name, as Kafka describes it.
const ASSIGNOR: &str = "simple";

pub async fn heartbeat(
    ctx: &Rc<ShardContext>,
    req: ShareGroupHeartbeatRequest,
    client_id: String,
    peer: SocketAddr,
    caller: Caller,
) -> ShareGroupHeartbeatResponse {
    let failed = |e: GroupError| ShareGroupHeartbeatResponse {
        error_code: e.code.code(),
        error_message: e.message,
        ..Default::default()
    };
    if !ctx.authorized(&caller, Operation::Read, ResourceType::Group, &req.group_id) {
        return failed(GroupError::new(
            ErrorCode::GroupAuthorizationFailed,
            "Group authorization failed.",
        ));
    }
    if let Some(names) = &req.subscribed_topic_names {
        if !names
            .iter()
            .all(|t| ctx.authorized(&caller, Operation::Describe, ResourceType::Topic, t))
        {
            return failed(GroupError {
                code: ErrorCode::TopicAuthorizationFailed,
                message: None,
            });
        }
    }
    let group_id = req.group_id.clone();
    let args = match share::validate(req, client_id, format!("/{}", peer.ip())) {
        Ok(a) => a,
        Err(e) => return failed(e),
    };
    let gid = group_id.clone();
    let answer = ask(ctx, &group_id, |reply| GroupRequest::ShareHeartbeat {
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
        Ok(Ok(r)) => ShareGroupHeartbeatResponse {
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

pub async fn describe(
    ctx: &Rc<ShardContext>,
    req: ShareGroupDescribeRequest,
    caller: &Caller,
) -> ShareGroupDescribeResponse {
    let mut groups = Vec::with_capacity(req.group_ids.len());
    for group_id in req.group_ids {
        let failed = |code: ErrorCode, message: Option<String>| describe_response::DescribedGroup {
            error_code: code.code(),
            error_message: message,
            group_id: group_id.clone(),
            authorized_operations: AUTHORIZED_OPERATIONS_UNKNOWN,
            ..Default::default()
        };
        if !ctx.authorized(caller, Operation::Describe, ResourceType::Group, &group_id) {
            groups.push(failed(
                ErrorCode::GroupAuthorizationFailed,
                Some("Group authorization failed.".into()),
            ));
            continue;
        }
        let gid = group_id.clone();
        let view = ask(ctx, &group_id, |reply| GroupRequest::ShareDescribe {
            group_id: gid,
            reply,
        })
        .await;
        groups.push(match view {
            Err(code) => failed(
                ErrorCode::from_code(code).unwrap_or(ErrorCode::CoordinatorNotAvailable),
                None,
            ),
            Ok(Err(())) => failed(
                ErrorCode::GroupIdNotFound,
                Some(format!("Group {group_id} is not a share group.")),
            ),
            Ok(Ok(None)) => failed(
                ErrorCode::GroupIdNotFound,
                Some(format!("Group {group_id} not found.")),
            ),
            Ok(Ok(Some(v))) => {
                let mut topics = BTreeSet::new();
                let members: Vec<describe_response::Member> = v
                    .members
                    .iter()
                    .map(|m| {
                        topics.extend(m.subscribed_topic_names.iter().cloned());
                        describe_response::Member {
                            member_id: m.member_id.clone(),
                            rack_id: m.rack_id.clone(),
                            member_epoch: m.member_epoch,
                            client_id: m.client_id.clone(),
                            client_host: m.client_host.clone(),
                            subscribed_topic_names: m.subscribed_topic_names.clone(),
                            assignment: describe_response::Assignment {
                                topic_partitions: m
                                    .assigned
                                    .iter()
                                    .map(|(t, p)| {
                                        let name = v.topics.name_of(t).unwrap_or_default();
                                        topics.insert(name.to_string());
                                        describe_response::TopicPartitions {
                                            topic_id: Uuid(*t),
                                            topic_name: name.to_string(),
                                            partitions: p.iter().copied().collect(),
                                        }
                                    })
                                    .collect(),
                            },
                        }
                    })
                    .collect();
                // Kafka (KAFKA-18813): not described to a caller that may not DESCRIBE
                // every topic the group uses.
                if topics
                    .iter()
                    .any(|t| !ctx.authorized(caller, Operation::Describe, ResourceType::Topic, t))
                {
                    failed(
                        ErrorCode::TopicAuthorizationFailed,
                        Some("The described group uses topics that the client is not authorized to describe.".into()),
                    )
                } else {
                    describe_response::DescribedGroup {
                        group_id: group_id.clone(),
                        group_state: v.state.to_string(),
                        group_epoch: v.group_epoch,
                        assignment_epoch: v.assignment_epoch,
                        assignor_name: ASSIGNOR.to_string(),
                        members,
                        authorized_operations: ctx.authorized_operations(
                            req.include_authorized_operations,
                            caller,
                            ResourceType::Group,
                            &group_id,
                        ),
                        ..Default::default()
                    }
                }
            }
        });
    }
    ShareGroupDescribeResponse {
        groups,
        ..Default::default()
    }
}
