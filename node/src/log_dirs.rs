//! The broker's log directories (Kafka's `log.dirs`, JBOD): where each partition's log
//! lives, where a new one goes, and which directories have failed.
//!
//! Shared by every shard (an `Arc`, with a mutex that is taken only when a partition is
//! opened, created, moved or deleted, and by DescribeLogDirs; never per record).
//!
//! * At start every directory is created if missing, locked and listed once: a
//!   partition's log is wherever its `<topic>-<partition>` directory is. The first
//!   directory holds the metadata log; if it cannot be used the broker does not start.
//!   Any other that cannot be used is *offline* from the start, as in Kafka.
//! * A new partition goes to the healthy directory holding the fewest partitions
//!   (Kafka's default placement).
//! * A directory fails for good when a write in it fails with an I/O error (not a full
//!   disk, which the log retries by itself): every partition in it goes offline until
//!   the broker restarts, the other directories keep serving (`docs/failures.md`).
//! * While any directory is offline, a partition that existed before the start and was
//!   found in no healthy directory may be on the failed one: it stays offline rather
//!   than being created empty somewhere else, which would lose its data for good.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context};

/// One log directory.
#[derive(Debug)]
struct LogDir {
    path: PathBuf,
    /// Why it is offline; `None` while healthy.
    failure: Option<String>,
    /// Held for the life of the process: one broker per directory.
    _lock: Option<std::fs::File>,
}

#[derive(Debug)]
struct Inner {
    dirs: Vec<LogDir>,
    /// Directory index of every partition log known to exist.
    placed: HashMap<(String, i32), usize>,
    /// Partitions that existed before the start and were found in no healthy directory
    /// while one was offline.
    lost: HashSet<(String, i32)>,
    /// Partitions whose move to another directory (AlterReplicaLogDirs) a restart
    /// interrupted, with the destination's index: their move starts over once open.
    resume_moves: HashMap<(String, i32), usize>,
    /// This broker's offline replicas (in a failed directory, or whose log could not be
    /// opened), with their topic ids: the heartbeat reports them to the controller,
    /// which moves their leaderships and takes them out of the ISRs (KIP-858).
    offline_replicas: BTreeMap<(String, i32), [u8; 16]>,
}

/// A log directory as DescribeLogDirs reports it.
#[derive(Debug, Clone)]
pub struct LogDirInfo {
    pub path: PathBuf,
    pub failure: Option<String>,
}

#[derive(Debug)]
pub struct LogDirs {
    inner: Mutex<Inner>,
    /// Some directory was offline at start (see the module docs).
    offline_at_start: bool,
    /// Directories failed since the start: shards compare it with what they last saw
    /// to know when to take partitions offline.
    failures: AtomicU64,
    /// Bumped whenever the offline replicas change, so the heartbeat can report them
    /// at once.
    offline_generation: AtomicU64,
}

/// Where a partition's log is to be opened.
#[derive(Debug, PartialEq, Eq)]
pub enum Placement {
    /// In this directory (index, path).
    At { index: usize, path: PathBuf },
    /// Nowhere: the partition is offline, for this reason.
    Offline(String),
}

impl LogDirs {
    /// Create (if missing), lock and list every directory. Fails when the first cannot
    /// be used, when a directory is locked by another process, or when one partition
    /// has a log in two directories (as Kafka refuses to start then).
    pub fn open(paths: &[PathBuf]) -> anyhow::Result<LogDirs> {
        assert!(!paths.is_empty(), "at least one log directory");
        let mut dirs = Vec::with_capacity(paths.len());
        let mut placed: HashMap<(String, i32), usize> = HashMap::new();
        for (index, path) in paths.iter().enumerate() {
            let opened = std::fs::create_dir_all(path)
                .with_context(|| format!("creating log dir {}", path.display()))
                .and_then(|()| lock_dir(path))
                .and_then(|lock| Ok((lock, list_partitions(path)?)));
            match opened {
                Ok((lock, found)) => {
                    for key in found {
                        if let Some(other) = placed.insert(key.clone(), index) {
                            bail!(
                                "partition {}-{} has a log in both {} and {}; remove one",
                                key.0,
                                key.1,
                                paths[other].display(),
                                path.display()
                            );
                        }
                    }
                    dirs.push(LogDir {
                        path: path.clone(),
                        failure: None,
                        _lock: Some(lock),
                    });
                }
                Err(e) if index == 0 || is_locked(&e) => return Err(e),
                Err(e) => {
                    tracing::error!(dir = %path.display(), error = %format!("{e:#}"), "log dir offline: its partitions are offline until it is repaired and the broker restarts");
                    dirs.push(LogDir {
                        path: path.clone(),
                        failure: Some(format!("{e:#}")),
                        _lock: None,
                    });
                }
            }
        }
        let offline_at_start = dirs.iter().any(|d| d.failure.is_some());
        // Moves a crash interrupted are finished or undone, which needs every
        // directory: the old log of a half-done swap may be on an offline one, and its
        // copy must not be removed then (it is skipped, as any `-future` name is).
        let resume_moves = if offline_at_start {
            HashMap::new()
        } else {
            let healthy: Vec<(usize, PathBuf)> = dirs
                .iter()
                .enumerate()
                .map(|(i, d)| (i, d.path.clone()))
                .collect();
            crate::future_dirs::recover(&healthy, &mut placed)?
        };
        Ok(LogDirs {
            inner: Mutex::new(Inner {
                dirs,
                placed,
                resume_moves,
                lost: HashSet::new(),
                offline_replicas: BTreeMap::new(),
            }),
            offline_at_start,
            failures: AtomicU64::new(0),
            offline_generation: AtomicU64::new(0),
        })
    }

