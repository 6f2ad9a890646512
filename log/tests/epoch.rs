//! The leader-epoch cache of a log: stamping on leader appends, followers' epochs,
//! end offsets per epoch, truncations, and the `leader-epoch-checkpoint` file across
//! close, crash and reopen.

mod common;

use std::path::Path;

use bytes::Bytes;
use common::*;
use spate_log::batch::{build_test_batch, crc_ok, parse_header, set_partition_leader_epoch};
use spate_log::{LogConfig, LogError, PartitionLog, UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET};

const UNDEFINED: (i32, i64) = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);

/// A batch as a leader wrote it: its offsets and epoch (a follower appends it as is).
fn leader_batch(base: i64, count: i32, epoch: i32, seed: u64) -> Bytes {
    let mut b = build_test_batch(base, count, seed as i64, &payload(seed, 200));
    set_partition_leader_epoch(&mut b, epoch);
    Bytes::from(b)
}

fn checkpoint(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join("leader-epoch-checkpoint")).ok()
}

/// The checkpoint text for `entries`.
fn checkpoint_of(entries: &[(i32, i64)]) -> String {
    let mut s = format!("0\n{}\n", entries.len());
    for (e, o) in entries {
        s.push_str(&format!("{e} {o}\n"));
    }
    s
}

/// The epoch field of the batch at `offset`, as read back (its CRC checked).
async fn epoch_at(log: &PartitionLog, offset: i64) -> i32 {
    let r = log.read(offset, 1, true).await.unwrap();
    let b = &r.batches[0];
    let h = parse_header(b).unwrap();
    assert!(h.base_offset <= offset && offset <= h.last_offset());
    assert!(
        crc_ok(b, &h),
        "the stamped batch at {offset} keeps a valid CRC"
    );
    h.partition_leader_epoch
}

/// A follower's log holding epochs 1 at 0, 2 at 5 and 3 at 8, ending at 10.
async fn follower_log(dir: &Path, cfg: LogConfig) -> PartitionLog {
    let log = PartitionLog::open(dir.to_path_buf(), cfg).await.unwrap();
    for (base, count, epoch) in [(0, 3, 1), (3, 2, 1), (5, 3, 2), (8, 2, 3)] {
        log.append_with_offsets(leader_batch(base, count, epoch, base as u64))
            .await
            .unwrap();
    }
    assert_eq!(log.epoch_entries(), vec![(1, 0), (2, 5), (3, 8)]);
    log
}

