//! A cluster on loopback: three nodes that are brokers and controllers (the default
//! roles) with a static voter list, and a broker that is not a controller and follows
//! the quorum as an observer. Every node starts (the followers too), a change made
//! through any node (forwarded to the active controller by the others) reaches every
//! node. Every broker
//! registers and is listed in every node's Metadata; a broker killed is fenced once its
//! session expires, drops out of the others' Metadata and out of every ISR.

// Only some of the shared helpers are used here.
#[allow(dead_code)]
mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use spate_net::messages::create_topics_request::CreatableTopic;
use spate_net::messages::elect_leaders_request::TopicPartitions as ElectTopicPartitions;
use spate_net::messages::fetch_request::{FetchPartition, FetchTopic};
use spate_net::messages::produce_request::{PartitionProduceData, TopicProduceData};
use spate_net::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DescribeClusterRequest, DescribeClusterResponse,
    ElectLeadersRequest, ElectLeadersResponse, FetchRequest, FetchResponse, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse,
};
use spate_net::{ApiKey, ErrorCode, Message, Records};

use common::{connect, read_response, read_response_header, request, send, topic_metadata, Broker};

const DEADLINE: Duration = Duration::from_secs(30);

/// Small internal topics (when created) and short broker sessions.
const SMALL: &str = "offsets_topic_num_partitions = 2\ntransaction_state_num_partitions = 2\n\
                     broker_heartbeat_interval_ms = 200\nbroker_session_timeout_ms = 1000\n";

/// Starts three controllers together (none is ready before a majority elected a
/// leader); `name` tells their data dirs apart.
fn start_controllers(name: &str, voters: &str) -> Vec<Broker> {
    std::thread::scope(|scope| {
        let starting: Vec<_> = (0..3)
            .map(|id| {
                let toml =
                    format!("{SMALL}node_id = {id}\ncontroller_quorum_voters = \"{voters}\"\n");
                scope.spawn(move || Broker::start_with_config(&format!("{name}-c{id}"), &toml))
            })
            .collect();
        starting
            .into_iter()
            .map(|h| h.join().expect("controller started"))
            .collect()
    })
}

fn voter_list() -> String {
    let ports = free_ports(3);
    let voters: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(id, p)| format!("{id}@127.0.0.1:{p}"))
        .collect();
    voters.join(",")
}

fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").port())
        .collect()
}

/// CreateTopics v5 for one topic; the error code.
fn create(s: &mut TcpStream, name: &str) -> i16 {
    let body = CreateTopicsRequest {
        topics: vec![CreatableTopic {
            name: name.into(),
            num_partitions: 2,
            replication_factor: -1,
            ..Default::default()
        }],
        timeout_ms: 5000,
        ..Default::default()
    };
    send(s, request(ApiKey::CreateTopics, 5, 1, &body));
    let (_, mut body) = read_response_header(s, true).expect("CreateTopics response");
    CreateTopicsResponse::decode(&mut body, 5)
        .expect("decode")
        .topics[0]
        .error_code
}

/// The topic names and broker ids a node's Metadata (v1) lists, sorted.
fn metadata(s: &mut TcpStream) -> (Vec<String>, Vec<i32>) {
    send(
        s,
        request(
            ApiKey::Metadata,
            1,
            2,
            // Null: every topic.
            &MetadataRequest {
                topics: None,
                ..Default::default()
            },
        ),
    );
    let (_, mut body) = read_response(s).expect("Metadata response");
    let response = MetadataResponse::decode(&mut body, 1).expect("decode");
    let mut names: Vec<String> = response.topics.into_iter().filter_map(|t| t.name).collect();
    names.sort();
    let mut brokers: Vec<i32> = response.brokers.iter().map(|b| b.node_id).collect();
    brokers.sort();
    (names, brokers)
}

