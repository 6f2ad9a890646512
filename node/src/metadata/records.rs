//! The KRaft metadata records Spate writes: builders for each kind of change the
//! controller makes, and the image written out as records (a snapshot's contents).
//! Records are built at the newest version the vendored definitions know.

use std::collections::BTreeMap;

use spate_net::metadata_frame::ApiMessageAndVersion;
use spate_net::metadata_records::register_broker_record::BrokerEndpoint;
use spate_net::metadata_records::{
    AccessControlEntryRecord, ConfigRecord, FeatureLevelRecord, MetadataRecord, PartitionRecord,
    ProducerIdsRecord, RegisterBrokerRecord, RemoveAccessControlEntryRecord, RemoveTopicRecord,
    RemoveUserScramCredentialRecord, TopicRecord, UserScramCredentialRecord,
};
use spate_net::Uuid;

use super::image::{MetadataImage, PartitionInfo};
use crate::security::authorizer::acl::Acl;
use crate::security::scram::{ScramCredential, ScramMechanism};

/// `ConfigRecord.resourceType` values (Kafka's `ConfigResource.Type`).
pub mod resource_type {
    pub const TOPIC: i8 = 2;
    pub const BROKER: i8 = 4;
    /// Consumer groups (KIP-848's GROUP config resource).
    pub const GROUP: i8 = 32;
}

/// `BrokerRegistrationChangeRecord.fenced` values (Kafka's
/// `BrokerRegistrationFencingChange`; 0 is no change).
pub const FENCE: i8 = 1;
pub const UNFENCE: i8 = -1;

/// The `metadata.version` Spate's records correspond to: Kafka 4.0-IV3, the level whose
/// record versions the vendored definitions end at.
pub const METADATA_VERSION: i16 = 25;
pub const METADATA_VERSION_FEATURE: &str = "metadata.version";

fn rec(record: MetadataRecord) -> ApiMessageAndVersion {
    ApiMessageAndVersion::latest(record)
}

/// A new partition's replicas, in-sync replicas and leader.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPartition {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// -1 when no replica is live.
    pub leader: i32,
}

impl NewPartition {
    /// Replicas on `live` brokers are in sync; the first of them leads (Kafka's choice
    /// for a new partition).
    pub fn new(replicas: Vec<i32>, live: impl Fn(i32) -> bool) -> Self {
        let isr: Vec<i32> = replicas.iter().copied().filter(|&r| live(r)).collect();
        let leader = isr.first().copied().unwrap_or(-1);
        NewPartition {
            replicas,
            isr,
            leader,
        }
    }
}

fn new_partition_record(topic_id: [u8; 16], index: i32, p: &NewPartition) -> ApiMessageAndVersion {
    rec(MetadataRecord::Partition(PartitionRecord {
        partition_id: index,
        topic_id: Uuid(topic_id),
        replicas: p.replicas.clone(),
        isr: p.isr.clone(),
        leader: p.leader,
        leader_epoch: 0,
        partition_epoch: 0,
        directories: vec![Uuid::ZERO; p.replicas.len()],
        ..Default::default()
    }))
}

/// A new topic with its placed partitions.
pub fn create_placed_topic(
    name: &str,
    id: [u8; 16],
    partitions: &[NewPartition],
    configs: &BTreeMap<String, String>,
) -> Vec<ApiMessageAndVersion> {
    let mut out = vec![rec(MetadataRecord::Topic(TopicRecord {
        name: name.to_string(),
        topic_id: Uuid(id),
    }))];
    out.extend(config_diff(
        resource_type::TOPIC,
        name,
        &BTreeMap::new(),
        configs,
    ));
    out.extend(add_placed_partitions(id, 0, partitions));
    out
}

/// Placed partitions `from..` of a topic.
pub fn add_placed_partitions(
    topic_id: [u8; 16],
    from: i32,
    partitions: &[NewPartition],
) -> Vec<ApiMessageAndVersion> {
    partitions
        .iter()
        .zip(from..)
        .map(|(p, index)| new_partition_record(topic_id, index, p))
        .collect()
}

fn single_replica(node: i32) -> NewPartition {
    NewPartition {
        replicas: vec![node],
        isr: vec![node],
        leader: node,
    }
}

/// A new topic whose partitions have one replica each, on `node` (a single node's
/// metadata, as migrated from its JSON log).
pub fn create_topic(
    name: &str,
    id: [u8; 16],
    partitions: i32,
    node: i32,
    configs: &BTreeMap<String, String>,
) -> Vec<ApiMessageAndVersion> {
    let placed = vec![single_replica(node); partitions.max(0) as usize];
    create_placed_topic(name, id, &placed, configs)
}

