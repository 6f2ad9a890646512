//! A listener's TLS files as dynamic per-broker configs:
//! `listener.name.<listener>.ssl.keystore.location` and
//! `listener.name.<listener>.ssl.truststore.location` (PEM files, as `[ssl]`'s).
//!
//! Kafka 4.4 takes the SSL configs that may change at runtime
//! (`SslConfigs.RECONFIGURABLE_CONFIGS`) only with a listener prefix and only per
//! broker (`DynamicBrokerConfig.validateConfigs`). Spate applies the two file
//! locations and refuses the other prefixed ones, which it cannot apply. A change is
//! checked on the broker it names, where the files are, as Kafka's
//! `SslFactory.validateReconfiguration` checks it: the files must load, the
//! certificate keep its subject and its subject alternative names (unless `[ssl]`'s
//! `allow_dn_changes`, `allow_san_changes` say otherwise), and a truststore
//! cannot be added to a listener that had none. Shard 0 then switches the listener's
//! TLS context to the new files (`shard.rs`); a change that names them again reloads
//! them at once (`handlers/configs.rs`), as Kafka reloads a re-set keystore.

use std::collections::BTreeMap;
use std::sync::Arc;

use spate_net::ErrorCode;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::alter::{plan, Refusal};
use crate::config::BrokerConfig;
use crate::controller::ConfigChange;
use crate::metadata::MetadataImage;
use crate::security::config::SslConfig;
use crate::security::tls::{load_leaf, TlsContext};
use crate::security::Listener;

/// The listener configs Spate applies.
const FILES: [&str; 2] = ["ssl.keystore.location", "ssl.truststore.location"];

/// Kafka's `SslConfigs.RECONFIGURABLE_CONFIGS`: changed per listener only.
const RECONFIGURABLE: [&str; 10] = [
    "ssl.keystore.type",
    "ssl.keystore.location",
    "ssl.keystore.password",
    "ssl.key.password",
    "ssl.truststore.type",
    "ssl.truststore.location",
    "ssl.truststore.password",
    "ssl.keystore.certificate.chain",
    "ssl.keystore.key",
    "ssl.truststore.certificates",
];

/// Listener configs Kafka takes at the cluster default (`ClusterLevelListenerConfigs`).
const CLUSTER_LEVEL: [&str; 3] = [
    "max.connections",
    "max.connection.creation.rate",
    "num.network.threads",
];

/// (listener, config) of `listener.name.<listener>.<config>` (Kafka's
/// `ListenerConfigRegex`).
fn split(name: &str) -> Option<(&str, &str)> {
    let (listener, base) = name.strip_prefix("listener.name.")?.split_once('.')?;
    Some((listener, base))
}

/// Whether `name` is a listener's file config that Spate applies.
pub fn is_file_config(name: &str) -> bool {
    file_config(name).is_some()
}

/// (listener, config) of a listener's file config that Spate applies.
pub fn file_config(name: &str) -> Option<(&str, &str)> {
    split(name).filter(|(_, base)| FILES.contains(base))
}

/// Whether `name` is a config a listener's file configs stand in for
/// (`ssl.keystore.location`): changeable, per listener.
pub fn has_listener_form(name: &str) -> bool {
    FILES.contains(&name)
}

/// An SSL config Kafka changes only per listener, named without the prefix.
pub fn needs_listener_prefix(name: &str) -> bool {
    RECONFIGURABLE.contains(&name)
}

/// A prefixed SSL config Kafka changes at runtime and Spate cannot.
pub fn unsupported(name: &str) -> bool {
    split(name).is_some_and(|(_, base)| RECONFIGURABLE.contains(&base) && !FILES.contains(&base))
}

/// A listener config, which only a broker may have (Kafka: `perBrokerConfigs`).
pub fn per_broker(name: &str) -> bool {
    split(name).is_some_and(|(_, base)| !CLUSTER_LEVEL.contains(&base))
}

