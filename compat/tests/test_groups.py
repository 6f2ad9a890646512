"""Consumer groups (classic protocol) through real clients: confluent-kafka (librdkafka),
kafka-python, kafkajs (compat/node/groups.js), the Java client (GroupScenario in
compat/java) and a raw protocol client for the error paths.

Every group is new, so its first rebalance waits group.initial.rebalance.delay.ms (3 s)."""
import os
import shutil
import subprocess
import time

import pytest
from confluent_kafka import (ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaError,
                             TopicPartition)
from confluent_kafka.admin import OffsetSpec

from conftest import RUNS, free_port
from grouputil import (GROUP_ID_NOT_FOUND, GROUP_MAX_SIZE_REACHED, GROUP_SUBSCRIBED_TO_TOPIC,
                       ILLEGAL_GENERATION, INCONSISTENT_GROUP_PROTOCOL, MEMBER_ID_REQUIRED,
                       NON_EMPTY_GROUP, REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID,
                       ConfiguredBroker, RawClient, TrackedConsumer, committed, coordinator,
                       consumer_protocol_assignment, consumer_protocol_metadata, drain,
                       group_id, poll_until)
from kafkautil import COMPAT, JAVA_JAR as JAR, OP_TIMEOUT, admin, create_topic, java_jar, produce, run_json

# spate exits 0 after SIGTERM; the JVM (Kafka, when validating the suite) exits 143.
TERM_EXIT_CODES = {int(c) for c in os.environ.get("SPATE_COMPAT_TERM_EXIT_CODES", "0").split(",")}

pytestmark = pytest.mark.timeout(120)


def _produce_keyed(bootstrap, topic, start, count, parts):
    """Records with keys k<i>/values v<i>, spread over partitions explicitly; returns the
    set of (partition, offset, key, value) the broker acknowledged."""
    recs = [{"key": f"k{i}".encode(), "value": f"v{i}".encode(), "partition": i % parts}
            for i in range(start, start + count)]
    reports = produce(bootstrap, topic, recs, {"acks": "all"})
    assert [e for e, *_ in reports] == [None] * count
    return {(p, o, k, v) for _, p, o, k, v in reports}


def _assert_exactly_once(consumers, want):
    got = [r for c in consumers for r in c.records]
    seen = {}
    for r in got:
        seen[(r[0], r[1])] = seen.get((r[0], r[1]), 0) + 1
    dups = {k: n for k, n in seen.items() if n > 1}
    assert not dups, f"duplicates (partition, offset) -> count: {sorted(dups.items())[:20]}"
    missing = want - set(got)
    extra = set(got) - want
    assert not missing and not extra, \
        f"{len(missing)} missing (e.g. {sorted(missing)[:5]}), {len(extra)} unexpected"


# 1 ------------------------------------------------------------------------------------

def test_three_consumers_share_six_partitions(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 6)
    want = _produce_keyed(bootstrap, topic_name, 0, 600, 6)
    g = group_id()
    cs = [TrackedConsumer(bootstrap, g, [topic_name], f"c{i}") for i in range(3)]
    try:
        poll_until(cs, lambda: sum(len(c.records) for c in cs) >= 600
                   and all(c.assignment for c in cs), timeout=60,
                   what="600 records and three non-empty assignments")
        drain(cs, 1.0)
        _assert_exactly_once(cs, want)
        parts = [c.assignment for c in cs]
        assert all(len(a) == 2 for a in parts), parts          # range: 6 / 3
        assert set().union(*parts) == set(range(6))
        assert sum(len(a) for a in parts) == 6                   # disjoint
        for c in cs:   # each read exactly its own partitions
            assert {r[0] for r in c.records} == c.assignment, (c.name, c.events)
        assert committed(bootstrap, g, topic_name, 6) == {p: 100 for p in range(6)}
    finally:
        for c in cs:
            c.close()


# 2 ------------------------------------------------------------------------------------

