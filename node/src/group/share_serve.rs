//! Share groups on the coordinating shard: the heartbeat (records written before the
//! answer, then the persister asked to initialize new share-partitions), describe,
//! delete (share state deleted through the persister first), and the periodic work
//! (expired members, deleted topics).

use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Instant;

use spate_net::ErrorCode;

use super::consumer::GroupError;
use super::coordinator::{
    append_records, loaded_state, offsets_partition, still_loaded, Coordinator, ShareGroupView,
};
use super::share::group::{InitRequest, TopicPartitions};
use super::share::records::{self as share_records, ShareRecord};
use super::share::{ShareGroup, ShareHeartbeatArgs, ShareHeartbeatReply};
use crate::partition::now_ms;
use crate::shard::ShardContext;
use crate::share::persister::{self, ShareKey};

/// The state epoch a share-partition's state is initialized with by the coordinator.
const INITIAL_STATE_EPOCH: i32 = 0;

type Reply = flume::Sender<Result<ShareHeartbeatReply, GroupError>>;

pub fn heartbeat(
    ctx: &Rc<ShardContext>,
    mut coord: std::cell::RefMut<'_, Coordinator>,
    group_id: String,
    args: ShareHeartbeatArgs,
    now: Instant,
    reply: Reply,
) {
    let result = serve_heartbeat(ctx, &mut coord, &group_id, args, now);
    drop(coord);
    match result {
        Err(e) => {
            tracing::debug!(group = %group_id, code = ?e.code, message = ?e.message, "share group heartbeat refused");
            let _ = reply.send(Err(e));
        }
        Ok((answer, records, init)) => write(ctx, &group_id, records, Some((answer, reply)), init),
    }
}

fn serve_heartbeat(
    ctx: &ShardContext,
    coord: &mut Coordinator,
    group_id: &str,
    args: ShareHeartbeatArgs,
    now: Instant,
) -> Result<(ShareHeartbeatReply, Vec<ShareRecord>, InitRequest), GroupError> {
    if coord.owns_other_kind(group_id) {
        return Err(GroupError::new(
            ErrorCode::GroupIdNotFound,
            format!("Group {group_id} is not a share group."),
        ));
    }
    if !coord.share.contains_key(group_id) {
        if args.member_epoch != 0 {
            // Kafka's messages differ for a leave and for a heartbeat.
            let message = if args.member_epoch == super::share::group::LEAVE_EPOCH {
                format!("Group {group_id} not found.")
            } else {
                format!("Share group {group_id} not found.")
            };
            return Err(GroupError::new(ErrorCode::GroupIdNotFound, message));
        }
        coord
            .share
            .insert(group_id.to_string(), ShareGroup::new(group_id));
    }
    let settings = Coordinator::share_settings(ctx, group_id);
    let topics = coord.topics_view(ctx);
    let Some(group) = coord.share.get_mut(group_id) else {
        unreachable!("the group was just looked up or created");
    };
    let result = group.heartbeat(args, &topics, &settings, now);
    // A failed first join leaves no empty group behind.
    if result.is_err() && group.is_empty() && group.group_epoch == 0 {
        coord.share.remove(group_id);
    }
    result
}

/// Writes a share group's records; then answers the heartbeat, if any, and asks the
/// persister to initialize `init`.
fn write(
    ctx: &Rc<ShardContext>,
    group_id: &str,
    records: Vec<ShareRecord>,
    answer: Option<(ShareHeartbeatReply, Reply)>,
    init: InitRequest,
) {
    let now = now_ms();
    let encoded = records
        .iter()
        .map(|r| share_records::encode(group_id, r, now))
        .collect();
    let append = append_records(offsets_partition(ctx, group_id), encoded);
    let (ctx, group_id) = (ctx.clone(), group_id.to_string());
    compio::runtime::spawn(async move {
        let code = append.await;
        if code != 0 {
            tracing::warn!(group = %group_id, code, "writing share group records failed");
        }
        if let Some((reply, tx)) = answer {
            let result = if code == 0 {
                Ok(reply)
            } else {
                Err(GroupError {
                    code: ErrorCode::from_code(code).unwrap_or(ErrorCode::UnknownServerError),
                    message: None,
                })
            };
            let _ = tx.send_async(result).await;
        }
        if code == 0 && !init.is_empty() {
            initialize(&ctx, &group_id, init).await;
        }
    })
    .detach();
}

