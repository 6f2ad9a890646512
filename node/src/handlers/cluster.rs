//! DescribeCluster and DescribeLogDirs.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use spate_net::messages::describe_cluster_response::DescribeClusterBroker;
use spate_net::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use spate_net::messages::{
    DescribeClusterRequest, DescribeClusterResponse, DescribeLogDirsRequest,
    DescribeLogDirsResponse,
};
use spate_net::ErrorCode;

use crate::mesh::{PartitionKey, PartitionOp, PartitionReply};
use crate::route;
use crate::security::authorizer::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::security::authorizer::Caller;
use crate::security::Listener;
use crate::shard::ShardContext;

/// DescribeCluster v1 `EndpointType`: 1 brokers, 2 controllers.
const ENDPOINT_BROKERS: i8 = 1;

pub fn describe_cluster(
    ctx: &ShardContext,
    req: DescribeClusterRequest,
    listener: &Listener,
    caller: &Caller,
) -> DescribeClusterResponse {
    let mut resp = DescribeClusterResponse {
        endpoint_type: req.endpoint_type,
        cluster_id: ctx.config.cluster_id.clone(),
        controller_id: ctx.config.node_id,
        brokers: super::metadata::live_brokers(ctx, &ctx.image(), listener)
            .into_iter()
            .map(|(broker_id, host, port, rack)| DescribeClusterBroker {
                broker_id,
                host,
                port,
                rack,
            })
            .collect(),
        // KIP-430: only for a caller that may DESCRIBE the cluster (else 0), as Kafka.
        cluster_authorized_operations: if req.include_cluster_authorized_operations
            && ctx.authorizer.is_some()
            && !ctx.authorized_on_cluster(caller, Operation::Describe)
        {
            0
        } else {
            ctx.authorized_operations(
                req.include_cluster_authorized_operations,
                caller,
                ResourceType::Cluster,
                CLUSTER_NAME,
            )
        },
        ..Default::default()
    };
    if req.endpoint_type != ENDPOINT_BROKERS {
        // As a Kafka broker does: controller endpoints are asked of controllers.
        resp.error_code = ErrorCode::MismatchedEndpointType.code();
        resp.error_message = Some("The request was sent to an endpoint of type BROKER, but we wanted an endpoint of type CONTROLLER".into());
        resp.brokers.clear();
    }
    resp
}

pub async fn describe_log_dirs(
    ctx: &Rc<ShardContext>,
    req: DescribeLogDirsRequest,
    caller: &Caller,
) -> DescribeLogDirsResponse {
    // Kafka: DESCRIBE on the cluster.
    if !ctx.authorized_on_cluster(caller, Operation::Describe) {
        return DescribeLogDirsResponse {
            error_code: ErrorCode::ClusterAuthorizationFailed.code(),
            ..Default::default()
        };
    }
    let image = ctx.image();
    // The partitions to report: all, or the requested ones that exist.
    let mut wanted: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    match &req.topics {
        None => {
            for t in image.topics.values() {
                wanted.insert(t.name.clone(), (0..t.partitions.len() as i32).collect());
            }
        }
        Some(list) => {
            for t in list {
                if let Some(topic) = image.topic(&t.topic) {
                    let parts = t
                        .partitions
                        .iter()
                        .copied()
                        .filter(|p| *p >= 0 && (*p as usize) < topic.partitions.len());
                    wanted.entry(t.topic.clone()).or_default().extend(parts);
                }
            }
        }
    }
    let ops: Vec<(PartitionKey, PartitionOp)> = wanted
        .iter()
        .flat_map(|(name, parts)| {
            let topic: Arc<str> = Arc::from(name.as_str());
            parts.iter().map(move |p| {
                (
                    PartitionKey {
                        topic: topic.clone(),
                        partition: *p,
                    },
                    PartitionOp::Describe,
                )
            })
        })
        .collect();
    let mut replies = route::run(ctx, ops).await.into_iter();
    // Each described partition under the log dir that holds it.
    let dirs = ctx.log_dirs.list();
    let mut by_dir: Vec<BTreeMap<String, Vec<DescribeLogDirsPartition>>> =
        vec![BTreeMap::new(); dirs.len()];
    for (name, parts) in wanted {
        for p in parts {
            let Some(PartitionReply::Described { size_bytes, future }) = replies.next() else {
                continue;
            };
            // A move in flight: its copy, in the destination (Kafka's IsFutureKey).
            if let Some(f) = future {
                by_dir[f.dir]
                    .entry(name.clone())
                    .or_default()
                    .push(DescribeLogDirsPartition {
                        partition_index: p,
                        partition_size: f.size_bytes as i64,
                        offset_lag: f.offset_lag,
                        is_future_key: true,
                    });
            }
            let Some(index) = ctx.log_dirs.dir_of(&name, p) else {
                continue;
            };
            by_dir[index]
                .entry(name.clone())
                .or_default()
                .push(DescribeLogDirsPartition {
                    partition_index: p,
                    partition_size: size_bytes as i64,
                    offset_lag: 0,
                    is_future_key: false,
                });
        }
    }
    let results = dirs
        .into_iter()
        .zip(by_dir)
        .map(|(dir, topics)| {
            let path = std::fs::canonicalize(&dir.path).unwrap_or(dir.path);
            if dir.failure.is_some() {
                // As Kafka reports an offline log dir: the error, nothing else.
                return DescribeLogDirsResult {
                    error_code: ErrorCode::KafkaStorageError.code(),
                    log_dir: path.display().to_string(),
                    topics: Vec::new(),
                    total_bytes: -1,
                    usable_bytes: -1,
                };
            }
            let (total_bytes, usable_bytes) = disk_space(&path).unwrap_or((-1, -1));
            DescribeLogDirsResult {
                error_code: 0,
                log_dir: path.display().to_string(),
                topics: topics
                    .into_iter()
                    .map(|(name, partitions)| DescribeLogDirsTopic { name, partitions })
                    .collect(),
                total_bytes,
                usable_bytes,
            }
        })
        .collect();
    DescribeLogDirsResponse {
        results,
        ..Default::default()
    }
}

/// Total and available bytes of the filesystem holding `dir`.
fn disk_space(dir: &std::path::Path) -> Option<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills a plain struct for a valid C string path.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut st) != 0 {
            return None;
        }
        let frsize = st.f_frsize as i64;
        Some((st.f_blocks as i64 * frsize, st.f_bavail as i64 * frsize))
    }
}
