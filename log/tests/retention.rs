mod common;

use common::*;
use spate_log::{LogConfig, LogError, PartitionLog};

const DAY: i64 = 24 * 3600 * 1000;

#[compio::test]
async fn retention_by_time_uses_largest_timestamp() {
    let t = tempdir();
    let dir = t.path().join("rt");
    let (clock, _now) = TestClock::start_at(100 * DAY);
    let cfg = LogConfig {
        retention_ms: 7 * DAY,
        ..small_config()
    };
    let log = PartitionLog::open_with_clock(dir.clone(), cfg.clone(), clock.clone())
        .await
        .unwrap();
    // Old data (day 80) then recent data (day 99).
    for i in 0..60 {
        log.append(batch(i, 1, 80 * DAY + i as i64, 2000))
            .await
            .unwrap();
    }
    let old_end = log.log_end_offset();
    for i in 0..60 {
        log.append(batch(i, 1, 99 * DAY + i as i64, 2000))
            .await
            .unwrap();
    }
    let before = log.segment_count();
    let deleted = log.enforce_retention(100 * DAY).await.unwrap();
    assert!(deleted > 0);
    assert_eq!(log.segment_count(), before - deleted);
    // Only segments whose largest timestamp is old went; the log start moved.
    let start = log.log_start_offset();
    assert!(
        start > 0 && start <= old_end,
        "start {start} old_end {old_end}"
    );
    assert!(matches!(
        log.read(0, 100, true).await,
        Err(LogError::OffsetOutOfRange { .. })
    ));
    log.read(start, 100, true).await.unwrap();
    // Nothing more to delete now; later everything but the active segment goes.
    assert_eq!(log.enforce_retention(100 * DAY).await.unwrap(), 0);
    let segs = log.segment_count();
    let n = log.enforce_retention(200 * DAY).await.unwrap();
    // All of them, the expired active one included (rolled first); a new empty active
    // segment remains.
    assert_eq!(n, segs);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.log_start_offset(), log.log_end_offset());
    let end = log.log_end_offset();
    drop(log);
    // Log start survives a restart.
    let log = PartitionLog::open_with_clock(dir, cfg, clock)
        .await
        .unwrap();
    assert_eq!(log.log_start_offset(), end);
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(
        log.append(batch(1, 1, 1, 10)).await.unwrap().base_offset,
        end
    );
    log.close().await.unwrap();
}

#[compio::test]
async fn retention_by_size() {
    let t = tempdir();
    let dir = t.path().join("rs");
    let cfg = LogConfig {
        retention_bytes: 200_000,
        retention_ms: -1,
        ..small_config()
    };
    let log = PartitionLog::open(dir.clone(), cfg).await.unwrap();
    for i in 0..300 {
        log.append(batch(i, 1, 1, 2000)).await.unwrap();
    }
    assert!(log.size_bytes() > 500_000);
    let deleted = log.enforce_retention(i64::MAX / 2).await.unwrap();
    assert!(deleted > 0);
    // Kafka's rule: delete the oldest while the rest stays >= retention.bytes.
    assert!(log.size_bytes() >= 200_000, "size {}", log.size_bytes());
    assert!(
        log.size_bytes() < 200_000 + 65_536,
        "size {}",
        log.size_bytes()
    );
    log.close().await.unwrap();
}

#[compio::test]
async fn delete_records_moves_start_and_survives_restart() {
    let t = tempdir();
    let dir = t.path().join("dr");
    let log = PartitionLog::open(dir.clone(), small_config())
        .await
        .unwrap();
    for i in 0..200 {
        log.append(batch(i, 1, 1, 1000)).await.unwrap();
    }
    let segs = log.segment_count();
    let bases = log.segment_bases();
    let target = bases[2] + 5;
    assert_eq!(log.delete_records(target).await.unwrap(), target);
    assert_eq!(log.segment_count(), segs - 2);
    assert!(matches!(
        log.read(target - 1, 100, true).await,
        Err(LogError::OffsetOutOfRange { requested, log_start, .. }) if requested == target - 1 && log_start == target
    ));
    let r = log.read(target, 100, true).await.unwrap();
    assert_eq!(base_of(&r.batches[0]), target);
    // Beyond the end is an error; below the start is a no-op.
    assert!(matches!(
        log.delete_records(10_000).await,
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(log.delete_records(3).await.unwrap(), target);
    drop(log);
    let log = PartitionLog::open(dir, small_config()).await.unwrap();
    assert_eq!(log.log_start_offset(), target);
    assert!(log.read(target - 1, 100, true).await.is_err());
    log.close().await.unwrap();
}

#[compio::test]
async fn timestamp_lookups() {
    let t = tempdir();
    let dir = t.path().join("ts");
    let log = PartitionLog::open(dir.clone(), small_config())
        .await
        .unwrap();
    // Batch i (2 records, offsets 2i..2i+1) has max timestamp 1000 + 10 i.
    for i in 0..300i64 {
        log.append(batch(i as u64, 2, 1000 + 10 * i, 500))
            .await
            .unwrap();
    }
    // One out-of-order older timestamp does not break the index.
    log.append(batch(9999, 1, 500, 500)).await.unwrap();
    assert!(log.segment_count() > 2);
    async fn check(log: &PartitionLog) {
        for i in (0..300i64).step_by(7) {
            let ts = 1000 + 10 * i;
            assert_eq!(
                log.offset_for_timestamp(ts).await.unwrap(),
                Some((2 * i, ts))
            );
            assert_eq!(
                log.offset_for_timestamp(ts - 3).await.unwrap(),
                Some((2 * i, ts))
            );
        }
        assert_eq!(log.offset_for_timestamp(0).await.unwrap(), Some((0, 1000)));
        assert_eq!(log.offset_for_timestamp(10_000_000).await.unwrap(), None);
        assert_eq!(log.max_timestamp(), Some((2 * 299, 1000 + 10 * 299)));
    }
    check(&log).await;
    log.close().await.unwrap();
    let log = PartitionLog::open(dir, small_config()).await.unwrap();
    check(&log).await;
    log.close().await.unwrap();
}
