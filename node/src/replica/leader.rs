//! A partition leader's view of its followers (Kafka's `Partition` leader state): each
//! follower's fetch position and when it was last caught up, the in-sync replicas as
//! the controller committed them, the ISR change in flight, and the high watermark
//! they give.

use std::time::{Duration, Instant};

/// How long a leader waits after a refused ISR change before proposing another.
const REFUSED_CHANGE_QUIET: Duration = Duration::from_millis(500);

/// One follower as its fetches show it.
#[derive(Debug, Clone)]
pub struct Follower {
    pub id: i32,
    /// Its broker epoch, from its fetches (KIP-903); -1 before the first.
    pub broker_epoch: i64,
    /// Its log end offset: the fetch offset of its last fetch; -1 before the first.
    pub end_offset: i64,
    /// Its log start offset, as its last fetch said; -1 before the first.
    log_start: i64,
    /// When it last fetched, and the leader's end offset then.
    last_fetch: Option<(Instant, i64)>,
    /// When it last had everything the leader had (Kafka's lastCaughtUpTimeMs).
    last_caught_up: Option<Instant>,
}

impl Follower {
    fn new(id: i32) -> Self {
        Follower {
            id,
            broker_epoch: -1,
            end_offset: -1,
            log_start: -1,
            last_fetch: None,
            last_caught_up: None,
        }
    }

    /// Kafka's `ReplicaState.isCaughtUp`: at the leader's end, or caught up within the
    /// lag allowed.
    fn is_caught_up(&self, leader_end: i64, now: Instant, max_lag: Duration) -> bool {
        self.end_offset == leader_end
            || self
                .last_caught_up
                .is_some_and(|t| now.saturating_duration_since(t) <= max_lag)
    }
}

/// What a leader keeps while it leads one leader epoch.
#[derive(Debug)]
pub struct Leadership {
    pub epoch: i32,
    pub partition_epoch: i32,
    /// The ISR as the controller committed it (this broker included).
    pub isr: Vec<i32>,
    /// Every replica but this broker.
    followers: Vec<Follower>,
    /// The ISR proposed to the controller and not answered yet.
    pending: Option<Vec<i32>>,
    /// After a refused change, no new one before this (the refusal usually means the
    /// metadata is about to change: a newer epoch, a fenced follower).
    quiet_until: Option<Instant>,
    /// Followers on brokers that are fenced or shutting down: never added to the ISR
    /// nor waited for outside it.
    ineligible: Vec<i32>,
    /// Never moves back while leading.
    high_watermark: i64,
    /// The log end offset when this epoch began (Kafka's leaderEpochStartOffset): a
    /// follower joins the ISR only once it has reached it.
    epoch_start: i64,
    max_lag: Duration,
}

/// The partition as the metadata image has it, for a (possibly new) leadership.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub me: i32,
    pub epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub ineligible: Vec<i32>,
}

impl Leadership {
    /// A leadership beginning at `log_end` with the high watermark the replica had.
    pub fn new(a: &Assignment, high_watermark: i64, log_end: i64, max_lag: Duration) -> Self {
        Leadership {
            epoch: a.epoch,
            partition_epoch: a.partition_epoch,
            isr: a.isr.clone(),
            followers: a
                .replicas
                .iter()
                .filter(|&&r| r != a.me)
                .map(|&r| Follower::new(r))
                .collect(),
            pending: None,
            quiet_until: None,
            ineligible: a.ineligible.clone(),
            high_watermark,
            epoch_start: log_end,
            max_lag,
        }
    }

    /// The same epoch, newer metadata: the committed ISR, the replicas, eligibility.
    pub fn update(&mut self, a: &Assignment) {
        debug_assert_eq!(a.epoch, self.epoch, "a new epoch is a new leadership");
        self.partition_epoch = a.partition_epoch;
        self.isr = a.isr.clone();
        self.ineligible = a.ineligible.clone();
        self.followers.retain(|f| a.replicas.contains(&f.id));
        for &r in &a.replicas {
            if r != a.me && !self.followers.iter().any(|f| f.id == r) {
                self.followers.push(Follower::new(r));
            }
        }
    }

    pub fn has_followers(&self) -> bool {
        !self.followers.is_empty()
    }

    /// Committed ISR plus the members a change in flight adds (Kafka's maximal ISR):
    /// until the controller answers, the high watermark waits for both.
    fn in_maximal_isr(&self, id: i32) -> bool {
        self.isr.contains(&id) || self.pending.as_ref().is_some_and(|p| p.contains(&id))
    }

    /// The maximal ISR's size (what acks=all counts against `min.insync.replicas`
    /// once its offset is reached).
    pub fn maximal_isr_len(&self) -> usize {
        let added = self
            .pending
            .as_ref()
            .map_or(0, |p| p.iter().filter(|r| !self.isr.contains(r)).count());
        self.isr.len() + added
    }