/// Partitions `from..to` of a topic, one replica each on `node`.
pub fn add_partitions(
    topic_id: [u8; 16],
    from: i32,
    to: i32,
    node: i32,
) -> Vec<ApiMessageAndVersion> {
    let placed = vec![single_replica(node); (to - from).max(0) as usize];
    add_placed_partitions(topic_id, from, &placed)
}

/// One `ConfigRecord` per key whose value differs between `old` and `new` (a null
/// value removes the key), so that replaying them turns `old` into `new`.
pub fn config_diff(
    resource_type: i8,
    resource_name: &str,
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) -> Vec<ApiMessageAndVersion> {
    let record = |name: &str, value: Option<&String>| {
        rec(MetadataRecord::Config(ConfigRecord {
            resource_type,
            resource_name: resource_name.to_string(),
            name: name.to_string(),
            value: value.cloned(),
        }))
    };
    let removed = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .map(|k| record(k, None));
    let set = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(v))
        .map(|(k, v)| record(k, Some(v)));
    removed.chain(set).collect()
}

pub fn remove_topic(topic_id: [u8; 16]) -> ApiMessageAndVersion {
    rec(MetadataRecord::RemoveTopic(RemoveTopicRecord {
        topic_id: Uuid(topic_id),
    }))
}

/// Producer ids below `end` are handed out (a block reserved by broker `node`).
pub fn producer_ids(node: i32, end: i64) -> ApiMessageAndVersion {
    rec(MetadataRecord::ProducerIds(ProducerIdsRecord {
        broker_id: node,
        broker_epoch: -1,
        next_producer_id: end,
    }))
}

pub fn feature_level(name: &str, level: i16) -> ApiMessageAndVersion {
    rec(MetadataRecord::FeatureLevel(FeatureLevelRecord {
        name: name.to_string(),
        feature_level: level,
    }))
}

/// A user's SCRAM credential for a mechanism, set or replaced.
pub fn scram_credential(
    user: &str,
    m: ScramMechanism,
    credential: &ScramCredential,
) -> ApiMessageAndVersion {
    rec(MetadataRecord::UserScramCredential(
        UserScramCredentialRecord {
            name: user.to_string(),
            mechanism: m.type_id(),
            salt: credential.salt.clone().into(),
            stored_key: credential.stored_key.clone().into(),
            server_key: credential.server_key.clone().into(),
            iterations: credential.iterations,
        },
    ))
}

pub fn remove_scram_credential(user: &str, m: ScramMechanism) -> ApiMessageAndVersion {
    rec(MetadataRecord::RemoveUserScramCredential(
        RemoveUserScramCredentialRecord {
            name: user.to_string(),
            mechanism: m.type_id(),
        },
    ))
}

/// A new ACL, under a fresh random id.
pub fn acl(id: [u8; 16], acl: &Acl) -> ApiMessageAndVersion {
    rec(MetadataRecord::AccessControlEntry(
        AccessControlEntryRecord {
            id: Uuid(id),
            resource_type: acl.resource_type.code(),
            resource_name: acl.resource_name.clone(),
            pattern_type: acl.pattern_type.code(),
            principal: acl.principal.clone(),
            host: acl.host.clone(),
            operation: acl.operation.code(),
            permission_type: acl.permission.code(),
        },
    ))
}

pub fn remove_acl(id: [u8; 16]) -> ApiMessageAndVersion {
    rec(MetadataRecord::RemoveAccessControlEntry(
        RemoveAccessControlEntryRecord { id: Uuid(id) },
    ))
}

/// The records a metadata log starts with that `image` lacks: the finalized
/// `metadata.version` (Kafka writes it first, from its bootstrap checkpoint). Spate adds
/// it to the first proposal of a new log.
pub fn bootstrap(image: &MetadataImage) -> Vec<ApiMessageAndVersion> {
    if image.features.contains_key(METADATA_VERSION_FEATURE) {
        return Vec::new();
    }
    vec![feature_level(METADATA_VERSION_FEATURE, METADATA_VERSION)]
}

/// What one proposal carries at most, in framed bytes: well under the quorum's
/// `max_batch_bytes` (1 MiB by default), which also counts length prefixes.
pub const BATCH_BUDGET: usize = 512 << 10;

