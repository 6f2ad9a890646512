//! AlterReplicaLogDirs: moving a partition's log to another of the broker's log dirs,
//! as Kafka's future logs and `ReplicaAlterLogDirsThread` do, on the partition's owner
//! shard.
//!
//! 1. A future log is opened in the destination (`future_dirs.rs` names it) and
//!    follows the current log as a follower follows its leader: batches are read from
//!    the current log and appended with their own offsets and leader epochs, which
//!    also builds the copy's indexes, epoch cache and producer state (what a follower
//!    does, `Partition::append_replicated`). Producers keep appending to the current
//!    log meanwhile. A truncation of the current log (a follower's) restarts the copy;
//!    retention moving its start moves the copy's.
//! 2. Once the copy is within one chunk of the end, the current log is closed: from
//!    then appends fail with NOT_LEADER_OR_FOLLOWER, which clients retry, and its end
//!    is fixed. The rest is copied, the copy takes the current log start and latest
//!    epoch, writes its producer snapshot and is closed (synced, marked clean).
//! 3. The swap: the current log is renamed to `-delete` (with the copy's id), then the
//!    copy to `<topic>-<partition>`, each rename followed by an fsync of its
//!    directory. Until the first rename the current log is the partition's; after it,
//!    the copy is complete and durable, and a restart finishes the swap
//!    (`future_dirs::recover`). Acknowledged records are in both, so none is lost or
//!    doubled whichever log a crash leaves.
//! 4. The partition is reopened from its new place with the high watermark it had
//!    and its role, and the old log is removed in the background.
//!
//! Any failure before the swap leaves the partition where it was (its log reopened if
//! step 2 had closed it) and removes the copy.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use spate_log::LogError;
use spate_net::ErrorCode;

use crate::future_dirs::{future_dir_name, swapped_dir_name, sync_dir};
use crate::mesh::PartitionKey;
use crate::partition::{partition_dir, Partition};
use crate::replica::quota::Throttle;
use crate::shard::ShardContext;

/// The most read from the current log per copy step: the move's buffer bound.
const CHUNK_BYTES: usize = 1 << 20;
/// How long a throttled copy waits before looking at the rate again.
const THROTTLE_PAUSE: Duration = Duration::from_millis(100);

/// One partition's move in flight, kept by its owner shard (`ShardContext::moves`).
pub struct Move {
    /// The destination log dir's index.
    pub dest: usize,
    /// The copy's id, shared by its `-future` and the old log's `-delete` name.
    id: String,
    future_dir: PathBuf,
    /// The copy, once opened.
    future: RefCell<Option<Rc<Partition>>>,
    /// Superseded by another AlterReplicaLogDirs before step 2: stop, remove the copy.
    cancelled: Cell<bool>,
    /// In step 2 or later: no longer cancelled, but followed by a move to `then`.
    finishing: Cell<bool>,
    then: Cell<Option<usize>>,
}

/// What DescribeLogDirs reports of a future replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FutureReplica {
    pub dir: usize,
    pub size_bytes: u64,
    /// How far the copy's end is behind the current log's.
    pub offset_lag: i64,
}

/// The future replica of `key`'s partition, if it is moving.
pub fn describe(ctx: &ShardContext, key: &PartitionKey) -> Option<FutureReplica> {
    let mv = ctx.moves.borrow().get(key).cloned()?;
    let current = ctx.partition(key)?;
    let (size_bytes, end) = match &*mv.future.borrow() {
        Some(f) => (f.log.size_bytes(), f.log.log_end_offset()),
        None => (0, current.log.log_start_offset()),
    };
    Some(FutureReplica {
        dir: mv.dest,
        size_bytes,
        offset_lag: (current.log.log_end_offset() - end).max(0),
    })
}

