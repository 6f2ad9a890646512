//! AlterPartition on the active controller: a partition leader asks to change its ISR
//! (followers caught up or fell behind) or its leader recovery state, and the change
//! is checked as Kafka's `ReplicationControlManager.alterPartition` checks it, then
//! made by [`super::leadership::change`] (a `PartitionChangeRecord` that bumps the
//! partition epoch, not the leader epoch).
//!
//! The leader calls its node's controller queue with
//! `ControllerRequest::AlterPartition(IsrChange)`; a node that is not the active
//! controller forwards it, and the answer comes once that node's shards applied the
//! change.

use serde::{Deserialize, Serialize};
use spate_net::metadata_records::PartitionChangeRecord;
use spate_net::ErrorCode;

use super::image::PartitionInfo;
/// The leader recovery states an [`IsrChange`] carries.
pub use super::image::{RECOVERED, RECOVERING};
use super::leadership::{self, Election};
use super::MetadataImage;
use crate::config::BrokerConfig;

/// A leader's request to change a partition's ISR (Kafka's AlterPartition, one
/// partition).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IsrChange {
    /// The leader asking.
    pub broker_id: i32,
    /// Its broker epoch (registration epoch).
    pub broker_epoch: i64,
    pub topic_id: [u8; 16],
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// (broker id, that broker's epoch as the leader saw it in its fetches; -1 unknown).
    pub new_isr: Vec<(i32, i64)>,
    /// 0 RECOVERED, 1 RECOVERING (Kafka's `LeaderRecoveryState`).
    pub leader_recovery_state: i8,
}

/// A partition's state after an AlterPartition (what the leader continues with).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionState {
    pub leader: i32,
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
    pub partition_epoch: i32,
    pub leader_recovery_state: i8,
}

impl PartitionState {
    pub fn of(p: &PartitionInfo) -> Self {
        PartitionState {
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            isr: p.isr.clone(),
            partition_epoch: p.partition_epoch,
            leader_recovery_state: p.leader_recovery_state,
        }
    }
}

/// What the controller does with an AlterPartition: write the record (then answer the
/// partition's state after it), or answer the current state (nothing to change).
#[derive(Debug, Clone, PartialEq)]
pub enum Planned {
    Change(PartitionChangeRecord),
    /// The change completes a reassignment that removes the asking leader: written,
    /// and answered NEW_LEADER_ELECTED (Kafka: the leader must learn the new state
    /// from its metadata before it asks again).
    NewLeader(PartitionChangeRecord),
    Unchanged(PartitionState),
}

/// Checks `change` against `image` in Kafka's order and plans it; `controller` is the
/// controller's config (for the defaults of unclean election). The error is a Kafka
/// error code.
pub fn plan(
    image: &MetadataImage,
    change: &IsrChange,
    controller: &BrokerConfig,
) -> Result<Planned, i16> {
    let err = |e: ErrorCode| Err(e.code());
    if image
        .brokers
        .get(&change.broker_id)
        .is_none_or(|b| b.epoch != change.broker_epoch)
    {
        return err(ErrorCode::StaleBrokerEpoch);
    }
    let Some(topic) = image.topic_by_id(&change.topic_id) else {
        return err(ErrorCode::UnknownTopicId);
    };
    let Some(p) = usize::try_from(change.partition)
        .ok()
        .and_then(|i| topic.partitions.get(i))
    else {
        return err(ErrorCode::UnknownTopicOrPartition);
    };
    // Epochs above the controller's: the asker saw a newer controller's state.
    if change.leader_epoch > p.leader_epoch || change.partition_epoch > p.partition_epoch {
        return err(ErrorCode::NotController);
    }
    if change.leader_epoch < p.leader_epoch {
        return err(ErrorCode::FencedLeaderEpoch);
    }
    if change.broker_id != p.leader {
        return err(ErrorCode::InvalidRequest);
    }
    if change.partition_epoch < p.partition_epoch {
        return err(ErrorCode::InvalidUpdateVersion);
    }
    let isr: Vec<i32> = change.new_isr.iter().map(|&(id, _)| id).collect();
    if !valid_isr(&p.replicas, &isr) || !isr.contains(&p.leader) {
        return err(ErrorCode::InvalidRequest);
    }
    let recovery = change.leader_recovery_state;
    // Not a LeaderRecoveryState (Kafka fails such a request with an exception).
    if recovery != RECOVERED && recovery != RECOVERING {
        return err(ErrorCode::InvalidRequest);
    }
    // A leader elected uncleanly keeps the ISR to itself until its log is recovered,
    // and a recovered partition never goes back to recovering.
    if recovery == RECOVERING && (isr.len() > 1 || p.leader_recovery_state == RECOVERED) {
        return err(ErrorCode::InvalidRequest);
    }
    if change.new_isr.iter().any(|&(id, epoch)| {
        // KIP-903: a member whose epoch the leader saw is not the registered one
        // restarted since (its log may be behind what the leader believes).
        image.brokers.get(&id).is_none_or(|b| {
            b.in_controlled_shutdown || b.fenced || (epoch != -1 && epoch != b.epoch)
        })
    }) {
        return err(ErrorCode::IneligibleReplica);
    }
    let election = if leadership::unclean_enabled(image, &topic.name, controller) {
        Election::Unclean
    } else {
        Election::Online
    };
    let active = |r: i32| image.is_active(r);
    match leadership::change(
        topic.id,
        change.partition,
        p,
        &isr,
        election,
        recovery,
        &active,
    ) {
        // The leader is an active member of the new ISR (checked above), so only a
        // reassignment this change completes, removing the leader, moves leadership.
        Some(record)
            if record.leader != leadership::NO_LEADER_CHANGE
                && record.leader != change.broker_id =>
        {
            Ok(Planned::NewLeader(record))
        }
        Some(record) => Ok(Planned::Change(record)),
        None => Ok(Planned::Unchanged(PartitionState::of(p))),
    }
}

