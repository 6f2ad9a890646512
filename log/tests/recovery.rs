mod common;

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use common::*;
use spate_log::{LogConfig, LogError, PartitionLog};

/// Append `n` batches; return (base offset, size) of each.
async fn fill(dir: &Path, n: u64, cfg: LogConfig) -> Vec<(i64, usize)> {
    let log = PartitionLog::open(dir.to_path_buf(), cfg).await.unwrap();
    let mut out = Vec::new();
    for i in 0..n {
        let b = batch(i, 2, 1000 + i as i64, 300 + (i as usize * 53) % 1500);
        let info = log.append(b.clone()).await.unwrap();
        out.push((info.base_offset, b.len()));
    }
    log.close().await.unwrap();
    out
}

fn seg_file(dir: &Path, base: i64) -> std::path::PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// Position of each batch inside the last segment (base offset `last_base`).
fn positions_in(batches: &[(i64, usize)], seg_base: i64) -> Vec<(i64, u64, usize)> {
    let mut pos = 0u64;
    let mut out = Vec::new();
    for &(b, len) in batches.iter().filter(|(b, _)| *b >= seg_base) {
        out.push((b, pos, len));
        pos += len as u64;
    }
    out
}

fn segment_bases(dir: &Path) -> Vec<i64> {
    let mut bases: Vec<i64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .to_str()?
                .strip_suffix(".log")?
                .parse()
                .ok()
        })
        .collect();
    bases.sort();
    bases
}

async fn expect_end(dir: &Path, cfg: LogConfig, end: i64) {
    let log = PartitionLog::open(dir.to_path_buf(), cfg).await.unwrap();
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(log.written_end_offset(), end);
    // Everything below is readable and intact (CRC checked by a fresh scan via reopen).
    let mut off = log.log_start_offset();
    while off < end {
        let r = log.read(off, 1 << 20, true).await.unwrap();
        assert!(!r.batches.is_empty());
        for b in &r.batches {
            assert_eq!(base_of(b), off);
            off = last_of(b) + 1;
        }
    }
    // And appends continue at the recovered end.
    let info = log.append(batch(999, 1, 5000, 100)).await.unwrap();
    assert_eq!(info.base_offset, end);
    log.close().await.unwrap();
    let log = PartitionLog::open(dir.to_path_buf(), cfg_no_cache())
        .await
        .unwrap();
    assert_eq!(log.log_end_offset(), end + 1);
    log.close().await.unwrap();
}

fn cfg_no_cache() -> LogConfig {
    LogConfig {
        cache_bytes: 0,
        ..small_config()
    }
}

#[compio::test]
async fn torn_last_batch_is_dropped() {
    let t = tempdir();
    let dir = t.path().join("torn");
    let batches = fill(&dir, 120, small_config()).await;
    let last_seg = *PartitionLog::open(dir.clone(), small_config())
        .await
        .unwrap()
        .segment_bases()
        .last()
        .unwrap();
    let pos = positions_in(&batches, last_seg);
    let &(b, p, len) = pos.last().unwrap();
    let f = OpenOptions::new()
        .write(true)
        .open(seg_file(&dir, last_seg))
        .unwrap();
    f.set_len(p + len as u64 / 2).unwrap();
    drop(f);
    expect_end(&dir, small_config(), b).await;
}

#[compio::test]
async fn flipped_byte_truncates_active_segment_there() {
    let t = tempdir();
    let dir = t.path().join("flip");
    let batches = fill(&dir, 120, small_config()).await;
    let last_seg = *PartitionLog::open(dir.clone(), small_config())
        .await
        .unwrap()
        .segment_bases()
        .last()
        .unwrap();
    let pos = positions_in(&batches, last_seg);
    assert!(pos.len() >= 4, "need a few batches in the last segment");
    let (b, p, len) = pos[pos.len() / 2];
    let mut f = OpenOptions::new()
        .write(true)
        .read(true)
        .open(seg_file(&dir, last_seg))
        .unwrap();
    f.seek(SeekFrom::Start(p + len as u64 - 10)).unwrap();
    f.write_all(&[0xAB, 0xCD]).unwrap();
    drop(f);
    expect_end(&dir, small_config(), b).await;
}

#[compio::test]
async fn zero_tail_is_not_data() {
    let t = tempdir();
    let dir = t.path().join("zero");
    let batches = fill(&dir, 50, small_config()).await;
    let end = batches.last().map(|(b, _)| b + 2).unwrap();
    let last_seg = *PartitionLog::open(dir.clone(), small_config())
        .await
        .unwrap()
        .segment_bases()
        .last()
        .unwrap();
    let f = OpenOptions::new()
        .write(true)
        .open(seg_file(&dir, last_seg))
        .unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len + 3 * 1024 * 1024 + 100).unwrap();
    drop(f);
    expect_end(&dir, small_config(), end).await;
}