def test_join_and_leave_rebalances_lose_and_duplicate_nothing(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 6)
    g = group_id()
    want = _produce_keyed(bootstrap, topic_name, 0, 300, 6)
    c1 = TrackedConsumer(bootstrap, g, [topic_name], "c1")
    cs = [c1]
    try:
        poll_until(cs, lambda: len(c1.records) >= 120, timeout=45, what="c1 reads 120")
        assert c1.assignment == set(range(6))
        # A second member joins while c1 is half-way.
        c2 = TrackedConsumer(bootstrap, g, [topic_name], "c2")
        cs.append(c2)
        poll_until(cs, lambda: c1.assignment and c2.assignment
                   and c1.assignment | c2.assignment == set(range(6))
                   and not c1.assignment & c2.assignment, timeout=45,
                   what="the two-member rebalance")
        want |= _produce_keyed(bootstrap, topic_name, 300, 300, 6)
        poll_until(cs, lambda: len(c1.records) + len(c2.records) >= 600, timeout=45,
                   what="600 records")
        assert c2.records, "the second member read nothing"
        # c1 leaves (LeaveGroup on close): c2 takes everything over at the committed offsets.
        c1.close()
        want |= _produce_keyed(bootstrap, topic_name, 600, 300, 6)
        poll_until(cs, lambda: c2.assignment == set(range(6))
                   and len(c1.records) + len(c2.records) >= 900, timeout=45,
                   what="c2 alone reads up to 900")
        drain(cs, 1.0)
        _assert_exactly_once(cs, want)
        assert ("revoke", list(range(6))) in c1.events   # eager: everything revoked
        assert committed(bootstrap, g, topic_name, 6) == {p: 150 for p in range(6)}
    finally:
        for c in cs:
            c.close()


# 3 ------------------------------------------------------------------------------------

def test_new_consumer_resumes_from_committed_offsets(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 3)
    want = _produce_keyed(bootstrap, topic_name, 0, 300, 3)
    g = group_id()
    c1 = TrackedConsumer(bootstrap, g, [topic_name], "c1")
    try:
        poll_until([c1], lambda: len(c1.records) >= 150, timeout=45, what="150 records")
    finally:
        c1.close()
    first = set(c1.records)
    assert len(first) == 150
    assert committed(bootstrap, g, topic_name, 3) == _next_offsets(first, 3)
    c2 = TrackedConsumer(bootstrap, g, [topic_name], "c2")
    try:
        poll_until([c2], lambda: len(c2.records) >= 150, timeout=45, what="the other 150")
        drain([c2], 1.0)
    finally:
        c2.close()
    assert set(c2.records) == want - first
    assert len(c2.records) == 150


def _next_offsets(records, parts):
    """What a consumer that committed after each record has committed: last offset + 1
    per partition, -1001 (no offset) where it read nothing."""
    ends = {}
    for p, o, _, _ in records:
        ends[p] = max(ends.get(p, -1), o + 1)
    return {p: ends.get(p, -1001) for p in range(parts)}


# 4 ------------------------------------------------------------------------------------

def test_static_member_restart_does_not_rebalance(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 4)
    want = _produce_keyed(bootstrap, topic_name, 0, 200, 4)
    g = group_id()
    static = {"session.timeout.ms": 10000}
    a = TrackedConsumer(bootstrap, g, [topic_name], "a", **{"group.instance.id": "inst-a"}, **static)
    b = TrackedConsumer(bootstrap, g, [topic_name], "b", **{"group.instance.id": "inst-b"}, **static)
    cs = [a, b]
    a2 = None
    try:
        poll_until(cs, lambda: len(a.records) + len(b.records) >= 200 and a.assignment
                   and b.assignment, timeout=45, what="both static members consuming")
        a_parts, b_parts = set(a.assignment), set(b.assignment)
        d = _describe(bootstrap, g)
        assert d.state == ConsumerGroupState.STABLE
        members = {m.group_instance_id: m for m in d.members}
        assert set(members) == {"inst-a", "inst-b"}
        b_member = members["inst-b"].member_id
        a_member = members["inst-a"].member_id
        b_events = list(b.events)
        # Restart a: librdkafka does not send LeaveGroup for a static member.
        a.close()
        a2 = TrackedConsumer(bootstrap, g, [topic_name], "a2", **{"group.instance.id": "inst-a"},
                             **static)
        cs.append(a2)
        poll_until(cs, lambda: a2.assignment, timeout=30, what="a2 assigned")
        want |= _produce_keyed(bootstrap, topic_name, 200, 200, 4)
        poll_until(cs, lambda: len(a.records) + len(b.records) + len(a2.records) >= 400,
                   timeout=45, what="400 records")
        drain(cs, 1.0)
        assert a2.assignment == a_parts, (a2.events, a_parts)
        assert b.events == b_events, f"b saw a rebalance: {b.events[len(b_events):]}"
        assert b.assignment == b_parts
        d = _describe(bootstrap, g)
        assert d.state == ConsumerGroupState.STABLE
        members = {m.group_instance_id: m for m in d.members}
        assert set(members) == {"inst-a", "inst-b"}
        assert members["inst-b"].member_id == b_member
        assert members["inst-a"].member_id != a_member   # the restarted member got a new id
        # a committed synchronously, a2 resumed after it: nothing lost or read twice.
        _assert_exactly_once(cs, want)
    finally:
        for c in cs:
            c.close()


