//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka runs them: the
//! server's side of the exchange, the credentials it checks (salt, stored key, server
//! key, iterations: never the password), and the message formats of Kafka's
//! `ScramMessages` (gs2 header `n` only, no channel binding, extensions ignored except
//! `tokenauth`, which needs delegation tokens and is refused because Spate has none).
//!
//! Crypto is `ring`'s (already in the tree through rustls); comparisons of secrets are
//! `subtle`'s constant-time ones.

use std::fmt;
use std::num::NonZeroU32;

use ring::{digest, hmac, pbkdf2, rand::SecureRandom};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::base64;

/// A SCRAM mechanism, with Kafka's type ids (`ScramMechanism`: 0 is UNKNOWN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

/// Fewest and most PBKDF2 iterations a credential may have (Kafka's bounds for both
/// mechanisms).
pub const MIN_ITERATIONS: i32 = 4096;
pub const MAX_ITERATIONS: i32 = 16384;

impl ScramMechanism {
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    pub fn from_type(id: i8) -> Option<Self> {
        match id {
            1 => Some(ScramMechanism::Sha256),
            2 => Some(ScramMechanism::Sha512),
            _ => None,
        }
    }

    pub fn type_id(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            ScramMechanism::Sha256 => hmac::HMAC_SHA256,
            ScramMechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            ScramMechanism::Sha256 => &digest::SHA256,
            ScramMechanism::Sha512 => &digest::SHA512,
        }
    }

    /// PBKDF2 of a password: what a client computes (`scram_client`); the server only
    /// ever holds what is derived from it.
    pub fn salted_password(self, password: &str, salt: &[u8], iterations: NonZeroU32) -> Vec<u8> {
        let algorithm = match self {
            ScramMechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramMechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        };
        let mut out = vec![0; self.output_len()];
        pbkdf2::derive(algorithm, iterations, salt, password.as_bytes(), &mut out);
        out
    }

    pub(super) fn hmac_of(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(self.hmac(), key), data)
            .as_ref()
            .to_vec()
    }

    pub(super) fn hash(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.digest(), data).as_ref().to_vec()
    }

    /// Length of its hashes (and so of keys, proofs and signatures).
    fn output_len(self) -> usize {
        self.digest().output_len()
    }
}

/// What the server keeps for one user and mechanism (Kafka's `ScramCredential`).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: i32,
}

/// Secrets stay out of logs (Kafka's `ScramCredentialValue.toString` hides them too).
impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramCredential {
    /// The credential for a salted password (PBKDF2 of the password, computed by the
    /// client: AlterUserScramCredentials never carries the password itself).
    pub fn from_salted_password(
        mechanism: ScramMechanism,
        salt: &[u8],
        salted_password: &[u8],
        iterations: i32,
    ) -> Self {
        let client_key = mechanism.hmac_of(salted_password, b"Client Key");
        ScramCredential {
            salt: salt.to_vec(),
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac_of(salted_password, b"Server Key"),
            iterations,
        }
    }
}

/// Why an exchange failed. Clients are told Kafka's generic message for every reason
/// but `Authorization` (Kafka does not reveal whether a user exists); the reason is
/// logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScramError {
    /// Malformed messages, unknown users, wrong proofs, refused extensions.
    Credentials(String),
    /// The client asked for an authorization id other than its user name.
    Authorization,
}

/// Kafka's message for an authorization id that differs from the user name.
pub const AUTHORIZATION_ID_MESSAGE: &str =
    "Authentication failed: Client requested an authorization id that is different from username";

/// What the server answers to a client message.
#[derive(Debug, PartialEq, Eq)]
pub enum ScramStep {
    /// The server-first message; the client-final message comes next.
    Challenge(Vec<u8>),
    /// The client proved its password: who it is, and the server-final message.
    Complete { user: String, reply: Vec<u8> },
}

/// The server's side of one exchange: client-first, server-first, client-final,
/// server-final.
pub struct ServerExchange {
    mechanism: ScramMechanism,
    state: State,
}

enum State {
    AwaitingClientFirst,
    AwaitingClientFinal(Box<FirstRound>),
    /// Finished or failed: nothing more is accepted.
    Over,
}

