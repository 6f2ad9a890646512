//! A leader's ISR changes (Kafka's AlterPartition from the partition leader to the
//! controller): followers that caught up join (proposed on their fetch), followers
//! that fell behind for `replica.lag.time.max.ms` leave (a periodic check on every
//! shard). One change per partition is in flight at a time; the controller commits it
//! as a PartitionChangeRecord and answers once this broker's image holds it.

use std::rc::Rc;
use std::time::Duration;

use crate::controller::{ControllerReply, ControllerRequest};
use crate::mesh::PartitionKey;
use crate::metadata::isr::IsrChange;
use crate::partition::Partition;
use crate::shard::ShardContext;

/// Kafka's LeaderRecoveryState RECOVERED.
const RECOVERED: i8 = 0;

/// Send the ISR `isr` of `key` (led here) to the controller, in the background.
pub fn propose(
    ctx: &Rc<ShardContext>,
    key: &PartitionKey,
    partition: &Rc<Partition>,
    isr: Vec<i32>,
) {
    let Some(proposal) = partition.propose_isr(isr) else {
        return;
    };
    let leader_epoch = proposal.leader_epoch;
    let node_id = ctx.config.node_id;
    let broker_epoch = ctx.image().brokers.get(&node_id).map_or(-1, |b| b.epoch);
    let change = IsrChange {
        broker_id: node_id,
        broker_epoch,
        topic_id: partition.topic_id,
        partition: key.partition,
        leader_epoch,
        partition_epoch: proposal.partition_epoch,
        new_isr: proposal.new_isr,
        leader_recovery_state: RECOVERED,
    };
    let isr_before = ctx
        .image()
        .partition(&key.topic, key.partition)
        .map_or(0, |i| i.isr.len());
    let (ctx, key, partition) = (ctx.clone(), key.clone(), partition.clone());
    compio::runtime::spawn(async move {
        let proposed: Vec<i32> = change.new_isr.iter().map(|(r, _)| *r).collect();
        let accepted = match ctx.controller(ControllerRequest::AlterPartition(change)).await {
            Some(ControllerReply::AlterPartition(Ok(state))) => {
                tracing::info!(topic = %key.topic, partition = key.partition, isr = ?state.isr, partition_epoch = state.partition_epoch, "ISR changed");
                let mut m = ctx.metrics.borrow_mut();
                if state.isr.len() < isr_before {
                    m.isr_shrinks += 1;
                } else if state.isr.len() > isr_before {
                    m.isr_expands += 1;
                }
                true
            }
            Some(ControllerReply::AlterPartition(Err(code))) => {
                if let Some(suppressed) = admit_failure_log() {
                    tracing::warn!(topic = %key.topic, partition = key.partition, isr = ?proposed, error = code, suppressed, "ISR change refused");
                }
                false
            }
            _ => {
                if let Some(suppressed) = admit_failure_log() {
                    tracing::warn!(topic = %key.topic, partition = key.partition, isr = ?proposed, suppressed, "ISR change not answered (controller unreachable)");
                }
                false
            }
        };
        partition.isr_answered(leader_epoch, accepted);
    })
    .detach();
}

/// Whether a failed ISR change may be logged now (a few a minute per shard: a leader
/// retries every half second while the controller is away); the count left out since.
fn admit_failure_log() -> Option<u64> {
    thread_local! {
        static LIMIT: std::cell::RefCell<spate_log::RateLimit> = std::cell::RefCell::new(
            spate_log::RateLimit::new(5, Duration::from_secs(60)));
    }
    LIMIT.with(|l| l.borrow_mut().admit(std::time::Instant::now()))
}

/// Every half `replica.lag.time.max.ms` (as Kafka's isr-expiration task), each led
/// partition drops the followers that fell behind.
pub fn spawn_checks(ctx: &Rc<ShardContext>) {
    let ctx = ctx.clone();
    compio::runtime::spawn(async move {
        let every = (ctx.max_lag() / 2).max(Duration::from_millis(50));
        loop {
            compio::time::sleep(every).await;
            if ctx.is_shutting_down() {
                return;
            }
            let led: Vec<(PartitionKey, Rc<Partition>)> = ctx
                .partitions
                .borrow()
                .iter()
                .filter(|(_, p)| p.leader_epoch().is_some())
                .map(|(k, p)| (k.clone(), p.clone()))
                .collect();
            for (key, p) in led {
                if let Some(isr) = p.isr_shrink() {
                    propose(&ctx, &key, &p, isr);
                }
            }
        }
    })
    .detach();
}
