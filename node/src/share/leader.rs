//! The share-partitions a shard leads: for each (share group, partition led here), the
//! in-flight records (`partition.rs`), loaded from the persister on first use, read
//! from the log on ShareFetch, changed by acknowledgements, released when locks expire
//! or sessions end, and written back through the persister before an acknowledgement
//! is answered.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use event_listener::Event;
use spate_net::{ErrorCode, Uuid};

use super::partition::{AckBatch, Acquire, BatchSpan, SharePartition};
use super::persister::{self, ShareKey, StateWrite};
use crate::group::group_config::share::{AutoOffsetReset, IsolationLevel, ShareSettings};
use crate::mesh::{FetchOp, PartitionKey, PartitionOp, PartitionReply};
use crate::partition::{now_ms, Partition, Reader};
use crate::shard::ShardContext;

/// A share-partition unused this long, with nothing acquired and everything persisted,
/// is dropped (its state is in the persister).
const IDLE_MS: i64 = 10 * 60 * 1000;

/// Work on one share-partition (a `PartitionOp::Share`).
#[derive(Debug)]
pub struct ShareOp {
    pub group_id: Arc<str>,
    pub member_id: Arc<str>,
    pub topic_id: Uuid,
    /// Acknowledgements, applied before anything is fetched.
    pub acks: Vec<AckBatch>,
    /// Release what the member holds (its session ended), after the acknowledgements.
    pub release: bool,
    /// Acquire records too.
    pub fetch: Option<FetchLimits>,
    pub settings: ShareSettings,
}

#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    pub max_records: usize,
    pub max_bytes: usize,
    pub record_limit: bool,
}

/// The answer for one share-partition.
#[derive(Debug, Default)]
pub struct ShareReply {
    /// The acknowledgements' error (0: none, or none were sent).
    pub ack_error: i16,
    pub batches: Vec<Bytes>,
    /// (first offset, last offset, delivery count).
    pub acquired: Vec<(i64, i64, i16)>,
    /// Where the group's readable data ended at the read (a long poll waits past it).
    pub readable_end: i64,
}

/// One share-partition's state and its persistence.
struct Entry {
    key: ShareKey,
    leader_epoch: i32,
    state_epoch: Cell<i32>,
    /// None while the state loads.
    state: RefCell<Option<SharePartition>>,
    loaded: Event,
    /// Changes made / written (a write covers every change made before it began).
    version: Cell<u64>,
    persisted: Cell<u64>,
    writing: Cell<bool>,
    written: Event,
    /// Notified when records become available again (released, locks expired).
    available: Event,
    last_used_ms: Cell<i64>,
}

type EntryKey = (Arc<str>, PartitionKey);

/// The shard's share-partitions.
#[derive(Default)]
pub struct ShareLeader {
    entries: HashMap<EntryKey, Rc<Entry>>,
}

impl ShareLeader {
    /// The partition is no longer led here: its share-partitions go (their state is
    /// persisted; the next leader loads it).
    pub fn forget_partition(&mut self, key: &PartitionKey) {
        self.entries.retain(|(_, k), _| k != key);
    }

    /// For a long-polling ShareFetch: a listener for records of `group`'s share-partition
    /// on `key` becoming available, and whether some are available now.
    pub fn watch(
        &self,
        group: &Arc<str>,
        key: &PartitionKey,
    ) -> (Option<event_listener::EventListener>, bool) {
        let Some(e) = self.entries.get(&(group.clone(), key.clone())) else {
            return (None, false);
        };
        let listener = e.available.listen();
        let available = e.state.borrow().as_ref().is_some_and(|s| s.has_available());
        (Some(listener), available)
    }

    /// (share-partitions, records in flight, records acquired), for metrics.
    pub fn gauges(&self) -> (usize, usize, usize) {
        let mut in_flight = 0;
        let mut acquired = 0;
        for e in self.entries.values() {
            if let Some(s) = e.state.borrow().as_ref() {
                in_flight += s.in_flight();
                acquired += s.acquired();
            }
        }
        (self.entries.len(), in_flight, acquired)
    }
}

