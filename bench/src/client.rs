//! A lean blocking Kafka client: one TCP connection, requests encoded with `spate-net`,
//! responses read frame by frame and matched by correlation id (in order).

use std::io::{self, IoSlice, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use spate_net::frame::split_frame;
use spate_net::messages::create_topics_request::CreatableTopic;
use spate_net::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use spate_net::messages::metadata_request::MetadataRequestTopic;
use spate_net::messages::{
    CreateTopicsRequest, CreateTopicsResponse, ListOffsetsRequest, ListOffsetsResponse,
    MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader,
};
use spate_net::{encode_request_frame, response_header_version, ErrorCode, Message, Uuid};

pub type Res<T> = Result<T, String>;

/// Largest response frame accepted (a fetch response is bounded by max_bytes anyway).
pub const MAX_FRAME: usize = 256 << 20;
const CLIENT_ID: &str = "spate-bench";
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

pub fn connect(addr: &str) -> Res<TcpStream> {
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|e| format!("resolve {addr}: {e}"))?
        .collect();
    let mut last = format!("no address for {addr}");
    for a in addrs {
        match TcpStream::connect_timeout(&a, Duration::from_secs(10)) {
            Ok(s) => {
                s.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
                s.set_read_timeout(Some(IO_TIMEOUT))
                    .map_err(|e| format!("timeout: {e}"))?;
                s.set_write_timeout(Some(IO_TIMEOUT))
                    .map_err(|e| format!("timeout: {e}"))?;
                return Ok(s);
            }
            Err(e) => last = format!("connect {a}: {e}"),
        }
    }
    Err(last)
}

/// Writes all chunks with vectored writes (no copy into one buffer).
pub fn write_chunks(stream: &mut TcpStream, chunks: &[Bytes]) -> io::Result<usize> {
    let total: usize = chunks.iter().map(Bytes::len).sum();
    let mut idx = 0;
    let mut off = 0;
    while idx < chunks.len() {
        if chunks[idx].len() == off {
            idx += 1;
            off = 0;
            continue;
        }
        let slices: Vec<IoSlice<'_>> = chunks[idx..]
            .iter()
            .take(512)
            .enumerate()
            .map(|(i, c)| IoSlice::new(if i == 0 { &c[off..] } else { &c[..] }))
            .collect();
        let mut n = stream.write_vectored(&slices)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "connection closed",
            ));
        }
        while n > 0 && idx < chunks.len() {
            let left = chunks[idx].len() - off;
            if n >= left {
                n -= left;
                idx += 1;
                off = 0;
            } else {
                off += n;
                n = 0;
            }
        }
    }
    Ok(total)
}

/// Reads size-prefixed frames from a stream.
pub struct FrameReader {
    stream: TcpStream,
    buf: BytesMut,
}

impl FrameReader {
    pub fn new(stream: TcpStream) -> FrameReader {
        FrameReader {
            stream,
            buf: BytesMut::with_capacity(256 << 10),
        }
    }

    /// The next frame body (without its size prefix).
    pub fn read_frame(&mut self) -> Res<Bytes> {
        loop {
            match split_frame(&mut self.buf, MAX_FRAME) {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => {}
                Err(e) => return Err(format!("bad response frame: {e}")),
            }
            // Read at least 64 KiB at a time, or the rest of a known large frame.
            let want = match spate_net::frame::peek_frame_size(&self.buf, MAX_FRAME) {
                Ok(Some(size)) => (size + 4).saturating_sub(self.buf.len()).max(64 << 10),
                _ => 64 << 10,
            };
            let len = self.buf.len();
            self.buf.resize(len + want, 0);
            let n = match self.stream.read(&mut self.buf[len..]) {
                Ok(n) => n,
                Err(e) => {
                    self.buf.truncate(len);
                    return Err(format!("read: {e}"));
                }
            };
            self.buf.truncate(len + n);
            if n == 0 {
                return Err("connection closed by the broker".into());
            }
        }
    }
}

/// Encodes a request frame.
pub fn request_frame<M: Message>(body: &M, version: i16, correlation_id: i32) -> Vec<Bytes> {
    let header = RequestHeader {
        request_api_key: M::API_KEY,
        request_api_version: version,
        correlation_id,
        client_id: Some(CLIENT_ID.to_owned()),
    };
    encode_request_frame(&header, body, version)
}

/// Decodes a response frame for a request of `api_key`/`version`, checking the
/// correlation id.
pub fn decode_response<R: Message>(
    mut frame: Bytes,
    request_api_key: i16,
    version: i16,
    correlation_id: i32,
) -> Res<R> {
    let hv = response_header_version(request_api_key, version);
    let header =
        ResponseHeader::decode(&mut frame, hv).map_err(|e| format!("response header: {e}"))?;
    if header.correlation_id != correlation_id {
        return Err(format!(
            "response out of order: correlation id {} where {} was expected",
            header.correlation_id, correlation_id
        ));
    }
    R::decode(&mut frame, version).map_err(|e| format!("decode {}: {e}", R::NAME))
}

/// A connection used one request at a time (metadata, topic creation, offsets).
pub struct Conn {
    stream: TcpStream,
    reader: FrameReader,
    next_correlation: i32,
}

impl Conn {
    pub fn connect(addr: &str) -> Res<Conn> {
        let stream = connect(addr)?;
        let reader = FrameReader::new(
            stream
                .try_clone()
                .map_err(|e| format!("clone socket: {e}"))?,
        );
        Ok(Conn {
            stream,
            reader,
            next_correlation: 1,
        })
    }

