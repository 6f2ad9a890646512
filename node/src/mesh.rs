//! Cross-shard messages and the channel mesh: one bounded `flume` channel per ordered
//! shard pair (a shard's messages to itself go through its own channel too, so per-pair
//! FIFO order is the only ordering rule). Payloads travel as `Bytes`, never copied.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::controller::{ControllerReply, ControllerRequest};
use crate::metadata::MetadataImage;

/// Capacity of each shard-pair channel: enough to keep a busy peer fed, small enough
/// that a stalled shard pushes back on its callers.
const CHANNEL_CAPACITY: usize = 1024;

/// A partition addressed by topic name and index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionKey {
    pub topic: Arc<str>,
    pub partition: i32,
}

/// A read of one partition (PartitionOp::Fetch).
#[derive(Debug)]
pub struct FetchOp {
    pub offset: i64,
    pub max_bytes: usize,
    pub min_one: bool,
    /// `isolation_level=read_committed`: nothing at or past the last stable offset.
    pub read_committed: bool,
    /// The leader epoch the reader believes current (-1: not said): KIP-320's check.
    pub current_leader_epoch: i32,
    /// The epoch of the last batch the reader has (-1: not said): a leader whose
    /// log differs there answers with the diverging epoch instead of data.
    pub last_fetched_epoch: i32,
    pub reader: crate::partition::Reader,
    /// KIP-392 on the leader: the replicas in the consumer's rack (the rack-aware
    /// replica selector is on and the client named its rack); the leader may send
    /// the consumer to the most caught-up in-sync one of them.
    pub same_rack: Option<Vec<i32>>,
}

/// Work for one partition, done by its owner shard.
#[derive(Debug)]
pub enum PartitionOp {
    /// Append validated-on-arrival record batches; `check` is the topic's schema
    /// validation, when it has one.
    Produce {
        records: Bytes,
        acks: i16,
        /// KIP-890 verification of transactional batches.
        txn: TxnCheck,
        check: Option<Arc<crate::schema_registry::SchemaCheck>>,
        /// acks=all: how long to wait for the in-sync replicas (the request's timeout).
        timeout: std::time::Duration,
    },
    /// Read up to `max_bytes` from `offset` (at least one batch when `min_one`).
    /// `max_bytes: 0` without `min_one` reads nothing: it checks the offset and reports
    /// the high watermark and log start, without touching the log's data.
    Fetch(FetchOp),
    /// ListOffsets: -1 latest, -2 earliest, -3 max timestamp, -4 earliest local, or a time.
    ListOffset {
        timestamp: i64,
        /// `isolation_level=read_committed`: latest is the last stable offset.
        read_committed: bool,
        /// KIP-320's check (-1: not said).
        current_leader_epoch: i32,
    },
    /// DeleteRecords: move the log start offset up to `offset` (-1 = high watermark).
    DeleteRecords { offset: i64 },
    /// OffsetForLeaderEpoch: the end offset of `epoch`.
    EndOffsetForEpoch {
        current_leader_epoch: i32,
        epoch: i32,
    },
    /// DescribeLogDirs: size, and the future replica of a move in flight.
    Describe,
    /// AlterReplicaLogDirs: move the partition's log to log dir `dest` (an index).
    AlterLogDir { dest: usize },
    /// DescribeProducers: the partition's producers.
    DescribeProducers,
    /// End a producer's transaction here with a commit or abort marker.
    WriteTxnMarker {
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        /// Transaction version 2: the marker carries the epoch after the transaction's.
        bumped: bool,
    },
    /// Share groups (KIP-932): acknowledge, release and acquire records of one
    /// share-partition.
    Share(crate::share::leader::ShareOp),
}

/// A long-polling Fetch's interest in one partition: data past `seen`, up to the high
/// watermark for a consumer, up to the written end for a follower.
#[derive(Debug, Clone)]
pub struct Watch {
    pub key: PartitionKey,
    pub seen: i64,
    pub follower: bool,
    /// A share group's ShareFetch: records of its share-partition becoming available
    /// again (released, locks expired) count as data too.
    pub share_group: Option<Arc<str>>,
}