/// Cuts `records` into proposals of at most `budget` framed bytes each, in order (a
/// record larger than the budget goes alone; the quorum refuses it if it is too large).
/// Each proposal commits atomically, not the whole: replay is per record, and every
/// change Spate writes is valid after any prefix of its records.
pub fn split_batches(
    records: Vec<ApiMessageAndVersion>,
    budget: usize,
) -> Vec<Vec<ApiMessageAndVersion>> {
    let mut out: Vec<Vec<ApiMessageAndVersion>> = Vec::new();
    let mut size = 0;
    for r in records {
        // The frame's length and a length prefix of at most five bytes.
        let len = r.to_bytes().len() + 5;
        match out.last_mut() {
            Some(batch) if size + len <= budget => batch.push(r),
            _ => {
                out.push(vec![r]);
                size = 0;
            }
        }
        size += len;
    }
    out
}

/// The records that rebuild `image` when replayed on an empty one (a snapshot):
/// features, brokers, topics with their configs and partitions, broker configs,
/// producer ids, SCRAM credentials, ACLs.
pub fn image_records(image: &MetadataImage) -> Vec<ApiMessageAndVersion> {
    let mut out: Vec<ApiMessageAndVersion> = image
        .features
        .iter()
        .map(|(name, level)| feature_level(name, *level))
        .collect();
    for b in image.brokers.values() {
        out.push(rec(MetadataRecord::RegisterBroker(RegisterBrokerRecord {
            broker_id: b.id,
            incarnation_id: Uuid(b.incarnation_id),
            broker_epoch: b.epoch,
            end_points: b
                .endpoints
                .iter()
                .map(|(name, host, port, protocol)| BrokerEndpoint {
                    name: name.clone(),
                    host: host.clone(),
                    port: *port,
                    security_protocol: *protocol,
                })
                .collect(),
            rack: b.rack.clone(),
            fenced: b.fenced,
            in_controlled_shutdown: b.in_controlled_shutdown,
            ..Default::default()
        })));
    }
    for t in image.topics.values() {
        out.push(rec(MetadataRecord::Topic(TopicRecord {
            name: t.name.clone(),
            topic_id: Uuid(t.id),
        })));
        out.extend(config_diff(
            resource_type::TOPIC,
            &t.name,
            &BTreeMap::new(),
            &t.configs,
        ));
        for (index, p) in t.partitions.iter().enumerate() {
            out.push(partition_record(t.id, index as i32, p));
        }
    }
    for (resource, configs) in &image.broker_configs {
        out.extend(config_diff(
            resource_type::BROKER,
            resource,
            &BTreeMap::new(),
            configs,
        ));
    }
    for (group, configs) in &image.group_configs {
        out.extend(config_diff(
            resource_type::GROUP,
            group,
            &BTreeMap::new(),
            configs,
        ));
    }
    if image.producer_ids_end > 0 {
        out.push(producer_ids(-1, image.producer_ids_end));
    }
    for (user, credentials) in image.scram.iter() {
        for (m, credential) in credentials {
            out.push(scram_credential(user, *m, credential));
        }
    }
    out.extend(image.acls.iter().map(|(id, a)| acl(*id, a)));
    out.extend(image.client_quotas.records());
    out
}

