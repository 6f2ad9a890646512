//! The broker's data directory (`report --data-dir`): the file system it is on, that
//! file system's mount options, the ext4 journal, and where the disk's interrupts land.
//!
//! Sources: `/proc/self/mountinfo` (the mount holding the directory: longest mount point
//! that is a prefix of it), `/sys/dev/block/MAJ:MIN` (the block device and the device
//! path above it), `/proc/fs/ext4/DEV/options` and `/proc/fs/jbd2/DEV-*` (ext4's
//! effective options and whether it has a journal), `/proc/interrupts` and
//! `/proc/irq/N/effective_affinity_list` (the disk's interrupts).

use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use crate::cpulist;
use crate::findings::{Finding, Severity};
use crate::nic::{parse_interrupts, Irq};
use crate::source::{list_dir, Roots};

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// "MAJ:MIN" of the mounted device.
    pub device: String,
    pub mount_point: String,
    /// Per-mount options ("rw,relatime").
    pub mount_options: Vec<String>,
    pub fstype: String,
    pub source: String,
    /// Per-superblock options ("rw,discard,errors=remount-ro").
    pub super_options: Vec<String>,
}

/// Parse `/proc/self/mountinfo`; malformed lines are skipped. Fields: id, parent id,
/// MAJ:MIN, root, mount point, mount options, optional fields up to "-", fs type,
/// source, super options. Octal escapes (`\040` for a space) are decoded.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let Some(dash) = f.iter().position(|t| *t == "-") else {
            continue;
        };
        if dash < 6 || f.len() < dash + 3 {
            continue;
        }
        let opts = |s: &str| s.split(',').map(str::to_string).collect::<Vec<_>>();
        out.push(Mount {
            device: f[2].to_string(),
            mount_point: unescape(f[4]),
            mount_options: opts(f[5]),
            fstype: f[dash + 1].to_string(),
            source: unescape(f[dash + 2]),
            super_options: f.get(dash + 3).map(|s| opts(s)).unwrap_or_default(),
        });
    }
    out
}

/// Decode the kernel's octal escapes (`\040` space, `\011` tab, `\012`, `\134`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount holding `path` (absolute, normalised): the one with the longest mount
/// point that is a prefix of it by whole components; of several mounts on the same
/// point, the last (the one on top).
pub fn mount_of<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    let mut best: Option<&Mount> = None;
    for m in mounts {
        if path.starts_with(&m.mount_point)
            && best.is_none_or(|b| {
                Path::new(&m.mount_point).components().count()
                    >= Path::new(&b.mount_point).components().count()
            })
        {
            best = Some(m);
        }
    }
    best
}

/// Does `irq` belong to a device known by `words` (its PCI address, its virtio or
/// NVMe controller name)? A PCI address must appear as a word ("PCI-MSIX-0000:00:02.0");
/// a name must be a whole token or start one followed by '-' or, for NVMe queues, 'q'
/// ("virtio1-req.0", "nvme0q3").
pub fn irq_matches(description: &str, words: &[String]) -> bool {
    words.iter().any(|w| {
        if is_pci_address(w) {
            return description.contains(w.as_str())
                && description
                    .split(|c: char| c.is_whitespace() || c == '-' || c == '[' || c == ']')
                    .any(|t| t == w);
        }
        description.split_whitespace().any(|t| {
            t == w
                || t.strip_prefix(w.as_str()).is_some_and(|rest| {
                    rest.starts_with('-')
                        || (w.starts_with("nvme")
                            && rest.strip_prefix('q').is_some_and(|n| {
                                !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())
                            }))
                })
        })
    })
}

/// "0000:3b:00.0"
fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

/// Names in a block device's sysfs path that its interrupts are named by: PCI
/// addresses and virtio/NVMe controller names ("../../devices/pci0000:00/0000:00:02.0/
/// virtio1/block/vda" gives "0000:00:02.0" and "virtio1").
pub fn irq_words(device_path: &str) -> Vec<String> {
    let mut words = Vec::new();
    let parts: Vec<&str> = device_path.split('/').collect();
    // The last component is the block device itself ("vda", "nvme0n1").
    for &c in &parts[..parts.len().saturating_sub(1)] {
        if c == "block" {
            break;
        }
        let controller = (c.starts_with("virtio") || c.starts_with("nvme"))
            && c.chars().last().is_some_and(|ch| ch.is_ascii_digit());
        if is_pci_address(c) || controller {
            words.push(c.to_string());
        }
    }
    words
}

