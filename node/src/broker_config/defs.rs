//! The broker configs Spate describes, under Kafka's names: those of Kafka 4.4's broker
//! configs that apply to Spate (docs/configuration.md lists the ones left out and why).

use crate::config::BrokerConfig;
use crate::topic_config::{self, ConfigType, TopicConfigDef};

/// Where a broker config's value comes from.
pub enum Value {
    /// Always given to a broker (addresses, ids, directories): a static config.
    Always(fn(&Facts) -> String),
    /// A setting of the config file: a static config when it differs from the embedded
    /// default, the default otherwise.
    Setting(fn(&BrokerConfig) -> String),
    /// A setting of the config file without a default (a path, an issuer): a static
    /// config when set, Kafka's null otherwise.
    Optional(fn(&BrokerConfig) -> Option<String>),
    /// A fixed value Spate behaves by (`None`: Kafka's null, the setting is unused).
    Fixed(Option<&'static str>),
    /// A setting of the config file that dynamic broker configs may change at runtime:
    /// `read` gives the value, `write` checks a new one and sets it (see `live`).
    Dynamic {
        read: fn(&BrokerConfig) -> String,
        write: fn(&mut BrokerConfig, &str) -> Result<(), String>,
    },
    /// A listener setting (`listeners`, `listener.security.protocol.map`): dynamic per
    /// broker only, as Kafka's. `read` gives the config file's value (`None`: unset),
    /// `write` puts a dynamic value in place of it; `default` is Kafka's default. The
    /// values are checked together (`broker_config::listeners`).
    Listener {
        read: fn(&BrokerConfig) -> Option<String>,
        write: fn(&mut BrokerConfig, &str),
        default: &'static str,
    },
    /// The default of a topic config (its broker synonym): the topic config's default
    /// from `[topic_defaults]`, changeable at runtime. With a `fallback`, Kafka describes
    /// it as null unless it is set: its default is another config's (an hours form),
    /// which then follows it as a synonym.
    TopicDefault {
        fallback: Option<(&'static str, &'static str)>,
    },
}

/// What the value functions read.
pub struct Facts<'a> {
    pub config: &'a BrokerConfig,
    /// Kafka's `advertised.listeners`: every listener with the address clients are given.
    pub advertised_listeners: &'a str,
}

pub struct BrokerConfigDef {
    pub name: &'static str,
    pub kind: ConfigType,
    pub value: Value,
    pub doc: &'static str,
}

impl BrokerConfigDef {
    /// The topic config whose default this is, for `Value::TopicDefault`.
    pub fn topic_twin(&self) -> Option<&'static TopicConfigDef> {
        match self.value {
            Value::TopicDefault { .. } => topic_config::TOPIC_CONFIGS
                .iter()
                .find(|d| d.broker_synonym == self.name),
            _ => None,
        }
    }

    /// Whether Spate applies a change of it at runtime (IncrementalAlterConfigs and
    /// AlterConfigs on a broker or the cluster default).
    pub fn dynamic(&self) -> bool {
        matches!(
            self.value,
            Value::TopicDefault { .. } | Value::Dynamic { .. } | Value::Listener { .. }
        )
    }

    /// Whether it may only be set per broker, not at the cluster default.
    pub fn per_broker(&self) -> bool {
        matches!(self.value, Value::Listener { .. })
    }
}

const fn def(
    name: &'static str,
    kind: ConfigType,
    value: Value,
    doc: &'static str,
) -> BrokerConfigDef {
    BrokerConfigDef {
        name,
        kind,
        value,
        doc,
    }
}

const fn topic_default(name: &'static str, kind: ConfigType, doc: &'static str) -> BrokerConfigDef {
    def(name, kind, Value::TopicDefault { fallback: None }, doc)
}

use ConfigType::{Boolean, Double, Int, List, Long, Short, String as Str};