    /// Kafka's maybeIncrementLeaderHW: the least end offset among the leader (its
    /// written end) and the followers in the maximal ISR or caught up and eligible
    /// (those are about to join); never below what it was.
    pub fn high_watermark(&mut self, leader_end: i64, now: Instant) -> i64 {
        let mut hw = leader_end;
        for f in &self.followers {
            let counted = self.in_maximal_isr(f.id)
                || (!self.ineligible.contains(&f.id)
                    && f.is_caught_up(leader_end, now, self.max_lag));
            if counted {
                hw = hw.min(f.end_offset);
            }
        }
        self.high_watermark = self.high_watermark.max(hw);
        self.high_watermark
    }

    /// A follower fetched at `end_offset` while the leader's end was `leader_end`
    /// (Kafka's updateFollowerFetchState). Returns false for a broker that is not a
    /// follower of this partition.
    pub fn record_fetch(
        &mut self,
        id: i32,
        broker_epoch: i64,
        end_offset: i64,
        log_start: i64,
        leader_end: i64,
        now: Instant,
    ) -> bool {
        let Some(f) = self.followers.iter_mut().find(|f| f.id == id) else {
            return false;
        };
        if end_offset >= leader_end {
            f.last_caught_up = Some(now);
        } else if let Some((at, end_then)) = f.last_fetch {
            if end_offset >= end_then {
                f.last_caught_up = Some(f.last_caught_up.map_or(at, |t| t.max(at)));
            }
        }
        f.last_fetch = Some((now, leader_end));
        f.end_offset = end_offset;
        f.log_start = log_start;
        f.broker_epoch = broker_epoch;
        true
    }

    /// KIP-392: of `candidates` (followers in the consumer's rack), the in-sync one
    /// holding `offset` that is furthest along, then most recently caught up (Kafka's
    /// RackAwareReplicaSelector); none when no follower qualifies.
    pub fn preferred_read_replica(&self, candidates: &[i32], offset: i64) -> Option<i32> {
        self.followers
            .iter()
            .filter(|f| {
                candidates.contains(&f.id)
                    && self.isr.contains(&f.id)
                    && f.end_offset >= offset
                    && (0..=offset).contains(&f.log_start)
            })
            .max_by(|a, b| (a.end_offset, a.last_caught_up).cmp(&(b.end_offset, b.last_caught_up)))
            .map(|f| f.id)
    }

    /// Kafka's maybeExpandIsr: `id` joins once it reached the high watermark and the
    /// start of this epoch, unless a change is in flight. Returns the ISR to propose.
    pub fn expansion(&mut self, id: i32, now: Instant, leader_end: i64) -> Option<Vec<i32>> {
        if !self.may_propose(now) || self.in_maximal_isr(id) || self.ineligible.contains(&id) {
            return None;
        }
        let hw = self.high_watermark(leader_end, now);
        let f = self.followers.iter().find(|f| f.id == id)?;
        if f.end_offset < hw || f.end_offset < self.epoch_start {
            return None;
        }
        let mut isr = self.isr.clone();
        isr.push(id);
        Some(isr)
    }

    /// Kafka's maybeShrinkIsr: the ISR without the followers that were not caught up
    /// within `replica.lag.time.max.ms`, unless a change is in flight.
    pub fn shrink(&self, leader_end: i64, now: Instant) -> Option<Vec<i32>> {
        if !self.may_propose(now) {
            return None;
        }
        let lagging: Vec<i32> = self
            .followers
            .iter()
            .filter(|f| self.isr.contains(&f.id) && !f.is_caught_up(leader_end, now, self.max_lag))
            .map(|f| f.id)
            .collect();
        if lagging.is_empty() {
            return None;
        }
        Some(
            self.isr
                .iter()
                .copied()
                .filter(|r| !lagging.contains(r))
                .collect(),
        )
    }

    /// An ISR change was sent: until its answer, the high watermark counts its members.
    pub fn propose(&mut self, isr: Vec<i32>) {
        assert!(self.pending.is_none(), "one ISR change at a time");
        self.pending = Some(isr);
    }

    /// No change in flight, and none refused a moment ago.
    fn may_propose(&self, now: Instant) -> bool {
        self.pending.is_none() && self.quiet_until.is_none_or(|t| now >= t)
    }

    /// The controller answered (the image holds the outcome, if any).
    pub fn proposal_answered(&mut self, accepted: bool, now: Instant) {
        self.pending = None;
        self.quiet_until = (!accepted).then(|| now + REFUSED_CHANGE_QUIET);
    }

