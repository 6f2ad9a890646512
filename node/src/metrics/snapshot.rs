//! What one shard reports at scrape time.

use bytes::Bytes;
use spate_log::LogStats;
use spate_net::record_batch;

use super::registry::ShardCounters;
use crate::cleaner::schedule::CleanGauges;
use crate::shard::ShardContext;

/// Gauges of one partition, read on its owner shard.
#[derive(Debug, Clone)]
pub struct PartitionGauges {
    pub topic: String,
    pub partition: i32,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub high_watermark: i64,
    pub size_bytes: u64,
    pub segments: usize,
    pub stats: LogStats,
    /// The partition refuses writes (a failed write, a full disk).
    pub offline: bool,
    /// Compaction state, for partitions of compacted topics.
    pub cleaner: Option<CleanGauges>,
    pub last_stable_offset: i64,
    /// This replica leads the partition.
    pub leader: bool,
    /// Replicas and in-sync replicas, as the metadata says.
    pub replicas: usize,
    pub in_sync_replicas: usize,
    /// A follower's distance to its leader's high watermark (0 on a leader).
    pub follower_lag: i64,
}

/// Broker-wide cleaner counters as of the scrape (see `cleaner::CleanerStats`).
#[derive(Debug, Clone, Default)]
pub struct CleanerTotals {
    pub runs: u64,
    pub failures: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_removed: u64,
    pub busy_seconds: f64,
    pub last_run_end_ms: u64,
    pub last_run_seconds: f64,
    pub last_map_utilization: f64,
}

/// One committed offset: (group, topic, partition, offset).
pub type Committed = (String, String, i32, i64);

#[derive(Debug, Clone)]
pub struct ShardSnapshot {
    pub shard: usize,
    pub counters: ShardCounters,
    pub partitions: Vec<PartitionGauges>,
    pub committed: Vec<Committed>,
    /// CPU time of the shard thread (user + system), from /proc.
    pub cpu_seconds: f64,
    /// Messages waiting in the shard's inbound channels.
    pub queue_depth: usize,
    /// Memory held by the shard's batch cache.
    pub batch_cache_bytes: usize,
    /// The broker-wide request memory in use and its limit (the same on every shard).
    pub queued_request_bytes: usize,
    pub queued_request_bytes_limit: usize,
    /// The broker-wide cleaner counters (the same on every shard).
    pub cleaner: CleanerTotals,
    /// Transactions this shard coordinates that are open or ending.
    pub transactions_ongoing: usize,
    /// The share coordinator's `__share_group_state` partitions loaded, share-partition
    /// states held, records written and ShareSnapshots among them.
    pub share_coordinator: (usize, usize, u64, u64),
    /// Groups the shard coordinates, by (type, state): their count.
    pub groups: Vec<(&'static str, &'static str, u64)>,
    /// Target assignment computations of the shard's consumer groups.
    pub consumer_group_rebalances: u64,
    /// Members of the shard's share groups.
    pub share_group_members: u64,
    /// Partitions without a leader in the metadata (reported by shard 0).
    pub offline_partitions: Option<usize>,
    /// Share-partitions (KIP-932) loaded on the shard, their records in flight and
    /// acquired.
    pub share_partitions: usize,
    pub share_records_in_flight: usize,
    pub share_records_locked: usize,
    /// The broker's share sessions (reported by shard 0).
    pub share_sessions: Option<usize>,
}

/// Records in a run of record batches (from their headers; nothing is decompressed).
pub fn record_count(records: &Bytes) -> u64 {
    record_batch::batches(records.clone())
        .flatten()
        .map(|b| b.record_count().max(0) as u64)
        .sum()
}

