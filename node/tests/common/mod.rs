//! Starts the `spate` binary on a free loopback port with a fresh data dir under the
//! target directory (not /tmp, which may be tmpfs and refuse O_DIRECT).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use spate_net::messages::RequestHeader;
use spate_net::{ApiKey, Message};

pub struct Broker {
    pub addr: String,
    pub data_dir: PathBuf,
    /// The config file it was started with, to start it again.
    config: Option<PathBuf>,
    child: Child,
}

impl Broker {
    pub fn start(name: &str) -> Broker {
        let data_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        Self::start_in(data_dir)
    }

    pub fn start_in(data_dir: PathBuf) -> Broker {
        Self::start_with(data_dir, None)
    }

    /// Start with extra config keys (TOML), written to a file beside the data dir.
    #[allow(dead_code)]
    pub fn start_with_config(name: &str, toml: &str) -> Broker {
        let data_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&data_dir);
        let file = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{name}-{}.toml", std::process::id()));
        std::fs::write(&file, toml).unwrap();
        Self::start_with(data_dir, Some(file))
    }

    /// Kills the broker (SIGKILL) and starts it again on the same data dir and config;
    /// it listens on a new Kafka port.
    #[allow(dead_code)]
    pub fn kill_and_restart(&mut self) {
        self.kill();
        let (addr, child) = spawn(&self.data_dir, self.config.as_ref());
        self.addr = addr;
        self.child = child;
    }

    /// Kills the broker (SIGKILL), keeping its data dir.
    #[allow(dead_code)]
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The broker's process id (for /proc).
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn start_with(data_dir: PathBuf, config: Option<PathBuf>) -> Broker {
        let (addr, child) = spawn(&data_dir, config.as_ref());
        Broker {
            addr,
            data_dir,
            config,
            child,
        }
    }
}

/// Starts `spate` and waits until it is ready; its Kafka address and process.
fn spawn(data_dir: &std::path::Path, config: Option<&PathBuf>) -> (String, Child) {
    let mut args = vec![
        "--data-dir".to_string(),
        data_dir.to_str().unwrap().to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--cores".into(),
        "2".into(),
    ];
    if let Some(c) = config {
        args.push("--config".into());
        args.push(c.to_str().unwrap().to_string());
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_spate"))
        .args(&args)
        .env("SPATE_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn spate");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listen=").nth(1) {
                if line.contains("ready to serve") {
                    let _ = tx.send(
                        rest.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                    );
                }
            }
            eprintln!("[spate] {line}");
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = rx
        .recv_timeout(deadline - Instant::now())
        .expect("broker did not become ready");
    (addr, child)
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

pub fn connect(broker: &Broker) -> TcpStream {
    let s = TcpStream::connect(&broker.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

pub fn send(stream: &mut TcpStream, chunks: Vec<Bytes>) {
    for c in chunks {
        stream.write_all(&c).unwrap();
    }
}

pub fn request<M: Message>(api: ApiKey, version: i16, correlation_id: i32, body: &M) -> Vec<Bytes> {
    let header = RequestHeader {
        request_api_key: api.key(),
        request_api_version: version,
        correlation_id,
        client_id: Some("spate-node-tests".into()),
    };
    spate_net::encode_request_frame(&header, body, version)
}

/// Read one response frame; returns the correlation id and the body after a v0
/// header (`flexible`: a v1 header, whose empty tagged-field section is one byte).
pub fn read_response_header(
    stream: &mut TcpStream,
    flexible: bool,
) -> std::io::Result<(i32, Bytes)> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body)?;
    let corr = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let skip = if flexible { 5 } else { 4 };
    Ok((corr, Bytes::from(body).slice(skip..)))
}

pub fn read_response(stream: &mut TcpStream) -> std::io::Result<(i32, Bytes)> {
    read_response_header(stream, false)
}

/// Metadata of one topic, at `version` (v9+ is flexible).
#[allow(dead_code)] // used by the cluster tests only
pub fn topic_metadata(
    stream: &mut TcpStream,
    topic: &str,
    version: i16,
) -> spate_net::messages::MetadataResponse {
    use spate_net::messages::metadata_request::MetadataRequestTopic;
    use spate_net::messages::{MetadataRequest, MetadataResponse};
    let body = MetadataRequest {
        topics: Some(vec![MetadataRequestTopic {
            name: Some(topic.into()),
            ..Default::default()
        }]),
        ..Default::default()
    };
    send(stream, request(ApiKey::Metadata, version, 2, &body));
    let (_, mut body) = read_response_header(stream, version >= 9).expect("Metadata response");
    MetadataResponse::decode(&mut body, version).expect("decode")
}

/// CreateTopics v5 for one topic with `configs`; asserts it was created.
pub fn create_topic(stream: &mut TcpStream, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    use spate_net::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    use spate_net::messages::{CreateTopicsRequest, CreateTopicsResponse};
    let create = CreateTopicsRequest {
        topics: vec![CreatableTopic {
            name: name.into(),
            num_partitions: partitions,
            replication_factor: 1,
            configs: configs
                .iter()
                .map(|(k, v)| CreatableTopicConfig {
                    name: (*k).into(),
                    value: Some((*v).into()),
                })
                .collect(),
            ..Default::default()
        }],
        timeout_ms: 5000,
        ..Default::default()
    };
    send(stream, request(ApiKey::CreateTopics, 5, 1, &create));
    let (_, mut body) = read_response_header(stream, true).unwrap();
    let created = CreateTopicsResponse::decode(&mut body, 5).unwrap();
    assert_eq!(created.topics[0].error_code, 0, "creating {name}");
}

/// A Produce request (acks=1) of one partition's records.
pub fn produce_request(
    topic: &str,
    partition: i32,
    records: Bytes,
) -> spate_net::messages::ProduceRequest {
    use spate_net::messages::produce_request::{PartitionProduceData, TopicProduceData};
    spate_net::messages::ProduceRequest {
        acks: 1,
        timeout_ms: 5000,
        topic_data: vec![TopicProduceData {
            name: topic.into(),
            topic_id: Default::default(),
            partition_data: vec![PartitionProduceData {
                index: partition,
                records: Some(spate_net::Records::from(records)),
            }],
        }],
        ..Default::default()
    }
}
