//! The client quotas of the metadata image (Kafka's `ClientQuotasImage`): quota values
//! by entity, changed by `ClientQuotaRecord`s; planning an AlterClientQuotas (Kafka's
//! `ClientQuotaControlManager` checks); answering DescribeClientQuotas filters; and
//! which quota applies to a connection (the most specific of Kafka's eight levels).

use std::collections::BTreeMap;

use spate_net::metadata_frame::ApiMessageAndVersion;
use spate_net::metadata_records::client_quota_record::EntityData;
use spate_net::metadata_records::{ClientQuotaRecord, MetadataRecord};
use spate_net::ErrorCode;

use super::QuotaKind;

pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";
pub const IP: &str = "ip";

/// Entity type → name; a `None` name is the type's default entity (`<default>`).
pub type Entity = BTreeMap<String, Option<String>>;

/// The value types of quota keys, as Kafka's `QuotaConfig` defines them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueType {
    Long,
    Int,
    Double,
}

/// The keys a user / client-id entity may set.
const USER_CLIENT_KEYS: &[(&str, ValueType)] = &[
    ("producer_byte_rate", ValueType::Long),
    ("consumer_byte_rate", ValueType::Long),
    ("request_percentage", ValueType::Double),
    ("controller_mutation_rate", ValueType::Double),
];
/// The keys an ip entity may set.
const IP_KEYS: &[(&str, ValueType)] = &[("connection_creation_rate", ValueType::Int)];

/// Every entity's quotas, from the metadata log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientQuotas {
    entities: BTreeMap<Entity, BTreeMap<String, f64>>,
    /// How many entities set each key: whether a request needs to look for its
    /// client's quota of a kind at all.
    entities_per_key: BTreeMap<String, usize>,
}

/// The entities a DescribeClientQuotas filter matched, with their quotas.
pub type Described<'a> = Vec<(&'a Entity, &'a BTreeMap<String, f64>)>;

/// One AlterClientQuotas entry: the entity's (type, name) components as sent, and its
/// changes: key → new value, or `None` to remove it.
pub type QuotaAlteration = (Vec<(String, Option<String>)>, Vec<(String, Option<f64>)>);

/// Which quota applies to a request, and whose usage it is measured on: Kafka's metric
/// tags (the user and client id, either left empty when the quota's level does not
/// name that type), so that e.g. a `/users/<default>` quota holds every user to it
/// separately.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub limit: f64,
    pub user_tag: String,
    pub client_tag: String,
}

impl ClientQuotas {
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    /// Whether any entity has a quota of `kind`.
    pub fn sets(&self, kind: QuotaKind) -> bool {
        self.entities_per_key.contains_key(kind.key())
    }

    pub fn replay(&mut self, r: &ClientQuotaRecord) {
        let entity: Entity = r
            .entity
            .iter()
            .map(|e| (e.entity_type.clone(), e.entity_name.clone()))
            .collect();
        if r.remove {
            if let Some(values) = self.entities.get_mut(&entity) {
                if values.remove(&r.key).is_some() {
                    if let Some(n) = self.entities_per_key.get_mut(&r.key) {
                        *n -= 1;
                        if *n == 0 {
                            self.entities_per_key.remove(&r.key);
                        }
                    }
                }
                if values.is_empty() {
                    self.entities.remove(&entity);
                }
            }
        } else {
            let values = self.entities.entry(entity).or_default();
            if values.insert(r.key.clone(), r.value).is_none() {
                *self.entities_per_key.entry(r.key.clone()).or_default() += 1;
            }
        }
    }

    /// The records that rebuild these quotas (a snapshot).
    pub fn records(&self) -> Vec<ApiMessageAndVersion> {
        self.entities
            .iter()
            .flat_map(|(entity, values)| {
                values
                    .iter()
                    .map(move |(key, value)| record(entity, key, Some(*value)))
            })
            .collect()
    }

    fn value(&self, entity: &Entity, key: &str) -> Option<f64> {
        self.entities.get(entity)?.get(key).copied()
    }

