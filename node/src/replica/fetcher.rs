//! A follower's fetches from its leader (Kafka's replica fetcher thread): on each
//! shard, one task per leader broker fetches every partition the shard follows there,
//! in one Fetch request at a time over the shard's connections to that broker.
//!
//! A round: ask from each log's end (with the epoch of its last batch, so the leader
//! can tell where the logs diverged), append what comes back with the leader's offsets
//! and epochs, wait until it is written, take the leader's high watermark and log
//! start, and ask again from the new end (which tells the leader how far this
//! replica got). A partition whose log diverged is truncated first (Kafka's
//! `truncateOnFetchResponse`); one behind the leader's log start starts over there.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use spate_net::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use spate_net::messages::fetch_response::PartitionData;
use spate_net::messages::{FetchRequest, FetchResponse};
use spate_net::{ApiKey, ErrorCode, Uuid};

use crate::mesh::PartitionKey;
use crate::partition::Partition;
use crate::replica::quota;
use crate::shard::ShardContext;

/// Fetch version the followers speak: topic ids (v13), the replica's broker epoch in
/// `ReplicaState` (v15, KIP-903).
const FETCH_VERSION: i16 = 17;
/// Wait after the leader said it does not lead the epoch yet or no longer (the
/// metadata is about to tell this broker): short, so failover stays fast.
const LEADERSHIP_BACKOFF: Duration = Duration::from_millis(50);
/// One batch may exceed the response budget (KIP-74): room for it beyond the budget.
const OVERSIZED_BATCH_ROOM: usize = 64 << 20;

/// Start a fetcher for every leader this shard's followers fetch from that has none.
pub fn start_missing(ctx: &Rc<ShardContext>) {
    let leaders: std::collections::BTreeSet<i32> = ctx
        .partitions
        .borrow()
        .values()
        .filter_map(|p| p.following())
        .collect();
    for leader in leaders {
        if ctx.fetchers.borrow_mut().insert(leader) {
            compio::runtime::spawn(run(ctx.clone(), leader)).detach();
        }
    }
}

/// What one request asked of one partition.
struct Asked {
    key: PartitionKey,
    partition: Rc<Partition>,
    offset: i64,
    epoch: i32,
    /// `follower.replication.throttled.replicas` names this replica: what the leader
    /// sends for it counts against the follower's replication quota.
    quota_counted: bool,
}

/// The fetcher of the partitions this shard follows on broker `leader`; it ends when
/// there are none left.
async fn run(ctx: Rc<ShardContext>, leader: i32) {
    tracing::debug!(shard = ctx.id, leader, "fetcher started");
    // Partitions held back after an error: until when, at which leader epoch (a new
    // epoch releases them at once).
    let mut held: HashMap<PartitionKey, (Instant, i32)> = HashMap::new();
    let mut failing_since: Option<Instant> = None;
    loop {
        if ctx.is_shutting_down() {
            break;
        }
        let followed: Vec<(PartitionKey, Rc<Partition>)> = ctx
            .partitions
            .borrow()
            .iter()
            .filter(|(_, p)| p.following() == Some(leader))
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect();
        // No await between this check and leaving the registry: a partition that starts
        // following `leader` meanwhile finds no fetcher and starts one.
        if followed.is_empty() {
            break;
        }
        let now = Instant::now();
        held.retain(|k, (until, epoch)| {
            *until > now
                && followed
                    .iter()
                    .any(|(key, p)| key == k && p.known_epoch() == *epoch)
        });
        let image = ctx.image();
        let me = ctx.config.node_id;
        let quota = &ctx.replication_quotas.follower;
        let asked: Vec<Asked> = followed
            .into_iter()
            .filter(|(k, p)| !held.contains_key(k) && p.log.writable().is_ok())
            .map(|(key, partition)| Asked {
                offset: partition.log.log_end_offset(),
                epoch: partition.known_epoch(),
                quota_counted: quota::throttled(
                    &image,
                    &key.topic,
                    key.partition,
                    quota::FOLLOWER_REPLICAS,
                    me,
                ),
                key,
                partition,
            })
            // Kafka's `shouldFollowerThrottle`: an out-of-sync throttled replica waits
            // while the quota is exceeded (in sync, it is never held back).
            .filter(|a| {
                let in_sync = || {
                    image
                        .partition(&a.key.topic, a.key.partition)
                        .is_some_and(|info| info.isr.contains(&me))
                };
                !a.quota_counted || in_sync() || !quota.exceeded()
            })
            .collect();
        if asked.is_empty() {
            let next = held.values().map(|(t, _)| *t).min();
            let wait = next.map_or(LEADERSHIP_BACKOFF, |t| t.saturating_duration_since(now));
            compio::time::sleep(wait.clamp(Duration::from_millis(1), backoff(&ctx))).await;
            continue;
        }
        let request = fetch_request(&ctx, &image, &asked);
        let limit =
            (ctx.config.replica_fetch_response_max_bytes).saturating_add(OVERSIZED_BATCH_ROOM);
        let answer: Result<FetchResponse, _> = ctx
            .brokers
            .call_limited(
                &image,
                leader,
                ApiKey::Fetch,
                FETCH_VERSION,
                &request,
                limit,
            )
            .await;
        match answer {
            Ok(response) if response.error_code == 0 => {
                failing_since = None;
                apply(&ctx, leader, asked, response, &mut held).await;
            }
            Ok(response) => {
                tracing::warn!(
                    shard = ctx.id,
                    leader,
                    error = response.error_code,
                    "fetch from the leader refused"
                );
                compio::time::sleep(backoff(&ctx)).await;
            }
            Err(e) => {
                // Logged once per outage (the controller moves leadership off a dead
                // broker after its session times out).
                if failing_since.is_none() {
                    tracing::warn!(shard = ctx.id, leader, error = %e, "fetching from the leader failed; retrying");
                    failing_since = Some(Instant::now());
                }
                compio::time::sleep(backoff(&ctx)).await;
            }
        }
    }
    ctx.fetchers.borrow_mut().remove(&leader);
    tracing::debug!(shard = ctx.id, leader, "fetcher stopped");
}

