//! Fetch: read every requested partition from its owner, long-poll on the owners'
//! append notifications until `min_bytes` or `max_wait_ms`, and answer with the
//! batches as a chain of `Bytes`.
//!
//! Fetch sessions: the broker answers every request in full and gives session id 0,
//! which tells clients (KIP-227) to keep sending full requests.

use crate::security::authorizer::acl::{Operation, ResourceType};
use crate::security::authorizer::Caller;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use spate_net::messages::fetch_response::{
    FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
};
use spate_net::messages::{FetchRequest, FetchResponse};
use spate_net::{ErrorCode, Records};

use super::leader_hints;
use crate::mesh::{FetchOp, PartitionKey, PartitionOp, PartitionReply, ShardMsg, Watch};
use crate::metrics::record_count;
use crate::partition::Reader;
use crate::replica::quota;
use crate::route;
use crate::security::Listener;
use crate::shard::ShardContext;

/// Fetch v13 addresses topics by id instead of name.
const TOPIC_IDS_FROM: i16 = 13;
const READ_COMMITTED: i8 = 1;

/// Below this, a fair share is not worth a read of its own: the budget goes to the
/// first partitions in request order instead.
const MIN_SHARE: usize = 16 * 1024;
/// Top-up rounds after the first read (or after a long-poll wake-up).
const MAX_ROUNDS: usize = 8;

/// One requested partition: where its answer goes, what to read, what was read.
struct Wanted {
    topic: usize,
    part: usize,
    key: PartitionKey,
    /// The request's fetch offset.
    fetch_offset: i64,
    /// Next offset to read (after the batches already collected).
    next: i64,
    /// `partition_max_bytes`.
    limit: usize,
    /// Bytes collected so far, and the batches.
    taken: usize,
    batches: Vec<Bytes>,
    high_watermark: i64,
    log_start_offset: i64,
    last_stable_offset: i64,
    /// read_committed: aborted transactions in what was read (producer id, first offset).
    aborted: Vec<(i64, i64)>,
    read_committed: bool,
    /// KIP-320: the leader epoch the reader believes current (-1: not said).
    current_leader_epoch: i32,
    /// The epoch of the reader's last batch (-1: not said); sent with the first read
    /// only (later reads continue past it).
    last_fetched_epoch: i32,
    reader: Reader,
    /// Where this reader's data ends at the owner (see `PartitionReply::Fetched`).
    readable_end: i64,
    /// The leader's answer that the reader's log diverged: (epoch, end offset).
    diverging: Option<(i32, i64)>,
    /// KIP-392: the replicas in the consumer's rack, when the leader may send it to one.
    same_rack: Option<Vec<i32>>,
    /// The replica the leader sent the consumer to.
    preferred_read_replica: Option<i32>,
    error: Option<i16>,
    /// Not settled: the partition may still have readable data that fits.
    wants_more: bool,
    /// A follower's fetch of a replica `leader.replication.throttled.replicas` names:
    /// its bytes count against the leader's replication quota.
    quota_counted: bool,
    /// ...and held back in this request (the follower is out of sync and the quota is
    /// exceeded): read for its offsets only, never waited for.
    throttled: bool,
}

impl Wanted {
    fn room(&self) -> usize {
        self.limit.saturating_sub(self.taken)
    }
}

/// The response budget of one Fetch request, and whether its first batch may still
/// exceed it (KIP-74: until some partition returned data).
struct Budget {
    left: usize,
    min_one: bool,
    /// Smallest share of the next round: doubled after a round that returned nothing
    /// (every partition's next batch was larger than its share).
    floor: usize,
}

/// The offset after a record batch (base offset plus last offset delta, plus one).
fn next_offset_after(batch: &Bytes) -> Option<i64> {
    let base = i64::from_be_bytes(batch.get(0..8)?.try_into().ok()?);
    let delta = i32::from_be_bytes(batch.get(23..27)?.try_into().ok()?);
    base.checked_add(i64::from(delta))?.checked_add(1)
}

