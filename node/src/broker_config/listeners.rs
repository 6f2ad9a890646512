//! `listeners` and `listener.security.protocol.map` as dynamic per-broker configs: how a
//! dynamic value takes the place of the config file's, and the checks a change passes
//! on the broker it names (with Kafka 4.4's messages) before it goes to the controller.
//! Listeners are added and removed by name, as Kafka does; `listener_set.rs` applies it.

use std::collections::BTreeMap;

use spate_net::ErrorCode;

use super::alter::{plan, Refusal};
use crate::config::BrokerConfig;
use crate::controller::ConfigChange;
use crate::metadata::MetadataImage;
use crate::security::listeners::SecurityProtocol;

/// A dynamic `listeners` in place of the file's.
pub fn write_listeners(c: &mut BrokerConfig, value: &str) {
    listeners_form(c);
    c.listeners = Some(value.trim().to_string());
}

/// A dynamic `listener.security.protocol.map` in place of the file's.
pub fn write_protocol_map(c: &mut BrokerConfig, value: &str) {
    listeners_form(c);
    c.listener_security_protocol_map = Some(value.trim().to_string());
}

/// A config with only `listen` (and `advertised_listener`) as the one PLAINTEXT
/// listener it stands for, so that dynamic listener settings apply over it.
fn listeners_form(c: &mut BrokerConfig) {
    if c.listeners.is_none() {
        c.listeners = Some(format!("PLAINTEXT://{}", c.listen));
        c.advertised_listeners = c
            .advertised_listener
            .take()
            .map(|a| format!("PLAINTEXT://{a}"));
    }
}

/// Check a change of broker `resource` on that broker (`config`: its static
/// configuration) that changes its listener settings (a legacy AlterConfigs may drop
/// them): the listeners it leads to must resolve, keep the registered ones and the
/// security protocol of the existing ones. Other refusals are the controller's.
pub fn check_change(
    config: &BrokerConfig,
    image: &MetadataImage,
    resource: &str,
    change: &ConfigChange,
) -> Result<(), Refusal> {
    if resource.is_empty() {
        return Ok(());
    }
    // Refused for another reason: the controller gives that refusal.
    let Ok(configs) = plan(image, config, resource, change.clone()) else {
        return Ok(());
    };
    let mut dynamic = image.broker_configs.clone();
    let old = super::live::effective(config, &dynamic, config.node_id);
    dynamic.insert(resource.to_string(), configs);
    let new = super::live::effective(config, &dynamic, config.node_id);
    let settings = |c: &BrokerConfig| {
        (
            c.listeners.clone(),
            c.listener_security_protocol_map.clone(),
        )
    };
    if settings(&old) == settings(&new) {
        return Ok(());
    }
    check(config, &old, &new).map_err(|m| (ErrorCode::InvalidRequest, m))
}

