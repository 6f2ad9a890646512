//! Partition leadership when brokers come and go, as Kafka's controller moves it: a
//! partition whose leader is no longer live (fenced, re-registered after a restart, or
//! gone) gets the first live in-sync replica as its leader, or none (-1); a partition
//! without a leader gets one as soon as an in-sync replica is live again. The leaving
//! leader leaves the ISR only when another member remains, so the last in-sync replica
//! is remembered and an unclean election never happens here.

use spate_net::metadata_frame::ApiMessageAndVersion;
use spate_net::metadata_records::{MetadataRecord, PartitionChangeRecord};
use spate_net::Uuid;

use super::MetadataImage;

/// Kafka's "no leader" in partition records.
pub const NO_LEADER: i32 = -1;

/// The `PartitionChangeRecord`s that bring every partition's leader in line with which
/// brokers are live in `image` (the image with the broker changes already applied).
pub fn elect_leaders(image: &MetadataImage) -> Vec<ApiMessageAndVersion> {
    let mut out = Vec::new();
    for topic in image.topics.values() {
        for (index, p) in topic.partitions.iter().enumerate() {
            if p.leader != NO_LEADER && image.is_live(p.leader) {
                continue;
            }
            let next = p
                .isr
                .iter()
                .copied()
                .find(|&r| r != p.leader && image.is_live(r))
                .unwrap_or(NO_LEADER);
            if next == p.leader {
                continue;
            }
            let isr = (p.leader != NO_LEADER && p.isr.len() > 1 && p.isr.contains(&p.leader))
                .then(|| p.isr.iter().copied().filter(|&r| r != p.leader).collect());
            out.push(ApiMessageAndVersion::latest(
                MetadataRecord::PartitionChange(PartitionChangeRecord {
                    topic_id: Uuid(topic.id),
                    partition_id: index as i32,
                    leader: next,
                    isr,
                    ..Default::default()
                }),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use spate_net::metadata_records::{FenceBrokerRecord, UnfenceBrokerRecord};

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

    fn image(placed: &[NewPartition]) -> MetadataImage {
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

    fn fence(img: &mut MetadataImage, id: i32, fenced: bool) {
        img.replay(&if fenced {
            MetadataRecord::FenceBroker(FenceBrokerRecord { id, epoch: 1 })
        } else {
            MetadataRecord::UnfenceBroker(UnfenceBrokerRecord { id, epoch: 1 })
        });
        let changes = elect_leaders(img);
        img.replay_all(&changes);
    }

    fn leader_and_isr(img: &MetadataImage, p: usize) -> (i32, Vec<i32>) {
        let p = &img.topic("t").unwrap().partitions[p];
        (p.leader, p.isr.clone())
    }

    #[test]
    fn a_single_replica_loses_its_leader_and_gets_it_back() {
        let mut img = image(&[NewPartition::new(vec![1], |_| true)]);
        assert!(elect_leaders(&img).is_empty(), "nothing to change");
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
        // Only the last in-sync replica may lead again.
        fence(&mut img, 1, false);
        assert_eq!(leader_and_isr(&img, 0), (NO_LEADER, vec![2]));
        fence(&mut img, 2, false);
        assert_eq!(leader_and_isr(&img, 0), (2, vec![2]));
    }
}
