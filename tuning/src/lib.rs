//! spate-tune: reads a Linux host's CPU/NUMA topology, NIC interrupts, io_uring
//! availability, memory and disk settings, reports what would hurt a thread-per-core
//! broker, and plans where Spate's shards should run.
//!
//! Layers, one job each: `source` (reading sysfs/procfs trees), `topology`, `nic`,
//! `storage`, `kernel` and `live` (the host model), `findings` and `shardcheck`,
//! `planner`, `output`.

pub mod cpulist;
pub mod datadir;
pub mod findings;
pub mod host;
pub mod kernel;
pub mod live;
pub mod nic;
pub mod output;
pub mod planner;
pub mod shardcheck;
pub mod source;
pub mod storage;
pub mod topology;

pub use findings::{check, Finding, Severity};
pub use host::Host;
pub use planner::{plan, Options, Plan};
pub use source::Roots;
