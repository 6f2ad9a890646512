//! Memory bounds: size prefixes cost no memory until their bytes arrive, request frames
//! share `queued_max_request_bytes` (reading stops while it is spent), idle connections
//! close after `connections_max_idle_ms`, `max_connections` holds, and Fetch responses
//! stay within `fetch_max_bytes`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use spate_net::compression::Compression;
use spate_net::messages::fetch_request::{FetchPartition, FetchTopic};
use spate_net::messages::produce_request::{PartitionProduceData, TopicProduceData};
use spate_net::messages::{
    ApiVersionsRequest, ApiVersionsResponse, FetchRequest, FetchResponse, ProduceRequest,
    ProduceResponse,
};
use spate_net::record_batch::{self, RecordBatchBuilder};
use spate_net::{ApiKey, Message, Records};

use common::{connect, create_topic, produce_request, read_response, request, send, Broker};

const FETCH_VERSION: i16 = 11;

fn api_versions(s: &mut TcpStream, corr: i32) {
    send(
        s,
        request(ApiKey::ApiVersions, 3, corr, &ApiVersionsRequest::default()),
    );
    let (c, mut body) = read_response(s).expect("ApiVersions response");
    assert_eq!(c, corr);
    assert_eq!(
        ApiVersionsResponse::decode(&mut body, 3)
            .unwrap()
            .error_code,
        0
    );
}

/// EOF or reset within the stream's read timeout.
fn is_closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(_) => false,
    }
}

