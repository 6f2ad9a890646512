//! The mutable state of one log: its segments, offsets, the queue of appended data
//! waiting for the writer, and what happens when a write fails.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::buf::{align_down, AlignedBuf, ALIGN};
use crate::cache::CacheHandle;
use crate::config::LogConfig;
use crate::epoch::EpochCache;
use crate::error::{LogError, Result};
use crate::segment::{Mark, Phase, Segment};

use super::{Clock, LogStats, WriteTicket};

/// Data appended to one segment that is waiting to be written. The buffer starts at
/// `file_pos` (4 KiB aligned) and may begin with the already written tail page.
pub(super) struct Pending {
    pub seg_base: i64,
    pub file_pos: u64,
    pub buf: AlignedBuf,
    /// (base offset, last offset, start in buf, len) of every new batch.
    pub batches: Vec<(i64, i64, usize, usize)>,
    /// Log end offset once this is written.
    pub end_offset: i64,
    pub messages: i64,
    /// The segment was rolled: after this write, sync, trim and write its indexes.
    pub seal: bool,
    /// The segment's appended state once this is written (its next durable mark).
    pub mark: Mark,
}

/// Smallest write buffer taken when data arrives.
pub(super) const MIN_WRITE_BUF: usize = 64 * 1024;

impl Pending {
    pub fn new(seg: &Segment, file_pos: u64, end_offset: i64) -> Pending {
        Pending {
            seg_base: seg.base,
            file_pos,
            buf: AlignedBuf::take(ALIGN),
            batches: Vec::new(),
            end_offset,
            messages: 0,
            seal: false,
            mark: seg.mark(),
        }
    }
}

/// Why the log refuses writes.
#[derive(Debug, Clone)]
pub(super) struct WriteFailure {
    pub reason: String,
    /// When appends may be tried again; `None` while the roll-back is still being
    /// finished, and for failures that need a restart (anything but a full disk).
    pub retry_at: Option<Instant>,
    pub retriable: bool,
}

/// How long a log whose disk was full waits before it accepts appends again.
pub(super) const FULL_DISK_RETRY: Duration = Duration::from_secs(2);

/// Roll-backs remembered so that holders of older tickets learn their outcome: at most
/// one roll-back per `FULL_DISK_RETRY` while a disk stays full, so this covers well
/// over half an hour, and the broker settles the tickets it keeps (idempotent-producer
/// state) every retention pass. A ticket older than this is reported discarded, which
/// is safe for waiters (nothing unwritten is acknowledged) but must not be used for
/// batches the caller still needs to recognise as written.
const ROLLBACK_HISTORY: usize = 1024;

/// What became of the appends behind a [`WriteTicket`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TicketState {
    Written,
    Waiting,
    Discarded,
}

pub(super) struct State {
    pub dir: PathBuf,
    pub config: LogConfig,
    pub clock: Clock,
    pub segments: BTreeMap<i64, Segment>,
    pub log_start: i64,
    /// The cleaner checkpoint: offsets below were compacted by an earlier clean.
    pub clean_end: i64,
    /// Largest delete horizon the cleaner stamped on tombstones (`-1`: none).
    pub delete_horizon_ms: i64,
    /// Next offset to assign.
    pub leo: i64,
    /// Everything below is written (and synced when the policy asked for it).
    pub written_end: i64,
    pub pending: VecDeque<Pending>,
    pub cache: CacheHandle,
    /// The cache is this log's own (its budget follows `config.cache_bytes`).
    pub private_cache: bool,
    pub failure: Option<WriteFailure>,
    /// Roll-backs so far; appends carry the count they were made under.
    pub rollbacks: u64,
    /// (roll-back number, written end offset when it happened), the newest last.
    pub rollback_history: VecDeque<(u64, i64)>,
    pub closing: bool,
    pub writer_done: bool,
    pub unsynced_messages: i64,
    /// When the oldest unsynced write completed.
    pub dirty_since: Option<Instant>,
    pub stats: LogStats,
    pub direct: bool,
    pub prealloc_ok: bool,
    pub buf_hint: usize,
    /// The writer task holds a job (taken out of `pending`).
    pub job_in_flight: bool,
    /// The zero fill in flight, if any: (segment base, from, to). Data writes into
    /// that range wait for it (see `writer::maybe_fill`).
    pub fill: Option<(i64, u64, u64)>,
    /// After a failed zero fill, no other before this time.
    pub fill_paused_until: Option<Instant>,
    /// Where the sequential reader's read-ahead stands (see `read`).
    pub read_ahead: super::read::ReadAhead,
    /// The leader-epoch cache (see `epochs`).
    pub epochs: EpochCache,
    /// Bumped on every change of `epochs`.
    pub epochs_version: u64,
    /// The version of `epochs` the checkpoint file holds.
    pub epochs_persisted: u64,
}

