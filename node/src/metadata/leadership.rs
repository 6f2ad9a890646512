//! Partition leadership and ISR changes, as Kafka's controller makes them
//! (`PartitionChangeBuilder`, without KIP-966's eligible leader replicas, which Spate
//! does not build):
//!
//! * [`build`] takes a partition to a [`Target`] (ISR, replicas, the reassignment in
//!   progress, leader recovery state), completing a reassignment whose new replicas
//!   are all in sync; [`change`] is the same for a new ISR only.
//! * [`change`] turns a partition's target ISR, an election kind and a target leader
//!   recovery state into the `PartitionChangeRecord` that gets there, or nothing when
//!   the partition already is there. An ISR change bumps the partition epoch only; a
//!   new leader bumps the leader epoch too (the image's replay does both).
//! * [`elect_leaders`] runs after every broker change (fenced, unfenced, re-registered,
//!   in controlled shutdown): a broker that is not active (fenced, shutting down, or
//!   unregistered) leaves every ISR it is in, except that the last member stays (the
//!   leader becomes -1 and the ISR remembers it, so no unclean election happens unless
//!   the topic allows it); partitions whose leader is not active get the first active
//!   replica of their ISR, or, with `unclean.leader.election.enable`, the first active
//!   replica at all, with the ISR reset to it and the leader RECOVERING.
//! * A replica a broker reports offline (its log directory failed: [`OfflineReplicas`],
//!   Kafka's KIP-858) is treated as the replica of an inactive broker, for that
//!   partition only: it leaves the ISR (unless it is the last member) and may not lead.

use std::collections::HashSet;

use spate_net::metadata_frame::ApiMessageAndVersion;
use spate_net::metadata_records::{MetadataRecord, PartitionChangeRecord};
use spate_net::Uuid;

use super::image::{PartitionInfo, RECOVERING};
use super::MetadataImage;
use crate::config::BrokerConfig;

/// Kafka's "no leader" in partition records.
pub const NO_LEADER: i32 = -1;
/// `PartitionChangeRecord.leader` when the leader does not change.
pub const NO_LEADER_CHANGE: i32 = -2;
/// The topic config that allows electing a replica outside the ISR.
pub const UNCLEAN_ELECTION: &str = "unclean.leader.election.enable";

/// The replicas brokers reported offline (a failed log directory, a log that could not
/// be opened): (broker, topic id, partition). Kafka knows them from the directory each
/// replica is assigned to and the directories a broker reports offline; Spate's brokers
/// report the replicas themselves (`metadata/brokers.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OfflineReplicas(HashSet<(i32, [u8; 16], i32)>);

impl OfflineReplicas {
    pub fn new(replicas: impl IntoIterator<Item = (i32, [u8; 16], i32)>) -> Self {
        OfflineReplicas(replicas.into_iter().collect())
    }

    pub fn contains(&self, broker: i32, topic_id: [u8; 16], partition: i32) -> bool {
        !self.0.is_empty() && self.0.contains(&(broker, topic_id, partition))
    }

    /// Kafka's `LeaderAcceptor`: whether replica `r` of the partition may lead and be
    /// in sync: its broker is active and it is not offline.
    pub fn acceptable<'a>(
        &'a self,
        image: &'a MetadataImage,
        topic_id: [u8; 16],
        partition: i32,
    ) -> impl Fn(i32) -> bool + 'a {
        move |r| image.is_active(r) && !self.contains(r, topic_id, partition)
    }
}

/// How a partition's leader is chosen (Kafka's `PartitionChangeBuilder.Election`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Election {
    /// The preferred replica (the first) if it may lead, else as `Online`.
    Preferred,
    /// The current leader if it still may lead, else the first replica in the ISR that
    /// may.
    Online,
    /// As `Online`, then any replica that may lead (the ISR becomes it alone).
    Unclean,
}

