//! Future logs (AlterReplicaLogDirs, `log_move.rs`): while a partition moves to another
//! log dir, its copy there is `<topic>-<partition>.<id>-future`, as in Kafka. The swap
//! renames the current log to `<topic>-<partition>.<id>-delete` (the same id) and then
//! the future log to `<topic>-<partition>`. The names alone tell after a crash how far a
//! move got, so [`recover`] (run when the log dirs are opened, before anything else
//! reads them) can finish or undo it:
//!
//! * a future log with no `-delete` of its id: the swap had not begun, so the current
//!   log is the partition's. The copy is removed; the move restarts from scratch once
//!   the partition is open (Kafka resumes it too).
//! * a future log with a `-delete` of its id: the current log was renamed away only
//!   after the future one was complete and synced (`log_move.rs`), so the future log is
//!   the partition's: it is renamed into place. The `-delete` directory goes with the
//!   start-up sweep of deleted partitions (`delete_dirs.rs`), which runs after this.
//! * a future log of a partition with no log at all and no `-delete` of its id (its
//!   `-delete` swept already, or the topic deleted while it was copied): it is the
//!   best copy there is and is renamed into place too; a log of a deleted topic is then
//!   a stray that the broker removes once its metadata has caught up
//!   (`ShardContext::delete_strays`). Removing it could lose the partition's data.
//!
//! Only run when every directory is healthy: with one offline, the current log may be
//! on it, so nothing can be decided.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::delete_dirs::DELETE_DIR_SUFFIX;

/// Kafka's `LogManager.FutureDirSuffix`.
pub const FUTURE_DIR_SUFFIX: &str = "-future";

/// Longest file name most filesystems accept.
const MAX_NAME_LEN: usize = 255;

/// The future log's directory name, or `None` when the topic name is too long for it
/// (Kafka answers INVALID_TOPIC_EXCEPTION then).
pub fn future_dir_name(topic: &str, partition: i32, id: &str) -> Option<String> {
    let name = format!("{topic}-{partition}.{id}{FUTURE_DIR_SUFFIX}");
    (name.len() <= MAX_NAME_LEN).then_some(name)
}

/// The name the current log is renamed to at the swap: the future log's id, so that a
/// restart can tell that the swap was under way.
pub fn swapped_dir_name(topic: &str, partition: i32, id: &str) -> String {
    format!("{topic}-{partition}.{id}{DELETE_DIR_SUFFIX}")
}

/// `<topic>-<partition>.<id><suffix>` → topic, partition, id.
fn parse(name: &str, suffix: &str) -> Option<(String, i32, String)> {
    let (dir, id) = name.strip_suffix(suffix)?.rsplit_once('.')?;
    let (topic, partition) = crate::log_dirs::parse_partition_dir(dir)?;
    let hex = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    hex.then(|| (topic, partition, id.to_string()))
}

fn list(dir: &Path, suffix: &str) -> anyhow::Result<Vec<(String, i32, String)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        if let Some(parsed) = entry.file_name().to_str().and_then(|n| parse(n, suffix)) {
            found.push(parsed);
        }
    }
    Ok(found)
}

