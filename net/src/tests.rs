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
        assert!(
            buf.is_empty(),
            "{} v{v}: {} bytes left over",
            M::NAME,
            buf.len()
        );
        for cut in 0..bytes.len() {
            let mut b = bytes.slice(..cut);
            assert!(
                M::decode(&mut b, v).is_err(),
                "{} v{v}: prefix {cut} decoded",
                M::NAME
            );
        }
        // Default values encode and decode too.
        let dm = sample(v);
        let _ = dm;
    }
    let mut b = Bytes::new();
    assert!(M::decode(&mut b, M::VERSIONS.1 + 1).is_err());
}

mod unit {
    use bytes::{BufMut, Bytes, BytesMut};

    use super::{concat, encode_to_bytes};
    use crate::messages::api_versions_response::{ApiVersion, SupportedFeatureKey};
    use crate::messages::fetch_response::{
        FetchableTopicResponse, LeaderIdAndEpoch, PartitionData,
    };
    use crate::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use crate::messages::*;
    use crate::*;

    fn request_frame_body(header: &RequestHeader, body: &impl Message, version: i16) -> Bytes {
        let frame = concat(&encode_request_frame(header, body, version));
        let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(len + 4, frame.len());
        frame.slice(4..)
    }

    #[test]
    fn request_frame_prefix() {
        let h = RequestHeader {
            request_api_key: 3,
            request_api_version: 12,
            correlation_id: 5,
            client_id: None,
        };
        let mut body = request_frame_body(&h, &MetadataRequest::default(), 12);
        assert_eq!(decode_request_header(&mut body).unwrap(), h);
        let mut b = body.clone();
        assert_eq!(
            RequestBody::decode(3, 12, &mut b).unwrap(),
            RequestBody::Metadata(MetadataRequest::default())
        );
        let any = RequestBody::Metadata(MetadataRequest::default());
        assert_eq!(
            concat(&encode_request_body_frame(&h, &any, 12)),
            concat(&encode_request_frame(&h, &MetadataRequest::default(), 12))
        );
        let resp = ResponseBody::Metadata(MetadataResponse::default());
        assert_eq!(
            concat(&encode_response_body_frame(3, 1, &resp, 12)),
            concat(&encode_response_frame(
                3,
                1,
                &MetadataResponse::default(),
                12
            ))
        );
    }

    #[test]
    fn header_versions() {
        assert_eq!(request_header_version(18, 3), 2);
        assert_eq!(request_header_version(18, 2), 1);
        assert_eq!(request_header_version(7, 0), 0);
        assert_eq!(request_header_version(7, 1), 1);
        assert_eq!(request_header_version(0, 9), 2);
        assert_eq!(request_header_version(0, 8), 1);
        assert_eq!(request_header_version(12345, 0), 1);
        assert_eq!(response_header_version(18, 3), 0);
        assert_eq!(response_header_version(18, 0), 0);
        assert_eq!(response_header_version(3, 9), 1);
        assert_eq!(response_header_version(3, 8), 0);
        assert_eq!(ApiKey::try_from(0).ok(), Some(ApiKey::Produce));
        assert_eq!(ApiKey::Fetch.key(), 1);
        assert_eq!(ApiKey::ApiVersions.name(), "ApiVersions");
        assert!(ApiKey::try_from(-5).is_err());
    }

    #[test]
    fn request_header_roundtrip_all_versions() {
        for &k in ApiKey::ALL {
            let (lo, hi) = k.valid_versions();
            for v in lo..=hi {
                let h = RequestHeader {
                    request_api_key: k.key(),
                    request_api_version: v,
                    correlation_id: 77,
                    client_id: Some("client-1".into()),
                };
                let body = RequestBody::default_for(k);
                let mut e = Encoder::new();
                body.encode(&mut e, v);
                let body_bytes = concat(&e.finish());
                let mut e = Encoder::new();
                h.encode(&mut e, request_header_version(k.key(), v));
                body.encode(&mut e, v);
                let mut frame = concat(&e.finish());
                let got = decode_request_header(&mut frame).expect("header");
                let mut expect = h.clone();
                if k == ApiKey::ControlledShutdown && v == 0 {
                    expect.client_id = Some(String::new());
                }
                assert_eq!(got, expect, "{k:?} v{v}");
                assert_eq!(frame, body_bytes, "{k:?} v{v}");
            }
        }
    }

