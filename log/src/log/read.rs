//! Reading: whole batches from the batch cache or with aligned reads of a segment,
//! and the timestamp lookups of ListOffsets.

use std::collections::VecDeque;
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;

use crate::batch::{parse_header, HeaderProblem, HEADER_LEN};
use crate::buf::{align_down, align_up};
use crate::cache::ReadAheadReservation;
use crate::error::{LogError, Result};
use crate::io as fio;
use crate::segment::Phase;

use super::{io_err, PartitionLog, ReadResult, Shared};

/// Read-ahead of one log, like the page cache's for a file read sequentially. It
/// follows one stream: the last reader that had to go to disk. After that read, the
/// next `read_ahead_bytes` of the segment are read in the background into a window;
/// readers that miss the batch cache are served from the windows; when a reader
/// reaches the newest window, the next read-ahead starts where it ends. So each log
/// holds at most two windows (the one being consumed and the one being read), and a
/// window goes as soon as readers are past it: read-ahead data does not push recently
/// written batches out of the cache. Window memory counts against the cache budget
/// (see `CacheHandle::reserve_read_ahead`, which also caps all windows of a shard).
///
/// It goes on into the following segments while they are sealed and stops at the data
/// still being written or already cached (readers find those batches in the cache), at
/// a batch larger than a read-ahead, on an error, and whenever the log changes under
/// it (the cache generation moved: truncation, retention, compaction).
#[derive(Debug, Default)]
pub(crate) struct ReadAhead {
    /// Where the next read-ahead starts: segment base, file position of a batch start,
    /// and that batch's base offset.
    next: Option<(i64, u64, i64)>,
    /// First offset of the read-ahead in flight.
    in_flight: Option<i64>,
    /// Bumped when a disk read restarts the stream somewhere else: a read-ahead started
    /// before then does not move `next`.
    epoch: u64,
    /// Read and not yet consumed, in offset order.
    windows: VecDeque<Window>,
}

/// Batches read ahead: `(base offset, last offset, start, len)` of each, in `buf`.
#[derive(Debug)]
struct Window {
    buf: Bytes,
    batches: Vec<(i64, i64, usize, usize)>,
    /// The cache generation it was read under.
    generation: u64,
    _memory: ReadAheadReservation,
}

impl Window {
    fn first(&self) -> i64 {
        self.batches[0].0
    }
    fn end(&self) -> i64 {
        self.batches[self.batches.len() - 1].1 + 1
    }
}

impl ReadAhead {
    /// Batches from the windows, starting with the one containing `start`, as the
    /// batch cache's `collect` would give them. Drops windows readers are past (and all
    /// of them if the log changed since they were read).
    fn serve(
        &mut self,
        generation: u64,
        start: i64,
        end: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Option<Vec<Bytes>> {
        if self.windows.iter().any(|w| w.generation != generation) {
            self.windows.clear();
            self.next = None;
            return None;
        }
        while self.windows.front().is_some_and(|w| w.end() <= start) {
            self.windows.pop_front();
        }
        let w = self.windows.front()?;
        if w.first() > start {
            return None;
        }
        let mut out = Vec::new();
        let mut total = 0usize;
        let mut next = start;
        'windows: for w in &self.windows {
            let from = w.batches.partition_point(|b| b.1 < next);
            for &(base, last, off, len) in &w.batches[from..] {
                if (base > next && !out.is_empty()) || last >= end {
                    break 'windows;
                }
                if total + len > max_bytes && !(out.is_empty() && min_one) {
                    break 'windows;
                }
                total += len;
                out.push(w.buf.slice(off..off + len));
                next = last + 1;
            }
        }
        Some(out)
    }

    /// Should a read that got up to `start` start the next read-ahead?
    fn due(&self, start: i64) -> bool {
        self.next.is_some()
            && self.in_flight.is_none()
            && self.windows.back().is_none_or(|w| start >= w.first())
    }
}

