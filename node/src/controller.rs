//! The controller: the one place that changes metadata. It runs on shard 0 and
//! handles one request at a time: it validates the request against the image (after a
//! read barrier, so the image holds everything committed), plans KRaft records, proposes
//! them to the controller quorum, and answers once every shard applied the committed
//! change (opened, reconfigured or deleted its partitions; `metadata/publish.rs`).
//!
//! A proposal the quorum refuses because this node does not lead it (or cannot reach a
//! majority) is answered NOT_CONTROLLER, which clients retry. A quorum that stopped
//! (its log cannot be written) stops the broker: whether the change was written is
//! unknown, and a controller that cannot persist metadata must not keep serving.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use spate_net::metadata_frame::ApiMessageAndVersion;
use spate_net::ErrorCode;
use spate_replication::{AppClient, Committed, QuorumError};

use crate::broker_config;
use crate::config::BrokerConfig;
use crate::mesh::ShardMsg;
use crate::metadata::boot::propose_all;
use crate::metadata::brokers::{BrokerAnswer, BrokerCall, Sessions};
use crate::metadata::election::{self, ElectionRequest, ElectionResults};
use crate::metadata::isr::{self, IsrChange, PartitionState, Planned};
use crate::metadata::leadership::OfflineReplicas;
use crate::metadata::placement::{self, Candidate, Start};
use crate::metadata::publish::{self, Published};
use crate::metadata::quorum_view::QuorumView;
use crate::metadata::reassignment::{self, ReassignmentRequest, ReassignmentResults};
use crate::metadata::records::{self, resource_type, NewPartition};
use crate::metadata::{MetadataImage, MetadataQuorum, TopicImage};
use crate::security::authorizer::acl::Acl;
use crate::security::authorizer::changes as acl_changes;
use crate::security::credentials::{self, ScramDeletion, ScramUpsertion};
use crate::topic_config;

/// Longest topic name Kafka accepts.
const MAX_TOPIC_NAME_LEN: usize = 249;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewTopic {
    pub name: String,
    /// -1: the broker's `num.partitions`.
    pub num_partitions: i32,
    /// -1: default (1). At most the number of brokers that can take replicas.
    pub replication_factor: i16,
    /// Manual assignment: partition index and its replica broker ids.
    pub assignments: Vec<(i32, Vec<i32>)>,
    pub configs: Vec<(String, Option<String>)>,
}

/// Topic, new partition count, and the new partitions' replicas if given.
pub type NewPartitions = (String, i32, Option<Vec<Vec<i32>>>);