/// Kafka's checks of the listeners of `new` (effective settings), in its order, then
/// Spate's own (`listener_specs`: one port per listener).
fn check(
    static_config: &BrokerConfig,
    old: &BrokerConfig,
    new: &BrokerConfig,
) -> Result<(), String> {
    let map = protocol_map(new.listener_security_protocol_map.as_deref().unwrap_or(""))?;
    let text = new
        .listeners
        .clone()
        .unwrap_or_else(|| format!("PLAINTEXT://{}", new.listen));
    let entries: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    let shown = format!("[{}]", entries.join(", "));
    let fail = |why: String| format!("Error creating broker listeners from '{shown}': {why}");
    let mut parsed: Vec<(String, SecurityProtocol, u16)> = Vec::new();
    for entry in &entries {
        let Some((name, port)) = endpoint(entry) else {
            return Err(fail(format!(
                "Unable to parse {entry} to a broker endpoint"
            )));
        };
        let protocol = map
            .get(&name)
            .copied()
            .or_else(|| SecurityProtocol::parse(&name))
            .ok_or_else(|| fail(format!("No security protocol defined for listener {name}")))?;
        parsed.push((name, protocol, port));
    }
    for (i, (name, _, port)) in parsed.iter().enumerate() {
        if parsed[..i].iter().any(|(n, _, _)| n == name) {
            return Err(fail(format!(
                "Each listener must have a different name, listeners: {shown}"
            )));
        }
        if *port != 0 && parsed[..i].iter().any(|(_, _, p)| p == port) {
            return Err(fail(format!("If you have two listeners on the same port then one needs to be IPv4 and the other IPv6, listeners: {shown}, port: {port}")));
        }
    }
    let names: Vec<&str> = parsed.iter().map(|(n, _, _)| n.as_str()).collect();
    // The registered listeners (Kafka: advertised.listeners, which cannot change) stay.
    let registered: Vec<String> = static_config
        .listener_specs()
        .map_err(|e| format!("{e:#}"))?
        .into_iter()
        .map(|s| s.name)
        .collect();
    if registered.iter().any(|r| !names.contains(&r.as_str())) {
        return Err(format!(
            "requirement failed: advertised.listeners listener names must be equal to or a subset of the ones defined in listeners. Found {}. The valid options based on the current configuration are {}",
            registered.join(","),
            names.join(",")
        ));
    }
    let before = old.listener_specs().map_err(|e| format!("{e:#}"))?;
    for (name, protocol, _) in &parsed {
        if before
            .iter()
            .any(|b| &b.name == name && b.protocol != *protocol)
        {
            // Kafka's words, as its ConfigException wrapping gives them to the client.
            return Err(format!("Invalid value org.apache.kafka.common.config.ConfigException: Security protocol cannot be updated for existing listener ListenerName({name}) for configuration Invalid dynamic configuration"));
        }
    }
    for (name, protocol, _) in &parsed {
        if protocol.uses_tls() && static_config.ssl.keystore_location.is_none() {
            return Err(format!(
                "listener {name} is {} but ssl.keystore_location is not set",
                protocol.name()
            ));
        }
        if protocol.uses_sasl() && static_config.sasl.enabled_mechanisms.is_empty() {
            return Err(format!(
                "listener {name} is {} but sasl.enabled_mechanisms is empty",
                protocol.name()
            ));
        }
    }
    new.listener_specs()
        .map(|_| ())
        .map_err(|e| format!("{e:#}"))
}

/// `NAME:PROTOCOL,...`, names upper-cased as Kafka normalises them.
fn protocol_map(text: &str) -> Result<BTreeMap<String, SecurityProtocol>, String> {
    let mut map = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, protocol) = entry.split_once(':').unwrap_or((entry, ""));
        let protocol =
            SecurityProtocol::parse(&protocol.trim().to_ascii_uppercase()).ok_or_else(|| {
                format!(
                    "Invalid security protocol `{}` defined in listener.security.protocol.map",
                    protocol.trim()
                )
            })?;
        map.insert(name.trim().to_ascii_uppercase(), protocol);
    }
    Ok(map)
}

