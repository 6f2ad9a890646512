//! The metadata state machine: an immutable image built by replaying Kafka's KRaft
//! metadata records, replaced whole on every change and shared between shards behind
//! an `Arc`.
//!
//! Replay follows Kafka's `MetadataDelta`: a `PartitionRecord` is a partition's whole
//! state, a `PartitionChangeRecord` changes some of it (a new leader bumps the leader
//! epoch, every change bumps the partition epoch), topic configs go with their topic.
//! Records are validated by the controller before they are proposed, so one that does
//! not fit the image (a partition of an unknown topic, ...) is skipped with a warning
//! rather than stopping the broker.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use spate_net::metadata_frame::ApiMessageAndVersion;
use spate_net::metadata_records::{
    AccessControlEntryRecord, BrokerRegistrationChangeRecord, ConfigRecord, MetadataRecord,
    PartitionChangeRecord, PartitionRecord, RegisterBrokerRecord, UserScramCredentialRecord,
};

use super::records::{resource_type, FENCE, UNFENCE};
use crate::security::authorizer::acl::{Acl, Operation, PatternType, Permission, ResourceType};
use crate::security::authorizer::store::AclStore;
use crate::security::scram::{ScramCredential, ScramMechanism};

#[derive(Debug, Clone, PartialEq)]
pub struct PartitionInfo {
    /// Placement slot; the owner shard is `slot % shard_count`. Not in Kafka's records:
    /// derived from the topic id and partition index ([`slot_of`]).
    pub slot: u32,
    /// Replica broker ids, preferred leader first.
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// The leader's broker id, -1 when there is none.
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// The log directory id of each replica (all zeros: the broker chooses).
    pub directories: Vec<[u8; 16]>,
    /// Kafka's `LeaderRecoveryState`: [`RECOVERED`], or [`RECOVERING`] after an unclean
    /// election until the leader reports its log recovered (AlterPartition).
    pub leader_recovery_state: i8,
    /// Replicas a reassignment in progress adds (they are in `replicas` too).
    pub adding_replicas: Vec<i32>,
    /// Replicas a reassignment in progress removes once the others are in sync (they
    /// are in `replicas` too, after the target's).
    pub removing_replicas: Vec<i32>,
}

/// `LeaderRecoveryState.RECOVERED`: the leader's log is consistent.
pub const RECOVERED: i8 = 0;
/// `LeaderRecoveryState.RECOVERING`: the leader was elected uncleanly; its ISR stays
/// itself alone until it reports the recovery done.
pub const RECOVERING: i8 = 1;

impl PartitionInfo {
    /// Whether `node` holds a replica (and so opens the partition's log).
    pub fn is_replica(&self, node: i32) -> bool {
        self.replicas.contains(&node)
    }

    /// Whether a reassignment is in progress (Kafka's `isReassignmentInProgress`).
    pub fn is_reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopicImage {
    pub name: String,
    pub id: [u8; 16],
    pub partitions: Vec<PartitionInfo>,
    /// Config overrides only; defaults come from the broker config.
    pub configs: BTreeMap<String, String>,
}

/// A broker as it registered with the controller.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerRegistration {
    pub id: i32,
    pub epoch: i64,
    pub incarnation_id: [u8; 16],
    /// Listener name, host, port and security protocol, as registered.
    pub endpoints: Vec<(String, String, u16, i16)>,
    pub rack: Option<String>,
    pub fenced: bool,
    pub in_controlled_shutdown: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetadataImage {
    /// The metadata log index of the last record applied (`None`: nothing yet).
    pub offset: Option<u64>,
    pub topics: BTreeMap<String, Arc<TopicImage>>,
    pub topic_names_by_id: HashMap<[u8; 16], String>,
    /// Every producer id below this has been handed out.
    pub producer_ids_end: i64,
    /// Dynamic broker configs by resource: a broker id, or "" for the cluster default.
    pub broker_configs: BTreeMap<String, BTreeMap<String, String>>,
    /// Consumer group configs by group id (only groups that have some).
    pub group_configs: BTreeMap<String, BTreeMap<String, String>>,
    pub brokers: BTreeMap<i32, BrokerRegistration>,
    /// Finalized feature levels (`metadata.version`, ...).
    pub features: BTreeMap<String, i16>,
    /// SCRAM credentials by user and mechanism (UserScramCredentialRecord); behind an
    /// `Arc` so that the copies of the image each change makes do not copy them.
    pub scram: Arc<BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>>,
    /// ACLs by record id (AccessControlEntryRecord), likewise behind an `Arc`.
    pub acls: Arc<AclStore>,
    /// Client quotas by entity (ClientQuotaRecord), likewise behind an `Arc`.
    pub client_quotas: Arc<crate::quota::store::ClientQuotas>,
}

/// The placement slot of a partition: the topic's own starting point (from its random
/// id) plus the partition index, so that one topic's partitions go round-robin over
/// the shards and different topics start on different shards. It depends on nothing
/// but the partition's identity, so it never changes while the broker runs (a
/// partition must not move between shards) and every broker derives the same.
pub fn slot_of(topic_id: &[u8; 16], partition: i32) -> u32 {
    let start = u32::from_be_bytes([topic_id[12], topic_id[13], topic_id[14], topic_id[15]]);
    start.wrapping_add(partition as u32)
}

impl MetadataImage {
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicImage>> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: &[u8; 16]) -> Option<&Arc<TopicImage>> {
        self.topic_names_by_id
            .get(id)
            .and_then(|n| self.topics.get(n))
    }