/// Every broker config Spate describes, sorted by name.
pub static BROKER_CONFIGS: &[BrokerConfigDef] = &[
    def("advertised.listeners", List, Value::Always(|f| f.advertised_listeners.to_string()),
        "The listeners clients are told to connect to (advertised_listeners, else the bound addresses)."),
    def("auto.create.topics.enable", Boolean, Value::Setting(|c| c.auto_create_topics_enable.to_string()),
        "Whether a Metadata request for a missing topic creates it, when the client allows it."),
    def("auto.leader.rebalance.enable", Boolean, Value::Setting(|c| c.auto_leader_rebalance_enable.to_string()),
        "Whether the active controller moves leadership back to preferred replicas that are live and in sync."),
    def("broker.id", Int, Value::Always(|f| f.config.node_id.to_string()),
        "This broker's id; the same as node.id."),
    topic_default("compression.gzip.level", Int,
        "Default gzip level for topics whose compression.type makes the broker recompress."),
    topic_default("compression.lz4.level", Int,
        "Default lz4 level for topics without their own; accepted, the lz4 encoder has one level."),
    topic_default("compression.type", Str,
        "Default compression.type of topics: producer keeps batches as produced, a codec recompresses them."),
    topic_default("compression.zstd.level", Int,
        "Default zstd level for topics whose compression.type makes the broker recompress."),
    def("connections.max.idle.ms", Long, Value::Setting(|c| c.connections_max_idle_ms.to_string()),
        "A connection with nothing in flight that was silent this long is closed (0: never)."),
    def("connections.max.reauth.ms", Long, Value::Setting(|c| c.connections_max_reauth_ms.to_string()),
        "SASL sessions last at most this long, then the client must re-authenticate (KIP-368; 0: as long as their credentials)."),
    def("default.replication.factor", Int, Value::Fixed(Some("1")),
        "Replication factor of topics created without one."),
    def("delete.topic.enable", Boolean, Value::Setting(|c| c.delete_topic_enable.to_string()),
        "Whether DeleteTopics may delete topics."),
    def("fetch.max.bytes", Int, Value::Setting(|c| c.fetch_max_bytes.to_string()),
        "The most a Fetch response carries, whatever the request's max_bytes (one oversized first batch excepted)."),
    def("follower.replication.throttled.rate", Long, Value::Dynamic { read: |c| c.follower_replication_throttled_rate.to_string(), write: |c, v| { c.follower_replication_throttled_rate = parse_at_least(v, 0, "LONG")?; Ok(()) } },
        "Bytes per second this broker fetches as a follower for the replicas its topics' follower.replication.throttled.replicas name, while they are out of sync."),
    def("group.consumer.assignors", List, Value::Setting(|c| c.group_consumer_assignors.join(",")),
        "The server-side assignors of consumer groups (KIP-848), the first the default: uniform, range."),
    def("group.consumer.heartbeat.interval.ms", Int, Value::Setting(|c| c.group_consumer_heartbeat_interval_ms.to_string()),
        "The heartbeat interval consumer-group members are given."),
    def("group.consumer.max.heartbeat.interval.ms", Int, Value::Setting(|c| c.group_consumer_max_heartbeat_interval_ms.to_string()),
        "The largest heartbeat interval a consumer group's own consumer.heartbeat.interval.ms may set."),
    def("group.consumer.max.session.timeout.ms", Int, Value::Setting(|c| c.group_consumer_max_session_timeout_ms.to_string()),
        "The largest session timeout a consumer group's own consumer.session.timeout.ms may set."),
    def("group.consumer.max.size", Int, Value::Setting(|c| c.group_consumer_max_size.to_string()),
        "The most members a consumer group may have; more are refused with GROUP_MAX_SIZE_REACHED."),
    def("group.consumer.migration.policy", Str, Value::Setting(|c| c.group_consumer_migration_policy.clone()),
        "The online conversions between classic and consumer groups: disabled, upgrade, downgrade or bidirectional."),
    def("group.consumer.min.heartbeat.interval.ms", Int, Value::Setting(|c| c.group_consumer_min_heartbeat_interval_ms.to_string()),
        "The smallest heartbeat interval a consumer group's own consumer.heartbeat.interval.ms may set."),
    def("group.consumer.min.session.timeout.ms", Int, Value::Setting(|c| c.group_consumer_min_session_timeout_ms.to_string()),
        "The smallest session timeout a consumer group's own consumer.session.timeout.ms may set."),
    def("group.consumer.session.timeout.ms", Int, Value::Setting(|c| c.group_consumer_session_timeout_ms.to_string()),
        "A consumer-group member that does not heartbeat for this long is removed."),
    def("group.initial.rebalance.delay.ms", Int, Value::Setting(|c| c.group_initial_rebalance_delay_ms.to_string()),
        "How long a new consumer group waits for more members before its first assignment."),
    def("group.max.session.timeout.ms", Int, Value::Setting(|c| c.group_max_session_timeout_ms.to_string()),
        "The largest session timeout a group member may ask for."),
    def("group.max.size", Int, Value::Setting(|c| c.group_max_size.to_string()),
        "The most members a consumer group may have; more are refused with GROUP_MAX_SIZE_REACHED."),
    def("group.min.session.timeout.ms", Int, Value::Setting(|c| c.group_min_session_timeout_ms.to_string()),
        "The smallest session timeout a group member may ask for."),
    def("group.share.assignors", List, Value::Fixed(Some("simple")),
        "The share-group assignor: simple."),
    def("group.share.delivery.count.limit", Int, Value::Setting(|c| c.group_share_delivery_count_limit.to_string()),
        "Deliveries of a record to a share group before it is archived."),
    def("group.share.heartbeat.interval.ms", Int, Value::Setting(|c| c.group_share_heartbeat_interval_ms.to_string()),
        "The heartbeat interval share-group members are given."),
    def("group.share.initialize.retry.interval.ms", Int, Value::Setting(|c| c.group_share_initialize_retry_interval_ms.to_string()),
        "How long a share-partition state initialization may be pending before it is asked again."),
    def("group.share.max.delivery.count.limit", Int, Value::Setting(|c| c.group_share_max_delivery_count_limit.to_string()),
        "The largest share.delivery.count.limit a share group may set."),
    def("group.share.max.heartbeat.interval.ms", Int, Value::Setting(|c| c.group_share_max_heartbeat_interval_ms.to_string()),
        "The largest share.heartbeat.interval.ms a share group may set."),
    def("group.share.max.partition.max.record.locks", Int, Value::Setting(|c| c.group_share_max_partition_max_record_locks.to_string()),
        "The largest share.partition.max.record.locks a share group may set."),
    def("group.share.max.record.lock.duration.ms", Int, Value::Setting(|c| c.group_share_max_record_lock_duration_ms.to_string()),
        "The largest share.record.lock.duration.ms a share group may set."),
    def("group.share.max.session.timeout.ms", Int, Value::Setting(|c| c.group_share_max_session_timeout_ms.to_string()),
        "The largest share.session.timeout.ms a share group may set."),
    def("group.share.max.share.sessions", Int, Value::Setting(|c| c.group_share_max_share_sessions.to_string()),
        "The most share sessions the broker keeps."),
    def("group.share.max.size", Int, Value::Setting(|c| c.group_share_max_size.to_string()),
        "The most members a share group may have; more are refused with GROUP_MAX_SIZE_REACHED."),
    def("group.share.min.delivery.count.limit", Int, Value::Setting(|c| c.group_share_min_delivery_count_limit.to_string()),
        "The smallest share.delivery.count.limit a share group may set."),
    def("group.share.min.heartbeat.interval.ms", Int, Value::Setting(|c| c.group_share_min_heartbeat_interval_ms.to_string()),
        "The smallest share.heartbeat.interval.ms a share group may set."),
    def("group.share.min.partition.max.record.locks", Int, Value::Setting(|c| c.group_share_min_partition_max_record_locks.to_string()),
        "The smallest share.partition.max.record.locks a share group may set."),
    def("group.share.min.record.lock.duration.ms", Int, Value::Setting(|c| c.group_share_min_record_lock_duration_ms.to_string()),
        "The smallest share.record.lock.duration.ms a share group may set."),
    def("group.share.min.session.timeout.ms", Int, Value::Setting(|c| c.group_share_min_session_timeout_ms.to_string()),
        "The smallest share.session.timeout.ms a share group may set."),
    def("group.share.partition.max.record.locks", Int, Value::Setting(|c| c.group_share_partition_max_record_locks.to_string()),
        "Records a share-partition may have locked at once."),
    def("group.share.record.lock.duration.ms", Int, Value::Setting(|c| c.group_share_record_lock_duration_ms.to_string()),
        "How long a share consumer holds a record it was given."),
    def("group.share.session.timeout.ms", Int, Value::Setting(|c| c.group_share_session_timeout_ms.to_string()),
        "A share-group member that does not heartbeat for this long is removed."),
    def("leader.imbalance.check.interval.seconds", Long, Value::Setting(|c| c.leader_imbalance_check_interval_seconds.to_string()),
        "How often the active controller checks the leader imbalance."),
    def("leader.imbalance.per.broker.percentage", Int, Value::Setting(|c| c.leader_imbalance_per_broker_percentage.to_string()),
        "Share of a broker's preferred partitions led elsewhere above which leadership is moved back."),
    def("leader.replication.throttled.rate", Long, Value::Dynamic { read: |c| c.leader_replication_throttled_rate.to_string(), write: |c, v| { c.leader_replication_throttled_rate = parse_at_least(v, 0, "LONG")?; Ok(()) } },
        "Bytes per second this broker sends as a leader to out-of-sync followers of the replicas its topics' leader.replication.throttled.replicas name."),
    def("listener.security.protocol.map", Str, Value::Listener { read: |c| c.listener_security_protocol_map.clone(), write: super::listeners::write_protocol_map, default: "SASL_SSL:SASL_SSL,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT" },
        "The security protocol of each listener not named after its own (listener_security_protocol_map)."),
    def("listeners", List, Value::Listener { read: |c| Some(c.listeners.clone().unwrap_or_else(|| format!("PLAINTEXT://{}", c.listen))), write: super::listeners::write_listeners, default: "PLAINTEXT://:9092" },
        "The addresses the broker accepts client connections on (listeners, else listen)."),
    def("log.cleaner.backoff.ms", Long, Value::Dynamic { read: |c| c.log_cleaner.backoff_ms.to_string(), write: |c, v| { c.log_cleaner.backoff_ms = parse_at_least(v, 0, "LONG")?; Ok(()) } },
        "How often each shard checks its compacted partitions for cleaning."),
    def("log.cleaner.dedupe.buffer.size", Long, Value::Dynamic { read: |c| c.log_cleaner.dedupe_buffer_size.to_string(), write: |c, v| { c.log_cleaner.dedupe_buffer_size = parse_at_least(v, 0, "LONG")?; Ok(()) } },
        "Memory of the cleaner threads' key maps, all threads together."),
    topic_default("log.cleaner.delete.retention.ms", Long,
        "Default delete.retention.ms of topics: how long tombstones stay readable after the clean that kept them."),
    def("log.cleaner.enable", Boolean, Value::Setting(|c| c.log_cleaner.enable.to_string()),
        "Whether the log cleaner compacts topics whose cleanup.policy contains compact."),
    def("log.cleaner.io.buffer.load.factor", Double, Value::Dynamic { read: |c| c.log_cleaner.io_buffer_load_factor.to_string(), write: |c, v| { c.log_cleaner.io_buffer_load_factor = parse_double(v)?; Ok(()) } },
        "How full a cleaner key map may get."),
    def("log.cleaner.io.buffer.size", Int, Value::Dynamic { read: |c| c.log_cleaner.io_buffer_size.to_string(), write: |c, v| { c.log_cleaner.io_buffer_size = parse_at_least(v, 0, "INT")?; Ok(()) } },
        "Bytes the cleaner reads at a time."),
    def("log.cleaner.io.max.bytes.per.second", Double, Value::Dynamic { read: |c| java_double(c.log_cleaner.io_max_bytes_per_second), write: |c, v| { c.log_cleaner.io_max_bytes_per_second = parse_double(v)?; Ok(()) } },
        "Bytes all cleaner threads together read and write per second."),
    topic_default("log.cleaner.max.compaction.lag.ms", Long,
        "Default max.compaction.lag.ms of topics: the longest a record may stay uncompacted."),
    topic_default("log.cleaner.min.cleanable.ratio", Double,
        "Default min.cleanable.dirty.ratio of topics: the dirty share of a log that triggers a clean."),
    topic_default("log.cleaner.min.compaction.lag.ms", Long,
        "Default min.compaction.lag.ms of topics: the youngest a record may be to be compacted."),
    def("log.cleaner.threads", Int, Value::Dynamic { read: |c| c.log_cleaner.threads.to_string(), write: |c, v| { c.log_cleaner.threads = parse_at_least(v, 0, "INT")?; Ok(()) } },
        "Cleaner threads; each cleans one partition at a time."),
    topic_default("log.cleanup.policy", List,
        "Default cleanup.policy of topics: delete, compact, both or neither."),
    def("log.dirs", List, Value::Always(|f| f.config.log_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(",")),
        "The directories partition logs are spread over (log_dirs); the first holds the metadata log."),
    topic_default("log.flush.interval.messages", Long,
        "Default flush.messages of topics: fdatasync after this many messages."),
    def("log.flush.interval.ms", Long, Value::TopicDefault { fallback: Some(("log.flush.scheduler.interval.ms", "9223372036854775807")) },
        "Default flush.ms of topics: fdatasync when the oldest unsynced write is this old; null: never."),
    topic_default("log.index.interval.bytes", Int,
        "Default index.interval.bytes of topics: bytes between sparse index entries."),
    topic_default("log.index.size.max.bytes", Int,
        "Default segment.index.bytes of topics: the size cap of a segment's offset index."),
    topic_default("log.message.timestamp.after.max.ms", Long,
        "Default message.timestamp.after.max.ms of topics: how far ahead of the broker clock a timestamp may be."),
    topic_default("log.message.timestamp.before.max.ms", Long,
        "Default message.timestamp.before.max.ms of topics: how far behind the broker clock a timestamp may be."),
    topic_default("log.message.timestamp.type", Str,
        "Default message.timestamp.type of topics: CreateTime or LogAppendTime."),
    topic_default("log.preallocate", Boolean,
        "Default preallocate of topics: allocate a new segment file at its full size."),
    topic_default("log.retention.bytes", Long,
        "Default retention.bytes of topics: the size above which the oldest segments are deleted (-1: no limit)."),
    def("log.retention.check.interval.ms", Long, Value::Setting(|c| c.log_retention_check_interval_ms.to_string()),
        "How often retention runs."),
    def("log.retention.hours", Int, Value::Fixed(Some("168")),
        "Hours form of log.retention.ms, used when neither it nor log.retention.minutes is set."),
    def("log.retention.minutes", Int, Value::Fixed(None),
        "Minutes form of log.retention.ms; unused."),
    def("log.retention.ms", Long, Value::TopicDefault { fallback: Some(("log.retention.hours", "168")) },
        "Default retention.ms of topics: segments whose newest record is older are deleted (-1: kept forever); null: log.retention.hours."),
    def("log.roll.hours", Int, Value::Fixed(Some("168")),
        "Hours form of log.roll.ms, used when it is not set."),
    def("log.roll.jitter.hours", Int, Value::Fixed(Some("0")),
        "Hours form of log.roll.jitter.ms, used when it is not set."),
    def("log.roll.jitter.ms", Long, Value::TopicDefault { fallback: Some(("log.roll.jitter.hours", "0")) },
        "Default segment.jitter.ms of topics: up to this much is taken off segment.ms per partition; null: log.roll.jitter.hours."),
    def("log.roll.ms", Long, Value::TopicDefault { fallback: Some(("log.roll.hours", "168")) },
        "Default segment.ms of topics: the active segment rolls at this age; null: log.roll.hours."),
    topic_default("log.segment.bytes", Int,
        "Default segment.bytes of topics: the active segment rolls at this size."),
    topic_default("log.segment.delete.delay.ms", Long,
        "Default file.delete.delay.ms of topics; accepted, Spate deletes expired segments at once."),
    def("max.connections", Int, Value::Dynamic { read: |c| c.max_connections.to_string(), write: |c, v| { c.max_connections = parse_at_least(v, 0, "INT")?; Ok(()) } },
        "Client connections open at once, broker-wide; a connection over the cap is closed after accept."),
    def("max.request.partition.size.limit", Int, Value::Fixed(Some("2000")),
        "The most partitions one DescribeTopicPartitions response carries."),
    topic_default("message.max.bytes", Int,
        "Default max.message.bytes of topics: the largest record batch accepted."),
    topic_default("min.insync.replicas", Int,
        "Default min.insync.replicas of topics: acks=all produce needs at least this many in-sync replicas."),
    def("node.id", Int, Value::Always(|f| f.config.node_id.to_string()),
        "This broker's id."),
    def("num.partitions", Int, Value::Setting(|c| c.num_partitions.to_string()),
        "Partitions of auto-created topics and of topics created with -1."),
    def("offset.metadata.max.bytes", Int, Value::Setting(|c| c.offset_metadata_max_bytes.to_string()),
        "The longest metadata string of a committed offset."),
    def("offsets.topic.num.partitions", Int, Value::Setting(|c| c.offsets_topic_num_partitions.to_string()),
        "Partitions of __consumer_offsets, fixed when it is created."),
    def("offsets.topic.replication.factor", Short, Value::Setting(|c| c.offsets_topic_replication_factor.to_string()),
        "Replicas of __consumer_offsets when a cluster creates it (a single node creates it with one)."),
    def("queued.max.request.bytes", Long, Value::Setting(|c| c.queued_max_request_bytes.to_string()),
        "Memory all request frames being read, queued or handled may hold together, broker-wide."),
    def("replica.alter.log.dirs.io.max.bytes.per.second", Long, Value::Dynamic { read: |c| c.replica_alter_log_dirs_io_max_bytes_per_second.to_string(), write: |c, v| { c.replica_alter_log_dirs_io_max_bytes_per_second = parse_at_least(v, 0, "LONG")?; Ok(()) } },
        "Bytes per second partition moves between this broker's log dirs (AlterReplicaLogDirs) copy, all together."),
    def("replica.fetch.backoff.ms", Int, Value::Setting(|c| c.replica_fetch_backoff_ms.to_string()),
        "A follower's pause after a failed fetch from its leader."),
    def("replica.fetch.max.bytes", Int, Value::Setting(|c| c.replica_fetch_max_bytes.to_string()),
        "What a follower's fetch asks of each partition (one larger batch still comes whole)."),
    def("replica.fetch.min.bytes", Int, Value::Setting(|c| c.replica_fetch_min_bytes.to_string()),
        "The data a follower's fetch waits for at the leader."),
    def("replica.fetch.response.max.bytes", Int, Value::Setting(|c| c.replica_fetch_response_max_bytes.to_string()),
        "What a follower's fetch asks for over all its partitions."),
    def("replica.fetch.wait.max.ms", Int, Value::Setting(|c| c.replica_fetch_wait_max_ms.to_string()),
        "How long a follower's fetch waits at the leader for data."),
    def("replica.lag.time.max.ms", Long, Value::Setting(|c| c.replica_lag_time_max_ms.to_string()),
        "A follower that has not caught up with its leader for this long leaves the ISR."),
    def("replica.selector.class", Str, Value::Setting(|c| c.replica_selector_class.clone().unwrap_or_default()),
        "KIP-392: unset, consumers fetch from leaders; Kafka's RackAwareReplicaSelector sends a consumer that names its rack to an in-sync replica there."),
    def("sasl.enabled.mechanisms", List, Value::Setting(|c| c.sasl.enabled_mechanisms.join(",")),
        "The SASL mechanisms SASL listeners offer (sasl.enabled_mechanisms): PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER."),
    def("sasl.mechanism.inter.broker.protocol", Str, Value::Setting(|c| c.sasl.inter_broker_mechanism.clone()),
        "The mechanism this broker authenticates with to other brokers on a SASL inter-broker listener (sasl.inter_broker_mechanism)."),
    def("sasl.oauthbearer.clock.skew.seconds", Int, Value::Setting(|c| c.sasl.oauthbearer.clock_skew_seconds.to_string()),
        "Leeway for the exp, nbf and iat claims of OAUTHBEARER tokens."),
    def("sasl.oauthbearer.expected.audience", List, Value::Setting(|c| c.sasl.oauthbearer.expected_audience.join(",")),
        "When not empty, an OAUTHBEARER token's aud must name one of these."),
    def("sasl.oauthbearer.expected.issuer", Str, Value::Optional(|c| c.sasl.oauthbearer.expected_issuer.clone()),
        "When set, an OAUTHBEARER token's iss must be it."),
    def("sasl.oauthbearer.jwks.endpoint.refresh.ms", Long, Value::Setting(|c| c.sasl.oauthbearer.reload_interval_ms.to_string()),
        "How often the verification keys file is read again (sasl.oauthbearer.reload_interval_ms; 0: never)."),
    def("sasl.oauthbearer.jwks.endpoint.url", Str, Value::Optional(|c| c.sasl.oauthbearer.jwks_file.as_deref().map(file_url)),
        "The file with the keys OAUTHBEARER tokens are verified with (sasl.oauthbearer.jwks_file): a JWK Set or one PEM public key."),
    def("sasl.oauthbearer.scope.claim.name", Str, Value::Setting(|c| c.sasl.oauthbearer.scope_claim_name.clone()),
        "The claim with an OAUTHBEARER token's scopes."),
    def("sasl.oauthbearer.sub.claim.name", Str, Value::Setting(|c| c.sasl.oauthbearer.sub_claim_name.clone()),
        "The claim naming an OAUTHBEARER token's principal (User:<value>)."),
    def("sasl.server.max.receive.size", Int, Value::Fixed(Some("524288")),
        "The largest request a SASL listener takes from a client that has not authenticated yet."),
    def("share.coordinator.snapshot.update.records.per.snapshot", Int, Value::Setting(|c| c.share_coordinator_snapshot_update_records_per_snapshot.to_string()),
        "ShareUpdate records of a share-partition between two of its ShareSnapshot records."),
    def("share.coordinator.state.topic.min.isr", Short, Value::Setting(|c| c.share_coordinator_state_topic_min_isr.to_string()),
        "The min.insync.replicas __share_group_state is created with (at most its replication factor)."),
    def("share.coordinator.state.topic.num.partitions", Int, Value::Setting(|c| c.share_coordinator_state_topic_num_partitions.to_string()),
        "Partitions of __share_group_state, fixed when it is created."),
    def("share.coordinator.state.topic.replication.factor", Short, Value::Setting(|c| c.share_coordinator_state_topic_replication_factor.to_string()),
        "Replicas of __share_group_state when it is created on first use (a single node creates it with one)."),
    def("share.coordinator.state.topic.segment.bytes", Int, Value::Setting(|c| c.share_coordinator_state_topic_segment_bytes.to_string()),
        "The segment.bytes __share_group_state is created with."),
    def("share.coordinator.write.timeout.ms", Int, Value::Setting(|c| c.share_coordinator_write_timeout_ms.to_string()),
        "How long a share coordinator's write waits for the in-sync replicas of its partition."),
    def("socket.request.max.bytes", Int, Value::Setting(|c| c.socket_request_max_bytes.to_string()),
        "The largest request frame; a larger one closes the connection."),
    def("ssl.allow.dn.changes", Boolean, Value::Setting(|c| c.ssl.allow_dn_changes.to_string()),
        "Whether a listener's keystore replaced at runtime may hold a certificate with another subject (ssl.allow_dn_changes)."),
    def("ssl.allow.san.changes", Boolean, Value::Setting(|c| c.ssl.allow_san_changes.to_string()),
        "Whether a listener's keystore replaced at runtime may drop subjectAltNames of the current certificate (ssl.allow_san_changes)."),
    def("ssl.cipher.suites", List, Value::Fixed(Some("")),
        "Empty: the TLS library's (rustls) default cipher suites."),
    def("ssl.client.auth", Str, Value::Setting(|c| c.ssl.client_auth.name().to_string()),
        "Client certificates on SSL listeners (ssl.client_auth): none, requested (checked when sent) or required."),
    def("ssl.enabled.protocols", List, Value::Fixed(Some("TLSv1.2,TLSv1.3")),
        "The TLS versions TLS listeners and this broker's TLS connections accept."),
    def("ssl.endpoint.identification.algorithm", Str, Value::Fixed(Some("https")),
        "This broker checks the host name or IP of the brokers it connects to over TLS against their certificates."),
    def("ssl.keystore.location", Str, Value::Optional(|c| c.ssl.keystore_location.as_deref().map(|p| p.display().to_string())),
        "The PEM file with the broker's certificate chain, leaf first, and its key unless ssl.key_location names another (ssl.keystore_location)."),
    def("ssl.keystore.type", Str, Value::Fixed(Some("PEM")),
        "PEM: the only keystore format Spate reads."),
    def("ssl.principal.mapping.rules", Str, Value::Setting(|c| c.ssl.principal_mapping_rules.clone()),
        "How a client certificate's subject becomes the principal's name: DEFAULT or RULE:pattern/replacement/[LU], comma-separated."),
    def("ssl.protocol", Str, Value::Fixed(Some("TLSv1.3")),
        "The newest TLS version negotiated."),
    def("ssl.truststore.location", Str, Value::Optional(|c| c.ssl.truststore_location.as_deref().map(|p| p.display().to_string())),
        "The PEM file with the CA certificates client and broker certificates must chain to (ssl.truststore_location)."),
    def("ssl.truststore.type", Str, Value::Fixed(Some("PEM")),
        "PEM: the only truststore format Spate reads."),
    def("transaction.state.log.min.isr", Int, Value::Setting(|c| c.transaction_state_log_min_isr.to_string()),
        "The min.insync.replicas __transaction_state is created with (at most its replication factor)."),
    def("transaction.state.log.replication.factor", Short, Value::Setting(|c| c.transaction_state_log_replication_factor.to_string()),
        "Replicas of __transaction_state when a cluster creates it (a single node creates it with one)."),
    topic_default("unclean.leader.election.enable", Boolean,
        "Default unclean.leader.election.enable of topics: elect a live replica outside the ISR when no ISR member is live."),
];

