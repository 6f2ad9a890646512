//! Kafka's framing of one KRaft metadata record ("ApiMessageAndVersion"), as written to
//! the metadata log and to metadata snapshots:
//!
//! ```text
//! unsigned varint  frame version (always 1)
//! unsigned varint  record type (the definition's apiKey)
//! unsigned varint  record version
//! ...              the record body, encoded at that version
//! ```
//!
//! The frame carries no length: it is always the whole of a record's value, and decoding
//! refuses bytes left over after the body (as Kafka does).

use bytes::{Bytes, BytesMut};

use crate::codec::{self as c, DecodeError, Encoder};
use crate::metadata_records::{MetadataRecord, MetadataRecordType};

/// The only frame version Kafka writes and accepts (0 was KRaft's 2.8 preview).
pub const FRAME_VERSION: u32 = 1;

/// One metadata record with the version it is (or is to be) encoded at.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiMessageAndVersion {
    pub record: MetadataRecord,
    pub version: i16,
}

impl ApiMessageAndVersion {
    /// The record at the newest version the definitions know.
    pub fn latest(record: MetadataRecord) -> Self {
        let version = record.record_type().valid_versions().1;
        ApiMessageAndVersion { record, version }
    }

    /// Writes the frame (header and body) to `out`.
    pub fn encode(&self, out: &mut Encoder) {
        out.put_uvarint(FRAME_VERSION);
        // Record types and versions are never negative (the generator refuses negative
        // keys; versions come from the definitions' ranges).
        out.put_uvarint(self.record.record_type().key() as u16 as u32);
        out.put_uvarint(self.version.max(0) as u32);
        self.record.encode(out, self.version);
    }

    /// The frame as one contiguous buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut e = Encoder::new();
        self.encode(&mut e);
        let chunks = e.finish();
        if chunks.len() == 1 {
            return chunks.into_iter().next().unwrap_or_default();
        }
        let mut b = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
        for chunk in &chunks {
            b.extend_from_slice(chunk);
        }
        b.freeze()
    }

    /// Decodes a whole frame; fails on an unknown frame version, record type or record
    /// version, a malformed body, or bytes left over after the body.
    pub fn decode(mut buf: Bytes) -> Result<Self, DecodeError> {
        let frame_version = c::read_uvarint(&mut buf)?;
        if frame_version != FRAME_VERSION {
            return Err(DecodeError::Malformed(
                "unsupported metadata record frame version",
            ));
        }
        let record_type = read_short(&mut buf, "metadata record type too large")?;
        let version = read_short(&mut buf, "metadata record version too large")?;
        MetadataRecordType::try_from(record_type)?;
        let record = MetadataRecord::decode(record_type, version, &mut buf)?;
        if !buf.is_empty() {
            return Err(DecodeError::Malformed(
                "bytes left over after a metadata record",
            ));
        }
        Ok(ApiMessageAndVersion { record, version })
    }
}

/// An unsigned varint that must fit an `i16` (Kafka reads type and version as shorts).
fn read_short(buf: &mut Bytes, too_large: &'static str) -> Result<i16, DecodeError> {
    let v = c::read_uvarint(buf)?;
    i16::try_from(v).map_err(|_| DecodeError::Malformed(too_large))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata_records::{NoOpRecord, TopicRecord};
    use crate::Uuid;

    fn all_samples() -> Vec<ApiMessageAndVersion> {
        let mut out = Vec::new();
        for &t in MetadataRecordType::ALL {
            let (lo, hi) = t.valid_versions();
            for version in lo..=hi {
                out.push(ApiMessageAndVersion {
                    record: MetadataRecord::sample(t, version),
                    version,
                });
            }
        }
        out
    }

    #[test]
    fn every_record_type_and_version_round_trips_through_the_frame() {
        let samples = all_samples();
        assert!(samples.len() >= MetadataRecordType::ALL.len());
        for s in samples {
            let bytes = s.to_bytes();
            let back = ApiMessageAndVersion::decode(bytes.clone())
                .unwrap_or_else(|e| panic!("{:?} v{}: {e}", s.record.record_type(), s.version));
            assert_eq!(back, s);
            // Every strict prefix is refused (never a panic).
            for cut in 0..bytes.len() {
                assert!(ApiMessageAndVersion::decode(bytes.slice(..cut)).is_err());
            }
            // Trailing garbage is refused.
            let mut longer = BytesMut::from(&bytes[..]);
            longer.extend_from_slice(&[0]);
            assert!(ApiMessageAndVersion::decode(longer.freeze()).is_err());
        }
    }

    #[test]
    fn header_layout_matches_kafka() {
        // TopicRecord is type 2; version 0 body: compact string name, uuid, no tags.
        let r = ApiMessageAndVersion {
            record: MetadataRecord::Topic(TopicRecord {
                name: "t".into(),
                topic_id: Uuid([7; 16]),
            }),
            version: 0,
        };
        let b = r.to_bytes();
        let mut expected = vec![1u8, 2, 0, 2, b't'];
        expected.extend_from_slice(&[7; 16]);
        expected.push(0);
        assert_eq!(&b[..], &expected[..]);
        let noop = ApiMessageAndVersion::latest(MetadataRecord::NoOp(NoOpRecord {}));
        assert_eq!(&noop.to_bytes()[..], &[1u8, 20, 0, 0]);
    }

    #[test]
    fn bad_headers_are_refused() {
        let cases: &[&[u8]] = &[
            &[],
            &[0, 2, 0],                               // frame version 0
            &[2, 2, 0],                               // frame version 2
            &[1, 0x7f, 0],                            // unknown record type 127
            &[1, 0x80, 0x80, 0x02, 0, 0],             // type 32768: over i16
            &[1, 20, 0xff, 0xff, 0x03],               // version over i16
            &[1, 20, 9, 0],                           // NoOpRecord v9 does not exist
            &[1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // varint too long
        ];
        for case in cases {
            assert!(
                ApiMessageAndVersion::decode(Bytes::copy_from_slice(case)).is_err(),
                "{case:?} decoded"
            );
        }
    }

    #[test]
    fn random_input_never_panics() {
        // A small deterministic generator (xorshift): arbitrary bytes, and valid frames
        // with bytes flipped.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let samples = all_samples();
        for i in 0..20_000usize {
            let bytes = if i % 2 == 0 {
                let len = (next() % 64) as usize;
                (0..len).map(|_| next() as u8).collect::<Vec<u8>>()
            } else {
                let s = &samples[(next() as usize) % samples.len()];
                let mut b = s.to_bytes().to_vec();
                if !b.is_empty() {
                    let at = (next() as usize) % b.len();
                    b[at] = next() as u8;
                }
                b
            };
            let _ = ApiMessageAndVersion::decode(Bytes::from(bytes));
        }
    }
}
