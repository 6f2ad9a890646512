//! Server-side assignors (`group.consumer.assignors`): `uniform` (the default) and
//! `range`. Both see the same input (each member's subscribed topic ids and its current
//! target, the partition count of every subscribed topic) and return every member's new
//! target assignment; every partition of a subscribed topic goes to exactly one member
//! subscribed to it.

mod range;
mod uniform;

use std::collections::{BTreeMap, BTreeSet};

use super::member::{Assignment, TopicId};

/// The assignors Kafka 4.4 ships, in Kafka's default order (the first is the default).
pub const ASSIGNORS: [&str; 2] = ["uniform", "range"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    Uniform,
    Range,
}

impl Assignor {
    pub fn by_name(name: &str) -> Option<Assignor> {
        match name {
            "uniform" => Some(Assignor::Uniform),
            "range" => Some(Assignor::Range),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
        }
    }

    pub fn assign(self, members: &[MemberSpec], topics: &BTreeMap<TopicId, i32>) -> Targets {
        let out = match self {
            Assignor::Uniform => uniform::assign(members, topics),
            Assignor::Range => range::assign(members, topics),
        };
        debug_assert!(covers_exactly_once(members, topics, &out));
        out
    }
}

/// One member as the assignors see it.
pub struct MemberSpec<'a> {
    pub member_id: &'a str,
    /// Subscribed topics that exist.
    pub topics: BTreeSet<TopicId>,
    /// Its current target assignment (stickiness).
    pub previous: &'a Assignment,
}

/// Member id → its target assignment (every member appears, possibly empty).
pub type Targets = BTreeMap<String, Assignment>;

/// Every partition of every topic some member subscribes to is assigned exactly once,
/// and only to a member subscribed to its topic.
pub fn covers_exactly_once(
    members: &[MemberSpec],
    topics: &BTreeMap<TopicId, i32>,
    out: &Targets,
) -> bool {
    let mut seen = BTreeSet::new();
    for m in members {
        for (topic, parts) in out.get(m.member_id).into_iter().flatten() {
            if !m.topics.contains(topic) {
                return false;
            }
            for p in parts {
                if !seen.insert((*topic, *p)) {
                    return false;
                }
            }
        }
    }
    let wanted: usize = topics
        .iter()
        .filter(|(t, _)| members.iter().any(|m| m.topics.contains(*t)))
        .map(|(_, n)| (*n).max(0) as usize)
        .sum();
    seen.len() == wanted
}
