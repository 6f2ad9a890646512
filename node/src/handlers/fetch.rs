//! Fetch: read every requested partition from its owner, long-poll on the owners'
//! append notifications until `min_bytes` or `max_wait_ms`, and answer with the
//! batches as a chain of `Bytes`.
//!
//! Fetch sessions: the broker answers every request in full and gives session id 0,
//! which tells clients (KIP-227) to keep sending full requests.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spate_net::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use spate_net::messages::{FetchRequest, FetchResponse};
use spate_net::{ErrorCode, Records};

use crate::mesh::{PartitionKey, PartitionOp, PartitionReply, ShardMsg};
use crate::metrics::record_count;
use crate::route;
use crate::shard::ShardContext;

/// Fetch v13 addresses topics by id instead of name.
const TOPIC_IDS_FROM: i16 = 13;
const READ_COMMITTED: i8 = 1;

/// One requested partition: where its answer goes and what to read.
struct Wanted {
    topic: usize,
    part: usize,
    key: PartitionKey,
    offset: i64,
    max_bytes: usize,
}

pub async fn handle(ctx: &Rc<ShardContext>, req: FetchRequest, version: i16) -> FetchResponse {
    if req.session_id != 0 || req.session_epoch > 0 {
        // We never hand out sessions, so any session id is unknown.
        return FetchResponse {
            error_code: ErrorCode::FetchSessionIdNotFound.code(),
            session_id: 0,
            ..Default::default()
        };
    }
    let image = ctx.image();
    let mut responses = Vec::with_capacity(req.topics.len());
    let mut wanted = Vec::new();
    let max_total = req.max_bytes.max(0) as usize;
    for (ti, topic) in req.topics.iter().enumerate() {
        let resolved = if version >= TOPIC_IDS_FROM {
            image.topic_by_id(&topic.topic_id.0).map(|t| t.name.clone())
        } else {
            Some(topic.topic.clone())
        };
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
                Some(name) => wanted.push(Wanted {
                    topic: ti,
                    part: pi,
                    key: PartitionKey { topic: Arc::from(name.as_str()), partition: p.partition },
                    offset: p.fetch_offset,
                    max_bytes: (p.partition_max_bytes.max(0) as usize).min(max_total.max(1)),
                }),
                None => data.error_code = ErrorCode::UnknownTopicId.code(),
            }
            out.partitions.push(data);
        }
        responses.push(out);
    }

    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let min_bytes = req.min_bytes.max(0) as usize;
    let replies = loop {
        let ops = wanted
            .iter()
            .map(|w| (w.key.clone(), PartitionOp::Fetch { offset: w.offset, max_bytes: w.max_bytes, min_one: true }))
            .collect();
        let replies = route::run(ctx, ops).await;
        let bytes: usize = replies
            .iter()
            .map(|r| match r {
                PartitionReply::Fetched { batches, .. } => batches.iter().map(|b| b.len()).sum(),
                _ => 0,
            })
            .sum();
        let any_error = replies.iter().any(|r| route::error_of(r) != 0);
        if bytes >= min_bytes.max(1) || any_error || wanted.is_empty() || Instant::now() >= deadline || ctx.is_shutting_down() {
            break replies;
        }
        // Wait for data past what this read saw (its high watermarks), not past the
        // fetch offsets: otherwise a partition with some data but less than min_bytes
        // would wake the wait at once, over and over.
        let seen: Vec<i64> = wanted
            .iter()
            .zip(&replies)
            .map(|(w, r)| match r {
                PartitionReply::Fetched { high_watermark, .. } => (*high_watermark).max(w.offset),
                _ => w.offset,
            })
            .collect();
        if !wait_for_data(ctx, &wanted, &seen, deadline).await {
            // Deadline passed with nothing new: answer with what there is.
            break replies;
        }
    };

    // Kafka's response budget: at least one batch, then stop adding at `max_bytes`.
    let mut budget = max_total;
    let mut first = true;
    for (w, reply) in wanted.iter().zip(replies) {
        let data = &mut responses[w.topic].partitions[w.part];
        match reply {
            PartitionReply::Fetched { batches, high_watermark, log_start_offset } => {
                data.high_watermark = high_watermark;
                data.last_stable_offset = high_watermark;
                data.log_start_offset = log_start_offset;
                let size: usize = batches.iter().map(|b| b.len()).sum();
                if size > 0 && (first || size <= budget) {
                    budget = budget.saturating_sub(size);
                    first = false;
                    // Traffic is counted here, for what is sent, once.
                    let mut m = ctx.metrics.borrow_mut();
                    let t = m.topic(&w.key.topic);
                    t.bytes_out += size as u64;
                    t.messages_out += batches.iter().map(record_count).sum::<u64>();
                    drop(m);
                    data.records = Some(Records::from_chunks(batches));
                } else {
                    data.records = Some(Records::new());
                }
            }
            PartitionReply::FetchError { code, high_watermark, log_start_offset } => {
                data.error_code = code;
                data.high_watermark = high_watermark;
                data.last_stable_offset = high_watermark;
                data.log_start_offset = log_start_offset;
            }
            other => data.error_code = route::error_of(&other),
        }
        if data.records.is_none() {
            data.records = Some(Records::new());
        }
    }
    let mut metrics = ctx.metrics.borrow_mut();
    for p in responses.iter().flat_map(|t| &t.partitions).filter(|p| p.error_code != 0) {
        metrics.error("Fetch", p.error_code);
    }
    drop(metrics);
    FetchResponse { responses, session_id: 0, ..Default::default() }
}

/// Ask every owner to wake us when one of its partitions has data past the fetch
/// offset; `true` as soon as one does, `false` at the deadline.
async fn wait_for_data(ctx: &Rc<ShardContext>, wanted: &[Wanted], seen: &[i64], deadline: Instant) -> bool {
    let mut by_shard: Vec<Vec<(PartitionKey, i64)>> = vec![Vec::new(); ctx.shard_count];
    for (w, &seen) in wanted.iter().zip(seen) {
        if let Some(shard) = route::owner(ctx, &w.key) {
            by_shard[shard].push((w.key.clone(), seen));
        }
    }
    let mut waits = Vec::new();
    for (shard, watches) in by_shard.into_iter().enumerate() {
        if watches.is_empty() {
            continue;
        }
        let (tx, rx) = flume::bounded(1);
        if ctx.senders[shard].send_async(ShardMsg::WaitForData { watches, deadline, reply: tx }).await.is_ok() {
            waits.push(rx);
        }
    }
    if waits.is_empty() {
        return false;
    }
    let mut pending: Vec<_> = waits.into_iter().map(|rx| Box::pin(async move { rx.recv_async().await.unwrap_or(false) })).collect();
    // The first owner to report data wins; owners that report "deadline" drop out.
    while !pending.is_empty() {
        let (arrived, _, rest) = futures_util::future::select_all(pending).await;
        if arrived {
            return true;
        }
        pending = rest;
    }
    false
}
