mod common;

use bytes::Bytes;
use common::*;
use futures_util::future::join_all;
use spate_log::{LogConfig, LogError, PartitionLog};

/// (base offset, expected bytes on disk) of every appended batch.
type Model = Vec<(i64, Vec<u8>)>;

async fn fill(log: &PartitionLog, n: u64, seed0: u64, model: &mut Model) {
    for i in 0..n {
        let seed = seed0 + i;
        let count = (seed % 5) as i32 + 1;
        let len = 50 + (seed as usize * 37) % 3000;
        let b = batch(seed, count, 1_000 + seed as i64, len);
        let info = log.append(b.clone()).await.unwrap();
        assert_eq!(info.last_offset - info.base_offset, count as i64 - 1);
        model.push((info.base_offset, with_base(&b, info.base_offset)));
    }
}

/// Read at every offset and check that the first batch returned contains it and that
/// the batches returned match the model byte for byte.
async fn check_all_offsets(log: &PartitionLog, model: &Model) {
    let end = log.written_end_offset();
    let start = log.log_start_offset();
    for off in start..end {
        let r = log.read(off, 10_000, true).await.unwrap();
        assert!(!r.batches.is_empty(), "no batch at {off}");
        let first = &r.batches[0];
        assert!(
            base_of(first) <= off && last_of(first) >= off,
            "offset {off}"
        );
        let idx = model
            .iter()
            .position(|(b, _)| *b == base_of(first))
            .unwrap();
        for (k, got) in r.batches.iter().enumerate() {
            assert_eq!(
                &got[..],
                &model[idx + k].1[..],
                "batch {} at read offset {off}",
                idx + k
            );
        }
        assert!(r.batches.len() == 1 || r.size_bytes() <= 10_000);
    }
}

#[compio::test]
async fn round_trip_across_rolls_and_reopen() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    let mut model = Model::new();
    let log = PartitionLog::open(path.clone(), small_config())
        .await
        .unwrap();
    assert!(log.is_direct_io());
    fill(&log, 300, 1, &mut model).await;
    assert!(log.segment_count() > 5, "segments: {}", log.segment_count());
    assert_eq!(log.written_end_offset(), log.log_end_offset());
    check_all_offsets(&log, &model).await;
    assert!(log.stats().cache_hits > 0);
    let end = log.log_end_offset();
    log.close().await.unwrap();

    // Reopen: everything from disk (cache empty), then keep appending.
    let log = PartitionLog::open(path.clone(), small_config())
        .await
        .unwrap();
    assert_eq!(log.log_end_offset(), end);
    check_all_offsets(&log, &model).await;
    fill(&log, 50, 1000, &mut model).await;
    check_all_offsets(&log, &model).await;
    drop(log);

    // Reopen after a drop without close (active segment recovered by scan).
    let cfg = LogConfig {
        cache_bytes: 0,
        ..small_config()
    };
    let log = PartitionLog::open(path, cfg).await.unwrap();
    check_all_offsets(&log, &model).await;
    assert_eq!(log.stats().cache_hits, 0);
    // Segment files are named by 20-digit base offsets.
    for b in log.segment_bases() {
        assert!(log.dir().join(format!("{b:020}.log")).exists());
    }
    assert!(log.dir().join("00000000000000000000.log").exists());
    log.close().await.unwrap();
}

#[compio::test]
async fn read_limits_and_out_of_range() {
    let dir = tempdir();
    let log = PartitionLog::open(dir.path().join("p"), small_config())
        .await
        .unwrap();
    let big = batch(7, 3, 5, 20_000);
    log.append(big.clone()).await.unwrap();
    log.append(batch(8, 1, 6, 100)).await.unwrap();
    // min_one returns one whole batch even if larger than max_bytes.
    let r = log.read(1, 10, true).await.unwrap();
    assert_eq!(r.batches.len(), 1);
    assert_eq!(r.batches[0].len(), big.len());
    let r = log.read(0, 10, false).await.unwrap();
    assert!(r.batches.is_empty());
    // At the end: empty; beyond: error.
    let r = log.read(4, 1000, true).await.unwrap();
    assert!(r.batches.is_empty());
    assert_eq!(r.high_watermark, 4);
    match log.read(5, 1000, true).await {
        Err(LogError::OffsetOutOfRange {
            requested: 5,
            log_start: 0,
            log_end: 4,
        }) => {}
        other => panic!("unexpected {other:?}"),
    }
    // Same from disk.
    let cfg = LogConfig {
        cache_bytes: 0,
        ..small_config()
    };
    log.update_config(cfg);
    let r = log.read(1, 10, true).await.unwrap();
    assert_eq!(&r.batches[0][..], &with_base(&big, 0)[..]);
    let r = log.read(0, 1 << 20, true).await.unwrap();
    assert_eq!(r.batches.len(), 2);
    log.close().await.unwrap();
}