/// This broker's dynamic file configs written into `config` (a cluster default of
/// them is refused, and ignored as Kafka ignores it).
pub fn apply(config: &mut BrokerConfig, configs: &BTreeMap<String, String>) {
    for (name, value) in configs {
        let Some((listener, base)) = file_config(name) else {
            continue;
        };
        let files = config
            .ssl
            .listener_files
            .entry(listener.to_string())
            .or_default();
        let path = Some(value.trim().into());
        if base == FILES[0] {
            files.keystore_location = path;
        } else {
            files.truststore_location = path;
        }
    }
}

/// Check a change of broker `resource` on that broker (`config`: its static
/// configuration, `listeners`: those it accepts on) that gives a TLS listener other
/// files, or names its files again: the files the listener would use must pass
/// `check_files`. Refused for another reason, the controller gives that refusal.
pub fn check_change(
    config: &BrokerConfig,
    image: &MetadataImage,
    resource: &str,
    change: &ConfigChange,
    listeners: &[Arc<Listener>],
) -> Result<(), Refusal> {
    if resource.is_empty() {
        return Ok(());
    }
    let Ok(configs) = plan(image, config, resource, change.clone()) else {
        return Ok(());
    };
    let named = named_listeners(change);
    let mut dynamic = image.broker_configs.clone();
    dynamic.insert(resource.to_string(), configs);
    let new = super::live::effective(config, &dynamic, config.node_id);
    for listener in listeners {
        let Some(tls) = &listener.tls else {
            continue;
        };
        let wanted = new.ssl.for_listener(&listener.name);
        let lower = listener.name.to_ascii_lowercase();
        if tls.settings().files() == wanted.files() && !named.contains(&lower) {
            continue;
        }
        check_files(tls, &wanted).map_err(|m| (ErrorCode::InvalidRequest, m))?;
    }
    Ok(())
}

/// The listeners (lower case, as in the prefix) whose file configs `change` names.
pub fn named_listeners(change: &ConfigChange) -> Vec<String> {
    let names: Vec<&str> = match change {
        ConfigChange::Replace(entries) => entries.iter().map(|(k, _)| k.as_str()).collect(),
        ConfigChange::Incremental(ops) => ops.iter().map(|(k, _, _)| k.as_str()).collect(),
    };
    names
        .into_iter()
        .filter(|n| is_file_config(n))
        .filter_map(|n| split(n).map(|(l, _)| l.to_string()))
        .collect()
}

/// Kafka's checks of new TLS files against those in use (`SslFactory`), with its
/// message: Kafka wraps the `SslFactory` refusal in the `ConfigException` of its
/// dynamic config update, whose (name, value) form makes the outer message.
fn check_files(current: &TlsContext, wanted: &SslConfig) -> Result<(), String> {
    ssl_factory_check(current, wanted).map_err(|why| {
        format!(
            "Invalid value org.apache.kafka.common.config.ConfigException: Validation of dynamic config update of SSLFactory failed: {why} for configuration Invalid dynamic configuration"
        )
    })
}

/// What `SslFactory.validateReconfiguration` finds wrong, as Java prints the exception.
fn ssl_factory_check(current: &TlsContext, wanted: &SslConfig) -> Result<(), String> {
    let config_exception =
        |m: String| format!("org.apache.kafka.common.config.ConfigException: {m}");
    let new_leaf = load_leaf(wanted).map_err(|(path, e)| {
        tracing::info!(file = %path.display(), error = %format!("{e:#}"), "dynamic TLS files refused");
        format!(
            "org.apache.kafka.common.errors.InvalidConfigurationException: Failed to load PEM SSL keystore {}",
            path.display()
        )
    })?;
    let old = Identity::of(&current.leaf())?;
    let new = Identity::of(&new_leaf)?;
    // Kafka compares the X500Principal, or the RFC 2253 names ignoring case.
    if !wanted.allow_dn_changes && !old.dn_rfc2253.eq_ignore_ascii_case(&new.dn_rfc2253) {
        return Err(config_exception(format!(
            "Keystore DistinguishedName does not match:  existing={{alias=kafka, DN={}}}, new={{alias=kafka, DN={}}}",
            old.dn, new.dn
        )));
    }
    if !wanted.allow_san_changes && !old.sans.iter().all(|s| new.sans.contains(s)) {
        return Err(config_exception(format!(
            "Keystore SubjectAltNames do not match:  existing={{alias=kafka, SAN={}}}, new={{alias=kafka, SAN={}}}",
            java_set(&old.sans),
            java_set(&new.sans)
        )));
    }
    if current.settings().truststore_location.is_none() && wanted.truststore_location.is_some() {
        return Err(config_exception(
            "Cannot add SSL truststore to an existing listener for which no truststore was configured."
                .into(),
        ));
    }
    Ok(())
}

