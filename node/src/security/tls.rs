//! The TLS server configuration of the SSL and SASL_SSL listeners, built from PEM files
//! with rustls, and reloaded when the files change.
//!
//! Every shard accepts on every listener, so each TLS listener's current configuration
//! is shared broker-wide behind an `RwLock` that is read once per accepted connection
//! (never per request) and written only by the reload thread and, when a dynamic
//! config gives the listener other files, by shard 0 (a few small file reads on a rare
//! change, as when it adds a listener). A connection
//! keeps the configuration it was accepted with; new connections see new certificates.
//!
//! SASL_SSL listeners never ask for a client certificate: as in Kafka, where
//! `ssl.client.auth` applies to them only when set for that listener, SASL identifies
//! their clients.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::config::{ClientAuth, SslConfig};

/// The files one configuration was built from, and their contents (to see changes;
/// they are small, and comparing contents is immune to coarse modification times).
#[derive(PartialEq, Eq)]
pub(super) struct Sources(Vec<(PathBuf, Vec<u8>)>);

impl Sources {
    pub(super) fn read(ssl: &SslConfig) -> anyhow::Result<Sources> {
        let mut files = Vec::new();
        for p in ssl.files().into_iter().flatten() {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            files.push((p.clone(), bytes));
        }
        Ok(Sources(files))
    }

    fn get(&self, path: &Path) -> &[u8] {
        self.0
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, b)| b.as_slice())
            .unwrap_or(&[])
    }
}

/// The configurations built from one version of the files.
struct Built {
    /// The settings (file paths) they were built from.
    settings: SslConfig,
    /// For SSL listeners: with `client_auth`.
    ssl: Arc<ServerConfig>,
    /// For SASL_SSL listeners: without client certificates.
    sasl_ssl: Arc<ServerConfig>,
    /// For this broker's connections to other brokers' TLS listeners: trusts the
    /// truststore, presents the keystore's certificate when asked. `None` without a
    /// truststore.
    client: Option<Arc<ClientConfig>>,
    /// The keystore's certificate (the chain's leaf), which a replacement is checked
    /// against (`broker_config/listener_ssl.rs`).
    leaf: CertificateDer<'static>,
    sources: Sources,
}

/// The TLS configuration new connections on one listener get; see the module comment.
pub struct TlsContext {
    current: RwLock<Built>,
    reload_interval_ms: u64,
}

impl TlsContext {
    pub fn new(ssl: &SslConfig) -> anyhow::Result<TlsContext> {
        Ok(TlsContext {
            current: RwLock::new(Built::load(ssl)?),
            reload_interval_ms: ssl.reload_interval_ms,
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Built> {
        // A poisoned lock only means a writer panicked mid-swap, which cannot leave
        // the value half-written: keep serving what is there.
        match self.current.read() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Built> {
        match self.current.write() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        }
    }

    /// The configuration for a connection accepted now on an SSL listener (`sasl`
    /// false) or a SASL_SSL one.
    pub fn current(&self, sasl: bool) -> Arc<ServerConfig> {
        let built = self.read();
        if sasl {
            built.sasl_ssl.clone()
        } else {
            built.ssl.clone()
        }
    }

    /// The configuration for a connection to another broker made now.
    pub fn client(&self) -> Option<Arc<ClientConfig>> {
        self.read().client.clone()
    }

    /// The settings in use (the files of `[ssl]` or the listener's own).
    pub fn settings(&self) -> SslConfig {
        self.read().settings.clone()
    }

    /// The certificate this listener presents.
    pub fn leaf(&self) -> CertificateDer<'static> {
        self.read().leaf.clone()
    }

    /// Rebuild from the files if they changed. A change that does not make a valid
    /// configuration (a certificate written before its key, say) is an error and the
    /// old configuration is kept; the next check tries again.
    pub fn reload_if_changed(&self) -> anyhow::Result<bool> {
        let settings = self.settings();
        let sources = Sources::read(&settings)?;
        if self.read().sources == sources {
            return Ok(false);
        }
        let built = Built::new(&settings, sources)?;
        let mut slot = self.write();
        // Switched to other files meanwhile (`switch_to`): those win.
        if slot.settings.files() != settings.files() {
            return Ok(false);
        }
        *slot = built;
        Ok(true)
    }

    /// Use other files from now on (a dynamic `listener.name.<listener>.ssl.*`);
    /// connections accepted before keep theirs.
    pub fn switch_to(&self, ssl: &SslConfig) -> anyhow::Result<()> {
        let built = Built::load(ssl)?;
        *self.write() = built;
        Ok(())
    }
}

/// The certificate of the keystore of `ssl`, once the files make a TLS configuration
/// (what a dynamic change is checked with before it is accepted); on failure, the
/// file that did not load (the truststore when it is the one at fault) and why.
pub fn load_leaf(ssl: &SslConfig) -> Result<CertificateDer<'static>, (PathBuf, anyhow::Error)> {
    if let Some(ca) = &ssl.truststore_location {
        std::fs::read(ca)
            .map_err(anyhow::Error::from)
            .and_then(|bytes| trusted(ca, &Sources(vec![(ca.clone(), bytes)])))
            .map_err(|e| (ca.clone(), e))?;
    }
    let keystore = ssl.keystore_location.clone().unwrap_or_default();
    Ok(Built::load(ssl).map_err(|e| (keystore, e))?.leaf)
}

/// Check the files every `reload_interval_ms` on a thread of its own (off the shards:
/// file reads and certificate parsing are blocking work), as long as the listener is
/// there.
pub fn spawn_reloader(tls: &Arc<TlsContext>) -> anyhow::Result<()> {
    let every = tls.reload_interval_ms;
    let tls = Arc::downgrade(tls);
    spawn_reload_thread("spate-tls-reload", "TLS", every, move || {
        tls.upgrade().map(|t| t.reload_if_changed())
    })
}

/// Calls `reload` every `every_ms` (never when 0) on a thread named `name`, until it
/// returns `None`; `what` names the certificates in the log lines.
pub(super) fn spawn_reload_thread(
    name: &str,
    what: &'static str,
    every_ms: u64,
    reload: impl Fn() -> Option<anyhow::Result<bool>> + Send + 'static,
) -> anyhow::Result<()> {
    if every_ms == 0 {
        return Ok(());
    }
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(every_ms));
            match reload() {
                None => return,
                Some(Ok(true)) => tracing::info!("{what} certificates reloaded"),
                Some(Ok(false)) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %format!("{e:#}"), "{what} certificate files changed but do not load; keeping the previous ones")
                }
            }
        })
        .with_context(|| format!("starting the {what} certificate reload thread"))?;
    Ok(())
}

