//! The ACLs of the cluster, as the metadata image holds them (by their record id), and
//! the decision for one action (Kafka's `StandardAuthorizerData.authorize`).

use std::collections::BTreeMap;

use super::acl::{Acl, Operation, Permission, ResourceType};

/// Most ACLs the cluster keeps: every broker holds them all, and a check scans the
/// ACLs of its resource type.
pub const MAX_ACLS: usize = 10_000;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AclStore {
    by_id: BTreeMap<[u8; 16], Acl>,
    /// The same ACLs by resource type, what a check scans.
    by_type: BTreeMap<ResourceType, BTreeMap<[u8; 16], Acl>>,
}

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Denied,
}

impl AclStore {
    pub fn insert(&mut self, id: [u8; 16], acl: Acl) {
        self.remove(&id);
        self.by_type
            .entry(acl.resource_type)
            .or_default()
            .insert(id, acl.clone());
        self.by_id.insert(id, acl);
    }

    pub fn remove(&mut self, id: &[u8; 16]) -> Option<Acl> {
        let acl = self.by_id.remove(id)?;
        if let Some(of_type) = self.by_type.get_mut(&acl.resource_type) {
            of_type.remove(id);
            if of_type.is_empty() {
                self.by_type.remove(&acl.resource_type);
            }
        }
        Some(acl)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8; 16], &Acl)> {
        self.by_id.iter()
    }

    pub fn get(&self, id: &[u8; 16]) -> Option<&Acl> {
        self.by_id.get(id)
    }

    pub fn contains(&self, acl: &Acl) -> bool {
        self.by_type
            .get(&acl.resource_type)
            .is_some_and(|of_type| of_type.values().any(|a| a == acl))
    }

    /// Whether `principal` connected from `host` may do `operation` on resource `name`
    /// of type `resource_type`: a DENY that applies wins over any ALLOW; without an ACL
    /// that applies, denied, unless no ACL covers the resource at all and
    /// `allow_if_no_acl` (Kafka's `allow.everyone.if.no.acl.found`). Super users are
    /// the caller's business.
    pub fn decide(
        &self,
        principal: &str,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
        allow_if_no_acl: bool,
    ) -> Decision {
        let mut covered = false;
        let mut allowed = false;
        let acls = self
            .by_type
            .get(&resource_type)
            .into_iter()
            .flat_map(|m| m.values());
        for acl in acls.filter(|a| a.covers(name)) {
            covered = true;
            match acl.decides(principal, host, operation) {
                Some(Permission::Deny) => return Decision::Denied,
                Some(_) => allowed = true,
                None => {}
            }
        }
        if allowed || (!covered && allow_if_no_acl) {
            Decision::Allowed
        } else {
            Decision::Denied
        }
    }

    /// Whether some ACL lets `principal` from `host` do `operation` on at least one
    /// resource of `resource_type` that no DENY takes away (Kafka's default
    /// `Authorizer.authorizeByResourceType`, what InitProducerId asks of WRITE on
    /// topics): only ACLs for the operation itself or ALL count, not implied ones; a
    /// DENY on the literal `*` denies everything; an ALLOW on the literal `*` allows; any
    /// other ALLOW allows unless a DENY on the same literal name, or a DENY prefix of its
    /// name, dominates it. Super users and `allow.everyone.if.no.acl.found` are the
    /// caller's business.
    pub fn any_allowed(
        &self,
        principal: &str,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
    ) -> bool {
        use super::acl::{PatternType, WILDCARD, WILDCARD_PRINCIPAL};
        let applies = |a: &&Acl| {
            (a.host == WILDCARD || a.host == host)
                && (a.principal == principal || a.principal == WILDCARD_PRINCIPAL)
                && (a.operation == operation || a.operation == Operation::All)
        };
        let acls: Vec<&Acl> = self
            .by_type
            .get(&resource_type)
            .into_iter()
            .flat_map(|m| m.values())
            .filter(applies)
            .collect();
        let denied = |p: PatternType| {
            acls.iter()
                .filter(move |a| a.permission == Permission::Deny && a.pattern_type == p)
                .map(|a| a.resource_name.as_str())
        };
        if denied(PatternType::Literal).any(|n| n == WILDCARD) {
            return false;
        }
        let allowed = acls.iter().filter(|a| a.permission == Permission::Allow);
        for a in allowed {
            if a.pattern_type == PatternType::Literal && a.resource_name == WILDCARD {
                return true;
            }
            if a.pattern_type == PatternType::Literal
                && denied(PatternType::Literal).any(|n| n == a.resource_name)
            {
                continue;
            }
            if !denied(PatternType::Prefixed).any(|n| a.resource_name.starts_with(n)) {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::super::acl::{PatternType, WILDCARD};
    use super::*;
    use Decision::*;

    fn acl(
        t: ResourceType,
        name: &str,
        p: PatternType,
        who: &str,
        op: Operation,
        perm: Permission,
    ) -> Acl {
        Acl {
            resource_type: t,
            resource_name: name.into(),
            pattern_type: p,
            principal: who.into(),
            host: WILDCARD.into(),
            operation: op,
            permission: perm,
        }
    }

    fn add(store: &mut AclStore, id: u8, acl: Acl) {
        store.insert([id; 16], acl);
    }

    #[test]
    fn literal_prefixed_wildcard_and_deny_wins() {
        use Operation::*;
        use PatternType::*;
        use ResourceType::*;
        let mut s = AclStore::default();
        add(
            &mut s,
            1,
            acl(
                Topic,
                "orders",
                Literal,
                "User:alice",
                Write,
                Permission::Allow,
            ),
        );
        add(
            &mut s,
            2,
            acl(
                Topic,
                "logs-",
                Prefixed,
                "User:bob",
                Read,
                Permission::Allow,
            ),
        );
        add(
            &mut s,
            3,
            acl(
                Topic,
                "*",
                Literal,
                "User:carol",
                Describe,
                Permission::Allow,
            ),
        );
        add(
            &mut s,
            4,
            acl(
                Topic,
                "logs-secret",
                Literal,
                "User:*",
                Read,
                Permission::Deny,
            ),
        );
        let d = |who: &str, op, name: &str| s.decide(who, "127.0.0.1", op, Topic, name, false);
        assert_eq!(d("User:alice", Write, "orders"), Allowed);
        assert_eq!(d("User:alice", Describe, "orders"), Allowed);
        assert_eq!(d("User:alice", Read, "orders"), Denied);
        assert_eq!(d("User:alice", Write, "orders2"), Denied);
        assert_eq!(d("User:bob", Read, "logs-app"), Allowed);
        assert_eq!(d("User:bob", Read, "logs"), Denied);
        // A DENY for everyone beats bob's prefixed ALLOW.
        assert_eq!(d("User:bob", Read, "logs-secret"), Denied);
        // ... but denies READ only: DESCRIBE is still implied by bob's READ.
        assert_eq!(d("User:bob", Describe, "logs-secret"), Allowed);
        assert_eq!(d("User:carol", Describe, "anything"), Allowed);
        assert_eq!(d("User:carol", Read, "anything"), Denied);
        // Other resource types are unaffected.
        assert_eq!(
            s.decide("User:alice", "h", Read, Group, "orders", false),
            Denied
        );
    }

    #[test]
    fn allow_everyone_if_no_acl_found_only_for_uncovered_resources() {
        use Operation::*;
        let mut s = AclStore::default();
        add(
            &mut s,
            1,
            acl(
                ResourceType::Topic,
                "t",
                PatternType::Literal,
                "User:alice",
                Read,
                Permission::Allow,
            ),
        );
        let d = |who: &str, name: &str| s.decide(who, "h", Read, ResourceType::Topic, name, true);
        assert_eq!(d("User:bob", "other"), Allowed);
        assert_eq!(d("User:bob", "t"), Denied);
        assert_eq!(d("User:alice", "t"), Allowed);
        assert_eq!(
            s.decide("User:bob", "h", Read, ResourceType::Topic, "other", false),
            Denied
        );
    }

    #[test]
    fn insert_replace_remove() {
        let mut s = AclStore::default();
        add(
            &mut s,
            1,
            acl(
                ResourceType::Topic,
                "t",
                PatternType::Literal,
                "User:a",
                Operation::Read,
                Permission::Allow,
            ),
        );
        add(
            &mut s,
            1,
            acl(
                ResourceType::Group,
                "g",
                PatternType::Literal,
                "User:a",
                Operation::Read,
                Permission::Allow,
            ),
        );
        assert_eq!(s.len(), 1);
        assert_eq!(
            s.decide(
                "User:a",
                "h",
                Operation::Read,
                ResourceType::Topic,
                "t",
                false
            ),
            Denied
        );
        assert!(s.remove(&[1; 16]).is_some());
        assert_eq!(s, AclStore::default());
    }

    #[test]
    fn any_allowed_follows_authorize_by_resource_type() {
        use Operation::*;
        use PatternType::*;
        use ResourceType::*;
        let mut s = AclStore::default();
        let any = |s: &AclStore, who: &str| s.any_allowed(who, "10.0.0.1", Write, Topic);
        assert!(!any(&s, "User:alice"));
        // READ (even though it implies DESCRIBE) is not WRITE; another user's is not hers.
        add(
            &mut s,
            1,
            acl(Topic, "t", Literal, "User:alice", Read, Permission::Allow),
        );
        add(
            &mut s,
            2,
            acl(Topic, "t", Literal, "User:bob", Write, Permission::Allow),
        );
        assert!(!any(&s, "User:alice"));
        assert!(any(&s, "User:bob"));
        // A literal DENY on the same name, or a DENY prefix of it, dominates.
        add(
            &mut s,
            3,
            acl(
                Topic,
                "orders-eu",
                Literal,
                "User:alice",
                Write,
                Permission::Allow,
            ),
        );
        add(
            &mut s,
            4,
            acl(
                Topic,
                "orders-eu",
                Literal,
                "User:alice",
                Write,
                Permission::Deny,
            ),
        );
        assert!(!any(&s, "User:alice"));
        add(
            &mut s,
            5,
            acl(
                Topic,
                "orders-",
                Prefixed,
                "User:alice",
                All,
                Permission::Allow,
            ),
        );
        assert!(any(&s, "User:alice"));
        add(
            &mut s,
            6,
            acl(Topic, "ord", Prefixed, "User:*", Write, Permission::Deny),
        );
        assert!(!any(&s, "User:alice"));
        // An ALLOW on every topic wins over prefixes; a DENY on every topic over all.
        add(
            &mut s,
            7,
            acl(
                Topic,
                WILDCARD,
                Literal,
                "User:alice",
                Write,
                Permission::Allow,
            ),
        );
        assert!(any(&s, "User:alice"));
        add(
            &mut s,
            8,
            acl(Topic, WILDCARD, Literal, "User:*", Write, Permission::Deny),
        );
        assert!(!any(&s, "User:alice"));
        assert!(!any(&s, "User:bob"));
    }
}
