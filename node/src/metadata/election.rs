//! Elections asked for rather than forced by brokers coming and going: the ElectLeaders
//! API (preferred or unclean, as Kafka's `ReplicationControlManager.electLeaders`) and
//! the periodic move of leadership back to preferred replicas
//! (`auto.leader.rebalance.enable`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use spate_net::metadata_frame::ApiMessageAndVersion;
use spate_net::metadata_records::MetadataRecord;
use spate_net::ErrorCode;

use super::leadership::{self, Election, OfflineReplicas, NO_LEADER};
use super::{MetadataImage, TopicImage};

/// ElectLeaders' election types (Kafka's `ElectionType`).
pub const PREFERRED: i8 = 0;
pub const UNCLEAN: i8 = 1;

/// One partition's outcome: partition, error code, message.
pub type PartitionResult = (i32, i16, Option<String>);
/// Outcomes by topic, in request order (or name order for every partition).
pub type ElectionResults = Vec<(String, Vec<PartitionResult>)>;

/// The partitions an ElectLeaders names: `None` for every partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElectionRequest {
    pub election_type: i8,
    pub partitions: Option<Vec<(String, Vec<i32>)>>,
}

/// Plans the elections of `request` on `image`: the records to write and each
/// partition's outcome (an error carries Kafka's message, success none). Asked for every partition, the partitions that already have
/// the wanted leader are left out of the outcomes, as Kafka does. An unknown election
/// type is INVALID_REQUEST for the whole request.
pub fn plan(
    image: &MetadataImage,
    request: &ElectionRequest,
    offline: &OfflineReplicas,
) -> Result<(Vec<ApiMessageAndVersion>, ElectionResults), i16> {
    let election = match request.election_type {
        PREFERRED => Election::Preferred,
        UNCLEAN => Election::Unclean,
        _ => return Err(ErrorCode::InvalidRequest.code()),
    };
    let mut next = image.clone();
    let mut records = Vec::new();
    let mut results = Vec::new();
    let mut elect = |next: &mut MetadataImage, topic: &str, partition: i32| match elect_one(
        next, topic, partition, election, offline,
    ) {
        Ok(record) => {
            next.replay(&record.record);
            records.push(record);
            (partition, 0, None)
        }
        Err((code, message)) => (partition, code.code(), Some(message)),
    };
    match &request.partitions {
        None => {
            let names: Vec<String> = image.topics.keys().cloned().collect();
            for name in names {
                let count = image.topic(&name).map_or(0, |t| t.partitions.len());
                let mut each = Vec::new();
                for p in 0..count as i32 {
                    let outcome = elect(&mut next, &name, p);
                    if outcome.1 != ErrorCode::ElectionNotNeeded.code() {
                        each.push(outcome);
                    }
                }
                results.push((name, each));
            }
        }
        Some(list) => {
            for (name, partitions) in list {
                let each = partitions
                    .iter()
                    .map(|&p| elect(&mut next, name, p))
                    .collect();
                results.push((name.clone(), each));
            }
        }
    }
    Ok((records, results))
}

/// One partition's election: its record, or why there is none (with Kafka's message).
fn elect_one(
    image: &MetadataImage,
    topic: &str,
    partition: i32,
    election: Election,
    offline: &OfflineReplicas,
) -> Result<ApiMessageAndVersion, (ErrorCode, String)> {
    let unknown = ErrorCode::UnknownTopicOrPartition;
    let Some(t) = image.topic(topic) else {
        return Err((unknown, format!("No such topic as {topic}")));
    };
    let Some(p) = usize::try_from(partition)
        .ok()
        .and_then(|i| t.partitions.get(i))
    else {
        return Err((unknown, format!("No such partition as {topic}-{partition}")));
    };
    let not_needed = match election {
        Election::Preferred => p.replicas.first() == Some(&p.leader),
        _ => p.leader != NO_LEADER,
    };
    if not_needed {
        return Err((
            ErrorCode::ElectionNotNeeded,
            "Leader election not needed for topic partition.".into(),
        ));
    }
    let active = offline.acceptable(image, t.id, partition);
    match leadership::change(
        t.id,
        partition,
        p,
        &p.isr,
        election,
        p.leader_recovery_state,
        &active,
    ) {
        Some(r) => Ok(ApiMessageAndVersion::latest(
            MetadataRecord::PartitionChange(r),
        )),
        None if election == Election::Preferred => Err((
            ErrorCode::PreferredLeaderNotAvailable,
            "The preferred leader was not available.".into(),
        )),
        None => Err((
            ErrorCode::EligibleLeadersNotAvailable,
            "Eligible topic partition leaders are not available.".into(),
        )),
    }
}