    /// A partition's state, if the topic and partition exist.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionInfo> {
        let index = usize::try_from(partition).ok()?;
        self.topics.get(topic)?.partitions.get(index)
    }

    pub fn scram_credential(&self, user: &str, m: ScramMechanism) -> Option<&ScramCredential> {
        self.scram.get(user)?.get(&m)
    }

    /// How many SCRAM credentials there are (every user's, every mechanism's).
    pub fn scram_credential_count(&self) -> usize {
        self.scram.values().map(BTreeMap::len).sum()
    }

    /// Whether broker `id` is registered and not fenced.
    /// Partitions without a leader.
    pub fn offline_partitions(&self) -> usize {
        self.topics
            .values()
            .flat_map(|t| &t.partitions)
            .filter(|p| p.leader < 0)
            .count()
    }

    pub fn is_live(&self, id: i32) -> bool {
        self.brokers.get(&id).is_some_and(|b| !b.fenced)
    }

    /// Whether broker `id` may lead and be in sync: registered, not fenced, not in
    /// controlled shutdown (Kafka's `ClusterControlManager.isActive`).
    pub fn is_active(&self, id: i32) -> bool {
        self.brokers
            .get(&id)
            .is_some_and(|b| !b.fenced && !b.in_controlled_shutdown)
    }

    /// The image that `records` (a snapshot's) describe, at `offset`.
    pub fn from_records(offset: Option<u64>, records: &[ApiMessageAndVersion]) -> Self {
        let mut image = MetadataImage::default();
        image.replay_all(records);
        image.offset = offset;
        image
    }

    /// Applies the records of the committed entry at `offset`.
    pub fn apply_batch(&mut self, offset: u64, records: &[ApiMessageAndVersion]) {
        self.replay_all(records);
        self.offset = Some(offset);
    }

    pub fn replay_all(&mut self, records: &[ApiMessageAndVersion]) {
        for r in records {
            self.replay(&r.record);
        }
    }

    /// Applies one record.
    pub fn replay(&mut self, record: &MetadataRecord) {
        match record {
            MetadataRecord::Topic(r) => {
                let id = r.topic_id.0;
                match self.topics.get(&r.name) {
                    // Replayed again (an interrupted migration is proposed anew).
                    Some(t) if t.id == id => {}
                    Some(_) => {
                        tracing::warn!(topic = %r.name, "metadata: topic record for an existing name skipped")
                    }
                    None => {
                        let topic = TopicImage {
                            name: r.name.clone(),
                            id,
                            partitions: Vec::new(),
                            configs: BTreeMap::new(),
                        };
                        self.topic_names_by_id.insert(id, r.name.clone());
                        self.topics.insert(r.name.clone(), Arc::new(topic));
                    }
                }
            }
            MetadataRecord::Partition(r) => self.replay_partition(r),
            MetadataRecord::PartitionChange(r) => self.replay_partition_change(r),
            MetadataRecord::Config(r) => self.replay_config(r),
            MetadataRecord::RemoveTopic(r) => {
                if let Some(name) = self.topic_names_by_id.remove(&r.topic_id.0) {
                    // Its configs go with it (Kafka's ConfigurationsDelta does the same).
                    self.topics.remove(&name);
                }
            }
            MetadataRecord::ProducerIds(r) => {
                self.producer_ids_end = self.producer_ids_end.max(r.next_producer_id)
            }
            MetadataRecord::RegisterBroker(r) => {
                self.brokers.insert(r.broker_id, registration(r));
            }
            MetadataRecord::UnregisterBroker(r) => {
                if self
                    .brokers
                    .get(&r.broker_id)
                    .is_some_and(|b| b.epoch == r.broker_epoch)
                {
                    self.brokers.remove(&r.broker_id);
                }
            }
            MetadataRecord::BrokerRegistrationChange(r) => self.replay_registration_change(r),
            MetadataRecord::FenceBroker(r) => self.set_fenced(r.id, r.epoch, true),
            MetadataRecord::UnfenceBroker(r) => self.set_fenced(r.id, r.epoch, false),
            MetadataRecord::FeatureLevel(r) => {
                if r.feature_level == 0 {
                    self.features.remove(&r.name);
                } else {
                    self.features.insert(r.name.clone(), r.feature_level);
                }
            }
            MetadataRecord::UserScramCredential(r) => self.replay_scram(r),
            MetadataRecord::RemoveUserScramCredential(r) => {
                let scram = Arc::make_mut(&mut self.scram);
                let removed = ScramMechanism::from_type(r.mechanism).and_then(|m| {
                    let user = scram.get_mut(&r.name)?;
                    let removed = user.remove(&m);
                    if user.is_empty() {
                        scram.remove(&r.name);
                    }
                    removed
                });
                if removed.is_none() {
                    tracing::warn!(user = %r.name, mechanism = r.mechanism, "metadata: removal of an unknown SCRAM credential skipped");
                }
            }
            MetadataRecord::AccessControlEntry(r) => match acl_of(r) {
                Some(acl) => Arc::make_mut(&mut self.acls).insert(r.id.0, acl),
                None => tracing::warn!(?r, "metadata: ACL with unknown codes skipped"),
            },
            MetadataRecord::RemoveAccessControlEntry(r) => {
                if Arc::make_mut(&mut self.acls).remove(&r.id.0).is_none() {
                    tracing::warn!("metadata: removal of an unknown ACL skipped");
                }
            }
            MetadataRecord::ClientQuota(r) => Arc::make_mut(&mut self.client_quotas).replay(r),
            // Records for state Spate does not keep (tokens,
            // controller registrations, transactions markers of the log): no effect.
            other => tracing::debug!(kind = ?other.record_type(), "metadata: record ignored"),
        }
    }

    fn replay_scram(&mut self, r: &UserScramCredentialRecord) {
        let Some(m) = ScramMechanism::from_type(r.mechanism) else {
            tracing::warn!(user = %r.name, mechanism = r.mechanism, "metadata: SCRAM credential of an unknown mechanism skipped");
            return;
        };
        let credential = ScramCredential {
            salt: r.salt.to_vec(),
            stored_key: r.stored_key.to_vec(),
            server_key: r.server_key.to_vec(),
            iterations: r.iterations,
        };
        Arc::make_mut(&mut self.scram)
            .entry(r.name.clone())
            .or_default()
            .insert(m, credential);
    }

    fn replay_partition(&mut self, r: &PartitionRecord) {
        let Some(name) = self.topic_names_by_id.get(&r.topic_id.0) else {
            tracing::warn!(
                partition = r.partition_id,
                "metadata: partition of an unknown topic skipped"
            );
            return;
        };
        let Some(topic) = self.topics.get_mut(name) else {
            return;
        };
        let topic = Arc::make_mut(topic);
        let index = r.partition_id;
        let info = PartitionInfo {
            slot: slot_of(&topic.id, index),
            replicas: r.replicas.clone(),
            isr: r.isr.clone(),
            leader: r.leader,
            leader_epoch: r.leader_epoch,
            partition_epoch: r.partition_epoch,
            directories: r.directories.iter().map(|d| d.0).collect(),
            leader_recovery_state: r.leader_recovery_state,
            adding_replicas: r.adding_replicas.clone(),
            removing_replicas: r.removing_replicas.clone(),
        };
        match usize::try_from(index) {
            Ok(i) if i < topic.partitions.len() => topic.partitions[i] = info,
            Ok(i) if i == topic.partitions.len() => topic.partitions.push(info),
            _ => {
                tracing::warn!(topic = %topic.name, partition = index, "metadata: partition out of sequence skipped")
            }
        }
    }

    fn replay_partition_change(&mut self, r: &PartitionChangeRecord) {
        let Some(p) = self
            .topic_names_by_id
            .get(&r.topic_id.0)
            .and_then(|name| self.topics.get_mut(name))
            .and_then(|t| {
                let i = usize::try_from(r.partition_id).ok()?;
                Arc::make_mut(t).partitions.get_mut(i)
            })
        else {
            tracing::warn!(
                partition = r.partition_id,
                "metadata: change of an unknown partition skipped"
            );
            return;
        };
        if let Some(replicas) = &r.replicas {
            p.replicas = replicas.clone();
        }
        if let Some(isr) = &r.isr {
            p.isr = isr.clone();
        }
        if let Some(adding) = &r.adding_replicas {
            p.adding_replicas = adding.clone();
        }
        if let Some(removing) = &r.removing_replicas {
            p.removing_replicas = removing.clone();
        }
        if let Some(dirs) = &r.directories {
            p.directories = dirs.iter().map(|d| d.0).collect();
        }
        // -1: no change of the recovery state.
        if r.leader_recovery_state != -1 {
            p.leader_recovery_state = r.leader_recovery_state;
        }
        // -2: no leader change (Kafka's NO_LEADER_CHANGE).
        if r.leader != -2 {
            p.leader = r.leader;
            p.leader_epoch += 1;
        }
        p.partition_epoch += 1;
    }

    fn replay_config(&mut self, r: &ConfigRecord) {
        let set = |configs: &mut BTreeMap<String, String>| match &r.value {
            Some(v) => {
                configs.insert(r.name.clone(), v.clone());
            }
            None => {
                configs.remove(&r.name);
            }
        };
        match r.resource_type {
            resource_type::TOPIC => match self.topics.get_mut(&r.resource_name) {
                Some(t) => set(&mut Arc::make_mut(t).configs),
                None => {
                    tracing::warn!(topic = %r.resource_name, "metadata: config of an unknown topic skipped")
                }
            },
            resource_type::BROKER => {
                let configs = self
                    .broker_configs
                    .entry(r.resource_name.clone())
                    .or_default();
                set(configs);
                if configs.is_empty() {
                    self.broker_configs.remove(&r.resource_name);
                }
            }
            resource_type::GROUP => {
                let configs = self
                    .group_configs
                    .entry(r.resource_name.clone())
                    .or_default();
                set(configs);
                if configs.is_empty() {
                    self.group_configs.remove(&r.resource_name);
                }
            }
            other => tracing::debug!(resource_type = other, "metadata: config record ignored"),
        }
    }

    fn replay_registration_change(&mut self, r: &BrokerRegistrationChangeRecord) {
        let Some(b) = self
            .brokers
            .get_mut(&r.broker_id)
            .filter(|b| b.epoch == r.broker_epoch)
        else {
            tracing::warn!(
                broker = r.broker_id,
                "metadata: change of an unknown broker registration skipped"
            );
            return;
        };
        match r.fenced {
            FENCE => b.fenced = true,
            UNFENCE => b.fenced = false,
            _ => {}
        }
        // 1: in controlled shutdown (Kafka's BrokerRegistrationInControlledShutdownChange).
        if r.in_controlled_shutdown == 1 {
            b.in_controlled_shutdown = true;
        }
    }

    fn set_fenced(&mut self, id: i32, epoch: i64, fenced: bool) {
        match self.brokers.get_mut(&id).filter(|b| b.epoch == epoch) {
            Some(b) => b.fenced = fenced,
            None => tracing::warn!(
                broker = id,
                "metadata: fencing change of an unknown broker skipped"
            ),
        }
    }
}

