//! `compression.type` on a topic: batches arriving in another codec are stored in the
//! topic's codec with the same records. (Real clients read such topics in compat/; this
//! test looks at the stored batches themselves, which clients do not expose.)

mod common;

use bytes::Bytes;
use spate_net::compression::Compression;
use spate_net::messages::fetch_request::{FetchPartition, FetchTopic};
use spate_net::messages::{FetchRequest, FetchResponse, ProduceRequest, ProduceResponse};
use spate_net::record_batch::{self, RecordBatchBuilder};
use spate_net::{ApiKey, Message};

use common::{connect, create_topic, produce_request, read_response, request, send, Broker};

#[test]
fn batches_are_stored_in_the_topic_codec() {
    let broker = Broker::start("compression");
    let mut s = connect(&broker);
    create_topic(&mut s, "zstd-topic", 1, &[("compression.type", "zstd")]);

    // Two batches: one uncompressed, one gzip, with keys, null values and headers.
    let mut plain = RecordBatchBuilder::new(Compression::None);
    plain.append(
        1_700_000_000_000,
        Some(b"k0"),
        Some(b"v0"),
        &[("h", Some(b"x"))],
    );
    plain.append(1_700_000_000_005, None, None, &[]);
    let mut gz = RecordBatchBuilder::new(Compression::Gzip);
    gz.append(1_700_000_000_010, Some(b"k2"), Some(&[7u8; 300]), &[]);
    let records = [plain.build().unwrap(), gz.build().unwrap()].concat();
    let produce = ProduceRequest {
        acks: -1,
        ..produce_request("zstd-topic", 0, Bytes::from(records))
    };
    send(&mut s, request(ApiKey::Produce, 8, 2, &produce));
    let (_, mut body) = read_response(&mut s).unwrap();
    let p = &ProduceResponse::decode(&mut body, 8).unwrap().responses[0].partition_responses[0];
    assert_eq!((p.error_code, p.base_offset), (0, 0));

    let fetch = FetchRequest {
        replica_id: -1,
        max_wait_ms: 100,
        min_bytes: 1,
        max_bytes: 1 << 20,
        topics: vec![FetchTopic {
            topic: "zstd-topic".into(),
            partitions: vec![FetchPartition {
                partition: 0,
                fetch_offset: 0,
                partition_max_bytes: 1 << 20,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    send(&mut s, request(ApiKey::Fetch, 11, 3, &fetch));
    let (_, mut body) = read_response(&mut s).unwrap();
    let resp = FetchResponse::decode(&mut body, 11).unwrap();
    let data = resp.responses[0].partitions[0]
        .records
        .clone()
        .unwrap()
        .to_contiguous();
    let batches: Vec<_> = record_batch::batches(data).map(|b| b.unwrap()).collect();
    assert_eq!(batches.len(), 2);
    let mut seen = Vec::new();
    for b in &batches {
        assert_eq!(b.compression().unwrap(), Compression::Zstd);
        b.verify_crc().unwrap();
        for r in b.records(1 << 20).unwrap() {
            let r = r.unwrap();
            seen.push((
                b.base_offset() + r.offset_delta as i64,
                b.base_timestamp() + r.timestamp_delta,
                r.key,
                r.value.map(|v| v.len()),
                r.headers.len(),
            ));
        }
    }
    assert_eq!(
        seen,
        vec![
            (
                0,
                1_700_000_000_000,
                Some(Bytes::from_static(b"k0")),
                Some(2),
                1
            ),
            (1, 1_700_000_000_005, None, None, 0),
            (
                2,
                1_700_000_000_010,
                Some(Bytes::from_static(b"k2")),
                Some(300),
                0
            ),
        ]
    );
}
