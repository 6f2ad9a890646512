//! AlterReplicaLogDirs: move partitions between this broker's log dirs (`log_move.rs`
//! does the moving, on each partition's owner shard). Answered at once, as Kafka does:
//! the move runs after the answer, and DescribeLogDirs shows its future replica.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use spate_net::messages::alter_replica_log_dirs_response::{
    AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
};
use spate_net::messages::{AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse};
use spate_net::ErrorCode;

use crate::mesh::{PartitionKey, PartitionOp};
use crate::route;
use crate::security::authorizer::acl::Operation;
use crate::security::authorizer::Caller;
use crate::shard::ShardContext;

pub async fn handle(
    ctx: &Rc<ShardContext>,
    req: AlterReplicaLogDirsRequest,
    caller: &Caller,
) -> AlterReplicaLogDirsResponse {
    // Kafka: ALTER on the cluster, else every partition fails with that.
    let authorized = ctx.authorized_on_cluster(caller, Operation::Alter);
    // Each partition once, to the last directory asked for it (Kafka keeps a map).
    let mut wanted: BTreeMap<(String, i32), String> = BTreeMap::new();
    for dir in req.dirs {
        for topic in dir.topics {
            for p in topic.partitions {
                wanted.insert((topic.name.clone(), p), dir.path.clone());
            }
        }
    }
    let mut codes: Vec<i16> = Vec::with_capacity(wanted.len());
    let mut ops = Vec::new();
    // Where each op's answer goes in `codes`.
    let mut routed = Vec::new();
    for ((topic, partition), path) in &wanted {
        let code = if !authorized {
            ErrorCode::ClusterAuthorizationFailed
        } else if crate::future_dirs::future_dir_name(topic, *partition, &"0".repeat(32)).is_none()
        {
            // The future log's directory name would be too long.
            ErrorCode::InvalidTopicException
        } else {
            match ctx.log_dirs.index_of(path) {
                None => ErrorCode::LogDirNotFound,
                Some(index) if ctx.log_dirs.failure(index).is_some() => {
                    ErrorCode::KafkaStorageError
                }
                Some(dest) => {
                    routed.push(codes.len());
                    ops.push((
                        PartitionKey {
                            topic: Arc::from(topic.as_str()),
                            partition: *partition,
                        },
                        PartitionOp::AlterLogDir { dest },
                    ));
                    ErrorCode::None
                }
            }
        };
        codes.push(code.code());
    }
    let replies = route::run(ctx, ops).await;
    debug_assert_eq!(replies.len(), routed.len());
    for (pos, reply) in routed.into_iter().zip(replies) {
        let code = route::error_of(&reply);
        // A replica not on this broker: Kafka keeps REPLICA_NOT_AVAILABLE here.
        codes[pos] = if code == ErrorCode::NotLeaderOrFollower.code() {
            ErrorCode::ReplicaNotAvailable.code()
        } else {
            code
        };
    }
    let mut results: Vec<AlterReplicaLogDirTopicResult> = Vec::new();
    for (((topic, partition), _), error_code) in wanted.into_iter().zip(codes) {
        let result = AlterReplicaLogDirPartitionResult {
            partition_index: partition,
            error_code,
        };
        match results.last_mut() {
            Some(last) if last.topic_name == topic => last.partitions.push(result),
            _ => results.push(AlterReplicaLogDirTopicResult {
                topic_name: topic,
                partitions: vec![result],
            }),
        }
    }
    AlterReplicaLogDirsResponse {
        results,
        ..Default::default()
    }
}