def _describe(bootstrap, g):
    a = admin(bootstrap)
    return a.describe_consumer_groups([g], request_timeout=OP_TIMEOUT)[g].result(OP_TIMEOUT)


# 5 ------------------------------------------------------------------------------------

JAVA = ["java", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xmx512m", "-cp", str(JAR),
        "dev.spate.compat.GroupScenario"]


@pytest.fixture(scope="module")
def java_groups():
    java_jar()
    return JAVA


def test_java_cooperative_sticky(bootstrap, topic_name, java_groups):
    g = group_id("coop")
    r = run_json([*java_groups, bootstrap, "cooperative", topic_name, g, "6", "300"], timeout=110)
    # Phase 1: c1 alone gets all six partitions.
    assert r["c1_events"][0] == ["assigned", list(range(6))]
    # Phase 2: c2 joins; cooperative: c1 gives up only what moves to c2, never everything,
    # and its later assignment callbacks only add (empty here).
    c1_final, c2_final = set(r["c1_final"]), set(r["c2_final"])
    assert len(c1_final) == 3 and len(c2_final) == 3 and c1_final | c2_final == set(range(6))
    revoked = [set(ps) for ev, ps in r["c1_events"] if ev == "revoked" and ps]
    assert revoked == [c2_final], r["c1_events"]
    assert all(set(ps) <= c2_final for ev, ps in r["c2_events"] if ev == "assigned")
    assert not [e for e in r["c1_events"] if e[0] == "lost"]
    assert r["protocol"] == "cooperative-sticky"
    # Exactly once: 600 records (300 before c2 joined, 300 after).
    seen = {}
    for p, o, v in r["records"]:
        seen.setdefault((p, o), []).append(v)
    assert len(r["records"]) == 600 and len(seen) == 600
    assert {p: max(o for pp, o in seen if pp == p) + 1 for p in range(6)} == \
        {p: 100 for p in range(6)}
    assert sorted(v[0] for v in seen.values()) == sorted(f"v{i}" for i in range(600))
    assert r["committed"] == {str(p): 100 for p in range(6)}


def test_java_static_member_restart_keeps_generation(bootstrap, topic_name, java_groups):
    g = group_id("jstatic")
    r = run_json([*java_groups, bootstrap, "static", topic_name, g, "4", "200"], timeout=110)
    gen = r["generation_before"]
    assert gen >= 1
    # The restarted static member got the same generation and the same partitions back;
    # the other member saw no rebalance and kept its member id.
    assert r["generation_after_a2"] == gen and r["generation_after_b"] == gen, r
    assert r["a2_owned"] == r["a_owned_before"] and r["b_owned_after"] == r["b_owned_before"]
    assert sorted(r["a2_owned"] + r["b_owned_after"]) == [0, 1, 2, 3]
    assert r["b_events_during_restart"] == []
    assert r["a2_events"] == [["assigned", r["a_owned_before"]]]
    assert r["b_member_after"] == r["b_member_before"]
    assert r["a2_member"] != r["a_member_before"]
    assert r["state"] == "Stable"
    assert r["members"] == sorted([["inst-a", r["a2_member"]], ["inst-b", r["b_member_after"]]])
    seen = {}
    for p, o, v in r["records"]:
        seen.setdefault((p, o), []).append(v)
    dups = {k: v for k, v in seen.items() if len(v) > 1}
    assert not dups, dups
    assert sorted(v[0] for v in seen.values()) == sorted(f"v{i}" for i in range(400))


