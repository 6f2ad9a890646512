//! SASL/OAUTHBEARER (RFC 7628, KIP-255, KIP-768): the client's initial response carries
//! a bearer token, a JWS-signed JWT that is checked against the keys of
//! `[sasl.oauthbearer]` (a JWK Set or a PEM public key), as Kafka's broker-side JWT
//! validator does. The principal is `User:` and the token's subject claim.
//!
//! Unsecured tokens (`alg: none`, Kafka's `OAuthBearerUnsecuredValidatorCallbackHandler`)
//! are never accepted, nor symmetric (HMAC) keys: a broker that accepted them would
//! take any client at its word. JWS verification is the `jsonwebtoken` crate's (on
//! `ring`); the claims Kafka checks beyond it (subject, scope, `iat`) are checked here.
//!
//! The keys are shared broker-wide behind an `RwLock` read once per authentication and
//! written only by the reload thread, as the TLS files are (`tls.rs`).

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::config::OAuthBearerConfig;

/// Longest client initial response: a JWT with generous claims and a few extensions.
/// (Identity providers' access tokens are a few KiB.)
pub const MAX_CLIENT_RESPONSE: usize = 64 * 1024;

/// The server's reply to a token it refuses (RFC 7628 section 3.2.2), as Kafka words it.
pub const INVALID_TOKEN_REPLY: &str = r#"{"status":"invalid_token"}"#;

/// The signature algorithms accepted: asymmetric ones only.
const ACCEPTED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// A parsed client initial response (RFC 7628 section 3.1).
#[derive(Debug, PartialEq, Eq)]
pub struct InitialResponse<'a> {
    /// The authorization id (`a=`), empty when not given.
    pub authzid: &'a str,
    pub token: &'a str,
    /// Extensions (`key=value` pairs other than `auth`); accepted and not used, as by
    /// Kafka's validator callback handler.
    pub extensions: Vec<(&'a str, &'a str)>,
}

/// Parse `n,[a=authzid],\x01auth=Bearer <token>\x01[key=value\x01]*\x01` with Kafka's
/// grammar (`OAuthBearerClientInitialResponse`). `Err`: what is logged.
pub fn parse_initial_response(bytes: &[u8]) -> Result<InitialResponse<'_>, String> {
    if bytes.len() > MAX_CLIENT_RESPONSE {
        return Err(format!(
            "client first message of {} bytes (at most {MAX_CLIENT_RESPONSE})",
            bytes.len()
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "client first message not UTF-8")?;
    let rest = text
        .strip_prefix("n,")
        .ok_or("client first message must start with \"n,\" (no channel binding)")?;
    let (authzid, rest) = rest
        .split_once(',')
        .ok_or("client first message has no authorization id field")?;
    let authzid = match authzid {
        "" => "",
        a => a
            .strip_prefix("a=")
            .filter(|a| valid_saslname(a))
            .ok_or("invalid authorization id")?,
    };
    let pairs = rest
        .strip_prefix('\x01')
        .and_then(|r| {
            r.strip_suffix("\x01\x01")
                .or_else(|| (r == "\x01").then_some(""))
        })
        .ok_or("client first message is not \\x01-separated key=value pairs")?;
    let mut auth = None;
    let mut extensions = Vec::new();
    if !pairs.is_empty() {
        for pair in pairs.split('\x01') {
            let (key, value) = pair.split_once('=').ok_or("a key=value pair has no `=`")?;
            let key_ok = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphabetic());
            let value_ok = !value.is_empty()
                && value
                    .bytes()
                    .all(|b| (0x21..=0x7e).contains(&b) || b" \t\r\n".contains(&b));
            if !key_ok || !value_ok {
                return Err(format!("invalid key=value pair `{key}`"));
            }
            if key == "auth" {
                auth = Some(value);
            } else {
                extensions.push((key, value));
            }
        }
    }
    let auth = auth.ok_or("'auth' not specified")?;
    let (scheme, token) = auth
        .split_once(' ')
        .ok_or("invalid 'auth' format: no scheme")?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(format!("invalid scheme {scheme:?}"));
    }
    let token = token.trim_start_matches(' ');
    let body = token.trim_end_matches('=');
    if body.is_empty()
        || !body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_~+/.".contains(&b))
    {
        return Err("invalid 'auth' format: not a bearer token".to_string());
    }
    Ok(InitialResponse {
        authzid,
        token,
        extensions,
    })
}