/// What the client-final message is checked against.
struct FirstRound {
    user: String,
    credential: ScramCredential,
    client_first_bare: String,
    server_first: String,
    /// Client nonce followed by server nonce.
    nonce: String,
}

/// Longest SCRAM message accepted (names, nonces and a proof are far shorter).
const MAX_MESSAGE: usize = 8 * 1024;

impl ServerExchange {
    pub fn new(mechanism: ScramMechanism) -> Self {
        ServerExchange {
            mechanism,
            state: State::AwaitingClientFirst,
        }
    }

    pub fn mechanism(&self) -> ScramMechanism {
        self.mechanism
    }

    /// The next client message: client-first, then client-final.
    pub fn evaluate(
        &mut self,
        message: &[u8],
        credential_of: impl FnOnce(&str) -> Option<ScramCredential>,
    ) -> Result<ScramStep, ScramError> {
        match self.state {
            State::AwaitingClientFirst => {
                let nonce = Self::random_nonce()?;
                self.client_first(message, &nonce, credential_of)
                    .map(ScramStep::Challenge)
            }
            State::AwaitingClientFinal(_) | State::Over => self
                .client_final(message)
                .map(|(user, reply)| ScramStep::Complete { user, reply }),
        }
    }

    /// A fresh nonce: 24 random bytes in base64 (printable, no commas).
    pub(super) fn random_nonce() -> Result<String, ScramError> {
        let mut bytes = [0u8; 24];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| ScramError::Credentials("no randomness for a nonce".into()))?;
        Ok(base64::encode(&bytes))
    }

    /// The client-first message: looks the user's credential up and answers the
    /// server-first message. `server_nonce` is [`Self::random_nonce`] (fixed in tests).
    fn client_first(
        &mut self,
        message: &[u8],
        server_nonce: &str,
        credential_of: impl FnOnce(&str) -> Option<ScramCredential>,
    ) -> Result<Vec<u8>, ScramError> {
        if !matches!(self.state, State::AwaitingClientFirst) {
            return Err(ScramError::Credentials(
                "unexpected client-first message".into(),
            ));
        }
        self.state = State::Over;
        let first = ClientFirst::parse(message)?;
        if first.token_auth {
            return Err(ScramError::Credentials(
                "Token Authentication failed: delegation tokens are not supported".into(),
            ));
        }
        let credential = credential_of(&first.user).ok_or_else(|| {
            ScramError::Credentials("Authentication failed: Invalid user credentials".into())
        })?;
        if !first.authorization_id.is_empty() && first.authorization_id != first.user {
            return Err(ScramError::Authorization);
        }
        if credential.iterations < MIN_ITERATIONS {
            return Err(ScramError::Credentials(format!(
                "Iterations {} is less than the minimum {MIN_ITERATIONS} for {}",
                credential.iterations,
                self.mechanism.name()
            )));
        }
        let nonce = format!("{}{server_nonce}", first.nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            base64::encode(&credential.salt),
            credential.iterations
        );
        let reply = server_first.clone().into_bytes();
        self.state = State::AwaitingClientFinal(Box::new(FirstRound {
            user: first.user,
            credential,
            client_first_bare: first.bare,
            server_first,
            nonce,
        }));
        Ok(reply)
    }

    /// The client-final message: checks the proof; on success, the authenticated user
    /// and the server-final message (the server's signature).
    fn client_final(&mut self, message: &[u8]) -> Result<(String, Vec<u8>), ScramError> {
        let State::AwaitingClientFinal(round) = std::mem::replace(&mut self.state, State::Over)
        else {
            return Err(ScramError::Credentials(
                "unexpected client-final message".into(),
            ));
        };
        let last = ClientFinal::parse(message)?;
        if last.nonce != round.nonce {
            return Err(ScramError::Credentials(
                "Invalid client nonce in the final client message.".into(),
            ));
        }
        let m = self.mechanism;
        if last.proof.len() != m.output_len() {
            return Err(ScramError::Credentials("Invalid client credentials".into()));
        }
        let auth_message = format!(
            "{},{},{}",
            round.client_first_bare, round.server_first, last.without_proof
        );
        let client_signature = m.hmac_of(&round.credential.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = last
            .proof
            .iter()
            .zip(&client_signature)
            .map(|(p, s)| p ^ s)
            .collect();
        let computed = m.hash(&client_key);
        if !bool::from(computed.ct_eq(&round.credential.stored_key)) {
            return Err(ScramError::Credentials("Invalid client credentials".into()));
        }
        let server_signature = m.hmac_of(&round.credential.server_key, auth_message.as_bytes());
        let reply = format!("v={}", base64::encode(&server_signature)).into_bytes();
        Ok((round.user, reply))
    }
}