/// The broker ids a node's DescribeCluster (v0) lists, sorted.
fn described_brokers(s: &mut TcpStream) -> Vec<i32> {
    let body = DescribeClusterRequest {
        include_cluster_authorized_operations: false,
        ..Default::default()
    };
    send(s, request(ApiKey::DescribeCluster, 0, 3, &body));
    let (_, mut body) = read_response_header(s, true).expect("DescribeCluster response");
    let response = DescribeClusterResponse::decode(&mut body, 0).expect("decode");
    let mut ids: Vec<i32> = response.brokers.iter().map(|b| b.broker_id).collect();
    ids.sort();
    ids
}

/// Polls every connection's Metadata until it lists `topics` and `brokers`.
fn wait_for(conns: &mut [TcpStream], topics: &[&str], brokers: &[i32]) {
    let start = Instant::now();
    for (i, s) in conns.iter_mut().enumerate() {
        loop {
            let (t, b) = metadata(s);
            if t == topics && b == brokers {
                break;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "node {i} lists topics {t:?}, brokers {b:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn three_controllers_and_an_observer_share_the_metadata() {
    let voters = voter_list();
    let controllers = start_controllers("cluster", &voters);
    let observer = Broker::start_with_config(
        "cluster-b7",
        &format!(
            "{SMALL}node_id = 7\nprocess_roles = [\"broker\"]\ncontroller_quorum_voters = \"{voters}\"\n"
        ),
    );

    // Every node creates a topic: the active controller itself, the others (the
    // observer too) by forwarding to it.
    let mut conns: Vec<TcpStream> = controllers.iter().map(connect).collect();
    let codes: Vec<i16> = conns
        .iter_mut()
        .enumerate()
        .map(|(i, s)| create(s, &format!("shared-{i}")))
        .collect();
    assert_eq!(codes, [0, 0, 0]);
    let mut o = connect(&observer);
    assert_eq!(create(&mut o, "from-observer"), 0);
    // A second create of the same topic, forwarded or not, is refused as Kafka does.
    assert_eq!(
        create(&mut o, "shared-0"),
        ErrorCode::TopicAlreadyExists.code()
    );

    // Every node, the observer included, serves the same topics and lists every
    // registered broker.
    conns.push(o);
    // (A cluster creates its internal topics on first use: none here.)
    let wanted = ["from-observer", "shared-0", "shared-1", "shared-2"];
    wait_for(&mut conns, &wanted, &[0, 1, 2, 7]);
    for s in &mut conns {
        assert_eq!(described_brokers(s), [0, 1, 2, 7]);
    }

    // The broker-only node is killed: fenced after its session, gone from Metadata.
    drop(observer);
    conns.pop();
    wait_for(&mut conns, &wanted, &[0, 1, 2]);
}

/// Creates `name` through whichever node's controller is active, retrying
/// NOT_CONTROLLER (a new controller being elected) until `DEADLINE`; returns the index
/// of the node that created it.
fn create_on_active(nodes: &[Broker], skip: Option<usize>, name: &str) -> usize {
    let start = Instant::now();
    loop {
        for (i, node) in nodes.iter().enumerate() {
            if Some(i) == skip {
                continue;
            }
            let Ok(mut s) = TcpStream::connect(&node.addr) else {
                continue;
            };
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            match create(&mut s, name) {
                0 => return i,
                c if c == ErrorCode::NotController.code() => {}
                c => panic!("creating {name} on node {i}: error {c}"),
            }
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no active controller created {name}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// kill -9 of the active controller, again and again, while topics are created: a new
/// controller takes over within seconds, and no acknowledged topic is lost.
#[test]
fn killing_the_active_controller_loses_no_acknowledged_change() {
    let voters = voter_list();
    let mut nodes = start_controllers("failover", &voters);
    let mut acknowledged: Vec<String> = Vec::new();
    for round in 0..3 {
        let before = format!("before-{round}");
        let active = create_on_active(&nodes, None, &before);
        acknowledged.push(before);
        nodes[active].kill();
        let killed_at = Instant::now();
        let after = format!("after-{round}");
        create_on_active(&nodes, Some(active), &after);
        assert!(
            killed_at.elapsed() < Duration::from_secs(10),
            "a new controller took {:?}",
            killed_at.elapsed()
        );
        acknowledged.push(after);
        nodes[active].kill_and_restart();
    }
    acknowledged.sort();
    let wanted: Vec<&str> = acknowledged.iter().map(String::as_str).collect();
    let mut conns: Vec<TcpStream> = nodes.iter().map(connect).collect();
    wait_for(&mut conns, &wanted, &[0, 1, 2]);
}

/// Each partition's leader and the brokers' ports, from a node's Metadata (v1).
fn leaders(s: &mut TcpStream, topic: &str) -> (Vec<i32>, Vec<(i32, i32)>) {
    let response = topic_metadata(s, topic, 1);
    let mut parts: Vec<(i32, i32)> = response.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_id))
        .collect();
    parts.sort();
    let ports = response
        .brokers
        .iter()
        .map(|b| (b.node_id, b.port))
        .collect();
    (parts.into_iter().map(|(_, l)| l).collect(), ports)
}

/// KIP-951: a produce (v11, flexible) and a fetch (v16) for a partition led by another
/// broker are answered NOT_LEADER_OR_FOLLOWER with the current leader and its endpoint,
/// so that the client re-routes without asking Metadata again.
#[test]
fn not_leader_answers_name_the_leader_and_its_endpoint() {
    let voters = voter_list();
    let nodes = start_controllers("kip951", &voters);
    let mut s = connect(&nodes[0]);
    assert_eq!(create(&mut s, "hinted"), 0);
    let start = Instant::now();
    let (led_by, ports) = loop {
        let (led_by, ports) = leaders(&mut s, "hinted");
        if led_by.len() == 2 && led_by.iter().all(|&l| l >= 0) && ports.len() == 3 {
            break (led_by, ports);
        }
        assert!(start.elapsed() < DEADLINE, "leaders {led_by:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    for (partition, &leader) in led_by.iter().enumerate() {
        let other = (0..3).find(|&n| n != leader).expect("another node");
        let mut o = connect(&nodes[other as usize]);
        let port = ports
            .iter()
            .find(|(id, _)| *id == leader)
            .expect("leader listed")
            .1;

        let produce = ProduceRequest {
            acks: -1,
            timeout_ms: 5000,
            topic_data: vec![TopicProduceData {
                name: "hinted".into(),
                partition_data: vec![PartitionProduceData {
                    index: partition as i32,
                    records: Some(Records::new()),
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        send(&mut o, request(ApiKey::Produce, 11, 5, &produce));
        let (_, mut body) = read_response_header(&mut o, true).expect("Produce response");
        let r = ProduceResponse::decode(&mut body, 11).expect("decode");
        let p = &r.responses[0].partition_responses[0];
        assert_eq!(p.error_code, ErrorCode::NotLeaderOrFollower.code());
        assert_eq!(p.current_leader.leader_id, leader);
        let endpoints: Vec<(i32, i32)> = r
            .node_endpoints
            .iter()
            .map(|e| (e.node_id, e.port))
            .collect();
        assert_eq!(endpoints, [(leader, port)]);

        let fetch = FetchRequest {
            replica_id: -1,
            max_wait_ms: 0,
            max_bytes: 1 << 20,
            topics: vec![FetchTopic {
                topic_id: topic_id(&mut o, "hinted"),
                partitions: vec![FetchPartition {
                    partition: partition as i32,
                    fetch_offset: 0,
                    partition_max_bytes: 1 << 20,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        send(&mut o, request(ApiKey::Fetch, 16, 6, &fetch));
        let (_, mut body) = read_response_header(&mut o, true).expect("Fetch response");
        let r = FetchResponse::decode(&mut body, 16).expect("decode");
        let p = &r.responses[0].partitions[0];
        assert_eq!(p.error_code, ErrorCode::NotLeaderOrFollower.code());
        assert_eq!(p.current_leader.leader_id, leader);
        let endpoints: Vec<(i32, i32)> = r
            .node_endpoints
            .iter()
            .map(|e| (e.node_id, e.port))
            .collect();
        assert_eq!(endpoints, [(leader, port)]);
    }
}

/// A topic's id from Metadata v12 (Fetch v13+ names topics by id).
fn topic_id(s: &mut TcpStream, topic: &str) -> spate_net::Uuid {
    topic_metadata(s, topic, 12).topics[0].topic_id
}

/// CreateTopics v5 of `partitions` partitions with `rf` replicas: error code and message.
fn create_replicated(
    s: &mut TcpStream,
    name: &str,
    partitions: i32,
    rf: i16,
) -> (i16, Option<String>) {
    let body = CreateTopicsRequest {
        topics: vec![CreatableTopic {
            name: name.into(),
            num_partitions: partitions,
            replication_factor: rf,
            ..Default::default()
        }],
        timeout_ms: 5000,
        ..Default::default()
    };
    send(s, request(ApiKey::CreateTopics, 5, 9, &body));
    let (_, mut body) = read_response_header(s, true).expect("CreateTopics response");
    let t = CreateTopicsResponse::decode(&mut body, 5)
        .expect("decode")
        .topics
        .remove(0);
    (t.error_code, t.error_message)
}

/// One partition as Metadata (v12) reports it.
#[derive(Debug, Clone, PartialEq)]
struct Reported {
    leader: i32,
    leader_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    offline: Vec<i32>,
}

/// The partitions of `topic` (in index order) and the listed broker ids, from Metadata v12.
fn partitions(s: &mut TcpStream, topic: &str) -> (Vec<Reported>, Vec<i32>) {
    let r = topic_metadata(s, topic, 12);
    let mut parts = r.topics[0].partitions.clone();
    parts.sort_by_key(|p| p.partition_index);
    let mut brokers: Vec<i32> = r.brokers.iter().map(|b| b.node_id).collect();
    brokers.sort();
    let reported = parts
        .into_iter()
        .map(|p| Reported {
            leader: p.leader_id,
            leader_epoch: p.leader_epoch,
            replicas: p.replica_nodes,
            isr: p.isr_nodes,
            offline: p.offline_replicas,
        })
        .collect();
    (reported, brokers)
}

/// Polls `topic`'s Metadata on `s` until `done` holds.
fn wait_until(
    s: &mut TcpStream,
    topic: &str,
    what: &str,
    done: impl Fn(&[Reported], &[i32]) -> bool,
) -> Vec<Reported> {
    let start = Instant::now();
    loop {
        let (parts, brokers) = partitions(s, topic);
        if done(&parts, &brokers) {
            return parts;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: partitions {parts:?}, brokers {brokers:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A topic's ElectLeaders results: (partition, error code) each.
type ElectedTopic = (String, Vec<(i32, i16)>);

/// ElectLeaders v2 of `election_type` for `topic`'s `partitions` (None: every
/// partition): the top-level error and (partition, error) by topic.
fn elect(
    s: &mut TcpStream,
    election_type: i8,
    topic: &str,
    partitions: Option<&[i32]>,
) -> (i16, Vec<ElectedTopic>) {
    let body = ElectLeadersRequest {
        election_type,
        topic_partitions: partitions.map(|p| {
            vec![ElectTopicPartitions {
                topic: topic.into(),
                partitions: p.to_vec(),
            }]
        }),
        timeout_ms: 5000,
    };
    send(s, request(ApiKey::ElectLeaders, 2, 11, &body));
    let (_, mut body) = read_response_header(s, true).expect("ElectLeaders response");
    let r = ElectLeadersResponse::decode(&mut body, 2).expect("decode");
    let results = r
        .replica_election_results
        .into_iter()
        .map(|t| {
            let each = t
                .partition_result
                .iter()
                .map(|p| (p.partition_id, p.error_code))
                .collect();
            (t.topic, each)
        })
        .collect();
    (r.error_code, results)
}

/// Replication factor 3 on three brokers: every replica in the ISR at creation; a killed
/// broker leaves every ISR once its session expires (the last member rule aside) and
/// its leaderships move; back, it stays out of the ISRs (its leader's AlterPartition
/// adds it once it caught up), so a preferred election for the partition it prefers is
/// PREFERRED_LEADER_NOT_AVAILABLE and the others' ELECTION_NOT_NEEDED, as Kafka answers.
#[test]
fn a_killed_broker_leaves_every_isr_and_elections_answer_as_kafka() {
    let voters = voter_list();
    let mut nodes = start_controllers("isr", &voters);
    let mut s = connect(&nodes[0]);
    let start = Instant::now();
    while metadata(&mut s).1 != [0, 1, 2] {
        assert!(start.elapsed() < DEADLINE, "brokers not all unfenced");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, message) = create_replicated(&mut s, "replicated-4", 1, 4);
    assert_eq!(code, ErrorCode::InvalidReplicationFactor.code());
    assert_eq!(
        message.as_deref(),
        Some(
            "Unable to replicate the partition 4 time(s): The target replication factor of 4 \
             cannot be reached because only 3 broker(s) are registered."
        )
    );
    assert_eq!(create_replicated(&mut s, "replicated", 3, 3).0, 0);
    let created = wait_until(&mut s, "replicated", "created", |parts, _| {
        parts.len() == 3 && parts.iter().all(|p| p.isr.len() == 3 && p.leader >= 0)
    });
    for p in &created {
        let mut replicas = p.replicas.clone();
        replicas.sort();
        assert_eq!(replicas, [0, 1, 2]);
        assert_eq!(p.leader, p.replicas[0], "the preferred replica leads");
        assert_eq!(p.leader_epoch, 0);
    }
    let preferring_2 = created
        .iter()
        .position(|p| p.replicas[0] == 2)
        .expect("broker 2 is some partition's preferred replica") as i32;

    nodes[2].kill();
    let after = wait_until(&mut s, "replicated", "broker 2 out", |parts, brokers| {
        brokers == [0, 1]
            && parts
                .iter()
                .all(|p| !p.isr.contains(&2) && p.leader >= 0 && p.leader != 2 && p.offline == [2])
    });
    let moved = &after[preferring_2 as usize];
    assert_eq!(moved.leader_epoch, 1, "a new leader bumps the leader epoch");
    for (i, p) in after.iter().enumerate() {
        assert_eq!(p.isr.len(), 2);
        if i as i32 != preferring_2 {
            assert_eq!(
                p.leader, created[i].leader,
                "a follower leaving moves no leader"
            );
            assert_eq!(p.leader_epoch, 0, "an ISR shrink keeps the leader epoch");
        }
    }

    nodes[2].kill_and_restart();
    wait_until(&mut s, "replicated", "broker 2 back", |_, brokers| {
        brokers == [0, 1, 2]
    });
    let (top, results) = elect(&mut s, 0, "replicated", Some(&[0, 1, 2, 7]));
    assert_eq!(top, 0);
    let expected: Vec<(i32, i16)> = (0..3)
        .map(|p| {
            let code = if p == preferring_2 {
                ErrorCode::PreferredLeaderNotAvailable
            } else {
                ErrorCode::ElectionNotNeeded
            };
            (p, code.code())
        })
        .chain([(7, ErrorCode::UnknownTopicOrPartition.code())])
        .collect();
    assert_eq!(results, [("replicated".to_string(), expected)]);
    // Every partition: only those with an election or an error are listed.
    let (_, results) = elect(&mut s, 0, "replicated", None);
    let listed: Vec<(i32, i16)> = results
        .into_iter()
        .filter(|(t, _)| t == "replicated")
        .flat_map(|(_, each)| each)
        .collect();
    assert_eq!(
        listed,
        [(preferring_2, ErrorCode::PreferredLeaderNotAvailable.code())]
    );
    // Unclean: every partition has a leader.
    let (_, results) = elect(&mut s, 1, "replicated", Some(&[preferring_2]));
    assert_eq!(
        results[0].1,
        [(preferring_2, ErrorCode::ElectionNotNeeded.code())]
    );
}
