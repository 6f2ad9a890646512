//! Spate's controller quorum: the metadata log, as in Kafka's KRaft, replicated by
//! Raft (openraft) between 1, 3 or 5 controllers. See
//! `docs/adr/0005-controller-quorum.md`.
//!
//! * [`Quorum`]: one controller on its own thread; `propose` records, `subscribe` to
//!   what is committed, `status` for DescribeQuorum and metrics.
//! * [`observe`]: follow what is committed from outside the quorum (a broker that is
//!   not a controller), over a voter's controller listener.
//! * [`AppClient`]: the node's calls to the active controller (broker registration and
//!   heartbeats), served by the handler it installs with [`Quorum::serve_app`].
//! * [`MetadataStateMachine`]: the application's metadata state that the quorum
//!   applies committed records to and snapshots.
//! * Storage: the Raft log and vote (`log_store`) and snapshots (`snapshot`) in a
//!   directory; transport: length-prefixed frames over TCP (`rpc`, `network`), or over
//!   TLS with mutual authentication when the node gives a [`ControllerTls`]
//!   (`transport`).
//!
//! Records are Kafka's KRaft metadata records, framed as Kafka frames them
//! ([`spate_net::metadata_frame::ApiMessageAndVersion`]).

pub mod app_rpc;
pub mod config;
mod files;
mod log_store;
mod network;
pub mod observer;
pub mod quorum;
mod rpc;
mod snapshot;
pub mod state_machine;
pub mod transport;
pub mod types;

pub use app_rpc::{AppCallError, AppClient, AppHandler, AppReply};
pub use config::{parse_voters, ConfigError, QuorumConfig};
pub use observer::{observe, ObserverConfig};
pub use quorum::{Proposed, Quorum, QuorumError, QuorumStatus, Role, StartError};
pub use state_machine::{Committed, MetadataStateMachine};
pub use transport::{ControllerTls, Security};
pub use types::{MetadataBatch, NodeId};
