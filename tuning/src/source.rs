//! Where host facts come from: a sysfs tree and a procfs tree, each under a root
//! directory (`/` on the live host, a recorded copy in tests). Every read is
//! defensive: a missing or unreadable file is `None`, never an error.

use std::path::{Path, PathBuf};

/// The two trees spate-tune reads, plus whether they describe the live host
/// (only then may syscalls that describe the running machine be made).
#[derive(Debug, Clone)]
pub struct Roots {
    /// Directory holding `sys/` (default `/`).
    pub sysfs: PathBuf,
    /// Directory holding `proc/` (default `/`).
    pub procfs: PathBuf,
    /// True when no root was given: live syscall probes are allowed.
    pub live: bool,
}

impl Roots {
    /// The running host.
    pub fn live() -> Roots {
        Roots {
            sysfs: PathBuf::from("/"),
            procfs: PathBuf::from("/"),
            live: true,
        }
    }

    /// A recorded tree: nothing is taken from the live host.
    pub fn recorded(sysfs: impl Into<PathBuf>, procfs: impl Into<PathBuf>) -> Roots {
        Roots {
            sysfs: sysfs.into(),
            procfs: procfs.into(),
            live: false,
        }
    }

    /// Path of `rel` (relative to `/sys`).
    pub fn sys(&self, rel: &str) -> PathBuf {
        self.sysfs.join("sys").join(rel)
    }

    /// Path of `rel` (relative to `/proc`).
    pub fn proc(&self, rel: &str) -> PathBuf {
        self.procfs.join("proc").join(rel)
    }

    pub fn read_sys(&self, rel: &str) -> Option<String> {
        read_trimmed(&self.sys(rel))
    }

    pub fn read_proc(&self, rel: &str) -> Option<String> {
        read_trimmed(&self.proc(rel))
    }

    /// Names of the entries of a sysfs directory, sorted naturally ("cpu2" < "cpu10").
    pub fn list_sys(&self, rel: &str) -> Vec<String> {
        list_dir(&self.sys(rel))
    }
}

/// Read a small text file, trimmed; `None` if absent, unreadable or not UTF-8.
/// Files are capped at 4 MiB (sysfs attributes are one page; /proc/interrupts on a
/// very large machine is the biggest file read).
pub fn read_trimmed(path: &Path) -> Option<String> {
    use std::io::Read;
    let file = std::fs::File::open(path).ok()?;
    let mut text = String::new();
    file.take(4 << 20).read_to_string(&mut text).ok()?;
    Some(text.trim().to_string())
}

/// Parse a number file ("128", "-1"); `None` when absent or not a number.
pub fn parse_num<T: std::str::FromStr>(text: Option<String>) -> Option<T> {
    text?.trim().parse().ok()
}

/// Entry names of a directory in natural order; empty if it cannot be read.
pub fn list_dir(path: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(path) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort_by_key(|n| natural_key(n));
    names
}

/// Sort key that orders a trailing number numerically: ("cpu", 10) > ("cpu", 2).
fn natural_key(name: &str) -> (String, u64, String) {
    let digits_at = name
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(name.len());
    let (prefix, rest) = name.split_at(digits_at);
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let number = rest[..end].parse().unwrap_or(0);
    (prefix.to_string(), number, rest[end..].to_string())
}

/// The active choice of a sysfs selector file: "always [madvise] never" -> "madvise".
pub fn bracketed(text: &str) -> Option<String> {
    let start = text.find('[')?;
    let end = text[start..].find(']')? + start;
    Some(text[start + 1..end].to_string())
}

/// Last path component of a symlink's target ("../../devices/.../0000:3b:00.0").
pub fn link_name(path: &Path) -> Option<String> {
    let target = std::fs::read_link(path).ok()?;
    target.file_name()?.to_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        assert_eq!(
            bracketed("always [madvise] never").as_deref(),
            Some("madvise")
        );
        assert_eq!(bracketed("[none] mq-deadline").as_deref(), Some("none"));
        assert_eq!(bracketed("none"), None);
        assert_eq!(bracketed("[broken"), None);
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["cpu10", "cpu2", "cpufreq", "cpu1"];
        v.sort_by_key(|n| natural_key(n));
        assert_eq!(v, ["cpu1", "cpu2", "cpu10", "cpufreq"]);
    }
}