    #[test]
    fn unknown_api_key_header_still_parses() {
        let mut b = BytesMut::new();
        b.put_i16(999);
        b.put_i16(4);
        b.put_i32(1234);
        b.put_i16(3);
        b.put_slice(b"abc");
        b.put_slice(&[1, 2, 3]);
        let mut frame = b.freeze();
        let h = decode_request_header(&mut frame).unwrap();
        assert_eq!(
            (h.request_api_key, h.request_api_version, h.correlation_id),
            (999, 4, 1234)
        );
        assert_eq!(h.client_id.as_deref(), Some("abc"));
        assert_eq!(&frame[..], &[1, 2, 3]);
        assert_eq!(
            RequestBody::decode(999, 4, &mut frame),
            Err(DecodeError::UnknownApiKey(999))
        );
        // Broken client id: the first three fields still come back.
        let mut frame = Bytes::from_static(&[3, 231, 0, 0, 0, 0, 0, 9, 0x7f, 0]);
        let h = decode_request_header(&mut frame).unwrap();
        assert_eq!(
            (h.request_api_key, h.correlation_id, h.client_id),
            (999, 9, None)
        );
        let mut short = Bytes::from_static(&[0, 18, 0]);
        assert!(decode_request_header(&mut short).is_err());
    }

    #[test]
    fn unsupported_version_is_an_error() {
        let mut b = Bytes::from_static(&[0, 0, 0, 0]);
        assert!(matches!(
            RequestBody::decode(18, 99, &mut b),
            Err(DecodeError::UnsupportedVersion { .. })
        ));
        assert!(matches!(
            MetadataRequest::decode(&mut b, -1),
            Err(DecodeError::UnsupportedVersion { .. })
        ));
    }

    #[test]
    fn response_frame_has_size_prefix_and_header() {
        let resp = ApiVersionsResponse {
            error_code: 0,
            api_keys: vec![ApiVersion {
                api_key: 0,
                min_version: 0,
                max_version: 11,
            }],
            throttle_time_ms: 0,
            ..Default::default()
        };
        let hv = response_header_version(18, 3);
        let frame = concat(&encode_response_frame(42, hv, &resp, 3));
        assert_eq!(
            u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize,
            frame.len() - 4
        );
        assert_eq!(&frame[4..8], &42i32.to_be_bytes());
        // Header v0: the body follows immediately (error code 0).
        assert_eq!(&frame[8..10], &[0, 0]);
        // Compact array of 1 element: uvarint 2.
        assert_eq!(frame[10], 2);
        // Flexible response header v1 adds an empty tagged-field section.
        let frame = concat(&encode_response_frame(
            42,
            1,
            &MetadataResponse::default(),
            9,
        ));
        assert_eq!(frame[8], 0);
    }

    #[test]
    fn framed_response_with_records_is_a_zero_copy_chain() {
        let recs = Bytes::from(vec![1u8; 3000]);
        let part = |i| PartitionData {
            partition_index: i,
            records: Some(Records::from(recs.clone())),
            ..Default::default()
        };
        let fr = FetchResponse {
            responses: vec![FetchableTopicResponse {
                topic: "t".into(),
                partitions: vec![part(0), part(1)],
                ..Default::default()
            }],
            ..Default::default()
        };
        for v in [4i16, 11, 12, 16] {
            let chunks = encode_response_frame(9, response_header_version(1, v), &fr, v);
            assert_eq!(
                chunks
                    .iter()
                    .filter(|c| c.as_ptr() == recs.as_ptr())
                    .count(),
                2,
                "v{v}"
            );
            let frame = concat(&chunks);
            let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
            assert_eq!(len, frame.len() - 4, "v{v}");
            let mut b = frame.slice(4..);
            let h = ResponseHeader::decode(&mut b, response_header_version(1, v)).unwrap();
            assert_eq!(h.correlation_id, 9);
            let d = FetchResponse::decode(&mut b, v).unwrap();
            assert!(b.is_empty());
            assert_eq!(
                d.responses[0].partitions[1].records,
                Some(Records::from(recs.clone()))
            );
        }
        let mut e = Encoder::framed();
        assert!(e.is_empty());
        e.put_i32(5);
        assert_eq!(e.len(), 4);
        assert_eq!(&concat(&e.finish())[..], &[0, 0, 0, 4, 0, 0, 0, 5]);
    }

