//! Partition reassignments, as Kafka's `ReplicationControlManager` makes them
//! (AlterPartitionReassignments, ListPartitionReassignments).
//!
//! A reassignment to a target replica list first makes the replicas the target
//! followed by the replicas it removes, with `adding` (target minus current) and
//! `removing` (current minus target) recorded on the partition; the new replicas
//! open empty logs and fetch from the leader. As soon as every target replica is in
//! the ISR (at once, for a reordering; else when an ISR change, a fencing or an
//! election lets it), [`super::leadership::build`] completes it: the removed replicas
//! leave the replicas and the ISR, a removed leader is replaced by one from the
//! target, and `adding` / `removing` are cleared. Cancelling (no target) reverts to
//! the original replicas (Kafka's `PartitionReassignmentRevert`).

use serde::{Deserialize, Serialize};
use spate_net::metadata_frame::ApiMessageAndVersion;
use spate_net::metadata_records::{MetadataRecord, PartitionChangeRecord};
use spate_net::ErrorCode;

use super::election::ElectionResults;
use super::image::PartitionInfo;
use super::leadership::{self, Election, Target};
use super::MetadataImage;
use crate::config::BrokerConfig;

/// A partition and its target replicas, `None` to cancel its reassignment.
pub type PartitionTarget = (i32, Option<Vec<i32>>);

/// An AlterPartitionReassignments: each topic's partitions and their targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReassignmentRequest {
    pub topics: Vec<(String, Vec<PartitionTarget>)>,
}

/// Each partition's outcome by topic, in request order: partition, error, message.
pub type ReassignmentResults = ElectionResults;

/// One partition's reassignment in progress (ListPartitionReassignments).
#[derive(Debug, Clone, PartialEq)]
pub struct Ongoing {
    pub partition: i32,
    pub replicas: Vec<i32>,
    pub adding: Vec<i32>,
    pub removing: Vec<i32>,
}

type Refusal = (ErrorCode, String);

/// Plans `request` on `image`: the records to write and each partition's outcome.
/// Later partitions see the changes of earlier ones. `controller` is the controller's
/// config (for the default of unclean election).
pub fn plan(
    image: &MetadataImage,
    request: &ReassignmentRequest,
    controller: &BrokerConfig,
) -> (Vec<ApiMessageAndVersion>, ReassignmentResults) {
    let mut next = image.clone();
    let mut records = Vec::new();
    let mut results = Vec::new();
    for (topic, partitions) in &request.topics {
        let mut each = Vec::new();
        for (partition, target) in partitions {
            match plan_one(&next, topic, *partition, target.as_deref(), controller) {
                Ok(record) => {
                    if let Some(r) = record {
                        let r = ApiMessageAndVersion::latest(MetadataRecord::PartitionChange(r));
                        next.replay(&r.record);
                        records.push(r);
                    }
                    each.push((*partition, 0, None));
                }
                Err((code, message)) => each.push((*partition, code.code(), Some(message))),
            }
        }
        results.push((topic.clone(), each));
    }
    (records, results)
}

/// One partition's change (`None`: nothing to change), or why it is refused, with
/// Kafka's messages.
fn plan_one(
    image: &MetadataImage,
    topic: &str,
    partition: i32,
    target: Option<&[i32]>,
    controller: &BrokerConfig,
) -> Result<Option<PartitionChangeRecord>, Refusal> {
    let unknown = ErrorCode::UnknownTopicOrPartition;
    let Some(t) = image.topic(topic) else {
        return Err((unknown, format!("Unable to find a topic named {topic}.")));
    };
    let Some(p) = usize::try_from(partition)
        .ok()
        .and_then(|i| t.partitions.get(i))
    else {
        return Err((
            unknown,
            format!("Unable to find partition {topic}:{partition}."),
        ));
    };
    let unclean = leadership::unclean_enabled(image, topic, controller);
    let election = if unclean {
        Election::Unclean
    } else {
        Election::Online
    };
    let active = |r: i32| image.is_active(r);
    let target = match target {
        None => cancel(p, topic, partition, unclean)?,
        Some(replicas) => {
            check_assignment(image, replicas)?;
            Target {
                replicas: with_removing(p, replicas),
                adding: difference(replicas, &p.replicas),
                removing: difference(&p.replicas, replicas),
                ..Target::of(p)
            }
        }
    };
    Ok(leadership::build(
        t.id, partition, p, target, election, &active,
    ))
}

