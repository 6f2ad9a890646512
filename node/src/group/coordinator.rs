//! The group coordinator of one shard: the groups whose `__consumer_offsets` partition
//! this shard owns, their members (see `membership.rs`) and committed offsets. Offsets
//! are written to `__consumer_offsets` before they are acknowledged, and read back from
//! it when this broker becomes the partition's leader (`coordinators.rs`).

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use spate_net::compression::Compression;
use spate_net::record_batch::RecordBatchBuilder;
use spate_net::ErrorCode;

use super::consumer::records::{self as consumer_records, GroupRecord};
use super::consumer::{
    assignor::Assignor, ClassicJoined, ConsumerGroup, ConsumerGroupSettings, GroupError,
    HeartbeatArgs, HeartbeatReply, MigrationPolicy, TopicsView,
};
use super::membership::{
    Group, GroupLimits, GroupState, JoinArgs, JoinReply, SyncReply, INVALID_SESSION_TIMEOUT,
};
use super::offsets_log::{self, CommittedOffset, OffsetKey};
use super::share::records as share_records;
use super::share::{ShareGroup, ShareGroupSettings, ShareHeartbeatArgs, ShareHeartbeatReply};
use crate::mesh::{PartitionKey, PartitionReply};
use crate::partition::{now_ms, Partition};
use crate::shard::ShardContext;

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// How often member sessions and rebalance deadlines are checked.
pub const TICK: Duration = Duration::from_millis(100);
/// Kafka's `offsets.retention.check.interval.ms`: how long an empty group without
/// offsets is kept.
const EMPTY_GROUP_TTL: Duration = Duration::from_secs(600);
/// OffsetCommit v9 reports a missing group as GROUP_ID_NOT_FOUND (earlier versions as
/// ILLEGAL_GENERATION).
const GROUP_ID_NOT_FOUND_FROM: i16 = 9;
/// Largest decompressed batch read back from `__consumer_offsets`.
const MAX_OFFSETS_BATCH: usize = 64 << 20;
/// Kafka's `offsets.commit.timeout.ms` (default): how long the coordinator's writes
/// (commits, group records, tombstones) wait for the in-sync replicas.
const OFFSET_COMMIT_TIMEOUT: Duration = Duration::from_millis(5000);
/// The protocol type of consumer groups (as classic consumers name theirs).
const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// One partition's committed offset as OffsetFetch reports it: (topic, partition, offset
/// or an error code).
pub type FetchedOffset = (String, i32, Result<Option<CommittedOffset>, i16>);

/// One partition's commit: topic, partition, offset, leader epoch, metadata.
pub type CommitEntry = (String, i32, i64, i32, Option<String>);

/// A group request, sent to the shard that coordinates the group.
pub enum GroupRequest {
    Join {
        group_id: String,
        args: JoinArgs,
        reply: JoinReply,
    },
    Sync {
        group_id: String,
        member_id: String,
        instance_id: Option<String>,
        generation: i32,
        protocol_type: Option<String>,
        protocol_name: Option<String>,
        assignments: Vec<(String, Bytes)>,
        reply: SyncReply,
    },
    Heartbeat {
        group_id: String,
        member_id: String,
        instance_id: Option<String>,
        generation: i32,
        reply: flume::Sender<i16>,
    },
    /// (member id, instance id) per leaving member; one code per member.
    Leave {
        group_id: String,
        members: Vec<(String, Option<String>)>,
        reply: flume::Sender<Vec<i16>>,
    },
    /// TxnOffsetCommit: offsets that take effect when the producer's transaction
    /// commits. One code per entry.
    TxnCommit {
        group_id: String,
        producer_id: i64,
        producer_epoch: i16,
        generation: i32,
        member_id: String,
        instance_id: Option<String>,
        entries: Vec<CommitEntry>,
        reply: flume::Sender<Vec<i16>>,
    },
    /// One code per entry.
    Commit {
        group_id: String,
        generation: i32,
        member_id: String,
        instance_id: Option<String>,
        version: i16,
        entries: Vec<CommitEntry>,
        reply: flume::Sender<Vec<i16>>,
    },
    /// `None`: every committed partition of the group. With `require_stable`
    /// (KIP-447), a partition with offsets pending in an open transaction answers
    /// `Err(UNSTABLE_OFFSET_COMMIT)`.
    /// `member`: the member id and epoch a consumer-group member fetches with
    /// (OffsetFetch v9+); Err: a group-level code.
    Fetch {
        group_id: String,
        partitions: Option<Vec<(String, i32)>>,
        require_stable: bool,
        member: Option<(String, i32)>,
        reply: flume::Sender<Result<Vec<FetchedOffset>, i16>>,
    },
    Describe {
        group_id: String,
        reply: flume::Sender<GroupDescription>,
    },
    /// The shard's groups; COORDINATOR_LOAD_IN_PROGRESS while a partition of it loads.
    List {
        reply: flume::Sender<Result<Vec<GroupListing>, i16>>,
    },
    Delete {
        group_id: String,
        reply: flume::Sender<i16>,
    },
    /// ConsumerGroupHeartbeat (KIP-848).
    ConsumerHeartbeat {
        group_id: String,
        // Boxed: the largest request by far, it would size every shard message.
        args: Box<HeartbeatArgs>,
        reply: flume::Sender<Result<HeartbeatReply, GroupError>>,
    },
    /// ConsumerGroupDescribe: None when there is no consumer group of that id (Err:
    /// the id is a classic group).
    ConsumerDescribe {
        group_id: String,
        reply: flume::Sender<Result<Option<ConsumerGroupView>, ()>>,
    },
    /// ShareGroupHeartbeat (KIP-932).
    ShareHeartbeat {
        group_id: String,
        args: Box<ShareHeartbeatArgs>,
        reply: flume::Sender<Result<ShareHeartbeatReply, GroupError>>,
    },
    /// ShareGroupDescribe: None when there is no share group of that id (Err: the id is
    /// a group of another type).
    ShareDescribe {
        group_id: String,
        reply: flume::Sender<Result<Option<ShareGroupView>, ()>>,
    },
    /// DescribeShareGroupOffsets of every topic: the share group's partitions with
    /// initialized state.
    ShareStatePartitions {
        group_id: String,
        reply: flume::Sender<Result<super::share::group::TopicPartitions, GroupError>>,
    },
    /// AlterShareGroupOffsets: the group (created if missing) must be empty; the topics
    /// are marked initializing. Ok: the state epoch to initialize them with.
    ShareAlterOffsets {
        group_id: String,
        topics: super::share::group::TopicPartitions,
        reply: flume::Sender<Result<i32, GroupError>>,
    },
    /// DeleteShareGroupOffsets: the group must exist and be empty; the topics that have
    /// state move to deleting. Ok: those topics and their partitions.
    ShareDeleteOffsets {
        group_id: String,
        topics: std::collections::BTreeSet<super::consumer::member::TopicId>,
        reply: flume::Sender<Result<super::share::group::TopicPartitions, GroupError>>,
    },
    /// The persister initialized or deleted share state: recorded; answers the write's
    /// code.
    ShareStateDone {
        group_id: String,
        initialized: super::share::group::InitRequest,
        deleted: std::collections::BTreeSet<super::consumer::member::TopicId>,
        reply: flume::Sender<i16>,
    },
    /// Ok: one code per partition; Err: a group-level code.
    DeleteOffsets {
        group_id: String,
        partitions: Vec<(String, i32)>,
        reply: flume::Sender<Result<Vec<i16>, i16>>,
    },
}

pub struct GroupDescription {
    pub group_id: String,
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    /// (member id, instance id, client id, client host, metadata, assignment)
    pub members: Vec<(String, Option<String>, String, String, Bytes, Bytes)>,
}

pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: &'static str,
    /// "classic" or "consumer" (ListGroups v5's GroupType).
    pub group_type: &'static str,
}

/// A consumer group as ConsumerGroupDescribe reports it.
pub struct ConsumerGroupView {
    pub state: &'static str,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: &'static str,
    /// The member and its target assignment.
    pub members: Vec<(
        super::consumer::member::ConsumerMember,
        super::consumer::member::Assignment,
    )>,
    pub topics: Arc<TopicsView>,
}

/// A share group as ShareGroupDescribe reports it.
pub struct ShareGroupView {
    pub state: &'static str,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: Vec<super::share::member::ShareMember>,
    pub topics: Arc<TopicsView>,
}

/// (topic, partition) → committed offset, with the sequence number of its commit.
type GroupOffsets = HashMap<(String, i32), (u64, CommittedOffset)>;