/// Java's rendering of a double, for the values Kafka shows as `Double.toString`.
/// A whole number of at least `min` (Kafka's `atLeast` validator; `kind` as Kafka
/// names the type in its message).
fn parse_at_least<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    v: &str,
    min: T,
    kind: &str,
) -> Result<T, String> {
    let n: T = v
        .trim()
        .parse()
        .map_err(|_| format!("Not a number of type {kind}"))?;
    if n < min {
        return Err(format!("Value must be at least {min}"));
    }
    Ok(n)
}

fn parse_double(v: &str) -> Result<f64, String> {
    v.trim()
        .parse::<f64>()
        .ok()
        .filter(|d| !d.is_nan())
        .ok_or_else(|| "Not a number of type DOUBLE".to_string())
}

/// A file's `file:` URL, the form Kafka's `sasl.oauthbearer.jwks.endpoint.url` takes
/// for a local JWK Set.
fn file_url(path: &std::path::Path) -> String {
    let slashes = if path.is_absolute() { "//" } else { "" };
    format!("file:{slashes}{}", path.display())
}

fn java_double(v: f64) -> String {
    if v >= f64::MAX {
        "1.7976931348623157E308".to_string()
    } else {
        v.to_string()
    }
}

pub fn find(name: &str) -> Option<&'static BrokerConfigDef> {
    BROKER_CONFIGS.iter().find(|d| d.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_unique_and_topic_defaults_have_twins() {
        for w in BROKER_CONFIGS.windows(2) {
            assert!(w[0].name < w[1].name, "{} before {}", w[0].name, w[1].name);
        }
        for d in BROKER_CONFIGS {
            assert_eq!(
                matches!(d.value, Value::TopicDefault { .. }),
                d.topic_twin().is_some(),
                "{}",
                d.name
            );
            if let Some(t) = d.topic_twin() {
                assert_eq!(t.kind, d.kind, "{}", d.name);
            }
        }
    }

    #[test]
    fn fixed_values_are_the_ones_in_effect() {
        let max_receive = find("sasl.server.max.receive.size").unwrap();
        assert!(matches!(max_receive.value, Value::Fixed(Some(v))
            if v == crate::security::UNAUTHENTICATED_MAX_FRAME.to_string()));
    }
}
