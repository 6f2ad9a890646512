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
    /// The broker's data directory, when the report was asked about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<crate::datadir::DataDir>,
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
            data_dir: None,
        }
    }

    /// Device-backed interfaces (physical NICs, virtio-net included).
    pub fn physical_nics(&self) -> impl Iterator<Item = &Nic> {
        self.nics.iter().filter(|n| n.physical)
    }
}