#[compio::test]
async fn leader_appends_carry_the_current_epoch() {
    let t = tempdir();
    let dir = t.path().join("p-0");
    let log = PartitionLog::open(dir.clone(), small_config())
        .await
        .unwrap();
    // No epoch yet: batches keep what the client sent (-1), the cache stays empty.
    log.append(batch(1, 2, 1, 100)).await.unwrap();
    assert_eq!(epoch_at(&log, 0).await, -1);
    assert_eq!(log.latest_epoch(), None);
    assert_eq!(log.epoch_entries(), vec![]);
    assert_eq!(log.end_offset_for_epoch(0), UNDEFINED);
    // Nor does a client's epoch make one (Kafka's leader always overwrites it).
    let mut b = build_test_batch(0, 1, 0, &payload(9, 100));
    set_partition_leader_epoch(&mut b, 9);
    log.append(Bytes::from(b)).await.unwrap();
    assert_eq!(epoch_at(&log, 2).await, 9);
    assert_eq!(log.epoch_entries(), vec![]);
    log.truncate_to(2).await.unwrap();

    log.assign_leader_epoch(3).await.unwrap();
    assert_eq!(log.epoch_entries(), vec![(3, 2)]);
    assert_eq!(checkpoint(&dir).unwrap(), checkpoint_of(&[(3, 2)]));
    log.append(batch(2, 3, 2, 100)).await.unwrap();
    log.append(batch(3, 1, 3, 100)).await.unwrap();
    assert_eq!(epoch_at(&log, 2).await, 3);
    assert_eq!(epoch_at(&log, 5).await, 3);
    assert_eq!(epoch_at(&log, 0).await, -1, "older batches are not touched");

    // Not above the latest: nothing changes.
    log.assign_leader_epoch(3).await.unwrap();
    log.assign_leader_epoch(1).await.unwrap();
    assert_eq!(log.epoch_entries(), vec![(3, 2)]);

    log.assign_leader_epoch(5).await.unwrap();
    log.append(batch(4, 2, 4, 100)).await.unwrap();
    assert_eq!(epoch_at(&log, 6).await, 5);
    assert_eq!(log.epoch_entries(), vec![(3, 2), (5, 6)]);
    assert_eq!(log.latest_epoch(), Some(5));
    assert_eq!(checkpoint(&dir).unwrap(), checkpoint_of(&[(3, 2), (5, 6)]));

    // End offsets, every branch of Kafka's endOffsetFor.
    assert_eq!(log.end_offset_for_epoch(5), (5, 8));
    assert_eq!(log.end_offset_for_epoch(3), (3, 6));
    assert_eq!(log.end_offset_for_epoch(4), (3, 6));
    assert_eq!(log.end_offset_for_epoch(2), (2, 2));
    assert_eq!(log.end_offset_for_epoch(6), UNDEFINED);
    assert_eq!(log.end_offset_for_epoch(UNDEFINED_EPOCH), UNDEFINED);

    // The latest epoch ends at the written end, not at the end of unwritten appends.
    let (_, ticket) = log.begin_append(batch(5, 1, 5, 100), true).unwrap();
    assert_eq!(log.log_end_offset(), 9);
    assert_eq!(log.written_end_offset(), 8);
    assert_eq!(log.end_offset_for_epoch(5), (5, 8));
    log.written(ticket).await.unwrap();
    assert_eq!(log.end_offset_for_epoch(5), (5, 9));
    log.close().await.unwrap();
}

#[compio::test]
async fn follower_appends_keep_and_record_the_leaders_epochs() {
    let t = tempdir();
    let dir = t.path().join("p-0");
    let log = follower_log(&dir, small_config()).await;
    // Written: the checkpoint already has every epoch (persisted before the write).
    assert_eq!(
        checkpoint(&dir).unwrap(),
        checkpoint_of(&[(1, 0), (2, 5), (3, 8)])
    );
    for (offset, epoch) in [(0, 1), (4, 1), (5, 2), (9, 3)] {
        assert_eq!(epoch_at(&log, offset).await, epoch);
    }
    // Two batches in one call, the second a new epoch; then one without an epoch.
    let mut two = leader_batch(10, 2, 3, 10).to_vec();
    two.extend_from_slice(&leader_batch(12, 1, 6, 12));
    log.append_with_offsets(Bytes::from(two)).await.unwrap();
    log.append_with_offsets(leader_batch(13, 1, -1, 13))
        .await
        .unwrap();
    assert_eq!(log.epoch_entries(), vec![(1, 0), (2, 5), (3, 8), (6, 12)]);
    assert_eq!(epoch_at(&log, 13).await, -1);
    assert_eq!(log.end_offset_for_epoch(2), (2, 8));
    assert_eq!(log.end_offset_for_epoch(0), (0, 0));
    assert_eq!(log.end_offset_for_epoch(4), (3, 12));
    assert_eq!(log.end_offset_for_epoch(6), (6, 14));
    log.close().await.unwrap();
}

#[compio::test]
async fn truncate_to_trims_the_cache() {
    let t = tempdir();
    let dir = t.path().join("p-0");
    let log = follower_log(&dir, small_config()).await;
    assert_eq!(log.truncate_to(9).await.unwrap(), 8);
    assert_eq!(log.epoch_entries(), vec![(1, 0), (2, 5)]);
    assert_eq!(checkpoint(&dir).unwrap(), checkpoint_of(&[(1, 0), (2, 5)]));
    assert_eq!(log.truncate_to(6).await.unwrap(), 5);
    assert_eq!(log.epoch_entries(), vec![(1, 0)]);
    // A new leader's epoch carries on from the cut.
    log.append_with_offsets(leader_batch(5, 1, 4, 50))
        .await
        .unwrap();
    assert_eq!(log.epoch_entries(), vec![(1, 0), (4, 5)]);
    log.close().await.unwrap();
    let log = PartitionLog::open(dir.clone(), small_config())
        .await
        .unwrap();
    assert_eq!(log.epoch_entries(), vec![(1, 0), (4, 5)]);
    log.close().await.unwrap();
}

