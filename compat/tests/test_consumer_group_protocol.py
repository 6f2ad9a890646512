"""KIP-848 consumer groups (group.protocol=consumer): the Java KafkaConsumer, librdkafka
(confluent-kafka), the Kafka CLI, a broker restart, and the heartbeat's error codes on the
raw protocol. The raw-protocol expectations (codes and messages) were checked against
Apache Kafka 4.4.0 (compat/reference-kafka.sh; run this file with
SPATE_COMPAT_BOOTSTRAP=127.0.0.1:39092 to check them again: the tests that need a broker
of their own, with a short session timeout or a restart, skip then)."""
import json
import os
import queue
import subprocess
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, TopicCollection
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

from conftest import COMPAT, EXTERNAL, ROOT, RUNS, free_port
from flexraw import FlexClient, consumer_group_heartbeat as heartbeat
from grouputil import (ConfiguredBroker, consumer_protocol_metadata, coordinator, group_id,
                       offset_commit)
from kafkautil import (JAVA_JAR, admin, create_topic, go_program, java_jar, produce, run_json,
                       wait_topic)
from test_kafka_cli import kafka_libs, tool  # noqa: F401 (kafka_libs is a fixture)

# A short session so that a killed member's partitions move quickly (Kafka's default
# is 45 s).
SESSION_MS = 6000
HEARTBEAT_MS = 500
DEADLINE = 90
CONFIG = f"""
group_consumer_session_timeout_ms = {SESSION_MS}
group_consumer_min_session_timeout_ms = 1000
group_consumer_heartbeat_interval_ms = {HEARTBEAT_MS}
group_consumer_min_heartbeat_interval_ms = 100
group_initial_rebalance_delay_ms = 0
"""
FENCED_MEMBER_EPOCH = 110
UNKNOWN_MEMBER_ID = 25
UNSUPPORTED_ASSIGNOR = 112
INVALID_REGULAR_EXPRESSION = 128
INVALID_REQUEST = 42
GROUP_ID_NOT_FOUND = 69
INCONSISTENT_GROUP_PROTOCOL = 23
STALE_MEMBER_EPOCH = 113


def _configured_broker(name, extra=""):
    RUNS.mkdir(parents=True, exist_ok=True)
    data = RUNS / f"spate-{name}-{uuid.uuid4().hex[:10]}"
    cfg = RUNS / (data.name + ".toml")
    # `extra` may open a [section]: it goes last.
    cfg.write_text(CONFIG + extra)
    return ConfiguredBroker(data, free_port(), {"SPATE_CONFIG": str(cfg)})


@pytest.fixture(scope="module")
def cg_broker():
    """A spate with a short consumer-group session timeout (None against an external
    broker)."""
    if EXTERNAL:
        yield None
        return
    broker = _configured_broker("cg")
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def cg_bootstrap(cg_broker):
    return EXTERNAL if cg_broker is None else cg_broker.bootstrap


def new_topic(bootstrap, partitions, prefix="cgp"):
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, name, partitions)
    wait_topic(bootstrap, name, partitions)
    return name


def topic_id(bootstrap, name):
    a = admin(bootstrap)
    md = a.describe_topics(TopicCollection([name]))[name].result()
    msb = md.topic_id.get_most_significant_bits() & (1 << 64) - 1
    lsb = md.topic_id.get_least_significant_bits() & (1 << 64) - 1
    return uuid.UUID(int=msb << 64 | lsb)


def flex(bootstrap, group):
    coordinator(bootstrap, group).close()
    return FlexClient(bootstrap)


def join(c, group, topics, **kw):
    member = str(uuid.uuid4())
    r = heartbeat(c, group, member, 0, topics=topics, rebalance_timeout_ms=30000, owned={}, **kw)
    return member, r


# --- raw protocol -----------------------------------------------------------------------

