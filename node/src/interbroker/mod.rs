//! Kafka requests from this broker to another one, over the other broker's Kafka
//! listener: what a transaction coordinator sends to the leaders of its transactions'
//! partitions (WriteTxnMarkers), what a partition leader sends to a transaction
//! coordinator on another broker (AddPartitionsToTxn, KIP-890's verification), and a
//! follower's fetches from its leader (`replica::fetcher`).
//!
//! Each shard keeps its own idle connections per broker (at most [`IDLE_PER_BROKER`]);
//! a call takes one (or opens one), sends one request, reads its response and puts the
//! connection back. The other broker is reached on its listener named by
//! `inter_broker_listener_name` as it registered it, with TLS and SASL when that
//! listener has them (`link`).

mod link;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use spate_net::messages::{RequestHeader, ResponseHeader};
use spate_net::response_header_version;
use spate_net::{ApiKey, Message};

use crate::metadata::MetadataImage;
use link::Connection;
pub use link::InterBrokerLink;

/// Idle connections kept per remote broker and shard.
const IDLE_PER_BROKER: usize = 4;
/// Longest wait for a connection and a response.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response accepted of calls other than fetches (markers and verification
/// answers are small).
const MAX_RESPONSE_BYTES: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("broker {0} is not registered with the inter-broker listener {1} (or is fenced)")]
    NoEndpoint(i32, String),
    #[error("other brokers cannot be reached: {0}")]
    NoLink(String),
    #[error("broker {0} refused this broker's SASL authentication: {1}")]
    Authentication(i32, String),
    #[error("broker {0}: {1}")]
    Io(i32, std::io::Error),
    #[error("broker {0} did not answer within {CALL_TIMEOUT:?}")]
    Timeout(i32),
    #[error("broker {0} sent a response that does not decode: {1}")]
    Malformed(i32, String),
}

/// One shard's connections to other brokers.
pub struct BrokerClient {
    link: Arc<InterBrokerLink>,
    idle: RefCell<HashMap<i32, Vec<Connection>>>,
}

impl BrokerClient {
    pub fn new(link: Arc<InterBrokerLink>) -> Self {
        BrokerClient {
            link,
            idle: RefCell::default(),
        }
    }

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
        let (host, port) = endpoint(image, broker, &self.link.listener)
            .ok_or_else(|| CallError::NoEndpoint(broker, self.link.listener.clone()))?;
        match compio::time::timeout(
            CALL_TIMEOUT,
            self.round_trip(broker, &host, port, key, version, request, max_response),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(CallError::Timeout(broker)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn round_trip<Req: Message, Resp: Message>(
        &self,
        broker: i32,
        host: &str,
        port: u16,
        key: ApiKey,
        version: i16,
        request: &Req,
        max_response: usize,
    ) -> Result<Resp, CallError> {
        let pooled = loop {
            let taken = self.idle.borrow_mut().get_mut(&broker).and_then(Vec::pop);
            match taken {
                // A connection whose SASL session is about to end is left, not renewed.
                Some(c) if !c.usable() => continue,
                other => break other,
            }
        };
        let mut connection = match pooled {
            Some(c) => c,
            None => self.link.connect(broker, host, port).await?,
        };
        let response = connection
            .exchange(broker, key, version, request, max_response)
            .await?;
        // Only a connection whose exchange completed goes back to the pool.
        let mut idle = self.idle.borrow_mut();
        let pool = idle.entry(broker).or_default();
        if pool.len() < IDLE_PER_BROKER {
            pool.push(connection);
        }
        Ok(response)
    }
}

impl Connection {
    /// Sends one request and reads its response.
    async fn exchange<Req: Message, Resp: Message>(
        &mut self,
        broker: i32,
        key: ApiKey,
        version: i16,
        request: &Req,
        max_response: usize,
    ) -> Result<Resp, CallError> {
        let io = |e| CallError::Io(broker, e);
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let correlation_id = self.correlation_id;
        let header = RequestHeader {
            request_api_key: key.key(),
            request_api_version: version,
            correlation_id,
            client_id: Some("spate-broker".into()),
        };
        self.write_all(spate_net::encode_request_frame(&header, request, version))
            .await
            .map_err(io)?;
        let len = self.read_exact(4).await.map_err(io)?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len > max_response {
            return Err(CallError::Malformed(
                broker,
                format!("a {len}-byte response"),
            ));
        }
        let mut body = Bytes::from(self.read_exact(len).await.map_err(io)?);
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
        Resp::decode(&mut body, version).map_err(bad)
    }
}

/// Host and port of broker `id`'s listener `listener`, if it is live.
fn endpoint(image: &MetadataImage, id: i32, listener: &str) -> Option<(String, u16)> {
    let b = image.brokers.get(&id).filter(|b| !b.fenced)?;
    let (_, host, port, _) = b.endpoints.iter().find(|e| e.0 == listener)?;
    Some((host.clone(), *port))
}
