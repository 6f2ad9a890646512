//! Opening a log: list its segments, load them (trusting sealed ones after checks,
//! scanning the active one), and start its writer.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};

use compio::fs::File;
use std::rc::Rc;

use event_listener::Event;

use crate::buf::{align_down, ALIGN};
use crate::cache::{BatchCache, CacheHandle, SharedBatchCache};
use crate::clean::swap;
use crate::config::LogConfig;
use crate::epoch::{EpochCache, CHECKPOINT_FILE as EPOCH_CHECKPOINT_FILE};
use crate::error::{LogError, Result};
use crate::io as fio;
use crate::segment::{self, EndCheck, Segment};

use super::retention::remove_segment_files;
use super::state::{Pending, State, MIN_WRITE_BUF};
use super::writer::writer_loop;
use super::{
    io_err, system_clock, Clock, LogStats, PartitionLog, Shared, CHECKPOINT_FILE,
    CLEAN_SHUTDOWN_FILE,
};

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
    pub async fn open_with_clock(
        dir: PathBuf,
        config: LogConfig,
        clock: Clock,
    ) -> Result<PartitionLog> {
        Self::open_with(dir, config, clock, None).await
    }

    /// Open with a clock and, optionally, a batch cache shared with other logs (one
    /// budget for a whole shard; `config.cache_bytes` is then ignored). Without one the
    /// log gets its own cache of `config.cache_bytes`.
    pub async fn open_with(
        dir: PathBuf,
        config: LogConfig,
        clock: Clock,
        cache: Option<SharedBatchCache>,
    ) -> Result<PartitionLog> {
        let now = clock();
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        // Finish interrupted segment swaps before anything looks at the segments.
        swap::recover(&dir).await?;
        let cleaner = swap::read_checkpoint(&dir)?;
        let mut bases = Vec::new();
        let entries =
            std::fs::read_dir(&dir).map_err(io_err(format!("listing {}", dir.display())))?;
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
            fio::remove_file(&marker)
                .await
                .map_err(io_err(format!("removing {}", marker.display())))?;
            fio::sync_dir(&dir)
                .await
                .map_err(io_err(format!("syncing {}", dir.display())))?;
        }
        let mut segments = BTreeMap::new();
        let mut direct = true;
        let mut recovered_epochs = Vec::new();
        for (i, &b) in bases.iter().enumerate() {
            let seg = match bases.get(i + 1) {
                Some(&next) => {
                    // A cleaned segment may end before the next one begins.
                    let end = if b < cleaner.clean_end {
                        EndCheck::AtMost(next)
                    } else {
                        EndCheck::Exact(next)
                    };
                    segment::load_closed(&dir, b, end, interval, fallback, now).await?
                }
                None => {
                    let loaded = if clean {
                        segment::load_active_clean(&dir, b, interval, fallback, now).await?
                    } else {
                        segment::load_active(&dir, b, interval, fallback, now).await?
                    };
                    direct = loaded.direct;
                    recovered_epochs = loaded.epochs;
                    loaded.seg
                }
            };
            segments.insert(b, seg);
        }
        let leo = segments
            .values()
            .next_back()
            .map(|s| s.next_offset)
            .unwrap_or(log_start)
            .max(log_start);
        if let Some(first) = segments.keys().next() {
            log_start = log_start.max(*first);
        }
        let epochs = load_epochs(&dir, &recovered_epochs, log_start, leo).await?;
        let mut st = State {
            dir: dir.clone(),
            private_cache: cache.is_none(),
            cache: CacheHandle::new(
                cache.unwrap_or_else(|| BatchCache::shared(config.cache_bytes)),
            ),
            config,
            clock,
            segments,
            log_start,
            clean_end: cleaner.clean_end,
            delete_horizon_ms: cleaner.delete_horizon_ms,
            leo,
            written_end: leo,
            pending: VecDeque::new(),
            failure: None,
            rollbacks: 0,
            rollback_history: VecDeque::new(),
            closing: false,
            writer_done: false,
            unsynced_messages: 0,
            dirty_since: None,
            stats: LogStats::default(),
            direct,
            prealloc_ok: true,
            buf_hint: MIN_WRITE_BUF,
            job_in_flight: false,
            fill: None,
            fill_paused_until: None,
            read_ahead: Default::default(),
            epochs,
            epochs_version: 0,
            epochs_persisted: 0,
        };
        // The open write buffer for the active segment, starting with its tail page.
        match st.segments.values().next_back() {
            Some(seg) => {
                let mut p = Pending::new(seg, align_down(seg.size), leo);
                p.buf
                    .extend_from_slice(&tail_page(seg.file.as_ref(), &seg.path, seg.size).await?);
                st.pending.push_back(p);
            }
            None => {
                let seg = Segment::new(&st.dir, leo, now);
                st.pending.push_back(Pending::new(&seg, 0, leo));
                st.segments.insert(leo, seg);
            }
        }
        let shared = Rc::new(Shared {
            state: RefCell::new(st),
            structure: Default::default(),
            epoch_file: Default::default(),
            written: Event::new(),
            work: Event::new(),
            fill_done: Event::new(),
            read_ahead_done: Event::new(),
            writer: Cell::new(None),
        });
        let handle = compio::runtime::spawn(writer_loop(shared.clone()));
        shared.writer.set(Some(handle));
        Ok(PartitionLog { shared })
    }
}