/// An ACL from its record; `None` when a code is not a valid ACL's (the controller
/// writes none such).
fn acl_of(r: &AccessControlEntryRecord) -> Option<Acl> {
    let acl = Acl {
        resource_type: ResourceType::from_code(r.resource_type)?,
        resource_name: r.resource_name.clone(),
        pattern_type: PatternType::from_code(r.pattern_type)?,
        principal: r.principal.clone(),
        host: r.host.clone(),
        operation: Operation::from_code(r.operation)?,
        permission: Permission::from_code(r.permission_type)?,
    };
    let concrete = acl.resource_type != ResourceType::Any
        && matches!(
            acl.pattern_type,
            PatternType::Literal | PatternType::Prefixed
        )
        && acl.operation != Operation::Any
        && acl.permission != Permission::Any;
    concrete.then_some(acl)
}

fn registration(r: &RegisterBrokerRecord) -> BrokerRegistration {
    BrokerRegistration {
        id: r.broker_id,
        epoch: r.broker_epoch,
        incarnation_id: r.incarnation_id.0,
        endpoints: r
            .end_points
            .iter()
            .map(|e| (e.name.clone(), e.host.clone(), e.port, e.security_protocol))
            .collect(),
        rack: r.rack.clone(),
        fenced: r.fenced,
        in_controlled_shutdown: r.in_controlled_shutdown,
    }
}