/// Run a share op on `partition`, owned by this shard.
pub async fn run(
    ctx: &Rc<ShardContext>,
    key: PartitionKey,
    partition: Rc<Partition>,
    op: ShareOp,
) -> PartitionReply {
    match serve(ctx, &key, &partition, op).await {
        Ok(reply) => PartitionReply::Share(reply),
        Err(code) => PartitionReply::Error(code),
    }
}

async fn serve(
    ctx: &Rc<ShardContext>,
    key: &PartitionKey,
    partition: &Rc<Partition>,
    op: ShareOp,
) -> Result<ShareReply, i16> {
    let Some(epoch) = partition.leader_epoch() else {
        return Err(ErrorCode::NotLeaderOrFollower.code());
    };
    let entry = entry(ctx, key, partition, &op, epoch).await?;
    let now = now_ms();
    entry.last_used_ms.set(now);
    let mut reply = ShareReply::default();
    let lock_ms = i64::from(op.settings.record_lock_duration_ms);
    if !op.acks.is_empty() {
        let result = with_state(&entry, |s| {
            s.acknowledge(&op.member_id, &op.acks, now, lock_ms)
        });
        reply.ack_error = match result {
            Ok(true) => {
                entry.version.set(entry.version.get() + 1);
                entry.available.notify(usize::MAX);
                persist(ctx, &entry).await.err().unwrap_or(0)
            }
            Ok(false) => 0,
            Err(code) => code,
        };
    }
    if op.release && with_state(&entry, |s| s.release_member(&op.member_id)) {
        entry.version.set(entry.version.get() + 1);
        entry.available.notify(usize::MAX);
        if let Err(code) = persist(ctx, &entry).await {
            tracing::warn!(group = %op.group_id, topic = %key.topic, partition = key.partition, code, "share-partition state not written after a session ended");
        }
    }
    if let Some(limits) = op.fetch {
        acquire(ctx, &entry, partition, &op, limits, &mut reply).await?;
    }
    Ok(reply)
}

fn with_state<T>(entry: &Entry, f: impl FnOnce(&mut SharePartition) -> T) -> T {
    f(entry
        .state
        .borrow_mut()
        .as_mut()
        .expect("a loaded entry has its state"))
}

/// The share-partition's entry, loaded (and its state read from the persister) if it
/// is not yet, or if it was loaded under another leader epoch.
async fn entry(
    ctx: &Rc<ShardContext>,
    key: &PartitionKey,
    partition: &Rc<Partition>,
    op: &ShareOp,
    epoch: i32,
) -> Result<Rc<Entry>, i16> {
    let id: EntryKey = (op.group_id.clone(), key.clone());
    loop {
        let existing = ctx.share_partitions.borrow().entries.get(&id).cloned();
        match existing {
            Some(e) if e.leader_epoch == epoch => {
                if e.state.borrow().is_some() {
                    return Ok(e);
                }
                let loaded = e.loaded.listen();
                if e.state.borrow().is_none() {
                    loaded.await;
                }
                // Loaded, or the load failed and removed the entry: look again.
                if e.state.borrow().is_some() {
                    return Ok(e);
                }
                if !ctx.share_partitions.borrow().entries.contains_key(&id) {
                    continue;
                }
            }
            _ => {
                let e = Rc::new(Entry {
                    key: ShareKey {
                        group_id: op.group_id.to_string(),
                        topic_id: op.topic_id,
                        partition: key.partition,
                    },
                    leader_epoch: epoch,
                    state_epoch: Cell::new(0),
                    state: RefCell::new(None),
                    loaded: Event::new(),
                    version: Cell::new(0),
                    persisted: Cell::new(0),
                    writing: Cell::new(false),
                    written: Event::new(),
                    available: Event::new(),
                    last_used_ms: Cell::new(now_ms()),
                });
                ctx.share_partitions
                    .borrow_mut()
                    .entries
                    .insert(id.clone(), e.clone());
                let loaded = load(ctx, &e, partition, &op.settings).await;
                if let Err(code) = loaded {
                    let mut shares = ctx.share_partitions.borrow_mut();
                    if shares.entries.get(&id).is_some_and(|x| Rc::ptr_eq(x, &e)) {
                        shares.entries.remove(&id);
                    }
                    e.loaded.notify(usize::MAX);
                    return Err(code);
                }
                e.loaded.notify(usize::MAX);
                return Ok(e);
            }
        }
    }
}

