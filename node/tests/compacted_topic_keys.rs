//! A topic whose `cleanup.policy` contains `compact` refuses records without a key, as
//! Kafka's LogValidator does: INVALID_RECORD with one record error per keyless record
//! (Produce v8+) and Kafka's message; nothing of the refused batch is stored, and keyed
//! records (tombstones too) and other topics are unaffected.

mod common;

use std::net::TcpStream;

use bytes::Bytes;
use spate_net::compression::Compression;
use spate_net::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use spate_net::messages::produce_request::{PartitionProduceData, TopicProduceData};
use spate_net::messages::produce_response::PartitionProduceResponse;
use spate_net::messages::{
    ListOffsetsRequest, ListOffsetsResponse, ProduceRequest, ProduceResponse,
};
use spate_net::record_batch::RecordBatchBuilder;
use spate_net::{ApiKey, Message, Records};

use common::{
    connect, create_topic, produce_request, read_response, read_response_header, request, send,
    Broker,
};

const INVALID_RECORD: i16 = 87;

/// One batch; `None` entries are records without a key.
fn batch(codec: Compression, keys: &[Option<&[u8]>]) -> Bytes {
    let mut b = RecordBatchBuilder::new(codec);
    for (i, key) in keys.iter().enumerate() {
        b.append(1_700_000_000_000 + i as i64, *key, Some(b"value"), &[]);
    }
    b.build().unwrap()
}

fn produce(s: &mut TcpStream, version: i16, req: &ProduceRequest) -> Vec<PartitionProduceResponse> {
    send(s, request(ApiKey::Produce, version, 7, req));
    let (_, mut body) = read_response_header(s, version >= 9).unwrap();
    let resp = ProduceResponse::decode(&mut body, version).unwrap();
    resp.responses
        .into_iter()
        .flat_map(|t| t.partition_responses)
        .collect()
}

fn produce_one(
    s: &mut TcpStream,
    version: i16,
    topic: &str,
    records: Bytes,
) -> PartitionProduceResponse {
    produce(s, version, &produce_request(topic, 0, records)).remove(0)
}

fn end_offset(s: &mut TcpStream, topic: &str, partition: i32) -> i64 {
    let req = ListOffsetsRequest {
        replica_id: -1,
        topics: vec![ListOffsetsTopic {
            name: topic.into(),
            partitions: vec![ListOffsetsPartition {
                partition_index: partition,
                timestamp: -1,
                ..Default::default()
            }],
        }],
        ..Default::default()
    };
    send(s, request(ApiKey::ListOffsets, 1, 9, &req));
    let (_, mut body) = read_response(s).unwrap();
    let resp = ListOffsetsResponse::decode(&mut body, 1).unwrap();
    let p = &resp.topics[0].partitions[0];
    assert_eq!(p.error_code, 0);
    p.offset
}

fn reason(topic: &str, partition: i32) -> String {
    format!(
        "Compacted topic cannot accept message without key in topic partition {topic}-{partition}"
    )
}

#[test]
fn compacted_topics_refuse_records_without_a_key() {
    let broker = Broker::start("compacted-keys");
    let mut s = connect(&broker);
    create_topic(&mut s, "compacted", 2, &[("cleanup.policy", "compact")]);
    create_topic(&mut s, "both", 1, &[("cleanup.policy", "delete,compact")]);
    create_topic(&mut s, "plain", 1, &[]);
    let keyless: &[Option<&[u8]>] = &[Some(b"k0"), None, Some(b"k2"), None, None, None];

    for codec in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let p = produce_one(&mut s, 8, "compacted", batch(codec, keyless));
        assert_eq!(p.error_code, INVALID_RECORD, "{codec:?}");
        assert_eq!((p.base_offset, p.log_start_offset), (-1, 0));
        let why = reason("compacted", 0);
        let listed: Vec<(i32, Option<String>)> = p
            .record_errors
            .iter()
            .map(|e| (e.batch_index, e.batch_index_error_message.clone()))
            .collect();
        let want: Vec<(i32, Option<String>)> =
            [1, 3, 4, 5].map(|i| (i, Some(why.clone()))).to_vec();
        assert_eq!(listed, want);
        let shown = [1, 3, 4]
            .map(|i| format!("RecordError(batchIndex={i}, message='{why}')"))
            .join(", ");
        assert_eq!(
            p.error_message.as_deref(),
            Some(
                format!(
                    "One or more records have been rejected due to 4 record errors in total, \
                     and only showing the first three errors at most: [{shown}]"
                )
                .as_str()
            )
        );
    }
    // Before v8 the code alone.
    let p = produce_one(&mut s, 7, "compacted", batch(Compression::Lz4, &[None]));
    assert_eq!(p.error_code, INVALID_RECORD);
    assert_eq!(end_offset(&mut s, "compacted", 0), 0, "nothing stored");

    // `compact,delete` is compacted too; a plain topic takes records without a key.
    let p = produce_one(&mut s, 9, "both", batch(Compression::None, &[None]));
    assert_eq!(p.error_code, INVALID_RECORD);
    assert_eq!(p.record_errors[0].batch_index, 0);
    assert_eq!(end_offset(&mut s, "both", 0), 0);
    let p = produce_one(&mut s, 8, "plain", batch(Compression::None, keyless));
    assert_eq!((p.error_code, p.base_offset), (0, 0));
    assert_eq!(end_offset(&mut s, "plain", 0), 6);

    // Keyed records are stored, tombstones and empty keys included.
    let mut b = RecordBatchBuilder::new(Compression::Snappy);
    b.append(1_700_000_000_000, Some(b"k"), Some(b"v"), &[]);
    b.append(1_700_000_000_001, Some(b"k"), None, &[]);
    b.append(1_700_000_000_002, Some(b""), Some(b"v"), &[]);
    let p = produce_one(&mut s, 8, "compacted", b.build().unwrap());
    assert_eq!((p.error_code, p.base_offset), (0, 0));
    assert!(p.record_errors.is_empty() && p.error_message.is_none());
    assert_eq!(end_offset(&mut s, "compacted", 0), 3);

    // Only the partition with the keyless record is refused.
    let req = ProduceRequest {
        acks: -1,
        timeout_ms: 5000,
        topic_data: vec![TopicProduceData {
            name: "compacted".into(),
            topic_id: Default::default(),
            partition_data: [(0, None), (1, Some(&b"k"[..]))]
                .map(|(index, key)| PartitionProduceData {
                    index,
                    records: Some(Records::from(batch(Compression::None, &[key]))),
                })
                .to_vec(),
        }],
        ..Default::default()
    };
    let parts = produce(&mut s, 8, &req);
    assert_eq!(parts[0].error_code, INVALID_RECORD);
    assert_eq!(
        parts[0].record_errors[0].batch_index_error_message,
        Some(reason("compacted", 0))
    );
    assert_eq!((parts[1].error_code, parts[1].base_offset), (0, 0));
    assert_eq!(end_offset(&mut s, "compacted", 0), 3);
    assert_eq!(end_offset(&mut s, "compacted", 1), 1);
}
