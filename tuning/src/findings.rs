//! What on a host would hurt a thread-per-core io_uring broker, and why.

use serde::Serialize;

use crate::cpulist;
use crate::host::Host;
use crate::kernel::{Limit, Probe};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The broker loses a core capability (io_uring, O_DIRECT writes).
    Critical,
    /// Measurable latency or throughput cost; fix before benchmarking or production.
    Warning,
    /// Worth knowing; nothing to change by default.
    Info,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Critical => "CRITICAL",
            Severity::Warning => "WARNING",
            Severity::Info => "info",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// Stable identifier ("thp-always", "smt-on", ...), see docs/tuning.md.
    pub id: &'static str,
    /// What was found.
    pub title: String,
    /// Why it matters for a thread-per-core io_uring broker.
    pub why: String,
    /// What to do about it, when something can be done.
    pub fix: Option<String>,
}

fn finding(
    severity: Severity,
    id: &'static str,
    title: String,
    why: &str,
    fix: Option<String>,
) -> Finding {
    Finding {
        severity,
        id,
        title,
        why: why.to_string(),
        fix,
    }
}

/// Every finding for this host, most severe first (stable order within a severity).
pub fn check(host: &Host) -> Vec<Finding> {
    let mut out = Vec::new();
    cpus(host, &mut out);
    nics(host, &mut out);
    io_uring(host, &mut out);
    memory(host, &mut out);
    disks(host, &mut out);
    out.sort_by_key(|f| f.severity);
    out
}

fn cpus(host: &Host, out: &mut Vec<Finding>) {
    use Severity::*;
    let topo = &host.topology;
    if topo.unknown() {
        out.push(finding(
            Info,
            "topology-unknown",
            "CPU topology could not be read (no online CPUs found)".into(),
            "Without core and sibling information no placement can be planned.",
            None,
        ));
        return;
    }
    let cores = topo.cores();
    let smt: Vec<_> = cores.iter().filter(|c| c.threads.len() > 1).collect();
    if !smt.is_empty() {
        let example = smt[0]
            .threads
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" and ");
        out.push(finding(Warning, "smt-on",
            format!("SMT is on: {} of {} physical cores run {} threads (e.g. CPUs {example})", smt.len(), cores.len(), smt[0].threads.len()),
            "A shard runs flat out on its core. Two shards on sibling threads share one core's execution units and caches, so each gets roughly half a core and tail latency rises; the broker's default (cores = 0) starts a shard on every allowed CPU, siblings included.",
            Some("Use the plan's cpu_list (one shard per physical core, siblings left idle), or turn SMT off (`echo off > /sys/devices/system/cpu/smt/control`, or `nosmt` on the kernel command line).".into())));
    }
    if topo.nodes.len() > 1 {
        let nics: Vec<String> = host
            .physical_nics()
            .map(|n| match n.numa_node {
                Some(node) => format!("{} on node {node}", n.name),
                None => format!("{} on an unknown node", n.name),
            })
            .collect();
        out.push(finding(Info, "numa-multi",
            format!("{} NUMA nodes ({}){}", topo.nodes.len(),
                topo.nodes.iter().map(|n| format!("node {}: CPUs {}", n.id, cpulist::format(&n.cpus))).collect::<Vec<_>>().join("; "),
                if nics.is_empty() { String::new() } else { format!("; NICs: {}", nics.join(", ")) }),
            "Memory a shard allocates comes from its own node, but packets arrive in the memory of the NIC's node and cross-shard messages cross the interconnect. Shards on the NIC's node avoid remote memory on the network path.",
            Some("The plan fills the NIC's node first and names each shard's node. For one listener per node, run one broker per node with `spate-tune plan --numa-node N`.".into())));
    }
    if !topo.isolated.is_empty() {
        out.push(finding(Info, "isolated-cpus",
            format!("CPUs {} are isolated (isolcpus)", cpulist::format(&topo.isolated)),
            "The scheduler does not balance ordinary tasks onto isolated CPUs, which is what pinned shards want. Processes normally inherit an affinity without them (init starts on the housekeeping CPUs), so the broker must be started with `taskset -c` covering its cpu_list or it refuses CPUs it is not allowed on.",
            Some("The plan puts shards on the isolated CPUs (pass --avoid-isolated if they are reserved for something else).".into())));
    }
    if !topo.nohz_full.is_empty() {
        out.push(finding(Info, "nohz-full",
            format!("CPUs {} run tickless (nohz_full)", cpulist::format(&topo.nohz_full)),
            "With one runnable task the scheduler tick stops, so a shard thread is not interrupted every tick; shards belong on these CPUs.", None));
    }
    for g in &host.kernel.governors {
        if g.name == "powersave" {
            let driver = host.kernel.cpufreq_driver.as_deref().unwrap_or("unknown");
            // intel_pstate / amd-pstate in active mode: "powersave" is their dynamic policy,
            // not a fixed lowest frequency.
            let dynamic = driver == "intel_pstate" || driver.starts_with("amd-pstate");
            out.push(finding(if dynamic { Info } else { Warning }, "governor-powersave",
                format!("CPU frequency governor is powersave on CPUs {} (driver {driver})", cpulist::format(&g.cpus)),
                if dynamic {
                    "Under intel_pstate/amd-pstate in active mode, powersave is a load-driven policy, not a fixed lowest frequency; performance trades power for lower latency when a shard wakes from idle, which it does on every burst of requests."
                } else {
                    "With a generic cpufreq driver, powersave pins the lowest frequency: every request costs several times the CPU time it would at full speed."
                },
                Some("`cpupower frequency-set -g performance` (or write performance to each scaling_governor).".into())));
        }
    }
}