#[compio::test]
async fn group_commit_and_ordered_offsets() {
    let dir = tempdir();
    let log = PartitionLog::open(dir.path().join("g"), small_config())
        .await
        .unwrap();
    log.append(batch(1, 1, 1, 10)).await.unwrap();
    let w0 = log.stats().writes;
    // Issued before any await: offsets assigned in call order, one write for all.
    let futs: Vec<_> = (0..20).map(|i| log.append(batch(i, 2, 1, 100))).collect();
    assert_eq!(log.log_end_offset(), 41);
    assert_eq!(log.written_end_offset(), 1);
    let res = join_all(futs).await;
    for (i, r) in res.into_iter().enumerate() {
        assert_eq!(r.unwrap().base_offset, 1 + 2 * i as i64);
    }
    assert_eq!(
        log.stats().writes - w0,
        1,
        "20 appends must go down in one write"
    );
    // While a write is in flight, more appends pile up into the next single write.
    let first = log.append(batch(100, 1, 1, 100));
    let a = compio::runtime::spawn(first);
    compio::runtime::time::sleep(std::time::Duration::from_millis(0)).await;
    let more: Vec<_> = (0..10)
        .map(|i| log.append(batch(200 + i, 1, 1, 100)))
        .collect();
    a.await.unwrap().unwrap();
    for r in join_all(more).await {
        r.unwrap();
    }
    assert!(log.stats().writes - w0 <= 3);
    log.close().await.unwrap();
}

#[compio::test]
async fn flush_every_write_syncs() {
    let dir = tempdir();
    let cfg = LogConfig {
        flush_messages: 1,
        ..small_config()
    };
    let log = PartitionLog::open(dir.path().join("s"), cfg).await.unwrap();
    for i in 0..5 {
        log.append(batch(i, 1, 1, 100)).await.unwrap();
    }
    assert!(log.stats().syncs >= 5);
    let cfg = LogConfig {
        flush_messages: 10,
        ..small_config()
    };
    log.update_config(cfg);
    let s0 = log.stats().syncs;
    for i in 0..9 {
        log.append(batch(i, 1, 1, 100)).await.unwrap();
    }
    assert_eq!(log.stats().syncs, s0);
    log.append(batch(99, 1, 1, 100)).await.unwrap();
    assert_eq!(log.stats().syncs, s0 + 1);
    // flush.ms: a timer syncs dirty data.
    let cfg = LogConfig {
        flush_ms: 20,
        ..small_config()
    };
    log.update_config(cfg);
    log.append(batch(100, 1, 1, 100)).await.unwrap();
    let s1 = log.stats().syncs;
    compio::runtime::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(log.stats().syncs, s1 + 1);
    log.close().await.unwrap();
}

#[compio::test]
async fn listen_fires_on_write() {
    let dir = tempdir();
    let log = std::rc::Rc::new(
        PartitionLog::open(dir.path().join("l"), small_config())
            .await
            .unwrap(),
    );
    let l = log.listen();
    assert_eq!(log.written_end_offset(), 0);
    let log2 = log.clone();
    let t = compio::runtime::spawn(async move {
        compio::runtime::time::sleep(std::time::Duration::from_millis(20)).await;
        log2.append(batch(1, 1, 1, 10)).await.unwrap();
    });
    l.await;
    assert_eq!(log.written_end_offset(), 1);
    t.await.unwrap();
}

