//! Topic configs with Kafka's names: the supported keys, their types, defaults (taken from
//! the broker's `topic_defaults`), validation, and the log settings they resolve to.

use std::collections::BTreeMap;

use spate_net::compression::Compression;

use crate::config::TopicDefaults;

/// Kafka's `ConfigType` values used in DescribeConfigs v3+.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i8)]
pub enum ConfigType {
    /// A config the broker does not know (kept for plugins, as Kafka keeps it).
    Unknown = 0,
    Boolean = 1,
    String = 2,
    Int = 3,
    Short = 4,
    Long = 5,
    Double = 6,
    List = 7,
}

/// Kafka's `ConfigSource` values.
pub mod source {
    pub const TOPIC_CONFIG: i8 = 1;
    pub const DYNAMIC_BROKER_CONFIG: i8 = 2;
    pub const DYNAMIC_DEFAULT_BROKER_CONFIG: i8 = 3;
    pub const STATIC_BROKER_CONFIG: i8 = 4;
    pub const DEFAULT_CONFIG: i8 = 5;
    pub const DYNAMIC_BROKER_LOGGER_CONFIG: i8 = 6;
}

/// One supported topic config.
pub struct TopicConfigDef {
    pub name: &'static str,
    pub kind: ConfigType,
    /// What it does, for DescribeConfigs' documentation (v3+).
    pub doc: &'static str,
    /// The broker setting whose value is this config's default (shown as a synonym).
    pub broker_synonym: &'static str,
    default: fn(&TopicDefaults) -> String,
    validate: fn(&str) -> Result<(), String>,
}

impl TopicConfigDef {
    pub fn default_value(&self, d: &TopicDefaults) -> String {
        (self.default)(d)
    }

    /// Check a value of this config (or of its broker synonym); the reason in Kafka's words.
    pub fn check(&self, value: &str) -> Result<(), String> {
        (self.validate)(value)
    }
}

// Validation follows Kafka 4.4's `LogConfig` definitions (`ConfigDef` with `atLeast`,
// `between`, ...), with Kafka's wording, so clients see the same INVALID_CONFIG messages.

fn parse_long(v: &str) -> Result<i64, String> {
    v.trim()
        .parse::<i64>()
        .map_err(|_| "Not a number of type LONG".to_string())
}

fn parse_int(v: &str) -> Result<i32, String> {
    v.trim()
        .parse::<i32>()
        .map_err(|_| "Not a number of type INT".to_string())
}

/// Kafka's `Range.atLeast` on a LONG config.
fn long_at_least(min: i64) -> impl Fn(&str) -> Result<(), String> {
    move |v: &str| match parse_long(v)? {
        n if n >= min => Ok(()),
        _ => Err(format!("Value must be at least {min}")),
    }
}

/// A LONG config without a range (Kafka's `retention.bytes`: any negative is "no limit").
fn long_any(v: &str) -> Result<(), String> {
    parse_long(v).map(|_| ())
}

fn boolean(v: &str) -> Result<(), String> {
    match v.trim() {
        "true" | "false" => Ok(()),
        _ => Err("Expected value to be either true or false".to_string()),
    }
}

/// Kafka's `Range.between` on an INT config.
fn int_in(min: i32, max: i32) -> impl Fn(&str) -> Result<(), String> {
    move |v: &str| match parse_int(v)? {
        n if n < min => Err(format!("Value must be at least {min}")),
        n if n > max => Err(format!("Value must be no more than {max}")),
        _ => Ok(()),
    }
}

/// Kafka's `Range.atLeast` on an INT config.
fn int_at_least(min: i32) -> impl Fn(&str) -> Result<(), String> {
    move |v: &str| match parse_int(v)? {
        n if n >= min => Ok(()),
        _ => Err(format!("Value must be at least {min}")),
    }
}

/// Kafka 4.0+ (KIP-1030): the smallest `segment.bytes` a topic may set.
pub const MIN_SEGMENT_BYTES: i32 = 1024 * 1024;

/// Confluent's default subject name strategy.
const SUBJECT_STRATEGY_DEFAULT: &str = "io.confluent.kafka.serializers.subject.TopicNameStrategy";

