"""A 3-node cluster on loopback, started with scripts/local-cluster.sh (every node a
broker and a controller-quorum voter): partitions spread over the brokers, clients
follow the leaders from one bootstrap address, changes made through any node (forwarded
to the active controller), a broker killed with kill -9 leaves its partitions
leaderless until it comes back with every acknowledged record (one replica each), and
leaves every ISR of replicated topics, whose leaders move and whose elections answer
as Kafka's, and the group and transaction coordinators move with the leadership of
their internal partitions (replicated three times)."""
import json
import os
import struct
import subprocess
import time
import uuid

import pytest
from confluent_kafka import (Consumer, ElectionType, KafkaError, KafkaException, Producer,
                             TopicPartition)
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import EXTERNAL, ROOT, RUNS, SPATE_BIN, free_port
from grouputil import RawClient, _read_cstr, _read_uvarint, _skip_tags, _str, cstr, uvarint
from test_idempotent_raw import Producer as RawProducer, record_batch
from test_kafka_cli import kafka_libs, tool  # noqa: F401 (fixture)
from test_share_groups import ShareMember, earliest_group

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(bool(EXTERNAL), reason="starts its own cluster")]

SCRIPT = ROOT / "scripts" / "local-cluster.sh"
NOT_LEADER_OR_FOLLOWER, NOT_COORDINATOR = 6, 16
# Short broker sessions, so a killed broker is fenced within seconds; small internal
# topics (replicated three times, the default on a cluster).
INTERNAL_PARTITIONS = 6
SESSIONS = ("broker_heartbeat_interval_ms = 300\nbroker_session_timeout_ms = 2000\n"
            f"offsets_topic_num_partitions = {INTERNAL_PARTITIONS}\n"
            f"transaction_state_num_partitions = {INTERNAL_PARTITIONS}\n"
            f"share_coordinator_state_topic_num_partitions = {INTERNAL_PARTITIONS}\n"
            # KIP-392: consumers naming their rack may be sent to a replica in it.
            'replica_selector_class = "org.apache.kafka.common.replica.RackAwareReplicaSelector"\n')
RACKS = ("rack-0", "rack-1", "rack-2")