#[derive(Debug, Clone, Serialize)]
pub struct DataDir {
    pub path: PathBuf,
    /// The mount holding it; `None` when mountinfo was unreadable.
    pub mount: Option<Mount>,
    /// Block device of the mount ("vda1"), and the disk it is on ("vda").
    pub block_device: Option<String>,
    pub disk: Option<String>,
    /// ext4 only: the effective options from `/proc/fs/ext4/DEV/options`.
    pub ext4_options: Vec<String>,
    /// ext4 only: whether it has a journal (a `/proc/fs/jbd2/DEV-*` entry); `None` when
    /// unknown.
    pub ext4_journal: Option<bool>,
    /// The disk's interrupts.
    pub irqs: Vec<Irq>,
    /// CPUs that took (counts > 0) or may take (effective affinity) those interrupts.
    pub irq_cpus: Vec<u32>,
}

impl DataDir {
    /// Is `opt` among the mount, superblock or ext4 options?
    pub fn has_option(&self, opt: &str) -> bool {
        let m = self
            .mount
            .iter()
            .flat_map(|m| m.mount_options.iter().chain(&m.super_options));
        m.chain(&self.ext4_options).any(|o| o == opt)
    }

    /// The value of an option "key=value".
    pub fn option_value(&self, key: &str) -> Option<String> {
        let m = self
            .mount
            .iter()
            .flat_map(|m| m.mount_options.iter().chain(&m.super_options));
        m.chain(&self.ext4_options)
            .find_map(|o| o.strip_prefix(key)?.strip_prefix('=').map(str::to_string))
    }

    pub fn fstype(&self) -> Option<&str> {
        self.mount.as_ref().map(|m| m.fstype.as_str())
    }
}

