//! ShareFetch and ShareAcknowledge (KIP-932): a share-group member's requests to the
//! leader of its assigned partitions. The share session (`share/session.rs`) says which
//! partitions a request covers; each partition's acknowledgements and acquisition run
//! on its owner shard (`share/leader.rs`).

use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spate_net::messages::share_acknowledge_response::{
    LeaderIdAndEpoch as AckLeader, NodeEndpoint as AckEndpoint, PartitionData as AckPartition,
    ShareAcknowledgeTopicResponse,
};
use spate_net::messages::share_fetch_response::{
    AcquiredRecords, LeaderIdAndEpoch, NodeEndpoint, PartitionData, ShareFetchableTopicResponse,
};
use spate_net::messages::{
    ShareAcknowledgeRequest, ShareAcknowledgeResponse, ShareFetchRequest, ShareFetchResponse,
};
use spate_net::{ErrorCode, Records};

use super::leader_hints;
use crate::group::group_config::share::{share_settings, ShareSettings};
use crate::mesh::{PartitionKey, PartitionOp, PartitionReply, ShardMsg, Watch};
use crate::metrics::record_count;
use crate::route;
use crate::security::authorizer::acl::{Operation, ResourceType};
use crate::security::authorizer::Caller;
use crate::security::Listener;
use crate::shard::ShardContext;
use crate::share::leader::{FetchLimits, ShareOp, ShareReply};
use crate::share::partition::{AckBatch, RENEW};
use crate::share::session::{Outcome, SessionKey, SessionPartition, OPEN};

/// ShareFetch v2: acquisition in record-limit mode (`ShareAcquireMode` 1).
const RECORD_LIMIT_MODE: i8 = 1;

/// One partition of a request: its key, what happened to it.
struct Part {
    id: SessionPartition,
    key: Option<PartitionKey>,
    error: i16,
    ack_error: i16,
    acks: Vec<AckBatch>,
    reply: ShareReply,
    /// Named in the request (answered even without data).
    named: bool,
}

/// The request's acknowledgements by partition; INVALID_REQUEST for a renewal the
/// request may not carry.
fn collect_acks<'a>(
    batches: impl Iterator<Item = (SessionPartition, i64, i64, &'a [i8])>,
    renew_allowed: bool,
) -> Result<HashMap<SessionPartition, Vec<AckBatch>>, i16> {
    let mut acks: HashMap<SessionPartition, Vec<AckBatch>> = HashMap::new();
    for (id, first_offset, last_offset, types) in batches {
        if types.is_empty() || (!renew_allowed && types.contains(&RENEW)) {
            return Err(ErrorCode::InvalidRequest.code());
        }
        acks.entry(id).or_default().push(AckBatch {
            first_offset,
            last_offset,
            types: types.to_vec(),
        });
    }
    Ok(acks)
}

/// Kafka's answer to RENEW when the group's `share.renew.acknowledge.enable` is false:
/// the partition's acknowledgements fail with INVALID_RECORD_STATE, none of them applied.
fn refuse_disabled_renewals(parts: &mut [Part], settings: ShareSettings) {
    if settings.renew_acknowledge_enable {
        return;
    }
    for p in parts.iter_mut() {
        if p.ack_error == 0 && p.acks.iter().any(|b| b.types.contains(&RENEW)) {
            p.ack_error = ErrorCode::InvalidRecordState.code();
            p.acks.clear();
        }
    }
}

/// The group and member of a request, or its top-level error.
fn identify(
    ctx: &ShardContext,
    group_id: &Option<String>,
    member_id: &Option<String>,
    caller: &Caller,
) -> Result<SessionKey, (i16, Option<String>)> {
    let group = group_id.as_deref().unwrap_or_default();
    let member = member_id.as_deref().unwrap_or_default();
    if group.is_empty() {
        return Err((
            ErrorCode::InvalidRequest.code(),
            Some("The group id is empty.".into()),
        ));
    }
    if member.is_empty() {
        return Err((
            ErrorCode::InvalidRequest.code(),
            Some("The member id is empty.".into()),
        ));
    }
    if !ctx.authorized(caller, Operation::Read, ResourceType::Group, group) {
        return Err((ErrorCode::GroupAuthorizationFailed.code(), None));
    }
    Ok(SessionKey {
        group_id: group.to_string(),
        member_id: member.to_string(),
    })
}

