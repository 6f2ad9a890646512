//! The controllers' RPC messages and their framing on TCP.
//!
//! A connection carries requests and responses in turn (one request in flight per
//! connection), each as one frame: `[length: u32 BE][postcard(message)]`, the length
//! bounded by the configured maximum frame size. Every request names the node it is
//! meant for, so a voter list that points at the wrong node is refused instead of
//! silently mixing two controllers' logs.

use std::io;

use bytes::Bytes;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::types::{NodeId, TypeConfig};

#[derive(Serialize, Deserialize)]
pub struct Envelope {
    /// The node the sender believes it is talking to.
    pub to: NodeId,
    pub request: Request,
}

#[derive(Serialize, Deserialize)]
pub enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// Follow the committed records (a broker outside the quorum, `observer.rs`): the
    /// connection then carries only [`Response::Committed`] and [`Response::Idle`]
    /// frames from the controller.
    Observe,
    /// An application call for the active controller (`app_rpc.rs`).
    App(Bytes),
}

/// A [`crate::Committed`] event on the wire, its records framed.
#[derive(Serialize, Deserialize)]
pub enum WireCommitted {
    Snapshot {
        index: Option<u64>,
        records: Vec<Bytes>,
    },
    Batch {
        index: u64,
        term: u64,
        records: Vec<Bytes>,
    },
}

#[derive(Serialize, Deserialize)]
pub enum Response {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    /// The request was for another node id.
    WrongNode {
        this: NodeId,
    },
    /// An event of an observed subscription.
    Committed(WireCommitted),
    /// Nothing committed lately: the controller is alive.
    Idle,
    App(crate::app_rpc::AppReply),
}

/// Writes one frame.
pub async fn write_frame<W, T>(w: &mut W, msg: &T, max_frame_bytes: usize) -> io::Result<()>
where
    W: AsyncWriteExt + Unpin,
    T: Serialize,
{
    let body = postcard::to_allocvec(msg).map_err(io::Error::other)?;
    if body.len() > max_frame_bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "frame of {} bytes over the {max_frame_bytes}-byte limit",
                body.len()
            ),
        ));
    }
    // Checked just above: the limit fits a u32 (see `QuorumConfig::validate`).
    let len = u32::try_from(body.len()).map_err(io::Error::other)?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame).await?;
    w.flush().await
}

/// Reads one frame; `Ok(None)` at a clean end of stream between frames.
pub async fn read_frame<R, T>(r: &mut R, max_frame_bytes: usize) -> io::Result<Option<T>>
where
    R: AsyncReadExt + Unpin,
    T: DeserializeOwned,
{
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max_frame_bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes over the {max_frame_bytes}-byte limit"),
        ));
    }
    // Grows as the bytes arrive: a size prefix alone allocates nothing.
    let mut body = Vec::new();
    (&mut *r).take(len as u64).read_to_end(&mut body).await?;
    if body.len() != len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    postcard::from_bytes(&body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad frame: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversized_frames_are_refused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let msg = Response::WrongNode { this: 7 };
            let mut buf = Vec::new();
            write_frame(&mut buf, &msg, 64).await.expect("write");
            let back: Option<Response> = read_frame(&mut buf.as_slice(), 64).await.expect("read");
            assert!(matches!(back, Some(Response::WrongNode { this: 7 })));
            // Clean end of stream.
            let none: Option<Response> = read_frame(&mut &[][..], 64).await.expect("eof");
            assert!(none.is_none());
            // A size prefix over the limit is refused before anything is allocated.
            let huge = [0xff, 0xff, 0xff, 0xff];
            assert!(read_frame::<_, Response>(&mut &huge[..], 64).await.is_err());
            // A torn body and garbage are errors, not panics.
            assert!(read_frame::<_, Response>(&mut &buf[..buf.len() - 1], 64)
                .await
                .is_err());
            let garbage = [0, 0, 0, 3, 0xff, 0xff, 0xff];
            assert!(read_frame::<_, Response>(&mut &garbage[..], 64)
                .await
                .is_err());
            // The writer refuses to exceed the limit too.
            assert!(write_frame(&mut Vec::new(), &vec![0u8; 100], 64)
                .await
                .is_err());
        });
    }
}
