//! The client side of SASL/PLAIN and SCRAM (RFC 5802, RFC 7677), for this broker's
//! connections to other brokers' SASL listeners (`crate::interbroker`): the tokens
//! carried by SaslAuthenticate, as Kafka's `PlainSaslServer` and `ScramSaslServer` (and
//! so Spate's `sasl` and `scram` modules) expect them.

use std::fmt;
use std::num::NonZeroU32;

use subtle::ConstantTimeEq;

use super::base64;
use super::scram::{ScramMechanism, MAX_ITERATIONS, MIN_ITERATIONS};

/// A mechanism this broker can authenticate with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMechanism {
    Plain,
    Scram(ScramMechanism),
}

impl ClientMechanism {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "PLAIN" => Some(ClientMechanism::Plain),
            other => ScramMechanism::from_name(other).map(ClientMechanism::Scram),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ClientMechanism::Plain => "PLAIN",
            ClientMechanism::Scram(m) => m.name(),
        }
    }
}

/// Who this broker is to other brokers (Kafka's `username` and `password` in the
/// inter-broker listener's JAAS configuration).
#[derive(Clone)]
pub struct SaslCredentials {
    pub mechanism: ClientMechanism,
    pub username: String,
    pub password: String,
}

/// The password stays out of logs.
impl fmt::Debug for SaslCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslCredentials")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// One exchange, from the client's first message to the server's last.
pub enum ClientExchange {
    /// PLAIN: one message, then the server's empty answer.
    Plain {
        sent: bool,
    },
    Scram(ScramClient),
}

impl ClientExchange {
    /// The exchange and the first message to send.
    pub fn start(credentials: &SaslCredentials) -> Result<(ClientExchange, Vec<u8>), String> {
        match credentials.mechanism {
            ClientMechanism::Plain => {
                // authzid NUL authcid NUL password; an empty authzid is the user itself.
                let token = format!("\0{}\0{}", credentials.username, credentials.password);
                Ok((ClientExchange::Plain { sent: true }, token.into_bytes()))
            }
            ClientMechanism::Scram(m) => {
                let nonce = super::scram::ServerExchange::random_nonce()
                    .map_err(|_| "no randomness for a SCRAM nonce".to_string())?;
                let (client, first) = ScramClient::new(m, credentials, nonce);
                Ok((ClientExchange::Scram(client), first))
            }
        }
    }

    /// The server's answer to the last message: the next message to send, or `None`
    /// when the exchange is complete (the server proved itself, for SCRAM).
    pub fn step(&mut self, answer: &[u8]) -> Result<Option<Vec<u8>>, String> {
        match self {
            ClientExchange::Plain { sent } => {
                if !std::mem::replace(sent, false) {
                    return Err("PLAIN exchange is over".into());
                }
                Ok(None)
            }
            ClientExchange::Scram(c) => c.step(answer),
        }
    }
}

/// The client's side of SCRAM.
pub struct ScramClient {
    mechanism: ScramMechanism,
    password: String,
    client_first_bare: String,
    nonce: String,
    state: ScramState,
}

enum ScramState {
    AwaitingServerFirst,
    /// The server signature the server-final message must carry.
    AwaitingServerFinal(Vec<u8>),
    Over,
}