# 6 ------------------------------------------------------------------------------------

def _group_offsets_confluent(bootstrap, g, topic, parts):
    a = admin(bootstrap)
    req = ConsumerGroupTopicPartitions(g, [TopicPartition(topic, p) for p in range(parts)])
    res = a.list_consumer_group_offsets([req], request_timeout=OP_TIMEOUT)[g].result(OP_TIMEOUT)
    assert all(tp.error is None for tp in res.topic_partitions), res.topic_partitions
    return {tp.partition: tp.offset for tp in res.topic_partitions}


def _kp_admin(bootstrap):
    from kafka import KafkaAdminClient
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=OP_TIMEOUT * 1000,
                            client_id="compat-kafka-python")


def test_kafka_python_group_consume_and_commit(bootstrap, topic_name):
    from kafka import KafkaConsumer
    create_topic(bootstrap, topic_name, 3)
    want = _produce_keyed(bootstrap, topic_name, 0, 150, 3)
    g = group_id("kp")
    c = KafkaConsumer(topic_name, bootstrap_servers=bootstrap, group_id=g,
                      enable_auto_commit=False, auto_offset_reset="earliest",
                      session_timeout_ms=6000, heartbeat_interval_ms=1000,
                      request_timeout_ms=OP_TIMEOUT * 1000, fetch_max_wait_ms=100,
                      client_id="compat-kafka-python")
    got = []
    try:
        deadline = time.monotonic() + 45
        while len(got) < 150 and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=200).values():
                got.extend((m.partition, m.offset, m.key, m.value) for m in recs)
        c.commit()
        assert {tp.partition for tp in c.assignment()} == {0, 1, 2}
        assert not c.poll(timeout_ms=500), "unexpected extra records"
    finally:
        c.close()
    assert len(got) == 150 and set(got) == want
    assert _group_offsets_confluent(bootstrap, g, topic_name, 3) == {0: 50, 1: 50, 2: 50}
    a = _kp_admin(bootstrap)
    try:
        offs = a.list_group_offsets({g: None})
        offs = offs.get(g, offs) if isinstance(offs, dict) else offs
        assert {tp.partition: om.offset for tp, om in offs.items()
                if tp.topic == topic_name} == {0: 50, 1: 50, 2: 50}
    finally:
        a.close()


@pytest.fixture(scope="module")
def kafkajs_groups():
    node_dir = COMPAT / "node"
    if shutil.which("node") is None:
        pytest.fail("node is not installed (compat/run.sh installs the suite's tools)")
    if not (node_dir / "node_modules" / "kafkajs").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=node_dir, check=True,
                       timeout=300)
    return ["node", str(node_dir / "groups.js")]


def test_kafkajs_group_consume_and_commit(bootstrap, topic_name, kafkajs_groups):
    create_topic(bootstrap, topic_name, 3)
    want = _produce_keyed(bootstrap, topic_name, 0, 150, 3)
    g = group_id("js")
    r = run_json([*kafkajs_groups, bootstrap, "consume", topic_name, g, "150"], timeout=90)
    got = {(m[0], int(m[1]), m[2].encode(), m[3].encode()) for m in r["records"]}
    assert len(r["records"]) == 150 and got == want
    assert r["extra"] == 0
    assert sorted(r["assigned"]) == [0, 1, 2]
    # kafkajs' own admin view of the commit, then confluent-kafka's and kafka-python's.
    assert r["fetched"] == {"0": "50", "1": "50", "2": "50"}
    assert r["described"] == {"state": "Stable", "members": 1, "protocol": "RoundRobinAssigner",
                              "protocolType": "consumer"}
    assert _group_offsets_confluent(bootstrap, g, topic_name, 3) == {0: 50, 1: 50, 2: 50}
    # Half a second after the member left, Kafka still describes and lists the group
    # with its protocol type.
    assert r["listed"] == [g, "consumer"]
    assert r["described_after"] == {"state": "Empty", "members": 0, "protocolType": "consumer"}


