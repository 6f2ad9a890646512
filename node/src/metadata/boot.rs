//! Start-up of the broker's metadata: the controller quorum that holds the metadata
//! log, the one-time migration of a data dir written before it, and the image the
//! broker starts serving with.
//!
//! A controller (`process_roles` has `controller`) runs a voter of the quorum, with its
//! log and snapshots in `<data_dir>/__cluster_metadata/` (beside the old `metadata.log`,
//! which the migration renames). Without `controller_quorum_voters` it is the only
//! voter, on `controller_listen` or an ephemeral loopback port. A broker that is not a
//! controller follows the quorum as an observer over a voter's controller listener
//! (`spate_replication::observe`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use spate_net::metadata_frame::ApiMessageAndVersion;
use spate_replication::{Committed, ObserverConfig, Quorum, QuorumConfig, QuorumError, Security};

use super::publish::apply_event;
use super::{migrate, records, MetadataImage};
use crate::config::{BrokerConfig, ControllerSecurityProtocol};
use crate::security::controller::ControllerSecurity;

/// The quorum of controllers, driving the metadata image.
pub type MetadataQuorum = Quorum<MetadataImage>;

/// How long start-up waits for the quorum to have a leader and for this node to catch
/// up with what is committed.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How often start-up looks at the quorum while it waits.
const POLL: Duration = Duration::from_millis(50);

/// A started quorum, a subscription to what it commits, and the image that
/// subscription has built so far.
pub struct Booted {
    /// This node's voter of the quorum; `None` on a broker that is not a controller.
    pub quorum: Option<Arc<MetadataQuorum>>,
    /// The quorum's voters (the ephemeral address of a lone default voter included).
    pub voters: BTreeMap<u64, String>,
    pub committed: flume::Receiver<Committed>,
    pub image: MetadataImage,
    /// The controller channel's security, for this node's other clients of it.
    pub security: Security,
}

/// Where the metadata lives: the quorum's log and snapshots, and the old log.
pub fn metadata_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("__cluster_metadata")
}

/// Starts this node's voter (migrating an old metadata log) or its observer, and
/// returns once the image holds everything committed (an observer: the state of the
/// first voter it reached).
pub fn start(config: &BrokerConfig) -> anyhow::Result<Booted> {
    let dir = metadata_dir(&config.data_dir);
    // Start-up runs before the shards exist: a runtime of its own to await the quorum.
    let runtime = compio::runtime::Runtime::new().context("start-up runtime")?;
    let tls = match config.controller_security_protocol {
        ControllerSecurityProtocol::Plaintext => None,
        ControllerSecurityProtocol::Ssl => {
            let tls = Arc::new(
                ControllerSecurity::new(&config.ssl, &config.authorizer)
                    .context("controller TLS (controller_security_protocol = \"SSL\", [ssl])")?,
            );
            tls.spawn_reloader()?;
            Some(tls)
        }
    };
    let security: Security = tls.clone().map(|t| t as _);
    if config.is_controller() {
        let (quorum, voters) = start_quorum(config, &dir, security.clone())?;
        let quorum = Arc::new(quorum);
        if let Some(tls) = &tls {
            tls.attach(&quorum);
        }
        let mut booted = runtime.block_on(boot(quorum, voters, config.node_id, &dir))?;
        booted.security = security;
        return Ok(booted);
    }
    let voters = config
        .voters()?
        .context("a broker that is not a controller needs controller_quorum_voters")?;
    let mut observer = ObserverConfig::new(voters.clone());
    observer.security = security.clone();
    let committed =
        spate_replication::observe(observer).context("starting the metadata observer")?;
    let deadline = Instant::now() + START_TIMEOUT;
    let first = runtime
        .block_on(recv_until(&committed, deadline))
        .context("following the controller quorum")?;
    let mut image = MetadataImage::default();
    apply_event(&mut image, first);
    Ok(Booted {
        quorum: None,
        voters,
        committed,
        image,
        security,
    })
}