/// Kafka's `PartitionReassignmentRevert`: back to the replicas before the
/// reassignment, the ISR without the replicas it added; if only added replicas were in
/// sync, the first original replica becomes the ISR, which needs unclean election.
fn cancel(
    p: &PartitionInfo,
    topic: &str,
    partition: i32,
    unclean_allowed: bool,
) -> Result<Target, Refusal> {
    if !p.is_reassigning() {
        return Err((
            ErrorCode::NoReassignmentInProgress,
            "No partition reassignment is in progress for the relevant partition.".into(),
        ));
    }
    let replicas = without(&p.replicas, &p.adding_replicas);
    let mut isr = without(&p.isr, &p.adding_replicas);
    if isr.is_empty() {
        let Some(&first) = replicas.first() else {
            return Err((
                ErrorCode::InvalidReplicaAssignment,
                "Invalid replica assignment: addingReplicas contains all replicas.".into(),
            ));
        };
        if !unclean_allowed {
            return Err((
                ErrorCode::InvalidReplicaAssignment,
                format!(
                    "Unable to revert partition assignment for {topic}:{partition} because it would require an unclean leader election."
                ),
            ));
        }
        isr.push(first);
    }
    Ok(Target {
        isr,
        replicas,
        adding: Vec::new(),
        removing: Vec::new(),
        recovery: p.leader_recovery_state,
    })
}

/// Kafka's `validateManualPartitionAssignment` (no replication factor to match).
fn check_assignment(image: &MetadataImage, replicas: &[i32]) -> Result<(), Refusal> {
    let invalid = |m: String| Err((ErrorCode::InvalidReplicaAssignment, m));
    if replicas.is_empty() {
        return invalid("The manual partition assignment includes an empty replica list.".into());
    }
    let mut sorted = replicas.to_vec();
    sorted.sort_unstable();
    for (i, id) in sorted.iter().enumerate() {
        if !image.brokers.contains_key(id) {
            return invalid(format!(
                "The manual partition assignment includes broker {id}, but no such broker is registered."
            ));
        }
        if i > 0 && sorted[i - 1] == *id {
            return invalid(format!(
                "The manual partition assignment includes the broker {id} more than once."
            ));
        }
    }
    Ok(())
}

/// The target followed by the current replicas it removes (Kafka's
/// `PartitionReassignmentReplicas`, whose removing set is sorted).
fn with_removing(p: &PartitionInfo, target: &[i32]) -> Vec<i32> {
    let mut replicas = target.to_vec();
    replicas.extend(difference(&p.replicas, target));
    replicas
}

/// The members of `a` not in `b`, in `a`'s order.
fn without(a: &[i32], b: &[i32]) -> Vec<i32> {
    a.iter().copied().filter(|r| !b.contains(r)).collect()
}

/// The set of members of `a` not in `b`, sorted (Kafka's `TreeSet` of the adding and
/// removing replicas).
fn difference(a: &[i32], b: &[i32]) -> Vec<i32> {
    let mut out = without(a, b);
    out.sort_unstable();
    out.dedup();
    out
}

