//! The high-watermark checkpoint (Kafka's `replication-offset-checkpoint`): a restarted
//! replica starts from the high watermark it had, not from its log start, so that its
//! consumers, and its leadership if it is elected, see what was committed at once
//! instead of after a round of follower fetches.
//!
//! Each shard writes `high-watermark-checkpoint-<shard>` in every log dir holding its
//! partitions, every 5 s (Kafka's `replica.high.watermark.checkpoint.interval.ms`
//! default) and when it stops: `0`, the entry count, then one line per partition,
//! `<topic> <partition> <high watermark> <topic id in hex>`. Kafka's file has no topic
//! id; here it keeps an entry from applying to a topic re-created under the same name.
//! At start-up the broker reads every such file, then removes them (the shards write
//! their own from then on, whatever their number now), and a partition opened from an
//! existing log starts at the checkpointed high watermark, within its log's bounds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use crate::shard::ShardContext;

/// `high-watermark-checkpoint-<shard>` (no extension: the temporary file of each shard's
/// atomic replace is then `...-<shard>.tmp`, its own).
const FILE_PREFIX: &str = "high-watermark-checkpoint-";
const VERSION: &str = "0";
/// Kafka's `replica.high.watermark.checkpoint.interval.ms` default.
const INTERVAL: Duration = Duration::from_secs(5);

/// One partition's line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    topic: String,
    partition: i32,
    high_watermark: i64,
    topic_id: [u8; 16],
}

/// The high watermarks read at start-up: (topic, partition, topic id) → high watermark.
#[derive(Debug, Default)]
pub struct StartHighWatermarks(HashMap<(String, i32, [u8; 16]), i64>);

impl StartHighWatermarks {
    /// Read the checkpoint files of `dirs`, then remove them. A file that cannot be
    /// read or parsed is skipped with a warning: its partitions start from their log
    /// start, as without a checkpoint.
    pub fn read_and_remove(dirs: &[PathBuf]) -> StartHighWatermarks {
        let mut found = HashMap::new();
        for path in dirs.iter().flat_map(|d| checkpoint_files(d)) {
            let parsed = std::fs::read_to_string(&path)
                .ok()
                .and_then(|text| parse(&text));
            match parsed {
                Some(entries) => {
                    for e in entries {
                        // Within one incarnation of a topic the high watermark only grows.
                        let hw = found
                            .entry((e.topic, e.partition, e.topic_id))
                            .or_insert(e.high_watermark);
                        *hw = (*hw).max(e.high_watermark);
                    }
                }
                None => {
                    tracing::warn!(file = %path.display(), "unreadable high-watermark checkpoint skipped")
                }
            }
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), error = %e, "removing a high-watermark checkpoint failed");
            }
        }
        StartHighWatermarks(found)
    }

    /// The checkpointed high watermark of this incarnation of `topic`-`partition`.
    pub fn get(&self, topic: &str, partition: i32, topic_id: [u8; 16]) -> Option<i64> {
        self.0
            .get(&(topic.to_string(), partition, topic_id))
            .copied()
    }
}

/// The checkpoint files directly in `dir`.
fn checkpoint_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name().to_str().is_some_and(|n| {
                n.strip_prefix(FILE_PREFIX)
                    .is_some_and(|shard| shard.parse::<usize>().is_ok())
            })
        })
        .map(|e| e.path())
        .collect()
}

fn encode(entries: &[Entry]) -> String {
    let mut out = format!("{VERSION}\n{}\n", entries.len());
    for e in entries {
        let id: String = e.topic_id.iter().map(|b| format!("{b:02x}")).collect();
        out.push_str(&format!(
            "{} {} {} {id}\n",
            e.topic, e.partition, e.high_watermark
        ));
    }
    out
}

fn parse(text: &str) -> Option<Vec<Entry>> {
    let mut lines = text.lines();
    (lines.next()? == VERSION).then_some(())?;
    let count: usize = lines.next()?.parse().ok()?;
    let entries: Vec<Entry> = lines
        .map(|line| {
            let mut fields = line.split(' ');
            let topic = fields.next()?.to_string();
            let partition = fields.next()?.parse().ok()?;
            let high_watermark = fields.next()?.parse().ok()?;
            let hex = fields.next()?;
            if hex.len() != 32 || fields.next().is_some() {
                return None;
            }
            let mut topic_id = [0u8; 16];
            for (i, b) in topic_id.iter_mut().enumerate() {
                *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
            }
            Some(Entry {
                topic,
                partition,
                high_watermark,
                topic_id,
            })
        })
        .collect::<Option<_>>()?;
    (entries.len() == count).then_some(entries)
}

