//! The controller channel's connections: plain TCP, or TLS with mutual authentication
//! when the node gives the quorum a [`ControllerTls`] (Kafka's controller listener
//! mapped to SSL). Raft between voters, brokers' application calls and observers all
//! connect and accept here, so no path can skip the handshake or the peer check.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

/// A TLS handshake that takes longer is abandoned (as the Kafka listeners' 10 s): a
/// peer that connects and sends nothing must not hold a connection slot.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the node supplies to secure the controller channel. Every method is called
/// per connection (or per request), so an implementation may swap certificates while
/// the quorum runs; open connections keep the configuration they started with.
pub trait ControllerTls: fmt::Debug + Send + Sync {
    /// The server side: presents this node's certificate and requires a client
    /// certificate that chains to the trusted CAs.
    fn server_config(&self) -> Arc<rustls::ServerConfig>;
    /// The client side: verifies the controller's certificate against the trusted CAs
    /// and presents this node's certificate.
    fn client_config(&self) -> Arc<rustls::ClientConfig>;
    /// The principal of a peer whose certificate the handshake verified (the leaf
    /// first); `Err` with the reason when it has none (the connection is refused).
    fn principal(&self, leaf: &CertificateDer<'_>) -> Result<String, String>;
    /// Whether `principal`, connected from `host`, may use the controller channel.
    /// Asked before every request, so a revoked permission takes effect at once.
    fn authorize(&self, principal: &str, host: IpAddr) -> bool;
}

/// How the controller channel is secured: `None` is plaintext.
pub type Security = Option<Arc<dyn ControllerTls>>;

/// One controller-channel connection, either side.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Who is on the other end of an accepted TLS connection.
#[derive(Clone, Debug)]
pub struct Peer {
    pub principal: String,
    pub host: IpAddr,
}

/// Connects to a controller at `addr` (`host:port`), with a TLS handshake when
/// `security` says so; the certificate must name `host` (a DNS name or an IP address
/// in its subjectAltName).
pub async fn connect(addr: &str, security: &Security) -> io::Result<Stream> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let Some(tls) = security else {
        return Ok(Stream::Plain(tcp));
    };
    let name = server_name(addr)?;
    let handshake = TlsConnector::from(tls.client_config()).connect(name, tcp);
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    Ok(Stream::Tls(Box::new(stream.into())))
}

/// Completes an accepted connection: with TLS, the handshake and the peer's
/// principal (whose authorization the caller checks per request).
pub async fn accept(
    tcp: TcpStream,
    from: SocketAddr,
    security: &Security,
) -> io::Result<(Stream, Option<Peer>)> {
    tcp.set_nodelay(true)?;
    let Some(tls) = security else {
        return Ok((Stream::Plain(tcp), None));
    };
    let handshake = TlsAcceptor::from(tls.server_config()).accept(tcp);
    let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    // The server config requires a client certificate: the handshake fails without.
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| refused("no client certificate".into()))?;
    let principal = tls.principal(leaf).map_err(refused)?;
    let peer = Peer {
        principal,
        host: from.ip(),
    };
    Ok((Stream::Tls(Box::new(stream.into())), Some(peer)))
}

/// The name the controller's certificate must carry: the host part of `host:port`,
/// an IP address (IPv6 in brackets) or a DNS name.
fn server_name(addr: &str) -> io::Result<ServerName<'static>> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("controller address {addr}: {host:?} is not a host name: {e}"),
        )
    })
}

/// A peer the controller channel turns away (logged as a refusal, not a routine close).
pub fn refused(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, why)
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_host_part() {
        assert!(matches!(
            server_name("127.0.0.1:9093").expect("ip"),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]:9093").expect("ipv6"),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("controller-1.example.com:9093").expect("dns"),
            ServerName::DnsName(_)
        ));
        assert!(server_name("bad host:1").is_err());
    }
}
