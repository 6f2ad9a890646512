//! Following the metadata log from outside the quorum. A broker that is not a
//! controller subscribes to a voter over its controller listener (`Request::Observe`)
//! and receives the same [`Committed`] events a local subscriber gets: the voter's
//! current state as a snapshot, then every committed batch. Any voter serves (each
//! applies every committed entry), so observers do not load the leader and need no
//! membership change (openraft learners would: see ADR 0005).
//!
//! The observer runs on a thread of its own with a current-thread tokio runtime (the
//! transport is tokio's) and feeds one bounded channel for the process's life. When a
//! connection ends (the voter stopped, dropped the subscription for lag, or went
//! silent) it connects to the next voter, which starts again from its snapshot. Events
//! at or below the last index delivered are skipped, so the consumer sees indexes only
//! grow, even when the next voter is behind the previous one (the committed log is the
//! same on every voter, so skipping what was already delivered loses nothing).

use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use spate_net::metadata_frame::ApiMessageAndVersion;

use crate::network::OBSERVER_KEEPALIVE;
use crate::rpc::{read_frame, write_frame, Envelope, Request, Response, WireCommitted};
use crate::state_machine::Committed;
use crate::transport::{self, Security};
use crate::types::NodeId;
use crate::StartError;

/// How an observer follows the quorum.
#[derive(Clone, Debug)]
pub struct ObserverConfig {
    /// Every voter's id and `host:port` (`controller.quorum.voters`).
    pub voters: BTreeMap<NodeId, String>,
    /// Events the consumer may leave unread before the observer waits for it (and the
    /// voter, whose queue then fills, drops the subscription).
    pub queue: usize,
    /// The largest frame accepted from a voter (a snapshot comes in one frame).
    pub max_frame_bytes: usize,
    pub connect_timeout: Duration,
    /// A connection that brings no frame (not even a keepalive) for this long is
    /// given up for the next voter.
    pub silence_timeout: Duration,
    /// The pause before connecting again after a connection ended.
    pub retry_backoff: Duration,
    /// The controller channel's security (plaintext when `None`).
    pub security: Security,
}

impl ObserverConfig {
    pub fn new(voters: BTreeMap<NodeId, String>) -> Self {
        ObserverConfig {
            voters,
            queue: 4096,
            max_frame_bytes: 64 << 20,
            connect_timeout: Duration::from_secs(2),
            silence_timeout: OBSERVER_KEEPALIVE * 10,
            retry_backoff: Duration::from_millis(200),
            security: None,
        }
    }
}

/// Starts the observer thread; its events arrive on the returned channel. The thread
/// ends when the receiver is dropped.
pub fn observe(config: ObserverConfig) -> Result<flume::Receiver<Committed>, StartError> {
    if config.voters.is_empty() {
        return Err(StartError::Config(crate::ConfigError(
            "an observer needs at least one voter".into(),
        )));
    }
    let (tx, rx) = flume::bounded(config.queue.max(1));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StartError::Thread(e.to_string()))?;
    std::thread::Builder::new()
        .name("metadata-observer".into())
        .spawn(move || runtime.block_on(run(config, tx)))
        .map_err(|e| StartError::Thread(e.to_string()))?;
    Ok(rx)
}

/// Why following one voter ended.
enum Ended {
    /// The consumer is gone: stop.
    Consumer,
    /// The connection failed or the voter misbehaved: try the next voter.
    Connection(io::Error),
}

async fn run(config: ObserverConfig, tx: flume::Sender<Committed>) {
    let voters: Vec<(NodeId, String)> = config.voters.clone().into_iter().collect();
    let mut last: Option<u64> = None;
    for (id, addr) in voters.iter().cycle() {
        match follow(&config, *id, addr, &tx, &mut last).await {
            Ended::Consumer => return,
            Ended::Connection(e) => {
                tracing::debug!(voter = id, %addr, error = %e, "metadata observer: connection ended")
            }
        }
        tokio::time::sleep(config.retry_backoff).await;
    }
}