/// The leader-epoch cache at open, as Kafka's log loading builds it: the checkpoint
/// file's entries (none if it is missing, as for logs written before the cache
/// existed, or malformed: a warning, as in Kafka), then the epochs of the batches the
/// recovery scan walked (`recovered`, those above the latest epoch, as Kafka's segment
/// recovery assigns them), truncated from the end at the recovered log end and from
/// the start at the log start. Written back when that changed it.
async fn load_epochs(
    dir: &Path,
    recovered: &[(i32, i64)],
    log_start: i64,
    leo: i64,
) -> Result<EpochCache> {
    let path = dir.join(EPOCH_CHECKPOINT_FILE);
    let (mut epochs, mut stale) = match std::fs::read(&path) {
        Ok(data) => match EpochCache::parse_checkpoint(&data) {
            Ok(c) => (c, false),
            Err(reason) => {
                tracing::warn!(file = %path.display(), %reason, "malformed leader epoch checkpoint; rebuilding the epoch cache from the log");
                (EpochCache::default(), true)
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => (EpochCache::default(), false),
        Err(e) => return Err(LogError::io(format!("reading {}", path.display()), e)),
    };
    for &(epoch, base) in recovered {
        if epochs.latest().is_none_or(|(latest, _)| epoch > latest) {
            stale |= epochs.assign(epoch, base);
        }
    }
    stale |= epochs.truncate_from_end(leo);
    stale |= epochs.truncate_from_start(log_start);
    if stale {
        fio::replace_file(dir, &path, epochs.checkpoint_bytes())
            .await
            .map_err(io_err(format!("writing {}", path.display())))?;
    }
    Ok(epochs)
}

/// The written bytes of a segment's last, partly filled page: the start of the next
/// write buffer (the next write rewrites that page whole).
pub(super) async fn tail_page(file: Option<&File>, path: &Path, size: u64) -> Result<Vec<u8>> {
    let pos = align_down(size);
    let tail = (size - pos) as usize;
    if tail == 0 {
        return Ok(Vec::new());
    }
    let file = file.ok_or(LogError::Closed)?;
    let page = fio::read_aligned(file, pos, ALIGN)
        .await
        .map_err(io_err(format!("reading {}", path.display())))?;
    if page.len() < tail {
        return Err(LogError::Corrupt {
            path: path.to_path_buf(),
            reason: "tail page shorter than scanned data".into(),
        });
    }
    Ok(page.as_slice()[..tail].to_vec())
}
