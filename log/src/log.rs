//! [`PartitionLog`]: one partition's log on one shard thread.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_listener::{Event, EventListener};

use crate::batch::{self, parse_header, HeaderProblem, HEADER_LEN};
use crate::buf::{align_down, align_up, AlignedBuf, PaddedWrite, ALIGN};
use crate::cache::BatchCache;
use crate::config::LogConfig;
use crate::error::{LogError, Result};
use crate::io as fio;
use crate::segment::{self, Segment};

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
}

/// Data appended to one segment that is waiting to be written. The buffer starts at
/// `file_pos` (4 KiB aligned) and may begin with the already written tail page.
struct Pending {
    seg_base: i64,
    file_pos: u64,
    buf: AlignedBuf,
    /// (base offset, last offset, start in buf, len) of every new batch.
    batches: Vec<(i64, i64, usize, usize)>,
    /// Log end offset once this is written.
    end_offset: i64,
    messages: i64,
    /// The segment was rolled: after this write, sync, trim and write its indexes.
    seal: bool,
}

const MIN_WRITE_BUF: usize = 64 * 1024;

impl Pending {
    fn new(seg_base: i64, file_pos: u64, end_offset: i64, capacity: usize) -> Pending {
        Pending {
            seg_base,
            file_pos,
            buf: AlignedBuf::take(capacity.max(ALIGN)),
            batches: Vec::new(),
            end_offset,
            messages: 0,
            seal: false,
        }
    }
}

struct State {
    dir: PathBuf,
    config: LogConfig,
    clock: Clock,
    segments: BTreeMap<i64, Segment>,
    log_start: i64,
    /// Next offset to assign.
    leo: i64,
    /// Everything below is written (and synced when the policy asked for it).
    written_end: i64,
    pending: VecDeque<Pending>,
    cache: BatchCache,
    failed: Option<(io::ErrorKind, String)>,
    closing: bool,
    writer_done: bool,
    unsynced_messages: i64,
    /// When the oldest unsynced write completed.
    dirty_since: Option<Instant>,
    stats: LogStats,
    direct: bool,
    prealloc_ok: bool,
    buf_hint: usize,
    /// The writer task holds a job (taken out of `pending`).
    job_in_flight: bool,
}

struct Shared {
    state: RefCell<State>,
    /// Fired on every completed write (and on failure / writer exit).
    written: Event,
    /// Wakes the writer task.
    work: Event,
    writer: Cell<Option<compio::runtime::JoinHandle<()>>>,
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

impl State {
    fn now(&self) -> i64 {
        (self.clock)()
    }

    fn check_writable(&self) -> Result<()> {
        if let Some((_, reason)) = &self.failed {
            return Err(LogError::Offline { dir: self.dir.clone(), reason: reason.clone() });
        }
        if self.closing {
            return Err(LogError::Closed);
        }
        Ok(())
    }

    fn active(&self) -> Option<&Segment> {
        self.segments.values().next_back()
    }

    fn active_mut(&mut self) -> Option<&mut Segment> {
        self.segments.values_mut().next_back()
    }

    /// Kafka's roll rule. Time: with a timestamp on the segment's first batch, the
    /// incoming batches' max timestamp minus that; otherwise wall time since creation.
    fn should_roll(&self, add_bytes: usize, now: i64, incoming_max_ts: i64, last_offset: i64) -> bool {
        let Some(seg) = self.active() else { return true };
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
    fn roll(&mut self, base: i64, now: i64) {
        if let Some(seg) = self.active_mut() {
            seg.rolled = true;
            seg.finish_time_index();
            if let Some(p) = self.pending.back_mut() {
                p.seal = true;
            }
            self.stats.rolls += 1;
        }
        let dir = self.dir.clone();
        self.segments.insert(base, Segment::new(&dir, base, now));
        self.pending.push_back(Pending::new(base, 0, base, ALIGN));
    }

    /// Take the next write for the writer task.
    fn take_job(&mut self) -> Option<Pending> {
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
        let mut next = Pending::new(p.seg_base, next_pos, p.end_offset, ALIGN);
        next.buf.extend_from_slice(&p.buf.as_slice()[tail_from..]);
        self.pending.push_front(next);
        Some(p)
    }

    fn has_job(&self) -> bool {
        self.pending.front().is_some_and(|p| p.seal || !p.batches.is_empty())
    }

    fn fail(&mut self, e: &LogError) {
        let kind = match e {
            LogError::Io { source, .. } => source.kind(),
            _ => io::ErrorKind::Other,
        };
        if self.failed.is_none() {
            tracing::error!(dir = %self.dir.display(), error = %e, "log write failed; log is offline");
            self.failed = Some((kind, e.to_string()));
        }
    }

    fn total_size(&self) -> u64 {
        self.segments.values().map(|s| s.logical_size).sum()
    }

    fn checkpoint_bytes(&self) -> Vec<u8> {
        format!("0\n{}\n", self.log_start).into_bytes()
    }
}

fn parse_checkpoint(data: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(data).ok()?;
    let mut lines = s.lines();
    if lines.next()?.trim() != "0" {
        return None;
    }
    lines.next()?.trim().parse().ok().filter(|v: &i64| *v >= 0)
}

impl PartitionLog {
    /// Open (or create) the log in `dir` with the system clock, recovering after a crash.
    pub async fn open(dir: PathBuf, config: LogConfig) -> Result<PartitionLog> {
        Self::open_with_clock(dir, config, system_clock()).await
    }

