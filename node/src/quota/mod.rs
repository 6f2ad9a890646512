//! Client quotas (Kafka's `ClientQuotaManager`s and `ConnectionQuotas`): byte rates of
//! produce and fetch, a rate of partition mutations and a share of request-handling time
//! per user and client id, and a connection creation rate per IP address. Quotas are
//! set with AlterClientQuotas and kept in the metadata log (`store`); each broker
//! enforces them on its own traffic, as Kafka does.
//!
//! A request over its quota is still served; its response carries `throttle_time_ms`,
//! the time until the client's rate is back under the quota, and the connection is not
//! read for that long (KIP-219: the client waits too). A fetch returns at most what
//! still fits under its quota (`handlers::throttle` says why that differs from Kafka).
//!
//! The usage of one quota entity is counted once per broker, by all shards together:
//! a client's connections may land on different shards. How usage is held to a quota
//! (and how that differs from Kafka's sampled window): `rate`.

pub mod busy;
pub mod rate;
pub mod store;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rate::Bucket;

/// A quota measured on requests, with its key in AlterClientQuotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaKind {
    /// Bytes of produce requests per second.
    Produce,
    /// Bytes of fetch responses per second.
    Fetch,
    /// Partitions created or deleted per second (CreateTopics, CreatePartitions,
    /// DeleteTopics).
    ControllerMutation,
    /// Shard time spent on the client's requests (`busy`), as a percentage of one
    /// shard's time.
    Request,
}

impl QuotaKind {
    pub fn key(self) -> &'static str {
        match self {
            QuotaKind::Produce => "producer_byte_rate",
            QuotaKind::Fetch => "consumer_byte_rate",
            QuotaKind::ControllerMutation => "controller_mutation_rate",
            QuotaKind::Request => "request_percentage",
        }
    }

    /// The metrics label.
    pub const fn label(self) -> &'static str {
        match self {
            QuotaKind::Produce => "produce",
            QuotaKind::Fetch => "fetch",
            QuotaKind::ControllerMutation => "controller_mutation",
            QuotaKind::Request => "request",
        }
    }
}

/// The `quota` label values of the throttle metrics: the request quotas', then the
/// connection creation rate's.
pub const THROTTLE_LABELS: [&str; 5] = [
    QuotaKind::Produce.label(),
    QuotaKind::Fetch.label(),
    QuotaKind::ControllerMutation.label(),
    QuotaKind::Request.label(),
    CONNECTION_CREATION,
];
/// The longest a request quota throttles one response. Kafka bounds it by its quota
/// window (`quota.window.size.seconds`, 1 s): one slow request may cost many seconds of
/// a small quota. A client still over its quota is throttled again on its next
/// response, so it is still held to its quota while its requests cost less than a
/// second's worth each.
pub const MAX_REQUEST_THROTTLE_MS: u64 = 1000;

/// The metrics label of the connection creation rate.
pub const CONNECTION_CREATION: &str = "connection_creation";

/// Whose usage a rate counts: a quota kind with Kafka's user and client-id tags, or a
/// client IP address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum SensorKey {
    Client(QuotaKind, String, String),
    Ip(std::net::IpAddr),
}

/// Most rates kept at once. Client ids are chosen by clients, so the map needs a
/// bound; an idle bucket is empty and may go first.
const MAX_SENSORS: usize = 50_000;

/// The broker's usage rates, shared by its shards.
#[derive(Debug)]
pub struct QuotaSensors {
    rates: Mutex<HashMap<SensorKey, Bucket>>,
    origin: Instant,
}

impl Default for QuotaSensors {
    fn default() -> Self {
        QuotaSensors {
            rates: Mutex::new(HashMap::new()),
            origin: Instant::now(),
        }
    }
}

impl QuotaSensors {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Records `value` against the quota `applied` of `kind` and returns the throttle
    /// time in ms (0: within the quota).
    pub fn record(&self, kind: QuotaKind, applied: &store::Applied, value: f64) -> u64 {
        let key = SensorKey::Client(kind, applied.user_tag.clone(), applied.client_tag.clone());
        self.record_key(key, applied.limit, value, false)
    }

    /// Records `spent`, the shard time of one request, against the `request_percentage`
    /// quota `applied` (percent of one shard's time: 100 allows a second per second)
    /// and returns the throttle time in ms (0: within the quota), at most
    /// [`MAX_REQUEST_THROTTLE_MS`].
    pub fn record_request(&self, applied: &store::Applied, spent: Duration) -> u64 {
        let key = SensorKey::Client(
            QuotaKind::Request,
            applied.user_tag.clone(),
            applied.client_tag.clone(),
        );
        let seconds_per_second = applied.limit / 100.0;
        self.record_key(key, seconds_per_second, spent.as_secs_f64(), false)
            .min(MAX_REQUEST_THROTTLE_MS)
    }

    /// How many more bytes of `kind` fit under the quota `applied` now.
    pub fn headroom(&self, kind: QuotaKind, applied: &store::Applied) -> f64 {
        self.look(kind, applied, |b, now| b.headroom(applied.limit, now))
    }

