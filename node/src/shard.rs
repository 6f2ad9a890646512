//! A shard: one pinned thread running one compio runtime. It owns the partitions placed
//! on it, accepts connections on the shared port, and serves the partition work other
//! shards send it.

use crate::security::authorizer::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::security::authorizer::{Authorizer, Caller};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::budget::{ConnectionLimit, RequestMemory};
use crate::cleaner::schedule::ShardCleaning;
use crate::cleaner::Cleaner;
use crate::config::BrokerConfig;
use crate::controller::{ControllerReply, ControllerRequest, ControllerStart, TopicOutcome};
use crate::group::{Coordinator, OFFSETS_TOPIC, TICK};
use crate::log_dirs::{LogDirs, Placement};
use crate::mesh::{PartitionKey, PartitionOp, PartitionReply, ShardMsg, TxnCheck};
use crate::metadata::{MetadataImage, TopicImage};
use crate::metrics::ShardCounters;
use crate::partition::{now_ms, partition_dir, Partition, StorageSettings, TxnVerifier};
use crate::topic_config::EffectiveTopicConfig;
use spate_log::{BatchCache, SharedBatchCache};

/// What a shard holds; shared by its tasks through `Rc`.
pub struct ShardContext {
    pub id: usize,
    pub shard_count: usize,
    pub config: Arc<BrokerConfig>,
    /// Kafka's `advertised.listeners` of this broker, for DescribeConfigs (a client is
    /// given its own listener's address: `security::Session`).
    pub advertised_listeners: String,
    /// The listeners this shard accepts on (changed by the dynamic `listeners`).
    pub listeners: crate::listener_set::ShardListeners,
    pub image: RefCell<Arc<MetadataImage>>,
    /// When this shard last asked for a missing internal topic (a cluster creates them
    /// on first use).
    pub internal_topics: crate::internal_topics::CreationAsked,
    /// This shard's connections to other brokers (transaction markers, verification,
    /// follower fetches).
    pub brokers: crate::interbroker::BrokerClient,
    /// The leader brokers this shard's followers fetch from, one fetcher task each.
    pub fetchers: RefCell<std::collections::HashSet<i32>>,
    /// `senders[d]` reaches shard `d`.
    pub senders: Vec<flume::Sender<ShardMsg>>,
    pub partitions: RefCell<HashMap<PartitionKey, Rc<Partition>>>,
    /// Partitions this shard owns whose log could not be opened (a corrupt segment, an
    /// I/O error), with the reason: they answer KAFKA_STORAGE_ERROR, as Kafka answers
    /// for a partition in an offline log directory, until a restart opens them.
    pub offline: RefCell<HashMap<PartitionKey, ([u8; 16], String)>>,
    /// Partitions moving to another log dir (AlterReplicaLogDirs, `log_move.rs`).
    pub moves: RefCell<HashMap<PartitionKey, Rc<crate::log_move::Move>>>,
    /// Recently written batches of all this shard's partitions: one budget
    /// (`batch_cache_bytes_per_shard`), one least-recently-used order.
    pub batch_cache: SharedBatchCache,
    /// Compaction of this shard's compacted partitions (their checks and swaps).
    pub cleaning: ShardCleaning,
    /// Consumer groups whose `__consumer_offsets` partition this shard owns.
    pub groups: RefCell<Coordinator>,
    /// Transactional ids whose `__transaction_state` partition this shard owns.
    pub txns: RefCell<crate::txn::TxnCoordinator>,
    /// Share-partitions (KIP-932) of the partitions this shard leads.
    pub share_partitions: RefCell<crate::share::leader::ShareLeader>,
    /// The share sessions of this shard's connections.
    pub share_sessions: crate::share::session::ShareSessions,
    /// Share-partition states whose `__share_group_state` partition this shard owns.
    pub shares: RefCell<crate::share::ShareCoordinator>,
    pub metrics: RefCell<ShardCounters>,
    /// Broker-wide budget for request frames in memory (`queued_max_request_bytes`).
    pub request_memory: Arc<RequestMemory>,
    /// Broker-wide count of open client connections (`max_connections`).
    pub connection_limit: Arc<ConnectionLimit>,
    /// Broker-wide replication throttles (`replica/quota.rs`).
    pub replication_quotas: Arc<crate::replica::quota::ReplicationQuotas>,
    /// Broker-wide usage rates of the client quotas (`quota`).
    pub quota_sensors: Arc<crate::quota::QuotaSensors>,
    /// The schema registry's ids, for broker-side schema validation.
    pub schemas: Arc<crate::schema_registry::SchemaIndex>,
    /// The log dirs (`log_dirs`): where each partition's log is, which have failed.
    pub log_dirs: Arc<LogDirs>,
    /// The high watermarks checkpointed before the start (`replica::hw_checkpoint`).
    start_high_watermarks: Arc<crate::replica::hw_checkpoint::StartHighWatermarks>,
    /// ACL checks; `None` when authorization is off.
    pub authorizer: Option<Authorizer>,
    /// The metadata the broker started with: partitions in it existed before the start
    /// (see `LogDirs::place`).
    image_at_start: Arc<MetadataImage>,
    /// Whether the logs of partitions no longer this broker's were looked for since
    /// the start (`delete_strays`).
    strays_swept: Cell<bool>,
    /// `LogDirs::failures` when this shard last took the partitions of failed log dirs
    /// offline.
    dir_failures_seen: Cell<u64>,
    /// The shard's inbound channels, for the queue-depth gauge.
    inbound: Vec<flume::Receiver<ShardMsg>>,
    shutting_down: Cell<bool>,
}