    /// The quota of `kind` for principal name `user` with client id `client_id`:
    /// the first of Kafka's eight levels that sets it.
    pub fn applied(&self, kind: QuotaKind, user: &str, client_id: &str) -> Option<Applied> {
        let key = kind.key();
        let u = |name: Option<&str>| (USER.to_string(), name.map(String::from));
        let c = |name: Option<&str>| (CLIENT_ID.to_string(), name.map(String::from));
        let levels: [(Entity, bool, bool); 8] = [
            (
                Entity::from([u(Some(user)), c(Some(client_id))]),
                true,
                true,
            ),
            (Entity::from([u(Some(user)), c(None)]), true, true),
            (Entity::from([u(Some(user))]), true, false),
            (Entity::from([u(None), c(Some(client_id))]), true, true),
            (Entity::from([u(None), c(None)]), true, true),
            (Entity::from([u(None)]), true, false),
            (Entity::from([c(Some(client_id))]), false, true),
            (Entity::from([c(None)]), false, true),
        ];
        levels.into_iter().find_map(|(entity, by_user, by_client)| {
            self.value(&entity, key).map(|limit| Applied {
                limit,
                user_tag: if by_user { user.into() } else { String::new() },
                client_tag: if by_client {
                    client_id.into()
                } else {
                    String::new()
                },
            })
        })
    }

    /// The connection creation rate allowed to `ip`: its own quota, else the `<default>`
    /// ip entity's.
    pub fn connection_rate(&self, ip: &str) -> Option<f64> {
        let key = IP_KEYS[0].0;
        let of = |name: Option<&str>| Entity::from([(IP.to_string(), name.map(String::from))]);
        self.value(&of(Some(ip)), key)
            .or_else(|| self.value(&of(None), key))
    }

    /// Whether any ip entity has a quota (so that accepting a connection may skip the
    /// lookup otherwise).
    pub fn has_ip_quotas(&self) -> bool {
        self.entities.keys().any(|e| e.contains_key(IP))
    }

    /// Plans an AlterClientQuotas: the records of the entries that pass the checks (one
    /// atomic write, as Kafka's) and each entry's outcome, in request order.
    pub fn plan_alter(
        &self,
        entries: &[QuotaAlteration],
    ) -> (Vec<ApiMessageAndVersion>, Vec<(i16, Option<String>)>) {
        let mut records = Vec::new();
        let mut outcomes = Vec::with_capacity(entries.len());
        let mut seen: Vec<Entity> = Vec::new();
        for (components, ops) in entries {
            let outcome = check_entity(components).and_then(|entity| {
                if seen.contains(&entity) {
                    return Err(format!("Ignoring duplicate entity {}", describe(&entity)));
                }
                seen.push(entity.clone());
                let mut keys = Vec::with_capacity(ops.len());
                for (key, _) in ops {
                    if keys.contains(&key) {
                        return Err(format!(
                            "Duplicate quota key {key} not updating quota for this entity {}",
                            describe(&entity)
                        ));
                    }
                    keys.push(key);
                }
                let allowed = keys_for(&entity)?;
                let mut planned = Vec::new();
                for (key, value) in ops {
                    let current = self.value(&entity, key);
                    match value {
                        None if current.is_some() => planned.push(record(&entity, key, None)),
                        None => {}
                        Some(v) => {
                            check_value(allowed, key, *v)?;
                            if current != Some(*v) {
                                planned.push(record(&entity, key, Some(*v)));
                            }
                        }
                    }
                }
                Ok(planned)
            });
            match outcome {
                Ok(planned) => {
                    records.extend(planned);
                    outcomes.push((ErrorCode::None.code(), None));
                }
                Err(message) => {
                    outcomes.push((ErrorCode::InvalidRequest.code(), Some(message)));
                }
            }
        }
        (records, outcomes)
    }

