//! One client connection: read frames, hand each request to its handler, write the
//! responses back in request order.
//!
//! Requests are dispatched one after another in arrival order (so produce requests
//! reach their partitions in order), then run concurrently; a writer task awaits them
//! in order. At most `max_in_flight_per_connection` may be outstanding: past that the
//! reader stops reading, which pushes back on the client through TCP.
//!
//! Memory: the read buffer starts small and grows only as bytes arrive; request frames
//! hold a share of the broker-wide `queued_max_request_bytes` from the moment their
//! body needs room until their handler finished, and the reader waits (reads nothing)
//! while that budget is spent. A connection with nothing in flight and nothing read
//! for `connections_max_idle_ms` is closed.
//!
//! Client quotas: a request whose response throttles the client mutes the connection
//! (`security::Mute`): no further frame is read or dispatched until the throttle ends.
//!
//! Security: on TLS listeners the handshake runs first and the loop then reads and
//! writes through TLS (`transport`, `security::tls_io`); SASL is enforced by the
//! dispatch (`security::sasl`), and until a client authenticated its frames are held
//! to `security::UNAUTHENTICATED_MAX_FRAME`.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use compio::buf::BufResult;
use compio::net::TcpStream;
use compio::runtime::JoinHandle;
use futures_util::future::Either;
use spate_net::ApiKey;
use std::time::Instant;

use crate::budget::{ConnectionSlot, Permit, RequestMemory};
use crate::handlers::{self, Dispatched};
use crate::security::{tls_io, Listener, Session};
use crate::shard::ShardContext;
use crate::transport::{ChunkWrite, FrameRead};

/// Read buffer of a new connection: enough for the small requests a client starts with.
const INITIAL_BUF: usize = 4 * 1024;
/// Read buffer growth step between frames and for frames up to this size.
const READ_CHUNK: usize = 32 * 1024;
/// Grow the buffer when less than this is free (and the frame needs more).
const MIN_FREE: usize = 1024;
/// Longest a TLS handshake may take before the connection is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
    /// The request frame's share of `queued_max_request_bytes`, given back once its
    /// handler finished.
    permit: Option<Permit>,
}

/// The API name of a request frame, from its first two bytes.
fn api_name(frame: &Bytes) -> &'static str {
    frame
        .get(..2)
        .and_then(|k| ApiKey::try_from(i16::from_be_bytes([k[0], k[1]])).ok())
        .map(|k| k.name())
        .unwrap_or("Unknown")
}

/// Take `bytes` of request memory, waiting (and so not reading from this connection:
/// TCP pushes back on the client) while other requests hold it.
async fn take_memory(
    ctx: &ShardContext,
    pool: &Arc<RequestMemory>,
    bytes: usize,
) -> Option<Permit> {
    if let Some(p) = pool.try_acquire(bytes) {
        return Some(p);
    }
    ctx.metrics.borrow_mut().request_memory_waits += 1;
    pool.acquire(bytes).await
}

/// Make room in `buf` for the next read. A frame that does not fit the buffer first
/// takes its whole size from the request memory budget (all or nothing, so frames
/// being read never wait on each other) once more than a read chunk of it is here,
/// then gets room for all of it: a size prefix alone costs no memory, and a large
/// frame is allocated once.
async fn make_room(
    ctx: &ShardContext,
    pool: &Arc<RequestMemory>,
    buf: &mut BytesMut,
    frame_end: usize,
    permit: &mut Option<Permit>,
) -> Option<()> {
    let incomplete = frame_end > buf.len();
    let free = buf.capacity() - buf.len();
    let needed = if incomplete {
        (frame_end - buf.len()).min(MIN_FREE)
    } else {
        MIN_FREE
    };
    if free >= needed {
        return Some(());
    }
    let target = if incomplete && frame_end > buf.len() + READ_CHUNK {
        if permit.is_none() {
            *permit = Some(take_memory(ctx, pool, frame_end).await?);
        }
        // The whole frame is accounted for now: room for all of it at once, so a large
        // request is not copied again at every doubling.
        frame_end
    } else {
        buf.len() + READ_CHUNK
    };
    let mut grown = BytesMut::with_capacity(target);
    grown.extend_from_slice(buf);
    *buf = grown;
    Some(())
}

