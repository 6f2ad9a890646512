//! The metadata records. Stored as JSON, one record per log entry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MetadataRecord {
    /// A new topic; `slots[p]` places partition `p` (owner shard = slot % shard count).
    CreateTopic {
        name: String,
        id: [u8; 16],
        slots: Vec<u32>,
        configs: BTreeMap<String, String>,
    },
    /// Partitions appended to an existing topic.
    AddPartitions {
        name: String,
        slots: Vec<u32>,
    },
    /// The topic's config overrides, replaced as a whole.
    SetTopicConfigs {
        name: String,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
    },
    /// The dynamic configs of a broker (`resource` is its id) or of the cluster default
    /// (`resource` is empty), replaced as a whole.
    SetBrokerConfigs {
        resource: String,
        configs: BTreeMap<String, String>,
    },
    /// The configs of a consumer group (KIP-848's GROUP config resource), replaced as a
    /// whole; empty removes them.
    SetGroupConfigs {
        group: String,
        configs: BTreeMap<String, String>,
    },
    /// Producer ids below `end` have been handed out (allocated in blocks).
    ProducerIds {
        end: i64,
    },
}