    /// The throttle time in ms the usage recorded so far gives (0: within the quota),
    /// recording nothing.
    pub fn throttle_ms(&self, kind: QuotaKind, applied: &store::Applied) -> u64 {
        self.look(kind, applied, |b, now| b.throttle_ms(now))
    }

    /// `f` of the bucket of `kind` and `applied` (an empty one if there is none) at now.
    fn look<T>(
        &self,
        kind: QuotaKind,
        applied: &store::Applied,
        f: impl Fn(&Bucket, u64) -> T,
    ) -> T {
        let key = SensorKey::Client(kind, applied.user_tag.clone(), applied.client_tag.clone());
        let now = self.now_ms();
        let rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        f(rates.get(&key).unwrap_or(&Bucket::default()), now)
    }

    /// Records a new connection from `ip`, allowed `limit` per second; the throttle
    /// time when that is too many. A refused connection is not counted (as in Kafka).
    pub fn record_connection(&self, ip: std::net::IpAddr, limit: f64) -> u64 {
        self.record_key(SensorKey::Ip(ip), limit, 1.0, true)
    }

    fn record_key(&self, key: SensorKey, limit: f64, value: f64, undo_if_throttled: bool) -> u64 {
        let now = self.now_ms();
        // A poisoned lock only means another shard panicked mid-update of a rate.
        let mut rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        if rates.len() >= MAX_SENSORS && !rates.contains_key(&key) {
            evict(&mut rates, now);
        }
        let bucket = rates.entry(key).or_default();
        let before = bucket.clone();
        bucket.record(value, limit, now);
        let throttle = bucket.throttle_ms(now);
        if throttle > 0 && undo_if_throttled {
            *bucket = before;
        }
        throttle
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.rates.lock().unwrap().len()
    }
}

/// Makes room for one more bucket: drops every idle one (a new one would be the same),
/// else the one with the least usage ahead of now.
fn evict(rates: &mut HashMap<SensorKey, Bucket>, now: u64) {
    rates.retain(|_, b| !b.idle(now));
    if rates.len() >= MAX_SENSORS {
        let oldest = rates
            .iter()
            .max_by(|(_, a), (_, b)| a.headroom(1.0, now).total_cmp(&b.headroom(1.0, now)))
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            rates.remove(&k);
        }
    }
    debug_assert!(rates.len() < MAX_SENSORS);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(user: &str, client: &str, limit: f64) -> store::Applied {
        store::Applied {
            limit,
            user_tag: user.into(),
            client_tag: client.into(),
        }
    }

    #[test]
    fn entities_are_counted_apart_and_the_map_is_bounded() {
        let s = QuotaSensors::default();
        // A second of 100 B/s for alice: at the quota; bob's bytes are his own.
        assert_eq!(
            s.record(QuotaKind::Produce, &applied("alice", "", 100.0), 100.0),
            0
        );
        assert_eq!(
            s.record(QuotaKind::Produce, &applied("bob", "", 100.0), 100.0),
            0
        );
        assert!(s.record(QuotaKind::Produce, &applied("alice", "", 100.0), 100.0) > 0);
        // Fetch bytes are not produce bytes.
        assert_eq!(
            s.record(QuotaKind::Fetch, &applied("alice", "", 100.0), 100.0),
            0
        );
        for i in 0..MAX_SENSORS + 10 {
            s.record(QuotaKind::Produce, &applied("", &i.to_string(), 100.0), 1.0);
        }
        assert!(s.len() <= MAX_SENSORS);
    }

    #[test]
    fn request_time_is_a_share_of_one_shard_and_its_throttle_is_bounded() {
        let s = QuotaSensors::default();
        // 10 % of a shard: 100 ms a second, a burst of that much at once.
        let q = applied("", "app", 10.0);
        assert_eq!(s.record_request(&q, Duration::from_millis(60)), 0);
        assert_eq!(s.record_request(&q, Duration::from_millis(40)), 0);
        // 20 ms more is 200 ms ahead of the quota (timing slack: the clock moves).
        let t = s.record_request(&q, Duration::from_millis(20));
        assert!((150..=200).contains(&t), "{t}");
        // A request worth 10 s of the quota throttles for the bound, not for 10 s.
        assert_eq!(
            s.record_request(&q, Duration::from_secs(1)),
            MAX_REQUEST_THROTTLE_MS
        );
        // Request time is its own quota: the client's bytes are not.
        assert_eq!(s.record(QuotaKind::Produce, &q, 1.0), 0);
        // 100 % is one whole shard.
        let whole = applied("", "other", 100.0);
        assert_eq!(s.record_request(&whole, Duration::from_millis(900)), 0);
        assert!(s.record_request(&whole, Duration::from_millis(200)) > 0);
    }

    #[test]
    fn a_refused_connection_is_not_counted() {
        let s = QuotaSensors::default();
        let ip = "127.0.0.1".parse().unwrap();
        // 2/s: a second's worth at once passes, the next not.
        for _ in 0..2 {
            assert_eq!(s.record_connection(ip, 2.0), 0);
        }
        let t = s.record_connection(ip, 2.0);
        assert!(t > 0);
        assert_eq!(
            s.record_connection(ip, 2.0),
            t,
            "the refused one was taken back"
        );
    }
}
