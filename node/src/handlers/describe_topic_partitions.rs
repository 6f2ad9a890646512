//! DescribeTopicPartitions (KIP-966): topics and their partitions in name order, paged by
//! a cursor and a partition limit, as Kafka's `DescribeTopicPartitionsRequestHandler`
//! and its metadata cache answer it (what `kafka-topics.sh --describe` calls first).

use spate_net::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use spate_net::messages::{DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse};
use spate_net::{ErrorCode, Uuid};

use crate::controller::validate_topic_name;
use crate::metadata::{MetadataImage, TopicImage};
use crate::security::authorizer::acl::{Operation, ResourceType};
use crate::security::authorizer::Caller;
use crate::shard::ShardContext;

/// Kafka's `max.request.partition.size.limit` default: the most partitions one response
/// carries whatever the request asks.
const MAX_PARTITIONS_PER_RESPONSE: i32 = 2000;

/// What Kafka reports without an authorizer: every operation a topic supports (READ,
/// WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS as a bit field).
/// Without an authorizer every operation is allowed; with one, each topic gets the
/// caller's own (`handle`).
const TOPIC_OPERATIONS: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);

/// Kafka's internal topic names (`Topic.isInternal`).
fn is_internal(name: &str) -> bool {
    matches!(
        name,
        crate::group::OFFSETS_TOPIC | "__transaction_state" | "__share_group_state"
    )
}