impl Built {
    fn load(ssl: &SslConfig) -> anyhow::Result<Built> {
        Built::new(ssl, Sources::read(ssl)?)
    }

    fn new(ssl: &SslConfig, sources: Sources) -> anyhow::Result<Built> {
        let (chain, _) = identity(ssl, &sources)?;
        Ok(Built {
            settings: ssl.clone(),
            ssl: build(ssl, ssl.client_auth, &sources)?,
            sasl_ssl: build(ssl, ClientAuth::None, &sources)?,
            client: build_client(ssl, &sources)?,
            leaf: chain[0].clone(),
            sources,
        })
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(super) fn build(
    ssl: &SslConfig,
    client_auth: ClientAuth,
    files: &Sources,
) -> anyhow::Result<Arc<ServerConfig>> {
    let (chain, key) = identity(ssl, files)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .context("TLS protocol versions")?;
    let builder = match client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        mode => {
            let Some(ca) = &ssl.truststore_location else {
                bail!("ssl.client_auth = {mode:?} needs ssl.truststore_location");
            };
            let roots = trusted(ca, files)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let verifier = if mode == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder
                .with_client_cert_verifier(verifier.build().context("client certificate verifier")?)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .context("the certificate and key do not make a TLS identity")?;
    // Kafka clients resume nothing; tickets cost a write per handshake for no use.
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// This node's certificate chain (leaf first) and private key from `[ssl]`.
pub(super) fn identity(
    ssl: &SslConfig,
    files: &Sources,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let Some(keystore) = &ssl.keystore_location else {
        bail!("TLS needs ssl.keystore_location");
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(files.get(keystore))
        .collect::<Result<_, _>>()
        .with_context(|| format!("certificates in {}", keystore.display()))?;
    if chain.is_empty() {
        bail!("no certificate in {}", keystore.display());
    }
    let key_path = ssl.key_location.as_ref().unwrap_or(keystore);
    let key = PrivateKeyDer::from_pem_slice(files.get(key_path))
        .with_context(|| format!("private key in {}", key_path.display()))?;
    Ok((chain, key))
}

/// The CA certificates of the truststore file `ca`.
pub(super) fn trusted(ca: &Path, files: &Sources) -> anyhow::Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(files.get(ca)) {
        let cert = cert.with_context(|| format!("certificates in {}", ca.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("CA certificate in {}", ca.display()))?;
    }
    if roots.is_empty() {
        bail!("no CA certificate in {}", ca.display());
    }
    Ok(Arc::new(roots))
}

/// The client configuration for connections to other brokers, when a truststore is
/// set: the keystore's certificate is this broker's identity there (an SSL listener
/// with `client_auth` maps it to the broker's principal).
fn build_client(ssl: &SslConfig, files: &Sources) -> anyhow::Result<Option<Arc<ClientConfig>>> {
    let Some(ca) = &ssl.truststore_location else {
        return Ok(None);
    };
    client_config(ssl, ca, files).map(Some)
}

/// A client trusting the CAs in `ca` and presenting the keystore's certificate when
/// the server asks for one.
pub(super) fn client_config(
    ssl: &SslConfig,
    ca: &Path,
    files: &Sources,
) -> anyhow::Result<Arc<ClientConfig>> {
    let (chain, key) = identity(ssl, files)?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .context("TLS protocol versions")?
        .with_root_certificates(trusted(ca, files)?)
        .with_client_auth_cert(chain, key)
        .context("the certificate and key do not make a TLS identity")?;
    Ok(Arc::new(config))
}