/// Where a change takes a partition: its ISR, replicas, the reassignment in progress
/// and the leader recovery state (Kafka's `PartitionChangeBuilder` targets).
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// An empty ISR keeps the current one (the last member stays in sync).
    pub isr: Vec<i32>,
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
    pub recovery: i8,
}

impl Target {
    /// The partition as it is: a change to nothing but what the caller sets.
    pub fn of(p: &PartitionInfo) -> Self {
        Target {
            isr: p.isr.clone(),
            replicas: p.replicas.clone(),
            adding: p.adding_replicas.clone(),
            removing: p.removing_replicas.clone(),
            recovery: p.leader_recovery_state,
        }
    }

    /// Kafka's `PartitionReassignmentReplicas.maybeCompleteReassignment`: once every
    /// replica that stays is in the ISR, the removed replicas leave the replicas and
    /// the ISR, and the reassignment is over. Not while that would leave the ISR or
    /// the replicas empty.
    fn complete_reassignment(&mut self) {
        if self.adding.is_empty() && self.removing.is_empty() {
            return;
        }
        let staying = |list: &[i32]| -> Vec<i32> {
            list.iter()
                .copied()
                .filter(|r| !self.removing.contains(r))
                .collect()
        };
        let isr = staying(&self.isr);
        let replicas = staying(&self.replicas);
        if isr.is_empty() || replicas.is_empty() || !replicas.iter().all(|r| isr.contains(r)) {
            return;
        }
        self.isr = isr;
        self.replicas = replicas;
        self.adding.clear();
        self.removing.clear();
    }
}

/// The record that takes partition `index` of topic `topic_id` from `p` to
/// `target_isr` with a leader chosen by `election` among the replicas `acceptable`
/// allows, and to `target_recovery`; `None` when nothing would change. An empty target
/// ISR keeps the current one (the last member stays in sync). A reassignment in
/// progress completes when the new ISR allows it (see [`build`]).
pub fn change(
    topic_id: [u8; 16],
    index: i32,
    p: &PartitionInfo,
    target_isr: &[i32],
    election: Election,
    target_recovery: i8,
    acceptable: &dyn Fn(i32) -> bool,
) -> Option<PartitionChangeRecord> {
    let target = Target {
        isr: target_isr.to_vec(),
        recovery: target_recovery,
        ..Target::of(p)
    };
    build(topic_id, index, p, target, election, acceptable)
}

/// Kafka's `PartitionChangeBuilder.build`: the record that takes `p` to `target`.
/// First a reassignment in progress completes if the target ISR holds every replica
/// that stays; then the leader is elected among the target replicas (so a replica
/// being removed, listed after the target's, leads only when no other can); a leader
/// that stays while replicas leave still gets a new leader epoch (Kafka's
/// `triggerLeaderEpochBumpForReplicaReassignmentIfNeeded`).
pub fn build(
    topic_id: [u8; 16],
    index: i32,
    p: &PartitionInfo,
    mut target: Target,
    election: Election,
    acceptable: &dyn Fn(i32) -> bool,
) -> Option<PartitionChangeRecord> {
    let mut record = PartitionChangeRecord {
        topic_id: Uuid(topic_id),
        partition_id: index,
        ..Default::default()
    };
    target.complete_reassignment();
    let target_isr = &target.isr;
    let valid = |r: i32| target_isr.contains(&r) && acceptable(r);
    let (leader, unclean) = elect(p, &target.replicas, election, &valid, acceptable);
    if leader != p.leader {
        record.leader = leader;
        if unclean {
            // Data may be lost: the new leader's log is the partition now.
            record.isr = Some(vec![leader]);
            if p.leader_recovery_state != RECOVERING {
                record.leader_recovery_state = RECOVERING;
            }
        }
    } else if !p.replicas.iter().all(|r| target.replicas.contains(r)) {
        // Replicas leave: their fetches of this epoch must be fenced.
        record.leader = p.leader;
    }
    if record.isr.is_none() && !target.isr.is_empty() && target.isr != p.isr {
        record.isr = Some(target.isr.clone());
    }
    if !target.replicas.is_empty() && target.replicas != p.replicas {
        record.directories = Some(
            target
                .replicas
                .iter()
                .map(|r| {
                    let at = p.replicas.iter().position(|x| x == r);
                    Uuid(
                        at.and_then(|i| p.directories.get(i))
                            .copied()
                            .unwrap_or([0; 16]),
                    )
                })
                .collect(),
        );
        record.replicas = Some(target.replicas.clone());
    }
    if target.removing != p.removing_replicas {
        record.removing_replicas = Some(target.removing.clone());
    }
    if target.adding != p.adding_replicas {
        record.adding_replicas = Some(target.adding.clone());
    }
    if target.recovery != p.leader_recovery_state {
        record.leader_recovery_state = target.recovery;
    }
    let no_op = record.leader == NO_LEADER_CHANGE
        && record.isr.is_none()
        && record.replicas.is_none()
        && record.adding_replicas.is_none()
        && record.removing_replicas.is_none()
        && record.leader_recovery_state == -1;
    (!no_op).then_some(record)
}