    /// Like [`open`](Self::open) with an injected clock (tests, deterministic retention).
    pub async fn open_with_clock(dir: PathBuf, config: LogConfig, clock: Clock) -> Result<PartitionLog> {
        let now = clock();
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let mut bases = Vec::new();
        let entries = std::fs::read_dir(&dir).map_err(io_err(format!("listing {}", dir.display())))?;
        for entry in entries {
            let entry = entry.map_err(io_err(format!("listing {}", dir.display())))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(stem) = name.strip_suffix(".log") {
                if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
                    if let Ok(b) = stem.parse::<i64>() {
                        bases.push(b);
                    }
                }
            } else if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        bases.sort_unstable();

        let cp_path = dir.join(CHECKPOINT_FILE);
        let mut log_start = match std::fs::read(&cp_path) {
            Ok(data) => parse_checkpoint(&data).ok_or_else(|| LogError::Corrupt {
                path: cp_path.clone(),
                reason: "unparseable log start offset checkpoint".into(),
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => bases.first().copied().unwrap_or(0),
            Err(e) => return Err(LogError::io(format!("reading {}", cp_path.display()), e)),
        };

        // Segments wholly below the log start (an interrupted delete_records/retention).
        while bases.len() > 1 && bases[1] <= log_start {
            let b = bases.remove(0);
            remove_segment_files(&dir, b).await?;
        }

        let interval = config.index_interval_bytes as u64;
        let fallback = config.allow_buffered_fallback;
        let marker = dir.join(CLEAN_SHUTDOWN_FILE);
        let clean = marker.exists();
        if clean {
            // Remove it before anything can be appended: a later crash must scan again.
            fio::remove_file(&marker).await.map_err(io_err(format!("removing {}", marker.display())))?;
            fio::sync_dir(&dir).await.map_err(io_err(format!("syncing {}", dir.display())))?;
        }
        let mut segments = BTreeMap::new();
        let mut direct = true;
        let mut prev_end: Option<i64> = None;
        for (i, &b) in bases.iter().enumerate() {
            let seg = if i + 1 == bases.len() {
                let (s, d) = if clean {
                    segment::load_active_clean(&dir, b, interval, fallback, now).await?
                } else {
                    segment::load_active(&dir, b, interval, fallback, now).await?
                };
                direct = d;
                s
            } else {
                segment::load_closed(&dir, b, interval, fallback, now).await?
            };
            if let Some(pe) = prev_end {
                if b < pe {
                    return Err(LogError::Corrupt {
                        path: seg.path.clone(),
                        reason: format!("segment base {b} overlaps previous segment ending at {pe}"),
                    });
                }
            }
            prev_end = Some(seg.next_offset);
            segments.insert(b, seg);
        }
        let leo = segments.values().next_back().map(|s| s.next_offset).unwrap_or(log_start).max(log_start);
        if let Some(first) = segments.keys().next() {
            log_start = log_start.max(*first);
        }
        let mut st = State {
            dir: dir.clone(),
            cache: BatchCache::new(config.cache_bytes),
            config,
            clock,
            segments,
            log_start,
            leo,
            written_end: leo,
            pending: VecDeque::new(),
            failed: None,
            closing: false,
            writer_done: false,
            unsynced_messages: 0,
            dirty_since: None,
            stats: LogStats::default(),
            direct,
            prealloc_ok: true,
            buf_hint: MIN_WRITE_BUF,
            job_in_flight: false,
        };
        // The open write buffer for the active segment, starting with its tail page.
        match st.segments.values().next_back() {
            Some(seg) => {
                let pos = align_down(seg.size);
                let mut p = Pending::new(seg.base, pos, leo, ALIGN);
                let tail = (seg.size - pos) as usize;
                if tail > 0 {
                    let file = seg.file.as_ref().ok_or(LogError::Closed)?;
                    let page = fio::read_aligned(file, pos, ALIGN)
                        .await
                        .map_err(io_err(format!("reading {}", seg.path.display())))?;
                    if page.len() < tail {
                        return Err(LogError::Corrupt {
                            path: seg.path.clone(),
                            reason: "tail page shorter than scanned data".into(),
                        });
                    }
                    p.buf.extend_from_slice(&page.as_slice()[..tail]);
                }
                st.pending.push_back(p);
            }
            None => {
                let dir = st.dir.clone();
                st.segments.insert(leo, Segment::new(&dir, leo, now));
                st.pending.push_back(Pending::new(leo, 0, leo, ALIGN));
            }
        }
        let shared = Rc::new(Shared {
            state: RefCell::new(st),
            written: Event::new(),
            work: Event::new(),
            writer: Cell::new(None),
        });
        let handle = compio::runtime::spawn(writer_loop(shared.clone()));
        shared.writer.set(Some(handle));
        Ok(PartitionLog { shared })
    }

    /// Append batches, assigning offsets from the log end offset. Offsets are assigned
    /// when this is *called* (so calls made in order get ordered offsets, even if their
    /// futures are awaited together); the future resolves once the bytes are written
    /// (and synced, when the flush policy asks for it).
    pub fn append(&self, batches: Bytes) -> impl Future<Output = Result<AppendInfo>> + 'static {
        let res = self.begin_append(batches, true);
        let shared = self.shared.clone();
        async move {
            let (info, target) = res?;
            wait_written(&shared, target).await?;
            Ok(info)
        }
    }

    /// Append batches keeping their own offsets (replication followers). The first base
    /// offset must be >= the log end offset and offsets must increase.
    pub fn append_with_offsets(&self, batches: Bytes) -> impl Future<Output = Result<AppendInfo>> + 'static {
        let res = self.begin_append(batches, false);
        let shared = self.shared.clone();
        async move {
            let (info, target) = res?;
            wait_written(&shared, target).await?;
            Ok(info)
        }
    }

