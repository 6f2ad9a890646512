//! A partition on its owner shard: its log, its effective topic config, and the
//! owner-side half of every partition operation (produce checks and append, reads,
//! offset lookups, record deletion).

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use spate_log::{LogConfig, LogError, PartitionLog, SharedBatchCache, WriteTicket};
use spate_net::compression::Compression;
use spate_net::record_batch::{
    self, RecordBatchBuilder, RecordCheck, RecordRules, ValidationError,
};
use spate_net::ErrorCode;

use crate::mesh::{FetchOp, PartitionOp, PartitionReply};
use crate::producer_state::{
    last_seq, BatchMeta, ProducerStates, SequenceCheck, TxnVerification, PRODUCER_ID_EXPIRATION_MS,
};
use crate::replica::{check_leader_epoch, Assignment, Following, Leadership, Role};
use crate::topic_config::EffectiveTopicConfig;
use crate::txn::gate::{Ticket, TxnGates};

pub struct Partition {
    pub topic_id: [u8; 16],
    pub log: PartitionLog,
    config: RefCell<EffectiveTopicConfig>,
    producers: RefCell<ProducerStates>,
    /// Aborted transactions whose data may still be in the log, oldest first (what
    /// read_committed fetches must skip).
    aborted: RefCell<Vec<AbortedTxn>>,
    jitter_seed: u64,
    storage: std::cell::Cell<StorageSettings>,
    /// Transactional batches waiting for the coordinator, per producer (KIP-890).
    gates: RefCell<TxnGates>,
    /// Leader or follower, and the replication state of that role.
    replica: RefCell<Role>,
    /// Fired when the high watermark may have moved other than by a write of this
    /// log (a follower's fetch, an ISR change) and when the role changes: what
    /// acks=all produces and consumers' long polls wait on, besides the log's writes.
    progress: event_listener::Event,
    /// Held while the replica becomes leader and while a follower truncates: a
    /// truncation decided as a follower must not cut a log that started leading meanwhile
    /// (it would drop the new epoch's start from the epoch cache).
    role_change: futures_util::lock::Mutex<()>,
    /// Truncations of the log so far: a log dir move restarts its copy after one.
    truncations: std::cell::Cell<u64>,
}

/// Who reads in a Fetch: a consumer, or a follower replica (Kafka's replica id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    Consumer,
    /// A consumer that named its rack (Fetch v11+, KIP-392): a follower may serve it,
    /// up to the follower's high watermark.
    ConsumerNearby,
    /// A follower: it reads up to the leader's written end, not the high watermark.
    Follower {
        broker: i32,
        broker_epoch: i64,
        /// This read is at the request's fetch offset: where the follower's log ends.
        reports_end: bool,
        /// The follower's log start offset, as its request said.
        log_start: i64,
    },
}

/// How long the broker's own acks=all appends (transaction markers, coordinators'
/// records) wait for the in-sync replicas: Kafka's `request.timeout.ms` default.
pub const INTERNAL_APPEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Bytes read per step when rebuilding producer state at open.
const PRODUCER_SCAN_BYTES: usize = 4 << 20;
/// File name of the producer-state snapshot in the partition directory.
const PRODUCER_SNAPSHOT: &str = "producer-state.snapshot";

#[derive(serde::Serialize)]
struct ProducerSnapshot<'a> {
    /// The log end offset the state covers.
    offset: i64,
    states: &'a ProducerStates,
    aborted: &'a [AbortedTxn],
}

#[derive(serde::Deserialize)]
struct LoadedSnapshot {
    offset: i64,
    states: ProducerStates,
    #[serde(default)]
    aborted: Vec<AbortedTxn>,
}

/// An aborted transaction on this partition: its producer, its first offset and the
/// offset of its abort marker (Kafka's `AbortedTxn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// The control record of a transaction marker: key (version 0, type: 0 abort, 1 commit)
/// and value (version 0, coordinator epoch).
fn marker_batch(producer_id: i64, epoch: i16, commit: bool, now: i64) -> Result<Bytes, i16> {
    let key = [0, 0, 0, u8::from(commit)];
    let value = [0, 0, 0, 0, 0, 0];
    let mut b = RecordBatchBuilder::new(Compression::None)
        .control(true)
        .transactional(true)
        .producer(producer_id, epoch, -1);
    b.append(now, Some(&key), Some(&value), &[]);
    b.build().map_err(|_| ErrorCode::UnknownServerError.code())
}

/// Base offset of a stored batch.
fn batch_base(b: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(b.get(0..8)?.try_into().ok()?))
}

/// The offset after a stored batch.
fn batch_end(b: &[u8]) -> Option<i64> {
    let delta = i32::from_be_bytes(b.get(23..27)?.try_into().ok()?);
    Some(batch_base(b)? + i64::from(delta) + 1)
}

/// Whether a control batch is a commit marker (`None`: not a marker Spate knows).
fn marker_is_commit(batch: &record_batch::RecordBatch) -> Option<bool> {
    let record = batch.records(1 << 16).ok()?.next()?.ok()?;
    let key = record.key?;
    (key.len() >= 4 && key[0..2] == [0, 0]).then(|| key[3] == 1)
}

/// What validation learns of one incoming batch: its idempotence facts and size.
struct ProducerBatch {
    transactional: bool,
    producer_id: i64,
    epoch: i16,
    first_seq: i32,
    last_offset_delta: i32,
    records: u64,
}

/// Why a produce is refused.
enum Refusal {
    /// Answered with the error code alone.
    Code(i16),
    /// Records without a key in a compacted topic (answered with record errors).
    MissingKeys { count: u32, records: Vec<u32> },
    /// Records the topic's record check (schema validation) refused.
    Refused { count: u32, records: Vec<u32> },
    /// A transactional batch that waits at its producer's gate (KIP-890): `ask` is the
    /// (producer id, epoch) to ask the coordinator about when this batch opened the gate.
    Wait {
        ticket: Ticket,
        ask: Option<(i64, i16)>,
    },
}

/// How `start_produce` treats transactional batches (KIP-890).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxnMode {
    /// No transactional id came with the request: Kafka appends without verifying.
    Skip,
    /// Append inside a transaction known here; otherwise wait for the coordinator.
    Check,
    /// The batch's turn at its gate after the coordinator approved, with the guard.
    Turn(u64),
}

/// Asks the transaction coordinator whether (or makes it so that) this partition is
/// in the producer's transaction: (producer id, epoch) → the coordinator's error code.
pub type TxnVerifier =
    Box<dyn FnOnce(i64, i16) -> std::pin::Pin<Box<dyn std::future::Future<Output = i16>>>>;

impl From<i16> for Refusal {
    fn from(code: i16) -> Self {
        Refusal::Code(code)
    }
}

/// A produce after its synchronous part.
enum Started {
    /// Appended: where, in which leader epoch, the write that makes it durable, and the
    /// bytes and records it adds.
    Append(spate_log::AppendInfo, i32, WriteTicket, u64, u64),
    /// A retry of a batch already appended (in the given leader epoch's turn): answered
    /// with its offsets once that is written.
    Duplicate(BatchMeta, i32),
}

/// The partition directory: `<data_dir>/<topic>-<partition>`, as in Kafka.
pub fn partition_dir(data_dir: &std::path::Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

/// Broker-level storage settings every partition log gets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StorageSettings {
    pub preallocate_bytes: u64,
    pub zero_ahead_bytes: u64,
    pub read_ahead_bytes: usize,
}

