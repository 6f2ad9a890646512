//! AlterPartition: a partition leader's ISR change, as the controller receives it.

/// An ISR change a leader asks for.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IsrChange {
    /// The leader asking, and its broker epoch.
    pub broker_id: i32,
    pub broker_epoch: i64,
    pub topic_id: [u8; 16],
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// (broker id, the broker epoch its fetches carried; -1 unknown)
    pub new_isr: Vec<(i32, i64)>,
    /// Kafka's LeaderRecoveryState: 0 RECOVERED, 1 RECOVERING.
    pub leader_recovery_state: i8,
}

/// The partition after an ISR change.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PartitionState {
    pub leader: i32,
    pub leader_epoch: i32,
    pub isr: Vec<i32>,
    pub partition_epoch: i32,
    pub leader_recovery_state: i8,
}
