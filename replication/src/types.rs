//! The openraft type configuration of the controller quorum and the payload of its
//! log entries.

use std::fmt;
use std::io::Cursor;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A controller's id (Kafka's `node.id`).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The quorum's openraft types: entries carry [`MetadataBatch`]es, nodes are
    /// addressed by `host:port` ([`openraft::BasicNode`]), snapshots are whole byte
    /// buffers (a metadata image is small), and the runtime is tokio.
    pub TypeConfig:
        D = MetadataBatch,
        R = (),
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type Raft = openraft::Raft<TypeConfig>;

/// The payload of one Raft entry: metadata records, each framed as Kafka frames them in
/// its metadata log ([`spate_net::metadata_frame::ApiMessageAndVersion`]). The records
/// are checked when proposed, so every committed batch decodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataBatch {
    pub records: Vec<Bytes>,
}

impl MetadataBatch {
    /// An upper bound of the batch's encoded size: its records and one length prefix
    /// (a varint, at most 5 bytes) per record and for the count.
    pub fn size(&self) -> usize {
        5 + self.records.iter().map(|r| r.len() + 5).sum::<usize>()
    }
}

impl fmt::Display for MetadataBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MetadataBatch({} records, {} bytes)",
            self.records.len(),
            self.size()
        )
    }
}
