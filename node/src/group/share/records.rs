//! The share-group records of `__consumer_offsets`, in Kafka 4.4's formats (the
//! generated `spate_net::group_records::ShareGroup*`): the key is the record type (the
//! definition's `apiKey`, 10 to 15) followed by the key fields at version 0, the value
//! its version (0) and the fields; a null value deletes. A group's state is the replay of
//! its live records, so a restart or a new coordinator resumes it as it was.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::{Buf, Bytes, BytesMut};
use spate_net::group_records as gr;
use spate_net::{Encoder, Message, Uuid};

use super::group::{ShareGroup, StatePartitions, TopicPartitions};
use super::member::ShareMember;
use crate::group::consumer::member::Assignment;

const MEMBER_METADATA: i16 = 10;
const METADATA: i16 = 11;
const TARGET_ASSIGNMENT_METADATA: i16 = 12;
const TARGET_ASSIGNMENT_MEMBER: i16 = 13;
const CURRENT_MEMBER_ASSIGNMENT: i16 = 14;
const STATE_PARTITION_METADATA: i16 = 15;
const VALUE_VERSION: i16 = 0;
/// Kafka's `MemberState.STABLE`: share members are always stable.
const STABLE: i8 = 0;

/// One change to a share group, to be written as a record.
#[derive(Debug, Clone, PartialEq)]
pub enum ShareRecord {
    Metadata { epoch: i32, metadata_hash: i64 },
    MetadataTombstone,
    Member(ShareMember),
    MemberTombstone(String),
    TargetMetadata(i32),
    TargetMetadataTombstone,
    TargetMember(String, Assignment),
    TargetMemberTombstone(String),
    CurrentAssignment(ShareMember),
    CurrentAssignmentTombstone(String),
    StatePartitions(StatePartitions),
    StatePartitionsTombstone,
}

fn encoded<M: Message>(prefix: i16, m: &M) -> Bytes {
    let mut e = Encoder::new();
    e.put_i16(prefix);
    m.encode(&mut e, 0);
    let mut out = BytesMut::new();
    for c in e.finish() {
        out.extend_from_slice(&c);
    }
    out.freeze()
}

fn group_key(kind: i16, group_id: &str) -> Bytes {
    let group_id = group_id.to_string();
    match kind {
        METADATA => encoded(kind, &gr::ShareGroupMetadataKey { group_id }),
        TARGET_ASSIGNMENT_METADATA => encoded(
            kind,
            &gr::ShareGroupTargetAssignmentMetadataKey { group_id },
        ),
        _ => encoded(kind, &gr::ShareGroupStatePartitionMetadataKey { group_id }),
    }
}

fn member_key(kind: i16, group_id: &str, member_id: &str) -> Bytes {
    let (group_id, member_id) = (group_id.to_string(), member_id.to_string());
    match kind {
        MEMBER_METADATA => encoded(
            kind,
            &gr::ShareGroupMemberMetadataKey {
                group_id,
                member_id,
            },
        ),
        TARGET_ASSIGNMENT_MEMBER => encoded(
            kind,
            &gr::ShareGroupTargetAssignmentMemberKey {
                group_id,
                member_id,
            },
        ),
        _ => encoded(
            kind,
            &gr::ShareGroupCurrentMemberAssignmentKey {
                group_id,
                member_id,
            },
        ),
    }
}

fn topic_infos(
    m: &TopicPartitions,
) -> Vec<gr::share_group_state_partition_metadata_value::TopicPartitionsInfo> {
    m.iter()
        .map(|(t, (name, ps))| {
            gr::share_group_state_partition_metadata_value::TopicPartitionsInfo {
                topic_id: Uuid(*t),
                topic_name: name.clone(),
                partitions: ps.iter().copied().collect(),
            }
        })
        .collect()
}