    fn begin_append(&self, data: Bytes, assign: bool) -> Result<(AppendInfo, i64)> {
        let mut st = self.shared.state.borrow_mut();
        st.check_writable()?;
        let headers = batch::split_batches(&data).map_err(LogError::InvalidBatch)?;
        let seg_bytes = st.config.segment_bytes_clamped();
        if data.len() as u64 > seg_bytes {
            return Err(LogError::BatchTooLarge { size: data.len(), segment_bytes: seg_bytes });
        }
        // Offsets.
        let mut next = st.leo;
        let mut bases = Vec::with_capacity(headers.len());
        for h in &headers {
            let base = if assign {
                next
            } else {
                if h.base_offset < next {
                    return Err(LogError::InvalidBatch(format!(
                        "batch base offset {} is below the expected next offset {next}",
                        h.base_offset
                    )));
                }
                h.base_offset
            };
            bases.push(base);
            next = base
                .checked_add(h.last_offset_delta as i64 + 1)
                .ok_or_else(|| LogError::InvalidBatch("offset overflow".into()))?;
        }
        let first = bases[0];
        let last = next - 1;
        let now = st.now();
        let incoming_max_ts = headers.iter().map(|h| h.max_timestamp).max().unwrap_or(-1);
        if st.should_roll(data.len(), now, incoming_max_ts, last) {
            st.roll(first, now);
        } else if let Some(seg) = st.active() {
            // A follower's offsets may jump; the segment base must stay below them.
            if seg.is_empty() && seg.base != first && seg.file.is_none() && !assign {
                let base = seg.base;
                st.segments.remove(&base);
                let dir = st.dir.clone();
                st.segments.insert(first, Segment::new(&dir, first, now));
                if let Some(p) = st.pending.back_mut() {
                    p.seg_base = first;
                }
            }
        }
        let interval = st.config.index_interval_bytes as u64;
        let hint = st.buf_hint;
        let st = &mut *st;
        let (Some(p), Some(seg)) = (st.pending.back_mut(), st.segments.values_mut().next_back()) else {
            return Err(LogError::Closed);
        };
        let need = p.buf.len() + data.len();
        if need > p.buf.capacity() {
            p.buf.reserve(need.max(hint) - p.buf.len());
        }
        let mut pos = 0usize;
        for (h, &base) in headers.iter().zip(&bases) {
            let in_buf = p.buf.len();
            p.buf.extend_from_slice(&data[pos..pos + h.total_len]);
            if assign {
                let end = in_buf + h.total_len;
                batch::set_base_offset(&mut p.buf.full_mut()[in_buf..end], base);
            }
            let mut hh = *h;
            hh.base_offset = base;
            seg.on_batch(&hh, p.file_pos + in_buf as u64, interval);
            p.batches.push((base, hh.last_offset(), in_buf, h.total_len));
            p.messages += h.record_count.max(1) as i64;
            pos += h.total_len;
        }
        p.end_offset = next;
        st.leo = next;
        st.stats.appends += 1;
        st.stats.batches += headers.len() as u64;
        st.stats.bytes_appended += data.len() as u64;
        let info = AppendInfo {
            base_offset: first,
            last_offset: last,
            log_end_offset: next,
            append_time_ms: now,
            log_start_offset: st.log_start,
        };
        self.shared.work.notify(1);
        Ok((info, next))
    }

