//! Transactions (Kafka's exactly-once delivery): the transaction coordinator, its
//! records in `__transaction_state`, and the state machine of a transactional id. The
//! partition side (markers, the last stable offset, read_committed) is in
//! `partition.rs` and `producer_state.rs`. Design: docs/adr/0003-transactions.md.

pub mod client;
pub mod coordinator;
pub mod gate;
mod metadata;
mod state_log;

/// Kafka's `Utils.abs(key.hashCode()) % partitions` (the share coordinator's too).
pub use state_log::partition_for;

pub use coordinator::{
    abort_timed_out, expire_idle_ids, serve, TxnCoordinator, TxnRequest, TXN_STATE_TOPIC,
};