pub async fn handle(
    ctx: &Rc<ShardContext>,
    req: FetchRequest,
    version: i16,
    listener: &Listener,
    caller: &Caller,
) -> FetchResponse {
    if req.session_id != 0 || req.session_epoch > 0 {
        // We never hand out sessions, so any session id is unknown.
        return FetchResponse {
            error_code: ErrorCode::FetchSessionIdNotFound.code(),
            session_id: 0,
            ..Default::default()
        };
    }
    // Followers need CLUSTER_ACTION on the cluster, consumers READ on each topic (a
    // replica id from v15 on travels in replica_state).
    let follower = req.replica_id >= 0 || req.replica_state.replica_id >= 0;
    let reader = if follower {
        Reader::Follower {
            broker: req.replica_id.max(req.replica_state.replica_id),
            broker_epoch: req.replica_state.replica_epoch,
            reports_end: true,
            log_start: -1,
        }
    } else if version >= NEARBY_FROM {
        Reader::ConsumerNearby
    } else {
        Reader::Consumer
    };
    // KIP-392: with the rack-aware selector on, a consumer that named its rack may be
    // sent to a replica in it.
    let client_rack =
        (!follower && ctx.config.rack_aware_replica_selector() && !req.rack_id.is_empty())
            .then_some(req.rack_id.as_str());
    let cluster_action = follower && ctx.authorized_on_cluster(caller, Operation::ClusterAction);
    let may_read = |name: &str| {
        if follower {
            cluster_action
        } else {
            ctx.authorized(caller, Operation::Read, ResourceType::Topic, name)
        }
    };
    let image = ctx.image();
    // Kafka's leader-side replication quota (`replica/quota.rs`).
    let follower_id = req.replica_id.max(req.replica_state.replica_id);
    let quota = &ctx.replication_quotas.leader;
    let me = ctx.config.node_id;
    let mut responses = Vec::with_capacity(req.topics.len());
    let mut wanted = Vec::new();
    for (ti, topic) in req.topics.iter().enumerate() {
        let resolved = if version >= TOPIC_IDS_FROM {
            image.topic_by_id(&topic.topic_id.0).map(|t| t.name.clone())
        } else {
            Some(topic.topic.clone())
        };
        let denied = resolved.as_deref().is_some_and(|name| !may_read(name));
        let mut out = FetchableTopicResponse {
            topic: topic.topic.clone(),
            topic_id: topic.topic_id,
            partitions: Vec::with_capacity(topic.partitions.len()),
        };
        for (pi, p) in topic.partitions.iter().enumerate() {
            let mut data = PartitionData {
                partition_index: p.partition,
                aborted_transactions: (req.isolation_level == READ_COMMITTED).then(Vec::new),
                ..Default::default()
            };
            match &resolved {
                Some(_) if denied => data.error_code = ErrorCode::TopicAuthorizationFailed.code(),
                Some(name) => {
                    let quota_counted = follower
                        && quota::throttled(&image, name, p.partition, quota::LEADER_REPLICAS, me);
                    let throttled = quota_counted
                        && !image
                            .partition(name, p.partition)
                            .is_some_and(|info| info.isr.contains(&follower_id))
                        && quota.exceeded();
                    wanted.push(Wanted {
                        topic: ti,
                        part: pi,
                        key: PartitionKey {
                            topic: Arc::from(name.as_str()),
                            partition: p.partition,
                        },
                        fetch_offset: p.fetch_offset,
                        next: p.fetch_offset,
                        limit: p.partition_max_bytes.max(0) as usize,
                        taken: 0,
                        batches: Vec::new(),
                        high_watermark: -1,
                        log_start_offset: -1,
                        last_stable_offset: -1,
                        aborted: Vec::new(),
                        // Followers read everything written, transactions or not.
                        read_committed: !follower && req.isolation_level == READ_COMMITTED,
                        current_leader_epoch: p.current_leader_epoch,
                        last_fetched_epoch: p.last_fetched_epoch,
                        reader: match reader {
                            Reader::Follower {
                                broker,
                                broker_epoch,
                                reports_end,
                                ..
                            } => Reader::Follower {
                                broker,
                                broker_epoch,
                                reports_end,
                                log_start: p.log_start_offset,
                            },
                            other => other,
                        },
                        readable_end: -1,
                        diverging: None,
                        same_rack: client_rack
                            .and_then(|rack| same_rack(ctx, &image, name, p.partition, rack)),
                        preferred_read_replica: None,
                        error: None,
                        wants_more: true,
                        quota_counted,
                        throttled,
                    })
                }
                None => data.error_code = ErrorCode::UnknownTopicId.code(),
            }
            out.partitions.push(data);
        }
        responses.push(out);
    }

    // Kafka's response bound: the smaller of the request's max_bytes and the broker's
    // fetch.max.bytes; min_bytes cannot ask for more than that.
    let max_total = (req.max_bytes.max(0) as usize).min(ctx.config.fetch_max_bytes);
    let min_bytes = (req.min_bytes.max(0) as usize).min(max_total);
    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let mut budget = Budget {
        left: max_total,
        min_one: true,
        floor: MIN_SHARE,
    };

    read_all(ctx, &mut wanted, &mut budget).await;
    loop {
        let bytes: usize = wanted.iter().map(|w| w.taken).sum();
        // Kafka answers at once when a partition has an error, a diverging epoch or a
        // preferred read replica.
        let any_error = wanted.iter().any(|w| {
            w.error.is_some() || w.diverging.is_some() || w.preferred_read_replica.is_some()
        });
        if bytes >= min_bytes
            || any_error
            || wanted.is_empty()
            || Instant::now() >= deadline
            || ctx.is_shutting_down()
        {
            break;
        }
        // Wait for data past what the reads saw (their high watermarks), not past the
        // fetch offsets: otherwise a partition with some data but less than min_bytes
        // would wake the wait at once, over and over.
        let seen: Vec<i64> = wanted.iter().map(|w| w.readable_end.max(w.next)).collect();
        let ready = wait_for_data(ctx, &wanted, &seen, deadline).await;
        if ready.is_empty() {
            // Deadline passed with nothing new: answer with what there is.
            break;
        }
        // Read again only where the owners saw new data, from where the last read ended.
        for i in ready {
            if let Some(w) = wanted.get_mut(i) {
                w.wants_more = w.error.is_none() && (w.room() > 0 || budget.min_one);
            }
        }
        read_more(ctx, &mut wanted, &mut budget).await;
    }

    trim_to_kafka_bounds(&mut wanted, max_total);
    // Every throttled partition's bytes count, in sync or not (Kafka's
    // `sizeOfThrottledPartitions`).
    let counted: usize = wanted
        .iter()
        .filter(|w| w.quota_counted && w.error.is_none())
        .map(|w| w.taken)
        .sum();
    if counted > 0 {
        quota.record(counted);
    }
    // KIP-951: the leaders named in NOT_LEADER_OR_FOLLOWER answers.
    let mut leaders = std::collections::BTreeSet::new();
    for w in wanted {
        let data = &mut responses[w.topic].partitions[w.part];
        data.high_watermark = w.high_watermark;
        data.last_stable_offset = if w.last_stable_offset >= 0 {
            w.last_stable_offset
        } else {
            w.high_watermark
        };
        if let Some(list) = data.aborted_transactions.as_mut() {
            list.extend(w.aborted.iter().map(|&(producer_id, first_offset)| {
                spate_net::messages::fetch_response::AbortedTransaction {
                    producer_id,
                    first_offset,
                }
            }));
        }
        data.log_start_offset = w.log_start_offset;
        if let Some(replica) = w.preferred_read_replica {
            data.preferred_read_replica = replica;
        }
        if let Some((epoch, end_offset)) = w.diverging {
            data.diverging_epoch =
                spate_net::messages::fetch_response::EpochEndOffset { epoch, end_offset };
        }
        match w.error {
            Some(code) => {
                data.error_code = code;
                data.records = Some(Records::new());
                if code == ErrorCode::NotLeaderOrFollower.code() && version >= LEADER_HINTS_FROM {
                    if let Some((leader_id, leader_epoch)) =
                        leader_hints::current_leader(&ctx.image(), &w.key.topic, w.key.partition)
                    {
                        data.current_leader = LeaderIdAndEpoch {
                            leader_id,
                            leader_epoch,
                        };
                        leaders.insert(leader_id);
                    }
                }
            }
            None if w.taken > 0 => {
                // Consumers' traffic is counted here, for what is sent, once; as
                // Kafka's BytesOutPerSec, followers' fetches are not consumers'.
                if !follower {
                    let mut m = ctx.metrics.borrow_mut();
                    let t = m.topic(&w.key.topic);
                    t.bytes_out += w.taken as u64;
                    t.messages_out += w.batches.iter().map(record_count).sum::<u64>();
                }
                data.records = Some(Records::from_chunks(w.batches));
            }
            None => data.records = Some(Records::new()),
        }
    }
    for data in responses.iter_mut().flat_map(|t| &mut t.partitions) {
        if data.records.is_none() {
            data.records = Some(Records::new());
        }
    }
    let mut metrics = ctx.metrics.borrow_mut();
    for p in responses
        .iter()
        .flat_map(|t| &t.partitions)
        .filter(|p| p.error_code != 0)
    {
        metrics.error("Fetch", p.error_code);
    }
    drop(metrics);
    // Empty (nothing looked up) unless some partition is led elsewhere.
    let node_endpoints = if leaders.is_empty() {
        Vec::new()
    } else {
        leader_hints::endpoints(&ctx.image(), &leaders, listener, ctx.config.node_id)
            .into_iter()
            .map(|(node_id, host, port, rack)| NodeEndpoint {
                node_id,
                host,
                port,
                rack,
            })
            .collect()
    };
    FetchResponse {
        responses,
        session_id: 0,
        node_endpoints,
        ..Default::default()
    }
}

