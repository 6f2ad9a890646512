//! Topic configs with Kafka's names: the supported keys, their types, defaults (taken from
//! the broker's `topic_defaults`), validation, and the log settings they resolve to.

use std::collections::BTreeMap;

use crate::config::TopicDefaults;

/// Kafka's `ConfigType` values used in DescribeConfigs v3+.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i8)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    List = 7,
}

/// Kafka's `ConfigSource` values.
pub mod source {
    pub const TOPIC_CONFIG: i8 = 1;
    pub const STATIC_BROKER_CONFIG: i8 = 4;
    pub const DEFAULT_CONFIG: i8 = 5;
}

/// One supported topic config.
pub struct TopicConfigDef {
    pub name: &'static str,
    pub kind: ConfigType,
    /// The broker setting whose value is this config's default (shown as a synonym).
    pub broker_synonym: &'static str,
    default: fn(&TopicDefaults) -> String,
    validate: fn(&str) -> Result<(), String>,
}

impl TopicConfigDef {
    pub fn default_value(&self, d: &TopicDefaults) -> String {
        (self.default)(d)
    }
}

fn long_at_least(min: i64) -> impl Fn(&str) -> Result<(), String> {
    move |v: &str| match v.trim().parse::<i64>() {
        Ok(n) if n >= min => Ok(()),
        Ok(_) => Err(format!("must be at least {min}")),
        Err(_) => Err("must be a 64-bit integer".to_string()),
    }
}

fn int_at_least(min: i64) -> impl Fn(&str) -> Result<(), String> {
    move |v: &str| match v.trim().parse::<i32>() {
        Ok(n) if i64::from(n) >= min => Ok(()),
        Ok(_) => Err(format!("must be at least {min}")),
        Err(_) => Err("must be a 32-bit integer".to_string()),
    }
}

/// Every topic config the broker accepts, sorted by name.
pub static TOPIC_CONFIGS: &[TopicConfigDef] = &[
    TopicConfigDef {
        name: "cleanup.policy",
        kind: ConfigType::List,
        broker_synonym: "log.cleanup.policy",
        default: |_| "delete".into(),
        // Compaction is not built yet; accepting "compact" would silently keep everything.
        validate: |v| match v.trim() {
            "delete" => Ok(()),
            "compact" | "compact,delete" | "delete,compact" => {
                Err("cleanup.policy=compact is not supported yet".into())
            }
            _ => Err("must be delete".into()),
        },
    },
    TopicConfigDef {
        name: "compression.type",
        kind: ConfigType::String,
        broker_synonym: "compression.type",
        default: |_| "producer".into(),
        validate: |v| match v.trim() {
            "producer" | "uncompressed" | "gzip" | "snappy" | "lz4" | "zstd" => Ok(()),
            _ => Err("must be one of producer, uncompressed, gzip, snappy, lz4, zstd".into()),
        },
    },
    TopicConfigDef {
        name: "flush.messages",
        kind: ConfigType::Long,
        broker_synonym: "log.flush.interval.messages",
        default: |d| d.flush_messages.to_string(),
        validate: |v| long_at_least(1)(v),
    },
    TopicConfigDef {
        name: "flush.ms",
        kind: ConfigType::Long,
        broker_synonym: "log.flush.interval.ms",
        default: |d| d.flush_ms.to_string(),
        validate: |v| long_at_least(0)(v),
    },
    TopicConfigDef {
        name: "index.interval.bytes",
        kind: ConfigType::Int,
        broker_synonym: "log.index.interval.bytes",
        default: |d| d.index_interval_bytes.to_string(),
        validate: |v| int_at_least(0)(v),
    },
    TopicConfigDef {
        name: "max.message.bytes",
        kind: ConfigType::Int,
        broker_synonym: "message.max.bytes",
        default: |d| d.max_message_bytes.to_string(),
        validate: |v| int_at_least(0)(v),
    },
    TopicConfigDef {
        name: "message.timestamp.type",
        kind: ConfigType::String,
        broker_synonym: "log.message.timestamp.type",
        default: |d| d.message_timestamp_type.clone(),
        validate: |v| match v.trim() {
            "CreateTime" | "LogAppendTime" => Ok(()),
            _ => Err("must be CreateTime or LogAppendTime".into()),
        },
    },
    TopicConfigDef {
        name: "min.insync.replicas",
        kind: ConfigType::Int,
        broker_synonym: "min.insync.replicas",
        default: |_| "1".into(),
        validate: |v| int_at_least(1)(v),
    },
    TopicConfigDef {
        name: "retention.bytes",
        kind: ConfigType::Long,
        broker_synonym: "log.retention.bytes",
        default: |d| d.retention_bytes.to_string(),
        validate: |v| long_at_least(-1)(v),
    },
    TopicConfigDef {
        name: "retention.ms",
        kind: ConfigType::Long,
        broker_synonym: "log.retention.ms",
        default: |d| d.retention_ms.to_string(),
        validate: |v| long_at_least(-1)(v),
    },
    TopicConfigDef {
        name: "segment.bytes",
        kind: ConfigType::Int,
        broker_synonym: "log.segment.bytes",
        default: |d| d.segment_bytes.to_string(),
        // Kafka's floor is 14 bytes; one page keeps O_DIRECT segments sane.
        validate: |v| int_at_least(4096)(v),
    },
    TopicConfigDef {
        name: "segment.ms",
        kind: ConfigType::Long,
        broker_synonym: "log.roll.ms",
        default: |d| d.segment_ms.to_string(),
        validate: |v| long_at_least(1)(v),
    },
];