    /// No directories at all, none offline: for tests of code that only asks
    /// [`is_offline`](Self::is_offline).
    #[cfg(test)]
    pub fn healthy_for_tests() -> LogDirs {
        LogDirs {
            inner: Mutex::new(Inner {
                dirs: Vec::new(),
                placed: HashMap::new(),
                resume_moves: HashMap::new(),
                lost: HashSet::new(),
                offline_replicas: BTreeMap::new(),
            }),
            offline_at_start: false,
            failures: AtomicU64::new(0),
            offline_generation: AtomicU64::new(0),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic anywhere aborts the broker (fault.rs), so a poisoned lock cannot be seen.
        self.inner.lock().expect("log dirs lock")
    }

    /// Where to open `topic-partition`: where its log is, or, for a partition that is
    /// `new` (created since the start), the healthy directory with the fewest partitions.
    pub fn place(&self, topic: &str, partition: i32, new: bool) -> Placement {
        let mut inner = self.inner();
        let key = (topic.to_string(), partition);
        if let Some(&index) = inner.placed.get(&key) {
            let dir = &inner.dirs[index];
            return match &dir.failure {
                None => Placement::At {
                    index,
                    path: dir.path.clone(),
                },
                Some(why) => Placement::Offline(offline_reason(&dir.path, why)),
            };
        }
        if !new && self.offline_at_start {
            inner.lost.insert(key);
            return Placement::Offline(
                "not found in the healthy log dirs; it may be in an offline one".into(),
            );
        }
        let mut counts = vec![0usize; inner.dirs.len()];
        for &i in inner.placed.values() {
            counts[i] += 1;
        }
        let Some(index) = (0..inner.dirs.len())
            .filter(|&i| inner.dirs[i].failure.is_none())
            .min_by_key(|&i| counts[i])
        else {
            return Placement::Offline("every log dir is offline".into());
        };
        inner.placed.insert(key, index);
        Placement::At {
            index,
            path: inner.dirs[index].path.clone(),
        }
    }

    /// Every partition log in a healthy directory: topic, partition, the directory.
    pub fn placements(&self) -> Vec<(String, i32, PathBuf)> {
        let inner = self.inner();
        inner
            .placed
            .iter()
            .filter(|(_, &i)| inner.dirs[i].failure.is_none())
            .map(|((topic, partition), &i)| (topic.clone(), *partition, inner.dirs[i].path.clone()))
            .collect()
    }

    /// The partition's log is gone (deleted).
    pub fn forget(&self, topic: &str, partition: i32) {
        let key = (topic.to_string(), partition);
        let mut inner = self.inner();
        inner.placed.remove(&key);
        inner.lost.remove(&key);
        if inner.offline_replicas.remove(&key).is_some() {
            self.offline_generation.fetch_add(1, Ordering::Release);
        }
    }

    /// The partition's replica here is offline (its shard answers KAFKA_STORAGE_ERROR).
    pub fn set_offline(&self, topic: &str, partition: i32, topic_id: [u8; 16]) {
        self.inner()
            .offline_replicas
            .insert((topic.to_string(), partition), topic_id);
        self.offline_generation.fetch_add(1, Ordering::Release);
    }

    /// The partition's replica here serves again (opened).
    pub fn set_online(&self, topic: &str, partition: i32) {
        let removed = self
            .inner()
            .offline_replicas
            .remove(&(topic.to_string(), partition));
        if removed.is_some() {
            self.offline_generation.fetch_add(1, Ordering::Release);
        }
    }

    /// Changes whenever [`Self::offline_replicas`] may have changed.
    pub fn offline_generation(&self) -> u64 {
        self.offline_generation.load(Ordering::Acquire)
    }

    /// This broker's offline replicas, by topic id and partition, in a stable order.
    pub fn offline_replicas(&self) -> Vec<([u8; 16], i32)> {
        let mut out: Vec<([u8; 16], i32)> = self
            .inner()
            .offline_replicas
            .iter()
            .map(|((_, partition), id)| (*id, *partition))
            .collect();
        out.sort_unstable();
        out
    }

    /// Is the partition offline because of a log dir (Metadata reports it leaderless)?
    /// Without offline directories this takes no lock.
    pub fn is_offline(&self, topic: &str, partition: i32) -> bool {
        if !self.offline_at_start && self.failures() == 0 {
            return false;
        }
        let inner = self.inner();
        let key = (topic.to_string(), partition);
        inner.lost.contains(&key)
            || inner
                .placed
                .get(&key)
                .is_some_and(|&i| inner.dirs[i].failure.is_some())
    }

    /// Take directory `index` offline after an I/O error in it. Returns false if it
    /// already was, or if it is the last healthy one: then the failing partitions stay
    /// offline one by one (`docs/failures.md`), and the others keep serving.
    pub fn fail(&self, index: usize, reason: &str) -> bool {
        let mut inner = self.inner();
        let healthy = inner.dirs.iter().filter(|d| d.failure.is_none()).count();
        let dir = &mut inner.dirs[index];
        if dir.failure.is_some() || healthy == 1 {
            return false;
        }
        tracing::error!(dir = %dir.path.display(), error = reason, "log dir failed: its partitions are offline until the broker restarts");
        dir.failure = Some(reason.to_string());
        self.failures.fetch_add(1, Ordering::Release);
        true
    }

    /// How many directories have failed since the start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Acquire)
    }

