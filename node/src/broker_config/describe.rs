//! Config entries as DescribeConfigs reports them: each with its value, the source of
//! that value and its synonyms (every layer that sets it, most specific first: a topic
//! override, the broker's dynamic config, the cluster-wide dynamic default, the static
//! config file, the default), as Kafka's `ConfigHelper` builds them.

use std::collections::BTreeMap;

use super::defs::{self, BrokerConfigDef, Facts, Value};
use super::listener_ssl;
use crate::config::BrokerConfig;
use crate::metadata::TopicImage;
use crate::topic_config::{self, source, ConfigType};

/// One config as DescribeConfigs and CreateTopics report it.
pub struct ConfigEntry {
    pub name: String,
    /// `None`: Kafka's null (unset, or a secret).
    pub value: Option<String>,
    pub source: i8,
    pub read_only: bool,
    pub sensitive: bool,
    pub kind: ConfigType,
    /// (name, value, source), most specific first.
    pub synonyms: Vec<(String, Option<String>, i8)>,
    pub doc: Option<&'static str>,
}

impl ConfigEntry {
    /// A logger and its level, as Kafka describes a BROKER_LOGGER entry.
    pub fn broker_logger(name: String, level: String) -> ConfigEntry {
        ConfigEntry {
            name,
            value: Some(level),
            source: crate::topic_config::source::DYNAMIC_BROKER_LOGGER_CONFIG,
            read_only: false,
            sensitive: false,
            kind: ConfigType::Unknown,
            synonyms: Vec::new(),
            doc: None,
        }
    }
}

/// What the entries are computed from.
pub struct Sources<'a> {
    pub facts: Facts<'a>,
    /// The embedded default configuration: a setting equal to it is a default.
    pub embedded: &'a BrokerConfig,
    /// Dynamic broker configs by resource ("" is the cluster default).
    pub dynamic: &'a BTreeMap<String, BTreeMap<String, String>>,
}

