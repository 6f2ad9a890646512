//! Listeners as Kafka names them: `listeners`, `advertised_listeners` and
//! `listener_security_protocol_map`, resolved into one [`ListenerSpec`] per listener.
//!
//! `NAME://HOST:PORT` entries, comma-separated. A name is its own security protocol
//! unless the map says otherwise (`CLIENT:SASL_SSL,INTERNAL:PLAINTEXT`). Without
//! `listeners`, the single `listen` address is one listener named PLAINTEXT, as before.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::{bail, Context};

/// Kafka's `SecurityProtocol`: what a listener speaks below the Kafka protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "PLAINTEXT" => Some(Self::Plaintext),
            "SSL" => Some(Self::Ssl),
            "SASL_PLAINTEXT" => Some(Self::SaslPlaintext),
            "SASL_SSL" => Some(Self::SaslSsl),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }

    /// Kafka's `SecurityProtocol` id, as broker registrations carry it.
    pub fn id(self) -> i16 {
        match self {
            Self::Plaintext => 0,
            Self::Ssl => 1,
            Self::SaslPlaintext => 2,
            Self::SaslSsl => 3,
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// One listener as configured: where it binds and what clients are told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    pub name: String,
    pub protocol: SecurityProtocol,
    pub bind: SocketAddr,
    /// From `advertised_listeners` (same name); `None`: the bound address.
    pub advertised: Option<(String, i32)>,
}

/// What the listener settings are made of (the config's strings).
pub struct ListenerSettings<'a> {
    pub listen: &'a str,
    pub advertised_listener: Option<&'a str>,
    pub listeners: Option<&'a str>,
    pub advertised_listeners: Option<&'a str>,
    pub protocol_map: Option<&'a str>,
}

/// Resolve the listener settings; every error names the offending entry.
pub fn resolve(s: &ListenerSettings<'_>) -> anyhow::Result<Vec<ListenerSpec>> {
    let Some(listeners) = s.listeners.filter(|l| !l.trim().is_empty()) else {
        if s.advertised_listeners.is_some() || s.protocol_map.is_some() {
            bail!("advertised_listeners and listener_security_protocol_map need listeners");
        }
        let advertised = s.advertised_listener.map(host_port).transpose()?;
        return Ok(vec![ListenerSpec {
            name: "PLAINTEXT".to_string(),
            protocol: SecurityProtocol::Plaintext,
            bind: resolve_addr(s.listen)?,
            advertised,
        }]);
    };
    if s.advertised_listener.is_some() {
        bail!("advertised_listener goes with listen; with listeners, set advertised_listeners");
    }
    let map = protocol_map(s.protocol_map.unwrap_or(""))?;
    let mut specs: Vec<ListenerSpec> = Vec::new();
    for (name, addr) in entries(listeners)? {
        let protocol = match map.get(&name) {
            Some(p) => *p,
            None => SecurityProtocol::parse(&name).with_context(|| {
                format!("listener {name}: no security protocol (add it to listener_security_protocol_map)")
            })?,
        };
        if specs.iter().any(|l| l.name == name) {
            bail!("listeners: {name} appears twice");
        }
        let bind = resolve_addr(&addr).with_context(|| format!("listener {name}"))?;
        // SO_REUSEPORT would let two listeners share a port, each getting some of its
        // connections: refuse it, as Kafka does.
        if bind.port() != 0 && specs.iter().any(|l| l.bind.port() == bind.port()) {
            bail!(
                "listeners: each listener needs a port of its own ({name} shares {})",
                bind.port()
            );
        }
        specs.push(ListenerSpec {
            name,
            protocol,
            bind,
            advertised: None,
        });
    }
    for (name, addr) in entries(s.advertised_listeners.unwrap_or(""))? {
        let spec = specs
            .iter_mut()
            .find(|l| l.name == name)
            .with_context(|| format!("advertised_listeners: {name} is not in listeners"))?;
        spec.advertised =
            Some(host_port(&addr).with_context(|| format!("advertised listener {name}"))?);
    }
    Ok(specs)
}

