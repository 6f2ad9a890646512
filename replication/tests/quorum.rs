//! In-process controller quorums on loopback: election, commit and apply order,
//! leader failover, restart from disk, snapshot catch-up, and the single voter.
//!
//! Every wait has a deadline; every controller listens on 127.0.0.1 (ephemeral ports
//! bound by the test first); data directories are temporary and removed at the end.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spate_net::metadata_frame::ApiMessageAndVersion;
use spate_net::metadata_records::{MetadataRecord, NoOpRecord};
use spate_replication::{Committed, Proposed, Quorum, QuorumConfig, QuorumError, Role};

mod common;
use common::{names, topic, Topics};

/// Generous bound for anything that should take well under a second.
const DEADLINE: Duration = Duration::from_secs(20);

struct Node {
    config: QuorumConfig,
    quorum: Option<Quorum<Topics>>,
    topics: Topics,
}

struct Cluster {
    nodes: Vec<Node>,
    // Declared last: dropped after every controller has stopped.
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` voters (ids 1..=n) on ephemeral loopback ports.
    fn start(n: usize, tune: impl Fn(&mut QuorumConfig)) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let listeners: Vec<std::net::TcpListener> = (0..n)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
            .collect();
        let voters: BTreeMap<u64, String> = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| (i as u64 + 1, l.local_addr().expect("addr").to_string()))
            .collect();
        let mut nodes = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let id = i as u64 + 1;
            let mut config =
                QuorumConfig::new(id, voters.clone(), dir.path().join(format!("c{id}")));
            config.heartbeat_interval = Duration::from_millis(50);
            config.election_timeout_min = Duration::from_millis(300);
            config.election_timeout_max = Duration::from_millis(600);
            tune(&mut config);
            let topics = Topics::default();
            let quorum = Quorum::start_with_listener(config.clone(), listener, topics.clone())
                .expect("start controller");
            nodes.push(Node {
                config,
                quorum: Some(quorum),
                topics,
            });
        }
        Cluster { nodes, _dir: dir }
    }

    fn q(&self, i: usize) -> &Quorum<Topics> {
        self.nodes[i].quorum.as_ref().expect("node is running")
    }

    fn stop(&mut self, i: usize) {
        if let Some(q) = self.nodes[i].quorum.take() {
            q.shutdown();
        }
    }

    /// Restarts node `i` from its directory with a fresh (empty) application state.
    fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].quorum.is_none(), "node {i} is running");
        let node = &mut self.nodes[i];
        node.topics = Topics::default();
        let addr = node.config.listen_addr().expect("addr").to_string();
        // The port was just closed by this process; binding it again may take a moment.
        let start = Instant::now();
        let listener = loop {
            match std::net::TcpListener::bind(&addr) {
                Ok(l) => break l,
                Err(e) if start.elapsed() < DEADLINE => {
                    eprintln!("rebinding {addr}: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("cannot rebind {addr}: {e}"),
            }
        };
        node.quorum = Some(
            Quorum::start_with_listener(node.config.clone(), listener, node.topics.clone())
                .expect("restart controller"),
        );
    }

    fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].quorum.is_some())
            .collect()
    }

    /// Waits until the running nodes agree on one running leader; returns its index.
    async fn leader(&self) -> usize {
        let start = Instant::now();
        loop {
            let running = self.running();
            let seen: Vec<Option<u64>> = running.iter().map(|&i| self.q(i).leader().0).collect();
            if let Some(Some(id)) = seen.first() {
                let i = (*id - 1) as usize;
                if seen.iter().all(|s| *s == Some(*id)) && running.contains(&i) {
                    let status = self.q(i).status().await.expect("status");
                    if status.role == Role::Leader {
                        return i;
                    }
                }
            }
            assert!(start.elapsed() < DEADLINE, "no agreed leader: {seen:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Proposes one topic record per name on node `i`, one entry each.
    async fn propose(&self, i: usize, names: &[String]) -> Vec<Proposed> {
        let mut out = Vec::new();
        for n in names {
            let p = within("propose", self.q(i).propose(&[topic(n)]))
                .await
                .unwrap_or_else(|e| panic!("propose {n} on node {i}: {e}"));
            out.push(p);
        }
        out
    }

    /// Waits until node `i` has applied exactly `expected`.
    async fn wait_applied(&self, i: usize, expected: &[String]) {
        let start = Instant::now();
        loop {
            let got = self.nodes[i].topics.names();
            if got == expected {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "node {i} applied {got:?}, expected {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i);
        }
    }
}

/// Half an entry: a length of 200 and a checksum, then only two bytes.
const TORN: &[u8] = &[200, 0, 0, 0, 1, 2, 3, 4, 5, 6];

/// Appends [`TORN`] to the newest log segment under a controller directory; returns
/// the segment and where the torn entry starts.
fn tear_log_tail(dir: &std::path::Path) -> (std::path::PathBuf, usize) {
    use std::io::Write;
    let log = dir.join("log");
    let newest = std::fs::read_dir(&log)
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .max()
        .expect("a segment");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .expect("open segment");
    let at = f.metadata().expect("stat").len() as usize;
    f.write_all(TORN).expect("tear");
    (newest, at)
}

fn names_range(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no result within {DEADLINE:?}"))
}

/// Runs a test body on a runtime of the test's own (not a controller's), as the node's
/// shards will call the quorum from their own runtime; returns the body's value.
fn run<T>(body: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
        .block_on(body)
}

/// Indexes follow each other: one leader appended them in order.
fn assert_consecutive(p: &[Proposed]) {
    for w in p.windows(2) {
        assert_eq!(w[1].index, w[0].index + 1, "{p:?}");
        assert_eq!(w[1].term, w[0].term, "{p:?}");
    }
}

/// Receives `Batch` events until `n` arrived; returns their (index, topic names).
fn batches(rx: &flume::Receiver<Committed>, n: usize) -> Vec<(u64, Vec<String>)> {
    let mut out = Vec::new();
    while out.len() < n {
        match rx.recv_timeout(DEADLINE) {
            // Entries without records (blank, membership) only move the index.
            Ok(Committed::Batch { records, .. }) if records.is_empty() => {}
            Ok(Committed::Batch { index, records, .. }) => out.push((index, names(&records))),
            Ok(other) => panic!("unexpected event {other:?}"),
            Err(e) => panic!("subscription: {e} after {} batches", out.len()),
        }
    }
    out
}

#[test]
fn three_voters_elect_commit_and_apply_in_the_same_order() {
    let cluster = Cluster::start(3, |_| {});
    run(async {
        let subs: Vec<_> = (0..3).map(|i| cluster.q(i).subscribe()).collect();
        for rx in &subs {
            match rx.recv_timeout(DEADLINE).expect("first event") {
                Committed::Snapshot { records, .. } => assert!(records.is_empty()),
                other => panic!("first event {other:?}"),
            }
        }
        let leader = cluster.leader().await;
        let wanted = names_range("t", 20);
        let proposed = cluster.propose(leader, &wanted).await;
        assert_consecutive(&proposed);

        // A batch of several records is one entry, applied as one batch.
        let multi = [topic("m0"), topic("m1"), topic("m2")];
        let m = within("propose", cluster.q(leader).propose(&multi))
            .await
            .expect("propose batch");
        assert_eq!(m.index, proposed[19].index + 1);

        let mut all = wanted.clone();
        all.extend(["m0", "m1", "m2"].map(String::from));
        let mut expected_events: Vec<(u64, Vec<String>)> = proposed
            .iter()
            .zip(&wanted)
            .map(|(p, n)| (p.index, vec![n.clone()]))
            .collect();
        expected_events.push((m.index, vec!["m0".into(), "m1".into(), "m2".into()]));
        for (i, rx) in subs.iter().enumerate() {
            cluster.wait_applied(i, &all).await;
            assert_eq!(batches(rx, 21), expected_events, "node {i}");
        }

        // Followers refuse proposals and name the leader.
        let follower = (leader + 1) % 3;
        match cluster.q(follower).propose(&[topic("x")]).await {
            Err(QuorumError::NotLeader {
                leader: Some((id, addr)),
            }) => {
                assert_eq!(id, leader as u64 + 1);
                assert_eq!(
                    addr,
                    cluster.nodes[leader].config.listen_addr().expect("addr")
                );
            }
            other => panic!("proposal on a follower: {other:?}"),
        }

        // Every node reports the same commit index and term.
        let status = cluster.q(leader).status().await.expect("status");
        assert_eq!(status.commit_index, Some(m.index));
        assert_eq!(status.term, m.term);
        assert_eq!(status.voters.len(), 3);
        for i in 0..3 {
            let s = cluster.q(i).status().await.expect("status");
            assert_eq!(s.last_applied, Some(m.index), "node {i}");
            assert_eq!(s.leader, Some(leader as u64 + 1), "node {i}");
        }
    });
}

#[test]
fn leader_failover_loses_no_committed_record() {
    let mut cluster = Cluster::start(3, |_| {});
    run(async {
        let first = cluster.leader().await;
        let before = names_range("a", 10);
        let p1 = cluster.propose(first, &before).await;

        let stopped_at = Instant::now();
        cluster.stop(first);
        let second = cluster.leader().await;
        assert_ne!(second, first);
        let took = stopped_at.elapsed();
        assert!(took < Duration::from_secs(5), "new leader after {took:?}");
        // Once the new leader's state is up to date, it holds everything committed
        // under the old one, in order.
        let applied = within("barrier", cluster.q(second).read_barrier())
            .await
            .expect("read barrier");
        assert!(applied > Some(p1[9].index), "{applied:?}");
        assert_eq!(cluster.nodes[second].topics.names(), before);
        let follower = cluster
            .running()
            .into_iter()
            .find(|&i| i != second)
            .expect("follower");
        assert!(matches!(
            cluster.q(follower).read_barrier().await,
            Err(QuorumError::NotLeader { leader: Some((id, _)) }) if id == second as u64 + 1
        ));

        let after = names_range("b", 10);
        let p2 = cluster.propose(second, &after).await;
        assert!(p2[0].term > p1[0].term, "{p1:?} {p2:?}");
        assert!(p2[0].index > p1[9].index);
        assert_consecutive(&p2);

        let all: Vec<String> = before.iter().chain(&after).cloned().collect();
        for i in cluster.running() {
            cluster.wait_applied(i, &all).await;
        }

        // The old leader comes back from its directory and catches up, even with a
        // torn write at the end of its log (as a crash in the middle of an append
        // leaves): the torn entry is cut at start-up.
        let (segment, torn_at) = tear_log_tail(&cluster.nodes[first].config.dir);
        cluster.restart(first);
        cluster.wait_applied(first, &all).await;
        let bytes = std::fs::read(&segment).expect("segment");
        assert_ne!(
            bytes.get(torn_at..torn_at + TORN.len()),
            Some(TORN),
            "torn entry kept"
        );
        let s = cluster.q(first).status().await.expect("status");
        assert_eq!(s.last_applied, Some(p2[9].index));
    });
}

#[test]
fn restart_recovers_from_snapshot_and_log() {
    let mut cluster = Cluster::start(3, |c| {
        c.snapshot_every = 10;
        c.entries_kept_after_snapshot = 5;
        // Small segments, so purges remove files.
        c.segment_bytes = 1024;
    });
    run(async {
        let leader = cluster.leader().await;
        let wanted = names_range("t", 25);
        let proposed = cluster.propose(leader, &wanted).await;
        for i in 0..3 {
            cluster.wait_applied(i, &wanted).await;
        }
        // Every node snapshots on its own; take one explicitly too.
        within("snapshot", cluster.q(leader).snapshot())
            .await
            .expect("snapshot");

        for i in 0..3 {
            cluster.stop(i);
        }
        // One node alone cannot elect a leader, so it applies only what its own
        // snapshot holds: exactly the records up to the snapshot's index.
        let lone = (leader + 1) % 3;
        cluster.restart(lone);
        let status = cluster.q(lone).status().await.expect("status");
        let snap = status.snapshot_index.expect("a snapshot on disk");
        assert!(snap >= proposed[9].index, "snapshot at {snap}");
        let covered: Vec<String> = proposed
            .iter()
            .zip(&wanted)
            .filter(|(p, _)| p.index <= snap)
            .map(|(_, n)| n.clone())
            .collect();
        assert_eq!(cluster.nodes[lone].topics.names(), covered);
        assert_eq!(status.last_applied, Some(snap));
        assert!(
            status.last_log_index >= Some(proposed[24].index),
            "{status:?}"
        );

        // With the others back, the rest of the log is applied, and nothing is lost.
        for i in 0..3 {
            if i != lone {
                cluster.restart(i);
            }
        }
        let leader = cluster.leader().await;
        for i in 0..3 {
            cluster.wait_applied(i, &wanted).await;
        }
        let more = cluster.propose(leader, &["after".to_string()]).await;
        assert!(more[0].index > proposed[24].index);
        let mut all = wanted.clone();
        all.push("after".into());
        for i in 0..3 {
            cluster.wait_applied(i, &all).await;
        }
    });
}

#[test]
fn a_follower_far_behind_receives_a_snapshot() {
    let mut cluster = Cluster::start(3, |c| {
        c.snapshot_every = 10;
        c.entries_kept_after_snapshot = 0;
        c.segment_bytes = 1024;
    });
    run(async {
        let leader = cluster.leader().await;
        let early = names_range("e", 3);
        cluster.propose(leader, &early).await;
        let lagging = (leader + 1) % 3;
        for i in 0..3 {
            cluster.wait_applied(i, &early).await;
        }
        let behind = cluster.q(lagging).status().await.expect("status");
        let lag_last = behind.last_log_index.expect("a log");
        assert_eq!(behind.snapshot_index, None);
        cluster.stop(lagging);

        let late = names_range("l", 40);
        let proposed = cluster.propose(leader, &late).await;
        // Wait until the leader's log no longer holds the entries right after the
        // follower's last one: then only a snapshot can bring the follower up to date.
        within("snapshot", cluster.q(leader).snapshot())
            .await
            .expect("snapshot");
        let purged_past = proposed[30].index;
        let start = Instant::now();
        loop {
            let s = cluster.q(leader).status().await.expect("status");
            if s.snapshot_index >= Some(purged_past) && s.purged_index > Some(lag_last) {
                break;
            }
            assert!(start.elapsed() < DEADLINE, "leader never purged: {s:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        cluster.restart(lagging);
        let rx = cluster.q(lagging).subscribe();
        let all: Vec<String> = early.iter().chain(&late).cloned().collect();
        cluster.wait_applied(lagging, &all).await;
        // The follower's state was replaced by the leader's snapshot (it had no
        // snapshot of its own: it stopped before the tenth entry): a Snapshot event far
        // ahead of where it stopped, either the subscription's first or a later one.
        let mut installed = None;
        while let Ok(ev) = rx.try_recv() {
            if let Committed::Snapshot {
                index: Some(i),
                records,
            } = ev
            {
                if i >= purged_past {
                    installed = Some((i, names(&records)));
                }
            }
        }
        let (index, records) = installed.expect("a snapshot from the leader");
        let covered: Vec<String> = early
            .iter()
            .chain(
                late.iter()
                    .zip(&proposed)
                    .filter(|(_, p)| p.index <= index)
                    .map(|(n, _)| n),
            )
            .cloned()
            .collect();
        assert_eq!(records, covered);
        let s = cluster.q(lagging).status().await.expect("status");
        assert!(s.snapshot_index >= Some(purged_past), "{s:?}");
    });
}

#[test]
fn a_single_voter_quorum_works_and_restarts() {
    let mut cluster = Cluster::start(1, |_| {});
    run(async {
        assert_eq!(cluster.leader().await, 0);
        let first = names_range("s", 5);
        let p = cluster.propose(0, &first).await;
        assert_consecutive(&p);
        cluster.wait_applied(0, &first).await;

        assert!(matches!(
            cluster.q(0).propose(&[]).await,
            Err(QuorumError::Empty)
        ));
        let big: Vec<ApiMessageAndVersion> = (0..200_000)
            .map(|_| ApiMessageAndVersion::latest(MetadataRecord::NoOp(NoOpRecord {})))
            .collect();
        assert!(matches!(
            cluster.q(0).propose(&big).await,
            Err(QuorumError::TooLarge { .. })
        ));

        cluster.stop(0);
        cluster.restart(0);
        assert_eq!(cluster.leader().await, 0);
        // Without a snapshot the log is replayed once the node leads again.
        cluster.wait_applied(0, &first).await;
        let more = cluster.propose(0, &["after".to_string()]).await;
        assert!(more[0].index > p[4].index);
        // openraft lets a lone voter whose vote was committed lead again in the same
        // term (no one else could have led since); the index still moves on.
        assert!(more[0].term >= p[4].term);
        let mut all = first.clone();
        all.push("after".into());
        cluster.wait_applied(0, &all).await;
    });
}

#[test]
fn five_voters_commit_with_two_down() {
    let mut cluster = Cluster::start(5, |_| {});
    run(async {
        let leader = cluster.leader().await;
        let first = names_range("f", 3);
        cluster.propose(leader, &first).await;
        // Two followers stop: three of five still form a quorum.
        let followers: Vec<usize> = (0..5).filter(|&i| i != leader).take(2).collect();
        for &i in &followers {
            cluster.stop(i);
        }
        let second = names_range("g", 3);
        let p = cluster.propose(leader, &second).await;
        assert_consecutive(&p);
        let all: Vec<String> = first.iter().chain(&second).cloned().collect();
        for i in cluster.running() {
            cluster.wait_applied(i, &all).await;
        }
        for &i in &followers {
            cluster.restart(i);
        }
        for i in 0..5 {
            cluster.wait_applied(i, &all).await;
        }
    });
}

#[test]
fn concurrent_proposals_from_many_threads_all_commit_once() {
    let cluster = Cluster::start(3, |c| c.max_inflight_proposals = 4);
    let leader = {
        let mut leader = None;
        run(async { leader = Some(cluster.leader().await) });
        leader.expect("leader")
    };
    // Four threads, each with its own runtime (as shards have), each with 25
    // proposals in flight at once: far more than the 4 the controller admits.
    let results: Vec<(u64, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let q = cluster.q(leader);
                scope.spawn(move || {
                    let mut out = Vec::new();
                    run(async {
                        let names = names_range(&format!("c{t}-"), 25);
                        let records: Vec<[ApiMessageAndVersion; 1]> =
                            names.iter().map(|n| [topic(n)]).collect();
                        let proposals = records.iter().map(|r| q.propose(r));
                        let done =
                            within("proposals", futures_util::future::join_all(proposals)).await;
                        for (n, p) in names.iter().zip(done) {
                            out.push((p.expect("proposal").index, n.clone()));
                        }
                    });
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    });
    let mut by_index = results.clone();
    by_index.sort();
    by_index.dedup_by_key(|(i, _)| *i);
    assert_eq!(by_index.len(), 100, "indexes must be distinct");
    let in_log_order: Vec<String> = by_index.into_iter().map(|(_, n)| n).collect();
    run(async {
        for i in 0..3 {
            cluster.wait_applied(i, &in_log_order).await;
        }
    });
}

/// Collects the topic names an observer's events describe, applying snapshots and
/// batches as a broker would, until they are `expected`; checks indexes only grow.
fn observe_until(
    rx: &flume::Receiver<Committed>,
    expected: &[String],
    state: &mut Vec<String>,
    last: &mut Option<u64>,
) {
    let start = Instant::now();
    while state != expected {
        let left = DEADLINE.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok(Committed::Snapshot { index, records }) => {
                assert!(
                    last.is_none() || index > *last,
                    "snapshot {index:?} after {last:?}"
                );
                *last = index;
                *state = names(&records);
            }
            Ok(Committed::Batch { index, records, .. }) => {
                assert!(Some(index) > *last, "batch {index} after {last:?}");
                *last = Some(index);
                state.extend(names(&records));
            }
            Err(e) => panic!("observer: {e}; have {state:?}, want {expected:?}"),
        }
    }
}

#[test]
fn an_observer_follows_the_quorum_across_a_voter_stopping() {
    let mut cluster = Cluster::start(3, |_| {});
    let voters = cluster.nodes[0].config.voters.clone();
    let rx = spate_replication::observe(spate_replication::ObserverConfig::new(voters))
        .expect("observer");
    let (mut state, mut last) = (Vec::new(), None);
    run(async {
        let leader = cluster.leader().await;
        let first = names_range("a", 5);
        cluster.propose(leader, &first).await;
        observe_until(&rx, &first, &mut state, &mut last);
    });
    // The observer connects to voters in id order: the first one serves it. Stopping it
    // makes the observer move on to another voter and continue where it was.
    cluster.stop(0);
    run(async {
        let leader = cluster.leader().await;
        let mut all = names_range("a", 5);
        let more = names_range("b", 5);
        cluster.propose(leader, &more).await;
        all.extend(more);
        observe_until(&rx, &all, &mut state, &mut last);
    });
}

#[test]
fn application_calls_reach_the_active_controller_across_a_failover() {
    let mut cluster = Cluster::start(3, |_| {});
    for (i, node) in cluster.nodes.iter().enumerate() {
        let id = i as u64 + 1;
        let handler: spate_replication::AppHandler = Arc::new(move |body: bytes::Bytes| {
            Box::pin(async move {
                let mut answer = format!("{id}:").into_bytes();
                answer.extend_from_slice(&body);
                spate_replication::AppReply::Ok(answer.into())
            })
        });
        assert!(node
            .quorum
            .as_ref()
            .expect("running")
            .serve_app(handler.clone()));
        // Installed once.
        assert!(!node.quorum.as_ref().expect("running").serve_app(handler));
    }
    let voters = cluster.nodes[0].config.voters.clone();
    let client =
        spate_replication::AppClient::start(voters, 1 << 20, DEADLINE, None).expect("client");
    let call = |client: &spate_replication::AppClient| {
        let client = client.clone();
        async move {
            let answer = within("app call", client.call(bytes::Bytes::from_static(b"hi")))
                .await
                .expect("answered");
            String::from_utf8(answer.to_vec()).expect("utf-8")
        }
    };
    let leader = run(async {
        let leader = cluster.leader().await;
        // Only the leader's handler answers, whichever voter the client tried first.
        assert_eq!(call(&client).await, format!("{}:hi", leader + 1));
        leader
    });
    cluster.stop(leader);
    run(async {
        let next = cluster.leader().await;
        assert_ne!(next, leader);
        assert_eq!(call(&client).await, format!("{}:hi", next + 1));
    });
}
