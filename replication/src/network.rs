//! Transport between controllers: openraft's client side ([`Network`], [`Connection`])
//! and the server that hands incoming RPCs to the local Raft node, over plain TCP or
//! mutually authenticated TLS (`transport.rs`).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::app_rpc::{AppHandler, AppReply};
use crate::rpc::{read_frame, write_frame, Envelope, Request, Response, WireCommitted};
use crate::state_machine::Committed;
use crate::transport::{self, ControllerTls, Peer, Security, Stream};
use crate::types::{NodeId, Raft, TypeConfig};

/// Starts a subscription to what this controller commits (for observers).
pub type Subscribe = Arc<dyn Fn() -> flume::Receiver<Committed> + Send + Sync>;

/// The application's handler of calls, once the node installed it.
pub type AppSlot = Arc<std::sync::OnceLock<AppHandler>>;

/// An observed subscription with nothing to send for this long gets an `Idle` frame, so
/// the observer can tell a quiet controller from a dead connection.
pub const OBSERVER_KEEPALIVE: Duration = Duration::from_secs(1);

/// Limits shared by both sides of the transport.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_frame_bytes: usize,
    /// Incoming connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// An incoming connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// Snapshot chunks reaching past this offset are refused.
    pub max_snapshot_bytes: u64,
}

/// Creates one [`Connection`] per target; openraft asks for them as it needs them.
pub struct Network {
    pub limits: Limits,
    pub security: Security,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            target,
            addr: node.addr.clone(),
            stream: None,
            limits: self.limits,
            security: self.security.clone(),
        }
    }
}

/// A client to one other controller: one connection, opened on first use and again
/// after any failure.
pub struct Connection {
    target: NodeId,
    addr: String,
    stream: Option<Stream>,
    limits: Limits,
    security: Security,
}

/// Why an RPC got no answer.
enum CallError {
    /// Could not connect: openraft backs off before retrying.
    Connect(io::Error),
    /// Failed or timed out after connecting.
    Io(io::Error),
}

impl Connection {
    /// Sends one request and waits for its response, within `ttl` in all.
    async fn call(&mut self, request: Request, ttl: Duration) -> Result<Response, CallError> {
        let result = tokio::time::timeout(ttl, self.round_trip(request)).await;
        let result = match result {
            Ok(r) => r,
            Err(_) => {
                let e = io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no response from controller {} within {ttl:?}", self.target),
                );
                // Still connecting (a peer that drops SYNs): unreachable, back off.
                Err(match self.stream {
                    None => CallError::Connect(e),
                    Some(_) => CallError::Io(e),
                })
            }
        };
        if result.is_err() {
            // The stream may hold half a frame: start afresh next time.
            self.stream = None;
        }
        result
    }

    async fn round_trip(&mut self, request: Request) -> Result<Response, CallError> {
        let stream = match &mut self.stream {
            Some(s) => s,
            None => {
                // A failed handshake (an untrusted certificate) counts as unreachable:
                // openraft backs off instead of hammering the peer.
                let s = transport::connect(&self.addr, &self.security)
                    .await
                    .map_err(CallError::Connect)?;
                self.stream.insert(s)
            }
        };
        let envelope = Envelope {
            to: self.target,
            request,
        };
        let max = self.limits.max_frame_bytes;
        write_frame(stream, &envelope, max)
            .await
            .map_err(CallError::Io)?;
        match read_frame(stream, max).await.map_err(CallError::Io)? {
            Some(Response::WrongNode { this }) => Err(CallError::Io(io::Error::other(format!(
                "{} is controller {this}, not {}",
                self.addr, self.target
            )))),
            Some(r) => Ok(r),
            None => Err(CallError::Io(io::ErrorKind::UnexpectedEof.into())),
        }
    }

    fn rpc_error<E: std::error::Error>(&self, e: CallError) -> RPCError<NodeId, BasicNode, E> {
        match e {
            CallError::Connect(e) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Io(e) => RPCError::Network(NetworkError::new(&e)),
        }
    }

    fn unexpected<E: std::error::Error>(&self) -> RPCError<NodeId, BasicNode, E> {
        let e = io::Error::other(format!("controller {} answered another RPC", self.target));
        RPCError::Network(NetworkError::new(&e))
    }

    // The error type is openraft's, fixed by the `RaftNetwork` trait.
    #[allow(clippy::result_large_err)]
    fn remote<T, E: std::error::Error>(
        &self,
        r: Result<T, E>,
    ) -> Result<T, RPCError<NodeId, BasicNode, E>> {
        r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self
            .call(Request::AppendEntries(rpc), option.hard_ttl())
            .await
        {
            Ok(Response::AppendEntries(r)) => self.remote(r),
            Ok(_) => Err(self.unexpected()),
            Err(e) => Err(self.rpc_error(e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self
            .call(Request::InstallSnapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(Response::InstallSnapshot(r)) => self.remote(r),
            Ok(_) => Err(self.unexpected()),
            Err(e) => Err(self.rpc_error(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call(Request::Vote(rpc), option.hard_ttl()).await {
            Ok(Response::Vote(r)) => self.remote(r),
            Ok(_) => Err(self.unexpected()),
            Err(e) => Err(self.rpc_error(e)),
        }
    }
}

/// Accepts controller connections and serves their RPCs until the runtime stops.
pub async fn serve(
    listener: TcpListener,
    raft: Raft,
    node_id: NodeId,
    limits: Limits,
    subscribe: Subscribe,
    app: AppSlot,
    security: Security,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "controller listener accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many controller connections; closing one");
            continue;
        };
        let raft = raft.clone();
        let subscribe = subscribe.clone();
        let app = app.clone();
        let security = security.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let served = async {
                let (stream, authenticated) = transport::accept(stream, peer, &security).await?;
                let conn = Served {
                    raft: &raft,
                    node_id,
                    limits,
                    subscribe: &subscribe,
                    app: &app,
                    guard: security.clone().zip(authenticated),
                };
                conn.serve(stream).await
            };
            match served.await {
                Ok(()) => {}
                // A peer that breaks the protocol or the limits, or that security turns
                // away, is worth an operator's attention; resets and timeouts are routine.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::InvalidData | io::ErrorKind::PermissionDenied
                    ) =>
                {
                    tracing::warn!(%peer, error = %e, "controller connection refused")
                }
                Err(e) => tracing::debug!(%peer, error = %e, "controller connection closed"),
            }
        });
    }
}

