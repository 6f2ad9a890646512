//! One client's usage against its quota: a GCRA (a token bucket kept as a single
//! "paid until" time). Recording usage moves that time forward by what the usage costs
//! at the quota's rate; the client is over its quota while it runs more than
//! [`BURST_MS`] ahead of now, and its throttle is the time until it no longer is.
//!
//! Kafka measures the rate over a window of 11 one-second samples instead, never over
//! less than 10 s. That lets a new client take 10 s worth at once, and a client that is
//! behind then gets its bytes in lumps of a window's worth as old samples leave the
//! window (a consumer fetching as fast as it may measured 0.8-0.9 of its quota that
//! way, with 12 s gaps). Both hold a client to its quota on average; the bucket also
//! holds it there over any second, and its throttle times are exact, so clients that
//! obey them (KIP-219) are not throttled again right after.

/// How far ahead of its quota a client may run before it is throttled: the burst a
/// client may send at once, and the most a fetch returns, is a second's worth.
pub const BURST_MS: f64 = 1000.0;

#[derive(Debug, Clone, Default)]
pub struct Bucket {
    /// Until when (ms) the usage recorded so far is paid for at the quota.
    paid_until_ms: f64,
}

impl Bucket {
    /// Adds `value` at `now` (ms) under a quota of `limit` per second (> 0).
    pub fn record(&mut self, value: f64, limit: f64, now: u64) {
        debug_assert!(limit > 0.0, "quotas are checked to be positive");
        let now = now as f64;
        self.paid_until_ms = self.paid_until_ms.max(now) + value / limit * 1000.0;
    }

    /// How long (ms) the client must wait for its usage to be back within its quota
    /// (Kafka's `throttle_time_ms`); 0 within it.
    pub fn throttle_ms(&self, now: u64) -> u64 {
        let ahead = self.paid_until_ms - now as f64 - BURST_MS;
        if ahead > 0.0 {
            ahead.ceil() as u64
        } else {
            0
        }
    }

    /// How much may still be recorded at `now` (ms) without going over `limit` per
    /// second; not above a burst's worth.
    pub fn headroom(&self, limit: f64, now: u64) -> f64 {
        let now = now as f64;
        (now + BURST_MS - self.paid_until_ms.max(now)) * limit / 1000.0
    }

    /// Whether the bucket is empty at `now` (a new one would be the same).
    pub fn idle(&self, now: u64) -> bool {
        self.paid_until_ms <= now as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_a_second_passes_then_the_rate_holds() {
        let mut b = Bucket::default();
        b.record(100.0, 100.0, 0);
        assert_eq!(b.throttle_ms(0), 0);
        // Twice that at once: the client waits a second.
        b.record(100.0, 100.0, 0);
        assert_eq!(b.throttle_ms(0), 1000);
        assert_eq!(b.throttle_ms(1000), 0);
        // Steadily at the quota: never throttled.
        let mut b = Bucket::default();
        for t in 0..1000 {
            b.record(10.0, 100.0, t * 100);
            assert_eq!(b.throttle_ms(t * 100), 0, "at {t}00 ms");
        }
        // Twice the quota for a while: throttled by what it is ahead.
        for t in 1000..1100 {
            b.record(20.0, 100.0, t * 100);
        }
        assert_eq!(b.throttle_ms(1100 * 100), 9000);
    }

    #[test]
    fn headroom_is_what_fits_within_a_burst() {
        let mut b = Bucket::default();
        assert_eq!(b.headroom(100.0, 0), 100.0);
        b.record(60.0, 100.0, 0);
        assert_eq!(b.headroom(100.0, 0), 40.0);
        b.record(40.0, 100.0, 0);
        assert_eq!(b.throttle_ms(0), 0);
        assert_eq!(b.headroom(100.0, 0), 0.0);
        // Half a second later, half a second's worth more fits.
        assert_eq!(b.headroom(100.0, 500), 50.0);
        assert!(!b.idle(500));
        assert!(b.idle(1000));
        // Idle for long: still only a burst's worth.
        assert_eq!(b.headroom(100.0, 60_000), 100.0);
    }
}
