//! Removing data: retention by time and size, DeleteRecords, and truncation (for
//! replication followers).

use std::path::Path;

use crate::batch::parse_header;
use crate::buf::align_down;
use crate::clean::swap::{self, CleanerCheckpoint};
use crate::error::{LogError, Result};
use crate::io as fio;
use crate::segment::{self, Phase, Segment};

use super::open::tail_page;
use super::read::{corrupt_at, read_segment};
use super::state::{Pending, WriteFailure};
use super::{epochs, io_err, wait_idle, PartitionLog, CHECKPOINT_FILE};

impl PartitionLog {
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
        let _guard = self.shared.structure.lock().await;
        let mut rolled = false;
        let doomed: Vec<i64> = {
            let mut st = self.shared.state.borrow_mut();
            let cfg = st.config.clone();
            if !cfg.retention_enabled {
                return Ok((0, false));
            }
            let mut doomed = Vec::new();
            let closed: Vec<(i64, u64, i64, i64)> = st
                .segments
                .values()
                .filter(|s| s.phase == Phase::Sealed)
                .map(|s| {
                    (
                        s.base,
                        s.size,
                        if s.max_ts >= 0 {
                            s.max_ts
                        } else {
                            s.created_ms
                        },
                        s.next_offset,
                    )
                })
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
            let all_closed_gone =
                doomed.len() == st.segments.values().filter(|s| s.is_closed()).count();
            if all_closed_gone && cfg.retention_ms >= 0 {
                let leo = st.leo;
                if let Some(a) = st.active() {
                    let ts = if a.max_ts >= 0 {
                        a.max_ts
                    } else {
                        a.created_ms
                    };
                    if !a.is_empty()
                        && a.size == a.logical_size
                        && now_ms.saturating_sub(ts) > cfg.retention_ms
                    {
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
            st.change_epochs(|c| c.truncate_from_start(ls));
            (st.dir.clone(), st.checkpoint_bytes())
        };
        let cp_path = dir.join(CHECKPOINT_FILE);
        fio::replace_file(&dir, &cp_path, cp)
            .await
            .map_err(io_err(format!("writing {}", cp_path.display())))?;
        epochs::persist(&self.shared).await?;
        for &b in bases {
            remove_segment_files(&dir, b).await?;
        }
        Ok(())
    }

    /// DeleteRecords: move the log start offset up to `before_offset` (at most the
    /// written end), persist it, and delete closed segments wholly below it. Returns the
    /// new log start offset.
    pub async fn delete_records(&self, before_offset: i64) -> Result<i64> {
        let _guard = self.shared.structure.lock().await;
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
            st.change_epochs(|c| c.truncate_from_start(ls));
            let doomed: Vec<i64> = st
                .segments
                .values()
                .filter(|s| s.phase == Phase::Sealed && s.next_offset <= before_offset)
                .map(|s| s.base)
                .collect();
            (doomed, st.checkpoint_bytes(), st.dir.clone())
        };
        let cp_path = dir.join(CHECKPOINT_FILE);
        fio::replace_file(&dir, &cp_path, cp)
            .await
            .map_err(io_err(format!("writing {}", cp_path.display())))?;
        epochs::persist(&self.shared).await?;
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
        let _guard = self.shared.structure.lock().await;
        wait_idle(&self.shared).await?;
        let (ls, leo) = {
            let st = self.shared.state.borrow();
            (st.log_start, st.leo)
        };
        if offset >= leo {
            // Nothing to cut, but an epoch may start at the end with no batch of its
            // own (a leader that appended nothing before another was elected): a
            // follower's truncation drops it, as Kafka's truncateTo does.
            self.shared
                .state
                .borrow_mut()
                .change_epochs(|c| c.truncate_from_end(leo));
            super::epochs::persist(&self.shared).await?;
            return Ok(leo);
        }
        if offset < ls {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start: ls,
                log_end: leo,
            });
        }
        // What is written from `offset` on next is dirty: the cleaner's checkpoint must
        // not cover it (Kafka's maybeTruncateCheckpoint). Written before the cut, so a
        // crash in between leaves it covering less, never more.
        let (clean_end, delete_horizon_ms) = {
            let st = self.shared.state.borrow();
            (st.clean_end, st.delete_horizon_ms)
        };
        if clean_end > offset {
            let cp = CleanerCheckpoint {
                clean_end: offset,
                delete_horizon_ms,
            };
            swap::write_checkpoint(&self.dir(), cp).await?;
            self.shared.state.borrow_mut().clean_end = offset;
        }
        // Segments wholly at/above offset go; the one containing it is cut.
        let (drop_bases, keep) = {
            let st = self.shared.state.borrow();
            let drop: Vec<i64> = st
                .segments
                .keys()
                .copied()
                .filter(|&b| b >= offset && b > ls)
                .collect();
            let keep = st
                .segments
                .range(..offset)
                .next_back()
                .map(|(b, s)| (*b, s.file.clone(), s.path.clone(), s.size));
            (drop, keep)
        };
        // Find the cut position in the kept segment.
        let mut cut = None;
        if let Some((base, Some(file), path, size)) = keep.clone() {
            let start = self
                .shared
                .state
                .borrow()
                .segments
                .get(&base)
                .map(|s| s.index.lookup(offset).1 as u64)
                .unwrap_or(0);
            let mut pos = start;
            let mut found = None;
            while pos < size && found.is_none() {
                let (batches, _) =
                    read_segment(&file, &path, pos, size, i64::MIN, 1 << 20, true).await?;
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
            cut = Some((
                base,
                file,
                path,
                found.map(|f| f.0).unwrap_or(size),
                found.map(|f| f.1),
            ));
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
            fio::set_len(&file, cut_pos)
                .await
                .map_err(io_err(format!("truncating {}", path.display())))?;
            let mut seg = Segment::new(&dir, base, now);
            let out = segment::scan(&file, 0, cut_pos, base, |p, h| seg.on_batch(h, p, interval))
                .await
                .map_err(io_err(format!("reading {}", path.display())))?;
            seg.next_offset = out.next_offset.max(base);
            seg.file = Some(file.clone());
            seg.loaded(out.valid_end, Phase::Active);
            // The batch containing `offset` goes whole; a cut inside a gap keeps `offset`.
            new_leo = cut_base
                .map_or(offset, |b| b.min(offset))
                .max(seg.next_offset);
            let tail = tail_page(seg.file.as_ref(), &seg.path, seg.size).await?;
            let mut st = self.shared.state.borrow_mut();
            st.pending.clear();
            let mut p = Pending::new(&seg, align_down(seg.size), new_leo);
            p.buf.extend_from_slice(&tail);
            st.pending.push_back(p);
            st.segments.insert(base, seg);
        } else {
            let mut st = self.shared.state.borrow_mut();
            st.pending.clear();
            let seg = Segment::new(&dir, offset, now);
            st.pending.push_back(Pending::new(&seg, 0, offset));
            st.segments.insert(offset, seg);
        }
        {
            let mut st = self.shared.state.borrow_mut();
            st.leo = new_leo;
            st.written_end = new_leo;
            st.cache.retain_range(i64::MIN, new_leo);
            st.change_epochs(|c| c.truncate_from_end(new_leo));
        }
        epochs::persist(&self.shared).await?;
        Ok(new_leo)
    }