impl ShardContext {
    /// Whether `caller` may do `operation` on the resource (logged when denied);
    /// always without an authorizer.
    pub fn authorized(
        &self,
        caller: &Caller,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        self.authorizer.as_ref().is_none_or(|a| {
            a.authorize(
                &self.image.borrow().acls,
                caller,
                operation,
                resource_type,
                name,
            )
        })
    }

    /// [`Self::authorized`] for `operation` on the cluster resource.
    pub fn authorized_on_cluster(&self, caller: &Caller, operation: Operation) -> bool {
        self.authorized(caller, operation, ResourceType::Cluster, CLUSTER_NAME)
    }

    /// [`Self::authorized`] without an audit line, for filtering what a caller sees.
    pub fn may_see(
        &self,
        caller: &Caller,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        self.authorizer.as_ref().is_none_or(|a| {
            a.quietly(
                &self.image.borrow().acls,
                caller,
                operation,
                resource_type,
                name,
            )
        })
    }

    /// Whether `caller` may do `operation` on some resource of `resource_type` (Kafka's
    /// `authorizeByResourceType`); always without an authorizer.
    pub fn authorized_for_any(
        &self,
        caller: &Caller,
        operation: Operation,
        resource_type: ResourceType,
    ) -> bool {
        self.authorizer.as_ref().is_none_or(|a| {
            a.by_resource_type(&self.image.borrow().acls, caller, operation, resource_type)
        })
    }

    /// KIP-430's authorized operations of a resource when the client asked for them
    /// and an authorizer is on; Kafka's "unknown" (`i32::MIN`) otherwise, as before.
    pub fn authorized_operations(
        &self,
        requested: bool,
        caller: &Caller,
        resource_type: ResourceType,
        name: &str,
    ) -> i32 {
        match &self.authorizer {
            Some(a) if requested => {
                a.operations(&self.image.borrow().acls, caller, resource_type, name)
            }
            _ => i32::MIN,
        }
    }