/// Kafka's `Replicas.validateIsr`: no duplicates, and only replicas.
fn valid_isr(replicas: &[i32], isr: &[i32]) -> bool {
    let mut seen = std::collections::HashSet::new();
    isr.iter().all(|r| replicas.contains(r) && seen.insert(*r))
}

#[cfg(test)]
mod tests {
    use spate_net::metadata_records::{BrokerRegistrationChangeRecord, MetadataRecord};

    use super::*;
    use crate::metadata::leadership::tests::{fence, image};
    use crate::metadata::records::NewPartition;

    /// Partition 0 of "t": replicas 0, 1, 2, leader 0, ISR all three, epochs 0.
    fn setup() -> MetadataImage {
        image(&[NewPartition::new(vec![0, 1, 2], |_| true)])
    }

    fn shrink_to(isr: &[i32]) -> IsrChange {
        IsrChange {
            broker_id: 0,
            broker_epoch: 1,
            topic_id: [7; 16],
            partition: 0,
            leader_epoch: 0,
            partition_epoch: 0,
            new_isr: isr.iter().map(|&r| (r, 1)).collect(),
            leader_recovery_state: RECOVERED,
        }
    }

    fn code(img: &MetadataImage, c: &IsrChange) -> i16 {
        plan(img, c, BrokerConfig::embedded_default()).expect_err("refused")
    }

    fn apply(img: &mut MetadataImage, c: &IsrChange) -> PartitionState {
        match plan(img, c, BrokerConfig::embedded_default()).expect("accepted") {
            Planned::Change(r) | Planned::NewLeader(r) => {
                img.replay(&MetadataRecord::PartitionChange(r));
                PartitionState::of(&img.topic("t").unwrap().partitions[0])
            }
            Planned::Unchanged(s) => s,
        }
    }

    #[test]
    fn a_shrink_and_an_expansion_bump_the_partition_epoch_only() {
        let mut img = setup();
        let s = apply(&mut img, &shrink_to(&[0, 1]));
        assert_eq!(
            s,
            PartitionState {
                leader: 0,
                leader_epoch: 0,
                isr: vec![0, 1],
                partition_epoch: 1,
                leader_recovery_state: RECOVERED
            }
        );
        let grow = IsrChange {
            partition_epoch: 1,
            ..shrink_to(&[0, 1, 2])
        };
        assert_eq!(apply(&mut img, &grow).partition_epoch, 2);
        // The same ISR again: the current state, no record.
        let again = IsrChange {
            partition_epoch: 2,
            ..shrink_to(&[0, 1, 2])
        };
        assert!(matches!(
            plan(&img, &again, BrokerConfig::embedded_default()),
            Ok(Planned::Unchanged(_))
        ));
    }

    #[test]
    fn the_asker_and_its_epochs_are_checked_in_kafkas_order() {
        let img = setup();
        let stale = IsrChange {
            broker_epoch: 9,
            ..shrink_to(&[0, 1])
        };
        assert_eq!(code(&img, &stale), ErrorCode::StaleBrokerEpoch.code());
        let unknown = IsrChange {
            broker_id: 5,
            ..shrink_to(&[0, 1])
        };
        assert_eq!(code(&img, &unknown), ErrorCode::StaleBrokerEpoch.code());
        let topic = IsrChange {
            topic_id: [8; 16],
            ..shrink_to(&[0, 1])
        };
        assert_eq!(code(&img, &topic), ErrorCode::UnknownTopicId.code());
        let partition = IsrChange {
            partition: 3,
            ..shrink_to(&[0, 1])
        };
        assert_eq!(
            code(&img, &partition),
            ErrorCode::UnknownTopicOrPartition.code()
        );
        let ahead = IsrChange {
            leader_epoch: 1,
            ..shrink_to(&[0, 1])
        };
        assert_eq!(code(&img, &ahead), ErrorCode::NotController.code());
        let ahead = IsrChange {
            partition_epoch: 1,
            ..shrink_to(&[0, 1])
        };
        assert_eq!(code(&img, &ahead), ErrorCode::NotController.code());
        let follower = IsrChange {
            broker_id: 1,
            ..shrink_to(&[0, 1])
        };
        assert_eq!(code(&img, &follower), ErrorCode::InvalidRequest.code());
    }