    #[test]
    fn tagged_fields_only_when_not_default() {
        let mut resp = ApiVersionsResponse::default();
        let plain = encode_to_bytes(&resp, 3);
        // error code, api keys (empty compact array), throttle, tagged count 0
        assert_eq!(&plain[..], &[0, 0, 1, 0, 0, 0, 0, 0]);
        resp.supported_features.push(SupportedFeatureKey {
            name: "x".into(),
            min_version: 1,
            max_version: 2,
        });
        let tagged = encode_to_bytes(&resp, 3);
        assert_eq!(tagged[7], 1, "one tagged field");
        assert_eq!(tagged[8], 0, "tag 0");
        let mut b = tagged.clone();
        assert_eq!(ApiVersionsResponse::decode(&mut b, 3).unwrap(), resp);

        // Nested tagged struct in FetchResponse v12.
        let mut p = PartitionData::default();
        let fr = FetchResponse {
            responses: vec![FetchableTopicResponse {
                topic: "t".into(),
                partitions: vec![p.clone()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let a = encode_to_bytes(&fr, 12);
        p.current_leader = LeaderIdAndEpoch {
            leader_id: 3,
            leader_epoch: 4,
        };
        let fr2 = FetchResponse {
            responses: vec![FetchableTopicResponse {
                topic: "t".into(),
                partitions: vec![p],
                ..Default::default()
            }],
            ..Default::default()
        };
        let b2 = encode_to_bytes(&fr2, 12);
        assert!(b2.len() > a.len());
        let mut x = b2.clone();
        assert_eq!(FetchResponse::decode(&mut x, 12).unwrap(), fr2);
    }

    #[test]
    fn unknown_tagged_fields_are_skipped() {
        // ApiVersionsRequest v3: client software name, version, then tagged fields.
        let mut b = BytesMut::new();
        b.put_u8(2);
        b.put_slice(b"a");
        b.put_u8(2);
        b.put_slice(b"1");
        b.put_u8(2); // two tagged fields
        b.put_u8(40);
        b.put_u8(3);
        b.put_slice(&[9, 9, 9]);
        b.put_u8(41);
        b.put_u8(0);
        let mut b = b.freeze();
        let r = ApiVersionsRequest::decode(&mut b, 3).unwrap();
        assert_eq!(r.client_software_name, "a");
        assert!(b.is_empty());
    }

    #[test]
    fn hostile_counts_and_lengths() {
        // Array count 2^31-1 in a 4-byte body.
        let mut b = Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff]);
        assert!(matches!(
            MetadataRequest::decode(&mut b, 1),
            Err(DecodeError::InvalidLength { .. })
        ));
        // Array count just above what the body can hold (int32 elements need 4 bytes each).
        let mut b = Bytes::from_static(&[0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0]);
        assert!(codec::read_array(&mut b, false, 4, codec::read_i32).is_err());
        // Negative non-null lengths.
        let mut b = Bytes::from_static(&[0xff, 0xfe]);
        assert!(matches!(
            codec::read_nullable_string(&mut b, false),
            Err(DecodeError::InvalidLength { .. })
        ));
        let mut b = Bytes::from_static(&[0xff, 0xff, 0xff, 0xf0]);
        assert!(codec::read_nullable_bytes(&mut b, false).is_err());
        let mut b = Bytes::from_static(&[0x80, 0, 0, 0]);
        assert!(codec::read_nullable_array(&mut b, false, 1, codec::read_i8).is_err());
        // Null where not allowed.
        let mut b = Bytes::from_static(&[0xff, 0xff]);
        assert_eq!(
            codec::read_string(&mut b, false),
            Err(DecodeError::UnexpectedNull)
        );
        // String longer than the rest.
        let mut b = Bytes::from_static(&[0, 5, b'a']);
        assert!(codec::read_string(&mut b, false).is_err());
        // Compact string length over the rest.
        let mut b = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(codec::read_string(&mut b, true).is_err());
        // Invalid UTF-8.
        let mut b = Bytes::from_static(&[0, 2, 0xc3, 0x28]);
        assert_eq!(
            codec::read_string(&mut b, false),
            Err(DecodeError::InvalidUtf8)
        );
    }

    #[test]
    fn varints() {
        let mut b = Bytes::from_static(&[0x80, 0x80]);
        assert!(matches!(
            codec::read_uvarint(&mut b),
            Err(DecodeError::Truncated { .. })
        ));
        let mut b = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(codec::read_uvarint(&mut b), Err(DecodeError::InvalidVarint));
        let mut b = Bytes::from_static(&[0xff; 11]);
        assert_eq!(
            codec::read_uvarlong(&mut b),
            Err(DecodeError::InvalidVarint)
        );
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            i32::MAX as i64,
            i32::MIN as i64,
            i64::MAX,
            i64::MIN,
        ] {
            let mut e = Encoder::new();
            e.put_varlong(v);
            let mut b = concat(&e.finish());
            assert_eq!(codec::read_varlong(&mut b), Ok(v));
        }
        for v in [0i32, 1, -1, 300, -300, i32::MAX, i32::MIN] {
            let mut e = Encoder::new();
            e.put_varint(v);
            let mut b = concat(&e.finish());
            assert_eq!(codec::read_varint(&mut b), Ok(v));
        }
        // A flexible message whose first varint is truncated.
        let mut b = Bytes::from_static(&[0x80]);
        assert!(ApiVersionsRequest::decode(&mut b, 3).is_err());
    }

    #[test]
    fn records_are_zero_copy() {
        let batch = Bytes::from(vec![7u8; 5000]);
        let req = ProduceRequest {
            acks: -1,
            timeout_ms: 1000,
            topic_data: vec![TopicProduceData {
                name: "t".into(),
                topic_id: Default::default(),
                partition_data: vec![PartitionProduceData {
                    index: 0,
                    records: Some(Records::from(batch.clone())),
                }],
            }],
            ..Default::default()
        };
        let mut e = Encoder::new();
        req.encode(&mut e, 9);
        let chunks = e.finish();
        assert!(chunks
            .iter()
            .any(|c| c.as_ptr() == batch.as_ptr() && c.len() == batch.len()));
        let frame = concat(&chunks);
        let mut b = frame.clone();
        let d = ProduceRequest::decode(&mut b, 9).unwrap();
        let recs = d.topic_data[0].partition_data[0].records.as_ref().unwrap();
        assert_eq!(recs.chunks().len(), 1);
        let p = recs.chunks()[0].as_ptr() as usize;
        let base = frame.as_ptr() as usize;
        assert!(p >= base && p + recs.len() <= base + frame.len());
        assert_eq!(d, req);
    }

    #[test]
    fn defaults_follow_definitions() {
        let r = FetchRequest::default();
        assert_eq!(r.replica_id, -1);
        assert_eq!(r.cluster_id, None);
        let r = MetadataRequest::default();
        assert!(r.allow_auto_topic_creation);
        let p = fetch_response::PartitionData::default();
        assert_eq!(p.preferred_read_replica, -1);
        assert_eq!(p.records, None);
    }

    #[test]
    fn error_codes() {
        assert_eq!(
            ErrorCode::from_code(3),
            Some(ErrorCode::UnknownTopicOrPartition)
        );
        assert_eq!(ErrorCode::UnknownTopicOrPartition.code(), 3);
        assert_eq!(
            ErrorCode::UnknownTopicOrPartition.name(),
            "UNKNOWN_TOPIC_OR_PARTITION"
        );
        assert_eq!(ErrorCode::from_code(0), Some(ErrorCode::None));
        assert_eq!(
            ErrorCode::from_code(-1),
            Some(ErrorCode::UnknownServerError)
        );
        assert_eq!(ErrorCode::from_code(i16::MAX), None);
        for e in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(e.code()), Some(*e));
        }
    }

    #[test]
    fn uuid_display() {
        let u = Uuid([0x12; 16]);
        assert_eq!(u.to_string(), "12121212-1212-1212-1212-121212121212");
        assert!(Uuid::default().is_zero());
    }
}