pub async fn serve(
    ctx: Rc<ShardContext>,
    stream: TcpStream,
    peer: SocketAddr,
    slot: ConnectionSlot,
    listener: Arc<Listener>,
) {
    let _slot = slot;
    let _ = stream.set_nodelay(true);
    tracing::debug!(shard = ctx.id, %peer, listener = %listener.name, "connection opened");
    let session = Rc::new(Session::new(peer, listener.clone()));
    let Some(tls) = &listener.tls else {
        let (reader, writer) = stream.into_split();
        return run(ctx, session, reader, writer).await;
    };
    let accepted = match compio::time::timeout(
        TLS_HANDSHAKE_TIMEOUT,
        tls_io::accept(stream, tls.current(listener.sasl.is_some())),
    )
    .await
    {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            tracing::debug!(shard = ctx.id, %peer, listener = %listener.name, error = %e, "TLS handshake failed");
            ctx.metrics.borrow_mut().tls_handshake_failures += 1;
            return;
        }
        Err(_) => {
            tracing::debug!(shard = ctx.id, %peer, listener = %listener.name, "TLS handshake timed out");
            ctx.metrics.borrow_mut().tls_handshake_failures += 1;
            return;
        }
    };
    let leaf = accepted.peer_certificates.as_ref().and_then(|c| c.first());
    if let Err(e) = session.take_certificate(leaf.map(|c| c.as_ref())) {
        tracing::info!(shard = ctx.id, %peer, listener = %listener.name, error = %format!("{e:#}"), "client certificate refused");
        return;
    }
    tracing::debug!(shard = ctx.id, %peer, principal = %session.principal(), "TLS established");
    run(ctx, session, accepted.reader, accepted.writer).await
}

