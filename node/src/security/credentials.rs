//! SCRAM credentials as an administrator manages them: what AlterUserScramCredentials
//! changes (planned into metadata records by the active controller, with the checks
//! and errors of Kafka's `ScramControlManager`) and what DescribeUserScramCredentials
//! shows (from the image, as Kafka's `ScramImage.describe`: mechanisms and iterations,
//! never salts or keys).

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use spate_net::metadata_frame::ApiMessageAndVersion;
use spate_net::ErrorCode;

use super::config::BootstrapScram;
use super::scram::{ScramCredential, ScramMechanism, MAX_ITERATIONS, MIN_ITERATIONS};
use crate::metadata::records;
use crate::metadata::MetadataImage;

/// Most SCRAM credentials the cluster keeps (users times mechanisms): every broker
/// holds them all in memory.
pub const MAX_CREDENTIALS: usize = 50_000;
/// Longest salt or salted password accepted (clients send 16-64 bytes).
const MAX_SECRET_LEN: usize = 1024;

/// A credential to set, as the client sends it: the password is salted and hashed
/// (PBKDF2) by the client, never sent.
#[derive(Clone, Serialize, Deserialize)]
pub struct ScramUpsertion {
    pub user: String,
    /// Kafka's mechanism type (1: SHA-256, 2: SHA-512; anything else is refused).
    pub mechanism: i8,
    pub iterations: i32,
    pub salt: Vec<u8>,
    pub salted_password: Vec<u8>,
}

/// The salted password stays out of logs.
impl fmt::Debug for ScramUpsertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramUpsertion")
            .field("user", &self.user)
            .field("mechanism", &self.mechanism)
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScramDeletion {
    pub user: String,
    pub mechanism: i8,
}

/// The outcome for one user: error code (0: changed) and message.
pub type UserOutcome = (String, i16, Option<String>);

fn refused(user: &str, code: ErrorCode, message: &str) -> UserOutcome {
    (user.to_string(), code.code(), Some(message.to_string()))
}

/// Kafka's checks of a user name and mechanism.
fn checked_mechanism(
    user: &str,
    mechanism: i8,
) -> Result<ScramMechanism, (ErrorCode, &'static str)> {
    if user.is_empty() {
        return Err((
            ErrorCode::UnacceptableCredential,
            "Username must not be empty",
        ));
    }
    ScramMechanism::from_type(mechanism).ok_or((
        ErrorCode::UnsupportedSaslMechanism,
        "Unknown SCRAM mechanism",
    ))
}

/// The users of one request refused so far, in request order.
#[derive(Default)]
struct Refusals {
    outcomes: Vec<UserOutcome>,
    users: HashSet<String>,
}

impl Refusals {
    fn refuse(&mut self, user: &str, code: ErrorCode, message: &str) {
        self.outcomes.push(refused(user, code, message));
        self.users.insert(user.to_string());
    }
}

const DUPLICATE: &str = "A user credential cannot be altered twice in the same request";

