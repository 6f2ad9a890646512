//! [`PartitionLog`]: one partition's log on one shard thread.

//!
//! The log is split by concern: `state` (segments, offsets, the write queue and
//! roll-back after a failed write), `open` (recovery), `append`, `writer` (the task
//! that writes, syncs and seals), `read`, `retention` (retention, DeleteRecords,
//! truncation) and `epochs` (the leader-epoch cache's API and persistence). This module holds the handle, its accessors and its lifecycle.

mod append;
mod compact;
mod epochs;
mod open;
mod read;
mod retention;
mod state;
mod writer;

use std::cell::{Cell, RefCell};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use event_listener::{Event, EventListener};

use crate::config::LogConfig;
use crate::error::{LogError, Result};
use crate::io as fio;
use crate::segment::Phase;

use state::{State, TicketState};

/// Source of wall-clock time in milliseconds since the epoch.
pub type Clock = Rc<dyn Fn() -> i64>;

/// The system clock.
pub fn system_clock() -> Clock {
    Rc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    })
}

/// What an append did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record appended.
    pub base_offset: i64,
    /// Offset of the last record appended.
    pub last_offset: i64,
    /// Log end offset right after this append.
    pub log_end_offset: i64,
    /// Wall-clock time of the append (for `LogAppendTime` responses).
    pub append_time_ms: i64,
    /// Log start offset at the time of the append.
    pub log_start_offset: i64,
}

/// Batches returned by a read.
#[derive(Clone, Debug, Default)]
pub struct ReadResult {
    /// Whole batches, in offset order, each a slice of a cache or read buffer.
    pub batches: Vec<Bytes>,
    /// Log start offset when the read was served.
    pub log_start_offset: i64,
    /// Written end offset (high watermark on a single node) when the read was served.
    pub high_watermark: i64,
}

impl ReadResult {
    /// Total bytes of the batches.
    pub fn size_bytes(&self) -> usize {
        self.batches.iter().map(|b| b.len()).sum()
    }
}

/// Upper bounds (seconds) of the latency buckets in [`LogStats`] (the broker's
/// Prometheus histograms use the same).
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The bucket of [`LATENCY_BUCKETS`] a duration in nanoseconds falls in.
pub fn latency_bucket(nanos: u64) -> usize {
    let secs = nanos as f64 / 1e9;
    LATENCY_BUCKETS
        .iter()
        .position(|b| secs <= *b)
        .unwrap_or(LATENCY_BUCKETS.len())
}

/// Counters of one log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Calls to `append`/`append_with_offsets` accepted.
    pub appends: u64,
    /// Batches appended.
    pub batches: u64,
    /// Bytes appended (batch bytes).
    pub bytes_appended: u64,
    /// Data writes issued (one per group commit).
    pub writes: u64,
    /// Bytes written to disk, including page padding and rewritten tail pages.
    pub bytes_written: u64,
    /// Time from submitting a data write to its completion, in nanoseconds (with
    /// `writes`, the mean write latency; syncs not included).
    pub write_nanos: u64,
    /// Data writes by duration (submission to completion): counts per bucket of
    /// [`LATENCY_BUCKETS`], the last one above them all (not cumulative).
    pub write_buckets: [u64; LATENCY_BUCKETS.len() + 1],
    /// Zero fills of segment space ahead of the data (see `LogConfig::zero_ahead_bytes`).
    pub zero_fills: u64,
    /// Bytes of zeros written by them.
    pub bytes_zero_filled: u64,
    /// fdatasync calls.
    pub syncs: u64,
    /// Time spent in fdatasync, in nanoseconds (with `syncs`, the mean sync latency).
    pub sync_nanos: u64,
    /// Segment rolls.
    pub rolls: u64,
    /// Reads served from the batch cache.
    pub cache_hits: u64,
    /// Reads that went to disk.
    pub disk_reads: u64,
    /// Reads served from read-ahead windows (see `read`).
    pub read_ahead_hits: u64,
    /// Read-aheads done (background reads of a partition read sequentially from disk).
    pub read_aheads: u64,
    /// Bytes of batches they read.
    pub bytes_read_ahead: u64,
}

