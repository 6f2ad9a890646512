//! The crash-safe swap of a cleaned segment for the segments it replaces.
//!
//! 1. The cleaner writes `<base>.log.cleaned`, `.index.cleaned` and `.timeindex.cleaned`
//!    and syncs them and the directory. A crash now leaves orphans that `open` removes:
//!    the log is the old one.
//! 2. The commit point: `<base>.swap`, a manifest naming the replaced segments and the
//!    cleaner checkpoint they advance to, written atomically (temp file, sync, rename,
//!    directory sync).
//! 3. Roll forward: remove the replaced segments other than the first, rename the
//!    `.cleaned` files over the first one's, advance the cleaner checkpoint, sync the
//!    directory, remove the manifest. Every step is idempotent; a crash anywhere after
//!    step 2 is finished by `open`, which runs the roll-forward of every manifest it
//!    finds before loading segments. So a log always recovers to the old segments or
//!    the new one, never a mix.

use std::io;
use std::path::{Path, PathBuf};

use crate::error::{LogError, Result};
use crate::io as fio;
use crate::segment::{file_stem, paths, paths_with_suffix};

/// Suffix of a cleaned segment's files until they are swapped in.
pub(crate) const CLEANED_SUFFIX: &str = ".cleaned";
/// Suffix of a swap manifest.
const MANIFEST_SUFFIX: &str = ".swap";
/// The cleaner checkpoint of a log (Kafka keeps one per log directory; one per
/// partition directory keeps shards apart).
pub(crate) const CLEANER_CHECKPOINT: &str = "cleaner-offset.checkpoint";

/// What a committed swap does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Manifest {
    /// Bases of the replaced segments, oldest first; the first is the cleaned one's.
    pub replaced: Vec<i64>,
    /// The cleaner checkpoint once the swap is done.
    pub clean_end: i64,
    /// The log's delete horizon once the swap is done: the largest one carried by this
    /// and the earlier cleaned segments of the same clean (`-1`: none).
    pub delete_horizon_ms: i64,
}

impl Manifest {
    fn path(&self, dir: &Path) -> PathBuf {
        manifest_path(dir, self.replaced[0])
    }

    fn encode(&self) -> Vec<u8> {
        let bases: Vec<String> = self.replaced.iter().map(|b| b.to_string()).collect();
        format!(
            "spate-swap 1\nreplaced {}\nclean_end {}\ndelete_horizon_ms {}\n",
            bases.join(" "),
            self.clean_end,
            self.delete_horizon_ms
        )
        .into_bytes()
    }

    fn decode(data: &[u8]) -> Option<Manifest> {
        let text = std::str::from_utf8(data).ok()?;
        let mut lines = text.lines();
        if lines.next()? != "spate-swap 1" {
            return None;
        }
        let mut field = |name: &str| lines.next()?.strip_prefix(name).map(str::to_owned);
        let replaced: Vec<i64> = field("replaced ")?
            .split(' ')
            .map(|b| b.parse().ok())
            .collect::<Option<_>>()?;
        let clean_end = field("clean_end ")?.parse().ok()?;
        let delete_horizon_ms = field("delete_horizon_ms ")?.parse().ok()?;
        (!replaced.is_empty()).then_some(Manifest {
            replaced,
            clean_end,
            delete_horizon_ms,
        })
    }
}

fn manifest_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{}{MANIFEST_SUFFIX}", file_stem(base)))
}

fn io_err(ctx: String) -> impl FnOnce(io::Error) -> LogError {
    move |e| LogError::io(ctx, e)
}

/// The cleaner checkpoint: (first dirty offset, delete horizon).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CleanerCheckpoint {
    pub clean_end: i64,
    pub delete_horizon_ms: i64,
}

impl Default for CleanerCheckpoint {
    fn default() -> Self {
        CleanerCheckpoint {
            clean_end: 0,
            delete_horizon_ms: -1,
        }
    }
}

/// Read the cleaner checkpoint of `dir` (the default when there is none).
pub(crate) fn read_checkpoint(dir: &Path) -> Result<CleanerCheckpoint> {
    let path = dir.join(CLEANER_CHECKPOINT);
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(CleanerCheckpoint::default()),
        Err(e) => return Err(LogError::io(format!("reading {}", path.display()), e)),
    };
    let parse = || -> Option<CleanerCheckpoint> {
        let text = std::str::from_utf8(&data).ok()?;
        let mut lines = text.lines();
        (lines.next()? == "0").then_some(())?;
        Some(CleanerCheckpoint {
            clean_end: lines.next()?.trim().parse().ok()?,
            delete_horizon_ms: lines.next()?.trim().parse().ok()?,
        })
    };
    parse().ok_or(LogError::Corrupt {
        path,
        reason: "unparseable cleaner checkpoint".into(),
    })
}