/// Fetch from this version on carries KIP-951's leader hints.
const LEADER_HINTS_FROM: i16 = 16;
/// Fetch from this version on carries the consumer's rack (KIP-392): a follower may
/// serve it.
const NEARBY_FROM: i16 = 11;

/// KIP-392: the replicas other than the leader in `rack`, when this broker leads the
/// partition and is not in that rack (a leader in the consumer's rack serves it).
fn same_rack(
    ctx: &ShardContext,
    image: &crate::metadata::MetadataImage,
    topic: &str,
    partition: i32,
    rack: &str,
) -> Option<Vec<i32>> {
    let info = image.partition(topic, partition)?;
    let rack_of = |b: i32| image.brokers.get(&b).and_then(|r| r.rack.as_deref());
    let me = ctx.config.node_id;
    if info.leader != me || rack_of(me) == Some(rack) {
        return None;
    }
    Some(
        info.replicas
            .iter()
            .copied()
            .filter(|&r| r != me && rack_of(r) == Some(rack))
            .collect(),
    )
}

/// Kafka's response bounds over what was read, in request order: each partition gets
/// at most its `partition_max_bytes` and what is left of the response budget, except
/// that the first partition with data keeps its first batch whatever its size
/// (KIP-74). The reads stay within budget plus that one batch; this drops what a
/// partition read alongside an oversized first batch, as Kafka would not send it.
fn trim_to_kafka_bounds(wanted: &mut [Wanted], max_total: usize) {
    let mut left = max_total;
    let mut first = true;
    for w in wanted.iter_mut().filter(|w| w.error.is_none()) {
        let cap = w.limit.min(left);
        let mut kept = 0usize;
        let mut count = 0usize;
        for b in &w.batches {
            if kept + b.len() <= cap || (first && count == 0) {
                kept += b.len();
                count += 1;
            } else {
                break;
            }
        }
        w.batches.truncate(count);
        w.taken = kept;
        if kept > 0 {
            first = false;
        }
        left = left.saturating_sub(kept);
    }
}

