//! SASL on SASL_PLAINTEXT and SASL_SSL listeners (KIP-43, KIP-152): SaslHandshake
//! then SaslAuthenticate (or, after a v0 handshake, bare tokens), mechanisms PLAIN,
//! SCRAM-SHA-256, SCRAM-SHA-512 and OAUTHBEARER (`oauth.rs`).
//!
//! Until a connection authenticated, only ApiVersions, SaslHandshake and
//! SaslAuthenticate are served; anything else closes it, as Kafka's
//! `SaslServerAuthenticator` does. A failed authentication is answered, then closed.
//!
//! Re-authentication (KIP-368): a session lasts `connections_max_reauth_ms` at most,
//! and no longer than its OAUTHBEARER token; SaslAuthenticate tells the client how long
//! (`session_lifetime_ms`). A client re-authenticates on the same connection with
//! SaslHandshake and SaslAuthenticate, with the same mechanism and as the same
//! principal; the session's end then moves. Past its end any other request closes the
//! connection. Requests already dispatched carry on with the principal they started
//! with.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use spate_net::messages::{RequestHeader, SaslAuthenticateResponse, SaslHandshakeResponse};
use spate_net::{ApiKey, ErrorCode, RequestBody};
use subtle::ConstantTimeEq;

use super::config::SaslConfig;
use super::oauth::{self, Validator};
use super::scram::{ScramCredential, ScramError, ScramMechanism, ScramStep, ServerExchange};
use super::{Principal, SaslStage, Session};
use crate::handlers::{frame, Dispatched};

/// Longest SASL/PLAIN token: two names and a password.
const MAX_PLAIN_TOKEN: usize = 64 * 1024;

/// Re-authentications on one connection are at least this far apart (Kafka's
/// `KafkaChannel`): a SaslHandshake sooner is answered as on a session without one.
const MIN_REAUTH_INTERVAL: Duration = Duration::from_secs(1);

/// Where SCRAM credentials come from (the metadata image).
pub type ScramCredentials<'a> = &'a dyn Fn(&str, ScramMechanism) -> Option<ScramCredential>;

/// What the connections of SASL listeners share.
pub struct SaslSettings {
    pub config: SaslConfig,
    /// OAUTHBEARER's token validator, when that mechanism is enabled.
    pub oauth: Option<Arc<Validator>>,
    /// `connections_max_reauth_ms` (0: sessions last as long as their credentials).
    pub max_reauth_ms: u64,
}

/// A re-authentication under way: what the session was authenticated as.
pub struct Reauthentication {
    mechanism: &'static str,
    principal: Principal,
}

/// The mechanism a connection chose in its handshake, with the state of its exchange.
pub enum Mechanism {
    Plain,
    Scram(ServerExchange),
    /// `refused`: the token was refused and the client told so (RFC 7628's error
    /// challenge); the exchange can only fail from there.
    OAuthBearer {
        refused: bool,
    },
}

impl Mechanism {
    fn for_name(name: &str) -> Option<Mechanism> {
        match name {
            "PLAIN" => Some(Mechanism::Plain),
            "OAUTHBEARER" => Some(Mechanism::OAuthBearer { refused: false }),
            other => {
                ScramMechanism::from_name(other).map(|m| Mechanism::Scram(ServerExchange::new(m)))
            }
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(x) => x.mechanism().name(),
            Mechanism::OAuthBearer { .. } => "OAUTHBEARER",
        }
    }
}

/// What the server answers to a token.
enum Step {
    /// More to exchange (SCRAM's server-first message, OAUTHBEARER's error).
    Challenge(Vec<u8>),
    /// Authenticated; `reply` is the last server token (may be empty), and the
    /// session lasts `lifetime_ms` (0: no limit, or none left).
    Complete { reply: Vec<u8>, lifetime_ms: i64 },
}

/// A mechanism's verdict on a token, before the session is updated.
enum Outcome {
    Challenge(Vec<u8>),
    /// Authenticated as `user`; `expires_ms`: when its credential expires (ms since
    /// the epoch), for OAUTHBEARER.
    Complete {
        user: String,
        reply: Vec<u8>,
        expires_ms: Option<u64>,
    },
}

/// On an authenticated connection whose session has an end: a SaslHandshake begins a
/// re-authentication, and past the end anything else closes the connection. `None`:
/// serve the frame as usual.
pub fn authenticated_session(
    session: &Session,
    frame_body: &Bytes,
    now: Instant,
) -> Option<Dispatched> {
    let expires = session.expires.get()?;
    let key = frame_body
        .get(..2)
        .and_then(|k| ApiKey::try_from(i16::from_be_bytes([k[0], k[1]])).ok());
    if key == Some(ApiKey::SaslHandshake) {
        let too_soon = session
            .last_reauth
            .get()
            .is_some_and(|t| now.saturating_duration_since(t) < MIN_REAUTH_INTERVAL);
        if !too_soon {
            let mechanism = session.mechanism.borrow().as_ref().map(Mechanism::name)?;
            session.last_reauth.set(Some(now));
            *session.reauth.borrow_mut() = Some(Reauthentication {
                mechanism,
                principal: session.principal(),
            });
            session.stage.set(SaslStage::Handshake);
            tracing::debug!(peer = %session.peer, listener = %session.listener.name, principal = %session.principal(), "SASL re-authentication begins");
            return before_authentication(session, frame_body.clone(), &|_, _| None);
        }
    }
    if now >= expires {
        tracing::info!(peer = %session.peer, listener = %session.listener.name, principal = %session.principal(), "SASL session expired without re-authentication; closing the connection");
        return Some(Dispatched::Close("SASL session expired"));
    }
    None
}

