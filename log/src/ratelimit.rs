//! A small limiter for repeated log lines: at most `burst` lines per `window`, and
//! the first line after a quiet spell says how many were suppressed meanwhile.

use std::time::{Duration, Instant};

/// Admits up to `burst` events per `window`.
#[derive(Debug)]
pub struct RateLimit {
    burst: u32,
    window: Duration,
    window_start: Option<Instant>,
    admitted: u32,
    suppressed: u64,
}

impl RateLimit {
    /// A limiter admitting `burst` events per `window`.
    pub fn new(burst: u32, window: Duration) -> RateLimit {
        RateLimit {
            burst,
            window,
            window_start: None,
            admitted: 0,
            suppressed: 0,
        }
    }

    /// `Some(n)` when an event at `now` may be logged, `n` being how many were
    /// suppressed since the last admitted one; `None` when it must be dropped.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        if self
            .window_start
            .is_none_or(|s| now.duration_since(s) >= self.window)
        {
            self.window_start = Some(now);
            self.admitted = 0;
        }
        if self.admitted < self.burst {
            self.admitted += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_counts_what_it_dropped() {
        let t0 = Instant::now();
        let mut l = RateLimit::new(2, Duration::from_secs(10));
        assert_eq!(l.admit(t0), Some(0));
        assert_eq!(l.admit(t0), Some(0));
        assert_eq!(l.admit(t0), None);
        assert_eq!(l.admit(t0 + Duration::from_secs(1)), None);
        assert_eq!(l.admit(t0 + Duration::from_secs(10)), Some(2));
    }
}