impl Sources<'_> {
    fn node(&self) -> String {
        self.facts.config.node_id.to_string()
    }

    fn dynamic_value(&self, resource: &str, name: &str) -> Option<&String> {
        self.dynamic.get(resource).and_then(|c| c.get(name))
    }

    /// Every layer that sets the broker config, most specific first.
    fn layers(&self, def: &BrokerConfigDef) -> Vec<(String, Option<String>, i8)> {
        let name = def.name.to_string();
        let mut out = Vec::new();
        if def.dynamic() {
            if let Some(v) = self.dynamic_value(&self.node(), def.name) {
                out.push((name.clone(), Some(v.clone()), source::DYNAMIC_BROKER_CONFIG));
            }
            if let Some(v) = self
                .dynamic_value("", def.name)
                .filter(|_| !def.per_broker())
            {
                out.push((
                    name.clone(),
                    Some(v.clone()),
                    source::DYNAMIC_DEFAULT_BROKER_CONFIG,
                ));
            }
        }
        let (current, default, fallback) = match &def.value {
            Value::Always(f) => {
                out.push((name, Some(f(&self.facts)), source::STATIC_BROKER_CONFIG));
                return out;
            }
            Value::Setting(f) | Value::Dynamic { read: f, .. } => {
                (f(self.facts.config), f(self.embedded), None)
            }
            Value::Listener { read, default, .. } => {
                if let Some(v) = read(self.facts.config) {
                    out.push((name.clone(), Some(v), source::STATIC_BROKER_CONFIG));
                }
                out.push((name, Some(default.to_string()), source::DEFAULT_CONFIG));
                return out;
            }
            Value::Optional(f) => {
                if let Some(v) = f(self.facts.config) {
                    out.push((name, Some(v), source::STATIC_BROKER_CONFIG));
                }
                return out;
            }
            Value::Fixed(v) => {
                if let Some(v) = v {
                    out.push((name, Some(v.to_string()), source::DEFAULT_CONFIG));
                }
                return out;
            }
            Value::TopicDefault { fallback } => match def.topic_twin() {
                Some(t) => (
                    t.default_value(&self.facts.config.topic_defaults),
                    t.default_value(&self.embedded.topic_defaults),
                    *fallback,
                ),
                None => return out,
            },
        };
        if current != default {
            out.push((name.clone(), Some(current), source::STATIC_BROKER_CONFIG));
        }
        match fallback {
            None => out.push((name, Some(default), source::DEFAULT_CONFIG)),
            // Kafka lists synonyms from the config's own first layer on: the default of
            // its fallback follows a value that is set, and is not listed otherwise.
            Some((other, value)) if !out.is_empty() => out.push((
                other.to_string(),
                Some(value.to_string()),
                source::DEFAULT_CONFIG,
            )),
            Some(_) => {}
        }
        out
    }

    fn broker_entry(&self, def: &BrokerConfigDef) -> ConfigEntry {
        let synonyms = self.layers(def);
        let (value, source) = synonyms
            .first()
            .map_or((None, source::DEFAULT_CONFIG), |(_, v, s)| (v.clone(), *s));
        ConfigEntry {
            name: def.name.to_string(),
            value,
            source,
            // The TLS file locations change per listener (their `listener.name.`
            // form), so Kafka does not call them read-only.
            read_only: !def.dynamic() && !listener_ssl::has_listener_form(def.name),
            sensitive: false,
            kind: def.kind,
            synonyms,
            doc: Some(def.doc),
        }
    }

    /// A listener's dynamic TLS file config, as Kafka describes it: its value, then the
    /// config it stands in for as a synonym. Kafka calls it read-only (only the
    /// unprefixed names are in its list of dynamic configs), and so does this.
    fn listener_file_entry(&self, name: &str, value: &str, base: &str) -> ConfigEntry {
        let source = source::DYNAMIC_BROKER_CONFIG;
        let mut synonyms = vec![(name.to_string(), Some(value.to_string()), source)];
        if let Some(def) = defs::find(base) {
            synonyms.extend(self.layers(def));
        }
        ConfigEntry {
            name: name.to_string(),
            value: Some(value.to_string()),
            source,
            read_only: true,
            sensitive: false,
            kind: ConfigType::String,
            synonyms,
            doc: None,
        }
    }

    /// A dynamic config Spate does not know: kept and listed as Kafka lists it (a
    /// secret of unknown type, as a plugin's config would be).
    fn unknown_entry(name: &str, source: i8) -> ConfigEntry {
        ConfigEntry {
            name: name.to_string(),
            value: None,
            source,
            read_only: true,
            sensitive: true,
            kind: ConfigType::Unknown,
            synonyms: vec![(name.to_string(), None, source)],
            doc: None,
        }
    }

    /// The broker's configs: every known one, then unknown dynamic ones.
    pub fn broker_entries(&self) -> Vec<ConfigEntry> {
        let mut entries: Vec<ConfigEntry> = defs::BROKER_CONFIGS
            .iter()
            .map(|d| self.broker_entry(d))
            .collect();
        for (resource, source) in [
            (self.node(), source::DYNAMIC_BROKER_CONFIG),
            (String::new(), source::DYNAMIC_DEFAULT_BROKER_CONFIG),
        ] {
            for name in self
                .dynamic
                .get(&resource)
                .into_iter()
                .flat_map(|c| c.keys())
            {
                if defs::find(name).is_some() || entries.iter().any(|e| &e.name == name) {
                    continue;
                }
                let listener_file =
                    listener_ssl::file_config(name).filter(|_| !resource.is_empty());
                match (listener_file, self.dynamic_value(&resource, name)) {
                    (Some((_, base)), Some(value)) => {
                        entries.push(self.listener_file_entry(name, value, base))
                    }
                    _ => entries.push(Self::unknown_entry(name, source)),
                }
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        entries
    }

    /// The cluster default (resource ""): only the dynamic defaults that are set.
    pub fn cluster_default_entries(&self) -> Vec<ConfigEntry> {
        let source = source::DYNAMIC_DEFAULT_BROKER_CONFIG;
        self.dynamic
            .get("")
            .into_iter()
            .flatten()
            .map(|(name, value)| match defs::find(name) {
                Some(def) => ConfigEntry {
                    name: name.clone(),
                    value: Some(value.clone()),
                    source,
                    read_only: !def.dynamic(),
                    sensitive: false,
                    kind: def.kind,
                    synonyms: vec![(name.clone(), Some(value.clone()), source)],
                    doc: Some(def.doc),
                },
                None => Self::unknown_entry(name, source),
            })
            .collect()
    }

    /// Every topic config of `topic` with its effective value: its override, else the
    /// broker's value of its broker synonym, else the topic config's default.
    pub fn topic_entries(&self, topic: &TopicImage) -> Vec<ConfigEntry> {
        topic_config::TOPIC_CONFIGS
            .iter()
            .map(|def| {
                let mut synonyms = Vec::new();
                if let Some(v) = topic.configs.get(def.name) {
                    synonyms.push((def.name.to_string(), Some(v.clone()), source::TOPIC_CONFIG));
                }
                if let Some(b) = defs::find(def.broker_synonym).filter(|b| b.dynamic()) {
                    synonyms.extend(self.layers(b));
                }
                let (value, source) = match synonyms.first() {
                    Some((_, v, s)) => (v.clone(), *s),
                    None => (
                        Some(def.default_value(&self.facts.config.topic_defaults)),
                        source::DEFAULT_CONFIG,
                    ),
                };
                ConfigEntry {
                    name: def.name.to_string(),
                    value,
                    source,
                    read_only: false,
                    sensitive: false,
                    kind: def.kind,
                    synonyms,
                    doc: Some(def.doc),
                }
            })
            .collect()
    }
}

/// The topic config overrides of a topic with the dynamic broker defaults filled in
/// where the topic has none: what its effective configuration resolves from.
pub fn with_dynamic_defaults(
    overrides: &BTreeMap<String, String>,
    dynamic: &BTreeMap<String, BTreeMap<String, String>>,
    node: i32,
) -> BTreeMap<String, String> {
    let mut out = overrides.clone();
    if dynamic.is_empty() {
        return out;
    }
    let node = node.to_string();
    for def in topic_config::TOPIC_CONFIGS {
        if out.contains_key(def.name) || defs::find(def.broker_synonym).is_none_or(|b| !b.dynamic())
        {
            continue;
        }
        let value = [node.as_str(), ""]
            .iter()
            .find_map(|r| dynamic.get(*r).and_then(|c| c.get(def.broker_synonym)));
        if let Some(v) = value {
            out.insert(def.name.to_string(), v.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BrokerConfig {
        BrokerConfig::embedded_default().clone()
    }

    fn find<'a>(entries: &'a [ConfigEntry], name: &str) -> &'a ConfigEntry {
        entries.iter().find(|e| e.name == name).unwrap()
    }

    /// (value, source, synonyms' sources) of `name`.
    fn described(e: &[ConfigEntry], name: &str) -> (Option<String>, i8, Vec<i8>) {
        let c = find(e, name);
        // The TLS file locations change per listener; the rest are read-only.
        assert_eq!(
            c.read_only,
            !listener_ssl::has_listener_form(name),
            "{name}"
        );
        assert!(!c.sensitive, "{name}");
        (
            c.value.clone(),
            c.source,
            c.synonyms.iter().map(|s| s.2).collect(),
        )
    }

    #[test]
    fn ssl_and_sasl_configs_from_the_file() {
        let embedded = config();
        let dynamic = BTreeMap::new();
        let describe = |c: &BrokerConfig| {
            Sources {
                facts: Facts {
                    config: c,
                    advertised_listeners: "",
                },
                embedded: &embedded,
                dynamic: &dynamic,
            }
            .broker_entries()
        };
        let (d, s) = (source::DEFAULT_CONFIG, source::STATIC_BROKER_CONFIG);
        let some = |v: &str| Some(v.to_string());
        let e = describe(&embedded);
        for (name, value) in [
            ("ssl.client.auth", "none"),
            ("ssl.keystore.type", "PEM"),
            ("ssl.enabled.protocols", "TLSv1.2,TLSv1.3"),
            ("ssl.principal.mapping.rules", "DEFAULT"),
            ("sasl.enabled.mechanisms", "PLAIN"),
            ("sasl.oauthbearer.expected.audience", ""),
        ] {
            assert_eq!(described(&e, name), (some(value), d, vec![d]), "{name}");
        }
        for name in [
            "ssl.keystore.location",
            "sasl.oauthbearer.jwks.endpoint.url",
        ] {
            assert_eq!(described(&e, name), (None, d, vec![]), "{name}");
        }

        let mut c = config();
        c.ssl.keystore_location = Some("/etc/spate/broker.pem".into());
        c.ssl.client_auth = crate::security::config::ClientAuth::Required;
        c.sasl.enabled_mechanisms = vec!["PLAIN".into(), "SCRAM-SHA-512".into()];
        c.sasl.oauthbearer.jwks_file = Some("/etc/spate/jwks.json".into());
        let e = describe(&c);
        assert_eq!(
            described(&e, "ssl.keystore.location"),
            (some("/etc/spate/broker.pem"), s, vec![s])
        );
        assert_eq!(
            described(&e, "ssl.client.auth"),
            (some("required"), s, vec![s, d])
        );
        assert_eq!(
            find(&e, "ssl.client.auth").synonyms[1].1.as_deref(),
            Some("none")
        );
        assert_eq!(
            described(&e, "sasl.enabled.mechanisms"),
            (some("PLAIN,SCRAM-SHA-512"), s, vec![s, d])
        );
        assert_eq!(
            described(&e, "sasl.oauthbearer.jwks.endpoint.url"),
            (some("file:///etc/spate/jwks.json"), s, vec![s])
        );
        assert_eq!(described(&e, "ssl.truststore.location"), (None, d, vec![]));
    }

    #[test]
    fn a_listeners_tls_files_as_kafka_describes_them() {
        let embedded = config();
        let mut c = config();
        c.ssl.keystore_location = Some("/etc/spate/broker.pem".into());
        let name = "listener.name.ssl.ssl.keystore.location";
        let dynamic = BTreeMap::from([(
            c.node_id.to_string(),
            BTreeMap::from([(name.to_string(), "/etc/spate/new.pem".to_string())]),
        )]);
        let e = Sources {
            facts: Facts {
                config: &c,
                advertised_listeners: "",
            },
            embedded: &embedded,
            dynamic: &dynamic,
        }
        .broker_entries();
        let entry = find(&e, name);
        assert_eq!(entry.value.as_deref(), Some("/etc/spate/new.pem"));
        assert_eq!(entry.source, source::DYNAMIC_BROKER_CONFIG);
        assert!(entry.read_only && !entry.sensitive);
        assert_eq!(entry.kind, ConfigType::String);
        assert_eq!(
            entry.synonyms,
            vec![
                (
                    name.to_string(),
                    Some("/etc/spate/new.pem".to_string()),
                    source::DYNAMIC_BROKER_CONFIG
                ),
                (
                    "ssl.keystore.location".to_string(),
                    Some("/etc/spate/broker.pem".to_string()),
                    source::STATIC_BROKER_CONFIG
                ),
            ]
        );
        // The unprefixed config keeps the file's value.
        let base = find(&e, "ssl.keystore.location");
        assert_eq!(base.value.as_deref(), Some("/etc/spate/broker.pem"));
        assert!(!base.read_only);
    }

    #[test]
    fn sources_and_synonyms_follow_kafka() {
        let embedded = config();
        let mut c = config();
        c.num_partitions = 3;
        c.topic_defaults.retention_ms = 3_600_000;
        let mut dynamic = BTreeMap::new();
        dynamic.insert(
            String::new(),
            BTreeMap::from([
                ("log.segment.bytes".to_string(), "2097152".to_string()),
                ("custom.plugin.key".to_string(), "x".to_string()),
            ]),
        );
        dynamic.insert(
            "0".to_string(),
            BTreeMap::from([
                ("log.segment.bytes".to_string(), "4194304".to_string()),
                (
                    "listeners".to_string(),
                    "PLAINTEXT://127.0.0.1:9092,EXTRA://127.0.0.1:9095".to_string(),
                ),
            ]),
        );
        let s = Sources {
            facts: Facts {
                config: &c,
                advertised_listeners: "PLAINTEXT://h:9092",
            },
            embedded: &embedded,
            dynamic: &dynamic,
        };
        let e = s.broker_entries();
        let adv = find(&e, "advertised.listeners");
        assert_eq!(adv.value.as_deref(), Some("PLAINTEXT://h:9092"));
        assert_eq!(
            (adv.source, adv.read_only),
            (source::STATIC_BROKER_CONFIG, true)
        );
        // Per broker, over the file's (`listen` here) and Kafka's default.
        let l = find(&e, "listeners");
        assert_eq!(
            l.synonyms
                .iter()
                .map(|s| (s.1.as_deref().unwrap(), s.2))
                .collect::<Vec<_>>(),
            [
                (
                    "PLAINTEXT://127.0.0.1:9092,EXTRA://127.0.0.1:9095",
                    source::DYNAMIC_BROKER_CONFIG
                ),
                ("PLAINTEXT://127.0.0.1:9092", source::STATIC_BROKER_CONFIG),
                ("PLAINTEXT://:9092", source::DEFAULT_CONFIG),
            ]
        );
        let map = find(&e, "listener.security.protocol.map");
        assert_eq!(
            (map.value.as_deref(), map.source, map.read_only),
            (
                Some("SASL_SSL:SASL_SSL,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT"),
                source::DEFAULT_CONFIG,
                false
            )
        );
        let np = find(&e, "num.partitions");
        assert_eq!(
            np.synonyms,
            vec![
                (
                    "num.partitions".into(),
                    Some("3".into()),
                    source::STATIC_BROKER_CONFIG
                ),
                (
                    "num.partitions".into(),
                    Some("1".into()),
                    source::DEFAULT_CONFIG
                ),
            ]
        );
        let seg = find(&e, "log.segment.bytes");
        assert_eq!(
            (seg.value.as_deref(), seg.source, seg.read_only),
            (Some("4194304"), source::DYNAMIC_BROKER_CONFIG, false)
        );
        assert_eq!(seg.synonyms.len(), 3);
        // Null unless set, as Kafka describes log.retention.ms; here it is set statically.
        let rms = find(&e, "log.retention.ms");
        assert_eq!(
            (rms.value.as_deref(), rms.source),
            (Some("3600000"), source::STATIC_BROKER_CONFIG)
        );
        let roll = find(&e, "log.roll.ms");
        assert_eq!((roll.value.as_deref(), roll.synonyms.len()), (None, 0));
        let custom = find(&e, "custom.plugin.key");
        assert_eq!((custom.value.as_deref(), custom.sensitive), (None, true));

        let d = s.cluster_default_entries();
        assert_eq!(
            d.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["custom.plugin.key", "log.segment.bytes"]
        );

        let topic = TopicImage {
            name: "t".into(),
            id: [1; 16],
            partitions: vec![],
            configs: BTreeMap::from([("segment.bytes".to_string(), "1048576".to_string())]),
        };
        let t = s.topic_entries(&topic);
        let sb = find(&t, "segment.bytes");
        assert_eq!(
            (sb.value.as_deref(), sb.source),
            (Some("1048576"), source::TOPIC_CONFIG)
        );
        assert_eq!(
            sb.synonyms.len(),
            4,
            "topic, broker, cluster default, default"
        );
        let sm = find(&t, "segment.ms");
        assert_eq!(
            (sm.value.as_deref(), sm.source, sm.synonyms.len()),
            (Some("604800000"), source::DEFAULT_CONFIG, 0)
        );
        let rt = find(&t, "retention.ms");
        assert_eq!(
            (rt.value.as_deref(), rt.source),
            (Some("3600000"), source::STATIC_BROKER_CONFIG)
        );

        let eff = with_dynamic_defaults(&topic.configs, &dynamic, 0);
        assert_eq!(
            eff.get("segment.bytes").map(String::as_str),
            Some("1048576")
        );
        let eff = with_dynamic_defaults(&BTreeMap::new(), &dynamic, 0);
        assert_eq!(
            eff.get("segment.bytes").map(String::as_str),
            Some("4194304")
        );
        assert_eq!(eff.len(), 1);
    }
}
