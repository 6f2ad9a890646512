//! Replicated partitions on a three-node loopback cluster: acks=all records survive
//! the kill -9 of their leader, a new leader serves them, the old leader comes back
//! as a follower, rejoins the ISR, and the three logs end up identical batch for batch.
//! A reassignment moves a partition's replicas to other brokers without losing a record.

// Only some of the shared helpers are used here.
#[allow(dead_code)]
mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use spate_net::compression::Compression;
use spate_net::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use spate_net::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use spate_net::messages::fetch_request::{FetchPartition, FetchTopic};
use spate_net::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, CreateTopicsRequest,
    CreateTopicsResponse, FetchRequest, FetchResponse, ListPartitionReassignmentsRequest,
    ListPartitionReassignmentsResponse, ProduceResponse,
};
use spate_net::record_batch::{self, RecordBatchBuilder};
use spate_net::{ApiKey, Message};

use common::{produce_request, read_response_header, request, send, topic_metadata, Broker};

const DEADLINE: Duration = Duration::from_secs(30);
const TOPIC: &str = "replicated";

/// Short broker sessions and lag, so that failures are noticed within seconds.
const FAST: &str = "offsets_topic_num_partitions = 2\ntransaction_state_num_partitions = 2\n\
                    broker_heartbeat_interval_ms = 200\nbroker_session_timeout_ms = 1000\n\
                    replica_lag_time_max_ms = 2000\nreplica_fetch_wait_max_ms = 100\n\
                    replica_fetch_backoff_ms = 100\n";

fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

fn start_cluster(name: &str) -> Vec<Broker> {
    start_cluster_with(name, |_| String::new())
}

/// Three nodes; `extra(id)` adds to node `id`'s config.
fn start_cluster_with(name: &str, extra: impl Fn(usize) -> String + Sync) -> Vec<Broker> {
    let voters: Vec<String> = free_ports(3)
        .iter()
        .enumerate()
        .map(|(id, p)| format!("{id}@127.0.0.1:{p}"))
        .collect();
    let voters = voters.join(",");
    std::thread::scope(|scope| {
        let starting: Vec<_> = (0..3)
            .map(|id| {
                let toml = format!(
                    "{FAST}node_id = {id}\ncontroller_quorum_voters = \"{voters}\"\n{}",
                    extra(id)
                );
                scope.spawn(move || Broker::start_with_config(&format!("{name}-n{id}"), &toml))
            })
            .collect();
        starting
            .into_iter()
            .map(|h| h.join().expect("node started"))
            .collect()
    })
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    s
}

/// CreateTopics (v5): one partition, three replicas, `min.insync.replicas=2`; retried
/// on the active controller's moves.
fn create_replicated(nodes: &[Broker]) {
    create(
        nodes,
        CreatableTopic {
            name: TOPIC.into(),
            num_partitions: 1,
            replication_factor: 3,
            configs: vec![CreatableTopicConfig {
                name: "min.insync.replicas".into(),
                value: Some("2".into()),
            }],
            ..Default::default()
        },
    );
}

/// CreateTopics (v5) of `topic` through the first node.
fn create(nodes: &[Broker], topic: CreatableTopic) {
    let body = CreateTopicsRequest {
        topics: vec![topic],
        timeout_ms: 5000,
        ..Default::default()
    };
    let mut s = connect(&nodes[0].addr);
    send(&mut s, request(ApiKey::CreateTopics, 5, 1, &body));
    let (_, mut body) = read_response_header(&mut s, true).expect("CreateTopics response");
    let created = CreateTopicsResponse::decode(&mut body, 5).expect("decode");
    assert_eq!(created.topics[0].error_code, 0, "{created:?}");
}

/// The partition's leader and ISR as `s`'s node reports them (Metadata v12), and the
/// topic id.
fn leader_and_isr(s: &mut TcpStream) -> (i32, Vec<i32>, spate_net::Uuid) {
    let response = topic_metadata(s, TOPIC, 12);
    let topic = &response.topics[0];
    let Some(p) = topic.partitions.first() else {
        return (-1, Vec::new(), topic.topic_id);
    };
    let mut isr = p.isr_nodes.clone();
    isr.sort();
    (p.leader_id, isr, topic.topic_id)
}