/// A partition led by another broker than its preferred one: its topic and index.
type Elsewhere<'a> = (&'a TopicImage, i32);

/// The preferred elections of the automatic rebalance: for each broker, the partitions
/// it is the preferred replica of (their first replica) and that another broker leads;
/// when they are more than `percentage` percent of its preferred partitions, each is
/// moved back where the broker is active and in the ISR (the rule Kafka documents for
/// `leader.imbalance.per.broker.percentage`).
pub fn rebalance(
    image: &MetadataImage,
    percentage: u32,
    offline: &OfflineReplicas,
) -> Vec<ApiMessageAndVersion> {
    // Per preferred broker: its partitions, and those another broker leads.
    let mut by_preferred: BTreeMap<i32, (usize, Vec<Elsewhere>)> = BTreeMap::new();
    for t in image.topics.values() {
        for (index, p) in t.partitions.iter().enumerate() {
            let Some(&preferred) = p.replicas.first() else {
                continue;
            };
            let entry = by_preferred.entry(preferred).or_default();
            entry.0 += 1;
            if p.leader != preferred {
                entry.1.push((t, index as i32));
            }
        }
    }
    let mut out = Vec::new();
    for (broker, (total, elsewhere)) in by_preferred {
        // Integer form of elsewhere / total > percentage / 100.
        if elsewhere.len() * 100 <= total * percentage as usize || !image.is_active(broker) {
            continue;
        }
        for (t, index) in elsewhere {
            let Some(p) = usize::try_from(index)
                .ok()
                .and_then(|i| t.partitions.get(i))
            else {
                continue;
            };
            let record = leadership::change(
                t.id,
                index,
                p,
                &p.isr,
                Election::Preferred,
                p.leader_recovery_state,
                &offline.acceptable(image, t.id, index),
            );
            out.extend(
                record
                    .filter(|r| r.leader == broker)
                    .map(|r| ApiMessageAndVersion::latest(MetadataRecord::PartitionChange(r))),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use spate_net::metadata_records::PartitionChangeRecord;
    use spate_net::Uuid;

    use super::*;
    use crate::metadata::leadership::tests::{fence, image};
    use crate::metadata::records::NewPartition;

    /// Puts `broker` back into partition `p`'s ISR (what its leader's AlterPartition does).
    fn rejoin(img: &mut MetadataImage, p: i32, broker: i32) {
        let mut isr = img.topic("t").unwrap().partitions[p as usize].isr.clone();
        isr.push(broker);
        img.replay(&MetadataRecord::PartitionChange(PartitionChangeRecord {
            topic_id: Uuid([7; 16]),
            partition_id: p,
            isr: Some(isr),
            ..Default::default()
        }));
    }

    fn request(election_type: i8, partitions: &[i32]) -> ElectionRequest {
        ElectionRequest {
            election_type,
            partitions: Some(vec![("t".into(), partitions.to_vec())]),
        }
    }

    fn leader(img: &MetadataImage, p: usize) -> i32 {
        img.topic("t").unwrap().partitions[p].leader
    }

    #[test]
    fn preferred_elections_move_leadership_back_when_they_can() {
        let mut img = image(&[
            NewPartition::new(vec![0, 1, 2], |_| true),
            NewPartition::new(vec![1, 2, 0], |_| true),
        ]);
        fence(&mut img, 0, true);
        fence(&mut img, 0, false);
        assert_eq!(leader(&img, 0), 1);
        // 0 is live but out of sync: not available yet.
        let (records, results) = plan(
            &img,
            &request(PREFERRED, &[0, 1, 5]),
            &OfflineReplicas::default(),
        )
        .unwrap();
        assert!(records.is_empty());
        let codes: Vec<(i32, i16)> = results[0].1.iter().map(|r| (r.0, r.1)).collect();
        assert_eq!(
            results[0].1[2].2.as_deref(),
            Some("No such partition as t-5")
        );
        assert_eq!(
            codes,
            [
                (0, ErrorCode::PreferredLeaderNotAvailable.code()),
                (1, ErrorCode::ElectionNotNeeded.code()),
                (5, ErrorCode::UnknownTopicOrPartition.code()),
            ]
        );
        rejoin(&mut img, 0, 0);
        let (records, results) =
            plan(&img, &request(PREFERRED, &[0]), &OfflineReplicas::default()).unwrap();
        assert_eq!(results[0].1, [(0, 0, None)]);
        img.replay_all(&records);
        assert_eq!(leader(&img, 0), 0);
        // Every partition: only those with an election (or an error) are listed.
        let all = ElectionRequest {
            election_type: PREFERRED,
            partitions: None,
        };
        let (records, results) = plan(&img, &all, &OfflineReplicas::default()).unwrap();
        assert!(records.is_empty());
        assert_eq!(results, [("t".to_string(), Vec::new())]);
        let bad = ElectionRequest {
            election_type: 2,
            partitions: None,
        };
        assert_eq!(
            plan(&img, &bad, &OfflineReplicas::default()),
            Err(ErrorCode::InvalidRequest.code())
        );
    }

    #[test]
    fn unclean_elections_need_a_leaderless_partition_and_a_live_replica() {
        let mut img = image(&[NewPartition::new(vec![0, 1], |_| true)]);
        let (_, results) =
            plan(&img, &request(UNCLEAN, &[0]), &OfflineReplicas::default()).unwrap();
        assert_eq!(results[0].1[0].1, ErrorCode::ElectionNotNeeded.code());
        fence(&mut img, 1, true);
        fence(&mut img, 0, true);
        let (_, results) =
            plan(&img, &request(UNCLEAN, &[0]), &OfflineReplicas::default()).unwrap();
        assert_eq!(
            results[0].1[0].1,
            ErrorCode::EligibleLeadersNotAvailable.code()
        );
        fence(&mut img, 1, false);
        let (records, results) =
            plan(&img, &request(UNCLEAN, &[0]), &OfflineReplicas::default()).unwrap();
        assert_eq!(results[0].1[0].1, 0);
        img.replay_all(&records);
        let p = &img.topic("t").unwrap().partitions[0];
        assert_eq!((p.leader, &p.isr[..]), (1, &[1][..]));
        assert_eq!(p.leader_recovery_state, crate::metadata::image::RECOVERING);
    }

    #[test]
    fn the_rebalance_moves_leaders_of_brokers_above_the_threshold() {
        // Ten partitions preferring broker 0, all moved to 1 by its fencing.
        let placed: Vec<NewPartition> = (0..10)
            .map(|_| NewPartition::new(vec![0, 1], |_| true))
            .collect();
        let mut img = image(&placed);
        fence(&mut img, 0, true);
        fence(&mut img, 0, false);
        assert!(
            rebalance(&img, 10, &OfflineReplicas::default()).is_empty(),
            "0 is out of every ISR"
        );
        for p in 0..10 {
            rejoin(&mut img, p, 0);
        }
        // One of ten led elsewhere is 10%: not above the threshold.
        let mut partial = img.clone();
        for p in 1..10 {
            let r = plan(
                &partial,
                &request(PREFERRED, &[p]),
                &OfflineReplicas::default(),
            )
            .unwrap()
            .0;
            partial.replay_all(&r);
        }
        assert!(rebalance(&partial, 10, &OfflineReplicas::default()).is_empty());
        assert_eq!(rebalance(&partial, 9, &OfflineReplicas::default()).len(), 1);
        let moves = rebalance(&img, 10, &OfflineReplicas::default());
        assert_eq!(moves.len(), 10);
        img.replay_all(&moves);
        assert!((0..10).all(|p| leader(&img, p) == 0));
    }
}