/// IncrementalAlterConfigs operation codes.
pub mod alter_op {
    pub const SET: i8 = 0;
    pub const DELETE: i8 = 1;
    pub const APPEND: i8 = 2;
    pub const SUBTRACT: i8 = 3;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ConfigChange {
    /// AlterConfigs: the given set replaces every override.
    Replace(Vec<(String, Option<String>)>),
    /// IncrementalAlterConfigs: (name, op, value).
    Incremental(Vec<(String, i8, Option<String>)>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControllerRequest {
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    DeleteTopics {
        names: Vec<String>,
    },
    CreatePartitions {
        topics: Vec<NewPartitions>,
        validate_only: bool,
    },
    AlterConfigs {
        changes: Vec<(String, ConfigChange)>,
        validate_only: bool,
    },
    /// Dynamic configs of a broker (its id) or of the cluster default ("").
    AlterBrokerConfigs {
        changes: Vec<(String, ConfigChange)>,
        validate_only: bool,
    },
    /// Configs of consumer groups (GROUP resources).
    AlterGroupConfigs {
        changes: Vec<(String, ConfigChange)>,
        validate_only: bool,
    },
    /// AlterUserScramCredentials: outcomes are per user.
    AlterScramCredentials {
        upsertions: Vec<ScramUpsertion>,
        deletions: Vec<ScramDeletion>,
    },
    /// AlterClientQuotas: outcomes are per entry, named by index.
    AlterClientQuotas {
        entries: Vec<crate::quota::store::QuotaAlteration>,
        validate_only: bool,
    },
    /// CreateAcls (checked by the broker): outcomes are per ACL, named by index.
    CreateAcls {
        acls: Vec<Acl>,
    },
    /// DeleteAcls: the ids of the ACLs the filters matched on the broker; outcomes per
    /// id, named by index.
    DeleteAcls {
        ids: Vec<[u8; 16]>,
    },
    /// InitProducerId: a fresh producer id.
    AllocateProducerId,
    /// A broker's registration or heartbeat (on the active controller).
    Broker(BrokerCall),
    /// Fence the brokers whose session expired (a periodic tick).
    FenceExpired,
    /// The quorum's state, as the active controller sees it (DescribeQuorum).
    DescribeQuorum,
    /// A partition leader's ISR change (Kafka's AlterPartition).
    AlterPartition(IsrChange),
    /// ElectLeaders: preferred or unclean elections.
    ElectLeaders(ElectionRequest),
    /// AlterPartitionReassignments: move replicas, or cancel a move.
    AlterReassignments(ReassignmentRequest),
    /// Move leadership back to preferred replicas (a periodic tick; Kafka's
    /// `auto.leader.rebalance.enable`).
    BalanceLeaders,
    /// A request another node forwarded here, as the active controller: answered
    /// NOT_CONTROLLER rather than forwarded again when this node no longer is.
    Forwarded(Box<ControllerRequest>),
}

/// The outcome for one topic (or config resource) of a request, in request order.
#[derive(Debug, Clone)]
pub struct TopicOutcome {
    pub name: String,
    pub error: i16,
    pub message: Option<String>,
    /// The topic as it is after the change (CreateTopics results need it).
    pub topic: Option<Arc<TopicImage>>,
}

#[derive(Debug)]
pub enum ControllerReply {
    Topics(Vec<TopicOutcome>),
    /// A producer id, or the error code.
    ProducerId(Result<i64, i16>),
    Broker(BrokerAnswer),
    /// The quorum, or the error code when this is not the active controller.
    Quorum(Result<QuorumView, i16>),
    /// The partition's state after the change, or Kafka's error code.
    AlterPartition(Result<PartitionState, i16>),
    /// Each partition's outcome by topic, or the error of the whole request.
    ElectLeaders(Result<ElectionResults, i16>),
    /// Each partition's outcome by topic, or the error of the whole request.
    AlterReassignments(Result<ReassignmentResults, i16>),
    /// The tick was handled.
    Done,
}

/// Producer ids are reserved in the metadata log this many at a time.
const PRODUCER_ID_BLOCK: i64 = 1000;

impl TopicOutcome {
    fn ok(name: &str, topic: Option<Arc<TopicImage>>) -> Self {
        TopicOutcome {
            name: name.to_string(),
            error: 0,
            message: None,
            topic,
        }
    }
    pub fn err(name: &str, code: ErrorCode, message: impl Into<String>) -> Self {
        TopicOutcome {
            name: name.to_string(),
            error: code.code(),
            message: Some(message.into()),
            topic: None,
        }
    }
}

/// What shard 0 needs to run the controller and follow the metadata log.
pub struct ControllerStart {
    /// The broker's client of the active controller (registration and heartbeats).
    pub client: AppClient,
    /// A second client for forwarded changes, so that a slow change never holds up
    /// a heartbeat.
    pub forwarder: AppClient,
    /// Every listener with the address given to clients, registered with the controller.
    pub endpoints: Vec<crate::metadata::brokers::Endpoint>,
    /// Told when the controller first unfences this broker.
    pub unfenced: std::sync::mpsc::SyncSender<()>,
    /// A stop of the broker: the registration does a controlled shutdown, then answers.
    pub stop: flume::Receiver<flume::Sender<()>>,
    /// This node's voter; `None` on a broker that is not a controller, which forwards
    /// every change to the active controller.
    pub quorum: Option<Arc<MetadataQuorum>>,
    /// The log dirs, whose offline replicas every heartbeat reports.
    pub log_dirs: Arc<crate::log_dirs::LogDirs>,
    /// The subscription the start-up image was built from; the follower continues it.
    pub committed: flume::Receiver<Committed>,
    pub image: Arc<MetadataImage>,
    /// The offset of the metadata every shard applied, for the metrics endpoint.
    pub published_offset: Arc<crate::metadata::publish::PublishedOffset>,
}

/// Requests to the controller, each with the channel for its answer.
pub type ControllerQueue = flume::Sender<(ControllerRequest, flume::Sender<ControllerReply>)>;

/// Starts, on the calling shard, the follower of the metadata log (which hands every
/// committed change to `shards`) and the controller; returns the controller's queue.
pub fn spawn(
    start: ControllerStart,
    config: Arc<BrokerConfig>,
    shards: Vec<flume::Sender<ShardMsg>>,
) -> ControllerQueue {
    let published = Published::new(start.image, start.published_offset);
    compio::runtime::spawn(publish::follow(
        start.quorum.clone(),
        start.committed,
        published.clone(),
        shards,
    ))
    .detach();
    let (tx, rx) = flume::unbounded::<(ControllerRequest, flume::Sender<ControllerReply>)>();
    if let Some(quorum) = &start.quorum {
        quorum.serve_app(crate::forwarding::app_handler(
            tx.clone(),
            published.offset_handle(),
        ));
        compio::runtime::spawn(fence_ticks(tx.clone(), config.clone())).detach();
        if config.auto_leader_rebalance_enable {
            compio::runtime::spawn(balance_ticks(tx.clone(), config.clone())).detach();
        }
    }
    compio::runtime::spawn(crate::registration::run(
        start.client,
        config.clone(),
        start.endpoints,
        published.clone(),
        start.log_dirs,
        start.unfenced,
        start.stop,
    ))
    .detach();
    let forwarder = Rc::new(start.forwarder);
    let mut controller = Controller::new(config, start.quorum, published.clone());
    compio::runtime::spawn(async move {
        while let Ok((request, reply)) = rx.recv_async().await {
            // Changes go to the active controller. Forwarding runs beside the queue, so
            // that a call that comes back to this node (it still looks like a leader to
            // the client) is answered NOT_CONTROLLER instead of waiting behind itself.
            if crate::forwarding::is_forwardable(&request) && !controller.is_active() {
                let (forwarder, published) = (forwarder.clone(), published.clone());
                compio::runtime::spawn(async move {
                    let outcome = crate::forwarding::forward(&forwarder, &published, request).await;
                    let _ = reply.send_async(outcome).await;
                })
                .detach();
                continue;
            }
            let outcome = controller.handle(request).await;
            let _ = reply.send_async(outcome).await;
        }
    })
    .detach();
    tx
}

/// Asks the controller to fence expired sessions, four times per session timeout.
async fn fence_ticks(queue: ControllerQueue, config: Arc<BrokerConfig>) {
    let every = std::time::Duration::from_millis((config.broker_session_timeout_ms / 4).max(10));
    loop {
        compio::time::sleep(every).await;
        let (tx, rx) = flume::bounded(1);
        if queue
            .send_async((ControllerRequest::FenceExpired, tx))
            .await
            .is_err()
        {
            return;
        }
        let _ = rx.recv_async().await;
    }
}

/// Asks the controller to move leaders back to preferred replicas, every
/// `leader_imbalance_check_interval_seconds`.
async fn balance_ticks(queue: ControllerQueue, config: Arc<BrokerConfig>) {
    let every = std::time::Duration::from_secs(config.leader_imbalance_check_interval_seconds);
    loop {
        compio::time::sleep(every).await;
        let (tx, rx) = flume::bounded(1);
        if queue
            .send_async((ControllerRequest::BalanceLeaders, tx))
            .await
            .is_err()
        {
            return;
        }
        let _ = rx.recv_async().await;
    }
}

pub struct Controller {
    config: Arc<BrokerConfig>,
    /// Broker sessions, kept while this controller is active in one term.
    sessions: Sessions,
    /// The term `sessions` belong to: a new term (this controller became active again)
    /// starts every session afresh, as Kafka's new active controller does.
    sessions_term: u64,
    quorum: Option<Arc<MetadataQuorum>>,
    /// The image every shard applied.
    published: Rc<Published>,
    /// The producer ids reserved and not yet handed out: `next_pid..pid_end`.
    next_pid: i64,
    pid_end: i64,
}

/// Why a change was not made: answered to the client, or the broker stops.
fn refusal(e: QuorumError) -> (ErrorCode, String) {
    match e {
        QuorumError::NotLeader { .. } | QuorumError::NoQuorum(_) => {
            (ErrorCode::NotController, e.to_string())
        }
        QuorumError::Stopped(_) => crate::fault::fail_stop(
            "the metadata log cannot be written (the controller quorum stopped)",
            &e,
        ),
        QuorumError::Empty | QuorumError::TooLarge { .. } | QuorumError::Invalid { .. } => {
            (ErrorCode::InvalidRequest, e.to_string())
        }
    }
}

impl Controller {
    pub fn new(
        config: Arc<BrokerConfig>,
        quorum: Option<Arc<MetadataQuorum>>,
        published: Rc<Published>,
    ) -> Self {
        // Ids reserved before a restart may have been handed out: start past them.
        let pid_end = published.image().producer_ids_end;
        Controller {
            config,
            sessions: Sessions::default(),
            sessions_term: 0,
            quorum,
            published,
            next_pid: pid_end,
            pid_end,
        }
    }

    /// This node's voter, which proposals go to.
    fn quorum(&self) -> Result<&MetadataQuorum, QuorumError> {
        self.quorum
            .as_deref()
            .ok_or(QuorumError::NotLeader { leader: None })
    }

    /// The image with everything committed so far applied on every shard: a read
    /// barrier (this controller still leads, its state is current), then the broker's
    /// image catching up to it.
    async fn current(&self) -> Result<Arc<MetadataImage>, QuorumError> {
        match self.quorum()?.read_barrier().await? {
            Some(index) => Ok(self.published.wait_for(index).await),
            None => Ok(self.published.image()),
        }
    }

    /// Proposes `records` (with the bootstrap records of a new log first) and waits
    /// until every shard applied them; returns the image then.
    async fn commit(
        &self,
        base: &MetadataImage,
        records: Vec<ApiMessageAndVersion>,
    ) -> Result<Arc<MetadataImage>, QuorumError> {
        let mut proposal = records::bootstrap(base);
        if !proposal.is_empty() {
            // A new log: the credentials `kafka-storage.sh format --add-scram` would
            // have written go in with its first records.
            proposal.extend(crate::security::credentials::bootstrap_records(
                &self.config.sasl.bootstrap_scram,
            ));
        }
        proposal.extend(records);
        match propose_all(self.quorum()?, proposal).await? {
            Some(index) => Ok(self.published.wait_for(index).await),
            None => Ok(self.published.image()),
        }
    }

    /// Whether this node's voter leads the quorum (proposals are made here).
    pub fn is_active(&self) -> bool {
        self.quorum
            .as_ref()
            .is_some_and(|q| q.leader().0 == u64::try_from(self.config.node_id).ok())
    }

    pub async fn handle(&mut self, request: ControllerRequest) -> ControllerReply {
        // Forwarded here: handled as ours, refused with NOT_CONTROLLER if no longer.
        let request = match request {
            ControllerRequest::Forwarded(inner) => *inner,
            other => other,
        };
        match request {
            ControllerRequest::AllocateProducerId => {
                ControllerReply::ProducerId(self.allocate_producer_id().await)
            }
            ControllerRequest::Broker(call) => {
                ControllerReply::Broker(self.broker_call(call).await)
            }
            ControllerRequest::FenceExpired => {
                self.fence_expired().await;
                ControllerReply::Done
            }
            ControllerRequest::DescribeQuorum => {
                ControllerReply::Quorum(self.describe_quorum().await)
            }
            ControllerRequest::AlterPartition(change) => {
                ControllerReply::AlterPartition(self.alter_partition(&change).await)
            }
            ControllerRequest::ElectLeaders(request) => {
                ControllerReply::ElectLeaders(self.elect_leaders(&request).await)
            }
            ControllerRequest::AlterReassignments(request) => {
                ControllerReply::AlterReassignments(self.alter_reassignments(&request).await)
            }
            ControllerRequest::BalanceLeaders => {
                self.balance_leaders().await;
                ControllerReply::Done
            }
            other => ControllerReply::Topics(self.change_topics(other).await),
        }
    }

    /// The broker sessions of the current term (reset when the term changed).
    fn sessions(&mut self) -> &mut Sessions {
        let term = self.quorum.as_ref().map_or(0, |q| q.leader().1);
        if term != self.sessions_term {
            self.sessions = Sessions::default();
            self.sessions_term = term;
        }
        &mut self.sessions
    }

    async fn broker_call(&mut self, call: BrokerCall) -> BrokerAnswer {
        let image = match self.current().await {
            Ok(image) => image,
            Err(e) => return broker_refusal(e),
        };
        let now = std::time::Instant::now();
        match call {
            BrokerCall::Register { broker_id, .. } => {
                match self.sessions().register(&image, &call, now) {
                    Err(why) => BrokerAnswer::Refused(why),
                    Ok(Ok(epoch)) => BrokerAnswer::Registered { epoch },
                    Ok(Err((epoch, record))) => {
                        let records = self.with_offline_leadership(&image, vec![record]);
                        match self.commit(&image, records).await {
                            Ok(committed) => {
                                let at = committed.offset.unwrap_or(0);
                                self.sessions().registered(broker_id, at);
                                tracing::info!(broker = broker_id, epoch, "broker registered");
                                BrokerAnswer::Registered { epoch }
                            }
                            Err(e) => broker_refusal(e),
                        }
                    }
                }
            }
            BrokerCall::Heartbeat {
                broker_id,
                epoch,
                offset,
                mut offline,
            } => {
                let (answer, unfence) = self
                    .sessions()
                    .heartbeat(&image, broker_id, epoch, offset, now);
                offline.sort_unstable();
                offline.dedup();
                let registered = matches!(
                    answer,
                    BrokerAnswer::Heartbeat {
                        registered: true,
                        ..
                    }
                );
                let offline_changed =
                    registered && self.sessions().offline_changed(broker_id, &offline);
                if unfence.is_none() && !offline_changed {
                    return answer;
                }
                let unfenced = unfence.is_some();
                let all_offline = self.sessions().offline_with(broker_id, &offline);
                let records =
                    self.with_leadership(&image, unfence.into_iter().collect(), &all_offline);
                let moved = records.len() - usize::from(unfenced);
                if !records.is_empty() {
                    if let Err(e) = self.commit(&image, records).await {
                        return broker_refusal(e);
                    }
                }
                if unfenced {
                    tracing::info!(broker = broker_id, epoch, "broker unfenced");
                }
                if offline_changed {
                    tracing::warn!(
                        broker = broker_id,
                        offline_replicas = offline.len(),
                        partitions_changed = moved,
                        "broker reported offline replicas (failed log dir): their leaderships and ISR memberships moved"
                    );
                    self.sessions().set_offline(broker_id, offline);
                }
                answer
            }
            BrokerCall::ControlledShutdown { broker_id, epoch } => {
                let Some(record) = self
                    .sessions()
                    .controlled_shutdown(&image, broker_id, epoch)
                else {
                    return BrokerAnswer::Heartbeat {
                        registered: false,
                        fenced: true,
                    };
                };
                let records = self.with_offline_leadership(&image, vec![record]);
                if let Err(e) = self.commit(&image, records).await {
                    return broker_refusal(e);
                }
                tracing::info!(broker = broker_id, epoch, "broker shut down (controlled)");
                BrokerAnswer::Heartbeat {
                    registered: true,
                    fenced: true,
                }
            }
        }
    }

    /// The quorum as this (active) controller sees it; NOT_LEADER_OR_FOLLOWER elsewhere,
    /// as a Kafka controller that does not lead answers.
    async fn describe_quorum(&mut self) -> Result<QuorumView, i16> {
        let not_leader = ErrorCode::NotLeaderOrFollower.code();
        if !self.is_active() {
            return Err(not_leader);
        }
        let status = self
            .quorum()
            .map_err(|_| not_leader)?
            .status()
            .await
            .map_err(|_| not_leader)?;
        let image = self.published.image();
        let now = std::time::Instant::now();
        let heartbeats = self.sessions().heartbeats(&image, now);
        Ok(crate::metadata::quorum_view::describe(
            &status,
            &heartbeats,
            now,
        ))
    }

    /// Broker registration changes followed by the leadership and ISR changes they
    /// cause (`metadata/leadership.rs`): brokers no longer active leave the ISRs and
    /// the leadership of their partitions; leaderless partitions get a leader once an
    /// in-sync replica is active (or any replica, where unclean election is enabled).
    fn with_leadership(
        &self,
        image: &MetadataImage,
        mut records: Vec<ApiMessageAndVersion>,
        offline: &OfflineReplicas,
    ) -> Vec<ApiMessageAndVersion> {
        let mut next = image.clone();
        next.replay_all(&records);
        records.extend(crate::metadata::leadership::elect_leaders(
            &next,
            &self.config,
            offline,
        ));
        records
    }

    /// [`Self::with_leadership`] with the offline replicas the brokers reported.
    fn with_offline_leadership(
        &mut self,
        image: &MetadataImage,
        records: Vec<ApiMessageAndVersion>,
    ) -> Vec<ApiMessageAndVersion> {
        let offline = self.sessions().offline_replicas();
        self.with_leadership(image, records, &offline)
    }

    /// AlterPartition: checked and planned by `metadata/isr.rs`, answered with the
    /// partition's state once every shard applied the change.
    async fn alter_partition(&mut self, change: &IsrChange) -> Result<PartitionState, i16> {
        let not_controller = ErrorCode::NotController.code();
        let image = self.current().await.map_err(|e| refusal(e).0.code())?;
        let (record, new_leader) = match isr::plan(&image, change, &self.config)? {
            Planned::Unchanged(state) => return Ok(state),
            Planned::Change(record) => (record, false),
            Planned::NewLeader(record) => (record, true),
        };
        let record = ApiMessageAndVersion::latest(
            spate_net::metadata_records::MetadataRecord::PartitionChange(record),
        );
        let committed = self
            .commit(&image, vec![record])
            .await
            .map_err(|e| refusal(e).0.code())?;
        tracing::debug!(
            broker = change.broker_id,
            partition = change.partition,
            "ISR changed"
        );
        if new_leader {
            tracing::info!(
                broker = change.broker_id,
                partition = change.partition,
                "ISR change completed a reassignment and moved the leadership"
            );
            return Err(ErrorCode::NewLeaderElected.code());
        }
        committed
            .topic_by_id(&change.topic_id)
            .and_then(|t| t.partitions.get(usize::try_from(change.partition).ok()?))
            .map(PartitionState::of)
            // Deleted between the commit and now: the asker learns it from its metadata.
            .ok_or(not_controller)
    }

    /// ElectLeaders (`metadata/election.rs`), answered once every shard applied the
    /// new leaders.
    async fn elect_leaders(&mut self, request: &ElectionRequest) -> Result<ElectionResults, i16> {
        let image = self.current().await.map_err(|e| refusal(e).0.code())?;
        let offline = self.sessions().offline_replicas();
        let (records, results) = election::plan(&image, request, &offline)?;
        if !records.is_empty() {
            let count = records.len();
            self.commit(&image, records)
                .await
                .map_err(|e| refusal(e).0.code())?;
            tracing::info!(partitions = count, "leaders elected (ElectLeaders)");
        }
        Ok(results)
    }

    /// AlterPartitionReassignments (`metadata/reassignment.rs`), answered once every
    /// shard applied the change.
    async fn alter_reassignments(
        &mut self,
        request: &ReassignmentRequest,
    ) -> Result<ReassignmentResults, i16> {
        let image = self.current().await.map_err(|e| refusal(e).0.code())?;
        let (records, results) = reassignment::plan(&image, request, &self.config);
        if !records.is_empty() {
            let count = records.len();
            self.commit(&image, records)
                .await
                .map_err(|e| refusal(e).0.code())?;
            tracing::info!(partitions = count, "partition reassignments altered");
        }
        Ok(results)
    }

    /// The automatic rebalance (Kafka's `auto.leader.rebalance.enable`); only the
    /// active controller makes it.
    async fn balance_leaders(&mut self) {
        if !self.is_active() {
            return;
        }
        let Ok(image) = self.current().await else {
            return;
        };
        let offline = self.sessions().offline_replicas();
        let moves = election::rebalance(
            &image,
            self.config.leader_imbalance_per_broker_percentage,
            &offline,
        );
        if moves.is_empty() {
            return;
        }
        let count = moves.len();
        match self.commit(&image, moves).await {
            Ok(_) => tracing::info!(
                partitions = count,
                "leadership moved back to preferred replicas"
            ),
            Err(e) => {
                let (_, why) = refusal(e);
                tracing::warn!(error = %why, "moving leaders to preferred replicas failed");
            }
        }
    }

    /// Fences the brokers whose session expired; only the active controller does.
    async fn fence_expired(&mut self) {
        let leading = self
            .quorum
            .as_ref()
            .is_some_and(|q| q.leader().0 == u64::try_from(self.config.node_id).ok());
        if !leading {
            return;
        }
        let Ok(image) = self.current().await else {
            return;
        };
        let timeout = std::time::Duration::from_millis(self.config.broker_session_timeout_ms);
        let fence = self
            .sessions()
            .expired(&image, timeout, std::time::Instant::now());
        if fence.is_empty() {
            return;
        }
        let count = fence.len();
        let records = self.with_offline_leadership(&image, fence);
        match self.commit(&image, records).await {
            Ok(_) => tracing::warn!(brokers = count, "fenced brokers whose session expired"),
            // Not fatal (refusal stops the broker only for a stopped quorum): the next
            // tick tries again.
            Err(e) => {
                let (_, why) = refusal(e);
                tracing::warn!(error = %why, "fencing expired brokers failed");
            }
        }
    }

    /// A producer id from the reserved block; a new block is reserved in the metadata
    /// log when it runs out. Without the quorum, COORDINATOR_LOAD_IN_PROGRESS (what
    /// Kafka answers while no block is available; producers retry it).
    async fn allocate_producer_id(&mut self) -> Result<i64, i16> {
        if self.next_pid == self.pid_end {
            let unavailable = |e: QuorumError| {
                let (_, message) = refusal(e);
                tracing::warn!(error = %message, "no producer-id block");
                ErrorCode::CoordinatorLoadInProgress.code()
            };
            let image = self.current().await.map_err(unavailable)?;
            let start = image.producer_ids_end.max(self.pid_end);
            let end = start + PRODUCER_ID_BLOCK;
            let record = records::producer_ids(self.config.node_id, end);
            self.commit(&image, vec![record])
                .await
                .map_err(unavailable)?;
            self.next_pid = start;
            self.pid_end = end;
        }
        let pid = self.next_pid;
        self.next_pid += 1;
        Ok(pid)
    }

    async fn change_topics(&mut self, request: ControllerRequest) -> Vec<TopicOutcome> {
        let names = request_names(&request);
        // Not the active controller: the request is still checked against this node's
        // image (so that, e.g., creating a topic that exists is TOPIC_ALREADY_EXISTS
        // everywhere), and only a change to write is refused.
        let (image, not_controller) = match self.current().await {
            Ok(image) => (image, None),
            Err(e @ (QuorumError::NotLeader { .. } | QuorumError::NoQuorum(_))) => {
                (self.published.image(), Some(e))
            }
            Err(e) => return refuse_all(names, e),
        };
        let mut records = Vec::new();
        // A scratch image so that later items of one request see the earlier ones.
        let mut next = (*image).clone();
        let mut outcomes = Vec::new();
        let (validate_only, kind) = match &request {
            ControllerRequest::CreateTopics { validate_only, .. } => (*validate_only, "create"),
            ControllerRequest::DeleteTopics { .. } => (false, "delete"),
            ControllerRequest::CreatePartitions { validate_only, .. } => {
                (*validate_only, "partitions")
            }
            ControllerRequest::AlterConfigs { validate_only, .. } => (*validate_only, "configs"),
            ControllerRequest::AlterBrokerConfigs { validate_only, .. } => {
                (*validate_only, "broker configs")
            }
            ControllerRequest::AlterGroupConfigs { validate_only, .. } => {
                (*validate_only, "group configs")
            }
            ControllerRequest::AlterScramCredentials { .. } => (false, "scram credentials"),
            ControllerRequest::AlterClientQuotas { validate_only, .. } => {
                (*validate_only, "client quotas")
            }
            ControllerRequest::CreateAcls { .. } => (false, "create acls"),
            ControllerRequest::DeleteAcls { .. } => (false, "delete acls"),
            ControllerRequest::AllocateProducerId
            | ControllerRequest::Broker(_)
            | ControllerRequest::FenceExpired
            | ControllerRequest::DescribeQuorum
            | ControllerRequest::AlterPartition(_)
            | ControllerRequest::ElectLeaders(_)
            | ControllerRequest::AlterReassignments(_)
            | ControllerRequest::BalanceLeaders
            | ControllerRequest::Forwarded(_) => return Vec::new(),
        };
        match request {
            ControllerRequest::CreateTopics { topics, .. } => {
                for t in topics {
                    match self.plan_create(&next, &t) {
                        Ok(planned) => {
                            next.replay_all(&planned);
                            records.extend(planned);
                            outcomes.push(TopicOutcome::ok(&t.name, None));
                        }
                        Err(o) => outcomes.push(o),
                    }
                }
            }
            ControllerRequest::DeleteTopics { names } => {
                for name in names {
                    if !self.config.delete_topic_enable {
                        outcomes.push(TopicOutcome::err(
                            &name,
                            ErrorCode::TopicDeletionDisabled,
                            "Topic deletion is disabled.",
                        ));
                    } else if next.topic(&name).is_none() {
                        outcomes.push(TopicOutcome::err(
                            &name,
                            ErrorCode::UnknownTopicOrPartition,
                            "This server does not host this topic.",
                        ));
                    } else if name == crate::group::OFFSETS_TOPIC {
                        outcomes.push(TopicOutcome::err(
                            &name,
                            ErrorCode::InvalidTopicException,
                            "Internal topics cannot be deleted.",
                        ));
                    } else if let Some(id) = next.topic(&name).map(|t| t.id) {
                        let record = records::remove_topic(id);
                        next.replay(&record.record);
                        records.push(record);
                        outcomes.push(TopicOutcome::ok(&name, None));
                    }
                }
            }
            ControllerRequest::CreatePartitions { topics, .. } => {
                for (name, count, assignments) in topics {
                    match self.plan_partitions(&next, &name, count, assignments.as_deref()) {
                        Ok(planned) => {
                            next.replay_all(&planned);
                            records.extend(planned);
                            outcomes.push(TopicOutcome::ok(&name, None));
                        }
                        Err(o) => outcomes.push(o),
                    }
                }
            }
            ControllerRequest::AlterConfigs { changes, .. } => {
                for (name, change) in changes {
                    match plan_configs(&next, &name, change) {
                        Ok(planned) => {
                            next.replay_all(&planned);
                            records.extend(planned);
                            outcomes.push(TopicOutcome::ok(&name, None));
                        }
                        Err(o) => outcomes.push(o),
                    }
                }
            }
            ControllerRequest::AlterBrokerConfigs { changes, .. } => {
                for (resource, change) in changes {
                    match broker_config::alter::plan(&next, &self.config, &resource, change) {
                        Ok(configs) => {
                            let old = next.broker_configs.get(&resource).cloned();
                            let planned = records::config_diff(
                                resource_type::BROKER,
                                &resource,
                                &old.unwrap_or_default(),
                                &configs,
                            );
                            next.replay_all(&planned);
                            records.extend(planned);
                            outcomes.push(TopicOutcome::ok(&resource, None));
                        }
                        Err((code, message)) => {
                            outcomes.push(TopicOutcome::err(&resource, code, message))
                        }
                    }
                }
            }
            ControllerRequest::AlterGroupConfigs { changes, .. } => {
                for (group, change) in changes {
                    match crate::group::group_config::plan(&next, &self.config, &group, change) {
                        Ok(configs) => {
                            let old = next.group_configs.get(&group).cloned();
                            let planned = records::config_diff(
                                resource_type::GROUP,
                                &group,
                                &old.unwrap_or_default(),
                                &configs,
                            );
                            next.replay_all(&planned);
                            records.extend(planned);
                            outcomes.push(TopicOutcome::ok(&group, None));
                        }
                        Err((code, message)) => {
                            outcomes.push(TopicOutcome::err(&group, code, message))
                        }
                    }
                }
            }
            ControllerRequest::AlterScramCredentials {
                upsertions,
                deletions,
            } => {
                let (planned, users) = credentials::plan_alter(&next, &upsertions, &deletions);
                next.replay_all(&planned);
                records.extend(planned);
                outcomes.extend(
                    users
                        .into_iter()
                        .map(|(name, error, message)| TopicOutcome {
                            name,
                            error,
                            message,
                            topic: None,
                        }),
                );
            }
            ControllerRequest::AlterClientQuotas { entries, .. } => {
                let (planned, each) = next.client_quotas.plan_alter(&entries);
                next.replay_all(&planned);
                records.extend(planned);
                outcomes.extend(indexed(each));
            }
            ControllerRequest::CreateAcls { acls } => {
                let (planned, each) = acl_changes::plan_create(&next, &acls);
                next.replay_all(&planned);
                records.extend(planned);
                outcomes.extend(indexed(each));
            }
            ControllerRequest::DeleteAcls { ids } => {
                let (planned, each) = acl_changes::plan_delete(&next, &ids);
                next.replay_all(&planned);
                records.extend(planned);
                outcomes.extend(indexed(each));
            }
            ControllerRequest::AllocateProducerId
            | ControllerRequest::Broker(_)
            | ControllerRequest::FenceExpired
            | ControllerRequest::DescribeQuorum
            | ControllerRequest::AlterPartition(_)
            | ControllerRequest::ElectLeaders(_)
            | ControllerRequest::AlterReassignments(_)
            | ControllerRequest::BalanceLeaders
            | ControllerRequest::Forwarded(_) => {}
        }
        // A config change may allow unclean elections of leaderless partitions.
        if matches!(kind, "configs" | "broker configs") && !records.is_empty() {
            let offline = self.sessions().offline_replicas();
            let elections =
                crate::metadata::leadership::elect_leaders(&next, &self.config, &offline);
            next.replay_all(&elections);
            records.extend(elections);
        }
        if validate_only || records.is_empty() {
            return self.attach_topics(outcomes, &next);
        }
        let count = records.len();
        let committed = match not_controller {
            Some(e) => Err(e),
            None => self.commit(&image, records).await,
        };
        match committed {
            Ok(committed) => {
                tracing::info!(kind, records = count, offset = ?committed.offset, "metadata changed");
                self.attach_topics(outcomes, &committed)
            }
            // Items refused during planning keep their own errors.
            Err(e) => {
                let (code, message) = refusal(e);
                for o in outcomes.iter_mut().filter(|o| o.error == 0) {
                    *o = TopicOutcome::err(&o.name, code, message.clone());
                }
                outcomes
            }
        }
    }

    fn attach_topics(
        &self,
        mut outcomes: Vec<TopicOutcome>,
        image: &MetadataImage,
    ) -> Vec<TopicOutcome> {
        for o in &mut outcomes {
            if o.error == 0 {
                o.topic = image.topic(&o.name).cloned();
            }
        }
        outcomes
    }

    fn plan_create(
        &self,
        image: &MetadataImage,
        t: &NewTopic,
    ) -> Result<Vec<ApiMessageAndVersion>, TopicOutcome> {
        validate_topic_name(&t.name)
            .map_err(|m| TopicOutcome::err(&t.name, ErrorCode::InvalidTopicException, m))?;
        if image.topic(&t.name).is_some() {
            return Err(TopicOutcome::err(
                &t.name,
                ErrorCode::TopicAlreadyExists,
                format!("Topic '{}' already exists.", t.name),
            ));
        }
        let placed = if !t.assignments.is_empty() {
            if t.num_partitions != -1 || t.replication_factor != -1 {
                return Err(TopicOutcome::err(&t.name, ErrorCode::InvalidRequest, "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time."));
            }
            let mut sorted = t.assignments.clone();
            sorted.sort_by_key(|(p, _)| *p);
            if sorted.iter().enumerate().any(|(i, (p, _))| *p != i as i32) {
                return Err(TopicOutcome::err(
                    &t.name,
                    ErrorCode::InvalidReplicaAssignment,
                    "Partitions should be a consecutive 0-based integer sequence",
                ));
            }
            let lists: Vec<Vec<i32>> = sorted.into_iter().map(|(_, r)| r).collect();
            manual_placement(image, 0, &lists)
                .map_err(|m| TopicOutcome::err(&t.name, ErrorCode::InvalidReplicaAssignment, m))?
        } else {
            let rf =
                match t.replication_factor {
                    -1 => 1,
                    n if n >= 1 => n,
                    _ => return Err(TopicOutcome::err(
                        &t.name,
                        ErrorCode::InvalidReplicationFactor,
                        "Replication factor must be larger than 0, or -1 to use the default value.",
                    )),
                };
            let partitions = match t.num_partitions {
                -1 => self.config.num_partitions,
                n if n >= 1 => n,
                _ => return Err(TopicOutcome::err(
                    &t.name,
                    ErrorCode::InvalidPartitions,
                    "Number of partitions must be larger than 0, or -1 to use the default value.",
                )),
            };
            if partitions > MAX_PARTITIONS_PER_REQUEST {
                return Err(TopicOutcome::err(
                    &t.name,
                    ErrorCode::InvalidPartitions,
                    format!("At most {MAX_PARTITIONS_PER_REQUEST} partitions per topic"),
                ));
            }
            automatic_placement(image, 0, partitions, rf)
                .map_err(|m| TopicOutcome::err(&t.name, ErrorCode::InvalidReplicationFactor, m))?
        };
        let partitions = placed.len() as i32;
        if partitions > MAX_PARTITIONS_PER_REQUEST {
            return Err(TopicOutcome::err(
                &t.name,
                ErrorCode::InvalidPartitions,
                format!("At most {MAX_PARTITIONS_PER_REQUEST} partitions per topic"),
            ));
        }
        let mut configs = BTreeMap::new();
        for (k, v) in &t.configs {
            let Some(v) = v else {
                return Err(TopicOutcome::err(
                    &t.name,
                    ErrorCode::InvalidConfig,
                    format!("Null value not supported for topic configs: {k}"),
                ));
            };
            topic_config::validate(k, v)
                .map_err(|m| TopicOutcome::err(&t.name, ErrorCode::InvalidConfig, m))?;
            configs.insert(k.clone(), topic_config::normalize(k, v));
        }
        Ok(records::create_placed_topic(
            &t.name,
            new_topic_id(),
            &placed,
            &configs,
        ))
    }

    fn plan_partitions(
        &self,
        image: &MetadataImage,
        name: &str,
        count: i32,
        assignments: Option<&[Vec<i32>]>,
    ) -> Result<Vec<ApiMessageAndVersion>, TopicOutcome> {
        let Some(topic) = image.topic(name) else {
            return Err(TopicOutcome::err(
                name,
                ErrorCode::UnknownTopicOrPartition,
                "This server does not host this topic.",
            ));
        };
        let current = topic.partitions.len() as i32;
        if name == crate::group::OFFSETS_TOPIC {
            // Group → partition mapping depends on the count.
            return Err(TopicOutcome::err(
                name,
                ErrorCode::InvalidTopicException,
                "Partitions of internal topics cannot be added.",
            ));
        }
        if count <= current {
            return Err(TopicOutcome::err(name, ErrorCode::InvalidPartitions, format!("Topic currently has {current} partitions, which is higher than the requested {count}.")));
        }
        if count > MAX_PARTITIONS_PER_REQUEST {
            return Err(TopicOutcome::err(
                name,
                ErrorCode::InvalidPartitions,
                format!("At most {MAX_PARTITIONS_PER_REQUEST} partitions per topic"),
            ));
        }
        let placed = match assignments {
            Some(lists) => {
                if lists.len() as i32 != count - current {
                    return Err(TopicOutcome::err(
                        name,
                        ErrorCode::InvalidReplicaAssignment,
                        format!(
                            "Increasing the number of partitions by {} but {} assignments provided.",
                            count - current,
                            lists.len()
                        ),
                    ));
                }
                manual_placement(image, current, lists)
                    .map_err(|m| TopicOutcome::err(name, ErrorCode::InvalidReplicaAssignment, m))?
            }
            None => {
                // New partitions get as many replicas as the topic's first one; too few
                // brokers for them is Kafka's INVALID_REPLICATION_FACTOR.
                let rf = topic.partitions.first().map_or(1, |p| p.replicas.len()) as i16;
                automatic_placement(image, current, count - current, rf)
                    .map_err(|m| TopicOutcome::err(name, ErrorCode::InvalidReplicationFactor, m))?
            }
        };
        Ok(records::add_placed_partitions(topic.id, current, &placed))
    }
}

/// The brokers new replicas may go to: registered, not fenced, not shutting down.
fn placement_candidates(image: &MetadataImage) -> Vec<Candidate> {
    image
        .brokers
        .values()
        .filter(|b| !b.fenced && !b.in_controlled_shutdown)
        .map(|b| Candidate {
            id: b.id,
            rack: b.rack.clone(),
        })
        .collect()
}

/// Partitions `first..first + count` placed over the live brokers with `rf` replicas.
fn automatic_placement(
    image: &MetadataImage,
    first: i32,
    count: i32,
    rf: i16,
) -> Result<Vec<NewPartition>, String> {
    let brokers = placement_candidates(image);
    let lists = placement::place(
        &brokers,
        first,
        count,
        rf as usize,
        Start::random(brokers.len()),
    )?;
    Ok(lists
        .into_iter()
        .map(|r| NewPartition::new(r, |b| image.is_active(b)))
        .collect())
}

/// Replica lists given by the client for partitions `first..`, checked as Kafka's
/// controller checks them.
fn manual_placement(
    image: &MetadataImage,
    first: i32,
    lists: &[Vec<i32>],
) -> Result<Vec<NewPartition>, String> {
    let mut out = Vec::with_capacity(lists.len());
    for (replicas, index) in lists.iter().zip(first..) {
        if replicas.is_empty() {
            return Err(format!("The manual partition assignment includes an empty replica list for partition {index}."));
        }
        if replicas.len() != lists[0].len() {
            return Err("All partitions should have the same number of replicas".into());
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = replicas.iter().find(|r| !seen.insert(**r)) {
            return Err(format!(
                "The manual partition assignment includes the broker {dup} more than once."
            ));
        }
        if let Some(missing) = replicas.iter().find(|r| !image.brokers.contains_key(r)) {
            return Err(format!("The manual partition assignment includes broker {missing}, but no such broker is registered."));
        }
        let placed = NewPartition::new(replicas.clone(), |b| image.is_active(b));
        if placed.leader == -1 {
            return Err(format!("All brokers specified in the manual partition assignment for partition {index} are fenced or in controlled shutdown."));
        }
        out.push(placed);
    }
    Ok(out)
}

/// A broker call that could not be served: NOT_CONTROLLER sends the broker's client to
/// another voter.
fn broker_refusal(e: QuorumError) -> BrokerAnswer {
    match e {
        QuorumError::NotLeader { .. } | QuorumError::NoQuorum(_) => BrokerAnswer::NotController,
        other => BrokerAnswer::Refused(refusal(other).1),
    }
}

/// The names (topics or config resources) a request is about, in request order.
pub fn request_names(request: &ControllerRequest) -> Vec<String> {
    match request {
        ControllerRequest::CreateTopics { topics, .. } => {
            topics.iter().map(|t| t.name.clone()).collect()
        }
        ControllerRequest::DeleteTopics { names } => names.clone(),
        ControllerRequest::CreatePartitions { topics, .. } => {
            topics.iter().map(|(n, _, _)| n.clone()).collect()
        }
        ControllerRequest::AlterConfigs { changes, .. }
        | ControllerRequest::AlterBrokerConfigs { changes, .. }
        | ControllerRequest::AlterGroupConfigs { changes, .. } => {
            changes.iter().map(|(n, _)| n.clone()).collect()
        }
        ControllerRequest::AlterScramCredentials {
            upsertions,
            deletions,
        } => {
            let mut users: Vec<String> = deletions.iter().map(|d| d.user.clone()).collect();
            users.extend(upsertions.iter().map(|u| u.user.clone()));
            let mut seen = std::collections::HashSet::new();
            users.retain(|u| seen.insert(u.clone()));
            users
        }
        ControllerRequest::AlterClientQuotas { entries, .. } => {
            (0..entries.len()).map(|i| i.to_string()).collect()
        }
        ControllerRequest::CreateAcls { acls } => (0..acls.len()).map(|i| i.to_string()).collect(),
        ControllerRequest::DeleteAcls { ids } => (0..ids.len()).map(|i| i.to_string()).collect(),
        ControllerRequest::Forwarded(inner) => request_names(inner),
        ControllerRequest::AllocateProducerId
        | ControllerRequest::Broker(_)
        | ControllerRequest::FenceExpired
        | ControllerRequest::DescribeQuorum
        | ControllerRequest::AlterPartition(_)
        | ControllerRequest::ElectLeaders(_)
        | ControllerRequest::AlterReassignments(_)
        | ControllerRequest::BalanceLeaders => Vec::new(),
    }
}

/// Outcomes of items without names, named by their index.
fn indexed(outcomes: Vec<acl_changes::AclOutcome>) -> impl Iterator<Item = TopicOutcome> {
    outcomes
        .into_iter()
        .enumerate()
        .map(|(i, (error, message))| TopicOutcome {
            name: i.to_string(),
            error,
            message,
            topic: None,
        })
}

/// Every item of a request refused for the same reason (no current image to plan on).
fn refuse_all(names: Vec<String>, e: QuorumError) -> Vec<TopicOutcome> {
    let (code, message) = refusal(e);
    names
        .iter()
        .map(|n| TopicOutcome::err(n, code, message.clone()))
        .collect()
}

/// Upper bound on partitions one topic may have, so a request cannot make the broker
/// open millions of files.
const MAX_PARTITIONS_PER_REQUEST: i32 = 10_000;

fn plan_configs(
    image: &MetadataImage,
    name: &str,
    change: ConfigChange,
) -> Result<Vec<ApiMessageAndVersion>, TopicOutcome> {
    let Some(topic) = image.topic(name) else {
        return Err(TopicOutcome::err(
            name,
            ErrorCode::UnknownTopicOrPartition,
            "This server does not host this topic.",
        ));
    };
    let invalid = |m: String| TopicOutcome::err(name, ErrorCode::InvalidConfig, m);
    let mut configs = match &change {
        ConfigChange::Replace(_) => BTreeMap::new(),
        ConfigChange::Incremental(_) => topic.configs.clone(),
    };
    match change {
        ConfigChange::Replace(entries) => {
            for (k, v) in entries {
                let v = v.ok_or_else(|| invalid(format!("Null value not supported for {k}")))?;
                topic_config::validate(&k, &v).map_err(invalid)?;
                configs.insert(k.clone(), topic_config::normalize(&k, &v));
            }
        }
        ConfigChange::Incremental(ops) => {
            for (k, op, v) in ops {
                let def = topic_config::find(&k)
                    .ok_or_else(|| invalid(format!("Unknown topic config name: {k}")))?;
                match op {
                    alter_op::SET => {
                        let v =
                            v.ok_or_else(|| invalid(format!("Null value not supported for {k}")))?;
                        topic_config::validate(&k, &v).map_err(invalid)?;
                        configs.insert(k.clone(), topic_config::normalize(&k, &v));
                    }
                    alter_op::DELETE => {
                        configs.remove(&k);
                    }
                    alter_op::APPEND | alter_op::SUBTRACT => {
                        if def.kind != topic_config::ConfigType::List {
                            return Err(invalid(format!(
                                "Config value append is not allowed for config key: {k}"
                            )));
                        }
                        let current = configs
                            .get(&k)
                            .cloned()
                            .unwrap_or_else(|| "delete".to_string());
                        let joined = topic_config::apply_list_op(
                            &current,
                            op == alter_op::APPEND,
                            v.as_deref(),
                        );
                        topic_config::validate(&k, &joined).map_err(invalid)?;
                        configs.insert(k, joined);
                    }
                    _ => {
                        return Err(TopicOutcome::err(
                            name,
                            ErrorCode::InvalidRequest,
                            format!("Unknown config operation {op}"),
                        ))
                    }
                }
            }
        }
    }
    Ok(records::config_diff(
        resource_type::TOPIC,
        name,
        &topic.configs,
        &configs,
    ))
}

/// Kafka's topic-name rules.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Topic name is illegal, it can't be empty".into());
    }
    if name == "." || name == ".." {
        return Err("Topic name cannot be \".\" or \"..\"".into());
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(format!(
            "Topic name is illegal, it can't be longer than {MAX_TOPIC_NAME_LEN} characters"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(format!("Topic name \"{name}\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"));
    }
    Ok(())
}

/// A random, non-zero topic id (version-4 UUID layout).
fn new_topic_id() -> [u8; 16] {
    crate::random_id::uuid_v4()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A controller on a single-voter quorum of its own (no shards), as on node 0.
    async fn controller_alone(dir: &std::path::Path) -> (Controller, Rc<Published>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let voters = BTreeMap::from([(0, listener.local_addr().unwrap().to_string())]);
        let config = spate_replication::QuorumConfig::new(0, voters.clone(), dir);
        let quorum = spate_replication::Quorum::start_with_listener(
            config,
            listener,
            MetadataImage::default(),
        )
        .unwrap();
        let booted = crate::metadata::boot::boot(Arc::new(quorum), voters, 0, dir)
            .await
            .unwrap();
        let published = Published::new(
            Arc::new(booted.image),
            Arc::new(crate::metadata::publish::PublishedOffset::default()),
        );
        compio::runtime::spawn(publish::follow(
            booted.quorum.clone(),
            booted.committed,
            published.clone(),
            Vec::new(),
        ))
        .detach();
        let config = Arc::new(BrokerConfig::embedded_default().clone());
        (
            Controller::new(config, booted.quorum, published.clone()),
            published,
        )
    }

    /// Registers and unfences broker `id`; its epoch.
    async fn join(c: &mut Controller, published: &Published, id: i32) -> i64 {
        let register = BrokerCall::Register {
            broker_id: id,
            incarnation_id: [id as u8 + 1; 16],
            endpoints: Vec::new(),
            rack: None,
        };
        let ControllerReply::Broker(BrokerAnswer::Registered { epoch }) =
            c.handle(ControllerRequest::Broker(register)).await
        else {
            panic!("registered");
        };
        let heartbeat = BrokerCall::Heartbeat {
            broker_id: id,
            epoch,
            offset: published.image().offset,
            offline: Vec::new(),
        };
        c.handle(ControllerRequest::Broker(heartbeat)).await;
        assert!(published.image().is_live(id));
        epoch
    }

    /// A broker's heartbeat reporting an offline replica moves that partition's
    /// leadership and takes the replica out of its ISR; its other partitions stay.
    #[test]
    fn offline_replicas_in_a_heartbeat_move_their_leaderships() {
        let dir = tempfile::tempdir().unwrap();
        let rt = compio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let (mut c, published) = controller_alone(dir.path()).await;
            let mut epochs = Vec::new();
            for id in 0..3 {
                epochs.push(join(&mut c, &published, id).await);
            }
            let ControllerReply::Topics(out) = c
                .handle(ControllerRequest::CreateTopics {
                    topics: vec![NewTopic {
                        name: "jbod".into(),
                        num_partitions: -1,
                        replication_factor: -1,
                        assignments: vec![(0, vec![0, 1, 2]), (1, vec![0, 2, 1])],
                        configs: Vec::new(),
                    }],
                    validate_only: false,
                })
                .await
            else {
                panic!("topics");
            };
            assert_eq!(out[0].error, 0, "{:?}", out[0].message);
            let id = out[0].topic.as_ref().expect("created").id;
            let beat = |offline: Vec<([u8; 16], i32)>| {
                ControllerRequest::Broker(BrokerCall::Heartbeat {
                    broker_id: 0,
                    epoch: epochs[0],
                    offset: published.image().offset,
                    offline,
                })
            };
            let reply = c.handle(beat(vec![(id, 0)])).await;
            assert!(matches!(
                reply,
                ControllerReply::Broker(BrokerAnswer::Heartbeat {
                    registered: true,
                    fenced: false
                })
            ));
            let state = |p: usize| {
                let image = published.image();
                let p = &image.topic("jbod").unwrap().partitions[p];
                (p.leader, p.isr.clone())
            };
            assert_eq!(state(0), (1, vec![1, 2]));
            assert_eq!(state(1), (0, vec![0, 2, 1]));
            // The same report again changes nothing; a fence of broker 1 does not
            // hand partition 0 back to the offline replica.
            let offset = published.image().offset;
            c.handle(beat(vec![(id, 0)])).await;
            assert_eq!(published.image().offset, offset);
            c.handle(ControllerRequest::Broker(BrokerCall::ControlledShutdown {
                broker_id: 1,
                epoch: epochs[1],
            }))
            .await;
            assert_eq!(state(0), (2, vec![2]));
        });
    }

    /// The whole path of the controller's replication calls on a real quorum: RF 3
    /// accepted (RF 4 not), AlterPartition answered with the state its record made,
    /// forwarded ones too, ElectLeaders answered per partition.
    #[test]
    fn replication_calls_commit_and_answer_the_committed_state() {
        let dir = tempfile::tempdir().unwrap();
        let rt = compio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let (mut c, published) = controller_alone(dir.path()).await;
            let mut epochs = Vec::new();
            for id in 0..3 {
                epochs.push(join(&mut c, &published, id).await);
            }
            let create = |rf| ControllerRequest::CreateTopics {
                topics: vec![NewTopic {
                    name: format!("rf{rf}"),
                    num_partitions: 1,
                    replication_factor: rf,
                    assignments: Vec::new(),
                    configs: Vec::new(),
                }],
                validate_only: false,
            };
            let ControllerReply::Topics(out) = c.handle(create(4)).await else {
                panic!("topics");
            };
            assert_eq!(out[0].error, ErrorCode::InvalidReplicationFactor.code());
            let ControllerReply::Topics(out) = c.handle(create(3)).await else {
                panic!("topics");
            };
            assert_eq!(out[0].error, 0);
            let topic = out[0].topic.clone().expect("the created topic");
            let p = &topic.partitions[0];
            assert_eq!((p.isr.len(), p.replicas.len()), (3, 3));
            let leader = p.leader;
            let follower = *p.replicas.iter().find(|&&r| r != leader).unwrap();
            let change = IsrChange {
                broker_id: leader,
                broker_epoch: epochs[leader as usize],
                topic_id: topic.id,
                partition: 0,
                leader_epoch: 0,
                partition_epoch: 0,
                new_isr: p
                    .isr
                    .iter()
                    .filter(|&&r| r != follower)
                    .map(|&r| (r, -1))
                    .collect(),
                leader_recovery_state: isr::RECOVERED,
            };
            let request = ControllerRequest::Forwarded(Box::new(
                ControllerRequest::AlterPartition(change.clone()),
            ));
            let ControllerReply::AlterPartition(Ok(state)) = c.handle(request).await else {
                panic!("ISR shrunk");
            };
            assert_eq!((state.leader_epoch, state.partition_epoch), (0, 1));
            assert!(!state.isr.contains(&follower));
            // The answer comes once the published image holds it.
            let now = published.image();
            assert_eq!(now.topic("rf3").unwrap().partitions[0].isr, state.isr);
            // The same request again is out of date.
            let again = c.handle(ControllerRequest::AlterPartition(change)).await;
            assert!(matches!(
                again,
                ControllerReply::AlterPartition(Err(code))
                    if code == ErrorCode::InvalidUpdateVersion.code()
            ));
            let elect = ControllerRequest::ElectLeaders(ElectionRequest {
                election_type: election::PREFERRED,
                partitions: Some(vec![("rf3".into(), vec![0])]),
            });
            let ControllerReply::ElectLeaders(Ok(results)) = c.handle(elect).await else {
                panic!("elections");
            };
            assert_eq!(
                results[0].1[0].1,
                ErrorCode::ElectionNotNeeded.code(),
                "{results:?}"
            );
        });
    }

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a b").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }

    #[test]
    fn topic_ids_are_random_and_nonzero() {
        let a = new_topic_id();
        assert_ne!(a, [0; 16]);
        assert_ne!(a, new_topic_id());
    }

    #[test]
    fn incremental_append_and_subtract() {
        let mut img = MetadataImage::default();
        img.replay_all(&records::create_topic("t", [1; 16], 1, 0, &BTreeMap::new()));
        let set = ConfigChange::Incremental(vec![(
            "retention.ms".into(),
            alter_op::SET,
            Some("10".into()),
        )]);
        img.replay_all(&plan_configs(&img, "t", set).unwrap());
        let configs = &img.topic("t").unwrap().configs;
        assert_eq!(configs.get("retention.ms").map(String::as_str), Some("10"));
        let bad = ConfigChange::Incremental(vec![(
            "retention.ms".into(),
            alter_op::APPEND,
            Some("10".into()),
        )]);
        assert_eq!(
            plan_configs(&img, "t", bad).unwrap_err().error,
            ErrorCode::InvalidConfig.code()
        );
        let missing = ConfigChange::Replace(vec![]);
        assert_eq!(
            plan_configs(&img, "nope", missing).unwrap_err().error,
            ErrorCode::UnknownTopicOrPartition.code()
        );
    }
}