class Cluster:
    def __init__(self):
        self.dir = RUNS / f"cluster-{uuid.uuid4().hex[:8]}"
        self.dir.mkdir(parents=True)
        config = self.dir / "sessions.toml"
        config.write_text(SESSIONS)
        self.ports = [free_port() for _ in range(3)]
        self.env = dict(os.environ,
                        SPATE_BIN=str(SPATE_BIN),
                        SPATE_CLUSTER_DIR=str(self.dir),
                        SPATE_CLUSTER_PORTS=",".join(map(str, self.ports)),
                        SPATE_CLUSTER_CONTROLLER_PORTS=",".join(str(free_port()) for _ in range(3)),
                        SPATE_CLUSTER_CONFIG=str(config),
                        SPATE_CLUSTER_RACKS=",".join(RACKS))

    def run(self, *args):
        r = subprocess.run([str(SCRIPT), *map(str, args)], env=self.env, capture_output=True,
                           text=True, timeout=150)
        assert r.returncode == 0, f"local-cluster.sh {args}: {r.stdout}\n{r.stderr}\n{self.logs()}"
        return r.stdout

    def logs(self):
        out = []
        for n in range(3):
            path = self.dir / f"node-{n}.log"
            if path.exists():
                out.append(f"--- node {n}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-25:]))
        return "\n".join(out)

    def bootstrap(self, node):
        return f"127.0.0.1:{self.ports[node]}"


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    c.run("start")
    yield c
    c.run("stop")


def partitions(admin, topic):
    """{partition: (leader, replicas)} as Metadata reports them."""
    md = admin.list_topics(topic, timeout=10)
    return {p.id: (p.leader, list(p.replicas)) for p in md.topics[topic].partitions.values()}


def wait_for(what, check, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def poll_records(consumer, count, then=0.0, timeout=60):
    """Polls `consumer` until it has `count` records (or `timeout` s), then `then` s
    more (to see that nothing else comes); [(partition, offset, key, value)]."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is not None and m.error() is None:
            got.append((m.partition(), m.offset(), m.key(), m.value()))
    end = time.monotonic() + then
    while time.monotonic() < end:
        m = consumer.poll(0.2)
        if m is not None and m.error() is None:
            got.append((m.partition(), m.offset(), m.key(), m.value()))
    return got


def consume_all(bootstrap, topic, count, group):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    got = poll_records(c, count)
    c.commit(asynchronous=False)
    committed = c.committed([TopicPartition(topic, p) for p in range(6)], timeout=10)
    c.close()
    return got, {tp.partition: tp.offset for tp in committed}


def produce_keyed(bootstrap, topic, start, count):
    """`count` records round robin over the 6 partitions, idempotent and acks=all."""
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    failed = []
    for i in range(start, start + count):
        p.produce(topic, key=b"k%d" % i, value=b"v%d" % i, partition=i % 6,
                  on_delivery=lambda err, _m: err and failed.append(err))
    assert p.flush(30) == 0
    assert failed == []


def test_partitions_spread_and_clients_follow_the_leaders(cluster, kafka_libs):
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap(2)})
    # Through node 2; unless it is the active controller, it forwards the change.
    for f in admin.create_topics([NewTopic("spread", 6, 1)]).values():
        f.result(timeout=30)
    md = admin.list_topics(timeout=10)
    assert sorted(md.brokers) == [0, 1, 2]
    assert sorted((b.host, b.port) for b in md.brokers.values()) == sorted(
        ("127.0.0.1", p) for p in cluster.ports)
    placed = partitions(admin, "spread")
    # Round robin over three brokers: each leads two partitions, one replica each.
    leaders = [placed[p][0] for p in range(6)]
    assert sorted(leaders) == [0, 0, 1, 1, 2, 2]
    assert all(placed[p][1] == [placed[p][0]] for p in range(6))
    # Every node reports the same, Kafka's own tool included.
    for node in range(3):
        other = AdminClient({"bootstrap.servers": cluster.bootstrap(node)})
        assert partitions(other, "spread") == placed
    described = tool(kafka_libs, "TopicCommand", "--bootstrap-server", cluster.bootstrap(1),
                     "--describe", "--topic", "spread")
    for p in range(6):
        assert f"Partition: {p}\tLeader: {leaders[p]}\t" in described, described

    # One bootstrap address: the clients find each partition's leader.
    produce_keyed(cluster.bootstrap(0), "spread", 0, 600)
    got, committed = consume_all(cluster.bootstrap(1), "spread", 600, "spread-group")
    assert sorted(got) == sorted((i % 6, i // 6, b"k%d" % i, b"v%d" % i) for i in range(600))
    assert committed == {p: 100 for p in range(6)}
    # The group's first FindCoordinator created __consumer_offsets over all three brokers,
    # with three replicas each (offsets.topic.replication.factor).
    offsets = partitions(admin, "__consumer_offsets")
    assert sorted({leader for leader, _ in offsets.values()}) == [0, 1, 2]
    assert all(sorted(replicas) == [0, 1, 2] for _, replicas in offsets.values())


def test_a_killed_broker_leaves_its_partitions_leaderless_until_it_returns(cluster):
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap(0)})
    for f in admin.create_topics([NewTopic("failover", 6, 1)]).values():
        f.result(timeout=30)
    placed = partitions(admin, "failover")
    produce_keyed(cluster.bootstrap(0), "failover", 0, 60)
    on_2 = sorted(p for p, (leader, _) in placed.items() if leader == 2)
    assert len(on_2) == 2

    cluster.run("kill", 2)
    # Fenced after its session (2 s): its partitions have no leader, the others keep theirs.
    now = wait_for("node 2's partitions to lose their leader",
                   lambda: (lambda m: m if all(m[p][0] == -1 for p in on_2) else None)(
                       partitions(admin, "failover")))
    assert {p: now[p][0] for p in placed if p not in on_2} == {
        p: placed[p][0] for p in placed if p not in on_2}
    assert sorted(admin.list_topics(timeout=10).brokers) == [0, 1]
    # The partitions led by live brokers take writes meanwhile.
    p = Producer({"bootstrap.servers": cluster.bootstrap(1), "acks": "all"})
    alive = [q for q in range(6) if q not in on_2]
    for q in alive:
        p.produce("failover", key=b"during", value=b"outage", partition=q)
    assert p.flush(30) == 0

    cluster.run("start", 2)
    wait_for("node 2 to lead its partitions again",
             lambda: partitions(admin, "failover") == placed)
    got, committed = consume_all(cluster.bootstrap(2), "failover", 60 + len(alive), "failover-group")
    expected = [(i % 6, i // 6, b"k%d" % i, b"v%d" % i) for i in range(60)]
    expected += [(q, 10, b"during", b"outage") for q in alive]
    assert sorted(got) == sorted(expected)
    assert committed == {q: 10 + (q in alive) for q in range(6)}

    # A clean stop is a controlled shutdown: the broker is fenced and its partitions lose
    # their leader before it exits, not a session timeout later.
    on_1 = sorted(p for p, (leader, _) in placed.items() if leader == 1)
    cluster.run("stop", 1)
    # (The other brokers apply the change within moments; the log line tells that the
    # controller fenced it on request, not after its session.)
    assert "controlled shutdown: fenced, leaderships moved" in (
        cluster.dir / "node-1.log").read_text()
    wait_for("node 1's partitions to lose their leader",
             lambda: all(partitions(admin, "failover")[p][0] == -1 for p in on_1), timeout=5)
    cluster.run("start", 1)
    wait_for("node 1 to lead its partitions again",
             lambda: partitions(admin, "failover") == placed)


def replicated(admin, topic):
    """{partition: (leader, replicas, isr)} as Metadata reports them."""
    md = admin.list_topics(topic, timeout=10)
    return {p.id: (p.leader, list(p.replicas), sorted(p.isrs))
            for p in md.topics[topic].partitions.values()}


def election_errors(admin, election_type, topic, parts):
    """{partition: error code (0: elected)} of an ElectLeaders through the AdminClient."""
    tps = None if parts is None else [TopicPartition(topic, p) for p in parts]
    result = admin.elect_leaders(election_type, tps).result(timeout=30)
    return {tp.partition: (0 if err is None else err.code())
            for tp, err in result.items() if tp.topic == topic}


def test_replicated_topics_shrink_their_isr_and_elections_answer_as_kafka(cluster, kafka_libs):
    """Replication factor 3: replicas on all three brokers, all in sync; a killed broker
    leaves every ISR and its leaderships move to in-sync replicas. While it is down, a
    preferred election answers PREFERRED_LEADER_NOT_AVAILABLE for the partition it
    prefers and ELECTION_NOT_NEEDED for the others (Kafka's kafka-leader-election.sh
    reports the same); back, it catches up and its leaders add it to the ISR again, and
    a preferred election moves that partition's leadership back to it."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap(1)})
    for f in admin.create_topics([NewTopic("replicated", 3, 3)]).values():
        f.result(timeout=30)
    placed = wait_for("every replica in sync", lambda: (lambda m: m if all(
        len(isr) == 3 for _, _, isr in m.values()) else None)(replicated(admin, "replicated")))
    assert all(sorted(replicas) == [0, 1, 2] and leader == replicas[0]
               for leader, replicas, _ in placed.values())
    prefers_2 = [p for p, (_, replicas, _) in placed.items() if replicas[0] == 2]
    assert len(prefers_2) == 1
    with pytest.raises(KafkaException) as too_many:
        for f in admin.create_topics([NewTopic("replicated-4", 1, 4)]).values():
            f.result(timeout=30)
    assert too_many.value.args[0].code() == KafkaError.INVALID_REPLICATION_FACTOR

    cluster.run("kill", 2)
    now = wait_for("node 2 to leave every ISR", lambda: (lambda m: m if all(
        isr == sorted(set(replicas) - {2}) and leader not in (-1, 2)
        for leader, replicas, isr in m.values()) else None)(replicated(admin, "replicated")))
    assert {p: now[p][0] for p in placed if p not in prefers_2} == {
        p: placed[p][0] for p in placed if p not in prefers_2}

    errors = election_errors(admin, ElectionType.PREFERRED, "replicated", [0, 1, 2])
    assert errors == {p: (KafkaError.PREFERRED_LEADER_NOT_AVAILABLE if p in prefers_2
                          else KafkaError.ELECTION_NOT_NEEDED) for p in range(3)}
    errors = election_errors(admin, ElectionType.UNCLEAN, "replicated", prefers_2)
    assert errors == {prefers_2[0]: KafkaError.ELECTION_NOT_NEEDED}

    def election_tool(partition):
        return tool(kafka_libs, "LeaderElectionCommand", "--bootstrap-server", cluster.bootstrap(0),
                    "--election-type", "PREFERRED", "--topic", "replicated",
                    "--partition", partition, check=False)
    other = next(p for p in range(3) if p not in prefers_2)
    assert f"Valid replica already elected for partitions replicated-{other}" in election_tool(other)
    assert (f"Error completing leader election (PREFERRED) for partition: replicated-{prefers_2[0]}: "
            "org.apache.kafka.common.errors.PreferredLeaderNotAvailableException: "
            "The preferred leader was not available.") in election_tool(prefers_2[0])

    cluster.run("start", 2)
    wait_for("node 2 back in every ISR", lambda: all(
        len(isr) == 3 for _, _, isr in replicated(admin, "replicated").values()), timeout=60)
    errors = election_errors(admin, ElectionType.PREFERRED, "replicated", [0, 1, 2])
    assert errors == {p: (KafkaError.NO_ERROR if p in prefers_2
                          else KafkaError.ELECTION_NOT_NEEDED) for p in range(3)}
    wait_for("node 2 leading what it prefers again", lambda: all(
        leader == 2 for p, (leader, _, _) in replicated(admin, "replicated").items()
        if p in prefers_2))


def test_brokers_that_do_not_lead_or_coordinate_say_who_does(cluster):
    """Raw requests to the wrong broker get Kafka's answers: NOT_LEADER_OR_FOLLOWER for a
    partition led elsewhere, NOT_COORDINATOR for a group coordinated elsewhere, and
    FindCoordinator from any broker names the same coordinator."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap(0)})
    placed = partitions(admin, "spread")
    for p, (leader, _) in placed.items():
        other = (leader + 1) % 3
        raw = RawClient.to(cluster.bootstrap(other))
        try:
            err, _ = raw.produce("spread", p, b"")
        finally:
            raw.close()
        assert err == NOT_LEADER_OR_FOLLOWER, (p, leader, other, err)
    group = "who-coordinates"
    def ask(n):
        raw = RawClient.to(cluster.bootstrap(n))
        try:
            return raw.find_coordinator(group)
        finally:
            raw.close()

    # (The first FindCoordinator may find __consumer_offsets still being created.)
    wait_for("a coordinator", lambda: ask(0)["error"] == 0)
    answers = [ask(n) for n in range(3)]
    assert all(a["error"] == 0 for a in answers), answers
    assert len({(a["node"], a["host"], a["port"]) for a in answers}) == 1, answers
    coordinator_node = answers[0]["node"]
    assert answers[0]["port"] == cluster.ports[coordinator_node]
    elsewhere = RawClient.to(cluster.bootstrap((coordinator_node + 1) % 3))
    try:
        assert elsewhere.heartbeat(group, 1, "m") == NOT_COORDINATOR
    finally:
        elsewhere.close()

    # The same for a transactional id: InitProducerId (v1) to another broker.
    txn = "who-coordinates-txn"

    def ask_txn(n):
        raw = RawClient.to(cluster.bootstrap(n))
        try:
            r = raw.call(10, 1, _str(txn) + struct.pack(">b", 1))
            r.i32()
            return {"error": r.i16(), "message": r.str(), "node": r.i32()}
        finally:
            raw.close()

    wait_for("a transaction coordinator", lambda: ask_txn(0)["error"] == 0)
    txn_node = ask_txn(0)["node"]
    assert [ask_txn(n)["node"] for n in range(3)] == [txn_node] * 3
    raw = RawClient.to(cluster.bootstrap((txn_node + 1) % 3))
    try:
        r = raw.call(22, 1, _str(txn) + struct.pack(">i", 60000))
        r.i32()
        assert r.i16() == NOT_COORDINATOR
    finally:
        raw.close()


def test_transactions_span_brokers(cluster):
    """A transaction over partitions led by all three brokers, its coordinator on one of
    them: the coordinator's markers reach the other leaders (WriteTxnMarkers) and the
    leaders check with the coordinator (AddPartitionsToTxn): read_committed sees the
    committed records and not the aborted ones, and the group's offsets committed in
    the transaction are there."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap(0)})
    for f in admin.create_topics([NewTopic("txn-spread", 6, 1)]).values():
        f.result(timeout=30)
    assert sorted(leader for leader, _ in partitions(admin, "txn-spread").values()) == [
        0, 0, 1, 1, 2, 2]
    p = Producer({"bootstrap.servers": cluster.bootstrap(1), "transactional.id": "span",
                  "enable.idempotence": True})
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(60):
        p.produce("txn-spread", key=b"c%d" % i, value=b"committed", partition=i % 6)
    p.commit_transaction(30)
    p.begin_transaction()
    for i in range(60):
        p.produce("txn-spread", key=b"a%d" % i, value=b"aborted", partition=i % 6)
    p.abort_transaction(30)
    # The group's offsets, committed inside a transaction.
    group = "span-group"
    p.begin_transaction()
    p.produce("txn-spread", key=b"last", value=b"committed", partition=0)
    c = Consumer({"bootstrap.servers": cluster.bootstrap(2), "group.id": group})
    p.send_offsets_to_transaction([TopicPartition("txn-spread", q, 5) for q in range(6)],
                                  c.consumer_group_metadata(), 30)
    p.commit_transaction(30)
    c.close()

    reader = Consumer({"bootstrap.servers": cluster.bootstrap(0), "group.id": "span-reader",
                       "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
    reader.subscribe(["txn-spread"])
    # Nothing aborted shows up after the last committed record either.
    got = [(k, v) for _, _, k, v in poll_records(reader, 61, then=2)]
    reader.close()
    expected = [(b"c%d" % i, b"committed") for i in range(60)] + [(b"last", b"committed")]
    assert sorted(got) == sorted(expected)
    check = Consumer({"bootstrap.servers": cluster.bootstrap(0), "group.id": group})
    committed = check.committed([TopicPartition("txn-spread", q) for q in range(6)], timeout=10)
    check.close()
    assert {tp.partition: tp.offset for tp in committed} == {q: 5 for q in range(6)}


def quorum(kafka_libs, bootstrap, what):
    """kafka-metadata-quorum.sh describe --status (a dict) or --replication (rows)."""
    out = tool(kafka_libs, "MetadataQuorumCommand", "--bootstrap-server", bootstrap,
               "describe", what)
    lines = [l for l in out.splitlines() if l.strip() and not l.startswith("SLF4J")]
    if what == "--status":
        return dict(l.split(":", 1) for l in lines)
    header, *rows = [l.split() for l in lines]
    return [dict(zip(header, r)) for r in rows]


def test_metadata_quorum_described_and_its_leader_killed(cluster, kafka_libs):
    status = quorum(kafka_libs, cluster.bootstrap(1), "--status")
    leader, epoch = int(status["LeaderId"]), int(status["LeaderEpoch"])
    assert leader in (0, 1, 2)
    assert "CurrentVoters" in status and all(
        f'"id": {n}' in status["CurrentVoters"] for n in range(3))
    assert status["CurrentObservers"].strip() == "[]"

    def replication_caught_up(via):
        rows = quorum(kafka_libs, cluster.bootstrap(via), "--replication")
        ids = sorted(int(r["NodeId"]) for r in rows)
        return rows if ids == [0, 1, 2] and all(r["Lag"] == "0" for r in rows) else None

    rows = wait_for("every voter caught up", lambda: replication_caught_up(1))
    assert [r["Status"] for r in rows if int(r["NodeId"]) == leader] == ["Leader"]
    high_watermark = int(status["HighWatermark"])
    assert all(int(r["LogEndOffset"]) >= high_watermark for r in rows)

    # kill -9 the active controller: the other two elect a new one in a later epoch, and
    # changes made through either of them go on.
    cluster.run("kill", leader)
    survivor = next(n for n in range(3) if n != leader)

    def new_leader():
        try:
            s = quorum(kafka_libs, cluster.bootstrap(survivor), "--status")
        except AssertionError:
            return None  # no active controller yet: the tool fails
        return s if int(s["LeaderId"]) != leader and int(s["LeaderEpoch"]) > epoch else None

    wait_for("a new active controller", new_leader, timeout=60)
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap(survivor)})
    for f in admin.create_topics([NewTopic("after-controller-loss", 2, 1)]).values():
        f.result(timeout=30)
    cluster.run("start", leader)
    wait_for("the old leader caught up again", lambda: replication_caught_up(leader), timeout=60)
    back = AdminClient({"bootstrap.servers": cluster.bootstrap(leader)})
    assert "after-controller-loss" in back.list_topics(timeout=10).topics


def isr_of(kafka_libs, bootstrap, topic):
    """{partition: (leader, replicas, isr)} as Kafka's kafka-topics.sh --describe prints."""
    out = tool(kafka_libs, "TopicCommand", "--bootstrap-server", bootstrap,
               "--describe", "--topic", topic)
    found = {}
    for line in out.splitlines():
        fields = dict(f.split(": ", 1) for f in line.strip().split("\t") if ": " in f)
        if "Partition" in fields:
            ids = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
            found[int(fields["Partition"])] = (int(fields["Leader"]), ids(fields["Replicas"]),
                                              sorted(ids(fields["Isr"])))
    return found


def test_a_replicated_topic_loses_no_acknowledged_record_when_its_leader_is_killed(
        cluster, kafka_libs):
    """RF=3 with min.insync.replicas=2: idempotent acks=all records survive kill -9 of the
    leader of every partition it led (the others in the ISR take over), writes go on
    with two replicas, the killed broker returns as a follower and rejoins the ISR, and
    a consumer reads every acknowledged record exactly once in order."""
    topic = "replicated-acks"  # not the earlier test's "replicated"
    tool(kafka_libs, "TopicCommand", "--bootstrap-server", cluster.bootstrap(0), "--create",
         "--topic", topic, "--partitions", "3", "--replication-factor", "3",
         "--config", "min.insync.replicas=2")
    placed = wait_for("a full ISR everywhere", lambda: (lambda d: d if len(d) == 3 and all(
        isr == [0, 1, 2] for _, _, isr in d.values()) else None)(
            isr_of(kafka_libs, cluster.bootstrap(1), topic)))
    assert all(sorted(replicas) == [0, 1, 2] for _, replicas, _ in placed.values())

    def produce(start, count, bootstrap):
        p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                      "acks": "all", "message.timeout.ms": 60000})
        delivered = []
        for i in range(start, start + count):
            p.produce(topic, key=b"k%d" % i, value=b"v%d" % i, partition=i % 3,
                      on_delivery=lambda err, m: delivered.append(
                          (err, m.partition(), m.offset(), m.value())))
        assert p.flush(60) == 0
        assert [d for d in delivered if d[0] is not None] == []
        return [(part, off, val) for _, part, off, val in delivered]

    acked = produce(0, 300, cluster.bootstrap(0))
    victim = placed[0][0]
    survivor = next(n for n in range(3) if n != victim)
    cluster.run("kill", victim)
    # Fenced after its session: it leaves every ISR, its partitions get new leaders.
    after = wait_for("new leaders from the ISR", lambda: (lambda d: d if all(
        leader not in (-1, victim) and victim not in isr for leader, _, isr in d.values())
        else None)(isr_of(kafka_libs, cluster.bootstrap(survivor), topic)), timeout=60)
    assert all(len(isr) == 2 for _, _, isr in after.values())
    acked += produce(300, 300, cluster.bootstrap(survivor))

    cluster.run("start", victim)
    wait_for("the returned broker back in every ISR", lambda: all(
        isr == [0, 1, 2] for _, _, isr in isr_of(kafka_libs, cluster.bootstrap(victim),
                                                  topic).values()), timeout=60)
    acked += produce(600, 60, cluster.bootstrap(victim))

    c = Consumer({"bootstrap.servers": cluster.bootstrap(victim), "group.id": "replicated",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    got = poll_records(c, 660)
    c.close()
    assert len(got) == 660
    assert sorted((p, o, v) for p, o, _, v in got) == sorted(acked)
    # Per partition: offsets 0..n-1 with no gap or duplicate, values in produce order.
    for part in range(3):
        mine = sorted((o, v) for p, o, _, v in got if p == part)
        assert [o for o, _ in mine] == list(range(len(mine)))
        assert [int(v[1:]) for _, v in mine] == sorted(int(v[1:]) for _, v in mine)


def java_partition(key, count, masked):
    """The internal partition of a group (`masked`: Kafka's `hashCode & 0x7fffffff`) or a
    transactional id (`Utils.abs(hashCode)`), as the brokers compute it."""
    data = key.encode("utf-16-be")
    h = 0
    for u in struct.unpack(f">{len(data) // 2}H", data):
        h = (h * 31 + u) & 0xFFFFFFFF
    signed = h - (1 << 32) if h >= 1 << 31 else h
    if masked:
        return (signed & 0x7FFFFFFF) % count
    return (0 if signed == -(1 << 31) else abs(signed)) % count


def find_coordinator(bootstrap, key, key_type):
    """(error, node) of FindCoordinator v1 for a group (0) or transactional id (1)."""
    raw = RawClient.to(bootstrap)
    try:
        r = raw.call(10, 1, _str(key) + struct.pack(">b", key_type))
        r.i32()
        error, _message, node = r.i16(), r.str(), r.i32()
        return error, node
    finally:
        raw.close()


def full_isr(admin, topic, parts):
    """Waits until every partition of `parts` of `topic` has all three replicas in sync."""
    wait_for(f"{topic} {parts} fully in sync", lambda: all(
        len(isr) == 3 for p, (_, _, isr) in replicated(admin, topic).items() if p in parts),
        timeout=60)


def coordinator_killed(cluster, key, key_type, topic):
    """Kills (-9) the coordinator of `key` once its internal partition is fully in sync,
    and waits until a survivor names another live coordinator; (victim, survivor)."""
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap(0)})
    full_isr(admin, topic, [java_partition(key, INTERNAL_PARTITIONS, key_type == 0)])
    error, victim = wait_for("a coordinator", lambda: (lambda a: a if a[0] == 0 else None)(
        find_coordinator(cluster.bootstrap(0), key, key_type)))
    survivor = (victim + 1) % 3
    cluster.run("kill", victim)
    wait_for("another coordinator", lambda: (lambda a: a[0] == 0 and a[1] not in (-1, victim))(
        find_coordinator(cluster.bootstrap(survivor), key, key_type)), timeout=60)
    return victim, survivor


