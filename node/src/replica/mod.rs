//! Kafka's replication protocol on the data path: every partition replica on its owner
//! shard is either the leader of its current leader epoch or a follower of another
//! broker (or of nobody, while the partition has no leader).
//!
//! - `leader`: the leader's followers, in-sync replicas and high watermark;
//! - `fetcher`: a follower's fetches from its leader (one task per leader and shard);
//! - `isr`: the leader's ISR changes, proposed to the controller (AlterPartition);
//! - `quota`: the replication throttles (Kafka's replication quotas);
//! - this module: the role a partition holds and how metadata changes move it.
//!
//! The metadata image says who leads which epoch; the partition takes the role when
//! the image reaches its shard (`ShardContext::apply_image`). A leader appends client
//! batches stamped with its epoch; a follower appends the leader's batches as they
//! are, and truncates where its log diverged from the leader's (Fetch's
//! `DivergingEpoch`, KIP-320 / KIP-595).

pub mod fetcher;
pub mod hw_checkpoint;
pub mod isr;
pub mod leader;
pub mod quota;

pub use leader::{Assignment, Leadership};

/// Kafka's "no leader".
pub const NO_LEADER: i32 = -1;

/// A follower's state between fetches.
#[derive(Debug, Clone)]
pub struct Following {
    /// The broker it fetches from; `NO_LEADER` while the partition has none.
    pub leader: i32,
    pub epoch: i32,
    /// The leader's high watermark as last reported, capped by this log's end.
    pub high_watermark: i64,
    /// The same, not capped (how far behind this replica is).
    pub leader_high_watermark: i64,
}

/// An ISR change a leader sends: its epochs, and the new ISR with the broker epoch
/// each follower fetched with (-1 for the leader itself).
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<(i32, i64)>,
}

/// The role a partition replica holds.
#[derive(Debug)]
pub enum Role {
    Leader(Leadership),
    Follower(Following),
}

impl Role {
    /// A replica before any metadata made it a leader or follower.
    pub fn unassigned(high_watermark: i64) -> Role {
        Role::Follower(Following {
            leader: NO_LEADER,
            epoch: -1,
            high_watermark,
            leader_high_watermark: high_watermark,
        })
    }

    /// The leader epoch this replica leads, if it leads.
    pub fn leader_epoch(&self) -> Option<i32> {
        match self {
            Role::Leader(l) => Some(l.epoch),
            Role::Follower(_) => None,
        }
    }

    /// The broker this replica fetches from, if it follows one.
    pub fn following(&self) -> Option<i32> {
        match self {
            Role::Follower(f) if f.leader != NO_LEADER => Some(f.leader),
            _ => None,
        }
    }
}

/// Kafka's leader-epoch check of Fetch, ListOffsets and OffsetForLeaderEpoch
/// (KIP-320): a request naming an older epoch than the leader's is fenced, a newer
/// one means this broker has not seen it yet; -1 means the client did not say.
pub fn check_leader_epoch(current: i32, requested: i32) -> Result<(), spate_net::ErrorCode> {
    use spate_net::ErrorCode;
    if requested < 0 || requested == current {
        Ok(())
    } else if requested < current {
        Err(ErrorCode::FencedLeaderEpoch)
    } else {
        Err(ErrorCode::UnknownLeaderEpoch)
    }
}
