//! SASL on SASL_PLAINTEXT and SASL_SSL listeners (KIP-43, KIP-152): SaslHandshake
//! then SaslAuthenticate (or, after a v0 handshake, bare tokens), mechanisms PLAIN,
//! SCRAM-SHA-256 and SCRAM-SHA-512.
//!
//! Until a connection authenticated, only ApiVersions, SaslHandshake and
//! SaslAuthenticate are served; anything else closes it, as Kafka's
//! `SaslServerAuthenticator` does. A failed authentication is answered, then closed.

use bytes::Bytes;
use spate_net::messages::{RequestHeader, SaslAuthenticateResponse, SaslHandshakeResponse};
use spate_net::{ApiKey, ErrorCode, RequestBody};
use subtle::ConstantTimeEq;

use super::config::SaslConfig;
use super::scram::{ScramCredential, ScramError, ScramMechanism, ScramStep, ServerExchange};
use super::{Principal, SaslStage, Session};
use crate::handlers::{frame, Dispatched};

/// Longest SASL/PLAIN token: two names and a password.
const MAX_PLAIN_TOKEN: usize = 64 * 1024;

/// Where SCRAM credentials come from (the metadata image).
pub type ScramCredentials<'a> = &'a dyn Fn(&str, ScramMechanism) -> Option<ScramCredential>;

/// The mechanism a connection chose in its handshake, with the state of its exchange.
pub enum Mechanism {
    Plain,
    Scram(ServerExchange),
}

impl Mechanism {
    fn for_name(name: &str) -> Option<Mechanism> {
        match name {
            "PLAIN" => Some(Mechanism::Plain),
            other => {
                ScramMechanism::from_name(other).map(|m| Mechanism::Scram(ServerExchange::new(m)))
            }
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Scram(x) => x.mechanism().name(),
        }
    }
}

/// What the server answers to a token.
enum Step {
    /// More to exchange (SCRAM's server-first message).
    Challenge(Vec<u8>),
    /// Authenticated as `user`; `reply` is the last server token (may be empty).
    Complete { user: String, reply: Vec<u8> },
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
    sasl: &SaslConfig,
    header: &RequestHeader,
    mechanism: String,
) -> Dispatched {
    let enabled = sasl.enabled_mechanisms.clone();
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
    sasl: &SaslConfig,
    header: &RequestHeader,
    token: &[u8],
    credentials: ScramCredentials,
) -> Dispatched {
    let respond = |error_code: i16, error_message: Option<String>, auth_bytes: Vec<u8>| {
        frame(
            header,
            &SaslAuthenticateResponse {
                error_code,
                error_message,
                auth_bytes: Bytes::from(auth_bytes),
                // Re-authentication (KIP-368) is not offered yet.
                session_lifetime_ms: 0,
            },
        )
    };
    match run_mechanism(session, sasl, token, credentials) {
        Ok(Step::Challenge(reply) | Step::Complete { reply, .. }) => {
            Dispatched::Respond(respond(0, None, reply))
        }
        Err(message) => Dispatched::RespondAndClose(
            respond(
                ErrorCode::SaslAuthenticationFailed.code(),
                Some(message),
                Vec::new(),
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
    sasl: &SaslConfig,
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
/// authenticated as its user. `Err` is the message the client is given.
fn run_mechanism(
    session: &Session,
    sasl: &SaslConfig,
    token: &[u8],
    credentials: ScramCredentials,
) -> Result<Step, String> {
    let mut chosen = session.mechanism.borrow_mut();
    // The dispatch accepts tokens only after a handshake chose a mechanism.
    let Some(mechanism) = chosen.as_mut() else {
        return Err("SASL authentication before a handshake".to_string());
    };
    let name = mechanism.name();
    let outcome = match mechanism {
        Mechanism::Plain => match plain(sasl, token) {
            Ok(user) => Ok(Step::Complete {
                user,
                reply: Vec::new(),
            }),
            Err(message) => Err(Failure {
                reason: message.clone(),
                message,
            }),
        },
        Mechanism::Scram(exchange) => {
            let m = exchange.mechanism();
            match exchange.evaluate(token, |user| credentials(user, m)) {
                Ok(ScramStep::Challenge(reply)) => Ok(Step::Challenge(reply)),
                Ok(ScramStep::Complete { user, reply }) => Ok(Step::Complete { user, reply }),
                Err(e) => Err(scram_failure(name, e)),
            }
        }
    };
    match outcome {
        Ok(Step::Complete { user, reply }) => {
            tracing::debug!(peer = %session.peer, listener = %session.listener.name, %user, mechanism = name, "SASL authenticated");
            session.set_principal(Principal::user(&user));
            session.stage.set(SaslStage::Done);
            Ok(Step::Complete { user, reply })
        }
        Ok(challenge) => Ok(challenge),
        Err(Failure { message, reason }) => {
            tracing::info!(peer = %session.peer, listener = %session.listener.name, mechanism = name, %reason, "SASL authentication failed");
            Err(message)
        }
    }
}

/// A failed authentication: what the client is told, and what is logged.
struct Failure {
    message: String,
    reason: String,
}

/// A failed SCRAM exchange: the client gets Kafka's generic message (it does not say
/// whether the user exists), except for an authorization id mismatch.
fn scram_failure(mechanism: &str, e: ScramError) -> Failure {
    match e {
        ScramError::Credentials(reason) => Failure {
            message: format!("Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"),
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
    use crate::security::Listener;
    use spate_net::messages::{
        ApiVersionsRequest, MetadataRequest, SaslAuthenticateRequest, SaslHandshakeRequest,
    };
    use spate_net::Message;
    use std::sync::Arc;

    /// A frame before authentication, with no SCRAM credentials.
    fn before(s: &Session, frame: Bytes) -> Option<Dispatched> {
        before_authentication(s, frame, &|_, _| None)
    }

    fn session() -> Session {
        let listener = Arc::new(Listener {
            name: "SASL_PLAINTEXT".to_string(),
            protocol: SecurityProtocol::SaslPlaintext,
            bind: "127.0.0.1:9092".parse().unwrap(),
            advertised: ("h".to_string(), 9092),
            tls: None,
            mapper: None,
            sasl: Some(Arc::new(config())),
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

    fn authenticate_request(token: &'static [u8]) -> Bytes {
        let body = SaslAuthenticateRequest {
            auth_bytes: Bytes::from_static(token),
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
            plain: super::super::config::PlainConfig {
                users: [("alice".to_string(), "secret".to_string())].into(),
            },
        }
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
