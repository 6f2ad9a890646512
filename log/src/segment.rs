//! One segment: a data file of concatenated batches plus its two indexes.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use compio::fs::File;

use crate::batch::{crc_ok, parse_header, BatchHeader, HeaderProblem, HEADER_LEN};
use crate::buf::{align_down, align_up};
use crate::error::{LogError, Result};
use crate::index::{OffsetIndex, TimeIndex};
use crate::io as fio;

/// File name stem of a segment: its base offset in 20 digits.
pub fn file_stem(base: i64) -> String {
    format!("{base:020}")
}

/// Paths of a segment's three files.
pub fn paths(dir: &Path, base: i64) -> (PathBuf, PathBuf, PathBuf) {
    paths_with_suffix(dir, base, "")
}

/// Paths of a segment's three files with `suffix` appended to each name (the cleaner's
/// `.cleaned` files, see `clean::swap`).
pub fn paths_with_suffix(dir: &Path, base: i64, suffix: &str) -> (PathBuf, PathBuf, PathBuf) {
    let stem = file_stem(base);
    (
        dir.join(format!("{stem}.log{suffix}")),
        dir.join(format!("{stem}.index{suffix}")),
        dir.join(format!("{stem}.timeindex{suffix}")),
    )
}

/// Where a closed segment's batches must end, checked when it is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndCheck {
    /// The last segment: nothing to check.
    None,
    /// Exactly at the next segment's base: a gap means written batches are gone.
    Exact(i64),
    /// At or below the next segment's base: a cleaned segment, whose last batches may
    /// have been compacted away.
    AtMost(i64),
}

/// In-memory state of one segment.
#[derive(Debug)]
pub struct Segment {
    pub base: i64,
    pub path: PathBuf,
    /// Opened data file (`None` until the writer creates it).
    pub file: Option<File>,
    /// Bytes durably written (what readers may see).
    pub size: u64,
    /// Bytes appended, including those still waiting in the write buffer.
    pub logical_size: u64,
    /// Offset after the last appended batch (== base while empty).
    pub next_offset: i64,
    pub index: OffsetIndex,
    pub time_index: TimeIndex,
    /// Largest batch max timestamp and the base offset of its first batch (-1 if none).
    pub max_ts: i64,
    pub max_ts_offset: i64,
    /// Max timestamp of the first batch (segment.ms roll), else creation time.
    pub roll_ts: Option<i64>,
    pub created_ms: i64,
    /// Bytes appended since the last index entry.
    pub bytes_since_index: u64,
    /// Where the segment is in its life (see [`Phase`]).
    pub phase: Phase,
    /// The appended state as of the last completed write: what a failed write rolls
    /// the segment back to.
    pub durable: Mark,
    /// Bytes reserved by fallocate (the file length while active).
    pub allocated: u64,
    /// End of the space zero-filled ahead of the data (a hint: data may have been
    /// written past it since).
    pub filled_to: u64,
}

/// The life of a segment: `Active` (the last segment; takes appends) → `Rolled` (a
/// newer segment took over; the writer still owes it its last write and its seal) →
/// `Sealed` (synced, trimmed to its exact size, index files written; immutable, the
/// only phase in which it may be deleted). A failed write returns a `Rolled` segment
/// to `Active` (its unwritten tail is discarded and a newer empty segment removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Takes appends.
    Active,
    /// Closed to appends; its final write and seal are pending.
    Rolled,
    /// Durable, exactly sized, indexed.
    Sealed,
}

/// The appended state of a segment at one point: taken after the batches of a write
/// are appended, made the segment's `durable` mark when that write completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub size: u64,
    pub next_offset: i64,
    pub max_ts: i64,
    pub max_ts_offset: i64,
    pub roll_ts: Option<i64>,
    pub bytes_since_index: u64,
}