/// RFC 5801's saslname: no `,` or `=` other than the escapes `=2C` and `=3D`.
fn valid_saslname(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'=' if b[i..].starts_with(b"=2C") || b[i..].starts_with(b"=3D") => i += 3,
            b'=' | b',' | 0 | 0x80.. => return false,
            _ => i += 1,
        }
    }
    !s.is_empty()
}

/// A token that passed validation.
#[derive(Debug)]
pub struct ValidToken {
    /// The subject claim: the principal's name.
    pub subject: String,
    /// When it expires, in milliseconds since the epoch.
    pub expires_ms: u64,
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Rsa,
    /// ECDSA: ES256 on P-256 or ES384 on P-384 (`None`: the curve of a PEM key, not
    /// looked at).
    Ec(Option<Algorithm>),
    Ed,
}

/// One verification key.
struct Key {
    kid: Option<String>,
    /// The JWK's `alg`, when given: the only algorithm it verifies.
    alg: Option<Algorithm>,
    family: Family,
    key: DecodingKey,
}

impl Key {
    fn verifies(&self, alg: Algorithm) -> bool {
        let family_ok = match self.family {
            Family::Rsa => matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
            Family::Ec(curve) => {
                matches!(alg, Algorithm::ES256 | Algorithm::ES384) && curve.is_none_or(|a| a == alg)
            }
            Family::Ed => alg == Algorithm::EdDSA,
        };
        family_ok && self.alg.is_none_or(|a| a == alg)
    }
}

/// The keys read from one version of `jwks_file`, with its contents (to see changes).
struct Keys {
    source: Vec<u8>,
    keys: Vec<Key>,
}

impl Keys {
    fn read(path: &Path) -> anyhow::Result<Keys> {
        let source = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let keys = parse_keys(&source).with_context(|| format!("keys in {}", path.display()))?;
        Ok(Keys { source, keys })
    }
}

/// A JWK Set, or one PEM public key (RSA, EC or Ed25519).
fn parse_keys(source: &[u8]) -> anyhow::Result<Vec<Key>> {
    let text = std::str::from_utf8(source).context("not UTF-8")?.trim();
    if text.starts_with("-----BEGIN") {
        let pem = text.as_bytes();
        let (key, family) = if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
            (k, Family::Rsa)
        } else if let Ok(k) = DecodingKey::from_ed_pem(pem) {
            (k, Family::Ed)
        } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
            // Its curve is not looked at: a signature on another curve does not verify.
            (k, Family::Ec(None))
        } else {
            bail!("not a PEM public key (RSA, EC or Ed25519) nor a JWK Set");
        };
        return Ok(vec![Key {
            kid: None,
            alg: None,
            family,
            key,
        }]);
    }
    let set: JwkSet = serde_json::from_str(text).context("not a JWK Set")?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
            continue;
        }
        let family = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Family::Rsa,
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => Family::Ec(Some(Algorithm::ES256)),
                EllipticCurve::P384 => Family::Ec(Some(Algorithm::ES384)),
                ref other => bail!("EC curve {other:?} is not supported (P-256, P-384)"),
            },
            AlgorithmParameters::OctetKeyPair(_) => Family::Ed,
            AlgorithmParameters::OctetKey(_) => {
                bail!("symmetric keys (kty oct) are not accepted: tokens must be signed with a private key")
            }
        };
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(a) => {
                let name = format!("{a:?}");
                let alg = ACCEPTED
                    .iter()
                    .copied()
                    .find(|x| format!("{x:?}") == name)
                    .with_context(|| format!("key algorithm {name} is not accepted"))?;
                Some(alg)
            }
        };
        let key = DecodingKey::from_jwk(jwk).context("a JWK")?;
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            alg,
            family,
            key,
        });
    }
    if keys.is_empty() {
        bail!("no signature verification key");
    }
    Ok(keys)
}