/// The share group's settings on its share-partitions.
fn settings(ctx: &ShardContext, group: &str) -> ShareSettings {
    share_settings(&ctx.config, &ctx.image(), group)
}

/// A partition's key, or the error its answer carries (unknown topic id, no READ for
/// `caller`; None: the broker itself).
fn resolve(
    ctx: &ShardContext,
    caller: Option<&Caller>,
    id: SessionPartition,
) -> Result<PartitionKey, i16> {
    let image = ctx.image();
    let Some(topic) = image.topic_by_id(&id.0 .0) else {
        return Err(ErrorCode::UnknownTopicId.code());
    };
    if caller.is_some_and(|c| !ctx.authorized(c, Operation::Read, ResourceType::Topic, &topic.name))
    {
        return Err(ErrorCode::TopicAuthorizationFailed.code());
    }
    Ok(PartitionKey {
        topic: Arc::from(topic.name.as_str()),
        partition: id.1,
    })
}

/// Run one share op per listed partition (in parallel, on their owners).
async fn run_ops(
    ctx: &Rc<ShardContext>,
    ops: Vec<(usize, PartitionKey, ShareOp)>,
    parts: &mut [Part],
) {
    if ops.is_empty() {
        return;
    }
    let (positions, ops): (Vec<usize>, Vec<_>) = ops
        .into_iter()
        .map(|(i, key, op)| (i, (key, PartitionOp::Share(op))))
        .unzip();
    for (i, reply) in positions.into_iter().zip(route::run(ctx, ops).await) {
        let part = &mut parts[i];
        match reply {
            PartitionReply::Share(r) => {
                if r.ack_error != 0 {
                    part.ack_error = r.ack_error;
                }
                part.reply.batches.extend(r.batches);
                part.reply.acquired.extend(r.acquired);
                part.reply.readable_end = r.readable_end;
            }
            other => {
                part.error = match route::error_of(&other) {
                    0 => ErrorCode::UnknownServerError.code(),
                    code => code,
                };
                if !part.acks.is_empty() {
                    part.ack_error = part.error;
                }
            }
        }
    }
}

/// The op of one request partition for the session's member.
fn share_op(
    key: &SessionKey,
    part: &Part,
    acks: Vec<AckBatch>,
    release: bool,
    fetch: Option<FetchLimits>,
    settings: ShareSettings,
) -> ShareOp {
    ShareOp {
        group_id: Arc::from(key.group_id.as_str()),
        member_id: Arc::from(key.member_id.as_str()),
        topic_id: part.id.0,
        acks,
        release,
        fetch,
        settings,
    }
}

/// Release what a member holds on `partitions` (its session ended), acknowledgements
/// first where a request carried them.
fn release_ops(
    key: &SessionKey,
    parts: &[Part],
    settings: ShareSettings,
) -> Vec<(usize, PartitionKey, ShareOp)> {
    parts
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let k = p.key.clone()?;
            Some((i, k, share_op(key, p, p.acks.clone(), true, None, settings)))
        })
        .collect()
}

