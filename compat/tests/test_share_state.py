"""The share coordinator (KIP-932) through the APIs brokers send it: InitializeShareGroupState,
ReadShareGroupState, WriteShareGroupState, DeleteShareGroupState and
ReadShareGroupStateSummary, encoded by hand (flexible versions). A share-partition's state
is initialized, written twice (a ShareUpdate each) and read back combined as Kafka
combines state batches; old leader and state epochs are fenced; a delete forgets it. The
state survives a kill -9 of the broker, and in a 3-node cluster the kill of the leader of
its `__share_group_state` partition (the new leader loads it from the log)."""
import base64
import struct
import time
import uuid

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import EXTERNAL, RUNS, SpateBroker, free_port
from flexraw import TAGS, FlexClient, carray, describe_topic_partitions
from grouputil import cstr, uvarint
from kafkautil import create_topic, watermarks

NONE, UNKNOWN_TOPIC_OR_PARTITION, NOT_COORDINATOR = 0, 3, 16
COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE = 14, 15
INVALID_REQUEST, FENCED_LEADER_EPOCH, FENCED_STATE_EPOCH = 42, 74, 124
AVAILABLE, ACKNOWLEDGED, ARCHIVED = 0, 2, 4
# Answers that mean "ask again" (the coordinator is moving or loading).
MOVING = (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE)


def _partitions(tid, parts):
    return carray([tid.bytes + carray(parts) + TAGS])


def _results(r, partition):
    """The response's per-partition results: [(topic id, partition reader output)]."""
    out = []
    for _ in range(r.uvarint() - 1):
        tid = r.uuid()
        for _ in range(r.uvarint() - 1):
            out.append((tid, partition(r)))
        r.tags()
    r.tags()
    return out


def _plain(r):
    p = {"partition": r.i32(), "error": r.i16(), "message": r.str()}
    r.tags()
    return p


def initialize(c, group, tid, partition, state_epoch, start_offset):
    body = cstr(group) + _partitions(tid, [struct.pack(">iiq", partition, state_epoch, start_offset) + TAGS]) + TAGS
    return _results(c.call(83, 0, body), _plain)[0][1]


def read(c, group, tid, partition, leader_epoch):
    body = cstr(group) + _partitions(tid, [struct.pack(">ii", partition, leader_epoch) + TAGS]) + TAGS

    def result(r):
        p = {"partition": r.i32(), "error": r.i16(), "message": r.str(), "state_epoch": r.i32(),
             "start_offset": r.take(">q")}
        batches = []
        for _ in range(r.uvarint() - 1):
            batches.append((r.take(">q"), r.take(">q"), r.i8(), r.i16()))
            r.tags()
        p["batches"] = batches
        r.tags()
        return p

    return _results(c.call(84, 0, body), result)[0][1]


def write(c, group, tid, partition, state_epoch, leader_epoch, start_offset, batches,
          delivery_complete_count=-1):
    enc = [struct.pack(">qqbh", *b) + TAGS for b in batches]
    part = struct.pack(">iiiqi", partition, state_epoch, leader_epoch, start_offset,
                       delivery_complete_count) + carray(enc) + TAGS
    body = cstr(group) + _partitions(tid, [part]) + TAGS
    return _results(c.call(85, 1, body), _plain)[0][1]


def delete(c, group, tid, partition):
    body = cstr(group) + _partitions(tid, [struct.pack(">i", partition) + TAGS]) + TAGS
    return _results(c.call(86, 0, body), _plain)[0][1]


def summary(c, group, tid, partition, leader_epoch=0):
    body = cstr(group) + _partitions(tid, [struct.pack(">ii", partition, leader_epoch) + TAGS]) + TAGS

    def result(r):
        p = {"partition": r.i32(), "error": r.i16(), "message": r.str(), "state_epoch": r.i32(),
             "leader_epoch": r.i32(), "start_offset": r.take(">q"),
             "delivery_complete_count": r.i32()}
        r.tags()
        return p

    return _results(c.call(87, 1, body), result)[0][1]


def topic_id(bootstrap, topic):
    c = FlexClient(bootstrap)
    try:
        topics, _ = describe_topic_partitions(c, [topic])
        return topics[0]["id"]
    finally:
        c.close()


