//! A full disk: appends that could not be written are never acknowledged, their
//! offsets are assigned again, and the log takes writes again once space is freed,
//! without a reopen. Needs root to mount a small tmpfs (the test says so and passes
//! without it).

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::future::join_all;
use spate_log::{LogConfig, LogError, PartitionLog};

/// Every acknowledged batch reads back, byte for byte, at its offset.
async fn check(log: &PartitionLog, acked: &[(i64, u64)]) {
    for &(base, s) in acked {
        let want = with_base(&batch(s, 3, s as i64, 8_000), base);
        let r = log.read(base, 1, true).await.unwrap();
        assert_eq!(&r.batches[0][..], &want[..], "acknowledged batch at {base}");
    }
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 256 * 1024,
        preallocate_bytes: 128 * 1024,
        cache_bytes: 0,
        ..LogConfig::default()
    }
}

#[compio::test]
async fn full_disk_acknowledges_nothing_unwritten_and_recovers_when_space_is_freed() {
    let t = tempdir();
    let Some(fs) = Tmpfs::mount(&t.path().join("mnt"), "2m") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let dir = fs.0.join("p-0");
    // Ballast to free later.
    let ballast = fs.0.join("ballast");
    std::fs::write(&ballast, vec![1u8; 512 * 1024]).unwrap();

    let log = PartitionLog::open(dir.clone(), config()).await.unwrap();
    let mut acked: Vec<(i64, u64)> = Vec::new();
    let mut seed = 0u64;
    let mut failures = 0;
    // Four appends in flight at a time, so that a failed write discards several.
    'fill: for _ in 0..10_000 {
        let mut round = Vec::new();
        for _ in 0..4 {
            round.push((seed, log.append(batch(seed, 3, seed as i64, 8_000))));
            seed += 1;
        }
        let (seeds, futs): (Vec<u64>, Vec<_>) = round.into_iter().unzip();
        for (s, r) in seeds.into_iter().zip(join_all(futs).await) {
            match r {
                Ok(info) => acked.push((info.base_offset, s)),
                Err(LogError::Offline { reason, .. }) => {
                    assert!(reason.contains("No space left"), "{reason}");
                    failures += 1;
                }
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        if failures > 0 {
            break 'fill;
        }
    }
    assert!(failures > 0, "the disk never filled");
    assert!(!acked.is_empty());
    let written = log.written_end_offset();
    assert_eq!(
        log.log_end_offset(),
        written,
        "unwritten appends were discarded"
    );
    assert!(
        log.writable().is_err(),
        "a full log refuses appends at once"
    );
    assert!(log.is_offline());
    assert!(log.append(batch(99, 1, 1, 10)).await.is_err());
    check(&log, &acked).await;

    // Free space: within the retry interval (and a margin) appends succeed again, at
    // the offsets after the last written one.
    std::fs::remove_file(&ballast).unwrap();
    let started = Instant::now();
    let info = loop {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the log never became writable again"
        );
        if log.writable().is_ok() {
            if let Ok(info) = log.append(batch(seed, 3, seed as i64, 8_000)).await {
                break info;
            }
        }
        compio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        info.base_offset, written,
        "the discarded offsets are assigned again"
    );
    assert!(!log.is_offline(), "a successful write ends the failure");
    acked.push((info.base_offset, seed));
    log.close().await.unwrap();

    let log = PartitionLog::open(dir.clone(), config()).await.unwrap();
    assert_eq!(log.log_end_offset(), written + 3);
    check(&log, &acked).await;
    log.close().await.unwrap();
}
