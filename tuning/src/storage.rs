//! Block devices under `/sys/block`: queue depth, I/O scheduler, logical block size
//! and the rotational flag.

use serde::Serialize;

use crate::source::{bracketed, parse_num, Roots};

#[derive(Debug, Clone, Serialize)]
pub struct Disk {
    pub name: String,
    /// `queue/rotational`: true for spinning disks.
    pub rotational: Option<bool>,
    /// Active scheduler from `queue/scheduler` ("none", "mq-deadline", "bfq", "kyber").
    pub scheduler: Option<String>,
    /// `queue/nr_requests`.
    pub nr_requests: Option<u32>,
    /// `queue/logical_block_size`: the O_DIRECT alignment unit.
    pub logical_block_size: Option<u32>,
}

impl Disk {
    pub fn is_nvme(&self) -> bool {
        self.name.starts_with("nvme")
    }
}

/// Devices that never hold a broker's data directory: loop, RAM and compressed-RAM disks.
fn pseudo(name: &str) -> bool {
    ["loop", "ram", "zram"].iter().any(|p| {
        name.strip_prefix(p)
            .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit()))
    })
}

pub fn read(roots: &Roots) -> Vec<Disk> {
    roots
        .list_sys("block")
        .into_iter()
        .filter(|name| !pseudo(name))
        .map(|name| {
            let q = |file: &str| roots.read_sys(&format!("block/{name}/queue/{file}"));
            Disk {
                rotational: q("rotational").and_then(|r| match r.as_str() {
                    "0" => Some(false),
                    "1" => Some(true),
                    _ => None,
                }),
                // "none" alone (no brackets) is printed by devices with a single choice.
                scheduler: q("scheduler")
                    .and_then(|s| bracketed(&s).or_else(|| (s == "none").then_some(s))),
                nr_requests: parse_num(q("nr_requests")),
                logical_block_size: parse_num(q("logical_block_size")),
                name,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn pseudo_devices() {
        assert!(super::pseudo("loop0"));
        assert!(super::pseudo("zram12"));
        assert!(!super::pseudo("nvme0n1"));
        assert!(!super::pseudo("ramdisk_real"));
    }
}
