//! Compaction support in the log: cleaned segments written off the shard thread and
//! swapped in crash-safely, gaps in offsets after cleaning, recovery of interrupted
//! swaps. Which batches survive is chosen by the test (the log knows no records).

mod common;

use std::path::Path;

use bytes::Bytes;
use common::*;
use spate_log::clean::{group_segments, CleanedGroup, CleanedSegmentWriter, SegmentBatches};
use spate_log::{LogConfig, PartitionLog};

/// Appends `n` one-record batches (seed = offset) and rolls once more so that all but
/// the last few are in sealed segments.
async fn fill(log: &PartitionLog, n: u64) {
    for i in 0..n {
        log.append(batch(i, 1, 1_000 + i as i64, 2000))
            .await
            .unwrap();
    }
}

/// A log opened in `dir`, [`fill`]ed with `n` batches and flushed.
async fn filled(dir: &Path, cfg: &LogConfig, n: u64) -> PartitionLog {
    let log = PartitionLog::open(dir.to_path_buf(), cfg.clone())
        .await
        .unwrap();
    fill(&log, n).await;
    log.flush().await.unwrap();
    log
}

/// Rewrites the sealed segments on another thread, keeping the batches `keep` accepts.
fn clean(log: &PartitionLog, group_bytes: u64, keep: fn(i64) -> bool) -> Vec<CleanedGroup> {
    let view = log.cleanable(i64::MAX, 0, i64::MAX);
    let dir = view.dir.clone();
    let groups = group_segments(&view.segments, group_bytes);
    std::thread::spawn(move || {
        groups
            .into_iter()
            .map(|g| {
                let mut w = CleanedSegmentWriter::create(&dir, g[0].base, 4096).unwrap();
                for s in &g {
                    let mut r = SegmentBatches::open(&s.path, s.size, 64 << 10).unwrap();
                    while let Some((h, b)) = r.next_batch().unwrap() {
                        if keep(h.base_offset) {
                            w.append(&b).unwrap();
                        }
                    }
                }
                let modified = g.iter().map(|s| s.modified_ms).max().unwrap();
                let clean_end = g[g.len() - 1].end;
                CleanedGroup {
                    cleaned: w.finish(modified).unwrap(),
                    replaced: g,
                    clean_end,
                    delete_horizon_ms: -1,
                }
            })
            .collect()
    })
    .join()
    .unwrap()
}

/// Every batch readable from the start, as (base offset, bytes).
async fn read_all(log: &PartitionLog) -> Vec<(i64, Bytes)> {
    let mut out = Vec::new();
    let mut next = log.log_start_offset();
    while next < log.written_end_offset() {
        let r = log.read(next, 1 << 20, true).await.unwrap();
        if r.batches.is_empty() {
            break;
        }
        for b in r.batches {
            next = last_of(&b) + 1;
            out.push((base_of(&b), b));
        }
    }
    out
}

fn expected(n: u64, uncleanable: i64, keep: fn(i64) -> bool) -> Vec<i64> {
    (0..n as i64)
        .filter(|&o| o >= uncleanable || keep(o))
        .collect()
}

fn cleaner_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap"))
        .collect()
}

fn third(o: i64) -> bool {
    o % 3 == 0
}