/// Write this shard's checkpoint files: the high watermark of each partition it has
/// open, one file per log dir (atomically replaced, then synced). A call while the
/// shard's previous one still writes returns at once: both would write the same
/// temporary files.
pub async fn write(ctx: &ShardContext) {
    thread_local! {
        static WRITING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if WRITING.with(|w| w.replace(true)) {
        return;
    }
    write_files(ctx).await;
    WRITING.with(|w| w.set(false));
}

async fn write_files(ctx: &ShardContext) {
    let mut by_dir: HashMap<PathBuf, Vec<Entry>> = HashMap::new();
    for (key, p) in ctx.partitions.borrow().iter() {
        let dir = p.log.dir();
        let Some(data_dir) = dir.parent() else {
            continue;
        };
        by_dir
            .entry(data_dir.to_path_buf())
            .or_default()
            .push(Entry {
                topic: key.topic.to_string(),
                partition: key.partition,
                high_watermark: p.high_watermark(),
                topic_id: p.topic_id,
            });
    }
    for (dir, entries) in by_dir {
        let path = dir.join(format!("{FILE_PREFIX}{}", ctx.id));
        let data = encode(&entries).into_bytes();
        if let Err(e) = spate_log::replace_file(&dir, &path, data).await {
            // A failed dir is found (and its partitions taken offline) by the log-dir
            // check; a checkpoint that is not written only costs the next start time.
            if admit_failure_log() {
                tracing::warn!(file = %path.display(), error = %e, "writing the high-watermark checkpoint failed");
            }
        }
    }
}

fn admit_failure_log() -> bool {
    thread_local! {
        static LIMIT: std::cell::RefCell<spate_log::RateLimit> = std::cell::RefCell::new(
            spate_log::RateLimit::new(1, Duration::from_secs(60)));
    }
    LIMIT.with(|l| l.borrow_mut().admit(std::time::Instant::now()).is_some())
}

/// Write the checkpoint every 5 s until the shard stops.
pub fn spawn(ctx: &Rc<ShardContext>) {
    let ctx = ctx.clone();
    compio::runtime::spawn(async move {
        loop {
            compio::time::sleep(INTERVAL).await;
            if ctx.is_shutting_down() {
                return;
            }
            write(&ctx).await;
        }
    })
    .detach();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(topic: &str, partition: i32, hw: i64, id: u8) -> Entry {
        Entry {
            topic: topic.into(),
            partition,
            high_watermark: hw,
            topic_id: [id; 16],
        }
    }

    #[test]
    fn round_trip_and_damage() {
        let entries = vec![entry("orders", 0, 42, 1), entry("a-b", 12, 0, 0xab)];
        let text = encode(&entries);
        assert!(text.starts_with("0\n2\norders 0 42 0101"));
        assert_eq!(parse(&text), Some(entries));
        assert_eq!(parse(""), None);
        assert_eq!(parse("1\n0\n"), None, "unknown version");
        assert_eq!(
            parse("0\n2\norders 0 42 01010101010101010101010101010101\n"),
            None,
            "short"
        );
        assert_eq!(
            parse("0\n1\norders 0 x 01010101010101010101010101010101\n"),
            None
        );
        assert_eq!(parse("0\n1\norders 0 1 0101\n"), None, "bad id");
    }

    #[test]
    fn read_takes_the_highest_per_incarnation_and_removes_the_files() {
        let dir = std::env::temp_dir().join(format!(
            "spate-hwcp-{}-{}",
            std::process::id(),
            crate::random_id::uuid_v4()[0]
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |shard: usize, entries: &[Entry]| {
            std::fs::write(dir.join(format!("{FILE_PREFIX}{shard}")), encode(entries)).unwrap()
        };
        write(0, &[entry("t", 0, 10, 1), entry("t", 1, 5, 1)]);
        write(3, &[entry("t", 0, 12, 1), entry("t", 0, 99, 2)]);
        std::fs::write(dir.join(format!("{FILE_PREFIX}7")), "garbage").unwrap();
        std::fs::write(dir.join(format!("{FILE_PREFIX}0.tmp")), "0\n0\n").unwrap();
        let read = StartHighWatermarks::read_and_remove(std::slice::from_ref(&dir));
        assert_eq!(read.get("t", 0, [1; 16]), Some(12));
        assert_eq!(read.get("t", 0, [2; 16]), Some(99));
        assert_eq!(read.get("t", 1, [1; 16]), Some(5));
        assert_eq!(read.get("t", 1, [2; 16]), None);
        assert!(checkpoint_files(&dir).is_empty());
        // Not a checkpoint file of a shard: left alone.
        assert!(dir.join(format!("{FILE_PREFIX}0.tmp")).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