/// How the owner treats a transactional batch whose transaction is not ongoing on the
/// partition yet (KIP-890).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnCheck {
    /// Ask the coordinator of `transactional_id` first: version 1 (`tv2` false)
    /// verifies that the partition is in the transaction, version 2 adds it.
    Verify {
        transactional_id: Arc<str>,
        tv2: bool,
    },
    /// No transactional id came with the request: Kafka appends without verifying.
    Skip,
}

impl PartitionOp {
    /// The request type, as metrics label it.
    pub fn kind(&self) -> &'static str {
        match self {
            PartitionOp::Produce { .. } => "Produce",
            PartitionOp::Fetch(_) => "Fetch",
            PartitionOp::ListOffset { .. } => "ListOffsets",
            PartitionOp::DeleteRecords { .. } => "DeleteRecords",
            PartitionOp::EndOffsetForEpoch { .. } => "OffsetForLeaderEpoch",
            PartitionOp::Describe => "DescribeLogDirs",
            PartitionOp::AlterLogDir { .. } => "AlterReplicaLogDirs",
            PartitionOp::WriteTxnMarker { .. } => "WriteTxnMarkers",
            PartitionOp::DescribeProducers => "DescribeProducers",
            PartitionOp::Share(op) if op.fetch.is_some() => "ShareFetch",
            PartitionOp::Share(_) => "ShareAcknowledge",
        }
    }
}

/// The owner's answer for one `PartitionOp`, in the same order as the ops.
#[derive(Debug)]
pub enum PartitionReply {
    Error(i16),
    /// Produce refused because records have no key and the topic is compacted: Kafka's
    /// INVALID_RECORD with one record error per record.
    MissingKeys {
        /// Records without a key.
        count: u32,
        /// Their indices in their batch (the first `MAX_LISTED_MISSING_KEYS`).
        records: Vec<u32>,
        log_start_offset: i64,
    },
    /// `bytes_in`/`records_in`: what this produce appended (0 for a duplicate retry).
    Produced {
        base_offset: i64,
        log_append_time: i64,
        log_start_offset: i64,
        bytes_in: u64,
        records_in: u64,
    },
    /// Produce refused because records failed the topic's schema validation:
    /// INVALID_RECORD with one record error per record listed.
    Refused {
        count: u32,
        records: Vec<u32>,
        log_start_offset: i64,
    },
    /// acks=0: nothing to say.
    ProducedNoAck {
        bytes_in: u64,
        records_in: u64,
    },
    Fetched {
        batches: Vec<Bytes>,
        high_watermark: i64,
        log_start_offset: i64,
        last_stable_offset: i64,
        /// read_committed: aborted transactions overlapping the batches, as
        /// (producer id, first offset).
        aborted: Vec<(i64, i64)>,
        /// Where this reader's data ends: the high watermark, the last stable offset
        /// (read_committed) or, for a follower, the leader's written end.
        readable_end: i64,
        /// The reader's log diverged from this leader's: (epoch, end offset) of the
        /// last epoch they share (Fetch's DivergingEpoch); no batches then.
        diverging: Option<(i32, i64)>,
        /// KIP-392: the replica the consumer should fetch from instead; no batches then.
        preferred_read_replica: Option<i32>,
    },
    FetchError {
        code: i16,
        high_watermark: i64,
        log_start_offset: i64,
    },
    Offset {
        offset: i64,
        timestamp: i64,
        /// The leader epoch of the batch holding `offset` (-1: unknown).
        leader_epoch: i32,
    },
    LowWatermark(i64),
    EpochEnd {
        leader_epoch: i32,
        end_offset: i64,
    },
    Described {
        size_bytes: u64,
        future: Option<crate::log_move::FutureReplica>,
    },
    MarkerWritten,
    /// (producer id, epoch, last sequence, last write time, ongoing transaction start).
    Producers(Vec<(i64, i16, i32, i64, i64)>),
    Share(crate::share::leader::ShareReply),
}