    /// The entities a DescribeClientQuotas filter matches, with their quotas; `Err` is
    /// the request's error (code, message), as Kafka's `ClientQuotasImage.describe`.
    pub fn describe(
        &self,
        components: &[(String, i8, Option<String>)],
        strict: bool,
    ) -> Result<Described<'_>, (i16, String)> {
        const EXACT: i8 = 0;
        const DEFAULT: i8 = 1;
        const SPECIFIED: i8 = 2;
        let invalid = |m: String| (ErrorCode::InvalidRequest.code(), m);
        let mut exact: BTreeMap<&str, Option<&str>> = BTreeMap::new();
        let mut specified: Vec<&str> = Vec::new();
        for (entity_type, match_type, name) in components {
            let t = entity_type.as_str();
            if t.is_empty() {
                return Err(invalid("Invalid empty entity type.".into()));
            }
            if exact.contains_key(t) || specified.contains(&t) {
                return Err(invalid(format!(
                    "Entity type {t} cannot appear more than once in the filter."
                )));
            }
            if ![IP, USER, CLIENT_ID].contains(&t) {
                return Err((
                    ErrorCode::UnsupportedVersion.code(),
                    format!("Unsupported entity type {t}"),
                ));
            }
            match (*match_type, name) {
                (EXACT, Some(n)) => {
                    exact.insert(t, Some(n.as_str()));
                }
                (EXACT, None) => {
                    return Err(invalid(
                        "Request specified MATCH_TYPE_EXACT, but set match string to null.".into(),
                    ))
                }
                (DEFAULT, None) => {
                    exact.insert(t, None);
                }
                (DEFAULT, Some(_)) => {
                    return Err(invalid(
                        "Request specified MATCH_TYPE_DEFAULT, but also specified a match string."
                            .into(),
                    ))
                }
                (SPECIFIED, None) => specified.push(t),
                (SPECIFIED, Some(_)) => return Err(invalid(
                    "Request specified MATCH_TYPE_SPECIFIED, but also specified a match string."
                        .into(),
                )),
                (other, _) => return Err(invalid(format!("Unknown match type {other}"))),
            }
        }
        let has = |t: &str| exact.contains_key(t) || specified.contains(&t);
        if has(IP) && (has(USER) || has(CLIENT_ID)) {
            return Err(invalid(
                "Invalid entity filter component combination. IP filter component should not be used with user or clientId filter component.".into(),
            ));
        }
        Ok(self
            .entities
            .iter()
            .filter(|(entity, _)| {
                (!strict || entity.len() == exact.len() + specified.len())
                    && exact
                        .iter()
                        .all(|(t, n)| entity.get(*t).is_some_and(|v| v.as_deref() == *n))
                    && specified.iter().all(|t| entity.contains_key(*t))
            })
            .collect())
    }
}

fn record(entity: &Entity, key: &str, value: Option<f64>) -> ApiMessageAndVersion {
    ApiMessageAndVersion::latest(MetadataRecord::ClientQuota(ClientQuotaRecord {
        entity: entity
            .iter()
            .map(|(t, n)| EntityData {
                entity_type: t.clone(),
                entity_name: n.clone(),
            })
            .collect(),
        key: key.into(),
        value: value.unwrap_or(0.0),
        remove: value.is_none(),
    }))
}