def restarted(cluster, victim):
    cluster.run("start", victim)
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap(victim)})
    wait_for("the broker back", lambda: sorted(admin.list_topics(timeout=10).brokers) == [0, 1, 2])


def test_a_group_coordinator_killed_moves_with_its_partition(cluster):
    """kill -9 of a group's coordinator: the leader of its __consumer_offsets partition
    moves to an in-sync replica, which loads the group's offsets; they read back exactly
    through another broker, and the group consumes on from them, nothing lost or read
    twice."""
    topic, group = "coord-failover", "coord-failover-group"
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap(0)})
    for f in admin.create_topics([NewTopic(topic, 3, 3)]).values():
        f.result(timeout=30)
    full_isr(admin, topic, [0, 1, 2])
    p = Producer({"bootstrap.servers": cluster.bootstrap(0), "enable.idempotence": True,
                  "acks": "all"})
    for i in range(300):
        p.produce(topic, key=b"k%d" % i, value=b"v%d" % i, partition=i % 3)
    assert p.flush(30) == 0

    # Consume part of it and commit exactly where the consumer stands.
    c = Consumer({"bootstrap.servers": cluster.bootstrap(1), "group.id": group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    first = []
    deadline = time.monotonic() + 60
    while len(first) < 120 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            first.append((m.partition(), m.offset()))
    assert len(first) >= 120
    position = {q: 1 + max((o for p_, o in first if p_ == q), default=-1) for q in range(3)}
    c.commit(offsets=[TopicPartition(topic, q, position[q]) for q in range(3)],
             asynchronous=False)
    c.close()

    victim, survivor = coordinator_killed(cluster, group, 0, "__consumer_offsets")
    try:
        check = Consumer({"bootstrap.servers": cluster.bootstrap(survivor), "group.id": group})
        committed = check.committed([TopicPartition(topic, q) for q in range(3)], timeout=30)
        check.close()
        assert {tp.partition: tp.offset for tp in committed} == position

        rest = Consumer({"bootstrap.servers": cluster.bootstrap(survivor), "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
        rest.subscribe([topic])
        got = []
        expected = sorted((q, o) for q in range(3) for o in range(position[q], 100))
        deadline = time.monotonic() + 60
        while len(got) < len(expected) and time.monotonic() < deadline:
            m = rest.poll(0.5)
            if m is not None and m.error() is None:
                got.append((m.partition(), m.offset()))
        # Nothing more (no duplicate) shows up after the last one.
        end = time.monotonic() + 2
        while time.monotonic() < end:
            m = rest.poll(0.2)
            if m is not None and m.error() is None:
                got.append((m.partition(), m.offset()))
        rest.close()
        assert sorted(got) == expected
    finally:
        restarted(cluster, victim)


def test_a_transaction_coordinator_killed_moves_with_its_partition(cluster):
    """kill -9 of a transactional producer's coordinator between transactions: the new
    leader of its __transaction_state partition loads the id, the producer's next
    transaction commits, a new instance of the id initializes (fencing the old one) and
    commits, and read_committed sees exactly the committed records."""
    topic, txn = "txn-failover", "txn-failover-id"
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap(0)})
    for f in admin.create_topics([NewTopic(topic, 3, 3)]).values():
        f.result(timeout=30)
    full_isr(admin, topic, [0, 1, 2])
    bootstrap = ",".join(cluster.bootstrap(n) for n in range(3))

    def producer():
        p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn,
                      "enable.idempotence": True, "transaction.timeout.ms": 60000})
        p.init_transactions(60)
        return p

    def transaction(p, tag, count, commit=True):
        p.begin_transaction()
        for i in range(count):
            p.produce(topic, key=b"%s%d" % (tag, i), value=tag, partition=i % 3)
        if commit:
            p.commit_transaction(60)
        else:
            p.abort_transaction(60)

    p = producer()
    transaction(p, b"before", 30)
    transaction(p, b"aborted", 20, commit=False)
    victim, _survivor = coordinator_killed(cluster, txn, 1, "__transaction_state")
    try:
        transaction(p, b"after", 30)
        p2 = producer()
        transaction(p2, b"fresh", 30)
        reader = Consumer({"bootstrap.servers": bootstrap, "group.id": "txn-failover-reader",
                           "auto.offset.reset": "earliest", "isolation.level": "read_committed"})
        reader.subscribe([topic])
        got = [(k, v) for _, _, k, v in poll_records(reader, 90, then=2)]
        reader.close()
        expected = [(b"%s%d" % (tag, i), tag) for tag in (b"before", b"after", b"fresh")
                    for i in range(30)]
        assert sorted(got) == sorted(expected)
    finally:
        restarted(cluster, victim)