    /// Read whole batches starting with the one that contains `start_offset`, up to
    /// `max_bytes` (at least one batch when `min_one`). Only written batches are
    /// visible. Reading at the written end returns no batches.
    pub async fn read(&self, start_offset: i64, max_bytes: usize, min_one: bool) -> Result<ReadResult> {
        let mut seg_from = {
            let mut st = self.shared.state.borrow_mut();
            let (ls, we) = (st.log_start, st.written_end);
            if start_offset < ls || start_offset > we {
                return Err(LogError::OffsetOutOfRange { requested: start_offset, log_start: ls, log_end: we });
            }
            let mut res = ReadResult { batches: Vec::new(), log_start_offset: ls, high_watermark: we };
            if start_offset == we {
                return Ok(res);
            }
            if let Some(b) = st.cache.collect(start_offset, we, max_bytes, min_one) {
                if !b.is_empty() || !min_one {
                    st.stats.cache_hits += 1;
                    res.batches = b;
                    return Ok(res);
                }
            }
            st.stats.disk_reads += 1;
            st.segments.range(..=start_offset).next_back().map(|(b, _)| *b).unwrap_or(i64::MIN)
        };
        loop {
            // Plan under the borrow, do I/O without it.
            let plan = {
                let st = self.shared.state.borrow();
                let (ls, we) = (st.log_start, st.written_end);
                if start_offset < ls {
                    return Err(LogError::OffsetOutOfRange { requested: start_offset, log_start: ls, log_end: we });
                }
                match st.segments.range(seg_from..).next() {
                    Some((&b, seg)) if seg.size > 0 && b < we => {
                        let file = seg.file.clone();
                        let (_, pos) = seg.index.lookup(start_offset);
                        Some((b, file, pos as u64, seg.size, ls, we, seg.path.clone()))
                    }
                    _ => None,
                }
            };
            let Some((base, file, pos, limit, ls, we, path)) = plan else {
                let st = self.shared.state.borrow();
                return Ok(ReadResult { batches: Vec::new(), log_start_offset: st.log_start, high_watermark: st.written_end });
            };
            let Some(file) = file else {
                return Ok(ReadResult { batches: Vec::new(), log_start_offset: ls, high_watermark: we });
            };
            let batches = read_segment(&file, &path, pos, limit, start_offset, max_bytes, min_one).await?;
            if !batches.is_empty() {
                return Ok(ReadResult { batches, log_start_offset: ls, high_watermark: we });
            }
            seg_from = base + 1;
        }
    }

    /// First log start offset still readable.
    pub fn log_start_offset(&self) -> i64 {
        self.shared.state.borrow().log_start
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
        st.cache.set_budget(config.cache_bytes);
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
        self.shared.state.borrow().segments.keys().copied().collect()
    }

    /// Largest batch max timestamp in the log as `(offset, timestamp)`, where offset is
    /// the base offset of the first batch carrying it (ListOffsets MAX_TIMESTAMP;
    /// batch granularity). `None` when no batch has a timestamp.
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let st = self.shared.state.borrow();
        let mut best: Option<(i64, i64)> = None;
        for seg in st.segments.values() {
            if seg.size == 0 || seg.max_ts < 0 {
                continue;
            }
            if best.is_none_or(|(_, ts)| seg.max_ts > ts) {
                best = Some((seg.max_ts_offset.max(st.log_start), seg.max_ts));
            }
        }
        best
    }

    /// ListOffsets by timestamp: the first batch whose max timestamp is >= `ts`, as
    /// `(offset, timestamp)` = (its base offset, or the log start if larger; its max
    /// timestamp). Batch granularity: records of that batch before the exact one may
    /// have smaller timestamps. `None` if no written batch qualifies.
    pub async fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>> {
        let candidates: Vec<_> = {
            let st = self.shared.state.borrow();
            st.segments
                .values()
                .filter(|s| s.size > 0 && s.max_ts >= ts)
                .map(|s| {
                    let start = s.time_index.lookup(ts).map(|(_, off)| s.index.lookup(off).1).unwrap_or(0);
                    (s.file.clone(), s.path.clone(), start as u64, s.size)
                })
                .collect()
        };
        for (file, path, start, limit) in candidates {
            let Some(file) = file else { continue };
            let mut pos = start;
            while pos < limit {
                let batches = read_segment(&file, &path, pos, limit, i64::MIN, 1 << 20, true).await?;
                if batches.is_empty() {
                    break;
                }
                for b in &batches {
                    let h = parse_header(b).map_err(|e| corrupt_at(&path, pos, e))?;
                    if h.max_timestamp >= ts {
                        let ls = self.log_start_offset();
                        return Ok(Some((h.base_offset.max(ls), h.max_timestamp)));
                    }
                    pos += h.total_len as u64;
                }
            }
        }
        Ok(None)
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
            sync_counted(&self.shared, &f, "fdatasync").await?;
        }
        Ok(())
    }

    /// Delete closed segments past `retention.ms` (by their largest timestamp) or beyond
    /// `retention.bytes`, oldest first (Kafka's rules). Returns how many were deleted.
    /// When every closed segment is gone and the active one has expired too, it is rolled
    /// (once its writes are done), sealed and deleted as well.
    pub async fn enforce_retention(&self, now_ms: i64) -> Result<usize> {
        let (n, rolled) = self.retention_pass(now_ms).await?;
        if !rolled {
            return Ok(n);
        }
        // The expired active segment was rolled: once sealed, it can go too.
        wait_idle(&self.shared).await?;
        Ok(n + self.retention_pass(now_ms).await?.0)
    }

