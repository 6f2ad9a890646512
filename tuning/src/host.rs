//! Everything spate-tune knows about one host, gathered from its sysfs/procfs trees.

use serde::Serialize;

use crate::kernel::Kernel;
use crate::nic::Nic;
use crate::source::Roots;
use crate::storage::Disk;
use crate::topology::Topology;

#[derive(Debug, Clone, Serialize)]
pub struct Host {
    /// True when read from the running machine (live probes were made).
    pub live: bool,
    pub topology: Topology,
    pub nics: Vec<Nic>,
    pub disks: Vec<Disk>,
    pub kernel: Kernel,
}

impl Host {
    pub fn read(roots: &Roots) -> Host {
        let topology = Topology::read(roots);
        let kernel = Kernel::read(roots, &topology.online);
        Host {
            live: roots.live,
            nics: crate::nic::read(roots),
            disks: crate::storage::read(roots),
            kernel,
            topology,
        }
    }

    /// Device-backed interfaces (physical NICs, virtio-net included).
    pub fn physical_nics(&self) -> impl Iterator<Item = &Nic> {
        self.nics.iter().filter(|n| n.physical)
    }
}