impl Segment {
    pub fn new(dir: &Path, base: i64, now_ms: i64) -> Segment {
        Segment {
            base,
            path: paths(dir, base).0,
            file: None,
            size: 0,
            logical_size: 0,
            next_offset: base,
            index: OffsetIndex::new(base),
            time_index: TimeIndex::new(base),
            max_ts: -1,
            max_ts_offset: base,
            roll_ts: None,
            created_ms: now_ms,
            bytes_since_index: 0,
            phase: Phase::Active,
            durable: Mark {
                size: 0,
                next_offset: base,
                max_ts: -1,
                max_ts_offset: base,
                roll_ts: None,
                bytes_since_index: 0,
            },
            allocated: 0,
            filled_to: 0,
        }
    }

    /// The appended state now.
    pub fn mark(&self) -> Mark {
        Mark {
            size: self.logical_size,
            next_offset: self.next_offset,
            max_ts: self.max_ts,
            max_ts_offset: self.max_ts_offset,
            roll_ts: self.roll_ts,
            bytes_since_index: self.bytes_since_index,
        }
    }

    /// Forget everything appended after the durable mark (a failed write): the
    /// segment becomes `Active` again with the state of its last completed write.
    pub fn roll_back_to_durable(&mut self) {
        assert_ne!(
            self.phase,
            Phase::Sealed,
            "a sealed segment has nothing unwritten"
        );
        let m = self.durable;
        assert!(
            m.size <= self.logical_size && m.size == self.size,
            "durable mark {m:?} beyond the segment ({} appended, {} written)",
            self.logical_size,
            self.size
        );
        self.logical_size = m.size;
        self.next_offset = m.next_offset;
        self.max_ts = m.max_ts;
        self.max_ts_offset = m.max_ts_offset;
        self.roll_ts = m.roll_ts;
        self.bytes_since_index = m.bytes_since_index;
        self.index
            .truncate_to_position(m.size.min(u32::MAX as u64) as u32);
        self.time_index.truncate_to_offset(m.next_offset);
        self.phase = Phase::Active;
    }

    /// Mark the segment loaded from disk (everything in it is durable) in `phase`.
    pub(crate) fn loaded(&mut self, size: u64, phase: Phase) {
        self.size = size;
        self.logical_size = size;
        self.allocated = size;
        self.phase = phase;
        self.durable = self.mark();
    }

    /// Closed to appends (rolled or sealed).
    pub fn is_closed(&self) -> bool {
        self.phase != Phase::Active
    }

