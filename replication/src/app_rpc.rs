//! Calls of the application (the node) to the active controller, over the controller
//! listener: a broker registers and heartbeats this way (Kafka's BrokerRegistration and
//! BrokerHeartbeat go to the active controller too). The payload is the application's
//! own bytes; the quorum only carries them and finds the leader.
//!
//! On a controller the node installs an [`AppHandler`] ([`crate::Quorum::serve_app`]);
//! a call to a controller that is not the leader is answered [`AppReply::NotLeader`]
//! with the leader if known, and the client ([`AppClient`]) follows that hint, else
//! tries the voters in turn, until its deadline.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::rpc::{read_frame, write_frame, Envelope, Request, Response};
use crate::transport::{self, Security, Stream};
use crate::types::NodeId;
use crate::StartError;

/// A controller's answer to an application call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AppReply {
    Ok(Bytes),
    /// Not the active controller; the leader's id and address if known.
    NotLeader {
        leader: Option<(NodeId, String)>,
    },
    /// The call could not be served (no handler installed, a bad payload).
    Failed(String),
}

/// The application's handler of calls, run on the controller's runtime.
pub type AppHandler =
    Arc<dyn Fn(Bytes) -> Pin<Box<dyn Future<Output = AppReply> + Send>> + Send + Sync>;

/// Why a call got no answer from the active controller.
#[derive(Debug, thiserror::Error)]
pub enum AppCallError {
    #[error("no active controller answered within {0:?}: {1}")]
    Unavailable(Duration, String),
    #[error("the active controller refused the call: {0}")]
    Failed(String),
    #[error("the controller client stopped")]
    Stopped,
}

type Call = (Bytes, flume::Sender<Result<Bytes, AppCallError>>);

/// A client of the active controller: a thread with a tokio runtime that sends calls
/// one at a time, keeping one connection to the last leader it found.
#[derive(Clone)]
pub struct AppClient {
    calls: flume::Sender<Call>,
}

impl AppClient {
    /// Starts the client thread for the quorum of `voters`; a call waits at most
    /// `call_timeout` for an answer from the active controller. `security` is the
    /// controller channel's (the quorum's own).
    pub fn start(
        voters: BTreeMap<NodeId, String>,
        max_frame_bytes: usize,
        call_timeout: Duration,
        security: Security,
    ) -> Result<AppClient, StartError> {
        if voters.is_empty() {
            return Err(StartError::Config(crate::ConfigError(
                "a controller client needs at least one voter".into(),
            )));
        }
        let (tx, rx) = flume::bounded::<Call>(64);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StartError::Thread(e.to_string()))?;
        let mut client = Caller {
            voters: voters.into_iter().collect(),
            next: 0,
            leader: None,
            stream: None,
            max_frame_bytes,
            security,
        };
        std::thread::Builder::new()
            .name("controller-client".into())
            .spawn(move || {
                runtime.block_on(async move {
                    while let Ok((body, reply)) = rx.recv_async().await {
                        let answer = client.call(body, call_timeout).await;
                        let _ = reply.send(answer);
                    }
                })
            })
            .map_err(|e| StartError::Thread(e.to_string()))?;
        Ok(AppClient { calls: tx })
    }

    /// Sends `body` to the active controller's handler; its answer.
    pub async fn call(&self, body: Bytes) -> Result<Bytes, AppCallError> {
        let (tx, rx) = flume::bounded(1);
        self.calls
            .send_async((body, tx))
            .await
            .map_err(|_| AppCallError::Stopped)?;
        rx.recv_async().await.map_err(|_| AppCallError::Stopped)?
    }
}

struct Caller {
    voters: Vec<(NodeId, String)>,
    /// The voter to try next when no leader is known.
    next: usize,
    leader: Option<(NodeId, String)>,
    /// A connection to `leader`, kept between calls.
    stream: Option<Stream>,
    max_frame_bytes: usize,
    security: Security,
}

/// Pause between attempts when no controller could answer.
const RETRY: Duration = Duration::from_millis(100);

impl Caller {
    async fn call(&mut self, body: Bytes, timeout: Duration) -> Result<Bytes, AppCallError> {
        let deadline = Instant::now() + timeout;
        let mut last_error = String::from("no attempt");
        loop {
            let target = match &self.leader {
                Some(l) => l.clone(),
                None => {
                    self.stream = None;
                    let v = self.voters[self.next % self.voters.len()].clone();
                    self.next += 1;
                    v
                }
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let attempt = tokio::time::timeout(left, self.round_trip(&target, body.clone())).await;
            match attempt {
                Ok(Ok(AppReply::Ok(answer))) => {
                    self.leader = Some(target);
                    return Ok(answer);
                }
                Ok(Ok(AppReply::Failed(why))) => return Err(AppCallError::Failed(why)),
                Ok(Ok(AppReply::NotLeader { leader })) => {
                    last_error = format!("controller {} is not the leader", target.0);
                    self.stream = None;
                    // Follow the hint, unless it names the node that just refused.
                    self.leader = leader.filter(|l| l.0 != target.0);
                    if self.leader.is_none() {
                        tokio::time::sleep(RETRY).await;
                    }
                }
                Ok(Err(e)) => {
                    last_error = format!("controller {} at {}: {e}", target.0, target.1);
                    self.stream = None;
                    self.leader = None;
                    tokio::time::sleep(RETRY).await;
                }
                Err(_) => {
                    self.stream = None;
                    self.leader = None;
                }
            }
            if Instant::now() >= deadline {
                return Err(AppCallError::Unavailable(timeout, last_error));
            }
        }
    }

    async fn round_trip(&mut self, target: &(NodeId, String), body: Bytes) -> io::Result<AppReply> {
        let stream = match &mut self.stream {
            Some(s) => s,
            None => {
                let s = transport::connect(&target.1, &self.security).await?;
                self.stream.insert(s)
            }
        };
        let envelope = Envelope {
            to: target.0,
            request: Request::App(body),
        };
        write_frame(stream, &envelope, self.max_frame_bytes).await?;
        match read_frame(stream, self.max_frame_bytes).await? {
            Some(Response::App(reply)) => Ok(reply),
            Some(Response::WrongNode { this }) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is controller {this}, not {}", target.1, target.0),
            )),
            Some(_) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "unexpected response to an application call",
            )),
            None => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }
}
