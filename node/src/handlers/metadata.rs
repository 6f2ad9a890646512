//! Metadata: the single broker, and the requested topics with their partitions;
//! unknown topics are created when auto-creation is on and the client allows it.

use std::collections::HashSet;

use crate::security::authorizer::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::security::authorizer::Caller;
use std::rc::Rc;
use std::sync::Arc;

use spate_net::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use spate_net::messages::{MetadataRequest, MetadataResponse};
use spate_net::{ErrorCode, Uuid};

use crate::controller::{validate_topic_name, ControllerRequest, NewTopic};
use crate::log_dirs::LogDirs;
use crate::metadata::{MetadataImage, PartitionInfo, TopicImage};
use crate::security::Listener;
use crate::shard::ShardContext;

/// Kafka's "authorized operations not requested/available" marker.
pub const AUTHORIZED_OPERATIONS_UNKNOWN: i32 = i32::MIN;
/// Versions before 4 have no flag and always allow auto-creation.
const AUTO_CREATE_FLAG_FROM: i16 = 4;

pub async fn handle(
    ctx: &Rc<ShardContext>,
    req: MetadataRequest,
    version: i16,
    // The listener the client connected on: Kafka answers with its addresses.
    listener: Arc<Listener>,
    caller: Caller,
) -> MetadataResponse {
    // KIP-430 (v8-10): the operations the caller may do, when asked and authorizing.
    let want_topic_ops = req.include_topic_authorized_operations;
    let want_cluster_ops = req.include_cluster_authorized_operations;
    // With an authorizer, a listing shows only the topics the caller may DESCRIBE, and
    // a named topic it may not is TOPIC_AUTHORIZATION_FAILED (existing or not).
    let describable =
        |name: &str| ctx.authorized(&caller, Operation::Describe, ResourceType::Topic, name);
    // Auto-creation needs CREATE on the cluster or on the topic.
    let may_create = |name: &str| {
        ctx.may_see(
            &caller,
            Operation::Create,
            ResourceType::Cluster,
            CLUSTER_NAME,
        ) || ctx.authorized(&caller, Operation::Create, ResourceType::Topic, name)
    };
    let mut create_denied: HashSet<String> = HashSet::new();
    let client_allows = version < AUTO_CREATE_FLAG_FROM || req.allow_auto_topic_creation;
    // Version 0 has no null list: an empty list means every topic.
    let requested: Option<Vec<(Option<String>, Uuid)>> = match req.topics {
        Some(t) if !(version == 0 && t.is_empty()) => {
            Some(t.into_iter().map(|t| (t.name, t.topic_id)).collect())
        }
        _ => None,
    };

    if let Some(list) = &requested {
        if ctx.config.auto_create_topics_enable && client_allows {
            let image = ctx.image();
            let missing: Vec<NewTopic> = list
                .iter()
                .filter(|(_, id)| id.is_zero())
                .filter_map(|(name, _)| name.as_ref())
                .filter(|n| image.topic(n).is_none() && validate_topic_name(n).is_ok())
                .filter(|n| {
                    let allowed = may_create(n);
                    if !allowed {
                        create_denied.insert(n.to_string());
                    }
                    allowed
                })
                .map(|n| NewTopic {
                    name: n.clone(),
                    num_partitions: -1,
                    replication_factor: -1,
                    assignments: Vec::new(),
                    configs: Vec::new(),
                })
                .collect();
            if !missing.is_empty() {
                // Errors (e.g. a concurrent create) show up below as the topic's state.
                let _ = ctx
                    .change_topics(ControllerRequest::CreateTopics {
                        topics: missing,
                        validate_only: false,
                    })
                    .await;
            }
        }
    }

    let image = ctx.image();
    let topics = match requested {
        None => image
            .topics
            .values()
            .filter(|t| ctx.may_see(&caller, Operation::Describe, ResourceType::Topic, &t.name))
            .map(|t| {
                topic_entry(
                    &image,
                    t,
                    (ctx.config.node_id, &listener),
                    version,
                    &ctx.log_dirs,
                )
            })
            .collect(),
        Some(list) => list
            .into_iter()
            .map(|(name, id)| {
                // A topic id (v10+) wins over the name, which clients then send as null
                // or empty.
                let by_id = !id.is_zero();
                let found = if by_id {
                    image.topic_by_id(&id.0)
                } else {
                    name.as_deref().and_then(|n| image.topic(n))
                };
                let denied = match (found, &name) {
                    (Some(t), _) => !describable(&t.name),
                    (None, Some(n)) => create_denied.contains(n) || !describable(n),
                    (None, None) => false,
                };
                match found {
                    _ if denied => MetadataResponseTopic {
                        error_code: ErrorCode::TopicAuthorizationFailed.code(),
                        name: found.map(|t| t.name.clone()).or(name),
                        topic_id: id,
                        topic_authorized_operations: AUTHORIZED_OPERATIONS_UNKNOWN,
                        ..Default::default()
                    },
                    Some(t) => topic_entry(
                        &image,
                        t,
                        (ctx.config.node_id, &listener),
                        version,
                        &ctx.log_dirs,
                    ),
                    None => MetadataResponseTopic {
                        error_code: match &name {
                            _ if by_id => ErrorCode::UnknownTopicId.code(),
                            Some(n) if validate_topic_name(n).is_err() => {
                                ErrorCode::InvalidTopicException.code()
                            }
                            _ => ErrorCode::UnknownTopicOrPartition.code(),
                        },
                        name: if by_id { None } else { name },
                        topic_id: id,
                        topic_authorized_operations: AUTHORIZED_OPERATIONS_UNKNOWN,
                        ..Default::default()
                    },
                }
            })
            .collect(),
    };
    let mut topics: Vec<MetadataResponseTopic> = topics;
    if want_topic_ops && ctx.authorizer.is_some() {
        for t in topics.iter_mut().filter(|t| t.error_code == 0) {
            if let Some(name) = &t.name {
                t.topic_authorized_operations =
                    ctx.authorized_operations(true, &caller, ResourceType::Topic, name);
            }
        }
    }
    MetadataResponse {
        brokers: live_brokers(ctx, &image, &listener)
            .into_iter()
            .map(|(node_id, host, port, rack)| MetadataResponseBroker {
                node_id,
                host,
                port,
                rack,
            })
            .collect(),
        cluster_id: Some(ctx.config.cluster_id.clone()),
        controller_id: ctx.config.node_id,
        topics,
        cluster_authorized_operations: ctx.authorized_operations(
            want_cluster_ops,
            &caller,
            ResourceType::Cluster,
            CLUSTER_NAME,
        ),
        ..Default::default()
    }
}