#[compio::test]
async fn crash_without_close_keeps_written_batches() {
    // Drop without close: no seal, the preallocated tail stays; recovery scans it.
    let t = tempdir();
    let dir = t.path().join("drop");
    let log = PartitionLog::open(dir.clone(), small_config())
        .await
        .unwrap();
    for i in 0..40 {
        log.append(batch(i, 1, 1, 700)).await.unwrap();
    }
    drop(log);
    let active = seg_file(&dir, 35); // unknown base; find the largest file instead
    let _ = active;
    expect_end(&dir, small_config(), 40).await;
}

#[compio::test]
async fn corrupt_closed_segment_is_an_error() {
    let t = tempdir();
    let dir = t.path().join("closed");
    fill(&dir, 120, small_config()).await;
    let f = seg_file(&dir, 0);
    let mut h = OpenOptions::new().write(true).read(true).open(&f).unwrap();
    let len = h.metadata().unwrap().len();
    // Damage the last batch of the first (closed) segment: the tail check catches it,
    // the full rescan confirms it, and open reports it.
    h.seek(SeekFrom::Start(len - 20)).unwrap();
    h.write_all(&[1, 2, 3, 4]).unwrap();
    drop(h);
    match PartitionLog::open(dir.clone(), small_config()).await {
        Err(LogError::Corrupt { path, .. }) => assert_eq!(path, f),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("open must fail on a corrupt closed segment"),
    }
}

#[compio::test]
async fn missing_or_bad_index_is_rebuilt() {
    let t = tempdir();
    let dir = t.path().join("idx");
    let batches = fill(&dir, 120, small_config()).await;
    let end = batches.last().map(|(b, _)| b + 2).unwrap();
    let idx0 = dir.join(format!("{:020}.index", 0));
    let good = std::fs::read(&idx0).unwrap();
    assert!(!good.is_empty(), "closed segment has index entries");
    std::fs::remove_file(&idx0).unwrap();
    // Garbage in another index.
    let bases = PartitionLog::open(dir.clone(), small_config())
        .await
        .unwrap()
        .segment_bases();
    assert_eq!(
        std::fs::read(&idx0).unwrap(),
        good,
        "rebuilt index equals the original"
    );
    let idx1 = dir.join(format!("{:020}.index", bases[1]));
    std::fs::write(&idx1, [0xFFu8; 13]).unwrap();
    let log = PartitionLog::open(dir.clone(), small_config())
        .await
        .unwrap();
    assert_eq!(log.log_end_offset(), end);
    let r = log.read(bases[1] + 3, 100, true).await.unwrap();
    assert!(base_of(&r.batches[0]) <= bases[1] + 3 && last_of(&r.batches[0]) >= bases[1] + 3);
    log.close().await.unwrap();
}

#[compio::test]
async fn unsealed_closed_segment_with_zero_tail_is_repaired() {
    // A crash between the last write of a rolled segment and its trim leaves zeros.
    let t = tempdir();
    let dir = t.path().join("unsealed");
    let batches = fill(&dir, 120, small_config()).await;
    let end = batches.last().map(|(b, _)| b + 2).unwrap();
    let f = seg_file(&dir, 0);
    let h = OpenOptions::new().write(true).open(&f).unwrap();
    let len = h.metadata().unwrap().len();
    h.set_len(len + 8192).unwrap();
    drop(h);
    let log = PartitionLog::open(dir.clone(), small_config())
        .await
        .unwrap();
    assert_eq!(log.log_end_offset(), end);
    drop(log);
    assert_eq!(std::fs::metadata(&f).unwrap().len(), len);
}

#[compio::test]
async fn clean_shutdown_marker_skips_the_scan() {
    let t = tempdir();
    let dir = t.path().join("clean");
    let cfg = LogConfig {
        segment_bytes: 1 << 20,
        ..small_config()
    };
    let batches = fill(&dir, 100, cfg.clone()).await; // ends with close(): marker written
    assert!(dir.join("clean-shutdown").exists());
    let end = batches.last().map(|(b, _)| b + 2).unwrap();
    // Damage a batch early in the (only) segment, before its last index entry: a trusted
    // open does not look there, a scanning open truncates there.
    let (b, p, len) = positions_in(&batches, 0)[3];
    let mut f = OpenOptions::new()
        .write(true)
        .read(true)
        .open(seg_file(&dir, 0))
        .unwrap();
    f.seek(SeekFrom::Start(p + len as u64 - 10)).unwrap();
    f.write_all(&[0xAB, 0xCD]).unwrap();
    drop(f);
    let log = PartitionLog::open(dir.clone(), cfg.clone()).await.unwrap();
    assert!(
        !dir.join("clean-shutdown").exists(),
        "marker is consumed by open"
    );
    assert_eq!(log.log_end_offset(), end);
    // Appends continue and the in-memory index keeps growing.
    for i in 0..50 {
        log.append(batch(500 + i, 1, 1, 900)).await.unwrap();
    }
    let r = log.read(end + 40, 1, true).await.unwrap();
    assert_eq!(base_of(&r.batches[0]), end + 40);
    drop(log); // no marker now
    let log = PartitionLog::open(dir.clone(), cfg).await.unwrap();
    assert_eq!(
        log.log_end_offset(),
        b,
        "unclean open scans and truncates at the damage"
    );
    log.close().await.unwrap();
}

