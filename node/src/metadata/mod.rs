//! Topic, partition, config and broker metadata: Kafka's KRaft records, the image they
//! build, and the controller quorum that replicates them.
//!
//! As in Kafka's KRaft, metadata is a log of records applied to a state machine. The
//! log is the quorum's (`spate-replication`, ADR 0005): the controller proposes records,
//! every broker follows what is committed and applies it to its image.

pub mod boot;
pub mod brokers;
pub mod election;
mod image;
pub mod isr;
pub mod leadership;
mod legacy;
mod migrate;
pub mod placement;
pub mod publish;
pub mod quorum_view;
pub mod reassignment;
pub mod records;

pub use boot::MetadataQuorum;
pub use image::{MetadataImage, PartitionInfo, TopicImage};