async fn follow(
    config: &ObserverConfig,
    id: NodeId,
    addr: &str,
    tx: &flume::Sender<Committed>,
    last: &mut Option<u64>,
) -> Ended {
    let ended = Ended::Connection;
    let connect = transport::connect(addr, &config.security);
    let mut stream = match tokio::time::timeout(config.connect_timeout, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return ended(e),
        Err(_) => return ended(io::ErrorKind::TimedOut.into()),
    };
    let hello = Envelope {
        to: id,
        request: Request::Observe,
    };
    if let Err(e) = write_frame(&mut stream, &hello, config.max_frame_bytes).await {
        return ended(e);
    }
    loop {
        let read = read_frame::<_, Response>(&mut stream, config.max_frame_bytes);
        let wire = match tokio::time::timeout(config.silence_timeout, read).await {
            Ok(Ok(Some(Response::Committed(w)))) => w,
            Ok(Ok(Some(Response::Idle))) => continue,
            Ok(Ok(Some(Response::WrongNode { this }))) => {
                return ended(invalid(format!("{addr} is node {this}, not {id}")))
            }
            Ok(Ok(Some(_))) => return ended(invalid("unexpected response to Observe".into())),
            Ok(Ok(None)) => return ended(io::ErrorKind::UnexpectedEof.into()),
            Ok(Err(e)) => return ended(e),
            Err(_) => return ended(io::ErrorKind::TimedOut.into()),
        };
        let event = match decode(wire) {
            Ok(e) => e,
            Err(e) => return ended(e),
        };
        if !advances(&event, last) {
            continue;
        }
        if tx.send_async(event).await.is_err() {
            return Ended::Consumer;
        }
    }
}

/// Whether `event` is past what was delivered (then `last` moves to it).
fn advances(event: &Committed, last: &mut Option<u64>) -> bool {
    let index = match event {
        // The first snapshot is delivered whatever its index (None: an empty log).
        Committed::Snapshot { index, .. } if last.is_none() => {
            *last = *index;
            return true;
        }
        Committed::Snapshot { index, .. } => *index,
        Committed::Batch { index, .. } => Some(*index),
    };
    if index > *last {
        *last = index;
        true
    } else {
        false
    }
}

fn decode(wire: WireCommitted) -> io::Result<Committed> {
    let records = |framed: Vec<bytes::Bytes>| -> io::Result<Vec<ApiMessageAndVersion>> {
        framed
            .into_iter()
            .map(|b| {
                ApiMessageAndVersion::decode(b)
                    .map_err(|e| invalid(format!("observed record does not decode: {e}")))
            })
            .collect()
    };
    Ok(match wire {
        WireCommitted::Snapshot { index, records: r } => Committed::Snapshot {
            index,
            records: records(r)?.into(),
        },
        WireCommitted::Batch {
            index,
            term,
            records: r,
        } => Committed::Batch {
            index,
            term,
            records: records(r)?.into(),
        },
    })
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(index: Option<u64>) -> Committed {
        Committed::Snapshot {
            index,
            records: Vec::new().into(),
        }
    }

    fn batch(index: u64) -> Committed {
        Committed::Batch {
            index,
            term: 1,
            records: Vec::new().into(),
        }
    }

    #[test]
    fn only_events_past_the_last_delivered_index_advance() {
        let mut last = None;
        assert!(advances(&snapshot(None), &mut last));
        assert!(advances(&batch(1), &mut last));
        assert!(advances(&batch(2), &mut last));
        // A voter behind the previous one: its snapshot and older batches are skipped.
        assert!(!advances(&snapshot(Some(1)), &mut last));
        assert!(!advances(&batch(2), &mut last));
        assert!(advances(&batch(3), &mut last));
        // One ahead: its snapshot replaces the state.
        assert!(advances(&snapshot(Some(9)), &mut last));
        assert_eq!(last, Some(9));
    }
}