#[derive(Default)]
pub struct Coordinator {
    groups: HashMap<String, Group>,
    /// KIP-848 consumer groups; a group id is in `groups` or here, never both.
    consumer: HashMap<String, ConsumerGroup>,
    /// KIP-932 share groups; a group id is in one of the three maps only.
    pub(super) share: HashMap<String, ShareGroup>,
    /// The metadata image version the consumer groups last saw (regexes and
    /// subscribed topics are checked again when it changes).
    image_version_seen: Option<u64>,
    /// Likewise for the share groups (deleted topics lose their share state).
    pub(super) share_image_seen: Option<u64>,
    /// Target assignment computations of consumer groups (a metric).
    pub consumer_rebalances: u64,
    /// The topics as consumer groups see them, for one metadata image version.
    topics_view: Option<(Option<u64>, Arc<TopicsView>)>,
    /// group → its committed offsets.
    offsets: HashMap<String, GroupOffsets>,
    commit_seq: u64,
    /// (offsets partition, producer id) → offsets its ongoing transaction committed
    /// (TxnOffsetCommit) to groups of that partition, in log order: applied when its
    /// commit marker is written there, dropped on abort.
    pending_txn: HashMap<(i32, i64), Vec<(OffsetKey, CommittedOffset)>>,
    /// The `__consumer_offsets` partitions this shard leads, loading or loaded.
    pub loads: crate::coordinators::Loads,
}

impl Coordinator {
    fn limits(ctx: &ShardContext) -> GroupLimits {
        GroupLimits {
            min_session_timeout_ms: ctx.config.group_min_session_timeout_ms,
            max_session_timeout_ms: ctx.config.group_max_session_timeout_ms,
            initial_rebalance_delay: Duration::from_millis(
                ctx.config.group_initial_rebalance_delay_ms,
            ),
            max_size: ctx.config.group_max_size,
        }
    }

    /// `group.consumer.migration.policy` (validated when the config was read).
    fn migration_policy(ctx: &ShardContext) -> MigrationPolicy {
        MigrationPolicy::parse(&ctx.config.group_consumer_migration_policy)
            .unwrap_or(MigrationPolicy::Disabled)
    }

    pub fn consumer_settings(ctx: &ShardContext) -> ConsumerGroupSettings {
        let c = &ctx.config;
        ConsumerGroupSettings {
            session_timeout: Duration::from_millis(c.group_consumer_session_timeout_ms as u64),
            heartbeat_interval_ms: c.group_consumer_heartbeat_interval_ms,
            max_size: c.group_consumer_max_size,
            assignors: c
                .group_consumer_assignors
                .iter()
                .filter_map(|a| Assignor::by_name(a))
                .collect(),
        }
    }

    /// The settings of one group: the broker's, with the group's own configs over them.
    pub fn group_settings(ctx: &ShardContext, group_id: &str) -> ConsumerGroupSettings {
        use super::group_config::{effective, HEARTBEAT_INTERVAL, SESSION_TIMEOUT};
        let mut settings = Self::consumer_settings(ctx);
        let image = ctx.image();
        let own = image.group_configs.get(group_id);
        if own.is_some() {
            settings.session_timeout =
                Duration::from_millis(effective(&ctx.config, own, SESSION_TIMEOUT).max(1) as u64);
            settings.heartbeat_interval_ms = effective(&ctx.config, own, HEARTBEAT_INTERVAL);
        }
        settings
    }

    pub fn share_settings(ctx: &ShardContext, group_id: &str) -> ShareGroupSettings {
        use super::group_config::{effective, SHARE_HEARTBEAT_INTERVAL, SHARE_SESSION_TIMEOUT};
        let c = &ctx.config;
        let image = ctx.image();
        let own = image.group_configs.get(group_id);
        ShareGroupSettings {
            session_timeout: Duration::from_millis(
                effective(c, own, SHARE_SESSION_TIMEOUT).max(1) as u64
            ),
            heartbeat_interval_ms: effective(c, own, SHARE_HEARTBEAT_INTERVAL),
            max_size: c.group_share_max_size,
            initialize_retry: Duration::from_millis(
                c.group_share_initialize_retry_interval_ms.max(1) as u64,
            ),
        }
    }

    /// The topics of the current metadata image (built once per image version).
    pub(super) fn topics_view(&mut self, ctx: &ShardContext) -> Arc<TopicsView> {
        let image = ctx.image();
        match &self.topics_view {
            Some((version, view)) if *version == image.offset => view.clone(),
            _ => {
                let access = ctx
                    .authorizer
                    .as_ref()
                    .map(|a| a.access(image.acls.clone()));
                let view = Arc::new(TopicsView::from_image(&image, access));
                self.topics_view = Some((image.offset, view.clone()));
                view
            }
        }
    }

    /// Members of the share groups, for the metrics.
    pub fn share_members(&self) -> u64 {
        self.share.values().map(|g| g.members.len() as u64).sum()
    }

    /// Group counts by (type, state), for the metrics.
    pub fn group_counts(&self) -> Vec<(&'static str, &'static str, u64)> {
        let mut counts: std::collections::BTreeMap<(&'static str, &'static str), u64> =
            Default::default();
        for g in self.groups.values() {
            *counts.entry(("classic", g.state.name())).or_default() += 1;
        }
        for g in self.consumer.values() {
            *counts.entry(("consumer", g.state())).or_default() += 1;
        }
        for g in self.share.values() {
            *counts.entry(("share", g.state())).or_default() += 1;
        }
        counts.into_iter().map(|((t, s), n)| (t, s, n)).collect()
    }

    /// Expired consumer-group members and metadata changes: the records to write, by
    /// group.
    fn tick_consumer_groups(
        &mut self,
        ctx: &ShardContext,
        now: Instant,
    ) -> Vec<(String, Vec<GroupRecord>)> {
        let mut writes = Vec::new();
        let image = ctx.image();
        let metadata_changed = image.offset != self.image_version_seen;
        if self.consumer.is_empty() && !metadata_changed {
            return writes;
        }
        self.image_version_seen = image.offset;
        let topics = self.topics_view(ctx);
        let downgrade = Self::migration_policy(ctx).downgrade();
        let classic_max = ctx.config.group_max_size;
        let mut downgrades = Vec::new();
        for (id, g) in self.consumer.iter_mut() {
            let mut records = Vec::new();
            for member in g.expired(now) {
                tracing::info!(group = %id, member = %member, "consumer group member expired");
                if downgrade && g.downgrades_without(&member, classic_max) {
                    downgrades.push((id.clone(), member));
                    break;
                }
                records.extend(g.fence(&member, &topics));
            }
            if metadata_changed {
                records.extend(g.on_metadata_change(&topics));
            }
            if !records.is_empty() {
                writes.push((id.clone(), records));
            }
        }
        let limits = Self::limits(ctx);
        for (id, leaving) in downgrades {
            let records = self.downgrade(&id, Some(&leaving), &topics, now, &limits);
            writes.push((id, records));
        }
        // An empty consumer group without committed offsets goes after EMPTY_GROUP_TTL,
        // as a classic one does (its records are deleted).
        for g in self.consumer.values_mut() {
            g.empty_since = if g.is_empty() {
                Some(g.empty_since.unwrap_or(now))
            } else {
                None
            };
        }
        let offsets = &self.offsets;
        let expired: Vec<String> = self
            .consumer
            .values()
            .filter(|g| {
                !offsets.contains_key(&g.id)
                    && g.empty_since
                        .is_some_and(|t| now.duration_since(t) >= EMPTY_GROUP_TTL)
            })
            .map(|g| g.id.clone())
            .collect();
        for id in expired {
            if let Some(g) = self.consumer.remove(&id) {
                tracing::info!(group = %id, "empty consumer group without offsets removed");
                writes.push((id, g.tombstones()));
            }
        }
        writes
    }

    pub fn tick(&mut self, ctx: &ShardContext, now: Instant) {
        let limits = Self::limits(ctx);
        for g in self.groups.values_mut() {
            g.tick(now, &limits);
        }
        // An empty group stays (Empty, with its protocol type) while it has committed
        // offsets; without any it goes after EMPTY_GROUP_TTL, as Kafka's expiration does.
        let offsets = &self.offsets;
        self.groups.retain(|id, g| {
            offsets.contains_key(id)
                || g.empty_since
                    .is_none_or(|t| now.duration_since(t) < EMPTY_GROUP_TTL)
        });
    }