/// What Kafka compares of a keystore's certificate.
struct Identity {
    /// As `X500Principal.toString()` writes it (`CN=a, O=b`).
    dn: String,
    /// As `X500Principal.getName()` writes it (`CN=a,O=b`).
    dn_rfc2253: String,
    /// As `getSubjectAlternativeNames()` gives them: `[type, value]`.
    sans: Vec<String>,
}

impl Identity {
    fn of(der: &[u8]) -> Result<Identity, String> {
        let rdns = crate::security::principal::subject_rdns(der).map_err(|e| format!("{e:#}"))?;
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
        let mut sans = Vec::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for name in &ext.value.general_names {
                let (kind, value) = match name {
                    GeneralName::RFC822Name(v) => (1, v.to_string()),
                    GeneralName::DNSName(v) => (2, v.to_string()),
                    GeneralName::URI(v) => (6, v.to_string()),
                    GeneralName::IPAddress(b) => (7, java_ip(b)),
                    other => (0, format!("{other:?}")),
                };
                sans.push(format!("[{kind}, {value}]"));
            }
        }
        Ok(Identity {
            dn: rdns.join(", "),
            dn_rfc2253: rdns.join(","),
            sans,
        })
    }
}

/// An IP address as Java's `getSubjectAlternativeNames` writes it (IPv6 in full).
fn java_ip(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string(),
        16 => bytes
            .chunks(2)
            .map(|p| format!("{:x}", u16::from_be_bytes([p[0], p[1]])))
            .collect::<Vec<_>>()
            .join(":"),
        _ => format!("{bytes:?}"),
    }
}

