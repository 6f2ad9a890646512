//! Consumer groups (the classic protocol) and committed offsets.

mod coordinator;
mod membership;
mod offsets_log;

pub use coordinator::{forget_topics, serve, Coordinator, GroupRequest, OFFSETS_TOPIC, TICK};
pub use membership::JoinArgs;
pub use offsets_log::partition_for;