/// Look at `path` (made absolute; on the live host symlinks are resolved too).
pub fn read(roots: &Roots, path: &Path) -> DataDir {
    let mut abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    if roots.live {
        if let Ok(p) = std::fs::canonicalize(&abs) {
            abs = p;
        }
    }
    let abs: PathBuf = abs
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    let mounts = roots
        .read_proc("self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default();
    let mount = mount_of(&mounts, &abs).cloned();
    let mut dd = DataDir {
        path: abs,
        mount,
        block_device: None,
        disk: None,
        ext4_options: Vec::new(),
        ext4_journal: None,
        irqs: Vec::new(),
        irq_cpus: Vec::new(),
    };
    let Some(dev) = dd.mount.as_ref().map(|m| m.device.clone()) else {
        return dd;
    };
    let link = std::fs::read_link(roots.sys(&format!("dev/block/{dev}")))
        .ok()
        .and_then(|p| p.to_str().map(str::to_string));
    if let Some(link) = &link {
        let parts: Vec<&str> = link.split('/').collect();
        let name = parts.last().map(|s| s.to_string());
        let partition = roots
            .read_sys(&format!("dev/block/{dev}/partition"))
            .is_some();
        dd.disk = if partition {
            parts.len().checked_sub(2).map(|i| parts[i].to_string())
        } else {
            name.clone()
        };
        dd.block_device = name;
    }
    if dd.fstype() == Some("ext4") {
        if let Some(bd) = &dd.block_device {
            if let Some(opts) = roots.read_proc(&format!("fs/ext4/{bd}/options")) {
                dd.ext4_options = opts.lines().map(|l| l.trim().to_string()).collect();
                dd.ext4_journal = ext4_journal(roots, bd);
            }
        }
    }
    let words = link.as_deref().map(irq_words).unwrap_or_default();
    if !words.is_empty() {
        let irqs = roots
            .read_proc("interrupts")
            .map(|t| parse_interrupts(&t))
            .unwrap_or_default();
        for mut irq in irqs
            .into_iter()
            .filter(|i| irq_matches(&i.description, &words))
        {
            irq.affinity = roots
                .read_proc(&format!("irq/{}/effective_affinity_list", irq.number))
                .or_else(|| roots.read_proc(&format!("irq/{}/smp_affinity_list", irq.number)))
                .map(|t| cpulist::parse(&t))
                .filter(|l| !l.is_empty());
            let took = irq.counts.iter().filter(|(_, n)| *n > 0).map(|(c, _)| *c);
            dd.irq_cpus.extend(took);
            // Effective affinity: where the next ones go (only for IRQs in use).
            if irq.counts.iter().any(|(_, n)| *n > 0) {
                dd.irq_cpus.extend(irq.affinity.iter().flatten().copied());
            }
            dd.irqs.push(irq);
        }
        dd.irq_cpus.sort_unstable();
        dd.irq_cpus.dedup();
    }
    dd
}

/// Has the ext4 file system on block device `bd` a journal? Yes when jbd2 lists it
/// (`/proc/fs/jbd2/BD-*`); otherwise `/sys/fs/ext4/BD/journal_task` says "<none>" for
/// a file system without one; unknown when neither can be read.
fn ext4_journal(roots: &Roots, bd: &str) -> Option<bool> {
    let prefix = format!("{bd}-");
    if list_dir(&roots.proc("fs/jbd2"))
        .iter()
        .any(|n| n.starts_with(&prefix))
    {
        return Some(true);
    }
    match roots.read_sys(&format!("fs/ext4/{bd}/journal_task")) {
        Some(t) => Some(t != "<none>"),
        None => roots.proc("fs/jbd2").is_dir().then_some(false),
    }
}

/// Findings about the data directory. `shards`: the shard CPUs (`--cpu-list`), or
/// `None` for the broker's default of one shard on every CPU it may use.
pub fn check(dd: &DataDir, shards: Option<&[u32]>, online: &[u32]) -> Vec<Finding> {
    use Severity::*;
    let mut out = Vec::new();
    let mut f = |severity, id, title: String, why: &str, fix: Option<&str>| {
        out.push(Finding {
            severity,
            id,
            title,
            why: why.to_string(),
            fix: fix.map(str::to_string),
        })
    };
    let Some(m) = &dd.mount else {
        f(
            Info,
            "datadir-unknown-fs",
            format!(
                "{}: file system unknown (mountinfo unreadable)",
                dd.path.display()
            ),
            "Nothing could be checked about the data directory's file system.",
            None,
        );
        return out;
    };
    let here = format!(
        "{} ({} on {}, mounted at {})",
        dd.path.display(),
        m.fstype,
        m.source,
        m.mount_point
    );
    match m.fstype.as_str() {
        "xfs" | "ext4" => {}
        "tmpfs" | "ramfs" => f(Warning, "datadir-memory-fs", format!("data_dir {here} is in memory"),
            "Nothing survives a reboot, and tmpfs rejects O_DIRECT: segments fall back to buffered I/O (allow_buffered_fallback) and the page cache holds every byte twice.",
            Some("Put data_dir on a disk-backed XFS or ext4 file system.")),
        "overlay" | "nfs" | "nfs4" | "cifs" | "smb3" | "9p" | "virtiofs" | "fuse" | "fuseblk" => f(Warning, "datadir-remote-or-layered-fs",
            format!("data_dir {here} is on a layered, network or FUSE file system"),
            "O_DIRECT is refused or emulated there (buffered fallback), and write and sync latencies depend on a server or a lower layer: the produce tail follows them.",
            Some("Put data_dir on a local XFS or ext4 file system (in containers: a volume, not the overlay).")),
        "btrfs" => f(Info, "datadir-btrfs", format!("data_dir {here} is on btrfs"),
            "Copy-on-write: every rewrite of a segment's partly filled tail page (each group commit) allocates new blocks, and data checksums cost CPU per write; O_DIRECT writes work.",
            Some("`chattr +C` on the (empty) data directory turns copy-on-write off for new segments; XFS or ext4 avoid the question.")),
        other => f(Info, "datadir-other-fs", format!("data_dir {here} is on {other}"),
            "Spate is tested on XFS and ext4; O_DIRECT and fallocate behave differently elsewhere.", None),
    }
    if dd.has_option("discard") {
        f(Warning, "datadir-discard", format!("data_dir {here} is mounted with `discard`"),
            "Online discard sends TRIM for every freed extent as it is freed: deleting segments (retention, compaction) issues large discards that the device may serve slowly and that sit in the same queue as the produce writes, which then wait behind them.",
            Some("Mount without `discard` and trim periodically instead (`systemctl enable --now fstrim.timer`)."));
    }
    if m.fstype == "ext4" {
        match dd.ext4_journal {
            Some(false) => f(Info, "datadir-ext4-no-journal", format!("data_dir {here}: ext4 without a journal"),
                "No jbd2 commits for O_DIRECT writes to wait behind (extent conversion is journal-free), but after a crash the file system needs fsck before it can be trusted; Spate's own recovery (CRC scan of the active segment) assumes file system metadata that is consistent.",
                Some("Fine for a scratch or benchmark disk; for production keep the journal (or use XFS).")),
            Some(true) => {
                if dd.option_value("data").as_deref() == Some("journal") {
                    f(Warning, "datadir-ext4-data-journal", format!("data_dir {here}: ext4 with data=journal"),
                        "Every data block goes through the journal first: writes are done twice, and O_DIRECT is not supported in this mode (segments fall back to buffered I/O).",
                        Some("Mount with data=ordered (the default)."));
                }
                let commit = dd.option_value("commit").unwrap_or_else(|| "5".into());
                f(Info, "datadir-ext4-journal", format!("data_dir {here}: ext4 with a journal (commit={commit} s)"),
                    "A direct write into preallocated (unwritten) space converts extents when it completes, inside a journal transaction; when jbd2 is committing, that completion can wait for the commit. Spate finishes such writes on its own threads (docs/log.md), and the optional zero fill (segment_zero_ahead_bytes) makes data writes plain overwrites.",
                    None);
            }
            None => {}
        }
    }
    if !dd.irq_cpus.is_empty() {
        let disk = dd.disk.clone().unwrap_or_else(|| "the disk".into());
        let shard_cpus: Vec<u32> = shards
            .map(<[u32]>::to_vec)
            .unwrap_or_else(|| online.to_vec());
        let hit: Vec<u32> = dd
            .irq_cpus
            .iter()
            .copied()
            .filter(|c| shard_cpus.contains(c))
            .collect();
        let list = cpulist::format(&dd.irq_cpus);
        if hit.is_empty() {
            f(Info, "datadir-disk-irqs", format!("{disk}: interrupts on CPUs {list}, none of them a shard CPU"),
                "Completions of the data writes are signalled there; the broker's blocking-pool thread that waits for each write is woken from that CPU.", None);
        } else {
            let (sev, whose) = match shards {
                Some(_) => (Warning, "the shards of --cpu-list"),
                None => (
                    Info,
                    "shards (by default the broker runs one on every CPU it may use)",
                ),
            };
            f(sev, "datadir-disk-irqs-on-shards",
                format!("{disk}: interrupts on CPUs {list}, shared with {whose}: {}", cpulist::format(&hit)),
                "Each data write's completion interrupt (and the wake-up of the thread waiting for it) preempts the shard on that CPU, and work the kernel defers to that CPU waits while the shard runs. The issue 19 measurements saw the disk's interrupts on the CPU next to the broker's.",
                Some("Keep shards off those CPUs (`spate --cpu-list`, `spate-tune plan`), or set the disk IRQs' smp_affinity_list to CPUs without shards (virtio and NVMe queue IRQs may be managed by the kernel and refuse it)."));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict
31 27 259:2 / /srv/spate\\040data rw,noatime shared:5 - xfs /dev/nvme0n1p2 rw,attr2,inode64
32 27 0:40 / /srv/spate\\040data/tmp rw - tmpfs tmpfs rw,size=1024k
bogus line
";

    #[test]
    fn mountinfo_lines_and_the_mount_holding_a_path() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 4);
        assert_eq!(m[1].fstype, "ext4");
        assert_eq!(m[1].super_options, ["rw", "discard", "resv_strict"]);
        assert_eq!(m[2].mount_point, "/srv/spate data");
        assert_eq!(m[2].source, "/dev/nvme0n1p2");
        assert_eq!(m[2].device, "259:2");
        let of = |p: &str| mount_of(&m, Path::new(p)).map(|m| m.mount_point.clone());
        assert_eq!(
            of("/srv/spate data/t-0").as_deref(),
            Some("/srv/spate data")
        );
        assert_eq!(
            of("/srv/spate data/tmp/x").as_deref(),
            Some("/srv/spate data/tmp")
        );
        // Prefix by components: /srv/spate datax is not under /srv/spate data.
        assert_eq!(of("/srv/spate datax").as_deref(), Some("/"));
        assert_eq!(of("/work").as_deref(), Some("/"));
    }

    #[test]
    fn disk_interrupts_are_found_by_pci_address_and_controller_name() {
        let w = irq_words("../../devices/pci0000:00/0000:00:02.0/virtio1/block/vda");
        assert_eq!(w, ["0000:00:02.0", "virtio1"]);
        assert!(irq_matches(
            "PCI-MSIX-0000:00:02.0   1-edge      virtio1-req.0",
            &w
        ));
        assert!(irq_matches("PCI-MSI 49153-edge virtio1-req.0", &w));
        assert!(!irq_matches(
            "PCI-MSIX-0000:00:03.0 0-edge virtio12-config",
            &w
        ));
        let n = irq_words("../../devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1");
        assert_eq!(n, ["0000:00:04.0", "nvme0"]);
        assert!(irq_matches("PCI-MSI 524289-edge nvme0q1", &n));
        assert!(!irq_matches("PCI-MSI 524289-edge nvme01q1", &n));
        assert!(irq_words("../../devices/virtual/block/dm-0").is_empty());
    }

    fn dd(fstype: &str, opts: &str, journal: Option<bool>, irq_cpus: &[u32]) -> DataDir {
        DataDir {
            path: "/data".into(),
            mount: Some(Mount {
                device: "254:0".into(),
                mount_point: "/".into(),
                mount_options: vec!["rw".into(), "relatime".into()],
                fstype: fstype.into(),
                source: "/dev/vda".into(),
                super_options: opts.split(',').map(str::to_string).collect(),
            }),
            block_device: Some("vda".into()),
            disk: Some("vda".into()),
            ext4_options: Vec::new(),
            ext4_journal: journal,
            irqs: Vec::new(),
            irq_cpus: irq_cpus.to_vec(),
        }
    }

    #[test]
    fn findings_for_discard_ext4_journal_and_disk_interrupts() {
        let ids = |v: Vec<Finding>| v.iter().map(|f| (f.id, f.severity)).collect::<Vec<_>>();
        let got = ids(check(
            &dd("ext4", "rw,discard", Some(false), &[1]),
            None,
            &[0, 1],
        ));
        assert!(
            got.contains(&("datadir-discard", Severity::Warning)),
            "{got:?}"
        );
        assert!(
            got.contains(&("datadir-ext4-no-journal", Severity::Info)),
            "{got:?}"
        );
        assert!(
            got.contains(&("datadir-disk-irqs-on-shards", Severity::Info)),
            "{got:?}"
        );
        // With an explicit shard list: a warning when it overlaps, info when it does not.
        let got = ids(check(
            &dd("ext4", "rw,data=journal", Some(true), &[1]),
            Some(&[1]),
            &[0, 1],
        ));
        assert!(
            got.contains(&("datadir-disk-irqs-on-shards", Severity::Warning)),
            "{got:?}"
        );
        assert!(
            got.contains(&("datadir-ext4-data-journal", Severity::Warning)),
            "{got:?}"
        );
        assert!(
            got.contains(&("datadir-ext4-journal", Severity::Info)),
            "{got:?}"
        );
        assert!(!got.iter().any(|g| g.0 == "datadir-discard"));
        let got = ids(check(&dd("xfs", "rw", None, &[1]), Some(&[0]), &[0, 1]));
        assert_eq!(got, [("datadir-disk-irqs", Severity::Info)]);
        let got = ids(check(&dd("tmpfs", "rw", None, &[]), None, &[0]));
        assert_eq!(got, [("datadir-memory-fs", Severity::Warning)]);
    }

    #[test]
    fn ext4_journal_from_jbd2_or_journal_task() {
        let root = std::env::temp_dir().join(format!("spate-tune-j-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let roots = Roots::recorded(&root, &root);
        assert_eq!(ext4_journal(&roots, "vda"), None);
        std::fs::create_dir_all(root.join("proc/fs/jbd2")).unwrap();
        assert_eq!(ext4_journal(&roots, "vda"), Some(false));
        std::fs::create_dir_all(root.join("sys/fs/ext4/vda")).unwrap();
        std::fs::write(root.join("sys/fs/ext4/vda/journal_task"), "<none>\n").unwrap();
        assert_eq!(ext4_journal(&roots, "vda"), Some(false));
        std::fs::write(root.join("sys/fs/ext4/vda/journal_task"), "412\n").unwrap();
        assert_eq!(ext4_journal(&roots, "vda"), Some(true));
        std::fs::remove_file(root.join("sys/fs/ext4/vda/journal_task")).unwrap();
        std::fs::create_dir_all(root.join("proc/fs/jbd2/vda-8")).unwrap();
        assert_eq!(ext4_journal(&roots, "vda"), Some(true));
        // Another device's journal says nothing about this one.
        assert_eq!(ext4_journal(&roots, "vdb"), Some(false));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn octal_escapes() {
        assert_eq!(unescape("a\\040b\\011c"), "a b\tc");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
    }
}
