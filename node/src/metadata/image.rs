//! The metadata state machine: an immutable image, replaced whole on every change and
//! shared between shards behind an `Arc`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::MetadataRecord;

#[derive(Debug, Clone, PartialEq)]
pub struct PartitionInfo {
    /// Placement slot; the owner shard is `slot % shard_count`.
    pub slot: u32,
    pub leader_epoch: i32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopicImage {
    pub name: String,
    pub id: [u8; 16],
    pub partitions: Vec<PartitionInfo>,
    /// Config overrides only; defaults come from the broker config.
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default)]
pub struct MetadataImage {
    /// Number of records applied; grows with every change.
    pub version: u64,
    pub topics: BTreeMap<String, Arc<TopicImage>>,
    pub topic_names_by_id: HashMap<[u8; 16], String>,
    /// Every producer id below this has been handed out.
    pub producer_ids_end: i64,
    /// Dynamic broker configs by resource: a broker id, or "" for the cluster default.
    pub broker_configs: BTreeMap<String, BTreeMap<String, String>>,
    /// Consumer group configs by group id (only groups that have some).
    pub group_configs: BTreeMap<String, BTreeMap<String, String>>,
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

    /// Apply one record. Records are validated before they are written, so a record
    /// that does not fit (e.g. replayed after a partial write) is skipped with a warning.
    pub fn apply(&mut self, record: &MetadataRecord) {
        self.version += 1;
        match record {
            MetadataRecord::CreateTopic {
                name,
                id,
                slots,
                configs,
            } => {
                if self.topics.contains_key(name) {
                    tracing::warn!(topic = %name, "metadata: create of an existing topic skipped");
                    return;
                }
                let topic = TopicImage {
                    name: name.clone(),
                    id: *id,
                    partitions: slots
                        .iter()
                        .map(|&slot| PartitionInfo {
                            slot,
                            leader_epoch: 0,
                        })
                        .collect(),
                    configs: configs.clone(),
                };
                self.topic_names_by_id.insert(*id, name.clone());
                self.topics.insert(name.clone(), Arc::new(topic));
            }
            MetadataRecord::AddPartitions { name, slots } => match self.topics.get_mut(name) {
                Some(t) => {
                    let t = Arc::make_mut(t);
                    t.partitions.extend(slots.iter().map(|&slot| PartitionInfo {
                        slot,
                        leader_epoch: 0,
                    }));
                }
                None => {
                    tracing::warn!(topic = %name, "metadata: partitions for a missing topic skipped")
                }
            },
            MetadataRecord::SetTopicConfigs { name, configs } => match self.topics.get_mut(name) {
                Some(t) => Arc::make_mut(t).configs = configs.clone(),
                None => {
                    tracing::warn!(topic = %name, "metadata: configs for a missing topic skipped")
                }
            },
            MetadataRecord::SetBrokerConfigs { resource, configs } => {
                if configs.is_empty() {
                    self.broker_configs.remove(resource);
                } else {
                    self.broker_configs
                        .insert(resource.clone(), configs.clone());
                }
            }
            MetadataRecord::SetGroupConfigs { group, configs } => {
                if configs.is_empty() {
                    self.group_configs.remove(group);
                } else {
                    self.group_configs.insert(group.clone(), configs.clone());
                }
            }
            MetadataRecord::ProducerIds { end } => {
                self.producer_ids_end = self.producer_ids_end.max(*end)
            }
            MetadataRecord::DeleteTopic { name } => {
                if let Some(t) = self.topics.remove(name) {
                    self.topic_names_by_id.remove(&t.id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_extend_configure_delete() {
        let mut img = MetadataImage::default();
        img.apply(&MetadataRecord::CreateTopic {
            name: "t".into(),
            id: [1; 16],
            slots: vec![0, 1],
            configs: BTreeMap::new(),
        });
        img.apply(&MetadataRecord::AddPartitions {
            name: "t".into(),
            slots: vec![2],
        });
        let mut c = BTreeMap::new();
        c.insert("retention.ms".to_string(), "5".to_string());
        img.apply(&MetadataRecord::SetTopicConfigs {
            name: "t".into(),
            configs: c.clone(),
        });
        let t = img.topic_by_id(&[1; 16]).unwrap();
        assert_eq!(t.partitions.len(), 3);
        assert_eq!(t.configs, c);
        img.apply(&MetadataRecord::DeleteTopic { name: "t".into() });
        assert!(img.topic("t").is_none());
        assert!(img.topic_by_id(&[1; 16]).is_none());
        assert_eq!(img.version, 4);
        img.apply(&MetadataRecord::SetBrokerConfigs {
            resource: String::new(),
            configs: c.clone(),
        });
        assert_eq!(img.broker_configs.get(""), Some(&c));
        img.apply(&MetadataRecord::SetBrokerConfigs {
            resource: String::new(),
            configs: BTreeMap::new(),
        });
        assert!(img.broker_configs.is_empty());
    }
}
