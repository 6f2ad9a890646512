//! Prometheus text exposition of the merged shard snapshots.

use std::collections::HashMap;
use std::fmt::Write;

use super::registry::{Histogram, ShardCounters, TopicTraffic, BUCKETS};
use super::snapshot::ShardSnapshot;

/// Escape a label value (backslash, quote, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A metric family read from one value: name, help, getter.
type Family<T, V> = (&'static str, &'static str, fn(T) -> V);
/// A per-shard family: name, type, help, getter.
type ShardFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ShardSnapshot) -> f64,
);

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let mut cumulative = 0;
    for (i, bound) in BUCKETS.iter().enumerate() {
        cumulative += h.counts[i];
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

pub fn render(shards: &[ShardSnapshot]) -> String {
    let mut total = ShardCounters::default();
    for s in shards {
        total.merge(&s.counters);
    }
    let mut out = String::with_capacity(16 * 1024);

    let traffic: [Family<&TopicTraffic, u64>; 4] = [
        (
            "spate_topic_bytes_in_total",
            "Bytes of record batches produced to the topic.",
            |t| t.bytes_in,
        ),
        (
            "spate_topic_messages_in_total",
            "Records produced to the topic.",
            |t| t.messages_in,
        ),
        (
            "spate_topic_bytes_out_total",
            "Bytes of record batches consumers fetched from the topic (followers not counted).",
            |t| t.bytes_out,
        ),
        (
            "spate_topic_messages_out_total",
            "Records consumers fetched from the topic (followers not counted).",
            |t| t.messages_out,
        ),
    ];
    for (name, help, get) in traffic {
        header(&mut out, name, "counter", help);
        for (t, v) in &total.topics {
            let _ = writeln!(out, "{name}{{topic=\"{}\"}} {}", esc(t), get(v));
        }
    }

    header(
        &mut out,
        "spate_request_latency_seconds",
        "histogram",
        "Time from a request's arrival to its response being written, by API.",
    );
    for (api, h) in &total.requests {
        histogram(
            &mut out,
            "spate_request_latency_seconds",
            &format!("request=\"{api}\""),
            h,
        );
    }
    header(
        &mut out,
        "spate_request_errors_total",
        "counter",
        "Per-partition error codes returned, by API and error.",
    );
    for ((api, err), n) in &total.errors {
        let _ = writeln!(
            out,
            "spate_request_errors_total{{request=\"{api}\",error=\"{err}\"}} {n}"
        );
    }
    header(
        &mut out,
        "spate_quota_throttles_total",
        "counter",
        "Requests (or new connections) over a client quota, by quota.",
    );
    for quota in crate::quota::THROTTLE_LABELS {
        let n = total.quota_throttles.get(quota).map_or(0, |t| t.0);
        let _ = writeln!(out, "spate_quota_throttles_total{{quota=\"{quota}\"}} {n}");
    }
    header(
        &mut out,
        "spate_quota_throttle_seconds_total",
        "counter",
        "Throttle time given to clients over a client quota, by quota.",
    );
    for quota in crate::quota::THROTTLE_LABELS {
        let ms = total.quota_throttles.get(quota).map_or(0, |t| t.1);
        let _ = writeln!(
            out,
            "spate_quota_throttle_seconds_total{{quota=\"{quota}\"}} {}",
            ms as f64 / 1000.0
        );
    }
    header(
        &mut out,
        "spate_request_queue_time_seconds",
        "histogram",
        "Time partition work waited for its owner shard, by request type.",
    );
    for (op, h) in &total.queue_time {
        histogram(
            &mut out,
            "spate_request_queue_time_seconds",
            &format!("request=\"{op}\""),
            h,
        );
    }

    header(
        &mut out,
        "spate_produce_stage_seconds",
        "histogram",
        "Stages of produce requests: read_to_pickup, append_to_ack, data_write, response_write (docs/metrics.md).",
    );
    let mut stages = total.produce_stages.clone();
    for p in shards.iter().flat_map(|s| s.partitions.iter()) {
        stages
            .entry("data_write")
            .or_default()
            .merge(&Histogram::from_buckets(
                &p.stats.write_buckets,
                p.stats.write_nanos as f64 / 1e9,
            ));
    }
    for (stage, h) in &stages {
        histogram(
            &mut out,
            "spate_produce_stage_seconds",
            &format!("stage=\"{stage}\""),
            h,
        );
    }

    let mut partitions: Vec<_> = shards.iter().flat_map(|s| s.partitions.iter()).collect();
    partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let gauges: [Family<&super::snapshot::PartitionGauges, f64>; 11] = [
        ("spate_partition_log_end_offset", "Next offset to be assigned.", |p| p.log_end_offset as f64),
        ("spate_partition_log_start_offset", "First offset still in the log.", |p| p.log_start_offset as f64),
        ("spate_partition_high_watermark", "Offset below which records are written and readable.", |p| p.high_watermark as f64),
        ("spate_partition_last_stable_offset", "Offset below which every transaction is decided (what read_committed consumers may read); the high watermark when none is open.", |p| p.last_stable_offset as f64),
        ("spate_partition_size_bytes", "Bytes of the partition's segments.", |p| p.size_bytes as f64),
        ("spate_partition_segments", "Segments of the partition.", |p| p.segments as f64),
        ("spate_partition_offline", "1 while the partition refuses writes after a failed write (full disk: retried; I/O error: until restart).", |p| f64::from(u8::from(p.offline))),
        ("spate_partition_leader", "1 when this broker leads the partition, 0 when it follows.", |p| f64::from(u8::from(p.leader))),
        ("spate_partition_under_replicated", "1 when the partition is led here and its ISR is smaller than its replicas (Kafka's UnderReplicatedPartitions, per partition).", |p| f64::from(u8::from(p.leader && p.in_sync_replicas < p.replicas))),
        ("spate_partition_in_sync_replicas", "Replicas in the partition's ISR, as the metadata says.", |p| p.in_sync_replicas as f64),
        ("spate_partition_follower_lag", "On a follower: offsets between its log end and its leader's high watermark (Kafka's replica fetcher lag); 0 on a leader.", |p| p.follower_lag as f64),
    ];
    for (name, help, get) in gauges {
        header(&mut out, name, "gauge", help);
        for p in &partitions {
            let _ = writeln!(
                out,
                "{name}{{topic=\"{}\",partition=\"{}\"}} {}",
                esc(&p.topic),
                p.partition,
                get(p)
            );
        }
    }

    let compacted: Vec<_> = partitions
        .iter()
        .filter_map(|p| p.cleaner.map(|c| (p, c)))
        .collect();
    let cleaner_gauges: [Family<&crate::cleaner::schedule::CleanGauges, f64>; 4] = [
        ("spate_cleaner_dirty_ratio", "Dirty bytes over cleanable bytes of a compacted partition (cleaned when above min.cleanable.dirty.ratio).", |c| c.dirty_ratio),
        ("spate_cleaner_compaction_lag_seconds", "Age of the oldest record not yet compacted (0: nothing dirty); compare with max.compaction.lag.ms.", |c| c.compaction_lag_ms as f64 / 1000.0),
        ("spate_cleaner_uncleanable", "1 when the partition's last clean failed; it is not cleaned again until restart.", |c| f64::from(u8::from(c.uncleanable))),
        ("spate_cleaner_last_clean_timestamp_seconds", "When the partition's last clean finished (0: not since start).", |c| c.last_clean_ms as f64 / 1000.0),
    ];
    for (name, help, get) in cleaner_gauges {
        header(&mut out, name, "gauge", help);
        for (p, c) in &compacted {
            let _ = writeln!(
                out,
                "{name}{{topic=\"{}\",partition=\"{}\"}} {}",
                esc(&p.topic),
                p.partition,
                get(c)
            );
        }
    }

    let per_shard: [ShardFamily; 37] = [
        ("spate_log_writes_total", "counter", "Group-commit writes to segment files.", |s| s.partitions.iter().map(|p| p.stats.writes as f64).sum()),
        ("spate_log_bytes_written_total", "counter", "Bytes written to segment files, page padding included.", |s| s.partitions.iter().map(|p| p.stats.bytes_written as f64).sum()),
        ("spate_log_write_seconds_total", "counter", "Time from submitting group-commit writes to their completion (divided by writes: the mean write latency).", |s| s.partitions.iter().map(|p| p.stats.write_nanos as f64).sum::<f64>() / 1e9),
        ("spate_log_zero_fills_total", "counter", "Background zero fills of segment space ahead of the data.", |s| s.partitions.iter().map(|p| p.stats.zero_fills as f64).sum()),
        ("spate_log_zero_filled_bytes_total", "counter", "Bytes of zeros written ahead of the data (see docs/log.md, zero fill).", |s| s.partitions.iter().map(|p| p.stats.bytes_zero_filled as f64).sum()),
        ("spate_log_fsyncs_total", "counter", "fdatasync calls on segment files.", |s| s.partitions.iter().map(|p| p.stats.syncs as f64).sum()),
        ("spate_log_fsync_seconds_total", "counter", "Time spent in fdatasync of segment files (divided by fsyncs: the mean fsync latency).", |s| {
            s.partitions.iter().map(|p| p.stats.sync_nanos as f64).sum::<f64>() / 1e9
        }),
        ("spate_batch_cache_hits_total", "counter", "Reads served from the batch cache.", |s| s.partitions.iter().map(|p| p.stats.cache_hits as f64).sum()),
        ("spate_batch_cache_misses_total", "counter", "Reads that went to disk.", |s| s.partitions.iter().map(|p| p.stats.disk_reads as f64).sum()),
        ("spate_read_aheads_total", "counter", "Background read-aheads of partitions read sequentially from disk (docs/log.md, reads).", |s| s.partitions.iter().map(|p| p.stats.read_aheads as f64).sum()),
        ("spate_read_ahead_bytes_total", "counter", "Bytes of batches the read-aheads read.", |s| s.partitions.iter().map(|p| p.stats.bytes_read_ahead as f64).sum()),
        ("spate_read_ahead_hits_total", "counter", "Reads served from read-ahead windows (neither the batch cache nor a disk read).", |s| s.partitions.iter().map(|p| p.stats.read_ahead_hits as f64).sum()),
        ("spate_batch_cache_bytes", "gauge", "Memory held by the shard's batch cache (what its batches keep alive).", |s| s.batch_cache_bytes as f64),
        ("spate_connections", "gauge", "Open client connections.", |s| s.counters.connections_open as f64),
        ("spate_connections_accepted_total", "counter", "Client connections accepted.", |s| s.counters.connections_total as f64),
        ("spate_connections_refused_total", "counter", "Connections closed right after accept because max_connections were open.", |s| s.counters.connections_refused as f64),
        ("spate_connections_idle_closed_total", "counter", "Connections closed after connections_max_idle_ms without activity.", |s| s.counters.connections_idle_closed as f64),
        ("spate_tls_handshake_failures_total", "counter", "TLS handshakes that failed or timed out.", |s| s.counters.tls_handshake_failures as f64),
        ("spate_request_memory_waits_total", "counter", "Times a connection stopped reading until request memory (queued_max_request_bytes) was free.", |s| s.counters.request_memory_waits as f64),
        ("spate_shard_cpu_seconds_total", "counter", "CPU time (user and system) of the shard thread: its busy time.", |s| s.cpu_seconds),
        ("spate_shard_queue_depth", "gauge", "Messages waiting in the shard's inbound channels.", |s| s.queue_depth as f64),
        ("spate_transactions_ongoing", "gauge", "Transactions the shard coordinates that are open or ending (markers being written).", |s| s.transactions_ongoing as f64),
        ("spate_transactions_committed_total", "counter", "Transactions the shard coordinated to a commit.", |s| s.counters.transactions_committed as f64),
        ("spate_transactions_aborted_total", "counter", "Transactions the shard coordinated to an abort (by the client, a fencing producer or the timeout).", |s| s.counters.transactions_aborted as f64),
        ("spate_share_coordinator_partitions_loaded", "gauge", "__share_group_state partitions the shard leads and serves share-partition states of (loaded).", |s| s.share_coordinator.0 as f64),
        ("spate_share_coordinator_share_partitions", "gauge", "Share-partition states the shard's share coordinator holds.", |s| s.share_coordinator.1 as f64),
        ("spate_share_coordinator_writes_total", "counter", "Records the shard's share coordinator wrote to __share_group_state (ShareUpdate, ShareSnapshot, tombstone).", |s| s.share_coordinator.2 as f64),
        ("spate_share_coordinator_snapshots_total", "counter", "ShareSnapshot records among them (initializations and every share.coordinator.snapshot.update.records.per.snapshot updates).", |s| s.share_coordinator.3 as f64),
        ("spate_isr_shrinks_total", "counter", "ISR shrinks of partitions led by the shard, accepted by the controller (followers that fell behind replica_lag_time_max_ms).", |s| s.counters.isr_shrinks as f64),
        ("spate_isr_expands_total", "counter", "ISR expansions of partitions led by the shard, accepted by the controller (followers that caught up).", |s| s.counters.isr_expands as f64),
        ("spate_share_partitions", "gauge", "Share-partitions (a share group on a partition led by the shard, KIP-932) loaded on the shard.", |s| s.share_partitions as f64),
        ("spate_share_records_in_flight", "gauge", "Records of the shard's share-partitions between their start offset and their end: available, acquired, or acknowledged past the start.", |s| s.share_records_in_flight as f64),
        ("spate_share_records_locked", "gauge", "Records of the shard's share-partitions acquired by a member (under an acquisition lock).", |s| s.share_records_locked as f64),
        ("spate_share_records_acquired_total", "counter", "Records share consumers acquired from partitions led by the shard (deliveries).", |s| s.counters.share_records_acquired as f64),
        ("spate_share_records_redelivered_total", "counter", "Acquired records that had been delivered before (released, rejected by a lock expiry, or held by a member that left).", |s| s.counters.share_records_redelivered as f64),
        ("spate_consumer_group_rebalances_total", "counter", "Target assignments computed for the shard's consumer groups (KIP-848): one per group epoch the assignor ran for.", |s| s.consumer_group_rebalances as f64),
        ("spate_share_group_members", "gauge", "Members of the share groups (KIP-932) the shard coordinates.", |s| s.share_group_members as f64),
    ];
    for (name, kind, help, get) in per_shard {
        header(&mut out, name, kind, help);
        for s in shards {
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.shard, get(s));
        }
    }

    if let Some(n) = shards.iter().find_map(|s| s.share_sessions) {
        header(
            &mut out,
            "spate_share_sessions",
            "gauge",
            "Share sessions (KIP-932) the broker keeps: one per share-group member fetching from it.",
        );
        let _ = writeln!(out, "spate_share_sessions {n}");
    }

    if let Some(n) = shards.iter().find_map(|s| s.offline_partitions) {
        header(
            &mut out,
            "spate_offline_partitions",
            "gauge",
            "Partitions without a leader in the metadata (Kafka's OfflinePartitionsCount): none of their in-sync replicas is up.",
        );
        let _ = writeln!(out, "spate_offline_partitions {n}");
    }

    // Broker-wide: every shard reports the same shared counter; the first one is shown.
    if let Some(s) = shards.first() {
        header(
            &mut out,
            "spate_queued_request_bytes",
            "gauge",
            "Memory held by request frames being read, queued or handled, broker-wide.",
        );
        let _ = writeln!(out, "spate_queued_request_bytes {}", s.queued_request_bytes);
        header(
            &mut out,
            "spate_queued_request_bytes_limit",
            "gauge",
            "queued_max_request_bytes: the bound of spate_queued_request_bytes.",
        );
        let _ = writeln!(
            out,
            "spate_queued_request_bytes_limit {}",
            s.queued_request_bytes_limit
        );
    }

    if let Some(s) = shards.first() {
        let c = &s.cleaner;
        let totals: [(&str, &str, &str, f64); 9] = [
            (
                "spate_cleaner_runs_total",
                "counter",
                "Cleans finished by the log cleaner.",
                c.runs as f64,
            ),
            (
                "spate_cleaner_failures_total",
                "counter",
                "Cleans that failed (the partition becomes uncleanable until restart).",
                c.failures as f64,
            ),
            (
                "spate_cleaner_bytes_read_total",
                "counter",
                "Bytes of segments the cleaner read.",
                c.bytes_read as f64,
            ),
            (
                "spate_cleaner_bytes_written_total",
                "counter",
                "Bytes of cleaned segments the cleaner wrote.",
                c.bytes_written as f64,
            ),
            (
                "spate_cleaner_records_removed_total",
                "counter",
                "Records compaction removed (superseded, expired tombstones, no key).",
                c.records_removed as f64,
            ),
            (
                "spate_cleaner_busy_seconds_total",
                "counter",
                "Wall time the cleaner threads spent cleaning.",
                c.busy_seconds,
            ),
            (
                "spate_cleaner_last_run_end_timestamp_seconds",
                "gauge",
                "When the last clean finished (0: none since start).",
                c.last_run_end_ms as f64 / 1000.0,
            ),
            (
                "spate_cleaner_last_run_seconds",
                "gauge",
                "How long the last clean took.",
                c.last_run_seconds,
            ),
            (
                "spate_cleaner_buffer_utilization_ratio",
                "gauge",
                "How full the last clean's key map got (1: the dedupe buffer limited it).",
                c.last_map_utilization,
            ),
        ];
        for (name, kind, help, v) in totals {
            header(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {v}");
        }
    }

    // Groups by protocol and state, summed over the shards.
    let mut groups: std::collections::BTreeMap<(&str, &str), u64> = Default::default();
    for s in shards {
        for (kind, state, n) in &s.groups {
            *groups.entry((kind, state)).or_default() += n;
        }
    }
    header(
        &mut out,
        "spate_groups",
        "gauge",
        "Groups the broker coordinates, by protocol (classic, consumer) and state.",
    );
    for ((kind, state), n) in groups {
        let _ = writeln!(
            out,
            "spate_groups{{protocol=\"{kind}\",state=\"{state}\"}} {n}"
        );
    }

    // Lag: the high watermark of the partition minus the group's committed offset.
    let hw: HashMap<(&str, i32), i64> = partitions
        .iter()
        .map(|p| ((p.topic.as_str(), p.partition), p.high_watermark))
        .collect();
    let mut committed: Vec<_> = shards.iter().flat_map(|s| s.committed.iter()).collect();
    committed.sort();
    header(
        &mut out,
        "spate_consumer_group_committed_offset",
        "gauge",
        "Offset committed by the group.",
    );
    for (g, t, p, o) in &committed {
        let _ = writeln!(out, "spate_consumer_group_committed_offset{{group=\"{}\",topic=\"{}\",partition=\"{p}\"}} {o}", esc(g), esc(t));
    }
    header(
        &mut out,
        "spate_consumer_group_lag",
        "gauge",
        "Records between the group's committed offset and the partition's high watermark.",
    );
    for (g, t, p, o) in &committed {
        if let Some(h) = hw.get(&(t.as_str(), *p)) {
            let _ = writeln!(
                out,
                "spate_consumer_group_lag{{group=\"{}\",topic=\"{}\",partition=\"{p}\"}} {}",
                esc(g),
                esc(t),
                (h - o).max(0)
            );
        }
    }
    out
}