/// AlterReplicaLogDirs for one partition this shard owns, to log dir `dest`: the
/// error code (Kafka's `ReplicaManager.alterReplicaLogDirs`). The move itself runs
/// after the answer.
pub fn alter(ctx: &Rc<ShardContext>, key: &PartitionKey, dest: usize) -> i16 {
    if ctx.log_dirs.failure(dest).is_some() {
        return ErrorCode::KafkaStorageError.code();
    }
    let Some(current) = ctx.partition(key) else {
        return if ctx.offline.borrow().contains_key(key) {
            ErrorCode::KafkaStorageError.code()
        } else {
            // Kafka keeps REPLICA_NOT_AVAILABLE here for compatibility.
            ErrorCode::ReplicaNotAvailable.code()
        };
    };
    let in_flight = ctx.moves.borrow().get(key).cloned();
    if let Some(mv) = in_flight {
        if mv.dest == dest {
            return ErrorCode::None.code();
        }
        if mv.finishing.get() {
            // Too late to stop it: the next move starts from where it ends.
            mv.then.set(Some(dest));
            return ErrorCode::None.code();
        }
        mv.cancelled.set(true);
        ctx.moves.borrow_mut().remove(key);
    }
    if ctx.log_dirs.dir_of(&key.topic, key.partition) == Some(dest) {
        return ErrorCode::None.code();
    }
    // As Kafka: no future log while a directory is offline (the partition's log could
    // be on it too).
    if ctx.log_dirs.any_offline() {
        return ErrorCode::KafkaStorageError.code();
    }
    start(ctx, key.clone(), current, dest)
}

/// Start moving `current` to log dir `dest` (also how a move a restart interrupted
/// starts over).
pub fn start(
    ctx: &Rc<ShardContext>,
    key: PartitionKey,
    current: Rc<Partition>,
    dest: usize,
) -> i16 {
    let id = crate::delete_dirs::random_hex_id();
    let Some(name) = future_dir_name(&key.topic, key.partition, &id) else {
        return ErrorCode::InvalidTopicException.code();
    };
    let mv = Rc::new(Move {
        dest,
        future_dir: ctx.log_dirs.path(dest).join(name),
        id,
        future: RefCell::new(None),
        cancelled: Cell::new(false),
        finishing: Cell::new(false),
        then: Cell::new(None),
    });
    ctx.moves.borrow_mut().insert(key.clone(), mv.clone());
    tracing::info!(topic = %key.topic, partition = key.partition, to = %mv.future_dir.display(), "moving a partition to another log dir");
    let ctx = ctx.clone();
    compio::runtime::spawn(async move { run(ctx, key, current, mv).await }).detach();
    ErrorCode::None.code()
}

async fn run(ctx: Rc<ShardContext>, key: PartitionKey, current: Rc<Partition>, mv: Rc<Move>) {
    let outcome = copy_and_swap(&ctx, &key, &current, &mv).await;
    if ctx
        .moves
        .borrow()
        .get(&key)
        .is_some_and(|m| Rc::ptr_eq(m, &mv))
    {
        ctx.moves.borrow_mut().remove(&key);
    }
    match &outcome {
        Ok(true) => {
            tracing::info!(topic = %key.topic, partition = key.partition, dir = %ctx.log_dirs.path(mv.dest).display(), "partition moved to another log dir")
        }
        Ok(false) => {
            tracing::info!(topic = %key.topic, partition = key.partition, "partition move stopped")
        }
        Err(e) => {
            tracing::error!(topic = %key.topic, partition = key.partition, error = %format!("{e:#}"), "moving the partition to another log dir failed; it stays where it was")
        }
    }
    if !matches!(outcome, Ok(true)) {
        // A swap that began (the current log renamed to its `-delete` name) and could
        // not be undone needs the copy: the next start finishes it.
        let old_dir = current.log.dir();
        let began = old_dir.parent().is_some_and(|p| {
            p.join(swapped_dir_name(&key.topic, key.partition, &mv.id))
                .exists()
        });
        if began {
            tracing::error!(dir = %mv.future_dir.display(), "a log dir swap could not be finished or undone; the partition is offline until the next start finishes it");
        } else {
            discard(&ctx, &key, &mv).await;
        }
    }
    if let (Some(dest), Some(p)) = (mv.then.get(), ctx.partition(&key)) {
        if ctx.log_dirs.dir_of(&key.topic, key.partition) != Some(dest) {
            start(&ctx, key, p, dest);
        }
    }
}

/// Remove an abandoned copy.
async fn discard(ctx: &ShardContext, key: &PartitionKey, mv: &Move) {
    let future = mv.future.borrow_mut().take();
    let graveyard = ctx
        .log_dirs
        .path(mv.dest)
        .join(crate::delete_dirs::deleted_dir_name(
            &key.topic,
            key.partition,
        ));
    let removed = match future {
        Some(f) => f.delete(&graveyard).await.map_err(anyhow::Error::from),
        None => match std::fs::remove_dir_all(&mv.future_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        },
    };
    if let Err(e) = removed {
        tracing::warn!(dir = %mv.future_dir.display(), error = %format!("{e:#}"), "removing an abandoned future log failed; the next start removes it");
    }
}