/// A subject name strategy, by Confluent's class name or its last part.
fn subject_strategy(v: &str) -> Result<(), String> {
    match crate::schema_registry::Strategy::parse(v) {
        Some(_) => Ok(()),
        None => Err("Must be TopicNameStrategy, RecordNameStrategy or TopicRecordNameStrategy (optionally with Confluent's package name)".into()),
    }
}

/// Every topic config the broker accepts, sorted by name.
pub static TOPIC_CONFIGS: &[TopicConfigDef] = &[
    TopicConfigDef {
        name: "cleanup.policy",
        doc: "What happens to old segments: delete (retention by time and size), compact (the latest record of each key is kept), both, or neither (empty).",
        kind: ConfigType::List,
        broker_synonym: "log.cleanup.policy",
        default: |d| d.cleanup_policy.clone(),
        // A list of `compact` and `delete` (either order, duplicates folded); empty means
        // neither (Kafka 4: data is kept forever).
        validate: |v| match v
            .split(',')
            .map(str::trim)
            .find(|p| !p.is_empty() && *p != "compact" && *p != "delete")
        {
            Some(_) => Err("String must be one of: compact, delete".into()),
            None => Ok(()),
        },
    },
    TopicConfigDef {
        name: "compression.gzip.level",
        doc: "The gzip level used when compression.type makes the broker recompress batches with gzip.",
        kind: ConfigType::Int,
        broker_synonym: "compression.gzip.level",
        default: |_| "-1".into(),
        // Levels of broker-side recompression (compression.type); Kafka's ranges:
        // gzip takes 1..9 or -1 (the codec's default), not 0.
        validate: |v| match parse_int(v)? {
            -1 | 1..=9 => Ok(()),
            _ => Err("Value must be between 1 and 9 or equal to -1".into()),
        },
    },
    TopicConfigDef {
        name: "compression.lz4.level",
        doc: "The lz4 level used when compression.type is lz4; accepted, the lz4 encoder has one level.",
        kind: ConfigType::Int,
        broker_synonym: "compression.lz4.level",
        default: |_| "9".into(),
        validate: |v| int_in(1, 17)(v),
    },
    TopicConfigDef {
        name: "compression.type",
        doc: "The codec batches are stored with: producer keeps them as produced, a codec recompresses other batches.",
        kind: ConfigType::String,
        broker_synonym: "compression.type",
        default: |_| "producer".into(),
        validate: |v| match v.trim() {
            "producer" | "uncompressed" | "gzip" | "snappy" | "lz4" | "zstd" => Ok(()),
            _ => {
                Err("String must be one of: uncompressed, zstd, lz4, snappy, gzip, producer".into())
            }
        },
    },
    TopicConfigDef {
        name: "compression.zstd.level",
        doc: "The zstd level used when compression.type makes the broker recompress batches with zstd.",
        kind: ConfigType::Int,
        broker_synonym: "compression.zstd.level",
        default: |_| "3".into(),
        validate: |v| int_in(-131072, 22)(v),
    },
    TopicConfigDef {
        name: "confluent.key.schema.validation",
        doc: "Broker-side schema validation of record keys: each key must start with magic byte 0 and the id of a schema registered under the key subject (docs/schema-registry.md).",
        kind: ConfigType::Boolean,
        broker_synonym: "confluent.key.schema.validation",
        default: |_| "false".into(),
        validate: boolean,
    },
    TopicConfigDef {
        name: "confluent.key.subject.name.strategy",
        doc: "How the key subject is named for schema validation: TopicNameStrategy (<topic>-key), RecordNameStrategy or TopicRecordNameStrategy.",
        kind: ConfigType::String,
        broker_synonym: "confluent.key.subject.name.strategy",
        default: |_| SUBJECT_STRATEGY_DEFAULT.into(),
        validate: subject_strategy,
    },
    TopicConfigDef {
        name: "confluent.value.schema.validation",
        doc: "Broker-side schema validation of record values: each value must start with magic byte 0 and the id of a schema registered under the value subject (docs/schema-registry.md).",
        kind: ConfigType::Boolean,
        broker_synonym: "confluent.value.schema.validation",
        default: |_| "false".into(),
        validate: boolean,
    },
    TopicConfigDef {
        name: "confluent.value.subject.name.strategy",
        doc: "How the value subject is named for schema validation: TopicNameStrategy (<topic>-value), RecordNameStrategy or TopicRecordNameStrategy.",
        kind: ConfigType::String,
        broker_synonym: "confluent.value.subject.name.strategy",
        default: |_| SUBJECT_STRATEGY_DEFAULT.into(),
        validate: subject_strategy,
    },
    TopicConfigDef {
        name: "delete.retention.ms",
        doc: "How long a tombstone stays readable after the clean that first kept it, for compacted topics.",
        kind: ConfigType::Long,
        broker_synonym: "log.cleaner.delete.retention.ms",
        default: |d| d.delete_retention_ms.to_string(),
        // How long a tombstone stays readable once the cleaner has seen it (KIP-534).
        validate: |v| long_at_least(0)(v),
    },
    TopicConfigDef {
        name: "file.delete.delay.ms",
        doc: "Accepted; expired segments are deleted at once.",
        kind: ConfigType::Long,
        broker_synonym: "log.segment.delete.delay.ms",
        default: |_| "60000".into(),
        validate: |v| long_at_least(0)(v),
    },
    TopicConfigDef {
        name: "flush.messages",
        doc: "fdatasync after this many messages have been written since the last sync.",
        kind: ConfigType::Long,
        broker_synonym: "log.flush.interval.messages",
        default: |d| d.flush_messages.to_string(),
        validate: |v| long_at_least(1)(v),
    },
    TopicConfigDef {
        name: "flush.ms",
        doc: "fdatasync when the oldest write not yet synced is this old.",
        kind: ConfigType::Long,
        broker_synonym: "log.flush.interval.ms",
        default: |d| d.flush_ms.to_string(),
        validate: |v| long_at_least(0)(v),
    },
    TopicConfigDef {
        name: "follower.replication.throttled.replicas",
        doc: "Replicas (partition:broker, or *) whose followers' fetches count against follower.replication.throttled.rate.",
        kind: ConfigType::List,
        broker_synonym: "follower.replication.throttled.replicas",
        default: |_| String::new(),
        validate: crate::replica::quota::validate_replica_list,
    },
    TopicConfigDef {
        name: "index.interval.bytes",
        doc: "Bytes of records between two entries of the sparse offset and time indexes.",
        kind: ConfigType::Int,
        broker_synonym: "log.index.interval.bytes",
        default: |d| d.index_interval_bytes.to_string(),
        validate: |v| int_at_least(0)(v),
    },
    TopicConfigDef {
        name: "leader.replication.throttled.replicas",
        doc: "Replicas (partition:broker, or *) whose leader's sends to followers count against leader.replication.throttled.rate.",
        kind: ConfigType::List,
        broker_synonym: "leader.replication.throttled.replicas",
        default: |_| String::new(),
        validate: crate::replica::quota::validate_replica_list,
    },
    TopicConfigDef {
        name: "max.compaction.lag.ms",
        doc: "The longest a record may stay uncompacted: older dirty records trigger a clean whatever the dirty ratio.",
        kind: ConfigType::Long,
        broker_synonym: "log.cleaner.max.compaction.lag.ms",
        default: |d| d.max_compaction_lag_ms.to_string(),
        validate: |v| long_at_least(1)(v),
    },
    TopicConfigDef {
        name: "max.message.bytes",
        doc: "The largest record batch accepted, after compression.",
        kind: ConfigType::Int,
        broker_synonym: "message.max.bytes",
        default: |d| d.max_message_bytes.to_string(),
        validate: |v| int_at_least(0)(v),
    },
    TopicConfigDef {
        name: "message.timestamp.after.max.ms",
        doc: "Batches whose newest timestamp is further ahead of the broker clock are refused (CreateTime topics).",
        kind: ConfigType::Long,
        broker_synonym: "log.message.timestamp.after.max.ms",
        default: |d| d.timestamp_after_max_ms.to_string(),
        // Batches whose newest timestamp is further ahead of the broker clock are refused.
        validate: |v| long_at_least(0)(v),
    },
    TopicConfigDef {
        name: "message.timestamp.before.max.ms",
        doc: "Batches whose first timestamp is further behind the broker clock are refused (CreateTime topics).",
        kind: ConfigType::Long,
        broker_synonym: "log.message.timestamp.before.max.ms",
        default: |d| d.timestamp_before_max_ms.to_string(),
        // Batches whose first timestamp is further behind the broker clock are refused.
        validate: |v| long_at_least(0)(v),
    },
    TopicConfigDef {
        name: "message.timestamp.type",
        doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps batches with the broker clock.",
        kind: ConfigType::String,
        broker_synonym: "log.message.timestamp.type",
        default: |d| d.message_timestamp_type.clone(),
        validate: |v| match v.trim() {
            "CreateTime" | "LogAppendTime" => Ok(()),
            _ => Err("String must be one of: CreateTime, LogAppendTime".into()),
        },
    },
    TopicConfigDef {
        name: "min.cleanable.dirty.ratio",
        doc: "A compacted partition is cleaned when its uncleaned bytes exceed this share of its sealed bytes.",
        kind: ConfigType::Double,
        broker_synonym: "log.cleaner.min.cleanable.ratio",
        default: |d| d.min_cleanable_dirty_ratio.to_string(),
        validate: |v| match v.trim().parse::<f64>() {
            Ok(r) if r < 0.0 => Err("Value must be at least 0".into()),
            Ok(r) if r > 1.0 => Err("Value must be no more than 1".into()),
            Ok(r) if r.is_nan() => Err("Not a number of type DOUBLE".into()),
            Ok(_) => Ok(()),
            Err(_) => Err("Not a number of type DOUBLE".into()),
        },
    },
    TopicConfigDef {
        name: "min.compaction.lag.ms",
        doc: "Records younger than this are not compacted yet.",
        kind: ConfigType::Long,
        broker_synonym: "log.cleaner.min.compaction.lag.ms",
        default: |d| d.min_compaction_lag_ms.to_string(),
        validate: |v| long_at_least(0)(v),
    },
    TopicConfigDef {
        name: "min.insync.replicas",
        doc: "acks=all produce needs at least this many in-sync replicas (one on a single node).",
        kind: ConfigType::Int,
        broker_synonym: "min.insync.replicas",
        default: |_| "1".into(),
        validate: |v| int_at_least(1)(v),
    },
    TopicConfigDef {
        name: "preallocate",
        doc: "Allocate a new segment file at its full segment.bytes at once.",
        kind: ConfigType::Boolean,
        broker_synonym: "log.preallocate",
        default: |_| "false".into(),
        // true: a new segment file is allocated at its full segment.bytes; false: it grows in steps of segment_preallocate_bytes.
        validate: boolean,
    },
    TopicConfigDef {
        name: "retention.bytes",
        doc: "Delete the oldest segments while the partition is larger than this (-1: no limit).",
        kind: ConfigType::Long,
        broker_synonym: "log.retention.bytes",
        default: |d| d.retention_bytes.to_string(),
        // Kafka has no range here: any negative value means no size limit.
        validate: long_any,
    },
    TopicConfigDef {
        name: "retention.ms",
        doc: "Delete segments whose newest record is older than this (-1: keep forever).",
        kind: ConfigType::Long,
        broker_synonym: "log.retention.ms",
        default: |d| d.retention_ms.to_string(),
        validate: |v| long_at_least(-1)(v),
    },
    TopicConfigDef {
        name: "segment.bytes",
        doc: "Roll the active segment at this size.",
        kind: ConfigType::Int,
        broker_synonym: "log.segment.bytes",
        default: |d| d.segment_bytes.to_string(),
        // Kafka 4.0+ refuses segments below 1 MiB (KIP-1030).
        validate: |v| int_at_least(MIN_SEGMENT_BYTES)(v),
    },
    TopicConfigDef {
        name: "segment.index.bytes",
        doc: "The size cap of a segment's offset index; a full index rolls the segment.",
        kind: ConfigType::Int,
        broker_synonym: "log.index.size.max.bytes",
        default: |_| "10485760".into(),
        // The offset index's size cap; a full index rolls the segment. Kafka's floor is 4;
        // the log never uses less than one page (partition.rs).
        validate: |v| int_at_least(4)(v),
    },
    TopicConfigDef {
        name: "segment.jitter.ms",
        doc: "Up to this much, fixed per partition, is taken off segment.ms so that partitions do not roll together.",
        kind: ConfigType::Long,
        broker_synonym: "log.roll.jitter.ms",
        default: |_| "0".into(),
        // A random amount up to this is taken off segment.ms per partition, so partitions do not all roll at once.
        validate: |v| long_at_least(0)(v),
    },
    TopicConfigDef {
        name: "segment.ms",
        doc: "Roll the active segment at this age.",
        kind: ConfigType::Long,
        broker_synonym: "log.roll.ms",
        default: |d| d.segment_ms.to_string(),
        validate: |v| long_at_least(1)(v),
    },
    TopicConfigDef {
        name: "unclean.leader.election.enable",
        doc: "When no in-sync replica is live, elect a live replica outside the ISR (it may lack acknowledged records).",
        kind: ConfigType::Boolean,
        broker_synonym: "unclean.leader.election.enable",
        default: |d| d.unclean_leader_election_enable.to_string(),
        validate: boolean,
    },
];