/// What to do with a frame on a connection that has not authenticated yet. `None`:
/// serve it as usual (an ApiVersions request).
pub fn before_authentication(
    session: &Session,
    mut frame_body: Bytes,
    credentials: ScramCredentials,
) -> Option<Dispatched> {
    let sasl = session.listener.sasl.as_deref()?;
    match session.stage() {
        SaslStage::Done => return None,
        SaslStage::RawToken => return Some(raw_token(session, sasl, &frame_body, credentials)),
        SaslStage::Handshake | SaslStage::Authenticate => {}
    }
    let Some(key) = frame_body
        .get(..2)
        .and_then(|k| ApiKey::try_from(i16::from_be_bytes([k[0], k[1]])).ok())
    else {
        return Some(Dispatched::Close(
            "unknown request during SASL authentication",
        ));
    };
    match (session.stage(), key) {
        (SaslStage::Handshake, ApiKey::ApiVersions) => return None,
        (SaslStage::Handshake, ApiKey::SaslHandshake)
        | (SaslStage::Authenticate, ApiKey::SaslAuthenticate) => {}
        _ => {
            return Some(Dispatched::Close(
                "unexpected request during SASL authentication",
            ))
        }
    }
    let Ok(header) = spate_net::decode_request_header(&mut frame_body) else {
        return Some(Dispatched::Close("malformed request header"));
    };
    let version = header.request_api_version;
    let (min, max) = key.valid_versions();
    if version < min || version > max {
        return Some(Dispatched::Close("unsupported SASL request version"));
    }
    match RequestBody::decode(header.request_api_key, version, &mut frame_body) {
        Ok(RequestBody::SaslHandshake(req)) => {
            Some(handshake(session, sasl, &header, req.mechanism))
        }
        Ok(RequestBody::SaslAuthenticate(req)) => Some(authenticate(
            session,
            sasl,
            &header,
            &req.auth_bytes,
            credentials,
        )),
        _ => Some(Dispatched::Close("malformed SASL request")),
    }
}

fn handshake(
    session: &Session,
    sasl: &SaslSettings,
    header: &RequestHeader,
    mechanism: String,
) -> Dispatched {
    let enabled = sasl.config.enabled_mechanisms.clone();
    let chosen = Mechanism::for_name(&mechanism).filter(|_| enabled.contains(&mechanism));
    let Some(chosen) = chosen else {
        tracing::info!(peer = %session.peer, listener = %session.listener.name, %mechanism, "SASL handshake with an unsupported mechanism");
        let body = SaslHandshakeResponse {
            error_code: ErrorCode::UnsupportedSaslMechanism.code(),
            mechanisms: enabled,
        };
        return Dispatched::RespondAndClose(frame(header, &body), "unsupported SASL mechanism");
    };
    // v0: bare tokens follow; v1: SaslAuthenticate requests.
    session.stage.set(if header.request_api_version == 0 {
        SaslStage::RawToken
    } else {
        SaslStage::Authenticate
    });
    *session.mechanism.borrow_mut() = Some(chosen);
    let body = SaslHandshakeResponse {
        error_code: 0,
        mechanisms: enabled,
    };
    Dispatched::Respond(frame(header, &body))
}

fn authenticate(
    session: &Session,
    sasl: &SaslSettings,
    header: &RequestHeader,
    token: &[u8],
    credentials: ScramCredentials,
) -> Dispatched {
    let respond = |error_code: i16,
                   error_message: Option<String>,
                   auth_bytes: Vec<u8>,
                   session_lifetime_ms: i64| {
        frame(
            header,
            &SaslAuthenticateResponse {
                error_code,
                error_message,
                auth_bytes: Bytes::from(auth_bytes),
                session_lifetime_ms,
            },
        )
    };
    match run_mechanism(session, sasl, token, credentials) {
        Ok(Step::Challenge(reply)) => Dispatched::Respond(respond(0, None, reply, 0)),
        Ok(Step::Complete { reply, lifetime_ms }) => {
            Dispatched::Respond(respond(0, None, reply, lifetime_ms))
        }
        Err(message) => Dispatched::RespondAndClose(
            respond(
                ErrorCode::SaslAuthenticationFailed.code(),
                Some(message),
                Vec::new(),
                0,
            ),
            "SASL authentication failed",
        ),
    }
}

