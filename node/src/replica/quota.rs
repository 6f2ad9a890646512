//! Kafka's replication quotas (`ReplicationQuotaManager`): a broker-wide byte rate for
//! the data a leader sends to followers of throttled replicas
//! (`leader.replication.throttled.rate`) and one for what a follower fetches for its
//! throttled replicas (`follower.replication.throttled.rate`), both dynamic broker
//! configs. Which replicas are throttled is a topic config:
//! `leader.replication.throttled.replicas` / `follower.replication.throttled.replicas`,
//! `*` or a list of `partition:broker` (a broker throttles the partitions its id is
//! listed with). `kafka-reassign-partitions.sh --throttle` sets all four.
//!
//! As in Kafka, only a replica that is out of the ISR is ever held back (so throttling
//! never shrinks an ISR), the bytes of every throttled partition count against the
//! rate, in sync or not, and traffic of partitions that are not throttled is neither
//! counted nor slowed. While the rate is exceeded, the leader leaves a throttled
//! partition's data out of a follower's response, and the follower leaves a throttled
//! partition out of its fetches.
//!
//! Each rate is one bucket per broker, shared by its shards through an atomic (not a
//! per-shard share of the rate): a reassignment usually moves a few partitions, which
//! sit on a few shards, and a share would hold them to a fraction of the rate the
//! operator set. The bucket is a GCRA (one atomic "paid until" time): recording bytes
//! moves it forward by their cost at the rate, and the rate counts as exceeded while
//! it is more than [`BURST`] ahead of now. Kafka averages the rate over its quota
//! window (11 samples of 1 s) instead; both let a throttled transfer run at the rate
//! on average.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::metadata::MetadataImage;

/// The topic config naming the replicas a leader throttles.
pub const LEADER_REPLICAS: &str = "leader.replication.throttled.replicas";
/// The topic config naming the replicas a follower throttles.
pub const FOLLOWER_REPLICAS: &str = "follower.replication.throttled.replicas";
/// Kafka's default rate (Long.MAX_VALUE): unlimited.
pub const UNLIMITED: u64 = i64::MAX as u64;
/// How far ahead of the rate recorded traffic may run before it counts as exceeded.
const BURST: Duration = Duration::from_secs(1);

/// One broker-wide byte rate.
#[derive(Debug)]
pub struct Throttle {
    /// Bytes per second; [`UNLIMITED`] or above turns the throttle off.
    rate: AtomicU64,
    /// Nanoseconds after `origin` until which the recorded bytes are paid for.
    paid_until: AtomicU64,
    origin: Instant,
}

impl Throttle {
    fn new() -> Self {
        Throttle {
            rate: AtomicU64::new(UNLIMITED),
            paid_until: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }

    pub fn set_rate(&self, bytes_per_second: u64) {
        self.rate.store(bytes_per_second, Ordering::Relaxed);
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn limited(&self) -> Option<u64> {
        let rate = self.rate.load(Ordering::Relaxed);
        (rate < UNLIMITED).then_some(rate)
    }

    /// Whether throttled traffic must wait (Kafka's `isQuotaExceeded`).
    pub fn exceeded(&self) -> bool {
        if self.limited().is_none() {
            return false;
        }
        let burst = u64::try_from(BURST.as_nanos()).unwrap_or(u64::MAX);
        self.paid_until.load(Ordering::Relaxed) > self.now().saturating_add(burst)
    }

    /// Counts `bytes` of throttled traffic (Kafka's `record`). A rate of 0 is taken
    /// as 1 byte/s: throttled replicas barely move.
    pub fn record(&self, bytes: usize) {
        let Some(rate) = self.limited() else {
            return;
        };
        let cost = (bytes as u128 * 1_000_000_000 / u128::from(rate.max(1)))
            .try_into()
            .unwrap_or(u64::MAX);
        let now = self.now();
        // Never fails: the closure always returns a value.
        let _ = self
            .paid_until
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.max(now).saturating_add(cost))
            });
    }
}

/// The broker's two replication quotas, shared by every shard.
#[derive(Debug)]
pub struct ReplicationQuotas {
    pub leader: Throttle,
    pub follower: Throttle,
    /// `replica.alter.log.dirs.io.max.bytes.per.second`: the copies of partitions
    /// moving between log dirs (`log_move.rs`).
    pub alter_log_dirs: Throttle,
}

impl Default for ReplicationQuotas {
    /// Both unlimited until the dynamic broker configs say otherwise.
    fn default() -> Self {
        ReplicationQuotas {
            leader: Throttle::new(),
            follower: Throttle::new(),
            alter_log_dirs: Throttle::new(),
        }
    }
}

/// Whether `value` (a `*.replication.throttled.replicas` list) throttles partition
/// `partition`'s replica on broker `broker` (Kafka's `parseThrottledPartitions`).
pub fn names_replica(value: &str, partition: i32, broker: i32) -> bool {
    let value = value.trim();
    if value == "*" {
        return true;
    }
    value.split(',').any(|entry| {
        let mut parts = entry.trim().split(':');
        let number = |s: Option<&str>| s.and_then(|s| s.trim().parse::<i32>().ok());
        number(parts.next()) == Some(partition) && number(parts.next()) == Some(broker)
    })
}

/// Kafka's `ThrottledReplicaListValidator`: `*`, or `partition:broker` entries.
pub fn validate_replica_list(value: &str) -> Result<(), String> {
    let entries: Vec<&str> = value.split(',').map(str::trim).collect();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let valid = entries.concat() == "*"
        || entries.iter().all(|e| {
            e.is_empty()
                || e.split_once(':')
                    .is_some_and(|(p, b)| digits(p) && digits(b))
        });
    if valid {
        Ok(())
    } else {
        Err("must be the literal '*' or a list of replicas in the following format: [partitionId]:[brokerId],[partitionId]:[brokerId],...".into())
    }
}

/// Whether the topic's `config` (one of the two lists) throttles partition
/// `partition`'s replica on broker `broker`.
pub fn throttled(
    image: &MetadataImage,
    topic: &str,
    partition: i32,
    config: &str,
    broker: i32,
) -> bool {
    image
        .topic(topic)
        .and_then(|t| t.configs.get(config))
        .is_some_and(|v| names_replica(v, partition, broker))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_lists_name_partitions_on_this_broker() {
        assert!(names_replica("*", 3, 7));
        assert!(names_replica("0:1, 3:7", 3, 7));
        assert!(!names_replica("0:1,3:7", 3, 1));
        assert!(!names_replica("", 0, 0));
        assert!(validate_replica_list("0:1,2:3").is_ok());
        assert!(validate_replica_list("*").is_ok());
        assert!(validate_replica_list("").is_ok());
        assert!(validate_replica_list("0:x").is_err());
        assert!(validate_replica_list("*,0:1").is_err());
    }

    #[test]
    fn the_rate_holds_throttled_traffic_back_after_a_burst() {
        let t = Throttle::new();
        t.record(1 << 30);
        assert!(!t.exceeded(), "unlimited by default");
        t.set_rate(1000);
        assert!(!t.exceeded());
        t.record(500);
        assert!(!t.exceeded(), "within the burst");
        t.record(1000);
        assert!(t.exceeded(), "1.5 s of traffic recorded at once");
        t.set_rate(UNLIMITED);
        assert!(!t.exceeded());
    }
}
