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

/// First zero-fill step of a segment; later steps grow with the segment's size up to
/// `zero_ahead_bytes`.
const MIN_ZERO_AHEAD: u64 = 64 * 1024;

/// How long zero filling pauses after a failed fill (a full disk, say).
const FILL_PAUSE: Duration = Duration::from_secs(10);

/// The next zero fill of a segment, if one is due: `Some((from, to))`.
///
/// `end` is the aligned end of the appended data, `filled_to` the end of the last fill,
/// `step` the fill size, `cap` the segment's largest size. A fill is due when less
/// than one step of filled space is left ahead of the data. It continues the last
/// fill when the data has not passed it; otherwise (a new segment, or data written
/// faster than the fills) it starts half a step past the data, so that the writes of
/// the next moments do not run into a fill still in flight (they would wait for it).
pub(super) fn next_fill(end: u64, filled_to: u64, step: u64, cap: u64) -> Option<(u64, u64)> {
    if step == 0 || filled_to >= end.saturating_add(step) {
        return None;
    }
    let from = if filled_to >= end {
        filled_to
    } else {
        align_up((end + step / 2) as usize) as u64
    };
    let to = from.saturating_add(step).min(cap);
    (from < to).then_some((from, to))
}

/// Start a zero fill of the active segment's space ahead of its data, when one is due
/// and none is in flight.
///
/// Why: preallocated space is made of unwritten extents. An O_DIRECT write into them
/// cannot complete until the file system converted them to written ones, which ext4
/// and XFS do in a kernel worker after the device finished (and io_uring hands such
/// writes to its io-wq workers first, as they may block). That worker runs on whatever
/// CPU took the completion interrupt, behind whatever runs there, and may itself wait
/// for metadata I/O: produce acknowledgements waited hundreds of milliseconds on an
/// idle broker. Overwrites of written blocks need none of that and complete straight
/// from the device's interrupt, so the space ahead of the data is filled with zeros in
/// the background, off the acknowledgement path. Zeros are what preallocated space
/// reads as anyway, so recovery treats them the same (not data).
///
/// Safety of the data: a fill starts past the end of everything appended so far, and
/// a data write that would touch the range of a fill in flight waits for it
/// (`wait_for_fill`), so a fill never lands on data.
pub(super) fn maybe_fill(shared: &Rc<Shared>) {
    let mut st = shared.state.borrow_mut();
    if st.fill.is_some() || !st.direct || st.failure.is_some() || st.closing {
        return;
    }
    if st.fill_paused_until.is_some_and(|t| Instant::now() < t) {
        return;
    }
    let max_step = align_up(st.config.zero_ahead_bytes as usize) as u64;
    let cap = align_up(st.config.segment_bytes_clamped() as usize) as u64;
    let Some(seg) = st.active() else { return };
    if seg.phase != Phase::Active || max_step == 0 {
        return;
    }
    let Some(file) = seg.file.clone() else { return };
    let end = align_up(seg.logical_size as usize) as u64;
    let step = end.clamp(MIN_ZERO_AHEAD.min(max_step), max_step);
    let Some((from, to)) = next_fill(end, seg.filled_to, step, cap) else {
        return;
    };
    let base = seg.base;
    st.fill = Some((base, from, to));
    drop(st);
    let shared = shared.clone();
    compio::runtime::spawn(async move {
        let res = fio::write_zeros(&file, from, to - from).await;
        let mut st = shared.state.borrow_mut();
        st.fill = None;
        match res {
            Ok(()) => {
                st.stats.zero_fills += 1;
                st.stats.bytes_zero_filled += to - from;
                if let Some(seg) = st.segments.get_mut(&base) {
                    seg.filled_to = seg.filled_to.max(to);
                    if seg.phase == Phase::Active {
                        // The file is at least this long now; no fallocate needed below.
                        seg.allocated = seg.allocated.max(to);
                    }
                }
            }
            Err(e) => {
                tracing::warn!(dir = %st.dir.display(), error = %e, "zero-filling segment space failed; writes go on into unfilled space");
                st.fill_paused_until = Some(Instant::now() + FILL_PAUSE);
            }
        }
        drop(st);
        shared.fill_done.notify(usize::MAX);
    })
    .detach();
}