def test_kafka_reassign_partitions_moves_replicas_under_a_throttle(cluster, kafka_libs, tmp_path):
    """kafka-reassign-partitions.sh moves a partition from node 0 to nodes 1 and 2 with
    --throttle: the tool's output is Kafka's, the move takes at least as long as the
    throttle allows (the leader sends every byte twice, one copy per new replica), the
    replicas end up on 1 and 2 in sync with every record, and --verify removes the
    throttles once it reports the move completed."""
    topic, rate, count = "moved", 1_000_000, 2000
    b = ["--bootstrap-server", cluster.bootstrap(0)]
    tool(kafka_libs, "TopicCommand", *b, "--create", "--topic", topic, "--replica-assignment", "0")
    wait_for("the partition led by node 0",
             lambda: isr_of(kafka_libs, cluster.bootstrap(0), topic) == {0: (0, [0], [0])})
    p = Producer({"bootstrap.servers": cluster.bootstrap(0), "acks": "all",
                  "enable.idempotence": True})
    values = [b"%05d" % i + b"x" * 995 for i in range(count)]  # 1000 bytes each
    for v in values:
        p.produce(topic, value=v, partition=0)
    assert p.flush(30) == 0

    plan = tmp_path / "move.json"
    plan.write_text('{"version":1,"partitions":[{"topic":"moved","partition":0,"replicas":[1,2]}]}')
    executed = tool(kafka_libs, "reassign.ReassignPartitionsCommand", *b, "--execute",
                    "--reassignment-json-file", plan, "--throttle", rate)
    started = time.monotonic()
    assert executed.splitlines() == [
        "Current partition replica assignment",
        "",
        # The tool asks the brokers where each replica is (DescribeLogDirs).
        '{"version":1,"partitions":[{"topic":"moved","partition":0,"replicas":[0],'
        f'"log_dirs":["{cluster.dir / "node-0"}"]}}]}}',
        "",
        "Save this to use as the --reassignment-json-file option during rollback",
        "Warning: You must run --verify periodically, until the reassignment completes, "
        "to ensure the throttle is removed.",
        f"The inter-broker throttle limit was set to {rate} B/s",
        "Successfully started partition reassignment for moved-0",
    ], executed
    # The throttle is in place: the rates on the brokers, the replicas on the topic.
    configs = tool(kafka_libs, "ConfigCommand", *b, "--entity-type", "topics",
                   "--entity-name", topic, "--describe")
    assert "leader.replication.throttled.replicas=0:0" in configs, configs
    assert "follower.replication.throttled.replicas=0:1,0:2" in configs, configs

    def verify():
        out = tool(kafka_libs, "reassign.ReassignPartitionsCommand", *b, "--verify",
                   "--reassignment-json-file", plan)
        return out if "Reassignment of partition moved-0 is completed." in out else None
    verified = wait_for("the reassignment to complete", verify, timeout=120)
    took = time.monotonic() - started
    # 2 MB to each of two new replicas at 1 MB/s, after a burst of at most 1 s of it.
    assert took >= 2.0, f"moved in {took:.1f} s despite the throttle"
    assert [line for line in verified.splitlines() if line] == [
        "Status of partition reassignment:",
        "Reassignment of partition moved-0 is completed.",
        "Clearing broker-level throttles on brokers 0,1,2",
        "Clearing topic-level throttles on topic moved",
    ], verified
    configs = tool(kafka_libs, "ConfigCommand", *b, "--entity-type", "topics",
                   "--entity-name", topic, "--describe")
    assert "throttled" not in configs, configs
    brokers = tool(kafka_libs, "ConfigCommand", *b, "--entity-type", "brokers",
                   "--entity-name", "1", "--describe")
    assert "throttled.rate" not in brokers, brokers

    leader, replicas, isr = wait_for("the new replicas in sync", lambda: (
        lambda d: d[0] if d[0][2] == [1, 2] else None)(isr_of(kafka_libs, cluster.bootstrap(1), topic)))
    assert (replicas, isr) == ([1, 2], [1, 2]) and leader in (1, 2)
    # Node 0 no longer holds the partition: its directory is gone.
    node0 = cluster.dir / "node-0"
    wait_for("node 0's copy deleted", lambda: not any(
        d.name.startswith(f"{topic}-0") for d in node0.rglob(f"{topic}-0*")))

    c = Consumer({"bootstrap.servers": cluster.bootstrap(2), "group.id": "moved",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, 0)])
    got = []
    deadline = time.monotonic() + 60
    while len(got) < count and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append((m.offset(), m.value()))
    c.close()
    assert got == list(enumerate(values))


