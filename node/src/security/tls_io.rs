//! TLS between the socket and the connection's frame reader and response writer.
//!
//! A connection has a reader task and a writer task running at once (conn.rs); a TLS
//! stream behind one lock would hold the lock across a read waiting for the client and
//! so block responses. Instead the rustls state sits in an `Rc<RefCell<_>>` shared by a
//! reader half and a writer half, each owning its own handle of the socket, and the
//! state is borrowed only between awaits (shards are single-threaded). See
//! docs/adr/0006-tls-on-compio.md.
//!
//! Copies: rustls's buffered API takes the ciphertext into its own buffer, decrypts it
//! there and queues the plaintext, which the reader copies into the request buffer;
//! the writer hands the response chunks to rustls as a vectored write (encrypted into
//! records without gluing them together first) and copies the records once into its
//! socket buffer. rustls's unbuffered API would save the extra copies (ADR 0006).
//!
//! Memory is bounded by rustls's limits (one record being read; 64 KiB of records
//! waiting to be sent) and by the fixed read buffer below.

use std::cell::RefCell;
use std::io::{self, IoSlice, Read, Write};
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use compio::buf::BufResult;
use compio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;
use rustls::pki_types::CertificateDer;
use rustls::{ConnectionCommon, ServerConfig, ServerConnection, SideData};

use crate::transport::{ChunkWrite, FrameRead};

/// Ciphertext read from the socket at a time: one largest TLS record and its framing.
const CIPHER_BUF: usize = 16 * 1024 + 2048;
/// Response chunks handed to rustls per vectored write.
const MAX_SLICES: usize = 64;

type Shared = Rc<RefCell<ServerConnection>>;

pub(super) fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Ciphertext read from the socket and not yet given to rustls.
pub(super) struct Incoming {
    buf: Vec<u8>,
    pos: usize,
}

impl Incoming {
    pub(super) fn new() -> Self {
        Incoming {
            buf: Vec::with_capacity(CIPHER_BUF),
            pos: 0,
        }
    }

    /// Read more from the socket when everything read was given to rustls; false at
    /// the end of the stream.
    pub(super) async fn fill(&mut self, tcp: &mut TcpStream) -> io::Result<bool> {
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
    pub(super) fn feed<D: SideData>(&mut self, conn: &mut ConnectionCommon<D>) -> io::Result<()> {
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

/// Move every TLS record rustls has queued into `out` (emptied first).
pub(super) fn take_records<D: SideData>(
    conn: &mut ConnectionCommon<D>,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    out.clear();
    while conn.wants_write() {
        conn.write_tls(out)?;
    }
    Ok(())
}

/// Write every TLS record rustls has queued.
async fn flush(conn: &Shared, tcp: &mut TcpStream, out: &mut Vec<u8>) -> io::Result<()> {
    loop {
        take_records(&mut conn.borrow_mut(), out)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::test_tls::{client_config, server_config};
    use rustls::pki_types::ServerName;

    /// A blocking rustls client on its own thread: sends `payload`, reads `expect` bytes.
    fn client(port: u16, payload: Vec<u8>, expect: usize) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let config = client_config();
            let name = ServerName::try_from("localhost").unwrap();
            let conn = rustls::ClientConnection::new(config, name).unwrap();
            let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            tls.write_all(&payload).unwrap();
            let mut back = vec![0; expect];
            tls.read_exact(&mut back).unwrap();
            back
        })
    }

    /// What the client writes comes out of the reader unchanged, and a response chain
    /// (small chunks, an empty one, one larger than rustls's send buffer) arrives whole
    /// and in order.
    #[test]
    fn round_trip() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let listener = compio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let request: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
            let chunks = vec![
                Bytes::from_static(b"head"),
                Bytes::new(),
                Bytes::from((0..300_000u32).map(|i| (i % 253) as u8).collect::<Vec<_>>()),
                Bytes::from_static(b"tail"),
            ];
            let expected: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            let client = client(port, request.clone(), expected.len());
            let (tcp, _) = listener.accept().await.unwrap();
            let mut accepted = accept(tcp, server_config()).await.unwrap();
            assert!(accepted.peer_certificates.is_none());
            let mut got = Vec::new();
            let mut buf = BytesMut::with_capacity(8 * 1024);
            while got.len() < request.len() {
                let BufResult(n, b) = accepted.reader.read_into(buf).await;
                buf = b;
                assert!(n.unwrap() > 0, "closed early");
                got.extend_from_slice(&buf);
                buf.clear();
            }
            assert_eq!(got, request);
            accepted.writer.write_chunks(chunks).await.unwrap();
            assert_eq!(client.join().unwrap(), expected);
            // The client is gone: the reader sees the end.
            let BufResult(n, _) = accepted.reader.read_into(buf).await;
            assert_eq!(n.unwrap(), 0);
        });
    }

    /// A client that does not speak TLS fails the handshake (a Kafka request sent in
    /// plaintext to the TLS port) and gets an alert, not a hang.
    #[test]
    fn plaintext_client_fails_the_handshake() {
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let listener = compio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let client = std::thread::spawn(move || {
                let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                // An ApiVersions v0 request frame.
                tcp.write_all(&[0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff])
                    .unwrap();
                let mut answer = Vec::new();
                let _ = tcp.read_to_end(&mut answer);
                answer
            });
            let (tcp, _) = listener.accept().await.unwrap();
            assert!(accept(tcp, server_config()).await.is_err());
            // A TLS alert record (content type 21), or nothing.
            let answer = client.join().unwrap();
            assert!(answer.is_empty() || answer[0] == 21, "{answer:?}");
        });
    }
}