/// Wait until no zero fill in flight overlaps `[from, to)` of segment `base` (with
/// `whole`, any fill of that segment: before a seal trims the file).
async fn wait_for_fill(shared: &Shared, base: i64, from: u64, to: u64, whole: bool) {
    loop {
        let l = shared.fill_done.listen();
        let busy = shared
            .state
            .borrow()
            .fill
            .is_some_and(|(b, f, t)| b == base && (whole || (f < to && from < t)));
        if !busy {
            return;
        }
        l.await;
    }
}

pub(super) async fn writer_loop(shared: Rc<Shared>) {
    loop {
        let job = shared.state.borrow_mut().take_job();
        if let Some(job) = job {
            shared.state.borrow_mut().job_in_flight = true;
            let res = run_job(&shared, job).await;
            shared.state.borrow_mut().job_in_flight = false;
            let go_on = match res {
                Ok(()) => {
                    maybe_fill(&shared);
                    true
                }
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
    if !job.batches.is_empty() {
        // An epoch its batches brought into the epoch cache reaches the checkpoint
        // before they are written (a failure here fails the job: nothing is published).
        super::epochs::persist(shared).await?;
    }
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
    let padded_end = job.file_pos + align_up(data_len) as u64;
    if !job.batches.is_empty() || job.seal {
        wait_for_fill(shared, job.seg_base, job.file_pos, padded_end, job.seal).await;
    }
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
        let started = Instant::now();
        let direct = shared.state.borrow().direct;
        let (res, w) = fio::write_all(&file, PaddedWrite::new(buf), job.file_pos, direct).await;
        let took = started.elapsed().as_nanos() as u64;
        res.map_err(io_err(format!(
            "writing {} at {}",
            path.display(),
            job.file_pos
        )))?;
        buf = w.buf;
        let mut st = shared.state.borrow_mut();
        st.stats.writes += 1;
        st.stats.write_nanos += took;
        st.stats.write_buckets[super::latency_bucket(took)] += 1;
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

#[cfg(test)]
mod tests {
    use super::next_fill;

    const K: u64 = 1024;

    #[test]
    fn a_new_segment_fills_past_the_data() {
        // Nothing filled yet: start half a step past the data, one step long.
        assert_eq!(
            next_fill(4 * K, 0, 64 * K, 1 << 30),
            Some((36 * K, 100 * K))
        );
    }

    #[test]
    fn fills_continue_where_the_last_ended() {
        // Less than a step of filled space left ahead: continue contiguously.
        assert_eq!(
            next_fill(64 * K, 100 * K, 64 * K, 1 << 30),
            Some((100 * K, 164 * K))
        );
        // A step or more left: nothing to do.
        assert_eq!(next_fill(36 * K, 100 * K, 64 * K, 1 << 30), None);
    }

    #[test]
    fn data_past_the_fills_restarts_ahead_of_it() {
        assert_eq!(
            next_fill(300 * K, 100 * K, 256 * K, 1 << 30),
            Some((428 * K, 684 * K))
        );
    }

    #[test]
    fn fills_stop_at_the_segment_size_and_when_disabled() {
        assert_eq!(
            next_fill(960 * K, 980 * K, 64 * K, 1024 * K),
            Some((980 * K, 1024 * K))
        );
        assert_eq!(next_fill(1000 * K, 1024 * K, 64 * K, 1024 * K), None);
        assert_eq!(next_fill(4 * K, 0, 0, 1 << 30), None);
    }

    #[test]
    fn a_fill_never_starts_below_the_data() {
        for end in (0..64).map(|i| i * 12 * K) {
            for filled in (0..64).map(|i| i * 16 * K) {
                if let Some((from, to)) = next_fill(end, filled, 128 * K, 1 << 30) {
                    assert!(from >= end && to > from, "{end} {filled}: {from}..{to}");
                    assert_eq!(from % 4096, 0);
                }
            }
        }
    }
}
