//! Kafka's ACL vocabulary with its wire codes (`ResourceType`, `PatternType`,
//! `AclOperation`, `AclPermissionType`), an ACL (Kafka's `StandardAcl`) and the
//! filters DescribeAcls and DeleteAcls select ACLs with (`AclBindingFilter`).

use serde::{Deserialize, Serialize};

/// The resource name that matches every name (in a LITERAL ACL).
pub const WILDCARD: &str = "*";
/// The principal that matches every principal.
pub const WILDCARD_PRINCIPAL: &str = "User:*";
/// The only name a CLUSTER resource has.
pub const CLUSTER_NAME: &str = "kafka-cluster";

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $code:expr),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn from_code(code: i8) -> Option<Self> {
                match code {
                    $($code => Some($name::$variant),)+
                    _ => None,
                }
            }

            pub fn code(self) -> i8 {
                match self {
                    $($name::$variant => $code,)+
                }
            }
        }
    };
}

wire_enum!(
    /// Kafka's `ResourceType` (0 UNKNOWN is not represented).
    ResourceType {
        Any = 1,
        Topic = 2,
        Group = 3,
        Cluster = 4,
        TransactionalId = 5,
        DelegationToken = 6,
        User = 7,
    }
);

wire_enum!(
    /// Kafka's `PatternType`.
    PatternType {
        Any = 1,
        Match = 2,
        Literal = 3,
        Prefixed = 4,
    }
);

wire_enum!(
    /// Kafka's `AclOperation`.
    Operation {
        Any = 1,
        All = 2,
        Read = 3,
        Write = 4,
        Create = 5,
        Delete = 6,
        Alter = 7,
        Describe = 8,
        ClusterAction = 9,
        DescribeConfigs = 10,
        AlterConfigs = 11,
        IdempotentWrite = 12,
        CreateTokens = 13,
        DescribeTokens = 14,
        TwoPhaseCommit = 15,
    }
);

wire_enum!(
    /// Kafka's `AclPermissionType`.
    Permission {
        Any = 1,
        Deny = 2,
        Allow = 3,
    }
);

/// One ACL: who may (or may not) do what on which resources from where.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Acl {
    pub resource_type: ResourceType,
    pub resource_name: String,
    /// LITERAL or PREFIXED.
    pub pattern_type: PatternType,
    /// `Type:name`, e.g. `User:alice`, or `User:*`.
    pub principal: String,
    /// A client address, or `*`.
    pub host: String,
    pub operation: Operation,
    /// ALLOW or DENY.
    pub permission: Permission,
}

/// The operations an ALLOW ACL for `granted` also allows (Kafka: READ, WRITE, DELETE
/// and ALTER imply DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS).
fn implies(granted: Operation, wanted: Operation) -> bool {
    use Operation::*;
    granted == wanted
        || (wanted == Describe && matches!(granted, Read | Write | Delete | Alter))
        || (wanted == DescribeConfigs && granted == AlterConfigs)
}

impl Acl {
    /// Kafka's checks of a new ACL (`AclControlManager.validateNewAcl`, and the
    /// broker's of principals and cluster names); the message goes back with
    /// INVALID_REQUEST.
    pub fn from_wire(
        resource_type: i8,
        resource_name: &str,
        pattern_type: i8,
        principal: &str,
        host: &str,
        operation: i8,
        permission: i8,
    ) -> Result<Acl, String> {
        let resource_type = ResourceType::from_code(resource_type)
            .filter(|t| *t != ResourceType::Any)
            .ok_or(format!("Invalid resourceType {resource_type}"))?;
        let pattern_type = PatternType::from_code(pattern_type)
            .filter(|p| matches!(p, PatternType::Literal | PatternType::Prefixed))
            .ok_or(format!("Invalid patternType {pattern_type}"))?;
        let operation = Operation::from_code(operation)
            .filter(|o| *o != Operation::Any)
            .ok_or(format!("Invalid operation {operation}"))?;
        let permission = Permission::from_code(permission)
            .filter(|p| *p != Permission::Any)
            .ok_or(format!("Invalid permissionType {permission}"))?;
        if resource_name.is_empty() {
            return Err("Resource name should not be empty".into());
        }
        if resource_type == ResourceType::Cluster && resource_name != CLUSTER_NAME {
            return Err(format!(
                "The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
            ));
        }
        match principal.split_once(':') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
            _ => return Err(format!("Could not parse principal from `{principal}` (no colon is present separating the principal type from the principal name)")),
        }
        Ok(Acl {
            resource_type,
            resource_name: resource_name.to_string(),
            pattern_type,
            principal: principal.to_string(),
            host: host.to_string(),
            operation,
            permission,
        })
    }

    /// Whether this ACL covers resource `name` (of its type): the same name, any name
    /// for the LITERAL wildcard, or a name it is a prefix of for PREFIXED.
    pub fn covers(&self, name: &str) -> bool {
        match self.pattern_type {
            PatternType::Prefixed => name.starts_with(&self.resource_name),
            _ => self.resource_name == name || self.resource_name == WILDCARD,
        }
    }

    /// What this ACL says about `principal` doing `operation` from `host` (on a
    /// resource it covers): `Some(permission)`, or `None` when it does not apply.
    /// Implied operations come from ALLOW ACLs only: a DENY for READ does not deny
    /// DESCRIBE (Kafka's `StandardAuthorizerData.findResult`).
    pub fn decides(&self, principal: &str, host: &str, operation: Operation) -> Option<Permission> {
        if self.principal != principal && self.principal != WILDCARD_PRINCIPAL {
            return None;
        }
        if self.host != WILDCARD && self.host != host {
            return None;
        }
        let applies = self.operation == Operation::All
            || match self.permission {
                Permission::Allow => implies(self.operation, operation),
                _ => self.operation == operation,
            };
        applies.then_some(self.permission)
    }
}