def test_heartbeat_errors(cg_bootstrap):
    topic = new_topic(cg_bootstrap, 4)
    g = group_id("cgp")
    c = flex(cg_bootstrap, g)
    member, r = join(c, g, [topic])
    assert r["error"] == 0 and r["member_id"] == member and r["epoch"] > 0
    assert r["interval"] == (HEARTBEAT_MS if not EXTERNAL else 5000)
    assert r["assignment"] == {topic_id(cg_bootstrap, topic): [0, 1, 2, 3]}

    greater = heartbeat(c, g, member, r["epoch"] + 1)
    assert greater["error"] == FENCED_MEMBER_EPOCH
    assert greater["message"].startswith(
        f"The consumer group member has a greater member epoch ({r['epoch'] + 1})")
    assert heartbeat(c, g, "nope", 1) == {
        "error": UNKNOWN_MEMBER_ID, "message": f"Member nope is not a member of group {g}.",
        "member_id": None, "epoch": 0, "interval": 0, "assignment": None}
    assert heartbeat(c, g, member, 0, topics=[topic], rebalance_timeout_ms=30000, owned={},
                     assignor="foo")["error"] == UNSUPPORTED_ASSIGNOR
    bad = heartbeat(c, g + "-x", str(uuid.uuid4()), 0, topics=[topic], assignor="foo",
                    rebalance_timeout_ms=30000, owned={})
    assert (bad["error"], bad["message"]) == (
        UNSUPPORTED_ASSIGNOR, "ServerAssignor foo is not supported. Supported assignors: uniform, range.")
    regex = heartbeat(c, g + "-y", str(uuid.uuid4()), 0, regex="(", rebalance_timeout_ms=30000, owned={})
    assert regex["error"] == INVALID_REGULAR_EXPRESSION
    assert regex["message"].startswith("SubscribedTopicRegex `(` is not a valid regular expression: ")
    for kwargs, message in [
        (dict(member_id="", epoch=0, topics=[topic], rebalance_timeout_ms=30000, owned={}),
         "MemberId can't be empty."),
        (dict(member_id="m", epoch=0, rebalance_timeout_ms=30000, owned={}),
         "Either SubscribedTopicNames or SubscribedTopicRegex must be non-null when (re-)joining."),
        (dict(member_id="m", epoch=0, topics=[topic], rebalance_timeout_ms=30000),
         "TopicPartitions must be empty when (re-)joining."),
        (dict(member_id="m", epoch=-2), "InstanceId can't be null."),
    ]:
        mid, epoch = kwargs.pop("member_id"), kwargs.pop("epoch")
        out = heartbeat(c, g + "-z", mid, epoch, **kwargs)
        assert (out["error"], out["message"]) == (INVALID_REQUEST, message)
    # Version 0: the coordinator names a joining member.
    v0 = heartbeat(c, g + "-v0", "", 0, topics=[topic], rebalance_timeout_ms=30000, owned={}, version=0)
    assert v0["error"] == 0 and len(v0["member_id"]) == 22
    # A heartbeat (not a join) for a group that does not exist.
    assert heartbeat(c, g + "-none", "m", 3)["error"] == GROUP_ID_NOT_FOUND

    left = heartbeat(c, g, member, -1)
    assert (left["error"], left["member_id"], left["epoch"]) == (0, member, -1)
    assert heartbeat(c, g, member, -1)["error"] == UNKNOWN_MEMBER_ID
    c.close()


def until(what, call, cond, timeout=30):
    """Heartbeat with `call` until `cond` holds for its answer (Kafka 4.4 computes a new
    target assignment up to group.consumer.assignment.interval.ms later; Spate at once)."""
    deadline = time.monotonic() + timeout
    while True:
        r = call()
        assert r["error"] == 0, r
        if cond(r):
            return r
        assert time.monotonic() < deadline, f"{what}: {r}"
        time.sleep(0.2)