#[compio::test]
async fn cleaned_segments_keep_offsets_leave_gaps_and_survive_reopen() {
    let t = tempdir();
    let dir = t.path().join("c");
    let cfg = small_config();
    let log = filled(&dir, &cfg, 200).await;
    let before = log.cleanable(i64::MAX, 0, i64::MAX);
    assert!(before.segments.len() >= 4, "{:?}", before.segments.len());
    assert_eq!(before.first_dirty, 0);
    let uncleanable = before.first_uncleanable;

    let groups = clean(&log, 3 * 64 * 1024, third);
    let n = groups.len();
    assert!(n < before.segments.len(), "small segments were merged");
    assert_eq!(log.replace_segments(groups).await.unwrap(), n);
    assert!(cleaner_files(&dir).is_empty());

    let want = expected(200, uncleanable, third);
    let got: Vec<i64> = read_all(&log).await.iter().map(|(o, _)| *o).collect();
    assert_eq!(got, want);
    // A fetch at an offset that was compacted away gets the next batch.
    let r = log.read(1, 1, true).await.unwrap();
    assert_eq!(base_of(&r.batches[0]), 3);
    let after = log.cleanable(i64::MAX, 0, i64::MAX);
    assert_eq!(after.first_dirty, uncleanable);
    assert_eq!(after.dirty_bytes(), 0);

    // The gaps are known to be compaction's, across a clean and an unclean restart.
    log.close().await.unwrap();
    let log = PartitionLog::open(dir.clone(), cfg.clone()).await.unwrap();
    let got: Vec<i64> = read_all(&log).await.iter().map(|(o, _)| *o).collect();
    assert_eq!(got, want);
    assert_eq!(
        log.cleanable(i64::MAX, 0, i64::MAX).first_dirty,
        uncleanable
    );
    drop(log);
    let log = PartitionLog::open(dir, cfg).await.unwrap();
    let got: Vec<i64> = read_all(&log).await.iter().map(|(o, _)| *o).collect();
    assert_eq!(got, want);
    assert_eq!(log.log_end_offset(), 200);
}

#[compio::test]
async fn a_group_cleaned_to_nothing_is_an_empty_segment_readers_skip() {
    let t = tempdir();
    let dir = t.path().join("e");
    let log = PartitionLog::open(dir.clone(), small_config())
        .await
        .unwrap();
    fill(&log, 120).await;
    log.flush().await.unwrap();
    let uncleanable = log.cleanable(i64::MAX, 0, i64::MAX).first_uncleanable;
    fn none_below_40(o: i64) -> bool {
        o >= 40
    }
    let groups = clean(&log, 64 * 1024, none_below_40);
    let n = groups.len();
    assert_eq!(log.replace_segments(groups).await.unwrap(), n);
    assert_eq!(
        log.log_start_offset(),
        0,
        "compaction never moves the log start"
    );
    let got: Vec<i64> = read_all(&log).await.iter().map(|(o, _)| *o).collect();
    assert_eq!(got, expected(120, uncleanable, none_below_40));
    let r = log.read(0, 1, true).await.unwrap();
    assert_eq!(base_of(&r.batches[0]), 40);
    drop(log);
    let log = PartitionLog::open(dir, small_config()).await.unwrap();
    let r = log.read(0, 1, true).await.unwrap();
    assert_eq!(base_of(&r.batches[0]), 40);
}

#[compio::test]
async fn a_clean_that_never_committed_leaves_the_old_log() {
    let t = tempdir();
    let dir = t.path().join("o");
    let log = PartitionLog::open(dir.clone(), small_config())
        .await
        .unwrap();
    fill(&log, 150).await;
    log.flush().await.unwrap();
    let all = read_all(&log).await;
    let groups = clean(&log, 3 * 64 * 1024, third);
    assert!(!cleaner_files(&dir).is_empty());
    // Crash before the swap manifest: the .cleaned files are orphans.
    drop(groups);
    drop(log);
    let log = PartitionLog::open(dir.clone(), small_config())
        .await
        .unwrap();
    assert!(cleaner_files(&dir).is_empty());
    assert_eq!(read_all(&log).await, all);
    assert_eq!(log.cleanable(i64::MAX, 0, i64::MAX).first_dirty, 0);
}

