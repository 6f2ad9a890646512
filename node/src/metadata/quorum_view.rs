//! The controller quorum as DescribeQuorum reports it (`kafka-metadata-quorum.sh describe
//! --status / --replication`), built by the active controller from its voter's state
//! and the brokers' heartbeats.
//!
//! Offsets are the metadata log's: Raft index + 1, so that a log end offset and the high
//! watermark are exclusive as Kafka's are (the entry at index i is offset i). Voters'
//! last fetch time is not known (openraft keeps no per-follower contact time): -1, as
//! Kafka reports an unknown time; a voter is caught up "now" when it holds the leader's
//! last entry. Observers are the brokers that are not voters; their last fetch is their
//! last heartbeat, whose metadata offset is their log end.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use spate_replication::QuorumStatus;

/// One voter or observer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaView {
    pub id: i32,
    pub log_end_offset: i64,
    /// Wall-clock milliseconds, -1 when unknown.
    pub last_fetch_ms: i64,
    pub last_caught_up_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuorumView {
    pub leader_id: i32,
    /// The Raft term.
    pub leader_epoch: i32,
    pub high_watermark: i64,
    pub voters: Vec<ReplicaView>,
    pub observers: Vec<ReplicaView>,
}

/// A broker's last heartbeat as the active controller saw it.
pub struct Heartbeat {
    pub broker: i32,
    pub at: Instant,
    /// The broker's applied metadata offset (a Raft index).
    pub offset: Option<u64>,
}

fn offset_after(index: Option<u64>) -> i64 {
    index.map_or(0, |i| i as i64 + 1)
}

fn wall_ms(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The view from the active controller's `status` and its brokers' `heartbeats`.
pub fn describe(status: &QuorumStatus, heartbeats: &[Heartbeat], now: Instant) -> QuorumView {
    let wall_now = SystemTime::now();
    let now_ms = wall_ms(wall_now);
    let leader_end = offset_after(status.last_log_index);
    let voters = status
        .voters
        .iter()
        .map(|&id| {
            let end = if Some(id) == status.leader {
                leader_end
            } else {
                offset_after(status.replicated.get(&id).copied().flatten())
            };
            let is_leader = Some(id) == status.leader;
            ReplicaView {
                id: id as i32,
                log_end_offset: end,
                last_fetch_ms: if is_leader { now_ms } else { -1 },
                last_caught_up_ms: if end >= leader_end { now_ms } else { -1 },
            }
        })
        .collect();
    let high_watermark = offset_after(status.commit_index);
    let observers = heartbeats
        .iter()
        .filter(|h| !status.voters.contains(&(h.broker as u64)))
        .map(|h| {
            let ago = now.saturating_duration_since(h.at);
            let at_ms = wall_ms(wall_now.checked_sub(ago).unwrap_or(UNIX_EPOCH));
            let end = offset_after(h.offset);
            ReplicaView {
                id: h.broker,
                log_end_offset: end,
                last_fetch_ms: at_ms,
                last_caught_up_ms: if end >= high_watermark { at_ms } else { -1 },
            }
        })
        .collect();
    QuorumView {
        leader_id: status.leader.map_or(-1, |l| l as i32),
        leader_epoch: i32::try_from(status.term).unwrap_or(i32::MAX),
        high_watermark,
        voters,
        observers,
    }
}

/// How old a heartbeat may be and still be reported (older: the broker is gone).
pub const OBSERVER_TTL: Duration = Duration::from_secs(300);

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    fn status() -> QuorumStatus {
        QuorumStatus {
            node_id: 1,
            role: spate_replication::Role::Leader,
            leader: Some(1),
            term: 4,
            last_log_index: Some(20),
            commit_index: Some(19),
            last_applied: Some(19),
            snapshot_index: None,
            purged_index: None,
            voters: BTreeSet::from([0, 1, 2]),
            replicated: BTreeMap::from([(0, Some(20)), (1, Some(20)), (2, Some(7))]),
        }
    }

    #[test]
    fn voters_observers_and_offsets() {
        let now = Instant::now();
        let beats = [
            Heartbeat {
                broker: 2,
                at: now,
                offset: Some(7),
            },
            Heartbeat {
                broker: 9,
                at: now,
                offset: Some(19),
            },
        ];
        let v = describe(&status(), &beats, now);
        assert_eq!((v.leader_id, v.leader_epoch, v.high_watermark), (1, 4, 20));
        let ends: Vec<(i32, i64)> = v.voters.iter().map(|r| (r.id, r.log_end_offset)).collect();
        assert_eq!(ends, [(0, 21), (1, 21), (2, 8)]);
        assert!(v.voters[0].last_caught_up_ms > 0 && v.voters[0].last_fetch_ms == -1);
        assert!(
            v.voters[1].last_fetch_ms > 0,
            "the leader is its own last fetch"
        );
        assert_eq!(v.voters[2].last_caught_up_ms, -1);
        // Voters that are also brokers are not observers.
        assert_eq!(v.observers.len(), 1);
        assert_eq!((v.observers[0].id, v.observers[0].log_end_offset), (9, 20));
        assert!(v.observers[0].last_caught_up_ms > 0);
    }
}
