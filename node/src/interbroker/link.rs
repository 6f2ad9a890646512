//! How this broker reaches other brokers (Kafka's `inter.broker.listener.name`): which of
//! their listeners, and what it takes to be let in there: TLS, checked against the
//! truststore, and SASL as the configured broker user.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use compio::buf::BufResult;
use compio::io::{AsyncReadExt, AsyncWriteExt};
use compio::net::TcpStream;
use rustls::pki_types::ServerName;
use spate_net::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use spate_net::ApiKey;

use super::CallError;
use crate::config::BrokerConfig;
use crate::security::listeners::SecurityProtocol;
use crate::security::sasl_client::{ClientExchange, ClientMechanism, SaslCredentials};
use crate::security::tls::TlsContext;
use crate::security::tls_client::TlsClientStream;
use crate::security::Listener;

/// Most SaslAuthenticate round trips an exchange may take (SCRAM takes two).
const MAX_SASL_ROUNDS: usize = 4;

/// The inter-broker listener and how to connect to it.
pub struct InterBrokerLink {
    /// The name of the listener other brokers are reached on, as they registered it.
    pub listener: String,
    /// Why connections cannot be made, when the listener was not chosen explicitly and
    /// needs what is not configured (a single broker never connects to another).
    unusable: Option<String>,
    tls: Option<Arc<TlsContext>>,
    sasl: Option<SaslCredentials>,
}

impl InterBrokerLink {
    /// The link of `config`: `inter_broker_listener_name`, or else the first PLAINTEXT
    /// listener, or else the first listener. A listener named explicitly must be usable
    /// (a truststore for TLS, credentials for SASL); a default one that is not is
    /// refused only when a connection is attempted, with the reason.
    pub fn new(config: &BrokerConfig, listeners: &[Arc<Listener>]) -> anyhow::Result<Self> {
        let explicit = config.inter_broker_listener_name.as_deref();
        let listener = match explicit {
            Some(name) => listeners.iter().find(|l| l.name == name).with_context(|| {
                format!("inter_broker_listener_name = {name:?} is not one of the listeners")
            })?,
            None => listeners
                .iter()
                .find(|l| l.protocol == SecurityProtocol::Plaintext)
                .or_else(|| listeners.first())
                .context("no listener for other brokers to connect to")?,
        };
        let mut link = InterBrokerLink {
            listener: listener.name.clone(),
            unusable: None,
            tls: None,
            sasl: None,
        };
        if let Err(e) = link.secure(config, listener) {
            if explicit.is_some() {
                return Err(e.context(format!("inter-broker listener {}", listener.name)));
            }
            tracing::warn!(listener = %listener.name, reason = %format!("{e:#}"), "other brokers cannot be reached on this listener: set inter_broker_listener_name");
            link.unusable = Some(format!("{e:#}"));
        }
        Ok(link)
    }