/// The first read of a request: every partition at once, each with an equal share of
/// the budget (capped by its `partition_max_bytes`), so that the common case (many
/// partitions, a little data each) is one round trip to each owner. Partitions whose
/// data did not fit their share are topped up by `read_more`.
async fn read_all(ctx: &Rc<ShardContext>, wanted: &mut [Wanted], budget: &mut Budget) {
    let all: Vec<usize> = (0..wanted.len()).collect();
    read_round(ctx, wanted, &all, budget, true).await;
    read_more(ctx, wanted, budget).await;
}

/// Rounds of reads for the partitions that want more, until they are settled or the
/// budget is spent. Every round's allowances add up to at most what is left, so the
/// bytes read for one request never exceed its budget (plus one batch, KIP-74).
///
/// Rounds stop after `MAX_ROUNDS`: by then the response holds data (the first round
/// with nothing collected yet gives its first partition a whole batch), and the client
/// simply fetches again for the rest.
async fn read_more(ctx: &Rc<ShardContext>, wanted: &mut [Wanted], budget: &mut Budget) {
    let mut rounds = 0;
    loop {
        let candidates: Vec<usize> = (0..wanted.len())
            .filter(|&i| wanted[i].wants_more)
            .collect();
        if candidates.is_empty() {
            return;
        }
        if (budget.left == 0 && !budget.min_one) || rounds >= MAX_ROUNDS {
            for &i in &candidates {
                wanted[i].wants_more = false;
            }
            return;
        }
        read_round(ctx, wanted, &candidates, budget, false).await;
        rounds += 1;
    }
}