#[compio::test]
async fn append_with_offsets_and_truncate() {
    let dir = tempdir();
    let log = PartitionLog::open(dir.path().join("f"), small_config())
        .await
        .unwrap();
    let b = Bytes::from(spate_log::batch::build_test_batch(
        100,
        5,
        1,
        &payload(1, 100),
    ));
    let info = log.append_with_offsets(b).await.unwrap();
    assert_eq!(
        (info.base_offset, info.last_offset, info.log_end_offset),
        (100, 104, 105)
    );
    assert_eq!(log.segment_bases(), vec![100]);
    let b = Bytes::from(spate_log::batch::build_test_batch(
        104,
        1,
        1,
        &payload(2, 100),
    ));
    assert!(matches!(
        log.append_with_offsets(b).await,
        Err(LogError::InvalidBatch(_))
    ));
    let b = Bytes::from(spate_log::batch::build_test_batch(
        110,
        2,
        1,
        &payload(3, 100),
    ));
    log.append_with_offsets(b).await.unwrap();
    assert_eq!(log.log_end_offset(), 112);
    // Read inside the gap returns the next batch.
    let r = log.read(106, 1000, true).await.unwrap();
    assert_eq!(base_of(&r.batches[0]), 110);
    // Truncate back into the first batch: it goes entirely.
    let leo = log.truncate_to(111).await.unwrap();
    assert_eq!(leo, 110);
    assert_eq!(log.written_end_offset(), 110);
    let info = log.append(batch(5, 1, 1, 50)).await.unwrap();
    assert_eq!(info.base_offset, 110);
    drop(log);
    let log = PartitionLog::open(dir.path().join("f"), small_config())
        .await
        .unwrap();
    assert_eq!(log.log_end_offset(), 111);
    let r = log.read(100, 1 << 20, true).await.unwrap();
    assert_eq!(r.batches.len(), 2);
    log.close().await.unwrap();
}

#[compio::test]
async fn invalid_input_is_rejected() {
    let dir = tempdir();
    let log = PartitionLog::open(dir.path().join("x"), small_config())
        .await
        .unwrap();
    let b = batch(1, 1, 1, 100);
    assert!(matches!(
        log.append(b.slice(..50)).await,
        Err(LogError::InvalidBatch(_))
    ));
    assert!(matches!(
        log.append(b.slice(..b.len() - 1)).await,
        Err(LogError::InvalidBatch(_))
    ));
    let mut v = b.to_vec();
    v[16] = 1;
    assert!(matches!(
        log.append(Bytes::from(v)).await,
        Err(LogError::InvalidBatch(_))
    ));
    assert!(matches!(
        log.append(Bytes::new()).await,
        Err(LogError::InvalidBatch(_))
    ));
    assert!(matches!(
        log.append(batch(1, 1, 1, 100_000)).await,
        Err(LogError::BatchTooLarge { .. })
    ));
    assert_eq!(log.log_end_offset(), 0);
    log.close().await.unwrap();
}

#[compio::test]
async fn delete_removes_directory() {
    let dir = tempdir();
    let p = dir.path().join("d");
    let log = PartitionLog::open(p.clone(), small_config()).await.unwrap();
    log.append(batch(1, 1, 1, 100)).await.unwrap();
    // An append still waiting for the writer when the delete starts.
    let late = log.append(batch(2, 1, 1, 100));
    let grave = dir.path().join("d.0123-delete");
    log.delete(&grave).await.unwrap();
    assert!(!p.exists() && !grave.exists());
    let _ = late.await;
    assert!(
        log.append(batch(3, 1, 1, 100)).await.is_err(),
        "a deleted log takes no appends"
    );
}

#[compio::test]
async fn tmpfs_direct_or_buffered_fallback() {
    // tmpfs rejected O_DIRECT before Linux 6.6; either way the log must work or say why.
    let Ok(t) = tempfile::Builder::new()
        .prefix("spate-log-")
        .tempdir_in("/dev/shm")
    else {
        return;
    };
    let strict = LogConfig {
        allow_buffered_fallback: false,
        ..small_config()
    };
    match PartitionLog::open(t.path().join("strict"), strict).await {
        Ok(log) => {
            // Opening creates no file yet: the first append does.
            match log.append(batch(1, 1, 1, 100)).await {
                Ok(_) => assert!(log.is_direct_io()),
                Err(e) => assert!(e.to_string().contains("O_DIRECT"), "{e}"),
            }
        }
        Err(e) => assert!(e.to_string().contains("O_DIRECT"), "{e}"),
    }
    let log = PartitionLog::open(t.path().join("lenient"), small_config_fallback())
        .await
        .unwrap();
    for i in 0..20 {
        log.append(batch(i, 1, 1, 3000)).await.unwrap();
    }
    let r = log.read(5, 1, true).await.unwrap();
    assert_eq!(base_of(&r.batches[0]), 5);
    log.close().await.unwrap();
    let log = PartitionLog::open(t.path().join("lenient"), small_config_fallback())
        .await
        .unwrap();
    assert_eq!(log.log_end_offset(), 20);
    log.close().await.unwrap();
}