/// A bare token after a v0 handshake, answered by a bare token (size-prefixed, empty
/// when there is nothing to say); a failure closes the connection, which is all the
/// old form can say.
fn raw_token(
    session: &Session,
    sasl: &SaslSettings,
    token: &[u8],
    credentials: ScramCredentials,
) -> Dispatched {
    match run_mechanism(session, sasl, token, credentials) {
        Ok(Step::Challenge(reply) | Step::Complete { reply, .. }) => {
            // Tokens are far below 4 GiB (their frames are held to 512 KiB).
            let size = u32::try_from(reply.len()).unwrap_or(u32::MAX);
            Dispatched::Respond(vec![
                Bytes::copy_from_slice(&size.to_be_bytes()),
                Bytes::from(reply),
            ])
        }
        Err(_) => Dispatched::Close("SASL authentication failed"),
    }
}

/// Run the chosen mechanism on a client's token; once it completes, the session is
/// authenticated as its user (the same one when re-authenticating) until the end of
/// its new lifetime. `Err` is the message the client is given.
fn run_mechanism(
    session: &Session,
    sasl: &SaslSettings,
    token: &[u8],
    credentials: ScramCredentials,
) -> Result<Step, String> {
    let mut chosen = session.mechanism.borrow_mut();
    // The dispatch accepts tokens only after a handshake chose a mechanism.
    let Some(mechanism) = chosen.as_mut() else {
        return Err("SASL authentication before a handshake".to_string());
    };
    let name = mechanism.name();
    let reauth = session.reauth.borrow();
    let during = if reauth.is_some() {
        "re-authentication"
    } else {
        "authentication"
    };
    let outcome = match reauth.as_ref() {
        Some(r) if r.mechanism != name => {
            let message = format!("SASL mechanism '{name}' requested by client is not supported for re-authentication of mechanism '{}'", r.mechanism);
            Err(Failure {
                reason: message.clone(),
                message,
            })
        }
        _ => evaluate(mechanism, sasl, token, credentials, during),
    };
    let outcome = match (outcome, reauth.as_ref()) {
        (Ok(Outcome::Complete { user, .. }), Some(r)) if Principal::user(&user) != r.principal => {
            let message = format!(
                "Cannot change principals during re-authentication from {}: {}",
                r.principal.to_string().replacen(':', ".", 1),
                Principal::user(&user).to_string().replacen(':', ".", 1)
            );
            Err(Failure {
                reason: message.clone(),
                message,
            })
        }
        (outcome, _) => outcome,
    };
    drop(reauth);
    match outcome {
        Ok(Outcome::Complete {
            user,
            reply,
            expires_ms,
        }) => {
            let lifetime = session_lifetime_ms(sasl.max_reauth_ms, expires_ms, oauth::now_ms());
            tracing::debug!(peer = %session.peer, listener = %session.listener.name, %user, mechanism = name, during, lifetime_ms = ?lifetime, "SASL authenticated");
            session.set_principal(Principal::user(&user));
            session.stage.set(SaslStage::Done);
            *session.reauth.borrow_mut() = None;
            session
                .expires
                .set(lifetime.map(|ms| Instant::now() + Duration::from_millis(ms)));
            Ok(Step::Complete {
                reply,
                lifetime_ms: lifetime.map_or(0, |ms| i64::try_from(ms).unwrap_or(i64::MAX)),
            })
        }
        Ok(Outcome::Challenge(reply)) => Ok(Step::Challenge(reply)),
        Err(Failure { message, reason }) => {
            tracing::info!(peer = %session.peer, listener = %session.listener.name, mechanism = name, during, %reason, "SASL authentication failed");
            Err(message)
        }
    }
}

/// How long a session lasts (KIP-368, as Kafka's `SaslServerAuthenticator`): the
/// shorter of `connections_max_reauth_ms` (when not 0) and what is left of the
/// credential's lifetime (OAUTHBEARER), never negative. `None`: neither applies, the
/// session lasts as long as the connection.
fn session_lifetime_ms(max_reauth_ms: u64, expires_ms: Option<u64>, now_ms: u64) -> Option<u64> {
    let max = (max_reauth_ms > 0).then_some(max_reauth_ms);
    let left = expires_ms.map(|e| e.saturating_sub(now_ms));
    match (max, left) {
        (Some(m), Some(l)) => Some(m.min(l)),
        (m, l) => m.or(l),
    }
}

/// One step of the mechanism's exchange.
fn evaluate(
    mechanism: &mut Mechanism,
    sasl: &SaslSettings,
    token: &[u8],
    credentials: ScramCredentials,
    during: &str,
) -> Result<Outcome, Failure> {
    let name = mechanism.name();
    match mechanism {
        Mechanism::Plain => match plain(&sasl.config, token) {
            Ok(user) => Ok(Outcome::Complete {
                user,
                reply: Vec::new(),
                expires_ms: None,
            }),
            Err(message) => Err(Failure {
                reason: message.clone(),
                message,
            }),
        },
        Mechanism::Scram(exchange) => {
            let m = exchange.mechanism();
            match exchange.evaluate(token, |user| credentials(user, m)) {
                Ok(ScramStep::Challenge(reply)) => Ok(Outcome::Challenge(reply)),
                Ok(ScramStep::Complete { user, reply }) => Ok(Outcome::Complete {
                    user,
                    reply,
                    expires_ms: None,
                }),
                Err(e) => Err(scram_failure(name, during, e)),
            }
        }
        Mechanism::OAuthBearer { refused } => oauthbearer(sasl, refused, token, during),
    }
}

