//! The group, transaction and share coordinators follow the leadership of their internal
//! partitions (Kafka's `onElection` / `onResignation` of its GroupCoordinator,
//! TransactionCoordinator and ShareCoordinator). When a replica of a
//! `__consumer_offsets`, `__transaction_state` or `__share_group_state` partition
//! starts leading a leader epoch on this broker, its shard rebuilds that partition's
//! groups, transactions or share-partition states from the log, in the
//! background; when it stops leading, the shard drops exactly that partition's state,
//! so a former coordinator never answers from state the new one has moved on from.
//!
//! While a partition loads, requests for its keys are answered
//! COORDINATOR_LOAD_IN_PROGRESS; once it is no longer led here, NOT_COORDINATOR
//! (`Loads::check`), as Kafka answers.

use std::collections::HashMap;
use std::rc::Rc;

use spate_net::ErrorCode;

use crate::group::OFFSETS_TOPIC;
use crate::mesh::PartitionKey;
use crate::partition::Partition;
use crate::shard::ShardContext;
use crate::share::SHARE_STATE_TOPIC;
use crate::txn::TXN_STATE_TOPIC;

/// Where a coordinator stands with one internal partition of its shard. Each load has
/// a generation of its own, so that a load (or a write) begun under a leadership that
/// ended meanwhile never touches the state of a later one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    Loading(u64),
    Loaded(u64),
}

/// The internal partitions a coordinator leads, loading or loaded.
#[derive(Debug, Default)]
pub struct Loads {
    states: HashMap<i32, Load>,
    generations: u64,
}

impl Loads {
    /// A load of `partition` starts (any earlier one is superseded); its generation.
    pub fn begin(&mut self, partition: i32) -> u64 {
        self.generations += 1;
        self.states
            .insert(partition, Load::Loading(self.generations));
        self.generations
    }

    /// The load of `generation` finished: true when it is still the current one (its
    /// state may then be installed), false when the leadership ended meanwhile.
    pub fn finish(&mut self, partition: i32, generation: u64) -> bool {
        match self.states.get_mut(&partition) {
            Some(state) if *state == Load::Loading(generation) => {
                *state = Load::Loaded(generation);
                true
            }
            _ => false,
        }
    }

    /// The load of `generation` failed: the partition is not coordinated here (until
    /// its next leadership).
    pub fn fail(&mut self, partition: i32, generation: u64) {
        if self.states.get(&partition) == Some(&Load::Loading(generation)) {
            self.states.remove(&partition);
        }
    }

    /// The leadership of `partition` ended; true if it was led here.
    pub fn end(&mut self, partition: i32) -> bool {
        self.states.remove(&partition).is_some()
    }

    /// The generation of `partition`'s loaded state, if it is loaded.
    pub fn loaded(&self, partition: i32) -> Option<u64> {
        match self.states.get(&partition) {
            Some(Load::Loaded(generation)) => Some(*generation),
            _ => None,
        }
    }

    /// Whether any partition is still loading.
    pub fn any_loading(&self) -> bool {
        self.states.values().any(|s| matches!(s, Load::Loading(_)))
    }

    /// Whether requests for keys of `partition` may be served: Kafka's answers when
    /// they may not.
    pub fn check(&self, partition: i32) -> Result<(), ErrorCode> {
        match self.states.get(&partition) {
            Some(Load::Loaded(_)) => Ok(()),
            Some(Load::Loading(_)) => Err(ErrorCode::CoordinatorLoadInProgress),
            None => Err(ErrorCode::NotCoordinator),
        }
    }
}

/// The hook of `ShardContext::apply_image`: `partition` took its role from the image,
/// having led `led_before` (its leader epoch then, if it led). A coordinator
/// partition whose leadership ended unloads; one that leads a new epoch (newly opened
/// as leader, elected, or re-elected at a newer epoch) loads.
pub fn role_changed(
    ctx: &Rc<ShardContext>,
    key: &PartitionKey,
    partition: &Rc<Partition>,
    led_before: Option<i32>,
) {
    let led_now = partition.leader_epoch();
    // Share-partitions (KIP-932) of a partition whose leadership ended or moved to a
    // new epoch are dropped: their state is persisted, and reloaded when needed.
    if led_now != led_before && led_before.is_some() {
        ctx.share_partitions.borrow_mut().forget_partition(key);
    }
    if led_now == led_before || !is_coordinator_topic(&key.topic) {
        return;
    }
    if led_before.is_some() {
        resigned(ctx, key);
    }
    if let Some(epoch) = led_now {
        elected(ctx, key, partition, epoch);
    }
}

fn is_coordinator_topic(topic: &str) -> bool {
    topic == OFFSETS_TOPIC || topic == TXN_STATE_TOPIC || topic == SHARE_STATE_TOPIC
}

