//! TLS with mutual authentication on the controller channel (Kafka's controller
//! listener mapped to SSL): raft between voters, brokers' calls to the active
//! controller and observers. The quorum (spate-replication) runs the handshakes and
//! asks this module what to present, what to trust and whom to let in.
//!
//! * Both sides present the `[ssl]` keystore certificate and trust the `[ssl]`
//!   truststore; the server always requires a client certificate, whatever
//!   `ssl.client_auth` says for the Kafka listeners.
//! * The peer's principal is its certificate subject mapped by
//!   `ssl.principal_mapping_rules`, as on an SSL listener.
//! * With the authorizer on, the principal must be a super user or hold CLUSTER_ACTION
//!   on the cluster, as Kafka requires of every request on its controller listener. The
//!   ACLs are the ones this controller has applied, read from its state machine.
//! * The files are read again every `reload_interval_ms`, as for the listeners.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock, RwLock, Weak};

use anyhow::Context;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, ServerConfig};
use spate_replication::ControllerTls;

use super::authorizer::acl::{Operation, ResourceType, CLUSTER_NAME};
use super::authorizer::store::AclStore;
use super::authorizer::Rules;
use super::config::{AuthorizerConfig, ClientAuth, SslConfig};
use super::principal::{subject_dn, PrincipalMapper};
use super::tls::{build, client_config, spawn_reload_thread, Sources};
use super::Principal;
use crate::metadata::MetadataQuorum;

/// The configurations built from one version of the files.
struct Built {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    sources: Sources,
}

/// Whether `principal` may use the controller channel: a super user, or CLUSTER_ACTION
/// on the cluster by `acls` (Kafka's `authorizeClusterOperation(request,
/// CLUSTER_ACTION)` in `ControllerApis`).
fn admits(rules: &Rules, acls: &AclStore, principal: &str, host: IpAddr) -> bool {
    rules.allows(
        acls,
        principal,
        &host.to_string(),
        Operation::ClusterAction,
        ResourceType::Cluster,
        CLUSTER_NAME,
    )
}

/// The controller channel's TLS and peer checks; see the module comment.
pub struct ControllerSecurity {
    ssl: SslConfig,
    current: RwLock<Built>,
    mapper: PrincipalMapper,
    /// Who may use the channel when the authorizer is on.
    authorization: Option<Rules>,
    /// This node's voter, once started: its applied ACLs decide. Weak, as the voter
    /// holds this (through its config). Before it is set (start-up) no ACL applies.
    quorum: OnceLock<Weak<MetadataQuorum>>,
}

impl std::fmt::Debug for ControllerSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerSecurity")
            .field("ssl", &self.ssl)
            .field("authorization", &self.authorization)
            .finish_non_exhaustive()
    }
}

impl ControllerSecurity {
    /// Loads the `[ssl]` files; fails when they do not make an identity and a trust
    /// store, or the mapping rules do not parse.
    pub fn new(ssl: &SslConfig, authorizer: &AuthorizerConfig) -> anyhow::Result<Self> {
        let built = Built::new(ssl, Sources::read(ssl)?)?;
        let mapper = PrincipalMapper::parse(&ssl.principal_mapping_rules)
            .context("ssl.principal_mapping_rules")?;
        Ok(ControllerSecurity {
            ssl: ssl.clone(),
            current: RwLock::new(built),
            mapper,
            authorization: Rules::from_config(authorizer),
            quorum: OnceLock::new(),
        })
    }

    /// The voter whose applied ACLs the checks read (a controller calls this once it
    /// started; a broker-only node serves no controller connections and never does).
    pub fn attach(&self, quorum: &Arc<MetadataQuorum>) {
        let _ = self.quorum.set(Arc::downgrade(quorum));
    }

    /// Starts the thread that reloads the files every `reload_interval_ms`.
    pub fn spawn_reloader(self: &Arc<Self>) -> anyhow::Result<()> {
        let this = self.clone();
        spawn_reload_thread(
            "spate-ctls-reload",
            "controller TLS",
            self.ssl.reload_interval_ms,
            move || Some(this.reload_if_changed()),
        )
    }

