//! The writer task of a log: takes what was appended since the last write, writes it
//! in one aligned `O_DIRECT` write (group commit), syncs by the flush policy, seals
//! rolled segments, publishes the written end offset, and rolls back after a failure.

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::buf::{align_up, PaddedWrite};
use crate::error::{LogError, Result};
use crate::io as fio;
use crate::segment::{self, Phase};

use super::open::tail_page;
use super::retention::remove_segment_files;
use super::state::{Pending, FULL_DISK_RETRY};
use super::{io_err, Shared};

/// First preallocation step of a segment; later steps double with the segment's size
/// up to `preallocate_bytes`, so a partition that holds little reserves little.
const MIN_PREALLOCATE: u64 = 64 * 1024;

pub(super) async fn writer_loop(shared: Rc<Shared>) {
    loop {
        let job = shared.state.borrow_mut().take_job();
        if let Some(job) = job {
            shared.state.borrow_mut().job_in_flight = true;
            let res = run_job(&shared, job).await;
            shared.state.borrow_mut().job_in_flight = false;
            let go_on = match res {
                Ok(()) => true,
                Err(e) => recover(&shared, &e).await,
            };
            shared.written.notify(usize::MAX);
            if !go_on {
                break;
            }
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
                let go_on = recover(&shared, &e).await;
                shared.written.notify(usize::MAX);
                if !go_on {
                    break;
                }
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

/// After a failed write: roll the log back to what was written (nothing unwritten is
/// ever acknowledged), remove segment files that hold nothing written, and restore the
/// write buffer's tail page. Returns whether the writer goes on: after a full disk the
/// log takes appends again after [`FULL_DISK_RETRY`]; after any other failure it stays
/// offline for writes until it is reopened (Kafka takes the log directory offline).
async fn recover(shared: &Rc<Shared>, e: &LogError) -> bool {
    let doomed = shared.state.borrow_mut().roll_back(e);
    // Waiters of discarded appends learn it now.
    shared.written.notify(usize::MAX);
    let (dir, file, path, size) = {
        let st = shared.state.borrow();
        let Some(seg) = st.active() else {
            unreachable!("a log always has an active segment")
        };
        (st.dir.clone(), seg.file.clone(), seg.path.clone(), seg.size)
    };
    let finish = async {
        for base in doomed {
            remove_segment_files(&dir, base).await?;
        }
        tail_page(file.as_ref(), &path, size).await
    };
    let tail = finish.await;
    let mut st = shared.state.borrow_mut();
    let tail = match tail {
        Ok(t) => t,
        Err(e2) => {
            tracing::error!(dir = %dir.display(), error = %e2, "rolling back after a failed write failed; the log stays offline");
            return false;
        }
    };
    let retriable = st.failure.as_ref().is_some_and(|f| f.retriable);
    let Some(p) = st.pending.front_mut() else {
        unreachable!("roll_back leaves one pending write")
    };
    assert!(
        p.batches.is_empty() && p.buf.is_empty(),
        "nothing may be appended while a roll-back finishes"
    );
    p.buf.extend_from_slice(&tail);
    if let Some(f) = st.failure.as_mut() {
        if retriable {
            f.retry_at = Some(Instant::now() + FULL_DISK_RETRY);
        }
    }
    retriable
}

/// fdatasync `file`, then count the call and its time and mark everything synced.
pub(super) async fn sync_counted(
    shared: &Shared,
    file: &compio::fs::File,
    what: impl Into<String>,
) -> Result<()> {
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
            fio::sync_dir(&dir)
                .await
                .map_err(io_err(format!("syncing {}", dir.display())))?;
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
        // Preallocate in steps that grow with the segment (blocking fallocate, see io.rs).
        {
            let mut st = shared.state.borrow_mut();
            let max_step = align_up(st.config.preallocate_bytes as usize) as u64;
            let seg_bytes = align_up(st.config.segment_bytes_clamped() as usize) as u64;
            let prealloc_ok = st.prealloc_ok;
            let need = job.file_pos + padded;
            if let Some(seg) = st.segments.get_mut(&job.seg_base) {
                if max_step > 0 && prealloc_ok && seg.allocated < need {
                    // A step as large as the segment is Kafka's `preallocate`: all at once.
                    let step = if max_step >= seg_bytes {
                        seg_bytes
                    } else {
                        seg.allocated.max(MIN_PREALLOCATE).min(max_step)
                    };
                    let want = (seg.allocated + step).min(seg_bytes).max(need);
                    let from = seg.allocated;
                    match fio::fallocate(&file, from, want - from) {
                        Ok(true) => seg.allocated = want,
                        Ok(false) => st.prealloc_ok = false,
                        Err(e) => {
                            return Err(LogError::io(format!("fallocate {}", path.display()), e))
                        }
                    }
                }
            }
        }
        let (res, w) = fio::write_all(&file, PaddedWrite::new(buf), job.file_pos).await;
        res.map_err(io_err(format!(
            "writing {} at {}",
            path.display(),
            job.file_pos
        )))?;
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
                && st
                    .dirty_since
                    .is_some_and(|t| t.elapsed() >= Duration::from_millis(cfg.flush_ms as u64)))
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
        fio::set_len(&file, end_pos)
            .await
            .map_err(io_err(format!("trimming {}", path.display())))?;
        let (oi, ti) = {
            let st = shared.state.borrow();
            match st.segments.get(&job.seg_base) {
                Some(seg) => (seg.index.bytes().to_vec(), seg.time_index.bytes().to_vec()),
                None => (Vec::new(), Vec::new()),
            }
        };
        segment::write_indexes(&dir, job.seg_base, oi, ti).await?;
        fio::sync_dir(&dir)
            .await
            .map_err(io_err(format!("syncing {}", dir.display())))?;
    }
    // Publish.
    let mut st = shared.state.borrow_mut();
    if let Some(seg) = st.segments.get_mut(&job.seg_base) {
        assert_eq!(
            job.mark.size, end_pos,
            "a write ends where its segment mark says"
        );
        assert!(end_pos >= seg.size, "writes of a segment go forward");
        seg.size = end_pos;
        seg.durable = job.mark;
        if job.seal {
            assert_eq!(seg.phase, Phase::Rolled, "only a rolled segment is sealed");
            seg.phase = Phase::Sealed;
            seg.allocated = end_pos;
        }
    }
    if st.failure.is_some() {
        // A retry after a full disk got through.
        tracing::info!(dir = %st.dir.display(), "writes resumed after a full disk");
        st.failure = None;
    }
    if !job.batches.is_empty() {
        assert!(
            job.end_offset >= st.written_end,
            "the written end only moves forward"
        );
        st.written_end = job.end_offset;
        if st.cache.enabled() {
            let capacity = buf.capacity();
            st.cache
                .insert_written(buf.freeze(), capacity, &job.batches);
        } else {
            buf.recycle();
        }
    }
    Ok(())
}