/// Finish or undo the moves a crash interrupted (module docs), over the healthy log
/// dirs `dirs` (index, path); `placed` is where each partition's log was found and is
/// updated with promoted future logs. Returns the partitions whose move is to restart,
/// with the index of their destination.
pub fn recover(
    dirs: &[(usize, PathBuf)],
    placed: &mut HashMap<(String, i32), usize>,
) -> anyhow::Result<HashMap<(String, i32), usize>> {
    let mut swapped = std::collections::HashSet::new();
    for (_, dir) in dirs {
        for (topic, partition, id) in list(dir, DELETE_DIR_SUFFIX)? {
            swapped.insert((topic, partition, id));
        }
    }
    // Each partition's future logs: (its swap began, dir index, path).
    type Found = Vec<(bool, usize, PathBuf)>;
    let mut futures: HashMap<(String, i32), Found> = HashMap::new();
    for (index, dir) in dirs {
        for (topic, partition, id) in list(dir, FUTURE_DIR_SUFFIX)? {
            let future = dir.join(format!("{topic}-{partition}.{id}{FUTURE_DIR_SUFFIX}"));
            let began = swapped.contains(&(topic.clone(), partition, id));
            futures
                .entry((topic, partition))
                .or_default()
                .push((began, *index, future));
        }
    }
    let mut resume = HashMap::new();
    for (key, mut found) in futures {
        // The one whose swap began first.
        found.sort_by_key(|(began, _, _)| !began);
        if found.iter().filter(|(began, _, _)| *began).count() > 1
            || (!placed.contains_key(&key) && !found[0].0 && found.len() > 1)
        {
            bail!(
                "partition {}-{} has several future logs and no way to tell which is complete: {}",
                key.0,
                key.1,
                found
                    .iter()
                    .map(|f| f.2.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let had_log = placed.contains_key(&key);
        for (i, (began, index, future)) in found.into_iter().enumerate() {
            let dir = &dirs.iter().find(|d| d.0 == index).expect("listed above").1;
            let promote = i == 0 && (began || !had_log);
            if promote {
                if let Some(&other) = placed.get(&key) {
                    bail!(
                        "partition {}-{} has a log in {} and a swapped-in future log {}; remove one",
                        key.0,
                        key.1,
                        dirs.iter().find(|d| d.0 == other).map_or(Path::new("?"), |d| &d.1).display(),
                        future.display()
                    );
                }
                let target = crate::partition::partition_dir(dir, &key.0, key.1);
                std::fs::rename(&future, &target).with_context(|| {
                    format!("renaming {} to {}", future.display(), target.display())
                })?;
                sync_dir(dir)?;
                tracing::warn!(dir = %target.display(), "finished a log dir move a restart interrupted during its swap");
                placed.insert(key.clone(), index);
            } else {
                std::fs::remove_dir_all(&future)
                    .with_context(|| format!("removing {}", future.display()))?;
                if had_log {
                    tracing::warn!(topic = %key.0, partition = key.1, dir = %dir.display(), "a log dir move was interrupted by a restart; it starts over");
                    resume.insert(key.clone(), index);
                }
            }
        }
    }
    Ok(resume)
}

/// fsync a directory, so that renames and creations in it survive a crash.
pub fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "spate-future-{name}-{}-{}",
            std::process::id(),
            crate::random_id::uuid_v4()[0]
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn names() {
        let name = future_dir_name("t-x", 3, ID).unwrap();
        assert_eq!(name, format!("t-x-3.{ID}-future"));
        assert_eq!(
            parse(&name, FUTURE_DIR_SUFFIX),
            Some(("t-x".into(), 3, ID.into()))
        );
        assert_eq!(
            parse(&swapped_dir_name("t", 0, ID), DELETE_DIR_SUFFIX),
            Some(("t".into(), 0, ID.into()))
        );
        assert_eq!(parse("t-0.abc-future", FUTURE_DIR_SUFFIX), None);
        assert_eq!(parse("t-0", FUTURE_DIR_SUFFIX), None);
        assert!(future_dir_name(&"t".repeat(249), 0, ID).is_none());
    }

    #[test]
    fn an_unswapped_future_is_removed_and_its_move_restarts() {
        let (a, b) = (tmp("ua"), tmp("ub"));
        std::fs::create_dir_all(a.join("t-0")).unwrap();
        std::fs::create_dir_all(b.join(future_dir_name("t", 0, ID).unwrap())).unwrap();
        // A future log of a partition that has no log at all (its `-delete` swept, or
        // its topic deleted): the best copy there is, kept as the partition's.
        std::fs::create_dir_all(b.join(future_dir_name("gone", 1, ID).unwrap())).unwrap();
        let mut placed = HashMap::from([(("t".to_string(), 0), 0)]);
        let resume = recover(&[(0, a.clone()), (1, b.clone())], &mut placed).unwrap();
        assert_eq!(resume, HashMap::from([(("t".to_string(), 0), 1)]));
        assert_eq!(
            placed,
            HashMap::from([(("t".to_string(), 0), 0), (("gone".to_string(), 1), 1)])
        );
        assert!(a.join("t-0").is_dir());
        let left: Vec<_> = std::fs::read_dir(&b)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("gone-1")]);
        std::fs::remove_dir_all(&a).unwrap();
        std::fs::remove_dir_all(&b).unwrap();
    }

    #[test]
    fn a_swapped_future_is_renamed_into_place() {
        let (a, b) = (tmp("sa"), tmp("sb"));
        std::fs::create_dir_all(a.join(swapped_dir_name("t", 0, ID))).unwrap();
        let future = b.join(future_dir_name("t", 0, ID).unwrap());
        std::fs::create_dir_all(&future).unwrap();
        std::fs::write(future.join("00000000000000000000.log"), b"x").unwrap();
        // A stale future of another id (a cancelled move) is removed.
        let other = "f".repeat(32);
        std::fs::create_dir_all(a.join(future_dir_name("t", 0, &other).unwrap())).unwrap();
        let mut placed = HashMap::new();
        let resume = recover(&[(0, a.clone()), (1, b.clone())], &mut placed).unwrap();
        assert!(resume.is_empty());
        assert_eq!(placed, HashMap::from([(("t".to_string(), 0), 1)]));
        assert!(b.join("t-0").join("00000000000000000000.log").is_file());
        assert!(!future.exists());
        assert!(!a.join(future_dir_name("t", 0, &other).unwrap()).exists());
        // The old log is left for the sweep of deleted partitions.
        assert!(a.join(swapped_dir_name("t", 0, ID)).is_dir());
        std::fs::remove_dir_all(&a).unwrap();
        std::fs::remove_dir_all(&b).unwrap();
    }

    #[test]
    fn several_unswapped_futures_without_a_log_stop_the_start() {
        let (a, b) = (tmp("ma"), tmp("mb"));
        std::fs::create_dir_all(a.join(future_dir_name("t", 0, ID).unwrap())).unwrap();
        let other = "f".repeat(32);
        std::fs::create_dir_all(b.join(future_dir_name("t", 0, &other).unwrap())).unwrap();
        let mut placed = HashMap::new();
        let e = recover(&[(0, a.clone()), (1, b.clone())], &mut placed).unwrap_err();
        assert!(e.to_string().contains("several future logs"), "{e}");
        std::fs::remove_dir_all(&a).unwrap();
        std::fs::remove_dir_all(&b).unwrap();
    }

    #[test]
    fn a_swapped_future_beside_a_live_log_stops_the_start() {
        let (a, b) = (tmp("ca"), tmp("cb"));
        std::fs::create_dir_all(a.join("t-0")).unwrap();
        std::fs::create_dir_all(a.join(swapped_dir_name("t", 0, ID))).unwrap();
        std::fs::create_dir_all(b.join(future_dir_name("t", 0, ID).unwrap())).unwrap();
        let mut placed = HashMap::from([(("t".to_string(), 0), 0)]);
        assert!(recover(&[(0, a.clone()), (1, b.clone())], &mut placed).is_err());
        std::fs::remove_dir_all(&a).unwrap();
        std::fs::remove_dir_all(&b).unwrap();
    }
}