#[compio::test]
async fn missing_time_index_is_rebuilt_not_trusted() {
    let t = tempdir();
    let dir = t.path().join("tidx");
    fill(&dir, 120, small_config()).await;
    let ti = dir.join(format!("{:020}.timeindex", 0));
    let good = std::fs::read(&ti).unwrap();
    std::fs::remove_file(&ti).unwrap();
    let log = PartitionLog::open(dir.clone(), small_config())
        .await
        .unwrap();
    assert_eq!(std::fs::read(&ti).unwrap(), good);
    assert_eq!(
        log.offset_for_timestamp(1005).await.unwrap(),
        Some((10, 1005))
    );
    log.close().await.unwrap();
}

#[compio::test]
async fn garbage_segments_do_not_panic() {
    let t = tempdir();
    let dir = t.path().join("garbage");
    std::fs::create_dir_all(&dir).unwrap();
    let junk = payload(77, 300_000);
    // Garbage as the only (active) segment: recovered to empty.
    std::fs::write(seg_file(&dir, 0), &junk).unwrap();
    let log = PartitionLog::open(dir.clone(), small_config())
        .await
        .unwrap();
    assert_eq!(log.log_end_offset(), 0);
    log.append(batch(1, 1, 1, 100)).await.unwrap();
    log.close().await.unwrap();
    // Garbage as a closed segment (plus garbage indexes): an error, not a panic.
    std::fs::write(seg_file(&dir, 1000), &junk).unwrap();
    std::fs::write(seg_file(&dir, 0), &junk).unwrap();
    std::fs::write(dir.join(format!("{:020}.index", 0)), &junk[..800]).unwrap();
    std::fs::write(dir.join(format!("{:020}.timeindex", 0)), &junk[..1200]).unwrap();
    assert!(matches!(
        PartitionLog::open(dir.clone(), small_config()).await,
        Err(LogError::Corrupt { .. })
    ));
}

#[compio::test]
async fn zeroed_header_inside_a_closed_segment_is_corruption() {
    // A batch header zeroed in the middle of a sealed segment, with batches after it:
    // that is damage to durable data, not preallocated space. Open must refuse rather
    // than truncate the acknowledged batches after it away.
    let t = tempdir();
    let dir = t.path().join("zero-hole");
    let batches = fill(&dir, 120, small_config()).await;
    // The third-last batch of the first segment: after its last index entry, where
    // open's tail check reads.
    let second = segment_bases(&dir)[1];
    let first: Vec<_> = positions_in(&batches, 0)
        .into_iter()
        .filter(|(b, _, _)| *b < second)
        .collect();
    let (_, pos, _) = first[first.len() - 3];
    let f = seg_file(&dir, 0);
    let mut h = OpenOptions::new().write(true).open(&f).unwrap();
    h.seek(SeekFrom::Start(pos)).unwrap();
    h.write_all(&[0u8; 61]).unwrap();
    drop(h);
    let len = std::fs::metadata(&f).unwrap().len();
    match PartitionLog::open(dir.clone(), small_config()).await {
        Err(LogError::Corrupt { path, reason }) => {
            assert_eq!(path, f);
            assert!(reason.contains("zeroed batch header"), "{reason}");
        }
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("open must fail on a zeroed header inside a closed segment"),
    }
    assert_eq!(
        std::fs::metadata(&f).unwrap().len(),
        len,
        "nothing was truncated"
    );
}

#[compio::test]
async fn offset_gap_between_segments_is_corruption() {
    let t = tempdir();
    let dir = t.path().join("gap");
    fill(&dir, 300, small_config()).await;
    let bases = segment_bases(&dir);
    assert!(bases.len() >= 3, "{bases:?}");
    // A whole middle segment goes missing.
    std::fs::remove_file(seg_file(&dir, bases[1])).unwrap();
    match PartitionLog::open(dir.clone(), small_config()).await {
        Err(LogError::Corrupt { reason, .. }) => assert!(reason.contains("offset gap"), "{reason}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("open must report the missing offsets"),
    }
}