/// Read the state from the persister; a state without a start offset starts where
/// `share.auto.offset.reset` says, and is written back at once so that it stays there.
async fn load(
    ctx: &Rc<ShardContext>,
    entry: &Rc<Entry>,
    partition: &Rc<Partition>,
    settings: &ShareSettings,
) -> Result<(), i16> {
    let state = persister::read(ctx, &entry.key, entry.leader_epoch)
        .await
        .map_err(|(code, message)| {
            tracing::debug!(group = %entry.key.group_id, partition = entry.key.partition, code, ?message, "share-partition state not read");
            load_error(code)
        })?;
    entry.state_epoch.set(state.state_epoch);
    let limit = delivery_limit(settings);
    let fresh = state.start_offset < 0;
    let mut share = if fresh {
        let start = reset_offset(partition, settings).await?;
        SharePartition::new(start, limit)
    } else {
        SharePartition::restore(&state, limit)
    };
    let log_start = partition.log.log_start_offset();
    if share.start() < log_start {
        share.skip_to(log_start);
    }
    *entry.state.borrow_mut() = Some(share);
    if fresh {
        entry.version.set(1);
        persist(ctx, entry).await?;
    }
    Ok(())
}

fn read_committed(settings: &ShareSettings) -> bool {
    settings.isolation_level == IsolationLevel::ReadCommitted
}

/// The group's delivery count limit, as a record's count holds it.
fn delivery_limit(settings: &ShareSettings) -> i16 {
    i16::try_from(settings.delivery_count_limit.max(1)).unwrap_or(i16::MAX)
}

/// How persister errors reach a share consumer: the partition is not served now
/// (retriable) or its leader moved.
fn load_error(code: i16) -> i16 {
    use ErrorCode as E;
    if code == E::FencedLeaderEpoch.code() {
        E::NotLeaderOrFollower.code()
    } else if code == E::UnknownTopicOrPartition.code() || code == E::FencedStateEpoch.code() {
        code
    } else {
        E::LeaderNotAvailable.code()
    }
}

/// The start offset `share.auto.offset.reset` gives a share-partition without one.
async fn reset_offset(partition: &Rc<Partition>, settings: &ShareSettings) -> Result<i64, i16> {
    let timestamp = match settings.auto_offset_reset {
        AutoOffsetReset::Latest => -1,
        AutoOffsetReset::Earliest => -2,
        AutoOffsetReset::ByDuration(d) => {
            now_ms().saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        }
    };
    let reply = partition
        .run(PartitionOp::ListOffset {
            timestamp,
            read_committed: read_committed(settings),
            current_leader_epoch: -1,
        })
        .await;
    match reply {
        // No record at or after that time: the end.
        PartitionReply::Offset { offset, .. } if offset < 0 => Ok(partition.high_watermark()),
        PartitionReply::Offset { offset, .. } => Ok(offset),
        other => Err(match crate::route::error_of(&other) {
            0 => ErrorCode::UnknownServerError.code(),
            code => code,
        }),
    }
}

