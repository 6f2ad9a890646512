//! Network interfaces and their interrupts: which interfaces are backed by a device
//! (physical NICs, including virtio-net) and which are virtual (lo, veth, bridges),
//! which IRQs belong to each device, and which CPUs those IRQs may run on.

use serde::Serialize;

use crate::cpulist;
use crate::source::{link_name, list_dir, parse_num, Roots};

/// One line of `/proc/interrupts` with a numeric IRQ.
#[derive(Debug, Clone, Serialize)]
pub struct Irq {
    pub number: u32,
    /// Everything after the per-CPU counts (chip, trigger, action names).
    pub description: String,
    /// Interrupt counts per CPU, as (cpu, count) for the CPUs in the header.
    pub counts: Vec<(u32, u64)>,
    /// `/proc/irq/N/smp_affinity_list`; `None` when unreadable.
    pub affinity: Option<Vec<u32>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Nic {
    pub name: String,
    /// Backed by a device (`/sys/class/net/NAME/device` exists).
    pub physical: bool,
    /// Device name: PCI address ("0000:3b:00.0") or virtio device ("virtio2").
    pub bus_id: Option<String>,
    pub driver: Option<String>,
    /// `device/numa_node` (absent or -1: unknown).
    pub numa_node: Option<u32>,
    pub irqs: Vec<Irq>,
}

impl Nic {
    /// Union of the affinity lists of this NIC's IRQs.
    pub fn irq_cpus(&self) -> Vec<u32> {
        let mut cpus: Vec<u32> = self
            .irqs
            .iter()
            .filter_map(|i| i.affinity.clone())
            .flatten()
            .collect();
        cpus.sort_unstable();
        cpus.dedup();
        cpus
    }
}

/// Parse `/proc/interrupts`. The header names the CPUs ("CPU0 CPU1 ..."); lines whose
/// first field is not a number (NMI, LOC, ...) are skipped.
pub fn parse_interrupts(text: &str) -> Vec<Irq> {
    let mut lines = text.lines();
    let header: Vec<u32> = match lines.next() {
        Some(h) => h
            .split_whitespace()
            .filter_map(|t| t.strip_prefix("CPU")?.parse().ok())
            .collect(),
        None => return Vec::new(),
    };
    let mut irqs = Vec::new();
    for line in lines {
        let Some((num, rest)) = line.split_once(':') else {
            continue;
        };
        let Ok(number) = num.trim().parse::<u32>() else {
            continue;
        };
        let mut tokens = rest.split_whitespace().peekable();
        let mut counts = Vec::new();
        for &cpu in &header {
            match tokens.peek().and_then(|t| t.parse::<u64>().ok()) {
                Some(n) => {
                    counts.push((cpu, n));
                    tokens.next();
                }
                None => break,
            }
        }
        let description = tokens.collect::<Vec<_>>().join(" ");
        irqs.push(Irq {
            number,
            description,
            counts,
            affinity: None,
        });
    }
    irqs
}

/// True when `needle` occurs in `hay` with no letter or digit right before or after it
/// ("eth0" matches "i40e-eth0-TxRx-0" but not "eth01").
fn contains_word(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return false;
    }
    let mut from = 0;
    while let Some(pos) = hay[from..].find(needle) {
        let start = from + pos;
        let end = start + needle.len();
        let before = hay[..start].chars().next_back();
        let after = hay[end..].chars().next();
        let boundary = |c: Option<char>| c.is_none_or(|c| !c.is_ascii_alphanumeric());
        if boundary(before) && boundary(after) {
            return true;
        }
        from = start + 1;
        while !hay.is_char_boundary(from) {
            from += 1;
        }
    }
    false
}

/// Read every interface under `/sys/class/net` and attach its IRQs.
pub fn read(roots: &Roots) -> Vec<Nic> {
    let irqs = roots
        .read_proc("interrupts")
        .map(|t| parse_interrupts(&t))
        .unwrap_or_default();
    let mut nics = Vec::new();
    for name in roots.list_sys("class/net") {
        let device = roots.sys(&format!("class/net/{name}/device"));
        let physical = std::fs::symlink_metadata(&device).is_ok();
        if !physical {
            nics.push(Nic {
                name,
                physical,
                bus_id: None,
                driver: None,
                numa_node: None,
                irqs: Vec::new(),
            });
            continue;
        }
        let uevent = crate::source::read_trimmed(&device.join("uevent")).unwrap_or_default();
        let uevent_key = |key: &str| {
            uevent
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_string)
        };
        let bus_id = link_name(&device).or_else(|| uevent_key("PCI_SLOT_NAME"));
        let driver = link_name(&device.join("driver")).or_else(|| uevent_key("DRIVER"));
        // virtio-net's device is the virtio device; NUMA node and MSI vectors live on
        // the PCI function above it.
        let numa_node = parse_num::<i64>(crate::source::read_trimmed(&device.join("numa_node")))
            .or_else(|| parse_num::<i64>(crate::source::read_trimmed(&device.join("../numa_node"))))
            .and_then(|n| u32::try_from(n).ok());
        let mut msi: Vec<u32> = list_dir(&device.join("msi_irqs"))
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        if msi.is_empty() {
            msi = list_dir(&device.join("../msi_irqs"))
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect();
        }
        let mine: Vec<Irq> = irqs
            .iter()
            .filter(|irq| {
                msi.contains(&irq.number)
                    || contains_word(&irq.description, &name)
                    || bus_id
                        .as_deref()
                        .is_some_and(|b| contains_word(&irq.description, b))
            })
            .cloned()
            .map(|mut irq| {
                irq.affinity = roots
                    .read_proc(&format!("irq/{}/smp_affinity_list", irq.number))
                    .map(|t| cpulist::parse(&t))
                    .filter(|l| !l.is_empty());
                irq
            })
            .collect();
        nics.push(Nic {
            name,
            physical,
            bus_id,
            driver,
            numa_node,
            irqs: mine,
        });
    }
    nics
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupts_lines() {
        let text = "           CPU0       CPU1       \n \
                    38:          0      11766  PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0\n \
                    NMI:          0          0   Non-maskable interrupts\n \
                    ERR:          0\n";
        let irqs = parse_interrupts(text);
        assert_eq!(irqs.len(), 1);
        assert_eq!(irqs[0].number, 38);
        assert_eq!(irqs[0].counts, vec![(0, 0), (1, 11766)]);
        assert_eq!(
            irqs[0].description,
            "PCI-MSIX-0000:00:03.0 1-edge virtio2-input.0"
        );
        assert!(parse_interrupts("").is_empty());
        // CPU 1 offline: the header skips it, counts follow the header.
        let gap = parse_interrupts("   CPU0   CPU2\n 7:  5  9  IO-APIC 7-edge eth0\n");
        assert_eq!(gap[0].counts, vec![(0, 5), (2, 9)]);
        assert_eq!(gap[0].description, "IO-APIC 7-edge eth0");
    }

    #[test]
    fn word_matching() {
        assert!(contains_word("i40e-eth0-TxRx-0", "eth0"));
        assert!(contains_word("eth0", "eth0"));
        assert!(!contains_word("eth01-rx", "eth0"));
        assert!(contains_word("mlx5_comp3@pci:0000:3b:00.0", "0000:3b:00.0"));
        assert!(contains_word("virtio2-input.0", "virtio2"));
        assert!(!contains_word("virtio20-input.0", "virtio2"));
    }
}