    #[test]
    fn older_epochs_are_fenced_or_stale() {
        let mut img = setup();
        apply(&mut img, &shrink_to(&[0, 1]));
        // partition epoch 1 now: a change made against epoch 0 is out of date.
        assert_eq!(
            code(&img, &shrink_to(&[0])),
            ErrorCode::InvalidUpdateVersion.code()
        );
        // Leadership moved to 1 (leader epoch 1): the old leader is fenced.
        fence(&mut img, 0, true);
        fence(&mut img, 0, false);
        let old_leader = IsrChange {
            partition_epoch: 2,
            ..shrink_to(&[0, 1])
        };
        assert_eq!(code(&img, &old_leader), ErrorCode::FencedLeaderEpoch.code());
    }

    #[test]
    fn the_new_isr_must_be_replicas_with_the_leader() {
        let mut img = setup();
        img.replay_all(&crate::metadata::records::create_placed_topic(
            "u",
            [8; 16],
            &[NewPartition::new(vec![0, 1], |_| true)],
            &Default::default(),
        ));
        let outside = IsrChange {
            topic_id: [8; 16],
            ..shrink_to(&[0, 2])
        };
        assert_eq!(code(&img, &outside), ErrorCode::InvalidRequest.code());
        let twice = shrink_to(&[0, 1, 1]);
        assert_eq!(code(&img, &twice), ErrorCode::InvalidRequest.code());
        let without_leader = shrink_to(&[1, 2]);
        assert_eq!(
            code(&img, &without_leader),
            ErrorCode::InvalidRequest.code()
        );
    }

    #[test]
    fn recovering_keeps_the_isr_to_the_leader_and_never_comes_back() {
        let img = setup();
        let recovering = IsrChange {
            leader_recovery_state: RECOVERING,
            ..shrink_to(&[0])
        };
        // RECOVERED → RECOVERING is refused.
        assert_eq!(code(&img, &recovering), ErrorCode::InvalidRequest.code());
        let wide = IsrChange {
            leader_recovery_state: RECOVERING,
            ..shrink_to(&[0, 1])
        };
        assert_eq!(code(&img, &wide), ErrorCode::InvalidRequest.code());
        let unknown = IsrChange {
            leader_recovery_state: 7,
            ..shrink_to(&[0])
        };
        assert_eq!(code(&img, &unknown), ErrorCode::InvalidRequest.code());
    }

    #[test]
    fn a_recovered_unclean_leader_reports_it() {
        let mut img = setup();
        img.replay(&MetadataRecord::PartitionChange(PartitionChangeRecord {
            topic_id: spate_net::Uuid([7; 16]),
            partition_id: 0,
            isr: Some(vec![0]),
            leader_recovery_state: RECOVERING,
            ..Default::default()
        }));
        let done = IsrChange {
            partition_epoch: 1,
            ..shrink_to(&[0])
        };
        let s = apply(&mut img, &done);
        assert_eq!((s.leader_recovery_state, s.partition_epoch), (RECOVERED, 2));
    }

    #[test]
    fn ineligible_members_are_refused() {
        let mut img = setup();
        let wrong_epoch = IsrChange {
            new_isr: vec![(0, 1), (1, 4)],
            ..shrink_to(&[])
        };
        assert_eq!(
            code(&img, &wrong_epoch),
            ErrorCode::IneligibleReplica.code()
        );
        // -1: the leader does not know the epoch; not checked.
        let unknown_epoch = IsrChange {
            new_isr: vec![(0, 1), (1, -1)],
            ..shrink_to(&[])
        };
        assert!(plan(&img, &unknown_epoch, BrokerConfig::embedded_default()).is_ok());
        img.replay(&MetadataRecord::BrokerRegistrationChange(
            BrokerRegistrationChangeRecord {
                broker_id: 1,
                broker_epoch: 1,
                in_controlled_shutdown: 1,
                ..Default::default()
            },
        ));
        assert_eq!(
            code(&img, &shrink_to(&[0, 1])),
            ErrorCode::IneligibleReplica.code()
        );
        img.brokers.remove(&1);
        assert_eq!(
            code(&img, &shrink_to(&[0, 1])),
            ErrorCode::IneligibleReplica.code()
        );
        let mut fenced = setup();
        fenced.replay(&MetadataRecord::FenceBroker(
            spate_net::metadata_records::FenceBrokerRecord { id: 2, epoch: 1 },
        ));
        assert_eq!(
            code(&fenced, &shrink_to(&[0, 2])),
            ErrorCode::IneligibleReplica.code()
        );
    }
}