/// One parallel read of `which` (in request order). Allowances: an equal share of the
/// budget (at least `MIN_SHARE`, and doubled on each round that returned nothing),
/// handed out in request order until the budget is spent. `all`: the first round,
/// where every partition is asked, for its offsets and errors, even with no allowance.
async fn read_round(
    ctx: &Rc<ShardContext>,
    wanted: &mut [Wanted],
    which: &[usize],
    budget: &mut Budget,
    all: bool,
) {
    let share = (budget.left / which.len().max(1)).max(budget.floor);
    let mut rem = budget.left;
    let mut first = budget.min_one;
    let mut asked = Vec::with_capacity(which.len());
    let mut ops = Vec::with_capacity(which.len());
    for &i in which {
        let w = &wanted[i];
        // A throttled partition gets no bytes, not even KIP-74's first batch.
        let allowance = if w.throttled {
            0
        } else {
            w.room().min(share).min(rem)
        };
        let min_one = !w.throttled && std::mem::take(&mut first);
        if allowance == 0 && !min_one && !all {
            continue;
        }
        rem -= allowance;
        // Settled after this read if even everything it could ever get did not fit.
        let full = allowance >= w.room().min(budget.left);
        asked.push((i, full));
        // The reader's own position (its last fetched epoch, a follower's log end)
        // holds for the request's first read only.
        let first_read = w.next == w.fetch_offset && w.taken == 0;
        let reader = match w.reader {
            Reader::Follower {
                broker,
                broker_epoch,
                log_start,
                ..
            } => Reader::Follower {
                broker,
                broker_epoch,
                reports_end: first_read && all,
                log_start,
            },
            other => other,
        };
        ops.push((
            w.key.clone(),
            PartitionOp::Fetch(FetchOp {
                offset: w.next,
                max_bytes: allowance,
                min_one,
                read_committed: w.read_committed,
                current_leader_epoch: w.current_leader_epoch,
                last_fetched_epoch: if first_read { w.last_fetched_epoch } else { -1 },
                reader,
                same_rack: if first_read && all {
                    w.same_rack.clone()
                } else {
                    None
                },
            }),
        ));
    }
    let replies = route::run(ctx, ops).await;
    let mut returned = 0usize;
    let mut stuck = false;
    for ((i, full), reply) in asked.into_iter().zip(replies) {
        let w = &mut wanted[i];
        match reply {
            PartitionReply::Fetched {
                batches,
                high_watermark,
                log_start_offset,
                last_stable_offset,
                aborted,
                readable_end,
                diverging,
                preferred_read_replica,
            } => {
                w.high_watermark = high_watermark;
                w.log_start_offset = log_start_offset;
                w.last_stable_offset = last_stable_offset;
                w.readable_end = readable_end;
                if diverging.is_some() || preferred_read_replica.is_some() {
                    w.diverging = diverging;
                    w.preferred_read_replica = preferred_read_replica;
                    w.wants_more = false;
                    continue;
                }
                w.log_start_offset = log_start_offset;
                w.last_stable_offset = last_stable_offset;
                for a in aborted {
                    if !w.aborted.contains(&a) {
                        w.aborted.push(a);
                    }
                }
                let size: usize = batches.iter().map(|b| b.len()).sum();
                if let Some(next) = batches.last().and_then(next_offset_after) {
                    w.next = w.next.max(next);
                }
                w.taken += size;
                returned += size;
                w.batches.extend(batches);
                // Not settled only when the allowance, not the data or the partition
                // limit, stopped the read.
                let exhausted = w.next >= readable_end;
                w.wants_more = !exhausted && w.room() > 0 && !full && !w.throttled;
                stuck |= w.wants_more;
            }
            PartitionReply::FetchError {
                code,
                high_watermark,
                log_start_offset,
            } => {
                w.error = Some(code);
                w.high_watermark = high_watermark;
                w.log_start_offset = log_start_offset;
                w.wants_more = false;
            }
            other => {
                w.error = Some(match route::error_of(&other) {
                    0 => ErrorCode::UnknownServerError.code(),
                    code => code,
                });
                w.wants_more = false;
            }
        }
    }
    if returned > 0 {
        budget.min_one = false;
    } else if stuck {
        budget.floor = share.saturating_mul(2);
    }
    budget.left = budget.left.saturating_sub(returned);
}

