//! The broker settings in effect: the static configuration with the dynamic broker
//! configs that change settings (`log.cleaner.*`, `max.connections`, `listeners`, a
//! listener's TLS files, ...) applied over it, this broker's own before the cluster
//! default, as Kafka layers them.

use std::collections::BTreeMap;

use super::defs::{Value, BROKER_CONFIGS};
use crate::config::BrokerConfig;

/// `base` with the dynamic values of broker `node_id` (else of the cluster default, "")
/// written into it. Values were checked when they were stored; one that no longer
/// parses is skipped with a warning.
pub fn effective(
    base: &BrokerConfig,
    dynamic: &BTreeMap<String, BTreeMap<String, String>>,
    node_id: i32,
) -> BrokerConfig {
    let mut config = base.clone();
    let node = node_id.to_string();
    if let Some(own) = dynamic.get(&node) {
        super::listener_ssl::apply(&mut config, own);
    }
    for def in BROKER_CONFIGS {
        if let Value::Listener { write, .. } = def.value {
            // Per broker only: a cluster default of it is ignored, as Kafka ignores it.
            if let Some(value) = dynamic.get(&node).and_then(|c| c.get(def.name)) {
                write(&mut config, value);
            }
            continue;
        }
        let Value::Dynamic { write, .. } = def.value else {
            continue;
        };
        let value = [node.as_str(), ""]
            .iter()
            .find_map(|r| dynamic.get(*r).and_then(|c| c.get(def.name)));
        if let Some(value) = value {
            if let Err(e) = write(&mut config, value) {
                tracing::warn!(config = def.name, value = %value, error = %e, "dynamic broker config skipped");
            }
        }
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_values_win_over_the_cluster_default() {
        let base = BrokerConfig::embedded_default();
        let mut dynamic = BTreeMap::new();
        dynamic.insert(
            String::new(),
            BTreeMap::from([
                ("log.cleaner.threads".to_string(), "3".to_string()),
                ("max.connections".to_string(), "50".to_string()),
            ]),
        );
        dynamic.insert(
            base.node_id.to_string(),
            BTreeMap::from([("log.cleaner.threads".to_string(), "2".to_string())]),
        );
        let c = effective(base, &dynamic, base.node_id);
        assert_eq!(c.log_cleaner.threads, 2);
        assert_eq!(c.max_connections, 50);
        assert_eq!(c.log_cleaner.backoff_ms, base.log_cleaner.backoff_ms);
        // Another broker's values do not apply.
        let c = effective(base, &dynamic, base.node_id + 1);
        assert_eq!(c.log_cleaner.threads, 3);
    }
}
