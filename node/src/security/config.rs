//! The `[ssl]` and `[sasl]` tables of the broker's TOML (docs/security.md).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::bail;
use serde::Deserialize;

/// Kafka's `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    None,
    Requested,
    Required,
}

impl ClientAuth {
    /// Its value of `ssl.client.auth`, as the file spells it.
    pub fn name(self) -> &'static str {
        match self {
            ClientAuth::None => "none",
            ClientAuth::Requested => "requested",
            ClientAuth::Required => "required",
        }
    }
}

/// TLS of the SSL and SASL_SSL listeners. PEM files only (Kafka's `ssl.keystore.type=PEM`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SslConfig {
    /// The broker's certificate chain, leaf first (`ssl.keystore.location`).
    #[serde(default)]
    pub keystore_location: Option<PathBuf>,
    /// Its private key (PKCS#8, PKCS#1 or SEC1, unencrypted); default: the key in
    /// `keystore_location`, as in Kafka's PEM keystores.
    #[serde(default)]
    pub key_location: Option<PathBuf>,
    /// CA certificates client certificates are checked against (`ssl.truststore.location`).
    #[serde(default)]
    pub truststore_location: Option<PathBuf>,
    pub client_auth: ClientAuth,
    /// `ssl.principal.mapping.rules`.
    pub principal_mapping_rules: String,
    /// How often the files are checked for changes (0: never; a restart reloads them).
    pub reload_interval_ms: u64,
    /// `ssl.allow.dn.changes`: a listener's new keystore may change the subject.
    #[serde(default)]
    pub allow_dn_changes: bool,
    /// `ssl.allow.san.changes`: it may drop subjectAltNames.
    #[serde(default)]
    pub allow_san_changes: bool,
    /// The files of single listeners, by listener name in lower case: the dynamic
    /// `listener.name.<listener>.ssl.keystore.location` and `...truststore.location`
    /// (`broker_config/listener_ssl.rs`). Never in the file.
    #[serde(skip)]
    pub listener_files: BTreeMap<String, ListenerFiles>,
}

/// A listener's own TLS files, in place of `[ssl]`'s. A keystore of its own holds its
/// private key too (Kafka's PEM keystore file): `key_location` goes with `[ssl]`'s
/// keystore, and a new certificate comes with a new key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerFiles {
    pub keystore_location: Option<PathBuf>,
    pub truststore_location: Option<PathBuf>,
}

impl SslConfig {
    /// The TLS settings of listener `name`: `[ssl]` with the listener's own files.
    pub fn for_listener(&self, name: &str) -> SslConfig {
        let mut ssl = self.clone();
        ssl.listener_files.clear();
        if let Some(files) = self.listener_files.get(&name.to_ascii_lowercase()) {
            if let Some(k) = &files.keystore_location {
                ssl.keystore_location = Some(k.clone());
                ssl.key_location = None;
            }
            if let Some(t) = &files.truststore_location {
                ssl.truststore_location = Some(t.clone());
            }
        }
        ssl
    }

    /// The files a TLS configuration is built from.
    pub fn files(&self) -> [Option<&PathBuf>; 3] {
        [
            self.keystore_location.as_ref(),
            self.key_location.as_ref(),
            self.truststore_location.as_ref(),
        ]
    }
}

/// SASL of the SASL_PLAINTEXT and SASL_SSL listeners.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    /// `sasl.enabled.mechanisms`.
    pub enabled_mechanisms: Vec<String>,
    /// `sasl.mechanism.inter.broker.protocol`: how this broker authenticates to other
    /// brokers when the inter-broker listener uses SASL.
    pub inter_broker_mechanism: String,
    /// The user and password it authenticates as (the `username` and `password` of
    /// Kafka's inter-broker JAAS configuration).
    #[serde(default)]
    pub inter_broker_username: Option<String>,
    #[serde(default)]
    pub inter_broker_password: Option<String>,
    #[serde(default)]
    pub plain: PlainConfig,
    /// SASL/OAUTHBEARER's token validation (Kafka's `sasl.oauthbearer.*` broker settings).
    pub oauthbearer: OAuthBearerConfig,
    /// SCRAM credentials written into a new metadata log with its first records
    /// (Kafka's `kafka-storage.sh format --add-scram`): the brokers' own user, so that
    /// SCRAM between brokers works from the start.
    #[serde(default)]
    pub bootstrap_scram: Vec<BootstrapScram>,
}