pub async fn share_fetch(
    ctx: &Rc<ShardContext>,
    req: ShareFetchRequest,
    version: i16,
    listener: &Listener,
    caller: &Caller,
    connection: u64,
) -> ShareFetchResponse {
    let failed = |(code, message): (i16, Option<String>)| ShareFetchResponse {
        error_code: code,
        error_message: message,
        ..Default::default()
    };
    let key = match identify(ctx, &req.group_id, &req.member_id, caller) {
        Ok(k) => k,
        Err(e) => return failed(e),
    };
    let renew = version >= 2 && req.is_renew_ack;
    let acks = match collect_acks(
        req.topics.iter().flat_map(|t| {
            t.partitions.iter().flat_map(move |p| {
                p.acknowledgement_batches.iter().map(move |b| {
                    (
                        (t.topic_id, p.partition_index),
                        b.first_offset,
                        b.last_offset,
                        b.acknowledge_types.as_slice(),
                    )
                })
            })
        }),
        renew,
    ) {
        Ok(a) => a,
        Err(code) => return failed((code, None)),
    };
    if req.share_session_epoch == OPEN && !acks.is_empty() {
        return failed((
            ErrorCode::InvalidRequest.code(),
            Some("Acknowledge data present on initial fetch request".into()),
        ));
    }
    let named: Vec<SessionPartition> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.topic_id, p.partition_index))
        })
        .collect();
    let forgotten: Vec<SessionPartition> = req
        .forgotten_topics_data
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |&p| (t.topic_id, p)))
        .collect();
    let outcome = match ctx.share_sessions.update(
        &key,
        req.share_session_epoch,
        &named,
        &forgotten,
        connection,
        true,
    ) {
        Ok(o) => o,
        Err(code) => return failed((code, None)),
    };
    let settings = settings(ctx, &key.group_id);
    let (session_partitions, replaced, closing) = match outcome {
        Outcome::Open {
            partitions,
            replaced,
        } => (partitions, replaced, false),
        Outcome::Closed { partitions } => (partitions, None, true),
    };
    if let Some(old) = replaced {
        release_partitions(ctx, &key, old, settings).await;
    }
    let named_set: BTreeSet<SessionPartition> = named.iter().copied().collect();
    let mut all: Vec<SessionPartition> = session_partitions;
    for id in acks.keys() {
        if !all.contains(id) {
            all.push(*id);
        }
    }
    let mut parts: Vec<Part> = all
        .into_iter()
        .map(|id| {
            let (key, error) = match resolve(ctx, Some(caller), id) {
                Ok(k) => (Some(k), 0),
                Err(code) => (None, code),
            };
            let acks = acks.get(&id).cloned().unwrap_or_default();
            Part {
                id,
                key,
                error,
                ack_error: if error != 0 && !acks.is_empty() {
                    error
                } else {
                    0
                },
                acks,
                reply: ShareReply::default(),
                named: named_set.contains(&id) || req.share_session_epoch == OPEN,
            }
        })
        .collect();
    refuse_disabled_renewals(&mut parts, settings);
    if closing {
        let ops = release_ops(&key, &parts, settings);
        run_ops(ctx, ops, &mut parts).await;
        return fetch_response(ctx, parts, version, listener, settings);
    }

    let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
    let max_records = usize::try_from(req.max_records).unwrap_or(0);
    let max_bytes = (req.max_bytes.max(0) as usize).min(ctx.config.fetch_max_bytes);
    let record_limit = version >= 2 && req.share_acquire_mode == RECORD_LIMIT_MODE;
    let fetching = !renew && max_records > 0;
    // Partitions take turns at the front, so that one busy partition does not starve
    // the others of the record budget.
    let n = parts.len().max(1);
    let first = (req.share_session_epoch.max(0) as usize) % n;
    let order: Vec<usize> = (0..parts.len()).map(|k| (first + k) % n).collect();
    let mut acks_sent = false;
    loop {
        let mut records_left = max_records;
        let mut bytes_left = max_bytes;
        // Acknowledgements go with the first round; records are acquired partition
        // after partition while the budget lasts.
        for &i in &order {
            let p = &parts[i];
            let Some(k) = p.key.clone() else { continue };
            if p.error != 0 {
                continue;
            }
            let acks = if acks_sent {
                Vec::new()
            } else {
                p.acks.clone()
            };
            let fetch = (fetching && records_left > 0 && bytes_left > 0).then_some(FetchLimits {
                max_records: records_left,
                max_bytes: bytes_left,
                record_limit,
            });
            if acks.is_empty() && fetch.is_none() {
                continue;
            }
            let op = share_op(&key, p, acks, false, fetch, settings);
            run_ops(ctx, vec![(i, k, op)], &mut parts).await;
            let p = &parts[i];
            let got: usize = p
                .reply
                .acquired
                .iter()
                .map(|(f, l, _)| (l - f + 1) as usize)
                .sum();
            let bytes: usize = p.reply.batches.iter().map(|b| b.len()).sum();
            records_left = records_left.saturating_sub(got);
            bytes_left = bytes_left.saturating_sub(bytes);
        }
        acks_sent = true;
        let acquired = parts.iter().any(|p| !p.reply.acquired.is_empty());
        let errors = parts.iter().any(|p| p.error != 0 || p.ack_error != 0);
        if !fetching || acquired || errors || Instant::now() >= deadline || ctx.is_shutting_down() {
            break;
        }
        wait_for_records(ctx, &parts, &key.group_id, deadline).await;
    }
    fetch_response(ctx, parts, version, listener, settings)
}