def test_revocation_before_assignment(cg_bootstrap):
    """The second member gets nothing until the first has given up what it must lose;
    the first keeps its epoch until it reports the revocation."""
    topic = new_topic(cg_bootstrap, 4)
    tid = topic_id(cg_bootstrap, topic)
    g = group_id("cgp")
    c = flex(cg_bootstrap, g)
    a, ra = join(c, g, [topic])
    assert ra["assignment"] == {tid: [0, 1, 2, 3]}
    b, rb = join(c, g, [topic])
    assert rb["error"] == 0
    assert rb["assignment"] == {}, "partitions still owned by a are not given to b"
    # a learns it must revoke: its assignment shrinks, its epoch stays.
    ra2 = until("a asked to revoke", lambda: heartbeat(c, g, a, ra["epoch"], owned={tid: [0, 1, 2, 3]}),
                lambda r: r["assignment"] is not None)
    assert ra2["epoch"] == ra["epoch"]
    kept = ra2["assignment"][tid]
    assert len(kept) == 2 and set(kept) < {0, 1, 2, 3}
    # While a still owns them, b gets none of them.
    rb1 = heartbeat(c, g, b, rb["epoch"], owned={})
    assert rb1["error"] == 0 and rb1["assignment"] in (None, {})
    # a reports the revocation and moves to the new epoch; then b gets the rest.
    ra3 = heartbeat(c, g, a, ra2["epoch"], owned={tid: kept})
    assert ra3["error"] == 0 and ra3["epoch"] > ra["epoch"]
    rb2 = until("b assigned", lambda: heartbeat(c, g, b, rb1["epoch"], owned={}),
                lambda r: bool(r["assignment"]))
    assert rb2["assignment"] == {tid: sorted({0, 1, 2, 3} - set(kept))}
    assert rb2["epoch"] == ra3["epoch"]
    # The previous epoch passes only while the member owns no more than its assignment
    # (it missed the answer that moved it on); owning more, it is fenced.
    assert heartbeat(c, g, a, ra["epoch"], owned={tid: kept})["error"] == 0
    assert heartbeat(c, g, a, ra["epoch"], owned={tid: [0, 1, 2, 3]})["error"] == FENCED_MEMBER_EPOCH
    c.close()


def test_protocol_clash_with_classic_group(cg_bootstrap):
    """A classic group whose members do not use the consumer protocol (here Connect's) is
    not a consumer group, and a consumer group with members refuses such a JoinGroup.
    (A classic group of consumer-protocol members is converted instead: the online
    upgrade, test_consumer_group_migration.py.)"""
    topic = new_topic(cg_bootstrap, 1)
    g = group_id("cgp-classic")
    raw = coordinator(cg_bootstrap, g)
    protocols = [("range", consumer_protocol_metadata([topic]))]
    joined = raw.join_new(g, protocol_type="connect", protocols=protocols)
    assert joined["error"] == 0
    c = FlexClient(cg_bootstrap)
    _, r = join(c, g, [topic])
    assert (r["error"], r["message"]) == (
        GROUP_ID_NOT_FOUND, f"Cannot upgrade classic group {g} to consumer group because the group "
        "does not use the consumer embedded protocol.")
    g2 = group_id("cgp-consumer")
    _, r2 = join(c, g2, [topic])
    assert r2["error"] == 0
    raw2 = coordinator(cg_bootstrap, g2)
    clash = raw2.join_new(g2, protocol_type="connect", protocols=protocols)
    assert clash["error"] == INCONSISTENT_GROUP_PROTOCOL
    # DescribeGroups (v3) does not see a consumer group: Dead, as an unknown group.
    described = raw2.describe_group(g2)
    assert (described["error"], described["state"], described["protocol_type"],
            described["members"]) == (0, "Dead", "", [])
    raw.close()
    raw2.close()
    c.close()


# --- the Java client ----------------------------------------------------------------------

class JavaMember:
    """A ConsumerProtocolMember process; its JSON lines arrive on a queue."""

    def __init__(self, bootstrap, group, mode, what, instance=None, protocol="consumer"):
        java_jar()
        cmd = ["java", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp", str(JAVA_JAR),
               "dev.spate.compat.ConsumerProtocolMember", bootstrap, group, mode, what]
        if instance:
            cmd.append(instance)
        RUNS.mkdir(parents=True, exist_ok=True)
        self.log_path = RUNS / f"java-member-{group}-{uuid.uuid4().hex[:6]}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=log, text=True,
                                         env={**os.environ, "GROUP_PROTOCOL": protocol})
        self.lines = queue.Queue()
        self.assigned = None
        self.records = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                pass

    def pump(self):
        while True:
            try:
                msg = self.lines.get_nowait()
            except queue.Empty:
                return
            if "assigned" in msg:
                self.assigned = set(msg["assigned"])
            elif "record" in msg:
                self.records.append(msg["record"])

    def close(self):
        """Leave the group (epoch -1) and exit."""
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(60)

    def kill9(self):
        self.proc.kill()
        self.proc.wait(10)


def wait_for(members, cond, what, timeout=DEADLINE):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in members:
            m.pump()
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: " +
                         ", ".join(str(sorted(m.assigned or ())) for m in members))


def partitions(topic, n):
    return {f"{topic}-{p}" for p in range(n)}


def owns_exactly_once(members, wanted):
    sets = [m.assigned or set() for m in members]
    return sum(len(s) for s in sets) == len(wanted) and set().union(*sets) == wanted