impl State {
    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    /// May appends be made? After a failed write, not until the retry time of a full
    /// disk has come (the next write then tells whether there is room now; the failure
    /// stays recorded until a write succeeds), and never after another error.
    pub fn check_writable(&self) -> Result<()> {
        if self.closing {
            return Err(LogError::Closed);
        }
        match &self.failure {
            Some(f) if f.retry_at.is_none_or(|t| Instant::now() < t) => Err(self.offline_error()),
            _ => Ok(()),
        }
    }

    pub fn offline_error(&self) -> LogError {
        let reason = self
            .failure
            .as_ref()
            .map(|f| f.reason.clone())
            .unwrap_or_else(|| "closed".into());
        LogError::Offline {
            dir: self.dir.clone(),
            reason,
        }
    }

    pub fn active(&self) -> Option<&Segment> {
        self.segments.values().next_back()
    }

    pub fn active_mut(&mut self) -> Option<&mut Segment> {
        self.segments.values_mut().next_back()
    }

    /// Kafka's roll rule. Time: with a timestamp on the segment's first batch, the
    /// incoming batches' max timestamp minus that; otherwise wall time since creation.
    pub fn should_roll(
        &self,
        add_bytes: usize,
        now: i64,
        incoming_max_ts: i64,
        last_offset: i64,
    ) -> bool {
        let Some(seg) = self.active() else {
            return true;
        };
        if seg.is_empty() {
            return false;
        }
        let cfg = &self.config;
        seg.logical_size + add_bytes as u64 > cfg.segment_bytes_clamped()
            || match seg.roll_ts {
                Some(t) => incoming_max_ts.saturating_sub(t) > cfg.segment_ms,
                None => now.saturating_sub(seg.created_ms) > cfg.segment_ms,
            }
            || seg.index.len() >= cfg.max_offset_index_entries()
            || last_offset - seg.base > i32::MAX as i64
    }

    /// Close the active segment (if any) and start a new one at `base`.
    pub fn roll(&mut self, base: i64, now: i64) {
        if let Some(seg) = self.active_mut() {
            assert_eq!(seg.phase, Phase::Active, "only the active segment rolls");
            seg.phase = Phase::Rolled;
            seg.finish_time_index();
            let mark = seg.mark();
            if let Some(p) = self.pending.back_mut() {
                p.seal = true;
                p.mark = mark;
            }
            self.stats.rolls += 1;
        }
        let seg = Segment::new(&self.dir, base, now);
        self.pending.push_back(Pending::new(&seg, 0, base));
        self.segments.insert(base, seg);
    }

    /// Take the next write for the writer task.
    pub fn take_job(&mut self) -> Option<Pending> {
        let front = self.pending.front()?;
        if front.seal {
            return self.pending.pop_front();
        }
        if front.batches.is_empty() || self.pending.len() > 1 {
            return None;
        }
        let p = self.pending.pop_front()?;
        let data_end = p.file_pos + p.buf.len() as u64;
        let next_pos = align_down(data_end);
        let tail_from = (next_pos - p.file_pos) as usize;
        // Size the next buffer for a write like this one, but only when data arrives:
        // an idle log keeps one page (its tail) in memory.
        self.buf_hint = p.buf.len().clamp(MIN_WRITE_BUF, 64 << 20);
        let mut next = Pending {
            seg_base: p.seg_base,
            file_pos: next_pos,
            buf: AlignedBuf::take(ALIGN),
            batches: Vec::new(),
            end_offset: p.end_offset,
            messages: 0,
            seal: false,
            mark: p.mark,
        };
        next.buf.extend_from_slice(&p.buf.as_slice()[tail_from..]);
        self.pending.push_front(next);
        Some(p)
    }

    pub fn has_job(&self) -> bool {
        self.pending
            .front()
            .is_some_and(|p| p.seal || !p.batches.is_empty())
    }

    /// The ticket of appends made now, ending at `end`.
    pub fn ticket(&self, end: i64) -> WriteTicket {
        WriteTicket {
            end,
            rollbacks: self.rollbacks,
        }
    }

    pub fn ticket_state(&self, t: WriteTicket) -> TicketState {
        if t.rollbacks == self.rollbacks {
            return if self.written_end >= t.end {
                TicketState::Written
            } else if self.writer_done {
                TicketState::Discarded
            } else {
                TicketState::Waiting
            };
        }
        // The first roll-back after the appends kept what was written by then.
        match self
            .rollback_history
            .iter()
            .find(|(n, _)| *n == t.rollbacks + 1)
        {
            Some((_, written)) if t.end <= *written => TicketState::Written,
            _ => TicketState::Discarded,
        }
    }

