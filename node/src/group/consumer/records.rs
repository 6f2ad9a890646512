//! The consumer-group records of `__consumer_offsets`, in Kafka 4.4's formats (the
//! generated `spate_net::group_records`): the key is the record type (Kafka's `apiKey`
//! of the definition, 3 to 8 and 16) followed by the key fields at version 0, the value
//! its version (0) and the fields; a null value deletes. Compaction keeps the last
//! record per key, so a group's state is always the replay of its live records.

use std::collections::{BTreeSet, HashMap};

use bytes::{Buf, Bytes, BytesMut};
use spate_net::group_records as gr;
use spate_net::{Encoder, Message, Uuid};

use super::group::ConsumerGroup;
use super::member::{Assignment, ClassicProtocols, ConsumerMember, MemberState};

/// Record types (the `apiKey` of each definition).
const METADATA: i16 = 3;
const PARTITION_METADATA: i16 = 4;
const MEMBER_METADATA: i16 = 5;
const TARGET_ASSIGNMENT_METADATA: i16 = 6;
const TARGET_ASSIGNMENT_MEMBER: i16 = 7;
const CURRENT_MEMBER_ASSIGNMENT: i16 = 8;
const REGULAR_EXPRESSION: i16 = 16;
const VALUE_VERSION: i16 = 0;

/// One change to a group, to be written as a record.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupRecord {
    Metadata {
        epoch: i32,
        metadata_hash: i64,
    },
    MetadataTombstone,
    /// Kafka 4.4 no longer writes subscription metadata, only deletes it.
    PartitionMetadataTombstone,
    Member(ConsumerMember),
    MemberTombstone(String),
    TargetMetadata(i32),
    TargetMetadataTombstone,
    TargetMember(String, Assignment),
    TargetMemberTombstone(String),
    CurrentAssignment(ConsumerMember),
    CurrentAssignmentTombstone(String),
    Regex(String, BTreeSet<String>),
    RegexTombstone(String),
}

fn encoded<M: Message>(prefix: i16, m: &M) -> Bytes {
    let mut e = Encoder::new();
    e.put_i16(prefix);
    m.encode(&mut e, 0);
    let chunks = e.finish();
    let mut out = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
    for c in chunks {
        out.extend_from_slice(&c);
    }
    out.freeze()
}

fn group_key(kind: i16, group_id: &str) -> Bytes {
    let group_id = group_id.to_string();
    match kind {
        METADATA => encoded(kind, &gr::ConsumerGroupMetadataKey { group_id }),
        PARTITION_METADATA => encoded(kind, &gr::ConsumerGroupPartitionMetadataKey { group_id }),
        _ => encoded(
            kind,
            &gr::ConsumerGroupTargetAssignmentMetadataKey { group_id },
        ),
    }
}

fn member_key(kind: i16, group_id: &str, member_id: &str) -> Bytes {
    let (group_id, member_id) = (group_id.to_string(), member_id.to_string());
    match kind {
        MEMBER_METADATA => encoded(
            kind,
            &gr::ConsumerGroupMemberMetadataKey {
                group_id,
                member_id,
            },
        ),
        TARGET_ASSIGNMENT_MEMBER => encoded(
            kind,
            &gr::ConsumerGroupTargetAssignmentMemberKey {
                group_id,
                member_id,
            },
        ),
        _ => encoded(
            kind,
            &gr::ConsumerGroupCurrentMemberAssignmentKey {
                group_id,
                member_id,
            },
        ),
    }
}

fn regex_key(group_id: &str, regex: &str) -> Bytes {
    encoded(
        REGULAR_EXPRESSION,
        &gr::ConsumerGroupRegularExpressionKey {
            group_id: group_id.to_string(),
            regular_expression: regex.to_string(),
        },
    )
}

/// `epochs`: the member, to write the assignment epochs of its assigned partitions.
fn topic_partitions(
    a: &Assignment,
    epochs: Option<&ConsumerMember>,
) -> Vec<gr::consumer_group_current_member_assignment_value::TopicPartitions> {
    a.iter()
        .map(
            |(t, p)| gr::consumer_group_current_member_assignment_value::TopicPartitions {
                topic_id: Uuid(*t),
                partitions: p.iter().copied().collect(),
                assignment_epochs: epochs.map(|m| {
                    p.iter()
                        .map(|p| m.assignment_epoch(t, *p).unwrap_or(m.member_epoch))
                        .collect()
                }),
            },
        )
        .collect()
}