impl PartitionLog {
    /// Read whole batches starting with the one that contains `start_offset`, up to
    /// `max_bytes` (at least one batch when `min_one`). Only written batches are
    /// visible. Reading at the written end returns no batches.
    pub async fn read(
        &self,
        start_offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<ReadResult> {
        let mut waited = false;
        let mut seg_from = loop {
            let listener = {
                let mut st = self.shared.state.borrow_mut();
                let (ls, we) = (st.log_start, st.written_end);
                if start_offset < ls || start_offset > we {
                    return Err(LogError::OffsetOutOfRange {
                        requested: start_offset,
                        log_start: ls,
                        log_end: we,
                    });
                }
                let mut res = ReadResult {
                    batches: Vec::new(),
                    log_start_offset: ls,
                    high_watermark: we,
                };
                if start_offset == we {
                    return Ok(res);
                }
                if let Some(b) = st.cache.collect(start_offset, we, max_bytes, min_one) {
                    if !b.is_empty() || !min_one {
                        st.stats.cache_hits += 1;
                        res.batches = b;
                        let more = st.read_ahead.due(start_offset);
                        drop(st);
                        if more {
                            start_read_ahead(&self.shared);
                        }
                        return Ok(res);
                    }
                }
                let generation = st.cache.generation();
                if let Some(b) =
                    st.read_ahead
                        .serve(generation, start_offset, we, max_bytes, min_one)
                {
                    if !b.is_empty() || !min_one {
                        st.stats.read_ahead_hits += 1;
                        res.batches = b;
                        let more = st.read_ahead.due(start_offset);
                        drop(st);
                        if more {
                            start_read_ahead(&self.shared);
                        }
                        return Ok(res);
                    }
                }
                // A read-ahead in flight from at or before here may bring these batches:
                // wait for it (once) rather than read the same bytes twice.
                match st.read_ahead.in_flight {
                    Some(from) if !waited && from <= start_offset => {
                        self.shared.read_ahead_done.listen()
                    }
                    _ => {
                        st.stats.disk_reads += 1;
                        break st
                            .segments
                            .range(..=start_offset)
                            .next_back()
                            .map(|(b, _)| *b)
                            .unwrap_or(i64::MIN);
                    }
                }
            };
            waited = true;
            listener.await;
        };
        loop {
            // Plan under the borrow, do I/O without it.
            let plan = {
                let st = self.shared.state.borrow();
                let (ls, we) = (st.log_start, st.written_end);
                if start_offset < ls {
                    return Err(LogError::OffsetOutOfRange {
                        requested: start_offset,
                        log_start: ls,
                        log_end: we,
                    });
                }
                // Cleaned segments may be empty (compaction removed all they held).
                match st.segments.range(seg_from..).find(|(_, s)| s.size > 0) {
                    Some((&b, seg)) if b < we => {
                        let file = seg.file.clone();
                        let (_, pos) = seg.index.lookup(start_offset);
                        Some((b, file, pos as u64, seg.size, ls, we, seg.path.clone()))
                    }
                    _ => None,
                }
            };
            let Some((base, file, pos, limit, ls, we, path)) = plan else {
                let st = self.shared.state.borrow();
                return Ok(ReadResult {
                    batches: Vec::new(),
                    log_start_offset: st.log_start,
                    high_watermark: st.written_end,
                });
            };
            let Some(file) = file else {
                return Ok(ReadResult {
                    batches: Vec::new(),
                    log_start_offset: ls,
                    high_watermark: we,
                });
            };
            let (batches, end_pos) =
                read_segment(&file, &path, pos, limit, start_offset, max_bytes, min_one).await?;
            if let Some(last) = batches.last() {
                let next = parse_header(last)
                    .map_err(|e| corrupt_at(&path, end_pos, e))?
                    .last_offset()
                    + 1;
                let mut st = self.shared.state.borrow_mut();
                if st.config.read_ahead_bytes > 0 {
                    // This reader is the stream to follow now.
                    let ra = &mut st.read_ahead;
                    ra.epoch += 1;
                    ra.next = Some((base, end_pos, next));
                    ra.windows.clear();
                    drop(st);
                    start_read_ahead(&self.shared);
                }
                return Ok(ReadResult {
                    batches,
                    log_start_offset: ls,
                    high_watermark: we,
                });
            }
            seg_from = base + 1;
        }
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
                    let start = s
                        .time_index
                        .lookup(ts)
                        .map(|(_, off)| s.index.lookup(off).1)
                        .unwrap_or(0);
                    (s.file.clone(), s.path.clone(), start as u64, s.size)
                })
                .collect()
        };
        for (file, path, start, limit) in candidates {
            let Some(file) = file else { continue };
            let mut pos = start;
            while pos < limit {
                let (batches, _) =
                    read_segment(&file, &path, pos, limit, i64::MIN, 1 << 20, true).await?;
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
}

pub(super) fn corrupt_at(path: &Path, pos: u64, e: HeaderProblem) -> LogError {
    LogError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("bad batch header at position {pos}: {e:?}"),
    }
}
pub(super) async fn read_segment(
    file: &compio::fs::File,
    path: &Path,
    mut pos: u64,
    limit: u64,
    start: i64,
    max_bytes: usize,
    min_one: bool,
) -> Result<(Vec<Bytes>, u64)> {
    let mut out: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    let mut win: Option<(u64, Bytes)> = None;
    let covers = |w: &Option<(u64, Bytes)>, from: u64, to: u64| {
        w.as_ref()
            .is_some_and(|(at, b)| *at <= from && at + b.len() as u64 >= to)
    };
    while pos < limit {
        // Read ahead what is still wanted plus slack for skipping to `start`.
        let want = (max_bytes.saturating_sub(total)).clamp(HEADER_LEN, 64 << 20) + 8192;
        let header_end = (pos + HEADER_LEN as u64).min(limit);
        if !covers(&win, pos, header_end) {
            let at = align_down(pos);
            let len = want.min((limit - at) as usize) + (pos - at) as usize;
            let buf = fio::read_aligned(file, at, len)
                .await
                .map_err(io_err(format!("reading {}", path.display())))?;
            win = Some((at, buf.freeze()));
        }
        let Some((at, w)) = win.clone() else { break };
        let off = (pos - at) as usize;
        if off >= w.len() {
            return Err(corrupt_at(
                path,
                pos,
                HeaderProblem::Bad("segment shorter than its written size".into()),
            ));
        }
        let h = parse_header(&w[off..]).map_err(|e| corrupt_at(path, pos, e))?;
        let end = pos + h.total_len as u64;
        if end > limit {
            return Err(corrupt_at(
                path,
                pos,
                HeaderProblem::Bad("batch extends beyond written data".into()),
            ));
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
            let buf = fio::read_aligned(file, at, len)
                .await
                .map_err(io_err(format!("reading {}", path.display())))?;
            let b = buf.freeze();
            win = Some((at, b.clone()));
            (at, b)
        };
        let off = (pos - at) as usize;
        if off + h.total_len > w.len() {
            return Err(corrupt_at(
                path,
                pos,
                HeaderProblem::Bad("segment shorter than its written size".into()),
            ));
        }
        out.push(w.slice(off..off + h.total_len));
        total += h.total_len;
        pos = end;
    }
    Ok((out, pos))
}