fn partition_record(topic_id: [u8; 16], index: i32, p: &PartitionInfo) -> ApiMessageAndVersion {
    rec(MetadataRecord::Partition(PartitionRecord {
        partition_id: index,
        topic_id: Uuid(topic_id),
        replicas: p.replicas.clone(),
        isr: p.isr.clone(),
        leader: p.leader,
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch,
        directories: p.directories.iter().map(|d| Uuid(*d)).collect(),
        leader_recovery_state: p.leader_recovery_state,
        adding_replicas: p.adding_replicas.clone(),
        removing_replicas: p.removing_replicas.clone(),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use spate_net::metadata_records::{BrokerRegistrationChangeRecord, PartitionChangeRecord};

    /// Replaying an image's records on an empty image gives the same image, and every
    /// record survives its frame (what the quorum checks before a proposal).
    #[test]
    fn an_image_round_trips_through_its_records() {
        let mut img = MetadataImage::default();
        let mut c = BTreeMap::new();
        c.insert("cleanup.policy".to_string(), "compact".to_string());
        img.replay_all(&[feature_level("metadata.version", METADATA_VERSION)]);
        img.replay_all(&create_topic("a", [1; 16], 3, 0, &c));
        img.replay_all(&create_topic("b", [2; 16], 1, 0, &BTreeMap::new()));
        img.replay_all(&config_diff(
            resource_type::BROKER,
            "0",
            &BTreeMap::new(),
            &c,
        ));
        img.replay_all(&[producer_ids(0, 2000)]);
        img.replay(&MetadataRecord::RegisterBroker(RegisterBrokerRecord {
            broker_id: 0,
            incarnation_id: Uuid([5; 16]),
            broker_epoch: 7,
            end_points: vec![BrokerEndpoint {
                name: "PLAINTEXT".into(),
                host: "127.0.0.1".into(),
                port: 9092,
                security_protocol: 0,
            }],
            rack: Some("r1".into()),
            fenced: true,
            ..Default::default()
        }));
        img.replay(&MetadataRecord::BrokerRegistrationChange(
            BrokerRegistrationChangeRecord {
                broker_id: 0,
                broker_epoch: 7,
                fenced: UNFENCE,
                ..Default::default()
            },
        ));
        img.replay(&MetadataRecord::PartitionChange(PartitionChangeRecord {
            partition_id: 1,
            topic_id: Uuid([1; 16]),
            leader: -1,
            isr: Some(vec![]),
            ..Default::default()
        }));
        // A reassignment in progress survives the snapshot.
        img.replay(&MetadataRecord::PartitionChange(PartitionChangeRecord {
            partition_id: 2,
            topic_id: Uuid([1; 16]),
            replicas: Some(vec![1, 2, 0]),
            adding_replicas: Some(vec![1, 2]),
            removing_replicas: Some(vec![0]),
            directories: Some(vec![Uuid::ZERO; 3]),
            ..Default::default()
        }));
        assert!(img.partition("a", 2).unwrap().is_reassigning());
        let m = ScramMechanism::Sha512;
        let credential = ScramCredential::from_salted_password(m, b"salt", &[7; 64], 4096);
        img.replay_all(&[
            scram_credential("alice", m, &credential),
            scram_credential("bob", m, &credential),
            scram_credential("bob", ScramMechanism::Sha256, &credential),
            remove_scram_credential("bob", m),
        ]);
        assert_eq!(img.scram_credential("alice", m), Some(&credential));
        assert_eq!(img.scram_credential("bob", m), None);
        assert_eq!(img.scram_credential_count(), 2);
        let topic_acl = Acl::from_wire(2, "a", 4, "User:alice", "*", 3, 3).unwrap();
        img.replay_all(&[
            acl([1; 16], &topic_acl),
            acl([2; 16], &topic_acl),
            remove_acl([1; 16]),
        ]);
        assert_eq!(img.acls.len(), 1);
        img.offset = Some(42);
        assert!(!img.brokers[&0].fenced);

        let records = image_records(&img);
        for r in &records {
            assert_eq!(&ApiMessageAndVersion::decode(r.to_bytes()).unwrap(), r);
        }
        assert_eq!(MetadataImage::from_records(Some(42), &records), img);
    }

    #[test]
    fn batches_stay_within_the_budget_and_keep_the_order() {
        let records: Vec<ApiMessageAndVersion> = (0..100).map(|i| producer_ids(0, i)).collect();
        let one = records[0].to_bytes().len() + 5;
        let batches = split_batches(records.clone(), one * 30);
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            [30, 30, 30, 10]
        );
        assert_eq!(batches.concat(), records);
        // A budget below one record still makes progress, one record a batch.
        assert_eq!(split_batches(records, 1).len(), 100);
        assert!(split_batches(Vec::new(), 1).is_empty());
    }

    #[test]
    fn bootstrap_only_when_the_version_is_missing() {
        let mut img = MetadataImage::default();
        let b = bootstrap(&img);
        assert_eq!(b, vec![feature_level("metadata.version", METADATA_VERSION)]);
        img.replay_all(&b);
        assert!(bootstrap(&img).is_empty());
    }

    #[test]
    fn config_diff_sets_changed_and_removes_missing_keys() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let old = map(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let new = map(&[("a", "1"), ("b", "9"), ("d", "4")]);
        let got: Vec<(String, Option<String>)> = config_diff(resource_type::TOPIC, "t", &old, &new)
            .into_iter()
            .map(|r| match r.record {
                MetadataRecord::Config(c) => {
                    assert_eq!((c.resource_type, c.resource_name.as_str()), (2, "t"));
                    (c.name, c.value)
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("c".to_string(), None),
                ("b".to_string(), Some("9".to_string())),
                ("d".to_string(), Some("4".to_string())),
            ]
        );
    }
}