# 7 ------------------------------------------------------------------------------------

def test_admin_list_describe_delete_and_lag(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 3)
    _produce_keyed(bootstrap, topic_name, 0, 30, 3)   # 10 per partition
    g = group_id("adm")
    a = admin(bootstrap)
    c = TrackedConsumer(bootstrap, g, [topic_name], "c", **{"client.id": "adm-client"})
    try:
        poll_until([c], lambda: len(c.records) >= 30, timeout=45, what="30 records")
        # List with and without a state filter.
        listed = a.list_consumer_groups(request_timeout=OP_TIMEOUT).result(OP_TIMEOUT)
        mine = [x for x in listed.valid if x.group_id == g]
        assert len(mine) == 1 and mine[0].state == ConsumerGroupState.STABLE
        assert not mine[0].is_simple_consumer_group
        stable = a.list_consumer_groups(states={ConsumerGroupState.STABLE},
                                        request_timeout=OP_TIMEOUT).result(OP_TIMEOUT)
        assert g in [x.group_id for x in stable.valid]
        empty = a.list_consumer_groups(states={ConsumerGroupState.EMPTY},
                                       request_timeout=OP_TIMEOUT).result(OP_TIMEOUT)
        assert g not in [x.group_id for x in empty.valid]
        # Describe.
        d = _describe(bootstrap, g)
        assert d.state == ConsumerGroupState.STABLE
        assert d.partition_assignor == "range"
        assert not d.is_simple_consumer_group
        assert len(d.members) == 1
        m = d.members[0]
        assert m.client_id == "adm-client"
        assert m.group_instance_id is None
        assert sorted((tp.topic, tp.partition) for tp in m.assignment.topic_partitions) == \
            [(topic_name, p) for p in range(3)]
        # Not deletable while it has a member.
        err = a.delete_consumer_groups([g], request_timeout=OP_TIMEOUT)[g].exception(OP_TIMEOUT)
        assert err is not None and err.args[0].code() == KafkaError.NON_EMPTY_GROUP, err
        assert KafkaError.NON_EMPTY_GROUP == NON_EMPTY_GROUP
        # Offsets of a group with members cannot be altered by the admin client
        # (OffsetCommit without generation/member: UNKNOWN_MEMBER_ID per partition).
        req = ConsumerGroupTopicPartitions(g, [TopicPartition(topic_name, 0, 1)])
        try:
            res = a.alter_consumer_group_offsets([req], request_timeout=OP_TIMEOUT)[g].result(OP_TIMEOUT)
            alter_active = [tp.error.code() if tp.error else None for tp in res.topic_partitions]
        except Exception as e:   # librdkafka may raise the partition error
            alter_active = [e.args[0].code()] if e.args and hasattr(e.args[0], "code") else [repr(e)]
        # Offsets of a subscribed topic cannot be deleted (OffsetDelete via kafka-python).
        kp = _kp_admin(bootstrap)
        try:
            from kafka import TopicPartition as KTP
            res = _delete_offsets_kp(kp, g, [KTP(topic_name, 1)])
            assert res == {1: GROUP_SUBSCRIBED_TO_TOPIC}, res
        finally:
            kp.close()
    finally:
        c.close()
    # Empty now (and half a second later still a consumer group, as in Kafka).
    time.sleep(0.5)
    d = _describe(bootstrap, g)
    assert d.state == ConsumerGroupState.EMPTY and d.members == []
    empty_simple = d.is_simple_consumer_group
    empty = a.list_consumer_groups(states={ConsumerGroupState.EMPTY},
                                   request_timeout=OP_TIMEOUT).result(OP_TIMEOUT)
    assert g in [x.group_id for x in empty.valid]
    assert _group_offsets_confluent(bootstrap, g, topic_name, 3) == {0: 10, 1: 10, 2: 10}
    # Alter offsets of the empty group, then compute the lag as kafka-consumer-groups does.
    req = ConsumerGroupTopicPartitions(g, [TopicPartition(topic_name, 0, 10),
                                           TopicPartition(topic_name, 1, 4),
                                           TopicPartition(topic_name, 2, 0)])
    res = a.alter_consumer_group_offsets([req], request_timeout=OP_TIMEOUT)[g].result(OP_TIMEOUT)
    assert all(tp.error is None for tp in res.topic_partitions), res.topic_partitions
    committed_now = _group_offsets_confluent(bootstrap, g, topic_name, 3)
    assert committed_now == {0: 10, 1: 4, 2: 0}
    ends = a.list_offsets({TopicPartition(topic_name, p): OffsetSpec.latest() for p in range(3)},
                          request_timeout=OP_TIMEOUT)
    end = {tp.partition: f.result(OP_TIMEOUT).offset for tp, f in ends.items()}
    assert end == {0: 10, 1: 10, 2: 10}
    assert {p: end[p] - committed_now[p] for p in range(3)} == {0: 0, 1: 6, 2: 10}
    # Delete one partition's offset (OffsetDelete) now that nobody subscribes.
    kp = _kp_admin(bootstrap)
    try:
        from kafka import TopicPartition as KTP
        assert _delete_offsets_kp(kp, g, [KTP(topic_name, 1)]) == {1: 0}
    finally:
        kp.close()
    assert _group_offsets_confluent(bootstrap, g, topic_name, 3) == {0: 10, 1: -1001, 2: 0}
    # A new member resumes at the altered offsets (p1 has none: earliest).
    c2 = TrackedConsumer(bootstrap, g, [topic_name], "c2")
    try:
        poll_until([c2], lambda: len(c2.records) >= 20, timeout=45, what="20 records")
        drain([c2], 0.5)
    finally:
        c2.close()
    assert sorted((p, o) for p, o, _, _ in c2.records) == \
        [(1, o) for o in range(10)] + [(2, o) for o in range(10)]
    # Delete the (empty) group; a second delete finds nothing.
    assert a.delete_consumer_groups([g], request_timeout=OP_TIMEOUT)[g].result(OP_TIMEOUT) is None
    err = a.delete_consumer_groups([g], request_timeout=OP_TIMEOUT)[g].exception(OP_TIMEOUT)
    assert err is not None and err.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND, err
    assert KafkaError.GROUP_ID_NOT_FOUND == GROUP_ID_NOT_FOUND
    listed = a.list_consumer_groups(request_timeout=OP_TIMEOUT).result(OP_TIMEOUT)
    assert g not in [x.group_id for x in listed.valid]
    assert _group_offsets_confluent(bootstrap, g, topic_name, 3) == {0: -1001, 1: -1001, 2: -1001}
    # Checked last so that the rest of the scenario runs either way.
    assert alter_active == [KafkaError.UNKNOWN_MEMBER_ID], alter_active
    assert empty_simple is False, "the Empty group lost its protocol type (is_simple_consumer_group)"


