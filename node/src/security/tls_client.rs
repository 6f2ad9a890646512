//! The client side of TLS, for this broker's requests to other brokers' TLS listeners
//! (`crate::interbroker`): one request and its response at a time, so the rustls state
//! is owned by the stream (no reader and writer halves, unlike `tls_io`'s server side).

use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use compio::buf::BufResult;
use compio::io::AsyncWriteExt;
use compio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use super::tls_io::{take_records, tls_error, Incoming};

/// A TLS connection to a server, after its handshake.
pub struct TlsClientStream {
    tcp: TcpStream,
    conn: ClientConnection,
    incoming: Incoming,
    out: Vec<u8>,
}

impl TlsClientStream {
    /// Run the handshake on `tcp`, checking the server's certificate against `config`'s
    /// roots and `name` (Kafka's `ssl.endpoint.identification.algorithm=https`).
    pub async fn connect(
        tcp: TcpStream,
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<TlsClientStream> {
        let mut s = TlsClientStream {
            tcp,
            conn: ClientConnection::new(config, name).map_err(tls_error)?,
            incoming: Incoming::new(),
            out: Vec::new(),
        };
        while s.conn.is_handshaking() {
            if s.conn.wants_write() {
                s.flush().await?;
                continue;
            }
            s.receive().await?;
        }
        s.flush().await?;
        Ok(s)
    }

    /// Send every TLS record rustls has queued.
    async fn flush(&mut self) -> io::Result<()> {
        loop {
            take_records(&mut self.conn, &mut self.out)?;
            if self.out.is_empty() {
                return Ok(());
            }
            let BufResult(res, buf) = self.tcp.write_all(std::mem::take(&mut self.out)).await;
            self.out = buf;
            res?;
        }
    }

    /// Read ciphertext and let rustls process it; the end of the stream is an error
    /// (a response was expected).
    async fn receive(&mut self) -> io::Result<()> {
        if !self.incoming.fill(&mut self.tcp).await? {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let fed = self.incoming.feed(&mut self.conn);
        if fed.is_err() {
            // Tell the server why (rustls queued an alert).
            let _ = self.flush().await;
        }
        fed
    }

    /// Encrypt and send `chunks`.
    pub async fn write_all(&mut self, chunks: &[Bytes]) -> io::Result<()> {
        for chunk in chunks {
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let n = self.conn.writer().write(rest)?;
                rest = &rest[n..];
                // rustls's send buffer is full (or was): send what it holds.
                if n == 0 || !rest.is_empty() {
                    self.flush().await?;
                }
            }
        }
        self.flush().await
    }

    /// Fill `buf` with decrypted bytes.
    pub async fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.conn.reader().read(&mut buf[filled..]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => filled += n,
                // Nothing decrypted is waiting: more ciphertext is needed.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.receive().await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::test_tls::{client_config, server_config};

    /// A blocking rustls echo server on its own thread: reads `len` bytes and sends
    /// them back twice.
    fn echo_server(len: usize) -> (u16, std::thread::JoinHandle<()>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let conn = rustls::ServerConnection::new(server_config()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut got = vec![0; len];
            // A client refusing the certificate ends here.
            if tls.read_exact(&mut got).is_err() {
                return;
            }
            tls.write_all(&got).unwrap();
            tls.write_all(&got).unwrap();
            tls.flush().unwrap();
        });
        (port, handle)
    }

    /// Chunks of every size (one larger than rustls's send buffer) arrive whole, and a
    /// response read in pieces of any size comes back unchanged.
    #[test]
    fn round_trip() {
        let chunks = vec![
            Bytes::from_static(b"head"),
            Bytes::new(),
            Bytes::from((0..300_000u32).map(|i| (i % 253) as u8).collect::<Vec<_>>()),
        ];
        let sent: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let (port, server) = echo_server(sent.len());
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let mut s = TlsClientStream::connect(tcp, client_config(), name)
                .await
                .unwrap();
            s.write_all(&chunks).await.unwrap();
            let mut first = vec![0; 7];
            s.read_exact(&mut first).await.unwrap();
            let mut rest = vec![0; 2 * sent.len() - 7];
            s.read_exact(&mut rest).await.unwrap();
            first.extend_from_slice(&rest);
            assert_eq!(&first[..sent.len()], &sent[..]);
            assert_eq!(&first[sent.len()..], &sent[..]);
            // The server is done: a further read is the end, not a hang.
            assert!(s.read_exact(&mut [0; 1]).await.is_err());
        });
        server.join().unwrap();
    }

    /// A server whose certificate does not name the host asked for is refused.
    #[test]
    fn a_certificate_for_another_name_is_refused() {
        let (port, server) = echo_server(1);
        compio::runtime::Runtime::new().unwrap().block_on(async {
            let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let name = ServerName::try_from("other.example.com").unwrap();
            let refused = TlsClientStream::connect(tcp, client_config(), name).await;
            assert!(refused.is_err());
        });
        server.join().unwrap();
    }
}