def test_java_scale_out_leave_and_kill(cg_broker, cg_bootstrap):
    if cg_broker is None:
        pytest.skip("needs a broker with a short session timeout")
    topic = new_topic(cg_bootstrap, 6)
    g = group_id("cgp-java")
    all_parts = partitions(topic, 6)
    m1 = JavaMember(cg_bootstrap, g, "topics", topic)
    members = [m1]
    try:
        wait_for(members, lambda: m1.assigned == all_parts, "one member owning all")
        m2 = JavaMember(cg_bootstrap, g, "topics", topic)
        m3 = JavaMember(cg_bootstrap, g, "topics", topic)
        members += [m2, m3]
        wait_for(members, lambda: owns_exactly_once(members, all_parts)
                 and all(len(m.assigned) == 2 for m in members), "three members with two each")
        # m2 leaves: m1 and m3 split its partitions.
        m2.close()
        rest = [m1, m3]
        wait_for(rest, lambda: owns_exactly_once(rest, all_parts)
                 and sorted(len(m.assigned) for m in rest) == [3, 3], "two members with three each")
        # m3 is killed: after the session timeout m1 owns everything again.
        killed = time.monotonic()
        m3.kill9()
        wait_for([m1], lambda: m1.assigned == all_parts, "m1 owning all after the kill")
        assert time.monotonic() - killed >= SESSION_MS / 1000 - 1
        # The group as the CLI sees it.
    finally:
        for m in members:
            m.kill9()


def test_java_regex_picks_up_new_topic(cg_bootstrap):
    prefix = f"cgre-{uuid.uuid4().hex[:6]}"
    first = new_topic(cg_bootstrap, 2, prefix)
    g = group_id("cgp-regex")
    m = JavaMember(cg_bootstrap, g, "regex", f"{prefix}-.*")
    try:
        wait_for([m], lambda: m.assigned == partitions(first, 2), "the first topic's partitions")
        second = new_topic(cg_bootstrap, 3, prefix)
        wait_for([m], lambda: m.assigned == partitions(first, 2) | partitions(second, 3),
                 "the new topic's partitions too")
    finally:
        m.close()


# --- librdkafka -----------------------------------------------------------------------------

def test_confluent_exactly_once_across_rebalance(cg_bootstrap):
    topic = new_topic(cg_bootstrap, 4)
    g = group_id("cgp-rdk")
    n = 2000
    produce(cg_bootstrap, topic, [{"key": str(i).encode(), "value": str(i).encode()} for i in range(n)])
    conf = {"bootstrap.servers": cg_bootstrap, "group.id": g, "group.protocol": "consumer",
            "auto.offset.reset": "earliest", "enable.auto.commit": False}
    seen = []
    c1 = Consumer(conf)
    c1.subscribe([topic])
    c2 = None
    deadline = time.monotonic() + DEADLINE
    try:
        while len(seen) < n and time.monotonic() < deadline:
            for c in filter(None, (c1, c2)):
                for msg in c.consume(100, 0.2):
                    if msg.error():
                        assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
                        continue
                    seen.append(int(msg.value()))
                    c.commit(msg, asynchronous=False)
            if c2 is None and len(seen) >= n // 4:
                c2 = Consumer(conf)
                c2.subscribe([topic])
        assert sorted(seen) == list(range(n)), f"{len(seen)} read, {len(set(seen))} distinct"
    finally:
        c1.close()
        if c2 is not None:
            c2.close()


# --- franz-go ------------------------------------------------------------------------------

def test_franzgo_server_side_balancer(cg_bootstrap):
    """franz-go 1.22's kgo.ServerSideBalancer (KIP-848): c1 reads half alone, c2 joins,
    every record is read once, the partitions end split 2/2, offsets committed to the
    end, and kadm deletes the group once both left."""
    binary = go_program(COMPAT / "gogroups", ROOT / "target" / "compat" / "franzgo-groups")
    topic = f"cgp-franz-{uuid.uuid4().hex[:8]}"
    g = group_id("cgp-franz")
    r = run_json([binary, cg_bootstrap, "group848", topic, g, "4", "400"], timeout=130)
    seen = {}
    for p, o, v in r["records"]:
        seen.setdefault((p, o), []).append(v)
    assert {k: v for k, v in seen.items() if len(v) > 1} == {}
    assert sorted(seen) == [(p, o) for p in range(4) for o in range(100)]
    c1, c2 = set(r["c1_final"]), set(r["c2_final"])
    assert len(c1) == 2 and len(c2) == 2 and c1 | c2 == {0, 1, 2, 3}
    assert not [e for e in r["c1_events"] + r["c2_events"] if e[0] == "lost"]
    assert r["committed"] == {str(p): 100 for p in range(4)}
    # kadm describes with DescribeGroups, which does not see consumer groups: Dead. Kafka
    # 4.4 answers v6 with GROUP_ID_NOT_FOUND too, and kadm then reports no lag; Spate
    # serves DescribeGroups up to v5 (no error), and kadm computes it from the offsets.
    assert r["describe"]["state"] == "Dead" and r["describe"]["members"] == 0
    assert r["lag"] == ({} if EXTERNAL else {str(p): 0 for p in range(4)})
    assert r["deleted"] == "<nil>"