    /// Rebuild one `__consumer_offsets` partition's groups and offsets from its whole
    /// log (a leader's log is the truth its followers converge to), apart from the
    /// shard's coordinator: requests for the partition's groups are refused until
    /// [`Self::install`] adds them. The log is read to its written end as it grows, so a
    /// transaction marker written meanwhile is replayed (or, once the load is
    /// installed, applied by its writer).
    pub async fn replay(
        partition: &Partition,
        index: i32,
        consumer_session_timeout: Duration,
        share_session_timeout: Duration,
    ) -> Result<(Coordinator, usize), spate_log::LogError> {
        let mut me = Coordinator::default();
        let mut applied = 0;
        partition
            .replay(|batch| {
                let Ok(records) = batch.records(MAX_OFFSETS_BATCH) else {
                    return;
                };
                if batch.is_control() {
                    // A transaction marker: its offsets count only if committed.
                    let commit = records
                        .flatten()
                        .next()
                        .and_then(|r| r.key)
                        .is_some_and(|k| k.len() >= 4 && k[3] == 1);
                    me.end_txn(index, batch.producer_id(), commit);
                    return;
                }
                for record in records.flatten() {
                    if let Some(k) = record
                        .key
                        .as_ref()
                        .filter(|k| share_records::is_share_record(k))
                    {
                        if !batch.is_transactional()
                            && share_records::replay(&mut me.share, k.clone(), record.value.clone())
                        {
                            applied += 1;
                        }
                        continue;
                    }
                    if let Some(k) = record
                        .key
                        .as_ref()
                        .filter(|k| consumer_records::is_group_record(k))
                    {
                        if !batch.is_transactional()
                            && consumer_records::replay(
                                &mut me.consumer,
                                k.clone(),
                                record.value.clone(),
                            )
                        {
                            applied += 1;
                        }
                        continue;
                    }
                    let Some(key) = record.key.and_then(offsets_log::decode_key) else {
                        continue;
                    };
                    let value = record.value.and_then(offsets_log::decode_value);
                    if batch.is_transactional() {
                        if let Some(v) = value {
                            me.pending_txn
                                .entry((index, batch.producer_id()))
                                .or_default()
                                .push((key, v));
                        }
                    } else {
                        me.apply(key, value);
                    }
                    applied += 1;
                }
            })
            .await?;
        // Members resume where they were, with a new session (as Kafka does on load).
        let now = Instant::now();
        for g in me.consumer.values_mut() {
            g.rebuild_ownership();
            if !g.has_deadlines() {
                g.restart_sessions(now, consumer_session_timeout);
            }
        }
        for g in me.share.values_mut() {
            g.restart_sessions(now, share_session_timeout);
        }
        Ok((me, applied))
    }

    /// Add the state [`Self::replay`] rebuilt for partition `index` under load
    /// `generation`, unless that leadership ended meanwhile; true if added.
    pub fn install(&mut self, index: i32, generation: u64, loaded: Coordinator) -> bool {
        if !self.loads.finish(index, generation) {
            return false;
        }
        let Coordinator {
            consumer,
            share,
            offsets,
            pending_txn,
            ..
        } = loaded;
        self.consumer.extend(consumer);
        self.share.extend(share);
        // Renumbered after this coordinator's commits, in the loaded order.
        let mut entries: Vec<(u64, String, (String, i32), CommittedOffset)> = offsets
            .into_iter()
            .flat_map(|(group, parts)| {
                parts
                    .into_iter()
                    .map(move |(slot, (seq, v))| (seq, group.clone(), slot, v))
            })
            .collect();
        entries.sort_by_key(|e| e.0);
        for (_, group, (topic, partition), v) in entries {
            let key = OffsetKey {
                group,
                topic,
                partition,
            };
            self.apply(key, Some(v));
        }
        self.pending_txn.extend(pending_txn);
        true
    }

    /// Drop the state of `__consumer_offsets` partition `index` (of `count`): its
    /// groups of both kinds (classic members waiting in a join or sync are told
    /// NOT_COORDINATOR), committed offsets and pending transactional offsets. True if
    /// the partition was led here.
    pub fn unload(&mut self, index: i32, count: i32) -> bool {
        let mine = |group: &str| offsets_log::partition_for(group, count) == index;
        self.groups.retain(|id, g| {
            if mine(id) {
                g.unload();
            }
            !mine(id)
        });
        self.consumer.retain(|id, _| !mine(id));
        self.share.retain(|id, _| !mine(id));
        self.offsets.retain(|id, _| !mine(id));
        self.pending_txn.retain(|(p, _), _| *p != index);
        self.loads.end(index)
    }

    /// Whether requests for `group_id` may be served here (see `Loads::check`).
    fn owns(&self, ctx: &ShardContext, group_id: &str) -> Result<(), ErrorCode> {
        let count = ctx
            .image()
            .topic(OFFSETS_TOPIC)
            .ok_or(ErrorCode::CoordinatorNotAvailable)?
            .partitions
            .len() as i32;
        self.loads
            .check(offsets_log::partition_for(group_id, count))
    }

    /// A transaction marker for `producer_id` was written to this shard's offsets
    /// partition `index`: its pending offsets there take effect (commit) or are
    /// dropped (abort).
    pub fn end_txn(&mut self, index: i32, producer_id: i64, commit: bool) {
        let Some(entries) = self.pending_txn.remove(&(index, producer_id)) else {
            return;
        };
        if commit {
            for (k, v) in entries {
                self.apply(k, Some(v));
            }
        }
    }

    /// The sequence number of a new commit; later numbers win (see `apply_at`).
    fn next_seq(&mut self) -> u64 {
        self.commit_seq += 1;
        self.commit_seq
    }

    /// Apply a durable commit (or a tombstone) in log order.
    fn apply(&mut self, key: OffsetKey, value: Option<CommittedOffset>) {
        let seq = self.next_seq();
        self.apply_at(key, value, seq);
    }

    /// Apply unless a later commit to the same partition was applied already.
    fn apply_at(&mut self, key: OffsetKey, value: Option<CommittedOffset>, seq: u64) {
        let group = self.offsets.entry(key.group.clone()).or_default();
        let slot = (key.topic, key.partition);
        if group.get(&slot).is_some_and(|(s, _)| *s > seq) {
            return;
        }
        match value {
            Some(v) => {
                group.insert(slot, (seq, v));
            }
            None => {
                group.remove(&slot);
            }
        }
        if group.is_empty() {
            self.offsets.remove(&key.group);
        }
    }

    /// KIP-848's online downgrade (Kafka's `convertToClassicGroup`): the consumer group
    /// becomes a classic group of its members but `leaving` (its last consumer-protocol
    /// member), which rebalances at once; without `leaving` (a classic static member took
    /// the last consumer-protocol member's place) it carries on without a rebalance. The
    /// records delete the consumer group (Spate keeps classic groups in memory only).
    fn downgrade(
        &mut self,
        group_id: &str,
        leaving: Option<&str>,
        topics: &TopicsView,
        now: Instant,
        limits: &GroupLimits,
    ) -> Vec<GroupRecord> {
        let Some(g) = self.consumer.remove(group_id) else {
            return Vec::new();
        };
        let seeds = g.classic_seeds(leaving.unwrap_or_default(), topics);
        tracing::info!(group = %group_id, members = seeds.len(), "consumer group downgraded to a classic group");
        let rebalance = leaving.map(|_| limits);
        self.groups.insert(
            group_id.to_string(),
            Group::from_consumer(group_id, g.group_epoch, seeds, now, rebalance),
        );
        g.tombstones()
    }

    fn describe(&self, group_id: &str) -> GroupDescription {
        if self.consumer.contains_key(group_id) || self.share.contains_key(group_id) {
            // DescribeGroups (up to v5) does not see consumer or share groups: Kafka 4.4 answers
            // Dead with no error, as for a group that does not exist.
            return GroupDescription {
                group_id: group_id.to_string(),
                state: "Dead",
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            };
        }
        match self.groups.get(group_id) {
            Some(g) => {
                let protocol = g.protocol.clone().unwrap_or_default();
                GroupDescription {
                    group_id: group_id.to_string(),
                    state: g.state.name(),
                    protocol_type: g.protocol_type.clone().unwrap_or_default(),
                    protocol: protocol.clone(),
                    members: g
                        .members
                        .values()
                        .map(|m| {
                            (
                                m.id.clone(),
                                m.instance_id.clone(),
                                m.client_id.clone(),
                                m.client_host.clone(),
                                m.metadata(&protocol),
                                m.assignment.clone(),
                            )
                        })
                        .collect(),
                }
            }
            None => GroupDescription {
                group_id: group_id.to_string(),
                state: if self.offsets.contains_key(group_id) {
                    "Empty"
                } else {
                    "Dead"
                },
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            },
        }
    }