/// A filter over ACLs (Kafka's `AclBindingFilter`): ANY matches everything in its
/// field, a missing name, principal or host too; pattern type MATCH selects the ACLs
/// that would apply to the named resource (literal, wildcard and prefixes).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AclFilter {
    pub resource_type: ResourceType,
    pub resource_name: Option<String>,
    pub pattern_type: PatternType,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Operation,
    pub permission: Permission,
}

impl AclFilter {
    /// `Err`: Kafka's INVALID_REQUEST message for a filter with UNKNOWN fields.
    pub fn from_wire(
        resource_type: i8,
        resource_name: Option<String>,
        pattern_type: i8,
        principal: Option<String>,
        host: Option<String>,
        operation: i8,
        permission: i8,
    ) -> Result<AclFilter, String> {
        let pattern = (
            ResourceType::from_code(resource_type),
            PatternType::from_code(pattern_type),
        );
        let entry = (
            Operation::from_code(operation),
            Permission::from_code(permission),
        );
        let (Some(resource_type), Some(pattern_type)) = pattern else {
            return Err("Unknown patternFilter.".into());
        };
        let (Some(operation), Some(permission)) = entry else {
            return Err("Unknown entryFilter.".into());
        };
        Ok(AclFilter {
            resource_type,
            resource_name,
            pattern_type,
            principal,
            host,
            operation,
            permission,
        })
    }

    pub fn matches(&self, acl: &Acl) -> bool {
        self.matches_pattern(acl)
            && self.principal.as_ref().is_none_or(|p| *p == acl.principal)
            && self.host.as_ref().is_none_or(|h| *h == acl.host)
            && (self.operation == Operation::Any || self.operation == acl.operation)
            && (self.permission == Permission::Any || self.permission == acl.permission)
    }

