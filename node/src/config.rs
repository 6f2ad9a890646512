//! Broker configuration: an embedded default TOML, an optional TOML file, `SPATE_*`
//! environment variables and command-line flags, in rising order of precedence.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Parser;
use serde::Deserialize;

const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// Command-line flags. Each one also reads a `SPATE_*` environment variable.
#[derive(Parser, Debug, Default)]
#[command(
    name = "spate",
    version,
    about = "Spate: a Kafka-compatible broker node"
)]
pub struct Cli {
    /// TOML configuration file (keys as in the embedded default, see docs/configuration.md).
    #[arg(long, env = "SPATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory holding partition logs and the metadata log.
    #[arg(long, env = "SPATE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Several directories for partition logs (Kafka's `log.dirs`), comma-separated; the
    /// metadata log goes in the first. Wins over `--data-dir`.
    #[arg(long, env = "SPATE_LOG_DIRS", value_delimiter = ',')]
    pub log_dirs: Option<Vec<PathBuf>>,
    /// Address the Kafka listener binds, HOST:PORT.
    #[arg(long, env = "SPATE_LISTEN")]
    pub listen: Option<String>,
    /// Address given to clients in Metadata responses, HOST:PORT (default: the listen address).
    #[arg(long, env = "SPATE_ADVERTISED_LISTENER")]
    pub advertised_listener: Option<String>,
    /// Number of shards (one pinned thread per core); default: every allowed CPU.
    #[arg(long, env = "SPATE_CORES")]
    pub cores: Option<usize>,
    /// Explicit CPU list for the shards, e.g. "2,3,6-7" (overrides --cores).
    #[arg(long, env = "SPATE_CPU_LIST")]
    pub cpu_list: Option<String>,
    /// HTTP endpoint for /metrics, /health and /ready, HOST:PORT.
    #[arg(long, env = "SPATE_HTTP")]
    pub http: Option<String>,
    /// Serve the Confluent-compatible schema registry REST API on HOST:PORT.
    #[arg(long, env = "SPATE_SCHEMA_REGISTRY")]
    pub schema_registry: Option<String>,
    /// This node's id (Kafka's `node.id`), unique in the cluster.
    #[arg(long, env = "SPATE_NODE_ID")]
    pub node_id: Option<i32>,
    /// Where this node's controller listens, HOST:PORT (default: its address in the voters).
    #[arg(long, env = "SPATE_CONTROLLER_LISTEN")]
    pub controller_listen: Option<String>,
    /// The controller quorum, "id@host:port,..." (Kafka's `controller.quorum.voters`);
    /// default: this node alone.
    #[arg(long, env = "SPATE_CONTROLLER_QUORUM_VOTERS")]
    pub controller_quorum_voters: Option<String>,
    /// What this node is: broker, controller, or both (comma-separated).
    #[arg(long, env = "SPATE_PROCESS_ROLES", value_delimiter = ',')]
    pub process_roles: Option<Vec<ProcessRole>>,
}

/// A node's role (Kafka's `process.roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProcessRole {
    /// Serves clients: the Kafka listener, partitions, coordinators.
    Broker,
    /// A voter of the controller quorum that holds the metadata log.
    Controller,
}

/// The security protocols the controller channel speaks. SASL is not among them:
/// Kafka's SASL_PLAINTEXT and SASL_SSL controller listeners have no counterpart, and an
/// unknown value fails to parse with the two that are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ControllerSecurityProtocol {
    #[serde(rename = "PLAINTEXT")]
    Plaintext,
    /// TLS with mutual authentication, from the `[ssl]` files.
    #[serde(rename = "SSL")]
    Ssl,
}

