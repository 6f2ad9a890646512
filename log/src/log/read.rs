//! Reading: whole batches from the batch cache or with aligned reads of a segment,
//! and the timestamp lookups of ListOffsets.

use std::path::Path;

use bytes::Bytes;

use crate::batch::{parse_header, HeaderProblem, HEADER_LEN};
use crate::buf::align_down;
use crate::error::{LogError, Result};
use crate::io as fio;

use super::{io_err, PartitionLog, ReadResult};

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
        let mut seg_from = {
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
                    return Ok(res);
                }
            }
            st.stats.disk_reads += 1;
            st.segments
                .range(..=start_offset)
                .next_back()
                .map(|(b, _)| *b)
                .unwrap_or(i64::MIN)
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
            let batches =
                read_segment(&file, &path, pos, limit, start_offset, max_bytes, min_one).await?;
            if !batches.is_empty() {
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
                let batches =
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
) -> Result<Vec<Bytes>> {
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
    Ok(out)
}
