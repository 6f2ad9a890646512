//! Changes of dynamic broker configs (IncrementalAlterConfigs and AlterConfigs on a
//! broker or the cluster default), checked as Kafka checks them: configs Spate cannot
//! change at runtime are refused with INVALID_REQUEST, bad values with INVALID_REQUEST
//! and Kafka's message, APPEND/SUBTRACT on a non-list with INVALID_CONFIG; unknown names
//! are kept, as Kafka keeps them for plugins.

use std::collections::BTreeMap;

use spate_net::ErrorCode;

use super::{defs, listener_ssl};
use crate::config::BrokerConfig;
use crate::controller::{alter_op, ConfigChange};
use crate::metadata::MetadataImage;
use crate::topic_config::{self, ConfigType};

/// A refused change: the error code and Kafka's message.
pub type Refusal = (ErrorCode, String);

/// The dynamic configs of `resource` (a broker id or "" for the cluster default) once
/// `change` is applied. Planned on the active controller, which may be another broker
/// than the one changed: the receiving broker checked that the id is its own
/// (`handlers/configs.rs`), as Kafka's brokers do before forwarding; `base` (the
/// controller's static config) stands in for that broker's when the result is checked.
pub fn plan(
    image: &MetadataImage,
    base: &BrokerConfig,
    resource: &str,
    change: ConfigChange,
) -> Result<BTreeMap<String, String>, Refusal> {
    let node_id = resource.parse().unwrap_or(base.node_id);
    let current = image
        .broker_configs
        .get(resource)
        .cloned()
        .unwrap_or_default();
    let configs = match change {
        ConfigChange::Replace(entries) => {
            let mut configs = BTreeMap::new();
            check_dynamic(entries.iter().map(|(k, _)| k.as_str()))?;
            check_listener_prefix(entries.iter().map(|(k, _)| k.as_str()))?;
            check_per_broker(resource, entries.iter().map(|(k, _)| k.as_str()))?;
            for (k, v) in entries {
                match v {
                    Some(v) => {
                        configs.insert(k.clone(), checked(&k, &v)?);
                    }
                    None => {
                        configs.remove(&k);
                    }
                }
            }
            configs
        }
        ConfigChange::Incremental(ops) => {
            check_dynamic(ops.iter().map(|(k, _, _)| k.as_str()))?;
            check_listener_prefix(ops.iter().map(|(k, _, _)| k.as_str()))?;
            check_per_broker(resource, ops.iter().map(|(k, _, _)| k.as_str()))?;
            let mut configs = current;
            for (k, op, v) in ops {
                match op {
                    alter_op::SET => match v {
                        Some(v) => {
                            configs.insert(k.clone(), checked(&k, &v)?);
                        }
                        None => {
                            configs.remove(&k);
                        }
                    },
                    alter_op::DELETE => {
                        configs.remove(&k);
                    }
                    alter_op::APPEND | alter_op::SUBTRACT => {
                        let joined = list_op(&configs, &k, op, v.as_deref())?;
                        configs.insert(k.clone(), checked(&k, &joined)?);
                    }
                    other => {
                        return Err((
                            ErrorCode::InvalidRequest,
                            format!("Unknown config operation {other}"),
                        ))
                    }
                }
            }
            configs
        }
    };
    // The settings must hold together once applied (e.g. 1 MiB of key map per cleaner
    // thread), as Kafka's reconfiguration checks them.
    let mut dynamic = image.broker_configs.clone();
    dynamic.insert(resource.to_string(), configs.clone());
    super::live::effective(base, &dynamic, node_id)
        .log_cleaner
        .validate()
        .map_err(|e| (ErrorCode::InvalidRequest, e.to_string()))?;
    Ok(configs)
}

/// Known configs that Spate cannot change at runtime, all named in one refusal: those
/// Kafka cannot change either, and the listener SSL configs Spate does not apply.
fn check_dynamic<'a>(names: impl Iterator<Item = &'a str>) -> Result<(), Refusal> {
    let mut fixed: Vec<&str> = names
        .filter(|n| {
            let fixed = defs::find(n).is_some_and(|d| !d.dynamic());
            (fixed && !listener_ssl::needs_listener_prefix(n)) || listener_ssl::unsupported(n)
        })
        .collect();
    if fixed.is_empty() {
        return Ok(());
    }
    fixed.dedup();
    Err((
        ErrorCode::InvalidRequest,
        format!(
            "Cannot update these configs dynamically: [{}]",
            fixed.join(", ")
        ),
    ))
}

/// The SSL configs Kafka changes per listener only, named without the listener prefix,
/// all named in one refusal.
fn check_listener_prefix<'a>(names: impl Iterator<Item = &'a str>) -> Result<(), Refusal> {
    let mut bare: Vec<&str> = names
        .filter(|n| listener_ssl::needs_listener_prefix(n))
        .collect();
    if bare.is_empty() {
        return Ok(());
    }
    bare.dedup();
    Err((
        ErrorCode::InvalidRequest,
        format!(
            "These security configs can be dynamically updated only per-listener using the listener prefix: [{}]",
            bare.join(", ")
        ),
    ))
}

