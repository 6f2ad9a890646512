//! Per-shard metric counters and histograms. Each shard updates its own (no atomics,
//! no locks); at scrape time every shard sends a snapshot and the snapshots are merged.

use std::collections::BTreeMap;
use std::time::Duration;

/// Histogram bucket upper bounds, in seconds (the log's, so that its write-latency
/// buckets render as a histogram too).
pub const BUCKETS: [f64; 16] = spate_log::LATENCY_BUCKETS;

/// A Prometheus-style histogram: cumulative counts are computed when rendered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last slot is +Inf.
    pub counts: [u64; BUCKETS.len() + 1],
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    /// A histogram from per-bucket counts (not cumulative) and the sum in seconds.
    pub fn from_buckets(counts: &[u64; BUCKETS.len() + 1], sum: f64) -> Histogram {
        Histogram {
            counts: *counts,
            sum,
            count: counts.iter().sum(),
        }
    }

    pub fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        let slot = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[slot] += 1;
        self.sum += secs;
        self.count += 1;
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.sum += other.sum;
        self.count += other.count;
    }
}

/// Traffic of one topic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopicTraffic {
    pub bytes_in: u64,
    pub messages_in: u64,
    pub bytes_out: u64,
    pub messages_out: u64,
}

impl TopicTraffic {
    fn merge(&mut self, o: &TopicTraffic) {
        self.bytes_in += o.bytes_in;
        self.messages_in += o.messages_in;
        self.bytes_out += o.bytes_out;
        self.messages_out += o.messages_out;
    }
}

/// Counters a shard keeps while it runs. Also the snapshot type (it is `Send`).
#[derive(Debug, Clone, Default)]
pub struct ShardCounters {
    /// Requests and their latency (arrival to response written), by API name.
    pub requests: BTreeMap<&'static str, Histogram>,
    /// Per-partition errors returned, by (API name, error name).
    pub errors: BTreeMap<(&'static str, &'static str), u64>,
    pub topics: BTreeMap<String, TopicTraffic>,
    /// Time partition work waited in the owner's channel, by operation.
    pub queue_time: BTreeMap<&'static str, Histogram>,
    /// Stages of a produce request, by stage (see `docs/metrics.md`).
    pub produce_stages: BTreeMap<&'static str, Histogram>,
    pub connections_open: i64,
    pub connections_total: u64,
    /// Connections closed right after accept because `max_connections` were open.
    pub connections_refused: u64,
    /// Connections closed after `connections_max_idle_ms` without activity.
    pub connections_idle_closed: u64,
    /// TLS handshakes that failed or timed out (a plaintext client on a TLS port, a
    /// refused client certificate, ...).
    pub tls_handshake_failures: u64,
    /// Times a connection stopped reading to wait for request memory.
    pub request_memory_waits: u64,
    /// Transactions this shard coordinated to the end.
    pub transactions_committed: u64,
    pub transactions_aborted: u64,
    /// ISR changes of partitions led here that the controller accepted.
    pub isr_shrinks: u64,
    pub isr_expands: u64,
    /// Client quota throttles: (times, total ms) by quota.
    pub quota_throttles: BTreeMap<&'static str, (u64, u64)>,
    /// Share groups (KIP-932): records acquired by share consumers on partitions led
    /// here, and those of them delivered before.
    pub share_records_acquired: u64,
    pub share_records_redelivered: u64,
}

impl ShardCounters {
    pub fn request(&mut self, api: &'static str, latency: Duration) {
        self.requests.entry(api).or_default().observe(latency);
    }

    pub fn error(&mut self, api: &'static str, code: i16) {
        let name = spate_net::ErrorCode::from_code(code)
            .map(|e| e.name())
            .unwrap_or("UNKNOWN");
        *self.errors.entry((api, name)).or_default() += 1;
    }

    pub fn topic(&mut self, topic: &str) -> &mut TopicTraffic {
        if !self.topics.contains_key(topic) {
            self.topics
                .insert(topic.to_string(), TopicTraffic::default());
        }
        self.topics.get_mut(topic).expect("inserted above")
    }

    pub fn queued(&mut self, op: &'static str, waited: Duration) {
        self.queue_time.entry(op).or_default().observe(waited);
    }

    /// One produce request spent `took` in `stage`.
    pub fn produce_stage(&mut self, stage: &'static str, took: Duration) {
        self.produce_stages.entry(stage).or_default().observe(took);
    }

    /// A client went over its `quota` and was throttled for `ms`.
    pub fn quota_throttled(&mut self, quota: &'static str, ms: u64) {
        let t = self.quota_throttles.entry(quota).or_default();
        t.0 += 1;
        t.1 += ms;
    }

    pub fn merge(&mut self, o: &ShardCounters) {
        for (k, (n, ms)) in &o.quota_throttles {
            let t = self.quota_throttles.entry(k).or_default();
            t.0 += n;
            t.1 += ms;
        }
        for (k, h) in &o.requests {
            self.requests.entry(k).or_default().merge(h);
        }
        for (k, n) in &o.errors {
            *self.errors.entry(*k).or_default() += n;
        }
        for (k, t) in &o.topics {
            self.topics.entry(k.clone()).or_default().merge(t);
        }
        for (k, h) in &o.queue_time {
            self.queue_time.entry(k).or_default().merge(h);
        }
        for (k, h) in &o.produce_stages {
            self.produce_stages.entry(k).or_default().merge(h);
        }
        self.connections_open += o.connections_open;
        self.connections_total += o.connections_total;
        self.connections_refused += o.connections_refused;
        self.connections_idle_closed += o.connections_idle_closed;
        self.tls_handshake_failures += o.tls_handshake_failures;
        self.request_memory_waits += o.request_memory_waits;
        self.transactions_committed += o.transactions_committed;
        self.transactions_aborted += o.transactions_aborted;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_merge() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[5], 1);
        assert_eq!(h.counts[BUCKETS.len()], 1);
        let mut g = h.clone();
        g.merge(&h);
        assert_eq!(g.count, 6);
        assert!((g.sum - 2.0 * h.sum).abs() < 1e-9);
    }

    #[test]
    fn log_write_buckets_render_as_the_same_histogram() {
        let mut counts = [0u64; BUCKETS.len() + 1];
        counts[spate_log::latency_bucket(50_000)] += 1;
        counts[spate_log::latency_bucket(3_000_000)] += 1;
        let h = Histogram::from_buckets(&counts, 0.00305);
        let mut o = Histogram::default();
        o.observe(Duration::from_micros(50));
        o.observe(Duration::from_millis(3));
        assert_eq!(h.counts, o.counts);
        assert_eq!(h.count, 2);
    }

    #[test]
    fn counters_merge() {
        let mut a = ShardCounters::default();
        a.topic("t").bytes_in = 5;
        a.error("Produce", 2);
        let mut b = ShardCounters::default();
        b.topic("t").bytes_in = 7;
        b.error("Produce", 2);
        b.connections_open = 2;
        a.merge(&b);
        assert_eq!(a.topics["t"].bytes_in, 12);
        assert_eq!(a.errors[&("Produce", "CORRUPT_MESSAGE")], 2);
        assert_eq!(a.connections_open, 2);
    }
}