/// The records for an AlterUserScramCredentials request against `image`, and one
/// outcome per user: changed deletions, then changed upsertions, then refusals (each
/// in request order). A user named twice in one request (any mechanisms, deletion or
/// upsertion) is refused with DUPLICATE_RESOURCE, as Kafka does.
pub fn plan_alter(
    image: &MetadataImage,
    upsertions: &[ScramUpsertion],
    deletions: &[ScramDeletion],
) -> (Vec<ApiMessageAndVersion>, Vec<UserOutcome>) {
    let mut refusals = Refusals::default();
    let mut to_delete: Vec<(&str, ScramMechanism)> = Vec::new();
    let mut to_upsert: Vec<(&ScramUpsertion, ScramMechanism)> = Vec::new();
    for d in deletions {
        if refusals.users.contains(&d.user) {
            continue;
        }
        if let Some(i) = to_delete.iter().position(|(u, _)| *u == d.user) {
            to_delete.remove(i);
            refusals.refuse(&d.user, ErrorCode::DuplicateResource, DUPLICATE);
            continue;
        }
        match checked_mechanism(&d.user, d.mechanism) {
            Err((code, message)) => refusals.refuse(&d.user, code, message),
            Ok(m) if image.scram_credential(&d.user, m).is_none() => refusals.refuse(
                &d.user,
                ErrorCode::ResourceNotFound,
                "Attempt to delete a user credential that does not exist",
            ),
            Ok(m) => to_delete.push((&d.user, m)),
        }
    }
    for u in upsertions {
        if refusals.users.contains(&u.user) {
            continue;
        }
        let earlier_delete = to_delete.iter().position(|(user, _)| *user == u.user);
        let earlier_upsert = to_upsert.iter().position(|(e, _)| e.user == u.user);
        if earlier_delete.is_some() || earlier_upsert.is_some() {
            if let Some(i) = earlier_delete {
                to_delete.remove(i);
            }
            if let Some(i) = earlier_upsert {
                to_upsert.remove(i);
            }
            refusals.refuse(&u.user, ErrorCode::DuplicateResource, DUPLICATE);
            continue;
        }
        let unacceptable = ErrorCode::UnacceptableCredential;
        match checked_mechanism(&u.user, u.mechanism) {
            Err((code, message)) => refusals.refuse(&u.user, code, message),
            Ok(_) if u.iterations < MIN_ITERATIONS => {
                refusals.refuse(&u.user, unacceptable, "Too few iterations")
            }
            Ok(_) if u.iterations > MAX_ITERATIONS => {
                refusals.refuse(&u.user, unacceptable, "Too many iterations")
            }
            Ok(_) if u.salt.len() > MAX_SECRET_LEN || u.salted_password.len() > MAX_SECRET_LEN => {
                refusals.refuse(&u.user, unacceptable, "Salt or salted password too long")
            }
            Ok(m) => to_upsert.push((u, m)),
        }
    }
    let mut records = Vec::new();
    let mut outcomes: Vec<UserOutcome> = Vec::new();
    for (user, m) in to_delete {
        records.push(records::remove_scram_credential(user, m));
        outcomes.push((user.to_string(), 0, None));
    }
    // Deletions of this request make room before new credentials are counted.
    let mut count = image.scram_credential_count() - outcomes.len();
    for (u, m) in to_upsert {
        let new = image.scram_credential(&u.user, m).is_none();
        if new && count >= MAX_CREDENTIALS {
            refusals.refuse(
                &u.user,
                ErrorCode::UnacceptableCredential,
                &format!("Too many SCRAM credentials (at most {MAX_CREDENTIALS})"),
            );
            continue;
        }
        count += usize::from(new);
        let credential =
            ScramCredential::from_salted_password(m, &u.salt, &u.salted_password, u.iterations);
        records.push(records::scram_credential(&u.user, m, &credential));
        outcomes.push((u.user.clone(), 0, None));
    }
    outcomes.extend(refusals.outcomes);
    (records, outcomes)
}

/// The records of `[[sasl.bootstrap_scram]]`: each password salted (32 random bytes)
/// and hashed here, as kafka-storage.sh does when it formats a log.
pub fn bootstrap_records(entries: &[BootstrapScram]) -> Vec<ApiMessageAndVersion> {
    use ring::rand::SecureRandom;
    let random = ring::rand::SystemRandom::new();
    entries
        .iter()
        .map(|b| {
            let m = ScramMechanism::from_name(&b.mechanism).expect("checked with the config");
            let iterations =
                std::num::NonZeroU32::new(b.iterations as u32).expect("checked with the config");
            let mut salt = [0u8; 32];
            random
                .fill(&mut salt)
                .expect("the system's random number generator failed");
            let salted = m.salted_password(&b.password, &salt, iterations);
            let credential = ScramCredential::from_salted_password(m, &salt, &salted, b.iterations);
            records::scram_credential(&b.user, m, &credential)
        })
        .collect()
}

