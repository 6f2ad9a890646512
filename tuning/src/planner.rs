//! Shard placement: one shard per physical core, off SMT siblings, off CPUs that take
//! NIC interrupts, with cores reserved per NUMA node for interrupts and the OS.

use serde::Serialize;

use crate::cpulist;
use crate::host::Host;
use crate::topology::Core;

#[derive(Debug, Clone)]
pub struct Options {
    /// Number of shards; `None`: every eligible core.
    pub shards: Option<usize>,
    /// Cores reserved per NUMA node for NIC interrupts and the OS.
    pub irq_cores: usize,
    /// Run shards on every SMT thread of the chosen cores.
    pub allow_smt: bool,
    /// Keep shards off isolated CPUs (they are isolated for something else).
    pub avoid_isolated: bool,
    /// Plan for one NUMA node only (one broker per node).
    pub numa_node: Option<u32>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            shards: None,
            irq_cores: 1,
            allow_smt: false,
            avoid_isolated: false,
            numa_node: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Shard {
    pub index: usize,
    pub cpu: u32,
    pub package: Option<u32>,
    pub core_id: Option<u32>,
    pub node: Option<u32>,
    pub isolated: bool,
    /// Device-backed NICs on the shard's NUMA node.
    pub local_nics: Vec<String>,
    /// SMT siblings of `cpu` that run no shard.
    pub idle_siblings: Vec<u32>,
}

/// A core kept free of shards, with the reason.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Kept {
    pub cpus: Vec<u32>,
    pub node: Option<u32>,
    pub reason: String,
}

/// A NIC interrupt that should move to the reserved cores.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IrqMove {
    pub irq: u32,
    pub nic: String,
    pub from: Vec<u32>,
    pub to: Vec<u32>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Plan {
    /// The broker's `cpu_list`, ascending.
    pub cpu_list: Vec<u32>,
    pub shards: Vec<Shard>,
    /// Cores reserved for NIC interrupts and the OS.
    pub reserved: Vec<Kept>,
    /// Cores that run no shard for another reason.
    pub unused: Vec<Kept>,
    pub irq_moves: Vec<IrqMove>,
    pub notes: Vec<String>,
}