/// Write the entry's state, unless a write that began after the latest change already
/// did; concurrent callers share one write.
async fn persist(ctx: &Rc<ShardContext>, entry: &Rc<Entry>) -> Result<(), i16> {
    let wanted = entry.version.get();
    loop {
        if entry.persisted.get() >= wanted {
            return Ok(());
        }
        if entry.writing.get() {
            let done = entry.written.listen();
            if entry.writing.get() {
                done.await;
            }
            continue;
        }
        entry.writing.set(true);
        let version = entry.version.get();
        let write = {
            let state = entry.state.borrow();
            let s = state.as_ref().expect("a loaded entry has its state");
            StateWrite {
                state_epoch: entry.state_epoch.get(),
                leader_epoch: entry.leader_epoch,
                start_offset: s.start(),
                delivery_complete_count: s.delivery_complete(),
                batches: s.state_batches(),
            }
        };
        let result = persister::write(ctx, &entry.key, write).await;
        entry.writing.set(false);
        if result.is_ok() {
            entry.persisted.set(entry.persisted.get().max(version));
        }
        entry.written.notify(usize::MAX);
        if let Err((code, message)) = result {
            tracing::warn!(group = %entry.key.group_id, partition = entry.key.partition, code, ?message, "share-partition state not written");
            return Err(load_error(code));
        }
    }
}

/// Read the log from where the share-partition can acquire and acquire what it can.
async fn acquire(
    ctx: &Rc<ShardContext>,
    entry: &Rc<Entry>,
    partition: &Rc<Partition>,
    op: &ShareOp,
    limits: FetchLimits,
    reply: &mut ShareReply,
) -> Result<(), i16> {
    let settings = &op.settings;
    let max_in_flight = usize::try_from(settings.partition_max_record_locks.max(1)).unwrap_or(1);
    // A second try when the log starts past the share-partition (records deleted).
    for _ in 0..2 {
        let Some(from) = with_state(entry, |s| s.fetch_offset(max_in_flight)) else {
            reply.readable_end = partition.high_watermark();
            return Ok(());
        };
        let read = partition
            .run(PartitionOp::Fetch(FetchOp {
                offset: from,
                max_bytes: limits.max_bytes,
                min_one: true,
                read_committed: read_committed(settings),
                current_leader_epoch: -1,
                last_fetched_epoch: -1,
                reader: Reader::Consumer,
                same_rack: None,
            }))
            .await;
        match read {
            PartitionReply::Fetched {
                batches,
                aborted,
                readable_end,
                ..
            } => {
                reply.readable_end = readable_end;
                let spans = spans(&batches, read_committed(settings), &aborted);
                let got = with_state(entry, |s| {
                    s.acquire(
                        &Acquire {
                            member: &op.member_id,
                            now_ms: now_ms(),
                            lock_ms: i64::from(settings.record_lock_duration_ms),
                            max_records: limits.max_records,
                            record_limit: limits.record_limit,
                            max_in_flight,
                        },
                        from,
                        &spans,
                    )
                });
                let redelivered = got
                    .ranges
                    .iter()
                    .filter(|r| r.2 > 1)
                    .map(|r| (r.1 - r.0 + 1) as u64)
                    .sum::<u64>();
                {
                    let mut m = ctx.metrics.borrow_mut();
                    m.share_records_acquired += got.records() as u64;
                    m.share_records_redelivered += redelivered;
                }
                reply.batches = got.batches.iter().map(|&i| batches[i].clone()).collect();
                reply.acquired = got.ranges;
                return Ok(());
            }
            PartitionReply::FetchError {
                code,
                log_start_offset,
                ..
            } if code == ErrorCode::OffsetOutOfRange.code() && log_start_offset > from => {
                with_state(entry, |s| s.skip_to(log_start_offset));
                entry.version.set(entry.version.get() + 1);
            }
            PartitionReply::FetchError { code, .. } | PartitionReply::Error(code) => {
                return Err(code)
            }
            _ => return Err(ErrorCode::UnknownServerError.code()),
        }
    }
    Ok(())
}