    /// The names among `names` that `caller` may not `operation` as topics (each
    /// checked once, denials logged); empty at no cost without an authorizer.
    pub fn denied_topics<'a>(
        &self,
        caller: &Caller,
        operation: Operation,
        names: impl IntoIterator<Item = &'a str>,
    ) -> std::collections::HashSet<String> {
        let mut denied = std::collections::HashSet::new();
        if self.authorizer.is_none() {
            return denied;
        }
        let mut seen = std::collections::HashSet::new();
        for name in names {
            if seen.insert(name) && !self.authorized(caller, operation, ResourceType::Topic, name) {
                denied.insert(name.to_string());
            }
        }
        denied
    }

    pub fn owner_of(&self, slot: u32) -> usize {
        slot as usize % self.shard_count
    }

    /// The shard owning `topic`'s `partition` when this broker leads it.
    pub fn leading_shard(&self, topic: &str, partition: i32) -> Option<usize> {
        let image = self.image.borrow();
        let info = image.partition(topic, partition)?;
        (info.leader == self.config.node_id).then(|| self.owner_of(info.slot))
    }

    /// The live broker other than this one that leads `topic`'s `partition`, if any.
    pub fn live_leader_elsewhere(&self, topic: &str, partition: i32) -> Option<i32> {
        let image = self.image.borrow();
        let leader = image.partition(topic, partition)?.leader;
        (leader != self.config.node_id && image.is_live(leader)).then_some(leader)
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    /// Whether any client has a quota of `kind`: what every request asks first, so it
    /// does not take a reference to the image (an atomic count shared with the other
    /// shards).
    pub fn sets_client_quota(&self, kind: crate::quota::QuotaKind) -> bool {
        self.image.borrow().client_quotas.sets(kind)
    }

    pub fn partition(&self, key: &PartitionKey) -> Option<Rc<Partition>> {
        self.partitions.borrow().get(key).cloned()
    }

    /// Storage settings for this shard's partitions.
    pub fn storage(&self) -> StorageSettings {
        StorageSettings {
            preallocate_bytes: self.config.segment_preallocate_bytes,
            zero_ahead_bytes: self.config.segment_zero_ahead_bytes,
            read_ahead_bytes: self.config.read_ahead_bytes,
        }
    }

    pub fn inbound_depth(&self) -> usize {
        self.inbound.iter().map(|r| r.len()).sum()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.get()
    }

    /// Ask the controller (shard 0); `None` when it is unreachable.
    pub async fn controller(&self, request: ControllerRequest) -> Option<ControllerReply> {
        let (tx, rx) = flume::bounded(1);
        self.senders[0]
            .send_async(ShardMsg::Controller { request, reply: tx })
            .await
            .ok()?;
        rx.recv_async().await.ok()
    }

    /// Ask the controller to change topics; the answer comes once every shard applied
    /// the change.
    pub async fn change_topics(&self, request: ControllerRequest) -> Option<Vec<TopicOutcome>> {
        match self.controller(request).await? {
            ControllerReply::Topics(outcomes) => Some(outcomes),
            _ => None,
        }
    }

    /// A topic's settings: its overrides, else the dynamic broker defaults, else the
    /// static ones.
    fn effective_config(&self, image: &MetadataImage, topic: &TopicImage) -> EffectiveTopicConfig {
        let configs = crate::broker_config::describe::with_dynamic_defaults(
            &topic.configs,
            &image.broker_configs,
            self.config.node_id,
        );
        EffectiveTopicConfig::resolve(&self.config.topic_defaults, &configs)
    }

    /// Bring the owned partitions in line with `image`: open new ones, reconfigure
    /// changed ones, delete the logs of deleted topics.
    async fn apply_image(self: &Rc<Self>, image: Arc<MetadataImage>) {
        let old = self.image.replace(image.clone());
        if self.id == 0 && old.broker_configs != image.broker_configs {
            self.apply_dynamic_settings(&image);
        }
        // Deleted topics (or re-created under the same name: a new id).
        let deleted: Vec<&Arc<TopicImage>> = old
            .topics
            .values()
            .filter(|t| image.topic(&t.name).is_none_or(|n| n.id != t.id))
            .collect();
        if !deleted.is_empty() {
            let names: Vec<String> = deleted.iter().map(|t| t.name.clone()).collect();
            crate::group::forget_topics(self, &names);
        }
        // Their partitions leave their log dirs, offline ones included (their placement
        // must not hold a re-created topic of the same name); each owner forgets its own.
        for t in deleted {
            for (index, info) in t.partitions.iter().enumerate() {
                if self.owner_of(info.slot) == self.id {
                    self.log_dirs.forget(&t.name, index as i32);
                }
            }
        }
        // Partitions of deleted topics (or of a topic re-created under the same name:
        // a new id), and replicas a reassignment moved off this broker.
        let me = self.config.node_id;
        let gone: Vec<(PartitionKey, bool)> = self
            .partitions
            .borrow()
            .iter()
            .filter_map(|(k, p)| match image.topic(&k.topic) {
                Some(t) if t.id == p.topic_id => {
                    let moved = usize::try_from(k.partition)
                        .ok()
                        .and_then(|i| t.partitions.get(i))
                        .is_none_or(|info| !info.is_replica(me));
                    moved.then(|| (k.clone(), true))
                }
                _ => Some((k.clone(), false)),
            })
            .collect();
        self.offline.borrow_mut().retain(|k, _| {
            let moved = image
                .partition(&k.topic, k.partition)
                .is_some_and(|info| !info.is_replica(me));
            if moved {
                self.log_dirs.forget(&k.topic, k.partition);
            }
            !moved
        });
        for (key, moved) in gone {
            let removed = self.partitions.borrow_mut().remove(&key);
            if let Some(p) = removed {
                if moved {
                    // No longer a replica here (Kafka's StopReplica with deletion): the
                    // role ends first, so waiting requests and the fetcher let go.
                    p.stop_replica();
                    self.log_dirs.forget(&key.topic, key.partition);
                    tracing::info!(topic = %key.topic, partition = key.partition, "replica moved off this broker; deleting its log");
                }
                // Renamed first (in its own log dir), then removed; requests still
                // holding it get errors.
                let dir = p.log.dir();
                let graveyard =
                    dir.parent()
                        .unwrap_or(&dir)
                        .join(crate::delete_dirs::deleted_dir_name(
                            &key.topic,
                            key.partition,
                        ));
                if let Err(e) = p.delete(&graveyard).await {
                    tracing::error!(topic = %key.topic, partition = key.partition, error = %e, "deleting partition log failed");
                }
            }
        }
        self.offline
            .borrow_mut()
            .retain(|k, (id, _)| image.topic(&k.topic).is_some_and(|t| t.id == *id));
        let storage = self.storage();
        for topic in image.topics.values() {
            let config = self.effective_config(&image, topic);
            for (index, info) in topic.partitions.iter().enumerate() {
                // A broker opens the partitions it holds a replica of, each on its
                // owner shard.
                if self.owner_of(info.slot) != self.id || !info.is_replica(self.config.node_id) {
                    continue;
                }
                let key = PartitionKey {
                    topic: topic.name.as_str().into(),
                    partition: index as i32,
                };
                let existing = self.partition(&key);
                let assignment = self.assignment(&image, info);
                match existing {
                    Some(p) => {
                        p.reconfigure(config.clone(), storage);
                        let led = p.leader_epoch();
                        p.set_role(&assignment, info.leader, self.max_lag()).await;
                        crate::coordinators::role_changed(self, &key, &p, led);
                    }
                    // Failed to open with this topic id: stays offline until a restart.
                    None if self.offline.borrow().contains_key(&key) => {}
                    None => {
                        let existed = self
                            .image_at_start
                            .topic(&topic.name)
                            .is_some_and(|t| t.id == topic.id && index < t.partitions.len());
                        let dir = match self.log_dirs.place(&topic.name, index as i32, !existed) {
                            Placement::At { path, .. } => {
                                partition_dir(&path, &topic.name, index as i32)
                            }
                            Placement::Offline(why) => {
                                tracing::error!(topic = %topic.name, partition = index, reason = %why, "partition offline");
                                self.log_dirs
                                    .set_offline(&topic.name, index as i32, topic.id);
                                self.offline.borrow_mut().insert(key, (topic.id, why));
                                continue;
                            }
                        };
                        let high_watermark =
                            self.start_high_watermarks
                                .get(&topic.name, index as i32, topic.id);
                        match Partition::open(
                            dir,
                            topic.id,
                            config.clone(),
                            storage,
                            self.batch_cache.clone(),
                            high_watermark,
                        )
                        .await
                        {
                            Ok(p) => {
                                p.set_role(&assignment, info.leader, self.max_lag()).await;
                                self.offline.borrow_mut().remove(&key);
                                self.log_dirs.set_online(&topic.name, index as i32);
                                let p = Rc::new(p);
                                self.partitions.borrow_mut().insert(key.clone(), p.clone());
                                // Opened as leader: its coordinator loads.
                                crate::coordinators::role_changed(self, &key, &p, None);
                                if let Some(dest) =
                                    self.log_dirs.take_resumed_move(&topic.name, index as i32)
                                {
                                    crate::log_move::start(self, key, p, dest);
                                }
                            }
                            Err(e) => {
                                tracing::error!(topic = %topic.name, partition = index, error = %e, "opening partition log failed; the partition is offline until a restart");
                                self.log_dirs
                                    .set_offline(&topic.name, index as i32, topic.id);
                                self.offline
                                    .borrow_mut()
                                    .insert(key, (topic.id, e.to_string()));
                            }
                        }
                    }
                }
            }
        }
        // Followers fetch from their leaders: one fetcher per leader broker.
        crate::replica::fetcher::start_missing(self);
        if !self.strays_swept.get()
            && crate::registration::registered_and_unfenced(&image, self.config.node_id)
        {
            self.strays_swept.set(true);
            self.delete_strays(&image);
        }
    }

    /// Delete the logs this shard would own that are no longer this broker's: replicas
    /// moved off it, and partitions of topics deleted, while it was down (Kafka's stray
    /// logs). Only with metadata caught up with the controller's (`image` has this
    /// process unfenced), so that a log is never judged on metadata older than it. Logs
    /// of topics the image does not know are shard 0's to delete.
    fn delete_strays(&self, image: &MetadataImage) {
        let me = self.config.node_id;
        let mut swept_dirs = Vec::new();
        for (topic, partition, data_dir) in self.log_dirs.placements() {
            let info = image.topic(&topic).and_then(|t| {
                usize::try_from(partition)
                    .ok()
                    .and_then(|i| t.partitions.get(i))
            });
            let owner = info.map_or(0, |info| self.owner_of(info.slot));
            if owner != self.id || info.is_some_and(|info| info.is_replica(me)) {
                continue;
            }
            let key = PartitionKey {
                topic: topic.as_str().into(),
                partition,
            };
            debug_assert!(
                self.partition(&key).is_none(),
                "an open log is this broker's"
            );
            let dir = partition_dir(&data_dir, &topic, partition);
            let graveyard = data_dir.join(crate::delete_dirs::deleted_dir_name(&topic, partition));
            match std::fs::rename(&dir, &graveyard) {
                Ok(()) => {
                    tracing::info!(topic = %topic, partition, dir = %dir.display(), "deleting the log of a partition no longer on this broker");
                    self.log_dirs.forget(&topic, partition);
                    if !swept_dirs.contains(&data_dir) {
                        swept_dirs.push(data_dir);
                    }
                }
                Err(e) => {
                    tracing::warn!(topic = %topic, partition, dir = %dir.display(), error = %e, "renaming the log of a partition no longer on this broker failed; kept")
                }
            }
        }
        if !swept_dirs.is_empty() {
            if let Err(e) = crate::delete_dirs::spawn_sweep(swept_dirs) {
                tracing::warn!(error = %e, "starting the removal of deleted partition directories failed");
            }
        }
    }

    /// A partition as the image assigns it, seen from this broker.
    pub fn assignment(
        &self,
        image: &MetadataImage,
        info: &crate::metadata::PartitionInfo,
    ) -> crate::replica::Assignment {
        crate::replica::Assignment {
            me: self.config.node_id,
            epoch: info.leader_epoch,
            partition_epoch: info.partition_epoch,
            replicas: info.replicas.clone(),
            isr: info.isr.clone(),
            ineligible: info
                .replicas
                .iter()
                .copied()
                .filter(|&r| {
                    image
                        .brokers
                        .get(&r)
                        .is_none_or(|b| b.fenced || b.in_controlled_shutdown)
                })
                .collect(),
        }
    }

    /// `replica.lag.time.max.ms`.
    pub fn max_lag(&self) -> Duration {
        Duration::from_millis(self.config.replica_lag_time_max_ms)
    }

    /// Apply the dynamic broker configs that change broker-wide settings (the cleaner's,
    /// `max.connections`, the listeners and their TLS files); shard 0 does it for the
    /// whole broker.
    fn apply_dynamic_settings(self: &Rc<Self>, image: &MetadataImage) {
        let live = crate::broker_config::live::effective(
            &self.config,
            &image.broker_configs,
            self.config.node_id,
        );
        crate::listener_set::reconcile(self, &live);
        crate::listener_set::switch_tls_files(self, &live);
        if let Err(e) = self.cleaning.cleaner().reconfigure(&live.log_cleaner) {
            tracing::error!(error = %e, "reconfiguring the log cleaner failed");
        }
        self.connection_limit.set_limit(live.max_connections);
        let quotas = &self.replication_quotas;
        quotas
            .leader
            .set_rate(live.leader_replication_throttled_rate);
        quotas
            .follower
            .set_rate(live.follower_replication_throttled_rate);
        quotas
            .alter_log_dirs
            .set_rate(live.replica_alter_log_dirs_io_max_bytes_per_second);
    }

    /// Fail the log dir of a partition whose writes failed for good, and take every
    /// partition of a failed log dir offline (`log_dirs.rs`). Cheap when nothing failed:
    /// one pass over this shard's partitions, reading a flag each.
    async fn check_log_dirs(&self) {
        let failing: Vec<(PartitionKey, String)> = self
            .partitions
            .borrow()
            .iter()
            .filter_map(|(k, p)| p.log.failed_for_good().map(|why| (k.clone(), why)))
            .collect();
        for (key, why) in failing {
            if let Some(index) = self.log_dirs.dir_of(&key.topic, key.partition) {
                self.log_dirs.fail(index, &why);
            }
        }
        let failures = self.log_dirs.failures();
        if failures == self.dir_failures_seen.get() {
            return;
        }
        self.dir_failures_seen.set(failures);
        let gone: Vec<(PartitionKey, String)> = self
            .partitions
            .borrow()
            .keys()
            .filter_map(|k| {
                let index = self.log_dirs.dir_of(&k.topic, k.partition)?;
                Some((k.clone(), self.log_dirs.failure(index)?))
            })
            .collect();
        for (key, why) in gone {
            let Some(p) = self.partitions.borrow_mut().remove(&key) else {
                continue;
            };
            tracing::error!(topic = %key.topic, partition = key.partition, reason = %why, "partition offline");
            crate::coordinators::resigned(self, &key);
            self.log_dirs
                .set_offline(&key.topic, key.partition, p.topic_id);
            self.offline.borrow_mut().insert(key, (p.topic_id, why));
            // Stops the writer; a failing disk makes the final sync fail, which is
            // expected here and already logged for the directory.
            let _ = p.log.shutdown().await;
        }
    }

    /// Run the ops of one `Partitions` message. Produce ops start here, in arrival
    /// order, so that per-partition order follows the channel's FIFO order.
    fn serve_partition_ops(
        self: &Rc<Self>,
        ops: Vec<(PartitionKey, PartitionOp)>,
        sent: std::time::Instant,
        arrived: std::time::Instant,
        reply: flume::Sender<Vec<PartitionReply>>,
    ) {
        let mut pending: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = PartitionReply>>>> =
            Vec::with_capacity(ops.len());
        // One clock read for the pickup stages; the produce ops' acknowledgements are
        // timed from here.
        let picked_up = std::time::Instant::now();
        if let Some((_, op)) = ops.first() {
            let mut m = self.metrics.borrow_mut();
            m.queued(op.kind(), picked_up.saturating_duration_since(sent));
            if matches!(op, PartitionOp::Produce { .. }) {
                m.produce_stage(
                    "read_to_pickup",
                    picked_up.saturating_duration_since(arrived),
                );
            }
        }
        for (key, op) in ops {
            if let PartitionOp::AlterLogDir { dest } = op {
                let code = crate::log_move::alter(self, &key, dest);
                pending.push(Box::pin(async move { PartitionReply::Error(code) }));
                continue;
            }
            let Some(partition) = self.partition(&key) else {
                let code = if self.offline.borrow().contains_key(&key) {
                    spate_net::ErrorCode::KafkaStorageError.code()
                } else {
                    spate_net::ErrorCode::UnknownTopicOrPartition.code()
                };
                pending.push(Box::pin(async move { PartitionReply::Error(code) }));
                continue;
            };
            let ctx = self.clone();
            match op {
                PartitionOp::Produce {
                    records,
                    acks,
                    txn,
                    check,
                    timeout,
                } => {
                    let verifier = self.txn_verifier(&key, txn);
                    let check = check.map(|c| c as Arc<dyn spate_net::record_batch::RecordCheck>);
                    let produced = partition.produce(records, acks, timeout, verifier, check);
                    pending.push(Box::pin(async move {
                        let reply = produced.await;
                        ctx.metrics
                            .borrow_mut()
                            .produce_stage("append_to_ack", picked_up.elapsed());
                        if let PartitionReply::Produced {
                            bytes_in,
                            records_in,
                            ..
                        }
                        | PartitionReply::ProducedNoAck {
                            bytes_in,
                            records_in,
                        } = reply
                        {
                            let mut m = ctx.metrics.borrow_mut();
                            let t = m.topic(&key.topic);
                            t.bytes_in += bytes_in;
                            t.messages_in += records_in;
                        }
                        reply
                    }))
                }
                // A follower's fetch tells where its log ends (the fetch offset of the
                // request's first read): once the read found no divergence (Kafka
                // updates a follower's state only then: a diverged log's end says
                // nothing about what it shares), its progress may move the high
                // watermark and bring it into the ISR.
                PartitionOp::Fetch(crate::mesh::FetchOp {
                    offset,
                    reader:
                        crate::partition::Reader::Follower {
                            broker,
                            broker_epoch,
                            reports_end: true,
                            log_start,
                        },
                    ..
                }) => {
                    let ctx = self.clone();
                    pending.push(Box::pin(async move {
                        let reply = partition.run(op).await;
                        if let PartitionReply::Fetched {
                            diverging: None,
                            preferred_read_replica: None,
                            ..
                        } = &reply
                        {
                            if let Some(isr) =
                                partition.follower_fetched(broker, broker_epoch, offset, log_start)
                            {
                                crate::replica::isr::propose(&ctx, &key, &partition, isr);
                            }
                        }
                        reply
                    }))
                }
                // A marker in `__consumer_offsets` decides the transaction's offsets too.
                PartitionOp::WriteTxnMarker {
                    producer_id,
                    producer_epoch,
                    commit,
                    bumped,
                } if &*key.topic == OFFSETS_TOPIC => {
                    let ctx = self.clone();
                    pending.push(Box::pin(async move {
                        let reply = partition
                            .write_marker(producer_id, producer_epoch, commit, bumped)
                            .await;
                        if matches!(reply, PartitionReply::MarkerWritten) {
                            ctx.groups
                                .borrow_mut()
                                .end_txn(key.partition, producer_id, commit);
                        }
                        reply
                    }))
                }
                PartitionOp::Describe => {
                    let future = crate::log_move::describe(self, &key);
                    pending.push(Box::pin(async move {
                        PartitionReply::Described {
                            size_bytes: partition.log.size_bytes(),
                            future,
                        }
                    }))
                }
                PartitionOp::Share(op) => pending.push(Box::pin(async move {
                    crate::share::leader::run(&ctx, key, partition, op).await
                })),
                other => pending.push(Box::pin(async move { partition.run(other).await })),
            }
        }
        compio::runtime::spawn(async move {
            let replies = futures_util::future::join_all(pending).await;
            let _ = reply.send_async(replies).await;
        })
        .detach();
    }

    /// The coordinator question a transactional produce to `key` may need (KIP-890).
    fn txn_verifier(self: &Rc<Self>, key: &PartitionKey, txn: TxnCheck) -> Option<TxnVerifier> {
        let TxnCheck::Verify {
            transactional_id,
            tv2,
        } = txn
        else {
            return None;
        };
        let ctx = self.clone();
        let partition = (key.topic.to_string(), key.partition);
        Some(Box::new(move |producer_id, producer_epoch| {
            Box::pin(async move {
                crate::txn::client::verify_or_add(
                    &ctx,
                    &transactional_id,
                    producer_id,
                    producer_epoch,
                    vec![partition],
                    tv2,
                )
                .await
            })
        }))
    }

    /// Resolve as soon as watched partitions have data past their offsets, with their
    /// positions in `watches` (gone partitions included: the fetch path reports them);
    /// empty at the deadline. Checking is a high-watermark comparison, no read.
    async fn wait_for_data(
        self: &Rc<Self>,
        watches: Vec<crate::mesh::Watch>,
        deadline: std::time::Instant,
    ) -> Vec<usize> {
        loop {
            let mut listeners = Vec::new();
            let mut ready = Vec::new();
            for (pos, w) in watches.iter().enumerate() {
                match self.partition(&w.key) {
                    Some(p) => {
                        // Listen first, then check, so no append slips between the two.
                        // A write moves a follower's readable end; a follower's fetch or
                        // an ISR change moves a consumer's (the high watermark), which
                        // only writes move on a leader without followers.
                        listeners.push(p.log.listen());
                        if p.is_replicated() {
                            listeners.push(p.listen_progress());
                        }
                        let end = if w.follower {
                            p.log.written_end_offset()
                        } else {
                            p.high_watermark()
                        };
                        let released = match &w.share_group {
                            Some(group) => {
                                let shares = self.share_partitions.borrow();
                                let (listener, available) = shares.watch(group, &w.key);
                                listeners.extend(listener);
                                available
                            }
                            None => false,
                        };
                        // A replica that stopped leading has something to say too.
                        if end > w.seen || released || p.leader_epoch().is_none() {
                            ready.push(pos);
                        }
                    }
                    None => ready.push(pos),
                }
            }
            if !ready.is_empty() || listeners.is_empty() || self.is_shutting_down() {
                return ready;
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return ready;
            }
            let any = futures_util::future::select_all(listeners.into_iter().map(Box::pin));
            if compio::time::timeout(deadline - now, any).await.is_err() {
                return Vec::new();
            }
        }
    }
}