/// Names the appends of one `begin_append` call: they are durable once the written
/// end offset reaches `end` without a roll-back in between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteTicket {
    end: i64,
    rollbacks: u64,
}

struct Shared {
    state: RefCell<State>,
    /// Held while the set of segments changes across awaits.
    structure: AsyncLock,
    /// Held while the leader-epoch checkpoint file is replaced (by the writer and by
    /// truncations), so that writes of it do not interleave and the newest state wins.
    epoch_file: AsyncLock,
    /// Fired on every completed write (and on failure / writer exit).
    written: Event,
    /// Wakes the writer task.
    work: Event,
    /// Fired when a zero fill ends.
    fill_done: Event,
    /// Fired when a read-ahead ends.
    read_ahead_done: Event,
    writer: Cell<Option<compio::runtime::JoinHandle<()>>>,
}

/// A lock held across awaits on one thread. `Shared::structure` serialises the changes
/// to which segments make up the log (retention, DeleteRecords, truncation, compaction
/// swaps, deletion): each decides, then awaits I/O, then changes the segment map, and
/// none may act on segments another is replacing.
#[derive(Default)]
struct AsyncLock {
    held: Cell<bool>,
    released: Event,
}

impl AsyncLock {
    async fn lock(&self) -> AsyncGuard<'_> {
        loop {
            if !self.held.get() {
                self.held.set(true);
                return AsyncGuard(self);
            }
            let l = self.released.listen();
            if self.held.get() {
                l.await;
            }
        }
    }
}

struct AsyncGuard<'a>(&'a AsyncLock);

impl Drop for AsyncGuard<'_> {
    fn drop(&mut self) {
        self.0.held.set(false);
        self.0.released.notify(1);
    }
}

/// One partition's log. Single-threaded (`!Send`): lives on one compio runtime thread.
/// Share it with `Rc<PartitionLog>`; all methods take `&self`.
pub struct PartitionLog {
    shared: Rc<Shared>,
}

const CHECKPOINT_FILE: &str = "log-start-offset.checkpoint";
/// Written by `close()` after the active segment was sealed; lets `open` skip the scan.
const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";

fn io_err(ctx: impl Into<String>) -> impl FnOnce(io::Error) -> LogError {
    let ctx = ctx.into();
    move |e| LogError::io(ctx, e)
}

impl PartitionLog {
    /// First log start offset still readable.
    pub fn log_start_offset(&self) -> i64 {
        self.shared.state.borrow().log_start
    }

    /// The cleaner checkpoint: offsets below it were compacted (0 if never).
    pub fn cleaned_up_to(&self) -> i64 {
        self.shared.state.borrow().clean_end
    }

    /// Next offset to be assigned.
    pub fn log_end_offset(&self) -> i64 {
        self.shared.state.borrow().leo
    }

    /// Everything below this offset is written and readable.
    pub fn written_end_offset(&self) -> i64 {
        self.shared.state.borrow().written_end
    }

    /// A listener that fires on the next completed write (the written end offset
    /// advanced), on a write failure, and when the log closes. Create it, re-check
    /// `written_end_offset`, then await it (no lost wake-ups).
    pub fn listen(&self) -> EventListener {
        self.shared.written.listen()
    }

    /// Directory of this log.
    pub fn dir(&self) -> PathBuf {
        self.shared.state.borrow().dir.clone()
    }

    /// Counters.
    pub fn stats(&self) -> LogStats {
        self.shared.state.borrow().stats
    }

    /// True if segment data goes through O_DIRECT (false after a buffered fallback).
    pub fn is_direct_io(&self) -> bool {
        self.shared.state.borrow().direct
    }

    /// Current configuration.
    pub fn config(&self) -> LogConfig {
        self.shared.state.borrow().config.clone()
    }