def coordinator_partition(group, tid, partition, count):
    """Kafka's __share_group_state partition of a share-partition: Utils.abs of the Java
    hash of "group:topicId:partition" (the topic id in URL-safe base64), mod count."""
    key = f"{group}:{base64.urlsafe_b64encode(tid.bytes).decode().rstrip('=')}:{partition}"
    data = key.encode("utf-16-be")
    h = 0
    for (u,) in struct.iter_unpack(">H", data):
        h = (h * 31 + u) & 0xFFFFFFFF
    signed = h - (1 << 32) if h >= 1 << 31 else h
    return (0 if signed == -(1 << 31) else abs(signed)) % count


def until_served(what, call, timeout=60):
    """Calls `call` until its answer is not "ask again"; that answer."""
    deadline = time.monotonic() + timeout
    while True:
        answer = call()
        if answer is not None and answer["error"] not in MOVING:
            return answer
        assert time.monotonic() < deadline, f"{what}: still {answer}"
        time.sleep(0.3)


def coordinator_client(bootstraps, group, tid, partition, timeout=60):
    """A client connected to the broker that coordinates the share-partition (asking each
    broker until one does not send us elsewhere), and that broker's address."""
    deadline = time.monotonic() + timeout
    while True:
        for b in bootstraps:
            try:
                c = FlexClient(b, timeout=10)
            except OSError:
                continue
            if EXTERNAL:
                # Kafka creates __share_group_state on the first FindCoordinator for a
                # share key (type 2), which its persister sends; Spate's persister reads
                # the metadata instead and creates it on the first share-state request.
                key = f"{group}:{base64.urlsafe_b64encode(tid.bytes).decode().rstrip('=')}:{partition}"
                c.call(10, 6, struct.pack(">b", 2) + carray([cstr(key)]) + TAGS)
            answer = summary(c, group, tid, partition)
            if answer["error"] not in MOVING:
                return c, b
            c.close()
        assert time.monotonic() < deadline, "no broker coordinates the share-partition"
        time.sleep(0.3)