    async fn retention_pass(&self, now_ms: i64) -> Result<(usize, bool)> {
        let mut rolled = false;
        let doomed: Vec<i64> = {
            let mut st = self.shared.state.borrow_mut();
            let cfg = st.config.clone();
            let mut doomed = Vec::new();
            let closed: Vec<(i64, u64, i64, i64)> = st
                .segments
                .values()
                .filter(|s| s.sealed)
                .map(|s| (s.base, s.size, if s.max_ts >= 0 { s.max_ts } else { s.created_ms }, s.next_offset))
                .collect();
            let mut size_excess = if cfg.retention_bytes >= 0 {
                st.total_size() as i64 - cfg.retention_bytes
            } else {
                i64::MIN
            };
            for (base, size, ts, _) in closed {
                let by_time = cfg.retention_ms >= 0 && now_ms.saturating_sub(ts) > cfg.retention_ms;
                let by_size = cfg.retention_bytes >= 0 && size_excess - size as i64 >= 0;
                if !(by_time || by_size) {
                    break;
                }
                if cfg.retention_bytes >= 0 {
                    size_excess -= size as i64;
                }
                doomed.push(base);
            }
            // Roll an expired active segment so it can go next time.
            let all_closed_gone = doomed.len() == st.segments.values().filter(|s| s.rolled).count();
            if all_closed_gone && cfg.retention_ms >= 0 {
                let leo = st.leo;
                if let Some(a) = st.active() {
                    let ts = if a.max_ts >= 0 { a.max_ts } else { a.created_ms };
                    if !a.is_empty() && a.size == a.logical_size && now_ms.saturating_sub(ts) > cfg.retention_ms {
                        st.roll(leo, now_ms);
                        rolled = true;
                        self.shared.work.notify(1);
                    }
                }
            }
            doomed
        };
        if !doomed.is_empty() {
            self.remove_segments(&doomed).await?;
        }
        Ok((doomed.len(), rolled))
    }

    async fn remove_segments(&self, bases: &[i64]) -> Result<()> {
        let (dir, cp) = {
            let mut st = self.shared.state.borrow_mut();
            for b in bases {
                st.segments.remove(b);
            }
            let first = st.segments.keys().next().copied().unwrap_or(st.leo);
            st.log_start = st.log_start.max(first);
            let ls = st.log_start;
            st.cache.retain_range(ls, i64::MAX);
            (st.dir.clone(), st.checkpoint_bytes())
        };
        let cp_path = dir.join(CHECKPOINT_FILE);
        fio::replace_file(&dir, &cp_path, cp).await.map_err(io_err(format!("writing {}", cp_path.display())))?;
        for &b in bases {
            remove_segment_files(&dir, b).await?;
        }
        Ok(())
    }

    /// DeleteRecords: move the log start offset up to `before_offset` (at most the
    /// written end), persist it, and delete closed segments wholly below it. Returns the
    /// new log start offset.
    pub async fn delete_records(&self, before_offset: i64) -> Result<i64> {
        let (doomed, cp, dir) = {
            let mut st = self.shared.state.borrow_mut();
            if before_offset > st.written_end || before_offset < 0 {
                return Err(LogError::OffsetOutOfRange {
                    requested: before_offset,
                    log_start: st.log_start,
                    log_end: st.written_end,
                });
            }
            if before_offset <= st.log_start {
                return Ok(st.log_start);
            }
            st.log_start = before_offset;
            let ls = st.log_start;
            st.cache.retain_range(ls, i64::MAX);
            let doomed: Vec<i64> = st
                .segments
                .values()
                .filter(|s| s.sealed && s.next_offset <= before_offset)
                .map(|s| s.base)
                .collect();
            (doomed, st.checkpoint_bytes(), st.dir.clone())
        };
        let cp_path = dir.join(CHECKPOINT_FILE);
        fio::replace_file(&dir, &cp_path, cp).await.map_err(io_err(format!("writing {}", cp_path.display())))?;
        if !doomed.is_empty() {
            self.remove_segments(&doomed).await?;
        }
        Ok(self.log_start_offset())
    }

