//! ElectLeaders (`kafka-leader-election.sh`, AdminClient `electLeaders`): preferred or
//! unclean elections, made by the active controller (forwarded there from any broker,
//! as a Kafka broker forwards it) and answered once this broker's image shows them.
//! ALTER on the cluster is required, as Kafka's controller requires it.

use std::rc::Rc;

use spate_net::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use spate_net::messages::{ElectLeadersRequest, ElectLeadersResponse};
use spate_net::ErrorCode;

use super::acls::CLUSTER_DENIED;
use crate::controller::{ControllerReply, ControllerRequest};
use crate::metadata::election::ElectionRequest;
use crate::security::authorizer::acl::Operation;
use crate::security::authorizer::Caller;
use crate::shard::ShardContext;

pub async fn handle(
    ctx: &Rc<ShardContext>,
    req: ElectLeadersRequest,
    caller: &Caller,
) -> ElectLeadersResponse {
    if !ctx.authorized_on_cluster(caller, Operation::Alter) {
        return refused(&req, ErrorCode::ClusterAuthorizationFailed, CLUSTER_DENIED);
    }
    let request = ElectionRequest {
        election_type: req.election_type,
        partitions: req.topic_partitions.as_ref().map(|topics| {
            topics
                .iter()
                .map(|t| (t.topic.clone(), t.partitions.clone()))
                .collect()
        }),
    };
    match ctx
        .controller(ControllerRequest::ElectLeaders(request))
        .await
    {
        Some(ControllerReply::ElectLeaders(Ok(results))) => ElectLeadersResponse {
            replica_election_results: results
                .into_iter()
                .map(|(topic, partitions)| ReplicaElectionResult {
                    topic,
                    partition_result: partitions
                        .into_iter()
                        .map(
                            |(partition_id, error_code, error_message)| PartitionResult {
                                partition_id,
                                error_code,
                                error_message,
                            },
                        )
                        .collect(),
                })
                .collect(),
            ..Default::default()
        },
        Some(ControllerReply::ElectLeaders(Err(code))) => {
            let code = ErrorCode::from_code(code).unwrap_or(ErrorCode::UnknownServerError);
            let why = message(code, req.election_type);
            refused(&req, code, &why)
        }
        _ => {
            let why = message(ErrorCode::NotController, req.election_type);
            refused(&req, ErrorCode::NotController, &why)
        }
    }
}

/// Kafka's messages for the errors of a whole request.
fn message(code: ErrorCode, election_type: i8) -> String {
    match code {
        ErrorCode::InvalidRequest => format!("Unknown election type {election_type}"),
        ErrorCode::NotController => "This is not the correct controller for this cluster.".into(),
        other => format!("The election failed: {}", other.name()),
    }
}

/// Kafka's error response: the error at the top and on every named partition.
fn refused(req: &ElectLeadersRequest, code: ErrorCode, message: &str) -> ElectLeadersResponse {
    ElectLeadersResponse {
        error_code: code.code(),
        replica_election_results: req
            .topic_partitions
            .iter()
            .flatten()
            .map(|t| ReplicaElectionResult {
                topic: t.topic.clone(),
                partition_result: t
                    .partitions
                    .iter()
                    .map(|&partition_id| PartitionResult {
                        partition_id,
                        error_code: code.code(),
                        error_message: Some(message.to_string()),
                    })
                    .collect(),
            })
            .collect(),
        ..Default::default()
    }
}