fn vm_bytes(broker: &Broker, field: &str) -> u64 {
    let pid = broker.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

fn batch(records: usize, value_len: usize) -> Bytes {
    let mut b = RecordBatchBuilder::new(Compression::None);
    for i in 0..records {
        b.append(
            1_700_000_000_000 + i as i64,
            None,
            Some(&vec![b'x'; value_len]),
            &[],
        );
    }
    b.build().unwrap()
}

fn produce(s: &mut TcpStream, topic: &str, partition: i32, records: Bytes) -> i64 {
    let req = produce_request(topic, partition, records);
    send(s, request(ApiKey::Produce, 7, 9, &req));
    let (_, mut body) = read_response(s).unwrap();
    let p =
        ProduceResponse::decode(&mut body, 7).unwrap().responses[0].partition_responses[0].clone();
    assert_eq!(p.error_code, 0);
    p.base_offset
}

/// Fetch `(partition, offset)`s of `topic`; per partition: error, high watermark and
/// the batches returned.
fn fetch(
    s: &mut TcpStream,
    topic: &str,
    parts: &[(i32, i64)],
    max_bytes: i32,
    partition_max_bytes: i32,
    max_wait_ms: i32,
) -> Vec<(i16, i64, Vec<Bytes>)> {
    let req = FetchRequest {
        replica_id: -1,
        max_wait_ms,
        min_bytes: 1,
        max_bytes,
        topics: vec![FetchTopic {
            topic: topic.into(),
            partitions: parts
                .iter()
                .map(|&(p, o)| FetchPartition {
                    partition: p,
                    fetch_offset: o,
                    partition_max_bytes,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    };
    send(s, request(ApiKey::Fetch, FETCH_VERSION, 5, &req));
    let (_, mut body) = read_response(s).unwrap();
    let resp = FetchResponse::decode(&mut body, FETCH_VERSION).unwrap();
    resp.responses[0]
        .partitions
        .iter()
        .map(|p| {
            let data = p
                .records
                .clone()
                .map(|r| r.to_contiguous())
                .unwrap_or_default();
            let batches = record_batch::batches(data)
                .map(|b| b.unwrap().into_bytes())
                .collect();
            (p.error_code, p.high_watermark, batches)
        })
        .collect()
}

fn size(batches: &[Bytes]) -> usize {
    batches.iter().map(|b| b.len()).sum()
}

/// The offsets of every record in `batches`, in order.
fn offsets(batches: &[Bytes]) -> Vec<i64> {
    let mut out = Vec::new();
    for b in batches {
        let v = record_batch::batches(b.clone()).next().unwrap().unwrap();
        out.extend(v.base_offset()..=v.last_offset());
    }
    out
}

#[test]
fn size_prefixes_cost_no_memory_and_a_normal_client_is_served() {
    let broker = Broker::start("membound-prefix");
    let mut warm = connect(&broker);
    api_versions(&mut warm, 1);
    let (rss0, vm0) = (vm_bytes(&broker, "VmRSS:"), vm_bytes(&broker, "VmSize:"));

    // 150 connections declare ~100 MiB frames and send nothing more; 20 more send the
    // first 8 KiB of such a frame (those take budget: 5 fit into the default 512 MiB,
    // the rest wait without reading).
    let declared: i32 = 100 * 1024 * 1024 - 16;
    let mut held = Vec::new();
    for i in 0..170 {
        let mut s = connect(&broker);
        s.write_all(&declared.to_be_bytes()).unwrap();
        if i >= 150 {
            s.write_all(&[7u8; 8192]).unwrap();
        }
        held.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let (rss1, vm1) = (vm_bytes(&broker, "VmRSS:"), vm_bytes(&broker, "VmSize:"));
    eprintln!(
        "VmRSS {} -> {} MiB, VmSize {} -> {} MiB",
        rss0 >> 20,
        rss1 >> 20,
        vm0 >> 20,
        vm1 >> 20
    );
    // Reserving the declared sizes would map 17 GB.
    assert!(
        vm1.saturating_sub(vm0) < 1 << 30,
        "address space grew by {} MiB",
        (vm1 - vm0) >> 20
    );
    assert!(
        rss1.saturating_sub(rss0) < 64 << 20,
        "RSS grew by {} MiB",
        (rss1 - rss0) >> 20
    );

    // A normal client still gets answers, on new and old connections.
    let mut s = connect(&broker);
    api_versions(&mut s, 2);
    api_versions(&mut warm, 3);
    drop(held);
}

#[test]
fn request_memory_budget_pushes_back_and_refuses_oversized_frames() {
    let broker =
        Broker::start_with_config("membound-budget", "queued_max_request_bytes = 4194304\n");
    let mut setup = connect(&broker);
    create_topic(&mut setup, "budget", 1, &[]);

    // A holds 3 MiB of the 4 MiB budget: a declared 3 MiB frame with its body started.
    let mut a = connect(&broker);
    a.write_all(&(3i32 << 20).to_be_bytes()).unwrap();
    a.write_all(&vec![0u8; 64 * 1024]).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    // B sends a 2 MiB produce request: it does not fit, so B is not read (and gets no
    // answer) while A holds its share.
    let mut b = connect(&broker);
    let big = ProduceRequest {
        acks: 1,
        timeout_ms: 5000,
        topic_data: vec![TopicProduceData {
            name: "budget".into(),
            topic_id: Default::default(),
            partition_data: vec![PartitionProduceData {
                index: 0,
                records: Some(Records::from(Bytes::from(vec![0u8; 2 << 20]))),
            }],
        }],
        ..Default::default()
    };
    let frame: Vec<u8> = request(ApiKey::Produce, 7, 42, &big).concat();
    let mut b_writer = b.try_clone().unwrap();
    let writer = std::thread::spawn(move || b_writer.write_all(&frame).is_ok());

    // Small requests still fit in what is left.
    let mut c = connect(&broker);
    api_versions(&mut c, 7);

    b.set_read_timeout(Some(Duration::from_millis(1000)))
        .unwrap();
    let mut byte = [0u8; 1];
    match b.read(&mut byte) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("B was answered while the budget was spent: {other:?}"),
    }

    // A goes away: its share comes back and B is read and answered.
    drop(a);
    b.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(writer.join().unwrap());
    let mut len = [0u8; 4];
    // The first byte was not consumed above (the read timed out).
    b.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    b.read_exact(&mut body).unwrap();
    assert_eq!(i32::from_be_bytes([body[0], body[1], body[2], body[3]]), 42);

    // A frame larger than the whole budget can never be read: refused, not waited for.
    let mut d = connect(&broker);
    d.write_all(&(5i32 << 20).to_be_bytes()).unwrap();
    assert!(is_closed(&mut d));
    api_versions(&mut c, 8);
}

#[test]
fn idle_connections_are_closed() {
    let broker = Broker::start_with_config("membound-idle", "connections_max_idle_ms = 600\n");
    let mut setup = connect(&broker);
    create_topic(&mut setup, "idle", 1, &[]);
    drop(setup);

    let started = Instant::now();
    let mut idle = connect(&broker);
    let mut busy = connect(&broker);
    let mut polling = connect(&broker);
    // A long poll (2 s, longer than the idle time) is a request in flight: not idle.
    let poll = std::thread::spawn(move || {
        let got = fetch(&mut polling, "idle", &[(0, 0)], 1 << 20, 1 << 20, 2000);
        assert_eq!(got[0].0, 0);
        polling
    });
    for i in 0..10 {
        api_versions(&mut busy, i);
        std::thread::sleep(Duration::from_millis(150));
    }
    assert!(is_closed(&mut idle), "idle connection still open");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "closed too early: {waited:?}"
    );
    let mut polling = poll.join().unwrap();
    // The busy one outlived the idle time (its requests kept it open), and the polling
    // one was answered after its wait and still serves.
    api_versions(&mut polling, 100);
}

#[test]
fn max_connections_is_enforced() {
    let broker = Broker::start_with_config("membound-maxconn", "max_connections = 3\n");
    let mut open: Vec<TcpStream> = (0..3)
        .map(|i| {
            let mut s = connect(&broker);
            api_versions(&mut s, i);
            s
        })
        .collect();
    for _ in 0..3 {
        let mut extra = connect(&broker);
        let _ = extra.write_all(&[0, 0, 0, 10, 0, 18, 0, 3, 0, 0, 0, 1, 0xff, 0xff]);
        assert!(
            is_closed(&mut extra),
            "connection over max_connections was served"
        );
    }
    // A slot frees when a connection closes.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = connect(&broker);
        send(
            &mut s,
            request(ApiKey::ApiVersions, 3, 5, &ApiVersionsRequest::default()),
        );
        if read_response(&mut s).is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no slot after a connection closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for s in &mut open {
        api_versions(s, 9);
    }
}

#[test]
fn fetch_responses_stay_within_fetch_max_bytes() {
    const LIMIT: usize = 64 * 1024;
    let broker =
        Broker::start_with_config("membound-fetch", &format!("fetch_max_bytes = {LIMIT}\n"));
    let mut s = connect(&broker);
    create_topic(&mut s, "bounded", 3, &[]);
    // 40 batches of ~8 KiB (4 records each) in each partition: 320 KiB, 5x the limit.
    for p in 0..3 {
        for _ in 0..40 {
            produce(&mut s, "bounded", p, batch(4, 2000));
        }
    }
    let batch_len = batch(4, 2000).len();

    // Everything asked for, with no request limit: at most fetch_max_bytes come back.
    let got = fetch(
        &mut s,
        "bounded",
        &[(0, 0), (1, 0), (2, 0)],
        i32::MAX,
        i32::MAX,
        0,
    );
    let total: usize = got.iter().map(|(_, _, b)| size(b)).sum();
    assert!(total <= LIMIT, "{total} bytes over fetch_max_bytes");
    assert!(total > LIMIT - 2 * batch_len, "budget not used: {total}");
    for (code, hw, _) in &got {
        assert_eq!((*code, *hw), (0, 160));
    }
    // The request's own max_bytes, when smaller, bounds it instead.
    let got = fetch(
        &mut s,
        "bounded",
        &[(0, 0), (1, 0), (2, 0)],
        20_000,
        i32::MAX,
        0,
    );
    let total: usize = got.iter().map(|(_, _, b)| size(b)).sum();
    assert!(total <= 20_000 && total > 0, "{total}");

    // Reading a partition to its end with unbounded requests: every record once, in order.
    let mut next = 0i64;
    let mut seen = Vec::new();
    while next < 160 {
        let got = fetch(&mut s, "bounded", &[(1, next)], i32::MAX, i32::MAX, 0);
        let batches = &got[0].2;
        assert!(size(batches) <= LIMIT);
        let o = offsets(batches);
        assert!(!o.is_empty(), "no progress at {next}");
        // The first batch may start before the fetch offset only if it contains it.
        let o: Vec<i64> = o.into_iter().filter(|&x| x >= next).collect();
        next = o.last().unwrap() + 1;
        seen.extend(o);
    }
    assert_eq!(seen, (0..160).collect::<Vec<_>>());

    // Many partitions with a little data each: all of them in one response.
    create_topic(&mut s, "spread", 8, &[]);
    for p in 0..8 {
        produce(&mut s, "spread", p, batch(1, 100));
    }
    let parts: Vec<(i32, i64)> = (0..8).map(|p| (p, 0)).collect();
    let got = fetch(&mut s, "spread", &parts, i32::MAX, i32::MAX, 0);
    assert!(
        got.iter()
            .all(|(code, _, b)| *code == 0 && offsets(b) == vec![0]),
        "{got:?}"
    );

    // A batch larger than the whole limit still comes back whole, alone (KIP-74).
    create_topic(&mut s, "big", 2, &[]);
    produce(&mut s, "big", 0, batch(1, 100_000));
    produce(&mut s, "big", 0, batch(1, 10));
    produce(&mut s, "big", 1, batch(1, 10));
    let got = fetch(&mut s, "big", &[(0, 0), (1, 0)], i32::MAX, i32::MAX, 0);
    assert_eq!(offsets(&got[0].2), vec![0]);
    assert!(size(&got[0].2) > LIMIT);
    assert!(got[1].2.is_empty(), "budget spent by the first batch");
    // ... also when the partition limit is smaller than the batch.
    let got = fetch(&mut s, "big", &[(0, 0)], i32::MAX, 1024, 0);
    assert_eq!(offsets(&got[0].2), vec![0]);

    // Long poll: waiting at the end, woken by a produce to one of the partitions.
    let mut producer = connect(&broker);
    let t0 = Instant::now();
    let waker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        produce(&mut producer, "spread", 5, batch(1, 100));
    });
    let got = fetch(
        &mut s,
        "spread",
        &parts.iter().map(|&(p, _)| (p, 1)).collect::<Vec<_>>(),
        i32::MAX,
        i32::MAX,
        5000,
    );
    waker.join().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(4), "long poll not woken");
    for (p, (code, _, b)) in got.iter().enumerate() {
        assert_eq!(*code, 0);
        assert_eq!(
            offsets(b),
            if p == 5 { vec![1] } else { vec![] },
            "partition {p}"
        );
    }
}
