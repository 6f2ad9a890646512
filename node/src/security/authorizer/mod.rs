//! Authorization with Kafka's `StandardAuthorizer` semantics: ACLs from the metadata
//! log (`store`), super users, `allow.everyone.if.no.acl.found`, and an audit line per
//! denied action (rate-limited). docs/security.md lists which API checks what.

pub mod acl;
pub mod changes;
pub mod store;

use std::cell::Cell;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use acl::{Operation, ResourceType};
use store::{AclStore, Decision};

use super::config::AuthorizerConfig;
use super::Principal;

/// Most audit lines for denied actions per second and shard; the rest are counted and
/// summed up in the next line.
const AUDIT_LINES_PER_SECOND: u32 = 10;

/// The operations KIP-430's `*_authorized_operations` fields report for a resource
/// type (Kafka's `AclEntry.supportedOperations`).
pub fn supported_operations(resource_type: ResourceType) -> &'static [Operation] {
    use Operation::*;
    match resource_type {
        ResourceType::Topic => &[
            Read,
            Write,
            Create,
            Describe,
            Delete,
            Alter,
            DescribeConfigs,
            AlterConfigs,
        ],
        ResourceType::Group => &[Read, Describe, Delete, DescribeConfigs, AlterConfigs],
        ResourceType::Cluster => &[
            Create,
            ClusterAction,
            DescribeConfigs,
            AlterConfigs,
            IdempotentWrite,
            Alter,
            Describe,
        ],
        ResourceType::TransactionalId => &[Describe, Write, TwoPhaseCommit],
        ResourceType::DelegationToken => &[Describe],
        ResourceType::User => &[CreateTokens, DescribeTokens],
        ResourceType::Any => &[],
    }
}

/// Who asks: the connection's principal and address, copied for a request's task.
#[derive(Debug, Clone, PartialEq)]
pub struct Caller {
    pub principal: Principal,
    pub host: String,
}

/// What decides beside the ACLs: `super.users` and `allow.everyone.if.no.acl.found`.
/// Every check of a principal against ACLs goes through [`Rules::allows`]: the
/// shards' authorizers, consumer groups resolving regexes ([`AccessCheck`]) and the
/// controller channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    super_users: HashSet<String>,
    allow_if_no_acl: bool,
}

impl Rules {
    pub fn new(super_users: HashSet<String>, allow_if_no_acl: bool) -> Rules {
        Rules {
            super_users,
            allow_if_no_acl,
        }
    }

    /// `None` when authorization is off (`authorizer.enable = false`).
    pub fn from_config(config: &AuthorizerConfig) -> Option<Rules> {
        config.enable.then(|| {
            Rules::new(
                config.super_user_set(),
                config.allow_everyone_if_no_acl_found,
            )
        })
    }

    fn is_super_user(&self, principal: &str) -> bool {
        self.super_users.contains(principal)
    }

    /// What `acls` decide for `principal` from `host` (super users aside).
    fn decide(
        &self,
        acls: &AclStore,
        principal: &str,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> Decision {
        acls.decide(
            principal,
            host,
            operation,
            resource_type,
            name,
            self.allow_if_no_acl,
        )
    }

    /// Whether `principal` from `host` may do `operation` on resource `name`: a super
    /// user may, anyone else as `acls` decide.
    pub fn allows(
        &self,
        acls: &AclStore,
        principal: &str,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        self.is_super_user(principal)
            || self.decide(acls, principal, host, operation, resource_type, name)
                == Decision::Allowed
    }
}

/// The authorizer's quiet decisions over one version of the ACLs ([`Authorizer::access`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AccessCheck {
    rules: Rules,
    acls: Arc<AclStore>,
}

impl AccessCheck {
    /// Whether `caller` may DESCRIBE topic `name`.
    pub fn may_describe_topic(&self, caller: &Caller, name: &str) -> bool {
        self.rules.allows(
            &self.acls,
            &caller.principal.to_string(),
            &caller.host,
            Operation::Describe,
            ResourceType::Topic,
            name,
        )
    }
}

/// A shard's authorizer (each shard has its own, for its audit rate limit).
pub struct Authorizer {
    rules: Rules,
    audit_window: Cell<Instant>,
    audit_lines: Cell<u32>,
    audit_dropped: Cell<u64>,
}

impl Authorizer {
    /// `None` when authorization is off (`authorizer.enable = false`).
    pub fn from_config(config: &AuthorizerConfig) -> Option<Authorizer> {
        Rules::from_config(config).map(|rules| Authorizer {
            rules,
            audit_window: Cell::new(Instant::now()),
            audit_lines: Cell::new(0),
            audit_dropped: Cell::new(0),
        })
    }

    pub fn is_super_user(&self, principal: &Principal) -> bool {
        self.rules.is_super_user(&principal.to_string())
    }