#[compio::test]
async fn a_committed_swap_is_finished_at_open_whatever_step_it_stopped_at() {
    // The manifest is the commit point: whichever of the renames happened before the
    // crash, open finishes the swap (files named as `clean::swap` documents them).
    for renamed in 0..=3 {
        let t = tempdir();
        let dir = t.path().join("s");
        let log = PartitionLog::open(dir.clone(), small_config())
            .await
            .unwrap();
        fill(&log, 150).await;
        log.flush().await.unwrap();
        let uncleanable = log.cleanable(i64::MAX, 0, i64::MAX).first_uncleanable;
        let groups = clean(&log, 1 << 30, third);
        assert_eq!(groups.len(), 1);
        let g = &groups[0];
        drop(log);
        let stem = format!("{:020}", g.replaced[0].base);
        let bases: Vec<String> = g.replaced.iter().map(|s| s.base.to_string()).collect();
        std::fs::write(
            dir.join(format!("{stem}.swap")),
            format!(
                "spate-swap 1\nreplaced {}\nclean_end {}\ndelete_horizon_ms -1\n",
                bases.join(" "),
                g.clean_end
            ),
        )
        .unwrap();
        for ext in ["index", "timeindex", "log"].iter().take(renamed) {
            std::fs::rename(
                dir.join(format!("{stem}.{ext}.cleaned")),
                dir.join(format!("{stem}.{ext}")),
            )
            .unwrap();
        }
        if renamed == 3 {
            // ...and the first replaced segment after the one renamed over.
            std::fs::remove_file(dir.join(format!("{:020}.log", g.replaced[1].base))).unwrap();
        }
        let log = PartitionLog::open(dir.clone(), small_config())
            .await
            .unwrap();
        assert!(cleaner_files(&dir).is_empty(), "step {renamed}");
        let got: Vec<i64> = read_all(&log).await.iter().map(|(o, _)| *o).collect();
        assert_eq!(got, expected(150, uncleanable, third), "step {renamed}");
        assert_eq!(
            log.cleanable(i64::MAX, 0, i64::MAX).first_dirty,
            uncleanable
        );
    }
}

#[compio::test]
async fn segments_removed_during_a_clean_discard_it() {
    let t = tempdir();
    let dir = t.path().join("r");
    let log = PartitionLog::open(dir.clone(), small_config())
        .await
        .unwrap();
    fill(&log, 150).await;
    log.flush().await.unwrap();
    let groups = clean(&log, 64 * 1024, third);
    let first_end = groups[0].replaced[0].end;
    // DeleteRecords removes the first segment while the clean ran.
    log.delete_records(first_end).await.unwrap();
    assert_eq!(log.replace_segments(groups).await.unwrap(), 0);
    assert!(cleaner_files(&dir).is_empty());
    let got: Vec<i64> = read_all(&log).await.iter().map(|(o, _)| *o).collect();
    assert_eq!(got, (first_end..150).collect::<Vec<_>>());
}

#[compio::test]
async fn without_the_delete_policy_retention_keeps_everything() {
    let t = tempdir();
    let dir = t.path().join("k");
    let cfg = LogConfig {
        retention_ms: 1,
        retention_bytes: 1,
        retention_enabled: false,
        ..small_config()
    };
    let log = PartitionLog::open(dir, cfg).await.unwrap();
    fill(&log, 100).await;
    assert_eq!(log.enforce_retention(i64::MAX / 2).await.unwrap(), 0);
    assert_eq!(log.log_start_offset(), 0);
}

#[compio::test]
async fn a_truncation_below_the_cleaned_end_moves_the_cleaner_checkpoint_back() {
    let t = tempdir();
    let dir = t.path().join("c");
    let cfg = small_config();
    let log = filled(&dir, &cfg, 200).await;
    let groups = clean(&log, 3 * 64 * 1024, third);
    log.replace_segments(groups).await.unwrap();
    let cleaned = log.cleaned_up_to();
    assert!(cleaned > 60, "{cleaned}");
    // A follower cuts its log at 60 (a batch kept by the clean starts there).
    assert_eq!(log.truncate_to(60).await.unwrap(), 60);
    assert_eq!(log.cleaned_up_to(), 60);
    // What comes next is dirty, after a restart too.
    for i in 0..5 {
        log.append(batch(1_000 + i, 1, 5_000, 2000)).await.unwrap();
    }
    log.close().await.unwrap();
    let log = PartitionLog::open(dir, cfg).await.unwrap();
    assert_eq!(log.cleaned_up_to(), 60);
    assert_eq!(log.log_end_offset(), 65);
}