/// What one shard asks of another.
pub enum ShardMsg {
    /// Partition work; the reply holds one entry per op, in order.
    Partitions {
        ops: Vec<(PartitionKey, PartitionOp)>,
        sent: Instant,
        /// When the request these ops come from was read off its connection.
        arrived: Instant,
        reply: flume::Sender<Vec<PartitionReply>>,
    },
    /// Resolve when any listed partition's readable end passes the given offset, or at
    /// the deadline, with the positions (in `watches`) of the partitions that have data
    /// past their offset or are gone; empty at the deadline.
    WaitForData {
        watches: Vec<Watch>,
        deadline: Instant,
        reply: flume::Sender<Vec<usize>>,
    },
    /// To the shard coordinating the group (or to every shard, for listings). A request
    /// the shard may not serve (its group's partition is loading, or no longer led
    /// there) is dropped after its error code is sent on `refused`.
    Group {
        request: crate::group::GroupRequest,
        refused: flume::Sender<i16>,
    },
    /// To the shard coordinating the transactional id.
    Txn(crate::txn::TxnRequest),
    /// To the shard coordinating the share-partition's state (KIP-932).
    Share(crate::share::coordinator::ShareRequest),
    /// Liveness probe: answers whether the shard serves (false while shutting down).
    Ping { reply: flume::Sender<bool> },
    /// A metrics snapshot of the shard, for a scrape.
    Metrics {
        reply: flume::Sender<crate::metrics::ShardSnapshot>,
    },
    /// Partition work from outside the shards (the schema registry): the receiving
    /// shard routes `ops` to their owners and answers with the replies, in order.
    Forward {
        ops: Vec<(PartitionKey, PartitionOp)>,
        reply: flume::Sender<Vec<PartitionReply>>,
    },
    /// To the controller shard only.
    Controller {
        request: ControllerRequest,
        reply: flume::Sender<ControllerReply>,
    },
    /// A new metadata image; the shard opens, updates and deletes its partitions, then
    /// acknowledges.
    Metadata {
        image: Arc<MetadataImage>,
        done: flume::Sender<()>,
    },
    /// Accept on new listeners, stop on removed ones (`listener_set.rs`).
    Listeners(crate::listener_set::ListenerChange),
    /// Stop accepting, flush and close the logs, then acknowledge.
    Shutdown { done: flume::Sender<()> },
}

/// Every shard's ends of the mesh.
pub struct ShardLinks {
    /// `senders[d]` sends to shard `d`.
    pub senders: Vec<flume::Sender<ShardMsg>>,
    /// `receivers[s]` receives from shard `s` (and from the main thread when `s` is the
    /// shard itself: the process-wide control messages arrive on the self channel).
    pub receivers: Vec<flume::Receiver<ShardMsg>>,
}

/// Build the full mesh for `n` shards. `links[s].senders[d]` pairs with
/// `links[d].receivers[s]`.
pub fn build_mesh(n: usize) -> Vec<ShardLinks> {
    let mut senders: Vec<Vec<flume::Sender<ShardMsg>>> =
        (0..n).map(|_| Vec::with_capacity(n)).collect();
    let mut receivers: Vec<Vec<flume::Receiver<ShardMsg>>> =
        (0..n).map(|_| Vec::with_capacity(n)).collect();
    for from in senders.iter_mut() {
        for to in receivers.iter_mut() {
            let (tx, rx) = flume::bounded(CHANNEL_CAPACITY);
            from.push(tx);
            // Each receiver list is filled in source order because sources are the outer loop.
            to.push(rx);
        }
    }
    senders
        .into_iter()
        .zip(receivers)
        .map(|(senders, receivers)| ShardLinks { senders, receivers })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_pairs_line_up() {
        let mesh = build_mesh(3);
        for s in 0..3 {
            for d in 0..3 {
                let (tx, _rx) = flume::bounded(1);
                mesh[s].senders[d]
                    .send(ShardMsg::Shutdown { done: tx })
                    .unwrap();
                assert_eq!(mesh[d].receivers[s].len(), 1, "{s} -> {d}");
                mesh[d].receivers[s].recv().unwrap();
            }
        }
    }
}
