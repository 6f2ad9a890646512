//! What compaction asks of a log on its shard: a view of what may be cleaned, the first
//! batch timestamp of a segment (for `max.compaction.lag.ms`), and swapping cleaned
//! segments in (see `clean::swap` for the crash-safe protocol).

use crate::batch::parse_header;
use crate::clean::swap::{self, Manifest, CLEANED_SUFFIX};
use crate::clean::{CleanableView, CleanedGroup, SealedSegment};
use crate::error::{LogError, Result};
use crate::io as fio;
use crate::segment::{self, paths, paths_with_suffix, EndCheck, Phase};

use super::{io_err, PartitionLog};

impl PartitionLog {
    /// The sealed segments a cleaner may rewrite now. `min_compaction_lag_ms` keeps
    /// segments holding records younger than that out of reach (Kafka's rule: by each
    /// segment's largest timestamp), and `first_unstable` those holding offsets of
    /// transactions not decided yet (the caller's last stable offset).
    pub fn cleanable(
        &self,
        now_ms: i64,
        min_compaction_lag_ms: i64,
        first_unstable: i64,
    ) -> CleanableView {
        let st = self.shared.state.borrow();
        let mut segments = Vec::new();
        let mut first_uncleanable = st.leo;
        let mut iter = st.segments.values().peekable();
        while let Some(seg) = iter.next() {
            let Some(next) = iter.peek() else {
                first_uncleanable = seg.base;
                break;
            };
            if seg.phase != Phase::Sealed {
                first_uncleanable = seg.base;
                break;
            }
            let young = min_compaction_lag_ms > 0
                && seg.max_ts > now_ms.saturating_sub(min_compaction_lag_ms);
            let unstable = next.base > first_unstable;
            if (young && next.base > st.clean_end) || unstable {
                first_uncleanable = seg.base;
                break;
            }
            segments.push(SealedSegment {
                base: seg.base,
                end: next.base,
                size: seg.size,
                max_timestamp: seg.max_ts,
                modified_ms: seg.created_ms,
                path: seg.path.clone(),
            });
        }
        let first_dirty = if st.clean_end < st.log_start || st.clean_end > first_uncleanable {
            st.log_start.min(first_uncleanable)
        } else {
            st.clean_end
        };
        CleanableView {
            dir: st.dir.clone(),
            log_start: st.log_start,
            first_dirty,
            first_uncleanable,
            segments,
            delete_horizon_ms: st.delete_horizon_ms,
        }
    }

    /// The max timestamp of the first batch of the segment based at `base` (`None` if
    /// it has none or no such segment exists). Read once, then remembered.
    pub async fn first_batch_timestamp(&self, base: i64) -> Result<Option<i64>> {
        let (file, path) = {
            let st = self.shared.state.borrow();
            match st.segments.get(&base) {
                Some(s) if s.roll_ts.is_some() => return Ok(s.roll_ts),
                Some(s) if s.size > 0 => (s.file.clone(), s.path.clone()),
                _ => return Ok(None),
            }
        };
        let Some(file) = file else { return Ok(None) };
        let page = fio::read_aligned(&file, 0, 4096)
            .await
            .map_err(io_err(format!("reading {}", path.display())))?;
        let ts = parse_header(page.as_slice())
            .ok()
            .map(|h| h.max_timestamp)
            .filter(|&t| t >= 0);
        if let Some(s) = self.shared.state.borrow_mut().segments.get_mut(&base) {
            s.roll_ts = ts;
        }
        Ok(ts)
    }