/// A partition as Metadata and DescribeTopicPartitions report it.
pub struct Leadership {
    pub error_code: i16,
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
}

/// A partition's leader, leader epoch, replicas and ISR from the image. Without a
/// leader (its broker was fenced, or this broker's copy is in an offline log dir) it is
/// LEADER_NOT_AVAILABLE with leader -1; led by this broker on a `listener` it did not
/// register (`registered` false: one added by the dynamic `listeners`), which gives it
/// no endpoint there, LISTENER_NOT_FOUND with leader -1. `offline_replicas` are the
/// replicas on brokers that are fenced, unregistered or without the client's
/// `listener`, and this broker's in an offline dir or without it, as Kafka's KRaft
/// metadata cache reports them.
pub fn leadership(
    image: &MetadataImage,
    log_dirs: &LogDirs,
    topic: &str,
    partition: i32,
    info: &PartitionInfo,
    (node, listener, registered): (i32, &str, bool),
) -> Leadership {
    let dir_offline = info.is_replica(node) && log_dirs.is_offline(topic, partition);
    let offline_here = dir_offline || (info.is_replica(node) && !registered);
    let offline_replicas: Vec<i32> = info
        .replicas
        .iter()
        .copied()
        .filter(|&r| {
            if r == node {
                offline_here
            } else {
                image
                    .brokers
                    .get(&r)
                    .is_none_or(|b| b.fenced || !b.endpoints.iter().any(|e| e.0 == listener))
            }
        })
        .collect();
    let leader = if info.leader == node && offline_here {
        -1
    } else {
        info.leader
    };
    Leadership {
        error_code: if leader == -1 && info.leader == node && !dir_offline {
            ErrorCode::ListenerNotFound.code()
        } else if leader == -1 {
            ErrorCode::LeaderNotAvailable.code()
        } else {
            0
        },
        leader,
        leader_epoch: info.leader_epoch,
        replicas: info.replicas.clone(),
        isr: info.isr.clone(),
        offline_replicas,
    }
}

