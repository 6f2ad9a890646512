//! [`Quorum`]: one controller of the quorum, running on its own thread, and the handle
//! the node uses to propose records, follow what is committed and report the quorum's
//! state.
//!
//! openraft 0.9 runs on tokio, while the broker's shards run compio. The controller
//! therefore gets a dedicated thread with a current-thread tokio runtime that holds the
//! Raft core, the transport and the storage; the handle's methods only touch
//! runtime-agnostic primitives (tokio's join handles, semaphore and watch channels, and
//! flume channels all work from any executor), so they can be awaited from a shard.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::thread::JoinHandle;

use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ServerState, SnapshotPolicy};
use spate_net::metadata_frame::ApiMessageAndVersion;
use tokio::sync::{oneshot, Semaphore};

use crate::app_rpc::{AppHandler, AppReply};
use crate::config::{ConfigError, QuorumConfig};
use crate::log_store::LogStore;
use crate::network::{self, AppSlot, Limits, Network};
use crate::state_machine::{self, Committed, MetadataStateMachine, SharedState, StateMachineStore};
use crate::types::{MetadataBatch, NodeId, Raft};

/// Where a proposal ended up in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proposed {
    /// Its Raft log index (the metadata offset).
    pub index: u64,
    /// The term (Kafka's controller epoch) of the leader that committed it.
    pub term: u64,
}

/// Why a call to the quorum failed (a proposal, a read barrier, a status query).
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    /// This controller is not the leader. `leader` is the current one if known (id and
    /// `host:port`): send the proposal there.
    #[error("not the active controller (leader: {leader:?})")]
    NotLeader { leader: Option<(NodeId, String)> },
    #[error("a proposal needs at least one record")]
    Empty,
    #[error("proposal of {size} bytes over the {max}-byte limit")]
    TooLarge { size: usize, max: usize },
    /// A record whose encoding does not decode (a value the definitions cannot carry).
    #[error("record {index} of the proposal does not round-trip: {reason}")]
    Invalid { index: usize, reason: String },
    /// The leader could not confirm its leadership with a quorum of voters.
    #[error("no quorum: {0}")]
    NoQuorum(String),
    /// The controller is stopping or stopped; the proposal may or may not commit.
    #[error("the controller stopped: {0}")]
    Stopped(String),
}

/// Why a controller could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("controller storage in {dir}: {source}")]
    Storage { dir: String, source: std::io::Error },
    #[error("controller listener on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("controller thread: {0}")]
    Thread(String),
}

/// A controller's role in the quorum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
    Shutdown,
}

/// The quorum as one controller sees it (for DescribeQuorum and metrics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumStatus {
    pub node_id: NodeId,
    pub role: Role,
    pub leader: Option<NodeId>,
    /// The current term (Kafka's leader epoch of the metadata log).
    pub term: u64,
    /// The last index in this controller's log.
    pub last_log_index: Option<u64>,
    /// The last index known committed (Kafka's high watermark).
    pub commit_index: Option<u64>,
    /// The last index applied to this controller's state machine.
    pub last_applied: Option<u64>,
    /// The last index covered by the newest snapshot.
    pub snapshot_index: Option<u64>,
    /// The last index removed from the log (in a snapshot): the log starts after it.
    pub purged_index: Option<u64>,
    pub voters: BTreeSet<NodeId>,
    /// On the leader: the last index each voter is known to hold.
    pub replicated: BTreeMap<NodeId, Option<u64>>,
}

/// One running controller.
pub struct Quorum<M: MetadataStateMachine> {
    node_id: NodeId,
    raft: Raft,
    runtime: tokio::runtime::Handle,
    shared: SharedState<M>,
    proposals: Arc<Semaphore>,
    max_batch_bytes: usize,
    subscriber_queue: usize,
    app: AppSlot,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

struct Started<M> {
    raft: Raft,
    runtime: tokio::runtime::Handle,
    shared: SharedState<M>,
    app: AppSlot,
}

impl<M: MetadataStateMachine> Quorum<M> {
    /// Starts the controller, listening on its address in `config.voters`. `app` is the
    /// state the quorum drives; it is first restored from the newest snapshot in
    /// `config.dir`.
    pub fn start(config: QuorumConfig, app: M) -> Result<Self, StartError> {
        config.validate()?;
        let addr = config.listen_addr()?.to_string();
        let listener = std::net::TcpListener::bind(&addr)
            .map_err(|source| StartError::Listen { addr, source })?;
        Self::start_with_listener(config, listener, app)
    }

