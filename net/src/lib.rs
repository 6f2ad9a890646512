//! Kafka wire protocol for Spate.
//!
//! * [`frame`]: size-prefixed frame splitting with a maximum frame size.
//! * [`messages`]: every request, response and header at every version, generated from
//!   Kafka's JSON message definitions (see `codegen/` and `docs/codec.md`).
//! * [`metadata_records`]: every KRaft metadata record at every version, generated from
//!   Kafka's record schemas, and [`metadata_frame`]: their framing in the metadata log.
//! * [`group_records`]: the KIP-848 consumer-group records of `__consumer_offsets`,
//!   generated from Kafka's group coordinator record schemas.
//! * [`share_records`]: the KIP-932 share-partition state records of
//!   `__share_group_state`, generated from Kafka's share coordinator record schemas.
//! * [`Encoder`] / [`Records`]: zero-copy output as a chain of `Bytes`.
//! * [`record_batch`]: RecordBatch v2 view, CRC, in-place rewrites, builder.
//! * [`compression`]: gzip, snappy, lz4, zstd with bounded decompression.

pub mod codec;
pub mod compression;
#[rustfmt::skip]
pub mod error_code;
pub mod frame;
#[rustfmt::skip]
#[allow(clippy::all, unused_mut, unused_variables, unused_imports, non_snake_case)]
pub mod group_records;
mod header;
#[rustfmt::skip]
#[allow(clippy::all, unused_mut, unused_variables, unused_imports, non_snake_case)]
pub mod messages;
pub mod metadata_frame;
#[rustfmt::skip]
#[allow(clippy::all, unused_mut, unused_variables, unused_imports, non_snake_case)]
pub mod metadata_records;
pub mod record_batch;
mod records;
#[rustfmt::skip]
#[allow(clippy::all, unused_mut, unused_variables, unused_imports, non_snake_case)]
pub mod share_records;
#[cfg(test)]
mod tests;

pub use codec::{DecodeError, Encoder};
pub use error_code::ErrorCode;
pub use header::{
    decode_request_header, encode_request_body_frame, encode_request_frame,
    encode_response_body_frame, encode_response_frame, request_header_version,
    response_header_version,
};
pub use messages::{ApiKey, RequestBody, ResponseBody};
pub use records::Records;

use bytes::Bytes;

/// A Kafka UUID (16 bytes); the default is the all-zero UUID.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    pub const ZERO: Uuid = Uuid([0; 16]);

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl std::fmt::Display for Uuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Uuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Uuid({self})")
    }
}

/// Implemented by every generated request, response, header and data struct.
pub trait Message: Sized {
    /// The message name as in the definitions (e.g. `ProduceRequest`).
    const NAME: &'static str;
    /// The API key; -1 for headers and data structures.
    const API_KEY: i16;
    /// Valid versions, inclusive.
    const VERSIONS: (i16, i16);
    /// First flexible version, if any.
    const FLEXIBLE_MIN: Option<i16>;

    /// Decodes a message of `version`, consuming its bytes from the front of `buf`.
    fn decode(buf: &mut Bytes, version: i16) -> Result<Self, DecodeError>;

    /// Encodes the message as `version`; fields absent from that version are skipped.
    fn encode(&self, out: &mut Encoder, version: i16);

    /// The response's top-level `throttle_time_ms`, for responses that have one (in
    /// some version: encoding skips it where the version lacks it).
    fn throttle_time_ms_mut(&mut self) -> Option<&mut i32> {
        None
    }

    fn is_flexible(version: i16) -> bool {
        matches!(Self::FLEXIBLE_MIN, Some(v) if version >= v)
    }

    fn supports_version(version: i16) -> bool {
        version >= Self::VERSIONS.0 && version <= Self::VERSIONS.1
    }
}