/// The image is the state the controller quorum replicates: every controller replays
/// the same records in the same order, and a snapshot is the image written as records.
impl spate_replication::MetadataStateMachine for MetadataImage {
    fn apply(&mut self, index: u64, records: &[ApiMessageAndVersion]) {
        self.apply_batch(index, records);
    }

    fn snapshot_records(&self) -> Vec<ApiMessageAndVersion> {
        super::records::image_records(self)
    }

    fn restore(&mut self, records: &[ApiMessageAndVersion]) {
        // The quorum sets the offset with the next applied entry; the snapshot's own is
        // not passed here, and nothing on the controller side reads it.
        *self = MetadataImage::from_records(None, records);
    }
}

#[cfg(test)]
mod tests {
    use super::super::records;
    use super::*;
    use spate_net::metadata_records::RemoveTopicRecord;
    use spate_net::Uuid;

    fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn create_extend_configure_delete() {
        let mut img = MetadataImage::default();
        let id = [1; 16];
        img.replay_all(&records::create_topic(
            "t",
            id,
            2,
            0,
            &configs(&[("retention.ms", "5")]),
        ));
        img.replay_all(&records::add_partitions(id, 2, 3, 0));
        let t = img.topic_by_id(&id).unwrap();
        assert_eq!(t.partitions.len(), 3);
        assert_eq!(t.configs, configs(&[("retention.ms", "5")]));
        let p = &t.partitions[2];
        assert_eq!(
            (
                p.slot,
                &p.replicas[..],
                &p.isr[..],
                p.leader,
                p.leader_epoch
            ),
            (slot_of(&id, 2), &[0][..], &[0][..], 0, 0)
        );
        img.replay_all(&records::config_diff(
            resource_type::TOPIC,
            "t",
            &t.configs.clone(),
            &configs(&[("cleanup.policy", "compact")]),
        ));
        assert_eq!(
            img.topic("t").unwrap().configs,
            configs(&[("cleanup.policy", "compact")])
        );
        img.replay(&MetadataRecord::RemoveTopic(RemoveTopicRecord {
            topic_id: Uuid(id),
        }));
        assert!(img.topic("t").is_none());
        assert!(img.topic_by_id(&id).is_none());
        img.replay_all(&records::config_diff(
            resource_type::BROKER,
            "",
            &BTreeMap::new(),
            &configs(&[("log.retention.ms", "9")]),
        ));
        assert_eq!(
            img.broker_configs.get(""),
            Some(&configs(&[("log.retention.ms", "9")]))
        );
        img.replay_all(&records::config_diff(
            resource_type::BROKER,
            "",
            &configs(&[("log.retention.ms", "9")]),
            &BTreeMap::new(),
        ));
        assert!(img.broker_configs.is_empty());
    }

