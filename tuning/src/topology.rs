//! CPU and NUMA topology: which CPUs are online, how they group into physical
//! cores (SMT siblings), which NUMA node each belongs to, and which are isolated.

use serde::Serialize;

use crate::cpulist;
use crate::source::{parse_num, Roots};

/// One logical CPU.
#[derive(Debug, Clone, Serialize)]
pub struct Cpu {
    pub id: u32,
    pub core_id: Option<u32>,
    pub package: Option<u32>,
    /// `thread_siblings_list`: every logical CPU sharing this one's physical core.
    pub siblings: Vec<u32>,
    pub node: Option<u32>,
}

/// One physical core: its online logical CPUs (SMT threads), lowest first.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Core {
    pub package: Option<u32>,
    pub core_id: Option<u32>,
    pub threads: Vec<u32>,
    pub node: Option<u32>,
}

impl Core {
    pub fn first(&self) -> u32 {
        self.threads[0]
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct NumaNode {
    pub id: u32,
    pub cpus: Vec<u32>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Topology {
    /// Online CPUs; empty when unknown.
    pub online: Vec<u32>,
    pub cpus: Vec<Cpu>,
    pub nodes: Vec<NumaNode>,
    /// `/sys/devices/system/cpu/isolated` (the `isolcpus=` boot parameter).
    pub isolated: Vec<u32>,
    /// `/sys/devices/system/cpu/nohz_full` (the `nohz_full=` boot parameter).
    pub nohz_full: Vec<u32>,
    /// `/sys/devices/system/cpu/smt/control` ("on", "off", "forceoff", "notsupported", ...).
    pub smt_control: Option<String>,
}

impl Topology {
    pub fn read(roots: &Roots) -> Topology {
        let base = "devices/system/cpu";
        let mut online = roots
            .read_sys(&format!("{base}/online"))
            .map(|t| cpulist::parse(&t))
            .unwrap_or_default();
        let nodes: Vec<NumaNode> = roots
            .list_sys("devices/system/node")
            .iter()
            .filter_map(|name| {
                let id = name.strip_prefix("node")?.parse::<u32>().ok()?;
                let cpus = cpulist::parse(
                    &roots.read_sys(&format!("devices/system/node/{name}/cpulist"))?,
                );
                Some(NumaNode { id, cpus })
            })
            .collect();
        let mut cpus = Vec::new();
        for name in roots.list_sys(base) {
            let Some(id) = name.strip_prefix("cpu").and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let topo = format!("{base}/{name}/topology");
            cpus.push(Cpu {
                id,
                core_id: parse_num(roots.read_sys(&format!("{topo}/core_id"))),
                package: parse_num(roots.read_sys(&format!("{topo}/physical_package_id"))),
                siblings: roots
                    .read_sys(&format!("{topo}/thread_siblings_list"))
                    .map(|t| cpulist::parse(&t))
                    .unwrap_or_default(),
                node: nodes.iter().find(|n| n.cpus.contains(&id)).map(|n| n.id),
            });
        }
        if online.is_empty() {
            // No `online` file: take every CPU directory that has topology information.
            online = cpus
                .iter()
                .filter(|c| c.core_id.is_some() || !c.siblings.is_empty())
                .map(|c| c.id)
                .collect();
        }
        let list = |file: &str| {
            roots
                .read_sys(&format!("{base}/{file}"))
                .map(|t| cpulist::parse(&t))
                .unwrap_or_default()
        };
        Topology {
            online,
            cpus,
            nodes,
            isolated: list("isolated"),
            nohz_full: list("nohz_full"),
            smt_control: roots.read_sys(&format!("{base}/smt/control")),
        }
    }

    pub fn cpu(&self, id: u32) -> Option<&Cpu> {
        self.cpus.iter().find(|c| c.id == id)
    }

    /// NUMA node of a CPU (`None` when the node directories are missing).
    pub fn node_of(&self, id: u32) -> Option<u32> {
        self.cpu(id).and_then(|c| c.node)
    }

    /// Physical cores made of online CPUs, ordered by their lowest CPU. CPUs are
    /// grouped by `thread_siblings_list`, else by (package, core_id), else alone.
    pub fn cores(&self) -> Vec<Core> {
        let mut cores: Vec<Core> = Vec::new();
        // (thread_siblings_list, (package, core_id)) of each core found so far
        type Key = (Vec<u32>, Option<(u32, u32)>);
        let mut keys: Vec<Key> = Vec::new();
        for &id in &self.online {
            let cpu = self.cpu(id);
            let siblings: Vec<u32> = cpu.map(|c| c.siblings.clone()).unwrap_or_default();
            let pkg_core = cpu.and_then(|c| Some((c.package?, c.core_id?)));
            let found = keys.iter().position(|(sib, pc)| {
                if !siblings.is_empty() && !sib.is_empty() {
                    *sib == siblings
                } else {
                    pkg_core.is_some() && *pc == pkg_core
                }
            });
            match found {
                Some(i) => cores[i].threads.push(id),
                None => {
                    keys.push((siblings, pkg_core));
                    cores.push(Core {
                        package: cpu.and_then(|c| c.package),
                        core_id: cpu.and_then(|c| c.core_id),
                        threads: vec![id],
                        node: cpu.and_then(|c| c.node),
                    });
                }
            }
        }
        for core in &mut cores {
            core.threads.sort_unstable();
        }
        cores.sort_by_key(|c| c.first());
        cores
    }

    /// True when at least one physical core runs two or more online threads.
    pub fn smt_active(&self) -> bool {
        self.cores().iter().any(|c| c.threads.len() > 1)
    }

    /// True when nothing about the CPUs could be read.
    pub fn unknown(&self) -> bool {
        self.online.is_empty()
    }
}
