//! Sending partition work to the owner shards and putting the replies back in the
//! order of the request.

use std::rc::Rc;

use spate_net::ErrorCode;

use crate::mesh::{FetchOp, PartitionKey, PartitionOp, PartitionReply, ShardMsg};
use crate::shard::ShardContext;

/// Work sent out; `collect` gathers the replies in the original order.
pub struct Routed {
    total: usize,
    /// Replies known without asking anyone (unknown partitions).
    local: Vec<(usize, PartitionReply)>,
    /// Per shard: the positions its replies fill, and where they arrive.
    remote: Vec<(Vec<usize>, flume::Receiver<Vec<PartitionReply>>)>,
}

/// Where the work for a partition goes.
pub enum Owner {
    /// This broker leads it: the owner shard.
    Shard(usize),
    /// No such partition.
    Unknown,
    /// Another broker leads it (or none does): NOT_LEADER_OR_FOLLOWER.
    NotLeader,
}

/// The shard that owns `key` when this broker leads it, or holds a replica of it and
/// `replica_may_serve` (KIP-392: a consumer's Fetch v11+ may be served by a follower).
pub fn owner_for(ctx: &ShardContext, key: &PartitionKey, replica_may_serve: bool) -> Owner {
    let image = ctx.image.borrow();
    let me = ctx.config.node_id;
    match image.partition(&key.topic, key.partition) {
        None => Owner::Unknown,
        Some(info) if info.leader == me || (replica_may_serve && info.is_replica(me)) => {
            Owner::Shard(ctx.owner_of(info.slot))
        }
        Some(_) => Owner::NotLeader,
    }
}

/// Whether a follower replica may serve `op`: a consumer's Fetch that may be served
/// by a follower (KIP-392), and the log dir ops (every replica has a log dir).
fn replica_may_serve(op: &PartitionOp) -> bool {
    matches!(
        op,
        PartitionOp::Fetch(FetchOp {
            reader: crate::partition::Reader::ConsumerNearby,
            ..
        }) | PartitionOp::Describe
            | PartitionOp::AlterLogDir { .. }
    )
}

/// Send each op to its owner, one message per shard, in order. Awaiting the sends here
/// (not in a spawned task) keeps per-connection order on every shard-pair channel.
pub async fn send(ctx: &Rc<ShardContext>, ops: Vec<(PartitionKey, PartitionOp)>) -> Routed {
    send_from(ctx, ops, std::time::Instant::now()).await
}

/// [`send`] for a request read off its connection at `arrived` (the owner measures the
/// produce stage from there to its pickup).
pub async fn send_from(
    ctx: &Rc<ShardContext>,
    ops: Vec<(PartitionKey, PartitionOp)>,
    arrived: std::time::Instant,
) -> Routed {
    let total = ops.len();
    let mut local = Vec::new();
    // Per shard: the positions its replies fill, and its ops.
    type ShardOps = (Vec<usize>, Vec<(PartitionKey, PartitionOp)>);
    let mut by_shard: Vec<ShardOps> = (0..ctx.shard_count)
        .map(|_| (Vec::new(), Vec::new()))
        .collect();
    for (pos, (key, op)) in ops.into_iter().enumerate() {
        match owner_for(ctx, &key, replica_may_serve(&op)) {
            Owner::Shard(shard) => {
                by_shard[shard].0.push(pos);
                by_shard[shard].1.push((key, op));
            }
            Owner::Unknown => local.push((
                pos,
                PartitionReply::Error(ErrorCode::UnknownTopicOrPartition.code()),
            )),
            Owner::NotLeader => local.push((
                pos,
                PartitionReply::Error(ErrorCode::NotLeaderOrFollower.code()),
            )),
        }
    }
    let mut remote = Vec::new();
    for (shard, (positions, ops)) in by_shard.into_iter().enumerate() {
        if ops.is_empty() {
            continue;
        }
        let (tx, rx) = flume::bounded(1);
        if ctx.senders[shard]
            .send_async(ShardMsg::Partitions {
                ops,
                sent: std::time::Instant::now(),
                arrived,
                reply: tx,
            })
            .await
            .is_ok()
        {
            remote.push((positions, rx));
        } else {
            local.extend(positions.into_iter().map(|p| {
                (
                    p,
                    PartitionReply::Error(ErrorCode::UnknownServerError.code()),
                )
            }));
        }
    }
    Routed {
        total,
        local,
        remote,
    }
}

impl Routed {
    pub async fn collect(self) -> Vec<PartitionReply> {
        let mut slots: Vec<Option<PartitionReply>> = (0..self.total).map(|_| None).collect();
        for (pos, reply) in self.local {
            slots[pos] = Some(reply);
        }
        for (positions, rx) in self.remote {
            match rx.recv_async().await {
                Ok(replies) => {
                    for (pos, reply) in positions.into_iter().zip(replies) {
                        slots[pos] = Some(reply);
                    }
                }
                Err(_) => {
                    for pos in positions {
                        slots[pos] =
                            Some(PartitionReply::Error(ErrorCode::UnknownServerError.code()));
                    }
                }
            }
        }
        slots
            .into_iter()
            .map(|s| s.unwrap_or(PartitionReply::Error(ErrorCode::UnknownServerError.code())))
            .collect()
    }
}

/// Send and wait in one step, for handlers with no ordering concern.
pub async fn run(
    ctx: &Rc<ShardContext>,
    ops: Vec<(PartitionKey, PartitionOp)>,
) -> Vec<PartitionReply> {
    send(ctx, ops).await.collect().await
}

/// The error code carried by a reply, 0 when it is a success.
pub fn error_of(reply: &PartitionReply) -> i16 {
    match reply {
        PartitionReply::Error(code) => *code,
        PartitionReply::FetchError { code, .. } => *code,
        PartitionReply::MissingKeys { .. } | PartitionReply::Refused { .. } => {
            ErrorCode::InvalidRecord.code()
        }
        _ => 0,
    }
}