/// Serve requests read from `reader`, writing responses to `writer`.
async fn run<R: FrameRead, W: ChunkWrite + 'static>(
    ctx: Rc<ShardContext>,
    session: Rc<Session>,
    mut reader: R,
    mut writer: W,
) {
    let peer = session.peer;
    let (queue_tx, queue_rx) = flume::bounded::<InFlight>(ctx.config.max_in_flight_per_connection);
    {
        let mut m = ctx.metrics.borrow_mut();
        m.connections_open += 1;
        m.connections_total += 1;
    }
    // Requests read but not yet answered, and the last time a byte was read or a
    // response written: what the idle timeout looks at.
    let in_flight = Rc::new(Cell::new(0usize));
    let last_active = Rc::new(Cell::new(Instant::now()));

    let writer_ctx = ctx.clone();
    let (writer_in_flight, writer_active) = (in_flight.clone(), last_active.clone());
    let writer_task = compio::runtime::spawn(async move {
        while let Ok(InFlight {
            api,
            arrived,
            response,
            permit,
        }) = queue_rx.recv_async().await
        {
            let chunks = match response {
                Pending::Ready(c) => Some(c),
                Pending::Task(handle) => match handle.await {
                    Ok(c) => c,
                    Err(_) => break,
                },
            };
            // The handler is done with the request frame.
            drop(permit);
            if let Some(chunks) = chunks {
                let started = (api == "Produce").then(Instant::now);
                if writer.write_chunks(chunks).await.is_err() {
                    break;
                }
                if let Some(t) = started {
                    writer_ctx
                        .metrics
                        .borrow_mut()
                        .produce_stage("response_write", t.elapsed());
                }
            }
            // (acks=0 produce: no response.)
            writer_ctx
                .metrics
                .borrow_mut()
                .request(api, arrived.elapsed());
            writer_in_flight.set(writer_in_flight.get().saturating_sub(1));
            writer_active.set(Instant::now());
        }
        let _ = writer.shutdown().await;
    });

    let configured_max_frame = ctx.config.socket_request_max_bytes;
    let pool = ctx.request_memory.clone();
    let idle = Duration::from_millis(ctx.config.connections_max_idle_ms);
    let mut buf = BytesMut::with_capacity(INITIAL_BUF);
    // Request memory taken for the frame being read, before its body is all here.
    let mut frame_permit: Option<Permit> = None;
    'conn: loop {
        let frame_end = loop {
            // A client over its quota: nothing more is read or handled until its
            // throttle time passed (Kafka mutes the channel).
            if let Some(until) = session.mute().until() {
                compio::time::sleep(until.saturating_duration_since(Instant::now())).await;
            }
            // Lower until the client authenticated (SASL).
            let max_frame = session.max_frame(configured_max_frame);
            let size = match spate_net::frame::peek_frame_size(&buf, max_frame) {
                Ok(Some(size)) => size,
                Ok(None) => break 0,
                Err(e) => {
                    tracing::info!(shard = ctx.id, %peer, error = %e, "bad frame; closing connection");
                    break 'conn;
                }
            };
            let frame_end = 4 + size;
            if frame_end > pool.limit() {
                tracing::info!(shard = ctx.id, %peer, size, queued_max_request_bytes = pool.limit(), "frame larger than the request memory budget; closing connection");
                break 'conn;
            }
            if buf.len() < frame_end {
                break frame_end;
            }
            let permit = match frame_permit.take() {
                Some(p) => p,
                None => match take_memory(&ctx, &pool, frame_end).await {
                    Some(p) => p,
                    None => break 'conn,
                },
            };
            let Ok(Some(frame)) = spate_net::frame::split_frame(&mut buf, max_frame) else {
                break 'conn;
            };
            let (api, arrived) = (api_name(&frame), Instant::now());
            let mut close_after = None;
            let (response, permit) = match handlers::dispatch(&ctx, &session, frame, arrived).await
            {
                // Answered already: the frame is gone.
                Dispatched::Respond(chunks) => (Pending::Ready(chunks), None),
                Dispatched::RespondAndClose(chunks, reason) => {
                    close_after = Some(reason);
                    (Pending::Ready(chunks), None)
                }
                Dispatched::Later(handle) => (Pending::Task(handle), Some(permit)),
                Dispatched::Close(reason) => {
                    tracing::info!(shard = ctx.id, %peer, reason, "closing connection");
                    break 'conn;
                }
            };
            in_flight.set(in_flight.get() + 1);
            if queue_tx
                .send_async(InFlight {
                    api,
                    arrived,
                    response,
                    permit,
                })
                .await
                .is_err()
            {
                break 'conn;
            }
            if let Some(reason) = close_after {
                tracing::info!(shard = ctx.id, %peer, reason, "closing connection");
                break 'conn;
            }
        };
        if ctx.is_shutting_down() {
            break;
        }
        if make_room(&ctx, &pool, &mut buf, frame_end, &mut frame_permit)
            .await
            .is_none()
        {
            break;
        }
        let read = reader.read_into(buf);
        futures_util::pin_mut!(read);
        let BufResult(res, b) = loop {
            if idle.is_zero() {
                break read.await;
            }
            let since = last_active.get().elapsed();
            let wait = if since >= idle { idle } else { idle - since };
            match futures_util::future::select(read.as_mut(), Box::pin(compio::time::sleep(wait)))
                .await
            {
                Either::Left((r, _)) => break r,
                Either::Right(_) => {
                    if in_flight.get() == 0 && last_active.get().elapsed() >= idle {
                        tracing::debug!(shard = ctx.id, %peer, idle_ms = idle.as_millis() as u64, "closing idle connection");
                        ctx.metrics.borrow_mut().connections_idle_closed += 1;
                        break 'conn;
                    }
                }
            }
        };
        buf = b;
        match res {
            Ok(0) => break,
            Ok(_) => last_active.set(Instant::now()),
            Err(e) => {
                tracing::debug!(shard = ctx.id, %peer, error = %e, "read failed");
                break;
            }
        }
    }
    drop(frame_permit);
    // Let the responses already dispatched go out, then close.
    drop(queue_tx);
    let _ = writer_task.await;
    ctx.metrics.borrow_mut().connections_open -= 1;
    crate::handlers::share::connection_closed(&ctx, session.id);
    tracing::debug!(shard = ctx.id, %peer, "connection closed");
}