pub fn handle(
    ctx: &ShardContext,
    req: DescribeTopicPartitionsRequest,
    caller: &Caller,
    // The listener the client came in on (replicas without it are offline to it).
    listener: &crate::security::Listener,
) -> DescribeTopicPartitionsResponse {
    // Kafka: DESCRIBE on each topic; a listing of every topic leaves out the others
    // quietly, a named one is TOPIC_AUTHORIZATION_FAILED.
    let describable = |name: &str, named: bool| {
        if named {
            ctx.authorized(caller, Operation::Describe, ResourceType::Topic, name)
        } else {
            ctx.may_see(caller, Operation::Describe, ResourceType::Topic, name)
        }
    };
    match describe(
        &ctx.image(),
        (ctx.config.node_id, &listener.name, listener.registered),
        &ctx.log_dirs,
        &req,
        &describable,
    ) {
        Ok(mut response) => {
            // KIP-430: with an authorizer, what the caller may do on each topic.
            if ctx.authorizer.is_some() {
                for t in response.topics.iter_mut().filter(|t| t.error_code == 0) {
                    if let Some(name) = &t.name {
                        t.topic_authorized_operations =
                            ctx.authorized_operations(true, caller, ResourceType::Topic, name);
                    }
                }
            }
            response
        }
        // Kafka's error response: every requested topic with the error, nothing else.
        Err(code) => DescribeTopicPartitionsResponse {
            topics: req
                .topics
                .into_iter()
                .map(|t| DescribeTopicPartitionsResponseTopic {
                    error_code: code.code(),
                    name: Some(t.name),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        },
    }
}

fn describe(
    image: &MetadataImage,
    // This broker, the client's listener, and whether this broker registered it.
    node: (i32, &str, bool),
    log_dirs: &crate::log_dirs::LogDirs,
    req: &DescribeTopicPartitionsRequest,
    // Whether the caller may describe a topic (true: it was named in the request).
    describable: &dyn Fn(&str, bool) -> bool,
) -> Result<DescribeTopicPartitionsResponse, ErrorCode> {
    let all = req.topics.is_empty();
    let cursor_topic = req.cursor.as_ref().map_or("", |c| c.topic_name.as_str());
    let mut names: Vec<&str> = if all {
        image.topics.keys().map(String::as_str).collect()
    } else {
        req.topics.iter().map(|t| t.name.as_str()).collect()
    };
    names.retain(|n| *n >= cursor_topic && (!all || describable(n, false)));
    names.sort_unstable();
    names.dedup();
    if let Some(c) = &req.cursor {
        // The cursor's topic must be one of the requested ones, its partition valid.
        if (!all && !names.contains(&c.topic_name.as_str())) || c.partition_index < 0 {
            return Err(ErrorCode::InvalidRequest);
        }
    }
    let mut remaining = req
        .response_partition_limit
        .clamp(1, MAX_PARTITIONS_PER_RESPONSE) as usize;
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in names {
        if remaining == 0 {
            // Every partition of the previous topics fit: the next page starts here.
            next_cursor = Some(Cursor {
                topic_name: name.to_string(),
                partition_index: 0,
            });
            break;
        }
        if !all && !describable(name, true) {
            topics.push(DescribeTopicPartitionsResponseTopic {
                error_code: ErrorCode::TopicAuthorizationFailed.code(),
                name: Some(name.to_string()),
                is_internal: is_internal(name),
                topic_authorized_operations: TOPIC_OPERATIONS,
                ..Default::default()
            });
            continue;
        }
        let Some(topic) = image.topic(name) else {
            if !all {
                topics.push(missing_topic(name));
            }
            continue;
        };
        let start = match &req.cursor {
            Some(c) if c.topic_name == name => c.partition_index as usize,
            _ => 0,
        };
        let count = topic.partitions.len();
        let end = count.min(start.saturating_add(remaining));
        topics.push(topic_entry(image, topic, node, start..end, log_dirs));
        if end < count {
            next_cursor = Some(Cursor {
                topic_name: name.to_string(),
                partition_index: end as i32,
            });
            break;
        }
        remaining -= end.saturating_sub(start);
    }
    Ok(DescribeTopicPartitionsResponse {
        topics,
        next_cursor,
        ..Default::default()
    })
}

fn missing_topic(name: &str) -> DescribeTopicPartitionsResponseTopic {
    let error = if validate_topic_name(name).is_err() {
        ErrorCode::InvalidTopicException
    } else {
        ErrorCode::UnknownTopicOrPartition
    };
    DescribeTopicPartitionsResponseTopic {
        error_code: error.code(),
        name: Some(name.to_string()),
        is_internal: is_internal(name),
        topic_authorized_operations: TOPIC_OPERATIONS,
        ..Default::default()
    }
}

fn topic_entry(
    image: &crate::metadata::MetadataImage,
    t: &TopicImage,
    node: (i32, &str, bool),
    range: std::ops::Range<usize>,
    log_dirs: &crate::log_dirs::LogDirs,
) -> DescribeTopicPartitionsResponseTopic {
    DescribeTopicPartitionsResponseTopic {
        error_code: 0,
        name: Some(t.name.clone()),
        topic_id: Uuid(t.id),
        is_internal: is_internal(&t.name),
        partitions: range
            .map(|p| {
                let l = super::metadata::leadership(
                    image,
                    log_dirs,
                    &t.name,
                    p as i32,
                    &t.partitions[p],
                    node,
                );
                // Kafka's DescribeTopicPartitions reports a leader without the client's
                // listener as leader -1 with no error.
                let error_code = if l.error_code == ErrorCode::ListenerNotFound.code() {
                    0
                } else {
                    l.error_code
                };
                DescribeTopicPartitionsResponsePartition {
                    error_code,
                    partition_index: p as i32,
                    leader_id: l.leader,
                    leader_epoch: l.leader_epoch,
                    replica_nodes: l.replicas,
                    isr_nodes: l.isr,
                    eligible_leader_replicas: Some(Vec::new()),
                    last_known_elr: Some(Vec::new()),
                    offline_replicas: l.offline_replicas,
                }
            })
            .collect(),
        topic_authorized_operations: TOPIC_OPERATIONS,
    }
}

#[cfg(test)]
mod tests {
    use crate::log_dirs::LogDirs;
    use std::collections::BTreeMap;

    use spate_net::messages::describe_topic_partitions_request::{self as rq, TopicRequest};

    use super::*;
    use crate::metadata::records;

    fn image() -> MetadataImage {
        let mut img = MetadataImage::default();
        for (name, n) in [("a", 3), ("b", 2), ("c", 1)] {
            let id = [name.as_bytes()[0]; 16];
            img.replay_all(&records::create_topic(name, id, n, 0, &BTreeMap::new()));
        }
        img
    }

    fn req(
        topics: &[&str],
        limit: i32,
        cursor: Option<(&str, i32)>,
    ) -> DescribeTopicPartitionsRequest {
        DescribeTopicPartitionsRequest {
            topics: topics
                .iter()
                .map(|t| TopicRequest {
                    name: t.to_string(),
                })
                .collect(),
            response_partition_limit: limit,
            cursor: cursor.map(|(t, p)| rq::Cursor {
                topic_name: t.into(),
                partition_index: p,
            }),
        }
    }

    /// (topic, error, partition indexes) per topic, and the next cursor.
    type Page = (Vec<(String, i16, Vec<i32>)>, Option<(String, i32)>);

    fn pages(r: &DescribeTopicPartitionsResponse) -> Page {
        (
            r.topics
                .iter()
                .map(|t| {
                    (
                        t.name.clone().unwrap_or_default(),
                        t.error_code,
                        t.partitions.iter().map(|p| p.partition_index).collect(),
                    )
                })
                .collect(),
            r.next_cursor
                .as_ref()
                .map(|c| (c.topic_name.clone(), c.partition_index)),
        )
    }

    /// Offline replicas as Kafka's KRaft metadata cache reports them: on brokers fenced,
    /// unregistered, or without the client's listener; the leader epoch and ISR are the
    /// image's.
    #[test]
    fn offline_replicas_and_epochs_come_from_the_image() {
        use spate_net::metadata_records::register_broker_record::BrokerEndpoint;
        use spate_net::metadata_records::{
            MetadataRecord, PartitionChangeRecord, RegisterBrokerRecord,
        };
        let mut img = MetadataImage::default();
        for (id, fenced, listener) in [
            (0, false, "PLAINTEXT"),
            (1, true, "PLAINTEXT"),
            (2, false, "SSL"),
        ] {
            img.replay(&MetadataRecord::RegisterBroker(RegisterBrokerRecord {
                broker_id: id,
                broker_epoch: 1,
                end_points: vec![BrokerEndpoint {
                    name: listener.into(),
                    host: "127.0.0.1".into(),
                    port: 9092,
                    security_protocol: 0,
                }],
                fenced,
                ..Default::default()
            }));
        }
        let placed = records::NewPartition::new(vec![0, 1, 2, 3], |_| true);
        img.replay_all(&records::create_placed_topic(
            "r",
            [5; 16],
            &[placed],
            &BTreeMap::new(),
        ));
        img.replay(&MetadataRecord::PartitionChange(PartitionChangeRecord {
            topic_id: Uuid([5; 16]),
            partition_id: 0,
            leader: 2,
            isr: Some(vec![2, 0]),
            ..Default::default()
        }));
        let r = describe(
            &img,
            (0, "PLAINTEXT", true),
            &LogDirs::healthy_for_tests(),
            &req(&["r"], 10, None),
            &|_, _| true,
        )
        .unwrap();
        let p = &r.topics[0].partitions[0];
        assert_eq!(p.offline_replicas, [1, 2, 3]);
        assert_eq!((p.leader_id, p.leader_epoch), (2, 1));
        assert_eq!(p.isr_nodes, [2, 0]);
    }

    #[test]
    fn pages_through_all_topics() {
        let img = image();
        let r = describe(
            &img,
            (0, "PLAINTEXT", true),
            &LogDirs::healthy_for_tests(),
            &req(&[], 2, None),
            &|_, _| true,
        )
        .unwrap();
        assert_eq!(
            pages(&r),
            (vec![("a".into(), 0, vec![0, 1])], Some(("a".into(), 2)))
        );
        let r = describe(
            &img,
            (0, "PLAINTEXT", true),
            &LogDirs::healthy_for_tests(),
            &req(&[], 2, Some(("a", 2))),
            &|_, _| true,
        )
        .unwrap();
        // A topic that fills the page exactly moves the cursor to the next topic's start.
        assert_eq!(
            pages(&r),
            (
                vec![("a".into(), 0, vec![2]), ("b".into(), 0, vec![0])],
                Some(("b".into(), 1))
            )
        );
        let r = describe(
            &img,
            (0, "PLAINTEXT", true),
            &LogDirs::healthy_for_tests(),
            &req(&[], 3, Some(("b", 1))),
            &|_, _| true,
        )
        .unwrap();
        assert_eq!(
            pages(&r),
            (
                vec![("b".into(), 0, vec![1]), ("c".into(), 0, vec![0])],
                None
            )
        );
        let r = describe(
            &img,
            (0, "PLAINTEXT", true),
            &LogDirs::healthy_for_tests(),
            &req(&[], 5, None),
            &|_, _| true,
        )
        .unwrap();
        assert_eq!(
            pages(&r),
            (
                vec![("a".into(), 0, vec![0, 1, 2]), ("b".into(), 0, vec![0, 1])],
                Some(("c".into(), 0))
            )
        );
    }

    #[test]
    fn named_topics_sorted_with_errors() {
        let img = image();
        let r = describe(
            &img,
            (0, "PLAINTEXT", true),
            &LogDirs::healthy_for_tests(),
            &req(&["c", "nope", "bad name", "a"], 0, None),
            &|_, _| true,
        )
        .unwrap();
        // A limit below 1 means 1.
        assert_eq!(
            pages(&r),
            (vec![("a".into(), 0, vec![0])], Some(("a".into(), 1)))
        );
        let r = describe(
            &img,
            (0, "PLAINTEXT", true),
            &LogDirs::healthy_for_tests(),
            &req(&["c", "nope", "bad name"], 10, None),
            &|_, _| true,
        )
        .unwrap();
        assert_eq!(
            pages(&r).0,
            vec![
                (
                    "bad name".into(),
                    ErrorCode::InvalidTopicException.code(),
                    vec![]
                ),
                ("c".into(), 0, vec![0]),
                (
                    "nope".into(),
                    ErrorCode::UnknownTopicOrPartition.code(),
                    vec![]
                ),
            ]
        );
        // A cursor past the topic's partitions gives the topic without partitions.
        let r = describe(
            &img,
            (0, "PLAINTEXT", true),
            &LogDirs::healthy_for_tests(),
            &req(&["c"], 10, Some(("c", 7))),
            &|_, _| true,
        )
        .unwrap();
        assert_eq!(pages(&r), (vec![("c".into(), 0, vec![])], None));
    }

    #[test]
    fn topics_the_caller_may_not_describe() {
        let img = image();
        let only_c = |name: &str, _named: bool| name == "c";
        // A listing leaves them out.
        let r = describe(
            &img,
            (0, "PLAINTEXT", true),
            &LogDirs::healthy_for_tests(),
            &req(&[], 10, None),
            &only_c,
        )
        .unwrap();
        assert_eq!(pages(&r), (vec![("c".into(), 0, vec![0])], None));
        // Named, they are TOPIC_AUTHORIZATION_FAILED, existing or not.
        let r = describe(
            &img,
            (0, "PLAINTEXT", true),
            &LogDirs::healthy_for_tests(),
            &req(&["a", "c", "nope"], 10, None),
            &only_c,
        )
        .unwrap();
        let denied = ErrorCode::TopicAuthorizationFailed.code();
        assert_eq!(
            pages(&r).0,
            vec![
                ("a".into(), denied, vec![]),
                ("c".into(), 0, vec![0]),
                ("nope".into(), denied, vec![]),
            ]
        );
    }

    #[test]
    fn bad_cursors_are_invalid_requests() {
        let img = image();
        assert_eq!(
            describe(
                &img,
                (0, "PLAINTEXT", true),
                &LogDirs::healthy_for_tests(),
                &req(&["a"], 10, Some(("b", 0))),
                &|_, _| true,
            )
            .unwrap_err(),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            describe(
                &img,
                (0, "PLAINTEXT", true),
                &LogDirs::healthy_for_tests(),
                &req(&["a"], 10, Some(("a", -1))),
                &|_, _| true,
            )
            .unwrap_err(),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            describe(
                &img,
                (0, "PLAINTEXT", true),
                &LogDirs::healthy_for_tests(),
                &req(&[], 10, Some(("a", -1))),
                &|_, _| true,
            )
            .unwrap_err(),
            ErrorCode::InvalidRequest
        );
    }
}
