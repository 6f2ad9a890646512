//! One client connection: read frames, hand each request to its handler, write the
//! responses back in request order.
//!
//! Requests are dispatched one after another in arrival order (so produce requests
//! reach their partitions in order), then run concurrently; a writer task awaits them
//! in order. At most `max_in_flight_per_connection` may be outstanding: past that the
//! reader stops reading, which pushes back on the client through TCP.

use std::net::SocketAddr;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use compio::buf::BufResult;
use compio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;
use compio::runtime::JoinHandle;
use spate_net::ApiKey;
use std::time::Instant;

use crate::handlers::{self, Dispatched};
use crate::shard::ShardContext;

/// Read buffer growth step.
const READ_CHUNK: usize = 64 * 1024;
/// Linux refuses more than 1024 iovecs per sendmsg; stay well below.
const MAX_IOVECS: usize = 512;

/// A response on its way: ready now, or computed by a task.
enum Pending {
    Ready(Vec<Bytes>),
    Task(JoinHandle<Option<Vec<Bytes>>>),
}

/// A response on its way, with what the latency metric needs.
struct InFlight {
    api: &'static str,
    arrived: Instant,
    response: Pending,
}

/// The API name of a request frame, from its first two bytes.
fn api_name(frame: &Bytes) -> &'static str {
    frame
        .get(..2)
        .and_then(|k| ApiKey::try_from(i16::from_be_bytes([k[0], k[1]])).ok())
        .map(|k| k.name())
        .unwrap_or("Unknown")
}

pub async fn serve(ctx: Rc<ShardContext>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    tracing::debug!(shard = ctx.id, %peer, "connection opened");
    let (mut reader, mut writer) = stream.into_split();
    let (queue_tx, queue_rx) = flume::bounded::<InFlight>(ctx.config.max_in_flight_per_connection);
    {
        let mut m = ctx.metrics.borrow_mut();
        m.connections_open += 1;
        m.connections_total += 1;
    }

    let writer_ctx = ctx.clone();
    let writer_task = compio::runtime::spawn(async move {
        while let Ok(InFlight { api, arrived, response }) = queue_rx.recv_async().await {
            let chunks = match response {
                Pending::Ready(c) => c,
                Pending::Task(handle) => match handle.await {
                    Ok(Some(c)) => c,
                    // acks=0 produce: no response.
                    Ok(None) => {
                        writer_ctx.metrics.borrow_mut().request(api, arrived.elapsed());
                        continue;
                    }
                    Err(_) => break,
                },
            };
            if write_chunks(&mut writer, chunks).await.is_err() {
                break;
            }
            writer_ctx.metrics.borrow_mut().request(api, arrived.elapsed());
        }
        let _ = writer.shutdown().await;
    });

    let max_frame = ctx.config.socket_request_max_bytes;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    'conn: loop {
        loop {
            match spate_net::frame::split_frame(&mut buf, max_frame) {
                Ok(Some(frame)) => {
                    let (api, arrived) = (api_name(&frame), Instant::now());
                    let response = match handlers::dispatch(&ctx, frame, peer).await {
                        Dispatched::Respond(chunks) => Pending::Ready(chunks),
                        Dispatched::Later(handle) => Pending::Task(handle),
                        Dispatched::Close(reason) => {
                            tracing::info!(shard = ctx.id, %peer, reason, "closing connection");
                            break 'conn;
                        }
                    };
                    if queue_tx.send_async(InFlight { api, arrived, response }).await.is_err() {
                        break 'conn;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(shard = ctx.id, %peer, error = %e, "bad frame; closing connection");
                    break 'conn;
                }
            }
        }
        if ctx.is_shutting_down() {
            break;
        }
        // Room for the whole frame being read (its size is known once its prefix is
        // here), so a large frame is not copied again each time the buffer grows.
        let frame_end = match spate_net::frame::peek_frame_size(&buf, max_frame) {
            Ok(Some(size)) => 4 + size,
            _ => 0,
        };
        let want = frame_end.max(buf.len() + READ_CHUNK / 4);
        if buf.capacity() < want {
            buf.reserve((want - buf.len()).max(READ_CHUNK));
        }
        let BufResult(res, b) = reader.append(buf).await;
        buf = b;
        match res {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(shard = ctx.id, %peer, error = %e, "read failed");
                break;
            }
        }
    }
    // Let the responses already dispatched go out, then close.
    drop(queue_tx);
    let _ = writer_task.await;
    ctx.metrics.borrow_mut().connections_open -= 1;
    tracing::debug!(shard = ctx.id, %peer, "connection closed");
}

/// Write a response chain with vectored writes, never copying the chunks together.
async fn write_chunks(writer: &mut TcpStream, mut chunks: Vec<Bytes>) -> std::io::Result<()> {
    while !chunks.is_empty() {
        let rest = if chunks.len() > MAX_IOVECS { chunks.split_off(MAX_IOVECS) } else { Vec::new() };
        let BufResult(res, _) = writer.write_vectored_all(chunks).await;
        res?;
        chunks = rest;
    }
    Ok(())
}