    /// Like [`Quorum::start`], on a listener the caller bound (tests bind ephemeral ports
    /// first, to learn every voter's address).
    pub fn start_with_listener(
        config: QuorumConfig,
        listener: std::net::TcpListener,
        app: M,
    ) -> Result<Self, StartError> {
        config.validate()?;
        let node_id = config.node_id;
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let (stop_tx, stop_rx) = oneshot::channel();
        let proposals = Arc::new(Semaphore::new(config.max_inflight_proposals));
        let (max_batch_bytes, subscriber_queue) = (config.max_batch_bytes, config.subscriber_queue);
        let thread = std::thread::Builder::new()
            .name(format!("controller-{node_id}"))
            .spawn(move || run(config, listener, app, ready_tx, stop_rx))
            .map_err(|e| StartError::Thread(e.to_string()))?;
        let started = match ready_rx.recv() {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(StartError::Thread(
                    "the controller thread exited during start-up".into(),
                ));
            }
        };
        Ok(Quorum {
            node_id,
            raft: started.raft,
            runtime: started.runtime,
            shared: started.shared,
            app: started.app,
            proposals,
            max_batch_bytes,
            subscriber_queue,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Installs the application's handler of calls to the active controller
    /// (`app_rpc.rs`); it answers only while this controller leads, others get
    /// [`AppReply::NotLeader`]. Once: `false` if a handler was installed already.
    pub fn serve_app(&self, handler: AppHandler) -> bool {
        let raft = self.raft.clone();
        let leading: AppHandler = Arc::new(move |body| {
            let raft = raft.clone();
            let handler = handler.clone();
            Box::pin(async move {
                let m = raft.metrics().borrow().clone();
                if m.state != ServerState::Leader {
                    let leader = m.current_leader.and_then(|id| {
                        let node = m.membership_config.membership().get_node(&id)?;
                        Some((id, node.addr.clone()))
                    });
                    return AppReply::NotLeader { leader };
                }
                handler(body).await
            })
        });
        self.app.set(leading).is_ok()
    }

    /// Appends `records` to the metadata log as one entry and waits until it is
    /// committed and applied here. Only the leader accepts proposals; others answer
    /// [`QuorumError::NotLeader`] with the leader to send them to.
    pub async fn propose(&self, records: &[ApiMessageAndVersion]) -> Result<Proposed, QuorumError> {
        if records.is_empty() {
            return Err(QuorumError::Empty);
        }
        let mut framed = Vec::with_capacity(records.len());
        for (index, r) in records.iter().enumerate() {
            let bytes = r.to_bytes();
            // Committed entries must decode on every controller: check now.
            match ApiMessageAndVersion::decode(bytes.clone()) {
                Ok(back) if back == *r => framed.push(bytes),
                Ok(_) => {
                    return Err(QuorumError::Invalid {
                        index,
                        reason: "decodes to a different record".into(),
                    })
                }
                Err(e) => {
                    return Err(QuorumError::Invalid {
                        index,
                        reason: e.to_string(),
                    })
                }
            }
        }
        let batch = MetadataBatch { records: framed };
        let size = batch.size();
        if size > self.max_batch_bytes {
            return Err(QuorumError::TooLarge {
                size,
                max: self.max_batch_bytes,
            });
        }
        self.propose_batch(batch).await
    }

    async fn propose_batch(&self, batch: MetadataBatch) -> Result<Proposed, QuorumError> {
        let stopped = |e: &dyn std::fmt::Display| QuorumError::Stopped(e.to_string());
        let permit = self
            .proposals
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| stopped(&e))?;
        let raft = self.raft.clone();
        let write = self.runtime.spawn(async move {
            let _permit = permit;
            let written = raft.client_write(batch).await;
            if written.is_ok() {
                // Followers learn the new commit index now rather than at the next
                // heartbeat (up to `heartbeat_interval` later): every broker applies a
                // change within moments of its commit, as Kafka's fetching followers do.
                let _ = raft.trigger().heartbeat().await;
            }
            written
        });
        match write.await.map_err(|e| stopped(&e))? {
            Ok(r) => Ok(Proposed {
                index: r.log_id.index,
                term: r.log_id.leader_id.term,
            }),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(QuorumError::NotLeader {
                    leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
                })
            }
            Err(e) => Err(stopped(&e)),
        }
    }