pub fn find(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Check one override; the error text goes back to the client with INVALID_CONFIG.
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    match find(name) {
        Some(def) => (def.validate)(value).map_err(|e| format!("Invalid value {value} for configuration {name}: {e}")),
        None => Err(format!("Unknown topic config name: {name}")),
    }
}

/// A topic's effective settings: its overrides over the broker defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct EffectiveTopicConfig {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub segment_bytes: i64,
    pub segment_ms: i64,
    pub max_message_bytes: i32,
    pub flush_messages: i64,
    pub flush_ms: i64,
    pub index_interval_bytes: i32,
    pub log_append_time: bool,
    pub min_insync_replicas: i32,
    /// The codec batches are stored with; `None` keeps the producer's.
    pub compression: Option<spate_net::compression::Compression>,
}

impl EffectiveTopicConfig {
    pub fn resolve(defaults: &TopicDefaults, overrides: &BTreeMap<String, String>) -> Self {
        let get = |name: &str| -> String {
            overrides
                .get(name)
                .cloned()
                .or_else(|| find(name).map(|d| d.default_value(defaults)))
                .unwrap_or_default()
        };
        let long = |name: &str, fallback: i64| get(name).trim().parse::<i64>().unwrap_or(fallback);
        let int = |name: &str, fallback: i32| get(name).trim().parse::<i32>().unwrap_or(fallback);
        EffectiveTopicConfig {
            retention_ms: long("retention.ms", defaults.retention_ms),
            retention_bytes: long("retention.bytes", defaults.retention_bytes),
            segment_bytes: long("segment.bytes", defaults.segment_bytes),
            segment_ms: long("segment.ms", defaults.segment_ms),
            max_message_bytes: int("max.message.bytes", defaults.max_message_bytes as i32),
            flush_messages: long("flush.messages", defaults.flush_messages),
            flush_ms: long("flush.ms", defaults.flush_ms),
            index_interval_bytes: int("index.interval.bytes", defaults.index_interval_bytes as i32),
            log_append_time: get("message.timestamp.type").trim() == "LogAppendTime",
            min_insync_replicas: int("min.insync.replicas", 1),
            compression: spate_net::compression::Compression::from_name(get("compression.type").trim()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> TopicDefaults {
        TopicDefaults {
            retention_ms: 604_800_000,
            retention_bytes: -1,
            segment_bytes: 1 << 30,
            segment_ms: 604_800_000,
            max_message_bytes: 1_048_588,
            flush_messages: i64::MAX,
            flush_ms: i64::MAX,
            index_interval_bytes: 4096,
            message_timestamp_type: "CreateTime".into(),
        }
    }

    #[test]
    fn configs_are_sorted_and_unique() {
        for w in TOPIC_CONFIGS.windows(2) {
            assert!(w[0].name < w[1].name, "{} before {}", w[0].name, w[1].name);
        }
    }

    #[test]
    fn validation() {
        assert!(validate("retention.ms", "-1").is_ok());
        assert!(validate("retention.ms", "-2").is_err());
        assert!(validate("retention.ms", "abc").is_err());
        assert!(validate("segment.bytes", "100").is_err());
        assert!(validate("no.such.config", "1").is_err());
        assert!(validate("cleanup.policy", "compact").is_err());
        assert!(validate("message.timestamp.type", "LogAppendTime").is_ok());
    }

    #[test]
    fn overrides_win() {
        let mut o = BTreeMap::new();
        o.insert("retention.ms".to_string(), "1000".to_string());
        o.insert("message.timestamp.type".to_string(), "LogAppendTime".to_string());
        let e = EffectiveTopicConfig::resolve(&defaults(), &o);
        assert_eq!(e.retention_ms, 1000);
        assert!(e.log_append_time);
        assert_eq!(e.max_message_bytes, 1_048_588);
    }
}