/// SASL/OAUTHBEARER (RFC 7628). A token that does not validate is answered with the
/// error challenge `{"status":"invalid_token"}`; the client's next message (RFC 7628's
/// `\x01`) then fails with that as the message, as with Kafka's `OAuthBearerSaslServer`.
/// A malformed message fails at once with Kafka's generic message.
fn oauthbearer(
    sasl: &SaslSettings,
    refused: &mut bool,
    message: &[u8],
    during: &str,
) -> Result<Outcome, Failure> {
    if *refused {
        return Err(Failure {
            message: oauth::INVALID_TOKEN_REPLY.to_string(),
            reason: "the client's token was refused".to_string(),
        });
    }
    let generic = |reason: String| {
        Failure {
        message: format!("Authentication failed during {during} due to invalid credentials with SASL mechanism OAUTHBEARER"),
        reason,
    }
    };
    let response = oauth::parse_initial_response(message)
        .map_err(|e| generic(format!("invalid OAUTHBEARER client first message: {e}")))?;
    // (The listener has a validator whenever OAUTHBEARER can be chosen.)
    let Some(validator) = &sasl.oauth else {
        return Err(generic("OAUTHBEARER is not configured".to_string()));
    };
    let token = match validator.validate(response.token) {
        Ok(t) => t,
        Err(reason) => {
            tracing::info!(%reason, "OAUTHBEARER token refused");
            *refused = true;
            return Ok(Outcome::Challenge(
                oauth::INVALID_TOKEN_REPLY.as_bytes().to_vec(),
            ));
        }
    };
    if !response.authzid.is_empty() && response.authzid != token.subject {
        let message = format!("Authentication failed: Client requested an authorization id ({}) that is different from the token's principal name ({})", response.authzid, token.subject);
        return Err(Failure {
            reason: message.clone(),
            message,
        });
    }
    tracing::debug!(subject = %token.subject, scopes = ?token.scopes, extensions = response.extensions.len(), "OAUTHBEARER token valid");
    Ok(Outcome::Complete {
        user: token.subject,
        reply: Vec::new(),
        expires_ms: Some(token.expires_ms),
    })
}

/// A failed authentication: what the client is told, and what is logged.
struct Failure {
    message: String,
    reason: String,
}

/// A failed SCRAM exchange: the client gets Kafka's generic message (it does not say
/// whether the user exists), except for an authorization id mismatch.
fn scram_failure(mechanism: &str, during: &str, e: ScramError) -> Failure {
    match e {
        ScramError::Credentials(reason) => Failure {
            message: format!("Authentication failed during {during} due to invalid credentials with SASL mechanism {mechanism}"),
            reason,
        },
        ScramError::Authorization => Failure {
            message: super::scram::AUTHORIZATION_ID_MESSAGE.to_string(),
            reason: super::scram::AUTHORIZATION_ID_MESSAGE.to_string(),
        },
    }
}

/// SASL/PLAIN (RFC 4616): `authzid NUL authcid NUL passwd`, checked against
/// `[sasl.plain.users]`, with the messages of Kafka's `PlainSaslServer`.
fn plain(sasl: &SaslConfig, token: &[u8]) -> Result<String, String> {
    if token.len() > MAX_PLAIN_TOKEN {
        return Err("Invalid SASL/PLAIN response: token too long".to_string());
    }
    let text = std::str::from_utf8(token)
        .map_err(|_| "Invalid SASL/PLAIN response: not UTF-8".to_string())?;
    let parts: Vec<&str> = text.split('\0').collect();
    let [authzid, user, password] = parts[..] else {
        return Err(format!(
            "Invalid SASL/PLAIN response: expected 3 tokens, got {}",
            parts.len()
        ));
    };
    if user.is_empty() {
        return Err("Authentication failed: username not specified".to_string());
    }
    if password.is_empty() {
        return Err("Authentication failed: password not specified".to_string());
    }
    let known = sasl.plain.users.get(user);
    if !known.is_some_and(|expected| same_secret(expected.as_bytes(), password.as_bytes())) {
        return Err("Authentication failed: Invalid username or password".to_string());
    }
    if !authzid.is_empty() && authzid != user {
        return Err(
            "Authentication failed: Client requested an authorization id that is different from username"
                .to_string(),
        );
    }
    Ok(user.to_string())
}

/// Compare secrets in time that depends on their length only.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
}

