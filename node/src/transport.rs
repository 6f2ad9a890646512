//! What a connection reads request bytes from and writes response chunks to: the TCP
//! socket itself on PLAINTEXT and SASL_PLAINTEXT listeners, TLS over it on the others
//! (`security::tls_io`). The connection loop is generic over these traits, so the
//! plaintext instance is the same code as before TLS existed: no cost for it.

use bytes::{Bytes, BytesMut};
use compio::buf::BufResult;
use compio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;

/// Linux refuses more than 1024 iovecs per sendmsg; stay well below.
const MAX_IOVECS: usize = 512;

/// The read side of a connection.
pub trait FrameRead {
    /// Append what arrives to `buf` (which has room); `Ok(0)` at the end of the stream.
    async fn read_into(&mut self, buf: BytesMut) -> BufResult<usize, BytesMut>;
}

/// The write side of a connection.
pub trait ChunkWrite {
    /// Write a response chain, in order.
    async fn write_chunks(&mut self, chunks: Vec<Bytes>) -> std::io::Result<()>;
    async fn shutdown(&mut self) -> std::io::Result<()>;
}

impl FrameRead for TcpStream {
    async fn read_into(&mut self, buf: BytesMut) -> BufResult<usize, BytesMut> {
        self.append(buf).await
    }
}

impl ChunkWrite for TcpStream {
    /// Vectored writes, never copying the chunks together.
    async fn write_chunks(&mut self, mut chunks: Vec<Bytes>) -> std::io::Result<()> {
        while !chunks.is_empty() {
            let rest = if chunks.len() > MAX_IOVECS {
                chunks.split_off(MAX_IOVECS)
            } else {
                Vec::new()
            };
            let BufResult(res, _) = self.write_vectored_all(chunks).await;
            res?;
            chunks = rest;
        }
        Ok(())
    }

    async fn shutdown(&mut self) -> std::io::Result<()> {
        AsyncWrite::shutdown(self).await
    }
}