/// One `[[sasl.bootstrap_scram]]` entry.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapScram {
    /// SCRAM-SHA-256 or SCRAM-SHA-512.
    pub mechanism: String,
    pub user: String,
    pub password: String,
    /// PBKDF2 iterations (Kafka's default 4096; 4096 to 16384).
    #[serde(default = "default_iterations")]
    pub iterations: i32,
}

fn default_iterations() -> i32 {
    super::scram::MIN_ITERATIONS
}

/// The password stays out of logs.
impl std::fmt::Debug for BootstrapScram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapScram")
            .field("mechanism", &self.mechanism)
            .field("user", &self.user)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// How OAUTHBEARER tokens (signed JWTs) are checked: `[sasl.oauthbearer]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthBearerConfig {
    /// The verification keys: a JWK Set (JSON), or one PEM public key (Kafka's
    /// `sasl.oauthbearer.jwks.endpoint.url` with a `file:` URL). Required when
    /// OAUTHBEARER is enabled.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// `sasl.oauthbearer.expected.audience`: when not empty, a token's `aud` must name
    /// one of them.
    pub expected_audience: Vec<String>,
    /// `sasl.oauthbearer.expected.issuer`: when set, a token's `iss` must be it.
    #[serde(default)]
    pub expected_issuer: Option<String>,
    /// `sasl.oauthbearer.sub.claim.name`: the claim naming the principal.
    pub sub_claim_name: String,
    /// `sasl.oauthbearer.scope.claim.name`.
    pub scope_claim_name: String,
    /// `sasl.oauthbearer.clock.skew.seconds`: leeway for `exp`, `nbf` and `iat`.
    pub clock_skew_seconds: u64,
    /// How often `jwks_file` is read again (0: never; a restart reloads it).
    pub reload_interval_ms: u64,
}

/// SASL/PLAIN's users: `[sasl.plain.users]`, user name = password (as Kafka's
/// `user_NAME="password"` JAAS options).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlainConfig {
    #[serde(default)]
    pub users: BTreeMap<String, String>,
}

/// The mechanisms this broker can run.
pub const SUPPORTED_MECHANISMS: &[&str] =
    &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"];

impl SaslConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        for m in &self.enabled_mechanisms {
            if !SUPPORTED_MECHANISMS.contains(&m.as_str()) {
                bail!("sasl.enabled_mechanisms: {m} is not supported (supported: {SUPPORTED_MECHANISMS:?})");
            }
        }
        for b in &self.bootstrap_scram {
            if super::scram::ScramMechanism::from_name(&b.mechanism).is_none() {
                bail!(
                    "sasl.bootstrap_scram: mechanism {:?} is not SCRAM-SHA-256 or SCRAM-SHA-512",
                    b.mechanism
                );
            }
            if b.user.is_empty() || b.password.is_empty() {
                bail!("sasl.bootstrap_scram: user and password must not be empty");
            }
            let (min, max) = (super::scram::MIN_ITERATIONS, super::scram::MAX_ITERATIONS);
            if !(min..=max).contains(&b.iterations) {
                bail!(
                    "sasl.bootstrap_scram: iterations {} for {} is not between {min} and {max}",
                    b.iterations,
                    b.user
                );
            }
        }
        let o = &self.oauthbearer;
        if self.enabled_mechanisms.iter().any(|m| m == "OAUTHBEARER") && o.jwks_file.is_none() {
            bail!(
                "sasl.enabled_mechanisms has OAUTHBEARER but sasl.oauthbearer.jwks_file is not set"
            );
        }
        if o.sub_claim_name.trim().is_empty() || o.scope_claim_name.trim().is_empty() {
            bail!("sasl.oauthbearer: sub_claim_name and scope_claim_name must not be empty");
        }
        Ok(())
    }
}

/// Authorization (Kafka's `authorizer.class.name` set to the StandardAuthorizer, and
/// its settings). Off by default, as in Kafka.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizerConfig {
    /// Check every request against the ACLs.
    #[serde(default)]
    pub enable: bool,
    /// `super.users`: principals allowed everything, `User:alice;User:bob`.
    #[serde(default)]
    pub super_users: String,
    /// `allow.everyone.if.no.acl.found`: a resource no ACL covers is open to everyone.
    #[serde(default)]
    pub allow_everyone_if_no_acl_found: bool,
}

impl AuthorizerConfig {
    pub fn super_user_set(&self) -> std::collections::HashSet<String> {
        self.super_users
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        for user in self.super_user_set() {
            if !user
                .split_once(':')
                .is_some_and(|(t, n)| !t.is_empty() && !n.is_empty())
            {
                bail!("authorizer.super_users: `{user}` is not a principal (`User:name`)");
            }
        }
        Ok(())
    }
}