    /// Account for one appended batch at `position` (bytes from segment start).
    pub fn on_batch(&mut self, h: &BatchHeader, position: u64, index_interval: u64) {
        if h.max_timestamp > self.max_ts {
            self.max_ts = h.max_timestamp;
            self.max_ts_offset = h.base_offset;
        }
        if self.roll_ts.is_none() && h.max_timestamp >= 0 {
            self.roll_ts = Some(h.max_timestamp);
        }
        if self.bytes_since_index > index_interval {
            self.index.append(h.base_offset, position as u32);
            if self.max_ts >= 0 {
                self.time_index
                    .maybe_append(self.max_ts, self.max_ts_offset);
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += h.total_len as u64;
        self.next_offset = h.last_offset() + 1;
        self.logical_size = position + h.total_len as u64;
    }

    /// Final time index entry so that its last entry is the segment's max timestamp.
    pub fn finish_time_index(&mut self) {
        if self.max_ts >= 0 {
            self.time_index
                .maybe_append(self.max_ts, self.max_ts_offset);
        }
    }

    /// Is the segment empty (no batch appended)?
    pub fn is_empty(&self) -> bool {
        self.logical_size == 0
    }
}

/// Why a scan stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Reached exactly the end of the scanned range.
    End,
    /// Hit never-written (zero) space.
    Zero,
    /// A batch extends past the end of the file.
    Torn,
    /// A batch failed a check.
    Corrupt(String),
}

/// Result of scanning batches.
#[derive(Debug)]
pub struct ScanOutcome {
    pub valid_end: u64,
    pub next_offset: i64,
    pub stop: Stop,
    pub batches: usize,
}

const SCAN_CHUNK: usize = 1 << 20;

/// Walk the batches of `file` from `start` up to `file_len`, verifying length, magic,
/// CRC32C and increasing offsets (every base offset >= `min_offset`). Calls `on` for
/// each good batch with its position.
pub async fn scan(
    file: &File,
    start: u64,
    file_len: u64,
    mut min_offset: i64,
    mut on: impl FnMut(u64, &BatchHeader),
) -> io::Result<ScanOutcome> {
    let mut pos = start;
    let mut window: Option<(u64, Bytes)> = None;
    let mut count = 0usize;
    let stop = loop {
        if pos >= file_len {
            break Stop::End;
        }
        let header_end = (pos + HEADER_LEN as u64).min(file_len);
        let covered = |w: &Option<(u64, Bytes)>, end: u64| {
            w.as_ref()
                .is_some_and(|(wp, b)| *wp <= pos && wp + b.len() as u64 >= end)
        };
        if !covered(&window, header_end) {
            let at = align_down(pos);
            let len = align_up(SCAN_CHUNK.min((file_len - at) as usize));
            let buf = fio::read_aligned(file, at, len).await?;
            window = Some((at, buf.freeze()));
        }
        let (wp, w) = match &window {
            Some((wp, w)) => (*wp, w.clone()),
            None => break Stop::Torn,
        };
        let off = (pos - wp) as usize;
        let avail = &w[off.min(w.len())..];
        let h = match parse_header(avail) {
            Ok(h) => h,
            Err(HeaderProblem::Zero) => break Stop::Zero,
            Err(HeaderProblem::Short) => {
                if avail.iter().all(|&b| b == 0) {
                    break Stop::Zero;
                }
                break Stop::Torn;
            }
            Err(HeaderProblem::Bad(s)) => break Stop::Corrupt(format!("at position {pos}: {s}")),
        };
        if h.base_offset < min_offset {
            break Stop::Corrupt(format!(
                "at position {pos}: base offset {} below expected {min_offset}",
                h.base_offset
            ));
        }
        let end = pos + h.total_len as u64;
        if end > file_len {
            break Stop::Torn;
        }
        let batch = if covered(&window, end) {
            w.slice(off..off + h.total_len)
        } else {
            let at = align_down(pos);
            let len = align_up(((end - at) as usize).max(SCAN_CHUNK.min((file_len - at) as usize)));
            let buf = fio::read_aligned(file, at, len).await?;
            let b = buf.freeze();
            window = Some((at, b.clone()));
            let o = (pos - at) as usize;
            if b.len() < o + h.total_len {
                break Stop::Torn;
            }
            b.slice(o..o + h.total_len)
        };
        if !crc_ok(&batch, &h) {
            break Stop::Corrupt(format!("at position {pos}: CRC mismatch"));
        }
        on(pos, &h);
        count += 1;
        min_offset = h.last_offset() + 1;
        pos = end;
    };
    Ok(ScanOutcome {
        valid_end: pos,
        next_offset: min_offset,
        stop,
        batches: count,
    })
}

fn map_file(path: &Path) -> io::Result<Option<memmap2::Mmap>> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if f.metadata()?.len() == 0 {
        return Ok(None);
    }
    // SAFETY: index files are only written by this log (whole-file replace on seal,
    // never modified while mapped).
    Ok(Some(unsafe { memmap2::Mmap::map(&f)? }))
}

/// Write a segment's two index files.
pub async fn write_indexes(
    dir: &Path,
    base: i64,
    offset_idx: Vec<u8>,
    time_idx: Vec<u8>,
) -> Result<()> {
    let (_, ip, tp) = paths(dir, base);
    write_index_files(&ip, &tp, offset_idx, time_idx).await
}

async fn write_index_files(
    ip: &Path,
    tp: &Path,
    offset_idx: Vec<u8>,
    time_idx: Vec<u8>,
) -> Result<()> {
    fio::write_small_file(ip, offset_idx)
        .await
        .map_err(|e| LogError::io(format!("writing {}", ip.display()), e))?;
    fio::write_small_file(tp, time_idx)
        .await
        .map_err(|e| LogError::io(format!("writing {}", tp.display()), e))?;
    Ok(())
}

fn rebuild_into(seg: &mut Segment, interval: u64) -> impl FnMut(u64, &BatchHeader) + '_ {
    move |pos, h| seg.on_batch(h, pos, interval)
}