    /// A write failed: take the log offline for writes and forget everything appended
    /// but not written, so that none of it is ever acknowledged and its offsets are
    /// assigned again once writes resume. Segments holding nothing written that follow
    /// an unsealed one go (their files, if created, are returned for removal); the
    /// last remaining segment becomes the active one at its last written state.
    /// The pending write buffer still lacks the segment's tail page: the caller reads
    /// it back and then sets `retry_at`.
    pub fn roll_back(&mut self, e: &LogError) -> Vec<i64> {
        let retriable = is_disk_full(e);
        self.failure = Some(WriteFailure {
            reason: e.to_string(),
            retry_at: None,
            retriable,
        });
        self.rollbacks += 1;
        self.rollback_history
            .push_back((self.rollbacks, self.written_end));
        if self.rollback_history.len() > ROLLBACK_HISTORY {
            self.rollback_history.pop_front();
        }
        let discarded = self.leo - self.written_end;
        for p in self.pending.drain(..) {
            p.buf.recycle();
        }
        let mut doomed = Vec::new();
        while self.segments.len() > 1 {
            let mut rev = self.segments.values().rev();
            let (Some(last), Some(prev)) = (rev.next(), rev.next()) else {
                break;
            };
            if last.durable.size > 0 || prev.phase == Phase::Sealed {
                break;
            }
            let base = last.base;
            if let Some(seg) = self.segments.remove(&base) {
                if seg.file.is_some() {
                    doomed.push(base);
                }
            }
        }
        let written_end = self.written_end;
        let Some(active) = self.segments.values_mut().next_back() else {
            unreachable!("a log always has an active segment");
        };
        active.roll_back_to_durable();
        assert_eq!(
            active.next_offset.max(active.base),
            written_end,
            "the active segment must end at the written end after a roll-back"
        );
        let pending = Pending::new(active, align_down(active.size), written_end);
        self.pending.push_back(pending);
        self.leo = written_end;
        self.cache.retain_range(i64::MIN, written_end);
        // Epochs of discarded batches go; an entry starting exactly at the new end
        // stays: it may be the leader's current epoch, assigned before anything was
        // appended in it (Kafka's leader holds such an entry), which its appends after
        // the retry must still carry. Persisted with the next write (an entry left in
        // the file past the data is dropped at open, as Kafka does).
        self.change_epochs(|c| c.truncate_from_end(written_end + 1));
        log_write_failure(&self.dir, e, retriable, discarded);
        doomed
    }

    pub fn total_size(&self) -> u64 {
        self.segments.values().map(|s| s.logical_size).sum()
    }

    /// Apply `change` to the epoch cache; if it changed it, the checkpoint file is
    /// out of date until `epochs::persist` ran.
    pub fn change_epochs(&mut self, change: impl FnOnce(&mut EpochCache) -> bool) {
        if change(&mut self.epochs) {
            self.epochs_version += 1;
        }
    }

    pub fn checkpoint_bytes(&self) -> Vec<u8> {
        format!("0\n{}\n", self.log_start).into_bytes()
    }
}

/// A write failed for lack of space (the log may write again once space is freed),
/// rather than an I/O error (the log stays offline until the broker restarts).
fn is_disk_full(e: &LogError) -> bool {
    matches!(e, LogError::Io { source, .. } if matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)))
        || matches!(e, LogError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull)
}

/// Logs a write failure, at most a few lines a minute per shard thread: with
/// thousands of partitions on one full disk, every one of them fails, and retries
/// fail again.
fn log_write_failure(dir: &std::path::Path, e: &LogError, retriable: bool, discarded: i64) {
    thread_local! {
        static LIMIT: std::cell::RefCell<crate::ratelimit::RateLimit> =
            std::cell::RefCell::new(crate::ratelimit::RateLimit::new(5, Duration::from_secs(60)));
    }
    LIMIT.with(|l| {
        if let Some(suppressed) = l.borrow_mut().admit(Instant::now()) {
            if retriable {
                tracing::error!(dir = %dir.display(), error = %e, discarded_offsets = discarded, suppressed,
                    "log write failed: disk full; appends not written were refused, writes retry every {}s", FULL_DISK_RETRY.as_secs());
            } else {
                tracing::error!(dir = %dir.display(), error = %e, discarded_offsets = discarded, suppressed,
                    "log write failed; the partition is offline for writes until the broker restarts");
            }
        }
    });
}