/// Configs that only a broker may have (its listeners and listener configs), all
/// named in one refusal when set at the cluster default.
fn check_per_broker<'a>(
    resource: &str,
    names: impl Iterator<Item = &'a str>,
) -> Result<(), Refusal> {
    if !resource.is_empty() {
        return Ok(());
    }
    let mut own: Vec<&str> = names
        .filter(|n| defs::find(n).is_some_and(|d| d.per_broker()) || listener_ssl::per_broker(n))
        .collect();
    if own.is_empty() {
        return Ok(());
    }
    own.dedup();
    Err((
        ErrorCode::InvalidRequest,
        format!(
            "Cannot update these configs at default cluster level, broker id must be specified: [{}]",
            own.join(", ")
        ),
    ))
}

/// The value as stored: checked with the topic config's rules under the broker name;
/// lists trimmed and folded as Kafka describes them. Unknown names are kept as given.
fn checked(name: &str, value: &str) -> Result<String, Refusal> {
    if let Some(def) = defs::find(name) {
        if let defs::Value::Dynamic { write, .. } = def.value {
            let mut scratch = BrokerConfig::embedded_default().clone();
            write(&mut scratch, value)
                .map_err(|e| (ErrorCode::InvalidRequest, invalid(name, value, def.kind, e)))?;
            return Ok(value.trim().to_string());
        }
    }
    let Some(twin) = defs::find(name).and_then(|d| d.topic_twin()) else {
        return Ok(value.to_string());
    };
    broker_check(name, value)
        .unwrap_or_else(|| {
            twin.check(value)
                .map_err(|e| invalid(name, value, twin.kind, e))
        })
        .map_err(|m| (ErrorCode::InvalidRequest, m))?;
    Ok(match twin.kind {
        ConfigType::List => {
            let mut items: Vec<&str> = Vec::new();
            for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                if !items.contains(&item) {
                    items.push(item);
                }
            }
            items.join(",")
        }
        _ => value.trim().to_string(),
    })
}

/// Kafka's message for a value its `ConfigDef` refuses; a DOUBLE is shown parsed, as
/// Java prints it (`2` becomes `2.0`).
fn invalid(name: &str, value: &str, kind: ConfigType, reason: String) -> String {
    let shown = match value.trim().parse::<f64>() {
        Ok(v) if kind == ConfigType::Double && v.fract() == 0.0 && v.abs() < 1e7 => {
            format!("{v:.1}")
        }
        _ => value.to_string(),
    };
    format!("Invalid value {shown} for configuration {name}: {reason}")
}

/// Where Kafka's broker config is checked differently from its topic config: no range
/// on `log.retention.ms` and `log.flush.interval.ms` (any negative means never), and
/// the `require` checks of `log.roll.ms` and `log.roll.jitter.ms`. `None`: the topic
/// config's rules apply.
fn broker_check(name: &str, value: &str) -> Option<Result<(), String>> {
    let minimum = match name {
        "log.retention.ms" | "log.flush.interval.ms" => i64::MIN,
        "log.roll.ms" => 1,
        "log.roll.jitter.ms" => 0,
        _ => return None,
    };
    Some(match value.trim().parse::<i64>() {
        Err(_) => Err(format!(
            "Invalid value {value} for configuration {name}: Not a number of type LONG"
        )),
        Ok(n) if n < minimum => Err(format!(
            "requirement failed: {name} must be greater than or equal to {minimum}"
        )),
        Ok(_) => Ok(()),
    })
}