/// The record's key and value (None: a tombstone).
pub fn encode(group_id: &str, r: &ShareRecord, now_ms: i64) -> (Bytes, Option<Bytes>) {
    use ShareRecord::*;
    let value = |m: &dyn Fn(&mut Encoder)| {
        let mut e = Encoder::new();
        e.put_i16(VALUE_VERSION);
        m(&mut e);
        let mut out = BytesMut::new();
        for c in e.finish() {
            out.extend_from_slice(&c);
        }
        Some(out.freeze())
    };
    match r {
        Metadata {
            epoch,
            metadata_hash,
        } => (
            group_key(METADATA, group_id),
            value(&|e| {
                gr::ShareGroupMetadataValue {
                    epoch: *epoch,
                    metadata_hash: *metadata_hash,
                }
                .encode(e, 0)
            }),
        ),
        MetadataTombstone => (group_key(METADATA, group_id), None),
        Member(m) => (
            member_key(MEMBER_METADATA, group_id, &m.member_id),
            value(&|e| {
                gr::ShareGroupMemberMetadataValue {
                    rack_id: m.rack_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed_topic_names: m.subscribed_topic_names.clone(),
                }
                .encode(e, 0)
            }),
        ),
        MemberTombstone(id) => (member_key(MEMBER_METADATA, group_id, id), None),
        TargetMetadata(epoch) => (
            group_key(TARGET_ASSIGNMENT_METADATA, group_id),
            value(&|e| {
                gr::ShareGroupTargetAssignmentMetadataValue {
                    assignment_epoch: *epoch,
                    assignment_timestamp: now_ms,
                }
                .encode(e, 0)
            }),
        ),
        TargetMetadataTombstone => (group_key(TARGET_ASSIGNMENT_METADATA, group_id), None),
        TargetMember(id, a) => (
            member_key(TARGET_ASSIGNMENT_MEMBER, group_id, id),
            value(&|e| {
                gr::ShareGroupTargetAssignmentMemberValue {
                    topic_partitions: a
                        .iter()
                        .map(|(t, p)| {
                            gr::share_group_target_assignment_member_value::TopicPartition {
                                topic_id: Uuid(*t),
                                partitions: p.iter().copied().collect(),
                            }
                        })
                        .collect(),
                }
                .encode(e, 0)
            }),
        ),
        TargetMemberTombstone(id) => (member_key(TARGET_ASSIGNMENT_MEMBER, group_id, id), None),
        CurrentAssignment(m) => (
            member_key(CURRENT_MEMBER_ASSIGNMENT, group_id, &m.member_id),
            value(&|e| {
                gr::ShareGroupCurrentMemberAssignmentValue {
                    member_epoch: m.member_epoch,
                    previous_member_epoch: m.previous_member_epoch,
                    state: STABLE,
                    assigned_partitions: m
                        .assigned
                        .iter()
                        .map(|(t, p)| {
                            gr::share_group_current_member_assignment_value::TopicPartitions {
                                topic_id: Uuid(*t),
                                partitions: p.iter().copied().collect(),
                            }
                        })
                        .collect(),
                }
                .encode(e, 0)
            }),
        ),
        CurrentAssignmentTombstone(id) => {
            (member_key(CURRENT_MEMBER_ASSIGNMENT, group_id, id), None)
        }
        StatePartitions(s) => (
            group_key(STATE_PARTITION_METADATA, group_id),
            value(&|e| {
                gr::ShareGroupStatePartitionMetadataValue {
                    initializing_topics: topic_infos(&s.initializing),
                    initialized_topics: topic_infos(&s.initialized),
                    deleting_topics: s
                        .deleting
                        .iter()
                        .map(|(t, name)| {
                            gr::share_group_state_partition_metadata_value::TopicInfo {
                                topic_id: Uuid(*t),
                                topic_name: name.clone(),
                            }
                        })
                        .collect(),
                }
                .encode(e, 0)
            }),
        ),
        StatePartitionsTombstone => (group_key(STATE_PARTITION_METADATA, group_id), None),
    }
}

/// Whether a `__consumer_offsets` key is a share-group record.
pub fn is_share_record(key: &[u8]) -> bool {
    key.len() >= 2
        && (MEMBER_METADATA..=STATE_PARTITION_METADATA)
            .contains(&i16::from_be_bytes([key[0], key[1]]))
}

