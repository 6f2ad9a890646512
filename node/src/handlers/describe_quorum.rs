//! DescribeQuorum: the metadata log's quorum, as `kafka-metadata-quorum.sh describe`
//! shows it. Any broker answers: the request goes to the active controller (forwarded
//! when this node's is not), as a Kafka broker forwards it.

use std::rc::Rc;

use spate_net::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use spate_net::messages::{DescribeQuorumRequest, DescribeQuorumResponse};
use spate_net::{ErrorCode, Uuid};

use crate::controller::{ControllerReply, ControllerRequest};
use crate::metadata::quorum_view::{QuorumView, ReplicaView};
use crate::shard::ShardContext;

/// The metadata log's topic and its one partition.
const METADATA_TOPIC: &str = "__cluster_metadata";
/// The controllers' listener name in `nodes` (v2).
const CONTROLLER_LISTENER: &str = "CONTROLLER";

/// The answer to a caller without DESCRIBE on the cluster (Kafka's top-level error).
pub fn cluster_denied() -> DescribeQuorumResponse {
    DescribeQuorumResponse {
        error_code: ErrorCode::ClusterAuthorizationFailed.code(),
        error_message: Some("Cluster authorization failed.".into()),
        ..Default::default()
    }
}

pub async fn handle(ctx: &Rc<ShardContext>, req: DescribeQuorumRequest) -> DescribeQuorumResponse {
    let asks_metadata_log = req.topics.len() == 1
        && req.topics[0].topic_name == METADATA_TOPIC
        && req.topics[0].partitions.len() == 1
        && req.topics[0].partitions[0].partition_index == 0;
    if !asks_metadata_log {
        // Kafka answers every asked partition UNKNOWN_TOPIC_OR_PARTITION.
        return DescribeQuorumResponse {
            topics: req
                .topics
                .into_iter()
                .map(|t| TopicData {
                    topic_name: t.topic_name,
                    partitions: t
                        .partitions
                        .into_iter()
                        .map(|p| {
                            partition_error(p.partition_index, ErrorCode::UnknownTopicOrPartition)
                        })
                        .collect(),
                })
                .collect(),
            ..Default::default()
        };
    }
    let partition = match ctx.controller(ControllerRequest::DescribeQuorum).await {
        Some(ControllerReply::Quorum(Ok(view))) => partition_data(&view),
        // Only NOT_LEADER_OR_FOLLOWER comes back (no active controller reachable).
        _ => partition_error(0, ErrorCode::NotLeaderOrFollower),
    };
    DescribeQuorumResponse {
        topics: vec![TopicData {
            topic_name: METADATA_TOPIC.into(),
            partitions: vec![partition],
        }],
        nodes: voter_nodes(ctx),
        ..Default::default()
    }
}

fn partition_error(index: i32, code: ErrorCode) -> PartitionData {
    // Kafka's messages for the two errors answered here.
    let message = match code {
        ErrorCode::UnknownTopicOrPartition => "This server does not host this topic-partition.",
        _ => "For requests intended only for the leader, this error indicates that the broker is not the current leader. For requests intended for any replica, this error indicates that the broker is not a replica of the topic partition.",
    };
    PartitionData {
        partition_index: index,
        error_code: code.code(),
        error_message: Some(message.into()),
        ..Default::default()
    }
}

fn replica(r: &ReplicaView) -> ReplicaState {
    ReplicaState {
        replica_id: r.id,
        replica_directory_id: Uuid::ZERO,
        log_end_offset: r.log_end_offset,
        last_fetch_timestamp: r.last_fetch_ms,
        last_caught_up_timestamp: r.last_caught_up_ms,
    }
}

fn partition_data(view: &QuorumView) -> PartitionData {
    PartitionData {
        partition_index: 0,
        leader_id: view.leader_id,
        leader_epoch: view.leader_epoch,
        high_watermark: view.high_watermark,
        current_voters: view.voters.iter().map(replica).collect(),
        observers: view.observers.iter().map(replica).collect(),
        ..Default::default()
    }
}

/// The voters' controller endpoints (v2's `nodes`), from `controller_quorum_voters`.
fn voter_nodes(ctx: &ShardContext) -> Vec<Node> {
    let Ok(Some(voters)) = ctx.config.voters() else {
        return Vec::new();
    };
    voters
        .into_iter()
        .filter_map(|(id, addr)| {
            let (host, port) = addr.rsplit_once(':')?;
            Some(Node {
                node_id: i32::try_from(id).ok()?,
                listeners: vec![Listener {
                    name: CONTROLLER_LISTENER.into(),
                    host: host.to_string(),
                    port: port.parse().ok()?,
                }],
            })
        })
        .collect()
}
