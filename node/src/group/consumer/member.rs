//! One member of a consumer group (KIP-848): what it subscribes to, and where its
//! reconciliation stands (its epoch and the partitions it holds or must give up).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

/// A topic's id as in the metadata image and on the wire.
pub type TopicId = [u8; 16];

/// Partitions by topic id. Empty partition sets are never stored.
pub type Assignment = BTreeMap<TopicId, BTreeSet<i32>>;

/// Kafka's `MemberState` (the `State` field of the current-assignment record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// The member has its target assignment at the target epoch.
    Stable,
    /// The member must first give up partitions (it keeps its epoch meanwhile).
    UnrevokedPartitions,
    /// The member is at the target epoch but waits for partitions that other members
    /// still own.
    UnreleasedPartitions,
}

impl MemberState {
    pub fn code(self) -> i8 {
        match self {
            MemberState::Stable => 0,
            MemberState::UnrevokedPartitions => 1,
            MemberState::UnreleasedPartitions => 2,
        }
    }

    pub fn from_code(code: i8) -> Option<MemberState> {
        match code {
            0 => Some(MemberState::Stable),
            1 => Some(MemberState::UnrevokedPartitions),
            2 => Some(MemberState::UnreleasedPartitions),
            _ => None,
        }
    }
}

/// Member epoch of a static member that left with epoch -2: it keeps its place (and
/// assignment) until its session times out or its instance id rejoins.
pub const STATIC_LEFT_EPOCH: i32 = -2;

/// What a member using the classic protocol (a JoinGroup client inside a consumer group,
/// KIP-848's online migration) joined with: Kafka's `ClassicMemberMetadata`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassicProtocols {
    pub session_timeout_ms: i32,
    /// (assignor name, ConsumerProtocol subscription) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
}

impl ClassicProtocols {
    /// The protocol the member is answered with: its first choice.
    pub fn protocol_name(&self) -> &str {
        self.protocols.first().map_or("", |(n, _)| n.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Sorted, without duplicates.
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    pub state: MemberState,
    pub assigned: Assignment,
    pub pending_revocation: Assignment,
    /// The member epoch at which each assigned partition was given to the member (KIP-1251's
    /// assignment epochs): a commit at an older member epoch is accepted for a partition
    /// the member has held since then.
    pub assignment_epochs: BTreeMap<(TopicId, i32), i32>,
    /// Set while the member uses the classic protocol (JoinGroup, SyncGroup, Heartbeat).
    pub classic: Option<ClassicProtocols>,
}

impl ConsumerMember {
    pub fn new(member_id: &str) -> ConsumerMember {
        ConsumerMember {
            member_id: member_id.to_string(),
            instance_id: None,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            subscribed_topic_names: Vec::new(),
            subscribed_topic_regex: None,
            server_assignor: None,
            rebalance_timeout_ms: -1,
            member_epoch: 0,
            previous_member_epoch: 0,
            state: MemberState::Stable,
            assigned: Assignment::new(),
            pending_revocation: Assignment::new(),
            assignment_epochs: BTreeMap::new(),
            classic: None,
        }
    }
}

impl ConsumerMember {
    /// The epoch at which `partition` of `topic` was assigned, if the member holds it.
    pub fn assignment_epoch(&self, topic: &TopicId, partition: i32) -> Option<i32> {
        let held = self
            .assigned
            .get(topic)
            .is_some_and(|p| p.contains(&partition));
        held.then(|| {
            self.assignment_epochs
                .get(&(*topic, partition))
                .copied()
                .unwrap_or(self.member_epoch)
        })
    }
}

/// Total number of partitions in an assignment.
pub fn partition_count(a: &Assignment) -> usize {
    a.values().map(BTreeSet::len).sum()
}

/// Adds `partition` of `topic` to `a`.
pub fn insert(a: &mut Assignment, topic: TopicId, partition: i32) {
    a.entry(topic).or_default().insert(partition);
}