/// Checks tokens against the configured keys and claims.
pub struct Validator {
    config: OAuthBearerConfig,
    keys: RwLock<Arc<Keys>>,
}

impl Validator {
    pub fn new(config: &OAuthBearerConfig) -> anyhow::Result<Validator> {
        let Some(path) = &config.jwks_file else {
            bail!("sasl.oauthbearer.jwks_file is not set");
        };
        Ok(Validator {
            config: config.clone(),
            keys: RwLock::new(Arc::new(Keys::read(path)?)),
        })
    }

    fn keys(&self) -> Arc<Keys> {
        // A poisoned lock only means the reload thread panicked mid-swap of an `Arc`.
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Read `jwks_file` again; replace the keys if it changed and still loads.
    pub fn reload_if_changed(&self) -> anyhow::Result<bool> {
        let Some(path) = &self.config.jwks_file else {
            return Ok(false);
        };
        let source = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        if self.keys().source == source {
            return Ok(false);
        }
        let keys = Keys::read(path)?;
        match self.keys.write() {
            Ok(mut k) => *k = Arc::new(keys),
            Err(p) => *p.into_inner() = Arc::new(keys),
        }
        Ok(true)
    }

    /// Validate a bearer token. `Err`: why it was refused (logged, not sent).
    pub fn validate(&self, token: &str) -> Result<ValidToken, String> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| format!("malformed token or unsupported algorithm: {e}"))?;
        let alg = header.alg;
        if !ACCEPTED.contains(&alg) {
            return Err(format!("algorithm {alg:?} is not accepted"));
        }
        let keys = self.keys();
        let candidates: Vec<&Key> = keys
            .keys
            .iter()
            .filter(|k| k.verifies(alg))
            .filter(|k| header.kid.is_none() || k.kid == header.kid)
            .collect();
        if candidates.is_empty() {
            return Err(match &header.kid {
                Some(kid) => format!("no verification key with kid {kid:?} for {alg:?}"),
                None => format!("no verification key for {alg:?}"),
            });
        }
        let c = &self.config;
        let mut validation = Validation::new(alg);
        validation.leeway = c.clock_skew_seconds;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if c.expected_audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&c.expected_audience);
            required.push("aud");
        }
        if let Some(iss) = &c.expected_issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let mut outcome = Err(ErrorKind::InvalidSignature.into());
        for key in candidates {
            outcome = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation);
            if !matches!(&outcome, Err(e) if *e.kind() == ErrorKind::InvalidSignature) {
                break;
            }
        }
        let claims = outcome.map_err(|e| describe(&e))?.claims;
        self.check_claims(&claims, now_secs())
    }

    /// The claims `jsonwebtoken` does not check: `iat`, the subject and the scope.
    fn check_claims(&self, claims: &Map<String, Value>, now: u64) -> Result<ValidToken, String> {
        let c = &self.config;
        // Present and a non-negative number: `jsonwebtoken` checked it.
        let exp = claims.get("exp").and_then(Value::as_f64).unwrap_or(0.0);
        if let Some(iat) = claims.get("iat") {
            let iat = iat
                .as_f64()
                .filter(|t| *t >= 0.0)
                .ok_or("iat must be a non-negative number")?;
            if iat > now.saturating_add(c.clock_skew_seconds) as f64 {
                return Err("the token was issued in the future (iat)".to_string());
            }
        }
        let subject = match claims.get(&c.sub_claim_name) {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
            Some(_) => {
                return Err(format!(
                    "the {} claim must be a non-empty string",
                    c.sub_claim_name
                ))
            }
            None => return Err(format!("the token has no {} claim", c.sub_claim_name)),
        };
        let scopes: Vec<String> = match claims.get(&c.scope_claim_name) {
            None => Vec::new(),
            Some(Value::String(s)) => s.split_whitespace().map(String::from).collect(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| v.as_str().map(|s| s.trim().to_string()))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| format!("the {} claim has a non-string", c.scope_claim_name))?,
            Some(_) => {
                return Err(format!(
                    "the {} claim must be a string or a list of strings",
                    c.scope_claim_name
                ))
            }
        };
        // Whole milliseconds; `exp` is far below 2^53 seconds for any real token.
        let expires_ms = (exp * 1000.0).min(u64::MAX as f64) as u64;
        Ok(ValidToken {
            subject,
            expires_ms,
            scopes,
        })
    }
}

