//! Decodes request frames captured from real Kafka clients (see fixtures/README.md):
//! header + body must decode completely, re-encode byte for byte, and produce requests
//! must carry valid batches whose records read back.

use bytes::{Bytes, BytesMut};
use spate_net::messages::*;
use spate_net::record_batch::{batches, TimestampType};
use spate_net::*;

fn fixtures() -> Vec<(String, Bytes)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out: Vec<(String, Bytes)> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "bin"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                Bytes::from(std::fs::read(e.path()).expect("read")),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn concat(chunks: Vec<Bytes>) -> Bytes {
    let mut b = BytesMut::new();
    for c in chunks {
        b.extend_from_slice(&c);
    }
    b.freeze()
}

#[test]
fn captured_requests_decode_and_reencode_exactly() {
    let all = fixtures();
    assert!(
        all.len() >= 12,
        "expected fixtures from at least four clients"
    );
    let mut produce_seen = 0;
    for (name, frame) in all {
        let mut buf = frame.clone();
        let header =
            decode_request_header(&mut buf).unwrap_or_else(|e| panic!("{name}: header: {e}"));
        let (key, ver) = (header.request_api_key, header.request_api_version);
        let api = ApiKey::try_from(key).expect("known api");
        assert!(
            name.contains(&format!("-{}-v{ver}.bin", api.name())),
            "{name}"
        );
        let (lo, hi) = api.valid_versions();
        if ver > hi {
            // Newer than our definitions (the client retries with an older one).
            assert!(RequestBody::decode(key, ver, &mut buf).is_err(), "{name}");
            continue;
        }
        assert!(ver >= lo);
        let body_bytes = buf.clone();
        let body =
            RequestBody::decode(key, ver, &mut buf).unwrap_or_else(|e| panic!("{name}: body: {e}"));
        assert!(buf.is_empty(), "{name}: {} trailing bytes", buf.len());
        // Byte-exact re-encoding of header and body.
        let mut e = Encoder::new();
        header.encode(&mut e, request_header_version(key, ver));
        body.encode(&mut e, ver);
        assert_eq!(concat(e.finish()), frame, "{name}: re-encoding differs");
        assert_eq!(
            body_bytes.len() + (frame.len() - body_bytes.len()),
            frame.len()
        );
        if let RequestBody::Produce(p) = body {
            produce_seen += 1;
            let mut n = 0;
            for t in &p.topic_data {
                assert_eq!(t.name, "fixture", "{name}");
                for pd in &t.partition_data {
                    let recs = pd.records.as_ref().expect("records");
                    for b in batches(recs.to_contiguous()) {
                        let b = b.unwrap_or_else(|e| panic!("{name}: batch: {e}"));
                        b.verify_crc().unwrap_or_else(|e| panic!("{name}: {e}"));
                        assert_eq!(b.timestamp_type(), TimestampType::CreateTime);
                        for r in b.records(1 << 20).expect("records") {
                            let r = r.unwrap_or_else(|e| panic!("{name}: record: {e}"));
                            let v = r.value.expect("value");
                            assert!(v.starts_with(b"hello "), "{name}: {v:?}");
                            assert_eq!(r.headers.len(), 1, "{name}");
                            assert_eq!(r.headers[0].key, "h");
                            n += 1;
                        }
                    }
                }
            }
            assert!(n >= 1, "{name}: no records");
        }
    }
    assert!(produce_seen >= 4, "produce fixtures: {produce_seen}");
}