/// A Java collection's `toString()`.
fn java_set(items: &[String]) -> String {
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::alter_op;

    #[test]
    fn names() {
        assert!(is_file_config("listener.name.ssl.ssl.keystore.location"));
        assert!(is_file_config(
            "listener.name.internal.ssl.truststore.location"
        ));
        assert!(!is_file_config("ssl.keystore.location"));
        assert!(needs_listener_prefix("ssl.keystore.location"));
        assert!(!needs_listener_prefix("ssl.client.auth"));
        assert!(unsupported("listener.name.ssl.ssl.keystore.password"));
        assert!(!unsupported("listener.name.ssl.ssl.keystore.location"));
        assert!(per_broker("listener.name.ssl.ssl.keystore.location"));
        assert!(!per_broker("listener.name.ssl.max.connections"));
        assert_eq!(
            named_listeners(&ConfigChange::Incremental(vec![
                (
                    "listener.name.ssl.ssl.keystore.location".into(),
                    alter_op::SET,
                    Some("/k".into())
                ),
                (
                    "log.cleaner.threads".into(),
                    alter_op::SET,
                    Some("2".into())
                ),
            ])),
            vec!["ssl".to_string()]
        );
        assert_eq!(java_ip(&[127, 0, 0, 1]), "127.0.0.1");
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        assert_eq!(java_ip(&v6), "0:0:0:0:0:0:0:1");
    }

    fn testdata(file: &str) -> std::path::PathBuf {
        [env!("CARGO_MANIFEST_DIR"), "src/security/testdata", file]
            .iter()
            .collect()
    }

    /// `[ssl]` with the test certificate (`server.pem`, key apart, CN=localhost).
    fn server_ssl() -> SslConfig {
        let mut ssl = BrokerConfig::embedded_default().ssl.clone();
        ssl.keystore_location = Some(testdata("server.pem"));
        ssl.key_location = Some(testdata("server.key"));
        ssl.truststore_location = None;
        ssl.reload_interval_ms = 0;
        ssl
    }

    fn with_keystore(file: &str) -> SslConfig {
        let mut ssl = server_ssl();
        ssl.listener_files.insert(
            "ssl".into(),
            crate::security::config::ListenerFiles {
                keystore_location: Some(testdata(file)),
                truststore_location: None,
            },
        );
        ssl.for_listener("SSL")
    }

    #[test]
    fn new_files_are_checked_as_kafkas_ssl_factory_checks_them() {
        let current = TlsContext::new(&server_ssl()).unwrap();
        // Same subject and names, another key (in the keystore file): accepted.
        assert_eq!(check_files(&current, &with_keystore("renewed.pem")), Ok(()));
        let wrap = |why: &str| {
            format!("Invalid value org.apache.kafka.common.config.ConfigException: Validation of dynamic config update of SSLFactory failed: {why} for configuration Invalid dynamic configuration")
        };
        assert_eq!(
            check_files(&current, &with_keystore("other.pem")),
            Err(wrap("org.apache.kafka.common.config.ConfigException: Keystore DistinguishedName does not match:  existing={alias=kafka, DN=CN=localhost}, new={alias=kafka, DN=CN=other}"))
        );
        assert_eq!(
            check_files(&current, &with_keystore("narrow.pem")),
            Err(wrap("org.apache.kafka.common.config.ConfigException: Keystore SubjectAltNames do not match:  existing={alias=kafka, SAN=[[7, 127.0.0.1], [2, localhost]]}, new={alias=kafka, SAN=[[2, localhost]]}"))
        );
        let missing = testdata("missing.pem");
        assert_eq!(
            check_files(&current, &with_keystore("missing.pem")),
            Err(wrap(&format!("org.apache.kafka.common.errors.InvalidConfigurationException: Failed to load PEM SSL keystore {}", missing.display())))
        );
        // A keystore without its key.
        let mut keyless = with_keystore("server.pem");
        keyless.key_location = None;
        assert!(check_files(&current, &keyless).is_err());
        let mut allowed = with_keystore("other.pem");
        allowed.allow_dn_changes = true;
        assert_eq!(check_files(&current, &allowed), Ok(()));
        let mut allowed = with_keystore("narrow.pem");
        allowed.allow_san_changes = true;
        assert_eq!(check_files(&current, &allowed), Ok(()));
        let mut trusting = server_ssl();
        trusting.truststore_location = Some(testdata("server.pem"));
        assert_eq!(
            check_files(&current, &trusting),
            Err(wrap("org.apache.kafka.common.config.ConfigException: Cannot add SSL truststore to an existing listener for which no truststore was configured."))
        );
    }

    #[test]
    fn a_switched_context_serves_the_new_certificate() {
        let tls = TlsContext::new(&server_ssl()).unwrap();
        let before = tls.leaf();
        let renewed = with_keystore("renewed.pem");
        tls.switch_to(&renewed).unwrap();
        assert_ne!(tls.leaf(), before);
        assert_eq!(tls.settings().keystore_location, renewed.keystore_location);
        assert!(!tls.reload_if_changed().unwrap());
    }

    #[test]
    fn dynamic_files_apply_to_their_listener() {
        let mut config = BrokerConfig::embedded_default().clone();
        apply(
            &mut config,
            &BTreeMap::from([
                (
                    "listener.name.ssl.ssl.keystore.location".to_string(),
                    "/new/k.pem".to_string(),
                ),
                ("log.cleaner.threads".to_string(), "2".to_string()),
            ]),
        );
        let ssl = config.ssl.for_listener("SSL");
        assert_eq!(ssl.keystore_location, Some("/new/k.pem".into()));
        // The key is in the new keystore file.
        assert_eq!(ssl.key_location, None);
        assert_eq!(ssl.truststore_location, config.ssl.truststore_location);
        assert_eq!(
            config.ssl.for_listener("OTHER").keystore_location,
            config.ssl.keystore_location
        );
    }
}