/// `jitter_seed` (fixed per partition) picks how much of `segment.jitter.ms` this
/// partition's segments roll early.
pub fn log_config(
    c: &EffectiveTopicConfig,
    storage: StorageSettings,
    jitter_seed: u64,
) -> LogConfig {
    let jitter = (jitter_seed % (c.segment_jitter_ms.max(0) as u64).saturating_add(1)) as i64;
    // A compacted topic rolls by max.compaction.lag.ms too, so that no record stays
    // in the uncleanable active segment longer than that (Kafka's maxSegmentMs).
    let segment_ms = if c.compact {
        c.segment_ms.min(c.max_compaction_lag_ms)
    } else {
        c.segment_ms
    };
    LogConfig {
        segment_bytes: c.segment_bytes.max(4096) as u64,
        segment_ms: (segment_ms - jitter).max(1),
        max_index_bytes: c.segment_index_bytes.max(4096) as u32,
        retention_ms: c.retention_ms,
        retention_bytes: c.retention_bytes,
        retention_enabled: c.delete,
        index_interval_bytes: c.index_interval_bytes.max(0) as u32,
        flush_messages: c.flush_messages,
        flush_ms: c.flush_ms,
        // Ignored: partitions use their shard's shared batch cache.
        cache_bytes: 0,
        preallocate_bytes: if c.preallocate {
            c.segment_bytes.max(4096) as u64
        } else {
            storage.preallocate_bytes
        },
        zero_ahead_bytes: storage.zero_ahead_bytes,
        read_ahead_bytes: storage.read_ahead_bytes,
        ..LogConfig::default()
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Largest decompressed batch the timestamp search will inflate.
const MAX_INFLATED_BATCH: usize = 64 << 20;

/// Within one batch: the first record (at or after `min_offset`) with a timestamp
/// >= `target`. LogAppendTime batches give every record the batch's max timestamp.
fn record_at_or_after(
    batch: &record_batch::RecordBatch,
    target: i64,
    min_offset: i64,
) -> Option<PartitionReply> {
    let records = batch.records(MAX_INFLATED_BATCH).ok()?;
    for record in records.flatten() {
        let (offset, ts) = (record.offset_in(batch), record.timestamp_in(batch));
        if offset >= min_offset && ts >= target {
            return Some(PartitionReply::Offset {
                leader_epoch: -1,
                offset,
                timestamp: ts,
            });
        }
    }
    None
}

/// Map a log error to the Kafka error code a client should see.
fn error_code(e: &LogError) -> i16 {
    match e {
        LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange.code(),
        // Kafka: a batch set larger than segment.bytes.
        LogError::BatchTooLarge { .. } => ErrorCode::RecordListTooLarge.code(),
        LogError::InvalidBatch(_) => ErrorCode::CorruptMessage.code(),
        // Deleted or shutting down: the client refreshes its metadata.
        LogError::Closed => ErrorCode::NotLeaderOrFollower.code(),
        LogError::Io { .. } | LogError::Corrupt { .. } | LogError::Offline { .. } => {
            ErrorCode::KafkaStorageError.code()
        }
    }
}

/// A read found damaged data or failed: say where, a few times a minute per shard at
/// most (a consumer retries the same fetch over and over).
fn log_read_failure(e: &LogError) {
    thread_local! {
        static LIMIT: RefCell<spate_log::RateLimit> = RefCell::new(spate_log::RateLimit::new(5, std::time::Duration::from_secs(60)));
    }
    LIMIT.with(|l| {
        if let Some(suppressed) = l.borrow_mut().admit(std::time::Instant::now()) {
            tracing::error!(error = %e, suppressed, "reading a partition log failed; the fetch is answered KAFKA_STORAGE_ERROR");
        }
    });
}

/// What a stored batch tells of its producer: its sequence and epoch, a transaction it
/// begins, or (a marker) one it ends; an abort is remembered for read_committed reads.
/// Applied to every batch when the state is rebuilt from the log and to every batch a
/// follower appends.
fn observe_batch(
    states: &mut ProducerStates,
    aborted: &mut Vec<AbortedTxn>,
    batch: &record_batch::RecordBatch,
) {
    let pid = batch.producer_id();
    if batch.is_control() {
        if let (Some(commit), Some(first)) = (
            marker_is_commit(batch),
            states.end_txn(pid, batch.producer_epoch()),
        ) {
            if !commit {
                aborted.push(AbortedTxn {
                    producer_id: pid,
                    first_offset: first,
                    last_offset: batch.base_offset(),
                });
            }
        }
        return;
    }
    if pid < 0 {
        return;
    }
    if batch.is_transactional() {
        states.begin_txn(pid, batch.base_offset());
    }
    let meta = BatchMeta {
        first_seq: batch.base_sequence(),
        last_seq: last_seq(batch.base_sequence(), batch.last_offset_delta()),
        base_offset: batch.base_offset(),
        last_offset: batch.last_offset(),
        ticket: None,
    };
    states.record(pid, batch.producer_epoch(), meta, batch.max_timestamp());
}

impl Partition {
    /// Open the partition's log in `dir`; `high_watermark` is the one checkpointed
    /// before the start, if any (within the log's bounds, it is where this replica's
    /// high watermark starts; else at the log start).
    pub async fn open(
        dir: PathBuf,
        topic_id: [u8; 16],
        config: EffectiveTopicConfig,
        storage: StorageSettings,
        cache: SharedBatchCache,
        high_watermark: Option<i64>,
    ) -> Result<Partition, LogError> {
        let jitter_seed = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            dir.hash(&mut h);
            h.finish()
        };
        let log = PartitionLog::open_with(
            dir,
            log_config(&config, storage, jitter_seed),
            spate_log::system_clock(),
            Some(cache),
        )
        .await?;
        let log_start = log.log_start_offset();
        let start_hw =
            high_watermark.map_or(log_start, |hw| hw.clamp(log_start, log.log_end_offset()));
        let unassigned = Role::unassigned(start_hw);
        let partition = Partition {
            topic_id,
            log,
            config: RefCell::new(config),
            producers: RefCell::new(ProducerStates::default()),
            aborted: RefCell::new(Vec::new()),
            jitter_seed,
            storage: std::cell::Cell::new(storage),
            gates: RefCell::default(),
            replica: RefCell::new(unassigned),
            progress: event_listener::Event::new(),
            role_change: futures_util::lock::Mutex::new(()),
            truncations: std::cell::Cell::new(0),
        };
        partition.load_producer_states().await?;
        Ok(partition)
    }

    /// Remove the partition's log from disk (DeleteTopics): its directory is renamed to
    /// `graveyard` first, then removed.
    pub async fn delete(&self, graveyard: &std::path::Path) -> Result<(), LogError> {
        self.log.delete(graveyard).await
    }

    /// Apply changed topic configs or storage settings (a no-op when neither changed).
    pub fn reconfigure(&self, config: EffectiveTopicConfig, storage: StorageSettings) {
        if *self.config.borrow() != config || self.storage.get() != storage {
            self.log
                .update_config(log_config(&config, storage, self.jitter_seed));
            *self.config.borrow_mut() = config;
            self.storage.set(storage);
        }
    }

    /// The topic's effective config.
    pub fn topic_config(&self) -> EffectiveTopicConfig {
        self.config.borrow().clone()
    }

    /// Producer id → last offset of its last batch, for the producers still tracked
    /// (the cleaner keeps those batches).
    pub fn producer_last_offsets(&self) -> std::collections::HashMap<i64, i64> {
        self.producers.borrow().last_offsets()
    }

    /// Offsets below this are committed: written by every in-sync replica (on a
    /// leader), or as the leader last said (on a follower). What consumers may read.
    pub fn high_watermark(&self) -> i64 {
        let end = self.log.written_end_offset();
        match &mut *self.replica.borrow_mut() {
            Role::Leader(l) if !l.has_followers() => end,
            Role::Leader(l) => l.high_watermark(end, std::time::Instant::now()),
            Role::Follower(f) => f.high_watermark.min(end),
        }
    }

    /// The leader epoch of the batch holding `offset` (the log end: the latest epoch),
    /// as the epoch cache tells; -1 when unknown or for offset -1.
    fn epoch_at(&self, offset: i64) -> i32 {
        if offset < 0 {
            return -1;
        }
        self.log
            .epoch_entries()
            .iter()
            .rev()
            .find(|(_, start)| *start <= offset)
            .map_or(-1, |(epoch, _)| *epoch)
    }

    /// On a follower, how far its log end is behind its leader's high watermark as last
    /// reported; 0 on a leader.
    pub fn follower_lag(&self) -> i64 {
        match &*self.replica.borrow() {
            Role::Follower(f) => (f.leader_high_watermark - self.log.log_end_offset()).max(0),
            Role::Leader(_) => 0,
        }
    }

    /// The leader epoch this replica leads, if it is the leader.
    pub fn leader_epoch(&self) -> Option<i32> {
        self.replica.borrow().leader_epoch()
    }

    /// The broker this replica fetches from, if it follows one.
    pub fn following(&self) -> Option<i32> {
        self.replica.borrow().following()
    }

    /// The leader epoch this replica knows (leading or following), -1 before any.
    pub fn known_epoch(&self) -> i32 {
        match &*self.replica.borrow() {
            Role::Leader(l) => l.epoch,
            Role::Follower(f) => f.epoch,
        }
    }

    /// Whether other replicas move this one's high watermark: a leader with followers,
    /// or a follower (a leader without followers has its written end as its HW).
    pub fn is_replicated(&self) -> bool {
        match &*self.replica.borrow() {
            Role::Leader(l) => l.has_followers(),
            Role::Follower(_) => true,
        }
    }

    /// A listener for [`Self::progress`]'s events. Create it, re-check, then await.
    pub fn listen_progress(&self) -> event_listener::EventListener {
        self.progress.listen()
    }

    /// Take the role the metadata gives this replica: leader of `leader_epoch` when
    /// `leader` is this broker (a new epoch starts in the log's epoch cache at its end;
    /// later appends are stamped with it), else a follower of `leader`. Waiters of a
    /// leadership that ended are woken (they answer NOT_LEADER_OR_FOLLOWER).
    pub async fn set_role(&self, a: &Assignment, leader: i32, max_lag: std::time::Duration) {
        if leader == a.me {
            let same_epoch = self.leader_epoch() == Some(a.epoch);
            if same_epoch {
                if let Role::Leader(l) = &mut *self.replica.borrow_mut() {
                    l.update(a);
                }
            } else {
                let _role_change = self.role_change.lock().await;
                let hw = self.high_watermark();
                if let Err(e) = self.log.assign_leader_epoch(a.epoch).await {
                    // The log is offline (a failed write): it refuses appends anyway.
                    tracing::error!(dir = %self.log.dir().display(), error = %e, "recording the new leader epoch failed");
                }
                let end = self.log.log_end_offset();
                *self.replica.borrow_mut() = Role::Leader(Leadership::new(a, hw, end, max_lag));
                tracing::debug!(dir = %self.log.dir().display(), epoch = a.epoch, end, "leading");
            }
        } else {
            let hw = self.high_watermark();
            let mut role = self.replica.borrow_mut();
            let unchanged =
                matches!(&*role, Role::Follower(f) if f.leader == leader && f.epoch == a.epoch);
            if !unchanged {
                *role = Role::Follower(Following {
                    leader,
                    epoch: a.epoch,
                    high_watermark: hw,
                    leader_high_watermark: hw,
                });
            }
        }
        self.progress.notify(usize::MAX);
    }

    /// The replica is no longer this broker's (a reassignment moved it): it leads and
    /// follows nothing any more, and whoever waits on it wakes to find that out.
    pub fn stop_replica(&self) {
        let hw = self.high_watermark();
        *self.replica.borrow_mut() = Role::unassigned(hw);
        self.progress.notify(usize::MAX);
    }

    /// A follower fetched from this leader at `fetch_offset`: its progress, and the ISR
    /// to propose if it has caught up (Kafka's maybeExpandIsr). Wakes the waiters when
    /// the high watermark moved.
    pub fn follower_fetched(
        &self,
        broker: i32,
        broker_epoch: i64,
        fetch_offset: i64,
        log_start: i64,
    ) -> Option<Vec<i32>> {
        let end = self.log.written_end_offset();
        let now = std::time::Instant::now();
        let mut role = self.replica.borrow_mut();
        let Role::Leader(l) = &mut *role else {
            return None;
        };
        let before = l.high_watermark(end, now);
        if !l.record_fetch(broker, broker_epoch, fetch_offset, log_start, end, now) {
            return None;
        }
        let proposal = l.expansion(broker, now, end);
        if l.high_watermark(end, now) != before {
            self.progress.notify(usize::MAX);
        }
        proposal
    }

    /// The ISR to propose because followers fell behind (Kafka's maybeShrinkIsr); also
    /// wakes waiters when time alone moved the high watermark.
    pub fn isr_shrink(&self) -> Option<Vec<i32>> {
        let end = self.log.written_end_offset();
        let now = std::time::Instant::now();
        let mut role = self.replica.borrow_mut();
        let Role::Leader(l) = &mut *role else {
            return None;
        };
        if !l.has_followers() {
            return None;
        }
        let before = l.high_watermark(end, now);
        let proposal = l.shrink(end, now);
        if l.high_watermark(end, now) != before {
            self.progress.notify(usize::MAX);
        }
        proposal
    }

    /// An ISR change is sent to the controller: what to ask for. `None` when this
    /// replica no longer leads.
    pub fn propose_isr(&self, isr: Vec<i32>) -> Option<crate::replica::Proposal> {
        let mut role = self.replica.borrow_mut();
        let Role::Leader(l) = &mut *role else {
            return None;
        };
        let new_isr = l.with_broker_epochs(&isr);
        l.propose(isr);
        Some(crate::replica::Proposal {
            leader_epoch: l.epoch,
            partition_epoch: l.partition_epoch,
            new_isr,
        })
    }

    /// The controller answered an ISR change of leader epoch `epoch` (the image holds
    /// its outcome by now, when it was accepted).
    pub fn isr_answered(&self, epoch: i32, accepted: bool) {
        if let Role::Leader(l) = &mut *self.replica.borrow_mut() {
            if l.epoch == epoch {
                l.proposal_answered(accepted, std::time::Instant::now());
            }
        }
        self.progress.notify(usize::MAX);
    }

    /// Wait until the high watermark reaches `end` (acks=all): `Err` with
    /// NOT_LEADER_OR_FOLLOWER when this replica stops leading `epoch`, REQUEST_TIMED_OUT
    /// at `deadline`, NOT_ENOUGH_REPLICAS_AFTER_APPEND when reached with fewer in-sync
    /// replicas than `min.insync.replicas` (Kafka's checkEnoughReplicasReachOffset).
    async fn replicated(
        &self,
        end: i64,
        epoch: i32,
        deadline: std::time::Instant,
    ) -> Result<(), i16> {
        // Checked before listening too: without followers (a single node) the answer
        // is there at once, and a listener costs a lock and an allocation.
        if let Some(answer) = self.replication_outcome(end, epoch) {
            return answer;
        }
        loop {
            let listener = self.progress.listen();
            if let Some(answer) = self.replication_outcome(end, epoch) {
                return answer;
            }
            let now = std::time::Instant::now();
            if now >= deadline
                || compio::time::timeout(deadline - now, listener)
                    .await
                    .is_err()
            {
                return Err(ErrorCode::RequestTimedOut.code());
            }
        }
    }

    /// The answer to an acks=all produce that ends at `end`, written under `epoch`, once
    /// there is one (`None`: keep waiting).
    fn replication_outcome(&self, end: i64, epoch: i32) -> Option<Result<(), i16>> {
        if self.leader_epoch() != Some(epoch) {
            return Some(Err(ErrorCode::NotLeaderOrFollower.code()));
        }
        if self.high_watermark() < end {
            return None;
        }
        let isr = match &*self.replica.borrow() {
            Role::Leader(l) => l.maximal_isr_len(),
            Role::Follower(_) => 0,
        };
        let min_isr = self.config.borrow().min_insync_replicas.max(1) as usize;
        Some(if isr >= min_isr {
            Ok(())
        } else {
            Err(ErrorCode::NotEnoughReplicasAfterAppend.code())
        })
    }

    /// A follower appends what it fetched from its leader: the leader's offsets and
    /// epochs as they are, and the producer state they carry (so that it can lead
    /// with the same idempotence and transactions). Resolves once written.
    pub fn append_replicated(
        self: &Rc<Self>,
        records: Bytes,
    ) -> impl std::future::Future<Output = Result<(), LogError>> + 'static {
        let started = self.log.begin_append(records.clone(), false);
        if started.is_ok() {
            let mut states = self.producers.borrow_mut();
            let mut aborted = self.aborted.borrow_mut();
            for batch in record_batch::batches(records).flatten() {
                observe_batch(&mut states, &mut aborted, &batch);
            }
        }
        let this = self.clone();
        async move {
            let (_, ticket) = started?;
            this.log.written(ticket).await
        }
    }

    /// A follower learnt the leader's high watermark and log start offset: its own
    /// follow (capped by what it holds), and the log start moves up with the leader's
    /// (Kafka's follower does the same; never past its own high watermark).
    pub async fn follow_leader_offsets(&self, high_watermark: i64, log_start: i64) {
        let hw = {
            let mut role = self.replica.borrow_mut();
            let Role::Follower(f) = &mut *role else {
                return;
            };
            f.leader_high_watermark = high_watermark;
            f.high_watermark = high_watermark.min(self.log.written_end_offset());
            f.high_watermark
        };
        if log_start > self.log.log_start_offset() && log_start <= hw {
            if let Err(e) = self.log.delete_records(log_start).await {
                tracing::warn!(dir = %self.log.dir().display(), error = %e, "following the leader's log start failed");
            }
        }
    }

    /// How many times the log was truncated since it was opened.
    pub fn truncations(&self) -> u64 {
        self.truncations.get()
    }

    /// A follower's log diverged from the leader's: cut it at `offset` and rebuild
    /// the producer state of what is left. Nothing happens if this replica leads by
    /// now (the truncation was decided as a follower).
    pub async fn truncate_to(&self, offset: i64) -> Result<i64, LogError> {
        let _role_change = self.role_change.lock().await;
        if self.leader_epoch().is_some() {
            return Ok(self.log.log_end_offset());
        }
        let end = self.log.truncate_to(offset).await?;
        self.after_truncation().await?;
        Ok(end)
    }

    /// A follower below the leader's log start: start over, empty, at `offset` (not if
    /// this replica leads by now).
    pub async fn truncate_fully_and_start_at(&self, offset: i64) -> Result<(), LogError> {
        let _role_change = self.role_change.lock().await;
        if self.leader_epoch().is_some() {
            return Ok(());
        }
        self.log.truncate_fully_and_start_at(offset).await?;
        self.after_truncation().await
    }

    async fn after_truncation(&self) -> Result<(), LogError> {
        self.truncations.set(self.truncations.get() + 1);
        if let Role::Follower(f) = &mut *self.replica.borrow_mut() {
            f.high_watermark = f.high_watermark.min(self.log.written_end_offset());
        }
        self.load_producer_states().await
    }

    /// Check the batches of a produce request the way Kafka's log validator does: magic,
    /// sizes, CRC, the topic's message size cap, then every record's framing, count,
    /// offset deltas, timestamps and, in a compacted topic, key
    /// (`RecordBatch::validate_with`: compressed batches are streamed through a small
    /// buffer, never inflated into memory, and refused past an inflate cap). The stored
    /// bytes stay the client's. Returns the idempotence facts of each batch.
    fn validate(
        &self,
        records: &Bytes,
        now: i64,
        check: Option<&dyn RecordCheck>,
    ) -> Result<Vec<ProducerBatch>, Refusal> {
        // A compressed batch may inflate to 64 times the topic's max.message.bytes,
        // within [64 MiB, 256 MiB] (Kafka has no cap; see docs/codec.md).
        const INFLATE_RATIO: usize = 64;
        const MIN_INFLATE_CAP: usize = 64 << 20;
        const MAX_INFLATE_CAP: usize = 256 << 20;
        let config = self.config.borrow();
        let max = config.max_message_bytes.max(0) as usize;
        let inflate_cap = max
            .saturating_mul(INFLATE_RATIO)
            .clamp(MIN_INFLATE_CAP, MAX_INFLATE_CAP);
        // message.timestamp.{after,before}.max.ms, on every record's timestamp (Kafka's
        // validateTimestamp; LogAppendTime topics take the broker's clock instead).
        let latest_allowed = now.saturating_add(config.timestamp_after_max_ms);
        let earliest_allowed = now.saturating_sub(config.timestamp_before_max_ms);
        let rules = RecordRules {
            require_keys: config.compact,
        };
        let mut batches = Vec::new();
        for batch in record_batch::batches(records.clone()) {
            let batch = batch.map_err(|_| ErrorCode::CorruptMessage.code())?;
            if batch.size() > max {
                return Err(ErrorCode::MessageTooLarge.code().into());
            }
            if batch.verify_crc().is_err() {
                return Err(ErrorCode::CorruptMessage.code().into());
            }
            if batch.is_control() {
                return Err(ErrorCode::InvalidRecord.code().into());
            }
            // Record count, lastOffsetDelta, sequence, codec, framing, inflate cap, and
            // in a compacted topic every record's key.
            let summary =
                batch
                    .validate_checked(inflate_cap, rules, check)
                    .map_err(|e| match e {
                        ValidationError::MissingKeys { count, records } => {
                            Refusal::MissingKeys { count, records }
                        }
                        ValidationError::Refused { count, records } => {
                            Refusal::Refused { count, records }
                        }
                        e => Refusal::Code(e.error_code().code()),
                    })?;
            // Kafka rewrites a compressed batch whose offset deltas are not 0..n-1 (and
            // stores an uncompressed one as is); Spate never rebuilds, so it refuses both.
            if !summary.offsets_consecutive {
                return Err(ErrorCode::InvalidRecord.code().into());
            }
            if config.log_append_time {
                // Producers may not set LogAppendTime themselves.
                if batch.timestamp_type() == record_batch::TimestampType::LogAppendTime {
                    return Err(ErrorCode::InvalidTimestamp.code().into());
                }
            } else if summary.max_timestamp > latest_allowed
                || summary.min_timestamp.is_some_and(|t| t < earliest_allowed)
            {
                return Err(ErrorCode::InvalidTimestamp.code().into());
            }
            if batch.is_transactional() && batch.producer_id() < 0 {
                return Err(ErrorCode::InvalidRecord.code().into());
            }
            batches.push(ProducerBatch {
                transactional: batch.is_transactional(),
                producer_id: batch.producer_id(),
                epoch: batch.producer_epoch(),
                first_seq: batch.base_sequence(),
                last_offset_delta: batch.last_offset_delta(),
                records: u64::from(summary.records),
            });
        }
        if batches.is_empty() {
            return Err(ErrorCode::CorruptMessage.code().into());
        }
        Ok(batches)
    }

    /// `compression.type` other than `producer`: batches in another codec are rebuilt
    /// in the topic's codec (records, timestamps, headers and producer fields kept).
    fn recompress(records: Bytes, target: Compression, level: Option<i32>) -> Result<Bytes, i16> {
        let corrupt = |_| ErrorCode::CorruptMessage.code();
        let mut out = BytesMut::with_capacity(records.len());
        for batch in record_batch::batches(records) {
            let batch = batch.map_err(corrupt)?;
            if batch
                .compression()
                .map_err(|_| ErrorCode::UnsupportedCompressionType.code())?
                == target
            {
                out.extend_from_slice(batch.bytes());
                continue;
            }
            let mut builder = RecordBatchBuilder::new(target)
                .level(level)
                .producer(
                    batch.producer_id(),
                    batch.producer_epoch(),
                    batch.base_sequence(),
                )
                .partition_leader_epoch(batch.partition_leader_epoch());
            for record in batch.records(MAX_INFLATED_BATCH).map_err(corrupt)? {
                let r = record.map_err(corrupt)?;
                let headers: Vec<(&str, Option<&[u8]>)> = r
                    .headers
                    .iter()
                    .map(|h| (h.key.as_str(), h.value.as_deref()))
                    .collect();
                builder.append(
                    batch.base_timestamp().saturating_add(r.timestamp_delta),
                    r.key.as_deref(),
                    r.value.as_deref(),
                    &headers,
                );
            }
            out.extend_from_slice(&builder.build().map_err(corrupt)?);
        }
        Ok(out.freeze())
    }

    /// LogAppendTime: the broker's clock stamps each batch (CRC-covered, so one copy).
    fn stamp_log_append_time(records: Bytes, now: i64) -> Result<Bytes, i16> {
        let corrupt = |_| ErrorCode::CorruptMessage.code();
        let mut owned = BytesMut::from(&records[..]);
        let mut pos = 0;
        while pos < owned.len() {
            let size = record_batch::batch_size(&owned[pos..]).map_err(corrupt)?;
            record_batch::set_log_append_time(&mut owned[pos..pos + size], now).map_err(corrupt)?;
            pos += size;
        }
        Ok(owned.freeze())
    }

    /// Run the idempotence checks of a request's batches. `Some(meta)` when the request
    /// is one batch already appended (a producer's retry): answer with its offsets once
    /// that is written. Batches whose write failed are forgotten first.
    fn check_sequences(&self, batches: &[ProducerBatch]) -> Result<Option<BatchMeta>, i16> {
        let mut states = self.producers.borrow_mut();
        for b in batches.iter().filter(|b| b.producer_id >= 0) {
            states.settle(Some(b.producer_id), |t| self.log.is_written(t));
            let last = last_seq(b.first_seq, b.last_offset_delta);
            match states.check(b.producer_id, b.epoch, b.first_seq, last)? {
                SequenceCheck::Append => {}
                SequenceCheck::Duplicate(meta) if batches.len() == 1 => return Ok(Some(meta)),
                SequenceCheck::Duplicate(_) => {
                    return Err(ErrorCode::DuplicateSequenceNumber.code())
                }
            }
        }
        Ok(None)
    }

    /// Refuse a produce before its append with the retriable `code`, and remember the
    /// sequence gap it leaves for its producer (`ProducerStates::gap` says why).
    fn refuse(&self, records: &Bytes, code: ErrorCode, now: i64) -> Refusal {
        let first = record_batch::batches(records.clone()).next();
        if let Some(Ok(batch)) = first {
            if batch.producer_id() >= 0 && batch.verify_crc().is_ok() {
                self.producers.borrow_mut().refuse(
                    batch.producer_id(),
                    batch.producer_epoch(),
                    batch.base_sequence(),
                    code.code(),
                    now,
                );
            }
        }
        code.code().into()
    }

    /// KIP-890: transactional batches append only inside a transaction the coordinator
    /// knows covers this partition (see `ProducerStates::verify_txn`).
    fn verify_transactional(
        &self,
        batches: &[ProducerBatch],
        mode: TxnMode,
        now: i64,
    ) -> Result<(), Refusal> {
        let guard = match mode {
            TxnMode::Skip => return Ok(()),
            TxnMode::Check => None,
            TxnMode::Turn(g) => Some(g),
        };
        let mut states = self.producers.borrow_mut();
        for b in batches
            .iter()
            .filter(|b| b.transactional && b.producer_id >= 0)
        {
            match states.verify_txn(b.producer_id, b.epoch, guard, now) {
                TxnVerification::Append => {}
                TxnVerification::Ask(guard) => {
                    let ticket = self.gates.borrow_mut().open(b.producer_id, guard);
                    return Err(Refusal::Wait {
                        ticket,
                        ask: Some((b.producer_id, b.epoch)),
                    });
                }
                TxnVerification::Refuse(code) => return Err(code.into()),
            }
        }
        Ok(())
    }

    /// Start a produce: checks run and offsets are assigned now, in call order; the
    /// returned future completes when the write (and sync, by policy) is done. Nothing
    /// is acknowledged before it is written, and a write that fails acknowledges
    /// nothing (KAFKA_STORAGE_ERROR; the producer retries).
    pub fn produce(
        self: &Rc<Self>,
        records: Bytes,
        acks: i16,
        timeout: std::time::Duration,
        verifier: Option<TxnVerifier>,
        check: Option<Arc<dyn RecordCheck>>,
    ) -> impl std::future::Future<Output = PartitionReply> + 'static {
        let now = now_ms();
        let deadline = std::time::Instant::now() + timeout;
        let log_append_time = self.config.borrow().log_append_time;
        let mode = if verifier.is_some() {
            TxnMode::Check
        } else {
            TxnMode::Skip
        };
        let started = self.start_produce(
            records.clone(),
            acks,
            mode,
            now,
            log_append_time,
            check.as_deref(),
        );
        let this = self.clone();
        async move {
            let Err(Refusal::Wait { ticket, ask }) = started else {
                return this
                    .finish_produce(started, acks, now, log_append_time, deadline)
                    .await;
            };
            // KIP-890: the coordinator first (ticket 0 asks), then this batch's turn.
            if let Some((pid, epoch)) = ask {
                let verify = verifier.expect("only a verifying produce opens a gate");
                let answer = verify(pid, epoch).await;
                this.gates.borrow_mut().resolve(pid, answer);
            }
            let (answer, guard) = this.wait_turn(ticket).await;
            let now = now_ms();
            let started = if answer == 0 {
                this.start_produce(
                    records,
                    acks,
                    TxnMode::Turn(guard),
                    now,
                    log_append_time,
                    check.as_deref(),
                )
            } else {
                Err(Refusal::Code(answer))
            };
            this.gates.borrow_mut().pass(ticket);
            this.finish_produce(started, acks, now, log_append_time, deadline)
                .await
        }
    }

    /// Wait until `ticket` may go through its producer's gate.
    async fn wait_turn(&self, ticket: Ticket) -> (i16, u64) {
        loop {
            let listener = self.gates.borrow().listen();
            if let Some(turn) = self.gates.borrow().turn(ticket) {
                return turn;
            }
            listener.await;
        }
    }

    /// The rest of a produce once started: wait for the write, then answer.
    async fn finish_produce(
        &self,
        started: Result<Started, Refusal>,
        acks: i16,
        now: i64,
        log_append_time: bool,
        deadline: std::time::Instant,
    ) -> PartitionReply {
        let (base_offset, end, epoch, ticket, bytes_in, records_in) = match started {
            Ok(Started::Append(info, epoch, ticket, bytes, records)) => (
                info.base_offset,
                info.last_offset + 1,
                epoch,
                Some(ticket),
                bytes,
                records,
            ),
            Ok(Started::Duplicate(meta, epoch)) => (
                meta.base_offset,
                meta.last_offset + 1,
                epoch,
                meta.ticket,
                0,
                0,
            ),
            Err(Refusal::Code(code)) => return PartitionReply::Error(code),
            Err(Refusal::Wait { .. }) => unreachable!("a batch waits at most once"),
            Err(Refusal::MissingKeys { count, records }) => {
                return PartitionReply::MissingKeys {
                    count,
                    records,
                    log_start_offset: self.log.log_start_offset(),
                }
            }
            Err(Refusal::Refused { count, records }) => {
                return PartitionReply::Refused {
                    count,
                    records,
                    log_start_offset: self.log.log_start_offset(),
                }
            }
        };
        if let Some(ticket) = ticket {
            if let Err(e) = self.log.written(ticket).await {
                tracing::debug!(error = %e, "produce not written");
                return PartitionReply::Error(error_code(&e));
            }
        }
        // acks=all: written here, and by every in-sync replica.
        if acks == -1 {
            if let Err(code) = self.replicated(end, epoch, deadline).await {
                return PartitionReply::Error(code);
            }
        }
        if acks == 0 {
            return PartitionReply::ProducedNoAck {
                bytes_in,
                records_in,
            };
        }
        PartitionReply::Produced {
            base_offset,
            // A retry is answered as its original was (-1 when not LogAppendTime).
            log_append_time: if log_append_time && bytes_in > 0 {
                now
            } else {
                -1
            },
            log_start_offset: self.log.log_start_offset(),
            bytes_in,
            records_in,
        }
    }

    fn start_produce(
        &self,
        records: Bytes,
        acks: i16,
        mode: TxnMode,
        now: i64,
        log_append_time: bool,
        check: Option<&dyn RecordCheck>,
    ) -> Result<Started, Refusal> {
        let (epoch, isr) = match &*self.replica.borrow() {
            Role::Leader(l) => (l.epoch, l.isr.len()),
            Role::Follower(_) => {
                return Err(self.refuse(&records, ErrorCode::NotLeaderOrFollower, now))
            }
        };
        // Kafka counts the committed ISR here, before appending.
        if acks == -1 && isr < self.config.borrow().min_insync_replicas.max(1) as usize {
            return Err(self.refuse(&records, ErrorCode::NotEnoughReplicas, now));
        }
        // An offline partition refuses every produce, retries of written batches too.
        self.log.writable().map_err(|e| error_code(&e))?;
        let batches = self.validate(&records, now, check)?;
        if mode == TxnMode::Check {
            // Behind a batch of the same producer waiting for the coordinator: in order.
            let pid = batches
                .iter()
                .find(|b| b.transactional && b.producer_id >= 0)
                .map(|b| b.producer_id);
            if let Some(ticket) = pid.and_then(|pid| self.gates.borrow_mut().queue(pid)) {
                return Err(Refusal::Wait { ticket, ask: None });
            }
        }
        if let Some(dup) = self.check_sequences(&batches)? {
            return Ok(Started::Duplicate(dup, epoch));
        }
        self.verify_transactional(&batches, mode, now)?;
        // Traffic as the producer sent it (before any recompression).
        let (bytes_in, records_in) = (
            records.len() as u64,
            batches.iter().map(|b| b.records).sum(),
        );
        let (compression, level) = {
            let c = self.config.borrow();
            (c.compression, c.compression_level)
        };
        let records = match compression {
            Some(target) => Self::recompress(records, target, level)?,
            None => records,
        };
        let records = if log_append_time {
            Self::stamp_log_append_time(records, now)?
        } else {
            records
        };
        let (info, ticket) = self
            .log
            .begin_append(records, true)
            .map_err(|e| error_code(&e))?;
        // Offsets were assigned from `info.base_offset` on, batch after batch.
        let mut offset = info.base_offset;
        let mut states = self.producers.borrow_mut();
        for b in &batches {
            let base = offset;
            offset += i64::from(b.last_offset_delta) + 1;
            if b.producer_id >= 0 {
                let meta = BatchMeta {
                    first_seq: b.first_seq,
                    last_seq: last_seq(b.first_seq, b.last_offset_delta),
                    base_offset: base,
                    last_offset: offset - 1,
                    ticket: Some(ticket),
                };
                states.record(b.producer_id, b.epoch, meta, now);
                if b.transactional {
                    states.begin_txn(b.producer_id, base);
                }
            }
        }
        assert_eq!(
            offset - 1,
            info.last_offset,
            "the batches' offsets add up to the append's"
        );
        Ok(Started::Append(info, epoch, ticket, bytes_in, records_in))
    }

    /// Rebuild the idempotent-producer state by reading the log from its start.
    /// The snapshot of the idempotent-producer state, beside the segments.
    fn snapshot_path(&self) -> PathBuf {
        self.log.dir().join(PRODUCER_SNAPSHOT)
    }

    /// Write the producer state of the written log and the offset it covers (a temp
    /// file renamed over the old one), so that the next open replays only the log after
    /// it. Small and rare (at shutdown and each retention pass), so plain blocking I/O.
    pub fn snapshot_producer_states(&self) -> std::io::Result<()> {
        let states = self
            .producers
            .borrow()
            .written_only(|t| self.log.is_written(t) == Some(true));
        let path = self.snapshot_path();
        if states.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        // Aborted transactions wholly below the log start are of no use to readers, nor
        // are those the cleaner has compacted past: it removed their records (it knew of
        // every transaction decided below the stable offset it cleaned up to).
        let mut floor = self.log.log_start_offset();
        if self.config.borrow().compact {
            floor = floor.max(self.log.cleaned_up_to());
        }
        self.aborted.borrow_mut().retain(|a| a.last_offset >= floor);
        let aborted = self.aborted.borrow();
        let snapshot = ProducerSnapshot {
            offset: self.log.written_end_offset(),
            states: &states,
            aborted: &aborted,
        };
        let json = serde_json::to_vec(&snapshot).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, json)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)
    }

    /// Rebuild the idempotent-producer state: from the snapshot when it is usable (its
    /// offset within the recovered log), then the batches after it; else the whole log.
    async fn load_producer_states(&self) -> Result<(), LogError> {
        let end = self.log.written_end_offset();
        let snapshot: Option<LoadedSnapshot> = std::fs::read(self.snapshot_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let (mut offset, mut states, mut aborted) = match snapshot {
            Some(s) if s.offset >= self.log.log_start_offset() && s.offset <= end => {
                (s.offset, s.states, s.aborted)
            }
            _ => (
                self.log.log_start_offset(),
                ProducerStates::default(),
                Vec::new(),
            ),
        };
        let replay_from = offset;
        while offset < end {
            let read = self.log.read(offset, PRODUCER_SCAN_BYTES, true).await?;
            if read.batches.is_empty() {
                break;
            }
            for chunk in read.batches {
                for batch in record_batch::batches(chunk).flatten() {
                    observe_batch(&mut states, &mut aborted, &batch);
                    offset = offset.max(batch.last_offset() + 1);
                }
            }
        }
        states.expire(now_ms(), PRODUCER_ID_EXPIRATION_MS);
        if !states.is_empty() {
            tracing::info!(dir = %self.log.dir().display(), producers = states.len(), replayed_from = replay_from, "producer state loaded");
        }
        *self.producers.borrow_mut() = states;
        *self.aborted.borrow_mut() = aborted;
        Ok(())
    }

    /// Every batch from the log start to the written end, in order, including what is
    /// written while it runs: how a coordinator rebuilds its state when this replica
    /// becomes the partition's leader (`coordinators.rs`). A leader's whole log counts,
    /// above its high watermark too: it is the log its followers converge to, as
    /// Kafka's coordinators load to the log end.
    pub async fn replay(
        &self,
        mut on_batch: impl FnMut(record_batch::RecordBatch),
    ) -> Result<(), LogError> {
        let mut offset = self.log.log_start_offset();
        while offset < self.log.written_end_offset() {
            let read = self.log.read(offset, PRODUCER_SCAN_BYTES, true).await?;
            if read.batches.is_empty() {
                break;
            }
            for chunk in read.batches {
                for batch in record_batch::batches(chunk).flatten() {
                    offset = offset.max(batch.last_offset() + 1);
                    on_batch(batch);
                }
            }
        }
        Ok(())
    }

    /// Offset below which every transaction is decided (Kafka's last stable offset).
    pub fn last_stable_offset(&self) -> i64 {
        let hw = self.high_watermark();
        self.producers
            .borrow()
            .first_unstable_offset()
            .map_or(hw, |f| f.min(hw))
    }

    /// Every aborted transaction whose data may still be in the log.
    pub fn aborted_txns(&self) -> Vec<AbortedTxn> {
        self.aborted.borrow().clone()
    }

    /// Aborted transactions overlapping `[from, to)`: (producer id, first offset), for a
    /// read_committed fetch.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<(i64, i64)> {
        self.aborted
            .borrow()
            .iter()
            .filter(|a| a.last_offset >= from && a.first_offset < to)
            .map(|a| (a.producer_id, a.first_offset))
            .collect()
    }

    /// Append a transactional batch the broker itself made (a group coordinator's
    /// TxnOffsetCommit records): no client checks, no sequence; it joins the producer's
    /// transaction here. Resolves once written.
    pub async fn append_transactional(&self, producer_id: i64, batch: Bytes) -> PartitionReply {
        let Some(epoch) = self.leader_epoch() else {
            return PartitionReply::Error(ErrorCode::NotLeaderOrFollower.code());
        };
        if let Err(e) = self.log.writable() {
            return PartitionReply::Error(error_code(&e));
        }
        let (info, ticket) = match self.log.begin_append(batch, true) {
            Ok(x) => x,
            Err(e) => return PartitionReply::Error(error_code(&e)),
        };
        self.producers
            .borrow_mut()
            .begin_txn(producer_id, info.base_offset);
        if let Err(e) = self.log.written(ticket).await {
            return PartitionReply::Error(error_code(&e));
        }
        let deadline = std::time::Instant::now() + INTERNAL_APPEND_TIMEOUT;
        match self.replicated(info.last_offset + 1, epoch, deadline).await {
            Ok(()) => PartitionReply::MarkerWritten,
            Err(code) => PartitionReply::Error(code),
        }
    }

    /// Write a transaction marker for `producer_id` (WriteTxnMarkers, or the local
    /// coordinator): a control batch that ends the producer's transaction here.
    pub async fn write_marker(
        &self,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        bumped: bool,
    ) -> PartitionReply {
        let Some(leader_epoch) = self.leader_epoch() else {
            return PartitionReply::Error(ErrorCode::NotLeaderOrFollower.code());
        };
        if let Err(e) = self.log.writable() {
            return PartitionReply::Error(error_code(&e));
        }
        if self
            .producers
            .borrow()
            .epoch_of(producer_id)
            .is_some_and(|e| epoch < e)
        {
            return PartitionReply::Error(ErrorCode::InvalidProducerEpoch.code());
        }
        let batch = match marker_batch(producer_id, epoch, commit, now_ms()) {
            Ok(b) => b,
            Err(code) => return PartitionReply::Error(code),
        };
        let (info, ticket) = match self.log.begin_append(batch, true) {
            Ok(x) => x,
            Err(e) => return PartitionReply::Error(error_code(&e)),
        };
        // From here on, a batch of the transaction the marker ends would land after it.
        self.producers
            .borrow_mut()
            .withdraw_verification(producer_id, epoch, bumped);
        if let Err(e) = self.log.written(ticket).await {
            return PartitionReply::Error(error_code(&e));
        }
        // Written: the transaction is decided here (the state follows the log; a
        // follower learns it from the marker it replicates).
        if let Some(first) = self.producers.borrow_mut().end_txn(producer_id, epoch) {
            if !commit {
                self.aborted.borrow_mut().push(AbortedTxn {
                    producer_id,
                    first_offset: first,
                    last_offset: info.base_offset,
                });
            }
        }
        // Kafka writes markers with acks=all.
        let deadline = std::time::Instant::now() + INTERNAL_APPEND_TIMEOUT;
        if let Err(code) = self
            .replicated(info.last_offset + 1, leader_epoch, deadline)
            .await
        {
            return PartitionReply::Error(code);
        }
        PartitionReply::MarkerWritten
    }

    /// Settle provisional producer batches with their writes' outcome, and forget
    /// idempotent producers silent for `producer.id.expiration.ms`.
    pub fn expire_producers(&self, now: i64) -> usize {
        let mut states = self.producers.borrow_mut();
        states.settle(None, |t| self.log.is_written(t));
        states.expire(now, PRODUCER_ID_EXPIRATION_MS)
    }

    /// Everything but produce.
    pub async fn run(&self, op: PartitionOp) -> PartitionReply {
        match op {
            PartitionOp::Produce { .. } => {
                PartitionReply::Error(ErrorCode::UnknownServerError.code())
            }
            PartitionOp::Fetch(read) => {
                let reply = self.fetch(&read).await;
                reply.unwrap_or_else(|code| PartitionReply::FetchError {
                    code,
                    high_watermark: self.high_watermark(),
                    log_start_offset: self.log.log_start_offset(),
                })
            }
            PartitionOp::ListOffset {
                timestamp,
                read_committed,
                current_leader_epoch,
            } => {
                let Some(leading) = self.leader_epoch() else {
                    return PartitionReply::Error(ErrorCode::NotLeaderOrFollower.code());
                };
                if let Err(e) = check_leader_epoch(leading, current_leader_epoch) {
                    return PartitionReply::Error(e.code());
                }
                match self.list_offset(timestamp, read_committed).await {
                    PartitionReply::Offset {
                        offset, timestamp, ..
                    } => PartitionReply::Offset {
                        offset,
                        timestamp,
                        leader_epoch: self.epoch_at(offset),
                    },
                    other => other,
                }
            }
            PartitionOp::DeleteRecords { offset } => {
                if self.leader_epoch().is_none() {
                    return PartitionReply::Error(ErrorCode::NotLeaderOrFollower.code());
                }
                let hw = self.high_watermark();
                let target = if offset == -1 { hw } else { offset };
                if target < 0 || target > hw {
                    return PartitionReply::Error(ErrorCode::OffsetOutOfRange.code());
                }
                match self.log.delete_records(target).await {
                    Ok(start) => PartitionReply::LowWatermark(start),
                    Err(e) => PartitionReply::Error(error_code(&e)),
                }
            }
            PartitionOp::EndOffsetForEpoch {
                current_leader_epoch,
                epoch,
            } => {
                let Some(leading) = self.leader_epoch() else {
                    return PartitionReply::Error(ErrorCode::NotLeaderOrFollower.code());
                };
                if let Err(e) = check_leader_epoch(leading, current_leader_epoch) {
                    return PartitionReply::Error(e.code());
                }
                // Kafka's endOffsetFor: (-1, -1) for an epoch after every known one.
                let (leader_epoch, end_offset) = self.log.end_offset_for_epoch(epoch);
                PartitionReply::EpochEnd {
                    leader_epoch,
                    end_offset,
                }
            }
            PartitionOp::WriteTxnMarker {
                producer_id,
                producer_epoch,
                commit,
                bumped,
            } => {
                self.write_marker(producer_id, producer_epoch, commit, bumped)
                    .await
            }
            PartitionOp::DescribeProducers => {
                PartitionReply::Producers(self.producers.borrow().describe())
            }
            // Share ops need the shard's share-partitions (`share::leader` runs them),
            // log dir ops the shard's moves (`log_move`).
            PartitionOp::Share(_) | PartitionOp::Describe | PartitionOp::AlterLogDir { .. } => {
                debug_assert!(false, "run by the shard");
                PartitionReply::Error(spate_net::ErrorCode::UnknownServerError.code())
            }
        }
    }

    /// A Fetch read of this partition (Kafka's `Partition.fetchRecords`): the leader
    /// serves it (a follower too for a consumer that named its rack, KIP-392), at the
    /// reader's leader epoch; a reader whose log diverged (its last fetched epoch ends
    /// before its fetch offset here) gets the diverging epoch instead of data;
    /// consumers read up to the high watermark (or the last stable offset), followers
    /// up to the written end; a consumer the rack-aware selector sends to a replica in
    /// its rack gets that replica instead of data. `Err`: the error code.
    async fn fetch(&self, read: &FetchOp) -> Result<PartitionReply, i16> {
        let &FetchOp {
            offset,
            max_bytes,
            min_one,
            read_committed,
            current_leader_epoch,
            last_fetched_epoch,
            reader,
            ref same_rack,
        } = read;
        let epoch = match self.leader_epoch() {
            Some(epoch) => epoch,
            None if reader == Reader::ConsumerNearby && self.following().is_some() => {
                self.known_epoch()
            }
            None => return Err(ErrorCode::NotLeaderOrFollower.code()),
        };
        check_leader_epoch(epoch, current_leader_epoch).map_err(|e| e.code())?;
        let log_start = self.log.log_start_offset();
        let hw = self.high_watermark();
        let lso = self.last_stable_offset();
        let readable_end = match reader {
            Reader::Follower { .. } => self.log.written_end_offset(),
            Reader::Consumer | Reader::ConsumerNearby if read_committed => lso,
            Reader::Consumer | Reader::ConsumerNearby => hw,
        };
        let empty = |diverging, preferred_read_replica| PartitionReply::Fetched {
            batches: Vec::new(),
            high_watermark: hw,
            log_start_offset: log_start,
            last_stable_offset: lso,
            aborted: Vec::new(),
            readable_end,
            diverging,
            preferred_read_replica,
        };
        if last_fetched_epoch >= 0 {
            if offset < log_start {
                return Err(ErrorCode::OffsetOutOfRange.code());
            }
            let (epoch, end) = self.log.end_offset_for_epoch(last_fetched_epoch);
            if epoch < 0 || end < 0 {
                return Err(ErrorCode::OffsetOutOfRange.code());
            }
            if epoch < last_fetched_epoch || end < offset {
                return Ok(empty(Some((epoch, end)), None));
            }
        }
        if offset < log_start || offset > self.log.log_end_offset() {
            return Err(ErrorCode::OffsetOutOfRange.code());
        }
        if let Some(candidates) = same_rack {
            if let Some(replica) = self.preferred_read_replica(candidates, offset) {
                return Ok(empty(None, Some(replica)));
            }
        }
        // At or past the readable end (data in flight, or not committed yet), or a
        // zero-byte read (it only checks the offset): nothing to read.
        if offset >= readable_end || (max_bytes == 0 && !min_one) {
            return Ok(empty(None, None));
        }
        let read = match self.log.read(offset, max_bytes, min_one).await {
            Ok(r) => r,
            Err(e) => {
                if matches!(e, LogError::Corrupt { .. } | LogError::Io { .. }) {
                    log_read_failure(&e);
                }
                return Err(error_code(&e));
            }
        };
        // Whole batches that start below the readable end (it is a batch boundary).
        let mut batches = read.batches;
        batches.retain(|b| batch_base(b).is_some_and(|base| base < readable_end));
        let mut aborted = Vec::new();
        if read_committed {
            if let Some(end) = batches.last().and_then(|b| batch_end(b)) {
                aborted = self.aborted_between(offset, end);
            }
        }
        Ok(PartitionReply::Fetched {
            batches,
            high_watermark: hw,
            log_start_offset: read.log_start_offset,
            last_stable_offset: lso,
            aborted,
            readable_end,
            diverging: None,
            preferred_read_replica: None,
        })
    }

    /// KIP-392's rack-aware selection on the leader: among `same_rack` (the replicas in
    /// the consumer's rack), none when the leader is one of them, else the most
    /// caught-up follower in the ISR that holds `offset` (Kafka's
    /// RackAwareReplicaSelector over ReplicaManager's candidates).
    fn preferred_read_replica(&self, same_rack: &[i32], offset: i64) -> Option<i32> {
        match &*self.replica.borrow() {
            Role::Leader(l) if !same_rack.is_empty() => l.preferred_read_replica(same_rack, offset),
            _ => None,
        }
    }

    /// The first record at or after `from` whose timestamp is >= `target` (reading the
    /// batch at `from` and the ones after it), as ListOffsets answers.
    async fn first_record_at_or_after(&self, from: i64, target: i64) -> PartitionReply {
        let mut offset = from.max(self.log.log_start_offset());
        let end = self.high_watermark();
        while offset < end {
            let read = match self.log.read(offset, 1, true).await {
                Ok(r) => r,
                Err(e) => return PartitionReply::Error(error_code(&e)),
            };
            if read.batches.is_empty() {
                break;
            }
            for chunk in read.batches {
                for batch in record_batch::batches(chunk).flatten() {
                    if batch.max_timestamp() >= target {
                        if let Some(found) = record_at_or_after(&batch, target, offset) {
                            return found;
                        }
                    }
                    offset = offset.max(batch.last_offset() + 1);
                }
            }
        }
        PartitionReply::Offset {
            leader_epoch: -1,
            offset: -1,
            timestamp: -1,
        }
    }

    async fn list_offset(&self, timestamp: i64, read_committed: bool) -> PartitionReply {
        match timestamp {
            // Latest: the high watermark, or the last stable offset for read_committed.
            -1 => PartitionReply::Offset {
                leader_epoch: -1,
                offset: if read_committed {
                    self.last_stable_offset()
                } else {
                    self.high_watermark()
                },
                timestamp: -1,
            },
            // Earliest and earliest-local.
            -2 | -4 => PartitionReply::Offset {
                leader_epoch: -1,
                offset: self.log.log_start_offset(),
                timestamp: -1,
            },
            // The log finds the batch; the record inside it is found here, as Kafka does.
            -3 => match self.log.max_timestamp() {
                Some((batch_offset, max_ts)) => {
                    self.first_record_at_or_after(batch_offset, max_ts).await
                }
                None => PartitionReply::Offset {
                    leader_epoch: -1,
                    offset: -1,
                    timestamp: -1,
                },
            },
            t if t >= 0 => match self.log.offset_for_timestamp(t).await {
                Ok(Some((batch_offset, _))) => self.first_record_at_or_after(batch_offset, t).await,
                Ok(None) => PartitionReply::Offset {
                    leader_epoch: -1,
                    offset: -1,
                    timestamp: -1,
                },
                Err(e) => PartitionReply::Error(error_code(&e)),
            },
            // Latest-tiered and anything unknown: nothing in tiered storage.
            _ => PartitionReply::Offset {
                leader_epoch: -1,
                offset: -1,
                timestamp: -1,
            },
        }
    }
}