/// Why `jsonwebtoken` refused a token, in words.
fn describe(e: &jsonwebtoken::errors::Error) -> String {
    match e.kind() {
        ErrorKind::InvalidSignature => "the signature does not verify".to_string(),
        ErrorKind::ExpiredSignature => "the token has expired (exp)".to_string(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".to_string(),
        ErrorKind::InvalidAudience => "the audience (aud) is not an expected one".to_string(),
        ErrorKind::InvalidIssuer => "the issuer (iss) is not the expected one".to_string(),
        ErrorKind::MissingRequiredClaim(c) => format!("the token has no {c} claim"),
        _ => format!("invalid token: {e}"),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Read `jwks_file` again every `reload_interval_ms` on a thread of its own (off the
/// shards: file reads and key parsing are blocking work).
pub fn spawn_reloader(validator: Arc<Validator>) -> anyhow::Result<()> {
    let every = validator.config.reload_interval_ms;
    if every == 0 {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("spate-jwks-reload".to_string())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(every));
            match validator.reload_if_changed() {
                Ok(true) => tracing::info!("OAUTHBEARER verification keys reloaded"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "sasl.oauthbearer.jwks_file changed but does not load; keeping the previous keys")
                }
            }
        })
        .context("starting the JWKS reload thread")?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use serde_json::json;

    /// base64url without padding (JOSE's encoding).
    pub fn b64url(bytes: &[u8]) -> String {
        crate::security::base64::encode(bytes)
            .trim_end_matches('=')
            .replace('+', "-")
            .replace('/', "_")
    }

    /// A P-256 signing key with its JWK.
    pub struct TestKey {
        pkcs8: Vec<u8>,
        pub jwk: Value,
    }

    impl TestKey {
        pub fn new(kid: &str) -> TestKey {
            let rng = SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .unwrap()
                .as_ref()
                .to_vec();
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng).unwrap();
            let point = pair.public_key().as_ref();
            let jwk = json!({
                "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
                "x": b64url(&point[1..33]), "y": b64url(&point[33..65]),
            });
            TestKey { pkcs8, jwk }
        }

        pub fn sign(&self, claims: &Value) -> String {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = self.jwk["kid"].as_str().map(String::from);
            jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&self.pkcs8)).unwrap()
        }
    }

    pub fn jwks(keys: &[&TestKey]) -> String {
        json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
    }

    pub fn config(jwks_file: &Path) -> OAuthBearerConfig {
        OAuthBearerConfig {
            jwks_file: Some(jwks_file.to_path_buf()),
            expected_audience: vec!["spate".to_string()],
            expected_issuer: Some("https://idp.test".to_string()),
            sub_claim_name: "sub".to_string(),
            scope_claim_name: "scope".to_string(),
            clock_skew_seconds: 30,
            reload_interval_ms: 0,
        }
    }

    /// Claims that pass `config`'s checks, for `sub`, expiring in `ttl` seconds.
    pub fn claims(sub: &str, ttl: i64) -> Value {
        let now = now_secs() as i64;
        json!({"sub": sub, "aud": "spate", "iss": "https://idp.test", "iat": now, "exp": now + ttl, "scope": "read write"})
    }

    fn validator(keys: &[&TestKey]) -> (tempfile::TempDir, Validator) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, jwks(keys)).unwrap();
        let v = Validator::new(&config(&path)).unwrap();
        (dir, v)
    }

    #[test]
    fn initial_responses() {
        let r = parse_initial_response(b"n,,\x01auth=Bearer abc.def.ghi\x01\x01").unwrap();
        assert_eq!((r.authzid, r.token), ("", "abc.def.ghi"));
        let r = parse_initial_response(
            b"n,a=alice,\x01host=h\x01auth=bearer  tok-en_~+/.x==\x01traceId=1 2\x01\x01",
        )
        .unwrap();
        assert_eq!(r.authzid, "alice");
        assert_eq!(r.token, "tok-en_~+/.x==");
        assert_eq!(r.extensions, vec![("host", "h"), ("traceId", "1 2")]);
        for bad in [
            &b""[..],
            b"y,,\x01auth=Bearer t\x01\x01",
            b"n,,\x01auth=Bearer t\x01",
            b"n,,\x01\x01",
            b"n,,\x01host=h\x01\x01",
            b"n,,\x01auth=Basic dXNlcg==\x01\x01",
            b"n,,\x01auth=Bearer \x01\x01",
            b"n,,\x01auth=Bearer a b\x01\x01",
            b"n,,\x01auth=Bearer t\x01k=\x01\x01",
            b"n,,\x01auth=Bearer t\x011=v\x01\x01",
            b"n,a=,\x01auth=Bearer t\x01\x01",
            b"n,a=x=y,\x01auth=Bearer t\x01\x01",
            b"n,\xff,\x01auth=Bearer t\x01\x01",
        ] {
            assert!(
                parse_initial_response(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let huge = format!(
            "n,,\x01auth=Bearer {}\x01\x01",
            "a".repeat(MAX_CLIENT_RESPONSE)
        );
        assert!(parse_initial_response(huge.as_bytes())
            .unwrap_err()
            .contains("at most"));
    }

    #[test]
    fn a_valid_token() {
        let key = TestKey::new("k1");
        let (_dir, v) = validator(&[&key]);
        let t = v.validate(&key.sign(&claims("alice", 300))).unwrap();
        assert_eq!(t.subject, "alice");
        assert_eq!(t.scopes, vec!["read", "write"]);
        let left = t.expires_ms as i64 - now_ms() as i64;
        assert!((290_000..=300_000).contains(&left), "{left}");
        // A list audience naming this broker, a list scope.
        let mut c = claims("bob", 60);
        c["aud"] = json!(["other", "spate"]);
        c["scope"] = json!(["a", "b"]);
        let t = v.validate(&key.sign(&c)).unwrap();
        assert_eq!((t.subject.as_str(), t.scopes.len()), ("bob", 2));
        // Expired within the clock skew still passes.
        assert!(v.validate(&key.sign(&claims("alice", -10))).is_ok());
    }

    #[test]
    fn refused_tokens() {
        let key = TestKey::new("k1");
        let (_dir, v) = validator(&[&key]);
        let refused = |c: &Value| v.validate(&key.sign(c)).unwrap_err();
        assert!(refused(&claims("alice", -120)).contains("expired"));
        let mut c = claims("alice", 60);
        c["aud"] = json!("kafka");
        assert!(refused(&c).contains("audience"));
        c["aud"] = json!(["kafka", "other"]);
        assert!(refused(&c).contains("audience"));
        let mut c = claims("alice", 60);
        c.as_object_mut().unwrap().remove("aud");
        assert!(refused(&c).contains("aud"));
        let mut c = claims("alice", 60);
        c["iss"] = json!("https://evil.test");
        assert!(refused(&c).contains("issuer"));
        let mut c = claims("alice", 60);
        c.as_object_mut().unwrap().remove("exp");
        assert!(refused(&c).contains("exp"));
        c["exp"] = json!("tomorrow");
        assert!(refused(&c).contains("exp"));
        let mut c = claims("alice", 60);
        c.as_object_mut().unwrap().remove("sub");
        assert!(refused(&c).contains("sub"));
        c["sub"] = json!("  ");
        assert!(refused(&c).contains("sub"));
        c["sub"] = json!(7);
        assert!(refused(&c).contains("sub"));
        let mut c = claims("alice", 60);
        c["nbf"] = json!(now_secs() + 600);
        assert!(refused(&c).contains("nbf"));
        let mut c = claims("alice", 60);
        c["iat"] = json!(now_secs() + 600);
        assert!(refused(&c).contains("iat"));
        let mut c = claims("alice", 60);
        c["scope"] = json!({"a": 1});
        assert!(refused(&c).contains("scope"));
    }

    #[test]
    fn signatures_and_algorithms() {
        let key = TestKey::new("k1");
        let other = TestKey::new("k1");
        let (_dir, v) = validator(&[&key]);
        let good = key.sign(&claims("alice", 60));
        // Signed by another key with the same kid.
        let forged = other.sign(&claims("alice", 60));
        assert!(v.validate(&forged).unwrap_err().contains("signature"));
        // A payload swapped under a valid signature.
        let parts: Vec<&str> = good.split('.').collect();
        let payload = b64url(claims("mallory", 60).to_string().as_bytes());
        let swapped = format!("{}.{payload}.{}", parts[0], parts[2]);
        assert!(v.validate(&swapped).unwrap_err().contains("signature"));
        // An unknown kid.
        let stranger = TestKey::new("k2");
        assert!(v
            .validate(&stranger.sign(&claims("alice", 60)))
            .unwrap_err()
            .contains("kid"));
        // Unsecured (alg none) and HMAC tokens are refused whatever they say.
        let none_header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
        let unsecured = format!("{none_header}.{}.", parts[1]);
        assert!(v.validate(&unsecured).is_err());
        let hmac = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims("alice", 60),
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert!(v.validate(&hmac).unwrap_err().contains("HS256"));
        // Garbage.
        for bad in ["", "a.b", "a.b.c", "....", &"x".repeat(100_000)] {
            assert!(v.validate(bad).is_err());
        }
        // A token without a kid is tried against every key that fits.
        let (_dir2, v2) = validator(&[&other, &key]);
        let mut header = Header::new(Algorithm::ES256);
        header.kid = None;
        let no_kid = jsonwebtoken::encode(
            &header,
            &claims("alice", 60),
            &EncodingKey::from_ec_der(&key.pkcs8),
        )
        .unwrap();
        assert_eq!(v2.validate(&no_kid).unwrap().subject, "alice");
    }

    #[test]
    fn custom_claim_names_and_no_audience() {
        let key = TestKey::new("k1");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, jwks(&[&key])).unwrap();
        let mut c = config(&path);
        c.expected_audience.clear();
        c.expected_issuer = None;
        c.sub_claim_name = "client_id".to_string();
        let v = Validator::new(&c).unwrap();
        let now = now_secs();
        let t = v
            .validate(&key.sign(&json!({"client_id": "svc", "exp": now + 60, "aud": "x"})))
            .unwrap();
        assert_eq!(t.subject, "svc");
        assert!(t.scopes.is_empty());
        assert!(v
            .validate(&key.sign(&json!({"sub": "svc", "exp": now + 60})))
            .unwrap_err()
            .contains("client_id"));
    }

    #[test]
    fn key_files() {
        assert!(parse_keys(br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).is_err());
        assert!(parse_keys(br#"{"keys":[]}"#).is_err());
        assert!(parse_keys(b"not json").is_err());
        // An encryption key is skipped.
        let key = TestKey::new("k1");
        let mut enc = key.jwk.clone();
        enc["use"] = json!("enc");
        let set = json!({ "keys": [enc, key.jwk] }).to_string();
        assert_eq!(parse_keys(set.as_bytes()).unwrap().len(), 1);
        // A private key (the repository's test certificate key) is not a public key.
        assert!(parse_keys(include_bytes!("testdata/server.key")).is_err());
    }

    #[test]
    fn keys_reload_when_the_file_changes() {
        let (old, new) = (TestKey::new("old"), TestKey::new("new"));
        let (dir, v) = validator(&[&old]);
        assert!(!v.reload_if_changed().unwrap());
        let (old_token, new_token) = (
            old.sign(&claims("alice", 60)),
            new.sign(&claims("alice", 60)),
        );
        assert!(v.validate(&old_token).is_ok());
        assert!(v.validate(&new_token).is_err());
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, jwks(&[&new])).unwrap();
        assert!(v.reload_if_changed().unwrap());
        assert!(v.validate(&old_token).is_err());
        assert!(v.validate(&new_token).is_ok());
        // A file that does not load keeps the keys there are.
        std::fs::write(&path, "{").unwrap();
        assert!(v.reload_if_changed().is_err());
        assert!(v.validate(&new_token).is_ok());
    }
}