/// `user=alice, client-id=<default>`, for messages.
fn describe(entity: &Entity) -> String {
    entity
        .iter()
        .map(|(t, n)| format!("{t}={}", n.as_deref().unwrap_or("<default>")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Kafka's `validateEntity`: known types, each once, no empty names.
fn check_entity(components: &[(String, Option<String>)]) -> Result<Entity, String> {
    if components.is_empty() {
        return Err("Invalid empty client quota entity".into());
    }
    let mut entity = Entity::new();
    for (t, name) in components {
        if entity.contains_key(t) {
            return Err(format!(
                "Invalid client quota entity, duplicate entity entry {t}"
            ));
        }
        if ![USER, CLIENT_ID, IP].contains(&t.as_str()) {
            return Err(format!("Unhandled client quota entity type: {t}"));
        }
        if name.as_deref() == Some("") {
            return Err(format!("Empty {t} not supported"));
        }
        entity.insert(t.clone(), name.clone());
    }
    Ok(entity)
}

/// Kafka's `configKeysForEntityType`: ip alone, or user and/or client-id.
fn keys_for(entity: &Entity) -> Result<&'static [(&'static str, ValueType)], String> {
    if let Some(ip) = entity.get(IP) {
        if entity.len() > 1 {
            return Err(
                "Invalid quota entity combination, IP entity should not be combined with User or ClientId"
                    .into(),
            );
        }
        if let Some(ip) = ip {
            if ip.parse::<std::net::IpAddr>().is_err() {
                return Err(format!("{ip} is not a valid IP or resolvable host."));
            }
        }
        return Ok(IP_KEYS);
    }
    Ok(USER_CLIENT_KEYS)
}

/// Kafka's `validateQuotaKeyValue`.
fn check_value(allowed: &[(&str, ValueType)], key: &str, value: f64) -> Result<(), String> {
    let Some((_, ty)) = allowed.iter().find(|(k, _)| *k == key) else {
        return Err(format!("Invalid configuration key {key}"));
    };
    if value.is_nan() || value <= 0.0 {
        return Err(format!("Quota {key} must be greater than 0"));
    }
    let max = match ty {
        ValueType::Double => return Ok(()),
        ValueType::Int => f64::from(i32::MAX),
        ValueType::Long => i64::MAX as f64,
    };
    if value > max {
        let ty = if *ty == ValueType::Int {
            "an INT"
        } else {
            "a LONG"
        };
        return Err(format!("Proposed value for {key} is too large for {ty}."));
    }
    if (value % 1.0).abs() > 1e-6 {
        return Err(format!("{key} cannot be a fractional value."));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comp(t: &str, n: Option<&str>) -> (String, Option<String>) {
        (t.into(), n.map(String::from))
    }

    fn apply(q: &mut ClientQuotas, entries: &[QuotaAlteration]) -> Vec<(i16, Option<String>)> {
        let (records, outcomes) = q.plan_alter(entries);
        for r in records {
            let MetadataRecord::ClientQuota(r) = r.record else {
                unreachable!()
            };
            q.replay(&r);
        }
        outcomes
    }

    #[test]
    fn the_most_specific_level_applies_with_kafkas_metric_tags() {
        let mut q = ClientQuotas::default();
        let set = |q: &mut ClientQuotas, e: Vec<(String, Option<String>)>, v: f64| {
            let out = apply(q, &[(e, vec![("producer_byte_rate".into(), Some(v))])]);
            assert_eq!(out, vec![(0, None)]);
        };
        set(&mut q, vec![comp(CLIENT_ID, None)], 8.0);
        let a = q.applied(QuotaKind::Produce, "alice", "app").unwrap();
        assert_eq!(
            (a.limit, a.user_tag.as_str(), a.client_tag.as_str()),
            (8.0, "", "app")
        );
        set(&mut q, vec![comp(USER, None)], 6.0);
        let a = q.applied(QuotaKind::Produce, "alice", "app").unwrap();
        assert_eq!(
            (a.limit, a.user_tag.as_str(), a.client_tag.as_str()),
            (6.0, "alice", "")
        );
        set(
            &mut q,
            vec![comp(USER, Some("alice")), comp(CLIENT_ID, None)],
            2.0,
        );
        let a = q.applied(QuotaKind::Produce, "alice", "app").unwrap();
        assert_eq!(
            (a.limit, a.user_tag.as_str(), a.client_tag.as_str()),
            (2.0, "alice", "app")
        );
        set(
            &mut q,
            vec![comp(USER, Some("alice")), comp(CLIENT_ID, Some("app"))],
            1.0,
        );
        assert_eq!(
            q.applied(QuotaKind::Produce, "alice", "app").unwrap().limit,
            1.0
        );
        assert_eq!(
            q.applied(QuotaKind::Produce, "bob", "app").unwrap().limit,
            6.0
        );
        // Other keys are separate: nothing limits fetches.
        assert_eq!(q.applied(QuotaKind::Fetch, "alice", "app"), None);
    }

    #[test]
    fn alterations_are_checked_like_kafkas() {
        let mut q = ClientQuotas::default();
        let bad = |q: &mut ClientQuotas, e: Vec<(String, Option<String>)>, k: &str, v: f64| {
            let out = apply(q, &[(e, vec![(k.into(), Some(v))])]);
            assert_eq!(out[0].0, ErrorCode::InvalidRequest.code(), "{:?}", out[0].1);
            out[0].1.clone().unwrap()
        };
        assert!(bad(&mut q, vec![], "producer_byte_rate", 1.0).contains("empty"));
        assert!(bad(
            &mut q,
            vec![comp("group", Some("g"))],
            "producer_byte_rate",
            1.0
        )
        .contains("Unhandled"));
        assert!(bad(
            &mut q,
            vec![comp(USER, Some(""))],
            "producer_byte_rate",
            1.0
        )
        .contains("Empty user"));
        assert!(bad(
            &mut q,
            vec![comp(USER, Some("u"))],
            "connection_creation_rate",
            1.0
        )
        .contains("Invalid configuration key"));
        assert!(bad(
            &mut q,
            vec![comp(IP, Some("1.2.3.4")), comp(USER, None)],
            "connection_creation_rate",
            1.0
        )
        .contains("combination"));
        assert!(bad(
            &mut q,
            vec![comp(IP, Some("not an ip"))],
            "connection_creation_rate",
            1.0
        )
        .contains("not a valid IP"));
        assert!(bad(
            &mut q,
            vec![comp(USER, Some("u"))],
            "producer_byte_rate",
            0.0
        )
        .contains("greater than 0"));
        assert!(bad(
            &mut q,
            vec![comp(USER, Some("u"))],
            "producer_byte_rate",
            1.5
        )
        .contains("fractional"));
        assert!(bad(
            &mut q,
            vec![comp(IP, None)],
            "connection_creation_rate",
            3e9
        )
        .contains("too large for an INT"));
        assert!(q.is_empty());
        assert!(bad(
            &mut q,
            vec![comp(USER, Some("u"))],
            "request_percentage",
            0.0
        )
        .contains("greater than 0"));
        // A share of a request thread may be fractional (Kafka's DOUBLE).
        let out = apply(
            &mut q,
            &[(
                vec![comp(CLIENT_ID, Some("app"))],
                vec![("request_percentage".into(), Some(0.01))],
            )],
        );
        assert_eq!(out, vec![(0, None)]);
        let a = q.applied(QuotaKind::Request, "alice", "app").unwrap();
        assert_eq!(
            (a.limit, a.user_tag.as_str(), a.client_tag.as_str()),
            (0.01, "", "app")
        );
        assert!(q.sets(QuotaKind::Request) && !q.sets(QuotaKind::Produce));
        let out = apply(
            &mut q,
            &[(
                vec![comp(CLIENT_ID, Some("app"))],
                vec![("request_percentage".into(), None)],
            )],
        );
        assert_eq!(out, vec![(0, None)]);
        assert!(q.is_empty() && !q.sets(QuotaKind::Request));
        // Removal of what is not there is a no-op.
        let out = apply(
            &mut q,
            &[(
                vec![comp(USER, Some("u"))],
                vec![("producer_byte_rate".into(), None)],
            )],
        );
        assert_eq!(out, vec![(0, None)]);
        assert!(q.is_empty());
    }

    #[test]
    fn describe_filters_like_kafka() {
        let mut q = ClientQuotas::default();
        let entries = vec![
            (
                vec![comp(USER, Some("alice"))],
                vec![("producer_byte_rate".to_string(), Some(100.0))],
            ),
            (
                vec![comp(USER, None)],
                vec![("producer_byte_rate".to_string(), Some(50.0))],
            ),
            (
                vec![comp(USER, Some("alice")), comp(CLIENT_ID, Some("app"))],
                vec![("consumer_byte_rate".to_string(), Some(10.0))],
            ),
            (
                vec![comp(IP, Some("127.0.0.1"))],
                vec![("connection_creation_rate".to_string(), Some(5.0))],
            ),
        ];
        assert!(apply(&mut q, &entries).iter().all(|o| o.0 == 0));
        let count =
            |c: &[(String, i8, Option<String>)], strict| q.describe(c, strict).map(|v| v.len());
        assert_eq!(count(&[], false), Ok(4));
        assert_eq!(
            count(&[(USER.into(), 0, Some("alice".into()))], false),
            Ok(2)
        );
        assert_eq!(
            count(&[(USER.into(), 0, Some("alice".into()))], true),
            Ok(1)
        );
        assert_eq!(count(&[(USER.into(), 1, None)], false), Ok(1));
        assert_eq!(count(&[(USER.into(), 2, None)], false), Ok(3));
        assert_eq!(count(&[(IP.into(), 2, None)], false), Ok(1));
        assert_eq!(
            count(&[(IP.into(), 2, None), (USER.into(), 2, None)], false)
                .unwrap_err()
                .0,
            ErrorCode::InvalidRequest.code()
        );
        assert_eq!(
            count(&[("group".into(), 2, None)], false).unwrap_err().0,
            ErrorCode::UnsupportedVersion.code()
        );
        assert_eq!(q.connection_rate("127.0.0.1"), Some(5.0));
        assert_eq!(q.connection_rate("127.0.0.2"), None);
        // A snapshot rebuilds the same quotas.
        let mut copy = ClientQuotas::default();
        for r in q.records() {
            let MetadataRecord::ClientQuota(r) = r.record else {
                unreachable!()
            };
            copy.replay(&r);
        }
        assert_eq!(copy, q);
    }
}
