//! The metadata log Spate wrote before the controller quorum:
//! `<data_dir>/__cluster_metadata/metadata.log`, entries `[len: u32 BE][crc32c: u32
//! BE][JSON record]`. Read once, at the first start of a newer broker, and converted
//! to KRaft records (`migrate.rs`); nothing writes this format any more.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;
use spate_net::metadata_frame::ApiMessageAndVersion;

use super::records::{self, resource_type};
use super::MetadataImage;

/// Largest single entry accepted (a topic with many partitions and configs).
const MAX_ENTRY: usize = 64 << 20;

/// One record of the old log, as it was serialized.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LegacyRecord {
    /// `slots` had one entry per partition (the old shard placement, now derived).
    CreateTopic {
        name: String,
        id: [u8; 16],
        slots: Vec<u32>,
        configs: BTreeMap<String, String>,
    },
    AddPartitions {
        name: String,
        slots: Vec<u32>,
    },
    /// The topic's overrides, replaced as a whole.
    SetTopicConfigs {
        name: String,
        configs: BTreeMap<String, String>,
    },
    DeleteTopic {
        name: String,
    },
    /// A broker's (or, with an empty resource, the cluster default's) dynamic configs,
    /// replaced as a whole.
    SetBrokerConfigs {
        resource: String,
        configs: BTreeMap<String, String>,
    },
    ProducerIds {
        end: i64,
    },
}

/// Reads the records of the old log up to the first torn or corrupt entry (a crash
/// mid-append left it; the old broker cut it off at its next start too).
pub fn read(path: &Path) -> anyhow::Result<Vec<LegacyRecord>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut records = Vec::new();
    let mut rest = &bytes[..];
    while let Some((head, body)) = rest.split_at_checked(8) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        let Some((entry, tail)) = body.split_at_checked(len).filter(|_| len <= MAX_ENTRY) else {
            break;
        };
        if crc32c::crc32c(entry) != crc {
            break;
        }
        match serde_json::from_slice(entry) {
            Ok(r) => records.push(r),
            Err(_) => break,
        }
        rest = tail;
    }
    if !rest.is_empty() {
        tracing::warn!(path = %path.display(), ignored_bytes = rest.len(), "old metadata log has a torn or corrupt tail; ignoring it");
    }
    Ok(records)
}

/// The state the old records describe, as KRaft records: they are replayed in order
/// (each translated to KRaft records on a scratch image), and the resulting image is
/// written out as records, so deleted topics and replaced configs leave nothing behind.
/// Every partition gets `node` as its single replica and leader.
pub fn to_kraft(old: &[LegacyRecord], node: i32) -> Vec<ApiMessageAndVersion> {
    let mut image = MetadataImage::default();
    for r in old {
        let translated = translate(&image, r, node);
        image.replay_all(&translated);
    }
    records::image_records(&image)
}

fn translate(image: &MetadataImage, r: &LegacyRecord, node: i32) -> Vec<ApiMessageAndVersion> {
    let missing = |name: &str| {
        tracing::warn!(topic = %name, "old metadata log: record for a missing topic skipped");
        Vec::new()
    };
    match r {
        LegacyRecord::CreateTopic {
            name,
            id,
            slots,
            configs,
        } => records::create_topic(name, *id, slots.len() as i32, node, configs),
        LegacyRecord::AddPartitions { name, slots } => match image.topic(name) {
            Some(t) => {
                let from = t.partitions.len() as i32;
                records::add_partitions(t.id, from, from + slots.len() as i32, node)
            }
            None => missing(name),
        },
        LegacyRecord::SetTopicConfigs { name, configs } => match image.topic(name) {
            Some(t) => records::config_diff(resource_type::TOPIC, name, &t.configs, configs),
            None => missing(name),
        },
        LegacyRecord::DeleteTopic { name } => match image.topic(name) {
            Some(t) => vec![records::remove_topic(t.id)],
            None => missing(name),
        },
        LegacyRecord::SetBrokerConfigs { resource, configs } => {
            let old = image
                .broker_configs
                .get(resource)
                .cloned()
                .unwrap_or_default();
            records::config_diff(resource_type::BROKER, resource, &old, configs)
        }
        LegacyRecord::ProducerIds { end } => vec![records::producer_ids(node, *end)],
    }
}