/// Per user: error code, message, and (mechanism type, iterations) of each credential.
pub type UserDescription = (String, i16, Option<String>, Vec<(i8, i32)>);

/// DescribeUserScramCredentials: the named users (every user with a credential when
/// `users` is `None` or empty), RESOURCE_NOT_FOUND for users without one,
/// DUPLICATE_RESOURCE for users named twice.
pub fn describe(image: &MetadataImage, users: Option<&[String]>) -> Vec<UserDescription> {
    let mut wanted: BTreeMap<&str, bool> = BTreeMap::new();
    match users {
        Some(names) if !names.is_empty() => {
            for n in names {
                let seen = wanted.contains_key(n.as_str());
                wanted.insert(n, seen);
            }
        }
        _ => {
            for user in image.scram.keys() {
                wanted.insert(user, false);
            }
        }
    }
    wanted
        .into_iter()
        .map(|(user, duplicate)| {
            if duplicate {
                return (
                    user.to_string(),
                    ErrorCode::DuplicateResource.code(),
                    Some(format!("Cannot describe SCRAM credentials for the same user twice in a single request: {user}")),
                    Vec::new(),
                );
            }
            match image.scram.get(user) {
                Some(credentials) => (
                    user.to_string(),
                    0,
                    None,
                    credentials
                        .iter()
                        .map(|(m, c)| (m.type_id(), c.iterations))
                        .collect(),
                ),
                None => (
                    user.to_string(),
                    ErrorCode::ResourceNotFound.code(),
                    Some(format!("Attempt to describe a user credential that does not exist: {user}")),
                    Vec::new(),
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upsert(user: &str, mechanism: i8, iterations: i32) -> ScramUpsertion {
        ScramUpsertion {
            user: user.to_string(),
            mechanism,
            iterations,
            salt: b"salt".to_vec(),
            salted_password: vec![1; 32],
        }
    }

    fn delete(user: &str, mechanism: i8) -> ScramDeletion {
        ScramDeletion {
            user: user.to_string(),
            mechanism,
        }
    }

    fn codes(outcomes: &[UserOutcome]) -> Vec<(&str, i16)> {
        outcomes.iter().map(|(u, c, _)| (u.as_str(), *c)).collect()
    }

    #[test]
    fn upsert_describe_delete() {
        let mut image = MetadataImage::default();
        let (records, outcomes) = plan_alter(
            &image,
            &[upsert("alice", 2, 8192), upsert("bob", 1, 4096)],
            &[],
        );
        assert_eq!(codes(&outcomes), [("alice", 0), ("bob", 0)]);
        image.replay_all(&records);
        let stored = image
            .scram_credential("alice", ScramMechanism::Sha512)
            .unwrap();
        assert_eq!(
            stored,
            &ScramCredential::from_salted_password(ScramMechanism::Sha512, b"salt", &[1; 32], 8192)
        );
        let all = describe(&image, None);
        assert_eq!(
            all.iter()
                .map(|(u, c, _, infos)| (u.as_str(), *c, infos.clone()))
                .collect::<Vec<_>>(),
            [("alice", 0, vec![(2, 8192)]), ("bob", 0, vec![(1, 4096)])]
        );
        let names = [
            "carol".to_string(),
            "alice".to_string(),
            "alice".to_string(),
        ];
        let some = describe(&image, Some(&names));
        assert_eq!(
            some.iter()
                .map(|(u, c, m, _)| (u.as_str(), *c, m.clone()))
                .collect::<Vec<_>>(),
            [
                ("alice", 92, Some("Cannot describe SCRAM credentials for the same user twice in a single request: alice".into())),
                ("carol", 91, Some("Attempt to describe a user credential that does not exist: carol".into())),
            ]
        );
        let (records, outcomes) = plan_alter(&image, &[], &[delete("bob", 1), delete("alice", 1)]);
        assert_eq!(codes(&outcomes), [("bob", 0), ("alice", 91)]);
        image.replay_all(&records);
        assert!(image.scram.get("bob").is_none());
        assert_eq!(image.scram_credential_count(), 1);
    }

    #[test]
    fn kafka_refusals() {
        let image = MetadataImage::default();
        let (records, outcomes) = plan_alter(
            &image,
            &[
                upsert("", 1, 4096),
                upsert("few", 1, 4095),
                upsert("many", 2, 16385),
                upsert("odd", 3, 4096),
                upsert("twice", 1, 4096),
                upsert("twice", 2, 4096),
                upsert("gone", 1, 4096),
                upsert("ok", 1, 16384),
            ],
            &[delete("gone", 0)],
        );
        assert_eq!(records.len(), 1);
        let by_user: BTreeMap<&str, (i16, Option<String>)> = outcomes
            .iter()
            .map(|(u, c, m)| (u.as_str(), (*c, m.clone())))
            .collect();
        let expect = |user: &str, code: ErrorCode, message: &str| {
            assert_eq!(
                by_user[user],
                (code.code(), Some(message.to_string())),
                "{user}"
            );
        };
        expect(
            "",
            ErrorCode::UnacceptableCredential,
            "Username must not be empty",
        );
        expect(
            "few",
            ErrorCode::UnacceptableCredential,
            "Too few iterations",
        );
        expect(
            "many",
            ErrorCode::UnacceptableCredential,
            "Too many iterations",
        );
        expect(
            "odd",
            ErrorCode::UnsupportedSaslMechanism,
            "Unknown SCRAM mechanism",
        );
        expect("twice", ErrorCode::DuplicateResource, DUPLICATE);
        // A refused deletion keeps the user's later upsertion from being made.
        expect(
            "gone",
            ErrorCode::UnsupportedSaslMechanism,
            "Unknown SCRAM mechanism",
        );
        assert_eq!(by_user["ok"], (0, None));
        // Every user gets exactly one result.
        assert_eq!(outcomes.len(), by_user.len());
    }

    /// A bootstrap credential lets its user in with its password (a client and the
    /// server exchange run on what the records hold), and two of them get their own salts.
    #[test]
    fn bootstrap_credentials_authenticate() {
        use crate::security::sasl_client::{ClientExchange, ClientMechanism, SaslCredentials};
        use crate::security::scram::{ScramStep, ServerExchange};
        let entry = |user: &str| BootstrapScram {
            mechanism: "SCRAM-SHA-512".into(),
            user: user.into(),
            password: "broker-secret".into(),
            iterations: 4096,
        };
        let mut image = MetadataImage::default();
        image.replay_all(&bootstrap_records(&[entry("broker"), entry("other")]));
        let m = ScramMechanism::Sha512;
        let credential = image.scram_credential("broker", m).unwrap().clone();
        assert_eq!(credential.iterations, 4096);
        assert_ne!(
            credential.salt,
            image.scram_credential("other", m).unwrap().salt
        );
        let (mut client, first) = ClientExchange::start(&SaslCredentials {
            mechanism: ClientMechanism::Scram(m),
            username: "broker".into(),
            password: "broker-secret".into(),
        })
        .unwrap();
        let mut server = ServerExchange::new(m);
        let Ok(ScramStep::Challenge(challenge)) =
            server.evaluate(&first, |_| Some(credential.clone()))
        else {
            panic!("no challenge");
        };
        let last = client.step(&challenge).unwrap().unwrap();
        let Ok(ScramStep::Complete { user, reply }) = server.evaluate(&last, |_| None) else {
            panic!("refused");
        };
        assert_eq!(user, "broker");
        assert_eq!(client.step(&reply).unwrap(), None);
    }
}