/// APPEND or SUBTRACT on a list config: from its dynamic value at this resource, else
/// its default (as Kafka's `ConfigAdminManager` does).
fn list_op(
    configs: &BTreeMap<String, String>,
    name: &str,
    op: i8,
    value: Option<&str>,
) -> Result<String, Refusal> {
    let twin = defs::find(name).and_then(|d| d.topic_twin());
    let Some(twin) = twin.filter(|t| t.kind == ConfigType::List) else {
        let verb = if op == alter_op::APPEND {
            "append"
        } else {
            "subtract"
        };
        return Err((
            ErrorCode::InvalidConfig,
            format!("Config value {verb} is not allowed for config key: {name}"),
        ));
    };
    let base = configs
        .get(name)
        .cloned()
        .unwrap_or_else(|| twin.default_value(&BrokerConfig::embedded_default().topic_defaults));
    Ok(topic_config::apply_list_op(
        &base,
        op == alter_op::APPEND,
        value,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inc(ops: &[(&str, i8, Option<&str>)]) -> ConfigChange {
        ConfigChange::Incremental(
            ops.iter()
                .map(|(k, o, v)| (k.to_string(), *o, v.map(str::to_string)))
                .collect(),
        )
    }

    fn configs(r: Result<BTreeMap<String, String>, Refusal>) -> BTreeMap<String, String> {
        match r {
            Ok(configs) => configs,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn kafkas_answers() {
        let img = MetadataImage::default();
        let c = configs(plan(
            &img,
            BrokerConfig::embedded_default(),
            "",
            inc(&[
                ("log.retention.ms", alter_op::SET, Some("1000")),
                ("custom.key", alter_op::SET, Some("x")),
                ("log.cleanup.policy", alter_op::APPEND, Some("compact")),
            ]),
        ));
        assert_eq!(c.get("log.retention.ms").map(String::as_str), Some("1000"));
        assert_eq!(c.get("custom.key").map(String::as_str), Some("x"));
        assert_eq!(
            c.get("log.cleanup.policy").map(String::as_str),
            Some("delete,compact")
        );
        assert_eq!(
            plan(
                &img,
                BrokerConfig::embedded_default(),
                "0",
                inc(&[
                    ("num.partitions", alter_op::SET, Some("3")),
                    ("log.retention.hours", alter_op::SET, Some("1"))
                ])
            )
            .unwrap_err(),
            (
                ErrorCode::InvalidRequest,
                "Cannot update these configs dynamically: [num.partitions, log.retention.hours]"
                    .into()
            )
        );
        assert_eq!(
            plan(&img, BrokerConfig::embedded_default(), "0", inc(&[("log.segment.bytes", alter_op::SET, Some("100"))])).unwrap_err(),
            (ErrorCode::InvalidRequest, "Invalid value 100 for configuration log.segment.bytes: Value must be at least 1048576".into())
        );
        assert_eq!(
            plan(
                &img,
                BrokerConfig::embedded_default(),
                "0",
                inc(&[("log.retention.ms", alter_op::APPEND, Some("5"))])
            )
            .unwrap_err(),
            (
                ErrorCode::InvalidConfig,
                "Config value append is not allowed for config key: log.retention.ms".into()
            )
        );
        // Another broker's configs are planned here too (the active controller plans
        // every broker's; the receiving broker checked the id).
        assert_eq!(
            plan(
                &img,
                BrokerConfig::embedded_default(),
                "1",
                inc(&[("log.cleaner.threads", alter_op::SET, Some("2"))])
            ),
            Ok(BTreeMap::from([(
                "log.cleaner.threads".to_string(),
                "2".to_string()
            )]))
        );
        assert!(configs(plan(
            &img,
            BrokerConfig::embedded_default(),
            "0",
            ConfigChange::Replace(vec![])
        ))
        .is_empty());
        assert_eq!(
            plan(&img, BrokerConfig::embedded_default(), "", inc(&[("listeners", alter_op::SET, Some("PLAINTEXT://h:1"))])).unwrap_err(),
            (ErrorCode::InvalidRequest, "Cannot update these configs at default cluster level, broker id must be specified: [listeners]".into())
        );
        // Kafka takes its reconfigurable SSL configs with a listener prefix only, per
        // broker; Spate applies the file locations.
        assert_eq!(
            plan(&img, BrokerConfig::embedded_default(), "0", inc(&[("ssl.keystore.location", alter_op::SET, Some("/k.pem")), ("ssl.truststore.location", alter_op::SET, Some("/t.pem"))])).unwrap_err(),
            (ErrorCode::InvalidRequest, "These security configs can be dynamically updated only per-listener using the listener prefix: [ssl.keystore.location, ssl.truststore.location]".into())
        );
        assert_eq!(
            plan(&img, BrokerConfig::embedded_default(), "", inc(&[("listener.name.ssl.ssl.keystore.location", alter_op::SET, Some("/k.pem"))])).unwrap_err(),
            (ErrorCode::InvalidRequest, "Cannot update these configs at default cluster level, broker id must be specified: [listener.name.ssl.ssl.keystore.location]".into())
        );
        assert_eq!(
            plan(&img, BrokerConfig::embedded_default(), "0", inc(&[("listener.name.ssl.ssl.keystore.password", alter_op::SET, Some("x"))])).unwrap_err(),
            (ErrorCode::InvalidRequest, "Cannot update these configs dynamically: [listener.name.ssl.ssl.keystore.password]".into())
        );
        assert_eq!(
            plan(
                &img,
                BrokerConfig::embedded_default(),
                "0",
                inc(&[(
                    "listener.name.ssl.ssl.keystore.location",
                    alter_op::SET,
                    Some("/k.pem")
                )])
            ),
            Ok(BTreeMap::from([(
                "listener.name.ssl.ssl.keystore.location".to_string(),
                "/k.pem".to_string()
            )]))
        );
        assert_eq!(
            plan(
                &img,
                BrokerConfig::embedded_default(),
                "",
                inc(&[(
                    "advertised.listeners",
                    alter_op::SET,
                    Some("PLAINTEXT://h:1")
                )])
            )
            .unwrap_err(),
            (
                ErrorCode::InvalidRequest,
                "Cannot update these configs dynamically: [advertised.listeners]".into()
            )
        );
    }
}