    /// Waits until this controller is confirmed leader by a quorum and its state
    /// includes every record committed before the call; returns the index it is
    /// applied up to. The active controller calls this before validating a request
    /// against its state (after a leader change the state may still lag the log).
    pub async fn read_barrier(&self) -> Result<Option<u64>, QuorumError> {
        let raft = self.raft.clone();
        let read = self
            .runtime
            .spawn(async move { raft.ensure_linearizable().await });
        match read.await {
            Ok(Ok(log_id)) => Ok(log_id.map(|l| l.index)),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(QuorumError::NotLeader {
                    leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
                })
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)))) => {
                Err(QuorumError::NoQuorum(e.to_string()))
            }
            Ok(Err(e)) => Err(QuorumError::Stopped(e.to_string())),
            Err(e) => Err(QuorumError::Stopped(e.to_string())),
        }
    }

    /// Follows the committed records: the first event is the current state
    /// ([`Committed::Snapshot`]), then every committed batch in log order. A subscriber
    /// that leaves `subscriber_queue` events unread is dropped (its channel closes) and
    /// must subscribe again.
    pub fn subscribe(&self) -> flume::Receiver<Committed> {
        state_machine::subscribe(&self.shared, self.subscriber_queue)
    }

    /// Runs `f` on the application state as applied here, under the lock the applier
    /// takes (keep `f` short): for decisions that must follow what is committed at
    /// once, such as the controller channel's ACL checks.
    pub fn read_state<R>(&self, f: impl FnOnce(&M) -> R) -> R {
        state_machine::read(&self.shared, f)
    }

    /// The current leader and term as this controller knows them (no I/O).
    pub fn leader(&self) -> (Option<NodeId>, u64) {
        let m = self.raft.metrics();
        let m = m.borrow();
        (m.current_leader, m.current_term)
    }

    /// This controller's log end and applied index (no I/O).
    pub fn progress(&self) -> (Option<u64>, Option<u64>) {
        let m = self.raft.metrics();
        let m = m.borrow();
        (m.last_log_index, m.last_applied.map(|l| l.index))
    }

    /// The quorum's state as this controller sees it.
    pub async fn status(&self) -> Result<QuorumStatus, QuorumError> {
        let raft = self.raft.clone();
        let commit = self.runtime.spawn(async move {
            raft.with_raft_state(|st| st.committed.map(|l| l.index))
                .await
        });
        let commit_index = match commit.await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(QuorumError::Stopped(e.to_string())),
            Err(e) => return Err(QuorumError::Stopped(e.to_string())),
        };
        let m = self.raft.metrics().borrow().clone();
        let role = match m.state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        };
        let replicated = m
            .replication
            .as_ref()
            .map(|r| r.iter().map(|(id, l)| (*id, l.map(|l| l.index))).collect())
            .unwrap_or_default();
        Ok(QuorumStatus {
            node_id: self.node_id,
            role,
            leader: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index,
            commit_index,
            last_applied: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            voters: m.membership_config.membership().voter_ids().collect(),
            replicated,
        })
    }

    /// Builds a snapshot now (normally the snapshot policy decides) and waits until it
    /// covers everything applied at the time of the call.
    pub async fn snapshot(&self) -> Result<(), QuorumError> {
        let raft = self.raft.clone();
        let stopped = |e: &dyn std::fmt::Display| QuorumError::Stopped(e.to_string());
        let done = self.runtime.spawn(async move {
            let applied = raft.metrics().borrow().last_applied;
            raft.trigger().snapshot().await?;
            let mut metrics = raft.metrics();
            while metrics.borrow().snapshot < applied {
                if metrics.changed().await.is_err() {
                    break;
                }
            }
            Ok::<_, openraft::error::Fatal<NodeId>>(())
        });
        done.await
            .map_err(|e| stopped(&e))?
            .map_err(|e| stopped(&e))
    }

    /// Stops the controller and waits for its thread: the Raft core, the transport and
    /// every connection end; what is on disk stays for the next start.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.proposals.close();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!(node = self.node_id, "the controller thread panicked");
            }
        }
    }
}