    /// Replace the configuration (applies to later appends, rolls, flushes, retention).
    pub fn update_config(&self, config: LogConfig) {
        let mut st = self.shared.state.borrow_mut();
        if st.private_cache {
            st.cache
                .shared()
                .borrow_mut()
                .set_budget(config.cache_bytes);
        }
        st.config = config;
        drop(st);
        self.shared.work.notify(1);
    }

    /// Bytes of all segments (appended, including not yet written).
    pub fn size_bytes(&self) -> u64 {
        self.shared.state.borrow().total_size()
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.shared.state.borrow().segments.len()
    }

    /// Base offsets of all segments.
    pub fn segment_bases(&self) -> Vec<i64> {
        self.shared
            .state
            .borrow()
            .segments
            .keys()
            .copied()
            .collect()
    }

    /// Whether appends are accepted now: `Err(Offline)` after a failed write (until
    /// the retry time of a full disk has come, or for good after an I/O error),
    /// `Err(Closed)` once closing.
    pub fn writable(&self) -> Result<()> {
        self.shared.state.borrow().check_writable()
    }

    /// A write failed and none has succeeded since (a full disk still full, or an I/O
    /// error): the partition is offline for writes, or only retrying.
    pub fn is_offline(&self) -> bool {
        self.shared.state.borrow().failure.is_some()
    }

    /// Why the log is offline for writes until a restart (a write failed with an I/O
    /// error other than a full disk), if it is.
    pub fn failed_for_good(&self) -> Option<String> {
        let st = self.shared.state.borrow();
        st.failure
            .as_ref()
            .filter(|f| !f.retriable)
            .map(|f| f.reason.clone())
    }

    /// Whether the appends behind `ticket` are written already (durable per the flush
    /// policy): `Some(true)`, `Some(false)` when they were discarded by a failed write,
    /// `None` while they wait for the writer.
    pub fn is_written(&self, ticket: WriteTicket) -> Option<bool> {
        match self.shared.state.borrow().ticket_state(ticket) {
            TicketState::Written => Some(true),
            TicketState::Discarded => Some(false),
            TicketState::Waiting => None,
        }
    }

    /// Resolves when the appends behind `ticket` are written (and synced when the
    /// flush policy asks for it), or fails if a failed write discarded them.
    pub async fn written(&self, ticket: WriteTicket) -> Result<()> {
        wait_ticket(&self.shared, ticket).await
    }

    /// Wait until everything appended so far is written, then fdatasync the active
    /// segment.
    pub async fn flush(&self) -> Result<()> {
        wait_idle(&self.shared).await?;
        let file = {
            let st = self.shared.state.borrow();
            st.active().and_then(|s| s.file.clone())
        };
        if let Some(f) = file {
            writer::sync_counted(&self.shared, &f, "fdatasync").await?;
        }
        Ok(())
    }

    async fn stop_writer(&self, seal_active: bool) {
        {
            let mut st = self.shared.state.borrow_mut();
            st.closing = true;
            if seal_active {
                // Closing: the active segment takes no more appends and is sealed by
                // the writer's last job.
                if let Some(seg) = st.active_mut().filter(|s| s.phase == Phase::Active) {
                    seg.phase = Phase::Rolled;
                    seg.finish_time_index();
                    if let Some(p) = st.pending.back_mut() {
                        p.seal = true;
                    }
                }
            }
        }
        self.shared.work.notify(usize::MAX);
        if let Some(h) = self.shared.writer.take() {
            let _ = h.await;
        }
    }

    /// Write everything, sync, trim the active segment's preallocated space, write its
    /// index files, and stop the writer.
    pub async fn close(self) -> Result<()> {
        self.shutdown().await
    }