impl ShardSnapshot {
    /// Taken on the shard thread itself.
    pub fn take(ctx: &ShardContext) -> ShardSnapshot {
        let cleaning = ctx.cleaning.gauges();
        let (share_partitions, share_records_in_flight, share_records_locked) =
            ctx.share_partitions.borrow().gauges();
        let image = ctx.image();
        let mut partitions: Vec<PartitionGauges> = ctx
            .partitions
            .borrow()
            .iter()
            .map(|(k, p)| PartitionGauges {
                topic: k.topic.to_string(),
                partition: k.partition,
                log_start_offset: p.log.log_start_offset(),
                log_end_offset: p.log.log_end_offset(),
                high_watermark: p.high_watermark(),
                size_bytes: p.log.size_bytes(),
                segments: p.log.segment_count(),
                stats: p.log.stats(),
                offline: p.log.is_offline(),
                cleaner: clean_gauges(p, cleaning.get(k)),
                last_stable_offset: p.last_stable_offset(),
                leader: p.leader_epoch().is_some(),
                replicas: image
                    .partition(&k.topic, k.partition)
                    .map_or(0, |i| i.replicas.len()),
                in_sync_replicas: image
                    .partition(&k.topic, k.partition)
                    .map_or(0, |i| i.isr.len()),
                follower_lag: p.follower_lag(),
            })
            .collect();
        // Partitions whose log could not be opened: offline, nothing else known.
        partitions.extend(ctx.offline.borrow().keys().map(|k| PartitionGauges {
            topic: k.topic.to_string(),
            partition: k.partition,
            log_start_offset: 0,
            log_end_offset: 0,
            high_watermark: 0,
            size_bytes: 0,
            segments: 0,
            stats: LogStats::default(),
            offline: true,
            cleaner: None,
            last_stable_offset: 0,
            leader: false,
            replicas: 0,
            in_sync_replicas: 0,
            follower_lag: 0,
        }));
        ShardSnapshot {
            shard: ctx.id,
            counters: ctx.metrics.borrow().clone(),
            partitions,
            committed: ctx.groups.borrow().committed_offsets(),
            cpu_seconds: thread_cpu_seconds().unwrap_or(0.0),
            queue_depth: ctx.inbound_depth(),
            batch_cache_bytes: ctx.batch_cache.borrow().used_bytes(),
            queued_request_bytes: ctx.request_memory.used(),
            queued_request_bytes_limit: ctx.request_memory.limit(),
            cleaner: ctx.cleaning.cleaner().totals(),
            transactions_ongoing: ctx.txns.borrow().ongoing(),
            share_coordinator: {
                let s = ctx.shares.borrow();
                (s.loaded_partitions(), s.states(), s.writes, s.snapshots)
            },
            groups: ctx.groups.borrow().group_counts(),
            consumer_group_rebalances: ctx.groups.borrow().consumer_rebalances,
            share_group_members: ctx.groups.borrow().share_members(),
            // The same on every shard: shard 0 reports it.
            offline_partitions: (ctx.id == 0).then(|| image.offline_partitions()),
            share_partitions,
            share_records_in_flight,
            share_records_locked,
            share_sessions: (ctx.id == 0).then(|| ctx.share_sessions.len()),
        }
    }
}

/// A compacted partition's cleaner gauges: the dirty ratio as of now, the rest as the
/// shard's last cleaner check saw it.
fn clean_gauges(
    p: &crate::partition::Partition,
    last: Option<&CleanGauges>,
) -> Option<CleanGauges> {
    let cfg = p.topic_config();
    if !cfg.compact {
        return None;
    }
    let view = p.log.cleanable(
        crate::partition::now_ms(),
        cfg.min_compaction_lag_ms,
        p.last_stable_offset(),
    );
    Some(CleanGauges {
        dirty_ratio: view.dirty_ratio(),
        ..last.copied().unwrap_or_default()
    })
}

/// user + system time of the calling thread, from /proc/thread-self/stat.
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then(|| (utime + stime) / ticks as f64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn thread_cpu_time_is_readable() {
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        assert!(super::thread_cpu_seconds().is_some());
    }
}
