//! Directories of deleted partitions. As in Kafka, a partition being deleted is first
//! renamed to `<topic>-<partition>.<uuid>-delete` (a rename is atomic and instant, so the
//! topic name is free again at once) and removed afterwards in the background. A crash
//! between the rename and the removal leaves such a directory behind; at start-up
//! [`spawn_sweep`] removes every one of them, as Kafka's `LogManager` does when it loads
//! the log dirs.

use std::path::{Path, PathBuf};

/// Kafka's `LogManager.DeleteDirSuffix`.
pub const DELETE_DIR_SUFFIX: &str = "-delete";

/// Longest file name most filesystems accept (and Kafka's cap for these names).
const MAX_NAME_LEN: usize = 255;

/// The name a partition's directory is renamed to when it is deleted:
/// `<topic>-<partition>.<32 hex digits>-delete`, with a random id so that deleting a
/// topic again after it was re-created cannot collide. As in Kafka, the topic is cut
/// short when the whole name would be longer than 255 bytes (topic names are ASCII).
pub fn deleted_dir_name(topic: &str, partition: i32) -> String {
    let suffix = format!("-{partition}.{}{DELETE_DIR_SUFFIX}", random_hex_id());
    let keep = topic.len().min(MAX_NAME_LEN.saturating_sub(suffix.len()));
    // Topic names are ASCII ([a-zA-Z0-9._-]); a char boundary check keeps this total anyway.
    let keep = (0..=keep)
        .rev()
        .find(|&i| topic.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}{suffix}", &topic[..keep])
}

/// Whether a directory name is one of a deleted partition.
pub fn is_deleted_dir_name(name: &str) -> bool {
    name.ends_with(DELETE_DIR_SUFFIX)
}

/// A random UUID as 32 lowercase hex digits (without its dashes, as Kafka writes it).
pub fn random_hex_id() -> String {
    crate::random_id::uuid_v4()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The deleted-partition directories directly under `data_dir` (real directories only,
/// never symlinks).
pub fn find_deleted_dirs(data_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(data_dir)? {
        let entry = entry?;
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir && entry.file_name().to_str().is_some_and(is_deleted_dir_name) {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// Remove every deleted-partition directory under `data_dir`, logging each; returns how
/// many were removed. A directory that vanished meanwhile (removed by the broker's own
/// background deletion) counts as removed; failures are logged and skipped.
pub fn sweep(data_dir: &Path) -> usize {
    let dirs = match find_deleted_dirs(data_dir) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(data_dir = %data_dir.display(), error = %e, "listing the data dir for deleted partition directories failed");
            return 0;
        }
    };
    let mut removed = 0;
    for dir in dirs {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {
                tracing::info!(dir = %dir.display(), "removed the directory of a deleted partition");
                removed += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => removed += 1,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "removing the directory of a deleted partition failed; retried at the next start")
            }
        }
    }
    removed
}

/// Run [`sweep`] over every log dir on a background thread, so a large leftover
/// directory does not delay start-up (nothing opens these directories: partitions live
/// in `<topic>-<partition>`).
pub fn spawn_sweep(log_dirs: Vec<PathBuf>) -> std::io::Result<std::thread::JoinHandle<usize>> {
    std::thread::Builder::new()
        .name("spate-delete-sweep".into())
        .spawn(move || log_dirs.iter().map(|d| sweep(d)).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_is_kafkas() {
        let name = deleted_dir_name("orders", 3);
        let (head, id) = name
            .strip_suffix("-delete")
            .unwrap()
            .split_once('.')
            .unwrap();
        assert_eq!(head, "orders-3");
        assert_eq!(id.len(), 32);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(name, deleted_dir_name("orders", 3), "ids are random");
        assert!(is_deleted_dir_name(&name));
        // A live partition directory ends with its partition number, never "-delete".
        assert!(!is_deleted_dir_name("orders-delete-0"));
    }

    #[test]
    fn long_topic_is_cut_to_255_bytes() {
        let topic = "t".repeat(249);
        let name = deleted_dir_name(&topic, 1_000_000);
        assert_eq!(name.len(), 255);
        assert!(name.ends_with("-delete"));
        assert!(name.contains("t-1000000."));
        let short = deleted_dir_name("t", 0);
        assert_eq!(short.len(), "t-0.".len() + 32 + "-delete".len());
    }

    #[test]
    fn sweep_removes_only_deleted_dirs() {
        let dir = std::env::temp_dir().join(format!("spate-delete-sweep-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let gone = dir.join(deleted_dir_name("t", 0));
        std::fs::create_dir_all(gone.join("nested")).unwrap();
        std::fs::write(gone.join("00000000000000000000.log"), b"x").unwrap();
        let gone2 = dir.join(deleted_dir_name("u", 7));
        std::fs::create_dir_all(&gone2).unwrap();
        let live = dir.join("t-0");
        std::fs::create_dir_all(&live).unwrap();
        let file = dir.join("stray-delete");
        std::fs::write(&file, b"not a directory").unwrap();
        std::fs::create_dir_all(dir.join("__cluster_metadata")).unwrap();
        // A symlink to a directory elsewhere: neither it nor its target is touched.
        let target = dir.join("keep-target");
        std::fs::create_dir_all(&target).unwrap();
        std::os::unix::fs::symlink(&target, dir.join("link-0.0123-delete")).unwrap();

        assert_eq!(spawn_sweep(vec![dir.clone()]).unwrap().join().unwrap(), 2);
        assert!(!gone.exists() && !gone2.exists());
        assert!(live.is_dir() && file.is_file() && target.is_dir());
        assert!(dir.join("__cluster_metadata").is_dir());
        assert!(dir.join("link-0.0123-delete").symlink_metadata().is_ok());
        assert_eq!(sweep(&dir), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
