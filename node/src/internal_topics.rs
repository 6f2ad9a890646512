//! The internal topics' definitions (`__consumer_offsets`, `__transaction_state`), and
//! their creation on first use in a cluster: as Kafka, the first FindCoordinator for a
//! group or transactional id creates the topic (answered COORDINATOR_NOT_AVAILABLE
//! meanwhile, which clients retry), so that its partitions are spread over the brokers
//! registered by then rather than over the first node to start. A single node creates
//! them at start instead (`main.rs`), so its first FindCoordinator is answered at once.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::config::BrokerConfig;
use crate::controller::{ControllerRequest, NewTopic};
use crate::shard::ShardContext;

/// A compacted internal topic with 100 MiB segments (Kafka's
/// `offsets.topic.segment.bytes` and `transaction.state.log.segment.bytes`).
pub fn internal_topic(name: &str, partitions: i32) -> NewTopic {
    NewTopic {
        name: name.to_string(),
        num_partitions: partitions,
        replication_factor: -1,
        assignments: Vec::new(),
        configs: vec![
            ("cleanup.policy".to_string(), Some("compact".to_string())),
            ("segment.bytes".to_string(), Some("104857600".to_string())),
        ],
    }
}

pub fn offsets_topic(config: &BrokerConfig) -> NewTopic {
    internal_topic(
        crate::group::OFFSETS_TOPIC,
        config.offsets_topic_num_partitions,
    )
}

pub fn transaction_state_topic(config: &BrokerConfig) -> NewTopic {
    internal_topic(
        crate::txn::TXN_STATE_TOPIC,
        config.transaction_state_num_partitions,
    )
}

/// Minimum time between two creations of the same topic asked by one shard.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// When this shard last asked for each internal topic, so that a burst of
/// FindCoordinator requests asks the controller once.
#[derive(Default)]
pub struct CreationAsked {
    offsets: Cell<Option<Instant>>,
    transaction_state: Cell<Option<Instant>>,
}

/// Asks the controller (forwarded to the active one) to create a missing internal topic,
/// without waiting for the answer.
pub fn create_on_first_use(ctx: &Rc<ShardContext>, name: &str) {
    let (asked, topic) = match name {
        crate::group::OFFSETS_TOPIC => (&ctx.internal_topics.offsets, offsets_topic(&ctx.config)),
        crate::txn::TXN_STATE_TOPIC => (
            &ctx.internal_topics.transaction_state,
            transaction_state_topic(&ctx.config),
        ),
        _ => return,
    };
    if asked.get().is_some_and(|t| t.elapsed() < RETRY_AFTER) {
        return;
    }
    asked.set(Some(Instant::now()));
    tracing::info!(topic = name, "creating an internal topic on first use");
    let ctx = ctx.clone();
    compio::runtime::spawn(async move {
        let _ = ctx
            .change_topics(ControllerRequest::CreateTopics {
                topics: vec![topic],
                validate_only: false,
            })
            .await;
    })
    .detach();
}