def _delete_offsets_kp(kp, g, tps):
    """kafka-python's delete_group_offsets; returns {partition: error code}."""
    res = kp.delete_group_offsets(g, tps)
    out = {}
    items = res.items() if isinstance(res, dict) else res
    for tp, err in items:
        code = err if isinstance(err, int) else (0 if err is None else getattr(err, "errno", err))
        out[tp.partition] = code
    return out


# 8 ------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["kill9", "sigterm"])
def test_committed_offsets_survive_restart(restartable_broker, how):
    broker = restartable_broker
    topic = f"grp-restart-{how}"
    create_topic(broker.bootstrap, topic, 4)
    want = _produce_keyed(broker.bootstrap, topic, 0, 400, 4)
    g = group_id("rs")
    c1 = TrackedConsumer(broker.bootstrap, g, [topic], "c1")
    try:
        poll_until([c1], lambda: len(c1.records) >= 200, timeout=45, what="200 records")
    finally:
        c1.close()
    before = committed(broker.bootstrap, g, topic, 4)
    assert before == _next_offsets(c1.records, 4), before
    if how == "kill9":
        broker.kill()
    else:
        assert broker.stop() in TERM_EXIT_CODES, broker.log_tail()
    broker.wait_port_closed()
    broker.start()
    assert committed(broker.bootstrap, g, topic, 4) == before
    c2 = TrackedConsumer(broker.bootstrap, g, [topic], "c2")
    try:
        poll_until([c2], lambda: len(c2.records) >= 200, timeout=60, what="the other 200")
        drain([c2], 1.0)
    finally:
        c2.close()
    assert set(c2.records) == want - set(c1.records) and len(c2.records) == 200
    assert committed(broker.bootstrap, g, topic, 4) == {p: 100 for p in range(4)}