pub fn find(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// Check one override; the error text goes back to the client with INVALID_CONFIG.
pub fn validate(name: &str, value: &str) -> Result<(), String> {
    match find(name) {
        Some(def) => (def.validate)(value)
            .map_err(|e| format!("Invalid value {value} for configuration {name}: {e}")),
        None => Err(format!("Unknown topic config name: {name}")),
    }
}

/// The stored form of a value: list configs trimmed item by item, duplicates folded,
/// joined with `,` (as Kafka describes them); other values trimmed.
pub fn normalize(name: &str, value: &str) -> String {
    match find(name) {
        Some(def) if def.kind == ConfigType::List => {
            let mut items: Vec<&str> = Vec::new();
            for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                if !items.contains(&item) {
                    items.push(item);
                }
            }
            items.join(",")
        }
        _ => value.trim().to_string(),
    }
}

/// IncrementalAlterConfigs' APPEND (`append`) or SUBTRACT on a list config: the items of
/// `value` added to (once) or removed from `current`, joined by `,`.
pub fn apply_list_op(current: &str, append: bool, value: Option<&str>) -> String {
    let mut items: Vec<&str> = current
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    for item in value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        if append {
            if !items.contains(&item) {
                items.push(item);
            }
        } else {
            items.retain(|i| *i != item);
        }
    }
    items.join(",")
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
    /// `compression.<codec>.level` of that codec.
    pub compression_level: Option<i32>,
    pub timestamp_after_max_ms: i64,
    pub timestamp_before_max_ms: i64,
    pub preallocate: bool,
    pub segment_index_bytes: i32,
    pub segment_jitter_ms: i64,
    /// `cleanup.policy` contains `compact`: the log cleaner keeps the last record per key.
    pub compact: bool,
    /// `cleanup.policy` contains `delete`: retention by time and size applies.
    pub delete: bool,
    pub min_cleanable_dirty_ratio: f64,
    pub min_compaction_lag_ms: i64,
    pub max_compaction_lag_ms: i64,
    pub delete_retention_ms: i64,
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
        let compression = Compression::from_name(get("compression.type").trim());
        let policy = get("cleanup.policy");
        let has_policy = |p: &str| policy.split(',').any(|i| i.trim() == p);
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
            compression,
            compression_level: compression.and_then(|c| match c {
                Compression::Gzip => Some(int("compression.gzip.level", -1)),
                Compression::Zstd => Some(int("compression.zstd.level", 3)),
                Compression::Lz4 => Some(int("compression.lz4.level", 9)),
                _ => None,
            }),
            timestamp_after_max_ms: long(
                "message.timestamp.after.max.ms",
                defaults.timestamp_after_max_ms,
            ),
            timestamp_before_max_ms: long(
                "message.timestamp.before.max.ms",
                defaults.timestamp_before_max_ms,
            ),
            preallocate: get("preallocate").trim() == "true",
            segment_index_bytes: int("segment.index.bytes", 10 << 20),
            segment_jitter_ms: long("segment.jitter.ms", 0),
            compact: has_policy("compact"),
            delete: has_policy("delete"),
            min_cleanable_dirty_ratio: get("min.cleanable.dirty.ratio")
                .trim()
                .parse()
                .unwrap_or(0.5),
            min_compaction_lag_ms: long("min.compaction.lag.ms", 0),
            max_compaction_lag_ms: long("max.compaction.lag.ms", i64::MAX),
            delete_retention_ms: long("delete.retention.ms", 86_400_000),
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
            timestamp_after_max_ms: 3_600_000,
            timestamp_before_max_ms: i64::MAX,
            cleanup_policy: "delete".into(),
            min_cleanable_dirty_ratio: 0.5,
            delete_retention_ms: 86_400_000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            unclean_leader_election_enable: false,
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
        assert!(
            validate("retention.bytes", "-5").is_ok(),
            "Kafka has no range on retention.bytes"
        );
        assert!(validate("retention.bytes", "x").is_err());
        assert!(validate("no.such.config", "1").is_err());
        for ok in [
            "compact",
            "delete",
            "compact,delete",
            "delete, compact",
            "",
            "compact,compact",
        ] {
            assert!(validate("cleanup.policy", ok).is_ok(), "{ok}");
        }
        assert_eq!(
            validate("cleanup.policy", "none"),
            Err("Invalid value none for configuration cleanup.policy: String must be one of: compact, delete".into())
        );
        assert_eq!(
            normalize("cleanup.policy", " compact , delete,compact"),
            "compact,delete"
        );
        assert_eq!(normalize("retention.ms", " 5 "), "5");
        assert_eq!(
            apply_list_op("delete", true, Some("compact, delete")),
            "delete,compact"
        );
        assert_eq!(
            apply_list_op("compact,delete", false, Some("compact")),
            "delete"
        );
        assert!(validate("message.timestamp.type", "LogAppendTime").is_ok());
    }

    #[test]
    fn overrides_win() {
        let mut o = BTreeMap::new();
        o.insert("retention.ms".to_string(), "1000".to_string());
        o.insert(
            "message.timestamp.type".to_string(),
            "LogAppendTime".to_string(),
        );
        let e = EffectiveTopicConfig::resolve(&defaults(), &o);
        assert_eq!(e.retention_ms, 1000);
        assert!(e.log_append_time);
        assert_eq!(e.max_message_bytes, 1_048_588);
    }

    /// Kafka 4.4's minimums (its `LogConfig` `atLeast`/`between` validators, checked
    /// against a real 4.4.0 broker): the value below is refused with Kafka's message, the
    /// minimum itself is accepted.
    #[test]
    fn kafka_minimums() {
        let cases: &[(&str, &str, &str)] = &[
            ("segment.bytes", "1048575", "1048576"),
            ("segment.ms", "0", "1"),
            ("segment.index.bytes", "3", "4"),
            ("segment.jitter.ms", "-1", "0"),
            ("index.interval.bytes", "-1", "0"),
            ("max.message.bytes", "-1", "0"),
            ("retention.ms", "-2", "-1"),
            ("min.insync.replicas", "0", "1"),
            ("flush.messages", "0", "1"),
            ("flush.ms", "-1", "0"),
            ("message.timestamp.after.max.ms", "-1", "0"),
            ("message.timestamp.before.max.ms", "-1", "0"),
            ("delete.retention.ms", "-1", "0"),
            ("file.delete.delay.ms", "-1", "0"),
            ("min.compaction.lag.ms", "-1", "0"),
            ("max.compaction.lag.ms", "0", "1"),
            ("compression.lz4.level", "0", "1"),
            ("compression.zstd.level", "-131073", "-131072"),
        ];
        for (name, below, min) in cases {
            assert_eq!(
                validate(name, below),
                Err(format!(
                    "Invalid value {below} for configuration {name}: Value must be at least {min}"
                )),
                "{name}"
            );
            assert_eq!(validate(name, min), Ok(()), "{name}");
        }
        assert_eq!(
            validate("segment.bytes", "16384"),
            Err("Invalid value 16384 for configuration segment.bytes: Value must be at least 1048576".into())
        );
        assert_eq!(
            validate("segment.bytes", "4294967296"),
            Err("Invalid value 4294967296 for configuration segment.bytes: Not a number of type INT".into())
        );
        assert_eq!(
            validate("compression.gzip.level", "0"),
            Err("Invalid value 0 for configuration compression.gzip.level: Value must be between 1 and 9 or equal to -1".into())
        );
        assert!(validate("compression.gzip.level", "-1").is_ok());
        assert!(validate("compression.gzip.level", "9").is_ok());
        assert!(validate("compression.lz4.level", "18").is_err());
        assert!(validate("min.cleanable.dirty.ratio", "1.5").is_err());
    }
}