/// The record's key and value (None: a tombstone).
pub fn encode(group_id: &str, r: &GroupRecord, now_ms: i64) -> (Bytes, Option<Bytes>) {
    use GroupRecord::*;
    match r {
        Metadata {
            epoch,
            metadata_hash,
        } => (
            group_key(METADATA, group_id),
            Some(encoded(
                VALUE_VERSION,
                &gr::ConsumerGroupMetadataValue {
                    epoch: *epoch,
                    metadata_hash: *metadata_hash,
                },
            )),
        ),
        MetadataTombstone => (group_key(METADATA, group_id), None),
        PartitionMetadataTombstone => (group_key(PARTITION_METADATA, group_id), None),
        Member(m) => (
            member_key(MEMBER_METADATA, group_id, &m.member_id),
            Some(encoded(
                VALUE_VERSION,
                &gr::ConsumerGroupMemberMetadataValue {
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed_topic_names: m.subscribed_topic_names.clone(),
                    subscribed_topic_regex: m.subscribed_topic_regex.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    server_assignor: m.server_assignor.clone(),
                    classic_member_metadata: m.classic.as_ref().map(|c| {
                        gr::consumer_group_member_metadata_value::ClassicMemberMetadata {
                            session_timeout_ms: c.session_timeout_ms,
                            supported_protocols: c
                                .protocols
                                .iter()
                                .map(|(name, metadata)| {
                                    gr::consumer_group_member_metadata_value::ClassicProtocol {
                                        name: name.clone(),
                                        metadata: metadata.clone(),
                                    }
                                })
                                .collect(),
                        }
                    }),
                },
            )),
        ),
        MemberTombstone(id) => (member_key(MEMBER_METADATA, group_id, id), None),
        TargetMetadata(epoch) => (
            group_key(TARGET_ASSIGNMENT_METADATA, group_id),
            Some(encoded(
                VALUE_VERSION,
                &gr::ConsumerGroupTargetAssignmentMetadataValue {
                    assignment_epoch: *epoch,
                    assignment_timestamp: now_ms,
                },
            )),
        ),
        TargetMetadataTombstone => (group_key(TARGET_ASSIGNMENT_METADATA, group_id), None),
        TargetMember(id, a) => (
            member_key(TARGET_ASSIGNMENT_MEMBER, group_id, id),
            Some(encoded(
                VALUE_VERSION,
                &gr::ConsumerGroupTargetAssignmentMemberValue {
                    topic_partitions: a
                        .iter()
                        .map(|(t, p)| {
                            gr::consumer_group_target_assignment_member_value::TopicPartition {
                                topic_id: Uuid(*t),
                                partitions: p.iter().copied().collect(),
                            }
                        })
                        .collect(),
                },
            )),
        ),
        TargetMemberTombstone(id) => (member_key(TARGET_ASSIGNMENT_MEMBER, group_id, id), None),
        CurrentAssignment(m) => (
            member_key(CURRENT_MEMBER_ASSIGNMENT, group_id, &m.member_id),
            Some(encoded(
                VALUE_VERSION,
                &gr::ConsumerGroupCurrentMemberAssignmentValue {
                    member_epoch: m.member_epoch,
                    previous_member_epoch: m.previous_member_epoch,
                    state: m.state.code(),
                    assigned_partitions: topic_partitions(&m.assigned, Some(m)),
                    partitions_pending_revocation: topic_partitions(&m.pending_revocation, None),
                },
            )),
        ),
        CurrentAssignmentTombstone(id) => {
            (member_key(CURRENT_MEMBER_ASSIGNMENT, group_id, id), None)
        }
        Regex(regex, topics) => (
            regex_key(group_id, regex),
            Some(encoded(
                VALUE_VERSION,
                &gr::ConsumerGroupRegularExpressionValue {
                    topics: topics.iter().cloned().collect(),
                    version: 0,
                    timestamp: now_ms,
                },
            )),
        ),
        RegexTombstone(regex) => (regex_key(group_id, regex), None),
    }
}

/// Whether a `__consumer_offsets` key is a consumer-group record.
pub fn is_group_record(key: &[u8]) -> bool {
    key.len() >= 2
        && matches!(
            i16::from_be_bytes([key[0], key[1]]),
            METADATA..=CURRENT_MEMBER_ASSIGNMENT | REGULAR_EXPRESSION
        )
}

fn decode<M: Message>(buf: &mut Bytes) -> Option<M> {
    M::decode(buf, 0).ok()
}

fn assignment<'a>(tps: impl Iterator<Item = (&'a Uuid, &'a Vec<i32>)>) -> Assignment {
    tps.filter(|(_, p)| !p.is_empty())
        .map(|(t, p)| (t.0, p.iter().copied().collect()))
        .collect()
}