/// Wait until a partition's owner sees data past what the last read saw, or records of
/// the group's share-partition available again, or the deadline.
async fn wait_for_records(ctx: &Rc<ShardContext>, parts: &[Part], group: &str, deadline: Instant) {
    let group: Arc<str> = Arc::from(group);
    let mut by_shard: Vec<Vec<Watch>> = (0..ctx.shard_count).map(|_| Vec::new()).collect();
    for p in parts.iter().filter(|p| p.error == 0) {
        let Some(key) = &p.key else { continue };
        if let route::Owner::Shard(shard) = route::owner_for(ctx, key, false) {
            by_shard[shard].push(Watch {
                key: key.clone(),
                seen: p.reply.readable_end,
                follower: false,
                share_group: Some(group.clone()),
            });
        }
    }
    let mut waits = Vec::new();
    for (shard, watches) in by_shard.into_iter().enumerate() {
        if watches.is_empty() {
            continue;
        }
        let (tx, rx) = flume::bounded(1);
        let msg = ShardMsg::WaitForData {
            watches,
            deadline,
            reply: tx,
        };
        if ctx.senders[shard].send_async(msg).await.is_ok() {
            waits.push(rx);
        }
    }
    if waits.is_empty() {
        let now = Instant::now();
        compio::time::sleep(deadline.saturating_duration_since(now)).await;
        return;
    }
    let mut pending: Vec<_> = waits
        .iter()
        .map(|rx| Box::pin(async move { rx.recv_async().await.unwrap_or_default() }))
        .collect();
    // The first owner that reports something ends the wait; owners that reached the
    // deadline drop out.
    while !pending.is_empty() {
        let (found, _, rest) = futures_util::future::select_all(pending).await;
        if !found.is_empty() {
            return;
        }
        pending = rest;
    }
}

/// Release a member's records on `partitions` (a replaced or ended session).
async fn release_partitions(
    ctx: &Rc<ShardContext>,
    key: &SessionKey,
    partitions: Vec<SessionPartition>,
    settings: ShareSettings,
) {
    let mut parts: Vec<Part> = partitions
        .into_iter()
        .filter_map(|id| {
            // The member read these partitions already: no new authorization check.
            let k = resolve(ctx, None, id).ok()?;
            Some(Part {
                id,
                key: Some(k),
                error: 0,
                ack_error: 0,
                acks: Vec::new(),
                reply: ShareReply::default(),
                named: false,
            })
        })
        .collect();
    let ops = release_ops(key, &parts, settings);
    run_ops(ctx, ops, &mut parts).await;
}

