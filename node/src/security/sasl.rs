//! SASL on SASL_PLAINTEXT and SASL_SSL listeners (KIP-43, KIP-152): SaslHandshake
//! then SaslAuthenticate (or, after a v0 handshake, bare tokens), mechanism PLAIN.
//!
//! Until a connection authenticated, only ApiVersions, SaslHandshake and
//! SaslAuthenticate are served; anything else closes it, as Kafka's
//! `SaslServerAuthenticator` does. A failed authentication is answered, then closed.

use bytes::Bytes;
use spate_net::messages::{RequestHeader, SaslAuthenticateResponse, SaslHandshakeResponse};
use spate_net::{ApiKey, ErrorCode, RequestBody};

use super::config::SaslConfig;
use super::{Principal, SaslStage, Session};
use crate::handlers::{frame, Dispatched};

/// Longest SASL/PLAIN token: two names and a password.
const MAX_PLAIN_TOKEN: usize = 64 * 1024;

/// What to do with a frame on a connection that has not authenticated yet. `None`:
/// serve it as usual (an ApiVersions request).
pub fn before_authentication(session: &Session, mut frame_body: Bytes) -> Option<Dispatched> {
    let sasl = session.listener.sasl.as_deref()?;
    match session.stage() {
        SaslStage::Done => return None,
        SaslStage::RawToken => return Some(raw_token(session, sasl, &frame_body)),
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
        Ok(RequestBody::SaslAuthenticate(req)) => {
            Some(authenticate(session, sasl, &header, &req.auth_bytes))
        }
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
    if !enabled.contains(&mechanism) {
        tracing::info!(peer = %session.peer, listener = %session.listener.name, %mechanism, "SASL handshake with an unsupported mechanism");
        let body = SaslHandshakeResponse {
            error_code: ErrorCode::UnsupportedSaslMechanism.code(),
            mechanisms: enabled,
        };
        return Dispatched::RespondAndClose(frame(header, &body), "unsupported SASL mechanism");
    }
    // v0: bare tokens follow; v1: SaslAuthenticate requests.
    session.stage.set(if header.request_api_version == 0 {
        SaslStage::RawToken
    } else {
        SaslStage::Authenticate
    });
    *session.mechanism.borrow_mut() = Some(mechanism);
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
) -> Dispatched {
    match run_mechanism(session, sasl, token) {
        Ok(()) => Dispatched::Respond(frame(
            header,
            &SaslAuthenticateResponse {
                error_code: 0,
                error_message: None,
                auth_bytes: Bytes::new(),
                // Re-authentication (KIP-368) is not offered yet.
                session_lifetime_ms: 0,
            },
        )),
        Err(message) => Dispatched::RespondAndClose(
            frame(
                header,
                &SaslAuthenticateResponse {
                    error_code: ErrorCode::SaslAuthenticationFailed.code(),
                    error_message: Some(message),
                    auth_bytes: Bytes::new(),
                    session_lifetime_ms: 0,
                },
            ),
            "SASL authentication failed",
        ),
    }
}

/// A bare token after a v0 handshake: answered by a bare (empty) token on success;
/// a failure closes the connection, which is all the old form can say.
fn raw_token(session: &Session, sasl: &SaslConfig, token: &[u8]) -> Dispatched {
    match run_mechanism(session, sasl, token) {
        Ok(()) => Dispatched::Respond(vec![Bytes::from_static(&[0, 0, 0, 0])]),
        Err(_) => Dispatched::Close("SASL authentication failed"),
    }
}

/// Run the chosen mechanism on a client's token; on success the session is
/// authenticated as its user. `Err` is the message the client is given.
fn run_mechanism(session: &Session, sasl: &SaslConfig, token: &[u8]) -> Result<(), String> {
    let mechanism = session.mechanism.borrow().clone().unwrap_or_default();
    let outcome = match mechanism.as_str() {
        "PLAIN" => plain(sasl, token),
        other => Err(format!("Unsupported SASL mechanism {other}")),
    };
    match outcome {
        Ok(user) => {
            tracing::debug!(peer = %session.peer, listener = %session.listener.name, %user, "SASL authenticated");
            session.set_principal(Principal::user(&user));
            session.stage.set(SaslStage::Done);
            Ok(())
        }
        Err(message) => {
            tracing::info!(peer = %session.peer, listener = %session.listener.name, %mechanism, reason = %message, "SASL authentication failed");
            Err(message)
        }
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
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
        assert!(before_authentication(&s, versions.clone()).is_none());
        let metadata = request(ApiKey::Metadata, 12, &MetadataRequest::default());
        assert!(matches!(
            before_authentication(&s, metadata),
            Some(Dispatched::Close(_))
        ));
        // A SaslAuthenticate before the handshake closes too.
        let auth = authenticate_request(b"\0alice\0secret");
        assert!(matches!(
            before_authentication(&s, auth),
            Some(Dispatched::Close(_))
        ));
        assert_eq!(s.stage(), SaslStage::Handshake);
    }

    #[test]
    fn unsupported_mechanism_lists_the_enabled_ones() {
        let s = session();
        let Some(Dispatched::RespondAndClose(chunks, _)) =
            before_authentication(&s, handshake_request("SCRAM-SHA-512", 1))
        else {
            panic!("expected an answer and a close");
        };
        let r: SaslHandshakeResponse = response(&chunks, 1, false);
        assert_eq!(r.error_code, ErrorCode::UnsupportedSaslMechanism.code());
        assert_eq!(r.mechanisms, vec!["PLAIN".to_string()]);
    }

    #[test]
    fn handshake_then_authenticate() {
        let s = session();
        let Some(Dispatched::Respond(chunks)) =
            before_authentication(&s, handshake_request("PLAIN", 1))
        else {
            panic!("expected an answer");
        };
        let r: SaslHandshakeResponse = response(&chunks, 1, false);
        assert_eq!((r.error_code, r.mechanisms), (0, vec!["PLAIN".to_string()]));
        assert_eq!(s.stage(), SaslStage::Authenticate);
        // ApiVersions is over once the handshake is done.
        let versions = request(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
        assert!(matches!(
            before_authentication(&s, versions),
            Some(Dispatched::Close(_))
        ));
    }

    #[test]
    fn good_and_bad_passwords() {
        let s = session();
        before_authentication(&s, handshake_request("PLAIN", 1));
        let Some(Dispatched::RespondAndClose(chunks, _)) =
            before_authentication(&s, authenticate_request(b"\0alice\0wrong"))
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
        before_authentication(&s, handshake_request("PLAIN", 1));
        let Some(Dispatched::Respond(chunks)) =
            before_authentication(&s, authenticate_request(b"\0alice\0secret"))
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
        assert!(before_authentication(&s, metadata).is_none());
    }

    #[test]
    fn v0_handshake_takes_a_bare_token() {
        let s = session();
        before_authentication(&s, handshake_request("PLAIN", 0));
        assert_eq!(s.stage(), SaslStage::RawToken);
        let Some(Dispatched::Respond(chunks)) =
            before_authentication(&s, Bytes::from_static(b"\0alice\0secret"))
        else {
            panic!("expected an answer");
        };
        assert_eq!(chunks.concat(), [0, 0, 0, 0]);
        assert!(s.authenticated());
        let s = session();
        before_authentication(&s, handshake_request("PLAIN", 0));
        let bad = before_authentication(&s, Bytes::from_static(b"\0alice\0nope"));
        assert!(matches!(bad, Some(Dispatched::Close(_))));
    }

    fn config() -> SaslConfig {
        SaslConfig {
            enabled_mechanisms: vec!["PLAIN".to_string()],
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