#[test]
fn captured_compression_codecs() {
    use spate_net::compression::Compression;
    let mut seen = Vec::new();
    for (name, frame) in fixtures() {
        if !name.contains("-Produce-") {
            continue;
        }
        let mut buf = frame.clone();
        let h = decode_request_header(&mut buf).expect("header");
        let Ok(RequestBody::Produce(p)) =
            RequestBody::decode(h.request_api_key, h.request_api_version, &mut buf)
        else {
            panic!("{name}");
        };
        let recs = p.topic_data[0].partition_data[0]
            .records
            .clone()
            .expect("records");
        let b = batches(recs.to_contiguous())
            .next()
            .expect("a batch")
            .expect("valid");
        seen.push((
            name.split('-').next().unwrap_or("").to_string(),
            b.compression().expect("codec"),
        ));
    }
    // Each client was configured with a codec (see capture scripts).
    for (client, codec) in [
        ("java", Compression::Snappy),
        ("librdkafka", Compression::Lz4),
        ("kafka", Compression::Gzip),
        ("kafkajs", Compression::Gzip),
    ] {
        assert!(
            seen.contains(&(client.to_string(), codec)),
            "{client}: {seen:?}"
        );
    }
}

/// Frames captured through `capture_proxy.py` between clients and a real Kafka 4.4
/// broker: `kafka/requests/` and the matching `kafka/responses/`.
fn kafka_pairs() -> Vec<(String, Bytes, Bytes)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kafka");
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir.join("requests"))
        .expect("kafka fixtures")
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let req = Bytes::from(std::fs::read(e.path()).expect("read"));
        let Ok(resp) = std::fs::read(dir.join("responses").join(&name)) else {
            continue;
        };
        out.push((name, req, Bytes::from(resp)));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn real_broker_responses_decode_and_reencode_exactly() {
    let pairs = kafka_pairs();
    assert!(pairs.len() >= 20, "{}", pairs.len());
    let mut fetched_records = 0;
    let (mut checked, mut skipped) = (0, 0);
    for (name, req, resp) in pairs {
        let mut r = req.clone();
        let h = decode_request_header(&mut r).expect("request header");
        let (key, ver) = (h.request_api_key, h.request_api_version);
        if ver > ApiKey::try_from(key).expect("known api").valid_versions().1 {
            // Negotiated with a broker newer than our definitions.
            skipped += 1;
            continue;
        }
        checked += 1;
        let body = RequestBody::decode(key, ver, &mut r)
            .unwrap_or_else(|e| panic!("{name}: request: {e}"));
        assert!(r.is_empty(), "{name}: request trailing bytes");
        let mut e = Encoder::new();
        h.encode(&mut e, request_header_version(key, ver));
        body.encode(&mut e, ver);
        assert_eq!(
            concat(e.finish()),
            req,
            "{name}: request re-encoding differs"
        );

        let mut b = resp.clone();
        let hv = response_header_version(key, ver);
        let rh = spate_net::messages::ResponseHeader::decode(&mut b, hv).expect("response header");
        assert_eq!(rh.correlation_id, h.correlation_id, "{name}");
        let body = ResponseBody::decode(key, ver, &mut b)
            .unwrap_or_else(|e| panic!("{name}: response: {e}"));
        assert!(b.is_empty(), "{name}: {} response trailing bytes", b.len());
        let resp_frame = concat(encode_response_body_frame(
            rh.correlation_id,
            hv,
            &body,
            ver,
        ));
        assert_eq!(
            resp_frame.slice(4..),
            resp,
            "{name}: response re-encoding differs"
        );
        if let ResponseBody::Fetch(f) = body {
            for t in &f.responses {
                for p in &t.partitions {
                    let Some(recs) = &p.records else { continue };
                    for batch in batches(recs.to_contiguous()) {
                        let batch = batch.expect("batch");
                        batch.verify_crc().expect("crc");
                        for r in batch.records(1 << 20).expect("records") {
                            assert!(r
                                .expect("record")
                                .value
                                .expect("value")
                                .starts_with(b"hello "));
                            fetched_records += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(fetched_records >= 6, "{fetched_records}");
    println!("checked {checked} request/response pairs, skipped {skipped} (versions newer than the definitions)");
    assert!(checked >= 20, "checked {checked}, skipped {skipped}");
}