def test_initialize_write_read_fence_and_delete(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 2)
    tid = topic_id(bootstrap, topic_name)
    group = f"share-{topic_name}"
    c, _ = coordinator_client([bootstrap], group, tid, 0)
    try:
        # Nothing yet: a summary says so, a read or a write is refused.
        s = summary(c, group, tid, 0)
        assert (s["error"], s["start_offset"]) == (NONE, -1)
        assert read(c, group, tid, 0, 0)["error"] == INVALID_REQUEST
        assert write(c, group, tid, 0, 0, 0, 0, [])["error"] == INVALID_REQUEST

        assert initialize(c, group, tid, 0, 0, 0)["error"] == NONE
        # The first read of leader epoch 1 records it.
        r = read(c, group, tid, 0, 1)
        assert (r["error"], r["state_epoch"], r["start_offset"], r["batches"]) == (NONE, 0, 0, [])

        # Two writes: ten records delivered once, then the start moves to 5 and 5-6 are
        # acknowledged. Read back combined: acknowledged 5-6, available 7-9.
        assert write(c, group, tid, 0, 0, 1, 0, [(0, 9, AVAILABLE, 1)])["error"] == NONE
        assert write(c, group, tid, 0, 0, 1, 5, [(5, 6, ACKNOWLEDGED, 1)], 2)["error"] == NONE
        r = read(c, group, tid, 0, 1)
        assert r["error"] == NONE
        assert (r["state_epoch"], r["start_offset"]) == (0, 5)
        assert r["batches"] == [(5, 6, ACKNOWLEDGED, 1), (7, 9, AVAILABLE, 1)]
        s = summary(c, group, tid, 0)
        assert (s["error"], s["state_epoch"], s["leader_epoch"], s["start_offset"],
                s["delivery_complete_count"]) == (NONE, 0, 1, 5, 2)
        # A higher delivery count wins over the batch it overlaps; an older start offset
        # does not move the start back.
        assert write(c, group, tid, 0, 0, 1, 3, [(6, 8, ARCHIVED, 2)])["error"] == NONE
        r = read(c, group, tid, 0, 1)
        assert (r["start_offset"], r["batches"]) == \
            (5, [(5, 5, ACKNOWLEDGED, 1), (6, 8, ARCHIVED, 2), (9, 9, AVAILABLE, 1)])

        # An older leader is fenced, reading or writing.
        assert read(c, group, tid, 0, 0)["error"] == FENCED_LEADER_EPOCH
        assert write(c, group, tid, 0, 0, 0, 5, [])["error"] == FENCED_LEADER_EPOCH
        # A new state epoch (the group's offsets were reset): older ones are fenced.
        assert initialize(c, group, tid, 0, 2, 20)["error"] == NONE
        assert write(c, group, tid, 0, 1, 1, 20, [])["error"] == FENCED_STATE_EPOCH
        assert initialize(c, group, tid, 0, 1, 0)["error"] == FENCED_STATE_EPOCH
        r = read(c, group, tid, 0, 1)
        assert (r["error"], r["state_epoch"], r["start_offset"], r["batches"]) == (NONE, 2, 20, [])
        # Bad input.
        assert write(c, group, tid, 0, 2, -1, 20, [])["error"] == INVALID_REQUEST
        assert read(c, group, uuid.uuid4(), 0, 1)["error"] in (INVALID_REQUEST, UNKNOWN_TOPIC_OR_PARTITION)
        unknown = uuid.uuid4()
        assert initialize(c, group, unknown, 0, 0, 0)["error"] == UNKNOWN_TOPIC_OR_PARTITION

        # Delete: the state is gone (read refused, summary empty); deleting again is fine.
        assert delete(c, group, tid, 0)["error"] == NONE
        assert read(c, group, tid, 0, 1)["error"] == INVALID_REQUEST
        s = summary(c, group, tid, 0)
        assert (s["error"], s["start_offset"]) == (NONE, -1)
        assert delete(c, group, tid, 0)["error"] == NONE
        # Another partition of the topic is its own share-partition.
        assert read(c, group, tid, 1, 0)["error"] == INVALID_REQUEST
    finally:
        c.close()


def _written_state(c, group, tid, partition):
    assert initialize(c, group, tid, partition, 3, 100)["error"] == NONE
    assert read(c, group, tid, partition, 4)["error"] == NONE
    assert write(c, group, tid, partition, 3, 4, 100,
                 [(100, 119, AVAILABLE, 1), (120, 129, AVAILABLE, 2)])["error"] == NONE
    assert write(c, group, tid, partition, 3, 4, 105, [(110, 114, ACKNOWLEDGED, 1)], 5)["error"] == NONE
    r = read(c, group, tid, partition, 4)
    assert r["error"] == NONE
    return r


def sasl_plain(c, user, password):
    """Authenticates the raw client: SaslHandshake v1 (request header v1), then
    SaslAuthenticate v2 with a PLAIN token."""
    c.corr += 1
    frame = struct.pack(">hhih", 17, 1, c.corr, len(c.client_id)) + c.client_id
    frame += struct.pack(">h", 5) + b"PLAIN"
    c.sock.sendall(struct.pack(">i", len(frame)) + frame)
    data = c._recv(struct.unpack(">i", c._recv(4))[0])
    assert struct.unpack_from(">ih", data) == (c.corr, NONE)
    token = b"\0" + user.encode() + b"\0" + password.encode()
    r = c.call(36, 2, uvarint(len(token) + 1) + token + TAGS)
    assert r.i16() == NONE, r.str()


