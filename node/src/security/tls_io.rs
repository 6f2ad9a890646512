//! TLS between the socket and the connection's frame reader and response writer.
//!
//! A connection has a reader task and a writer task running at once (conn.rs); a TLS
//! stream behind one lock would hold the lock across a read waiting for the client and
//! so block responses. Instead the rustls state sits in an `Rc<RefCell<_>>` shared by a
//! reader half and a writer half, each owning its own handle of the socket, and the
//! state is borrowed only between awaits (shards are single-threaded). See
//! docs/adr/0007-tls-on-compio.md.
//!
//! Copies: the reader decrypts records in rustls's buffer and copies the plaintext
//! once, into the request buffer; the writer hands the response chunks to rustls as a
//! vectored write (encrypted into records without gluing them together first) and
//! copies the records once into its socket buffer. Memory is bounded by rustls's
//! limits (one record being read; 64 KiB of records waiting to be sent) and by the
//! fixed read buffer below.

use std::cell::RefCell;
use std::io::{self, IoSlice, Read, Write};
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use compio::buf::BufResult;
use compio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;
use rustls::pki_types::CertificateDer;
use rustls::{ServerConfig, ServerConnection};

use crate::transport::{ChunkWrite, FrameRead};

/// Ciphertext read from the socket at a time: one largest TLS record and its framing.
const CIPHER_BUF: usize = 16 * 1024 + 2048;
/// Response chunks handed to rustls per vectored write.
const MAX_SLICES: usize = 64;

type Shared = Rc<RefCell<ServerConnection>>;

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Ciphertext read from the socket and not yet given to rustls.
struct Incoming {
    buf: Vec<u8>,
    pos: usize,
}

impl Incoming {
    fn new() -> Self {
        Incoming {
            buf: Vec::with_capacity(CIPHER_BUF),
            pos: 0,
        }
    }

    /// Read more from the socket when everything read was given to rustls; false at
    /// the end of the stream.
    async fn fill(&mut self, tcp: &mut TcpStream) -> io::Result<bool> {
        if self.pos < self.buf.len() {
            return Ok(true);
        }
        self.buf.clear();
        self.pos = 0;
        let BufResult(res, buf) = tcp.append(std::mem::take(&mut self.buf)).await;
        self.buf = buf;
        Ok(res? > 0)
    }

    /// Give rustls what it takes and process it.
    fn feed(&mut self, conn: &mut ServerConnection) -> io::Result<()> {
        let mut rest = &self.buf[self.pos..];
        let n = conn.read_tls(&mut rest)?;
        if n == 0 && !rest.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS input not consumed",
            ));
        }
        self.pos += n;
        conn.process_new_packets().map_err(tls_error)?;
        Ok(())
    }
}

/// Write every TLS record rustls has queued.
async fn flush(conn: &Shared, tcp: &mut TcpStream, out: &mut Vec<u8>) -> io::Result<()> {
    loop {
        out.clear();
        {
            let mut c = conn.borrow_mut();
            while c.wants_write() {
                c.write_tls(out)?;
            }
        }
        if out.is_empty() {
            return Ok(());
        }
        let BufResult(res, buf) = tcp.write_all(std::mem::take(out)).await;
        *out = buf;
        res?;
    }
}

/// A TLS connection after its handshake.
pub struct Accepted {
    pub reader: TlsReader,
    pub writer: TlsWriter,
    /// The client's certificate chain, leaf first, when it sent one (verified).
    pub peer_certificates: Option<Vec<CertificateDer<'static>>>,
}