    /// Why directory `index` is offline, if it is.
    pub fn failure(&self, index: usize) -> Option<String> {
        let inner = self.inner();
        inner.dirs[index]
            .failure
            .as_ref()
            .map(|why| offline_reason(&inner.dirs[index].path, why))
    }

    /// Every directory, in configured order.
    pub fn list(&self) -> Vec<LogDirInfo> {
        self.inner()
            .dirs
            .iter()
            .map(|d| LogDirInfo {
                path: d.path.clone(),
                failure: d.failure.clone(),
            })
            .collect()
    }

    /// The paths of the directories that have not failed.
    pub fn healthy_paths(&self) -> Vec<PathBuf> {
        self.inner()
            .dirs
            .iter()
            .filter(|d| d.failure.is_none())
            .map(|d| d.path.clone())
            .collect()
    }

    /// The index of the directory `path` names (as configured, or its canonical path,
    /// which DescribeLogDirs reports), if it is one of them.
    pub fn index_of(&self, path: &str) -> Option<usize> {
        let wanted = Path::new(path);
        let canonical = std::fs::canonicalize(wanted).ok();
        self.inner().dirs.iter().position(|d| {
            d.path == wanted
                || std::path::absolute(&d.path).is_ok_and(|p| p == wanted)
                || canonical
                    .as_ref()
                    .is_some_and(|c| std::fs::canonicalize(&d.path).is_ok_and(|p| &p == c))
        })
    }

    /// Whether any directory is offline (no move starts then, as in Kafka).
    pub fn any_offline(&self) -> bool {
        self.offline_at_start || self.failures() > 0
    }

    /// The partition's log is now in directory `index` (a move's swap).
    pub fn moved(&self, topic: &str, partition: i32, index: usize) {
        let mut inner = self.inner();
        assert!(index < inner.dirs.len(), "a configured log dir");
        inner.placed.insert((topic.to_string(), partition), index);
    }

    /// The destination of the partition's move a restart interrupted, once.
    pub fn take_resumed_move(&self, topic: &str, partition: i32) -> Option<usize> {
        self.inner()
            .resume_moves
            .remove(&(topic.to_string(), partition))
    }

    /// The path of directory `index`.
    pub fn path(&self, index: usize) -> PathBuf {
        self.inner().dirs[index].path.clone()
    }