/// A connection closed: the share sessions it last used end, and their members'
/// records are released.
pub fn connection_closed(ctx: &Rc<ShardContext>, connection: u64) {
    let ended = ctx.share_sessions.connection_closed(connection);
    if ended.is_empty() {
        return;
    }
    let ctx = ctx.clone();
    compio::runtime::spawn(async move {
        for (key, partitions) in ended {
            let settings = settings(&ctx, &key.group_id);
            release_partitions(&ctx, &key, partitions, settings).await;
        }
    })
    .detach();
}

fn fetch_response(
    ctx: &ShardContext,
    parts: Vec<Part>,
    version: i16,
    listener: &Listener,
    settings: ShareSettings,
) -> ShareFetchResponse {
    let _ = version;
    let image = ctx.image();
    let mut leaders = BTreeSet::new();
    let mut topics: Vec<ShareFetchableTopicResponse> = Vec::new();
    let mut metrics = ctx.metrics.borrow_mut();
    for p in parts {
        let has_data = !p.reply.acquired.is_empty();
        if !(p.named || has_data || p.error != 0 || p.ack_error != 0 || !p.acks.is_empty()) {
            continue;
        }
        let mut current_leader = LeaderIdAndEpoch {
            leader_id: -1,
            leader_epoch: -1,
        };
        if p.error == ErrorCode::NotLeaderOrFollower.code() {
            if let Some((leader_id, leader_epoch)) = p
                .key
                .as_ref()
                .and_then(|k| leader_hints::current_leader(&image, &k.topic, k.partition))
            {
                current_leader = LeaderIdAndEpoch {
                    leader_id,
                    leader_epoch,
                };
                leaders.insert(leader_id);
            }
        }
        if p.error != 0 {
            metrics.error("ShareFetch", p.error);
        }
        if has_data {
            if let Some(k) = &p.key {
                let t = metrics.topic(&k.topic);
                t.bytes_out += p.reply.batches.iter().map(|b| b.len() as u64).sum::<u64>();
                t.messages_out += p.reply.batches.iter().map(record_count).sum::<u64>();
            }
        }
        let data = PartitionData {
            partition_index: p.id.1,
            error_code: p.error,
            error_message: None,
            acknowledge_error_code: p.ack_error,
            acknowledge_error_message: None,
            current_leader,
            records: Some(Records::from_chunks(p.reply.batches)),
            acquired_records: p
                .reply
                .acquired
                .iter()
                .map(
                    |&(first_offset, last_offset, delivery_count)| AcquiredRecords {
                        first_offset,
                        last_offset,
                        delivery_count,
                    },
                )
                .collect(),
        };
        match topics.iter_mut().find(|t| t.topic_id == p.id.0) {
            Some(t) => t.partitions.push(data),
            None => topics.push(ShareFetchableTopicResponse {
                topic_id: p.id.0,
                partitions: vec![data],
            }),
        }
    }
    drop(metrics);
    let node_endpoints = if leaders.is_empty() {
        Vec::new()
    } else {
        leader_hints::endpoints(&image, &leaders, listener, ctx.config.node_id)
            .into_iter()
            .map(|(node_id, host, port, rack)| NodeEndpoint {
                node_id,
                host,
                port,
                rack,
            })
            .collect()
    };
    ShareFetchResponse {
        acquisition_lock_timeout_ms: settings.record_lock_duration_ms,
        responses: topics,
        node_endpoints,
        ..Default::default()
    }
}