/// Load a closed (not last) segment: sanity-check its indexes, verify the batches after
/// the last index entry, and rebuild the indexes by a full scan if either check fails.
/// A closed segment with a bad batch is reported as [`LogError::Corrupt`].
/// `end` says where its batches must end relative to the next segment's base (checked
/// before anything is repaired, so a damaged segment is left as found).
pub async fn load_closed(
    dir: &Path,
    base: i64,
    end: EndCheck,
    interval: u64,
    allow_fallback: bool,
    now_ms: i64,
) -> Result<Segment> {
    let files = paths(dir, base);
    Ok(
        load_trusted(dir, &files, base, end, interval, allow_fallback, now_ms)
            .await?
            .0,
    )
}

/// Load a sealed segment from `files` (data, offset index, time index), e.g. the
/// cleaner's `.cleaned` files before they are swapped in. The segment's `path` is
/// `files.0`; after a rename the caller updates it (open files follow the rename).
pub async fn load_sealed_files(
    dir: &Path,
    files: &(PathBuf, PathBuf, PathBuf),
    base: i64,
    end: EndCheck,
    interval: u64,
    allow_fallback: bool,
    now_ms: i64,
) -> Result<Segment> {
    Ok(
        load_trusted(dir, files, base, end, interval, allow_fallback, now_ms)
            .await?
            .0,
    )
}

/// [`load_closed`], also returning whether the file is open with O_DIRECT.
async fn load_trusted(
    dir: &Path,
    files: &(PathBuf, PathBuf, PathBuf),
    base: i64,
    end: EndCheck,
    interval: u64,
    allow_fallback: bool,
    now_ms: i64,
) -> Result<(Segment, bool)> {
    let (lp, ip, tp) = files.clone();
    let ctx = |what: &str, p: &Path| format!("{what} {}", p.display());
    let (file, direct) = fio::open_data_file(&lp, false, true, allow_fallback)
        .await
        .map_err(|e| LogError::io(ctx("opening segment", &lp), e))?;
    let file_len = fio::file_len(&file)
        .await
        .map_err(|e| LogError::io(ctx("stat", &lp), e))?;
    let mut seg = Segment::new(dir, base, now_ms);
    seg.path = lp.clone();
    seg.created_ms = std::fs::metadata(&lp)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or(now_ms);

    // Try the existing indexes first.
    let mut trusted = None;
    let oi = map_file(&ip).map_err(|e| LogError::io(ctx("mapping", &ip), e))?;
    let ti = map_file(&tp).map_err(|e| LogError::io(ctx("mapping", &tp), e))?;
    // Both indexes must be present and sane; otherwise (including a missing time index,
    // which would understate the segment's max timestamp and let retention delete it
    // early) rebuild them from the data. Small segments have no entries and are rescanned.
    let loaded = match (oi, ti) {
        (Some(o), Some(t)) if file_len > 0 => {
            match (
                OffsetIndex::from_map(base, o, file_len),
                TimeIndex::from_map(base, t),
            ) {
                (Ok(o), Ok(t)) => Some((o, t)),
                (Err(r), _) | (_, Err(r)) => {
                    tracing::warn!(segment = %lp.display(), reason = %r, "index failed sanity check; rebuilding");
                    None
                }
            }
        }
        _ => None,
    };
    if let Some((oidx, tidx)) = loaded {
        let (start_off, start_pos) = oidx.lookup(i64::MAX);
        let mut tail_max = (-1i64, base);
        let out = scan(&file, start_pos as u64, file_len, start_off, |_, h| {
            if h.max_timestamp > tail_max.0 {
                tail_max = (h.max_timestamp, h.base_offset);
            }
        })
        .await
        .map_err(|e| LogError::io(ctx("reading", &lp), e))?;
        if out.stop == Stop::Zero {
            expect_zeros_to_end(&file, &lp, out.valid_end, file_len).await?;
        }
        let ok = matches!(out.stop, Stop::End | Stop::Zero) && (out.batches > 0 || start_pos == 0);
        if ok {
            trusted = Some((oidx, tidx, out, tail_max));
        } else {
            tracing::warn!(segment = %lp.display(), stop = ?out.stop, "segment tail does not match its index; full scan");
        }
    }
    let valid_end;
    match trusted {
        Some((oidx, tidx, out, tail_max)) => {
            if let Some((ts, off)) = tidx.last() {
                seg.max_ts = ts;
                seg.max_ts_offset = off;
            }
            if tail_max.0 > seg.max_ts {
                seg.max_ts = tail_max.0;
                seg.max_ts_offset = tail_max.1;
            }
            seg.index = oidx;
            seg.time_index = tidx;
            seg.next_offset = out.next_offset;
            valid_end = out.valid_end;
            expect_end_offset(&lp, seg.next_offset, end)?;
        }
        None => {
            let out = scan(&file, 0, file_len, base, rebuild_into(&mut seg, interval))
                .await
                .map_err(|e| LogError::io(ctx("reading", &lp), e))?;
            match out.stop {
                Stop::End => {}
                Stop::Zero => expect_zeros_to_end(&file, &lp, out.valid_end, file_len).await?,
                Stop::Torn => {
                    return Err(LogError::Corrupt {
                        path: lp,
                        reason: format!(
                            "closed segment ends in a partial batch at position {}",
                            out.valid_end
                        ),
                    })
                }
                Stop::Corrupt(r) => {
                    return Err(LogError::Corrupt {
                        path: lp,
                        reason: r,
                    })
                }
            }
            seg.finish_time_index();
            valid_end = out.valid_end;
            expect_end_offset(&lp, seg.next_offset, end)?;
            write_index_files(
                &ip,
                &tp,
                seg.index.bytes().to_vec(),
                seg.time_index.bytes().to_vec(),
            )
            .await?;
        }
    }
    if valid_end < file_len {
        // Preallocated zeros left by a crash between the last write and the trim.
        fio::set_len(&file, valid_end)
            .await
            .map_err(|e| LogError::io(ctx("truncating", &lp), e))?;
    }
    seg.file = Some(file);
    seg.loaded(valid_end, Phase::Sealed);
    Ok((seg, direct))
}