    /// [`close`](Self::close) through a shared reference (for logs held in an `Rc`): after
    /// it, appends fail with [`LogError::Closed`]; reads of written data still work.
    /// Calling it again is harmless. A log that failed a write is not marked clean, so
    /// the next open scans it.
    pub async fn shutdown(&self) -> Result<()> {
        self.stop_writer(true).await;
        // A concurrent second caller finds the handle taken: wait for the writer anyway.
        let _ = wait_until(&self.shared, |st| st.writer_done).await;
        let (dir, failure) = {
            let st = self.shared.state.borrow();
            (st.dir.clone(), st.failure.clone())
        };
        if let Some(f) = failure {
            return Err(LogError::Offline {
                dir,
                reason: f.reason,
            });
        }
        epochs::persist(&self.shared).await?;
        // Everything is synced, trimmed and indexed: the next open may skip the scan.
        let marker = dir.join(CLEAN_SHUTDOWN_FILE);
        fio::write_small_file(&marker, Vec::new())
            .await
            .map_err(io_err(format!("writing {}", marker.display())))?;
        fio::sync_dir(&dir)
            .await
            .map_err(io_err(format!("syncing {}", dir.display())))?;
        Ok(())
    }

    /// Delete the log (DeleteTopics), as Kafka does: first rename its directory to
    /// `graveyard` (so that nothing can open it under its old name again, even after a
    /// crash), then stop the writer, then remove the renamed directory off the shard
    /// thread. Reads already holding batches keep them; later appends fail.
    pub async fn delete(&self, graveyard: &Path) -> Result<()> {
        let _guard = self.shared.structure.lock().await;
        let dir = self.dir();
        fio::rename(&dir, graveyard).await.map_err(io_err(format!(
            "renaming {} to {}",
            dir.display(),
            graveyard.display()
        )))?;
        if let Some(parent) = graveyard.parent() {
            fio::sync_dir(parent)
                .await
                .map_err(io_err(format!("syncing {}", parent.display())))?;
        }
        self.shared.state.borrow_mut().dir = graveyard.to_path_buf();
        self.stop_writer(false).await;
        {
            let mut st = self.shared.state.borrow_mut();
            st.segments.clear();
            st.cache.retain_range(i64::MAX, i64::MIN);
        }
        let doomed = graveyard.to_path_buf();
        compio::runtime::spawn_blocking(move || std::fs::remove_dir_all(&doomed))
            .await
            .map_err(|_| LogError::Closed)?
            .map_err(io_err(format!("removing {}", graveyard.display())))
    }
}

impl Drop for PartitionLog {
    fn drop(&mut self) {
        if let Ok(mut st) = self.shared.state.try_borrow_mut() {
            st.closing = true;
        }
        self.shared.work.notify(usize::MAX);
        if let Some(h) = self.shared.writer.take() {
            h.detach();
        }
    }
}

async fn wait_ticket(shared: &Rc<Shared>, ticket: WriteTicket) -> Result<()> {
    loop {
        let l = shared.written.listen();
        {
            let st = shared.state.borrow();
            match st.ticket_state(ticket) {
                TicketState::Written => return Ok(()),
                TicketState::Discarded if st.failure.is_some() => return Err(st.offline_error()),
                TicketState::Discarded => return Err(LogError::Closed),
                TicketState::Waiting => {}
            }
        }
        l.await;
    }
}

/// Wait until everything appended is written and every rolled segment sealed.
async fn wait_idle(shared: &Rc<Shared>) -> Result<()> {
    wait_until(shared, |st| {
        !st.job_in_flight && st.written_end >= st.leo && st.pending.iter().all(|p| !p.seal)
    })
    .await
}

async fn wait_until(shared: &Rc<Shared>, done: impl Fn(&State) -> bool) -> Result<()> {
    let check = |shared: &Shared| -> Option<Result<()>> {
        let st = shared.state.borrow();
        if done(&st) {
            return Some(Ok(()));
        }
        if st.failure.is_some() {
            return Some(Err(st.offline_error()));
        }
        if st.writer_done {
            return Some(Err(LogError::Closed));
        }
        None
    };
    loop {
        if let Some(r) = check(shared) {
            return r;
        }
        let l = shared.written.listen();
        if let Some(r) = check(shared) {
            return r;
        }
        l.await;
    }
}