# 10 -----------------------------------------------------------------------------------

def _coordinator(bootstrap, g):
    return coordinator(bootstrap, g)


def test_raw_group_errors(bootstrap):
    g = group_id("raw")
    meta = consumer_protocol_metadata(["raw-topic"])
    raw = _coordinator(bootstrap, g)
    try:
        # KIP-394: a new member without id is told its id.
        first = raw.join(g, "", protocols=[("range", meta)])
        assert first["error"] == MEMBER_ID_REQUIRED and first["member_id"], first
        j = raw.join(g, first["member_id"], protocols=[("range", meta)])
        assert j["error"] == 0, j
        me, gen = j["member_id"], j["generation"]
        assert me == first["member_id"] and j["leader"] == me and gen >= 1
        assert j["protocol"] == "range"
        assert [(m, i, md) for m, i, md in j["members"]] == [(me, None, meta)]
        s = raw.sync(g, gen, me, [(me, consumer_protocol_assignment("raw-topic", [0]))])
        assert s["error"] == 0 and s["assignment"] == consumer_protocol_assignment("raw-topic", [0])
        assert raw.heartbeat(g, gen, me) == 0

        # Unknown member: JoinGroup / SyncGroup / Heartbeat / LeaveGroup.
        assert raw.join(g, "nobody-1234", protocols=[("range", meta)])["error"] == UNKNOWN_MEMBER_ID
        assert raw.sync(g, gen, "nobody-1234")["error"] == UNKNOWN_MEMBER_ID
        assert raw.heartbeat(g, gen, "nobody-1234") == UNKNOWN_MEMBER_ID
        top, members = raw.leave(g, [("nobody-1234", None)])
        assert (top, members) == (0, [("nobody-1234", None, UNKNOWN_MEMBER_ID)])

        # Stale / future generation.
        assert raw.heartbeat(g, gen - 1, me) == ILLEGAL_GENERATION
        assert raw.heartbeat(g, gen + 1, me) == ILLEGAL_GENERATION
        assert raw.sync(g, gen + 1, me)["error"] == ILLEGAL_GENERATION

        # Wrong protocol type, or no common protocol, for the existing group.
        other = RawClient.to(bootstrap)
        try:
            bad = other.join(g, "", protocol_type="connect", protocols=[("range", meta)])
            assert bad["error"] == INCONSISTENT_GROUP_PROTOCOL, bad
            bad = other.join(g, "", protocols=[("roundrobin-only", meta)])
            assert bad["error"] == INCONSISTENT_GROUP_PROTOCOL, bad
            # Empty protocol list is inconsistent too.
            bad = other.join(g, "", protocols=[])
            assert bad["error"] == INCONSISTENT_GROUP_PROTOCOL, bad
        finally:
            other.close()

        # The group is still fine for its member.
        assert raw.heartbeat(g, gen, me) == 0
        d = raw.describe_group(g)
        assert (d["error"], d["state"], d["protocol_type"], d["protocol"]) == \
            (0, "Stable", "consumer", "range")
        assert [m["member_id"] for m in d["members"]] == [me]
        assert d["members"][0]["metadata"] == meta

        # Leave: the generation is over for it.
        top, members = raw.leave(g, [(me, None)])
        assert (top, members) == (0, [(me, None, 0)])
        assert raw.heartbeat(g, gen, me) == UNKNOWN_MEMBER_ID
        d = raw.describe_group(g)
        assert (d["error"], d["members"]) == (0, [])
    finally:
        raw.close()