    /// The broker epochs the followers in `isr` fetched with (KIP-903), -1 for this
    /// broker's own entry (the controller knows the leader's).
    pub fn with_broker_epochs(&self, isr: &[i32]) -> Vec<(i32, i64)> {
        isr.iter()
            .map(|&r| {
                let epoch = self
                    .followers
                    .iter()
                    .find(|f| f.id == r)
                    .map_or(-1, |f| f.broker_epoch);
                (r, epoch)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG: Duration = Duration::from_secs(30);

    fn leadership(isr: &[i32]) -> Leadership {
        Leadership::new(
            &Assignment {
                me: 1,
                epoch: 3,
                partition_epoch: 5,
                replicas: vec![1, 2, 3],
                isr: isr.to_vec(),
                ineligible: Vec::new(),
            },
            0,
            10,
            LAG,
        )
    }

    #[test]
    fn the_high_watermark_is_the_least_end_offset_in_the_isr() {
        let mut l = leadership(&[1, 2, 3]);
        let now = Instant::now();
        assert_eq!(l.high_watermark(20, now), 0, "followers not heard from yet");
        l.record_fetch(2, 7, 15, 0, 20, now);
        l.record_fetch(3, 7, 12, 0, 20, now);
        assert_eq!(l.high_watermark(20, now), 12);
        l.record_fetch(3, 7, 20, 0, 20, now);
        assert_eq!(l.high_watermark(20, now), 15);
        l.record_fetch(2, 7, 20, 0, 20, now);
        assert_eq!(l.high_watermark(20, now), 20);
        assert_eq!(
            l.high_watermark(25, now),
            20,
            "the leader's own new data waits"
        );
    }

    #[test]
    fn the_high_watermark_never_moves_back() {
        let mut l = leadership(&[1, 2]);
        let now = Instant::now();
        l.record_fetch(2, 7, 20, 0, 20, now);
        assert_eq!(l.high_watermark(20, now), 20);
        // A lagging follower fetching lower (after a restart) does not lower it.
        l.record_fetch(2, 8, 5, 0, 20, now);
        assert_eq!(l.high_watermark(20, now), 20);
    }

    #[test]
    fn a_caught_up_follower_joins_the_isr_and_a_lagging_one_leaves() {
        let mut l = leadership(&[1, 2]);
        let t0 = Instant::now();
        l.record_fetch(2, 7, 20, 0, 20, t0);
        l.record_fetch(3, 9, 4, 0, 20, t0);
        assert_eq!(l.expansion(3, t0, 20), None, "below the high watermark");
        l.record_fetch(3, 9, 20, 0, 20, t0);
        let isr = l.expansion(3, t0, 20).expect("caught up");
        assert_eq!(isr, vec![1, 2, 3]);
        assert_eq!(l.with_broker_epochs(&isr), vec![(1, -1), (2, 7), (3, 9)]);
        l.propose(isr);
        assert_eq!(l.maximal_isr_len(), 3);
        assert_eq!(l.expansion(3, t0, 20), None, "one change at a time");
        l.proposal_answered(true, t0);
        l.update(&Assignment {
            me: 1,
            epoch: 3,
            partition_epoch: 6,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
            ineligible: Vec::new(),
        });
        // Follower 2 stops fetching; 3 keeps up.
        let later = t0 + LAG + Duration::from_secs(1);
        l.record_fetch(3, 9, 30, 0, 30, later);
        assert_eq!(l.shrink(30, later), Some(vec![1, 3]));
        assert_eq!(l.shrink(20, t0), None);
    }

    #[test]
    fn a_consumer_is_sent_to_the_most_caught_up_in_sync_follower_of_its_rack() {
        let mut l = leadership(&[1, 2, 3]);
        let now = Instant::now();
        l.record_fetch(2, 7, 18, 5, 20, now);
        l.record_fetch(3, 7, 20, 5, 20, now);
        assert_eq!(l.preferred_read_replica(&[2, 3], 10), Some(3));
        assert_eq!(l.preferred_read_replica(&[2], 10), Some(2));
        assert_eq!(
            l.preferred_read_replica(&[2], 19),
            None,
            "follower 2 lacks offset 19"
        );
        assert_eq!(
            l.preferred_read_replica(&[2, 3], 4),
            None,
            "below their log starts"
        );
        assert_eq!(l.preferred_read_replica(&[], 10), None);
    }

    #[test]
    fn a_follower_below_the_epoch_start_stays_out() {
        // The epoch began at 10; follower 3 (in the ISR) holds the high watermark at 5.
        let mut l = leadership(&[1, 3]);
        let now = Instant::now();
        l.record_fetch(3, 9, 5, 0, 12, now);
        l.record_fetch(2, 7, 8, 0, 12, now);
        assert_eq!(l.high_watermark(12, now), 5);
        assert_eq!(
            l.expansion(2, now, 12),
            None,
            "past the high watermark, not the epoch start"
        );
        l.record_fetch(2, 7, 10, 0, 12, now);
        assert_eq!(l.expansion(2, now, 12), Some(vec![1, 3, 2]));
    }
}