#[compio::test]
async fn log_start_moves_trim_the_cache() {
    let t = tempdir();
    let dir = t.path().join("p-0");
    let log = follower_log(&dir, small_config()).await;
    assert_eq!(log.delete_records(6).await.unwrap(), 6);
    assert_eq!(log.epoch_entries(), vec![(2, 6), (3, 8)]);
    assert_eq!(checkpoint(&dir).unwrap(), checkpoint_of(&[(2, 6), (3, 8)]));
    assert_eq!(log.delete_records(8).await.unwrap(), 8);
    assert_eq!(log.epoch_entries(), vec![(3, 8)]);
    log.close().await.unwrap();

    // Retention: whole segments of old epochs go.
    let dir = t.path().join("p-1");
    const DAY: i64 = 24 * 3600 * 1000;
    let (clock, _) = TestClock::start_at(100 * DAY);
    let cfg = LogConfig {
        retention_ms: 7 * DAY,
        ..small_config()
    };
    let log = PartitionLog::open_with_clock(dir.clone(), cfg, clock)
        .await
        .unwrap();
    // Epoch 1: old data over several segments; epoch 2: recent data.
    for i in 0..60 {
        log.append_with_offsets(Bytes::from(build_epoch_batch(i, 1, 80 * DAY)))
            .await
            .unwrap();
    }
    for i in 60..120 {
        log.append_with_offsets(Bytes::from(build_epoch_batch(i, 2, 99 * DAY)))
            .await
            .unwrap();
    }
    assert_eq!(log.epoch_entries(), vec![(1, 0), (2, 60)]);
    assert!(log.enforce_retention(100 * DAY).await.unwrap() > 0);
    let start = log.log_start_offset();
    assert!(start > 0 && start <= 60, "start {start}");
    let want = if start == 60 {
        vec![(2, 60)]
    } else {
        vec![(1, start), (2, 60)]
    };
    assert_eq!(log.epoch_entries(), want);
    assert_eq!(checkpoint(&dir).unwrap(), checkpoint_of(&want));
    log.close().await.unwrap();
}

/// One 2000-byte record at offset `i` in epoch `epoch`, timestamp `ts + i`.
fn build_epoch_batch(i: i64, epoch: i32, ts: i64) -> Vec<u8> {
    let mut b = build_test_batch(i, 1, ts + i, &payload(i as u64, 2000));
    set_partition_leader_epoch(&mut b, epoch);
    b
}

fn log_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".log"))
        .collect();
    v.sort();
    v
}

