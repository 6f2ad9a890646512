//! Latency histograms, shared counters and the per-second timeline.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency histogram in microseconds, 1 us .. 1 h, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that are valid by construction.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Records `count` messages that all saw `latency_us` (values past the top are clamped).
pub fn record(h: &mut Histogram<u64>, latency_us: u64, count: u64) {
    let v = latency_us.clamp(1, h.high());
    // Cannot fail after the clamp.
    let _ = h.record_n(v, count);
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
    pub p9999: f64,
    pub max: f64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        LatencySummary {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            p9999: ms(h.value_at_quantile(0.9999)),
            max: ms(h.max()),
        }
    }
}

/// The percentile curve for the SVG: (number of nines, latency ms), from p0 to p99.999
/// (or as far as the sample count supports).
pub fn percentile_curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let max_nines = ((h.len() as f64).log10()).clamp(1.0, 5.0);
    let steps = 100;
    (0..=steps)
        .map(|i| {
            let nines = max_nines * i as f64 / steps as f64;
            let q = 1.0 - 10f64.powf(-nines);
            (nines, h.value_at_quantile(q) as f64 / 1000.0)
        })
        .collect()
}

/// Counters shared by all workers, read by the progress reporter each second.
#[derive(Default)]
pub struct Counters {
    pub produced_msgs: AtomicU64,
    pub produced_bytes: AtomicU64,
    pub consumed_msgs: AtomicU64,
    pub consumed_bytes: AtomicU64,
    /// Record-batch bytes fetched (what crossed the wire, batch headers included).
    pub consumed_wire_bytes: AtomicU64,
    pub errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Counters {
    pub fn produced(&self, msgs: u64, bytes: u64) {
        self.produced_msgs.fetch_add(msgs, Relaxed);
        self.produced_bytes.fetch_add(bytes, Relaxed);
    }

    pub fn consumed(&self, msgs: u64, bytes: u64, wire_bytes: u64) {
        self.consumed_msgs.fetch_add(msgs, Relaxed);
        self.consumed_bytes.fetch_add(bytes, Relaxed);
        self.consumed_wire_bytes.fetch_add(wire_bytes, Relaxed);
    }

    pub fn error(&self, what: String) {
        self.errors.fetch_add(1, Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            if first.is_none() {
                eprintln!("spate-bench: error: {what}");
                *first = Some(what);
            }
        }
    }

    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|f| f.clone())
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            produced_msgs: self.produced_msgs.load(Relaxed),
            produced_bytes: self.produced_bytes.load(Relaxed),
            consumed_msgs: self.consumed_msgs.load(Relaxed),
            consumed_bytes: self.consumed_bytes.load(Relaxed),
            errors: self.errors.load(Relaxed),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot {
    pub produced_msgs: u64,
    pub produced_bytes: u64,
    pub consumed_msgs: u64,
    pub consumed_bytes: u64,
    pub errors: u64,
}

/// One second of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Tick {
    /// Seconds since the load started (end of the interval).
    pub t: f64,
    pub produce_msgs_per_sec: f64,
    pub produce_mb_per_sec: f64,
    pub consume_msgs_per_sec: f64,
    pub consume_mb_per_sec: f64,
}

pub const MB: f64 = 1024.0 * 1024.0;

impl Tick {
    pub fn between(t: f64, dt: f64, a: &Snapshot, b: &Snapshot) -> Tick {
        let dt = dt.max(1e-9);
        Tick {
            t,
            produce_msgs_per_sec: (b.produced_msgs - a.produced_msgs) as f64 / dt,
            produce_mb_per_sec: (b.produced_bytes - a.produced_bytes) as f64 / dt / MB,
            consume_msgs_per_sec: (b.consumed_msgs - a.consumed_msgs) as f64 / dt,
            consume_mb_per_sec: (b.consumed_bytes - a.consumed_bytes) as f64 / dt / MB,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate::{latency_us, Pacer};
    use std::time::{Duration, Instant};

    #[test]
    fn summary_percentiles() {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            record(&mut h, v * 1000, 1); // 1 ms .. 10 s
        }
        let s = LatencySummary::of(&h);
        assert_eq!(s.count, 10_000);
        let close = |a: f64, b: f64| (a - b).abs() / b < 0.002;
        assert!(close(s.p50, 5000.0), "{s:?}");
        assert!(close(s.p99, 9900.0), "{s:?}");
        assert!(close(s.p999, 9990.0), "{s:?}");
        assert!(close(s.max, 10_000.0), "{s:?}");
        assert_eq!(
            LatencySummary::of(&new_histogram()),
            LatencySummary::default()
        );
    }

    #[test]
    fn record_n_weights_by_messages_and_clamps() {
        let mut h = new_histogram();
        record(&mut h, 0, 5);
        record(&mut h, u64::MAX, 1);
        assert_eq!(h.len(), 6);
        assert_eq!(h.value_at_quantile(0.5), 1);
        assert!(h.max() >= 3_600_000_000);
    }

    /// A closed-loop client at a fixed schedule (one request in flight) against a server
    /// that answers in 1 ms but stalls once for 200 ms. Measured from the actual send
    /// time, the stall shows up as a single slow request; measured from the intended
    /// time (coordinated-omission corrected), every request that was held up behind it
    /// is slow too, which is what a real user at that rate would have seen.
    #[test]
    fn intended_time_corrects_coordinated_omission() {
        let t0 = Instant::now();
        let pacer = Pacer::new(t0, 100.0); // every 10 ms
        let mut corrected = new_histogram();
        let mut naive = new_histogram();
        let mut free_at = t0;
        for k in 0..1000u64 {
            let intended = pacer.intended(k);
            let sent = intended.max(free_at);
            let service = if k == 100 {
                Duration::from_millis(200)
            } else {
                Duration::from_millis(1)
            };
            let done = sent + service;
            free_at = done;
            record(&mut corrected, latency_us(intended, done), 1);
            record(&mut naive, latency_us(sent, done), 1);
        }
        let over_100ms = |h: &Histogram<u64>| h.count_between(100_000, h.high());
        assert_eq!(over_100ms(&naive), 1);
        // Requests 100..=110 were due during the stall: 200, 191, 182, ... ms late.
        assert!(over_100ms(&corrected) >= 10, "{}", over_100ms(&corrected));
        assert!(corrected.value_at_quantile(0.99) > 100_000);
        assert!(naive.value_at_quantile(0.99) < 2_000);
        // Both agree on the typical request.
        assert_eq!(
            corrected.value_at_quantile(0.5),
            naive.value_at_quantile(0.5)
        );
    }

    #[test]
    fn curve_is_monotonic() {
        let mut h = new_histogram();
        for v in 1..=100_000u64 {
            record(&mut h, v, 1);
        }
        let c = percentile_curve(&h);
        assert_eq!(c.first().map(|p| p.0), Some(0.0));
        assert!((c.last().map(|p| p.0).unwrap_or(0.0) - 5.0).abs() < 1e-9);
        assert!(c.windows(2).all(|w| w[0].1 <= w[1].1));
    }

    #[test]
    fn tick_rates() {
        let a = Snapshot::default();
        let b = Snapshot {
            produced_msgs: 1000,
            produced_bytes: 2 * 1024 * 1024,
            ..a
        };
        let t = Tick::between(1.0, 0.5, &a, &b);
        assert_eq!(t.produce_msgs_per_sec, 2000.0);
        assert_eq!(t.produce_mb_per_sec, 4.0);
    }
}