pub async fn share_acknowledge(
    ctx: &Rc<ShardContext>,
    req: ShareAcknowledgeRequest,
    version: i16,
    listener: &Listener,
    caller: &Caller,
    connection: u64,
) -> ShareAcknowledgeResponse {
    let failed = |(code, message): (i16, Option<String>)| ShareAcknowledgeResponse {
        error_code: code,
        error_message: message,
        ..Default::default()
    };
    let key = match identify(ctx, &req.group_id, &req.member_id, caller) {
        Ok(k) => k,
        Err(e) => return failed(e),
    };
    let renew = version >= 2 && req.is_renew_ack;
    let acks = match collect_acks(
        req.topics.iter().flat_map(|t| {
            t.partitions.iter().flat_map(move |p| {
                p.acknowledgement_batches.iter().map(move |b| {
                    (
                        (t.topic_id, p.partition_index),
                        b.first_offset,
                        b.last_offset,
                        b.acknowledge_types.as_slice(),
                    )
                })
            })
        }),
        renew,
    ) {
        Ok(a) => a,
        Err(code) => return failed((code, None)),
    };
    let outcome =
        match ctx
            .share_sessions
            .update(&key, req.share_session_epoch, &[], &[], connection, false)
        {
            Ok(o) => o,
            Err(code) => return failed((code, None)),
        };
    let settings = settings(ctx, &key.group_id);
    let closing_partitions = match outcome {
        Outcome::Closed { partitions } => Some(partitions),
        Outcome::Open { .. } => None,
    };
    let mut ids: Vec<SessionPartition> = acks.keys().copied().collect();
    ids.sort();
    if let Some(session) = &closing_partitions {
        for id in session {
            if !ids.contains(id) {
                ids.push(*id);
            }
        }
    }
    let mut parts: Vec<Part> = ids
        .into_iter()
        .map(|id| {
            let acks = acks.get(&id).cloned().unwrap_or_default();
            let (key, error) = match resolve(ctx, Some(caller), id) {
                Ok(k) => (Some(k), 0),
                Err(code) => (None, code),
            };
            Part {
                id,
                key,
                error,
                ack_error: 0,
                named: !acks.is_empty(),
                acks,
                reply: ShareReply::default(),
            }
        })
        .collect();
    refuse_disabled_renewals(&mut parts, settings);
    let ops: Vec<(usize, PartitionKey, ShareOp)> = parts
        .iter()
        .enumerate()
        .filter(|(_, p)| p.error == 0 && (!p.acks.is_empty() || closing_partitions.is_some()))
        .filter_map(|(i, p)| {
            Some((
                i,
                p.key.clone()?,
                share_op(
                    &key,
                    p,
                    p.acks.clone(),
                    closing_partitions.is_some(),
                    None,
                    settings,
                ),
            ))
        })
        .collect();
    run_ops(ctx, ops, &mut parts).await;
    let image = ctx.image();
    let mut leaders = BTreeSet::new();
    let mut topics: Vec<ShareAcknowledgeTopicResponse> = Vec::new();
    for p in parts.into_iter().filter(|p| p.named) {
        let code = if p.error != 0 { p.error } else { p.ack_error };
        let mut current_leader = AckLeader {
            leader_id: -1,
            leader_epoch: -1,
        };
        if code == ErrorCode::NotLeaderOrFollower.code() {
            if let Some((leader_id, leader_epoch)) = p
                .key
                .as_ref()
                .and_then(|k| leader_hints::current_leader(&image, &k.topic, k.partition))
            {
                current_leader = AckLeader {
                    leader_id,
                    leader_epoch,
                };
                leaders.insert(leader_id);
            }
        }
        if code != 0 {
            ctx.metrics.borrow_mut().error("ShareAcknowledge", code);
        }
        let data = AckPartition {
            partition_index: p.id.1,
            error_code: code,
            error_message: None,
            current_leader,
        };
        match topics.iter_mut().find(|t| t.topic_id == p.id.0) {
            Some(t) => t.partitions.push(data),
            None => topics.push(ShareAcknowledgeTopicResponse {
                topic_id: p.id.0,
                partitions: vec![data],
            }),
        }
    }
    let node_endpoints = leader_hints::endpoints(&image, &leaders, listener, ctx.config.node_id)
        .into_iter()
        .map(|(node_id, host, port, rack)| AckEndpoint {
            node_id,
            host,
            port,
            rack,
        })
        .collect();
    ShareAcknowledgeResponse {
        acquisition_lock_timeout_ms: settings.record_lock_duration_ms,
        responses: topics,
        node_endpoints,
        ..Default::default()
    }
}
