//! KIP-848 consumer groups (`group.protocol=consumer`): the broker assigns partitions
//! and every member reconciles toward its target through ConsumerGroupHeartbeat.
//!
//! * `member.rs`: a member and its assignment; `reconcile.rs`: how it moves toward its
//!   target (revocation before assignment).
//! * `group.rs`: a group, its epochs and the heartbeat; `assignor/`: `uniform`, `range`.
//! * `regex.rs`: regex subscriptions; `topics.rs`: the topics as the assignors see them.
//! * `records.rs`: the group's records in `__consumer_offsets` and their replay.

pub mod assignor;
mod group;
pub mod member;
mod reconcile;
pub mod records;
mod regex;
mod topics;

pub use group::{
    ClassicJoined, ConsumerGroup, ConsumerGroupSettings, GroupError, HeartbeatArgs, HeartbeatReply,
    LEAVE_EPOCH,
};
pub use topics::TopicsView;

use spate_net::messages::ConsumerGroupHeartbeatRequest;
use spate_net::ErrorCode;

use assignor::{Assignor, ASSIGNORS};
use member::{Assignment, STATIC_LEFT_EPOCH};

fn invalid(message: &str) -> GroupError {
    GroupError::new(ErrorCode::InvalidRequest, message)
}

/// `group.consumer.migration.policy`: which online conversions between classic and
/// consumer groups are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationPolicy {
    Disabled,
    Upgrade,
    Downgrade,
    Bidirectional,
}

impl MigrationPolicy {
    pub fn parse(s: &str) -> Option<MigrationPolicy> {
        match s.to_ascii_lowercase().as_str() {
            "disabled" => Some(MigrationPolicy::Disabled),
            "upgrade" => Some(MigrationPolicy::Upgrade),
            "downgrade" => Some(MigrationPolicy::Downgrade),
            "bidirectional" => Some(MigrationPolicy::Bidirectional),
            _ => None,
        }
    }

    pub fn upgrade(self) -> bool {
        matches!(
            self,
            MigrationPolicy::Upgrade | MigrationPolicy::Bidirectional
        )
    }

    pub fn downgrade(self) -> bool {
        matches!(
            self,
            MigrationPolicy::Downgrade | MigrationPolicy::Bidirectional
        )
    }
}

/// Kafka's checks of a ConsumerGroupHeartbeat request (same order, codes and messages),
/// then the request as the group sees it. `enabled` are the broker's assignors.
pub fn validate(
    req: ConsumerGroupHeartbeatRequest,
    version: i16,
    enabled: &[Assignor],
    client_id: String,
    client_host: String,
) -> Result<HeartbeatArgs, GroupError> {
    if req.group_id.is_empty() {
        return Err(invalid("GroupId can't be empty."));
    }
    if req.instance_id.as_deref() == Some("") {
        return Err(invalid("InstanceId can't be empty."));
    }
    if req.rack_id.as_deref() == Some("") {
        return Err(invalid("RackId can't be empty."));
    }
    // Version 0 lets the coordinator name a joining member; from version 1 the client
    // does (KIP-1082).
    if req.member_id.is_empty() && (version >= 1 || req.member_epoch != 0) {
        return Err(invalid("MemberId can't be empty."));
    }
    match req.member_epoch {
        0 => {
            if req.rebalance_timeout_ms == -1 {
                return Err(invalid(
                    "RebalanceTimeoutMs must be provided in first request.",
                ));
            }
            if req.topic_partitions.as_ref().is_none_or(|t| !t.is_empty()) {
                return Err(invalid("TopicPartitions must be empty when (re-)joining."));
            }
            if req.subscribed_topic_names.is_none() && req.subscribed_topic_regex.is_none() {
                return Err(invalid(
                    "Either SubscribedTopicNames or SubscribedTopicRegex must be non-null when (re-)joining.",
                ));
            }
        }
        STATIC_LEFT_EPOCH if req.instance_id.is_none() => {
            return Err(invalid("InstanceId can't be null."));
        }
        e if e < STATIC_LEFT_EPOCH => return Err(invalid("MemberEpoch is invalid.")),
        _ => {}
    }
    if let Some(r) = req
        .subscribed_topic_regex
        .as_deref()
        .filter(|r| !r.is_empty())
    {
        regex::TopicRegex::compile(r)
            .map_err(|m| GroupError::new(ErrorCode::InvalidRegularExpression, m))?;
    }
    if let Some(a) = req.server_assignor.as_deref() {
        if !Assignor::by_name(a).is_some_and(|x| enabled.contains(&x)) {
            let names: Vec<&str> = ASSIGNORS
                .iter()
                .copied()
                .filter(|n| Assignor::by_name(n).is_some_and(|x| enabled.contains(&x)))
                .collect();
            return Err(GroupError::new(
                ErrorCode::UnsupportedAssignor,
                format!(
                    "ServerAssignor {a} is not supported. Supported assignors: {}.",
                    names.join(", ")
                ),
            ));
        }
    }
    let member_id = if req.member_id.is_empty() {
        crate::random_id::base64_uuid()
    } else {
        req.member_id
    };
    Ok(HeartbeatArgs {
        member_id,
        member_epoch: req.member_epoch,
        instance_id: req.instance_id,
        rack_id: req.rack_id,
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        topic_names: req.subscribed_topic_names,
        regex: req.subscribed_topic_regex,
        assignor: req.server_assignor,
        owned: req.topic_partitions.map(|tps| {
            let mut a = Assignment::new();
            for tp in tps {
                if !tp.partitions.is_empty() {
                    a.entry(tp.topic_id.0).or_default().extend(tp.partitions);
                }
            }
            a
        }),
        client_id,
        client_host,
        // The connection's, set by the handler (the request does not carry it).
        caller: None,
        classic: None,
        takes_over: false,
    })
}