    pub fn request<Q: Message, R: Message>(&mut self, body: &Q, version: i16) -> Res<R> {
        let corr = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        let frame = request_frame(body, version, corr);
        write_chunks(&mut self.stream, &frame).map_err(|e| format!("send {}: {e}", Q::NAME))?;
        let resp = self.reader.read_frame()?;
        decode_response(resp, Q::API_KEY, version, corr)
    }

    /// Partition counts of `topics` (None for a topic the broker does not know).
    pub fn partition_counts(&mut self, topics: &[String]) -> Res<Vec<Option<(usize, bool)>>> {
        let req = MetadataRequest {
            topics: Some(
                topics
                    .iter()
                    .map(|t| MetadataRequestTopic {
                        topic_id: Uuid::ZERO,
                        name: Some(t.clone()),
                    })
                    .collect(),
            ),
            allow_auto_topic_creation: false,
            include_cluster_authorized_operations: false,
            include_topic_authorized_operations: false,
        };
        let resp: MetadataResponse = self.request(&req, 12)?;
        let mut out = Vec::with_capacity(topics.len());
        for t in topics {
            let found = resp
                .topics
                .iter()
                .find(|m| m.name.as_deref() == Some(t.as_str()));
            out.push(match found {
                Some(m) if m.error_code == 0 => {
                    let ready = m
                        .partitions
                        .iter()
                        .all(|p| p.error_code == 0 && p.leader_id >= 0);
                    Some((m.partitions.len(), ready))
                }
                Some(m) if m.error_code == ErrorCode::UnknownTopicOrPartition as i16 => None,
                Some(m) if m.error_code == ErrorCode::LeaderNotAvailable as i16 => Some((0, false)),
                Some(m) => return Err(format!("metadata for {t}: error {}", m.error_code)),
                None => None,
            });
        }
        Ok(out)
    }

    /// Creates missing topics with `partitions` partitions and waits until every
    /// partition has a leader. Returns the partition count of each topic.
    pub fn ensure_topics(&mut self, topics: &[String], partitions: u32) -> Res<Vec<usize>> {
        let counts = self.partition_counts(topics)?;
        let missing: Vec<String> = topics
            .iter()
            .zip(&counts)
            .filter(|(_, c)| c.is_none())
            .map(|(t, _)| t.clone())
            .collect();
        if !missing.is_empty() {
            let req = CreateTopicsRequest {
                topics: missing
                    .iter()
                    .map(|t| CreatableTopic {
                        name: t.clone(),
                        num_partitions: partitions as i32,
                        replication_factor: 1,
                        assignments: Vec::new(),
                        configs: Vec::new(),
                    })
                    .collect(),
                timeout_ms: 30_000,
                validate_only: false,
            };
            let resp: CreateTopicsResponse = self.request(&req, 5)?;
            for t in &resp.topics {
                if t.error_code != 0 && t.error_code != ErrorCode::TopicAlreadyExists as i16 {
                    return Err(format!(
                        "create topic {}: error {} {}",
                        t.name,
                        t.error_code,
                        t.error_message.as_deref().unwrap_or("")
                    ));
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let counts = self.partition_counts(topics)?;
            if counts
                .iter()
                .all(|c| matches!(c, Some((n, true)) if *n > 0))
            {
                let counts: Vec<usize> = counts
                    .iter()
                    .map(|c| c.map(|(n, _)| n).unwrap_or(0))
                    .collect();
                // Metadata can name a leader before the broker serves the partition
                // (Kafka answers NOT_LEADER_OR_FOLLOWER for a moment after creation):
                // wait until every partition answers ListOffsets.
                let parts: Vec<(String, i32)> = topics
                    .iter()
                    .zip(&counts)
                    .flat_map(|(t, &n)| (0..n as i32).map(move |p| (t.clone(), p)))
                    .collect();
                if self.list_offsets(&parts, -1).is_ok() {
                    return Ok(counts);
                }
            }
            if Instant::now() > deadline {
                return Err(format!("topics {topics:?} have no leaders after 30 s"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Offsets of `(topic, partition)` at `timestamp` (-1 latest, -2 earliest).
    pub fn list_offsets(&mut self, parts: &[(String, i32)], timestamp: i64) -> Res<Vec<i64>> {
        let mut topics: Vec<ListOffsetsTopic> = Vec::new();
        for (t, p) in parts {
            let part = ListOffsetsPartition {
                partition_index: *p,
                current_leader_epoch: -1,
                timestamp,
                max_num_offsets: 1,
            };
            match topics.iter_mut().find(|x| &x.name == t) {
                Some(x) => x.partitions.push(part),
                None => topics.push(ListOffsetsTopic {
                    name: t.clone(),
                    partitions: vec![part],
                }),
            }
        }
        let req = ListOffsetsRequest {
            replica_id: -1,
            isolation_level: 0,
            topics,
            timeout_ms: 30_000,
        };
        let resp: ListOffsetsResponse = self.request(&req, 7)?;
        let mut out = Vec::with_capacity(parts.len());
        for (t, p) in parts {
            let r = resp
                .topics
                .iter()
                .find(|x| &x.name == t)
                .and_then(|x| x.partitions.iter().find(|y| y.partition_index == *p))
                .ok_or_else(|| format!("ListOffsets: no answer for {t}-{p}"))?;
            if r.error_code != 0 {
                return Err(format!("ListOffsets {t}-{p}: error {}", r.error_code));
            }
            out.push(r.offset);
        }
        Ok(out)
    }
}