/// SaslHandshake or SaslAuthenticate on a connection that needs none or already
/// authenticated: ILLEGAL_SASL_STATE, as Kafka's request handler answers.
pub fn after_authentication(header: &RequestHeader, key: ApiKey) -> Vec<Bytes> {
    let code = ErrorCode::IllegalSaslState.code();
    if key == ApiKey::SaslHandshake {
        frame(
            header,
            &SaslHandshakeResponse {
                error_code: code,
                mechanisms: Vec::new(),
            },
        )
    } else {
        frame(
            header,
            &SaslAuthenticateResponse {
                error_code: code,
                error_message: Some(
                    "SaslAuthenticate request received after successful authentication".to_string(),
                ),
                auth_bytes: Bytes::new(),
                session_lifetime_ms: 0,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::listeners::SecurityProtocol;
    use crate::security::oauth::tests::{claims, jwks, TestKey};
    use crate::security::Listener;
    use spate_net::messages::{
        ApiVersionsRequest, MetadataRequest, SaslAuthenticateRequest, SaslHandshakeRequest,
    };
    use spate_net::Message;

    /// A frame before authentication, with no SCRAM credentials.
    fn before(s: &Session, frame: Bytes) -> Option<Dispatched> {
        before_authentication(s, frame, &|_, _| None)
    }

    fn session() -> Session {
        session_with(settings())
    }

    fn settings() -> SaslSettings {
        SaslSettings {
            config: config(),
            oauth: None,
            max_reauth_ms: 0,
        }
    }

    fn session_with(settings: SaslSettings) -> Session {
        let listener = Arc::new(Listener {
            name: "SASL_PLAINTEXT".to_string(),
            protocol: SecurityProtocol::SaslPlaintext,
            bind: "127.0.0.1:9092".parse().unwrap(),
            advertised: ("h".to_string(), 9092),
            tls: None,
            mapper: None,
            sasl: Some(Arc::new(settings)),
            registered: true,
        });
        Session::new("127.0.0.1:5555".parse().unwrap(), listener)
    }

    /// A request frame without its size prefix, as the dispatch gets it.
    fn request<M: Message>(key: ApiKey, version: i16, body: &M) -> Bytes {
        let header = RequestHeader {
            request_api_key: key.key(),
            request_api_version: version,
            correlation_id: 3,
            client_id: Some("test".to_string()),
        };
        let chunks = spate_net::encode_request_frame(&header, body, version);
        let all: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        Bytes::from(all).slice(4..)
    }

    /// The body of a response frame (size prefix, correlation id and, for flexible
    /// headers, an empty tag buffer skipped).
    fn response<M: Message>(chunks: &[Bytes], version: i16, flexible: bool) -> M {
        let all: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let mut body = Bytes::from(all).slice(if flexible { 9 } else { 8 }..);
        M::decode(&mut body, version).unwrap()
    }

    fn handshake_request(mechanism: &str, version: i16) -> Bytes {
        let body = SaslHandshakeRequest {
            mechanism: mechanism.to_string(),
        };
        request(ApiKey::SaslHandshake, version, &body)
    }

    fn authenticate_request(token: &[u8]) -> Bytes {
        let body = SaslAuthenticateRequest {
            auth_bytes: Bytes::copy_from_slice(token),
        };
        request(ApiKey::SaslAuthenticate, 2, &body)
    }

    #[test]
    fn only_api_versions_and_sasl_before_authentication() {
        let s = session();
        assert_eq!(
            s.max_frame(100 << 20),
            crate::security::UNAUTHENTICATED_MAX_FRAME
        );
        let versions = request(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        assert!(before(&s, versions.clone()).is_none());
        let metadata = request(ApiKey::Metadata, 12, &MetadataRequest::default());
        assert!(matches!(before(&s, metadata), Some(Dispatched::Close(_))));
        // A SaslAuthenticate before the handshake closes too.
        let auth = authenticate_request(b"\0alice\0secret");
        assert!(matches!(before(&s, auth), Some(Dispatched::Close(_))));
        assert_eq!(s.stage(), SaslStage::Handshake);
    }

    #[test]
    fn unsupported_mechanism_lists_the_enabled_ones() {
        let s = session();
        let Some(Dispatched::RespondAndClose(chunks, _)) =
            before(&s, handshake_request("SCRAM-SHA-512", 1))
        else {
            panic!("expected an answer and a close");
        };
        let r: SaslHandshakeResponse = response(&chunks, 1, false);
        assert_eq!(r.error_code, ErrorCode::UnsupportedSaslMechanism.code());
        assert_eq!(
            r.mechanisms,
            vec!["PLAIN".to_string(), "SCRAM-SHA-256".to_string()]
        );
    }

    #[test]
    fn handshake_then_authenticate() {
        let s = session();
        let Some(Dispatched::Respond(chunks)) = before(&s, handshake_request("PLAIN", 1)) else {
            panic!("expected an answer");
        };
        let r: SaslHandshakeResponse = response(&chunks, 1, false);
        assert_eq!(r.error_code, 0);
        assert_eq!(s.stage(), SaslStage::Authenticate);
        // ApiVersions is over once the handshake is done.
        let versions = request(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        assert!(matches!(before(&s, versions), Some(Dispatched::Close(_))));
    }

    #[test]
    fn good_and_bad_passwords() {
        let s = session();
        before(&s, handshake_request("PLAIN", 1));
        let Some(Dispatched::RespondAndClose(chunks, _)) =
            before(&s, authenticate_request(b"\0alice\0wrong"))
        else {
            panic!("expected an answer and a close");
        };
        let r: SaslAuthenticateResponse = response(&chunks, 2, true);
        assert_eq!(r.error_code, ErrorCode::SaslAuthenticationFailed.code());
        assert_eq!(
            r.error_message.as_deref(),
            Some("Authentication failed: Invalid username or password")
        );
        assert_eq!(s.principal(), Principal::anonymous());

        let s = session();
        before(&s, handshake_request("PLAIN", 1));
        let Some(Dispatched::Respond(chunks)) =
            before(&s, authenticate_request(b"\0alice\0secret"))
        else {
            panic!("expected an answer");
        };
        let r: SaslAuthenticateResponse = response(&chunks, 2, true);
        assert_eq!((r.error_code, r.session_lifetime_ms), (0, 0));
        assert!(s.authenticated());
        assert_eq!(s.principal().to_string(), "User:alice");
        // The frame limit for unauthenticated clients is lifted.
        assert_eq!(s.max_frame(100 << 20), 100 << 20);
        let metadata = request(ApiKey::Metadata, 12, &MetadataRequest::default());
        assert!(before(&s, metadata).is_none());
    }

    #[test]
    fn v0_handshake_takes_a_bare_token() {
        let s = session();
        before(&s, handshake_request("PLAIN", 0));
        assert_eq!(s.stage(), SaslStage::RawToken);
        let Some(Dispatched::Respond(chunks)) = before(&s, Bytes::from_static(b"\0alice\0secret"))
        else {
            panic!("expected an answer");
        };
        assert_eq!(chunks.concat(), [0, 0, 0, 0]);
        assert!(s.authenticated());
        let s = session();
        before(&s, handshake_request("PLAIN", 0));
        let bad = before(&s, Bytes::from_static(b"\0alice\0nope"));
        assert!(matches!(bad, Some(Dispatched::Close(_))));
    }

    #[test]
    fn scram_exchange_through_the_dispatch() {
        use crate::security::scram::ScramCredential;
        let s = session();
        // Client side of RFC 7677's example, with the server's random nonce.
        let salt = b"0123456789abcdef".to_vec();
        let mut salted = [0u8; 32];
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            std::num::NonZeroU32::new(4096).unwrap(),
            &salt,
            b"pencil",
            &mut salted,
        );
        let credential =
            ScramCredential::from_salted_password(ScramMechanism::Sha256, &salt, &salted, 4096);
        let lookup = |user: &str, m| {
            (user == "user" && m == ScramMechanism::Sha256).then(|| credential.clone())
        };
        let Some(Dispatched::Respond(_)) =
            before_authentication(&s, handshake_request("SCRAM-SHA-256", 1), &lookup)
        else {
            panic!("expected an answer");
        };
        let first = request(
            ApiKey::SaslAuthenticate,
            2,
            &SaslAuthenticateRequest {
                auth_bytes: Bytes::from_static(b"n,,n=user,r=abc"),
            },
        );
        let Some(Dispatched::Respond(chunks)) = before_authentication(&s, first, &lookup) else {
            panic!("expected the server-first message");
        };
        let r: SaslAuthenticateResponse = response(&chunks, 2, true);
        let server_first = String::from_utf8(r.auth_bytes.to_vec()).unwrap();
        assert!(server_first.starts_with("r=abc"), "{server_first}");
        assert_eq!(s.stage(), SaslStage::Authenticate);
        assert!(!s.authenticated());
        // A wrong proof: Kafka's generic message, then a close.
        let nonce = &server_first[2..server_first.find(',').unwrap()];
        let last = format!(
            "c=biws,r={nonce},p={}",
            super::super::base64::encode(&[0; 32])
        );
        let last = request(
            ApiKey::SaslAuthenticate,
            2,
            &SaslAuthenticateRequest {
                auth_bytes: Bytes::from(last),
            },
        );
        let Some(Dispatched::RespondAndClose(chunks, _)) = before_authentication(&s, last, &lookup)
        else {
            panic!("expected a refusal");
        };
        let r: SaslAuthenticateResponse = response(&chunks, 2, true);
        assert_eq!(r.error_code, ErrorCode::SaslAuthenticationFailed.code());
        assert_eq!(
            r.error_message.as_deref(),
            Some("Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-256")
        );
        assert_eq!(s.principal(), Principal::anonymous());
    }

    fn config() -> SaslConfig {
        SaslConfig {
            enabled_mechanisms: vec!["PLAIN".to_string(), "SCRAM-SHA-256".to_string()],
            inter_broker_mechanism: "PLAIN".to_string(),
            inter_broker_username: None,
            inter_broker_password: None,
            plain: super::super::config::PlainConfig {
                users: [
                    ("alice".to_string(), "secret".to_string()),
                    ("bob".to_string(), "bobs".to_string()),
                ]
                .into(),
            },
            oauthbearer: super::super::oauth::tests::config(std::path::Path::new("unused")),
            bootstrap_scram: Vec::new(),
        }
    }

    /// Handshake and authenticate; the SaslAuthenticate response.
    fn authenticate_as(s: &Session, mechanism: &str, token: &[u8]) -> SaslAuthenticateResponse {
        let Some(Dispatched::Respond(_)) = before(s, handshake_request(mechanism, 1)) else {
            panic!("expected a handshake answer");
        };
        match before(s, authenticate_request(token)) {
            Some(Dispatched::Respond(c) | Dispatched::RespondAndClose(c, _)) => {
                response(&c, 2, true)
            }
            _ => panic!("expected an answer"),
        }
    }

    fn oauth_session(max_reauth_ms: u64) -> (tempfile::TempDir, TestKey, Session) {
        let key = TestKey::new("k");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, jwks(&[&key])).unwrap();
        let mut config = config();
        config.enabled_mechanisms.push("OAUTHBEARER".to_string());
        config.oauthbearer = super::super::oauth::tests::config(&path);
        let validator = Validator::new(&config.oauthbearer).unwrap();
        let s = session_with(SaslSettings {
            config,
            oauth: Some(Arc::new(validator)),
            max_reauth_ms,
        });
        (dir, key, s)
    }

    fn bearer(token: &str) -> Vec<u8> {
        format!("n,,\x01auth=Bearer {token}\x01\x01").into_bytes()
    }

    #[test]
    fn oauthbearer_tokens() {
        // No connections_max_reauth_ms: the session lasts as long as the token.
        let (_dir, key, s) = oauth_session(0);
        let r = authenticate_as(&s, "OAUTHBEARER", &bearer(&key.sign(&claims("alice", 120))));
        assert_eq!(r.error_code, 0);
        assert!(
            (110_000..=120_000).contains(&r.session_lifetime_ms),
            "{}",
            r.session_lifetime_ms
        );
        assert_eq!(s.principal().to_string(), "User:alice");
        assert!(s.authenticated());

        // A refused token: RFC 7628's error challenge, then the failure.
        let (_dir, key, s) = oauth_session(0);
        let expired = key.sign(&claims("alice", -300));
        let r = authenticate_as(&s, "OAUTHBEARER", &bearer(&expired));
        assert_eq!(r.error_code, 0);
        assert_eq!(&r.auth_bytes[..], br#"{"status":"invalid_token"}"#);
        assert!(!s.authenticated());
        let Some(Dispatched::RespondAndClose(chunks, _)) =
            before(&s, authenticate_request(b"\x01"))
        else {
            panic!("expected a refusal");
        };
        let r: SaslAuthenticateResponse = response(&chunks, 2, true);
        assert_eq!(r.error_code, ErrorCode::SaslAuthenticationFailed.code());
        assert_eq!(
            r.error_message.as_deref(),
            Some(r#"{"status":"invalid_token"}"#)
        );
        assert_eq!(s.principal(), Principal::anonymous());

        // A malformed message fails at once.
        let (_dir, _key, s) = oauth_session(0);
        let r = authenticate_as(&s, "OAUTHBEARER", b"n,,\x01auth=Bearer\x01\x01");
        assert_eq!(r.error_code, ErrorCode::SaslAuthenticationFailed.code());
        assert_eq!(r.error_message.as_deref(), Some("Authentication failed during authentication due to invalid credentials with SASL mechanism OAUTHBEARER"));
        let (_dir, _key, s) = oauth_session(0);
        let r = authenticate_as(&s, "OAUTHBEARER", &vec![b'n'; 600 * 1024][..64 * 1024 + 1]);
        assert_eq!(r.error_code, ErrorCode::SaslAuthenticationFailed.code());

        // An authorization id that is not the token's subject.
        let (_dir, key, s) = oauth_session(0);
        let token = key.sign(&claims("alice", 120));
        let r = authenticate_as(
            &s,
            "OAUTHBEARER",
            format!("n,a=bob,\x01auth=Bearer {token}\x01\x01").as_bytes(),
        );
        assert_eq!(r.error_code, ErrorCode::SaslAuthenticationFailed.code());
        assert!(r.error_message.unwrap().contains("authorization id (bob)"));
    }

    #[test]
    fn lifetimes() {
        assert_eq!(session_lifetime_ms(0, None, 1000), None);
        assert_eq!(session_lifetime_ms(500, None, 1000), Some(500));
        assert_eq!(session_lifetime_ms(0, Some(3000), 1000), Some(2000));
        assert_eq!(session_lifetime_ms(500, Some(3000), 1000), Some(500));
        assert_eq!(session_lifetime_ms(5000, Some(3000), 1000), Some(2000));
        assert_eq!(session_lifetime_ms(5000, Some(900), 1000), Some(0));
    }

    /// A re-authentication with `mechanism` and `token` at `at` that the broker refuses
    /// (answered, then closed): its answer.
    fn refused_reauthentication(
        s: &Session,
        mechanism: &str,
        token: &[u8],
        at: Instant,
    ) -> SaslAuthenticateResponse {
        let Some(Dispatched::Respond(_)) =
            authenticated_session(s, &handshake_request(mechanism, 1), at)
        else {
            panic!("expected a handshake answer");
        };
        let Some(Dispatched::RespondAndClose(c, _)) = before(s, authenticate_request(token)) else {
            panic!("expected a refusal");
        };
        response(&c, 2, true)
    }

    #[test]
    fn reauthentication() {
        let metadata = || request(ApiKey::Metadata, 12, &MetadataRequest::default());
        let s = session_with(SaslSettings {
            max_reauth_ms: 1000,
            ..settings()
        });
        let r = authenticate_as(&s, "PLAIN", b"\0alice\0secret");
        assert_eq!((r.error_code, r.session_lifetime_ms), (0, 1000));
        let t0 = Instant::now();
        // Within the session: served as usual; SaslAuthenticate alone is out of place.
        assert!(authenticated_session(&s, &metadata(), t0).is_none());
        assert!(authenticated_session(&s, &authenticate_request(b"x"), t0).is_none());
        // Past its end: closed.
        let late = t0 + Duration::from_millis(1500);
        assert!(matches!(
            authenticated_session(&s, &metadata(), late),
            Some(Dispatched::Close(_))
        ));
        // A re-authentication as the same user moves the end.
        let Some(Dispatched::Respond(_)) =
            authenticated_session(&s, &handshake_request("PLAIN", 1), late)
        else {
            panic!("expected a handshake answer");
        };
        // The principal stays until it completes.
        assert!(!s.authenticated());
        assert_eq!(s.principal().to_string(), "User:alice");
        let Some(Dispatched::Respond(c)) = before(&s, authenticate_request(b"\0alice\0secret"))
        else {
            panic!("expected an answer");
        };
        let r: SaslAuthenticateResponse = response(&c, 2, true);
        assert_eq!((r.error_code, r.session_lifetime_ms), (0, 1000));
        assert!(s.authenticated());
        assert!(authenticated_session(&s, &metadata(), Instant::now()).is_none());
        // Another handshake within a second of the last: not a re-authentication (the
        // dispatch answers ILLEGAL_SASL_STATE).
        assert!(
            authenticated_session(&s, &handshake_request("PLAIN", 1), Instant::now()).is_none()
        );

        // As another user: refused, and closed.
        let later = late + Duration::from_secs(2);
        let r = refused_reauthentication(&s, "PLAIN", b"\0bob\0bobs", later);
        assert_eq!(r.error_code, ErrorCode::SaslAuthenticationFailed.code());
        assert_eq!(
            r.error_message.as_deref(),
            Some("Cannot change principals during re-authentication from User.alice: User.bob")
        );

        // With another mechanism: refused.
        let s = session_with(SaslSettings {
            max_reauth_ms: 1000,
            ..settings()
        });
        authenticate_as(&s, "PLAIN", b"\0alice\0secret");
        let r = refused_reauthentication(&s, "SCRAM-SHA-256", b"n,,n=alice,r=abc", late);
        assert_eq!(r.error_message.as_deref(), Some("SASL mechanism 'SCRAM-SHA-256' requested by client is not supported for re-authentication of mechanism 'PLAIN'"));

        // Without a session lifetime there is no re-authentication.
        let s = session();
        authenticate_as(&s, "PLAIN", b"\0alice\0secret");
        assert!(authenticated_session(&s, &handshake_request("PLAIN", 1), late).is_none());
        assert!(authenticated_session(&s, &metadata(), t0 + Duration::from_secs(3600)).is_none());
    }

    #[test]
    fn plain_tokens() {
        let c = config();
        assert_eq!(plain(&c, b"\0alice\0secret"), Ok("alice".to_string()));
        assert_eq!(plain(&c, b"alice\0alice\0secret"), Ok("alice".to_string()));
        assert_eq!(
            plain(&c, b"\0alice\0wrong").unwrap_err(),
            "Authentication failed: Invalid username or password"
        );
        assert_eq!(
            plain(&c, b"\0bob\0secret").unwrap_err(),
            "Authentication failed: Invalid username or password"
        );
        assert_eq!(
            plain(&c, b"alice\0secret").unwrap_err(),
            "Invalid SASL/PLAIN response: expected 3 tokens, got 2"
        );
        assert!(plain(&c, b"bob\0alice\0secret")
            .unwrap_err()
            .contains("authorization id"));
        assert!(plain(&c, b"\0\0secret")
            .unwrap_err()
            .contains("username not specified"));
        assert!(plain(&c, &[0xff, 0, 0]).is_err());
    }
}