/// Shortest time between two "connection limit reached" log lines of a shard.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How often a shard looks for failed log dirs.
const LOG_DIR_CHECK: Duration = Duration::from_secs(1);

/// Everything a shard thread needs to start.
pub struct ShardStart {
    pub id: usize,
    pub cpu: Option<usize>,
    pub shard_count: usize,
    pub config: Arc<BrokerConfig>,
    pub image: Arc<MetadataImage>,
    pub links: crate::mesh::ShardLinks,
    /// Every listener, with this shard's socket for it (SO_REUSEPORT).
    pub listeners: Vec<(Arc<crate::security::Listener>, std::net::TcpListener)>,
    /// How other brokers are reached.
    pub inter_broker: Arc<crate::interbroker::InterBrokerLink>,
    pub request_memory: Arc<RequestMemory>,
    pub connection_limit: Arc<ConnectionLimit>,
    pub replication_quotas: Arc<crate::replica::quota::ReplicationQuotas>,
    pub quota_sensors: Arc<crate::quota::QuotaSensors>,
    /// The number of share sessions (KIP-932) on all shards.
    pub share_session_count: Arc<std::sync::atomic::AtomicUsize>,
    /// The broker's cleaner threads.
    pub cleaner: Cleaner,
    /// The schema registry's ids, for broker-side schema validation.
    pub schemas: Arc<crate::schema_registry::SchemaIndex>,
    pub log_dirs: Arc<LogDirs>,
    pub start_high_watermarks: Arc<crate::replica::hw_checkpoint::StartHighWatermarks>,
    /// Shard 0 runs the controller and follows the metadata log.
    pub controller: Option<ControllerStart>,
    pub ready: std::sync::mpsc::Sender<anyhow::Result<usize>>,
}