#[compio::test]
async fn truncate_fully_and_start_at_empties_the_log() {
    let t = tempdir();
    let dir = t.path().join("p-0");
    let log = PartitionLog::open(dir.clone(), small_config())
        .await
        .unwrap();
    for i in 0..100 {
        log.append_with_offsets(Bytes::from(build_epoch_batch(i, 1 + (i / 40) as i32, 0)))
            .await
            .unwrap();
    }
    assert!(log.segment_count() > 1);
    assert_eq!(log.epoch_entries(), vec![(1, 0), (2, 40), (3, 80)]);

    log.truncate_fully_and_start_at(1000).await.unwrap();
    assert_eq!(log.log_start_offset(), 1000);
    assert_eq!(log.log_end_offset(), 1000);
    assert_eq!(log.written_end_offset(), 1000);
    assert_eq!(log.segment_bases(), vec![1000]);
    assert_eq!(log.epoch_entries(), vec![]);
    assert_eq!(checkpoint(&dir).unwrap(), checkpoint_of(&[]));
    assert!(log_files(&dir).is_empty(), "{:?}", log_files(&dir));
    for below in [0, 50, 999] {
        assert!(matches!(
            log.read(below, 1000, true).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
    }
    assert!(log.read(1000, 1000, true).await.unwrap().batches.is_empty());

    // Appends carry on from there, as a follower's (with the leader's epoch).
    log.append_with_offsets(Bytes::from(build_epoch_batch(1000, 7, 0)))
        .await
        .unwrap();
    let info = log.append(batch(1, 2, 0, 100)).await.unwrap();
    assert_eq!(info.base_offset, 1001);
    assert_eq!(log.epoch_entries(), vec![(7, 1000)]);
    assert_eq!(epoch_at(&log, 1001).await, 7, "stamped as the leader's");
    log.close().await.unwrap();
    assert_eq!(
        log_files(&dir),
        vec![format!("{:020}.log", 1000)],
        "only the new segment"
    );

    let log = PartitionLog::open(dir.clone(), small_config())
        .await
        .unwrap();
    assert_eq!(log.log_start_offset(), 1000);
    assert_eq!(log.log_end_offset(), 1003);
    assert_eq!(log.epoch_entries(), vec![(7, 1000)]);
    assert_eq!(epoch_at(&log, 1000).await, 7);

    // Below the current end, then a crash (no close): the reopened log is empty there.
    log.truncate_fully_and_start_at(500).await.unwrap();
    assert_eq!(log.epoch_entries(), vec![]);
    drop(log);
    let log = PartitionLog::open(dir.clone(), small_config())
        .await
        .unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (500, 500));
    assert_eq!(log.epoch_entries(), vec![]);
    let info = log.append(batch(2, 1, 0, 100)).await.unwrap();
    assert_eq!(info.base_offset, 500);
    log.close().await.unwrap();
}

#[compio::test]
async fn checkpoint_survives_close_and_crash() {
    let t = tempdir();
    let dir = t.path().join("p-0");
    let log = PartitionLog::open(dir.clone(), small_config())
        .await
        .unwrap();
    log.assign_leader_epoch(1).await.unwrap();
    for i in 0..5 {
        log.append(batch(i, 2, 0, 500)).await.unwrap();
    }
    log.close().await.unwrap();

    let log = PartitionLog::open(dir.clone(), small_config())
        .await
        .unwrap();
    assert_eq!(log.epoch_entries(), vec![(1, 0)]);
    log.assign_leader_epoch(2).await.unwrap();
    log.append(batch(9, 1, 0, 500)).await.unwrap();
    // A crash: no close. The last written batch's epoch is in the checkpoint.
    drop(log);
    assert_eq!(checkpoint(&dir).unwrap(), checkpoint_of(&[(1, 0), (2, 10)]));
    let log = PartitionLog::open(dir.clone(), small_config())
        .await
        .unwrap();
    assert_eq!(log.epoch_entries(), vec![(1, 0), (2, 10)]);
    assert_eq!(log.latest_epoch(), Some(2));
    // A leader's epoch with nothing appended in it is dropped at open (Kafka does so:
    // the new leader assigns its epoch again).
    log.assign_leader_epoch(3).await.unwrap();
    assert_eq!(log.epoch_entries(), vec![(1, 0), (2, 10), (3, 11)]);
    drop(log);
    let log = PartitionLog::open(dir.clone(), small_config())
        .await
        .unwrap();
    assert_eq!(log.epoch_entries(), vec![(1, 0), (2, 10)]);
    assert_eq!(checkpoint(&dir).unwrap(), checkpoint_of(&[(1, 0), (2, 10)]));
    drop(log);

    // Without a checkpoint (a log from before the cache) the recovery scan of the
    // active segment finds the epochs; a malformed one is rebuilt the same way.
    for content in [None, Some("0\n2\n1 0\n")] {
        match content {
            None => std::fs::remove_file(dir.join("leader-epoch-checkpoint")).unwrap(),
            Some(c) => std::fs::write(dir.join("leader-epoch-checkpoint"), c).unwrap(),
        }
        let log = PartitionLog::open(dir.clone(), small_config())
            .await
            .unwrap();
        assert_eq!(log.epoch_entries(), vec![(1, 0), (2, 10)], "{content:?}");
        drop(log);
        assert_eq!(checkpoint(&dir).unwrap(), checkpoint_of(&[(1, 0), (2, 10)]));
    }
}

#[compio::test]
async fn logs_without_epochs_write_no_checkpoint() {
    let t = tempdir();
    let dir = t.path().join("p-0");
    let log = PartitionLog::open(dir.clone(), small_config())
        .await
        .unwrap();
    log.append(batch(1, 2, 0, 100)).await.unwrap();
    log.close().await.unwrap();
    let log = PartitionLog::open(dir.clone(), small_config())
        .await
        .unwrap();
    assert_eq!(log.epoch_entries(), vec![]);
    log.close().await.unwrap();
    assert_eq!(checkpoint(&dir), None);
}

#[compio::test]
async fn a_failed_write_drops_the_epochs_of_discarded_batches() {
    let t = tempdir();
    let Some(fs) = Tmpfs::mount(&t.path().join("mnt"), "1m") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let dir = fs.0.join("p-0");
    let ballast = fs.0.join("ballast");
    std::fs::write(&ballast, vec![1u8; 256 * 1024]).unwrap();
    let cfg = LogConfig {
        segment_bytes: 256 * 1024,
        preallocate_bytes: 128 * 1024,
        cache_bytes: 0,
        ..LogConfig::default()
    };
    let log = PartitionLog::open(dir.clone(), cfg.clone()).await.unwrap();
    // A follower appending a new epoch with every batch, two writes at a time, until
    // the disk is full.
    let mut acked = Vec::new();
    let mut next = 0i64;
    let mut failed = false;
    for _ in 0..200 {
        let mut tickets = Vec::new();
        for _ in 0..2 {
            let epoch = next as i32;
            let mut b = build_test_batch(next, 1, 0, &payload(next as u64, 8000));
            set_partition_leader_epoch(&mut b, epoch);
            match log.begin_append(Bytes::from(b), false) {
                Ok((_, ticket)) => tickets.push((epoch, next, ticket)),
                Err(_) => break,
            }
            next += 1;
        }
        for (epoch, base, ticket) in tickets {
            match log.written(ticket).await {
                Ok(()) => acked.push((epoch, base)),
                Err(_) => failed = true,
            }
        }
        if failed {
            break;
        }
    }
    assert!(failed, "the disk never filled");
    assert!(log.is_offline());
    let end = log.written_end_offset();
    assert_eq!(end, acked.len() as i64);
    // Only the epochs of written batches are left, and one starting exactly at the
    // written end (kept: it could be a leader's current epoch with nothing written yet).
    let mut want = acked.clone();
    want.push((end as i32, end));
    assert_eq!(log.epoch_entries(), want);
    assert_eq!(log.end_offset_for_epoch(end as i32), (end as i32, end));

    // Space again: the log takes writes after its retry time; the next write persists
    // the trimmed cache with the new epoch.
    std::fs::remove_file(&ballast).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let epoch = 100_000;
    let mut b = build_test_batch(end, 1, 0, &payload(1, 100));
    set_partition_leader_epoch(&mut b, epoch);
    let b = Bytes::from(b);
    loop {
        match log.append_with_offsets(b.clone()).await {
            Ok(_) => break,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "no retry: {e}");
                compio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
    acked.push((epoch, end));
    assert_eq!(log.epoch_entries(), acked);
    assert_eq!(checkpoint(&dir).unwrap(), checkpoint_of(&acked));
    log.close().await.unwrap();
    let log = PartitionLog::open(dir.clone(), cfg).await.unwrap();
    assert_eq!(log.epoch_entries(), acked);
    log.close().await.unwrap();
}
