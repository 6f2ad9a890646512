//! `spate`: the broker process. Loads the config, replays the metadata log, binds one
//! SO_REUSEPORT listener per shard, starts the pinned shard threads, and shuts them
//! down cleanly on SIGTERM or SIGINT.

mod broker_config;
mod budget;
mod cleaner;
mod config;
mod conn;
mod controller;
mod coordinators;
mod delete_dirs;
mod fault;
mod forwarding;
mod future_dirs;
mod group;
mod handlers;
mod interbroker;
mod internal_topics;
mod listener_set;
mod log_dirs;
mod log_levels;
mod log_move;
mod mesh;
mod metadata;
mod metrics;
mod partition;
mod producer_state;
mod quota;
mod random_id;
mod registration;
mod replica;
mod route;
mod schema_registry;
mod security;
mod shard;
mod share;
mod topic_config;
mod transport;
mod txn;

use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;

use config::{BrokerConfig, Cli};

fn main() {
    log_levels::init();
    // Before any other thread starts: a panic anywhere aborts the broker.
    fault::install_panic_hook();
    let cli = Cli::parse();
    if let Err(e) = block_stop_signals() {
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
    if let Err(e) = run(&cli) {
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let config = Arc::new(BrokerConfig::load(cli)?);
    // Creates and locks every log dir; the first (data_dir) holds the metadata log.
    let log_dirs = Arc::new(log_dirs::LogDirs::open(&config.log_dirs)?);
    let start_high_watermarks = Arc::new(
        replica::hw_checkpoint::StartHighWatermarks::read_and_remove(&log_dirs.healthy_paths()),
    );
    // The controller quorum, and the metadata as committed when it is caught up.
    let booted = metadata::boot::start(&config)?;
    if !config.is_broker() {
        return run_controller_only(booted);
    }
    let image = Arc::new(booted.image);
    let cpus = shard_cpus(&config)?;
    let shard_count = cpus.len();
    // Every shard accepts on every listener: sockets[s] holds shard s's, one per listener.
    // The listeners are this broker's dynamic ones when set (as Kafka starts with them);
    // only the config file's are registered (KRaft brokers register theirs once).
    let registered: Vec<String> = config
        .listener_specs()?
        .into_iter()
        .map(|s| s.name)
        .collect();
    let live = broker_config::live::effective(&config, &image.broker_configs, config.node_id);
    let specs = live
        .listener_specs()
        .context("the listeners of this broker's dynamic configs")?;
    let mut sockets: Vec<Vec<std::net::TcpListener>> =
        (0..shard_count).map(|_| Vec::new()).collect();
    let mut bound = Vec::with_capacity(specs.len());
    for spec in &specs {
        let per_shard = listener_set::bind(spec.bind, shard_count)?;
        bound.push(per_shard[0].local_addr().context("listener address")?);
        for (s, l) in per_shard.into_iter().enumerate() {
            sockets[s].push(l);
        }
    }
    let listeners = security::build_listeners(&live, &specs, &bound, &registered, &[])?;
    let inter_broker = Arc::new(interbroker::InterBrokerLink::new(&config, &listeners)?);
    let client = spate_replication::AppClient::start(
        booted.voters.clone(),
        64 << 20,
        std::time::Duration::from_millis(config.broker_session_timeout_ms),
        booted.security.clone(),
    )
    .context("starting the controller client")?;
    let forwarder = spate_replication::AppClient::start(
        booted.voters.clone(),
        64 << 20,
        std::time::Duration::from_millis(config.broker_session_timeout_ms),
        booted.security.clone(),
    )
    .context("starting the client for forwarded changes")?;
    let (unfenced_tx, unfenced_rx) = std::sync::mpsc::sync_channel(1);
    let (registration_stop, stop_rx) = flume::bounded::<flume::Sender<()>>(1);
    let published_offset = Arc::new(metadata::publish::PublishedOffset::default());
    let metrics_quorum = booted.quorum.clone();
    let mut controller = Some(controller::ControllerStart {
        client,
        forwarder,
        endpoints: security::registered_endpoints(&listeners),
        unfenced: unfenced_tx,
        stop: stop_rx,
        quorum: booted.quorum,
        log_dirs: log_dirs.clone(),
        committed: booted.committed,
        image: image.clone(),
        published_offset: published_offset.clone(),
    });

    let mesh = mesh::build_mesh(shard_count);
    // The main thread talks to shard s over s's own channel.
    let control: Vec<flume::Sender<mesh::ShardMsg>> = mesh
        .iter()
        .enumerate()
        .map(|(s, l)| l.senders[s].clone())
        .collect();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut threads = Vec::with_capacity(shard_count);
    // Broker-wide limits, shared by every shard (see budget.rs).
    let request_memory = budget::RequestMemory::new(config.queued_max_request_bytes);
    let connection_limit = budget::ConnectionLimit::new(config.max_connections);
    let replication_quotas = Arc::new(replica::quota::ReplicationQuotas::default());
    let quota_sensors = Arc::new(quota::QuotaSensors::default());
    let share_session_count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let cleaner = cleaner::Cleaner::start(&config.log_cleaner)?;
    // The registry's ids as the shards' schema validation reads them.
    let schemas = Arc::new(schema_registry::SchemaIndex::default());
    for (id, (links, sockets)) in mesh.into_iter().zip(sockets).enumerate() {
        let start = shard::ShardStart {
            id,
            cpu: cpus[id],
            shard_count,
            config: config.clone(),
            image: image.clone(),
            links,
            listeners: listeners.iter().cloned().zip(sockets).collect(),
            inter_broker: inter_broker.clone(),
            request_memory: request_memory.clone(),
            connection_limit: connection_limit.clone(),
            replication_quotas: replication_quotas.clone(),
            quota_sensors: quota_sensors.clone(),
            share_session_count: share_session_count.clone(),
            cleaner: cleaner.clone(),
            schemas: schemas.clone(),
            log_dirs: log_dirs.clone(),
            start_high_watermarks: start_high_watermarks.clone(),
            controller: if id == 0 { controller.take() } else { None },
            ready: ready_tx.clone(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("spate-shard-{id}"))
            .spawn(move || shard::run(start))
            .context("spawning shard thread")?;
        threads.push(handle);
    }
    drop(ready_tx);
    for _ in 0..shard_count {
        match ready_rx.recv() {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => bail!("a shard exited during start-up"),
        }
    }
    // As Kafka's broker: serving for real once the controller registered and unfenced
    // it (a partition can only be placed on a live broker).
    let registration_timeout =
        std::time::Duration::from_millis(config.initial_broker_registration_timeout_ms);
    if unfenced_rx.recv_timeout(registration_timeout).is_err() {
        bail!(
            "not registered and unfenced by the active controller within {} ms \
             (initial_broker_registration_timeout_ms); is a majority of \
             controller_quorum_voters up?",
            config.initial_broker_registration_timeout_ms
        );
    }
    // Any broker may create them: a node that is not the active controller forwards.
    ensure_offsets_topic(&config, &image, &control[0])?;
    ensure_transaction_state_topic(&config, &image, &control[0])?;
    let registry = match &config.schema_registry {
        Some(addr) => {
            ensure_schemas_topic(&image, &control[0])?;
            let registry = schema_registry::Registry::load(control[0].clone(), schemas.clone())?;
            let bound = schema_registry::serve(addr, registry.clone())?;
            tracing::info!(schema_registry = %bound, "schema registry serving");
            Some(registry)
        }
        None => None,
    };
    if let Some(addr) = &config.http_listen {
        let extra: metrics::ExtraMetrics = {
            let schemas = schemas.clone();
            let node_id = config.node_id;
            Arc::new(move || {
                schema_registry::render_metrics(&schemas, registry.as_deref())
                    + &metrics::metadata::render(
                        metrics_quorum.as_deref(),
                        &published_offset,
                        node_id,
                    )
            })
        };
        let bound = metrics::serve_http(addr, control.clone(), extra)?;
        tracing::info!(http = %bound, "metrics at /metrics, probes at /health and /ready");
    }
    tracing::info!(
        // The first listener's bound address (tests read it from this line).
        listen = %bound[0],
        listeners = %listeners.iter().map(|l| format!("{}://{}", l.name, l.bind)).collect::<Vec<_>>().join(","),
        protocols = %listeners.iter().map(|l| format!("{}:{}", l.name, l.protocol.name())).collect::<Vec<_>>().join(","),
        advertised = %security::advertised_listeners(&listeners),
        shards = shard_count,
        topics = image.topics.len(),
        log_dirs = %config.log_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(","),
        "spate ready to serve"
    );
    // Directories of partitions deleted before a crash or stop: removed off the shards.
    if let Err(e) = delete_dirs::spawn_sweep(log_dirs.healthy_paths()) {
        tracing::warn!(error = %e, "starting the sweep of deleted partition directories failed");
    }

    wait_for_stop_signal()?;
    tracing::info!("shutting down");
    // Controlled shutdown first: fenced, with its partitions' leaderships moved, while
    // the broker still serves (Kafka waits for the same).
    let (done_tx, done_rx) = flume::bounded(1);
    if registration_stop.send(done_tx).is_ok() {
        let limit = std::time::Duration::from_millis(config.broker_session_timeout_ms);
        if done_rx.recv_timeout(limit).is_err() {
            tracing::warn!("controlled shutdown did not finish in time; stopping anyway");
        }
    }
    // A clean in progress is abandoned; its files are removed at the next start.
    cleaner.stop();
    let mut acks = Vec::new();
    for tx in &control {
        let (done_tx, done_rx) = flume::bounded(1);
        if tx.send(mesh::ShardMsg::Shutdown { done: done_tx }).is_ok() {
            acks.push(done_rx);
        }
    }
    for rx in acks {
        let _ = rx.recv_timeout(std::time::Duration::from_secs(30));
    }
    tracing::info!("stopped");
    // Shard threads park in their runtimes; the process exit ends them.
    drop(threads);
    Ok(())
}

/// A node that is only a controller: its voter serves the quorum until a stop signal.
fn run_controller_only(booted: metadata::boot::Booted) -> anyhow::Result<()> {
    tracing::info!(
        offset = ?booted.image.offset,
        "spate controller ready (process_roles = [controller]: no Kafka listener)"
    );
    // Nothing here reads the subscription the start-up used.
    drop(booted.committed);
    wait_for_stop_signal()?;
    tracing::info!("shutting down");
    if let Some(quorum) = booted.quorum.and_then(Arc::into_inner) {
        quorum.shutdown();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Create `__consumer_offsets` on a single node's first start (Kafka creates it on first
/// use, as a cluster does; creating it up front keeps a single node's FindCoordinator
/// answers immediate). One created before compaction
/// existed (kept forever with `retention.ms=-1`) becomes compacted, as Kafka's is.
fn ensure_offsets_topic(
    config: &BrokerConfig,
    image: &metadata::MetadataImage,
    controller: &flume::Sender<mesh::ShardMsg>,
) -> anyhow::Result<()> {
    if let Some(t) = image.topic(group::OFFSETS_TOPIC) {
        if t.configs.get("cleanup.policy").map(String::as_str) == Some("compact") {
            return Ok(());
        }
        tracing::info!("making {} compacted", group::OFFSETS_TOPIC);
        let change = controller::ConfigChange::Incremental(vec![
            (
                "cleanup.policy".to_string(),
                controller::alter_op::SET,
                Some("compact".to_string()),
            ),
            (
                "retention.ms".to_string(),
                controller::alter_op::DELETE,
                None,
            ),
        ]);
        return ask_controller(
            controller,
            controller::ControllerRequest::AlterConfigs {
                changes: vec![(group::OFFSETS_TOPIC.to_string(), change)],
                validate_only: false,
            },
        );
    }
    // As Kafka's: compacted (the latest commit per group and partition stays).
    if config.voters()?.is_some() {
        // A cluster creates it on first use (internal_topics.rs), over the brokers
        // registered by then.
        return Ok(());
    }
    // A single node: one replica, whatever offsets_topic_replication_factor says (Kafka
    // ships a server.properties with factor 1 for a single node instead).
    let topic = internal_topics::offsets_topic(config, 1);
    ask_controller(
        controller,
        controller::ControllerRequest::CreateTopics {
            topics: vec![topic],
            validate_only: false,
        },
    )
}

/// Create `__transaction_state` on a single node's first start (a cluster: on first use).
fn ensure_transaction_state_topic(
    config: &BrokerConfig,
    image: &metadata::MetadataImage,
    controller: &flume::Sender<mesh::ShardMsg>,
) -> anyhow::Result<()> {
    if image.topic(txn::TXN_STATE_TOPIC).is_some() {
        return Ok(());
    }
    if config.voters()?.is_some() {
        // A cluster creates it on first use (internal_topics.rs).
        return Ok(());
    }
    let topic = internal_topics::transaction_state_topic(config, 1);
    ask_controller(
        controller,
        controller::ControllerRequest::CreateTopics {
            topics: vec![topic],
            validate_only: false,
        },
    )
}

/// Create `_schemas` (one partition, compacted, as Confluent's registry creates it) when
/// the schema registry is on.
fn ensure_schemas_topic(
    image: &metadata::MetadataImage,
    controller: &flume::Sender<mesh::ShardMsg>,
) -> anyhow::Result<()> {
    if let Some(t) = image.topic(schema_registry::SCHEMAS_TOPIC) {
        // As Confluent's registry: one partition, or the single writer's order is lost.
        if t.partitions.len() != 1 {
            bail!(
                "the schema registry's topic {} has {} partitions; it needs exactly 1",
                schema_registry::SCHEMAS_TOPIC,
                t.partitions.len()
            );
        }
        let compacted = t
            .configs
            .get("cleanup.policy")
            .is_some_and(|p| p.split(',').any(|i| i.trim() == "compact"));
        // As Confluent's registry, refuse to start rather than let retention delete schemas.
        if !compacted {
            bail!(
                "the schema registry's topic {0} is not compacted: set cleanup.policy=compact on it \
                 (kafka-configs.sh --alter --entity-type topics --entity-name {0} \
                 --add-config cleanup.policy=compact), or retention would delete schemas",
                schema_registry::SCHEMAS_TOPIC
            );
        }
        return Ok(());
    }
    let mut topic = internal_topics::internal_topic(schema_registry::SCHEMAS_TOPIC, 1, -1);
    topic.configs.push((
        "max.message.bytes".to_string(),
        Some(schema_registry::SCHEMAS_MAX_MESSAGE_BYTES.to_string()),
    ));
    ask_controller(
        controller,
        controller::ControllerRequest::CreateTopics {
            topics: vec![topic],
            validate_only: false,
        },
    )
}

/// How long start-up keeps asking for an internal topic while another node's
/// controller is active (it creates the topic when its own node starts).
const INTERNAL_TOPIC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Send one request about an internal topic to the controller and wait for success. A
/// topic that exists already counts as success; NOT_CONTROLLER (this node's controller
/// is not the active one) is asked again until the active controller's node made the
/// change and this node's image has it.
fn ask_controller(
    controller: &flume::Sender<mesh::ShardMsg>,
    request: controller::ControllerRequest,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + INTERNAL_TOPIC_TIMEOUT;
    loop {
        let (tx, rx) = flume::bounded(1);
        let request = request.clone();
        controller
            .send(mesh::ShardMsg::Controller { request, reply: tx })
            .map_err(|_| anyhow::anyhow!("controller shard is gone"))?;
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let outcomes = match rx.recv_timeout(left) {
            Ok(controller::ControllerReply::Topics(outcomes)) => outcomes,
            Ok(other) => bail!("setting up internal topics: {other:?}"),
            Err(e) => bail!("setting up internal topics: {e}"),
        };
        let fine = |code: i16| code == 0 || code == spate_net::ErrorCode::TopicAlreadyExists.code();
        if outcomes.iter().all(|o| fine(o.error)) {
            return Ok(());
        }
        let retriable = outcomes
            .iter()
            .all(|o| fine(o.error) || o.error == spate_net::ErrorCode::NotController.code());
        if !retriable || std::time::Instant::now() >= deadline {
            bail!("setting up internal topics: {outcomes:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The CPUs shards run on: the configured list, else the first `cores` allowed CPUs,
/// else every allowed CPU. `None` entries run unpinned (affinity unknown).
fn shard_cpus(config: &BrokerConfig) -> anyhow::Result<Vec<Option<usize>>> {
    let allowed = allowed_cpus();
    if !config.cpu_list.is_empty() {
        if let Some(bad) = config
            .cpu_list
            .iter()
            .find(|c| !allowed.is_empty() && !allowed.contains(c))
        {
            bail!("CPU {bad} in cpu_list is not allowed for this process (allowed: {allowed:?})");
        }
        return Ok(config.cpu_list.iter().map(|&c| Some(c)).collect());
    }
    let count = if config.cores == 0 {
        allowed.len().max(1)
    } else {
        config.cores
    };
    if allowed.is_empty() {
        return Ok(vec![None; count]);
    }
    // More shards than CPUs: wrap around (useful for tests, not for production).
    Ok((0..count)
        .map(|i| Some(allowed[i % allowed.len()]))
        .collect())
}

fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// SIGTERM and SIGINT, the signals that stop the broker.
fn stop_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset fill a plain struct we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

/// Block the stop signals in this thread and so in every thread started after it: a
/// stop signal that arrives during start-up stays pending (instead of killing the
/// process mid-way) and is taken by [`wait_for_stop_signal`] once the broker is ready.
fn block_stop_signals() -> anyhow::Result<()> {
    let set = stop_signals();
    // SAFETY: valid set; the old mask is not wanted.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if r != 0 {
        bail!(
            "blocking SIGTERM/SIGINT: {}",
            std::io::Error::from_raw_os_error(r)
        );
    }
    Ok(())
}

/// Wait for SIGTERM or SIGINT (blocked since start-up, see [`block_stop_signals`]).
fn wait_for_stop_signal() -> anyhow::Result<()> {
    let set = stop_signals();
    let mut sig = 0;
    // SAFETY: valid set and out pointer; the signals are blocked in every thread.
    let r = unsafe { libc::sigwait(&set, &mut sig) };
    if r != 0 {
        bail!(
            "waiting for a stop signal: {}",
            std::io::Error::from_raw_os_error(r)
        );
    }
    tracing::info!(signal = sig, "stop signal received");
    Ok(())
}
