//! The log cleaner: compaction of topics whose `cleanup.policy` contains `compact`.
//!
//! Owner shards decide what to clean (`schedule`: dirty ratio, compaction lags,
//! tombstone horizons) and hand jobs to a small pool of cleaner threads (Kafka's
//! `log.cleaner.threads`), which do the heavy part off the shards' hot loops: read the
//! sealed segments, map keys to their latest offsets (`offset_map`, bounded by
//! `log.cleaner.dedupe.buffer.size`), keep what the rules keep (`filter`) and write
//! cleaned segments (`job`), paced by `log.cleaner.io.max.bytes.per.second`
//! (`throttle`) and at a lower CPU priority than the shards. The owner shard then
//! swaps the cleaned segments in (`PartitionLog::replace_segments`), crash-safely.

mod filter;
mod job;
mod offset_map;
pub mod schedule;
mod throttle;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

pub use job::{CleanJob, CleanOutcome};

use crate::config::LogCleanerConfig;
use crate::metrics::CleanerTotals;
use job::Limits;
use throttle::Throttle;

/// Broker-wide cleaner counters (for `/metrics`).
#[derive(Default)]
struct CleanerStats {
    pub runs: AtomicU64,
    pub failures: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    pub records_removed: AtomicU64,
    /// Wall time spent cleaning, in microseconds.
    pub busy_micros: AtomicU64,
    /// End of the last finished run, ms since the epoch (0: none yet).
    pub last_run_end_ms: AtomicU64,
    /// Duration of the last finished run, in microseconds.
    pub last_run_micros: AtomicU64,
    /// Offset-map use of the last run, in per mille.
    pub last_map_utilization_permille: AtomicU64,
}

struct Queue {
    jobs: Vec<CleanJob>,
    stopping: bool,
    /// Cleaner threads running, and how many there should be (`log.cleaner.threads`,
    /// changeable at runtime: threads beyond it leave after their current job).
    threads: usize,
    wanted: usize,
    /// Threads started so far (for their names).
    started: usize,
    limits: Limits,
}

struct Inner {
    queue: Mutex<Queue>,
    wake: Condvar,
    throttle: Throttle,
    /// `log.cleaner.backoff.ms`.
    backoff_ms: AtomicU64,
    stats: CleanerStats,
}

fn limits_of(config: &LogCleanerConfig) -> Limits {
    Limits {
        map_bytes: config.dedupe_buffer_size / config.threads.max(1),
        load_factor: config.io_buffer_load_factor,
        io_buffer_bytes: config.io_buffer_size.max(64 * 1024),
    }
}

/// The cleaner threads and their queue. Cheap to clone.
#[derive(Clone)]
pub struct Cleaner {
    inner: Arc<Inner>,
    enabled: bool,
}

impl Cleaner {
    /// Start `config.threads` cleaner threads (none when the cleaner is disabled).
    pub fn start(config: &LogCleanerConfig) -> anyhow::Result<Cleaner> {
        let inner = Arc::new(Inner {
            queue: Mutex::new(Queue {
                jobs: Vec::new(),
                stopping: false,
                threads: 0,
                wanted: 0,
                started: 0,
                limits: limits_of(config),
            }),
            wake: Condvar::new(),
            throttle: Throttle::new(config.io_max_bytes_per_second),
            backoff_ms: AtomicU64::new(config.backoff_ms),
            stats: CleanerStats::default(),
        });
        let cleaner = Cleaner {
            inner,
            enabled: config.enable,
        };
        cleaner.reconfigure(config)?;
        Ok(cleaner)
    }