/// A closed segment's batches end where the next segment begins: a gap means batches
/// that were written are gone. A cleaned segment may end earlier (its last batches
/// were compacted away), never later.
fn expect_end_offset(path: &Path, end: i64, check: EndCheck) -> Result<()> {
    let bad = match check {
        EndCheck::None => None,
        EndCheck::Exact(next) if next != end => Some(next),
        EndCheck::AtMost(next) if end > next => Some(next),
        _ => None,
    };
    match bad {
        Some(next) => {
            let what = if next < end {
                "overlaps the next segment"
            } else {
                "leaves an offset gap before the next segment"
            };
            Err(LogError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("its batches end at offset {end}, which {what} (base {next})"),
            })
        }
        _ => Ok(()),
    }
}

/// A closed segment may end in zeros only where a crash came between its last write
/// and its trim (preallocated, never-written space up to the end of the file). A
/// zeroed batch header followed by anything else is damage to data that was durable:
/// report it rather than truncate acknowledged batches away.
async fn expect_zeros_to_end(file: &File, path: &Path, from: u64, file_len: u64) -> Result<()> {
    let mut pos = align_down(from);
    while pos < file_len {
        let len = SCAN_CHUNK.min((file_len - pos) as usize);
        let buf = fio::read_aligned(file, pos, len)
            .await
            .map_err(|e| LogError::io(format!("reading {}", path.display()), e))?;
        if buf.is_empty() {
            break;
        }
        let skip = from.saturating_sub(pos) as usize;
        if let Some(i) = buf.as_slice().iter().skip(skip).position(|&b| b != 0) {
            return Err(LogError::Corrupt {
                path: path.to_path_buf(),
                reason: format!(
                    "zeroed batch header at position {from} followed by data at position {} in a closed segment",
                    pos + (skip + i) as u64
                ),
            });
        }
        pos += buf.len() as u64;
    }
    Ok(())
}

/// The active segment as loaded at open.
#[derive(Debug)]
pub struct LoadedActive {
    pub seg: Segment,
    /// The data file is open with O_DIRECT.
    pub direct: bool,
    /// `(epoch, base offset)` of every batch of the recovery scan whose leader epoch
    /// (>= 0) differs from the batch before it, in order (empty without a scan). Only
    /// these can change the epoch cache: the others repeat their predecessor's epoch
    /// at a higher offset.
    pub epochs: Vec<(i32, i64)>,
}