/// Replays one record into `groups`; false when it is not a consumer-group record or
/// cannot be read (it is then skipped, as Kafka skips unknown record types).
pub fn replay(
    groups: &mut HashMap<String, ConsumerGroup>,
    mut key: Bytes,
    value: Option<Bytes>,
) -> bool {
    if key.len() < 2 {
        return false;
    }
    let kind = key.get_i16();
    let mut value = match value {
        Some(mut v) if v.len() >= 2 => {
            if v.get_i16() != VALUE_VERSION {
                return false;
            }
            Some(v)
        }
        Some(_) => return false,
        None => None,
    };
    match kind {
        METADATA => {
            let Some(k) = decode::<gr::ConsumerGroupMetadataKey>(&mut key) else {
                return false;
            };
            match value.as_mut().map(decode::<gr::ConsumerGroupMetadataValue>) {
                None => {
                    groups.remove(&k.group_id);
                }
                Some(None) => return false,
                Some(Some(v)) => {
                    let g = entry(groups, &k.group_id);
                    g.group_epoch = v.epoch;
                    g.metadata_hash = v.metadata_hash;
                }
            }
        }
        PARTITION_METADATA => {}
        MEMBER_METADATA => {
            let Some(k) = decode::<gr::ConsumerGroupMemberMetadataKey>(&mut key) else {
                return false;
            };
            match value
                .as_mut()
                .map(decode::<gr::ConsumerGroupMemberMetadataValue>)
            {
                None => {
                    if let Some(g) = groups.get_mut(&k.group_id) {
                        g.members.remove(&k.member_id);
                    }
                }
                Some(None) => return false,
                Some(Some(v)) => {
                    let g = entry(groups, &k.group_id);
                    let m = g
                        .members
                        .entry(k.member_id.clone())
                        .or_insert_with(|| ConsumerMember::new(&k.member_id));
                    m.instance_id = v.instance_id;
                    m.rack_id = v.rack_id;
                    m.client_id = v.client_id;
                    m.client_host = v.client_host;
                    m.subscribed_topic_names = v.subscribed_topic_names;
                    m.subscribed_topic_regex = v.subscribed_topic_regex;
                    m.rebalance_timeout_ms = v.rebalance_timeout_ms;
                    m.server_assignor = v.server_assignor;
                    m.classic = v.classic_member_metadata.map(|c| ClassicProtocols {
                        session_timeout_ms: c.session_timeout_ms,
                        protocols: c
                            .supported_protocols
                            .into_iter()
                            .map(|p| (p.name, p.metadata))
                            .collect(),
                    });
                }
            }
        }
        TARGET_ASSIGNMENT_METADATA => {
            let Some(k) = decode::<gr::ConsumerGroupTargetAssignmentMetadataKey>(&mut key) else {
                return false;
            };
            match value
                .as_mut()
                .map(decode::<gr::ConsumerGroupTargetAssignmentMetadataValue>)
            {
                None => {}
                Some(None) => return false,
                Some(Some(v)) => entry(groups, &k.group_id).assignment_epoch = v.assignment_epoch,
            }
        }
        TARGET_ASSIGNMENT_MEMBER => {
            let Some(k) = decode::<gr::ConsumerGroupTargetAssignmentMemberKey>(&mut key) else {
                return false;
            };
            match value
                .as_mut()
                .map(decode::<gr::ConsumerGroupTargetAssignmentMemberValue>)
            {
                None => {
                    if let Some(g) = groups.get_mut(&k.group_id) {
                        g.targets.remove(&k.member_id);
                    }
                }
                Some(None) => return false,
                Some(Some(v)) => {
                    let a = assignment(
                        v.topic_partitions
                            .iter()
                            .map(|t| (&t.topic_id, &t.partitions)),
                    );
                    entry(groups, &k.group_id).targets.insert(k.member_id, a);
                }
            }
        }
        CURRENT_MEMBER_ASSIGNMENT => {
            let Some(k) = decode::<gr::ConsumerGroupCurrentMemberAssignmentKey>(&mut key) else {
                return false;
            };
            match value
                .as_mut()
                .map(decode::<gr::ConsumerGroupCurrentMemberAssignmentValue>)
            {
                // The member's own tombstone follows and removes it.
                None => {}
                Some(None) => return false,
                Some(Some(v)) => {
                    let g = entry(groups, &k.group_id);
                    let m = g
                        .members
                        .entry(k.member_id.clone())
                        .or_insert_with(|| ConsumerMember::new(&k.member_id));
                    m.member_epoch = v.member_epoch;
                    m.previous_member_epoch = v.previous_member_epoch;
                    m.state = MemberState::from_code(v.state).unwrap_or(MemberState::Stable);
                    m.assigned = assignment(
                        v.assigned_partitions
                            .iter()
                            .map(|t| (&t.topic_id, &t.partitions)),
                    );
                    // Assignment epochs, where written (Kafka 4.3+), one per partition.
                    m.assignment_epochs = v
                        .assigned_partitions
                        .iter()
                        .filter_map(|t| {
                            let epochs = t.assignment_epochs.as_ref()?;
                            (epochs.len() == t.partitions.len()).then(|| {
                                t.partitions
                                    .iter()
                                    .zip(epochs)
                                    .map(|(p, e)| ((t.topic_id.0, *p), *e))
                                    .collect::<Vec<_>>()
                            })
                        })
                        .flatten()
                        .collect();
                    m.pending_revocation = assignment(
                        v.partitions_pending_revocation
                            .iter()
                            .map(|t| (&t.topic_id, &t.partitions)),
                    );
                }
            }
        }
        REGULAR_EXPRESSION => {
            let Some(k) = decode::<gr::ConsumerGroupRegularExpressionKey>(&mut key) else {
                return false;
            };
            match value
                .as_mut()
                .map(decode::<gr::ConsumerGroupRegularExpressionValue>)
            {
                None => {
                    if let Some(g) = groups.get_mut(&k.group_id) {
                        g.regexes.remove(&k.regular_expression);
                    }
                }
                Some(None) => return false,
                Some(Some(v)) => {
                    entry(groups, &k.group_id)
                        .regexes
                        .insert(k.regular_expression, v.topics.into_iter().collect());
                }
            }
        }
        _ => return false,
    }
    true
}