    /// Apply changed `log.cleaner.*` settings (dynamic broker configs): the rate at once,
    /// map and buffer sizes from the next job on, threads started or told to leave after
    /// their current job. `enable` is not dynamic (as in Kafka).
    pub fn reconfigure(&self, config: &LogCleanerConfig) -> anyhow::Result<()> {
        self.inner.throttle.set_rate(config.io_max_bytes_per_second);
        self.inner
            .backoff_ms
            .store(config.backoff_ms, Ordering::Relaxed);
        let mut q = self.inner.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.limits = limits_of(config);
        if !self.enabled || q.stopping {
            return Ok(());
        }
        q.wanted = config.threads.max(1);
        while q.threads < q.wanted {
            let inner = self.inner.clone();
            std::thread::Builder::new()
                .name(format!("spate-cleaner-{}", q.started))
                .spawn(move || work(&inner))?;
            q.threads += 1;
            q.started += 1;
        }
        drop(q);
        // Idle threads beyond the new count wake up to leave.
        self.inner.wake.notify_all();
        Ok(())
    }

    /// How often shards look for partitions to clean (`log.cleaner.backoff.ms`).
    pub fn backoff(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.inner.backoff_ms.load(Ordering::Relaxed))
    }

    /// Is compaction on (`log.cleaner.enable`)?
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Queue a job (one per partition at a time: the owner shard keeps track).
    pub fn submit(&self, job: CleanJob) {
        let mut q = self.inner.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.stopping {
            return;
        }
        q.jobs.push(job);
        drop(q);
        self.inner.wake.notify_one();
    }

    /// Let the threads finish their current job and stop; queued jobs are dropped.
    pub fn stop(&self) {
        let mut q = self.inner.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.stopping = true;
        q.jobs.clear();
        drop(q);
        self.inner.wake.notify_all();
    }

    /// The counters now.
    pub fn totals(&self) -> CleanerTotals {
        let s = &self.inner.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CleanerTotals {
            runs: get(&s.runs),
            failures: get(&s.failures),
            bytes_read: get(&s.bytes_read),
            bytes_written: get(&s.bytes_written),
            records_removed: get(&s.records_removed),
            busy_seconds: get(&s.busy_micros) as f64 / 1e6,
            last_run_end_ms: get(&s.last_run_end_ms),
            last_run_seconds: get(&s.last_run_micros) as f64 / 1e6,
            last_map_utilization: get(&s.last_map_utilization_permille) as f64 / 1000.0,
        }
    }
}

/// A cleaner thread: take the dirtiest queued job, run it, report to its shard.
fn work(inner: &Inner) {
    lower_priority();
    loop {
        let (job, limits) = {
            let mut q = inner.queue.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if q.stopping {
                    return;
                }
                if q.threads > q.wanted {
                    q.threads -= 1;
                    return;
                }
                if !q.jobs.is_empty() {
                    let dirtiest = (0..q.jobs.len())
                        .max_by(|&a, &b| q.jobs[a].dirty_ratio.total_cmp(&q.jobs[b].dirty_ratio))
                        .unwrap_or(0);
                    break (q.jobs.swap_remove(dirtiest), q.limits);
                }
                q = inner.wake.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        let result = job::run(&job, &limits, &inner.throttle);
        let s = &inner.stats;
        match &result {
            Ok(r) => {
                s.runs.fetch_add(1, Ordering::Relaxed);
                s.bytes_read.fetch_add(r.bytes_read, Ordering::Relaxed);
                s.bytes_written
                    .fetch_add(r.bytes_written, Ordering::Relaxed);
                s.records_removed
                    .fetch_add(r.records_read - r.records_kept, Ordering::Relaxed);
                let micros = (r.seconds * 1e6) as u64;
                s.busy_micros.fetch_add(micros, Ordering::Relaxed);
                s.last_run_micros.store(micros, Ordering::Relaxed);
                s.last_run_end_ms
                    .store(crate::partition::now_ms().max(0) as u64, Ordering::Relaxed);
                s.last_map_utilization_permille
                    .store((r.map_utilization * 1000.0) as u64, Ordering::Relaxed);
            }
            Err(_) => {
                s.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        let _ = job.reply.send(CleanOutcome {
            partition: job.partition.clone(),
            topic_id: job.topic_id,
            result: result.map_err(|e| e.to_string()),
        });
    }
}

/// Cleaner threads yield the CPU to the shards: nice 10 (Linux applies it per thread).
fn lower_priority() {
    // SAFETY: setpriority on the calling thread's own id.
    let rc = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10)
    };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower the cleaner thread's priority");
    }
}