def test_a_batch_behind_one_refused_for_too_few_replicas_is_refused_alike(cluster):
    """An idempotent producer's batch refused with NOT_ENOUGH_REPLICAS leaves a gap in
    its sequences. Kafka checks a connection's requests one after another, so the
    batches pipelined behind it get the same refusal; Spate checks each on arrival, when
    the ISR may be whole again, and then still answers NOT_ENOUGH_REPLICAS (not
    OUT_OF_ORDER_SEQUENCE_NUMBER, on which librdkafka renumbers and resends every
    unacknowledged batch, written ones included). The retry of the refused batch then
    goes in, and the one behind it after it: every record once, in order."""
    not_enough_replicas = 19
    topic = "sequence-gap"
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap(0)})
    # min.insync.replicas=3: one broker down is enough for the refusal.
    for f in admin.create_topics([NewTopic(topic, 1, 3, config={
            "min.insync.replicas": "3"})]).values():
        f.result(timeout=30)
    full_isr(admin, topic, [0])
    leader = replicated(admin, topic)[0][0]
    follower = (leader + 1) % 3
    p = RawProducer(cluster.bootstrap(leader))
    try:
        pid, epoch = p.init_producer_id()
        batches = [record_batch(pid, epoch, 3 * i, [b"r%d-%d" % (i, j) for j in range(3)])
                   for i in range(3)]
        assert p.produce(topic, 0, batches[0]) == (0, 0)
        cluster.run("kill", follower)
        wait_for("the ISR without the killed follower", lambda: follower not in
                 replicated(admin, topic)[0][2], timeout=60)
        assert p.produce(topic, 0, batches[1])[0] == not_enough_replicas
        restarted(cluster, follower)
        full_isr(admin, topic, [0])
        # The ISR is whole again, but batch 2 skips batch 1's sequences.
        assert p.produce(topic, 0, batches[2])[0] == not_enough_replicas
        assert p.produce(topic, 0, batches[1]) == (0, 3)
        assert p.produce(topic, 0, batches[2]) == (0, 6)
    finally:
        p.close()
    c = Consumer({"bootstrap.servers": cluster.bootstrap(leader), "group.id": topic,
                  "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, 0, 0)])
    got = [(o, v) for _, o, _, v in poll_records(c, 9)]
    c.close()
    assert got == [
        (3 * i + j, b"r%d-%d" % (i, j)) for i in range(3) for j in range(3)]


def test_a_consumer_in_a_followers_rack_reads_from_that_follower(cluster):
    """KIP-392 through librdkafka: with the rack-aware replica selector on, a consumer
    whose client.rack is a follower's rack is sent there by the leader
    (preferred_read_replica) and reads every record from that follower, in order."""
    topic = "nearby"
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap(0)})
    for f in admin.create_topics([NewTopic(topic, 1, 3)]).values():
        f.result(timeout=30)
    full_isr(admin, topic, [0])
    leader = replicated(admin, topic)[0][0]
    follower = (leader + 1) % 3
    values = [b"near-%d" % i for i in range(200)]
    p = Producer({"bootstrap.servers": cluster.bootstrap(0), "acks": "all"})
    for v in values:
        p.produce(topic, value=v, partition=0)
    assert p.flush(30) == 0

    fetched_from = set()

    def on_stats(raw):
        part = json.loads(raw).get("topics", {}).get(topic, {}).get("partitions", {}).get("0")
        if part:
            fetched_from.add((part["leader"], part["broker"]))

    c = Consumer({"bootstrap.servers": cluster.bootstrap(0), "group.id": topic,
                  "client.rack": RACKS[follower], "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "statistics.interval.ms": 200,
                  "stats_cb": on_stats})
    c.assign([TopicPartition(topic, 0, 0)])
    # Then a second more, for the statistics after the last record.
    got = [(o, v) for _, o, _, v in poll_records(c, len(values), then=1)]
    c.close()
    assert got == list(enumerate(values))
    assert (leader, follower) in fetched_from, fetched_from