    /// Whether `caller` may do `operation` on resource `name` of `resource_type`.
    pub fn authorize(
        &self,
        acls: &AclStore,
        caller: &Caller,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if self.is_super_user(&caller.principal) {
            return true;
        }
        let principal = caller.principal.to_string();
        let decision = self.rules.decide(
            acls,
            &principal,
            &caller.host,
            operation,
            resource_type,
            name,
        );
        if decision == Decision::Denied {
            self.audit(&principal, &caller.host, operation, resource_type, name);
        }
        decision == Decision::Allowed
    }

    /// The decisions of [`Self::quietly`] as they stand with `acls`, to be made away
    /// from this shard's authorizer (a consumer group resolving its regexes).
    pub fn access(&self, acls: Arc<AclStore>) -> AccessCheck {
        AccessCheck {
            rules: self.rules.clone(),
            acls,
        }
    }

    /// Like [`Self::authorize`] without an audit line: for listing what a caller may
    /// see (Metadata hiding topics, KIP-430's authorized operations), as Kafka logs
    /// those at debug only.
    pub fn quietly(
        &self,
        acls: &AclStore,
        caller: &Caller,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        self.rules.allows(
            acls,
            &caller.principal.to_string(),
            &caller.host,
            operation,
            resource_type,
            name,
        )
    }

    /// Whether `caller` may do `operation` on at least one resource of `resource_type`
    /// (Kafka's `authorizeByResourceType`): super users and callers allowed on a name
    /// no ACL mentions may; else [`AclStore::any_allowed`]. Not audited.
    pub fn by_resource_type(
        &self,
        acls: &AclStore,
        caller: &Caller,
        operation: Operation,
        resource_type: ResourceType,
    ) -> bool {
        self.quietly(acls, caller, operation, resource_type, "hardcode")
            || acls.any_allowed(
                &caller.principal.to_string(),
                &caller.host,
                operation,
                resource_type,
            )
    }

    /// KIP-430: the operations of [`supported_operations`] `caller` may do on the
    /// resource, as a bit field (bit = the operation's code).
    pub fn operations(
        &self,
        acls: &AclStore,
        caller: &Caller,
        resource_type: ResourceType,
        name: &str,
    ) -> i32 {
        supported_operations(resource_type)
            .iter()
            .filter(|op| self.quietly(acls, caller, **op, resource_type, name))
            .fold(0, |bits, op| bits | (1 << op.code()))
    }

    fn audit(&self, principal: &str, host: &str, op: Operation, kind: ResourceType, name: &str) {
        if self.audit_window.get().elapsed() >= Duration::from_secs(1) {
            self.audit_window.set(Instant::now());
            self.audit_lines.set(0);
        }
        if self.audit_lines.get() >= AUDIT_LINES_PER_SECOND {
            self.audit_dropped.set(self.audit_dropped.get() + 1);
            return;
        }
        self.audit_lines.set(self.audit_lines.get() + 1);
        let suppressed = self.audit_dropped.replace(0);
        tracing::info!(target: "spate::audit", %principal, %host, operation = ?op, resource_type = ?kind, resource = %name, suppressed, "authorization denied");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn super_users_may_do_anything() {
        let config = AuthorizerConfig {
            enable: true,
            super_users: "User:admin; User:ops".into(),
            allow_everyone_if_no_acl_found: false,
        };
        let a = Authorizer::from_config(&config).unwrap();
        let acls = AclStore::default();
        let caller = |name: &str| Caller {
            principal: Principal::user(name),
            host: "127.0.0.1".into(),
        };
        for who in ["admin", "ops"] {
            assert!(a.authorize(
                &acls,
                &caller(who),
                Operation::Alter,
                ResourceType::Cluster,
                "kafka-cluster"
            ));
        }
        assert!(!a.authorize(
            &acls,
            &caller("bob"),
            Operation::Read,
            ResourceType::Topic,
            "t"
        ));
        assert!(Authorizer::from_config(&AuthorizerConfig::default()).is_none());
    }

    #[test]
    fn authorized_operations_are_bits_of_the_supported_ones() {
        use acl::{Acl, PatternType, Permission};
        let config = AuthorizerConfig {
            enable: true,
            super_users: "User:admin".into(),
            allow_everyone_if_no_acl_found: false,
        };
        let a = Authorizer::from_config(&config).unwrap();
        let mut acls = AclStore::default();
        acls.insert(
            [1; 16],
            Acl {
                resource_type: ResourceType::Topic,
                resource_name: "t".into(),
                pattern_type: PatternType::Literal,
                principal: "User:alice".into(),
                host: "*".into(),
                operation: Operation::Read,
                permission: Permission::Allow,
            },
        );
        let caller = |name: &str| Caller {
            principal: Principal::user(name),
            host: "127.0.0.1".into(),
        };
        // READ, and the DESCRIBE it implies.
        assert_eq!(
            a.operations(&acls, &caller("alice"), ResourceType::Topic, "t"),
            (1 << 3) | (1 << 8)
        );
        assert_eq!(
            a.operations(&acls, &caller("alice"), ResourceType::Topic, "u"),
            0
        );
        // A super user: every topic operation (Kafka's 3576 for a topic).
        assert_eq!(
            a.operations(&acls, &caller("admin"), ResourceType::Topic, "t"),
            0b1101_1111_1000
        );
    }
}