    /// TLS and SASL for `listener`'s protocol.
    fn secure(&mut self, config: &BrokerConfig, listener: &Listener) -> anyhow::Result<()> {
        if listener.protocol.uses_tls() {
            let tls = listener.tls.clone().context("TLS is not configured")?;
            if tls.client().is_none() {
                bail!("connecting over TLS needs ssl.truststore_location (the CA that signed the brokers' certificates)");
            }
            self.tls = Some(tls);
        }
        if listener.protocol.uses_sasl() {
            let sasl = &config.sasl;
            let name = &sasl.inter_broker_mechanism;
            let mechanism = ClientMechanism::from_name(name).with_context(|| {
                format!("sasl.inter_broker_mechanism = {name:?}: brokers authenticate to each other with PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
            })?;
            if !sasl.enabled_mechanisms.contains(name) {
                bail!(
                    "sasl.inter_broker_mechanism = {name:?} must be one of sasl.enabled_mechanisms"
                );
            }
            let (Some(username), Some(password)) =
                (&sasl.inter_broker_username, &sasl.inter_broker_password)
            else {
                bail!("SASL needs sasl.inter_broker_username and sasl.inter_broker_password");
            };
            self.sasl = Some(SaslCredentials {
                mechanism,
                username: username.clone(),
                password: password.clone(),
            });
        }
        Ok(())
    }

    /// A connection to broker `broker` at `host:port`, authenticated; with the instant
    /// by which it must be dropped, when its SASL session ends (KIP-368).
    pub(super) async fn connect(
        &self,
        broker: i32,
        host: &str,
        port: u16,
    ) -> Result<Connection, CallError> {
        if let Some(why) = &self.unusable {
            return Err(CallError::NoLink(why.clone()));
        }
        let io = |e| CallError::Io(broker, e);
        let tcp = TcpStream::connect((host, port)).await.map_err(io)?;
        let _ = tcp.set_nodelay(true);
        let stream = match &self.tls {
            None => Stream::Plain(tcp),
            Some(tls) => {
                let config = tls.client().expect("checked when the link was made");
                let name = ServerName::try_from(host.to_string()).map_err(|e| {
                    CallError::Io(broker, io::Error::new(io::ErrorKind::InvalidInput, e))
                })?;
                Stream::Tls(Box::new(
                    TlsClientStream::connect(tcp, config, name)
                        .await
                        .map_err(io)?,
                ))
            }
        };
        let mut connection = Connection {
            stream,
            expires: None,
            correlation_id: 0,
        };
        if let Some(credentials) = &self.sasl {
            connection.expires = authenticate(&mut connection, broker, credentials).await?;
        }
        Ok(connection)
    }
}

/// SaslHandshake, then SaslAuthenticate until the exchange completes; when the session
/// ends, if it does.
async fn authenticate(
    connection: &mut Connection,
    broker: i32,
    credentials: &SaslCredentials,
) -> Result<Option<Instant>, CallError> {
    let refused = |why: String| CallError::Authentication(broker, why);
    let mechanism = credentials.mechanism.name();
    let handshake: SaslHandshakeResponse = connection
        .exchange(
            broker,
            ApiKey::SaslHandshake,
            1,
            &SaslHandshakeRequest {
                mechanism: mechanism.to_string(),
            },
            super::MAX_RESPONSE_BYTES,
        )
        .await?;
    if handshake.error_code != 0 {
        return Err(refused(format!(
            "{mechanism} is not enabled there (error {}; it offers {:?})",
            handshake.error_code, handshake.mechanisms
        )));
    }
    let started = Instant::now();
    let (mut exchange, mut message) = ClientExchange::start(credentials).map_err(refused)?;
    for _ in 0..MAX_SASL_ROUNDS {
        let answer: SaslAuthenticateResponse = connection
            .exchange(
                broker,
                ApiKey::SaslAuthenticate,
                2,
                &SaslAuthenticateRequest {
                    auth_bytes: Bytes::from(message),
                },
                super::MAX_RESPONSE_BYTES,
            )
            .await?;
        if answer.error_code != 0 {
            return Err(refused(
                answer
                    .error_message
                    .unwrap_or_else(|| format!("error {}", answer.error_code)),
            ));
        }
        match exchange.step(&answer.auth_bytes).map_err(refused)? {
            Some(next) => message = next,
            None => return Ok(session_end(started, answer.session_lifetime_ms)),
        }
    }
    Err(refused(format!(
        "{mechanism} did not complete in {MAX_SASL_ROUNDS} rounds"
    )))
}

/// When a connection whose session lasts `lifetime_ms` (0: no limit) must stop being
/// used: at 85 % of it, as Kafka's clients re-authenticate between 85 and 95 %; this
/// client opens a new connection instead.
fn session_end(started: Instant, lifetime_ms: i64) -> Option<Instant> {
    (lifetime_ms > 0).then(|| started + Duration::from_millis(lifetime_ms as u64 * 85 / 100))
}

/// Plaintext or TLS below the Kafka protocol.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsClientStream>),
}

/// A connection to another broker, ready for requests.
pub(super) struct Connection {
    stream: Stream,
    /// When its SASL session ends (it is then dropped rather than used).
    pub(super) expires: Option<Instant>,
    /// The last request's correlation id.
    pub(super) correlation_id: i32,
}

impl Connection {
    pub(super) fn usable(&self) -> bool {
        self.expires.is_none_or(|end| Instant::now() < end)
    }

    pub(super) async fn write_all(&mut self, chunks: Vec<Bytes>) -> io::Result<()> {
        match &mut self.stream {
            Stream::Plain(tcp) => {
                let BufResult(res, _) = tcp.write_vectored_all(chunks).await;
                res
            }
            Stream::Tls(tls) => tls.write_all(&chunks).await,
        }
    }

    pub(super) async fn read_exact(&mut self, len: usize) -> io::Result<Vec<u8>> {
        match &mut self.stream {
            Stream::Plain(tcp) => {
                let BufResult(res, buf) = tcp.read_exact(vec![0u8; len]).await;
                res.map(|_| buf)
            }
            Stream::Tls(tls) => {
                let mut buf = vec![0u8; len];
                tls.read_exact(&mut buf).await?;
                Ok(buf)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_left_before_they_end() {
        let t = Instant::now();
        assert_eq!(session_end(t, 0), None);
        assert_eq!(
            session_end(t, 10_000),
            Some(t + Duration::from_millis(8_500))
        );
    }
}