/// Whether `current` is still the partition this shard serves.
fn serving(ctx: &ShardContext, key: &PartitionKey, current: &Rc<Partition>) -> bool {
    ctx.partitions
        .borrow()
        .get(key)
        .is_some_and(|p| Rc::ptr_eq(p, current))
}

/// Steps 1 to 4 (module docs): true once moved, false when stopped.
async fn copy_and_swap(
    ctx: &Rc<ShardContext>,
    key: &PartitionKey,
    current: &Rc<Partition>,
    mv: &Move,
) -> anyhow::Result<bool> {
    let dest_path = ctx.log_dirs.path(mv.dest);
    // No cache for the copy: nothing reads it while it is one, and its writes would
    // only evict the shard's hot batches.
    let future = Rc::new(
        Partition::open(
            mv.future_dir.clone(),
            current.topic_id,
            current.topic_config(),
            ctx.storage(),
            spate_log::BatchCache::shared(0),
            None,
        )
        .await
        .with_context(|| format!("opening {}", mv.future_dir.display()))?,
    );
    *mv.future.borrow_mut() = Some(future.clone());
    sync_dir(&dest_path)?;
    let mut truncations = current.truncations();
    // Step 1: follow the current log while it takes appends.
    loop {
        if mv.cancelled.get() || !serving(ctx, key, current) {
            return Ok(false);
        }
        let throttle = Some(&ctx.replication_quotas.alter_log_dirs);
        let copied = copy_step(current, &future, &mut truncations, throttle).await?;
        if caught_up(current, &future) || (copied > 0 && copied < CHUNK_BYTES / 2) {
            break;
        }
    }
    // Step 2: close the current log; whatever happens next, it is reopened unless
    // the swap went through.
    mv.finishing.set(true);
    let high_watermark = current.high_watermark();
    current.log.shutdown().await?;
    let finished = finish_copy(current, &future, truncations).await;
    let swapped = match finished {
        Ok(()) if serving(ctx, key, current) => {
            let dest = ctx.log_dirs.path(mv.dest);
            swap_dirs(&current.log.dir(), &mv.future_dir, &dest, key, &mv.id).map(|()| {
                ctx.log_dirs.moved(&key.topic, key.partition, mv.dest);
            })
        }
        Ok(()) => return Ok(false),
        Err(e) => Err(e),
    };
    let moved = swapped.is_ok();
    if moved {
        mv.future.borrow_mut().take();
    }
    // Step 4 (or back where it was).
    let dir = partition_dir(
        &ctx.log_dirs.path(if moved {
            mv.dest
        } else {
            ctx.log_dirs
                .dir_of(&key.topic, key.partition)
                .ok_or_else(|| anyhow!("the partition has no log dir"))?
        }),
        &key.topic,
        key.partition,
    );
    // Opening a missing directory would create an empty log: a swap that could not
    // be undone leaves the partition offline instead, for the next start to finish.
    let reopened = if dir.is_dir() {
        Partition::open(
            dir,
            current.topic_id,
            current.topic_config(),
            ctx.storage(),
            ctx.batch_cache.clone(),
            Some(high_watermark),
        )
        .await
    } else {
        Err(LogError::Offline {
            reason: format!("{} is missing after a failed log dir move", dir.display()),
            dir,
        })
    };
    install(ctx, key, current, reopened).await;
    if moved {
        remove_old_log(current.log.dir(), key, &mv.id);
    }
    swapped.map(|()| true)
}