@pytest.mark.skipif(bool(EXTERNAL), reason="starts its own broker")
def test_share_state_apis_need_cluster_action(tmp_path, topic_name):
    """With the authorizer on, a caller without CLUSTER_ACTION on the cluster gets
    CLUSTER_AUTHORIZATION_FAILED for every share-partition; a super user is served."""
    port = free_port()
    conf = tmp_path / "spate.toml"
    conf.write_text(f"""
listeners = "SASL_PLAINTEXT://127.0.0.1:{port}"
[sasl]
enabled_mechanisms = ["PLAIN"]
[sasl.plain.users]
admin = "admin-secret"
bob = "bob-secret"
[authorizer]
enable = true
super_users = "User:admin"
""")
    broker = SpateBroker(RUNS / f"spate-{uuid.uuid4().hex[:10]}", port, ["--config", str(conf)],
                         listen_flag=False)
    broker.start()
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap, "security.protocol": "SASL_PLAINTEXT",
                             "sasl.mechanisms": "PLAIN", "sasl.username": "admin",
                             "sasl.password": "admin-secret"})
        for f in admin.create_topics([NewTopic(topic_name, 1, 1)]).values():
            f.result(timeout=30)
        group = f"share-{topic_name}"
        a = FlexClient(broker.bootstrap)
        b = FlexClient(broker.bootstrap)
        try:
            sasl_plain(a, "admin", "admin-secret")
            sasl_plain(b, "bob", "bob-secret")
            tid = describe_topic_partitions(a, [topic_name])[0][0]["id"]
            CLUSTER_AUTHORIZATION_FAILED = 31
            assert initialize(b, group, tid, 0, 0, 0)["error"] == CLUSTER_AUTHORIZATION_FAILED
            assert summary(b, group, tid, 0)["error"] == CLUSTER_AUTHORIZATION_FAILED
            assert read(b, group, tid, 0, 0)["error"] == CLUSTER_AUTHORIZATION_FAILED
            assert until_served("initialize", lambda: initialize(a, group, tid, 0, 0, 0))["error"] == NONE
            assert read(a, group, tid, 0, 0)["error"] == NONE
            assert write(b, group, tid, 0, 0, 0, 0, [])["error"] == CLUSTER_AUTHORIZATION_FAILED
            assert delete(b, group, tid, 0)["error"] == CLUSTER_AUTHORIZATION_FAILED
            assert read(a, group, tid, 0, 0)["error"] == NONE
        finally:
            a.close()
            b.close()
    finally:
        broker.stop()


EXPECTED = {"state_epoch": 3, "start_offset": 105,
            "batches": [(105, 109, AVAILABLE, 1), (110, 114, ACKNOWLEDGED, 1),
                        (115, 119, AVAILABLE, 1), (120, 129, AVAILABLE, 2)]}


def test_state_survives_a_kill9(restartable_broker, topic_name):
    broker = restartable_broker
    create_topic(broker.bootstrap, topic_name, 1)
    tid = topic_id(broker.bootstrap, topic_name)
    group = f"share-{topic_name}"
    c, _ = coordinator_client([broker.bootstrap], group, tid, 0)
    try:
        r = _written_state(c, group, tid, 0)
        assert {k: r[k] for k in EXPECTED} == EXPECTED
    finally:
        c.close()
    broker.kill()
    broker.wait_port_closed()
    broker.start()
    c, _ = coordinator_client([broker.bootstrap], group, tid, 0)
    try:
        r = until_served("read after restart", lambda: read(c, group, tid, 0, 4))
        assert r["error"] == NONE
        assert {k: r[k] for k in EXPECTED} == EXPECTED
        # The leader epoch survived too.
        assert read(c, group, tid, 0, 3)["error"] == FENCED_LEADER_EPOCH
    finally:
        c.close()