/// Run the server side of the handshake on `tcp`. A client that does not speak TLS
/// (a plaintext Kafka client on the TLS port) fails here, with an alert sent.
pub async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<Accepted> {
    let conn: Shared = Rc::new(RefCell::new(
        ServerConnection::new(config).map_err(tls_error)?,
    ));
    let (mut rd, mut wr) = tcp.into_split();
    let mut incoming = Incoming::new();
    let mut out = Vec::new();
    while conn.borrow().is_handshaking() {
        if conn.borrow().wants_write() {
            flush(&conn, &mut wr, &mut out).await?;
            continue;
        }
        if !incoming.fill(&mut rd).await? {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let fed = incoming.feed(&mut conn.borrow_mut());
        if let Err(e) = fed {
            // Tell the client why (rustls queued an alert), then give up.
            let _ = flush(&conn, &mut wr, &mut out).await;
            return Err(e);
        }
    }
    flush(&conn, &mut wr, &mut out).await?;
    let peer_certificates = conn
        .borrow()
        .peer_certificates()
        .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect());
    Ok(Accepted {
        reader: TlsReader {
            tcp: rd,
            conn: conn.clone(),
            incoming,
        },
        writer: TlsWriter { tcp: wr, conn, out },
        peer_certificates,
    })
}

pub struct TlsReader {
    tcp: TcpStream,
    conn: Shared,
    incoming: Incoming,
}

impl TlsReader {
    /// Move decrypted bytes into `buf`'s free room; `Some(0)` when the client closed.
    fn take_plaintext(&mut self, buf: &mut BytesMut) -> io::Result<Option<usize>> {
        let mut conn = self.conn.borrow_mut();
        let state = conn.process_new_packets().map_err(tls_error)?;
        let available = state.plaintext_bytes_to_read();
        if available == 0 {
            return Ok(state.peer_has_closed().then_some(0));
        }
        let room = buf.capacity() - buf.len();
        if room == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no room to read into",
            ));
        }
        // Only the bytes about to be filled are initialised.
        let start = buf.len();
        buf.resize(start + available.min(room), 0);
        match conn.reader().read(&mut buf[start..]) {
            Ok(n) => {
                buf.truncate(start + n);
                Ok(Some(n))
            }
            Err(e) => {
                buf.truncate(start);
                Err(e)
            }
        }
    }

    async fn read_some(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        loop {
            if let Some(n) = self.take_plaintext(buf)? {
                return Ok(n);
            }
            if !self.incoming.fill(&mut self.tcp).await? {
                // The socket closed without close_notify: the end, as Kafka treats it.
                return Ok(0);
            }
            self.incoming.feed(&mut self.conn.borrow_mut())?;
        }
    }
}

impl FrameRead for TlsReader {
    async fn read_into(&mut self, mut buf: BytesMut) -> BufResult<usize, BytesMut> {
        let res = self.read_some(&mut buf).await;
        BufResult(res, buf)
    }
}

pub struct TlsWriter {
    tcp: TcpStream,
    conn: Shared,
    out: Vec<u8>,
}

impl ChunkWrite for TlsWriter {
    async fn write_chunks(&mut self, chunks: Vec<Bytes>) -> io::Result<()> {
        // Position in the chain: chunk index and offset in it.
        let (mut idx, mut off) = (0usize, 0usize);
        while idx < chunks.len() {
            {
                let mut conn = self.conn.borrow_mut();
                while idx < chunks.len() {
                    let slices: Vec<IoSlice<'_>> = std::iter::once(&chunks[idx][off..])
                        .chain(chunks[idx + 1..].iter().map(|c| &c[..]))
                        .take(MAX_SLICES)
                        .map(IoSlice::new)
                        .collect();
                    let mut n = conn.writer().write_vectored(&slices)?;
                    // rustls's send buffer is full: send it first.
                    if n == 0 && slices.iter().any(|s| !s.is_empty()) {
                        break;
                    }
                    while idx < chunks.len() && n >= chunks[idx].len() - off {
                        n -= chunks[idx].len() - off;
                        idx += 1;
                        off = 0;
                    }
                    off += n;
                }
            }
            flush(&self.conn, &mut self.tcp, &mut self.out).await?;
        }
        Ok(())
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.conn.borrow_mut().send_close_notify();
        flush(&self.conn, &mut self.tcp, &mut self.out).await?;
        AsyncWrite::shutdown(&mut self.tcp).await
    }
}