    /// Swap cleaned segments in, group by group, each one crash-safe. The groups are
    /// one clean's, oldest first, starting at the log's first segment. A group whose
    /// replaced segments changed since the clean began (retention or DeleteRecords
    /// removed one, the log was truncated or deleted) is not swapped: its files and
    /// those of the groups after it are removed. Returns how many groups were swapped.
    pub async fn replace_segments(&self, groups: Vec<CleanedGroup>) -> Result<usize> {
        let _guard = self.shared.structure.lock().await;
        let (dir, interval, fallback, now) = {
            let st = self.shared.state.borrow();
            (
                st.dir.clone(),
                st.config.index_interval_bytes as u64,
                st.config.allow_buffered_fallback,
                st.now(),
            )
        };
        let mut swapped = 0;
        let mut horizon = -1i64;
        let mut groups = groups.into_iter();
        while let Some(g) = groups.next() {
            if !self.group_still_current(&g) {
                tracing::info!(dir = %dir.display(), base = g.cleaned.base, "segments changed while they were cleaned; clean discarded");
                swap::discard_cleaned(&dir, g.cleaned.base).await?;
                for rest in groups {
                    swap::discard_cleaned(&dir, rest.cleaned.base).await?;
                }
                return Ok(swapped);
            }
            let base = g.replaced[0].base;
            let end = g.replaced[g.replaced.len() - 1].end;
            assert_eq!(
                g.cleaned.base, base,
                "a cleaned segment takes its group's base"
            );
            // Load (and so verify) the cleaned files before committing to them.
            let files = paths_with_suffix(&dir, base, CLEANED_SUFFIX);
            let loaded = segment::load_sealed_files(
                &dir,
                &files,
                base,
                EndCheck::AtMost(end),
                interval,
                fallback,
                now,
            )
            .await;
            let mut seg = match loaded {
                Ok(s) if s.size == g.cleaned.size => s,
                Ok(s) => {
                    swap::discard_cleaned(&dir, base).await?;
                    return Err(LogError::Corrupt {
                        path: files.0,
                        reason: format!(
                            "cleaned segment holds {} bytes of batches, the cleaner wrote {}",
                            s.size, g.cleaned.size
                        ),
                    });
                }
                Err(e) => {
                    swap::discard_cleaned(&dir, base).await?;
                    return Err(e);
                }
            };
            horizon = horizon.max(g.delete_horizon_ms);
            let manifest = Manifest {
                replaced: g.replaced.iter().map(|s| s.base).collect(),
                clean_end: g.clean_end,
                delete_horizon_ms: horizon,
            };
            swap::commit(&dir, &manifest).await?;
            let cp = swap::roll_forward(&dir, &manifest).await?;
            seg.path = paths(&dir, base).0;
            let mut st = self.shared.state.borrow_mut();
            for s in &g.replaced {
                st.segments.remove(&s.base);
            }
            st.segments.insert(base, seg);
            st.clean_end = cp.clean_end;
            st.delete_horizon_ms = cp.delete_horizon_ms;
            // Cached batches of the replaced range may be gone from the log now.
            st.cache.remove_range(base, end);
            swapped += 1;
        }
        Ok(swapped)
    }

    /// Remove what a failed clean left behind (its `.cleaned` files).
    pub async fn discard_cleaner_output(&self) -> Result<()> {
        let _guard = self.shared.structure.lock().await;
        let dir = self.dir();
        swap::discard_all_cleaned(&dir).await
    }

    /// Are the segments `g` replaces still in the log, sealed and unchanged, and is the
    /// segment after them still where the clean saw it?
    fn group_still_current(&self, g: &CleanedGroup) -> bool {
        let st = self.shared.state.borrow();
        if st.closing || g.replaced.is_empty() {
            return false;
        }
        let same = g.replaced.iter().all(|r| {
            st.segments
                .get(&r.base)
                .is_some_and(|s| s.phase == Phase::Sealed && s.size == r.size)
        });
        let end = g.replaced[g.replaced.len() - 1].end;
        let next_in_place = st
            .segments
            .range(g.replaced[0].base + 1..)
            .map(|(b, _)| *b)
            .find(|b| !g.replaced.iter().any(|r| r.base == *b))
            == Some(end);
        same && next_in_place && st.log_start < end
    }
}
