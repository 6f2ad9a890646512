//! Per-group configs (Kafka's GROUP config resource, KIP-848 and KIP-932): the session
//! timeout and heartbeat interval of one consumer group, overriding `group.consumer.*`,
//! and a share group's `share.*` settings, overriding `group.share.*`. They live in
//! the metadata log (`ConfigRecord`s of resource type GROUP), are described and changed with
//! DescribeConfigs / (Incremental)AlterConfigs as Kafka does, and apply from the group's
//! next heartbeat.

use std::collections::BTreeMap;

use spate_net::ErrorCode;

use crate::broker_config::alter::Refusal;
use crate::broker_config::describe::ConfigEntry;
use crate::config::BrokerConfig;
use crate::controller::{alter_op, ConfigChange};
use crate::metadata::MetadataImage;
use crate::topic_config::ConfigType;

pub const SESSION_TIMEOUT: &str = "consumer.session.timeout.ms";
pub const HEARTBEAT_INTERVAL: &str = "consumer.heartbeat.interval.ms";
pub const SHARE_SESSION_TIMEOUT: &str = "share.session.timeout.ms";
pub const SHARE_HEARTBEAT_INTERVAL: &str = "share.heartbeat.interval.ms";
pub const SHARE_RECORD_LOCK_DURATION: &str = "share.record.lock.duration.ms";
pub const SHARE_DELIVERY_COUNT_LIMIT: &str = "share.delivery.count.limit";
pub const SHARE_PARTITION_MAX_RECORD_LOCKS: &str = "share.partition.max.record.locks";
pub const SHARE_AUTO_OFFSET_RESET: &str = "share.auto.offset.reset";
pub const SHARE_ISOLATION_LEVEL: &str = "share.isolation.level";
pub const SHARE_RENEW_ACKNOWLEDGE_ENABLE: &str = "share.renew.acknowledge.enable";

/// Kafka's `ConfigSource.GROUP_CONFIG`.
pub const GROUP_CONFIG_SOURCE: i8 = 8;
/// Kafka's `ConfigSource.DEFAULT_CONFIG`.
const DEFAULT_CONFIG_SOURCE: i8 = 5;

/// Group configs Kafka 4.4 has that Spate does not serve: streams groups, the assignment
/// batching interval and its offloading (Spate assigns at once) and the dead-letter queue.
const UNSERVED_PREFIXES: [&str; 6] = [
    "streams.",
    "errors.",
    "consumer.assignment.",
    "consumer.assignor.",
    "share.assignment.",
    "share.assignor.",
];

/// The limits a group's value must fall in, and the broker's default: (min, max, default).
fn bounds(config: &BrokerConfig, name: &str) -> Option<(i32, i32, i32)> {
    match name {
        SESSION_TIMEOUT => Some((
            config.group_consumer_min_session_timeout_ms,
            config.group_consumer_max_session_timeout_ms,
            config.group_consumer_session_timeout_ms,
        )),
        HEARTBEAT_INTERVAL => Some((
            config.group_consumer_min_heartbeat_interval_ms,
            config.group_consumer_max_heartbeat_interval_ms,
            config.group_consumer_heartbeat_interval_ms,
        )),
        SHARE_SESSION_TIMEOUT => Some((
            config.group_share_min_session_timeout_ms,
            config.group_share_max_session_timeout_ms,
            config.group_share_session_timeout_ms,
        )),
        SHARE_HEARTBEAT_INTERVAL => Some((
            config.group_share_min_heartbeat_interval_ms,
            config.group_share_max_heartbeat_interval_ms,
            config.group_share_heartbeat_interval_ms,
        )),
        SHARE_RECORD_LOCK_DURATION => Some((
            config.group_share_min_record_lock_duration_ms,
            config.group_share_max_record_lock_duration_ms,
            config.group_share_record_lock_duration_ms,
        )),
        SHARE_DELIVERY_COUNT_LIMIT => Some((
            config.group_share_min_delivery_count_limit,
            config.group_share_max_delivery_count_limit,
            config.group_share_delivery_count_limit,
        )),
        SHARE_PARTITION_MAX_RECORD_LOCKS => Some((
            config.group_share_min_partition_max_record_locks,
            config.group_share_max_partition_max_record_locks,
            config.group_share_partition_max_record_locks,
        )),
        _ => None,
    }
}