/// The body of a shard thread.
pub fn run(start: ShardStart) {
    let mut builder = compio::runtime::RuntimeBuilder::new();
    if let Some(cpu) = start.cpu {
        builder.thread_affinity(std::iter::once(cpu).collect());
    }
    let runtime = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            let _ = start.ready.send(Err(anyhow::anyhow!(
                "shard {}: starting runtime: {e}",
                start.id
            )));
            return;
        }
    };
    tracing::info!(shard = start.id, cpu = ?start.cpu, driver = ?runtime.driver_type(), "shard runtime started");
    runtime.block_on(serve(start));
}

async fn serve(start: ShardStart) {
    let ShardStart {
        id,
        shard_count,
        config,
        image,
        links,
        listeners,
        controller,
        ready,
        request_memory,
        connection_limit,
        replication_quotas,
        quota_sensors,
        share_session_count,
        cleaner,
        schemas,
        log_dirs,
        start_high_watermarks,
        inter_broker,
        ..
    } = start;
    let ctx = Rc::new(ShardContext {
        id,
        shard_count,
        config: config.clone(),
        advertised_listeners: crate::security::advertised_listeners(
            &listeners.iter().map(|(l, _)| l.clone()).collect::<Vec<_>>(),
        ),
        listeners: Default::default(),
        image: RefCell::new(Arc::new(MetadataImage::default())),
        internal_topics: Default::default(),
        brokers: crate::interbroker::BrokerClient::new(inter_broker),
        fetchers: Default::default(),
        senders: links.senders.clone(),
        partitions: RefCell::new(HashMap::new()),
        offline: RefCell::new(HashMap::new()),
        moves: RefCell::new(HashMap::new()),
        batch_cache: BatchCache::shared(config.batch_cache_bytes_per_shard),
        cleaning: ShardCleaning::new(cleaner),
        groups: RefCell::new(Coordinator::default()),
        txns: RefCell::new(crate::txn::TxnCoordinator::default()),
        share_partitions: RefCell::new(crate::share::leader::ShareLeader::default()),
        share_sessions: crate::share::session::ShareSessions::new(
            config.group_share_max_share_sessions,
            share_session_count,
        ),
        shares: RefCell::new(crate::share::ShareCoordinator::default()),
        metrics: RefCell::new(ShardCounters::default()),
        request_memory,
        connection_limit,
        replication_quotas,
        quota_sensors,
        schemas,
        log_dirs,
        start_high_watermarks,
        authorizer: Authorizer::from_config(&config.authorizer),
        image_at_start: image.clone(),
        strays_swept: Cell::new(false),
        dir_failures_seen: Cell::new(0),
        inbound: links.receivers.clone(),
        shutting_down: Cell::new(false),
    });
    ctx.apply_image(image.clone()).await;

    for (listener, socket) in listeners {
        if let Err(e) = crate::listener_set::start(&ctx, listener, socket) {
            let _ = ready.send(Err(e));
            return;
        }
    }

    // The controller lives on shard 0 and handles one request at a time.
    let controller_queue = controller
        .map(|start| crate::controller::spawn(start, config.clone(), links.senders.clone()));

    let (shutdown_tx, shutdown_rx) = flume::bounded::<flume::Sender<()>>(1);
    for rx in links.receivers {
        let ctx = ctx.clone();
        let controller_queue = controller_queue.clone();
        let shutdown_tx = shutdown_tx.clone();
        compio::runtime::spawn(async move {
            while let Ok(msg) = rx.recv_async().await {
                match msg {
                    ShardMsg::Partitions {
                        ops,
                        sent,
                        arrived,
                        reply,
                    } => ctx.serve_partition_ops(ops, sent, arrived, reply),
                    ShardMsg::Ping { reply } => {
                        let _ = reply.send_async(!ctx.is_shutting_down()).await;
                    }
                    ShardMsg::Metrics { reply } => {
                        let _ = reply
                            .send_async(crate::metrics::ShardSnapshot::take(&ctx))
                            .await;
                    }
                    ShardMsg::Group { request, refused } => {
                        crate::group::serve(&ctx, request, refused)
                    }
                    ShardMsg::Txn(request) => crate::txn::serve(&ctx, request),
                    ShardMsg::Share(request) => crate::share::coordinator::serve(&ctx, request),
                    ShardMsg::WaitForData {
                        watches,
                        deadline,
                        reply,
                    } => {
                        let ctx = ctx.clone();
                        compio::runtime::spawn(async move {
                            let arrived = ctx.wait_for_data(watches, deadline).await;
                            let _ = reply.send_async(arrived).await;
                        })
                        .detach();
                    }
                    ShardMsg::Forward { ops, reply } => {
                        let ctx = ctx.clone();
                        compio::runtime::spawn(async move {
                            let replies = crate::route::send(&ctx, ops).await.collect().await;
                            let _ = reply.send_async(replies).await;
                        })
                        .detach();
                    }
                    ShardMsg::Controller { request, reply } => match &controller_queue {
                        Some(q) => {
                            let _ = q.send_async((request, reply)).await;
                        }
                        None => tracing::error!(
                            shard = ctx.id,
                            "controller request sent to a shard without the controller"
                        ),
                    },
                    // Applied in place, in order: later messages on this channel see it.
                    ShardMsg::Metadata { image, done } => {
                        ctx.apply_image(image).await;
                        let _ = done.send_async(()).await;
                    }
                    ShardMsg::Listeners(change) => crate::listener_set::apply(&ctx, change),
                    ShardMsg::Shutdown { done } => {
                        let _ = shutdown_tx.send_async(done).await;
                    }
                }
            }
        })
        .detach();
    }

    let group_ctx = ctx.clone();
    compio::runtime::spawn(async move {
        loop {
            compio::time::sleep(TICK).await;
            crate::group::tick(&group_ctx);
            crate::share::leader::tick(&group_ctx);
        }
    })
    .detach();

    crate::cleaner::schedule::spawn(&ctx);

    let share_ctx = ctx.clone();
    compio::runtime::spawn(async move {
        let every = Duration::from_millis(
            share_ctx
                .config
                .share_coordinator_state_topic_prune_interval_ms,
        );
        loop {
            compio::time::sleep(every).await;
            crate::share::coordinator::prune(&share_ctx).await;
        }
    })
    .detach();

    let txn_ctx = ctx.clone();
    compio::runtime::spawn(async move {
        let every = Duration::from_millis(
            txn_ctx
                .config
                .transaction_abort_timed_out_check_interval_ms
                .max(10),
        );
        loop {
            compio::time::sleep(every).await;
            if txn_ctx.is_shutting_down() {
                return;
            }
            crate::txn::abort_timed_out(&txn_ctx).await;
            crate::txn::expire_idle_ids(&txn_ctx, txn_ctx.config.transactional_id_expiration_ms)
                .await;
        }
    })
    .detach();

    crate::replica::isr::spawn_checks(&ctx);
    crate::replica::hw_checkpoint::spawn(&ctx);

    let dirs_ctx = ctx.clone();
    compio::runtime::spawn(async move {
        loop {
            compio::time::sleep(LOG_DIR_CHECK).await;
            if dirs_ctx.is_shutting_down() {
                return;
            }
            dirs_ctx.check_log_dirs().await;
        }
    })
    .detach();

    let retention_ctx = ctx.clone();
    compio::runtime::spawn(async move {
        let every = Duration::from_millis(retention_ctx.config.log_retention_check_interval_ms.max(100));
        loop {
            compio::time::sleep(every).await;
            let partitions: Vec<(PartitionKey, Rc<Partition>)> =
                retention_ctx.partitions.borrow().iter().map(|(k, p)| (k.clone(), p.clone())).collect();
            for (key, p) in partitions {
                p.expire_producers(now_ms());
                if let Err(e) = p.snapshot_producer_states() {
                    tracing::warn!(topic = %key.topic, partition = key.partition, error = %e, "producer state snapshot failed");
                }
                match p.log.enforce_retention(now_ms()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(topic = %key.topic, partition = key.partition, segments = n, "retention deleted segments"),
                    Err(e) => tracing::warn!(topic = %key.topic, partition = key.partition, error = %e, "retention failed"),
                }
            }
        }
    })
    .detach();

    let _ = ready.send(Ok(id));
    let Ok(done) = shutdown_rx.recv_async().await else {
        return;
    };
    ctx.shutting_down.set(true);
    crate::replica::hw_checkpoint::write(&ctx).await;
    let partitions: Vec<Rc<Partition>> = ctx.partitions.borrow().values().cloned().collect();
    for p in partitions {
        if let Err(e) = p.snapshot_producer_states() {
            tracing::warn!(shard = id, error = %e, "producer state snapshot failed");
        }
        // Sync, trim preallocated space and leave the clean-shutdown marker.
        if let Err(e) = p.log.shutdown().await {
            tracing::error!(shard = id, error = %e, "log shutdown failed");
        }
    }
    tracing::info!(shard = id, "shard stopped");
    let _ = done.send_async(()).await;
}