    /// Truncate the log so that its end offset becomes `offset` (replication followers):
    /// batches at or above `offset` are removed; the batch containing `offset` is
    /// removed entirely (the end offset becomes its base). Waits for in-flight writes;
    /// the caller must not append while it runs.
    /// Returns the new log end offset.
    pub async fn truncate_to(&self, offset: i64) -> Result<i64> {
        wait_idle(&self.shared).await?;
        let (ls, leo) = {
            let st = self.shared.state.borrow();
            (st.log_start, st.leo)
        };
        if offset >= leo {
            return Ok(leo);
        }
        if offset < ls {
            return Err(LogError::OffsetOutOfRange { requested: offset, log_start: ls, log_end: leo });
        }
        // Segments wholly at/above offset go; the one containing it is cut.
        let (drop_bases, keep) = {
            let st = self.shared.state.borrow();
            let drop: Vec<i64> = st.segments.keys().copied().filter(|&b| b >= offset && b > ls).collect();
            let keep = st.segments.range(..offset).next_back().map(|(b, s)| (*b, s.file.clone(), s.path.clone(), s.size));
            (drop, keep)
        };
        // Find the cut position in the kept segment.
        let mut cut = None;
        if let Some((base, Some(file), path, size)) = keep.clone() {
            let start = self.shared.state.borrow().segments.get(&base).map(|s| s.index.lookup(offset).1 as u64).unwrap_or(0);
            let mut pos = start;
            let mut found = None;
            while pos < size && found.is_none() {
                let batches = read_segment(&file, &path, pos, size, i64::MIN, 1 << 20, true).await?;
                if batches.is_empty() {
                    break;
                }
                for b in &batches {
                    let h = parse_header(b).map_err(|e| corrupt_at(&path, pos, e))?;
                    if h.last_offset() >= offset {
                        found = Some((pos, h.base_offset));
                        break;
                    }
                    pos += h.total_len as u64;
                }
            }
            cut = Some((base, file, path, found.map(|f| f.0).unwrap_or(size), found.map(|f| f.1)));
        }
        // Rebuild the kept segment's state by rescanning it up to the cut.
        let dir = self.dir();
        for b in &drop_bases {
            self.shared.state.borrow_mut().segments.remove(b);
            remove_segment_files(&dir, *b).await?;
        }
        let now = self.shared.state.borrow().now();
        let interval = self.shared.state.borrow().config.index_interval_bytes as u64;
        let mut new_leo = offset;
        if let Some((base, file, path, cut_pos, cut_base)) = cut {
            fio::set_len(&file, cut_pos).await.map_err(io_err(format!("truncating {}", path.display())))?;
            let mut seg = Segment::new(&dir, base, now);
            let out = segment::scan(&file, 0, cut_pos, base, |p, h| seg.on_batch(h, p, interval))
                .await
                .map_err(io_err(format!("reading {}", path.display())))?;
            seg.size = out.valid_end;
            seg.logical_size = out.valid_end;
            seg.allocated = out.valid_end;
            seg.next_offset = out.next_offset.max(base);
            seg.file = Some(file.clone());
            // The batch containing `offset` goes whole; a cut inside a gap keeps `offset`.
            new_leo = cut_base.map_or(offset, |b| b.min(offset)).max(seg.next_offset);
            let tail_pos = align_down(seg.size);
            let tail = (seg.size - tail_pos) as usize;
            let page = fio::read_aligned(&file, tail_pos, ALIGN).await.map_err(io_err(format!("reading {}", path.display())))?;
            let mut st = self.shared.state.borrow_mut();
            st.pending.clear();
            let mut p = Pending::new(base, tail_pos, new_leo, ALIGN);
            p.buf.extend_from_slice(&page.as_slice()[..tail.min(page.len())]);
            st.pending.push_back(p);
            st.segments.insert(base, seg);
        } else {
            let mut st = self.shared.state.borrow_mut();
            st.pending.clear();
            st.segments.insert(offset, Segment::new(&dir, offset, now));
            st.pending.push_back(Pending::new(offset, 0, offset, ALIGN));
        }
        let mut st = self.shared.state.borrow_mut();
        st.leo = new_leo;
        st.written_end = new_leo;
        st.cache.retain_range(i64::MIN, new_leo);
        Ok(new_leo)
    }

