//! Findings about a shard CPU list the operator already uses (`report --cpu-list`):
//! shards sharing a physical core, shards on CPUs that take NIC interrupts, CPUs that
//! are not online, shards spread over NUMA nodes.

use crate::cpulist;
use crate::findings::{Finding, Severity};
use crate::host::Host;

/// Findings for the broker running one shard on each CPU of `cpus`.
pub fn check(host: &Host, cpus: &[u32]) -> Vec<Finding> {
    let topo = &host.topology;
    let mut out = Vec::new();
    if topo.unknown() {
        return out;
    }
    let offline: Vec<u32> = cpus
        .iter()
        .copied()
        .filter(|c| !topo.online.contains(c))
        .collect();
    if !offline.is_empty() {
        out.push(Finding {
            severity: Severity::Critical,
            id: "shards-offline-cpu",
            title: format!("cpu_list names CPUs that are not online: {}", cpulist::format(&offline)),
            why: "The broker refuses to start: a shard cannot be pinned to a CPU outside its allowed set.".into(),
            fix: Some("Remove them from cpu_list (or bring them online).".into()),
        });
    }
    let shared: Vec<String> = topo
        .cores()
        .iter()
        .filter_map(|core| {
            let on: Vec<u32> = core
                .threads
                .iter()
                .copied()
                .filter(|t| cpus.contains(t))
                .collect();
            (on.len() > 1).then(|| cpulist::format(&on))
        })
        .collect();
    if !shared.is_empty() {
        out.push(Finding {
            severity: Severity::Warning,
            id: "shards-share-core",
            title: format!("{} physical core(s) run two or more shards on SMT siblings ({})", shared.len(), shared.join("; ")),
            why: "Sibling threads share one core's execution units and caches: each of these shards gets roughly half a core, and their tail latency rises.".into(),
            fix: Some("Keep one shard per physical core (`spate-tune plan`), unless throughput per core matters more than latency.".into()),
        });
    }
    for nic in host.physical_nics() {
        // Only IRQs pinned to a subset of CPUs; unpinned ones are `nic-irqs-unpinned`.
        let pinned: Vec<u32> = nic
            .irqs
            .iter()
            .filter_map(|i| i.affinity.as_ref())
            .filter(|a| topo.online.iter().any(|c| !a.contains(c)))
            .flatten()
            .copied()
            .collect();
        let hit: Vec<u32> = cpus
            .iter()
            .copied()
            .filter(|c| pinned.contains(c))
            .collect();
        if !hit.is_empty() {
            out.push(Finding {
                severity: Severity::Warning,
                id: "shards-on-irq-cpus",
                title: format!("{}: shards on CPUs {} that take its interrupts", nic.name, cpulist::format(&hit)),
                why: "Interrupts and the softirq packet processing after them preempt the shard on that CPU; its connections and partitions wait meanwhile.".into(),
                fix: Some("Take these CPUs out of cpu_list, or move the IRQs to CPUs without shards.".into()),
            });
        }
    }
    let mut nodes: Vec<u32> = cpus.iter().filter_map(|&c| topo.node_of(c)).collect();
    nodes.sort_unstable();
    nodes.dedup();
    if nodes.len() > 1 {
        out.push(Finding {
            severity: Severity::Info,
            id: "shards-span-nodes",
            title: format!(
                "shards span NUMA nodes {}",
                nodes.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            ),
            why: "Cross-shard requests and replies (produce to a partition owned by another shard, merged fetch responses) then cross the interconnect, and connections accepted far from the NIC's node read packets from remote memory.".into(),
            fix: Some("Fine for one large broker; for strict locality run one broker per node (`spate-tune plan --numa-node N`).".into()),
        });
    }
    out
}