/// The batches' offsets, and whether each is a control batch or (read_committed) part
/// of an aborted transaction, as a consumer decides it: a producer's batches from the
/// first offset of its aborted transaction up to its abort marker.
fn spans(batches: &[Bytes], read_committed: bool, aborted: &[(i64, i64)]) -> Vec<BatchSpan> {
    let mut pending: Vec<(i64, i64)> = aborted.to_vec();
    pending.sort_by_key(|a| a.1);
    let mut next = 0usize;
    let mut aborting: std::collections::HashSet<i64> = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(batches.len());
    for b in batches {
        let Some(h) = header(b) else {
            continue;
        };
        let mut is_aborted = false;
        if read_committed && h.transactional {
            while next < pending.len() && pending[next].1 <= h.base {
                aborting.insert(pending[next].0);
                next += 1;
            }
            if h.control {
                aborting.remove(&h.producer_id);
            } else {
                is_aborted = aborting.contains(&h.producer_id);
            }
        }
        out.push(BatchSpan {
            base: h.base,
            last: h.last,
            control: h.control,
            aborted: is_aborted,
        });
    }
    out
}

struct Header {
    base: i64,
    last: i64,
    control: bool,
    transactional: bool,
    producer_id: i64,
}

/// The fields of a v2 record batch header acquisition needs.
fn header(b: &[u8]) -> Option<Header> {
    let base = i64::from_be_bytes(b.get(0..8)?.try_into().ok()?);
    let attributes = i16::from_be_bytes(b.get(21..23)?.try_into().ok()?);
    let delta = i32::from_be_bytes(b.get(23..27)?.try_into().ok()?);
    let producer_id = i64::from_be_bytes(b.get(43..51)?.try_into().ok()?);
    Some(Header {
        base,
        last: base.checked_add(i64::from(delta))?,
        control: attributes & 0x20 != 0,
        transactional: attributes & 0x10 != 0,
        producer_id,
    })
}

/// Release the records whose acquisition locks expired, and drop idle share-partitions;
/// called on the shard's tick.
pub fn tick(ctx: &Rc<ShardContext>) {
    let now = now_ms();
    let entries: Vec<(EntryKey, Rc<Entry>)> = ctx
        .share_partitions
        .borrow()
        .entries
        .iter()
        .map(|(k, e)| (k.clone(), e.clone()))
        .collect();
    for (id, e) in entries {
        let Some(changed) = e.state.borrow_mut().as_mut().map(|s| s.expire_locks(now)) else {
            continue;
        };
        if changed {
            e.version.set(e.version.get() + 1);
            e.available.notify(usize::MAX);
            let ctx = ctx.clone();
            compio::runtime::spawn(async move {
                let _ = persist(&ctx, &e).await;
            })
            .detach();
            continue;
        }
        let idle = now - e.last_used_ms.get() > IDLE_MS
            && !e.writing.get()
            && e.persisted.get() >= e.version.get()
            && e.state.borrow().as_ref().is_some_and(|s| s.acquired() == 0);
        if idle {
            ctx.share_partitions.borrow_mut().entries.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(base: i64, delta: i32, attributes: i16, producer: i64) -> Bytes {
        let mut b = vec![0u8; 61];
        b[0..8].copy_from_slice(&base.to_be_bytes());
        b[21..23].copy_from_slice(&attributes.to_be_bytes());
        b[23..27].copy_from_slice(&delta.to_be_bytes());
        b[43..51].copy_from_slice(&producer.to_be_bytes());
        Bytes::from(b)
    }

    #[test]
    fn aborted_transactions_and_markers() {
        let batches = vec![
            batch(0, 1, 0x10, 7), // aborted txn of producer 7
            batch(2, 0, 0, 8),    // plain
            batch(3, 0, 0x30, 7), // abort marker of 7
            batch(4, 0, 0x10, 7), // next txn of 7, not aborted
        ];
        let s = spans(&batches, true, &[(7, 0)]);
        let flags: Vec<(bool, bool)> = s.iter().map(|b| (b.control, b.aborted)).collect();
        assert_eq!(
            flags,
            vec![(false, true), (false, false), (true, false), (false, false)]
        );
        assert_eq!((s[0].base, s[0].last), (0, 1));
        // read_uncommitted delivers the aborted batch.
        assert!(!spans(&batches, false, &[(7, 0)])[0].aborted);
    }
}
