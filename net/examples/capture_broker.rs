//! A tiny fake broker on 127.0.0.1 used to capture request frames from real Kafka
//! clients into `tests/fixtures/` (see `tests/fixtures/README.md`).
//!
//! Usage: `cargo run -p spate-net --example capture_broker -- PORT OUT_DIR PREFIX`
//!
//! It answers ApiVersions, Metadata (one broker, one partition per topic), Produce and
//! InitProducerId well enough for a producer to send its first batches, and writes each
//! request frame (without the size prefix) to `OUT_DIR/PREFIX-<api>-v<version>.bin`
//! (the first of each kind only). It exits after 60 s.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use spate_net::messages::api_versions_response::ApiVersion;
use spate_net::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use spate_net::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use spate_net::messages::*;
use spate_net::*;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: capture_broker PORT OUT_DIR PREFIX");
        std::process::exit(2);
    }
    let port: u16 = args[1].parse().expect("port");
    let out = PathBuf::from(&args[2]);
    let prefix = args[3].clone();
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        match listener.accept() {
            Ok((s, _)) => {
                let (out, prefix) = (out.clone(), prefix.clone());
                std::thread::spawn(move || {
                    if let Err(e) = serve(s, port, &out, &prefix) {
                        eprintln!("connection: {e}");
                    }
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn serve(mut s: TcpStream, port: u16, out: &std::path::Path, prefix: &str) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut buf = BytesMut::new();
    let mut tmp = [0u8; 65536];
    loop {
        let frame = loop {
            match frame::split_frame(&mut buf, 100 << 20) {
                Ok(Some(f)) => break f,
                Ok(None) => {}
                Err(e) => return Err(std::io::Error::other(e.to_string())),
            }
            let n = s.read(&mut tmp)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
        };
        let mut body = frame.clone();
        let header =
            decode_request_header(&mut body).map_err(|e| std::io::Error::other(e.to_string()))?;
        let (key, ver) = (header.request_api_key, header.request_api_version);
        let name = ApiKey::try_from(key)
            .map(|k| k.name().to_string())
            .unwrap_or(format!("api{key}"));
        let path = out.join(format!("{prefix}-{name}-v{ver}.bin"));
        if !path.exists() {
            std::fs::write(&path, &frame)?;
            eprintln!("captured {}", path.display());
        }
        let req = match RequestBody::decode(key, ver, &mut body) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("decode {name} v{ver}: {e}");
                if key == 18 {
                    // Unsupported ApiVersions version: answer v0 with UNSUPPORTED_VERSION.
                    let resp = ApiVersionsResponse {
                        error_code: 35,
                        api_keys: api_list(),
                        ..Default::default()
                    };
                    send(
                        &mut s,
                        encode_response_frame(header.correlation_id, 0, &resp, 0),
                    )?;
                    continue;
                }
                return Ok(());
            }
        };
        let hv = response_header_version(key, ver);
        let cid = header.correlation_id;
        let chunks = match req {
            RequestBody::ApiVersions(_) => {
                let resp = ApiVersionsResponse {
                    api_keys: api_list(),
                    ..Default::default()
                };
                encode_response_frame(cid, hv, &resp, ver)
            }
            RequestBody::Metadata(m) => {
                let names: Vec<String> = match m.topics {
                    Some(t) if !t.is_empty() => t.into_iter().filter_map(|t| t.name).collect(),
                    _ => vec!["fixture".to_string()],
                };
                let resp = MetadataResponse {
                    brokers: vec![MetadataResponseBroker {
                        node_id: 0,
                        host: "127.0.0.1".into(),
                        port: port as i32,
                        rack: None,
                    }],
                    cluster_id: Some("spate-capture".into()),
                    controller_id: 0,
                    topics: names
                        .into_iter()
                        .map(|n| MetadataResponseTopic {
                            name: Some(n),
                            topic_id: Uuid([7; 16]),
                            partitions: vec![MetadataResponsePartition {
                                partition_index: 0,
                                leader_id: 0,
                                leader_epoch: 0,
                                replica_nodes: vec![0],
                                isr_nodes: vec![0],
                                ..Default::default()
                            }],
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                };
                encode_response_frame(cid, hv, &resp, ver)
            }
            RequestBody::Produce(p) => {
                if p.acks == 0 {
                    continue;
                }
                let resp = ProduceResponse {
                    responses: p
                        .topic_data
                        .iter()
                        .map(|t| TopicProduceResponse {
                            name: t.name.clone(),
                            topic_id: Default::default(),
                            partition_responses: t
                                .partition_data
                                .iter()
                                .map(|pd| PartitionProduceResponse {
                                    index: pd.index,
                                    base_offset: 0,
                                    ..Default::default()
                                })
                                .collect(),
                        })
                        .collect(),
                    ..Default::default()
                };
                encode_response_frame(cid, hv, &resp, ver)
            }
            RequestBody::InitProducerId(_) => {
                let resp = InitProducerIdResponse {
                    producer_id: 1000,
                    producer_epoch: 0,
                    ..Default::default()
                };
                encode_response_frame(cid, hv, &resp, ver)
            }
            other => {
                eprintln!("unhandled {:?}", other.api_key());
                return Ok(());
            }
        };
        send(&mut s, chunks)?;
    }
}

fn api_list() -> Vec<ApiVersion> {
    // Advertise every API (librdkafka derives features such as record batch v2 from
    // the whole set), even though only a few are answered.
    ApiKey::ALL
        .iter()
        .map(|k| {
            let (lo, hi) = k.valid_versions();
            ApiVersion {
                api_key: k.key(),
                min_version: lo,
                max_version: hi,
            }
        })
        .collect()
}

fn send(s: &mut TcpStream, chunks: Vec<Bytes>) -> std::io::Result<()> {
    for c in chunks {
        s.write_all(&c)?;
    }
    s.flush()
}