/// A topic as this broker (`node`) reports it to a client of `listener`. On a listener
/// this broker did not register (added by the dynamic `listeners`) it has no endpoint,
/// as on Kafka: its partitions have no leader there (LISTENER_NOT_FOUND from v6,
/// LEADER_NOT_AVAILABLE before) and its replicas are offline.
fn topic_entry(
    image: &MetadataImage,
    t: &TopicImage,
    (node, listener): (i32, &Listener),
    version: i16,
    log_dirs: &LogDirs,
) -> MetadataResponseTopic {
    MetadataResponseTopic {
        error_code: 0,
        name: Some(t.name.clone()),
        topic_id: Uuid(t.id),
        is_internal: t.name == crate::group::OFFSETS_TOPIC,
        partitions: t
            .partitions
            .iter()
            .enumerate()
            .map(|(p, info)| {
                let l = leadership(
                    image,
                    log_dirs,
                    &t.name,
                    p as i32,
                    info,
                    (node, &listener.name, listener.registered),
                );
                // LISTENER_NOT_FOUND exists from v6; older clients get LEADER_NOT_AVAILABLE.
                let error_code =
                    if version < 6 && l.error_code == ErrorCode::ListenerNotFound.code() {
                        ErrorCode::LeaderNotAvailable.code()
                    } else {
                        l.error_code
                    };
                MetadataResponsePartition {
                    error_code,
                    partition_index: p as i32,
                    leader_id: l.leader,
                    leader_epoch: l.leader_epoch,
                    replica_nodes: l.replicas,
                    isr_nodes: l.isr,
                    offline_replicas: l.offline_replicas,
                }
            })
            .collect(),
        topic_authorized_operations: AUTHORIZED_OPERATIONS_UNKNOWN,
    }
}

/// Where clients of `listener` reach broker `id` (another broker, live, with a
/// listener of that name).
pub fn endpoint(image: &MetadataImage, id: i32, listener: &Listener) -> Option<(String, i32)> {
    let b = image.brokers.get(&id).filter(|b| !b.fenced)?;
    let (_, host, port, _) = b.endpoints.iter().find(|e| e.0 == listener.name)?;
    Some((host.clone(), i32::from(*port)))
}

/// This broker (always, even before its registration is unfenced: it answers for
/// itself; but not on a listener it did not register, as Kafka), then every other
/// registered broker that is not fenced: id, host, port, rack. What Metadata and
/// DescribeCluster list.
pub fn live_brokers(
    ctx: &ShardContext,
    image: &crate::metadata::MetadataImage,
    listener: &Listener,
) -> Vec<(i32, String, i32, Option<String>)> {
    let (host, port) = listener.advertised.clone();
    let me = (
        ctx.config.node_id,
        host,
        port,
        ctx.config.broker_rack.clone(),
    );
    let others = image
        .brokers
        .values()
        .filter(|b| !b.fenced && b.id != ctx.config.node_id)
        // As Kafka: a broker without a listener of that name is left out.
        .filter_map(|b| {
            let (host, port) = endpoint(image, b.id, listener)?;
            Some((b.id, host, port, b.rack.clone()))
        });
    std::iter::once(me)
        .filter(|_| listener.registered)
        .chain(others)
        .collect()
}