impl<M: MetadataStateMachine> Drop for Quorum<M> {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

type Ready<M> = std::sync::mpsc::SyncSender<Result<Started<M>, StartError>>;

/// The controller thread: opens storage, starts Raft and the transport, reports ready,
/// then runs until told to stop. Dropping the runtime at the end cancels the server
/// and connection tasks and closes their sockets.
fn run<M: MetadataStateMachine>(
    config: QuorumConfig,
    listener: std::net::TcpListener,
    app: M,
    ready: Ready<M>,
    stop: oneshot::Receiver<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(StartError::Thread(e.to_string())));
            return;
        }
    };
    runtime.block_on(async move {
        let app_slot = AppSlot::default();
        let raft = match start_raft(&config, listener, app, app_slot.clone()).await {
            Ok((raft, shared)) => {
                let started = Started {
                    raft: raft.clone(),
                    runtime: tokio::runtime::Handle::current(),
                    shared,
                    app: app_slot,
                };
                if ready.send(Ok(started)).is_err() {
                    return;
                }
                raft
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = stop.await;
        if let Err(e) = raft.shutdown().await {
            tracing::warn!(error = %e, "controller Raft core did not stop cleanly");
        }
    });
}

async fn start_raft<M: MetadataStateMachine>(
    config: &QuorumConfig,
    listener: std::net::TcpListener,
    app: M,
    app_slot: AppSlot,
) -> Result<(Raft, SharedState<M>), StartError> {
    let storage = |source| StartError::Storage {
        dir: config.dir.display().to_string(),
        source,
    };
    let log = LogStore::open(
        &config.dir.join("log"),
        config.segment_bytes,
        config.max_frame_bytes,
    )
    .map_err(storage)?;
    let (state_machine, shared) =
        StateMachineStore::open(&config.dir.join("snapshot"), app).map_err(storage)?;
    let raft_config = openraft::Config {
        cluster_name: "spate-controller".into(),
        heartbeat_interval: config.heartbeat_interval.as_millis() as u64,
        election_timeout_min: config.election_timeout_min.as_millis() as u64,
        election_timeout_max: config.election_timeout_max.as_millis() as u64,
        // Per snapshot chunk: a chunk is at most a few MiB on a local network.
        install_snapshot_timeout: config.election_timeout_max.as_millis() as u64,
        max_payload_entries: config.max_payload_entries(),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
        snapshot_max_chunk_size: config.snapshot_chunk_bytes(),
        max_in_snapshot_log_to_keep: config.entries_kept_after_snapshot,
        ..Default::default()
    }
    .validate()
    .map_err(|e| StartError::Config(ConfigError(e.to_string())))?;
    let limits = Limits {
        max_frame_bytes: config.max_frame_bytes,
        max_connections: config.max_connections,
        idle_timeout: config.election_timeout_max * 30,
        max_snapshot_bytes: config.max_snapshot_bytes,
    };
    let addr = config.listen_addr()?.to_string();
    let listen_error = |source| StartError::Listen {
        addr: addr.clone(),
        source,
    };
    listener.set_nonblocking(true).map_err(listen_error)?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(listen_error)?;
    let raft = Raft::new(
        config.node_id,
        Arc::new(raft_config),
        Network {
            limits,
            security: config.security.clone(),
        },
        log,
        state_machine,
    )
    .await
    .map_err(|e| StartError::Thread(e.to_string()))?;
    let subscribe: network::Subscribe = {
        let shared = shared.clone();
        let queue = config.subscriber_queue;
        Arc::new(move || state_machine::subscribe(&shared, queue))
    };
    tokio::spawn(network::serve(
        listener,
        raft.clone(),
        config.node_id,
        limits,
        subscribe,
        app_slot,
        config.security.clone(),
    ));
    // Every voter bootstraps the same membership (the static voter list, as KRaft's
    // `controller.quorum.voters`): the initial entries are identical, so whichever
    // voters start first form the quorum. A voter that already has a log skips this.
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| StartError::Thread(e.to_string()))?;
    if !initialized {
        let members: BTreeMap<NodeId, BasicNode> = config
            .voters
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect();
        match raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(e) => return Err(StartError::Thread(format!("initializing the quorum: {e}"))),
        }
    }
    Ok((raft, shared))
}