fn decode<M: Message>(buf: &mut Bytes) -> Option<M> {
    M::decode(buf, 0).ok()
}

fn partitions<'a>(tps: impl Iterator<Item = (&'a Uuid, &'a Vec<i32>)>) -> Assignment {
    tps.filter(|(_, p)| !p.is_empty())
        .map(|(t, p)| (t.0, p.iter().copied().collect()))
        .collect()
}

fn topic_map(
    infos: Vec<gr::share_group_state_partition_metadata_value::TopicPartitionsInfo>,
) -> TopicPartitions {
    infos
        .into_iter()
        .map(|i| {
            (
                i.topic_id.0,
                (
                    i.topic_name,
                    i.partitions.into_iter().collect::<BTreeSet<_>>(),
                ),
            )
        })
        .collect()
}

fn entry<'a>(groups: &'a mut HashMap<String, ShareGroup>, id: &str) -> &'a mut ShareGroup {
    groups
        .entry(id.to_string())
        .or_insert_with(|| ShareGroup::new(id))
}

fn member<'a>(g: &'a mut ShareGroup, id: &str) -> &'a mut ShareMember {
    g.members
        .entry(id.to_string())
        .or_insert_with(|| ShareMember::new(id))
}

/// Replays one record into `groups`; false when it is not a share-group record or
/// cannot be read (it is then skipped, as Kafka skips unknown record types).
pub fn replay(
    groups: &mut HashMap<String, ShareGroup>,
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
    // The key's group (and member), then the value, if any.
    macro_rules! read {
        ($k:ty, $v:ty) => {{
            let Some(k) = decode::<$k>(&mut key) else {
                return false;
            };
            match value.as_mut().map(decode::<$v>) {
                Some(None) => return false,
                v => (k, v.flatten()),
            }
        }};
    }
    match kind {
        METADATA => match read!(gr::ShareGroupMetadataKey, gr::ShareGroupMetadataValue) {
            (k, None) => {
                groups.remove(&k.group_id);
            }
            (k, Some(v)) => {
                let g = entry(groups, &k.group_id);
                g.group_epoch = v.epoch;
                g.metadata_hash = v.metadata_hash;
            }
        },
        MEMBER_METADATA => match read!(
            gr::ShareGroupMemberMetadataKey,
            gr::ShareGroupMemberMetadataValue
        ) {
            (k, None) => {
                if let Some(g) = groups.get_mut(&k.group_id) {
                    g.members.remove(&k.member_id);
                }
            }
            (k, Some(v)) => {
                let m = member(entry(groups, &k.group_id), &k.member_id);
                m.rack_id = v.rack_id;
                m.client_id = v.client_id;
                m.client_host = v.client_host;
                m.subscribed_topic_names = v.subscribed_topic_names;
            }
        },
        TARGET_ASSIGNMENT_METADATA => match read!(
            gr::ShareGroupTargetAssignmentMetadataKey,
            gr::ShareGroupTargetAssignmentMetadataValue
        ) {
            (_, None) => {}
            (k, Some(v)) => entry(groups, &k.group_id).assignment_epoch = v.assignment_epoch,
        },
        TARGET_ASSIGNMENT_MEMBER => match read!(
            gr::ShareGroupTargetAssignmentMemberKey,
            gr::ShareGroupTargetAssignmentMemberValue
        ) {
            (k, None) => {
                if let Some(g) = groups.get_mut(&k.group_id) {
                    g.targets.remove(&k.member_id);
                }
            }
            (k, Some(v)) => {
                let a = partitions(
                    v.topic_partitions
                        .iter()
                        .map(|t| (&t.topic_id, &t.partitions)),
                );
                entry(groups, &k.group_id).targets.insert(k.member_id, a);
            }
        },
        CURRENT_MEMBER_ASSIGNMENT => match read!(
            gr::ShareGroupCurrentMemberAssignmentKey,
            gr::ShareGroupCurrentMemberAssignmentValue
        ) {
            // The member's own tombstone follows and removes it.
            (_, None) => {}
            (k, Some(v)) => {
                let m = member(entry(groups, &k.group_id), &k.member_id);
                m.member_epoch = v.member_epoch;
                m.previous_member_epoch = v.previous_member_epoch;
                m.assigned = partitions(
                    v.assigned_partitions
                        .iter()
                        .map(|t| (&t.topic_id, &t.partitions)),
                );
            }
        },
        STATE_PARTITION_METADATA => match read!(
            gr::ShareGroupStatePartitionMetadataKey,
            gr::ShareGroupStatePartitionMetadataValue
        ) {
            (k, None) => {
                if let Some(g) = groups.get_mut(&k.group_id) {
                    g.state = StatePartitions::default();
                }
            }
            (k, Some(v)) => {
                entry(groups, &k.group_id).state = StatePartitions {
                    initializing: topic_map(v.initializing_topics),
                    initialized: topic_map(v.initialized_topics),
                    deleting: v
                        .deleting_topics
                        .into_iter()
                        .map(|t| (t.topic_id.0, t.topic_name))
                        .collect::<BTreeMap<_, _>>(),
                };
            }
        },
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::consumer::TopicsView;
    use crate::group::share::group::{ShareGroupSettings, ShareHeartbeatArgs};
    use std::time::{Duration, Instant};

    fn replay_all(records: &[(Bytes, Option<Bytes>)]) -> HashMap<String, ShareGroup> {
        let mut groups = HashMap::new();
        for (k, v) in records {
            assert!(is_share_record(k));
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
        let settings = ShareGroupSettings {
            session_timeout: Duration::from_secs(45),
            heartbeat_interval_ms: 5000,
            max_size: 10,
            initialize_retry: Duration::from_secs(30),
        };
        let mut g = ShareGroup::new("g");
        let mut log = Vec::new();
        let now = Instant::now();
        for m in ["a", "b"] {
            let args = ShareHeartbeatArgs {
                member_id: m.into(),
                topic_names: Some(vec!["t".into()]),
                rack_id: Some("r1".into()),
                client_id: "c".into(),
                ..Default::default()
            };
            let (_, records, init) = g.heartbeat(args, &topics, &settings, now).unwrap();
            log.extend(records.iter().map(|r| encode("g", r, 1)));
            if let Some(r) = g.initialized(&init) {
                log.push(encode("g", &r, 1));
            }
        }
        let (_, records, _) = g
            .heartbeat(
                ShareHeartbeatArgs {
                    member_id: "a".into(),
                    member_epoch: g.members["a"].member_epoch,
                    client_id: "c".into(),
                    ..Default::default()
                },
                &topics,
                &settings,
                now,
            )
            .unwrap();
        log.extend(records.iter().map(|r| encode("g", r, 2)));
        assert!(!g.targets["a"].is_empty());
        let loaded = replay_all(&log);
        let l = &loaded["g"];
        assert_eq!(
            (l.group_epoch, l.assignment_epoch, l.metadata_hash),
            (g.group_epoch, g.assignment_epoch, g.metadata_hash)
        );
        assert_eq!(l.members, g.members);
        assert_eq!(l.targets, g.targets);
        assert_eq!(l.state, g.state);
        log.extend(g.tombstones().iter().map(|r| encode("g", r, 3)));
        assert!(replay_all(&log).is_empty());
    }

    #[test]
    fn keys_have_kafkas_layout() {
        let (k, v) = encode(
            "g1",
            &ShareRecord::Metadata {
                epoch: 5,
                metadata_hash: 0,
            },
            0,
        );
        // ShareGroupMetadataKey: type 11, the group id as a STRING; the value: version 0,
        // the epoch, the hash (not tagged here), no tagged fields.
        assert_eq!(&k[..], &[0, 11, 0, 2, b'g', b'1']);
        assert_eq!(
            &v.unwrap()[..],
            &[0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        let (k, v) = encode("g1", &ShareRecord::MemberTombstone("m".into()), 0);
        assert_eq!(&k[..], &[0, 10, 0, 2, b'g', b'1', 0, 1, b'm']);
        assert!(v.is_none());
        // Consumer-group records are not share-group records.
        assert!(!is_share_record(&[0, 3]) && !is_share_record(&[0, 16]));
    }
}
