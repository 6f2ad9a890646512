//! Listeners, TLS and SASL (issue 16): what a connection speaks below the Kafka
//! protocol and who it is. docs/security.md describes it for operators.

pub mod authorizer;
mod base64;
pub mod config;
pub mod controller;
pub mod credentials;
pub mod listeners;
pub mod oauth;
pub mod principal;
pub mod sasl;
pub mod sasl_client;
pub mod scram;
#[cfg(test)]
mod test_tls;
pub mod tls;
pub mod tls_client;
pub mod tls_io;

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use crate::config::BrokerConfig;
use listeners::{ListenerSpec, SecurityProtocol};
pub use principal::Principal;
use principal::PrincipalMapper;
use tls::TlsContext;

/// Largest request a client may send before it authenticated (Kafka's
/// `sasl.server.max.receive.size`): SASL tokens are small, and an unauthenticated
/// client must not make the broker hold `socket_request_max_bytes`.
pub const UNAUTHENTICATED_MAX_FRAME: usize = 512 * 1024;

/// One listener, ready to accept on: its settings and what its connections share.
pub struct Listener {
    pub name: String,
    pub protocol: SecurityProtocol,
    pub bind: SocketAddr,
    /// What clients connected here are told (Metadata, FindCoordinator, ...).
    pub advertised: (String, i32),
    pub tls: Option<Arc<TlsContext>>,
    pub mapper: Option<Arc<PrincipalMapper>>,
    pub sasl: Option<Arc<sasl::SaslSettings>>,
    /// In this broker's registration: the listeners of the config file. One added by
    /// the dynamic `listeners` is not (as on Kafka, whose KRaft brokers register once):
    /// Metadata on it lists no broker.
    pub registered: bool,
}

/// Build the listeners of `config`. `bound` gives each listener's bound address (its
/// port, when 0 was asked for), in the order of [`listener_specs`]; those named in
/// `registered` are in the broker's registration. The SASL settings and principal
/// mapping of `existing` listeners are shared, not loaded again; each TLS listener has
/// TLS files of its own (`[ssl]`'s unless a dynamic config gives it others).
pub fn build_listeners(
    config: &BrokerConfig,
    specs: &[ListenerSpec],
    bound: &[SocketAddr],
    registered: &[String],
    existing: &[Arc<Listener>],
) -> anyhow::Result<Vec<Arc<Listener>>> {
    let mut mapper: Option<Arc<PrincipalMapper>> = existing.iter().find_map(|l| l.mapper.clone());
    let mut sasl_settings: Option<Arc<sasl::SaslSettings>> =
        existing.iter().find_map(|l| l.sasl.clone());
    let mut out = Vec::new();
    for (spec, bound) in specs.iter().zip(bound) {
        let advertised = match &spec.advertised {
            Some(a) => a.clone(),
            None => {
                if bound.ip().is_unspecified() {
                    anyhow::bail!("listener {} binds {bound}: set advertised_listeners (or advertised_listener) so clients know where to connect", spec.name);
                }
                (bound.ip().to_string(), i32::from(bound.port()))
            }
        };
        let listener_tls = if spec.protocol.uses_tls() {
            let ctx = Arc::new(
                TlsContext::new(&config.ssl.for_listener(&spec.name)).with_context(|| {
                    format!("TLS configuration (ssl) of listener {}", spec.name)
                })?,
            );
            tls::spawn_reloader(&ctx)?;
            if mapper.is_none() {
                mapper = Some(Arc::new(
                    PrincipalMapper::parse(&config.ssl.principal_mapping_rules)
                        .context("ssl.principal_mapping_rules")?,
                ));
            }
            Some(ctx)
        } else {
            None
        };
        let sasl = if spec.protocol.uses_sasl() {
            // (The mechanisms themselves were checked with the rest of the config.)
            if config.sasl.enabled_mechanisms.is_empty() {
                anyhow::bail!(
                    "listener {} is {} but sasl.enabled_mechanisms is empty",
                    spec.name,
                    spec.protocol.name()
                );
            }
            if sasl_settings.is_none() {
                let oauth = if config
                    .sasl
                    .enabled_mechanisms
                    .iter()
                    .any(|m| m == "OAUTHBEARER")
                {
                    let v = Arc::new(
                        oauth::Validator::new(&config.sasl.oauthbearer)
                            .context("OAUTHBEARER configuration (sasl.oauthbearer)")?,
                    );
                    oauth::spawn_reloader(v.clone())?;
                    Some(v)
                } else {
                    None
                };
                sasl_settings = Some(Arc::new(sasl::SaslSettings {
                    config: config.sasl.clone(),
                    oauth,
                    max_reauth_ms: config.connections_max_reauth_ms,
                }));
            }
            sasl_settings.clone()
        } else {
            None
        };
        out.push(Arc::new(Listener {
            name: spec.name.clone(),
            protocol: spec.protocol,
            bind: *bound,
            advertised,
            mapper: listener_tls.as_ref().and(mapper.clone()),
            tls: listener_tls,
            sasl,
            registered: registered.contains(&spec.name),
        }));
    }
    Ok(out)
}

