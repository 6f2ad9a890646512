//! AlterPartitionReassignments and ListPartitionReassignments
//! (`kafka-reassign-partitions.sh`, AdminClient `alterPartitionReassignments` /
//! `listPartitionReassignments`). Reassignments are made by the active controller
//! (forwarded there from any broker, as a Kafka broker forwards them) and answered
//! once this broker's image shows them; the list is read from this broker's image.
//! ALTER (to change) and DESCRIBE (to list) on the cluster are required, as Kafka's
//! controller requires them.

use std::rc::Rc;

use spate_net::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use spate_net::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use spate_net::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
};
use spate_net::ErrorCode;

use super::acls::CLUSTER_DENIED;
use crate::controller::{ControllerReply, ControllerRequest};
use crate::metadata::reassignment::{self, ReassignmentRequest};
use crate::security::authorizer::acl::Operation;
use crate::security::authorizer::Caller;
use crate::shard::ShardContext;

pub async fn alter(
    ctx: &Rc<ShardContext>,
    req: AlterPartitionReassignmentsRequest,
    caller: &Caller,
) -> AlterPartitionReassignmentsResponse {
    if !ctx.authorized_on_cluster(caller, Operation::Alter) {
        return refused(&req, ErrorCode::ClusterAuthorizationFailed, CLUSTER_DENIED);
    }
    let request = ReassignmentRequest {
        topics: req
            .topics
            .iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| (p.partition_index, p.replicas.clone()))
                    .collect();
                (t.name.clone(), partitions)
            })
            .collect(),
    };
    match ctx
        .controller(ControllerRequest::AlterReassignments(request))
        .await
    {
        Some(ControllerReply::AlterReassignments(Ok(results))) => {
            AlterPartitionReassignmentsResponse {
                responses: results
                    .into_iter()
                    .map(|(name, partitions)| ReassignableTopicResponse {
                        name,
                        partitions: partitions
                            .into_iter()
                            .map(|(partition_index, error_code, error_message)| {
                                ReassignablePartitionResponse {
                                    partition_index,
                                    error_code,
                                    error_message,
                                }
                            })
                            .collect(),
                    })
                    .collect(),
                ..Default::default()
            }
        }
        Some(ControllerReply::AlterReassignments(Err(code))) => {
            let code = ErrorCode::from_code(code).unwrap_or(ErrorCode::UnknownServerError);
            refused(&req, code, &message(code))
        }
        _ => refused(
            &req,
            ErrorCode::NotController,
            &message(ErrorCode::NotController),
        ),
    }
}

/// The message of an error of the whole request.
fn message(code: ErrorCode) -> String {
    match code {
        ErrorCode::NotController => "This is not the correct controller for this cluster.".into(),
        other => format!("The reassignment failed: {}", other.name()),
    }
}

/// Kafka's error response: the error at the top and on every named partition.
fn refused(
    req: &AlterPartitionReassignmentsRequest,
    code: ErrorCode,
    message: &str,
) -> AlterPartitionReassignmentsResponse {
    AlterPartitionReassignmentsResponse {
        error_code: code.code(),
        error_message: Some(message.to_string()),
        responses: req
            .topics
            .iter()
            .map(|t| ReassignableTopicResponse {
                name: t.name.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| ReassignablePartitionResponse {
                        partition_index: p.partition_index,
                        error_code: code.code(),
                        error_message: Some(message.to_string()),
                    })
                    .collect(),
            })
            .collect(),
        ..Default::default()
    }
}

pub fn list(
    ctx: &ShardContext,
    req: &ListPartitionReassignmentsRequest,
    caller: &Caller,
) -> ListPartitionReassignmentsResponse {
    if !ctx.authorized_on_cluster(caller, Operation::Describe) {
        // Kafka's error response names each asked partition, with nothing else.
        let topics = req
            .topics
            .iter()
            .flatten()
            .map(|t| OngoingTopicReassignment {
                name: t.name.clone(),
                partitions: t
                    .partition_indexes
                    .iter()
                    .map(|&partition_index| OngoingPartitionReassignment {
                        partition_index,
                        ..Default::default()
                    })
                    .collect(),
            });
        return ListPartitionReassignmentsResponse {
            error_code: ErrorCode::ClusterAuthorizationFailed.code(),
            error_message: Some(CLUSTER_DENIED.to_string()),
            topics: topics.collect(),
            ..Default::default()
        };
    }
    let named: Option<Vec<(String, Vec<i32>)>> = req.topics.as_ref().map(|topics| {
        topics
            .iter()
            .map(|t| (t.name.clone(), t.partition_indexes.clone()))
            .collect()
    });
    let image = ctx.image();
    ListPartitionReassignmentsResponse {
        topics: reassignment::ongoing(&image, named.as_deref())
            .into_iter()
            .map(|(name, partitions)| OngoingTopicReassignment {
                name,
                partitions: partitions
                    .into_iter()
                    .map(|o| OngoingPartitionReassignment {
                        partition_index: o.partition,
                        replicas: o.replicas,
                        adding_replicas: o.adding,
                        removing_replicas: o.removing,
                    })
                    .collect(),
            })
            .collect(),
        ..Default::default()
    }
}