# --- the Kafka CLI ----------------------------------------------------------------------------

def test_cli_list_describe_reset(cg_bootstrap, kafka_libs):  # noqa: F811
    topic = new_topic(cg_bootstrap, 2)
    g = group_id("cgp-cli")
    produce(cg_bootstrap, topic, [{"value": b"v", "partition": i % 2} for i in range(10)])
    c = flex(cg_bootstrap, g)
    member, r = join(c, g, [topic])
    assert r["error"] == 0
    tid = topic_id(cg_bootstrap, topic)
    # The member heartbeats while the tools (slow JVM starts) look at the group.
    stop = threading.Event()

    def keep_alive():
        hb = FlexClient(cg_bootstrap)
        while not stop.wait(HEARTBEAT_MS / 1000):
            heartbeat(hb, g, member, r["epoch"], owned={tid: [0, 1]})
        hb.close()
    alive = threading.Thread(target=keep_alive, daemon=True)
    alive.start()
    b = ["--bootstrap-server", cg_bootstrap]
    cmd = "consumer.group.ConsumerGroupCommand"
    listed = tool(kafka_libs, cmd, *b, "--list", "--type", "consumer")
    assert g in listed.split()
    assert g not in tool(kafka_libs, cmd, *b, "--list", "--type", "classic").split()
    members = tool(kafka_libs, cmd, *b, "--describe", "--group", g, "--members", "--verbose")
    row = next(line.split() for line in members.splitlines() if member in line)
    assert row[0] == g and row[1] == member
    state = tool(kafka_libs, cmd, *b, "--describe", "--group", g, "--state")
    row = next(line.split() for line in state.splitlines() if line.startswith(g))
    assert row[-3:] == ["uniform", "Stable", "1"], row
    # Offsets can be reset only while the group is empty.
    stop.set()
    alive.join()
    assert heartbeat(c, g, member, -1)["error"] == 0
    tool(kafka_libs, cmd, *b, "--reset-offsets", "--group", g, "--topic", topic, "--to-offset", "4",
         "--execute")
    described = tool(kafka_libs, cmd, *b, "--describe", "--group", g)
    offsets = sorted(line.split()[3] for line in described.splitlines() if topic in line)
    assert offsets == ["4", "4"]
    # The empty group is deleted, offsets and all.
    deleted = tool(kafka_libs, cmd, *b, "--delete", "--group", g)
    assert deleted.strip() == f"Deletion of requested consumer groups ('{g}') was successful."
    assert g not in tool(kafka_libs, cmd, *b, "--list").split()
    c.close()


# --- a broker restart -----------------------------------------------------------------------

def test_restart_resumes_group_without_rebalance(cg_broker):
    if cg_broker is None:
        pytest.skip("restart tests need a broker the suite starts itself")
    broker = _configured_broker("cg-restart")
    broker.start()
    try:
        topic = new_topic(broker.bootstrap, 4)
        tid = topic_id(broker.bootstrap, topic)
        g = group_id("cgp-restart")
        c = flex(broker.bootstrap, g)
        a, ra = join(c, g, [topic])
        b, rb = join(c, g, [topic])
        ra2 = until("a asked to revoke", lambda: heartbeat(c, g, a, ra["epoch"], owned={tid: [0, 1, 2, 3]}),
                    lambda r: r["assignment"] is not None)
        kept = ra2["assignment"][tid]
        ra3 = heartbeat(c, g, a, ra2["epoch"], owned={tid: kept})
        rb2 = until("b assigned", lambda: heartbeat(c, g, b, rb["epoch"], owned={}),
                    lambda r: bool(r["assignment"]))
        b_parts = rb2["assignment"][tid]
        epochs = (ra3["epoch"], rb2["epoch"])
        c.close()
        assert broker.stop() == 0
        broker.start()
        c = flex(broker.bootstrap, g)
        # Both members carry on at their epochs, keeping their partitions: no revocation.
        for member, epoch, owned in ((a, epochs[0], kept), (b, epochs[1], b_parts)):
            r = heartbeat(c, g, member, epoch, owned={tid: owned})
            assert (r["error"], r["epoch"]) == (0, epoch), r
            assert r["assignment"] in (None, {tid: owned}), r
        c.close()
    finally:
        broker.stop()