/// Drop the coordinator state of `key`'s partition (no longer led here, or gone).
pub fn resigned(ctx: &ShardContext, key: &PartitionKey) {
    let index = key.partition;
    let image = ctx.image();
    let count = |topic: &str| image.topic(topic).map_or(0, |t| t.partitions.len() as i32);
    let unloaded = match &*key.topic {
        OFFSETS_TOPIC => ctx.groups.borrow_mut().unload(index, count(OFFSETS_TOPIC)),
        TXN_STATE_TOPIC => ctx.txns.borrow_mut().unload(index, count(TXN_STATE_TOPIC)),
        SHARE_STATE_TOPIC => ctx.shares.borrow_mut().unload(index),
        _ => false,
    };
    if unloaded {
        tracing::info!(topic = %key.topic, partition = index, "coordinator resigned: the partition's state is unloaded");
    }
}

/// Load the coordinator state of `key`'s partition, now led here at `epoch`.
fn elected(ctx: &Rc<ShardContext>, key: &PartitionKey, partition: &Rc<Partition>, epoch: i32) {
    let index = key.partition;
    let (ctx, partition, topic) = (ctx.clone(), partition.clone(), key.topic.clone());
    if &*topic == OFFSETS_TOPIC {
        let generation = ctx.groups.borrow_mut().loads.begin(index);
        compio::runtime::spawn(async move {
            let started = std::time::Instant::now();
            let session = std::time::Duration::from_millis(
                ctx.config.group_consumer_session_timeout_ms as u64,
            );
            let share_session = std::time::Duration::from_millis(
                ctx.config.group_share_session_timeout_ms as u64,
            );
            match crate::group::Coordinator::replay(&partition, index, session, share_session)
                .await
            {
                Ok((loaded, records)) => {
                    if ctx.groups.borrow_mut().install(index, generation, loaded) {
                        tracing::info!(topic = %topic, partition = index, epoch, records, ms = started.elapsed().as_millis() as u64, "group coordinator loaded");
                    }
                }
                Err(e) => {
                    ctx.groups.borrow_mut().loads.fail(index, generation);
                    tracing::error!(topic = %topic, partition = index, epoch, error = %e, "loading groups and committed offsets failed");
                }
            }
        })
        .detach();
    } else if &*topic == SHARE_STATE_TOPIC {
        let generation = ctx.shares.borrow_mut().loads.begin(index);
        compio::runtime::spawn(async move {
            let started = std::time::Instant::now();
            match crate::share::coordinator::load(&ctx, index, generation, &partition).await {
                Ok(Some(records)) => {
                    tracing::info!(topic = %topic, partition = index, epoch, records, ms = started.elapsed().as_millis() as u64, "share coordinator loaded");
                }
                Ok(None) => {}
                Err(e) => {
                    ctx.shares.borrow_mut().loads.fail(index, generation);
                    tracing::error!(topic = %topic, partition = index, epoch, error = %e, "loading share-group state failed");
                }
            }
        })
        .detach();
    } else {
        let generation = ctx.txns.borrow_mut().loads.begin(index);
        compio::runtime::spawn(async move {
            let started = std::time::Instant::now();
            match crate::txn::TxnCoordinator::load(&ctx, index, generation, &partition).await {
                Ok(Some(records)) => {
                    tracing::info!(topic = %topic, partition = index, epoch, records, ms = started.elapsed().as_millis() as u64, "transaction coordinator loaded");
                }
                Ok(None) => {}
                Err(e) => {
                    ctx.txns.borrow_mut().loads.fail(index, generation);
                    tracing::error!(topic = %topic, partition = index, epoch, error = %e, "loading transaction state failed");
                }
            }
        })
        .detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_answers_load_in_progress_then_serves_then_not_coordinator() {
        let mut loads = Loads::default();
        assert_eq!(loads.check(3), Err(ErrorCode::NotCoordinator));
        let first = loads.begin(3);
        assert_eq!(loads.check(3), Err(ErrorCode::CoordinatorLoadInProgress));
        assert_eq!(loads.loaded(3), None);
        assert!(loads.finish(3, first));
        assert_eq!(loads.check(3), Ok(()));
        assert_eq!(loads.loaded(3), Some(first));
        assert_eq!(loads.check(4), Err(ErrorCode::NotCoordinator));
        assert!(loads.end(3));
        assert_eq!(loads.check(3), Err(ErrorCode::NotCoordinator));
        assert!(!loads.end(3));
    }

    #[test]
    fn a_load_superseded_by_a_later_leadership_is_not_installed() {
        let mut loads = Loads::default();
        let old = loads.begin(1);
        // Resigned and elected again (a newer epoch) before the first load finished.
        loads.end(1);
        let new = loads.begin(1);
        assert!(!loads.finish(1, old));
        loads.fail(1, old);
        assert_eq!(loads.check(1), Err(ErrorCode::CoordinatorLoadInProgress));
        assert!(loads.finish(1, new));
        assert_eq!(loads.loaded(1), Some(new));
        // A failed load leaves the partition uncoordinated.
        let again = loads.begin(2);
        loads.fail(2, again);
        assert_eq!(loads.check(2), Err(ErrorCode::NotCoordinator));
    }
}