/// A SCRAM `saslname`: `=` and `,` escaped.
fn sasl_name(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

impl ScramClient {
    /// The client and its client-first message (gs2 header `n,,`: no channel binding,
    /// no authorization id).
    fn new(
        mechanism: ScramMechanism,
        credentials: &SaslCredentials,
        nonce: String,
    ) -> (ScramClient, Vec<u8>) {
        let client_first_bare = format!("n={},r={nonce}", sasl_name(&credentials.username));
        let first = format!("n,,{client_first_bare}").into_bytes();
        let client = ScramClient {
            mechanism,
            password: credentials.password.clone(),
            client_first_bare,
            nonce,
            state: ScramState::AwaitingServerFirst,
        };
        (client, first)
    }

    fn step(&mut self, answer: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let text = std::str::from_utf8(answer).map_err(|_| "SCRAM message is not UTF-8")?;
        match std::mem::replace(&mut self.state, ScramState::Over) {
            ScramState::AwaitingServerFirst => {
                let (last, server_signature) = self.client_final(text)?;
                self.state = ScramState::AwaitingServerFinal(server_signature);
                Ok(Some(last.into_bytes()))
            }
            ScramState::AwaitingServerFinal(expected) => {
                let field = |k: &str| text.split(',').find_map(|f| f.strip_prefix(k));
                if let Some(error) = field("e=") {
                    return Err(format!("the server refused: {error}"));
                }
                let signature = field("v=")
                    .and_then(base64::decode)
                    .ok_or("malformed SCRAM server-final message")?;
                if !bool::from(signature.ct_eq(&expected)) {
                    return Err("the server's SCRAM signature is wrong".into());
                }
                Ok(None)
            }
            ScramState::Over => Err("SCRAM exchange is over".into()),
        }
    }

    /// Answers the server-first message `r=nonce,s=salt,i=iterations`: the
    /// client-final message and the signature the server must then prove.
    fn client_final(&self, server_first: &str) -> Result<(String, Vec<u8>), String> {
        let field = |k: &str| server_first.split(',').find_map(|f| f.strip_prefix(k));
        let malformed = || "malformed SCRAM server-first message".to_string();
        let nonce = field("r=").ok_or_else(malformed)?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err("the server's SCRAM nonce does not extend ours".into());
        }
        let salt = field("s=").and_then(base64::decode).ok_or_else(malformed)?;
        let iterations: i32 = field("i=")
            .and_then(|i| i.parse().ok())
            .ok_or_else(malformed)?;
        // Kafka's clients refuse fewer iterations than its servers accept (a server
        // asking for few would make the password cheap to guess).
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(format!("SCRAM iterations {iterations} out of range"));
        }
        let iterations = NonZeroU32::new(iterations as u32).ok_or_else(malformed)?;
        let m = self.mechanism;
        let salted = m.salted_password(&self.password, &salt, iterations);
        let client_key = m.hmac_of(&salted, b"Client Key");
        let stored_key = m.hash(&client_key);
        // "biws" is the base64 of the gs2 header `n,,`.
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = m.hmac_of(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(k, s)| k ^ s)
            .collect();
        let server_key = m.hmac_of(&salted, b"Server Key");
        let server_signature = m.hmac_of(&server_key, auth_message.as_bytes());
        let last = format!("{without_proof},p={}", base64::encode(&proof));
        Ok((last, server_signature))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::scram::{ScramCredential, ScramStep, ServerExchange};

    fn credentials(m: ClientMechanism, user: &str, password: &str) -> SaslCredentials {
        SaslCredentials {
            mechanism: m,
            username: user.into(),
            password: password.into(),
        }
    }

    /// RFC 7677's example, from the client's side.
    #[test]
    fn rfc_7677_test_vector() {
        let creds = credentials(
            ClientMechanism::Scram(ScramMechanism::Sha256),
            "user",
            "pencil",
        );
        let (mut c, first) = ScramClient::new(
            ScramMechanism::Sha256,
            &creds,
            "rOprNGfwEbeRWgbNEkqO".into(),
        );
        assert_eq!(first, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let last = c
            .step(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
            .unwrap()
            .unwrap();
        assert_eq!(
            String::from_utf8(last).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert_eq!(
            c.step(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
                .unwrap(),
            None
        );
    }

    /// The client and Spate's own server agree for both hashes; a wrong password is
    /// refused by the server, and a server that cannot prove the password by the client.
    #[test]
    fn client_and_server_agree() {
        for m in ScramMechanism::ALL {
            let salt = b"some salt".to_vec();
            let salted = m.salted_password("right", &salt, NonZeroU32::new(4096).unwrap());
            let credential = ScramCredential::from_salted_password(m, &salt, &salted, 4096);
            for (password, ok) in [("right", true), ("wrong", false)] {
                let creds = credentials(ClientMechanism::Scram(m), "al,i=ce", password);
                let (mut client, first) = ClientExchange::start(&creds).unwrap();
                let mut server = ServerExchange::new(m);
                let lookup = |user: &str| (user == "al,i=ce").then(|| credential.clone());
                let ScramStep::Challenge(server_first) = server.evaluate(&first, lookup).unwrap()
                else {
                    panic!("expected a challenge");
                };
                let last = client.step(&server_first).unwrap().unwrap();
                match server.evaluate(&last, |_| None) {
                    Ok(ScramStep::Complete { user, reply }) => {
                        assert!(ok);
                        assert_eq!(user, "al,i=ce");
                        assert_eq!(client.step(&reply).unwrap(), None);
                    }
                    Ok(ScramStep::Challenge(_)) => panic!("a second challenge"),
                    Err(_) => assert!(!ok),
                }
            }
        }
    }

    #[test]
    fn a_server_signature_that_does_not_match_is_refused() {
        let creds = credentials(
            ClientMechanism::Scram(ScramMechanism::Sha256),
            "user",
            "pencil",
        );
        let (mut c, _) = ScramClient::new(ScramMechanism::Sha256, &creds, "abc".into());
        c.step(b"r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
            .unwrap();
        assert!(c.step(b"v=AAAA").is_err());
        let (mut c, _) = ScramClient::new(ScramMechanism::Sha256, &creds, "abc".into());
        c.step(b"r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
            .unwrap();
        assert!(c
            .step(b"e=invalid-proof")
            .unwrap_err()
            .contains("invalid-proof"));
    }

    #[test]
    fn a_server_first_message_that_weakens_the_exchange_is_refused() {
        let creds = credentials(ClientMechanism::Scram(ScramMechanism::Sha512), "u", "p");
        for bad in [
            "r=zzz,s=c2FsdA==,i=4096", // not our nonce
            "r=abc,s=c2FsdA==,i=4096", // our nonce, nothing added
            "r=abcd,s=c2FsdA==,i=1",   // too few iterations
            "r=abcd,s=!!!,i=4096",     // salt not base64
            "r=abcd,i=4096",           // no salt
        ] {
            let (mut c, _) = ScramClient::new(ScramMechanism::Sha512, &creds, "abc".into());
            assert!(c.step(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn plain_sends_one_token() {
        let creds = credentials(ClientMechanism::Plain, "broker", "secret");
        let (mut x, first) = ClientExchange::start(&creds).unwrap();
        assert_eq!(first, b"\0broker\0secret");
        assert_eq!(x.step(b"").unwrap(), None);
        assert!(x.step(b"").is_err());
        assert_eq!(
            ClientMechanism::from_name("SCRAM-SHA-512"),
            Some(ClientMechanism::Scram(ScramMechanism::Sha512))
        );
        assert_eq!(ClientMechanism::from_name("GSSAPI"), None);
    }
}