fn nics(host: &Host, out: &mut Vec<Finding>) {
    use Severity::*;
    let online = &host.topology.online;
    let physical: Vec<_> = host.physical_nics().collect();
    if physical.is_empty() {
        out.push(finding(Info, "nic-none",
            "No device-backed network interface found (only virtual ones, or /sys/class/net unreadable)".into(),
            "NIC interrupt placement cannot be checked; the plan still reserves cores for the OS.", None));
        return;
    }
    for nic in physical {
        if nic.irqs.is_empty() {
            out.push(finding(Info, "nic-irqs-unknown",
                format!("{}: no interrupts found in /proc/interrupts", nic.name),
                "The NIC's interrupt lines could not be matched by name, PCI address or MSI vectors, so their CPUs are unknown.", None));
            continue;
        }
        let unpinned: Vec<u32> = nic
            .irqs
            .iter()
            .filter(|i| {
                i.affinity
                    .as_ref()
                    .is_some_and(|a| !online.is_empty() && online.iter().all(|c| a.contains(c)))
            })
            .map(|i| i.number)
            .collect();
        let cpus = nic.irq_cpus();
        if !unpinned.is_empty() {
            out.push(finding(Warning, "nic-irqs-unpinned",
                format!("{}: {} of {} IRQs may run on any CPU ({})", nic.name, unpinned.len(), nic.irqs.len(),
                    unpinned.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")),
                "A hardware interrupt and its softirq network processing preempt whatever runs on the CPU that takes it; when that CPU runs a shard, the shard stalls for the duration and its requests wait.",
                Some("Pin the NIC's IRQs to the plan's reserved cores (`spate-tune plan` prints the commands) and stop irqbalance from moving them.".into())));
        } else if !cpus.is_empty() {
            out.push(finding(Info, "nic-irqs-pinned",
                format!("{}: {} IRQs pinned to CPUs {}", nic.name, nic.irqs.len(), cpulist::format(&cpus)),
                "The broker's default (cores = 0) would still run shards on these CPUs, where interrupts and softirq processing preempt them.",
                Some("The plan keeps shards off these CPUs.".into())));
        }
        let on_isolated: Vec<u32> = cpus
            .iter()
            .copied()
            .filter(|c| host.topology.isolated.contains(c))
            .collect();
        if !on_isolated.is_empty() && unpinned.is_empty() {
            out.push(finding(Warning, "nic-irqs-on-isolated",
                format!("{}: IRQs are pinned to isolated CPUs {}", nic.name, cpulist::format(&on_isolated)),
                "isolcpus keeps tasks off a CPU, not interrupts: shards placed on these isolated CPUs would still be interrupted.",
                Some("Move the IRQs to non-isolated CPUs (the plan's reserved cores).".into())));
        }
    }
}

fn io_uring(host: &Host, out: &mut Vec<Finding>) {
    use Severity::*;
    let fallback = "The broker's runtime then falls back to epoll: every socket read/write and every O_DIRECT file write becomes its own syscall (file I/O on a blocking thread pool), instead of batched submissions, costing throughput and latency.";
    match host.kernel.io_uring_disabled {
        Some(2) => out.push(finding(Critical, "io-uring-disabled",
            "io_uring is disabled for every process (kernel.io_uring_disabled = 2)".into(), fallback,
            Some("`sysctl kernel.io_uring_disabled=0` (persist in /etc/sysctl.d/).".into()))),
        Some(1) => out.push(finding(Warning, "io-uring-restricted",
            "io_uring is limited to root and the kernel.io_uring_group group (kernel.io_uring_disabled = 1)".into(),
            &format!("Unless the broker's user is in that group: {fallback}"),
            Some("Add the broker's user to the group named by kernel.io_uring_group, or set kernel.io_uring_disabled=0.".into()))),
        _ => {}
    }
    if let Some(Probe::Failed { errno, name }) = &host.kernel.io_uring_probe {
        let cause = match *errno {
            libc::EPERM => "blocked by a seccomp filter (e.g. Docker's default profile) or kernel.io_uring_disabled",
            libc::ENOSYS => "the kernel has no io_uring (CONFIG_IO_URING off) or a seccomp filter answers ENOSYS",
            libc::ENOMEM => "the locked-memory limit is too small for the ring (kernels before 5.12)",
            _ => "refused",
        };
        out.push(finding(Critical, "io-uring-unavailable",
            format!("io_uring_setup failed here with {name} ({errno}): {cause}"), fallback,
            Some("Allow io_uring for the broker (container: a seccomp profile permitting io_uring_setup/io_uring_enter/io_uring_register).".into())));
    }
    if host.kernel.io_uring_probe.is_none() && host.kernel.io_uring_disabled.is_none() {
        out.push(finding(Info, "io-uring-unknown",
            "io_uring availability unknown (no kernel.io_uring_disabled sysctl; not probed on a recorded tree)".into(),
            "kernel.io_uring_disabled exists from Linux 6.6; older kernels allow io_uring unless seccomp blocks it.", None));
    }
}

fn memory(host: &Host, out: &mut Vec<Finding>) {
    use Severity::*;
    let k = &host.kernel;
    if k.thp_enabled.as_deref() == Some("always") {
        out.push(finding(Warning, "thp-always",
            "Transparent huge pages: enabled = always".into(),
            "Every large anonymous mapping is backed by huge pages whether the broker asked or not: memory use grows (a 2 MiB page for a few touched KiB), khugepaged collapses pages in the background under the process's memory locks, and when defrag compacts on fault the faulting shard stalls for milliseconds.",
            Some("`echo madvise > /sys/kernel/mm/transparent_hugepage/enabled` (or `transparent_hugepage=madvise` on the kernel command line).".into())));
    }
    if k.thp_defrag.as_deref() == Some("always") {
        out.push(finding(Warning, "thp-defrag-always",
            "Transparent huge pages: defrag = always".into(),
            "A fault that wants a huge page runs direct compaction synchronously in the faulting thread: a shard stalls, with every connection it owns, until compaction finishes.",
            Some("`echo madvise > /sys/kernel/mm/transparent_hugepage/defrag` (or defer+madvise).".into())));
    }
    match k.memlock {
        Some(Limit::Bytes(n)) if n < 8 << 20 => {
            let old = k.version().is_none_or(|v| v < (5, 12));
            out.push(finding(if old { Warning } else { Info }, "memlock-low",
                format!("Locked-memory limit (RLIMIT_MEMLOCK) is {}", crate::kernel::human_bytes(n)),
                if old {
                    "Before Linux 5.12 every io_uring ring is charged to RLIMIT_MEMLOCK, so a small limit makes io_uring_setup fail with ENOMEM once a few rings exist (one per shard); registered buffers are charged to it on every kernel."
                } else {
                    "Since Linux 5.12 rings are charged to the memory cgroup instead, but registered buffers (pinned pages) are still charged to RLIMIT_MEMLOCK."
                },
                Some("Raise it for the broker: `LimitMEMLOCK=infinity` in its systemd unit, `ulimit -l unlimited`, or `--ulimit memlock=-1` for a container.".into())));
        }
        _ => {}
    }
}

fn disks(host: &Host, out: &mut Vec<Finding>) {
    use Severity::*;
    for d in &host.disks {
        if d.rotational == Some(true) {
            out.push(finding(Warning, "disk-rotational",
                format!("{}: rotational disk", d.name),
                "Seeks cost milliseconds: with many partitions appending to separate segment files and fetches reading old segments, a spinning disk turns sequential logs into random I/O, and O_DIRECT bypasses the page cache that would hide it.",
                Some("Keep data_dir on SSD/NVMe.".into())));
        }
        if let Some(s) = &d.scheduler {
            let fast = d.is_nvme() || d.rotational == Some(false);
            if fast && s != "none" && s != "mq-deadline" {
                out.push(finding(if d.is_nvme() { Warning } else { Info }, "disk-scheduler",
                    format!("{}: I/O scheduler {s} on a non-rotational device", d.name),
                    "bfq and kyber add per-request accounting and locking; on flash the device schedules better itself. A broker that issues deep queues of large O_DIRECT writes gains nothing from them.",
                    Some(format!("`echo none > /sys/block/{}/queue/scheduler` (persist with a udev rule).", d.name))));
            }
        }
        match d.logical_block_size {
            Some(lbs) if lbs > 4096 => out.push(finding(Critical, "disk-block-size",
                format!("{}: logical block size {lbs} bytes", d.name),
                "O_DIRECT I/O must be aligned to the logical block size; segment writes are aligned to 4 KiB, so writes on this device fail with EINVAL.",
                Some("Keep data_dir on a device with a logical block size of 4096 or less.".into()))),
            Some(lbs) if lbs != 4096 => out.push(finding(Info, "disk-block-size",
                format!("{}: logical block size {lbs} bytes (not 4096)", d.name),
                "4 KiB aligned O_DIRECT writes are valid here (4096 is a multiple of the block size), so nothing breaks. A write torn by power loss can end inside a 4 KiB page; recovery's CRC check of the active segment truncates such a batch.",
                d.is_nvme().then(|| "Optional: many NVMe drives offer a 4096-byte LBA format (`nvme id-ns -H`); `nvme format --lbaf=N` switches to it and erases the namespace.".to_string()))),
            _ => {}
        }
        if let Some(n) = d.nr_requests {
            if n < 32 {
                out.push(finding(Info, "disk-queue-shallow",
                    format!("{}: queue depth (nr_requests) {n}", d.name),
                    "At most this many requests are queued per hardware queue; io_uring submissions beyond it wait in the block layer, capping the parallelism of concurrent flushes from many shards.",
                    None));
            }
        }
    }
}