/// `gs2-header [reserved-mext ","] username "," nonce ["," extensions]`.
#[derive(Debug, PartialEq)]
struct ClientFirst {
    authorization_id: String,
    user: String,
    nonce: String,
    /// The message without its gs2 header: part of what both sides sign.
    bare: String,
    /// The `tokenauth=true` extension (a delegation token instead of a password).
    token_auth: bool,
}

fn malformed(what: &str) -> ScramError {
    ScramError::Credentials(format!("Invalid SCRAM {what} message format"))
}

fn text(message: &[u8]) -> Option<&str> {
    if message.len() > MAX_MESSAGE {
        return None;
    }
    std::str::from_utf8(message).ok()
}

/// `VALUE` of Kafka's patterns: ASCII 0x01-0x7F except `,`, at least one.
fn is_value(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x01..=0x7f).contains(&b) && b != b',')
}

/// `PRINTABLE`: 0x21-0x7E except `,`, at least one.
fn is_printable(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// An extension `key=value` with an alphabetic key.
fn extension(field: &str) -> Option<(&str, &str)> {
    let (key, value) = field.split_once('=')?;
    (!key.is_empty() && key.bytes().all(|b| b.is_ascii_alphabetic()) && is_value(value))
        .then_some((key, value))
}

/// A user name from its SASL form (`=2C` is `,`, `=3D` is `=`; any other `=` is
/// refused), as Kafka's `ScramFormatter.username`.
fn user_name(sasl_name: &str) -> Option<String> {
    if sasl_name.is_empty() || sasl_name.contains(',') {
        return None;
    }
    let mut out = String::with_capacity(sasl_name.len());
    let mut rest = sasl_name;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3)?;
        out.push(match escape {
            "=2C" => ',',
            "=3D" => '=',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

impl ClientFirst {
    fn parse(message: &[u8]) -> Result<Self, ScramError> {
        let bad = || malformed("client first");
        let text = text(message).ok_or_else(bad)?;
        // Only "n": the client supports no channel binding (Kafka's only gs2 flag).
        let rest = text.strip_prefix("n,").ok_or_else(bad)?;
        let (authzid, bare) = rest.split_once(',').ok_or_else(bad)?;
        let authorization_id = match authzid {
            "" => String::new(),
            a => user_name(a.strip_prefix("a=").ok_or_else(bad)?).ok_or_else(bad)?,
        };
        let mut fields = bare.split(',').peekable();
        // A reserved "m=" field may come first; it carries nothing Kafka uses.
        if fields.peek().is_some_and(|f| f.starts_with("m=")) {
            let m = fields.next().unwrap_or_default();
            if !is_value(&m[2..]) {
                return Err(bad());
            }
        }
        let user = fields
            .next()
            .and_then(|f| f.strip_prefix("n="))
            .and_then(user_name)
            .ok_or_else(bad)?;
        let nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .filter(|n| is_printable(n))
            .ok_or_else(bad)?;
        let mut token_auth = false;
        for field in fields {
            let (key, value) = extension(field).ok_or_else(bad)?;
            if key == "tokenauth" && value.eq_ignore_ascii_case("true") {
                token_auth = true;
            }
        }
        Ok(ClientFirst {
            authorization_id,
            user,
            nonce: nonce.to_string(),
            bare: bare.to_string(),
            token_auth,
        })
    }
}

/// `channel-binding "," nonce ["," extensions] "," proof`.
struct ClientFinal {
    nonce: String,
    proof: Vec<u8>,
    /// Everything before `,p=`: signed by both sides.
    without_proof: String,
}

impl ClientFinal {
    fn parse(message: &[u8]) -> Result<Self, ScramError> {
        let bad = || malformed("client final");
        let text = text(message).ok_or_else(bad)?;
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or_else(bad)?;
        let proof = base64::decode(proof).ok_or_else(bad)?;
        let mut fields = without_proof.split(',');
        // The channel binding is base64 of the gs2 header; like Kafka, its content is
        // not checked (it is signed as part of the message).
        fields
            .next()
            .and_then(|f| f.strip_prefix("c="))
            .and_then(base64::decode)
            .ok_or_else(bad)?;
        let nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .filter(|n| is_printable(n))
            .ok_or_else(bad)?;
        if !fields.all(|f| extension(f).is_some()) {
            return Err(bad());
        }
        Ok(ClientFinal {
            nonce: nonce.to_string(),
            proof,
            without_proof: without_proof.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn salted_password(m: ScramMechanism, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
        m.salted_password(password, salt, NonZeroU32::new(iterations).unwrap())
    }

    /// The client's proof and the server signature it expects, for an exchange.
    fn client_proof(
        m: ScramMechanism,
        password: &str,
        salt: &[u8],
        iterations: u32,
        auth_message: &str,
    ) -> (Vec<u8>, Vec<u8>) {
        let salted = salted_password(m, password, salt, iterations);
        let cred = ScramCredential::from_salted_password(m, salt, &salted, iterations as i32);
        let client_key = m.hmac_of(&salted, b"Client Key");
        let signature = m.hmac_of(&cred.stored_key, auth_message.as_bytes());
        let proof = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        (proof, m.hmac_of(&cred.server_key, auth_message.as_bytes()))
    }

    // RFC 7677, section 3.
    const RFC_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
    const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    const RFC_SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const RFC_CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_credential(password: &str) -> ScramCredential {
        let m = ScramMechanism::Sha256;
        let salt = base64::decode(RFC_SALT).unwrap();
        let salted = salted_password(m, password, &salt, 4096);
        ScramCredential::from_salted_password(m, &salt, &salted, 4096)
    }

    #[test]
    fn rfc_7677_test_vector() {
        let mut x = ServerExchange::new(ScramMechanism::Sha256);
        let first = x
            .client_first(RFC_CLIENT_FIRST.as_bytes(), RFC_SERVER_NONCE, |user| {
                assert_eq!(user, "user");
                Some(rfc_credential("pencil"))
            })
            .unwrap();
        assert_eq!(String::from_utf8(first).unwrap(), RFC_SERVER_FIRST);
        let (user, last) = x.client_final(RFC_CLIENT_FINAL.as_bytes()).unwrap();
        assert_eq!(user, "user");
        assert_eq!(String::from_utf8(last).unwrap(), RFC_SERVER_FINAL);
        // Nothing more is accepted once the exchange is over.
        assert!(x.client_final(RFC_CLIENT_FINAL.as_bytes()).is_err());
    }

    #[test]
    fn a_wrong_password_or_unknown_user_fails() {
        let mut x = ServerExchange::new(ScramMechanism::Sha256);
        x.client_first(RFC_CLIENT_FIRST.as_bytes(), RFC_SERVER_NONCE, |_| {
            Some(rfc_credential("not-pencil"))
        })
        .unwrap();
        assert_eq!(
            x.client_final(RFC_CLIENT_FINAL.as_bytes()),
            Err(ScramError::Credentials("Invalid client credentials".into()))
        );
        let mut x = ServerExchange::new(ScramMechanism::Sha256);
        assert!(matches!(
            x.client_first(RFC_CLIENT_FIRST.as_bytes(), "n", |_| None),
            Err(ScramError::Credentials(_))
        ));
    }

    #[test]
    fn the_nonce_must_be_the_servers() {
        let mut x = ServerExchange::new(ScramMechanism::Sha256);
        x.client_first(RFC_CLIENT_FIRST.as_bytes(), "other", |_| {
            Some(rfc_credential("pencil"))
        })
        .unwrap();
        let err = x.client_final(RFC_CLIENT_FINAL.as_bytes()).unwrap_err();
        assert!(matches!(err, ScramError::Credentials(m) if m.contains("nonce")));
    }

    #[test]
    fn sha_512_round_trip_with_escaped_names_and_an_authorization_id() {
        let m = ScramMechanism::Sha512;
        let salt = b"some-salt".to_vec();
        let cred = ScramCredential::from_salted_password(
            m,
            &salt,
            &salted_password(m, "secret", &salt, 8192),
            8192,
        );
        let mut x = ServerExchange::new(m);
        let first = "n,a=a=2Cb=3Dc,n=a=2Cb=3Dc,r=abc";
        let server_first = x
            .client_first(first.as_bytes(), "XYZ", |user| {
                assert_eq!(user, "a,b=c");
                Some(cred.clone())
            })
            .unwrap();
        let server_first = String::from_utf8(server_first).unwrap();
        assert_eq!(
            server_first,
            format!("r=abcXYZ,s={},i=8192", base64::encode(&salt))
        );
        // c= is base64("n,a=a=2Cb=3Dc,").
        let without_proof = format!("c={},r=abcXYZ", base64::encode(b"n,a=a=2Cb=3Dc,"));
        let auth = format!("n=a=2Cb=3Dc,r=abc,{server_first},{without_proof}");
        let (proof, signature) = client_proof(m, "secret", &salt, 8192, &auth);
        let last = format!("{without_proof},p={}", base64::encode(&proof));
        let (user, reply) = x.client_final(last.as_bytes()).unwrap();
        assert_eq!(user, "a,b=c");
        assert_eq!(
            reply,
            format!("v={}", base64::encode(&signature)).into_bytes()
        );
    }

    #[test]
    fn kafka_message_formats() {
        let parse = |s: &str| ClientFirst::parse(s.as_bytes());
        let ok = parse("n,,n=alice,r=nonce,ext=1").unwrap();
        assert_eq!(
            (
                ok.user.as_str(),
                ok.nonce.as_str(),
                ok.bare.as_str(),
                ok.token_auth
            ),
            ("alice", "nonce", "n=alice,r=nonce,ext=1", false)
        );
        assert!(parse("n,,n=tok,r=x,tokenauth=TRUE").unwrap().token_auth);
        assert_eq!(parse("n,,m=ext,n=bob,r=x").unwrap().user, "bob");
        for bad in [
            "y,,n=alice,r=x",     // channel binding flags other than n
            "p=tls,,n=alice,r=x", // channel binding
            "n,,n=alice",         // no nonce
            "n,,n=,r=x",          // empty user
            "n,,n=a=3Eb,r=x",     // bad escape
            "n,,n=alice,r=a b",   // nonce not printable
            "n,,n=alice,r=x,1=2", // extension key not alphabetic
            "n,u=x,n=alice,r=x",  // authzid without a=
            "n,,r=x,n=alice",     // fields out of order
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse(&"n,,n=a,r=".repeat(2000)).is_err());
        let fin = |s: &str| ClientFinal::parse(s.as_bytes()).map(|f| f.without_proof);
        assert_eq!(fin("c=biws,r=n,e=1,p=AAAA").unwrap(), "c=biws,r=n,e=1");
        for bad in [
            "c=biws,r=n",
            "c=b!ws,r=n,p=AAAA",
            "c=biws,p=AAAA",
            "c=biws,r=n,p=AA",
        ] {
            assert!(fin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refused_before_a_credential_is_used() {
        let mut x = ServerExchange::new(ScramMechanism::Sha256);
        // Delegation tokens are not supported: tokenauth fails like an unknown token.
        let err = x
            .client_first(b"n,,n=tokenid,r=x,tokenauth=true", "y", |_| {
                panic!("a token is never looked up as a user")
            })
            .unwrap_err();
        assert!(matches!(err, ScramError::Credentials(m) if m.contains("Token")));
        let mut x = ServerExchange::new(ScramMechanism::Sha256);
        let err = x
            .client_first(b"n,a=bob,n=alice,r=x", "y", |_| Some(rfc_credential("p")))
            .unwrap_err();
        assert_eq!(err, ScramError::Authorization);
        let mut x = ServerExchange::new(ScramMechanism::Sha256);
        let mut weak = rfc_credential("p");
        weak.iterations = 100;
        assert!(x
            .client_first(b"n,,n=alice,r=x", "y", |_| Some(weak))
            .is_err());
    }

    #[test]
    fn mechanisms_by_name_and_type() {
        for m in ScramMechanism::ALL {
            assert_eq!(ScramMechanism::from_name(m.name()), Some(m));
            assert_eq!(ScramMechanism::from_type(m.type_id()), Some(m));
        }
        assert_eq!(ScramMechanism::from_type(0), None);
        assert_eq!(ScramMechanism::from_name("PLAIN"), None);
        assert!(!format!("{:?}", rfc_credential("p")).contains("stored"));
    }
}
