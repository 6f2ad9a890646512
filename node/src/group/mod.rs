//! Consumer groups (the classic protocol in `membership.rs`, KIP-848's consumer
//! protocol in `consumer/`) and committed offsets.

pub mod consumer;
mod coordinator;
pub mod group_config;
mod membership;
mod offsets_log;
pub mod share;
mod share_serve;

/// How a coordinator's failed write to its internal partition is answered.
pub use coordinator::write_error;
pub use coordinator::{forget_topics, serve, tick, Coordinator, GroupRequest, OFFSETS_TOPIC, TICK};
pub use membership::JoinArgs;
pub use offsets_log::partition_for;