def test_offset_commit_member_epoch(cg_bootstrap):
    """OffsetCommit v9 from consumer-group members, as Kafka 4.4 checks it partition by
    partition: the current member epoch commits anything; an older epoch only partitions
    the member has held since then (assignment epochs); a newer one is
    STALE_MEMBER_EPOCH; an unknown member UNKNOWN_MEMBER_ID; an admin commit (-1) is
    refused while the group has members."""
    topic = new_topic(cg_bootstrap, 4)
    tid = topic_id(cg_bootstrap, topic)
    g = group_id("cgp-commit")
    c = flex(cg_bootstrap, g)
    a, ra = join(c, g, [topic])
    b, rb = join(c, g, [topic])
    ra2 = until("a asked to revoke", lambda: heartbeat(c, g, a, ra["epoch"], owned={tid: [0, 1, 2, 3]}),
                lambda r: r["assignment"] is not None)
    kept = ra2["assignment"][tid]
    lost = sorted(set(range(4)) - set(kept))
    ra3 = heartbeat(c, g, a, ra["epoch"], owned={tid: kept})
    old, new = ra["epoch"], ra3["epoch"]
    assert new > old
    raw = coordinator(cg_bootstrap, g)

    def commit(member, epoch, partition):
        return offset_commit(raw, g, epoch, member, [(topic, partition, 5, None)],
                             version=9)[(topic, partition)]
    assert [commit(a, new, p) for p in (kept[0], lost[0])] == [0, 0]
    assert [commit(a, old, p) for p in (kept[0], lost[0])] == [0, STALE_MEMBER_EPOCH]
    assert [commit(a, new + 1, p) for p in (kept[0], lost[0])] == [STALE_MEMBER_EPOCH] * 2
    assert commit("nobody", new, kept[0]) == UNKNOWN_MEMBER_ID
    assert commit("", -1, kept[0]) == UNKNOWN_MEMBER_ID
    raw.close()
    c.close()