    /// Directory index of a partition's log, if it is known.
    pub fn dir_of(&self, topic: &str, partition: i32) -> Option<usize> {
        self.inner()
            .placed
            .get(&(topic.to_string(), partition))
            .copied()
    }
}

fn offline_reason(path: &Path, why: &str) -> String {
    format!("log dir {} is offline: {why}", path.display())
}

/// The error of a directory locked by another process: a configuration mistake, not a
/// failed disk, so the broker must not start.
#[derive(Debug)]
struct Locked(PathBuf);

impl std::fmt::Display for Locked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "log dir {} is in use by another broker",
            self.0.display()
        )
    }
}

impl std::error::Error for Locked {}

fn is_locked(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Locked>().is_some()
}

/// An exclusive lock on the directory, held for the life of the process.
fn lock_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a valid, owned descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(Locked(dir.to_path_buf()).into());
    }
    Ok(file)
}

/// The partitions with a log directly under `dir`: directories named
/// `<topic>-<partition>` (deleted and moving ones carry a suffix and are skipped).
fn list_partitions(dir: &Path) -> anyhow::Result<Vec<(String, i32)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        if let Some(key) = entry.file_name().to_str().and_then(parse_partition_dir) {
            found.push(key);
        }
    }
    Ok(found)
}

/// `<topic>-<partition>` with a legal topic name and a partition number; `None` for
/// anything else (`__cluster_metadata`, `*-delete`, `*-future`, stray directories).
pub fn parse_partition_dir(name: &str) -> Option<(String, i32)> {
    let (topic, partition) = name.rsplit_once('-')?;
    let partition: i32 = partition.parse().ok()?;
    let legal = !topic.is_empty()
        && topic.len() <= 249
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    (legal && partition >= 0 && partition.to_string().len() == name.len() - topic.len() - 1)
        .then(|| (topic.to_string(), partition))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "spate-logdirs-{name}-{}-{}",
            std::process::id(),
            crate::random_id::uuid_v4()[0]
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn partition_dir_names() {
        assert_eq!(parse_partition_dir("t-0"), Some(("t".into(), 0)));
        assert_eq!(parse_partition_dir("a-b-12"), Some(("a-b".into(), 12)));
        assert_eq!(parse_partition_dir("t--1"), Some(("t-".into(), 1)));
        assert_eq!(
            parse_partition_dir("__consumer_offsets-49"),
            Some(("__consumer_offsets".into(), 49))
        );
        for bad in [
            "__cluster_metadata",
            "t",
            "t-",
            "-1",
            "t-+1",
            "t-01",
            "t-1.abc-delete",
            "t-1.abc-future",
            "t-x",
        ] {
            assert_eq!(parse_partition_dir(bad), None, "{bad}");
        }
    }

    #[test]
    fn spreads_new_partitions_and_finds_existing_ones() {
        let (a, b) = (tmp("a"), tmp("b"));
        std::fs::create_dir_all(a.join("old-0")).unwrap();
        std::fs::create_dir_all(a.join("old-1")).unwrap();
        std::fs::create_dir_all(b.join("old-2")).unwrap();
        std::fs::create_dir_all(a.join("old-3.0123-delete")).unwrap();
        let dirs = LogDirs::open(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(
            dirs.place("old", 2, false),
            Placement::At {
                index: 1,
                path: b.clone()
            }
        );
        assert_eq!(
            dirs.place("old", 0, false),
            Placement::At {
                index: 0,
                path: a.clone()
            }
        );
        // 2 in a, 1 in b: the next two go to b, then they alternate from a.
        let placed: Vec<usize> = (0..4)
            .map(|p| match dirs.place("new", p, true) {
                Placement::At { index, .. } => index,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(placed, vec![1, 0, 1, 0]);
        // Placing again finds the same directory.
        assert_eq!(
            dirs.place("new", 0, true),
            Placement::At {
                index: 1,
                path: b.clone()
            }
        );
        dirs.forget("new", 0);
        assert_eq!(dirs.dir_of("new", 0), None);
        drop(dirs);
        std::fs::remove_dir_all(&a).unwrap();
        std::fs::remove_dir_all(&b).unwrap();
    }

    #[test]
    fn a_failed_dir_takes_only_its_partitions() {
        let (a, b) = (tmp("fa"), tmp("fb"));
        std::fs::create_dir_all(a.join("t-0")).unwrap();
        std::fs::create_dir_all(b.join("t-1")).unwrap();
        let dirs = LogDirs::open(&[a.clone(), b.clone()]).unwrap();
        assert!(dirs.fail(1, "Input/output error"));
        assert!(!dirs.fail(1, "again"));
        assert_eq!(dirs.failures(), 1);
        // The last healthy directory is not taken offline as a whole.
        assert!(!dirs.fail(0, "Input/output error"));
        assert!(dirs.failure(0).is_none());
        assert!(
            matches!(dirs.place("t", 1, false), Placement::Offline(r) if r.contains("Input/output error"))
        );
        assert!(dirs.is_offline("t", 1));
        assert!(!dirs.is_offline("t", 0));
        assert_eq!(
            dirs.place("t", 0, false),
            Placement::At {
                index: 0,
                path: a.clone()
            }
        );
        // New partitions go to the healthy directory only.
        for p in 0..3 {
            assert_eq!(
                dirs.place("n", p, true),
                Placement::At {
                    index: 0,
                    path: a.clone()
                }
            );
        }
        drop(dirs);
        std::fs::remove_dir_all(&a).unwrap();
        std::fs::remove_dir_all(&b).unwrap();
    }

    #[test]
    fn offline_replicas_are_reported_until_opened_or_forgotten() {
        let dirs = LogDirs::healthy_for_tests();
        assert!(dirs.offline_replicas().is_empty());
        dirs.set_offline("t", 1, [2; 16]);
        dirs.set_offline("t", 0, [2; 16]);
        dirs.set_offline("u", 0, [1; 16]);
        assert_eq!(dirs.offline_generation(), 3);
        assert_eq!(
            dirs.offline_replicas(),
            vec![([1; 16], 0), ([2; 16], 0), ([2; 16], 1)]
        );
        dirs.set_online("t", 0);
        dirs.forget("u", 0);
        assert_eq!(dirs.offline_replicas(), vec![([2; 16], 1)]);
        assert_eq!(dirs.offline_generation(), 5);
        // Nothing offline to remove: no change to report.
        dirs.set_online("t", 0);
        dirs.forget("v", 0);
        assert_eq!(dirs.offline_generation(), 5);
    }

    #[test]
    fn an_unusable_dir_is_offline_from_the_start() {
        let a = tmp("sa");
        let b = tmp("sb");
        // A file where the directory should be: it cannot be created.
        std::fs::write(&b, b"not a directory").unwrap();
        std::fs::create_dir_all(a.join("t-0")).unwrap();
        let dirs = LogDirs::open(&[a.clone(), b.clone()]).unwrap();
        assert!(dirs.failure(1).is_some());
        assert!(dirs.failure(0).is_none());
        // Existing partitions not found may be on the offline dir; new ones are placed.
        assert!(matches!(dirs.place("t", 1, false), Placement::Offline(_)));
        assert!(dirs.is_offline("t", 1));
        assert!(!dirs.is_offline("t", 0));
        assert_eq!(
            dirs.place("t", 0, false),
            Placement::At {
                index: 0,
                path: a.clone()
            }
        );
        assert_eq!(
            dirs.place("t", 2, true),
            Placement::At {
                index: 0,
                path: a.clone()
            }
        );
        // The first directory (the metadata log's) must be usable.
        let c = tmp("sc");
        assert!(LogDirs::open(&[b.clone(), c.clone()]).is_err());
        assert!(!c.exists(), "nothing after a failed first dir is touched");
        drop(dirs);
        std::fs::remove_dir_all(&a).unwrap();
        std::fs::remove_file(&b).unwrap();
    }

    #[test]
    fn a_partition_in_two_dirs_stops_the_start() {
        let (a, b) = (tmp("da"), tmp("db"));
        std::fs::create_dir_all(a.join("t-0")).unwrap();
        std::fs::create_dir_all(b.join("t-0")).unwrap();
        let e = LogDirs::open(&[a.clone(), b.clone()]).unwrap_err();
        assert!(e.to_string().contains("in both"), "{e}");
        std::fs::remove_dir_all(&a).unwrap();
        std::fs::remove_dir_all(&b).unwrap();
    }

    #[test]
    fn a_dir_locked_by_another_broker_stops_the_start() {
        let (a, b) = (tmp("la"), tmp("lb"));
        let first = LogDirs::open(&[a.clone(), b.clone()]).unwrap();
        let c = tmp("lc");
        let e = LogDirs::open(&[c.clone(), b.clone()]).unwrap_err();
        assert!(e.to_string().contains("in use"), "{e}");
        drop(first);
        std::fs::remove_dir_all(&c).unwrap();
        std::fs::remove_dir_all(&a).unwrap();
        std::fs::remove_dir_all(&b).unwrap();
    }
}