def alter_reassignment(bootstrap, topic, partition, replicas):
    """AlterPartitionReassignments v0 of one partition: (error code, [(topic, partition,
    error code)])."""
    body = (struct.pack(">i", 30000) + uvarint(2) + cstr(topic) + uvarint(2)
            + struct.pack(">i", partition) + uvarint(len(replicas) + 1)
            + b"".join(struct.pack(">i", r) for r in replicas) + b"\x00\x00\x00")
    raw = RawClient.to(bootstrap)
    try:
        r = raw.call_flexible(45, 0, body)
    finally:
        raw.close()
    r.i32()
    error = r.i16()
    _read_cstr(r)
    results = []
    for _ in range(_read_uvarint(r) - 1):
        name = _read_cstr(r)
        for _ in range(_read_uvarint(r) - 1):
            index, code = r.i32(), r.i16()
            _read_cstr(r)
            _skip_tags(r)
            results.append((name, index, code))
        _skip_tags(r)
    return error, results


def test_a_replica_moved_off_a_broker_while_it_was_down_is_deleted_when_it_returns(
        cluster, kafka_libs):
    """kafka-reassign-partitions.sh moves a partition's replica off a broker that is down;
    the broker, back, deletes the log it still has of it (Kafka's stray logs) once its
    metadata caught up, and keeps the logs it still holds replicas of."""
    topic = "strays"
    b = ["--bootstrap-server", cluster.bootstrap(0)]
    for name in (topic, f"{topic}-kept"):
        tool(kafka_libs, "TopicCommand", *b, "--create", "--topic", name,
             "--replica-assignment", "0:1")
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap(0)})
    for name in (topic, f"{topic}-kept"):
        wait_for("both replicas in sync", lambda: replicated(admin, name)[0][2] == [0, 1])
    p = Producer({"bootstrap.servers": cluster.bootstrap(0), "acks": "all"})
    for i in range(5):
        p.produce(topic, value=b"s%d" % i, partition=0)
    assert p.flush(30) == 0
    log_of = cluster.dir / "node-1" / f"{topic}-0"
    kept = cluster.dir / "node-1" / f"{topic}-kept-0"
    assert log_of.is_dir() and kept.is_dir()
    cluster.run("kill", 1)
    # kafka-reassign-partitions.sh first asks every current replica's broker for its log
    # dirs, so it cannot move a replica off a broker that is down (against Kafka
    # neither): the Admin API's request, by hand.
    # The killed node may have been the active controller: NOT_CONTROLLER (41) until
    # another is elected, which clients retry.
    answer = wait_for("the reassignment accepted", lambda: (lambda a: a if a[0] != 41 else None)(
        alter_reassignment(cluster.bootstrap(0), topic, 0, [0, 2])))
    assert answer == (0, [(topic, 0, 0)])
    wait_for("the replicas on nodes 0 and 2, in sync", lambda: (lambda m: m[0][1:] == (
        [0, 2], [0, 2]))(replicated(admin, topic)), timeout=60)
    assert log_of.is_dir(), "a broker that is down deletes nothing"
    restarted(cluster, 1)
    wait_for("node 1 to delete its stray log", lambda: not log_of.exists()
             and not any(p.name.startswith(f"{topic}-0.") for p in log_of.parent.iterdir()))
    # Either as a stray at start, or, when node 1 had opened the log from its own stale
    # metadata first, as the replica the reassignment record moves off it once replayed.
    log = (cluster.dir / "node-1.log").read_text(errors="replace")
    assert ("deleting the log of a partition no longer on this broker" in log
            or "replica moved off this broker; deleting its log" in log)
    assert kept.is_dir()