    #[test]
    fn partition_change_bumps_epochs_as_kafka_does() {
        let mut img = MetadataImage::default();
        let id = [2; 16];
        img.replay_all(&records::create_topic("t", id, 1, 3, &BTreeMap::new()));
        // ISR only: the partition epoch moves, the leader epoch does not.
        img.replay(&MetadataRecord::PartitionChange(PartitionChangeRecord {
            partition_id: 0,
            topic_id: Uuid(id),
            isr: Some(vec![]),
            ..Default::default()
        }));
        let p = &img.topic("t").unwrap().partitions[0];
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (3, 0, 1));
        assert!(p.isr.is_empty());
        // A leader change bumps both.
        img.replay(&MetadataRecord::PartitionChange(PartitionChangeRecord {
            partition_id: 0,
            topic_id: Uuid(id),
            leader: -1,
            ..Default::default()
        }));
        let p = &img.topic("t").unwrap().partitions[0];
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (-1, 1, 2));
    }

    #[test]
    fn a_topic_record_replayed_again_changes_nothing() {
        let mut img = MetadataImage::default();
        let batch = records::create_topic("t", [3; 16], 2, 0, &configs(&[("a", "b")]));
        img.replay_all(&batch);
        let once = img.clone();
        img.replay_all(&batch);
        assert_eq!(img, once);
        // The same name with another id is refused.
        img.replay_all(&records::create_topic("t", [4; 16], 1, 0, &BTreeMap::new()));
        assert_eq!(img, once);
    }

    #[test]
    fn slots_spread_one_topic_round_robin() {
        let id = [9; 16];
        let owners: Vec<u32> = (0..6).map(|p| slot_of(&id, p) % 3).collect();
        let first = owners[0];
        assert_eq!(owners, (0..6).map(|i| (first + i) % 3).collect::<Vec<_>>());
    }
}