fn checked(config: &BrokerConfig, name: &str, value: &str) -> Result<String, Refusal> {
    let invalid = |m: String| (ErrorCode::InvalidConfig, m);
    if let Some(choice) = share::checked_choice(name, value) {
        return choice.map_err(invalid);
    }
    let Some((min, max, _)) = bounds(config, name) else {
        return Err(invalid(
            if UNSERVED_PREFIXES.iter().any(|p| name.starts_with(p)) {
                format!("Group config {name} is not supported by Spate (docs/compat.md).")
            } else {
                format!("Unknown group config name: {name}")
            },
        ));
    };
    let v: i32 = value.trim().parse().map_err(|_| {
        invalid(format!(
            "Invalid value {value} for configuration {name}: Not a number of type INT"
        ))
    })?;
    // Kafka's GroupConfig has a fixed floor per config, checked before the broker's range.
    let floor = match name {
        SHARE_RECORD_LOCK_DURATION => 1000,
        SHARE_DELIVERY_COUNT_LIMIT => 2,
        SHARE_PARTITION_MAX_RECORD_LOCKS => 100,
        _ => 1,
    };
    if v < floor {
        return Err(invalid(format!(
            "Invalid value {value} for configuration {name}: Value must be at least {floor}"
        )));
    }
    if v < min || v > max {
        return Err(invalid(format!(
            "{name} must be in the range {min} to {max} inclusive."
        )));
    }
    Ok(v.to_string())
}

/// The configs of `group` once `change` is applied.
pub fn plan(
    image: &MetadataImage,
    config: &BrokerConfig,
    group: &str,
    change: ConfigChange,
) -> Result<BTreeMap<String, String>, Refusal> {
    if group.is_empty() {
        return Err((
            ErrorCode::InvalidRequest,
            "Group name must not be empty.".into(),
        ));
    }
    let mut configs = match &change {
        ConfigChange::Replace(_) => BTreeMap::new(),
        ConfigChange::Incremental(_) => image.group_configs.get(group).cloned().unwrap_or_default(),
    };
    let ops: Vec<(String, i8, Option<String>)> = match change {
        ConfigChange::Replace(entries) => entries
            .into_iter()
            .map(|(k, v)| (k, alter_op::SET, v))
            .collect(),
        ConfigChange::Incremental(ops) => ops,
    };
    for (name, op, value) in ops {
        match (op, value) {
            (alter_op::SET, Some(v)) => {
                configs.insert(name.clone(), checked(config, &name, &v)?);
            }
            (alter_op::SET, None) | (alter_op::DELETE, _) => {
                checked_name(config, &name)?;
                configs.remove(&name);
            }
            (alter_op::APPEND | alter_op::SUBTRACT, _) => {
                return Err((
                    ErrorCode::InvalidConfig,
                    format!("Config value append is not allowed for config key: {name}"),
                ))
            }
            (other, _) => {
                return Err((
                    ErrorCode::InvalidRequest,
                    format!("Unknown config operation {other}"),
                ))
            }
        }
    }
    // Together: each heartbeat interval stays below its session timeout.
    for (heartbeat_name, session_name) in [
        (HEARTBEAT_INTERVAL, SESSION_TIMEOUT),
        (SHARE_HEARTBEAT_INTERVAL, SHARE_SESSION_TIMEOUT),
    ] {
        let session = effective(config, Some(&configs), session_name);
        let heartbeat = effective(config, Some(&configs), heartbeat_name);
        if heartbeat >= session {
            return Err((
                ErrorCode::InvalidConfig,
                format!("{heartbeat_name} must be less than {session_name}."),
            ));
        }
    }
    Ok(configs)
}

fn checked_name(config: &BrokerConfig, name: &str) -> Result<(), Refusal> {
    if share::choice_default(name).is_some() {
        return Ok(());
    }
    let (_, _, default) = bounds(config, name).ok_or((
        ErrorCode::InvalidConfig,
        format!("Unknown group config name: {name}"),
    ))?;
    checked(config, name, &default.to_string()).map(|_| ())
}