/// The reassignments in progress: of the named topics and partitions (unknown ones
/// left out), or of every partition, as Kafka's `listPartitionReassignments`.
pub fn ongoing(
    image: &MetadataImage,
    topics: Option<&[(String, Vec<i32>)]>,
) -> Vec<(String, Vec<Ongoing>)> {
    let of = |p: &PartitionInfo, index: i32| {
        p.is_reassigning().then(|| Ongoing {
            partition: index,
            replicas: p.replicas.clone(),
            adding: p.adding_replicas.clone(),
            removing: p.removing_replicas.clone(),
        })
    };
    let mut out = Vec::new();
    match topics {
        None => {
            for t in image.topics.values() {
                let each: Vec<Ongoing> = (0..)
                    .zip(&t.partitions)
                    .filter_map(|(i, p)| of(p, i))
                    .collect();
                if !each.is_empty() {
                    out.push((t.name.clone(), each));
                }
            }
        }
        Some(named) => {
            for (name, partitions) in named {
                let each: Vec<Ongoing> = partitions
                    .iter()
                    .filter_map(|&i| of(image.partition(name, i)?, i))
                    .collect();
                if !each.is_empty() {
                    out.push((name.clone(), each));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use spate_net::metadata_records::MetadataRecord;

    use super::*;
    use crate::metadata::isr::{self, IsrChange, Planned, RECOVERED};
    use crate::metadata::leadership::tests::image;
    use crate::metadata::records::NewPartition;

    fn config() -> &'static BrokerConfig {
        BrokerConfig::embedded_default()
    }

    /// Reassigns (or cancels, `None`) partition 0 of "t" and applies the change.
    fn reassign(img: &mut MetadataImage, target: Option<Vec<i32>>) -> (i16, Option<String>) {
        let request = ReassignmentRequest {
            topics: vec![("t".into(), vec![(0, target)])],
        };
        let (records, results) = plan(img, &request, config());
        img.replay_all(&records);
        let (_, code, message) = results[0].1[0].clone();
        (code, message)
    }

    fn partition(img: &MetadataImage) -> PartitionInfo {
        img.partition("t", 0).unwrap().clone()
    }

    /// The leader's AlterPartition to `isr`, applied; the planned outcome.
    fn alter_isr(img: &mut MetadataImage, isr: &[i32]) -> Result<bool, i16> {
        let p = partition(img);
        let change = IsrChange {
            broker_id: p.leader,
            broker_epoch: 1,
            topic_id: [7; 16],
            partition: 0,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            new_isr: isr.iter().map(|&r| (r, 1)).collect(),
            leader_recovery_state: RECOVERED,
        };
        let (record, moved) = match isr::plan(img, &change, config())? {
            Planned::Change(r) => (r, false),
            Planned::NewLeader(r) => (r, true),
            Planned::Unchanged(_) => return Ok(false),
        };
        img.replay(&MetadataRecord::PartitionChange(record));
        Ok(moved)
    }

    #[test]
    fn new_replicas_are_added_first_and_the_move_completes_once_they_are_in_sync() {
        let mut img = image(&[NewPartition::new(vec![0], |_| true)]);
        assert_eq!(reassign(&mut img, Some(vec![1, 2])), (0, None));
        let p = partition(&img);
        assert_eq!(p.replicas, [1, 2, 0]);
        assert_eq!(
            (p.adding_replicas.clone(), p.removing_replicas.clone()),
            (vec![1, 2], vec![0])
        );
        assert_eq!((p.leader, p.isr.clone(), p.leader_epoch), (0, vec![0], 0));
        assert_eq!(
            ongoing(&img, None),
            vec![(
                "t".to_string(),
                vec![Ongoing {
                    partition: 0,
                    replicas: vec![1, 2, 0],
                    adding: vec![1, 2],
                    removing: vec![0],
                }]
            )]
        );
        // One new replica in sync: still moving.
        assert_eq!(alter_isr(&mut img, &[0, 1]), Ok(false));
        assert!(partition(&img).is_reassigning());
        // Both: the old replica (the leader) leaves, the first new one leads, and the
        // asking leader is told NEW_LEADER_ELECTED.
        assert_eq!(alter_isr(&mut img, &[0, 1, 2]), Ok(true));
        let p = partition(&img);
        assert_eq!(
            (p.replicas.clone(), p.isr.clone(), p.leader),
            (vec![1, 2], vec![1, 2], 1)
        );
        assert!(!p.is_reassigning());
        assert_eq!(p.leader_epoch, 1);
        assert_eq!(p.directories.len(), 2);
        assert!(ongoing(&img, None).is_empty());
    }

    #[test]
    fn a_reordering_or_a_shrink_within_the_isr_completes_at_once() {
        let mut img = image(&[NewPartition::new(vec![0, 1, 2], |_| true)]);
        assert_eq!(reassign(&mut img, Some(vec![2, 1, 0])), (0, None));
        let p = partition(&img);
        assert_eq!(
            (p.replicas.clone(), p.leader, p.leader_epoch),
            (vec![2, 1, 0], 0, 0)
        );
        assert!(!p.is_reassigning());
        // Dropping the leader: a new leader from the target, with a new epoch.
        assert_eq!(reassign(&mut img, Some(vec![1, 2])), (0, None));
        let p = partition(&img);
        assert_eq!(
            (p.replicas.clone(), p.isr.clone(), p.leader),
            (vec![1, 2], vec![1, 2], 1)
        );
        assert_eq!(p.leader_epoch, 1);
        // Dropping a follower: the leader stays, its epoch moves (the follower's
        // fetches of the old epoch are fenced).
        assert_eq!(reassign(&mut img, Some(vec![1])), (0, None));
        let p = partition(&img);
        assert_eq!(
            (p.replicas.clone(), p.leader, p.leader_epoch),
            (vec![1], 1, 2)
        );
        // The same replicas again: nothing to write.
        let request = ReassignmentRequest {
            topics: vec![("t".into(), vec![(0, Some(vec![1]))])],
        };
        assert!(plan(&img, &request, config()).0.is_empty());
    }

    #[test]
    fn a_cancelled_move_reverts_to_the_original_replicas() {
        let mut img = image(&[NewPartition::new(vec![0, 1], |_| true)]);
        assert_eq!(reassign(&mut img, Some(vec![1, 2])), (0, None));
        assert_eq!(partition(&img).replicas, [1, 2, 0]);
        assert_eq!(alter_isr(&mut img, &[0, 1]), Ok(false));
        assert_eq!(reassign(&mut img, None), (0, None));
        let p = partition(&img);
        assert_eq!(
            (p.replicas.clone(), p.isr.clone(), p.leader),
            (vec![1, 0], vec![0, 1], 0)
        );
        assert!(!p.is_reassigning());
        // Nothing left to cancel.
        let (code, message) = reassign(&mut img, None);
        assert_eq!(code, ErrorCode::NoReassignmentInProgress.code());
        assert!(message.is_some());
    }

    #[test]
    fn a_cancel_that_needs_an_unclean_election_is_refused_unless_allowed() {
        let mut img = image(&[NewPartition::new(vec![0], |_| true)]);
        assert_eq!(reassign(&mut img, Some(vec![1, 2])), (0, None));
        assert_eq!(alter_isr(&mut img, &[0, 1]), Ok(false));
        // 1 alone in sync (0 fell behind): the cancel would leave no ISR.
        let p = partition(&img);
        img.replay(&MetadataRecord::PartitionChange(
            leadership::change([7; 16], 0, &p, &[1], Election::Online, RECOVERED, &|_| true)
                .unwrap(),
        ));
        assert_eq!(
            (partition(&img).leader, partition(&img).isr.clone()),
            (1, vec![1])
        );
        let (code, _) = reassign(&mut img, None);
        assert_eq!(code, ErrorCode::InvalidReplicaAssignment.code());
        assert!(partition(&img).is_reassigning());
    }

    #[test]
    fn refusals_carry_kafkas_errors() {
        let img = image(&[NewPartition::new(vec![0], |_| true)]);
        let request = ReassignmentRequest {
            topics: vec![
                ("nope".into(), vec![(0, Some(vec![1]))]),
                (
                    "t".into(),
                    vec![
                        (5, Some(vec![1])),
                        (0, Some(vec![])),
                        (0, Some(vec![1, 1])),
                        (0, Some(vec![9])),
                    ],
                ),
            ],
        };
        let (records, results) = plan(&img, &request, config());
        assert!(records.is_empty());
        let codes: Vec<i16> = results
            .iter()
            .flat_map(|(_, each)| each.iter().map(|r| r.1))
            .collect();
        let unknown = ErrorCode::UnknownTopicOrPartition.code();
        let invalid = ErrorCode::InvalidReplicaAssignment.code();
        assert_eq!(codes, [unknown, unknown, invalid, invalid, invalid]);
        assert_eq!(
            results[1].1[3].2.as_deref(),
            Some("The manual partition assignment includes broker 9, but no such broker is registered.")
        );
    }

    #[test]
    fn listing_names_only_partitions_that_move() {
        let mut img = image(&[
            NewPartition::new(vec![0], |_| true),
            NewPartition::new(vec![1], |_| true),
        ]);
        assert_eq!(reassign(&mut img, Some(vec![2])), (0, None));
        let named = [
            ("t".to_string(), vec![0, 1, 7]),
            ("nope".to_string(), vec![0]),
        ];
        let listed = ongoing(&img, Some(&named));
        assert_eq!(listed.len(), 1);
        assert_eq!(
            listed[0].1.iter().map(|o| o.partition).collect::<Vec<_>>(),
            [0]
        );
    }
}