pub(crate) async fn write_checkpoint(dir: &Path, cp: CleanerCheckpoint) -> Result<()> {
    let path = dir.join(CLEANER_CHECKPOINT);
    let data = format!("0\n{}\n{}\n", cp.clean_end, cp.delete_horizon_ms).into_bytes();
    fio::replace_file(dir, &path, data)
        .await
        .map_err(io_err(format!("writing {}", path.display())))
}

/// Step 2: make the swap durable. From here on it happens, crash or not.
pub(crate) async fn commit(dir: &Path, m: &Manifest) -> Result<()> {
    let path = m.path(dir);
    fio::replace_file(dir, &path, m.encode())
        .await
        .map_err(io_err(format!("writing {}", path.display())))
}

/// Step 3 (idempotent): put the cleaned files in place and forget the manifest.
pub(crate) async fn roll_forward(dir: &Path, m: &Manifest) -> Result<CleanerCheckpoint> {
    for &b in &m.replaced[1..] {
        let (l, i, t) = paths(dir, b);
        for p in [l, i, t] {
            fio::remove_file(&p)
                .await
                .map_err(io_err(format!("removing {}", p.display())))?;
        }
    }
    let base = m.replaced[0];
    let (cl, ci, ct) = paths_with_suffix(dir, base, CLEANED_SUFFIX);
    let (l, i, t) = paths(dir, base);
    // The data file last: while `.log.cleaned` exists, the swap is visibly unfinished.
    for (from, to) in [(ci, i), (ct, t), (cl, l)] {
        if from.exists() {
            fio::rename(&from, &to).await.map_err(io_err(format!(
                "renaming {} to {}",
                from.display(),
                to.display()
            )))?;
        }
    }
    let old = read_checkpoint(dir)?;
    // A clean rewrites the log from its first segment, so its horizon replaces the
    // last clean's; the checkpoint offset only moves forward.
    let cp = CleanerCheckpoint {
        clean_end: old.clean_end.max(m.clean_end),
        delete_horizon_ms: m.delete_horizon_ms,
    };
    if cp != old {
        write_checkpoint(dir, cp).await?;
    }
    fio::sync_dir(dir)
        .await
        .map_err(io_err(format!("syncing {}", dir.display())))?;
    let path = m.path(dir);
    fio::remove_file(&path)
        .await
        .map_err(io_err(format!("removing {}", path.display())))?;
    fio::sync_dir(dir)
        .await
        .map_err(io_err(format!("syncing {}", dir.display())))?;
    Ok(cp)
}

/// Remove the `.cleaned` files of a swap that will not happen.
pub(crate) async fn discard_cleaned(dir: &Path, base: i64) -> Result<()> {
    let (l, i, t) = paths_with_suffix(dir, base, CLEANED_SUFFIX);
    for p in [l, i, t] {
        fio::remove_file(&p)
            .await
            .map_err(io_err(format!("removing {}", p.display())))?;
    }
    Ok(())
}

/// Remove every `.cleaned` file in `dir` (the output of a clean that failed).
pub(crate) async fn discard_all_cleaned(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(io_err(format!("listing {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_err(format!("listing {}", dir.display())))?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.ends_with(CLEANED_SUFFIX))
        {
            let path = entry.path();
            fio::remove_file(&path)
                .await
                .map_err(io_err(format!("removing {}", path.display())))?;
        }
    }
    Ok(())
}

/// At open, before segments are listed: finish every committed swap, then remove the
/// files of cleans that never committed. Returns how many swaps were finished.
pub(crate) async fn recover(dir: &Path) -> Result<usize> {
    let mut manifests = Vec::new();
    let mut orphans = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(io_err(format!("listing {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_err(format!("listing {}", dir.display())))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(MANIFEST_SUFFIX) {
            manifests.push(entry.path());
        } else if name.ends_with(CLEANED_SUFFIX) {
            orphans.push(entry.path());
        }
    }
    manifests.sort();
    for path in &manifests {
        let data = std::fs::read(path).map_err(io_err(format!("reading {}", path.display())))?;
        let m = Manifest::decode(&data).ok_or_else(|| LogError::Corrupt {
            path: path.clone(),
            reason: "unparseable swap manifest".into(),
        })?;
        tracing::info!(dir = %dir.display(), base = m.replaced[0], "finishing an interrupted segment swap");
        roll_forward(dir, &m).await?;
    }
    for path in orphans {
        if path.exists() {
            tracing::info!(file = %path.display(), "removing the output of an interrupted clean");
            fio::remove_file(&path)
                .await
                .map_err(io_err(format!("removing {}", path.display())))?;
        }
    }
    Ok(manifests.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trip() {
        let m = Manifest {
            replaced: vec![0, 100, 250],
            clean_end: 300,
            delete_horizon_ms: 1234,
        };
        assert_eq!(Manifest::decode(&m.encode()), Some(m));
        assert_eq!(Manifest::decode(b"spate-swap 1\nreplaced \n"), None);
        assert_eq!(Manifest::decode(b"garbage"), None);
    }
}