/// A group config's value: the group's own, else the broker's.
pub fn effective(
    config: &BrokerConfig,
    group: Option<&BTreeMap<String, String>>,
    name: &str,
) -> i32 {
    let default = bounds(config, name).map_or(0, |(_, _, d)| d);
    group
        .and_then(|g| g.get(name))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// DescribeConfigs of a GROUP resource: every served group config, the group's value
/// (GROUP_CONFIG) or the broker's (DEFAULT_CONFIG), as Kafka describes them, by name.
pub fn entries(
    config: &BrokerConfig,
    group: Option<&BTreeMap<String, String>>,
) -> Vec<ConfigEntry> {
    let ints = [
        (
            HEARTBEAT_INTERVAL,
            "The heartbeat interval given to the members of this consumer group.",
        ),
        (
            SESSION_TIMEOUT,
            "A member of this consumer group that does not heartbeat for this long is removed.",
        ),
        (
            SHARE_DELIVERY_COUNT_LIMIT,
            "Deliveries of a record to this share group before it is archived.",
        ),
        (
            SHARE_HEARTBEAT_INTERVAL,
            "The heartbeat interval given to the members of this share group.",
        ),
        (
            SHARE_PARTITION_MAX_RECORD_LOCKS,
            "Records a share-partition of this share group may have locked at once.",
        ),
        (
            SHARE_RECORD_LOCK_DURATION,
            "How long a member of this share group holds a record it was given.",
        ),
        (
            SHARE_SESSION_TIMEOUT,
            "A member of this share group that does not heartbeat for this long is removed.",
        ),
    ];
    let entry = |name: &str, value: String, kind: ConfigType, doc: &'static str| ConfigEntry {
        name: name.to_string(),
        value: Some(value),
        source: if group.is_some_and(|g| g.contains_key(name)) {
            GROUP_CONFIG_SOURCE
        } else {
            DEFAULT_CONFIG_SOURCE
        },
        read_only: false,
        sensitive: false,
        kind,
        synonyms: Vec::new(),
        doc: Some(doc),
    };
    let mut out: Vec<ConfigEntry> = ints
        .into_iter()
        .map(|(name, doc)| {
            entry(
                name,
                effective(config, group, name).to_string(),
                ConfigType::Int,
                doc,
            )
        })
        .collect();
    for (name, doc) in share::CHOICES {
        let value = group
            .and_then(|g| g.get(name))
            .cloned()
            .or_else(|| share::choice_default(name).map(str::to_string))
            .unwrap_or_default();
        let kind = if name == SHARE_RENEW_ACKNOWLEDGE_ENABLE {
            ConfigType::Boolean
        } else {
            ConfigType::String
        };
        out.push(entry(name, value, kind, doc));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

pub mod share;

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies planned configs of group "g" to `image`, as their records would.
    fn apply(image: &mut MetadataImage, configs: BTreeMap<String, String>) {
        let old = image.group_configs.get("g").cloned().unwrap_or_default();
        image.replay_all(&crate::metadata::records::config_diff(
            crate::metadata::records::resource_type::GROUP,
            "g",
            &old,
            &configs,
        ));
    }

    fn set(name: &str, value: &str) -> ConfigChange {
        ConfigChange::Incremental(vec![(name.into(), alter_op::SET, Some(value.into()))])
    }

    #[test]
    fn values_are_checked_and_kept() {
        let config = BrokerConfig::embedded_default().clone();
        let mut image = MetadataImage::default();
        let configs = plan(&image, &config, "g", set(SESSION_TIMEOUT, "50000")).unwrap();
        apply(&mut image, configs);
        assert_eq!(
            effective(&config, image.group_configs.get("g"), SESSION_TIMEOUT),
            50000
        );
        assert_eq!(
            plan(&image, &config, "g", set(SESSION_TIMEOUT, "1000")).unwrap_err(),
            (
                ErrorCode::InvalidConfig,
                "consumer.session.timeout.ms must be in the range 45000 to 60000 inclusive.".into()
            )
        );
        assert_eq!(
            plan(&image, &config, "g", set("nope", "1")).unwrap_err().1,
            "Unknown group config name: nope"
        );
        assert_eq!(
            plan(
                &image,
                &config,
                "g",
                set("streams.session.timeout.ms", "45000")
            )
            .unwrap_err()
            .0,
            ErrorCode::InvalidConfig
        );
        let entries = entries(&config, image.group_configs.get("g"));
        let session = entries.iter().find(|e| e.name == SESSION_TIMEOUT).unwrap();
        assert_eq!(
            (session.value.as_deref(), session.source),
            (Some("50000"), GROUP_CONFIG_SOURCE)
        );
        // Share configs, with Kafka's messages.
        let refused =
            |name: &str, value: &str| plan(&image, &config, "g", set(name, value)).unwrap_err().1;
        assert_eq!(
            refused(SHARE_RECORD_LOCK_DURATION, "1000"),
            "share.record.lock.duration.ms must be in the range 15000 to 60000 inclusive."
        );
        assert_eq!(
            refused(SHARE_PARTITION_MAX_RECORD_LOCKS, "50"),
            "Invalid value 50 for configuration share.partition.max.record.locks: Value must be at least 100"
        );
        assert_eq!(
            refused(SHARE_ISOLATION_LEVEL, "READ_COMMITTED"),
            "Invalid value READ_COMMITTED for configuration share.isolation.level: String must be one of: read_committed, read_uncommitted"
        );
        assert!(refused(SHARE_AUTO_OFFSET_RESET, "none").starts_with(
            "Invalid value none for configuration share.auto.offset.reset: Invalid value `none`"
        ));
        assert_eq!(
            refused("share.assignment.interval.ms", "100"),
            "Group config share.assignment.interval.ms is not supported by Spate (docs/compat.md)."
        );
        for (name, value) in [
            (SHARE_AUTO_OFFSET_RESET, "by_duration:PT1H"),
            (SHARE_RENEW_ACKNOWLEDGE_ENABLE, "TRUE"),
            (SHARE_DELIVERY_COUNT_LIMIT, "3"),
        ] {
            let configs = plan(&image, &config, "g", set(name, value)).unwrap();
            assert_eq!(configs.get(name).map(String::as_str), Some(value));
        }
        let delete =
            ConfigChange::Incremental(vec![(SESSION_TIMEOUT.into(), alter_op::DELETE, None)]);
        let configs = plan(&image, &config, "g", delete).unwrap();
        apply(&mut image, configs);
        assert!(!image.group_configs.contains_key("g"));
    }
}