/// The leader `election` picks among `replicas` (the target's) and whether the pick
/// is unclean (outside the ISR).
fn elect(
    p: &PartitionInfo,
    replicas: &[i32],
    election: Election,
    valid: &dyn Fn(i32) -> bool,
    acceptable: &dyn Fn(i32) -> bool,
) -> (i32, bool) {
    if election == Election::Preferred {
        if let Some(&preferred) = replicas.first().filter(|&&r| valid(r)) {
            return (preferred, false);
        }
    }
    if p.leader != NO_LEADER && valid(p.leader) {
        return (p.leader, false);
    }
    let skip = usize::from(election == Election::Preferred);
    if let Some(&r) = replicas.iter().skip(skip).find(|&&r| valid(r)) {
        return (r, false);
    }
    if election == Election::Unclean {
        if let Some(&r) = replicas.iter().find(|&&r| acceptable(r)) {
            return (r, true);
        }
    }
    (NO_LEADER, false)
}

/// Whether `topic` allows unclean leader election: its own config, else the dynamic
/// broker default of the controller or of the cluster, else the controller's static
/// `[topic_defaults]` one, as Kafka's controller resolves it.
pub fn unclean_enabled(image: &MetadataImage, topic: &str, controller: &BrokerConfig) -> bool {
    let Some(t) = image.topic(topic) else {
        return false;
    };
    let configs = crate::broker_config::describe::with_dynamic_defaults(
        &t.configs,
        &image.broker_configs,
        controller.node_id,
    );
    configs.get(UNCLEAN_ELECTION).map_or(
        controller.topic_defaults.unclean_leader_election_enable,
        |v| v.eq_ignore_ascii_case("true"),
    )
}