/// Starts this node's voter; returns it and the voters.
fn start_quorum(
    config: &BrokerConfig,
    dir: &Path,
    security: Security,
) -> anyhow::Result<(MetadataQuorum, BTreeMap<u64, String>)> {
    // Checked by the config: a controller's id is not negative and is a voter.
    let node_id = u64::try_from(config.node_id)
        .with_context(|| format!("node_id {} must not be negative", config.node_id))?;
    let configured = config.voters()?;
    let bind = match (&config.controller_listen, &configured) {
        (Some(addr), _) => addr.clone(),
        (None, Some(voters)) => voters
            .get(&node_id)
            .cloned()
            .with_context(|| format!("node {node_id} is not in controller_quorum_voters"))?,
        // The only voter: nothing else connects to it.
        (None, None) => "127.0.0.1:0".to_string(),
    };
    let listener = std::net::TcpListener::bind(&bind)
        .with_context(|| format!("binding the controller listener on {bind}"))?;
    let voters = match configured {
        Some(voters) => voters,
        None => {
            let addr = listener
                .local_addr()
                .context("controller listener address")?;
            BTreeMap::from([(node_id, addr.to_string())])
        }
    };
    let mut quorum_config = QuorumConfig::new(node_id, voters.clone(), dir);
    quorum_config.security = security;
    let quorum = Quorum::start_with_listener(quorum_config, listener, MetadataImage::default())
        .context("starting the controller quorum")?;
    Ok((quorum, voters))
}

/// Waits for the quorum, subscribes, migrates an old log if there is one, and catches
/// the image up with everything committed.
pub async fn boot(
    quorum: Arc<MetadataQuorum>,
    voters: BTreeMap<u64, String>,
    node: i32,
    dir: &Path,
) -> anyhow::Result<Booted> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut target = caught_up(&quorum, deadline).await?;
    let committed = quorum.subscribe();
    let mut image = MetadataImage::default();
    let first = recv_until(&committed, deadline).await?;
    apply_event(&mut image, first);
    if let Some(index) = migrate::run(&quorum, &image, dir, node).await? {
        target = target.max(Some(index));
    }
    while image.offset < target {
        let event = recv_until(&committed, deadline).await?;
        apply_event(&mut image, event);
    }
    Ok(Booted {
        quorum: Some(quorum),
        voters,
        committed,
        image,
        // The caller that knows it sets it (plaintext for the tests that boot directly).
        security: None,
    })
}

/// Waits until the quorum has a leader and this controller applied everything committed
/// (on the leader a read barrier; on a follower, what it has learnt is committed);
/// returns that index.
async fn caught_up(quorum: &MetadataQuorum, deadline: Instant) -> anyhow::Result<Option<u64>> {
    loop {
        match quorum.read_barrier().await {
            Ok(index) => return Ok(index),
            Err(QuorumError::NotLeader { leader: Some(_) }) => {
                let s = quorum.status().await?;
                if s.commit_index.is_some() && s.last_applied >= s.commit_index {
                    return Ok(s.commit_index);
                }
            }
            Err(QuorumError::NotLeader { leader: None } | QuorumError::NoQuorum(_)) => {}
            Err(e) => bail!("waiting for the controller quorum: {e}"),
        }
        if Instant::now() >= deadline {
            bail!(
                "the controller quorum has no leader after {}s",
                START_TIMEOUT.as_secs()
            );
        }
        compio::time::sleep(POLL).await;
    }
}

async fn recv_until(
    committed: &flume::Receiver<Committed>,
    deadline: Instant,
) -> anyhow::Result<Committed> {
    let left = deadline.saturating_duration_since(Instant::now());
    match compio::time::timeout(left, committed.recv_async()).await {
        Ok(Ok(event)) => Ok(event),
        Ok(Err(_)) => bail!("the metadata subscription closed during start-up"),
        Err(_) => bail!("the metadata log did not catch up during start-up"),
    }
}

/// Proposes `records` in as many batches as they need (`records::split_batches`), in
/// order; returns the index of the last (`None` when there was nothing to propose).
pub async fn propose_all(
    quorum: &MetadataQuorum,
    records: Vec<ApiMessageAndVersion>,
) -> Result<Option<u64>, QuorumError> {
    let mut last = None;
    for batch in records::split_batches(records, records::BATCH_BUDGET) {
        last = Some(quorum.propose(&batch).await?.index);
    }
    Ok(last)
}
