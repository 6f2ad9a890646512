//! Kernel-wide settings: transparent huge pages, io_uring availability, the
//! locked-memory limit, CPU frequency governors and the kernel release.

use serde::Serialize;

use crate::cpulist;
use crate::source::{bracketed, Roots};

/// A resource limit value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Limit {
    Unlimited,
    Bytes(u64),
}

/// Outcome of a real `io_uring_setup` call (live host only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Probe {
    Ok,
    /// The call failed with this errno.
    Failed {
        errno: i32,
        name: String,
    },
}

/// CPUs grouped by their `scaling_governor`.
#[derive(Debug, Clone, Serialize)]
pub struct Governor {
    pub name: String,
    pub cpus: Vec<u32>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Kernel {
    /// `/proc/sys/kernel/osrelease`, e.g. "6.8.0-45-generic".
    pub release: Option<String>,
    /// Active value of `/sys/kernel/mm/transparent_hugepage/enabled`.
    pub thp_enabled: Option<String>,
    /// Active value of `/sys/kernel/mm/transparent_hugepage/defrag`.
    pub thp_defrag: Option<String>,
    /// `/proc/sys/kernel/io_uring_disabled`: 0 allowed, 1 only for `io_uring_group`
    /// members and CAP_SYS_ADMIN, 2 disabled. Absent before Linux 6.6.
    pub io_uring_disabled: Option<u32>,
    /// Live host only: result of a real io_uring_setup.
    pub io_uring_probe: Option<Probe>,
    /// Soft RLIMIT_MEMLOCK of this process (live: getrlimit; recorded: proc/self/limits).
    pub memlock: Option<Limit>,
    /// `cpufreq/scaling_driver` of the first CPU that has one.
    pub cpufreq_driver: Option<String>,
    pub governors: Vec<Governor>,
}

impl Kernel {
    pub fn read(roots: &Roots, cpus: &[u32]) -> Kernel {
        let thp = |file: &str| {
            roots
                .read_sys(&format!("kernel/mm/transparent_hugepage/{file}"))
                .and_then(|t| bracketed(&t))
        };
        let mut governors: Vec<Governor> = Vec::new();
        let mut cpufreq_driver = None;
        for &cpu in cpus {
            let dir = format!("devices/system/cpu/cpu{cpu}/cpufreq");
            if let Some(g) = roots
                .read_sys(&format!("{dir}/scaling_governor"))
                .filter(|g| !g.is_empty())
            {
                match governors.iter_mut().find(|x| x.name == g) {
                    Some(x) => x.cpus.push(cpu),
                    None => governors.push(Governor {
                        name: g,
                        cpus: vec![cpu],
                    }),
                }
            }
            if cpufreq_driver.is_none() {
                cpufreq_driver = roots
                    .read_sys(&format!("{dir}/scaling_driver"))
                    .filter(|d| !d.is_empty());
            }
        }
        let memlock = if roots.live {
            crate::live::memlock().or_else(|| memlock_from_limits(roots))
        } else {
            memlock_from_limits(roots)
        };
        Kernel {
            release: roots
                .read_proc("sys/kernel/osrelease")
                .filter(|r| !r.is_empty()),
            thp_enabled: thp("enabled"),
            thp_defrag: thp("defrag"),
            io_uring_disabled: crate::source::parse_num(
                roots.read_proc("sys/kernel/io_uring_disabled"),
            ),
            io_uring_probe: if roots.live {
                Some(crate::live::probe_io_uring())
            } else {
                None
            },
            memlock,
            cpufreq_driver,
            governors,
        }
    }

    /// (major, minor) of the kernel release, if it parses.
    pub fn version(&self) -> Option<(u32, u32)> {
        let release = self.release.as_deref()?;
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some((major, minor))
    }
}

/// The soft "Max locked memory" limit from `proc/self/limits`.
fn memlock_from_limits(roots: &Roots) -> Option<Limit> {
    let text = roots.read_proc("self/limits")?;
    let line = text.lines().find(|l| l.starts_with("Max locked memory"))?;
    let soft = line
        .trim_start_matches("Max locked memory")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        Some(Limit::Unlimited)
    } else {
        soft.parse().ok().map(Limit::Bytes)
    }
}

/// Human form of a byte count: 65536 -> "64 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n;
    let mut unit = 0;
    #[allow(clippy::manual_is_multiple_of)] // is_multiple_of needs Rust 1.87; MSRV is 1.85
    while value >= 1024 && value % 1024 == 0 && unit + 1 < UNITS.len() {
        value /= 1024;
        unit += 1;
    }
    format!("{value} {}", UNITS[unit])
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Limit::Unlimited => write!(f, "unlimited"),
            Limit::Bytes(n) => write!(f, "{}", human_bytes(*n)),
        }
    }
}

/// Governor summary for text output: "performance (0-7)".
pub fn governors_text(governors: &[Governor]) -> String {
    governors
        .iter()
        .map(|g| format!("{} (CPUs {})", g.name, cpulist::format(&g.cpus)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_sizes() {
        let k = Kernel {
            release: Some("5.10.0-28-amd64".into()),
            ..Kernel::default()
        };
        assert_eq!(k.version(), Some((5, 10)));
        assert_eq!(Kernel::default().version(), None);
        assert_eq!(human_bytes(65536), "64 KiB");
        assert_eq!(human_bytes(8 << 20), "8 MiB");
        assert_eq!(human_bytes(1000), "1000 B");
    }
}
