//! The controller quorum's configuration.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::transport::Security;
use crate::types::NodeId;

/// How one controller takes part in the quorum.
#[derive(Clone, Debug)]
pub struct QuorumConfig {
    /// This controller's id; must be one of `voters`.
    pub node_id: NodeId,
    /// Every voter's id and `host:port` (Kafka's `controller.quorum.voters`).
    pub voters: BTreeMap<NodeId, String>,
    /// Where the Raft log, vote and snapshot live (created if missing).
    pub dir: PathBuf,
    /// How often the leader sends heartbeats.
    pub heartbeat_interval: Duration,
    /// A follower that hears no leader for a random time in this range starts an
    /// election.
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// A snapshot is built after this many entries since the last one.
    pub snapshot_every: u64,
    /// Entries kept after a snapshot, so that a follower slightly behind gets entries
    /// instead of the whole snapshot.
    pub entries_kept_after_snapshot: u64,
    /// The most bytes one proposal may carry (its framed records and their lengths,
    /// [`crate::MetadataBatch::size`]).
    pub max_batch_bytes: usize,
    /// The largest RPC frame sent or accepted (entries and snapshot chunks are sized
    /// to fit).
    pub max_frame_bytes: usize,
    /// Proposals in flight from this node at once; more wait.
    pub max_inflight_proposals: usize,
    /// Events a subscriber may leave unread before it is dropped.
    pub subscriber_queue: usize,
    /// The size at which the log starts a new segment file.
    pub segment_bytes: u64,
    /// Incoming controller connections served at once.
    pub max_connections: usize,
    /// The largest snapshot accepted from a leader (it is received in memory).
    pub max_snapshot_bytes: u64,
    /// TLS with mutual authentication on every controller connection, in and out;
    /// `None`: plaintext (Kafka's controller listener mapped to PLAINTEXT).
    pub security: Security,
}

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("controller quorum config: {0}")]
pub struct ConfigError(pub String);

impl QuorumConfig {
    /// A configuration with the defaults for everything but identity and placement.
    pub fn new(node_id: NodeId, voters: BTreeMap<NodeId, String>, dir: impl Into<PathBuf>) -> Self {
        QuorumConfig {
            node_id,
            voters,
            dir: dir.into(),
            heartbeat_interval: Duration::from_millis(100),
            election_timeout_min: Duration::from_millis(1000),
            election_timeout_max: Duration::from_millis(2000),
            snapshot_every: 10_000,
            entries_kept_after_snapshot: 1_000,
            max_batch_bytes: 1 << 20,
            max_frame_bytes: 64 << 20,
            max_inflight_proposals: 1024,
            subscriber_queue: 4096,
            segment_bytes: 64 << 20,
            max_connections: 64,
            max_snapshot_bytes: 1 << 30,
            security: None,
        }
    }

    /// This controller's `host:port`.
    pub fn listen_addr(&self) -> Result<&str, ConfigError> {
        self.voters
            .get(&self.node_id)
            .map(String::as_str)
            .ok_or_else(|| ConfigError(format!("node {} is not a voter", self.node_id)))
    }

    /// How many entries one AppendEntries may carry so that it fits a frame even when
    /// every entry is a maximal batch (with room for the request's other fields).
    pub(crate) fn max_payload_entries(&self) -> u64 {
        let per_entry = self.max_batch_bytes + BATCH_OVERHEAD;
        ((self.max_frame_bytes - FRAME_OVERHEAD) / per_entry).clamp(1, 300) as u64
    }

    /// Snapshot chunks leave the same room in a frame.
    pub(crate) fn snapshot_chunk_bytes(&self) -> u64 {
        ((self.max_frame_bytes - FRAME_OVERHEAD) as u64).min(4 << 20)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        if ![1, 3, 5].contains(&self.voters.len()) {
            return err(format!(
                "{} voters; a quorum has 1, 3 or 5 (an even count tolerates no more failures than one voter fewer)",
                self.voters.len()
            ));
        }
        self.listen_addr()?;
        if self.heartbeat_interval.is_zero()
            || self.election_timeout_min <= self.heartbeat_interval * 2
            || self.election_timeout_max <= self.election_timeout_min
        {
            return err(
                "need 0 < 2 * heartbeat_interval < election_timeout_min < election_timeout_max"
                    .into(),
            );
        }
        if self.snapshot_every == 0
            || self.max_inflight_proposals == 0
            || self.subscriber_queue == 0
        {
            return err(
                "snapshot_every, max_inflight_proposals and subscriber_queue must be positive"
                    .into(),
            );
        }
        if self.max_connections < self.voters.len() * 2 {
            return err("max_connections must allow two connections from every voter".into());
        }
        if u32::try_from(self.max_frame_bytes).is_err()
            || self.max_frame_bytes < FRAME_OVERHEAD + self.max_batch_bytes + BATCH_OVERHEAD
            || self.max_batch_bytes == 0
        {
            return err(format!(
                "max_frame_bytes must be under 4 GiB and hold one batch of max_batch_bytes plus {} bytes",
                FRAME_OVERHEAD + BATCH_OVERHEAD
            ));
        }
        Ok(())
    }
}

/// Room in a frame for everything but the entries (vote, log ids, envelope).
const FRAME_OVERHEAD: usize = 64 << 10;
/// Room per entry beyond its batch (log id, payload tag).
const BATCH_OVERHEAD: usize = 1 << 10;

/// Parses Kafka's `controller.quorum.voters` form: `id@host:port,id@host:port,...`.
pub fn parse_voters(s: &str) -> Result<BTreeMap<NodeId, String>, ConfigError> {
    let mut voters = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('@')
            .ok_or_else(|| ConfigError(format!("voter {part:?} is not id@host:port")))?;
        let id: NodeId = id
            .trim()
            .parse()
            .map_err(|_| ConfigError(format!("voter {part:?}: bad id")))?;
        let addr = addr.trim();
        if addr
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(ConfigError(format!("voter {part:?}: bad host:port")));
        }
        if voters.insert(id, addr.to_string()).is_some() {
            return Err(ConfigError(format!("voter id {id} listed twice")));
        }
    }
    if voters.is_empty() {
        return Err(ConfigError("no voters".into()));
    }
    Ok(voters)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_parse() {
        let v = parse_voters("0@127.0.0.1:9093, 1@localhost:9094,2@[::1]:9095").expect("parse");
        assert_eq!(v.len(), 3);
        assert_eq!(v[&2], "[::1]:9095");
        for bad in ["", "0", "x@h:1", "0@h", "0@:1", "0@h:99999", "0@h:1,0@h:2"] {
            assert!(parse_voters(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn validation() {
        let voters = parse_voters("1@h:1,2@h:2,3@h:3").expect("parse");
        let c = QuorumConfig::new(1, voters.clone(), "/tmp/x");
        c.validate().expect("defaults are valid");
        assert!(c.max_payload_entries() >= 1);
        assert!(c.snapshot_chunk_bytes() as usize + FRAME_OVERHEAD <= c.max_frame_bytes);
        assert!(QuorumConfig::new(4, voters.clone(), "/tmp/x")
            .validate()
            .is_err());
        let two = parse_voters("1@h:1,2@h:2").expect("parse");
        assert!(QuorumConfig::new(1, two, "/tmp/x").validate().is_err());
        let mut small = QuorumConfig::new(1, voters, "/tmp/x");
        small.max_frame_bytes = small.max_batch_bytes;
        assert!(small.validate().is_err());
    }
}
