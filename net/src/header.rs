//! Request/response headers and whole frames.

use bytes::{Buf, Bytes};

use crate::codec::{self as c, DecodeError};
use crate::messages::{ApiKey, RequestBody, RequestHeader, ResponseBody, ResponseHeader};
use crate::{Encoder, Message};

/// Request header version used by a request of `api_key` at `api_version`:
/// 2 for flexible requests, 1 otherwise, 0 for ControlledShutdown v0.
/// Unknown API keys get 1 (the client id is always a classic nullable string, so a
/// v1 parse reads the same bytes as v2 up to the tagged fields).
pub fn request_header_version(api_key: i16, api_version: i16) -> i16 {
    match ApiKey::try_from(api_key) {
        Ok(ApiKey::ControlledShutdown) if api_version == 0 => 0,
        Ok(k) => match k.request_flexible_min() {
            Some(min) if api_version >= min => 2,
            _ => 1,
        },
        Err(_) => 1,
    }
}

/// Response header version for a response of `api_key` at `api_version`:
/// 1 for flexible responses, 0 otherwise; ApiVersions responses always use 0 (a client
/// must be able to read it whatever version it asked for).
pub fn response_header_version(api_key: i16, api_version: i16) -> i16 {
    match ApiKey::try_from(api_key) {
        Ok(ApiKey::ApiVersions) | Err(_) => 0,
        Ok(k) => match k.response_flexible_min() {
            Some(min) if api_version >= min => 1,
            _ => 0,
        },
    }
}

/// Decodes the request header at the front of a frame body (as returned by
/// [`crate::frame::split_frame`]), leaving `frame` at the start of the request body.
///
/// The API key and version are read first to pick the header version. For an unknown
/// API key the header is still returned (api key, version, correlation id and, when it
/// parses, the client id) so the broker can answer or close; decoding the body with
/// [`crate::RequestBody::decode`] then fails with [`DecodeError::UnknownApiKey`].
pub fn decode_request_header(frame: &mut Bytes) -> Result<RequestHeader, DecodeError> {
    if frame.len() < 8 {
        return Err(DecodeError::Truncated {
            needed: 8,
            remaining: frame.len(),
        });
    }
    let api_key = i16::from_be_bytes([frame[0], frame[1]]);
    let api_version = i16::from_be_bytes([frame[2], frame[3]]);
    if ApiKey::try_from(api_key).is_err() {
        frame.advance(4);
        let correlation_id = c::read_i32(frame)?;
        let mut header = RequestHeader {
            request_api_key: api_key,
            request_api_version: api_version,
            correlation_id,
            client_id: None,
        };
        let mut rest = frame.clone();
        if let Ok(id) = c::read_nullable_string(&mut rest, false) {
            header.client_id = id;
            *frame = rest;
        }
        return Ok(header);
    }
    let version = request_header_version(api_key, api_version);
    RequestHeader::decode(frame, version)
}

/// Encodes a complete response frame: 4-byte size prefix, response header (of
/// `header_version`, see [`response_header_version`]) and `body` as `version`.
pub fn encode_response_frame(
    correlation_id: i32,
    header_version: i16,
    body: &impl Message,
    version: i16,
) -> Vec<Bytes> {
    let mut out = Encoder::framed();
    ResponseHeader { correlation_id }.encode(&mut out, header_version);
    body.encode(&mut out, version);
    out.finish()
}

/// Encodes a complete request frame: 4-byte size prefix, request header (its version
/// derived from the API key and `version`) and `body` as `version`.
pub fn encode_request_frame(
    header: &RequestHeader,
    body: &impl Message,
    version: i16,
) -> Vec<Bytes> {
    let mut out = Encoder::framed();
    let hv = request_header_version(header.request_api_key, version);
    header.encode(&mut out, hv);
    body.encode(&mut out, version);
    out.finish()
}

/// [`encode_response_frame`] for a [`ResponseBody`] of any API.
pub fn encode_response_body_frame(
    correlation_id: i32,
    header_version: i16,
    body: &ResponseBody,
    version: i16,
) -> Vec<Bytes> {
    let mut out = Encoder::framed();
    ResponseHeader { correlation_id }.encode(&mut out, header_version);
    body.encode(&mut out, version);
    out.finish()
}

/// [`encode_request_frame`] for a [`RequestBody`] of any API.
pub fn encode_request_body_frame(
    header: &RequestHeader,
    body: &RequestBody,
    version: i16,
) -> Vec<Bytes> {
    let mut out = Encoder::framed();
    let hv = request_header_version(header.request_api_key, version);
    header.encode(&mut out, hv);
    body.encode(&mut out, version);
    out.finish()
}