fn small_config_fallback() -> LogConfig {
    LogConfig {
        allow_buffered_fallback: true,
        ..small_config()
    }
}

#[compio::test]
async fn shutdown_through_rc() {
    let dir = tempdir();
    let p = dir.path().join("sd");
    let log = std::rc::Rc::new(PartitionLog::open(p.clone(), small_config()).await.unwrap());
    let f = log.append(batch(1, 3, 1, 100));
    let (a, b) = futures_util::join!(log.shutdown(), log.shutdown());
    a.unwrap();
    b.unwrap();
    assert_eq!(
        f.await.unwrap().base_offset,
        0,
        "appends made before shutdown complete"
    );
    assert!(matches!(
        log.append(batch(2, 1, 1, 100)).await,
        Err(LogError::Closed)
    ));
    assert_eq!(log.read(0, 1000, true).await.unwrap().batches.len(), 1);
    assert!(p.join("clean-shutdown").exists());
    drop(log);
    let log = PartitionLog::open(p, small_config()).await.unwrap();
    assert_eq!(log.log_end_offset(), 3);
    log.close().await.unwrap();
}

#[compio::test]
async fn disk_reads_race_with_writes() {
    // Cache off: readers hit the tail page that the next write is rewriting.
    let dir = tempdir();
    let cfg = LogConfig {
        cache_bytes: 0,
        segment_bytes: 256 * 1024,
        ..small_config()
    };
    let log = std::rc::Rc::new(
        PartitionLog::open(dir.path().join("race"), cfg)
            .await
            .unwrap(),
    );
    let writer = {
        let log = log.clone();
        compio::runtime::spawn(async move {
            let mut window = std::collections::VecDeque::new();
            for i in 0..3000u64 {
                window.push_back(log.append(batch(
                    i,
                    1 + (i % 3) as i32,
                    i as i64,
                    100 + (i as usize * 97) % 3000,
                )));
                if window.len() >= 16 {
                    window.pop_front().unwrap().await.unwrap();
                }
            }
            for f in window {
                f.await.unwrap();
            }
        })
    };
    let mut reads = 0;
    let mut x = 12345u64;
    while !writer.is_finished() {
        let we = log.written_end_offset();
        if we == 0 {
            log.listen().await;
            continue;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        for off in [we - 1, (x % we as u64) as i64] {
            let r = log.read(off, 8192, true).await.unwrap();
            assert!(r.high_watermark >= we);
            assert!(!r.batches.is_empty());
            assert!(base_of(&r.batches[0]) <= off && last_of(&r.batches[0]) >= off);
            for b in &r.batches {
                let h = spate_log::batch::parse_header(b).unwrap();
                assert!(spate_log::batch::crc_ok(b, &h), "torn batch read at {off}");
                assert!(h.last_offset() < r.high_watermark);
            }
            reads += 1;
        }
    }
    writer.await.unwrap();
    assert!(reads > 100, "only {reads} reads");
}

#[compio::test]
async fn preallocation_grows_with_the_segment() {
    use std::os::unix::fs::MetadataExt;
    // One small batch reserves one small step, not a whole preallocation step (10,000
    // partitions with a record each must not reserve 10,000 x 16 MiB).
    let t = tempdir();
    let dir = t.path().join("prealloc");
    let cfg = LogConfig {
        preallocate_bytes: 16 << 20,
        segment_bytes: 1 << 30,
        ..small_config()
    };
    let log = PartitionLog::open(dir.clone(), cfg).await.unwrap();
    log.append(batch(1, 1, 1, 100)).await.unwrap();
    let seg = dir.join(format!("{:020}.log", 0));
    let len = std::fs::metadata(&seg).unwrap().len();
    assert!(len <= 64 * 1024, "first step reserved {len} bytes");
    // Later steps double with the segment, up to the configured step.
    for i in 0..40 {
        log.append(batch(i, 4, 1, 16 * 1024)).await.unwrap();
    }
    let m = std::fs::metadata(&seg).unwrap();
    let written = log.size_bytes();
    assert!(
        m.len() >= written && m.len() <= 2 * written + 64 * 1024,
        "{} reserved for {written} written",
        m.len()
    );
    assert!(m.blocks() * 512 <= 2 * m.len() + 64 * 1024);
    log.close().await.unwrap();
    // Sealed at close: trimmed to its exact size.
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), written);
}