@pytest.mark.skipif(bool(EXTERNAL), reason="starts its own broker")
def test_pruned_records_leave_the_state_whole(monkeypatch, topic_name):
    """A snapshot every 3 updates and pruning every 200 ms: the records below the oldest
    latest snapshot are deleted (the partition's log start moves up), a deleted
    share-partition's records go entirely, and the state replays whole after kill -9."""
    cfg = RUNS / f"share-prune-{uuid.uuid4().hex[:8]}.toml"
    cfg.write_text("share_coordinator_state_topic_num_partitions = 1\n"
                   "share_coordinator_snapshot_update_records_per_snapshot = 3\n"
                   "share_coordinator_state_topic_prune_interval_ms = 200\n")
    monkeypatch.setenv("SPATE_CONFIG", str(cfg))
    broker = SpateBroker(RUNS / f"spate-{uuid.uuid4().hex[:10]}", free_port())
    broker.start()
    try:
        create_topic(broker.bootstrap, topic_name, 2)
        tid = topic_id(broker.bootstrap, topic_name)
        group = f"share-{topic_name}"
        c, _ = coordinator_client([broker.bootstrap], group, tid, 0)
        try:
            # Partition 1's state is written, then deleted: nothing of it is needed.
            assert initialize(c, group, tid, 1, 0, 0)["error"] == NONE
            assert write(c, group, tid, 1, 0, 0, 0, [(0, 4, AVAILABLE, 1)])["error"] == NONE
            assert delete(c, group, tid, 1)["error"] == NONE
            assert initialize(c, group, tid, 0, 0, 0)["error"] == NONE
            for i in range(20):
                # Offset i acknowledged, the start following two behind.
                assert write(c, group, tid, 0, 0, 0, max(0, i - 2),
                             [(i, i, ACKNOWLEDGED, 1), (i + 1, i + 5, AVAILABLE, 1)])["error"] == NONE
            before = read(c, group, tid, 0, 0)
            assert before["error"] == NONE
            assert before["start_offset"] == 17
            assert before["batches"] == [(17, 19, ACKNOWLEDGED, 1), (20, 24, AVAILABLE, 1)]
        finally:
            c.close()
        # 24 records written; the latest snapshot of partition 0 is among the last few.
        deadline = time.monotonic() + 30
        while watermarks(broker.bootstrap, "__share_group_state", 0)[0] < 18:
            assert time.monotonic() < deadline, watermarks(broker.bootstrap, "__share_group_state", 0)
            time.sleep(0.2)
        broker.kill()
        broker.wait_port_closed()
        broker.start()
        c, _ = coordinator_client([broker.bootstrap], group, tid, 0)
        try:
            after = until_served("read after restart", lambda: read(c, group, tid, 0, 0))
            assert after == before
            assert read(c, group, tid, 1, 0)["error"] == INVALID_REQUEST
        finally:
            c.close()
    finally:
        broker.stop()


@pytest.mark.timeout(300)
@pytest.mark.skipif(bool(EXTERNAL), reason="starts its own cluster")
def test_state_moves_with_its_partition_in_a_cluster():
    from test_cluster import Cluster, full_isr, restarted

    # test_cluster's settings give __share_group_state 6 partitions.
    cluster = Cluster()
    cluster.run("start")
    try:
        bootstraps = [cluster.bootstrap(n) for n in range(3)]
        admin = AdminClient({"bootstrap.servers": bootstraps[0]})
        topic, group = "share-state-failover", "share-failover-group"
        for f in admin.create_topics([NewTopic(topic, 1, 3)]).values():
            f.result(timeout=30)
        tid = topic_id(bootstraps[0], topic)
        # The first request creates __share_group_state (three replicas).
        c, at = coordinator_client(bootstraps, group, tid, 0, timeout=90)
        try:
            r = _written_state(c, group, tid, 0)
            assert {k: r[k] for k in EXPECTED} == EXPECTED
        finally:
            c.close()
        index = coordinator_partition(group, tid, 0, 6)
        full_isr(admin, "__share_group_state", [index])
        md = admin.list_topics("__share_group_state", timeout=10)
        victim = md.topics["__share_group_state"].partitions[index].leader
        assert bootstraps[victim] == at
        cluster.run("kill", victim)
        try:
            survivors = [b for n, b in enumerate(bootstraps) if n != victim]
            c, at = coordinator_client(survivors, group, tid, 0, timeout=90)
            try:
                r = until_served("read on the new coordinator", lambda: read(c, group, tid, 0, 4))
                assert r["error"] == NONE
                assert {k: r[k] for k in EXPECTED} == EXPECTED
                # It goes on from there: a new leader epoch, a write, the old leader fenced.
                assert read(c, group, tid, 0, 5)["error"] == NONE
                assert write(c, group, tid, 0, 3, 5, 105, [(105, 109, ARCHIVED, 1)])["error"] == NONE
                assert read(c, group, tid, 0, 5)["batches"][0] == (105, 109, ARCHIVED, 1)
                assert read(c, group, tid, 0, 4)["error"] == FENCED_LEADER_EPOCH
            finally:
                c.close()
        finally:
            restarted(cluster, victim)
    finally:
        cluster.run("stop")