/// Ask every owner to wake us when one of its partitions has data past `seen`; the
/// positions (in `wanted`) of the partitions the owners found new data in (or found
/// gone), empty at the deadline. Only those are read again.
async fn wait_for_data(
    ctx: &Rc<ShardContext>,
    wanted: &[Wanted],
    seen: &[i64],
    deadline: Instant,
) -> Vec<usize> {
    // Per shard: positions in `wanted`, and the watches sent.
    type Watches = (Vec<usize>, Vec<Watch>);
    let mut by_shard: Vec<Watches> = (0..ctx.shard_count)
        .map(|_| (Vec::new(), Vec::new()))
        .collect();
    for (pos, (w, &seen)) in wanted.iter().zip(seen).enumerate() {
        if w.error.is_some()
            || w.diverging.is_some()
            || w.preferred_read_replica.is_some()
            || w.throttled
        {
            continue;
        }
        let nearby = w.reader == Reader::ConsumerNearby;
        if let route::Owner::Shard(shard) = route::owner_for(ctx, &w.key, nearby) {
            by_shard[shard].0.push(pos);
            by_shard[shard].1.push(Watch {
                key: w.key.clone(),
                seen,
                follower: matches!(w.reader, Reader::Follower { .. }),
                share_group: None,
            });
        }
    }
    let mut waits = Vec::new();
    for (shard, (positions, watches)) in by_shard.into_iter().enumerate() {
        if watches.is_empty() {
            continue;
        }
        let (tx, rx) = flume::bounded(1);
        if ctx.senders[shard]
            .send_async(ShardMsg::WaitForData {
                watches,
                deadline,
                reply: tx,
            })
            .await
            .is_ok()
        {
            waits.push((positions, rx));
        }
    }
    let mut ready = Vec::new();
    {
        let mut pending: Vec<_> = waits
            .iter()
            .enumerate()
            .map(|(k, (_, rx))| {
                Box::pin(async move { (k, rx.recv_async().await.unwrap_or_default()) })
            })
            .collect();
        // The first owner to report data wins; owners that report "deadline" drop out.
        while !pending.is_empty() {
            let ((k, found), _, rest) = futures_util::future::select_all(pending).await;
            if !found.is_empty() {
                ready.extend(found.into_iter().filter_map(|j| waits[k].0.get(j).copied()));
                break;
            }
            pending = rest;
        }
    }
    // Owners that answered meanwhile add theirs; the others are not waited for.
    for (positions, rx) in &waits {
        if let Ok(found) = rx.try_recv() {
            ready.extend(found.into_iter().filter_map(|j| positions.get(j).copied()));
        }
    }
    ready.sort_unstable();
    ready.dedup();
    ready
}
