//! Kafka requests from this broker to another one, over the other broker's Kafka
//! listener: what a transaction coordinator sends to the leaders of its transactions'
//! partitions (WriteTxnMarkers), what a partition leader sends to a transaction
//! coordinator on another broker (AddPartitionsToTxn, KIP-890's verification), and a
//! follower's fetches from its leader (`replica::fetcher`).
//!
//! Each shard keeps its own idle connections per broker (at most [`IDLE_PER_BROKER`]);
//! a call takes one (or opens one), sends one request, reads its response and puts the
//! connection back. The other broker is reached on its first PLAINTEXT listener as it
//! registered it: inter-broker traffic has no TLS or SASL yet (docs/security.md).

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use compio::buf::BufResult;
use compio::io::{AsyncReadExt, AsyncWriteExt};
use compio::net::TcpStream;
use spate_net::messages::{RequestHeader, ResponseHeader};
use spate_net::response_header_version;
use spate_net::{ApiKey, Message};

use crate::metadata::MetadataImage;

/// Idle connections kept per remote broker and shard.
const IDLE_PER_BROKER: usize = 4;
/// Longest wait for a connection and a response.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response accepted of calls other than fetches (markers and verification
/// answers are small).
const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// Kafka's PLAINTEXT security protocol id in registrations.
const PLAINTEXT: i16 = 0;

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("broker {0} is not registered with a PLAINTEXT listener (or is fenced)")]
    NoEndpoint(i32),
    #[error("broker {0}: {1}")]
    Io(i32, std::io::Error),
    #[error("broker {0} did not answer within {CALL_TIMEOUT:?}")]
    Timeout(i32),
    #[error("broker {0} sent a response that does not decode: {1}")]
    Malformed(i32, String),
}

/// One shard's connections to other brokers.
#[derive(Default)]
pub struct BrokerClient {
    idle: RefCell<HashMap<i32, Vec<TcpStream>>>,
    next_correlation: std::cell::Cell<i32>,
}

impl BrokerClient {
    /// Sends `request` (API `key` at `version`) to broker `broker` and decodes its
    /// response.
    pub async fn call<Req: Message, Resp: Message>(
        &self,
        image: &MetadataImage,
        broker: i32,
        key: ApiKey,
        version: i16,
        request: &Req,
    ) -> Result<Resp, CallError> {
        self.call_limited(image, broker, key, version, request, MAX_RESPONSE_BYTES)
            .await
    }

    /// [`Self::call`] accepting a response of up to `max_response` bytes (a follower's
    /// fetch: `replica.fetch.response.max.bytes` plus one oversized batch).
    pub async fn call_limited<Req: Message, Resp: Message>(
        &self,
        image: &MetadataImage,
        broker: i32,
        key: ApiKey,
        version: i16,
        request: &Req,
        max_response: usize,
    ) -> Result<Resp, CallError> {
        let address = endpoint(image, broker).ok_or(CallError::NoEndpoint(broker))?;
        match compio::time::timeout(
            CALL_TIMEOUT,
            self.round_trip(broker, &address, key, version, request, max_response),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(CallError::Timeout(broker)),
        }
    }

    async fn round_trip<Req: Message, Resp: Message>(
        &self,
        broker: i32,
        address: &str,
        key: ApiKey,
        version: i16,
        request: &Req,
        max_response: usize,
    ) -> Result<Resp, CallError> {
        let io = |e| CallError::Io(broker, e);
        let pooled = self.idle.borrow_mut().get_mut(&broker).and_then(Vec::pop);
        let mut stream = match pooled {
            Some(s) => s,
            None => TcpStream::connect(address).await.map_err(io)?,
        };
        let correlation_id = self.next_correlation.get().wrapping_add(1);
        self.next_correlation.set(correlation_id);
        let header = RequestHeader {
            request_api_key: key.key(),
            request_api_version: version,
            correlation_id,
            client_id: Some("spate-broker".into()),
        };
        let frame = spate_net::encode_request_frame(&header, request, version);
        let BufResult(res, _) = stream.write_vectored_all(frame).await;
        res.map_err(io)?;
        let BufResult(res, len) = stream.read_exact([0u8; 4]).await;
        res.map_err(io)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > max_response {
            return Err(CallError::Malformed(
                broker,
                format!("a {len}-byte response"),
            ));
        }
        let BufResult(res, body) = stream.read_exact(vec![0u8; len]).await;
        res.map_err(io)?;
        let mut body = Bytes::from(body);
        let bad = |e: spate_net::DecodeError| CallError::Malformed(broker, e.to_string());
        let answered =
            ResponseHeader::decode(&mut body, response_header_version(key.key(), version))
                .map_err(bad)?;
        if answered.correlation_id != correlation_id {
            return Err(CallError::Malformed(
                broker,
                format!(
                    "correlation id {} for {correlation_id}",
                    answered.correlation_id
                ),
            ));
        }
        let response = Resp::decode(&mut body, version).map_err(bad)?;
        // Only a connection whose exchange completed goes back to the pool.
        let mut idle = self.idle.borrow_mut();
        let pool = idle.entry(broker).or_default();
        if pool.len() < IDLE_PER_BROKER {
            pool.push(stream);
        }
        Ok(response)
    }
}

/// `host:port` of broker `id`'s first PLAINTEXT listener, if it is live.
fn endpoint(image: &MetadataImage, id: i32) -> Option<String> {
    let b = image.brokers.get(&id).filter(|b| !b.fenced)?;
    let (_, host, port, _) = b.endpoints.iter().find(|e| e.3 == PLAINTEXT)?;
    Some(format!("{host}:{port}"))
}