/// Remove the log a swap replaced, off the shard thread (only it: other `-delete`
/// directories may be a failed swap's that the next start needs).
fn remove_old_log(dir: PathBuf, key: &PartitionKey, id: &str) {
    let Some(parent) = dir.parent() else {
        return;
    };
    let old = parent.join(swapped_dir_name(&key.topic, key.partition, id));
    let spawned = std::thread::Builder::new()
        .name("spate-moved-log".into())
        .spawn(move || {
            if let Err(e) = std::fs::remove_dir_all(&old) {
                tracing::warn!(dir = %old.display(), error = %e, "removing a moved partition's old log failed; the next start removes it");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "starting the removal of a moved partition's old log failed; the next start removes it");
    }
}

/// Whether the copy holds everything the current log has written.
fn caught_up(current: &Partition, future: &Partition) -> bool {
    future.log.log_end_offset() >= current.log.written_end_offset()
}

/// Copy one chunk from the current log to the copy: the bytes copied (0 when the copy
/// had to start over first).
async fn copy_step(
    current: &Partition,
    future: &Rc<Partition>,
    truncations: &mut u64,
    throttle: Option<&Throttle>,
) -> anyhow::Result<usize> {
    let start = current.log.log_start_offset();
    if current.truncations() != *truncations {
        // What was copied past the cut may differ from what the current log now has.
        *truncations = current.truncations();
        future.truncate_fully_and_start_at(start).await?;
        return Ok(0);
    }
    let from = future.log.log_end_offset();
    if from < start {
        future.truncate_fully_and_start_at(start).await?;
        return Ok(0);
    }
    if from >= current.log.written_end_offset() {
        return Ok(0);
    }
    while throttle.is_some_and(|t| t.exceeded()) {
        compio::time::sleep(THROTTLE_PAUSE).await;
    }
    let read = match current.log.read(from, CHUNK_BYTES, true).await {
        Ok(r) => r,
        // Retention moved the log start meanwhile: the next step follows it.
        Err(LogError::OffsetOutOfRange { .. }) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    if read.batches.is_empty() {
        bail!("no batch at offset {from}, below the written end");
    }
    let mut copied = 0;
    for chunk in read.batches {
        copied += chunk.len();
        future.append_replicated(chunk).await?;
    }
    if let Some(t) = throttle {
        t.record(copied);
    }
    Ok(copied)
}

/// Step 2 after the current log closed: copy the rest and make the copy its equal.
async fn finish_copy(
    current: &Partition,
    future: &Rc<Partition>,
    mut truncations: u64,
) -> anyhow::Result<()> {
    let seen = truncations;
    while !caught_up(current, future) {
        copy_step(current, future, &mut truncations, None).await?;
    }
    if truncations != seen || current.truncations() != seen {
        bail!("the log was truncated during the move");
    }
    let end = current.log.log_end_offset();
    if future.log.log_end_offset() != end {
        bail!(
            "the copy ends at {}, the log at {end}",
            future.log.log_end_offset()
        );
    }
    let start = current.log.log_start_offset();
    if future.log.log_start_offset() < start {
        future.log.delete_records(start).await?;
    }
    // Epochs begun without a batch since (the copy learnt the others from batches).
    let latest = future.log.latest_epoch();
    for (epoch, _) in current.log.epoch_entries() {
        if latest.is_none_or(|l| epoch > l) {
            future.log.assign_leader_epoch(epoch).await?;
        }
    }
    future
        .snapshot_producer_states()
        .context("writing the copy's producer snapshot")?;
    future.log.shutdown().await?;
    Ok(())
}

/// Step 3: the renames of `current_dir` and `future_dir` (to `<dest>/<topic>-<partition>`),
/// in the order that keeps a crash safe (module docs). Synchronous, so that nothing on
/// the shard runs between the caller's check that the partition is still this log and
/// the renames.
fn swap_dirs(
    current_dir: &Path,
    future_dir: &Path,
    dest: &Path,
    key: &PartitionKey,
    id: &str,
) -> anyhow::Result<()> {
    let parent = current_dir
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent", current_dir.display()))?;
    let swapped = parent.join(swapped_dir_name(&key.topic, key.partition, id));
    let target = partition_dir(dest, &key.topic, key.partition);
    std::fs::rename(current_dir, &swapped).with_context(|| {
        format!(
            "renaming {} to {}",
            current_dir.display(),
            swapped.display()
        )
    })?;
    sync_dir(parent)?;
    if let Err(e) = std::fs::rename(future_dir, &target) {
        // Back as it was; if even that fails, the next start finishes the swap.
        std::fs::rename(&swapped, current_dir)?;
        sync_dir(parent)?;
        return Err(anyhow::Error::from(e).context(format!(
            "renaming {} to {}",
            future_dir.display(),
            target.display()
        )));
    }
    sync_dir(dest)
}

/// Put the reopened partition in place of `old`, in the role the metadata gives it;
/// a partition that failed to open is offline, as at start.
async fn install(
    ctx: &Rc<ShardContext>,
    key: &PartitionKey,
    old: &Rc<Partition>,
    reopened: Result<Partition, LogError>,
) {
    let reopened = match reopened {
        Ok(p) => Rc::new(p),
        Err(e) => {
            tracing::error!(topic = %key.topic, partition = key.partition, error = %e, "reopening the partition log failed; the partition is offline until a restart");
            if serving(ctx, key, old) {
                ctx.partitions.borrow_mut().remove(key);
                old.stop_replica();
                crate::coordinators::resigned(ctx, key);
                ctx.log_dirs
                    .set_offline(&key.topic, key.partition, old.topic_id);
                ctx.offline
                    .borrow_mut()
                    .insert(key.clone(), (old.topic_id, e.to_string()));
            }
            return;
        }
    };
    let image = ctx.image();
    if let Some(info) = image.partition(&key.topic, key.partition) {
        let assignment = ctx.assignment(&image, info);
        reopened
            .set_role(&assignment, info.leader, ctx.max_lag())
            .await;
    }
    if !serving(ctx, key, old) {
        // Deleted or moved off this broker meanwhile: the metadata decides about
        // the log from here (a stray is removed by the next start).
        let _ = reopened.log.shutdown().await;
        return;
    }
    let led = old.leader_epoch();
    ctx.partitions
        .borrow_mut()
        .insert(key.clone(), reopened.clone());
    // Whoever waits on the old log wakes and finds the new one.
    old.stop_replica();
    // Coordinators and share-partitions read the log they loaded from: reload them.
    if led.is_some() {
        ctx.share_partitions.borrow_mut().forget_partition(key);
        crate::coordinators::resigned(ctx, key);
    }
    crate::coordinators::role_changed(ctx, key, &reopened, None);
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use spate_net::compression::Compression;
    use spate_net::record_batch::RecordBatchBuilder;

    use super::*;
    use crate::partition::StorageSettings;
    use crate::topic_config::EffectiveTopicConfig;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "spate-move-{name}-{}-{}",
            std::process::id(),
            crate::random_id::uuid_v4()[0]
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    async fn open(dir: PathBuf) -> Rc<Partition> {
        let config = EffectiveTopicConfig::resolve(
            &crate::config::BrokerConfig::embedded_default().topic_defaults,
            &Default::default(),
        );
        let storage = StorageSettings {
            preallocate_bytes: 0,
            zero_ahead_bytes: 0,
            read_ahead_bytes: 0,
        };
        let cache = spate_log::BatchCache::shared(0);
        Rc::new(
            Partition::open(dir, [7; 16], config, storage, cache, None)
                .await
                .unwrap(),
        )
    }

    /// Idempotent batches of `count` records from `next` on, as a follower appends them.
    async fn append(p: &Rc<Partition>, next: &mut i64, producer: i64, epoch: i32, count: i64) {
        for _ in 0..count {
            let mut b = RecordBatchBuilder::new(Compression::None)
                .base_offset(*next)
                .partition_leader_epoch(epoch)
                .producer(producer, 0, *next as i32);
            b.append(
                crate::partition::now_ms(),
                Some(b"k"),
                Some(&[producer as u8; 100]),
                &[],
            );
            p.append_replicated(b.build().unwrap()).await.unwrap();
            *next += 1;
        }
    }

    /// Every byte of the log, start to end.
    async fn contents(p: &Partition) -> Vec<u8> {
        let mut out = Vec::new();
        let mut offset = p.log.log_start_offset();
        while offset < p.log.written_end_offset() {
            let read = p.log.read(offset, 1 << 16, true).await.unwrap();
            for chunk in read.batches {
                for batch in spate_net::record_batch::batches(chunk.clone()).flatten() {
                    offset = batch.last_offset() + 1;
                }
                out.extend_from_slice(&chunk);
            }
        }
        out
    }

    struct Copied {
        current_dir: PathBuf,
        future_dir: PathBuf,
        contents: Vec<u8>,
        start: i64,
        end: i64,
        epochs: Vec<(i32, i64)>,
        producers: HashMap<i64, i64>,
    }

    /// A log in `a` copied to a future log in `b` while it takes appends, is truncated
    /// (as a follower) and loses its start to retention; both closed, not swapped.
    async fn copy_while_written(a: &Path, b: &Path) -> Copied {
        let current = open(partition_dir(a, "t", 0)).await;
        let mut next = 0;
        append(&current, &mut next, 1, 1, 40).await;
        // Retention before the copy starts: the copy starts at the new log start.
        current.log.delete_records(10).await.unwrap();
        let future_dir = b.join(future_dir_name("t", 0, ID).unwrap());
        let future = open(future_dir.clone()).await;
        let mut truncations = current.truncations();
        let steps = |n: usize, truncations: &mut u64| {
            let (current, future) = (current.clone(), future.clone());
            let mut t = *truncations;
            async move {
                for _ in 0..n {
                    copy_step(&current, &future, &mut t, None).await.unwrap();
                }
                t
            }
        };
        truncations = steps(2, &mut truncations).await;
        assert!(future.log.log_end_offset() > 10);
        append(&current, &mut next, 2, 2, 20).await;
        // A follower's truncation below what was copied, then other records there:
        // the copy starts over.
        current.truncate_to(30).await.unwrap();
        next = 30;
        append(&current, &mut next, 3, 3, 25).await;
        while !caught_up(&current, &future) {
            copy_step(&current, &future, &mut truncations, None)
                .await
                .unwrap();
        }
        append(&current, &mut next, 3, 3, 5).await;
        // Retention again, after the copy passed it: the copy takes the start at the end.
        current.log.delete_records(20).await.unwrap();
        current.log.shutdown().await.unwrap();
        finish_copy(&current, &future, truncations).await.unwrap();
        assert_eq!(future.log.log_end_offset(), 60);
        Copied {
            current_dir: current.log.dir(),
            future_dir,
            contents: contents(&current).await,
            start: current.log.log_start_offset(),
            end: current.log.log_end_offset(),
            epochs: current.log.epoch_entries(),
            producers: current.producer_last_offsets(),
        }
    }

    async fn assert_same(p: &Partition, c: &Copied) {
        assert_eq!(p.log.log_start_offset(), c.start);
        assert_eq!(p.log.log_end_offset(), c.end);
        assert_eq!(contents(p).await, c.contents);
        assert_eq!(p.log.epoch_entries(), c.epochs);
        assert_eq!(p.producer_last_offsets(), c.producers);
    }

    #[test]
    fn a_copy_follows_appends_truncation_and_retention_and_swaps_in() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let (a, b) = (tmp("a"), tmp("b"));
            let c = copy_while_written(&a, &b).await;
            assert_eq!((c.start, c.end), (20, 60));
            assert_eq!(c.producers, HashMap::from([(1, 29), (3, 59)]));
            let key = PartitionKey {
                topic: "t".into(),
                partition: 0,
            };
            swap_dirs(&c.current_dir, &c.future_dir, &b, &key, ID).unwrap();
            assert!(!c.current_dir.exists() && !c.future_dir.exists());
            assert!(a.join(swapped_dir_name("t", 0, ID)).is_dir());
            let moved = open(partition_dir(&b, "t", 0)).await;
            assert_same(&moved, &c).await;
            std::fs::remove_dir_all(&a).unwrap();
            std::fs::remove_dir_all(&b).unwrap();
        });
    }

    /// A crash before the swap keeps the current log (the copy is dropped, the move
    /// starts over); one between the two renames gets the copy (complete by then).
    #[test]
    fn a_crash_around_the_swap_leaves_one_complete_log() {
        for renamed in [false, true] {
            compio::runtime::Runtime::new().unwrap().block_on(async {
                let (a, b) = (tmp("ca"), tmp("cb"));
                let c = copy_while_written(&a, &b).await;
                if renamed {
                    std::fs::rename(&c.current_dir, a.join(swapped_dir_name("t", 0, ID))).unwrap();
                }
                let dirs = crate::log_dirs::LogDirs::open(&[a.clone(), b.clone()]).unwrap();
                let (at, resumed) = if renamed { (&b, None) } else { (&a, Some(1)) };
                assert_eq!(dirs.take_resumed_move("t", 0), resumed);
                assert_eq!(dirs.dir_of("t", 0), Some(usize::from(renamed)));
                assert!(!c.future_dir.exists());
                let p = open(partition_dir(at, "t", 0)).await;
                assert_same(&p, &c).await;
                drop(dirs);
                std::fs::remove_dir_all(&a).unwrap();
                std::fs::remove_dir_all(&b).unwrap();
            });
        }
    }
}