/// Polls `nodes[via]` until the leader is one of `candidates` and the ISR is `isr`.
fn wait_for_leader(nodes: &[Broker], via: usize, candidates: &[i32], isr: &[i32]) -> i32 {
    let start = Instant::now();
    loop {
        if let Ok(mut s) = TcpStream::connect(&nodes[via].addr) {
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let (leader, got, _) = leader_and_isr(&mut s);
            if candidates.contains(&leader) && got == isr {
                return leader;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "leader {leader}, ISR {got:?}; waiting for one of {candidates:?} with {isr:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn batch(values: &[String]) -> Bytes {
    let mut b = RecordBatchBuilder::new(Compression::None);
    for v in values {
        b.append(1_700_000_000_000, None, Some(v.as_bytes()), &[]);
    }
    b.build().expect("batch")
}

/// Produces one batch with acks=all to `leader`; the base offset, or the error code.
fn produce_all(s: &mut TcpStream, values: &[String]) -> Result<i64, i16> {
    let mut req = produce_request(TOPIC, 0, batch(values));
    req.acks = -1;
    send(s, request(ApiKey::Produce, 9, 3, &req));
    let (_, mut body) = read_response_header(s, true).expect("Produce response");
    let p = ProduceResponse::decode(&mut body, 9)
        .expect("decode")
        .responses[0]
        .partition_responses[0]
        .clone();
    if p.error_code == 0 {
        Ok(p.base_offset)
    } else {
        Err(p.error_code)
    }
}

/// One Fetch (v13) of the partition from `offset` by a consumer in `rack` ("" for none):
/// the error, the preferred read replica, the high watermark, and the record values
/// with the offset after the last batch read (`offset` when none was).
fn fetch_partition(
    s: &mut TcpStream,
    topic_id: spate_net::Uuid,
    offset: i64,
    rack: &str,
) -> (i16, i32, i64, Vec<String>, i64) {
    let fetch = FetchRequest {
        max_wait_ms: 0,
        max_bytes: 1 << 20,
        rack_id: rack.into(),
        topics: vec![FetchTopic {
            topic_id,
            partitions: vec![FetchPartition {
                partition: 0,
                fetch_offset: offset,
                partition_max_bytes: 1 << 20,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    send(s, request(ApiKey::Fetch, 13, 5, &fetch));
    let (_, mut body) = read_response_header(s, true).expect("Fetch response");
    let response = FetchResponse::decode(&mut body, 13).expect("decode");
    let p = &response.responses[0].partitions[0];
    let mut values = Vec::new();
    let mut next = offset;
    let records = p.records.clone().unwrap_or_default().to_contiguous();
    for b in record_batch::batches(records) {
        let b = b.expect("batch");
        for r in b.records(1 << 20).expect("records") {
            let v = r.expect("record").value.expect("value");
            values.push(String::from_utf8(v.to_vec()).expect("utf8"));
        }
        next = b.last_offset() + 1;
    }
    (
        p.error_code,
        p.preferred_read_replica,
        p.high_watermark,
        values,
        next,
    )
}

/// [`fetch_partition`] from a consumer in `rack`: the error, the preferred read
/// replica, and the record values.
fn fetch_from(
    s: &mut TcpStream,
    topic_id: spate_net::Uuid,
    offset: i64,
    rack: &str,
) -> (i16, i32, Vec<String>) {
    let (error, preferred, _, values, _) = fetch_partition(s, topic_id, offset, rack);
    (error, preferred, values)
}

/// Every record value up to the high watermark, read from the leader until there are
/// `expected` of them (a new leader's high watermark reaches what it holds once its
/// followers fetched from it, a moment after it was elected).
fn read_committed_records(
    s: &mut TcpStream,
    topic_id: spate_net::Uuid,
    expected: usize,
) -> Vec<String> {
    let start = Instant::now();
    loop {
        let values = read_all(s, topic_id);
        if values.len() >= expected || start.elapsed() > DEADLINE {
            return values;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every record value from offset 0 up to the high watermark, read from the leader.
fn read_all(s: &mut TcpStream, topic_id: spate_net::Uuid) -> Vec<String> {
    let mut values = Vec::new();
    let mut offset = 0;
    loop {
        let (error, _, high_watermark, read, next) = fetch_partition(s, topic_id, offset, "");
        assert_eq!(error, 0, "fetch at {offset}");
        if next == offset {
            assert_eq!(offset, high_watermark, "read up to the high watermark");
            return values;
        }
        values.extend(read);
        offset = next;
    }
}

/// The batches of the partition's segment files in `broker`'s data dir, in order.
fn stored_batches(broker: &Broker) -> Vec<Vec<u8>> {
    let dir = broker.data_dir.join(format!("{TOPIC}-0"));
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "log"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let data = std::fs::read(&f).unwrap_or_default();
        let mut pos = 0;
        while pos + 12 <= data.len() {
            let len = i32::from_be_bytes(data[pos + 8..pos + 12].try_into().unwrap());
            if len <= 0 || pos + 12 + len as usize > data.len() {
                break; // preallocated space
            }
            out.push(data[pos..pos + 12 + len as usize].to_vec());
            pos += 12 + len as usize;
        }
    }
    out
}

#[test]
fn acknowledged_records_survive_the_loss_of_their_leader() {
    let mut nodes = start_cluster("repl");
    create_replicated(&nodes);
    let leader = wait_for_leader(&nodes, 0, &[0, 1, 2], &[0, 1, 2]);

    // Acknowledged by all three replicas.
    let mut acked: Vec<String> = Vec::new();
    let mut s = connect(&nodes[leader as usize].addr);
    for i in 0..20 {
        let values: Vec<String> = (0..5).map(|j| format!("a-{i}-{j}")).collect();
        assert_eq!(produce_all(&mut s, &values), Ok(i * 5), "batch {i}");
        acked.extend(values);
    }

    // kill -9 the leader: another in-sync replica takes over with every record.
    nodes[leader as usize].kill();
    let others: Vec<i32> = (0..3).filter(|&n| n != leader).collect();
    let via = others[0] as usize;
    let new_leader = wait_for_leader(&nodes, via, &others, &others);
    let mut s = connect(&nodes[new_leader as usize].addr);
    let (_, _, topic_id) = leader_and_isr(&mut s);
    assert_eq!(
        read_committed_records(&mut s, topic_id, acked.len()),
        acked,
        "after the failover"
    );

    // Two in-sync replicas still meet min.insync.replicas=2.
    for i in 20..30 {
        let values: Vec<String> = (0..5).map(|j| format!("b-{i}-{j}")).collect();
        assert_eq!(produce_all(&mut s, &values), Ok(i * 5), "batch {i}");
        acked.extend(values);
    }

    // The old leader returns as a follower, catches up and rejoins the ISR.
    nodes[leader as usize].kill_and_restart();
    wait_for_leader(&nodes, via, &[new_leader], &[0, 1, 2]);
    for i in 30..35 {
        let values: Vec<String> = (0..5).map(|j| format!("c-{i}-{j}")).collect();
        assert_eq!(produce_all(&mut s, &values), Ok(i * 5), "batch {i}");
        acked.extend(values);
    }
    assert_eq!(read_committed_records(&mut s, topic_id, acked.len()), acked);

    // Every replica holds the same batches (leader epochs included).
    let start = Instant::now();
    loop {
        let logs: Vec<Vec<Vec<u8>>> = nodes.iter().map(stored_batches).collect();
        if logs.iter().all(|l| l.len() == 35 && *l == logs[0]) {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "replica logs differ: {:?} batches",
            logs.iter().map(Vec::len).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// KIP-392: with the rack-aware selector, the leader sends a consumer in another rack to
/// the in-sync follower there, which serves it; a consumer in the leader's rack (or
/// without one) is served by the leader.
#[test]
fn consumers_read_from_the_replica_in_their_rack() {
    let nodes = start_cluster_with("kip392", |id| {
        format!(
            "broker_rack = \"rack-{id}\"\nreplica_selector_class = \"org.apache.kafka.common.replica.RackAwareReplicaSelector\"\n"
        )
    });
    create_replicated(&nodes);
    let leader = wait_for_leader(&nodes, 0, &[0, 1, 2], &[0, 1, 2]);
    let mut s = connect(&nodes[leader as usize].addr);
    let (_, _, topic_id) = leader_and_isr(&mut s);
    let values: Vec<String> = (0..10).map(|i| format!("near-{i}")).collect();
    assert_eq!(produce_all(&mut s, &values), Ok(0));

    let follower = (leader + 1) % 3;
    let rack = format!("rack-{follower}");
    let (error, preferred, got) = fetch_from(&mut s, topic_id, 0, &rack);
    assert_eq!(
        (error, preferred, got.len()),
        (0, follower, 0),
        "sent to the follower"
    );
    // The follower serves the consumer up to its high watermark, which the leader's
    // answers to its fetches move there (acks=all: it has every record).
    let mut f = connect(&nodes[follower as usize].addr);
    let start = Instant::now();
    loop {
        let (error, preferred, got) = fetch_from(&mut f, topic_id, 0, &rack);
        assert_eq!((error, preferred), (0, -1));
        if got == values {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "follower served {got:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let own = format!("rack-{leader}");
    assert_eq!(
        fetch_from(&mut s, topic_id, 0, &own),
        (0, -1, values.clone())
    );
    assert_eq!(fetch_from(&mut s, topic_id, 0, ""), (0, -1, values));
}

/// A partition with one replica on node 0 moves to nodes 1 and 2 while a producer
/// writes: every record is readable from the new leader afterwards, node 0 deleted its
/// copy, and no reassignment is left in progress.
#[test]
fn a_reassignment_moves_the_replicas_without_losing_a_record() {
    let nodes = start_cluster("reassign");
    create(
        &nodes,
        CreatableTopic {
            name: TOPIC.into(),
            num_partitions: -1,
            replication_factor: -1,
            assignments: vec![CreatableReplicaAssignment {
                partition_index: 0,
                broker_ids: vec![0],
            }],
            ..Default::default()
        },
    );
    wait_for_leader(&nodes, 0, &[0], &[0]);
    let mut acked: Vec<String> = Vec::new();
    let mut s = connect(&nodes[0].addr);
    for i in 0..20 {
        let values: Vec<String> = (0..50).map(|j| format!("before-{i}-{j}")).collect();
        assert_eq!(produce_all(&mut s, &values), Ok(i * 50), "batch {i}");
        acked.extend(values);
    }

    // Through node 1 (forwarded to the active controller wherever it is).
    let alter = AlterPartitionReassignmentsRequest {
        timeout_ms: 5000,
        topics: vec![ReassignableTopic {
            name: TOPIC.into(),
            partitions: vec![ReassignablePartition {
                partition_index: 0,
                replicas: Some(vec![1, 2]),
            }],
        }],
    };
    let mut admin = connect(&nodes[1].addr);
    send(
        &mut admin,
        request(ApiKey::AlterPartitionReassignments, 0, 7, &alter),
    );
    let (_, mut body) = read_response_header(&mut admin, true).expect("response");
    let altered = AlterPartitionReassignmentsResponse::decode(&mut body, 0).expect("decode");
    assert_eq!(altered.error_code, 0, "{altered:?}");
    assert_eq!(
        altered.responses[0].partitions[0].error_code, 0,
        "{altered:?}"
    );

    // Records keep coming while the replicas move: each batch goes to whoever leads.
    for i in 0..20 {
        let values: Vec<String> = (0..50).map(|j| format!("during-{i}-{j}")).collect();
        let start = Instant::now();
        loop {
            let leader = wait_for_leader_any(&nodes);
            let mut p = connect(&nodes[leader as usize].addr);
            match produce_all(&mut p, &values) {
                Ok(_) => break,
                Err(code) => assert!(
                    start.elapsed() < DEADLINE,
                    "produce during the move failed with {code}"
                ),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        acked.extend(values);
    }

    let leader = wait_for_leader(&nodes, 1, &[1, 2], &[1, 2]);
    let mut s = connect(&nodes[leader as usize].addr);
    let (_, _, topic_id) = leader_and_isr(&mut s);
    // A batch whose acks=all answer was NOT_LEADER_OR_FOLLOWER (the leader moved
    // while it waited) may be written and is sent again: as with Kafka, a producer
    // without idempotence may then store it twice. Each record once, in order:
    let mut seen = std::collections::HashSet::new();
    let read: Vec<String> = read_all(&mut s, topic_id)
        .into_iter()
        .filter(|v| seen.insert(v.clone()))
        .collect();
    let first_difference = read.iter().zip(&acked).position(|(a, b)| a != b);
    assert_eq!(
        (read.len(), first_difference),
        (acked.len(), None),
        "records read from the new leader {leader}"
    );

    // Node 0 is no longer a replica: its copy of the partition is gone.
    let start = Instant::now();
    loop {
        let left: Vec<String> = std::fs::read_dir(&nodes[0].data_dir)
            .expect("data dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!("{TOPIC}-0")))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "node 0 still has {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let list = ListPartitionReassignmentsRequest {
        timeout_ms: 5000,
        topics: None,
    };
    send(
        &mut admin,
        request(ApiKey::ListPartitionReassignments, 0, 8, &list),
    );
    let (_, mut body) = read_response_header(&mut admin, true).expect("response");
    let listed = ListPartitionReassignmentsResponse::decode(&mut body, 0).expect("decode");
    assert_eq!(
        (listed.error_code, listed.topics.len()),
        (0, 0),
        "{listed:?}"
    );
}

/// The partition's current leader as node 1 reports it, once it has one.
fn wait_for_leader_any(nodes: &[Broker]) -> i32 {
    let start = Instant::now();
    loop {
        if let Ok(mut s) = TcpStream::connect(&nodes[1].addr) {
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let (leader, _, _) = leader_and_isr(&mut s);
            if leader >= 0 {
                return leader;
            }
        }
        assert!(start.elapsed() < DEADLINE, "no leader");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The high-watermark checkpoint: each shard writes its partitions' high watermarks
/// every 5 s; a start reads and removes the files, and the shards write them again.
#[test]
fn high_watermarks_are_checkpointed_and_read_back_at_start() {
    let mut broker = Broker::start("hw-checkpoint");
    let mut s = common::connect(&broker);
    common::create_topic(&mut s, TOPIC, 1, &[]);
    let values: Vec<String> = (0..5).map(|i| format!("hw-{i}")).collect();
    assert_eq!(produce_all(&mut s, &values), Ok(0));
    // One file per shard: the partition is in its owner shard's.
    let has_hw = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .expect("data dir")
            .flatten()
            .any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix("high-watermark-checkpoint-")
                    .is_some_and(|shard| shard.parse::<usize>().is_ok())
                    && std::fs::read_to_string(e.path())
                        .is_ok_and(|t| t.lines().any(|l| l.starts_with(&format!("{TOPIC} 0 5 "))))
            })
    };
    let start = Instant::now();
    while !has_hw(&broker.data_dir) {
        assert!(
            start.elapsed() < DEADLINE,
            "no checkpoint of {TOPIC}-0 at 5"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    broker.kill_and_restart();
    // Read (and removed) at the start, then written again by the shard.
    let start = Instant::now();
    while !has_hw(&broker.data_dir) {
        assert!(
            start.elapsed() < DEADLINE,
            "no checkpoint after the restart"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut s = common::connect(&broker);
    assert_eq!(produce_all(&mut s, &values), Ok(5));
}