/// `replica.fetch.backoff.ms`.
fn backoff(ctx: &ShardContext) -> Duration {
    Duration::from_millis(ctx.config.replica_fetch_backoff_ms.max(1))
}

fn fetch_request(
    ctx: &ShardContext,
    image: &crate::metadata::MetadataImage,
    asked: &[Asked],
) -> FetchRequest {
    let node_id = ctx.config.node_id;
    let broker_epoch = image.brokers.get(&node_id).map_or(-1, |b| b.epoch);
    let mut topics: Vec<FetchTopic> = Vec::new();
    for a in asked {
        let partition = FetchPartition {
            partition: a.key.partition,
            current_leader_epoch: a.epoch,
            fetch_offset: a.offset,
            last_fetched_epoch: a.partition.log.latest_epoch().unwrap_or(-1),
            log_start_offset: a.partition.log.log_start_offset(),
            partition_max_bytes: i32::try_from(ctx.config.replica_fetch_max_bytes)
                .unwrap_or(i32::MAX),
            ..Default::default()
        };
        match topics
            .iter_mut()
            .find(|t| t.topic_id.0 == a.partition.topic_id)
        {
            Some(t) => t.partitions.push(partition),
            None => topics.push(FetchTopic {
                topic: a.key.topic.to_string(),
                topic_id: Uuid(a.partition.topic_id),
                partitions: vec![partition],
            }),
        }
    }
    FetchRequest {
        replica_id: -1,
        replica_state: ReplicaState {
            replica_id: node_id,
            replica_epoch: broker_epoch,
        },
        max_wait_ms: i32::try_from(ctx.config.replica_fetch_wait_max_ms).unwrap_or(i32::MAX),
        min_bytes: i32::try_from(ctx.config.replica_fetch_min_bytes).unwrap_or(i32::MAX),
        max_bytes: i32::try_from(ctx.config.replica_fetch_response_max_bytes).unwrap_or(i32::MAX),
        isolation_level: 0,
        session_id: 0,
        // No fetch session (KIP-227): every request is a full one.
        session_epoch: -1,
        topics,
        ..Default::default()
    }
}

