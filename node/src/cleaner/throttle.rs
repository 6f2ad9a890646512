//! Kafka's `log.cleaner.io.max.bytes.per.second`: one rate for the bytes all cleaner
//! threads read and write together. A thread over its share sleeps.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A tenth of a second of I/O may pass at once, so small steps do not each sleep.
fn burst(rate: f64) -> f64 {
    (rate / 10.0).max(64.0 * 1024.0)
}

pub struct Throttle {
    bytes_per_second: f64,
    /// Bytes that may still pass without waiting (negative: owed), as of `at`.
    state: Mutex<(f64, Instant)>,
}

impl Throttle {
    /// `bytes_per_second` above about 1e300 (Kafka's default is `Double.MAX_VALUE`) or
    /// not finite means no limit.
    pub fn new(bytes_per_second: f64) -> Throttle {
        Throttle {
            bytes_per_second,
            state: Mutex::new((burst(bytes_per_second), Instant::now())),
        }
    }

    fn unlimited(&self) -> bool {
        !self.bytes_per_second.is_finite() || self.bytes_per_second > 1e300
    }

    /// How long the caller must wait after doing `bytes` of I/O at `now`.
    fn charge(&self, bytes: u64, now: Instant) -> Duration {
        if self.unlimited() || self.bytes_per_second <= 0.0 {
            return Duration::ZERO;
        }
        let rate = self.bytes_per_second;
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
}