def test_raw_second_member_triggers_rebalance(bootstrap):
    """A heartbeat during a rebalance answers REBALANCE_IN_PROGRESS; the old
    generation becomes ILLEGAL_GENERATION once the new one is formed."""
    g = group_id("raw2")
    meta = consumer_protocol_metadata(["raw-topic"])
    a = _coordinator(bootstrap, g)
    b = _coordinator(bootstrap, g)
    try:
        ja = a.join_new(g, protocols=[("range", meta)])
        assert ja["error"] == 0
        assert a.sync(g, ja["generation"], ja["member_id"], [(ja["member_id"], b"")])["error"] == 0
        # b's join parks until a rejoins.
        first = b.join(g, "", protocols=[("range", meta)])
        assert first["error"] == MEMBER_ID_REQUIRED
        corr = b.send(11, 5, RawClient.join_body(g, first["member_id"], "consumer",
                                                 [("range", meta)]))
        deadline = time.monotonic() + 10
        hb = 0
        while time.monotonic() < deadline:
            hb = a.heartbeat(g, ja["generation"], ja["member_id"])
            if hb == REBALANCE_IN_PROGRESS:
                break
            time.sleep(0.1)
        assert hb == REBALANCE_IN_PROGRESS
        ja2 = a.join(g, ja["member_id"], protocols=[("range", meta)])
        jb = RawClient.parse_join(b.receive(corr))
        assert ja2["error"] == 0 and jb["error"] == 0, (ja2, jb)
        assert ja2["generation"] == jb["generation"] == ja["generation"] + 1
        assert ja2["leader"] == ja["member_id"] and len(ja2["members"]) == 2
        assert jb["members"] == []
        assert a.heartbeat(g, ja["generation"], ja["member_id"]) == ILLEGAL_GENERATION
    finally:
        a.close()
        b.close()


@pytest.fixture
def small_group_broker():
    """A private spate with group_max_size = 2."""
    data = RUNS / f"spate-gmax-{group_id('d')}"
    RUNS.mkdir(parents=True, exist_ok=True)
    cfg = RUNS / (data.name + ".toml")
    cfg.write_text("group_max_size = 2\ngroup_initial_rebalance_delay_ms = 0\n")
    broker = ConfiguredBroker(data, free_port(), {"SPATE_CONFIG": str(cfg)})
    broker.start()
    yield broker
    broker.stop()
    shutil.rmtree(broker.data_dir, ignore_errors=True)
    cfg.unlink(missing_ok=True)


def test_group_max_size(small_group_broker):
    bs = small_group_broker.bootstrap
    g = group_id("max")
    meta = consumer_protocol_metadata(["raw-topic"])
    clients = [coordinator(bs, g) for _ in range(3)]
    try:
        ja = clients[0].join_new(g, protocols=[("range", meta)])
        assert ja["error"] == 0, ja
        assert clients[0].sync(g, ja["generation"], ja["member_id"], [])["error"] == 0
        # Second member: the rebalance needs a to rejoin.
        first = clients[1].join(g, "", protocols=[("range", meta)])
        assert first["error"] == MEMBER_ID_REQUIRED
        corr = clients[1].send(11, 5, RawClient.join_body(g, first["member_id"], "consumer",
                                                          [("range", meta)]))
        ja2 = clients[0].join(g, ja["member_id"], protocols=[("range", meta)])
        jb = RawClient.parse_join(clients[1].receive(corr))
        assert ja2["error"] == 0 and jb["error"] == 0, (ja2, jb)
        # The third is refused (on the first or the second step of its join).
        third = clients[2].join(g, "", protocols=[("range", meta)])
        if third["error"] == MEMBER_ID_REQUIRED:
            third = clients[2].join(g, third["member_id"], protocols=[("range", meta)])
        assert third["error"] == GROUP_MAX_SIZE_REACHED, third
        d = clients[0].describe_group(g)
        assert sorted(m["member_id"] for m in d["members"]) == \
            sorted([ja["member_id"], jb["member_id"]])
    finally:
        for c in clients:
            c.close()