/// With the zero fill on, fills run ahead of the data in the background while appends
/// (some concurrent) go on: every batch reads back byte for byte, before and after a
/// reopen, and fills did happen.
#[compio::test]
async fn zero_fill_ahead_never_touches_data() {
    let dir = tempdir();
    let path = dir.path().join("t-0");
    let cfg = LogConfig {
        zero_ahead_bytes: 128 * 1024,
        ..small_config()
    };
    let mut model = Model::new();
    let log = PartitionLog::open(path.clone(), cfg.clone()).await.unwrap();
    fill(&log, 200, 7, &mut model).await;
    // Appends in flight together, racing the fills.
    let batches: Vec<Bytes> = (0..40)
        .map(|i| batch(5_000 + i, 2, 9_000 + i as i64, 700))
        .collect();
    let infos = join_all(batches.iter().map(|b| log.append(b.clone()))).await;
    for (b, info) in batches.iter().zip(infos) {
        let info = info.unwrap();
        model.push((info.base_offset, with_base(b, info.base_offset)));
    }
    assert!(log.stats().zero_fills > 0, "no fill ran");
    check_all_offsets(&log, &model).await;
    log.close().await.unwrap();
    let log = PartitionLog::open(path, cfg).await.unwrap();
    check_all_offsets(&log, &model).await;
    fill(&log, 50, 3_000, &mut model).await;
    check_all_offsets(&log, &model).await;
}

/// Read sequentially from `from` to the written end in reads of `max` bytes, checking
/// every batch against the model. Returns the number of reads.
async fn read_through(log: &PartitionLog, from: i64, max: usize, model: &Model) -> usize {
    let mut off = from;
    let mut reads = 0;
    while off < log.written_end_offset() {
        let r = log.read(off, max, true).await.unwrap();
        reads += 1;
        assert!(!r.batches.is_empty(), "no batch at {off}");
        let idx = model
            .iter()
            .position(|(b, _)| *b == base_of(&r.batches[0]))
            .unwrap();
        for (k, got) in r.batches.iter().enumerate() {
            assert_eq!(
                &got[..],
                &model[idx + k].1[..],
                "batch {} read at {off}",
                idx + k
            );
        }
        off = last_of(r.batches.last().unwrap()) + 1;
    }
    reads
}

#[compio::test]
async fn read_ahead_serves_a_sequential_reader_and_drops_what_the_log_changed() {
    let dir = tempdir();
    let path = dir.path().join("ra-0");
    let cfg = LogConfig {
        read_ahead_bytes: 16 * 1024,
        ..small_config()
    };
    let mut model = Model::new();
    let log = PartitionLog::open(path.clone(), cfg.clone()).await.unwrap();
    fill(&log, 300, 1, &mut model).await;
    log.close().await.unwrap();

    // Reopened: the cache is empty, everything comes from disk.
    let log = PartitionLog::open(path.clone(), cfg.clone()).await.unwrap();
    assert!(log.segment_count() > 5);
    let reads = read_through(&log, 0, 6000, &model).await as u64;
    let s = log.stats();
    assert!(s.read_aheads > 0, "{s:?}");
    assert!(s.read_ahead_hits > 0, "{s:?}");
    // Most reads were served from read-ahead windows, not by reads of their own.
    assert!(s.disk_reads * 2 < reads, "{reads} reads: {s:?}");

    // Start a stream in the middle, then truncate below where its windows reach and
    // write other batches there: readers must see the new ones.
    let mid = model[150].0;
    let r = log.read(model[147].0, 1, true).await.unwrap();
    assert_eq!(r.batches.len(), 1);
    assert_eq!(base_of(&r.batches[0]), model[147].0);
    // Let the read-ahead finish (it covers the batches from 148 on).
    for _ in 0..1000 {
        if log.stats().read_aheads > s.read_aheads {
            break;
        }
        compio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert!(log.stats().read_aheads > s.read_aheads);
    log.truncate_to(mid).await.unwrap();
    model.truncate(150);
    fill(&log, 40, 5000, &mut model).await;
    read_through(&log, model[148].0, 1 << 20, &model).await;
    read_through(&log, model[140].0, 6000, &model).await;
    log.close().await.unwrap();

    // Read-ahead off: the same reads, all from disk.
    let off_cfg = LogConfig {
        read_ahead_bytes: 0,
        ..cfg
    };
    let log = PartitionLog::open(path, off_cfg).await.unwrap();
    read_through(&log, 0, 6000, &model).await;
    assert_eq!(log.stats().read_aheads, 0);
    log.close().await.unwrap();
}
