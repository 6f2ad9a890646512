//! Log engine benchmarks: append throughput (1 KiB / 64 KiB batches, with and without
//! fdatasync per write) and read throughput (batch cache vs O_DIRECT reads).
//!
//! Appends keep a window of `INFLIGHT` appends outstanding, as a shard with many
//! producers would; group commit merges them into single writes.
//!
//! `cargo bench -p spate-log -- --warm-up-time 1 --measurement-time 5`

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use spate_log::batch::build_test_batch;
use spate_log::{LogConfig, PartitionLog};

const INFLIGHT: usize = 64;

/// Yield to the runtime once, so the log's writer task can start a write while the
/// producer keeps appending (as request handlers on a busy shard would).
struct YieldNow(bool);

impl std::future::Future for YieldNow {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

fn bench_dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("spate-log-bench")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn make_batch(size: usize) -> Bytes {
    let payload: Vec<u8> = (0..size.saturating_sub(61))
        .map(|i| (i * 7 + 3) as u8)
        .collect();
    Bytes::from(build_test_batch(0, 10, 1_700_000_000_000, &payload))
}

fn config(sync: bool) -> LogConfig {
    LogConfig {
        segment_bytes: 256 << 20,
        retention_bytes: 1 << 30,
        retention_ms: -1,
        flush_messages: if sync { 1 } else { i64::MAX },
        cache_bytes: 0,
        allow_buffered_fallback: false,
        ..LogConfig::default()
    }
}

fn appends(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    for &size in &[1024usize, 64 * 1024] {
        for &sync in &[false, true] {
            let name = format!("{}KiB{}", size / 1024, if sync { "_fdatasync" } else { "" });
            let rt = compio::runtime::Runtime::new().unwrap();
            let dir = bench_dir(&name);
            let log = rt
                .block_on(PartitionLog::open(dir.clone(), config(sync)))
                .unwrap();
            let batch = make_batch(size);
            g.throughput(Throughput::Bytes(batch.len() as u64));
            g.bench_function(BenchmarkId::from_parameter(&name), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let start = Instant::now();
                        let mut window = VecDeque::with_capacity(INFLIGHT);
                        window.push_back(log.append(batch.clone()));
                        for _ in 1..iters {
                            if window.len() == INFLIGHT {
                                let f = window.pop_front().unwrap();
                                f.await.unwrap();
                            }
                            window.push_back(log.append(batch.clone()));
                            if window.len() % 8 == 0 {
                                YieldNow(false).await;
                            }
                        }
                        for f in window {
                            f.await.unwrap();
                        }
                        let el = start.elapsed();
                        log.enforce_retention(i64::MAX / 2).await.unwrap();
                        el
                    })
                })
            });
            let s = log.stats();
            eprintln!(
                "{name}: {} appends, {} writes ({:.1} batches/write), {} syncs, {} MiB written, {} fresh buffers",
                s.appends,
                s.writes,
                s.batches as f64 / s.writes.max(1) as f64,
                s.syncs,
                s.bytes_written >> 20,
                spate_log::buf::fresh_allocations()
            );
            rt.block_on(log.delete(&log.dir().with_extension("delete")))
                .unwrap();
        }
    }
    g.finish();
}

fn reads(c: &mut Criterion) {
    let mut g = c.benchmark_group("read");
    let size = 64 * 1024;
    let total: usize = 256 << 20;
    let n = total / size;
    for &cached in &[true, false] {
        let name = if cached {
            "cache_1MiB_fetches"
        } else {
            "disk_1MiB_fetches"
        };
        let rt = compio::runtime::Runtime::new().unwrap();
        let cfg = LogConfig {
            cache_bytes: if cached { total + (16 << 20) } else { 0 },
            ..config(false)
        };
        let log = rt
            .block_on(PartitionLog::open(bench_dir(name), cfg))
            .unwrap();
        let batch = make_batch(size);
        let batch_records = 10;
        rt.block_on(async {
            let futs: Vec<_> = (0..n).map(|_| log.append(batch.clone())).collect();
            for f in futs {
                f.await.unwrap();
            }
            log.flush().await.unwrap();
        });
        let end = log.written_end_offset();
        g.throughput(Throughput::Bytes(1 << 20));
        g.bench_function(name, |b| {
            let mut off = 0i64;
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        if off >= end {
                            off = 0;
                        }
                        let r = log.read(off, 1 << 20, true).await.unwrap();
                        off += (r.batches.len() * batch_records) as i64;
                        std::hint::black_box(&r);
                    }
                    start.elapsed()
                })
            })
        });
        let s = log.stats();
        eprintln!(
            "{name}: cache hits {}, disk reads {}",
            s.cache_hits, s.disk_reads
        );
        rt.block_on(log.delete(&log.dir().with_extension("delete")))
            .unwrap();
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5)).sample_size(10);
    targets = appends, reads
}
criterion_main!(benches);
