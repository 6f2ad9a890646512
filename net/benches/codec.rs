//! Codec benchmarks: decoding a Produce request with 1 MiB of record batches and
//! encoding a 1 MiB Fetch response, each with its allocation count (counting global
//! allocator), and validating 1 MiB of produced batches record by record in each codec.
//! Run: `cargo bench -p spate-net --bench codec`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use spate_net::compression::Compression;
use spate_net::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use spate_net::messages::produce_request::{PartitionProduceData, TopicProduceData};
use spate_net::messages::{FetchResponse, ProduceRequest, RequestHeader};
use spate_net::record_batch::{batches, RecordBatch, RecordBatchBuilder, RecordCheck, RecordRules};
use spate_net::*;

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static ALLOC_BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(l.size(), Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        ALLOC_BYTES.fetch_add(new, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn count_allocs<R>(f: impl FnOnce() -> R) -> (R, usize, usize) {
    let (a, b) = (
        ALLOCS.load(Ordering::Relaxed),
        ALLOC_BYTES.load(Ordering::Relaxed),
    );
    let r = f();
    (
        r,
        ALLOCS.load(Ordering::Relaxed) - a,
        ALLOC_BYTES.load(Ordering::Relaxed) - b,
    )
}

const PARTITIONS: usize = 16;
const BATCH_BYTES: usize = 64 * 1024;

/// One ~64 KiB uncompressed batch of 1 KiB records.
fn batch() -> Bytes {
    let mut b = RecordBatchBuilder::new(Compression::None).producer(1, 0, 0);
    let value = vec![b'v'; 1000];
    let mut n = 0;
    while (n + 1) * 1010 < BATCH_BYTES - 100 {
        b.append(
            1_700_000_000_000 + n as i64,
            Some(b"key"),
            Some(&value),
            &[],
        );
        n += 1;
    }
    b.build().expect("batch")
}

fn produce_frame() -> Bytes {
    let b = batch();
    let req = ProduceRequest {
        acks: -1,
        timeout_ms: 30_000,
        topic_data: vec![TopicProduceData {
            name: "bench".into(),
            topic_id: Default::default(),
            partition_data: (0..PARTITIONS as i32)
                .map(|i| PartitionProduceData {
                    index: i,
                    records: Some(Records::from(b.clone())),
                })
                .collect(),
        }],
        ..Default::default()
    };
    let header = RequestHeader {
        request_api_key: 0,
        request_api_version: 9,
        correlation_id: 1,
        client_id: Some("bench".into()),
    };
    let mut f = BytesMut::new();
    for c in encode_request_frame(&header, &req, 9) {
        f.extend_from_slice(&c);
    }
    f.freeze().slice(4..)
}

fn fetch_response() -> FetchResponse {
    let b = batch();
    FetchResponse {
        responses: vec![FetchableTopicResponse {
            topic: "bench".into(),
            partitions: (0..PARTITIONS as i32)
                .map(|i| PartitionData {
                    partition_index: i,
                    high_watermark: 1000,
                    last_stable_offset: 1000,
                    records: Some(Records::from(b.clone())),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn decode_produce(frame: &Bytes) -> RequestBody {
    let mut f = frame.clone();
    let h = decode_request_header(&mut f).expect("header");
    RequestBody::decode(h.request_api_key, h.request_api_version, &mut f).expect("body")
}

fn validate_batches(body: &RequestBody) -> usize {
    let RequestBody::Produce(p) = body else {
        unreachable!()
    };
    let mut n = 0;
    for t in &p.topic_data {
        for pd in &t.partition_data {
            for chunk in pd.records.as_ref().expect("records").chunks() {
                for b in batches(chunk.clone()) {
                    let b = b.expect("batch");
                    b.verify_crc().expect("crc");
                    n += b.record_count() as usize;
                }
            }
        }
    }
    n
}

/// 16 batches of ~64 KiB (before compression) of records with `value_len`-byte values
/// that are text-like (a small alphabet from a fixed LCG, so codecs find a typical
/// 2-4x), compressed with `codec`: a 1 MiB produce payload. Returns the batches and the
/// record count.
fn validation_payload(codec: Compression, value_len: usize) -> (Vec<RecordBatch>, usize) {
    let mut seed = 0x2545_f491_u64;
    let mut out = Vec::new();
    let mut records = 0;
    for p in 0..PARTITIONS {
        let mut b = RecordBatchBuilder::new(codec).producer(1, 0, p as i32 * 64);
        let mut n = 0;
        while (n + 1) * (value_len + 30) < BATCH_BYTES - 100 {
            let value: Vec<u8> = (0..value_len)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    b"abcdefghijklmnop {}:,\"0123"[(seed >> 59) as usize % 26]
                })
                .collect();
            b.append(
                1_700_000_000_000 + n as i64,
                Some(b"key-0001"),
                Some(&value),
                &[],
            );
            n += 1;
        }
        records += n;
        out.push(RecordBatch::parse(b.build().expect("batch")).expect("parse"));
    }
    (out, records)
}

fn validate_all(batches: &[RecordBatch]) -> u64 {
    let mut n = 0;
    for b in batches {
        n += u64::from(b.validate(64 << 20).expect("valid").records);
    }
    n
}

fn validation_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("validate");
    // 1 KiB records in every codec, and the 100-byte records of the peak workload.
    let shapes = Compression::ALL
        .map(|c| (c, 1000))
        .into_iter()
        .chain([(Compression::None, 100), (Compression::Zstd, 100)]);
    for (codec, value_len) in shapes {
        let (payload, records) = validation_payload(codec, value_len);
        let wire: usize = payload.iter().map(|b| b.size()).sum();
        let inflated: u64 = payload
            .iter()
            .map(|b| b.validate(64 << 20).expect("valid").inflated_bytes)
            .sum();
        let (_, allocs, bytes) = count_allocs(|| validate_all(&payload));
        eprintln!(
            "validate {} {value_len} B: {} batches, {records} records, {wire} bytes on the wire, {inflated} inflated: {allocs} allocations, {bytes} bytes",
            codec.name(),
            payload.len()
        );
        g.throughput(Throughput::Bytes(inflated));
        let name = match value_len {
            1000 => format!("validate_1MiB_{}", codec.name()),
            n => format!("validate_1MiB_{}_{n}B", codec.name()),
        };
        g.bench_function(&name, |b| {
            b.iter(|| black_box(validate_all(black_box(&payload))))
        });
        if value_len == 100 {
            // The same walk with a schema-validation-like check on every value: read
            // its first five bytes and look an id up in a hash set.
            let check = IdLookup((1..1000).collect());
            g.bench_function(format!("{name}_schema_check"), |b| {
                b.iter(|| black_box(validate_checked_all(black_box(&payload), &check)))
            });
        }
    }
    g.finish();
}

/// Looks each value's bytes 1..5 up as an id, accepting every record (the bench
/// payload carries no schema ids): the work of the broker's schema validation.
struct IdLookup(std::collections::HashSet<i32>);

impl RecordCheck for IdLookup {
    fn fields(&self) -> (bool, bool) {
        (false, true)
    }
    fn accepts(&self, _is_key: bool, _len: i32, prefix: &[u8]) -> bool {
        let id = match prefix {
            [_, a, b, c, d] => i32::from_be_bytes([*a, *b, *c, *d]),
            _ => 0,
        };
        !self.0.contains(&id) || id != 0
    }
}

fn validate_checked_all(batches: &[RecordBatch], check: &IdLookup) -> u64 {
    let mut n = 0;
    for b in batches {
        n += u64::from(
            b.validate_checked(64 << 20, RecordRules::default(), Some(check))
                .expect("valid")
                .records,
        );
    }
    n
}

fn benches(c: &mut Criterion) {
    let frame = produce_frame();
    let resp = fetch_response();
    let payload = (PARTITIONS * batch().len()) as u64;

    let (_, allocs, bytes) = count_allocs(|| decode_produce(&frame));
    eprintln!(
        "produce decode (v9, {} bytes frame): {allocs} allocations, {bytes} bytes",
        frame.len()
    );
    let (_, allocs, bytes) = count_allocs(|| {
        let frame = frame.clone();
        let body = decode_produce(&frame);
        validate_batches(&body)
    });
    eprintln!("produce decode + CRC check of every batch: {allocs} allocations, {bytes} bytes");
    let (_, allocs, bytes) = count_allocs(|| encode_response_frame(1, 1, &resp, 12));
    eprintln!("fetch response encode (v12, {payload} bytes of records): {allocs} allocations, {bytes} bytes");

    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("produce_request_decode_1MiB", |b| {
        b.iter(|| black_box(decode_produce(black_box(&frame))))
    });
    g.bench_function("produce_request_decode_and_crc_1MiB", |b| {
        b.iter(|| black_box(validate_batches(&decode_produce(black_box(&frame)))))
    });
    g.throughput(Throughput::Bytes(payload));
    g.bench_function("fetch_response_encode_1MiB", |b| {
        b.iter(|| black_box(encode_response_frame(1, 1, black_box(&resp), 12)))
    });
    g.finish();
}

criterion_group!(codec, benches, validation_benches);
criterion_main!(codec);