/// How long a new connection from `ip` is held before it is closed for going over its
/// `connection_creation_rate` quota (0: accepted).
fn connection_throttle(ctx: &ShardContext, ip: std::net::IpAddr) -> u64 {
    let image = ctx.image();
    if !image.client_quotas.has_ip_quotas() {
        return 0;
    }
    let Some(limit) = image.client_quotas.connection_rate(&ip.to_string()) else {
        return 0;
    };
    let throttle = ctx.quota_sensors.record_connection(ip, limit);
    if throttle > 0 {
        ctx.metrics
            .borrow_mut()
            .quota_throttled(crate::quota::CONNECTION_CREATION, throttle);
        tracing::debug!(shard = ctx.id, %ip, throttle_ms = throttle, "connection creation rate exceeded; closing the connection after the throttle");
    }
    throttle
}

/// Accept connections on one listener for as long as the shard runs and has it.
pub async fn accept_loop(
    ctx: Rc<ShardContext>,
    listener: Arc<crate::security::Listener>,
    socket: compio::net::TcpListener,
    connections: Rc<crate::listener_set::Connections>,
) {
    // Refusals are logged at most once per interval, with the count since the last line.
    let mut refused_unlogged = 0u64;
    let mut last_refusal_log: Option<std::time::Instant> = None;
    loop {
        match socket.accept().await {
            Ok((stream, peer)) => {
                if ctx.is_shutting_down() {
                    break;
                }
                let Some(slot) = ctx.connection_limit.try_open() else {
                    // Over max_connections: close at once (dropping the stream).
                    drop(stream);
                    ctx.metrics.borrow_mut().connections_refused += 1;
                    refused_unlogged += 1;
                    if last_refusal_log.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL) {
                        tracing::warn!(shard = ctx.id, %peer, refused = refused_unlogged, max_connections = ctx.connection_limit.limit(), "connection limit reached; closing new connections");
                        refused_unlogged = 0;
                        last_refusal_log = Some(std::time::Instant::now());
                    }
                    continue;
                };
                let (ctx, listener) = (ctx.clone(), listener.clone());
                let throttle = connection_throttle(&ctx, peer.ip());
                let registered = {
                    use std::os::fd::AsRawFd;
                    connections.register(stream.as_raw_fd())
                };
                compio::runtime::spawn(async move {
                    // Dropped with the connection's socket (see `Registered`).
                    let _registered = registered;
                    if throttle > 0 {
                        // Over the IP's connection_creation_rate: closed once the
                        // throttle passed, as Kafka does, so that the client does not
                        // reconnect at once (the slot bounds how many wait).
                        compio::time::sleep(Duration::from_millis(throttle)).await;
                        drop((stream, slot));
                        return;
                    }
                    crate::conn::serve(ctx, stream, peer, slot, listener).await
                })
                .detach();
            }
            Err(e) => {
                tracing::warn!(shard = ctx.id, listener = %listener.name, error = %e, "accept failed");
                compio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