/// The resolved broker configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    pub node_id: i32,
    pub cluster_id: String,
    /// Kafka's `process.roles`: broker, controller, or both (the default).
    pub process_roles: Vec<ProcessRole>,
    /// Kafka's `controller.quorum.voters`, `id@host:port,...`; unset: this node is the
    /// only voter (on an ephemeral loopback port unless `controller_listen` is set).
    #[serde(default)]
    pub controller_quorum_voters: Option<String>,
    /// Where this node's controller listens (HOST:PORT); unset: its address in
    /// `controller_quorum_voters`.
    #[serde(default)]
    pub controller_listen: Option<String>,
    /// The controller channel's security protocol: Kafka's `listener.security.protocol.map`
    /// entry for the listener named in `controller.listener.names` (docs/security.md).
    pub controller_security_protocol: ControllerSecurityProtocol,
    /// Kafka's `broker.rack`, registered with the controller; none by default.
    #[serde(default)]
    pub broker_rack: Option<String>,
    /// How often a broker heartbeats to the active controller.
    pub broker_heartbeat_interval_ms: u64,
    /// A broker without a heartbeat for this long is fenced: left out of Metadata.
    pub broker_session_timeout_ms: u64,
    /// Kafka's `initial.broker.registration.timeout.ms`: a broker that is not
    /// registered and unfenced this long after its start stops.
    pub initial_broker_registration_timeout_ms: u64,
    /// The first log directory: it holds the metadata log and the broker's lock, and
    /// partition logs like the others.
    pub data_dir: PathBuf,
    /// Kafka's `log.dirs`: every directory partition logs are spread over (JBOD), the
    /// first being `data_dir`. Empty in the file: `data_dir` alone.
    #[serde(default)]
    pub log_dirs: Vec<PathBuf>,
    pub listen: String,
    #[serde(default)]
    pub advertised_listener: Option<String>,
    /// Kafka's `listeners`, `advertised.listeners` and `listener.security.protocol.map`
    /// (docs/security.md); without `listeners`, one PLAINTEXT listener on `listen`.
    #[serde(default)]
    pub listeners: Option<String>,
    #[serde(default)]
    pub advertised_listeners: Option<String>,
    #[serde(default)]
    pub listener_security_protocol_map: Option<String>,
    /// Kafka's `inter.broker.listener.name`: the listener other brokers are reached on
    /// (follower fetches, transaction markers); default: the first PLAINTEXT listener.
    #[serde(default)]
    pub inter_broker_listener_name: Option<String>,
    /// TLS of the SSL and SASL_SSL listeners.
    pub ssl: crate::security::config::SslConfig,
    /// SASL of the SASL_PLAINTEXT and SASL_SSL listeners.
    pub sasl: crate::security::config::SaslConfig,
    /// Authorization with ACLs (off by default).
    #[serde(default)]
    pub authorizer: crate::security::config::AuthorizerConfig,
    /// HTTP endpoint for Prometheus metrics and probes; none by default.
    #[serde(default)]
    pub http_listen: Option<String>,
    /// The schema registry's REST endpoint (docs/schema-registry.md); none by default.
    #[serde(default)]
    pub schema_registry: Option<String>,
    /// 0 = every allowed CPU.
    pub cores: usize,
    #[serde(default)]
    pub cpu_list: Vec<usize>,
    /// `socket.request.max.bytes`
    pub socket_request_max_bytes: usize,
    /// `queued.max.request.bytes`: memory all request frames being read, queued or
    /// handled may hold together, broker-wide; reading stops while it is spent.
    pub queued_max_request_bytes: usize,
    /// `fetch.max.bytes`: the most a Fetch response carries (with the request's own
    /// `max_bytes`, the smaller wins; one batch may exceed it, KIP-74).
    pub fetch_max_bytes: usize,
    /// `replica.lag.time.max.ms`: a follower that has not caught up with its leader for
    /// this long leaves the ISR.
    pub replica_lag_time_max_ms: u64,
    /// `replica.fetch.max.bytes`: what a follower asks of each partition per fetch
    /// (one larger batch still comes whole).
    pub replica_fetch_max_bytes: usize,
    /// `replica.fetch.response.max.bytes`: what a follower's fetch asks for in all.
    pub replica_fetch_response_max_bytes: usize,
    /// `replica.fetch.wait.max.ms`: how long a follower's fetch waits at the leader
    /// for data.
    pub replica_fetch_wait_max_ms: u64,
    /// `replica.fetch.min.bytes`: the data a follower's fetch waits for.
    pub replica_fetch_min_bytes: usize,
    /// `replica.fetch.backoff.ms`: a follower's pause after a failed fetch.
    pub replica_fetch_backoff_ms: u64,
    /// `leader.replication.throttled.rate`: bytes/s a leader sends to followers of
    /// throttled replicas, broker-wide (`replica/quota.rs`); 2^63-1 is unlimited.
    pub leader_replication_throttled_rate: u64,
    /// `follower.replication.throttled.rate`: bytes/s a follower fetches for its
    /// throttled replicas, broker-wide.
    pub follower_replication_throttled_rate: u64,
    /// `replica.alter.log.dirs.io.max.bytes.per.second`: bytes/s the moves between log
    /// dirs copy, broker-wide (`log_move.rs`).
    pub replica_alter_log_dirs_io_max_bytes_per_second: u64,
    /// `replica.selector.class`: unset, consumers fetch from leaders only; Kafka's
    /// `org.apache.kafka.common.replica.RackAwareReplicaSelector` sends a consumer that
    /// names its rack to an in-sync replica in that rack (KIP-392).
    #[serde(default)]
    pub replica_selector_class: Option<String>,
    /// `connections.max.idle.ms`: close connections idle this long (0: never).
    pub connections_max_idle_ms: u64,
    /// `connections.max.reauth.ms` (KIP-368): a SASL session lasts at most this long
    /// (and no longer than an OAUTHBEARER token); then the client must re-authenticate
    /// or its connection is closed. 0: sessions last as long as their credentials.
    pub connections_max_reauth_ms: u64,
    /// `max.connections`: client connections open at once, broker-wide; more are
    /// closed right after accept.
    pub max_connections: usize,
    /// `auto.create.topics.enable`
    pub auto_create_topics_enable: bool,
    /// `num.partitions`: partitions of auto-created topics and of CreateTopics with -1.
    pub num_partitions: i32,
    /// `delete.topic.enable`
    pub delete_topic_enable: bool,
    /// `auto.leader.rebalance.enable`: the active controller moves leadership back to
    /// preferred replicas that are live and in sync.
    pub auto_leader_rebalance_enable: bool,
    /// `leader.imbalance.check.interval.seconds`: how often it looks.
    pub leader_imbalance_check_interval_seconds: u64,
    /// `leader.imbalance.per.broker.percentage`: the share of a broker's preferred
    /// partitions led elsewhere above which they are moved back.
    pub leader_imbalance_per_broker_percentage: u32,
    /// Largest number of requests a connection may have in flight before reading stops.
    pub max_in_flight_per_connection: usize,
    /// Memory each shard spends on recently written batches kept for reads: one budget
    /// and one least-recently-used order over all the shard's partitions.
    pub batch_cache_bytes_per_shard: usize,
    /// Segment files grow by `fallocate` in steps of this many bytes (0: no preallocation).
    pub segment_preallocate_bytes: u64,
    /// Largest step of the background zero fill ahead of the active segment's data
    /// (0: off; see docs/log.md, "Zero fill").
    pub segment_zero_ahead_bytes: u64,
    /// Read-ahead step of a partition read sequentially from disk (0: off; see
    /// docs/log.md, "Reads").
    pub read_ahead_bytes: usize,
    /// `offsets.topic.num.partitions`: partitions of `__consumer_offsets`.
    pub offsets_topic_num_partitions: i32,
    /// `transaction.state.log.num.partitions`: partitions of `__transaction_state`.
    pub transaction_state_num_partitions: i32,
    /// `offsets.topic.replication.factor`: replicas of `__consumer_offsets` when a
    /// cluster creates it (a single node creates it with one).
    pub offsets_topic_replication_factor: i16,
    /// `transaction.state.log.replication.factor`: replicas of `__transaction_state`
    /// when a cluster creates it (a single node creates it with one).
    pub transaction_state_log_replication_factor: i16,
    /// `transaction.state.log.min.isr`: the `min.insync.replicas` `__transaction_state`
    /// is created with (capped at its replication factor).
    pub transaction_state_log_min_isr: i32,
    /// `share.coordinator.state.topic.num.partitions`: partitions of `__share_group_state`.
    pub share_coordinator_state_topic_num_partitions: i32,
    /// `share.coordinator.state.topic.replication.factor`: replicas of
    /// `__share_group_state` when a cluster creates it (a single node creates it with one).
    pub share_coordinator_state_topic_replication_factor: i16,
    /// `share.coordinator.state.topic.min.isr`: its `min.insync.replicas` (capped at its
    /// replication factor).
    pub share_coordinator_state_topic_min_isr: i32,
    /// `share.coordinator.state.topic.segment.bytes`: its `segment.bytes`.
    pub share_coordinator_state_topic_segment_bytes: i32,
    /// `share.coordinator.snapshot.update.records.per.snapshot`: ShareUpdate records of a
    /// share-partition between two of its ShareSnapshot records.
    pub share_coordinator_snapshot_update_records_per_snapshot: u32,
    /// `share.coordinator.write.timeout.ms`: how long a write waits for the ISR.
    pub share_coordinator_write_timeout_ms: u64,
    /// `share.coordinator.state.topic.prune.interval.ms`: how often records no state
    /// needs any more are deleted.
    pub share_coordinator_state_topic_prune_interval_ms: u64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`: how often
    /// transactions past their timeout are looked for (and aborted).
    pub transaction_abort_timed_out_check_interval_ms: u64,
    /// `transactional.id.expiration.ms`: a transactional id idle this long (no
    /// transaction, no InitProducerId) is forgotten.
    pub transactional_id_expiration_ms: i64,
    /// `offset.metadata.max.bytes`: longest metadata string of a committed offset.
    pub offset_metadata_max_bytes: usize,
    /// `group.initial.rebalance.delay.ms`: how long a new group waits for more members.
    pub group_initial_rebalance_delay_ms: u64,
    /// `group.min.session.timeout.ms` / `group.max.session.timeout.ms`.
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    /// `group.max.size`: members a classic group may have.
    pub group_max_size: usize,
    /// `group.share.max.share.sessions`: share sessions (KIP-932) the broker keeps;
    /// a ShareFetch opening one more is refused with SHARE_SESSION_LIMIT_REACHED.
    pub group_share_max_share_sessions: usize,
    /// `group.consumer.session.timeout.ms`: a consumer-group (KIP-848) member that does
    /// not heartbeat for this long is removed.
    pub group_consumer_session_timeout_ms: i32,
    /// `group.consumer.min/max.session.timeout.ms`: the range a group's own
    /// `consumer.session.timeout.ms` may take (and the broker default must lie in).
    pub group_consumer_min_session_timeout_ms: i32,
    pub group_consumer_max_session_timeout_ms: i32,
    /// `group.consumer.heartbeat.interval.ms`: the interval consumer-group members are
    /// told to heartbeat at.
    pub group_consumer_heartbeat_interval_ms: i32,
    /// `group.consumer.min/max.heartbeat.interval.ms`: likewise for the heartbeat interval.
    pub group_consumer_min_heartbeat_interval_ms: i32,
    pub group_consumer_max_heartbeat_interval_ms: i32,
    /// `group.consumer.max.size`: members a consumer group may have.
    pub group_consumer_max_size: usize,
    /// `group.consumer.assignors`: the server-side assignors, the first the default.
    pub group_consumer_assignors: Vec<String>,
    /// `group.consumer.migration.policy`: which online conversions between classic and
    /// consumer groups are allowed (`disabled`, `upgrade`, `downgrade`, `bidirectional`).
    pub group_consumer_migration_policy: String,
    /// `group.share.session.timeout.ms`: a share-group (KIP-932) member that does not
    /// heartbeat for this long is removed; `group.share.min/max.session.timeout.ms` the
    /// range of it and of a group's own `share.session.timeout.ms`.
    pub group_share_session_timeout_ms: i32,
    pub group_share_min_session_timeout_ms: i32,
    pub group_share_max_session_timeout_ms: i32,
    /// `group.share.heartbeat.interval.ms` and its range (`share.heartbeat.interval.ms`).
    pub group_share_heartbeat_interval_ms: i32,
    pub group_share_min_heartbeat_interval_ms: i32,
    pub group_share_max_heartbeat_interval_ms: i32,
    /// `group.share.max.size`: members a share group may have.
    pub group_share_max_size: usize,
    /// `group.share.record.lock.duration.ms` and its range (`share.record.lock.duration.ms`).
    pub group_share_record_lock_duration_ms: i32,
    pub group_share_min_record_lock_duration_ms: i32,
    pub group_share_max_record_lock_duration_ms: i32,
    /// `group.share.delivery.count.limit` and its range (`share.delivery.count.limit`).
    pub group_share_delivery_count_limit: i32,
    pub group_share_min_delivery_count_limit: i32,
    pub group_share_max_delivery_count_limit: i32,
    /// `group.share.partition.max.record.locks` and its range
    /// (`share.partition.max.record.locks`).
    pub group_share_partition_max_record_locks: i32,
    pub group_share_min_partition_max_record_locks: i32,
    pub group_share_max_partition_max_record_locks: i32,
    /// `group.share.initialize.retry.interval.ms`: how long a share-partition's state
    /// initialization may be pending before the coordinator asks again.
    pub group_share_initialize_retry_interval_ms: i64,
    /// How often retention is enforced (`log.retention.check.interval.ms`).
    pub log_retention_check_interval_ms: u64,
    /// The log cleaner (Kafka's `log.cleaner.*` broker settings).
    pub log_cleaner: LogCleanerConfig,
    /// Broker-wide defaults for topic configs (Kafka's `log.*` broker settings).
    pub topic_defaults: TopicDefaults,
}

/// The log cleaner, which compacts topics with `cleanup.policy=compact`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogCleanerConfig {
    /// `log.cleaner.enable`.
    pub enable: bool,
    /// `log.cleaner.threads`: cleaner threads (not pinned, lower CPU priority).
    pub threads: usize,
    /// `log.cleaner.dedupe.buffer.size`: memory of the key maps of all threads together.
    pub dedupe_buffer_size: usize,
    /// `log.cleaner.io.buffer.size`: bytes read at a time.
    pub io_buffer_size: usize,
    /// `log.cleaner.io.buffer.load.factor`: how full a key map may get.
    pub io_buffer_load_factor: f64,
    /// `log.cleaner.io.max.bytes.per.second`: bytes all threads read and write per
    /// second, together.
    pub io_max_bytes_per_second: f64,
    /// `log.cleaner.backoff.ms`: how often shards look for partitions to clean.
    pub backoff_ms: u64,
}

impl LogCleanerConfig {
    /// The settings' own rules, checked at start and for dynamic changes.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.threads == 0 {
            bail!("log_cleaner.threads must be at least 1");
        }
        // Kafka's minimum: each thread's map needs room for keys.
        if self.dedupe_buffer_size < self.threads * 1024 * 1024 {
            bail!("log_cleaner.dedupe_buffer_size must be at least 1 MiB per cleaner thread");
        }
        if !(0.1..=0.9).contains(&self.io_buffer_load_factor) {
            bail!("log_cleaner.io_buffer_load_factor must be between 0.1 and 0.9");
        }
        if self.io_max_bytes_per_second <= 0.0 {
            bail!("log_cleaner.io_max_bytes_per_second must be positive");
        }
        Ok(())
    }
}

/// Broker-level defaults behind the topic configs of the same meaning.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicDefaults {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub segment_bytes: i64,
    pub segment_ms: i64,
    pub max_message_bytes: i64,
    pub flush_messages: i64,
    pub flush_ms: i64,
    pub index_interval_bytes: i64,
    pub message_timestamp_type: String,
    pub timestamp_after_max_ms: i64,
    pub timestamp_before_max_ms: i64,
    /// `log.cleanup.policy`.
    pub cleanup_policy: String,
    /// `log.cleaner.min.cleanable.ratio`.
    pub min_cleanable_dirty_ratio: f64,
    /// `log.cleaner.delete.retention.ms`.
    pub delete_retention_ms: i64,
    /// `log.cleaner.min.compaction.lag.ms`.
    pub min_compaction_lag_ms: i64,
    /// `log.cleaner.max.compaction.lag.ms`.
    pub max_compaction_lag_ms: i64,
    /// `unclean.leader.election.enable`.
    pub unclean_leader_election_enable: bool,
}

/// Kafka's rack-aware replica selector (KIP-392), the one `replica_selector_class`
/// accepts.
pub const RACK_AWARE_REPLICA_SELECTOR: &str =
    "org.apache.kafka.common.replica.RackAwareReplicaSelector";

impl BrokerConfig {
    /// Whether consumers may be sent to a replica in their rack (KIP-392).
    pub fn rack_aware_replica_selector(&self) -> bool {
        self.replica_selector_class.is_some()
    }

    /// The embedded default alone: what every setting is when nothing overrides it.
    /// `load` parses the same text first, so a broker that started has a valid one.
    pub fn embedded_default() -> &'static BrokerConfig {
        static EMBEDDED: std::sync::OnceLock<BrokerConfig> = std::sync::OnceLock::new();
        EMBEDDED.get_or_init(|| {
            toml::from_str(DEFAULT_CONFIG).expect("the embedded default config is valid")
        })
    }

    /// Build the configuration from the embedded default, the file, env and flags.
    pub fn load(cli: &Cli) -> anyhow::Result<BrokerConfig> {
        let mut table: toml::Table =
            toml::from_str(DEFAULT_CONFIG).context("embedded default config")?;
        if let Some(path) = &cli.config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            let file: toml::Table =
                toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
            merge(&mut table, file);
        }
        let mut config: BrokerConfig = toml::Value::Table(table)
            .try_into()
            .context("invalid configuration")?;
        if let Some(d) = &cli.data_dir {
            config.data_dir = d.clone();
            config.log_dirs.clear();
        }
        if let Some(dirs) = &cli.log_dirs {
            config.log_dirs = dirs.clone();
        }
        // `log_dirs` wins over `data_dir` (as Kafka's `log.dirs` over `log.dir`).
        match config.log_dirs.first() {
            Some(first) => config.data_dir = first.clone(),
            None => config.log_dirs = vec![config.data_dir.clone()],
        }
        if let Some(l) = &cli.listen {
            // The flag means one PLAINTEXT listener, whatever the file lists.
            config.listen = l.clone();
            config.listeners = None;
            config.advertised_listeners = None;
            config.listener_security_protocol_map = None;
            config.inter_broker_listener_name = None;
        }
        if let Some(a) = &cli.advertised_listener {
            config.advertised_listener = Some(a.clone());
        }
        if let Some(c) = cli.cores {
            config.cores = c;
            config.cpu_list.clear();
        }
        if let Some(h) = &cli.http {
            config.http_listen = Some(h.clone());
        }
        if let Some(r) = &cli.schema_registry {
            config.schema_registry = Some(r.clone());
        }
        if let Some(list) = &cli.cpu_list {
            config.cpu_list = parse_cpu_list(list)?;
        }
        if let Some(id) = cli.node_id {
            config.node_id = id;
        }
        if let Some(l) = &cli.controller_listen {
            config.controller_listen = Some(l.clone());
        }
        if let Some(v) = &cli.controller_quorum_voters {
            config.controller_quorum_voters = Some(v.clone());
        }
        if let Some(r) = &cli.process_roles {
            config.process_roles = r.clone();
        }
        config.validate()?;
        Ok(config)
    }

    pub fn is_broker(&self) -> bool {
        self.process_roles.contains(&ProcessRole::Broker)
    }

    pub fn is_controller(&self) -> bool {
        self.process_roles.contains(&ProcessRole::Controller)
    }

    /// The configured voters (`None`: this node alone).
    pub fn voters(&self) -> anyhow::Result<Option<BTreeMap<u64, String>>> {
        match &self.controller_quorum_voters {
            None => Ok(None),
            Some(v) => Ok(Some(
                spate_replication::parse_voters(v).context("controller_quorum_voters")?,
            )),
        }
    }

    /// The cluster settings (`node_id`, roles, voters, controller listener) fit together.
    fn validate_cluster(&self) -> anyhow::Result<()> {
        if self.node_id < 0 {
            bail!("node_id must not be negative");
        }
        let mut roles = self.process_roles.clone();
        roles.sort_by_key(|r| *r as u8);
        roles.dedup();
        if roles.is_empty() || roles.len() != self.process_roles.len() {
            bail!("process_roles must name broker, controller or both, each once");
        }
        let id = self.node_id as u64;
        match self.voters()? {
            Some(voters) => {
                if ![1, 3, 5].contains(&voters.len()) {
                    bail!(
                        "controller_quorum_voters: {} voters; a quorum has 1, 3 or 5",
                        voters.len()
                    );
                }
                if self.is_controller() && !voters.contains_key(&id) {
                    bail!("node {id} is a controller but not in controller_quorum_voters");
                }
                if !self.is_controller() && voters.contains_key(&id) {
                    bail!("node {id} is in controller_quorum_voters: its process_roles must include controller");
                }
            }
            None if !self.is_controller() => {
                bail!("a node without the controller role needs controller_quorum_voters to reach the quorum")
            }
            None => {}
        }
        if self.controller_listen.is_some() && !self.is_controller() {
            bail!("controller_listen is set but process_roles has no controller");
        }
        if self.controller_security_protocol == ControllerSecurityProtocol::Ssl
            && (self.ssl.keystore_location.is_none() || self.ssl.truststore_location.is_none())
        {
            bail!("controller_security_protocol = \"SSL\" needs ssl.keystore_location (this node's certificate) and ssl.truststore_location (the CAs its peers' certificates chain to)");
        }
        if self.broker_heartbeat_interval_ms == 0
            || self.broker_heartbeat_interval_ms * 2 > self.broker_session_timeout_ms
        {
            bail!("broker_heartbeat_interval_ms must be positive and at most half of broker_session_timeout_ms");
        }
        // Kafka's minimum of leader.imbalance.check.interval.seconds.
        if self.leader_imbalance_check_interval_seconds == 0 {
            bail!("leader_imbalance_check_interval_seconds must be at least 1");
        }
        Ok(())
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.validate_cluster()?;
        for (i, a) in self.log_dirs.iter().enumerate() {
            if a.as_os_str().is_empty() {
                bail!("log_dirs: an empty directory name");
            }
            if let Some(b) = self.log_dirs[i + 1..]
                .iter()
                .find(|b| a.starts_with(b) || b.starts_with(a))
            {
                bail!(
                    "log_dirs: {} and {} are the same directory or one holds the other",
                    a.display(),
                    b.display()
                );
            }
        }
        if self.num_partitions < 1 {
            bail!("num_partitions must be at least 1");
        }
        if self.socket_request_max_bytes < 1024 {
            bail!("socket_request_max_bytes must be at least 1024");
        }
        if self.offsets_topic_num_partitions < 1 {
            bail!("offsets_topic_num_partitions must be at least 1");
        }
        if self.transaction_state_num_partitions < 1 {
            bail!("transaction_state_num_partitions must be at least 1");
        }
        if self.offsets_topic_replication_factor < 1
            || self.transaction_state_log_replication_factor < 1
        {
            bail!("offsets_topic_replication_factor and transaction_state_log_replication_factor must be at least 1");
        }
        if self.transaction_state_log_min_isr < 1 {
            bail!("transaction_state_log_min_isr must be at least 1");
        }
        if self.share_coordinator_state_topic_num_partitions < 1
            || self.share_coordinator_state_topic_replication_factor < 1
            || self.share_coordinator_state_topic_min_isr < 1
        {
            bail!("share_coordinator_state_topic_num_partitions, share_coordinator_state_topic_replication_factor and share_coordinator_state_topic_min_isr must be at least 1");
        }
        if self.share_coordinator_state_topic_segment_bytes < 1 << 20 {
            bail!("share_coordinator_state_topic_segment_bytes must be at least 1048576");
        }
        if self.share_coordinator_write_timeout_ms < 1
            || self.share_coordinator_state_topic_prune_interval_ms < 1
        {
            bail!("share_coordinator_write_timeout_ms and share_coordinator_state_topic_prune_interval_ms must be at least 1");
        }
        if self.group_min_session_timeout_ms > self.group_max_session_timeout_ms {
            bail!("group_min_session_timeout_ms is above group_max_session_timeout_ms");
        }
        if self.group_consumer_session_timeout_ms < 1
            || self.group_consumer_heartbeat_interval_ms < 1
        {
            bail!("group_consumer_session_timeout_ms and group_consumer_heartbeat_interval_ms must be positive");
        }
        if !(self.group_consumer_min_session_timeout_ms
            ..=self.group_consumer_max_session_timeout_ms)
            .contains(&self.group_consumer_session_timeout_ms)
        {
            bail!("group_consumer_session_timeout_ms must lie within group_consumer_min_session_timeout_ms and group_consumer_max_session_timeout_ms");
        }
        if !(self.group_consumer_min_heartbeat_interval_ms
            ..=self.group_consumer_max_heartbeat_interval_ms)
            .contains(&self.group_consumer_heartbeat_interval_ms)
        {
            bail!("group_consumer_heartbeat_interval_ms must lie within group_consumer_min_heartbeat_interval_ms and group_consumer_max_heartbeat_interval_ms");
        }
        if self.group_consumer_heartbeat_interval_ms >= self.group_consumer_session_timeout_ms {
            bail!("group_consumer_heartbeat_interval_ms must be below group_consumer_session_timeout_ms");
        }
        if self.group_share_max_share_sessions < 1 {
            bail!("group_share_max_share_sessions must be at least 1");
        }
        if self.group_consumer_max_size < 1 {
            bail!("group_consumer_max_size must be at least 1");
        }
        if self.group_consumer_assignors.is_empty() {
            bail!("group_consumer_assignors must name at least one assignor");
        }
        for a in &self.group_consumer_assignors {
            if crate::group::consumer::assignor::Assignor::by_name(a).is_none() {
                bail!("group_consumer_assignors: unknown assignor {a:?} (uniform, range)");
            }
        }
        if crate::group::consumer::MigrationPolicy::parse(&self.group_consumer_migration_policy)
            .is_none()
        {
            bail!("group_consumer_migration_policy must be disabled, upgrade, downgrade or bidirectional");
        }
        self.validate_share_groups()?;
        if self.queued_max_request_bytes < 1024 {
            bail!("queued_max_request_bytes must be at least 1024");
        }
        if self.fetch_max_bytes < 1024 {
            bail!("fetch_max_bytes must be at least 1024");
        }
        if let Some(class) = &self.replica_selector_class {
            if class != RACK_AWARE_REPLICA_SELECTOR {
                bail!("replica_selector_class: only {RACK_AWARE_REPLICA_SELECTOR} is supported, not {class}");
            }
        }
        if self.replica_lag_time_max_ms == 0 {
            bail!("replica_lag_time_max_ms must be positive");
        }
        if self.replica_fetch_max_bytes < 1024 || self.replica_fetch_response_max_bytes < 1024 {
            bail!("replica_fetch_max_bytes and replica_fetch_response_max_bytes must be at least 1024");
        }
        if self.replica_fetch_wait_max_ms >= self.replica_lag_time_max_ms {
            // Kafka's rule: a follower waiting that long at its leader would look lagging.
            bail!("replica_fetch_wait_max_ms must be below replica_lag_time_max_ms");
        }
        if self.max_connections == 0 {
            bail!("max_connections must be at least 1");
        }
        if self.max_in_flight_per_connection == 0 {
            bail!("max_in_flight_per_connection must be at least 1");
        }
        self.log_cleaner.validate()?;
        let d = &self.topic_defaults;
        crate::topic_config::validate("cleanup.policy", &d.cleanup_policy)
            .map_err(|e| anyhow::anyhow!("topic_defaults.cleanup_policy: {e}"))?;
        if !(0.0..=1.0).contains(&d.min_cleanable_dirty_ratio) {
            bail!("topic_defaults.min_cleanable_dirty_ratio must be between 0 and 1");
        }
        self.listener_specs()?;
        self.sasl.validate()?;
        self.authorizer.validate()?;
        Ok(())
    }

    /// The listeners to bind (security/listeners.rs).
    pub fn listener_specs(&self) -> anyhow::Result<Vec<crate::security::listeners::ListenerSpec>> {
        crate::security::listeners::resolve(&crate::security::listeners::ListenerSettings {
            listen: &self.listen,
            advertised_listener: self.advertised_listener.as_deref(),
            listeners: self.listeners.as_deref(),
            advertised_listeners: self.advertised_listeners.as_deref(),
            protocol_map: self.listener_security_protocol_map.as_deref(),
        })
    }
}

/// Parse "0,2,4-7" into a sorted, de-duplicated CPU list.
pub fn parse_cpu_list(text: &str) -> anyhow::Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse()?, b.trim().parse()?);
                if b < a || b - a > 4096 {
                    bail!("bad CPU range {part}");
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().with_context(|| format!("bad CPU {part}"))?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    if cpus.is_empty() {
        bail!("empty CPU list");
    }
    Ok(cpus)
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

impl BrokerConfig {
    /// The `group.share.*` settings: each default within its range, the heartbeat below
    /// the session timeout, as Kafka's `GroupCoordinatorConfig` and `ShareGroupConfig`
    /// require.
    fn validate_share_groups(&self) -> anyhow::Result<()> {
        let ranges = [
            (
                "group_share_session_timeout_ms",
                self.group_share_min_session_timeout_ms,
                self.group_share_session_timeout_ms,
                self.group_share_max_session_timeout_ms,
            ),
            (
                "group_share_heartbeat_interval_ms",
                self.group_share_min_heartbeat_interval_ms,
                self.group_share_heartbeat_interval_ms,
                self.group_share_max_heartbeat_interval_ms,
            ),
            (
                "group_share_record_lock_duration_ms",
                self.group_share_min_record_lock_duration_ms,
                self.group_share_record_lock_duration_ms,
                self.group_share_max_record_lock_duration_ms,
            ),
            (
                "group_share_delivery_count_limit",
                self.group_share_min_delivery_count_limit,
                self.group_share_delivery_count_limit,
                self.group_share_max_delivery_count_limit,
            ),
            (
                "group_share_partition_max_record_locks",
                self.group_share_min_partition_max_record_locks,
                self.group_share_partition_max_record_locks,
                self.group_share_max_partition_max_record_locks,
            ),
        ];
        for (name, min, value, max) in ranges {
            if min < 1 || !(min..=max).contains(&value) {
                anyhow::bail!("{name} must be positive and lie within its min and max settings");
            }
        }
        if self.group_share_heartbeat_interval_ms >= self.group_share_session_timeout_ms {
            anyhow::bail!(
                "group_share_heartbeat_interval_ms must be below group_share_session_timeout_ms"
            );
        }
        if self.group_share_max_size < 1 {
            anyhow::bail!("group_share_max_size must be at least 1");
        }
        if self.group_share_initialize_retry_interval_ms < 1 {
            anyhow::bail!("group_share_initialize_retry_interval_ms must be positive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_reference_reproduces_the_embedded_default() {
        let doc = include_str!("../../docs/configuration.md");
        assert!(
            doc.contains(&format!("```toml\n{DEFAULT_CONFIG}```")),
            "docs/configuration.md, \"The embedded default\", must be node/src/default.toml verbatim"
        );
    }

    #[test]
    fn embedded_default_loads() {
        let c = BrokerConfig::load(&Cli::default()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9092");
        assert_eq!(c.topic_defaults.retention_ms, 604_800_000);
        assert_eq!(c.topic_defaults.max_message_bytes, 1_048_588);
        assert_eq!(c.fetch_max_bytes, 57_671_680);
        assert_eq!(c.queued_max_request_bytes, 512 << 20);
        assert_eq!(c.connections_max_idle_ms, 600_000);
        assert_eq!(c.max_connections, 10_000);
    }

    #[test]
    fn flags_override_file() {
        let dir = std::env::temp_dir().join(format!("spate-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "num_partitions = 3\nlisten = \"127.0.0.1:1\"\n[topic_defaults]\nsegment_bytes = 1024\n").unwrap();
        let cli = Cli {
            config: Some(file),
            listen: Some("127.0.0.1:2".into()),
            ..Cli::default()
        };
        let c = BrokerConfig::load(&cli).unwrap();
        assert_eq!(c.num_partitions, 3);
        assert_eq!(c.listen, "127.0.0.1:2");
        assert_eq!(c.topic_defaults.segment_bytes, 1024);
        assert_eq!(c.topic_defaults.retention_ms, 604_800_000);
    }

    #[test]
    fn log_dirs_win_over_data_dir() {
        let dir = std::env::temp_dir().join(format!("spate-cfg-dirs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "data_dir = \"/d\"\nlog_dirs = [\"/a\", \"/b\"]\n").unwrap();
        let with = |cli: Cli| {
            BrokerConfig::load(&Cli {
                config: Some(file.clone()),
                ..cli
            })
        };
        // The file's log_dirs win over its data_dir; the first holds the metadata.
        let c = with(Cli::default()).unwrap();
        assert_eq!(c.log_dirs, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(c.data_dir, PathBuf::from("/a"));
        // A --data-dir flag wins over the file: one directory.
        let c = with(Cli {
            data_dir: Some("/x".into()),
            ..Cli::default()
        })
        .unwrap();
        assert_eq!(c.log_dirs, vec![PathBuf::from("/x")]);
        assert_eq!(c.data_dir, PathBuf::from("/x"));
        // --log-dirs wins over everything.
        let c = with(Cli {
            data_dir: Some("/x".into()),
            log_dirs: Some(vec!["/y".into(), "/z".into()]),
            ..Cli::default()
        })
        .unwrap();
        assert_eq!(c.log_dirs, vec![PathBuf::from("/y"), PathBuf::from("/z")]);
        assert_eq!(c.data_dir, PathBuf::from("/y"));
        // Nothing set: data_dir alone.
        let c = BrokerConfig::load(&Cli::default()).unwrap();
        assert_eq!(c.log_dirs, vec![c.data_dir.clone()]);
        // The same directory twice, or one inside another, is refused.
        for bad in [vec!["/a", "/a"], vec!["/a", "/a/b"], vec!["/a/b", "/a"]] {
            let cli = Cli {
                log_dirs: Some(bad.iter().map(PathBuf::from).collect()),
                ..Cli::default()
            };
            assert!(BrokerConfig::load(&cli).is_err(), "{bad:?}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// docs/configuration.md must describe every key of the embedded default.
    #[test]
    fn every_key_is_documented() {
        let doc = include_str!("../../docs/configuration.md");
        let table: toml::Table = toml::from_str(DEFAULT_CONFIG).unwrap();
        for (key, value) in &table {
            let keys: Vec<String> = match value {
                toml::Value::Table(t) => t.keys().cloned().collect(),
                _ => vec![key.clone()],
            };
            for k in keys {
                assert!(
                    doc.contains(&format!("`{k}`")),
                    "docs/configuration.md does not describe `{k}`"
                );
            }
        }
    }

    #[test]
    fn cluster_settings() {
        let load = |cli: Cli| BrokerConfig::load(&cli);
        // The default: both roles, this node alone.
        let c = load(Cli::default()).unwrap();
        assert!(c.is_broker() && c.is_controller());
        assert_eq!(c.voters().unwrap(), None);
        let voters = "0@127.0.0.1:9093,1@127.0.0.1:9094,2@127.0.0.1:9095";
        let c = load(Cli {
            node_id: Some(2),
            controller_quorum_voters: Some(voters.into()),
            controller_listen: Some("0.0.0.0:9095".into()),
            ..Cli::default()
        })
        .unwrap();
        assert_eq!(c.voters().unwrap().unwrap()[&2], "127.0.0.1:9095");
        assert_eq!(c.controller_listen.as_deref(), Some("0.0.0.0:9095"));
        // A broker-only node outside the voters.
        let c = load(Cli {
            node_id: Some(7),
            controller_quorum_voters: Some(voters.into()),
            process_roles: Some(vec![ProcessRole::Broker]),
            ..Cli::default()
        })
        .unwrap();
        assert!(c.is_broker() && !c.is_controller());
        let refused = [
            // A controller outside the voters, a broker inside them.
            Cli {
                node_id: Some(7),
                controller_quorum_voters: Some(voters.into()),
                ..Cli::default()
            },
            Cli {
                node_id: Some(1),
                controller_quorum_voters: Some(voters.into()),
                process_roles: Some(vec![ProcessRole::Broker]),
                ..Cli::default()
            },
            // A broker-only node with no quorum to reach; an even quorum.
            Cli {
                process_roles: Some(vec![ProcessRole::Broker]),
                ..Cli::default()
            },
            Cli {
                controller_quorum_voters: Some("0@h:1,1@h:2".into()),
                ..Cli::default()
            },
            // Roles twice, a negative id, a controller listener without the role.
            Cli {
                process_roles: Some(vec![ProcessRole::Broker, ProcessRole::Broker]),
                ..Cli::default()
            },
            Cli {
                node_id: Some(-1),
                ..Cli::default()
            },
            Cli {
                node_id: Some(7),
                controller_quorum_voters: Some(voters.into()),
                process_roles: Some(vec![ProcessRole::Broker]),
                controller_listen: Some("127.0.0.1:1".into()),
                ..Cli::default()
            },
        ];
        for cli in refused {
            let shown = format!("{cli:?}");
            assert!(load(cli).is_err(), "{shown}");
        }
    }

    #[test]
    fn controller_security_protocol() {
        let dir = std::env::temp_dir().join(format!("spate-cfg-ctls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let load = |text: &str| {
            let file = dir.join("c.toml");
            std::fs::write(&file, text).unwrap();
            BrokerConfig::load(&Cli {
                config: Some(file),
                ..Cli::default()
            })
        };
        let c = load("").unwrap();
        assert_eq!(
            c.controller_security_protocol,
            ControllerSecurityProtocol::Plaintext
        );
        let files = "[ssl]\nkeystore_location = \"/k.pem\"\ntruststore_location = \"/ca.pem\"\n";
        let c = load(&format!("controller_security_protocol = \"SSL\"\n{files}")).unwrap();
        assert_eq!(
            c.controller_security_protocol,
            ControllerSecurityProtocol::Ssl
        );
        // SSL without a keystore or a truststore; SASL, which is not supported.
        for bad in [
            "controller_security_protocol = \"SSL\"\n[ssl]\nkeystore_location = \"/k.pem\"\n",
            "controller_security_protocol = \"SSL\"\n[ssl]\ntruststore_location = \"/ca.pem\"\n",
            &format!("controller_security_protocol = \"SASL_SSL\"\n{files}"),
        ] {
            let e = format!("{:#}", load(bad).expect_err(bad));
            assert!(
                e.contains("controller_security_protocol") || e.contains("SASL_SSL"),
                "{bad}: {e}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("3,0-2,2").unwrap(), vec![0, 1, 2, 3]);
        assert!(parse_cpu_list("5-1").is_err());
        assert!(parse_cpu_list("").is_err());
    }
}