    fn list(&self) -> Vec<GroupListing> {
        let mut out: Vec<GroupListing> = self
            .groups
            .values()
            .map(|g| GroupListing {
                group_id: g.id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state.name(),
                group_type: "classic",
            })
            .collect();
        out.extend(self.consumer.values().map(|g| GroupListing {
            group_id: g.id.clone(),
            protocol_type: CONSUMER_PROTOCOL_TYPE.to_string(),
            state: g.state(),
            group_type: "consumer",
        }));
        out.extend(self.share.values().map(|g| GroupListing {
            group_id: g.id.clone(),
            protocol_type: super::share::PROTOCOL_TYPE.to_string(),
            state: g.state(),
            group_type: "share",
        }));
        for id in self.offsets.keys() {
            if !self.groups.contains_key(id) && !self.consumer.contains_key(id) {
                out.push(GroupListing {
                    group_id: id.clone(),
                    protocol_type: String::new(),
                    state: "Empty",
                    group_type: "classic",
                });
            }
        }
        out
    }

    /// Every committed offset: (group, topic, partition, offset).
    pub fn committed_offsets(&self) -> Vec<(String, String, i32, i64)> {
        self.offsets
            .iter()
            .flat_map(|(g, parts)| {
                parts
                    .iter()
                    .map(move |((t, p), (_, c))| (g.clone(), t.clone(), *p, c.offset))
            })
            .collect()
    }

    /// Whether `group_id` is a classic or consumer group (not a share group).
    pub(super) fn owns_other_kind(&self, group_id: &str) -> bool {
        self.groups.contains_key(group_id) || self.consumer.contains_key(group_id)
    }

    fn has_members(&self, group_id: &str) -> bool {
        self.groups
            .get(group_id)
            .is_some_and(|g| !g.members.is_empty())
            || self.consumer.get(group_id).is_some_and(|g| !g.is_empty())
            || self.share.get(group_id).is_some_and(|g| !g.is_empty())
    }
}

impl GroupRequest {
    /// The group the request is about (`None`: a listing of every group).
    fn group_id(&self) -> Option<&str> {
        match self {
            GroupRequest::Join { group_id, .. }
            | GroupRequest::Sync { group_id, .. }
            | GroupRequest::Heartbeat { group_id, .. }
            | GroupRequest::Leave { group_id, .. }
            | GroupRequest::TxnCommit { group_id, .. }
            | GroupRequest::Commit { group_id, .. }
            | GroupRequest::Fetch { group_id, .. }
            | GroupRequest::Describe { group_id, .. }
            | GroupRequest::Delete { group_id, .. }
            | GroupRequest::ConsumerHeartbeat { group_id, .. }
            | GroupRequest::ConsumerDescribe { group_id, .. }
            | GroupRequest::ShareHeartbeat { group_id, .. }
            | GroupRequest::ShareDescribe { group_id, .. }
            | GroupRequest::ShareStatePartitions { group_id, .. }
            | GroupRequest::ShareAlterOffsets { group_id, .. }
            | GroupRequest::ShareDeleteOffsets { group_id, .. }
            | GroupRequest::ShareStateDone { group_id, .. }
            | GroupRequest::DeleteOffsets { group_id, .. } => Some(group_id),
            GroupRequest::List { .. } => None,
        }
    }
}