/// The registered listeners as `advertised.listeners` lists them.
pub fn advertised_listeners(listeners: &[Arc<Listener>]) -> String {
    listeners
        .iter()
        .filter(|l| l.registered)
        .map(|l| format!("{}://{}:{}", l.name, l.advertised.0, l.advertised.1))
        .collect::<Vec<_>>()
        .join(",")
}

/// This broker's listeners as it registers them with the controller (what other brokers
/// tell clients connected to the listener of the same name).
pub fn registered_endpoints(
    listeners: &[Arc<Listener>],
) -> Vec<crate::metadata::brokers::Endpoint> {
    listeners
        .iter()
        .filter(|l| l.registered)
        .map(|l| crate::metadata::brokers::Endpoint {
            listener: l.name.clone(),
            host: l.advertised.0.clone(),
            // Advertised ports come from a u16 (config or bound socket).
            port: u16::try_from(l.advertised.1).unwrap_or_default(),
            security_protocol: l.protocol.id(),
        })
        .collect()
}

/// Where a connection stands with SASL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslStage {
    /// Not a SASL listener, or authenticated: every request is served.
    Done,
    /// Only ApiVersions and SaslHandshake are accepted.
    Handshake,
    /// SaslHandshake v1 done: the next request is SaslAuthenticate.
    Authenticate,
    /// SaslHandshake v0 done: the next frame is a bare SASL token (KIP-43's old form).
    RawToken,
}

/// A connection's security state, owned by its shard.
pub struct Session {
    /// Unique among the broker's connections (share sessions end with theirs).
    pub id: u64,
    pub peer: SocketAddr,
    pub listener: Arc<Listener>,
    principal: RefCell<Principal>,
    stage: Cell<SaslStage>,
    /// The SASL mechanism chosen in the handshake, with its exchange's state.
    mechanism: RefCell<Option<sasl::Mechanism>>,
    /// When the authenticated SASL session ends (KIP-368): past it, only a
    /// re-authentication is served. `None`: it lasts as long as the connection.
    expires: Cell<Option<Instant>>,
    /// During a re-authentication: what the session was authenticated as.
    reauth: RefCell<Option<sasl::Reauthentication>>,
    /// When the last re-authentication began (one per second at most, as in Kafka).
    last_reauth: Cell<Option<Instant>>,
    /// Until when the connection is not read (a client quota's throttle).
    muted: Mute,
}

/// A connection's throttle (KIP-219): requests handled in tasks mute it when their
/// response tells the client to wait, and the connection reads nothing meanwhile.
#[derive(Clone, Default)]
pub struct Mute(std::rc::Rc<Cell<Option<Instant>>>);

impl Mute {
    /// Mutes for `ms` from now (extending, never shortening, a mute in force).
    pub fn for_ms(&self, ms: u64) {
        if ms == 0 {
            return;
        }
        let until = Instant::now() + std::time::Duration::from_millis(ms);
        if self.0.get().is_none_or(|t| t < until) {
            self.0.set(Some(until));
        }
    }

    /// When the mute in force ends, if one is.
    pub fn until(&self) -> Option<Instant> {
        self.0.get().filter(|t| *t > Instant::now())
    }
}

impl Session {
    pub fn new(peer: SocketAddr, listener: Arc<Listener>) -> Session {
        let stage = if listener.sasl.is_some() {
            SaslStage::Handshake
        } else {
            SaslStage::Done
        };
        /// Connection ids, unique for the broker's lifetime.
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Session {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            peer,
            listener,
            principal: RefCell::new(Principal::anonymous()),
            stage: Cell::new(stage),
            mechanism: RefCell::new(None),
            muted: Mute::default(),
            expires: Cell::new(None),
            reauth: RefCell::new(None),
            last_reauth: Cell::new(None),
        }
    }

    pub fn mute(&self) -> &Mute {
        &self.muted
    }

    pub fn principal(&self) -> Principal {
        self.principal.borrow().clone()
    }

    /// Who this connection is, for a request's authorization checks.
    pub fn caller(&self) -> authorizer::Caller {
        authorizer::Caller {
            principal: self.principal(),
            host: self.peer.ip().to_string(),
        }
    }

    pub fn set_principal(&self, p: Principal) {
        *self.principal.borrow_mut() = p;
    }

    pub fn stage(&self) -> SaslStage {
        self.stage.get()
    }

    pub fn authenticated(&self) -> bool {
        self.stage.get() == SaslStage::Done
    }

    /// The largest request frame this connection may send now.
    pub fn max_frame(&self, configured: usize) -> usize {
        if self.authenticated() {
            configured
        } else {
            configured.min(UNAUTHENTICATED_MAX_FRAME)
        }
    }

    /// After the TLS handshake: the principal from the client certificate, if any.
    /// `Err` when mapping rules exist and none applies (Kafka closes the connection).
    pub fn take_certificate(&self, leaf: Option<&[u8]>) -> anyhow::Result<()> {
        let (Some(der), Some(mapper)) = (leaf, &self.listener.mapper) else {
            return Ok(());
        };
        let dn = principal::subject_dn(der)?;
        let name = mapper
            .name(&dn)
            .with_context(|| format!("no ssl.principal_mapping_rules entry applies to {dn}"))?;
        // On SASL_SSL the SASL user replaces it once authenticated, as in Kafka.
        self.set_principal(Principal::user(&name));
        Ok(())
    }
}