/// Apply a Fetch response: truncations, appends (all started, then awaited together),
/// then the leader's high watermark and log start.
async fn apply(
    ctx: &Rc<ShardContext>,
    leader: i32,
    asked: Vec<Asked>,
    response: FetchResponse,
    held: &mut HashMap<PartitionKey, (Instant, i32)>,
) {
    let mut answers: HashMap<([u8; 16], i32), PartitionData> = HashMap::new();
    for topic in response.responses {
        for p in topic.partitions {
            answers.insert((topic.topic_id.0, p.partition_index), p);
        }
    }
    let mut appended = Vec::new();
    for a in asked {
        let Some(data) = answers.remove(&(a.partition.topic_id, a.key.partition)) else {
            continue;
        };
        // The metadata moved on while the request was out: its answer is stale.
        if a.partition.following() != Some(leader)
            || a.partition.known_epoch() != a.epoch
            || a.partition.log.log_end_offset() != a.offset
        {
            continue;
        }
        let hold = |held: &mut HashMap<PartitionKey, (Instant, i32)>, pause: Duration| {
            held.insert(a.key.clone(), (Instant::now() + pause, a.epoch));
        };
        match ErrorCode::from_code(data.error_code) {
            Some(ErrorCode::None) => {
                let diverging = &data.diverging_epoch;
                if diverging.end_offset >= 0 {
                    truncate_diverged(&a, diverging.epoch, diverging.end_offset).await;
                    continue;
                }
                let records = data.records.as_ref().filter(|r| !r.is_empty());
                if let Some(r) = records.filter(|_| a.quota_counted) {
                    ctx.replication_quotas.follower.record(r.len());
                }
                let write = records.map(|r| a.partition.append_replicated(r.to_contiguous()));
                appended.push((a, write, data.high_watermark, data.log_start_offset));
            }
            Some(ErrorCode::OffsetOutOfRange) => {
                if !out_of_range(&a, data.log_start_offset, data.high_watermark).await {
                    hold(held, backoff(ctx));
                }
            }
            Some(
                ErrorCode::NotLeaderOrFollower
                | ErrorCode::FencedLeaderEpoch
                | ErrorCode::UnknownLeaderEpoch
                | ErrorCode::UnknownTopicOrPartition
                | ErrorCode::UnknownTopicId,
            ) => hold(held, LEADERSHIP_BACKOFF),
            _ => {
                tracing::warn!(topic = %a.key.topic, partition = a.key.partition, leader, error = data.error_code, "follower fetch failed");
                hold(held, backoff(ctx));
            }
        }
    }
    for (a, write, high_watermark, log_start) in appended {
        if let Some(write) = write {
            if let Err(e) = write.await {
                // The log is offline now (a failed write): it fetches no more.
                tracing::error!(topic = %a.key.topic, partition = a.key.partition, error = %e, "appending fetched batches failed");
                continue;
            }
        }
        a.partition
            .follow_leader_offsets(high_watermark, log_start)
            .await;
    }
}

/// Where a follower's log is cut when the leader says it diverged after `epoch` ended
/// at `end` (Kafka's getOffsetTruncationState). When this log does not know `epoch`,
/// the cut is at the end of its last epoch before it, and the next fetch finds out
/// whether more goes.
fn truncation_offset(partition: &Partition, epoch: i32, end: i64) -> i64 {
    let log_end = partition.log.log_end_offset();
    if epoch < 0 {
        return end.min(log_end);
    }
    let (own_epoch, own_end) = partition.log.end_offset_for_epoch(epoch);
    if own_end < 0 {
        return end.min(log_end);
    }
    if own_epoch != epoch {
        own_end.min(log_end)
    } else {
        own_end.min(end).min(log_end)
    }
}

async fn truncate_diverged(a: &Asked, epoch: i32, end: i64) {
    let offset = truncation_offset(&a.partition, epoch, end);
    tracing::info!(topic = %a.key.topic, partition = a.key.partition, leader_epoch = epoch, leader_end = end, from = a.offset, to = offset, "follower log diverged from the leader's: truncating");
    if let Err(e) = a.partition.truncate_to(offset).await {
        tracing::error!(topic = %a.key.topic, partition = a.key.partition, error = %e, "truncating the follower log failed");
    }
}

/// The leader has no data at the fetch offset: below its log start, start over there;
/// past its end (a log whose epochs could not tell), cut back to its high watermark.
/// False when there was nothing to do (the next try waits a backoff).
async fn out_of_range(a: &Asked, leader_start: i64, leader_hw: i64) -> bool {
    let (topic, partition) = (&a.key.topic, a.key.partition);
    if a.offset < leader_start {
        tracing::info!(%topic, partition, from = a.offset, to = leader_start, "follower behind the leader's log start: starting over there");
        if let Err(e) = a.partition.truncate_fully_and_start_at(leader_start).await {
            tracing::error!(%topic, partition, error = %e, "restarting the follower log failed");
        }
        return true;
    }
    if leader_hw >= 0 && leader_hw < a.offset {
        tracing::info!(%topic, partition, from = a.offset, to = leader_hw, "follower past the leader's end: truncating to its high watermark");
        if let Err(e) = a.partition.truncate_to(leader_hw).await {
            tracing::error!(%topic, partition, error = %e, "truncating the follower log failed");
        }
        return true;
    }
    false
}