/// Serve one group request on the coordinating shard. A request for a group whose
/// partition is loading, or no longer led here, is dropped after its error code is
/// sent on `refused` (COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR).
pub fn serve(ctx: &Rc<ShardContext>, request: GroupRequest, refused: flume::Sender<i16>) {
    let now = Instant::now();
    let limits = Coordinator::limits(ctx);
    let mut coord = ctx.groups.borrow_mut();
    if let Some(Err(code)) = request.group_id().map(|id| coord.owns(ctx, id)) {
        let _ = refused.send(code.code());
        return;
    }
    match request {
        GroupRequest::Join {
            group_id,
            args,
            reply,
        } => {
            if coord.share.contains_key(&group_id) {
                // Kafka: a share group id is not a classic group.
                let _ = reply.send(spate_net::messages::JoinGroupResponse {
                    error_code: super::membership::INCONSISTENT_GROUP_PROTOCOL,
                    generation_id: -1,
                    member_id: args.member_id,
                    ..Default::default()
                });
                return;
            }
            if let Some(g) = coord.consumer.get(&group_id) {
                if !g.is_empty() {
                    // A classic member of a consumer group (KIP-848's migration), served
                    // whatever the migration policy, as in Kafka.
                    classic_join(ctx, &mut coord, &group_id, args, now, reply);
                    return;
                }
                // An empty consumer group becomes a classic one (Kafka's downgrade of an
                // empty group): its records go, its offsets stay.
                let records = coord
                    .consumer
                    .remove(&group_id)
                    .map(|g| g.tombstones())
                    .unwrap_or_default();
                write_group_records(ctx, &group_id, records);
            }
            coord
                .groups
                .entry(group_id.clone())
                .or_insert_with(|| Group::new(&group_id))
                .join(args, &limits, now, reply);
        }
        GroupRequest::Sync {
            group_id,
            member_id,
            instance_id,
            generation,
            protocol_type,
            protocol_name,
            assignments: _,
            reply,
        } if coord.consumer.contains_key(&group_id) => {
            let topics = coord.topics_view(ctx);
            let answer = match coord.consumer.get_mut(&group_id) {
                Some(g) if !g.is_empty() => g.classic_sync(
                    &member_id,
                    instance_id.as_deref(),
                    generation,
                    (protocol_type.as_deref(), protocol_name.as_deref()),
                    &topics,
                    now,
                ),
                _ => Err(ErrorCode::UnknownMemberId.code()),
            };
            let _ = reply.send(match answer {
                Ok(assignment) => spate_net::messages::SyncGroupResponse {
                    protocol_type,
                    protocol_name,
                    assignment,
                    ..Default::default()
                },
                Err(code) => spate_net::messages::SyncGroupResponse {
                    error_code: code,
                    ..Default::default()
                },
            });
        }
        GroupRequest::Sync {
            group_id,
            member_id,
            instance_id,
            generation,
            protocol_type,
            protocol_name,
            assignments,
            reply,
        } => match coord.groups.get_mut(&group_id) {
            Some(g) => g.sync(
                &member_id,
                instance_id.as_deref(),
                generation,
                (protocol_type.as_deref(), protocol_name.as_deref()),
                assignments,
                now,
                reply,
            ),
            None => {
                let _ = reply.send(spate_net::messages::SyncGroupResponse {
                    error_code: ErrorCode::UnknownMemberId.code(),
                    ..Default::default()
                });
            }
        },
        GroupRequest::Heartbeat {
            group_id,
            member_id,
            instance_id,
            generation,
            reply,
        } => {
            let c = &mut *coord;
            let code = match (c.groups.get_mut(&group_id), c.consumer.get_mut(&group_id)) {
                (Some(g), _) => g.heartbeat(&member_id, instance_id.as_deref(), generation, now),
                (None, Some(g)) => {
                    g.classic_heartbeat(&member_id, instance_id.as_deref(), generation, now)
                }
                (None, None) => ErrorCode::UnknownMemberId,
            };
            let _ = reply.send(code.code());
        }
        GroupRequest::Leave {
            group_id,
            members,
            reply,
        } => {
            if coord.consumer.contains_key(&group_id) {
                let topics = coord.topics_view(ctx);
                let Some(g) = coord.consumer.get_mut(&group_id) else {
                    unreachable!("the group was just found");
                };
                let (mut codes, records) = g.classic_leave(&members, &topics);
                drop(coord);
                write_records_then(ctx, &group_id, records, move |code| {
                    if code != 0 {
                        codes.iter_mut().for_each(|c| *c = code);
                    }
                    let _ = reply.send(codes);
                });
                return;
            }
            let codes = match coord.groups.get_mut(&group_id) {
                Some(g) => members
                    .iter()
                    .map(|(id, instance)| g.leave(id, instance.as_deref(), now, &limits).code())
                    .collect(),
                None => vec![ErrorCode::UnknownMemberId.code(); members.len()],
            };
            let _ = reply.send(codes);
        }
        GroupRequest::TxnCommit {
            group_id,
            producer_id,
            producer_epoch,
            generation,
            member_id,
            instance_id,
            entries,
            reply,
        } => {
            // Kafka's validateTxnOffsetCommit: members are checked only when the request
            // names one (KIP-447); an unknown group is fine.
            let named = generation >= 0 || !member_id.is_empty() || instance_id.is_some();
            let group_code = if group_id.is_empty() {
                Some(ErrorCode::InvalidGroupId)
            } else {
                match coord.groups.get(&group_id) {
                    Some(g) if named => g
                        .check_member(&member_id, instance_id.as_deref(), generation)
                        .err(),
                    _ => None,
                }
            };
            drop(coord);
            match group_code {
                Some(code) => {
                    let _ = reply.send(vec![code.code(); entries.len()]);
                }
                None => txn_commit(ctx, group_id, producer_id, producer_epoch, entries, reply),
            }
        }
        GroupRequest::Commit {
            group_id,
            generation,
            member_id,
            instance_id,
            version,
            entries,
            reply,
        } => {
            // Kafka's validateOffsetCommit for classic groups.
            let simple = generation < 0 && member_id.is_empty() && instance_id.is_none();
            if coord.share.contains_key(&group_id) {
                // Kafka: a share group has no committed offsets.
                let _ = reply.send(vec![ErrorCode::GroupIdNotFound.code(); entries.len()]);
                return;
            }
            if coord.consumer.contains_key(&group_id) {
                // Kafka's validateOffsetCommit for consumer groups, partition by partition.
                let topics = coord.topics_view(ctx);
                let Some(g) = coord.consumer.get(&group_id) else {
                    unreachable!("the group was just found");
                };
                let codes: Vec<i16> = entries
                    .iter()
                    .map(|(topic, partition, ..)| {
                        let id = topics.by_name.get(topic).map(|(id, _)| id);
                        g.check_commit(&member_id, generation, version, id, *partition)
                            .err()
                            .map_or(0, ErrorCode::code)
                    })
                    .collect();
                drop(coord);
                commit_checked(ctx, group_id, entries, codes, reply);
                return;
            }
            let group_code = if group_id.is_empty() {
                Some(ErrorCode::InvalidGroupId)
            } else {
                match coord.groups.get(&group_id) {
                    // A commit from outside any generation (admin tools, consumers that
                    // assign partitions themselves): only while the group has no members.
                    _ if simple => coord
                        .has_members(&group_id)
                        .then_some(ErrorCode::UnknownMemberId),
                    None if version >= GROUP_ID_NOT_FOUND_FROM => Some(ErrorCode::GroupIdNotFound),
                    None => Some(ErrorCode::IllegalGeneration),
                    Some(g) => match g.check_member(&member_id, instance_id.as_deref(), generation)
                    {
                        Err(code) => Some(code),
                        Ok(()) if g.state == GroupState::CompletingRebalance => {
                            Some(ErrorCode::RebalanceInProgress)
                        }
                        Ok(()) => None,
                    },
                }
            };
            drop(coord);
            match group_code {
                Some(code) => {
                    let _ = reply.send(vec![code.code(); entries.len()]);
                }
                None => commit(ctx, group_id, entries, reply),
            }
        }
        GroupRequest::Fetch {
            group_id,
            partitions,
            require_stable,
            member,
            reply,
        } => {
            if let (Some(g), Some((member_id, epoch))) = (coord.consumer.get(&group_id), &member) {
                if let Err(code) = g.check_fetch(member_id, *epoch) {
                    let _ = reply.send(Err(code.code()));
                    return;
                }
            }
            let committed = coord.offsets.get(&group_id);
            let pending = |t: &str, p: i32| {
                require_stable
                    && coord
                        .pending_txn
                        .values()
                        .flatten()
                        .any(|(k, _)| k.group == group_id && k.topic == t && k.partition == p)
            };
            let answer = |t: &str, p: i32, v: Option<CommittedOffset>| {
                if pending(t, p) {
                    Err(ErrorCode::UnstableOffsetCommit.code())
                } else {
                    Ok(v)
                }
            };
            let out = match partitions {
                Some(list) => list
                    .into_iter()
                    .map(|(t, p)| {
                        let v = committed
                            .and_then(|c| c.get(&(t.clone(), p)))
                            .map(|(_, v)| v.clone());
                        let a = answer(&t, p, v);
                        (t, p, a)
                    })
                    .collect(),
                None => {
                    let mut all: Vec<_> = committed
                        .map(|c| {
                            c.iter()
                                .map(|((t, p), (_, v))| {
                                    (t.clone(), *p, answer(t, *p, Some(v.clone())))
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    all.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
                    all
                }
            };
            let _ = reply.send(Ok(out));
        }
        GroupRequest::Describe { group_id, reply } => {
            let _ = reply.send(coord.describe(&group_id));
        }
        GroupRequest::List { reply } => {
            // As Kafka's coordinator: a listing that would miss a loading partition's
            // groups is an error the client retries.
            let listing = if coord.loads.any_loading() {
                Err(ErrorCode::CoordinatorLoadInProgress.code())
            } else {
                Ok(coord.list())
            };
            let _ = reply.send(listing);
        }
        GroupRequest::Delete { group_id, reply } => {
            if coord.has_members(&group_id) {
                let _ = reply.send(ErrorCode::NonEmptyGroup.code());
                return;
            }
            if coord.share.contains_key(&group_id) {
                drop(coord);
                super::share_serve::delete_group(ctx, group_id, reply);
                return;
            }
            let was_consumer = match coord.consumer.remove(&group_id) {
                Some(g) => {
                    write_group_records(ctx, &group_id, g.tombstones());
                    true
                }
                None => false,
            };
            let Some(committed) = coord.offsets.get(&group_id) else {
                let code = if coord.groups.remove(&group_id).is_some() || was_consumer {
                    ErrorCode::None
                } else {
                    ErrorCode::GroupIdNotFound
                };
                let _ = reply.send(code.code());
                return;
            };
            let keys: Vec<(String, i32)> = committed.keys().cloned().collect();
            coord.groups.remove(&group_id);
            drop(coord);
            let (tx, rx) = flume::bounded(1);
            write_tombstones(ctx, group_id, keys, tx);
            compio::runtime::spawn(async move {
                let code = rx
                    .recv_async()
                    .await
                    .unwrap_or(ErrorCode::UnknownServerError.code());
                let _ = reply.send_async(code).await;
            })
            .detach();
        }
        GroupRequest::ConsumerHeartbeat {
            group_id,
            args,
            reply,
        } => {
            let (result, records) = consumer_heartbeat(ctx, &mut coord, &group_id, *args, now);
            drop(coord);
            if records.is_empty() {
                let _ = reply.send(result);
                return;
            }
            write_records_then(ctx, &group_id, records, move |code| {
                let answer = match result {
                    Ok(_) if code != 0 => Err(GroupError {
                        code: ErrorCode::from_code(code).unwrap_or(ErrorCode::UnknownServerError),
                        message: None,
                    }),
                    other => other,
                };
                let _ = reply.send(answer);
            });
        }
        GroupRequest::ShareHeartbeat {
            group_id,
            args,
            reply,
        } => super::share_serve::heartbeat(ctx, coord, group_id, *args, now, reply),
        GroupRequest::ShareStatePartitions { group_id, reply } => {
            let _ = reply.send(super::share_serve::state_partitions(&coord, &group_id));
        }
        GroupRequest::ShareAlterOffsets {
            group_id,
            topics,
            reply,
        } => super::share_serve::alter_offsets(ctx, coord, group_id, topics, reply),
        GroupRequest::ShareDeleteOffsets {
            group_id,
            topics,
            reply,
        } => super::share_serve::delete_offsets(ctx, coord, group_id, topics, reply),
        GroupRequest::ShareStateDone {
            group_id,
            initialized,
            deleted,
            reply,
        } => super::share_serve::state_done(ctx, coord, group_id, initialized, deleted, reply),
        GroupRequest::ShareDescribe { group_id, reply } => {
            let _ = reply.send(super::share_serve::describe(ctx, &mut coord, &group_id));
        }
        GroupRequest::ConsumerDescribe { group_id, reply } => {
            let view =
                if coord.groups.contains_key(&group_id) || coord.share.contains_key(&group_id) {
                    Err(())
                } else {
                    let settings = Coordinator::consumer_settings(ctx);
                    let topics = coord.topics_view(ctx);
                    Ok(coord.consumer.get(&group_id).map(|g| ConsumerGroupView {
                        state: g.state(),
                        group_epoch: g.group_epoch,
                        assignment_epoch: g.assignment_epoch,
                        assignor: g.assignor(&settings).name(),
                        members: g
                            .members
                            .values()
                            .map(|m| {
                                (
                                    m.clone(),
                                    g.targets.get(&m.member_id).cloned().unwrap_or_default(),
                                )
                            })
                            .collect(),
                        topics: topics.clone(),
                    }))
                };
            let _ = reply.send(view);
        }
        GroupRequest::DeleteOffsets {
            group_id,
            partitions,
            reply,
        } => {
            let Some(committed) = coord.offsets.get(&group_id) else {
                let code = if coord.groups.contains_key(&group_id)
                    || coord.consumer.contains_key(&group_id)
                {
                    ErrorCode::None
                } else {
                    ErrorCode::GroupIdNotFound
                };
                let _ = reply.send(if code == ErrorCode::None {
                    Ok(vec![0; partitions.len()])
                } else {
                    Err(code.code())
                });
                return;
            };
            let group = coord.groups.get(&group_id);
            let consumer = coord.consumer.get(&group_id);
            let codes: Vec<i16> = partitions
                .iter()
                .map(|(t, _)| {
                    if group.is_some_and(|g| g.subscribes_to(t))
                        || consumer.is_some_and(|g| g.subscribes_to(t))
                    {
                        ErrorCode::GroupSubscribedToTopic.code()
                    } else {
                        0
                    }
                })
                .collect();
            let deletable: Vec<(String, i32)> = partitions
                .iter()
                .zip(&codes)
                .filter(|((t, p), c)| **c == 0 && committed.contains_key(&(t.clone(), *p)))
                .map(|(k, _)| k.clone())
                .collect();
            drop(coord);
            let (tx, rx) = flume::bounded(1);
            write_tombstones(ctx, group_id, deletable, tx);
            compio::runtime::spawn(async move {
                let code = rx
                    .recv_async()
                    .await
                    .unwrap_or(ErrorCode::UnknownServerError.code());
                let result = if code == 0 { Ok(codes) } else { Err(code) };
                let _ = reply.send_async(result).await;
            })
            .detach();
        }
    }
}

/// The `__consumer_offsets` partition holding `group_id`'s records, if this shard has it.
pub(super) fn offsets_partition(ctx: &ShardContext, group_id: &str) -> Option<Rc<Partition>> {
    let key = PartitionKey {
        topic: Arc::from(OFFSETS_TOPIC),
        partition: group_partition(ctx, group_id)?,
    };
    ctx.partition(&key)
}

/// The `__consumer_offsets` partition index of `group_id`.
fn group_partition(ctx: &ShardContext, group_id: &str) -> Option<i32> {
    let count = ctx.image().topic(OFFSETS_TOPIC)?.partitions.len() as i32;
    Some(offsets_log::partition_for(group_id, count))
}

/// The group's partition and the generation of its loaded state, taken before a write
/// so that the write's outcome is applied only if that state is still the one loaded
/// (a leadership that ended meanwhile took it away; a later one replays the write).
pub(super) fn loaded_state(ctx: &ShardContext, group_id: &str) -> Option<(i32, u64)> {
    let index = group_partition(ctx, group_id)?;
    Some((index, ctx.groups.borrow().loads.loaded(index)?))
}

/// Whether the state `loaded_state` saw is still loaded.
pub(super) fn still_loaded(coord: &Coordinator, state: Option<(i32, u64)>) -> bool {
    state.is_some_and(|(index, generation)| coord.loads.loaded(index) == Some(generation))
}

/// Append records to the group's offsets partition; resolves to an error code.
pub(super) async fn append_records(
    partition: Option<Rc<Partition>>,
    records: Vec<(Bytes, Option<Bytes>)>,
) -> i16 {
    let Some(partition) = partition else {
        return ErrorCode::NotCoordinator.code();
    };
    if records.is_empty() {
        return 0;
    }
    let mut builder = RecordBatchBuilder::new(Compression::None);
    let ts = now_ms();
    for (k, v) in &records {
        builder.append(ts, Some(k), v.as_deref(), &[]);
    }
    let batch = match builder.build() {
        Ok(b) => b,
        Err(_) => return ErrorCode::UnknownServerError.code(),
    };
    match partition
        .produce(batch, -1, OFFSET_COMMIT_TIMEOUT, None, None)
        .await
    {
        PartitionReply::Produced { .. } => 0,
        other => write_error(crate::route::error_of(&other)),
    }
}

/// What a client is told when the coordinator's write failed, as Kafka's
/// `CoordinatorOperationExceptionHelper` tells it: a partition that stopped leading
/// means another coordinator (NOT_COORDINATOR), too few replicas or a timeout a
/// retriable COORDINATOR_NOT_AVAILABLE.
pub fn write_error(code: i16) -> i16 {
    match ErrorCode::from_code(code) {
        Some(
            ErrorCode::UnknownTopicOrPartition
            | ErrorCode::NotEnoughReplicas
            | ErrorCode::RequestTimedOut,
        ) => ErrorCode::CoordinatorNotAvailable.code(),
        Some(ErrorCode::NotLeaderOrFollower | ErrorCode::KafkaStorageError) => {
            ErrorCode::NotCoordinator.code()
        }
        Some(
            ErrorCode::MessageTooLarge
            | ErrorCode::RecordListTooLarge
            | ErrorCode::InvalidFetchSize,
        ) => ErrorCode::UnknownServerError.code(),
        _ => code.max(1),
    }
}

/// One code per entry (0: to be written) and the records of the entries that pass:
/// the partition must exist, the metadata must fit `offset.metadata.max.bytes`.
fn check_entries(
    ctx: &ShardContext,
    group_id: &str,
    entries: Vec<CommitEntry>,
    now: i64,
) -> (Vec<i16>, Vec<(OffsetKey, CommittedOffset)>) {
    let image = ctx.image();
    let max_metadata = ctx.config.offset_metadata_max_bytes;
    let mut codes = Vec::with_capacity(entries.len());
    let mut writes = Vec::new();
    for (topic, partition, offset, leader_epoch, metadata) in entries {
        let exists = image
            .topic(&topic)
            .is_some_and(|t| partition >= 0 && (partition as usize) < t.partitions.len());
        let metadata = metadata.unwrap_or_default();
        codes.push(if !exists {
            ErrorCode::UnknownTopicOrPartition.code()
        } else if metadata.len() > max_metadata {
            ErrorCode::OffsetMetadataTooLarge.code()
        } else {
            writes.push((
                OffsetKey {
                    group: group_id.to_string(),
                    topic,
                    partition,
                },
                CommittedOffset {
                    offset,
                    leader_epoch,
                    metadata,
                    commit_timestamp: now,
                },
            ));
            0
        });
    }
    (codes, writes)
}

fn commit(
    ctx: &Rc<ShardContext>,
    group_id: String,
    entries: Vec<CommitEntry>,
    reply: flume::Sender<Vec<i16>>,
) {
    let (mut codes, writes) = check_entries(ctx, &group_id, entries, now_ms());
    // Sequence numbers taken now, in arrival order, decide which commit wins later.
    let seq = ctx.groups.borrow_mut().next_seq();
    let records = writes
        .iter()
        .map(|(k, v)| {
            (
                offsets_log::encode_key(k),
                Some(offsets_log::encode_value(v)),
            )
        })
        .collect();
    let state = loaded_state(ctx, &group_id);
    let append = append_records(offsets_partition(ctx, &group_id), records);
    let ctx = ctx.clone();
    compio::runtime::spawn(async move {
        let code = append.await;
        if code == 0 {
            let mut coord = ctx.groups.borrow_mut();
            if still_loaded(&coord, state) {
                for (k, v) in writes {
                    coord.apply_at(k, Some(v), seq);
                }
            }
        } else {
            for c in codes.iter_mut().filter(|c| **c == 0) {
                *c = code;
            }
        }
        let _ = reply.send_async(codes).await;
    })
    .detach();
}

/// Commits the entries whose code is 0 and answers every entry: its code, or the
/// commit's.
fn commit_checked(
    ctx: &Rc<ShardContext>,
    group_id: String,
    entries: Vec<CommitEntry>,
    mut codes: Vec<i16>,
    reply: flume::Sender<Vec<i16>>,
) {
    debug_assert_eq!(entries.len(), codes.len());
    let passing: Vec<CommitEntry> = entries
        .into_iter()
        .zip(&codes)
        .filter(|(_, c)| **c == 0)
        .map(|(e, _)| e)
        .collect();
    let (tx, rx) = flume::bounded(1);
    commit(ctx, group_id, passing, tx);
    compio::runtime::spawn(async move {
        let mut written = rx.recv_async().await.unwrap_or_default().into_iter();
        for c in codes.iter_mut().filter(|c| **c == 0) {
            *c = written
                .next()
                .unwrap_or(ErrorCode::UnknownServerError.code());
        }
        let _ = reply.send_async(codes).await;
    })
    .detach();
}

/// TxnOffsetCommit: write the offsets to the group's partition in a transactional batch
/// of the producer; they wait there for the transaction's marker.
fn txn_commit(
    ctx: &Rc<ShardContext>,
    group_id: String,
    producer_id: i64,
    producer_epoch: i16,
    entries: Vec<CommitEntry>,
    reply: flume::Sender<Vec<i16>>,
) {
    let now = now_ms();
    let (mut codes, writes) = check_entries(ctx, &group_id, entries, now);
    let partition = offsets_partition(ctx, &group_id);
    let state = loaded_state(ctx, &group_id);
    let ctx = ctx.clone();
    compio::runtime::spawn(async move {
        let code = match (partition, writes.is_empty()) {
            (_, true) => 0,
            (None, _) => ErrorCode::NotCoordinator.code(),
            (Some(p), false) => {
                let mut b = RecordBatchBuilder::new(Compression::None)
                    .transactional(true)
                    .producer(producer_id, producer_epoch, -1);
                for (k, v) in &writes {
                    b.append(
                        now,
                        Some(&offsets_log::encode_key(k)),
                        Some(&offsets_log::encode_value(v)),
                        &[],
                    );
                }
                match b.build() {
                    Ok(batch) => match p.append_transactional(producer_id, batch).await {
                        PartitionReply::MarkerWritten => 0,
                        other => write_error(crate::route::error_of(&other)),
                    },
                    Err(_) => ErrorCode::UnknownServerError.code(),
                }
            }
        };
        if code == 0 {
            let mut coord = ctx.groups.borrow_mut();
            if let Some((index, _)) = state.filter(|_| still_loaded(&coord, state)) {
                coord
                    .pending_txn
                    .entry((index, producer_id))
                    .or_default()
                    .extend(writes);
            }
        } else {
            for c in codes.iter_mut().filter(|c| **c == 0) {
                *c = code;
            }
        }
        let _ = reply.send_async(codes).await;
    })
    .detach();
}

/// A deleted topic takes its committed offsets with it, as in Kafka (a topic created
/// again under the name starts without them).
pub fn forget_topics(ctx: &Rc<ShardContext>, topics: &[String]) {
    let doomed: Vec<(String, Vec<(String, i32)>)> = ctx
        .groups
        .borrow()
        .offsets
        .iter()
        .map(|(g, parts)| {
            (
                g.clone(),
                parts
                    .keys()
                    .filter(|(t, _)| topics.contains(t))
                    .cloned()
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|(_, keys)| !keys.is_empty())
        .collect();
    for (group, keys) in doomed {
        let (tx, _) = flume::bounded(1);
        write_tombstones(ctx, group, keys, tx);
    }
}

/// Delete committed offsets durably, then from memory; reports one code.
fn write_tombstones(
    ctx: &Rc<ShardContext>,
    group_id: String,
    keys: Vec<(String, i32)>,
    done: flume::Sender<i16>,
) {
    let seq = ctx.groups.borrow_mut().next_seq();
    let keys: Vec<OffsetKey> = keys
        .into_iter()
        .map(|(topic, partition)| OffsetKey {
            group: group_id.clone(),
            topic,
            partition,
        })
        .collect();
    let records = keys
        .iter()
        .map(|k| (offsets_log::encode_key(k), None))
        .collect();
    let state = loaded_state(ctx, &group_id);
    let append = append_records(offsets_partition(ctx, &group_id), records);
    let ctx = ctx.clone();
    compio::runtime::spawn(async move {
        let code = append.await;
        if code == 0 {
            let mut coord = ctx.groups.borrow_mut();
            if still_loaded(&coord, state) {
                for k in keys {
                    coord.apply_at(k, None, seq);
                }
            }
        }
        let _ = done.send_async(code).await;
    })
    .detach();
}

/// ConsumerGroupHeartbeat on the coordinator: the group (created by a joining member,
/// converted from an empty classic group or, KIP-848's online upgrade, from a classic
/// group of consumer-protocol members), then the heartbeat itself. The records are to be
/// written whatever the answer (a conversion stands even if the heartbeat is refused).
fn consumer_heartbeat(
    ctx: &ShardContext,
    coord: &mut Coordinator,
    group_id: &str,
    args: HeartbeatArgs,
    now: Instant,
) -> (Result<HeartbeatReply, GroupError>, Vec<GroupRecord>) {
    let mut records = Vec::new();
    if coord.share.contains_key(group_id) {
        return (
            Err(GroupError::new(
                ErrorCode::GroupIdNotFound,
                format!("Group {group_id} is not a consumer group."),
            )),
            records,
        );
    }
    let joining = args.member_epoch == 0;
    let settings = Coordinator::group_settings(ctx, group_id);
    let topics = coord.topics_view(ctx);
    let policy = Coordinator::migration_policy(ctx);
    if let Some(classic) = coord.groups.get_mut(group_id) {
        if !classic.is_empty() {
            match upgrade(group_id, classic, joining, policy, &topics, &settings, now) {
                Ok((group, created)) => {
                    coord.groups.remove(group_id);
                    coord.consumer.insert(group_id.to_string(), group);
                    records = created;
                }
                Err(e) => return (Err(e), records),
            }
        } else {
            coord.groups.remove(group_id);
        }
    }
    if !coord.consumer.contains_key(group_id) {
        if !joining {
            return (
                Err(GroupError::new(
                    ErrorCode::GroupIdNotFound,
                    format!("Consumer group {group_id} not found."),
                )),
                records,
            );
        }
        coord
            .consumer
            .insert(group_id.to_string(), ConsumerGroup::new(group_id));
    }
    let Some(group) = coord.consumer.get_mut(group_id) else {
        unreachable!("the group was just looked up or created");
    };
    let leaving = args.member_epoch == super::consumer::LEAVE_EPOCH;
    if leaving
        && policy.downgrade()
        && group.downgrades_without(&args.member_id, ctx.config.group_max_size)
    {
        let limits = Coordinator::limits(ctx);
        records.extend(coord.downgrade(group_id, Some(&args.member_id), &topics, now, &limits));
        let reply = HeartbeatReply {
            member_id: args.member_id,
            member_epoch: super::consumer::LEAVE_EPOCH,
            heartbeat_interval_ms: 0,
            assignment: None,
        };
        return (Ok(reply), records);
    }
    let (member_id, epoch) = (args.member_id.clone(), args.member_epoch);
    let result = group.heartbeat(
        args,
        &topics,
        &settings,
        now,
        &mut coord.consumer_rebalances,
    );
    if let Err(e) = &result {
        tracing::debug!(group = %group_id, member = %member_id, epoch, code = ?e.code, message = ?e.message, "consumer group heartbeat refused");
    }
    // A failed first join leaves no empty group behind.
    if result.is_err() && group.is_empty() && group.group_epoch == 0 {
        coord.consumer.remove(group_id);
    }
    match result {
        Ok((reply, more)) => {
            records.extend(more);
            (Ok(reply), records)
        }
        Err(e) => (Err(e), records),
    }
}

/// KIP-848's online upgrade (Kafka's `validateOnlineUpgrade` and
/// `convertToConsumerGroup`): a classic group whose members use the consumer protocol
/// becomes a consumer group of members using the classic protocol, with the records
/// that create it; its members waiting in a join or sync are told to rejoin.
fn upgrade(
    group_id: &str,
    classic: &mut Group,
    joining: bool,
    policy: MigrationPolicy,
    topics: &TopicsView,
    settings: &ConsumerGroupSettings,
    now: Instant,
) -> Result<(ConsumerGroup, Vec<GroupRecord>), GroupError> {
    let refuse = |message: String| Err(GroupError::new(ErrorCode::GroupIdNotFound, message));
    if !joining {
        return refuse(format!("Group {group_id} is not a consumer group."));
    }
    let why = if !policy.upgrade() {
        Some("the online upgrade is disabled")
    } else if classic.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE) {
        Some("the group does not use the consumer embedded protocol")
    } else if classic.members.len() > settings.max_size {
        Some("the group size exceeds the consumer group maximum size")
    } else {
        None
    };
    if let Some(why) = why {
        return refuse(format!(
            "Cannot upgrade classic group {group_id} to consumer group because {why}."
        ));
    }
    let Some(converted) =
        ConsumerGroup::from_classic(classic, topics, now, settings.session_timeout)
    else {
        return refuse(format!("Cannot upgrade the classic group {group_id} to consumer group because the embedded consumer protocol is malformed."));
    };
    classic.answer_waiters(ErrorCode::RebalanceInProgress.code());
    tracing::info!(group = %group_id, members = classic.members.len(), "classic group upgraded to a consumer group");
    Ok(converted)
}

/// A classic JoinGroup to a consumer group with members (Kafka's
/// `classicGroupJoinToConsumerGroup`): answered once its records are written.
fn classic_join(
    ctx: &Rc<ShardContext>,
    coord: &mut Coordinator,
    group_id: &str,
    args: JoinArgs,
    now: Instant,
    reply: JoinReply,
) {
    let error = |member_id: String, code: i16| spate_net::messages::JoinGroupResponse {
        error_code: code,
        generation_id: -1,
        member_id,
        ..Default::default()
    };
    let c = &ctx.config;
    if args.session_timeout_ms < c.group_min_session_timeout_ms
        || args.session_timeout_ms > c.group_max_session_timeout_ms
    {
        let _ = reply.send(error(args.member_id, INVALID_SESSION_TIMEOUT));
        return;
    }
    let settings = Coordinator::group_settings(ctx, group_id);
    let topics = coord.topics_view(ctx);
    let Some(group) = coord.consumer.get_mut(group_id) else {
        let _ = reply.send(error(args.member_id, ErrorCode::UnknownMemberId.code()));
        return;
    };
    let requested = args.member_id.clone();
    match group.classic_join(
        args,
        &topics,
        &settings,
        now,
        &mut coord.consumer_rebalances,
    ) {
        Err(code) => {
            let _ = reply.send(error(requested, code));
        }
        Ok(ClassicJoined::MemberIdRequired(id)) => {
            let _ = reply.send(error(id, ErrorCode::MemberIdRequired.code()));
        }
        Ok(ClassicJoined::Joined {
            member_id,
            generation,
            protocol_name,
            mut records,
            took_over_consumer,
        }) => {
            // The last consumer-protocol member replaced by a classic static member: the
            // group turns classic (Kafka's step 4 of `classicGroupJoinToConsumerGroup`).
            let c = &ctx.config;
            if took_over_consumer
                && Coordinator::migration_policy(ctx).downgrade()
                && group.downgrades_after_takeover(c.group_max_size)
            {
                let limits = Coordinator::limits(ctx);
                records.extend(coord.downgrade(group_id, None, &topics, now, &limits));
            }
            let answer = spate_net::messages::JoinGroupResponse {
                generation_id: generation,
                protocol_type: Some(CONSUMER_PROTOCOL_TYPE.to_string()),
                protocol_name: Some(protocol_name),
                member_id,
                ..Default::default()
            };
            write_records_then(ctx, group_id, records, move |code| {
                let _ = reply.send(if code == 0 {
                    answer
                } else {
                    error(answer.member_id, code)
                });
            });
        }
    }
}

/// Writes a consumer group's records to its `__consumer_offsets` partition (a failure is
/// logged).
fn write_group_records(ctx: &Rc<ShardContext>, group_id: &str, records: Vec<GroupRecord>) {
    write_records_then(ctx, group_id, records, |_| {});
}

/// Writes a consumer group's records to its `__consumer_offsets` partition, then calls
/// `done` with the write's code (0: written).
fn write_records_then(
    ctx: &Rc<ShardContext>,
    group_id: &str,
    records: Vec<GroupRecord>,
    done: impl FnOnce(i16) + 'static,
) {
    let now = now_ms();
    let encoded = records
        .iter()
        .map(|r| consumer_records::encode(group_id, r, now))
        .collect();
    let append = append_records(offsets_partition(ctx, group_id), encoded);
    compio::runtime::spawn(async move {
        let code = append.await;
        if code != 0 {
            tracing::warn!(code, "writing consumer group records failed");
        }
        done(code);
    })
    .detach();
}

/// The coordinator's periodic work: classic sessions and rebalances, consumer-group
/// members that expired and subscriptions that changed with the metadata.
pub fn tick(ctx: &Rc<ShardContext>) {
    let now = Instant::now();
    let writes = {
        let mut coord = ctx.groups.borrow_mut();
        coord.tick(ctx, now);
        coord.tick_consumer_groups(ctx, now)
    };
    for (group_id, records) in writes {
        write_group_records(ctx, &group_id, records);
    }
    super::share_serve::tick(ctx, now);
}

#[cfg(test)]
mod tests {
    use super::*;

    const COUNT: i32 = 4;

    /// A group id whose `__consumer_offsets` partition (of `COUNT`) is `partition`.
    fn group_on(partition: i32, kind: &str) -> String {
        (0..)
            .map(|i| format!("{kind}-{i}"))
            .find(|g| offsets_log::partition_for(g, COUNT) == partition)
            .unwrap_or_default()
    }

    fn offset(at: i64) -> CommittedOffset {
        CommittedOffset {
            offset: at,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp: 0,
        }
    }

    /// A coordinator leading partitions 0 and 1, each with a classic group, a consumer
    /// group, committed offsets and a producer's pending transactional offsets.
    fn leading_two() -> Coordinator {
        let mut c = Coordinator::default();
        for p in [0, 1] {
            let generation = c.loads.begin(p);
            let mut loaded = Coordinator::default();
            let classic = group_on(p, "classic");
            loaded.apply(
                OffsetKey {
                    group: classic.clone(),
                    topic: "t".into(),
                    partition: p,
                },
                Some(offset(10 + i64::from(p))),
            );
            loaded.pending_txn.insert(
                (p, 7),
                vec![(
                    OffsetKey {
                        group: classic.clone(),
                        topic: "t".into(),
                        partition: 9,
                    },
                    offset(99),
                )],
            );
            let consumer = group_on(p, "consumer");
            loaded
                .consumer
                .insert(consumer.clone(), ConsumerGroup::new(&consumer));
            assert!(c.install(p, generation, loaded));
            c.groups.insert(classic.clone(), Group::new(&classic));
        }
        c
    }

    #[test]
    fn unloading_a_partition_drops_only_its_groups_offsets_and_pending_offsets() {
        let mut c = leading_two();
        assert_eq!(c.committed_offsets().len(), 2);
        assert!(c.unload(0, COUNT));
        let (gone, kept) = (group_on(0, "classic"), group_on(1, "classic"));
        assert_eq!(
            c.committed_offsets(),
            vec![(kept.clone(), "t".to_string(), 1, 11)]
        );
        assert!(!c.groups.contains_key(&gone) && c.groups.contains_key(&kept));
        assert!(!c.consumer.contains_key(&group_on(0, "consumer")));
        assert!(c.consumer.contains_key(&group_on(1, "consumer")));
        assert_eq!(c.pending_txn.keys().collect::<Vec<_>>(), vec![&(1, 7)]);
        assert_eq!(c.loads.check(0), Err(ErrorCode::NotCoordinator));
        assert_eq!(c.loads.check(1), Ok(()));
        // The same producer's marker on partition 1 applies only partition 1's offsets.
        c.end_txn(1, 7, true);
        assert!(c
            .committed_offsets()
            .contains(&(kept, "t".to_string(), 9, 99)));
        // Unloading a partition not led here changes nothing.
        assert!(!c.unload(2, COUNT));
        assert_eq!(c.committed_offsets().len(), 2);
    }

    #[test]
    fn a_loading_partition_answers_load_in_progress_and_a_superseded_load_is_dropped() {
        let mut c = leading_two();
        c.unload(1, COUNT);
        assert!(!c.loads.any_loading());
        let stale = c.loads.begin(1);
        assert_eq!(c.loads.check(1), Err(ErrorCode::CoordinatorLoadInProgress));
        // ListGroups answers COORDINATOR_LOAD_IN_PROGRESS meanwhile.
        assert!(c.loads.any_loading());
        // Resigned and elected again before the first load finished: only the second
        // load's state is installed.
        c.unload(1, COUNT);
        let current = c.loads.begin(1);
        let mut old = Coordinator::default();
        old.apply(
            OffsetKey {
                group: group_on(1, "classic"),
                topic: "old".into(),
                partition: 0,
            },
            Some(offset(1)),
        );
        assert!(!c.install(1, stale, old));
        assert!(c.install(1, current, Coordinator::default()));
        assert_eq!(c.loads.check(1), Ok(()));
        assert!(c.committed_offsets().iter().all(|(_, t, ..)| t != "old"));
    }
}