/// Build the plan for `host`.
pub fn plan(host: &Host, opts: &Options) -> Plan {
    let topo = &host.topology;
    let mut plan = Plan::default();
    let mut cores = topo.cores();
    if cores.is_empty() {
        plan.notes.push(
            "CPU topology unknown: no plan (the broker's default uses every allowed CPU)".into(),
        );
        return plan;
    }
    if let Some(node) = opts.numa_node {
        cores.retain(|c| c.node == Some(node));
        if cores.is_empty() {
            plan.notes
                .push(format!("NUMA node {node} has no online CPUs"));
            return plan;
        }
    }
    let isolated = |c: &Core| c.threads.iter().any(|t| topo.isolated.contains(t));

    // CPUs that NIC interrupts are pinned to (affinity narrower than every online CPU).
    // If they cover every core in scope, they are treated as unpinned: avoiding them
    // would leave nothing.
    let mut irq_cpus: Vec<u32> = host
        .physical_nics()
        .flat_map(|n| n.irqs.iter())
        .filter_map(|i| i.affinity.as_ref())
        .filter(|a| topo.online.iter().any(|c| !a.contains(c)))
        .flatten()
        .copied()
        .collect();
    irq_cpus.sort_unstable();
    irq_cpus.dedup();
    let takes_irqs = |c: &Core| c.threads.iter().any(|t| irq_cpus.contains(t));
    if !irq_cpus.is_empty() && cores.iter().all(takes_irqs) {
        plan.notes.push(format!(
            "NIC interrupts are pinned across every core (CPUs {}); treating them as unpinned",
            cpulist::format(&irq_cpus)
        ));
        irq_cpus.clear();
    }
    let takes_irqs = |c: &Core| c.threads.iter().any(|t| irq_cpus.contains(t));

    // Per NUMA node: cores taking NIC IRQs, topped up to `irq_cores` with the lowest
    // non-isolated cores.
    let mut nodes: Vec<Option<u32>> = cores.iter().map(|c| c.node).collect();
    nodes.sort_unstable();
    nodes.dedup();
    let mut reserved: Vec<(Core, String)> = Vec::new();
    for &node in &nodes {
        let in_node: Vec<&Core> = cores.iter().filter(|c| c.node == node).collect();
        let mut count = 0;
        for core in in_node.iter().filter(|c| takes_irqs(c)) {
            let cpus: Vec<u32> = core
                .threads
                .iter()
                .copied()
                .filter(|t| irq_cpus.contains(t))
                .collect();
            reserved.push((
                (*core).clone(),
                format!("takes NIC interrupts (CPUs {})", cpulist::format(&cpus)),
            ));
            count += 1;
        }
        let mut rest: Vec<&Core> = in_node.iter().copied().filter(|c| !takes_irqs(c)).collect();
        rest.sort_by_key(|c| (isolated(c), c.first()));
        for core in rest.into_iter().take(opts.irq_cores.saturating_sub(count)) {
            reserved.push((core.clone(), "NIC interrupts and the OS".into()));
        }
    }
    let is_reserved = |c: &Core| reserved.iter().any(|(r, _)| r == c);

    let prefer_isolated = !topo.isolated.is_empty() && !opts.avoid_isolated;
    let mut unused: Vec<(Core, String)> = Vec::new();
    let mut candidates: Vec<Core> = Vec::new();
    let mut spare: Vec<Core> = Vec::new(); // used only when more shards are asked for
    for core in cores.iter().filter(|c| !is_reserved(c)) {
        if opts.avoid_isolated && isolated(core) {
            unused.push((core.clone(), "isolated (--avoid-isolated)".into()));
        } else if prefer_isolated && !isolated(core) {
            spare.push(core.clone());
        } else {
            candidates.push(core.clone());
        }
    }
    if candidates.is_empty() && spare.is_empty() && !reserved.is_empty() {
        // Keep at least one shard: release the highest reserved core, preferring one
        // that takes no NIC interrupts.
        let pick = reserved
            .iter()
            .enumerate()
            .max_by_key(|(_, (c, _))| (!takes_irqs(c), c.first()))
            .map(|(i, _)| i)
            .unwrap_or(0);
        let (core, _) = reserved.remove(pick);
        plan.notes.push(format!(
            "too few cores to reserve them all: CPU {} runs a shard instead",
            core.first()
        ));
        candidates.push(core);
    }

    // Order: NUMA nodes with local NICs first (most NICs first), then by node id.
    let nic_count = |node: Option<u32>| {
        host.physical_nics()
            .filter(|n| n.numa_node.is_some() && n.numa_node == node)
            .count()
    };
    let order = |list: &mut Vec<Core>| {
        list.sort_by_key(|c| (std::cmp::Reverse(nic_count(c.node)), c.node, c.first()))
    };
    order(&mut candidates);
    order(&mut spare);
    let slot_count = |list: &[Core]| -> usize {
        if opts.allow_smt {
            list.iter().map(|c| c.threads.len()).sum()
        } else {
            list.len()
        }
    };
    if opts.shards.is_some_and(|n| n > slot_count(&candidates)) {
        candidates.append(&mut spare);
    }
    let wanted = opts.shards.unwrap_or(slot_count(&candidates));
    for core in spare.drain(..) {
        unused.push((core, "not isolated: left to the OS".into()));
    }

    // Slots: the first (isolated, if any) thread of each candidate core, then, with
    // --allow-smt, the remaining threads.
    let primary = |c: &Core| -> u32 {
        c.threads
            .iter()
            .copied()
            .find(|t| prefer_isolated && topo.isolated.contains(t))
            .unwrap_or(c.first())
    };
    let mut slots: Vec<(u32, &Core)> = candidates.iter().map(|c| (primary(c), c)).collect();
    if opts.allow_smt {
        for c in &candidates {
            let p = primary(c);
            slots.extend(c.threads.iter().filter(|&&t| t != p).map(|&t| (t, c)));
        }
    }
    if wanted > slots.len() {
        plan.notes.push(format!(
            "{wanted} shards asked for, {} CPUs available under these rules{}",
            slots.len(),
            if opts.allow_smt {
                ""
            } else {
                " (--allow-smt or --irq-cores 0 give more)"
            }
        ));
    }
    let mut chosen: Vec<(u32, &Core)> = slots.into_iter().take(wanted).collect();
    chosen.sort_by_key(|(cpu, _)| *cpu);
    let chosen_cpus: Vec<u32> = chosen.iter().map(|(cpu, _)| *cpu).collect();
    let single_node = topo.nodes.len() <= 1;
    for (index, (cpu, core)) in chosen.iter().enumerate() {
        plan.shards.push(Shard {
            index,
            cpu: *cpu,
            package: core.package,
            core_id: core.core_id,
            node: core.node,
            isolated: topo.isolated.contains(cpu),
            local_nics: host
                .physical_nics()
                .filter(|n| single_node || (n.numa_node.is_some() && n.numa_node == core.node))
                .map(|n| n.name.clone())
                .collect(),
            idle_siblings: core
                .threads
                .iter()
                .copied()
                .filter(|t| !chosen_cpus.contains(t))
                .collect(),
        });
    }
    for core in &candidates {
        if !core.threads.iter().any(|t| chosen_cpus.contains(t)) {
            unused.push((
                core.clone(),
                "not needed for the requested shard count".into(),
            ));
        }
    }
    plan.cpu_list = chosen_cpus;

    // NIC IRQs allowed on shard CPUs move to the reserved cores of the NIC's node.
    let reserved_cpus = |node: Option<u32>| -> Vec<u32> {
        let local: Vec<u32> = reserved
            .iter()
            .filter(|(c, _)| node.is_none() || c.node == node)
            .flat_map(|(c, _)| c.threads.clone())
            .collect();
        if local.is_empty() {
            reserved
                .iter()
                .flat_map(|(c, _)| c.threads.clone())
                .collect()
        } else {
            local
        }
    };
    for nic in host.physical_nics() {
        let to = reserved_cpus(nic.numa_node);
        if to.is_empty() {
            continue;
        }
        for irq in &nic.irqs {
            if let Some(from) = &irq.affinity {
                if from.iter().any(|c| plan.cpu_list.contains(c)) {
                    plan.irq_moves.push(IrqMove {
                        irq: irq.number,
                        nic: nic.name.clone(),
                        from: from.clone(),
                        to: to.clone(),
                    });
                }
            }
        }
    }
    if prefer_isolated {
        plan.notes.push(format!(
            "shards on isolated CPUs: start the broker with `taskset -c {}` so it may use them",
            cpulist::format(&plan.cpu_list)
        ));
    }
    let kept = |list: Vec<(Core, String)>| -> Vec<Kept> {
        let mut out: Vec<Kept> = list
            .into_iter()
            .map(|(c, reason)| Kept {
                node: c.node,
                cpus: c.threads,
                reason,
            })
            .collect();
        out.sort_by_key(|k| k.cpus.first().copied());
        out
    };
    plan.reserved = kept(reserved);
    plan.unused = kept(unused);
    plan
}