    fn matches_pattern(&self, acl: &Acl) -> bool {
        if self.resource_type != ResourceType::Any && self.resource_type != acl.resource_type {
            return false;
        }
        let exact =
            matches!(self.pattern_type, PatternType::Any) || self.pattern_type == acl.pattern_type;
        if !exact && self.pattern_type != PatternType::Match {
            return false;
        }
        let Some(name) = &self.resource_name else {
            return true;
        };
        if exact {
            return *name == acl.resource_name;
        }
        acl.covers(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn acl(
        kind: ResourceType,
        name: &str,
        pattern: PatternType,
        principal: &str,
        op: Operation,
        permission: Permission,
    ) -> Acl {
        Acl {
            resource_type: kind,
            resource_name: name.to_string(),
            pattern_type: pattern,
            principal: principal.to_string(),
            host: WILDCARD.to_string(),
            operation: op,
            permission,
        }
    }

    #[test]
    fn new_acls_are_checked_as_kafka_checks_them() {
        let ok = Acl::from_wire(2, "t", 3, "User:alice", "*", 3, 3).unwrap();
        assert_eq!(
            (
                ok.resource_type,
                ok.pattern_type,
                ok.operation,
                ok.permission
            ),
            (
                ResourceType::Topic,
                PatternType::Literal,
                Operation::Read,
                Permission::Allow
            )
        );
        for (args, message) in [
            ((1, "t", 3, "User:a", 3, 3), "Invalid resourceType 1"),
            ((0, "t", 3, "User:a", 3, 3), "Invalid resourceType 0"),
            ((2, "t", 2, "User:a", 3, 3), "Invalid patternType 2"),
            ((2, "t", 3, "User:a", 1, 3), "Invalid operation 1"),
            ((2, "t", 3, "User:a", 3, 1), "Invalid permissionType 1"),
            (
                (2, "", 3, "User:a", 3, 3),
                "Resource name should not be empty",
            ),
            (
                (4, "c", 3, "User:a", 3, 3),
                "The only valid name for the CLUSTER resource is kafka-cluster",
            ),
        ] {
            let (t, n, p, who, op, perm) = args;
            assert_eq!(
                Acl::from_wire(t, n, p, who, "*", op, perm).unwrap_err(),
                message
            );
        }
        assert!(Acl::from_wire(2, "t", 3, "alice", "*", 3, 3)
            .unwrap_err()
            .contains("principal"));
    }

    #[test]
    fn implied_operations_come_from_allow_acls_only() {
        use Operation::*;
        let allow = |op| {
            acl(
                ResourceType::Topic,
                "t",
                PatternType::Literal,
                "User:a",
                op,
                Permission::Allow,
            )
        };
        let deny = |op| {
            acl(
                ResourceType::Topic,
                "t",
                PatternType::Literal,
                "User:a",
                op,
                Permission::Deny,
            )
        };
        for granted in [Read, Write, Delete, Alter] {
            assert_eq!(
                allow(granted).decides("User:a", "h", Describe),
                Some(Permission::Allow)
            );
            assert_eq!(deny(granted).decides("User:a", "h", Describe), None);
        }
        assert_eq!(
            allow(AlterConfigs).decides("User:a", "h", DescribeConfigs),
            Some(Permission::Allow)
        );
        assert_eq!(allow(Describe).decides("User:a", "h", Read), None);
        assert_eq!(
            allow(All).decides("User:a", "h", Create),
            Some(Permission::Allow)
        );
        assert_eq!(
            deny(All).decides("User:a", "h", Describe),
            Some(Permission::Deny)
        );
        assert_eq!(allow(Read).decides("User:b", "h", Read), None);
        assert_eq!(
            acl(
                ResourceType::Topic,
                "t",
                PatternType::Literal,
                WILDCARD_PRINCIPAL,
                Read,
                Permission::Allow
            )
            .decides("User:b", "h", Read),
            Some(Permission::Allow)
        );
        let mut from_host = allow(Read);
        from_host.host = "10.0.0.1".into();
        assert_eq!(from_host.decides("User:a", "10.0.0.2", Read), None);
        assert_eq!(
            from_host.decides("User:a", "10.0.0.1", Read),
            Some(Permission::Allow)
        );
    }

    #[test]
    fn filters_any_match_and_exact() {
        use PatternType::*;
        let literal = acl(
            ResourceType::Topic,
            "foo",
            Literal,
            "User:a",
            Operation::Read,
            Permission::Allow,
        );
        let prefixed = acl(
            ResourceType::Topic,
            "fo",
            Prefixed,
            "User:a",
            Operation::Read,
            Permission::Allow,
        );
        let wildcard = acl(
            ResourceType::Topic,
            "*",
            Literal,
            "User:a",
            Operation::Read,
            Permission::Allow,
        );
        let group = acl(
            ResourceType::Group,
            "foo",
            Literal,
            "User:a",
            Operation::Read,
            Permission::Allow,
        );
        let filter = |t: i8, name: Option<&str>, p: i8| {
            AclFilter::from_wire(t, name.map(String::from), p, None, None, 1, 1).unwrap()
        };
        let all = [&literal, &prefixed, &wildcard, &group];
        let picked = |f: AclFilter| all.iter().filter(|a| f.matches(a)).count();
        assert_eq!(picked(filter(1, None, 1)), 4);
        assert_eq!(picked(filter(2, None, 1)), 3);
        assert_eq!(picked(filter(2, Some("foo"), 1)), 1);
        assert_eq!(picked(filter(2, Some("foo"), 2)), 3);
        assert_eq!(picked(filter(2, None, 4)), 1);
        assert_eq!(picked(filter(1, Some("foo"), 3)), 2);
        assert!(filter(2, Some("foobar"), 2).matches(&prefixed));
        assert!(!filter(2, Some("f"), 2).matches(&prefixed));
        assert_eq!(
            AclFilter::from_wire(0, None, 1, None, None, 1, 1).unwrap_err(),
            "Unknown patternFilter."
        );
        assert_eq!(
            AclFilter::from_wire(1, None, 1, None, None, 0, 1).unwrap_err(),
            "Unknown entryFilter."
        );
    }
}