/// Property-style test: mutated encodings of every request and response at every
/// version never make the decoder panic, and whatever decodes re-encodes to something
/// that decodes to the same value.
mod mutation {
    use bytes::Bytes;

    use super::concat;
    use crate::messages::{ApiKey, RequestBody, ResponseBody};
    use crate::Encoder;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
        let mut v = input.to_vec();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(v.len() + 1);
            match rng.below(6) {
                0 if !v.is_empty() => {
                    let i = at.min(v.len() - 1);
                    v[i] ^= 1 << rng.below(8);
                }
                1 if !v.is_empty() => {
                    let vals = [0x00, 0xff, 0x7f, 0x80, 0x01, 0xfe];
                    let i = at.min(v.len() - 1);
                    v[i] = vals[rng.below(vals.len())];
                }
                2 => v.truncate(at),
                3 => v.insert(at, rng.next() as u8),
                4 if at + 4 <= v.len() => v[at..at + 4].copy_from_slice(&[0x7f, 0xff, 0xff, 0xff]),
                _ => {
                    if at < v.len() {
                        v.remove(at);
                    }
                }
            }
        }
        v
    }

    #[test]
    fn mutated_messages_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut decoded = 0usize;
        for &k in ApiKey::ALL {
            let (lo, hi) = k.valid_versions();
            for v in lo..=hi {
                let mut e = Encoder::new();
                RequestBody::sample(k, v).encode(&mut e, v);
                let req = concat(&e.finish());
                let mut e = Encoder::new();
                ResponseBody::sample(k, v).encode(&mut e, v);
                let resp = concat(&e.finish());
                for _ in 0..60 {
                    let m = Bytes::from(mutate(&mut rng, &req));
                    if let Ok(body) = RequestBody::decode(k.key(), v, &mut m.clone()) {
                        decoded += 1;
                        let mut e = Encoder::new();
                        body.encode(&mut e, v);
                        let first = concat(&e.finish());
                        let again = RequestBody::decode(k.key(), v, &mut first.clone()).unwrap();
                        let mut e = Encoder::new();
                        again.encode(&mut e, v);
                        assert_eq!(concat(&e.finish()), first, "{k:?} v{v}");
                    }
                    let m = Bytes::from(mutate(&mut rng, &resp));
                    if let Ok(body) = ResponseBody::decode(k.key(), v, &mut m.clone()) {
                        decoded += 1;
                        let mut e = Encoder::new();
                        body.encode(&mut e, v);
                        let first = concat(&e.finish());
                        let again = ResponseBody::decode(k.key(), v, &mut first.clone()).unwrap();
                        let mut e = Encoder::new();
                        again.encode(&mut e, v);
                        assert_eq!(concat(&e.finish()), first, "{k:?} v{v}");
                    }
                }
            }
        }
        assert!(decoded > 0);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(12345);
        for _ in 0..20_000 {
            let len = rng.below(64);
            let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let mut b = Bytes::from(data);
            let k = (rng.below(90)) as i16;
            let v = (rng.below(20)) as i16;
            let _ = RequestBody::decode(k, v, &mut b.clone());
            let _ = ResponseBody::decode(k, v, &mut b.clone());
            let _ = crate::decode_request_header(&mut b);
        }
    }
}

