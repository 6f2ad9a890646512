//! The internal topics' definitions (`__consumer_offsets`, `__transaction_state`,
//! `__share_group_state`), and their creation on first use: as Kafka, the first
//! FindCoordinator for a group or transactional id (the first share-state request for a
//! share group) creates the topic (answered COORDINATOR_NOT_AVAILABLE meanwhile, which
//! clients retry), so that its partitions are spread over the brokers registered by then
//! rather than over the first node to start, and only once enough brokers are live for
//! its replication factor (`offsets.topic.replication.factor`,
//! `transaction.state.log.replication.factor`,
//! `share.coordinator.state.topic.replication.factor`), as Kafka's
//! `AutoTopicCreationManager`. A single node creates the first two at start instead,
//! with one replica (`main.rs`), so its first FindCoordinator is answered at once;
//! `__share_group_state` it creates on first use, with one replica.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::config::BrokerConfig;
use crate::controller::{ControllerRequest, NewTopic};
use crate::shard::ShardContext;

/// A compacted internal topic with 100 MiB segments (Kafka's
/// `offsets.topic.segment.bytes` and `transaction.state.log.segment.bytes`);
/// `replication_factor` -1: the default.
pub fn internal_topic(name: &str, partitions: i32, replication_factor: i16) -> NewTopic {
    NewTopic {
        name: name.to_string(),
        num_partitions: partitions,
        replication_factor,
        assignments: Vec::new(),
        configs: vec![
            ("cleanup.policy".to_string(), Some("compact".to_string())),
            ("segment.bytes".to_string(), Some("104857600".to_string())),
        ],
    }
}

/// `__consumer_offsets` with `replicas` replicas.
pub fn offsets_topic(config: &BrokerConfig, replicas: i16) -> NewTopic {
    internal_topic(
        crate::group::OFFSETS_TOPIC,
        config.offsets_topic_num_partitions,
        replicas,
    )
}

/// `__transaction_state` with `replicas` replicas; its `min.insync.replicas` is
/// `transaction.state.log.min.isr`, at most `replicas` (as Kafka caps it).
pub fn transaction_state_topic(config: &BrokerConfig, replicas: i16) -> NewTopic {
    let mut topic = internal_topic(
        crate::txn::TXN_STATE_TOPIC,
        config.transaction_state_num_partitions,
        replicas,
    );
    let min_isr = config
        .transaction_state_log_min_isr
        .min(i32::from(replicas.max(1)));
    topic
        .configs
        .push(("min.insync.replicas".to_string(), Some(min_isr.to_string())));
    topic
}

/// `__share_group_state` with `replicas` replicas, with Kafka's configs for it: not
/// compacted but `cleanup.policy=delete` with no retention (the share coordinator
/// deletes what no state needs, `share/coordinator.rs`), its own segment size and
/// `min.insync.replicas` (at most `replicas`).
pub fn share_state_topic(config: &BrokerConfig, replicas: i16) -> NewTopic {
    let min_isr = config
        .share_coordinator_state_topic_min_isr
        .min(i32::from(replicas.max(1)));
    let setting = |k: &str, v: String| (k.to_string(), Some(v));
    NewTopic {
        name: crate::share::SHARE_STATE_TOPIC.to_string(),
        num_partitions: config.share_coordinator_state_topic_num_partitions,
        replication_factor: replicas,
        assignments: Vec::new(),
        configs: vec![
            setting("cleanup.policy", "delete".into()),
            setting("retention.ms", "-1".into()),
            setting(
                "segment.bytes",
                config
                    .share_coordinator_state_topic_segment_bytes
                    .to_string(),
            ),
            setting("min.insync.replicas", min_isr.to_string()),
        ],
    }
}

/// Minimum time between two creations of the same topic asked by one shard.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// When this shard last asked for each internal topic, so that a burst of
/// FindCoordinator requests asks the controller once.
#[derive(Default)]
pub struct CreationAsked {
    offsets: Cell<Option<Instant>>,
    transaction_state: Cell<Option<Instant>>,
    share_state: Cell<Option<Instant>>,
}

/// Asks the controller (forwarded to the active one) to create a missing internal topic,
/// without waiting for the answer, once enough brokers are live for its replication
/// factor (else logs why, at most every `RETRY_AFTER` per shard).
pub fn create_on_first_use(ctx: &ShardContext, name: &str) {
    let (asked, topic) = match name {
        crate::group::OFFSETS_TOPIC => (
            &ctx.internal_topics.offsets,
            offsets_topic(&ctx.config, ctx.config.offsets_topic_replication_factor),
        ),
        crate::txn::TXN_STATE_TOPIC => (
            &ctx.internal_topics.transaction_state,
            transaction_state_topic(
                &ctx.config,
                ctx.config.transaction_state_log_replication_factor,
            ),
        ),
        // Created on first use on a single node too (as Kafka): most brokers never
        // serve a share group, and its 50 partitions would slow every start.
        crate::share::SHARE_STATE_TOPIC => (
            &ctx.internal_topics.share_state,
            share_state_topic(
                &ctx.config,
                if ctx.config.controller_quorum_voters.is_none() {
                    1
                } else {
                    ctx.config.share_coordinator_state_topic_replication_factor
                },
            ),
        ),
        _ => return,
    };
    if asked.get().is_some_and(|t| t.elapsed() < RETRY_AFTER) {
        return;
    }
    asked.set(Some(Instant::now()));
    let live = live_brokers(&ctx.image());
    if live < usize::try_from(topic.replication_factor).unwrap_or(0) {
        // Kafka's answer too: COORDINATOR_NOT_AVAILABLE until enough brokers are up.
        tracing::warn!(
            topic = name,
            live_brokers = live,
            replication_factor = topic.replication_factor,
            "not creating an internal topic yet: fewer live brokers than its replication factor"
        );
        return;
    }
    tracing::info!(
        topic = name,
        replication_factor = topic.replication_factor,
        "creating an internal topic on first use"
    );
    // Not waiting for the answer, nor holding the shard for it: the request goes to the
    // controller shard, which forwards it to the active controller.
    let controller = ctx.senders[0].clone();
    compio::runtime::spawn(async move {
        let (reply, answer) = flume::bounded(1);
        let request = ControllerRequest::CreateTopics {
            topics: vec![topic],
            validate_only: false,
        };
        if controller
            .send_async(crate::mesh::ShardMsg::Controller { request, reply })
            .await
            .is_ok()
        {
            let _ = answer.recv_async().await;
        }
    })
    .detach();
}

/// Brokers registered and unfenced (Kafka's alive brokers), which replicas may go to.
fn live_brokers(image: &crate::metadata::MetadataImage) -> usize {
    image
        .brokers
        .keys()
        .filter(|&&id| image.is_live(id))
        .count()
}
