//! One member of a share group (KIP-932). Unlike a consumer-group member it never
//! revokes: it takes its target assignment as soon as it heartbeats.

use crate::group::consumer::member::Assignment;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShareMember {
    pub member_id: String,
    pub member_epoch: i32,
    /// The epoch before the last bump: a member whose answer was lost may still
    /// heartbeat with it.
    pub previous_member_epoch: i32,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    /// What the member was last given (its target at its epoch).
    pub assigned: Assignment,
}

impl ShareMember {
    pub fn new(member_id: &str) -> ShareMember {
        ShareMember {
            member_id: member_id.to_string(),
            ..Default::default()
        }
    }
}