def test_a_share_group_reads_on_after_a_partition_leader_is_killed(cluster, kafka_libs):
    """KIP-932 across brokers: a share group reads a replicated topic whose partitions,
    share-partition states (`__share_group_state`) and group coordinator sit on different
    brokers. The records accepted before the leader of a partition is killed -9 are never
    delivered again; the new leaders load the share-partitions' states and the rest is
    delivered exactly once."""
    topic = "share-failover"
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap(0)})
    for f in admin.create_topics([NewTopic(topic, 3, 3)]).values():
        f.result(timeout=30)
    full_isr(admin, topic, [0, 1, 2])
    p = Producer({"bootstrap.servers": cluster.bootstrap(0), "enable.idempotence": True,
                  "acks": "all", "linger.ms": 0, "batch.size": 1})
    for i in range(300):
        p.produce(topic, value=b"v%d" % i, partition=i % 3)
    assert p.flush(30) == 0
    group = earliest_group(kafka_libs, cluster.bootstrap(0), "share-failover")

    a = ShareMember(cluster.bootstrap(1), group, topic, "explicit", 20)
    try:
        first = a.take(150)
    finally:
        a.close()
    assert len({r["v"] for r in first}) == len(first)

    victim = partitions(admin, topic)[0][0]
    survivor = (victim + 1) % 3
    cluster.run("kill", victim)
    try:
        survivor_admin = AdminClient({"bootstrap.servers": cluster.bootstrap(survivor)})
        wait_for("a new leader of partition 0", lambda: partitions(survivor_admin, topic)[0][0]
                 not in (-1, victim), timeout=60)
        b = ShareMember(cluster.bootstrap(survivor), group, topic, "explicit", 50)
        try:
            rest = b.take(300 - len(first), deadline=90)
            # Nothing more comes.
            assert b.poll(2000) == []
        finally:
            b.close()
        values = sorted((r["v"] for r in first + rest), key=lambda v: int(v[1:]))
        assert values == [f"v{i}" for i in range(300)]
        # Records a's client fetched ahead but never handed out were released when it
        # closed: delivered once before, so counted twice now.
        assert all(r["d"] in (1, 2) for r in rest)
    finally:
        restarted(cluster, victim)