fn entry<'a>(groups: &'a mut HashMap<String, ConsumerGroup>, id: &str) -> &'a mut ConsumerGroup {
    groups
        .entry(id.to_string())
        .or_insert_with(|| ConsumerGroup::new(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::consumer::group::{ConsumerGroupSettings, HeartbeatArgs};
    use crate::group::consumer::topics::TopicsView;
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    fn replay_all(records: &[(Bytes, Option<Bytes>)]) -> HashMap<String, ConsumerGroup> {
        let mut groups = HashMap::new();
        for (k, v) in records {
            assert!(is_group_record(k));
            assert!(replay(&mut groups, k.clone(), v.clone()));
        }
        groups
    }

    #[test]
    fn replayed_records_rebuild_the_group() {
        let t = [3; 16];
        let topics = TopicsView {
            by_name: BTreeMap::from([("t".to_string(), (t, 3))]),
            access: None,
        };
        let settings = ConsumerGroupSettings {
            session_timeout: Duration::from_secs(45),
            heartbeat_interval_ms: 5000,
            max_size: 10,
            assignors: vec![crate::group::consumer::assignor::Assignor::Uniform],
        };
        let mut g = ConsumerGroup::new("g");
        let mut log = Vec::new();
        let mut n = 0;
        for m in ["a", "b"] {
            let args = HeartbeatArgs {
                member_id: m.into(),
                rebalance_timeout_ms: 1000,
                topic_names: Some(vec!["t".into()]),
                regex: Some("x.*".into()),
                owned: Some(Assignment::new()),
                client_id: "c".into(),
                ..Default::default()
            };
            let (_, records) = g
                .heartbeat(args, &topics, &settings, Instant::now(), &mut n)
                .unwrap();
            log.extend(records.iter().map(|r| encode("g", r, 1)));
        }
        let loaded = replay_all(&log);
        let l = &loaded["g"];
        assert_eq!(
            (l.group_epoch, l.assignment_epoch, l.metadata_hash),
            (g.group_epoch, g.assignment_epoch, g.metadata_hash)
        );
        assert_eq!(l.members, g.members);
        assert_eq!(l.targets, g.targets);
        assert_eq!(l.regexes, g.regexes);
        // Deleting: the tombstones leave nothing.
        log.extend(g.tombstones().iter().map(|r| encode("g", r, 2)));
        assert!(replay_all(&log).is_empty());
    }

    #[test]
    fn keys_have_kafkas_layout() {
        // ConsumerGroupMetadataKey: type 3, then the group id as a STRING (i16 length).
        let (k, v) = encode(
            "g1",
            &GroupRecord::Metadata {
                epoch: 5,
                metadata_hash: 0,
            },
            0,
        );
        assert_eq!(&k[..], &[0, 3, 0, 2, b'g', b'1']);
        // Value version 0, the epoch, no tagged fields: the hash is a tagged field, left
        // out at its default (0).
        assert_eq!(&v.unwrap()[..], &[0, 0, 0, 0, 0, 5, 0]);
        let (k, v) = encode("g1", &GroupRecord::MemberTombstone("m".into()), 0);
        assert_eq!(&k[..], &[0, 5, 0, 2, b'g', b'1', 0, 1, b'm']);
        assert!(v.is_none());
        // Offset commits and classic group metadata are not consumer-group records.
        assert!(!is_group_record(&[0, 1]) && !is_group_record(&[0, 2]));
    }
}