def test_compacted_offsets_topic_keeps_the_groups(cg_broker):
    """Compaction of __consumer_offsets keeps every group as it is: a group whose members
    came and went many times, and a deleted group (its tombstones, then nothing) stay
    right across a restart after the cleaner rewrote the log."""
    if cg_broker is None:
        pytest.skip("needs a broker the suite starts itself")
    from test_compaction import CLEANER_TOML, read_all, wait_for
    broker = _configured_broker("cg-compact", "offsets_topic_num_partitions = 1\n" + CLEANER_TOML)
    broker.start()
    try:
        bs = broker.bootstrap
        topic = new_topic(bs, 4)
        tid = topic_id(bs, topic)
        g, gone = group_id("cgp-compact"), group_id("cgp-gone")
        c = flex(bs, g)
        a, ra = join(c, g, [topic])
        offsets = ConfigResource(ConfigResource.Type.TOPIC, "__consumer_offsets")
        a_client = admin(bs)
        a_client.incremental_alter_configs([ConfigResource(
            ConfigResource.Type.TOPIC, "__consumer_offsets", incremental_configs=[
                ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                for k, v in {"segment.ms": "100", "min.cleanable.dirty.ratio": "0.01",
                             "delete.retention.ms": "1000"}.items()])])[offsets].result()
        # Churn: members join and leave, each time rewriting a's and the group's records.
        epoch = ra["epoch"]
        for i in range(15):
            m, r = join(c, g, [topic])
            assert r["error"] == 0
            # a heartbeats without reporting its partitions: it is asked to revoke some.
            assert heartbeat(c, g, a, epoch)["error"] == 0
            assert heartbeat(c, g, m, -1)["error"] == 0
            time.sleep(0.12)
        # A second group, deleted.
        _, rg = join(c, gone, [topic])
        assert rg["error"] == 0
        gone_member = rg["member_id"]
        assert heartbeat(c, gone, gone_member, -1)["error"] == 0
        deleted = a_client.delete_consumer_groups([gone])[gone]
        deleted.result()
        # a catches up with the group (revoking nothing: it is alone again).
        final = until("a stable", lambda: heartbeat(c, g, a, epoch, owned={tid: [0, 1, 2, 3]}),
                      lambda r: True)
        epoch = final["epoch"]
        final = heartbeat(c, g, a, epoch, owned={tid: [0, 1, 2, 3]})
        assert (final["error"], final["epoch"]) == (0, epoch)
        written = read_all(bs, "__consumer_offsets")

        def compacted():
            # A later heartbeat with a new rebalance timeout writes a's metadata: it rolls
            # the segment so that the cleaner can take everything before it.
            time.sleep(0.15)
            heartbeat(c, g, a, epoch, rebalance_timeout_ms=30000 + int(time.monotonic() * 1000) % 1000,
                      topics=[topic], owned={tid: [0, 1, 2, 3]})
            now = read_all(bs, "__consumer_offsets")
            keys = [k for _, k, v in now[:-3]]
            # Before the last heartbeat's records: one record per key, no tombstones left.
            return (len(now) < len(written) and len(keys) == len(set(keys))
                    and not [1 for _, k, v in now[:-3] if v is None])
        wait_for("compaction of the group records and removal of their tombstones", compacted)
        c.close()
        assert broker.stop() == 0
        broker.start()
        c = flex(bs, g)
        r = heartbeat(c, g, a, epoch, owned={tid: [0, 1, 2, 3]})
        assert (r["error"], r["epoch"]) == (0, epoch), r
        assert r["assignment"] in (None, {tid: [0, 1, 2, 3]})
        assert heartbeat(c, gone, gone_member, 1)["error"] == GROUP_ID_NOT_FOUND
        c.close()
    finally:
        broker.stop()


def test_group_configs(cg_broker, cg_bootstrap):
    """A consumer group's own configs (GROUP resources): described with their defaults,
    changed within group.consumer.min/max.*, refused outside (INVALID_CONFIG, Kafka's
    messages), and applied from the next heartbeat."""
    g = group_id("cgp-cfg")
    a = admin(cg_bootstrap)
    res = ConfigResource(ConfigResource.Type.GROUP, g)

    def described():
        cfg = a.describe_configs([res])[res].result(30)
        return {k: (v.value, v.source) for k, v in cfg.items() if k.startswith("consumer.")
                and k != "consumer.assignment.interval.ms"}

    session, interval = (45000, 5000) if EXTERNAL else (SESSION_MS, HEARTBEAT_MS)
    assert described() == {"consumer.session.timeout.ms": (str(session), 5),
                           "consumer.heartbeat.interval.ms": (str(interval), 5)}

    def alter(name, value):
        r = ConfigResource(ConfigResource.Type.GROUP, g, incremental_configs=[
            ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)])
        try:
            a.incremental_alter_configs([r])[r].result(30)
            return None
        except Exception as e:  # noqa: BLE001 (the KafkaException carries the code)
            err = e.args[0]
            return err.code(), err.str()

    min_session = 45000 if EXTERNAL else 1000
    assert alter("consumer.session.timeout.ms", "999") == (
        40, f"consumer.session.timeout.ms must be in the range {min_session} to 60000 inclusive.")
    assert alter("nope", "1") == (40, "Unknown group config name: nope")
    new_interval = 6000 if EXTERNAL else 1000
    assert alter("consumer.heartbeat.interval.ms", str(new_interval)) is None
    assert described()["consumer.heartbeat.interval.ms"] == (str(new_interval), 8)
    topic = new_topic(cg_bootstrap, 1)
    c = flex(cg_bootstrap, g)
    member, r = join(c, g, [topic])
    assert (r["error"], r["interval"]) == (0, new_interval)
    if cg_broker is not None:
        # A shorter session for this group only: the silent member goes within it.
        assert alter("consumer.session.timeout.ms", "2000") is None
        assert heartbeat(c, g, member, r["epoch"])["error"] == 0
        time.sleep(3.5)
        assert heartbeat(c, g, member, r["epoch"])["error"] == UNKNOWN_MEMBER_ID
    c.close()