/// `NAME://HOST:PORT` (IPv6 hosts in brackets): the upper-cased name and the port.
fn endpoint(entry: &str) -> Option<(String, u16)> {
    let (name, addr) = entry.split_once("://")?;
    let (_, port) = addr.rsplit_once(':')?;
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    (!name.is_empty() && name.chars().all(valid)).then_some(())?;
    Some((name.to_ascii_uppercase(), port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::alter_op;

    fn set(pairs: &[(&str, &str)]) -> ConfigChange {
        ConfigChange::Incremental(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), alter_op::SET, Some(v.to_string())))
                .collect(),
        )
    }

    fn refusal(change: ConfigChange) -> String {
        let config = BrokerConfig::embedded_default();
        match check_change(config, &MetadataImage::default(), "0", &change) {
            Err((ErrorCode::InvalidRequest, m)) => m,
            other => panic!("{other:?}"),
        }
    }

    const L: &str = "PLAINTEXT://127.0.0.1:9092";

    #[test]
    fn kafkas_checks_and_messages() {
        let config = BrokerConfig::embedded_default();
        let image = MetadataImage::default();
        let extra = format!("{L},EXTRA://127.0.0.1:9095");
        assert_eq!(
            check_change(
                config,
                &image,
                "0",
                &set(&[
                    ("listeners", &extra),
                    (
                        "listener.security.protocol.map",
                        "PLAINTEXT:PLAINTEXT,EXTRA:SSL"
                    )
                ])
            ),
            Err((
                ErrorCode::InvalidRequest,
                "listener EXTRA is SSL but ssl.keystore_location is not set".into()
            ))
        );
        assert_eq!(
            check_change(
                config,
                &image,
                "0",
                &set(&[
                    ("listeners", &extra),
                    (
                        "listener.security.protocol.map",
                        "PLAINTEXT:PLAINTEXT,EXTRA:PLAINTEXT"
                    )
                ])
            ),
            Ok(())
        );
        // A listener named after its protocol needs no map entry (Spate's default map).
        assert_eq!(check_change(config, &image, "0", &set(&[("listeners", &format!("{L},SSL_X://127.0.0.1:1"))])).unwrap_err().1,
            "Error creating broker listeners from '[PLAINTEXT://127.0.0.1:9092, SSL_X://127.0.0.1:1]': No security protocol defined for listener SSL_X");
        assert_eq!(refusal(set(&[("listeners", &format!("{L}, garbage"))])),
            "Error creating broker listeners from '[PLAINTEXT://127.0.0.1:9092, garbage]': Unable to parse garbage to a broker endpoint");
        assert_eq!(refusal(set(&[("listeners", &format!("{L},plaintext://127.0.0.1:9096"))])),
            "Error creating broker listeners from '[PLAINTEXT://127.0.0.1:9092, plaintext://127.0.0.1:9096]': Each listener must have a different name, listeners: [PLAINTEXT://127.0.0.1:9092, plaintext://127.0.0.1:9096]");
        assert_eq!(refusal(set(&[("listeners", &format!("{L},EXTRA://127.0.0.1:9092")), ("listener.security.protocol.map", "EXTRA:PLAINTEXT,PLAINTEXT:PLAINTEXT")])),
            "Error creating broker listeners from '[PLAINTEXT://127.0.0.1:9092, EXTRA://127.0.0.1:9092]': If you have two listeners on the same port then one needs to be IPv4 and the other IPv6, listeners: [PLAINTEXT://127.0.0.1:9092, EXTRA://127.0.0.1:9092], port: 9092");
        assert_eq!(
            refusal(set(&[("listener.security.protocol.map", "PLAINTEXT:TLS")])),
            "Invalid security protocol `TLS` defined in listener.security.protocol.map"
        );
        assert_eq!(refusal(set(&[("listeners", "EXTRA://127.0.0.1:9095"), ("listener.security.protocol.map", "EXTRA:PLAINTEXT")])),
            "requirement failed: advertised.listeners listener names must be equal to or a subset of the ones defined in listeners. Found PLAINTEXT. The valid options based on the current configuration are EXTRA");
        assert_eq!(refusal(set(&[("listener.security.protocol.map", "PLAINTEXT:SASL_PLAINTEXT")])),
            "Invalid value org.apache.kafka.common.config.ConfigException: Security protocol cannot be updated for existing listener ListenerName(PLAINTEXT) for configuration Invalid dynamic configuration");
        // Back to the file's settings (here `listen`).
        let back = ConfigChange::Incremental(vec![
            ("listeners".into(), alter_op::DELETE, None),
            (
                "listener.security.protocol.map".into(),
                alter_op::DELETE,
                None,
            ),
        ]);
        assert_eq!(check_change(config, &image, "0", &back), Ok(()));
        // Other configs, the cluster default and other refusals are not checked here.
        assert_eq!(
            check_change(config, &image, "0", &set(&[("log.cleaner.threads", "2")])),
            Ok(())
        );
        assert_eq!(
            check_change(config, &image, "", &set(&[("listeners", "x")])),
            Ok(())
        );
    }

    #[test]
    fn a_dynamic_value_replaces_the_listen_form() {
        let mut c = BrokerConfig::embedded_default().clone();
        c.advertised_listener = Some("h:1".into());
        write_protocol_map(&mut c, "PLAINTEXT:PLAINTEXT,EXTRA:PLAINTEXT");
        assert_eq!(c.listeners.as_deref(), Some("PLAINTEXT://127.0.0.1:9092"));
        assert_eq!(c.advertised_listeners.as_deref(), Some("PLAINTEXT://h:1"));
        write_listeners(
            &mut c,
            " PLAINTEXT://127.0.0.1:9092,EXTRA://127.0.0.1:9095 ",
        );
        let specs = c.listener_specs().unwrap();
        assert_eq!(
            specs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["PLAINTEXT", "EXTRA"]
        );
        assert_eq!(specs[0].advertised, Some(("h".to_string(), 1)));
    }
}