/// Writes fuzz seeds (`net/fuzz/seeds/`) when `SPATE_WRITE_FUZZ_SEEDS=1`:
/// request and response samples for the first and last version of every API, and
/// record batches in every codec.
#[test]
fn write_fuzz_seeds() {
    use crate::compression::Compression;
    use crate::messages::{ApiKey, RequestBody, RequestHeader, ResponseBody};
    use crate::record_batch::RecordBatchBuilder;
    if std::env::var_os("SPATE_WRITE_FUZZ_SEEDS").is_none_or(|v| v != "1") {
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    for d in ["decode_request", "decode_response", "record_batch"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for &k in ApiKey::ALL {
        let (lo, hi) = k.valid_versions();
        for v in [lo, hi] {
            let h = RequestHeader {
                request_api_key: k.key(),
                request_api_version: v,
                correlation_id: 1,
                client_id: Some("seed".into()),
            };
            let mut e = Encoder::new();
            h.encode(&mut e, crate::request_header_version(k.key(), v));
            RequestBody::sample(k, v).encode(&mut e, v);
            std::fs::write(
                root.join(format!("decode_request/{}-v{v}", k.name())),
                concat(&e.finish()),
            )
            .unwrap();
            let mut e = Encoder::new();
            e.put_i16(k.key());
            e.put_i16(v);
            crate::messages::ResponseHeader { correlation_id: 1 }
                .encode(&mut e, crate::response_header_version(k.key(), v));
            ResponseBody::sample(k, v).encode(&mut e, v);
            std::fs::write(
                root.join(format!("decode_response/{}-v{v}", k.name())),
                concat(&e.finish()),
            )
            .unwrap();
        }
    }
    for c in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let mut b = RecordBatchBuilder::new(c);
        for i in 0..3 {
            b.append(
                1000 + i,
                Some(b"k"),
                Some(b"value value value"),
                &[("h", Some(b"v"))],
            );
        }
        std::fs::write(
            root.join(format!("record_batch/{}", c.name())),
            b.build().unwrap(),
        )
        .unwrap();
    }
}