/// One accepted connection and what serving it needs.
struct Served<'a> {
    raft: &'a Raft,
    node_id: NodeId,
    limits: Limits,
    subscribe: &'a Subscribe,
    app: &'a AppSlot,
    /// With TLS: who decides, and who the client certificate says is on the other end.
    guard: Option<(Arc<dyn ControllerTls>, Peer)>,
}

impl Served<'_> {
    /// Kafka requires CLUSTER_ACTION on the cluster for every request of the controller
    /// listener (Vote, Fetch, BrokerRegistration, BrokerHeartbeat, ...): asked before
    /// each one, so that a revoked ACL closes connections already open.
    fn authorize(&self) -> io::Result<()> {
        match &self.guard {
            Some((tls, peer)) if !tls.authorize(&peer.principal, peer.host) => {
                Err(transport::refused(format!(
                    "{} may not use the controller channel (it needs CLUSTER_ACTION on the cluster)",
                    peer.principal
                )))
            }
            _ => Ok(()),
        }
    }

    async fn serve(&self, mut stream: Stream) -> io::Result<()> {
        let (raft, node_id, limits) = (self.raft, self.node_id, self.limits);
        let max = limits.max_frame_bytes;
        loop {
            let next = tokio::time::timeout(
                limits.idle_timeout,
                read_frame::<_, Envelope>(&mut stream, max),
            );
            let envelope = match next.await {
                Ok(Ok(Some(e))) => e,
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(()), // idle
            };
            self.authorize()?;
            let response = if envelope.to != node_id {
                Response::WrongNode { this: node_id }
            } else {
                match envelope.request {
                    Request::AppendEntries(r) => {
                        Response::AppendEntries(raft.append_entries(r).await)
                    }
                    Request::Vote(r) => Response::Vote(raft.vote(r).await),
                    Request::InstallSnapshot(r) => {
                        // openraft collects the chunks in memory: bound the total.
                        let end = r.offset.saturating_add(r.data.len() as u64);
                        if end > limits.max_snapshot_bytes {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!(
                                    "snapshot chunk ends at byte {end}, over the {}-byte limit",
                                    limits.max_snapshot_bytes
                                ),
                            ));
                        }
                        Response::InstallSnapshot(raft.install_snapshot(r).await)
                    }
                    Request::Observe => {
                        return self.stream_committed(stream, (self.subscribe)()).await
                    }
                    Request::App(body) => Response::App(match self.app.get() {
                        Some(handler) => handler(body).await,
                        None => {
                            AppReply::Failed("this controller serves no application calls".into())
                        }
                    }),
                }
            };
            let write = write_frame(&mut stream, &response, max);
            tokio::time::timeout(limits.idle_timeout, write)
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        }
    }

    /// Sends an observer every event of `events` (the current state first), with an
    /// `Idle` frame when there was nothing for [`OBSERVER_KEEPALIVE`]. Ends when the
    /// subscription is dropped for falling behind (the observer reconnects and starts
    /// from a fresh snapshot), the observer goes away, or it may no longer use the
    /// channel (checked before each frame, as Kafka checks each of an observer's
    /// fetches).
    async fn stream_committed(
        &self,
        mut stream: Stream,
        events: flume::Receiver<Committed>,
    ) -> io::Result<()> {
        let limits = self.limits;
        loop {
            let next = tokio::time::timeout(OBSERVER_KEEPALIVE, events.recv_async()).await;
            let response = match next {
                Ok(Ok(event)) => Response::Committed(to_wire(&event)),
                Ok(Err(_)) => return Ok(()),
                Err(_) => Response::Idle,
            };
            self.authorize()?;
            let write = write_frame(&mut stream, &response, limits.max_frame_bytes);
            tokio::time::timeout(limits.idle_timeout, write)
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        }
    }
}

fn to_wire(event: &Committed) -> WireCommitted {
    let framed = |records: &[spate_net::metadata_frame::ApiMessageAndVersion]| {
        records.iter().map(|r| r.to_bytes()).collect()
    };
    match event {
        Committed::Snapshot { index, records } => WireCommitted::Snapshot {
            index: *index,
            records: framed(records),
        },
        Committed::Batch {
            index,
            term,
            records,
        } => WireCommitted::Batch {
            index: *index,
            term: *term,
            records: framed(records),
        },
    }
}