    async fn stop_writer(&self, seal_active: bool) {
        {
            let mut st = self.shared.state.borrow_mut();
            st.closing = true;
            if seal_active {
                if let Some(seg) = st.active_mut() {
                    seg.finish_time_index();
                }
                if let Some(p) = st.pending.back_mut() {
                    p.seal = true;
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
    /// Calling it again is harmless.
    pub async fn shutdown(&self) -> Result<()> {
        self.stop_writer(true).await;
        // A concurrent second caller finds the handle taken: wait for the writer anyway.
        let _ = wait_until(&self.shared, |st| st.writer_done).await;
        let (dir, failed) = {
            let st = self.shared.state.borrow();
            (st.dir.clone(), st.failed.clone())
        };
        if let Some((_, reason)) = failed {
            return Err(LogError::Offline { dir, reason });
        }
        // Everything is synced, trimmed and indexed: the next open may skip the scan.
        let marker = dir.join(CLEAN_SHUTDOWN_FILE);
        fio::write_small_file(&marker, Vec::new())
            .await
            .map_err(io_err(format!("writing {}", marker.display())))?;
        fio::sync_dir(&dir).await.map_err(io_err(format!("syncing {}", dir.display())))?;
        Ok(())
    }

    /// Stop the log and remove its whole directory (DeleteTopics).
    pub async fn delete(self) -> Result<()> {
        self.stop_writer(false).await;
        let dir = self.dir();
        self.shared.state.borrow_mut().segments.clear();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(LogError::io(format!("listing {}", dir.display()), e)),
        };
        for e in entries {
            let e = e.map_err(io_err(format!("listing {}", dir.display())))?;
            let p = e.path();
            if p.is_dir() {
                std::fs::remove_dir_all(&p).map_err(io_err(format!("removing {}", p.display())))?;
            } else {
                fio::remove_file(&p).await.map_err(io_err(format!("removing {}", p.display())))?;
            }
        }
        compio::fs::remove_dir(&dir).await.map_err(io_err(format!("removing {}", dir.display())))?;
        Ok(())
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

fn corrupt_at(path: &Path, pos: u64, e: HeaderProblem) -> LogError {
    LogError::Corrupt { path: path.to_path_buf(), reason: format!("bad batch header at position {pos}: {e:?}") }
}

async fn remove_segment_files(dir: &Path, base: i64) -> Result<()> {
    let (l, i, t) = segment::paths(dir, base);
    for p in [l, i, t] {
        fio::remove_file(&p).await.map_err(io_err(format!("removing {}", p.display())))?;
    }
    Ok(())
}

async fn wait_written(shared: &Rc<Shared>, target: i64) -> Result<()> {
    wait_until(shared, |st| st.written_end >= target).await
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
        if let Some((_, reason)) = &st.failed {
            return Some(Err(LogError::Offline { dir: st.dir.clone(), reason: reason.clone() }));
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

/// Read whole batches from `file` between `pos` (a batch start at or before the batch
/// containing `start`) and `limit`, skipping batches that end before `start`.
async fn read_segment(
    file: &compio::fs::File,
    path: &Path,
    mut pos: u64,
    limit: u64,
    start: i64,
    max_bytes: usize,
    min_one: bool,
) -> Result<Vec<Bytes>> {
    let mut out: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    let mut win: Option<(u64, Bytes)> = None;
    let covers = |w: &Option<(u64, Bytes)>, from: u64, to: u64| {
        w.as_ref().is_some_and(|(at, b)| *at <= from && at + b.len() as u64 >= to)
    };
    while pos < limit {
        // Read ahead what is still wanted plus slack for skipping to `start`.
        let want = (max_bytes.saturating_sub(total)).clamp(HEADER_LEN, 64 << 20) + 8192;
        let header_end = (pos + HEADER_LEN as u64).min(limit);
        if !covers(&win, pos, header_end) {
            let at = align_down(pos);
            let len = want.min((limit - at) as usize) + (pos - at) as usize;
            let buf = fio::read_aligned(file, at, len).await.map_err(io_err(format!("reading {}", path.display())))?;
            win = Some((at, buf.freeze()));
        }
        let Some((at, w)) = win.clone() else { break };
        let off = (pos - at) as usize;
        if off >= w.len() {
            return Err(corrupt_at(path, pos, HeaderProblem::Bad("segment shorter than its written size".into())));
        }
        let h = parse_header(&w[off..]).map_err(|e| corrupt_at(path, pos, e))?;
        let end = pos + h.total_len as u64;
        if end > limit {
            return Err(corrupt_at(path, pos, HeaderProblem::Bad("batch extends beyond written data".into())));
        }
        if h.last_offset() < start {
            pos = end;
            continue;
        }
        if !(total + h.total_len <= max_bytes || (out.is_empty() && min_one)) {
            break;
        }
        let (at, w) = if covers(&win, pos, end) {
            (at, w)
        } else {
            let at = align_down(pos);
            let len = ((end - at) as usize).max(want.min((limit - at) as usize));
            let buf = fio::read_aligned(file, at, len).await.map_err(io_err(format!("reading {}", path.display())))?;
            let b = buf.freeze();
            win = Some((at, b.clone()));
            (at, b)
        };
        let off = (pos - at) as usize;
        if off + h.total_len > w.len() {
            return Err(corrupt_at(path, pos, HeaderProblem::Bad("segment shorter than its written size".into())));
        }
        out.push(w.slice(off..off + h.total_len));
        total += h.total_len;
        pos = end;
    }
    Ok(out)
}

async fn writer_loop(shared: Rc<Shared>) {
    loop {
        let job = shared.state.borrow_mut().take_job();
        if let Some(job) = job {
            shared.state.borrow_mut().job_in_flight = true;
            let res = run_job(&shared, job).await;
            shared.state.borrow_mut().job_in_flight = false;
            if let Err(e) = res {
                let mut st = shared.state.borrow_mut();
                st.fail(&e);
                drop(st);
                shared.written.notify(usize::MAX);
                break;
            }
            shared.written.notify(usize::MAX);
            continue;
        }
        // Idle: maybe a timed flush is due.
        let due = {
            let st = shared.state.borrow();
            if st.closing && !st.has_job() {
                break;
            }
            match (st.dirty_since, st.config.flush_ms) {
                (Some(t), ms) if ms != i64::MAX => {
                    let due = t + Duration::from_millis(ms.max(0) as u64);
                    Some(due.saturating_duration_since(Instant::now()))
                }
                _ => None,
            }
        };
        if due == Some(Duration::ZERO) {
            if let Err(e) = timed_sync(&shared).await {
                shared.state.borrow_mut().fail(&e);
                shared.written.notify(usize::MAX);
                break;
            }
            continue;
        }
        let l = shared.work.listen();
        {
            let st = shared.state.borrow();
            if st.has_job() || st.closing {
                continue;
            }
        }
        match due {
            Some(d) => {
                let _ = compio::time::timeout(d, l).await;
            }
            None => l.await,
        }
    }
    shared.state.borrow_mut().writer_done = true;
    shared.written.notify(usize::MAX);
}

/// fdatasync `file`, then count the call and its time and mark everything synced.
async fn sync_counted(shared: &Shared, file: &compio::fs::File, what: impl Into<String>) -> Result<()> {
    let started = Instant::now();
    fio::sync_data(file).await.map_err(io_err(what))?;
    let mut st = shared.state.borrow_mut();
    st.stats.syncs += 1;
    st.stats.sync_nanos += started.elapsed().as_nanos() as u64;
    st.unsynced_messages = 0;
    st.dirty_since = None;
    Ok(())
}

async fn timed_sync(shared: &Rc<Shared>) -> Result<()> {
    let file = shared.state.borrow().active().and_then(|s| s.file.clone());
    match file {
        Some(f) => sync_counted(shared, &f, "fdatasync (flush.ms)").await,
        None => {
            let mut st = shared.state.borrow_mut();
            st.unsynced_messages = 0;
            st.dirty_since = None;
            Ok(())
        }
    }
}

async fn run_job(shared: &Rc<Shared>, job: Pending) -> Result<()> {
    // Make sure the segment file exists.
    let (file, path, dir) = {
        let st = shared.state.borrow();
        let Some(seg) = st.segments.get(&job.seg_base) else {
            return Ok(()); // deleted meanwhile (truncate_to / delete)
        };
        (seg.file.clone(), seg.path.clone(), st.dir.clone())
    };
    let file = match file {
        Some(f) => f,
        None => {
            let fallback = shared.state.borrow().config.allow_buffered_fallback;
            let (f, direct) = fio::open_data_file(&path, true, true, fallback)
                .await
                .map_err(io_err(format!("creating segment {}", path.display())))?;
            fio::sync_dir(&dir).await.map_err(io_err(format!("syncing {}", dir.display())))?;
            let mut st = shared.state.borrow_mut();
            st.direct = direct;
            if let Some(seg) = st.segments.get_mut(&job.seg_base) {
                seg.file = Some(f.clone());
            }
            f
        }
    };
    let data_len = job.buf.len();
    let end_pos = job.file_pos + data_len as u64;
    let mut buf = job.buf;
    if !job.batches.is_empty() {
        let padded = align_up(data_len) as u64;
        // Preallocate in large steps (blocking fallocate, see io.rs).
        {
            let mut st = shared.state.borrow_mut();
            let step = align_up(st.config.preallocate_bytes as usize) as u64;
            let seg_bytes = st.config.segment_bytes_clamped();
            let prealloc_ok = st.prealloc_ok;
            if let Some(seg) = st.segments.get_mut(&job.seg_base) {
                if step > 0 && prealloc_ok && seg.allocated < job.file_pos + padded {
                    let want = (job.file_pos + padded).max(seg.allocated + step);
                    let want = want.min(align_up(seg_bytes as usize) as u64).max(job.file_pos + padded);
                    let from = seg.allocated;
                    match fio::fallocate(&file, from, want - from) {
                        Ok(true) => seg.allocated = want,
                        Ok(false) => st.prealloc_ok = false,
                        Err(e) => return Err(LogError::io(format!("fallocate {}", path.display()), e)),
                    }
                }
            }
        }
        let (res, w) = fio::write_all(&file, PaddedWrite::new(buf), job.file_pos).await;
        res.map_err(io_err(format!("writing {} at {}", path.display(), job.file_pos)))?;
        buf = w.buf;
        let mut st = shared.state.borrow_mut();
        st.stats.writes += 1;
        st.stats.bytes_written += padded;
    }
    let need_sync = {
        let mut st = shared.state.borrow_mut();
        st.unsynced_messages = st.unsynced_messages.saturating_add(job.messages);
        let cfg = &st.config;
        job.seal
            || st.unsynced_messages >= cfg.flush_messages
            || cfg.flush_ms <= 0
            || (cfg.flush_ms != i64::MAX
                && st.dirty_since.is_some_and(|t| t.elapsed() >= Duration::from_millis(cfg.flush_ms as u64)))
    };
    if need_sync && (!job.batches.is_empty() || job.seal) {
        sync_counted(shared, &file, format!("fdatasync {}", path.display())).await?;
    } else if !job.batches.is_empty() {
        let mut st = shared.state.borrow_mut();
        if st.dirty_since.is_none() {
            st.dirty_since = Some(Instant::now());
        }
    }
    if job.seal {
        fio::set_len(&file, end_pos).await.map_err(io_err(format!("trimming {}", path.display())))?;
        let (oi, ti) = {
            let st = shared.state.borrow();
            match st.segments.get(&job.seg_base) {
                Some(seg) => (seg.index.bytes().to_vec(), seg.time_index.bytes().to_vec()),
                None => (Vec::new(), Vec::new()),
            }
        };
        segment::write_indexes(&dir, job.seg_base, oi, ti).await?;
        fio::sync_dir(&dir).await.map_err(io_err(format!("syncing {}", dir.display())))?;
    }
    // Publish.
    let mut st = shared.state.borrow_mut();
    if let Some(seg) = st.segments.get_mut(&job.seg_base) {
        seg.size = seg.size.max(end_pos);
        if job.seal {
            seg.sealed = true;
            seg.allocated = end_pos;
        }
    }
    if !job.batches.is_empty() {
        st.written_end = st.written_end.max(job.end_offset);
        if st.config.cache_bytes > 0 {
            let frozen = buf.freeze();
            for &(b, l, off, len) in &job.batches {
                st.cache.insert(b, l, frozen.slice(off..off + len));
            }
        } else {
            buf.recycle();
        }
    }
    Ok(())
}