/// Initializes share-partitions through the persister; those that succeed become
/// assignable (a record). Failures stay initializing: a heartbeat after
/// `group.share.initialize.retry.interval.ms` asks again.
async fn initialize(ctx: &Rc<ShardContext>, group_id: &str, init: InitRequest) {
    let state = loaded_state(ctx, group_id);
    let mut done = InitRequest::new();
    for (topic_id, (partitions, start)) in init {
        for p in partitions {
            let key = ShareKey {
                group_id: group_id.to_string(),
                topic_id: spate_net::Uuid(topic_id),
                partition: p,
            };
            match persister::initialize(ctx, &key, INITIAL_STATE_EPOCH, start).await {
                Ok(()) => {
                    done.entry(topic_id)
                        .or_insert_with(|| (BTreeSet::new(), start))
                        .0
                        .insert(p);
                }
                Err((code, message)) => {
                    tracing::debug!(group = %group_id, partition = p, code, ?message, "share-partition state initialization failed; retried later");
                }
            }
        }
    }
    if done.is_empty() {
        return;
    }
    let record = {
        let mut coord = ctx.groups.borrow_mut();
        if !still_loaded(&coord, state) {
            return;
        }
        coord
            .share
            .get_mut(group_id)
            .and_then(|g| g.initialized(&done))
    };
    if let Some(r) = record {
        write(ctx, group_id, vec![r], None, InitRequest::new());
    }
}

/// Deletes the state of `topics` through the persister; true if all of it went.
async fn delete_state(
    ctx: &ShardContext,
    group_id: &str,
    topics: &TopicPartitions,
) -> Result<(), i16> {
    for (topic_id, (_, partitions)) in topics {
        for p in partitions {
            let key = ShareKey {
                group_id: group_id.to_string(),
                topic_id: spate_net::Uuid(*topic_id),
                partition: *p,
            };
            persister::delete(ctx, &key)
                .await
                .map_err(|(code, _)| code)?;
        }
    }
    Ok(())
}

/// DeleteGroups of an empty share group (the caller checked it has no members): its
/// share state first, then its records.
pub fn delete_group(ctx: &Rc<ShardContext>, group_id: String, reply: flume::Sender<i16>) {
    let Some(with_state) = ctx
        .groups
        .borrow()
        .share
        .get(&group_id)
        .map(|g| g.state.with_state())
    else {
        let _ = reply.send(ErrorCode::GroupIdNotFound.code());
        return;
    };
    let ctx = ctx.clone();
    compio::runtime::spawn(async move {
        if let Err(code) = delete_state(&ctx, &group_id, &with_state).await {
            let _ = reply.send_async(code).await;
            return;
        }
        // A member may have joined while the state was being deleted.
        let group = {
            let mut coord = ctx.groups.borrow_mut();
            match coord.share.get(&group_id) {
                Some(g) if g.is_empty() => Ok(coord.share.remove(&group_id)),
                Some(_) => Err(()),
                None => Ok(None),
            }
        };
        let Ok(group) = group else {
            let _ = reply.send_async(ErrorCode::NonEmptyGroup.code()).await;
            return;
        };
        let code = match group {
            Some(g) => {
                let now = now_ms();
                let records = g
                    .tombstones()
                    .iter()
                    .map(|r| share_records::encode(&group_id, r, now))
                    .collect();
                append_records(offsets_partition(&ctx, &group_id), records).await
            }
            None => ErrorCode::GroupIdNotFound.code(),
        };
        let _ = reply.send_async(code).await;
    })
    .detach();
}

pub fn describe(
    ctx: &ShardContext,
    coord: &mut Coordinator,
    group_id: &str,
) -> Result<Option<ShareGroupView>, ()> {
    if coord.owns_other_kind(group_id) {
        return Err(());
    }
    let topics = coord.topics_view(ctx);
    Ok(coord.share.get(group_id).map(|g| ShareGroupView {
        state: g.state(),
        group_epoch: g.group_epoch,
        assignment_epoch: g.assignment_epoch,
        // With their current assignments, as Kafka describes them.
        members: g.members.values().cloned().collect(),
        topics,
    }))
}

/// Expired members leave; topics deleted from the metadata lose their share state.
/// Empty share groups stay until deleted (Kafka never expires them).
pub fn tick(ctx: &Rc<ShardContext>, now: Instant) {
    let mut writes = Vec::new();
    let mut deletes = Vec::new();
    {
        let mut coord = ctx.groups.borrow_mut();
        if coord.share.is_empty() {
            return;
        }
        let image_offset = ctx.image().offset;
        let metadata_changed = coord.share_image_seen != image_offset;
        coord.share_image_seen = image_offset;
        let topics = coord.topics_view(ctx);
        for (id, g) in coord.share.iter_mut() {
            let mut records = Vec::new();
            for member in g.expired(now) {
                tracing::info!(group = %id, member = %member, "share group member expired");
                records.extend(g.fence(&member, &topics));
            }
            if metadata_changed {
                let gone = g.on_metadata_change(&topics, &mut records);
                if !gone.is_empty() {
                    deletes.push((id.clone(), gone));
                }
            }
            if !records.is_empty() {
                writes.push((id.clone(), records));
            }
        }
    }
    for (id, records) in writes {
        write(ctx, &id, records, None, InitRequest::new());
    }
    for (id, gone) in deletes {
        let ctx = ctx.clone();
        compio::runtime::spawn(async move {
            if delete_state(&ctx, &id, &gone).await.is_err() {
                tracing::debug!(group = %id, "deleting share state of deleted topics failed; kept as deleting");
                return;
            }
            let record = ctx
                .groups
                .borrow_mut()
                .share
                .get_mut(&id)
                .and_then(|g| g.deleted(&gone.keys().copied().collect()));
            if let Some(r) = record {
                write(&ctx, &id, vec![r], None, InitRequest::new());
            }
        })
        .detach();
    }
}

