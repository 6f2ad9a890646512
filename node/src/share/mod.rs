//! Share groups (KIP-932): the share-partitions this broker leads (`leader.rs`, their
//! records' states in `partition.rs`), the members' share sessions (`session.rs`), and
//! the durable state of each share-partition, kept by the share coordinator in
//! `__share_group_state` (`coordinator.rs`) and reached through the persister.

pub mod coordinator;
pub mod leader;
pub mod partition;
pub mod persister;
mod records;
mod remote;
pub mod session;
mod state;

pub use coordinator::{ShareCoordinator, SHARE_STATE_TOPIC};
