//! Topic and partition metadata: records, the state they build, and their on-disk log.
//!
//! As in Kafka's KRaft, metadata is a log of records applied to a state machine. On a
//! single node the log is a local file; the controller quorum will replicate the same
//! records later.

mod image;
mod record;
mod store;

pub use image::{MetadataImage, TopicImage};
pub use record::MetadataRecord;
pub use store::MetadataStore;
