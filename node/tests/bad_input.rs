//! The broker survives what a client sends: oversize and negative frames, garbage,
//! unknown API keys and versions, truncated bodies, huge array counts, corrupt batches.
//! After each, a fresh connection still gets answers.
//!
//! Real Kafka clients cover the happy paths in `compat/`; malformed bytes need a raw
//! socket, so this test speaks the protocol with `spate-net` directly.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::Bytes;
use spate_net::compression::Compression;
use spate_net::messages::{
    ApiVersionsRequest, ApiVersionsResponse, ProduceRequest, ProduceResponse,
};
use spate_net::record_batch::RecordBatchBuilder;
use spate_net::{ApiKey, Message};

use common::{connect, create_topic, produce_request, read_response, request, send, Broker};

/// The connection was closed by the broker (EOF rather than a response).
fn assert_closed(stream: &mut TcpStream) {
    let mut b = [0u8; 1];
    match stream.read(&mut b) {
        Ok(0) => {}
        Ok(_) => panic!("expected the broker to close the connection, got data"),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected close, got {e}"),
    }
}

fn api_versions_ok(broker: &Broker) {
    let mut s = connect(broker);
    send(
        &mut s,
        request(ApiKey::ApiVersions, 3, 77, &ApiVersionsRequest::default()),
    );
    let (corr, mut body) = read_response(&mut s).expect("ApiVersions response");
    assert_eq!(corr, 77);
    let resp = ApiVersionsResponse::decode(&mut body, 3).unwrap();
    assert_eq!(resp.error_code, 0);
    assert!(resp
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::Produce.key()));
}

#[test]
fn broker_survives_malformed_requests() {
    let broker = Broker::start("bad-input");

    // A frame larger than socket.request.max.bytes: closed before the body is read.
    let mut s = connect(&broker);
    s.write_all(&0x7fff_fff0i32.to_be_bytes()).unwrap();
    assert_closed(&mut s);
    api_versions_ok(&broker);

    // A negative frame size.
    let mut s = connect(&broker);
    s.write_all(&(-5i32).to_be_bytes()).unwrap();
    assert_closed(&mut s);

    // Garbage that parses as neither header nor body.
    let mut s = connect(&broker);
    s.write_all(&[0, 0, 0, 6, 0xde, 0xad, 0xbe, 0xef, 0x01, 0x02])
        .unwrap();
    assert_closed(&mut s);

    // An unknown API key.
    let mut s = connect(&broker);
    s.write_all(&[0, 0, 0, 10, 0x03, 0xe7, 0, 0, 0, 0, 0, 1, 0xff, 0xff])
        .unwrap();
    assert_closed(&mut s);

    // A known API at a version we do not serve.
    let mut s = connect(&broker);
    s.write_all(&[0, 0, 0, 10, 0, 0, 0, 99, 0, 0, 0, 1, 0xff, 0xff])
        .unwrap();
    assert_closed(&mut s);

    // ApiVersions at an unknown version: UNSUPPORTED_VERSION with our ranges, as v0.
    let mut s = connect(&broker);
    s.write_all(&[0, 0, 0, 10, 0, 18, 0, 99, 0, 0, 0, 9, 0xff, 0xff])
        .unwrap();
    let (corr, mut body) = read_response(&mut s).unwrap();
    assert_eq!(corr, 9);
    let resp = ApiVersionsResponse::decode(&mut body, 0).unwrap();
    assert_eq!(resp.error_code, 35);
    assert!(!resp.api_keys.is_empty());

    // Metadata v1 claiming 2^31-1 topics in a 4-byte array: no allocation, closed.
    let mut s = connect(&broker);
    let mut frame = vec![0, 3, 0, 1, 0, 0, 0, 2, 0xff, 0xff];
    frame.extend_from_slice(&0x7fff_ffffi32.to_be_bytes());
    let mut framed = (frame.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&frame);
    s.write_all(&framed).unwrap();
    assert_closed(&mut s);

    // A Produce request cut short.
    let mut s = connect(&broker);
    let mut chunks: Vec<u8> = request(
        ApiKey::Produce,
        7,
        3,
        &ProduceRequest {
            acks: 1,
            timeout_ms: 1000,
            ..Default::default()
        },
    )
    .concat();
    let cut = chunks.len() - 3;
    chunks.truncate(cut);
    chunks[..4].copy_from_slice(&((cut - 4) as i32).to_be_bytes());
    s.write_all(&chunks).unwrap();
    assert_closed(&mut s);

    api_versions_ok(&broker);
}

#[test]
fn corrupt_and_misdirected_batches_get_kafka_errors() {
    let broker = Broker::start("bad-batches");
    let mut s = connect(&broker);
    create_topic(&mut s, "bad-batches", 1, &[]);

    let mut builder = RecordBatchBuilder::new(Compression::None);
    builder.append(1_700_000_000_000, Some(b"k"), Some(b"v"), &[]);
    let good = builder.build().unwrap();
    let mut corrupt = good.to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x55;
    let produce =
        |topic: &str, records: Bytes, partition: i32| produce_request(topic, partition, records);
    let cases: [(&str, Bytes, i32, i16); 4] = [
        ("bad-batches", Bytes::from(corrupt), 0, 2), // CORRUPT_MESSAGE
        ("no-such-topic", good.clone(), 0, 3),       // UNKNOWN_TOPIC_OR_PARTITION
        ("bad-batches", good.clone(), 7, 3),         // no partition 7
        ("bad-batches", good.slice(..good.len() - 4), 0, 2), // truncated batch
    ];
    for (i, (topic, records, partition, code)) in cases.into_iter().enumerate() {
        send(
            &mut s,
            request(
                ApiKey::Produce,
                7,
                10 + i as i32,
                &produce(topic, records, partition),
            ),
        );
        let (corr, mut body) = read_response(&mut s).unwrap();
        assert_eq!(corr, 10 + i as i32);
        let resp = ProduceResponse::decode(&mut body, 7).unwrap();
        assert_eq!(
            resp.responses[0].partition_responses[0].error_code, code,
            "case {i} ({topic})"
        );
    }
    // The good batch still lands at offset 0: nothing before it was written.
    send(
        &mut s,
        request(ApiKey::Produce, 7, 99, &produce("bad-batches", good, 0)),
    );
    let (_, mut body) = read_response(&mut s).unwrap();
    let resp = ProduceResponse::decode(&mut body, 7).unwrap();
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 0));
}
