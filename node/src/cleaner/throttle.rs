//! Kafka's `log.cleaner.io.max.bytes.per.second`: one rate for the bytes all cleaner
//! threads read and write together. A thread over its share sleeps.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A tenth of a second of I/O may pass at once, so small steps do not each sleep.
fn burst(rate: f64) -> f64 {
    (rate / 10.0).max(64.0 * 1024.0)
}

pub struct Throttle {
    /// The rate's `f64` bits (changed at runtime by a dynamic broker config).
    bytes_per_second: AtomicU64,
    /// Bytes that may still pass without waiting (negative: owed), as of `at`.
    state: Mutex<(f64, Instant)>,
}

impl Throttle {
    /// `bytes_per_second` above about 1e300 or not finite means no limit.
    pub fn new(bytes_per_second: f64) -> Throttle {
        Throttle {
            bytes_per_second: AtomicU64::new(bytes_per_second.to_bits()),
            state: Mutex::new((burst(bytes_per_second), Instant::now())),
        }
    }

    /// A new rate, from the next charge on.
    pub fn set_rate(&self, bytes_per_second: f64) {
        self.bytes_per_second
            .store(bytes_per_second.to_bits(), Ordering::Relaxed);
    }

    fn rate(&self) -> f64 {
        f64::from_bits(self.bytes_per_second.load(Ordering::Relaxed))
    }

    /// How long the caller must wait after doing `bytes` of I/O at `now`.
    fn charge(&self, bytes: u64, now: Instant) -> Duration {
        let rate = self.rate();
        // Above about 1e300 (Kafka's default is `Double.MAX_VALUE`) or not finite: no limit.
        if !rate.is_finite() || rate > 1e300 || rate <= 0.0 {
            return Duration::ZERO;
        }
        let burst = burst(rate);
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(s.1).as_secs_f64();
        s.0 = (s.0 + elapsed * rate).min(burst) - bytes as f64;
        s.1 = now;
        if s.0 >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-s.0 / rate)
        }
    }

    /// Account for `bytes` read or written, sleeping as long as the rate asks.
    pub fn pace(&self, bytes: u64) {
        let wait = self.charge(bytes, Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_waits() {
        let t = Throttle::new(f64::MAX);
        assert_eq!(t.charge(u64::MAX / 2, Instant::now()), Duration::ZERO);
    }

    #[test]
    fn waits_for_what_exceeds_the_rate() {
        let t = Throttle::new(1_000_000.0);
        let now = Instant::now();
        // The burst (100 kB) passes, the next 1 MB owes a second.
        assert_eq!(t.charge(100_000, now), Duration::ZERO);
        let wait = t.charge(1_000_000, now);
        assert!((wait.as_secs_f64() - 1.0).abs() < 0.01, "{wait:?}");
        // A second later the debt is paid.
        let wait = t.charge(0, now + Duration::from_secs(1));
        assert_eq!(wait, Duration::ZERO);
    }

    #[test]
    fn a_new_rate_applies_to_the_next_charge() {
        let t = Throttle::new(1_000_000.0);
        let now = Instant::now();
        assert_eq!(t.charge(100_000, now), Duration::ZERO);
        t.set_rate(2_000_000.0);
        let wait = t.charge(1_000_000, now);
        assert!((wait.as_secs_f64() - 0.5).abs() < 0.01, "{wait:?}");
        t.set_rate(f64::MAX);
        assert_eq!(t.charge(u64::MAX / 2, now), Duration::ZERO);
    }
}
