//! Per-group configs (Kafka's GROUP config resource, KIP-848): the session timeout and
//! heartbeat interval of one consumer group, overriding `group.consumer.*`. They live in
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

/// Kafka's `ConfigSource.GROUP_CONFIG`.
pub const GROUP_CONFIG_SOURCE: i8 = 8;
/// Kafka's `ConfigSource.DEFAULT_CONFIG`.
const DEFAULT_CONFIG_SOURCE: i8 = 5;

/// Group configs Kafka 4.4 has that Spate does not serve: share and streams groups, the
/// assignment batching interval (Spate assigns at once) and the dead-letter queue.
const UNSERVED_PREFIXES: [&str; 4] = ["share.", "streams.", "errors.", "consumer.assignment."];

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
        _ => None,
    }
}

fn checked(config: &BrokerConfig, name: &str, value: &str) -> Result<String, Refusal> {
    let invalid = |m: String| (ErrorCode::InvalidConfig, m);
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
    // Together: the heartbeat interval stays below the session timeout.
    let session = effective(config, Some(&configs), SESSION_TIMEOUT);
    let heartbeat = effective(config, Some(&configs), HEARTBEAT_INTERVAL);
    if heartbeat >= session {
        return Err((
            ErrorCode::InvalidConfig,
            format!("{HEARTBEAT_INTERVAL} must be less than {SESSION_TIMEOUT}."),
        ));
    }
    Ok(configs)
}

fn checked_name(config: &BrokerConfig, name: &str) -> Result<(), Refusal> {
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
/// (GROUP_CONFIG) or the broker's (DEFAULT_CONFIG), as Kafka describes them.
pub fn entries(
    config: &BrokerConfig,
    group: Option<&BTreeMap<String, String>>,
) -> Vec<ConfigEntry> {
    [
        (
            HEARTBEAT_INTERVAL,
            "The heartbeat interval given to the members of this consumer group.",
        ),
        (
            SESSION_TIMEOUT,
            "A member of this consumer group that does not heartbeat for this long is removed.",
        ),
    ]
    .into_iter()
    .map(|(name, doc)| {
        let own = group.and_then(|g| g.get(name)).cloned();
        ConfigEntry {
            name: name.to_string(),
            value: Some(effective(config, group, name).to_string()),
            source: if own.is_some() {
                GROUP_CONFIG_SOURCE
            } else {
                DEFAULT_CONFIG_SOURCE
            },
            read_only: false,
            sensitive: false,
            kind: ConfigType::Int,
            synonyms: Vec::new(),
            doc: Some(doc),
        }
    })
    .collect()
}

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
                set("share.session.timeout.ms", "45000")
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
        let delete =
            ConfigChange::Incremental(vec![(SESSION_TIMEOUT.into(), alter_op::DELETE, None)]);
        let configs = plan(&image, &config, "g", delete).unwrap();
        apply(&mut image, configs);
        assert!(!image.group_configs.contains_key("g"));
    }
}