    /// Rebuilds from the files if they changed; a change that does not load is an
    /// error and the previous configuration stays.
    fn reload_if_changed(&self) -> anyhow::Result<bool> {
        let sources = Sources::read(&self.ssl)?;
        if self.read().sources == sources {
            return Ok(false);
        }
        let built = Built::new(&self.ssl, sources)?;
        // A poisoned lock means a panic mid-swap, which cannot half-write the value.
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = built;
        Ok(true)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Built> {
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    fn acls(&self) -> Arc<AclStore> {
        match self.quorum.get().and_then(Weak::upgrade) {
            Some(q) => q.read_state(|image| image.acls.clone()),
            None => Arc::default(),
        }
    }
}

impl Built {
    /// The Kafka listeners' configurations with a client certificate always required:
    /// a server that asks for it, a client that presents the keystore's.
    fn new(ssl: &SslConfig, sources: Sources) -> anyhow::Result<Built> {
        let Some(ca) = &ssl.truststore_location else {
            anyhow::bail!("controller TLS needs ssl.truststore_location");
        };
        Ok(Built {
            server: build(ssl, ClientAuth::Required, &sources)?,
            client: client_config(ssl, ca, &sources)?,
            sources,
        })
    }
}

impl ControllerTls for ControllerSecurity {
    fn server_config(&self) -> Arc<ServerConfig> {
        self.read().server.clone()
    }

    fn client_config(&self) -> Arc<ClientConfig> {
        self.read().client.clone()
    }

    fn principal(&self, leaf: &CertificateDer<'_>) -> Result<String, String> {
        let dn = subject_dn(leaf).map_err(|e| format!("{e:#}"))?;
        let name = self
            .mapper
            .name(&dn)
            .ok_or_else(|| format!("no ssl.principal_mapping_rules entry applies to {dn}"))?;
        Ok(Principal::user(&name).to_string())
    }

    fn authorize(&self, principal: &str, host: IpAddr) -> bool {
        match &self.authorization {
            // Without the authorizer a trusted certificate is enough, as in Kafka.
            None => true,
            Some(rules) => admits(rules, &self.acls(), principal, host),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::authorizer::acl::{Acl, PatternType, Permission};
    use super::*;
    use std::collections::HashSet;

    fn acl(principal: &str, host: &str, operation: Operation, permission: Permission) -> Acl {
        Acl {
            resource_type: ResourceType::Cluster,
            resource_name: CLUSTER_NAME.into(),
            pattern_type: PatternType::Literal,
            principal: principal.into(),
            host: host.into(),
            operation,
            permission,
        }
    }

    #[test]
    fn super_users_and_cluster_action_holders_are_admitted() {
        let auth = Rules::new(HashSet::from(["User:controller".to_string()]), false);
        let here: IpAddr = "10.0.0.1".parse().unwrap();
        let mut acls = AclStore::default();
        assert!(admits(&auth, &acls, "User:controller", here));
        assert!(!admits(&auth, &acls, "User:broker", here));
        // CLUSTER_ACTION from this host only; ALTER is not enough.
        acls.insert(
            [1; 16],
            acl(
                "User:broker",
                "10.0.0.1",
                Operation::ClusterAction,
                Permission::Allow,
            ),
        );
        acls.insert(
            [2; 16],
            acl("User:tool", "*", Operation::Alter, Permission::Allow),
        );
        assert!(admits(&auth, &acls, "User:broker", here));
        assert!(!admits(
            &auth,
            &acls,
            "User:broker",
            "10.0.0.2".parse().unwrap()
        ));
        assert!(!admits(&auth, &acls, "User:tool", here));
        // ALL covers it; a DENY wins.
        acls.insert(
            [3; 16],
            acl("User:*", "*", Operation::All, Permission::Allow),
        );
        assert!(admits(&auth, &acls, "User:tool", here));
        acls.insert(
            [4; 16],
            acl(
                "User:broker",
                "*",
                Operation::ClusterAction,
                Permission::Deny,
            ),
        );
        assert!(!admits(&auth, &acls, "User:broker", here));
        // allow_everyone_if_no_acl_found applies when no ACL covers the cluster.
        let open = Rules::new(HashSet::new(), true);
        assert!(admits(&open, &AclStore::default(), "User:anyone", here));
        assert!(!admits(&open, &acls, "User:broker", here));
    }
}