    /// Kafka's `truncateFullyAndStartAt` (a follower whose fetch offset is below the
    /// leader's log start): every segment goes, and the log is empty, starting and
    /// ending at `offset`, with a fresh active segment there and an empty epoch cache.
    /// Waits for in-flight writes; the caller must not append while it runs.
    ///
    /// Steps, and what the next open finds after a crash in between:
    /// 1. the epoch cache is cleared and its checkpoint written: the old log, whole,
    ///    with the epochs of its active segment's batches (the recovery scan's);
    /// 2. the segments' files are removed, the newest first: a prefix of the old log
    ///    (as if truncated from the end), then an empty log at the old log start;
    /// 3. the log start checkpoint becomes `offset`: the empty log at `offset`.
    ///
    /// Each is a consistent log; a follower finding its log end below the leader's log
    /// start again truncates again. An I/O error on the way leaves the log offline for
    /// writes until it is reopened.
    pub async fn truncate_fully_and_start_at(&self, offset: i64) -> Result<()> {
        let _guard = self.shared.structure.lock().await;
        wait_idle(&self.shared).await?;
        let (dir, old, cp) = {
            let mut st = self.shared.state.borrow_mut();
            if offset < 0 {
                return Err(LogError::OffsetOutOfRange {
                    requested: offset,
                    log_start: st.log_start,
                    log_end: st.leo,
                });
            }
            let now = st.now();
            for p in st.pending.drain(..) {
                p.buf.recycle();
            }
            let old: Vec<i64> = std::mem::take(&mut st.segments).into_keys().collect();
            let seg = Segment::new(&st.dir, offset, now);
            st.pending.push_back(Pending::new(&seg, 0, offset));
            st.segments.insert(offset, seg);
            st.log_start = offset;
            st.leo = offset;
            st.written_end = offset;
            st.cache.retain_range(i64::MAX, i64::MIN);
            st.change_epochs(|c| c.clear());
            (st.dir.clone(), old, st.checkpoint_bytes())
        };
        let files = async {
            epochs::persist(&self.shared).await?;
            for &b in old.iter().rev() {
                remove_segment_files(&dir, b).await?;
            }
            let cp_path = dir.join(CHECKPOINT_FILE);
            fio::replace_file(&dir, &cp_path, cp)
                .await
                .map_err(io_err(format!("writing {}", cp_path.display())))
        };
        let res = files.await;
        if let Err(e) = &res {
            // The files are somewhere between the old log and the new one: a segment
            // written at `offset` now could overlap old ones left on disk. No writes
            // until a reopen finds one of the states above.
            self.shared.state.borrow_mut().failure = Some(WriteFailure {
                reason: format!("truncating fully to {offset} failed: {e}"),
                retry_at: None,
                retriable: false,
            });
        }
        res
    }
}
pub(super) async fn remove_segment_files(dir: &Path, base: i64) -> Result<()> {
    let (l, i, t) = segment::paths(dir, base);
    for p in [l, i, t] {
        fio::remove_file(&p)
            .await
            .map_err(io_err(format!("removing {}", p.display())))?;
    }
    Ok(())
}