/// Load the last segment after a clean shutdown: trust it like a closed segment
/// (index sanity check and tail verification), then make it appendable again.
/// Falls back to [`load_active`]'s full scan if that fails, except on corruption: the
/// segment was sealed at close, so damage in it is damage to synced data.
pub async fn load_active_clean(
    dir: &Path,
    base: i64,
    interval: u64,
    allow_fallback: bool,
    now_ms: i64,
) -> Result<LoadedActive> {
    let files = paths(dir, base);
    let (mut seg, direct) = match load_trusted(
        dir,
        &files,
        base,
        EndCheck::None,
        interval,
        allow_fallback,
        now_ms,
    )
    .await
    {
        Ok(s) => s,
        // Sealed at close: damage inside it is damage to synced data, not a torn write.
        Err(e @ LogError::Corrupt { .. }) => return Err(e),
        Err(e) => {
            tracing::warn!(segment = %paths(dir, base).0.display(), error = %e, "clean-shutdown segment failed its checks; full scan");
            return load_active(dir, base, interval, allow_fallback, now_ms).await;
        }
    };
    seg.index = std::mem::replace(&mut seg.index, OffsetIndex::new(base)).into_mem();
    seg.time_index = std::mem::replace(&mut seg.time_index, TimeIndex::new(base)).into_mem();
    seg.bytes_since_index = seg.size - seg.index.lookup(i64::MAX).1 as u64;
    // segment.ms counts from the first batch's timestamp.
    if seg.size > 0 {
        if let Some(f) = &seg.file {
            let page = fio::read_aligned(f, 0, 4096)
                .await
                .map_err(|e| LogError::io(format!("reading {}", seg.path.display()), e))?;
            if let Ok(h) = parse_header(page.as_slice()) {
                if h.max_timestamp >= 0 {
                    seg.roll_ts = Some(h.max_timestamp);
                }
            }
        }
    }
    seg.phase = Phase::Active;
    seg.durable = seg.mark();
    Ok(LoadedActive {
        seg,
        direct,
        epochs: Vec::new(),
    })
}

/// Load the active (last) segment: full scan, truncate at the first torn, corrupt or
/// never-written batch, rebuild indexes in memory.
pub async fn load_active(
    dir: &Path,
    base: i64,
    interval: u64,
    allow_fallback: bool,
    now_ms: i64,
) -> Result<LoadedActive> {
    let (lp, _, _) = paths(dir, base);
    let (file, direct) = fio::open_data_file(&lp, false, true, allow_fallback)
        .await
        .map_err(|e| LogError::io(format!("opening segment {}", lp.display()), e))?;
    let file_len = fio::file_len(&file)
        .await
        .map_err(|e| LogError::io(format!("stat {}", lp.display()), e))?;
    let mut seg = Segment::new(dir, base, now_ms);
    let mut epochs: Vec<(i32, i64)> = Vec::new();
    let out = scan(&file, 0, file_len, base, |pos, h| {
        seg.on_batch(h, pos, interval);
        let e = h.partition_leader_epoch;
        if e >= 0 && epochs.last().is_none_or(|&(last, _)| last != e) {
            epochs.push((e, h.base_offset));
        }
    })
    .await
    .map_err(|e| LogError::io(format!("reading {}", lp.display()), e))?;
    match &out.stop {
        Stop::End | Stop::Zero => {}
        other => tracing::warn!(
            segment = %lp.display(),
            stop = ?other,
            valid_end = out.valid_end,
            file_len,
            "truncating active segment after the last good batch"
        ),
    }
    if out.valid_end < file_len {
        fio::set_len(&file, out.valid_end)
            .await
            .map_err(|e| LogError::io(format!("truncating {}", lp.display()), e))?;
    }
    seg.next_offset = out.next_offset.max(base);
    seg.file = Some(file);
    seg.loaded(out.valid_end, Phase::Active);
    Ok(LoadedActive {
        seg,
        direct,
        epochs,
    })
}