/// `NAME://HOST:PORT,...` into (NAME, HOST:PORT) pairs; names are upper-cased as Kafka does.
fn entries(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    text.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, addr) = e
                .split_once("://")
                .with_context(|| format!("listener {e} is not NAME://HOST:PORT"))?;
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                bail!("listener {e}: bad name {name:?}");
            }
            Ok((name.to_ascii_uppercase(), addr.to_string()))
        })
        .collect()
}

fn protocol_map(text: &str) -> anyhow::Result<BTreeMap<String, SecurityProtocol>> {
    let mut map = BTreeMap::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, protocol) = entry.split_once(':').with_context(|| {
            format!("listener_security_protocol_map: {entry} is not NAME:PROTOCOL")
        })?;
        let protocol = SecurityProtocol::parse(protocol.trim()).with_context(|| {
            format!("listener_security_protocol_map: unknown security protocol {protocol}")
        })?;
        map.insert(name.trim().to_ascii_uppercase(), protocol);
    }
    Ok(map)
}

fn resolve_addr(addr: &str) -> anyhow::Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("resolving listen address {addr}"))?
        .next()
        .with_context(|| format!("listen address {addr} resolves to nothing"))
}

/// `HOST:PORT` (IPv6 hosts in brackets) as given to clients.
pub fn host_port(addr: &str) -> anyhow::Result<(String, i32)> {
    let (host, port) = addr
        .rsplit_once(':')
        .with_context(|| format!("{addr} is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("bad port in {addr}"))?;
    Ok((host.trim_matches(['[', ']']).to_string(), i32::from(port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings<'a>(
        listeners: Option<&'a str>,
        adv: Option<&'a str>,
        map: Option<&'a str>,
    ) -> ListenerSettings<'a> {
        ListenerSettings {
            listen: "127.0.0.1:9092",
            advertised_listener: None,
            listeners,
            advertised_listeners: adv,
            protocol_map: map,
        }
    }

    #[test]
    fn listen_alone_is_one_plaintext_listener() {
        let l = resolve(&settings(None, None, None)).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(
            (l[0].name.as_str(), l[0].protocol),
            ("PLAINTEXT", SecurityProtocol::Plaintext)
        );
        assert_eq!(l[0].bind, "127.0.0.1:9092".parse().unwrap());
    }

    #[test]
    fn names_protocols_and_advertised_addresses() {
        let l = resolve(&settings(
            Some("PLAINTEXT://127.0.0.1:9092, ssl://127.0.0.1:9093,CLIENT://127.0.0.1:9094"),
            Some("CLIENT://kafka.example.com:19094"),
            Some("CLIENT:SASL_SSL"),
        ))
        .unwrap();
        let protocols: Vec<_> = l.iter().map(|l| (l.name.as_str(), l.protocol)).collect();
        assert_eq!(
            protocols,
            [
                ("PLAINTEXT", SecurityProtocol::Plaintext),
                ("SSL", SecurityProtocol::Ssl),
                ("CLIENT", SecurityProtocol::SaslSsl)
            ]
        );
        assert_eq!(
            l[2].advertised,
            Some(("kafka.example.com".to_string(), 19094))
        );
        assert_eq!(l[0].advertised, None);
    }

    #[test]
    fn bad_settings_are_refused() {
        for (listeners, adv, map) in [
            (Some("INTERNAL://127.0.0.1:1"), None, None),
            (
                Some("PLAINTEXT://127.0.0.1:1,PLAINTEXT://127.0.0.1:2"),
                None,
                None,
            ),
            (Some("PLAINTEXT://127.0.0.1:1"), Some("SSL://h:2"), None),
            (Some("PLAINTEXT://127.0.0.1:1"), None, Some("PLAINTEXT:TLS")),
            (Some("127.0.0.1:1"), None, None),
            (None, Some("PLAINTEXT://h:1"), None),
        ] {
            assert!(
                resolve(&settings(listeners, adv, map)).is_err(),
                "{listeners:?} {adv:?} {map:?}"
            );
        }
    }
}
