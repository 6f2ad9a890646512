//! KIP-932 share groups on the group coordinator: members join with ShareGroupHeartbeat
//! and the coordinator assigns them partitions, several members to a partition where
//! there are more members than partitions. Records are delivered to them by the
//! share-partition leaders (ShareFetch), from state the share coordinator keeps; this
//! side decides membership and assignment, and has that state initialized (and deleted)
//! through the persister before it assigns a partition.
//!
//! * `member.rs`: a member; `group.rs`: a group, its epochs and the heartbeat.
//! * `assignor.rs`: Kafka's `simple` assignor.
//! * `records.rs`: the group's records in `__consumer_offsets` and their replay.

pub mod assignor;
pub mod group;
pub mod member;
pub mod records;

pub use group::{ShareGroup, ShareGroupSettings, ShareHeartbeatArgs, ShareHeartbeatReply};

use spate_net::messages::ShareGroupHeartbeatRequest;
use spate_net::ErrorCode;

use crate::group::consumer::GroupError;

/// The protocol type share groups list with.
pub const PROTOCOL_TYPE: &str = "share";

fn invalid(message: &str) -> GroupError {
    GroupError::new(ErrorCode::InvalidRequest, message)
}

/// Kafka's checks of a ShareGroupHeartbeat request (same order, codes and messages),
/// then the request as the group sees it.
pub fn validate(
    req: ShareGroupHeartbeatRequest,
    client_id: String,
    client_host: String,
) -> Result<ShareHeartbeatArgs, GroupError> {
    if req.member_id.is_empty() {
        // Kafka 4.4 answers this one without a message.
        return Err(GroupError {
            code: ErrorCode::InvalidRequest,
            message: None,
        });
    }
    if req.group_id.is_empty() {
        return Err(invalid("GroupId can't be empty."));
    }
    if req.rack_id.as_deref() == Some("") {
        return Err(invalid("RackId can't be empty."));
    }
    if req.member_epoch == 0 {
        if req
            .subscribed_topic_names
            .as_ref()
            .is_none_or(Vec::is_empty)
        {
            return Err(invalid(
                "SubscribedTopicNames must be set in first request.",
            ));
        }
    } else if req.member_epoch < group::LEAVE_EPOCH {
        return Err(invalid("MemberEpoch is invalid."));
    }
    Ok(ShareHeartbeatArgs {
        member_id: req.member_id,
        member_epoch: req.member_epoch,
        rack_id: req.rack_id,
        topic_names: req.subscribed_topic_names,
        client_id,
        client_host,
    })
}