fn not_share(group_id: &str) -> GroupError {
    GroupError::new(
        ErrorCode::GroupIdNotFound,
        format!("Group {group_id} is not a share group."),
    )
}

fn not_found(group_id: &str) -> GroupError {
    GroupError::new(
        ErrorCode::GroupIdNotFound,
        format!("Group {group_id} not found."),
    )
}

/// Kafka's GroupNotEmptyException carries the error's default message.
fn not_empty() -> GroupError {
    GroupError::new(ErrorCode::NonEmptyGroup, "The group is not empty.")
}

pub fn state_partitions(
    coord: &Coordinator,
    group_id: &str,
) -> Result<TopicPartitions, GroupError> {
    if coord.owns_other_kind(group_id) {
        return Err(not_share(group_id));
    }
    // A missing group has no offsets (Kafka answers without an error).
    Ok(coord
        .share
        .get(group_id)
        .map(|g| g.state.initialized.clone())
        .unwrap_or_default())
}

/// Answers after the records are written (or with the write's error).
fn answer_after<T: 'static>(
    ctx: &Rc<ShardContext>,
    group_id: &str,
    records: Vec<ShareRecord>,
    value: T,
    reply: flume::Sender<Result<T, GroupError>>,
) {
    let now = now_ms();
    let encoded = records
        .iter()
        .map(|r| share_records::encode(group_id, r, now))
        .collect();
    let append = append_records(offsets_partition(ctx, group_id), encoded);
    compio::runtime::spawn(async move {
        let code = append.await;
        let result = if code == 0 {
            Ok(value)
        } else {
            Err(GroupError {
                code: ErrorCode::from_code(code).unwrap_or(ErrorCode::UnknownServerError),
                message: None,
            })
        };
        let _ = reply.send_async(result).await;
    })
    .detach();
}

pub fn alter_offsets(
    ctx: &Rc<ShardContext>,
    mut coord: std::cell::RefMut<'_, Coordinator>,
    group_id: String,
    topics: TopicPartitions,
    reply: flume::Sender<Result<i32, GroupError>>,
) {
    if coord.owns_other_kind(&group_id) {
        let _ = reply.send(Err(not_share(&group_id)));
        return;
    }
    // Kafka creates the (empty) group when it does not exist.
    let group = coord
        .share
        .entry(group_id.clone())
        .or_insert_with(|| ShareGroup::new(&group_id));
    if !group.is_empty() {
        let _ = reply.send(Err(not_empty()));
        return;
    }
    let mut records = Vec::new();
    let epoch = group.prepare_alter(&topics, &mut records);
    drop(coord);
    answer_after(ctx, &group_id, records, epoch, reply);
}

pub fn delete_offsets(
    ctx: &Rc<ShardContext>,
    mut coord: std::cell::RefMut<'_, Coordinator>,
    group_id: String,
    topics: BTreeSet<crate::group::consumer::member::TopicId>,
    reply: flume::Sender<Result<TopicPartitions, GroupError>>,
) {
    if coord.owns_other_kind(&group_id) {
        let _ = reply.send(Err(not_share(&group_id)));
        return;
    }
    let Some(group) = coord.share.get_mut(&group_id) else {
        let _ = reply.send(Err(not_found(&group_id)));
        return;
    };
    if !group.is_empty() {
        let _ = reply.send(Err(not_empty()));
        return;
    }
    let mut records = Vec::new();
    let doomed = group.prepare_delete(&topics, &mut records);
    drop(coord);
    answer_after(ctx, &group_id, records, doomed, reply);
}

pub fn state_done(
    ctx: &Rc<ShardContext>,
    mut coord: std::cell::RefMut<'_, Coordinator>,
    group_id: String,
    initialized: InitRequest,
    deleted: BTreeSet<crate::group::consumer::member::TopicId>,
    reply: flume::Sender<i16>,
) {
    let Some(group) = coord.share.get_mut(&group_id) else {
        let _ = reply.send(ErrorCode::GroupIdNotFound.code());
        return;
    };
    let records: Vec<ShareRecord> = [group.initialized(&initialized), group.deleted(&deleted)]
        .into_iter()
        .flatten()
        .collect();
    drop(coord);
    let (tx, rx) = flume::bounded(1);
    answer_after(ctx, &group_id, records, (), tx);
    compio::runtime::spawn(async move {
        let code = match rx.recv_async().await {
            Ok(Ok(())) => 0,
            Ok(Err(e)) => e.code.code(),
            Err(_) => ErrorCode::UnknownServerError.code(),
        };
        let _ = reply.send_async(code).await;
    })
    .detach();
}