/// The `PartitionChangeRecord`s that bring every partition in line with which brokers
/// are active in `image` (the image with the broker changes already applied): inactive
/// brokers leave the ISRs, leaders that are not active are replaced. `controller` is
/// the controller's config (for the defaults of unclean election); `offline` the
/// replicas reported offline, treated as inactive for their partition alone.
pub fn elect_leaders(
    image: &MetadataImage,
    controller: &BrokerConfig,
    offline: &OfflineReplicas,
) -> Vec<ApiMessageAndVersion> {
    let mut out = Vec::new();
    for topic in image.topics.values() {
        let election = if unclean_enabled(image, &topic.name, controller) {
            Election::Unclean
        } else {
            Election::Online
        };
        for (index, p) in topic.partitions.iter().enumerate() {
            let acceptable = offline.acceptable(image, topic.id, index as i32);
            let target: Vec<i32> = p.isr.iter().copied().filter(|&r| acceptable(r)).collect();
            let record = change(
                topic.id,
                index as i32,
                p,
                &target,
                election,
                p.leader_recovery_state,
                &acceptable,
            );
            out.extend(
                record.map(|r| ApiMessageAndVersion::latest(MetadataRecord::PartitionChange(r))),
            );
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use spate_net::metadata_records::{
        BrokerRegistrationChangeRecord, FenceBrokerRecord, UnfenceBrokerRecord,
    };

    use super::super::image::RECOVERED;
    use super::super::records::{self, NewPartition};
    use super::*;
    use crate::metadata::image::BrokerRegistration;

    fn broker(id: i32, fenced: bool) -> BrokerRegistration {
        BrokerRegistration {
            id,
            epoch: 1,
            incarnation_id: [id as u8; 16],
            endpoints: Vec::new(),
            rack: None,
            fenced,
            in_controlled_shutdown: false,
        }
    }

    /// Brokers 0, 1 and 2 (epoch 1, live) and topic "t" with `placed` partitions.
    pub(crate) fn image(placed: &[NewPartition]) -> MetadataImage {
        let mut img = MetadataImage::default();
        for id in 0..3 {
            img.brokers.insert(id, broker(id, false));
        }
        img.replay_all(&records::create_placed_topic(
            "t",
            [7; 16],
            placed,
            &BTreeMap::new(),
        ));
        img
    }

    /// Fences (or unfences) broker `id` and applies the leadership changes.
    pub(crate) fn fence(img: &mut MetadataImage, id: i32, fenced: bool) {
        img.replay(&if fenced {
            MetadataRecord::FenceBroker(FenceBrokerRecord { id, epoch: 1 })
        } else {
            MetadataRecord::UnfenceBroker(UnfenceBrokerRecord { id, epoch: 1 })
        });
        let changes = elect_leaders(
            img,
            BrokerConfig::embedded_default(),
            &OfflineReplicas::default(),
        );
        img.replay_all(&changes);
    }

    fn leader_and_isr(img: &MetadataImage, p: usize) -> (i32, Vec<i32>) {
        let p = &img.topic("t").unwrap().partitions[p];
        (p.leader, p.isr.clone())
    }

    #[test]
    fn a_single_replica_loses_its_leader_and_gets_it_back() {
        let mut img = image(&[NewPartition::new(vec![1], |_| true)]);
        assert!(
            elect_leaders(
                &img,
                BrokerConfig::embedded_default(),
                &OfflineReplicas::default()
            )
            .is_empty(),
            "nothing to change"
        );
        fence(&mut img, 1, true);
        assert_eq!(leader_and_isr(&img, 0), (NO_LEADER, vec![1]));
        fence(&mut img, 1, false);
        assert_eq!(leader_and_isr(&img, 0), (1, vec![1]));
        assert_eq!(img.topic("t").unwrap().partitions[0].leader_epoch, 2);
    }

    #[test]
    fn leadership_moves_to_a_live_in_sync_replica() {
        let mut img = image(&[NewPartition::new(vec![0, 1, 2], |_| true)]);
        fence(&mut img, 0, true);
        assert_eq!(leader_and_isr(&img, 0), (1, vec![1, 2]));
        // The old leader is back but out of the ISR: the leader stays.
        fence(&mut img, 0, false);
        assert_eq!(leader_and_isr(&img, 0), (1, vec![1, 2]));
        fence(&mut img, 1, true);
        fence(&mut img, 2, true);
        assert_eq!(leader_and_isr(&img, 0), (NO_LEADER, vec![2]));
        // Only the last in-sync replica may lead again (0 is live, but out of sync).
        fence(&mut img, 1, false);
        assert_eq!(leader_and_isr(&img, 0), (NO_LEADER, vec![2]));
        fence(&mut img, 2, false);
        assert_eq!(leader_and_isr(&img, 0), (2, vec![2]));
    }

    #[test]
    fn a_fenced_follower_leaves_every_isr_with_only_the_partition_epoch_bumped() {
        let mut img = image(&[
            NewPartition::new(vec![0, 1, 2], |_| true),
            NewPartition::new(vec![1, 2, 0], |_| true),
            NewPartition::new(vec![2], |_| true),
        ]);
        fence(&mut img, 2, true);
        // Partition 0: 2 was a follower; the leader and its epoch stay.
        let p = &img.topic("t").unwrap().partitions[0];
        assert_eq!((p.leader, &p.isr[..]), (0, &[0, 1][..]));
        assert_eq!((p.leader_epoch, p.partition_epoch), (0, 1));
        assert_eq!(leader_and_isr(&img, 1), (1, vec![1, 0]));
        // Partition 2: 2 was the last member; it stays in the ISR, without a leader.
        assert_eq!(leader_and_isr(&img, 2), (NO_LEADER, vec![2]));
    }

    #[test]
    fn an_offline_replica_leaves_the_isr_and_leadership_of_its_partition_only() {
        let mut img = image(&[
            NewPartition::new(vec![0, 1, 2], |_| true),
            NewPartition::new(vec![0, 2, 1], |_| true),
            NewPartition::new(vec![1, 0], |_| true),
            NewPartition::new(vec![0], |_| true),
        ]);
        // Broker 0's replicas of partitions 0, 2 and 3 are in a failed dir; 1 is not.
        let offline = OfflineReplicas::new([(0, [7; 16], 0), (0, [7; 16], 2), (0, [7; 16], 3)]);
        let changes = elect_leaders(&img, BrokerConfig::embedded_default(), &offline);
        img.replay_all(&changes);
        assert_eq!(leader_and_isr(&img, 0), (1, vec![1, 2]));
        assert_eq!(img.topic("t").unwrap().partitions[0].leader_epoch, 1);
        // The healthy dir's partition keeps its leader, epoch and ISR.
        assert_eq!(leader_and_isr(&img, 1), (0, vec![0, 2, 1]));
        assert_eq!(img.topic("t").unwrap().partitions[1].leader_epoch, 0);
        // A follower's offline replica leaves the ISR, the leader stays.
        assert_eq!(leader_and_isr(&img, 2), (1, vec![1]));
        // The last in-sync replica stays in the ISR, without a leader (no unclean
        // election, and not elected again while offline).
        assert_eq!(leader_and_isr(&img, 3), (NO_LEADER, vec![0]));
        assert!(elect_leaders(&img, BrokerConfig::embedded_default(), &offline).is_empty());
        // Repaired (reported online again): the last member leads again; the others
        // rejoin the ISRs through their leaders' AlterPartition, not here.
        let changes = elect_leaders(
            &img,
            BrokerConfig::embedded_default(),
            &OfflineReplicas::default(),
        );
        img.replay_all(&changes);
        assert_eq!(leader_and_isr(&img, 3), (0, vec![0]));
        assert_eq!(leader_and_isr(&img, 0), (1, vec![1, 2]));
    }

    #[test]
    fn controlled_shutdown_moves_leaders_and_shrinks_isrs() {
        let mut img = image(&[
            NewPartition::new(vec![0, 1, 2], |_| true),
            NewPartition::new(vec![1, 0], |_| true),
        ]);
        // Only the shutting-down flag: the broker is not fenced yet but not active.
        img.replay(&MetadataRecord::BrokerRegistrationChange(
            BrokerRegistrationChangeRecord {
                broker_id: 0,
                broker_epoch: 1,
                in_controlled_shutdown: 1,
                ..Default::default()
            },
        ));
        let changes = elect_leaders(
            &img,
            BrokerConfig::embedded_default(),
            &OfflineReplicas::default(),
        );
        img.replay_all(&changes);
        assert_eq!(leader_and_isr(&img, 0), (1, vec![1, 2]));
        assert_eq!(leader_and_isr(&img, 1), (1, vec![1]));
    }

    #[test]
    fn unclean_election_picks_a_live_replica_outside_the_isr() {
        let mut img = image(&[NewPartition::new(vec![0, 1, 2], |_| true)]);
        fence(&mut img, 0, true);
        fence(&mut img, 1, true);
        fence(&mut img, 2, true);
        assert_eq!(leader_and_isr(&img, 0), (NO_LEADER, vec![2]));
        // 0 comes back: not in the ISR, so the partition stays offline...
        fence(&mut img, 0, false);
        assert_eq!(leader_and_isr(&img, 0), (NO_LEADER, vec![2]));
        // ...until the topic allows an unclean election.
        img.replay_all(&records::config_diff(
            records::resource_type::TOPIC,
            "t",
            &BTreeMap::new(),
            &BTreeMap::from([(UNCLEAN_ELECTION.to_string(), "true".to_string())]),
        ));
        let changes = elect_leaders(
            &img,
            BrokerConfig::embedded_default(),
            &OfflineReplicas::default(),
        );
        img.replay_all(&changes);
        let p = &img.topic("t").unwrap().partitions[0];
        assert_eq!((p.leader, &p.isr[..]), (0, &[0][..]));
        assert_eq!(p.leader_recovery_state, RECOVERING);
    }

    #[test]
    fn unclean_election_follows_the_dynamic_cluster_default() {
        let mut img = image(&[NewPartition::new(vec![0, 1], |_| true)]);
        fence(&mut img, 1, true);
        fence(&mut img, 0, true);
        fence(&mut img, 1, false);
        assert_eq!(leader_and_isr(&img, 0), (NO_LEADER, vec![0]));
        img.replay_all(&records::config_diff(
            records::resource_type::BROKER,
            "",
            &BTreeMap::new(),
            &BTreeMap::from([(UNCLEAN_ELECTION.to_string(), "true".to_string())]),
        ));
        assert!(unclean_enabled(&img, "t", BrokerConfig::embedded_default()));
        // The topic's own config wins over every default.
        let mut strict = img.clone();
        strict.replay_all(&records::config_diff(
            records::resource_type::TOPIC,
            "t",
            &BTreeMap::new(),
            &BTreeMap::from([(UNCLEAN_ELECTION.to_string(), "false".to_string())]),
        ));
        assert!(!unclean_enabled(
            &strict,
            "t",
            BrokerConfig::embedded_default()
        ));
        let changes = elect_leaders(
            &img,
            BrokerConfig::embedded_default(),
            &OfflineReplicas::default(),
        );
        img.replay_all(&changes);
        assert_eq!(leader_and_isr(&img, 0), (1, vec![1]));
    }

    #[test]
    fn unclean_election_follows_the_static_default_last() {
        let img = image(&[NewPartition::new(vec![0, 1], |_| true)]);
        let mut config = BrokerConfig::embedded_default().clone();
        assert!(!unclean_enabled(&img, "t", &config));
        config.topic_defaults.unclean_leader_election_enable = true;
        assert!(unclean_enabled(&img, "t", &config));
    }

    #[test]
    fn preferred_election_prefers_the_first_replica_in_sync() {
        let p = PartitionInfo {
            slot: 0,
            replicas: vec![0, 1, 2],
            isr: vec![1, 0],
            leader: 1,
            leader_epoch: 3,
            partition_epoch: 5,
            directories: Vec::new(),
            leader_recovery_state: RECOVERED,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        };
        let all = |_| true;
        let r = change([1; 16], 0, &p, &p.isr, Election::Preferred, RECOVERED, &all);
        assert_eq!(r.map(|r| (r.leader, r.isr)), Some((0, None)));
        // The preferred replica out of sync or not live: no change.
        let out_of_sync = PartitionInfo {
            isr: vec![1, 2],
            ..p.clone()
        };
        let isr = out_of_sync.isr.clone();
        assert_eq!(
            change(
                [1; 16],
                0,
                &out_of_sync,
                &isr,
                Election::Preferred,
                RECOVERED,
                &all
            ),
            None
        );
        let not_zero = |r| r != 0;
        assert_eq!(
            change(
                [1; 16],
                0,
                &p,
                &p.isr,
                Election::Preferred,
                RECOVERED,
                &not_zero
            ),
            None
        );
    }
}