/// Start the next read-ahead of the log, if it has one to do and none is in flight
/// (see [`ReadAhead`]). The read runs as a task of its own; its window is kept if the
/// log did not change meanwhile.
pub(super) fn start_read_ahead(shared: &Rc<Shared>) {
    let mut st = shared.state.borrow_mut();
    let step = align_up(st.config.read_ahead_bytes);
    if step == 0 || st.read_ahead.in_flight.is_some() || st.closing {
        return;
    }
    let Some((mut base, mut pos, mut offset)) = st.read_ahead.next else {
        return;
    };
    // Past a segment's written data: on to the next one only if this one is sealed
    // (a segment still written to is the writer's, and its batches are cached).
    loop {
        match st.segments.get(&base) {
            Some(seg) if pos < seg.size => break,
            Some(seg) if seg.phase == Phase::Sealed => match st.segments.range(base + 1..).next() {
                Some((&b, _)) => (base, pos, offset) = (b, 0, b),
                None => {
                    st.read_ahead.next = None;
                    return;
                }
            },
            _ => {
                st.read_ahead.next = None;
                return;
            }
        }
    }
    // Already cached (the recently written data is): readers find it there, and a
    // later miss starts the stream again.
    if st.cache.contains(offset) {
        st.read_ahead.next = None;
        return;
    }
    let seg = &st.segments[&base];
    let Some(file) = seg.file.clone() else {
        st.read_ahead.next = None;
        return;
    };
    let limit = seg.size;
    let at = align_down(pos);
    let len = step.min(align_up((limit - at) as usize));
    // Over the shard's allowance: skip; the next read of this log tries again.
    let Some(memory) = st.cache.reserve_read_ahead(len) else {
        return;
    };
    let generation = st.cache.generation();
    let epoch = st.read_ahead.epoch;
    st.read_ahead.next = Some((base, pos, offset));
    st.read_ahead.in_flight = Some(offset);
    drop(st);
    let shared = shared.clone();
    compio::runtime::spawn(async move {
        let res = fio::read_aligned(&file, at, len).await;
        let mut st = shared.state.borrow_mut();
        st.read_ahead.in_flight = None;
        let current = st.read_ahead.epoch == epoch;
        let mut window = None;
        if let Ok(buf) = res {
            let fresh = st.cache.generation() == generation && !st.closing;
            let buf = buf.freeze();
            let end = ((limit - at) as usize).min(buf.len());
            let mut p = (pos - at) as usize;
            let mut batches = Vec::new();
            while fresh && current && p + HEADER_LEN <= end {
                let Ok(h) = parse_header(&buf[p..]) else {
                    break;
                };
                if p + h.total_len > end {
                    break;
                }
                batches.push((h.base_offset, h.last_offset(), p, h.total_len));
                p += h.total_len;
            }
            if !batches.is_empty() {
                window = Some((
                    at + p as u64,
                    Window {
                        buf,
                        batches,
                        generation,
                        _memory: memory,
                    },
                ));
            }
        }
        if current {
            match window {
                Some((end_pos, w)) => {
                    st.stats.read_aheads += 1;
                    st.stats.bytes_read_ahead += w.batches.iter().map(|b| b.3 as u64).sum::<u64>();
                    st.read_ahead.next = Some((base, end_pos, w.end()));
                    st.read_ahead.windows.push_back(w);
                }
                None => st.read_ahead.next = None,
            }
        }
        // A newer stream started while this one was in flight: it goes next.
        let restart = !current && st.read_ahead.next.is_some();
        drop(st);
        shared.read_ahead_done.notify(usize::MAX);
        if restart {
            start_read_ahead(&shared);
        }
    })
    .detach();
}
