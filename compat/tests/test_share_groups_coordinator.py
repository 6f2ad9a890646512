"""KIP-932 share groups on the group coordinator (docs/share-groups.md): raw
ShareGroupHeartbeat v1, ShareGroupDescribe v1 and Describe/Alter/DeleteShareGroupOffsets
frames, Kafka's kafka-share-groups.sh (ShareGroupCommand) and kafka-consumer-groups.sh;
exact epochs, assignments and errors. Checked against Kafka 4.4.0 with
SPATE_COMPAT_BOOTSTRAP (compat/reference-kafka.sh): where Kafka's epochs differ (it
batches assignments, `group.share.assignment.interval.ms`, so its first member gets epoch
2) the test asserts Spate's exact values only against Spate."""
import re
import struct
import time
import uuid

import pytest

from conftest import EXTERNAL
from flexraw import FlexClient, TAGS, carray, nullable_carray, consumer_group_heartbeat
from grouputil import RawClient, coordinator, cstr, offset_commit, offset_fetch
from kafkautil import create_topic
from test_kafka_cli import kafka_libs, tool  # noqa: F401 (kafka_libs is a fixture)



def until_assigned(c, g, m, epoch, count, timeout=30):
    """Heartbeat member `m` (at `epoch`) until it is assigned `count` partitions (its
    share-partitions initialized); the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        r = share_heartbeat(c, g, m, epoch)
        assert r["error"] == 0, r
        # No assignment in an answer: unchanged since the last one (still not assigned).
        if sum(len(p) for p in (r["assignment"] or {}).values()) == count:
            return r
        assert time.monotonic() < deadline, f"{m} not assigned {count} partitions: {r}"
        epoch = r["epoch"]
        time.sleep(0.2)


def share_heartbeat(client, group, member_id, epoch, topics=None, rack=None):
    body = cstr(group) + cstr(member_id) + struct.pack(">i", epoch) + cstr(rack)
    body += nullable_carray(None if topics is None else [cstr(t) for t in topics]) + TAGS
    r = client.call(76, 1, body)
    r.i32()
    out = {"error": r.i16(), "message": r.str(), "member_id": r.str(), "epoch": r.i32(),
           "interval": r.i32()}

    def topic_partitions(x):
        tid = x.uuid()
        parts = x.array(lambda y: y.i32())
        x.tags()
        return tid, sorted(parts)

    def assignment(x):
        a = dict(x.array(topic_partitions))
        x.tags()
        return a

    out["assignment"] = r.struct(assignment)
    return out


def share_describe(client, groups):
    r = client.call(77, 1, carray([cstr(g) for g in groups]) + b"\x00" + TAGS)
    r.i32()

    def member(x):
        m = {"member_id": x.str(), "rack": x.str(), "epoch": x.i32(), "client_id": x.str(),
             "client_host": x.str(), "topics": x.array(lambda y: y.str())}

        def tp(y):
            t = (y.uuid(), y.str(), sorted(y.array(lambda z: z.i32())))
            y.tags()
            return t
        m["assignment"] = x.array(tp)
        x.tags()
        x.tags()
        return m

    def group(x):
        g = {"error": x.i16(), "message": x.str(), "group_id": x.str(), "state": x.str(),
             "epoch": x.i32(), "assignment_epoch": x.i32(), "assignor": x.str(),
             "members": x.array(member), "ops": x.i32()}
        x.tags()
        return g

    return r.array(group)


def describe_offsets(client, group, topics=None, version=1):
    """DescribeShareGroupOffsets: (group error, message, {topic: {partition: (start,
    leader epoch, lag, error)}}); `topics` {name: [partitions]} or None for all."""
    body = carray([cstr(group) + nullable_carray(None if topics is None else [
        cstr(t) + carray([struct.pack(">i", p) for p in ps]) + TAGS
        for t, ps in topics.items()]) + TAGS]) + TAGS
    r = client.call(90, version, body)
    r.i32()

    def partition(x):
        p = (x.i32(), x.take(">q"), x.i32(), x.take(">q") if version >= 1 else None, x.i16())
        x.str()
        x.tags()
        return p

    def topic(x):
        name = x.str()
        x.uuid()
        parts = {p[0]: p[1:] for p in x.array(partition)}
        x.tags()
        return name, parts

    def group(x):
        x.str()
        topics = dict(x.array(topic))
        out = (x.i16(), x.str(), topics)
        x.tags()
        return out

    [g] = r.array(group)
    return g


def alter_offsets(client, group, offsets):
    """AlterShareGroupOffsets v0: offsets {topic: {partition: start}}; (error, message,
    {topic: {partition: error}})."""
    body = cstr(group) + carray([
        cstr(t) + carray([struct.pack(">iq", p, o) + TAGS for p, o in ps.items()]) + TAGS
        for t, ps in offsets.items()]) + TAGS
    r = client.call(91, 0, body)
    r.i32()
    err, msg = r.i16(), r.str()

    def partition(x):
        p = (x.i32(), x.i16())
        x.str()
        x.tags()
        return p

    def topic(x):
        name = x.str()
        x.uuid()
        parts = dict(x.array(partition))
        x.tags()
        return name, parts

    return err, msg, dict(r.array(topic))


def delete_offsets(client, group, topics):
    """DeleteShareGroupOffsets v0: (error, message, {topic: error})."""
    r = client.call(92, 0, cstr(group) + carray([cstr(t) + TAGS for t in topics]) + TAGS)
    r.i32()
    err, msg = r.i16(), r.str()

    def topic(x):
        name = x.str()
        x.uuid()
        e = x.i16()
        x.str()
        x.tags()
        return name, e

    return err, msg, dict(r.array(topic))


def gid(bootstrap):
    """A new group id whose coordinator is ready (a single node: the bootstrap broker)."""
    g = f"share-{uuid.uuid4().hex[:10]}"
    coordinator(bootstrap, g).close()
    return g



def members_of(d):
    return {m["member_id"]: m for m in d["members"]}


def test_join_heartbeat_leave_and_describe(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 3)
    c = FlexClient(bootstrap)
    g, a, b = gid(bootstrap), str(uuid.uuid4()), str(uuid.uuid4())
    r = share_heartbeat(c, g, a, 0, [topic_name], rack="r1")
    # No share-partition has state yet: an empty assignment.
    assert (r["error"], r["member_id"], r["interval"], r["assignment"]) == (0, a, 5000, {})
    first = r["epoch"]
    r = share_heartbeat(c, g, b, 0, [topic_name])
    assert (r["error"], r["member_id"], r["assignment"]) == (0, b, {})
    [d] = share_describe(c, [g])
    assert (d["error"], d["state"], d["assignor"], d["ops"]) == (0, "Stable", "simple", -2**31)
    assert d["epoch"] > first
    m = members_of(d)
    assert set(m) == {a, b}
    assert (m[a]["rack"], m[a]["topics"], m[a]["client_id"], m[a]["client_host"]) == (
        "r1", [topic_name], "flexpy", "/127.0.0.1")
    assert (m[b]["rack"], m[b]["assignment"]) == (None, [])
    if not EXTERNAL:
        # Spate assigns in the heartbeat: a joins at 1, b's join moves the group to 2.
        assert (first, d["epoch"], d["assignment_epoch"]) == (1, 2, 2)
        assert (m[a]["epoch"], m[b]["epoch"]) == (1, 2)
        r = share_heartbeat(c, g, a, 1)
        assert (r["error"], r["epoch"], r["assignment"]) == (0, 2, None)
    r = share_heartbeat(c, g, b, -1)
    assert (r["error"], r["member_id"], r["epoch"]) == (0, b, -1)
    [d2] = share_describe(c, [g])
    assert list(members_of(d2)) == [a] and d2["epoch"] > d["epoch"]
    assert share_heartbeat(c, g, a, -1)["epoch"] == -1
    r = share_heartbeat(c, g, a, -1)
    assert (r["error"], r["message"]) == (25, f"Member {a} is not a member of group {g}.")
    [d3] = share_describe(c, [g])
    assert (d3["state"], d3["members"], d3["epoch"], d3["assignment_epoch"]) == (
        "Empty", [], d3["epoch"], d3["epoch"])
    if not EXTERNAL:
        assert d3["epoch"] == 4
    c.close()


def test_heartbeat_errors(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 1)
    c = FlexClient(bootstrap)
    g, m = gid(bootstrap), str(uuid.uuid4())
    # An empty member id is refused first, without a message (as Kafka 4.4).
    r = share_heartbeat(c, "", "", 0, [topic_name])
    assert (r["error"], r["message"]) == (42, None)
    r = share_heartbeat(c, "", m, 0, [topic_name])
    assert (r["error"], r["message"]) == (42, "GroupId can't be empty.")
    r = share_heartbeat(c, g, m, 0, None)
    assert (r["error"], r["message"]) == (42, "SubscribedTopicNames must be set in first request.")
    r = share_heartbeat(c, g, m, 0, [])
    assert (r["error"], r["message"]) == (42, "SubscribedTopicNames must be set in first request.")
    r = share_heartbeat(c, g, m, -2)
    assert (r["error"], r["message"]) == (42, "MemberEpoch is invalid.")
    r = share_heartbeat(c, g, m, 0, [topic_name], rack="")
    assert (r["error"], r["message"]) == (42, "RackId can't be empty.")
    r = share_heartbeat(c, g, m, 1)
    assert (r["error"], r["message"]) == (69, f"Share group {g} not found.")
    r = share_heartbeat(c, g, m, -1)
    assert (r["error"], r["message"]) == (69, f"Group {g} not found.")
    joined = share_heartbeat(c, g, m, 0, [topic_name])
    assert joined["error"] == 0
    # The member is assigned the partition once its share state is initialized, one
    # group epoch later: heartbeat until then.
    e, assignment = joined["epoch"], joined["assignment"]
    deadline = time.monotonic() + 30
    while not assignment and time.monotonic() < deadline:
        time.sleep(0.2)
        r = share_heartbeat(c, g, m, e)
        assert r["error"] == 0, r
        e, assignment = r["epoch"], r["assignment"]
    assert list(assignment.values()) == [[0]], assignment
    r = share_heartbeat(c, g, m, e + 3)
    assert (r["error"], r["message"]) == (110, (
        f"The share group member has a greater member epoch ({e + 3}) than the one known by "
        f"the group coordinator ({e}). The member must abandon all its partitions and rejoin."))
    # Move the member two epochs on (previous e + 1) through a second member joining and
    # leaving, then heartbeat with e: neither its epoch nor its previous one.
    n = str(uuid.uuid4())
    assert share_heartbeat(c, g, n, 0, [topic_name])["epoch"] == e + 1
    assert share_heartbeat(c, g, m, e)["epoch"] == e + 1
    assert share_heartbeat(c, g, n, -1)["error"] == 0
    assert share_heartbeat(c, g, m, e + 1)["epoch"] == e + 2
    smaller, current, previous = e, e + 2, e + 1
    r = share_heartbeat(c, g, m, smaller)
    assert (r["error"], r["message"]) == (110, (
        f"The share group member has a smaller member epoch ({smaller}) than the one known by "
        f"the group coordinator ({current}), and it does not match the previous member epoch "
        f"({previous}). The member must abandon all its partitions and rejoin."))
    # Joining again with the same member id (epoch 0) is a rejoin, not an error: the
    # member keeps its epoch and its partition.
    r = share_heartbeat(c, g, m, 0, [topic_name])
    assert (r["error"], r["member_id"], r["epoch"]) == (0, m, current)
    assert list(r["assignment"].values()) == [[0]], r["assignment"]
    other = str(uuid.uuid4())
    r = share_heartbeat(c, g, other, 1)
    assert (r["error"], r["message"]) == (25, f"Member {other} is not a member of group {g}.")
    missing = gid(bootstrap)
    [d] = share_describe(c, [missing])
    assert (d["error"], d["message"]) == (69, f"Group {missing} not found.")
    c.close()


def test_share_group_ids_and_other_group_kinds(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 2)
    c = FlexClient(bootstrap)
    g = gid(bootstrap)
    assert share_heartbeat(c, g, str(uuid.uuid4()), 0, [topic_name])["error"] == 0
    r = consumer_group_heartbeat(c, g, str(uuid.uuid4()), 0, topics=[topic_name],
                                 rebalance_timeout_ms=5000, owned={})
    assert (r["error"], r["message"]) == (69, f"Group {g} is not a consumer group.")
    raw = RawClient.to(bootstrap)
    j = raw.join(g, "")
    assert (j["error"], j["generation"], j["member_id"]) == (23, -1, "")
    assert offset_commit(raw, g, -1, "", [(topic_name, 0, 5, None)]) == {(topic_name, 0): 69}
    assert offset_commit(raw, g, -1, "", [(topic_name, 0, 5, None)], version=9) == {(topic_name, 0): 69}
    # OffsetFetch answers (nothing committed) as Kafka does.
    assert offset_fetch(raw, g, topic_name, [0]) == ({0: (-1, "", 0)}, 0)
    d = raw.describe_group(g)
    assert (d["error"], d["state"], d["members"]) == (0, "Dead", [])
    # The other way round: share heartbeats and describes of consumer and classic groups.
    cg = gid(bootstrap)
    assert consumer_group_heartbeat(c, cg, str(uuid.uuid4()), 0, topics=[topic_name],
                                    rebalance_timeout_ms=5000, owned={})["error"] == 0
    kg = gid(bootstrap)
    assert raw.join_new(kg)["error"] == 0
    for other in (cg, kg):
        r = share_heartbeat(c, other, str(uuid.uuid4()), 0, [topic_name])
        assert (r["error"], r["message"]) == (69, f"Group {other} is not a share group.")
        [d] = share_describe(c, [other])
        assert (d["error"], d["message"]) == (69, f"Group {other} is not a share group.")
    # ListGroups v5: share groups with their type and protocol type; the type filter.
    def list_groups(types=()):
        r = c.call(16, 5, carray([]) + carray([cstr(x) for x in types]) + TAGS)
        r.i32()
        assert r.i16() == 0

        def one(x):
            o = (x.str(), x.str(), x.str(), x.str())
            x.tags()
            return o
        return {x[0]: x[1:] for x in r.array(one) if x[0] in (g, cg, kg)}
    assert list_groups(["share"]) == {g: ("share", "Stable", "share")}
    assert list_groups(["Share"]) == {g: ("share", "Stable", "share")}
    assert list_groups()[g] == ("share", "Stable", "share")
    assert set(list_groups()) == {g, cg, kg}
    raw.close()
    c.close()


def test_offsets_apis_errors(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 2)
    c = FlexClient(bootstrap)
    g = gid(bootstrap)
    # A group that does not exist has no offsets; deleting them is GROUP_ID_NOT_FOUND.
    assert describe_offsets(c, g) == (0, None, {})
    assert describe_offsets(c, g, version=0) == (0, None, {})
    assert delete_offsets(c, g, [topic_name]) == (69, f"Group {g} not found.", {})
    m = str(uuid.uuid4())
    # A member subscribed to a topic that does not exist: no share state anywhere.
    missing_topic = f"nope-{uuid.uuid4().hex[:6]}"
    assert share_heartbeat(c, g, m, 0, [missing_topic])["error"] == 0
    assert alter_offsets(c, g, {topic_name: {0: 5}}) == (68, "The group is not empty.", {})
    assert delete_offsets(c, g, [topic_name]) == (68, "The group is not empty.", {})
    assert describe_offsets(c, g) == (0, None, {})
    # An unknown topic is described as one without state.
    assert describe_offsets(c, g, {missing_topic: [0]}) == (
        0, None, {missing_topic: {0: (-1, 0, -1, 0)}})
    assert share_heartbeat(c, g, m, -1)["error"] == 0
    err, msg, topics = alter_offsets(c, g, {missing_topic: {0: 1}, topic_name: {9: 1}})
    assert (err, msg, topics) == (0, None, {missing_topic: {0: 3}, topic_name: {9: 3}})
    assert delete_offsets(c, g, [missing_topic, topic_name]) == (
        0, None, {missing_topic: 3, topic_name: 3})
    c.close()


def test_cli_list_describe_delete(bootstrap, topic_name, kafka_libs):  # noqa: F811
    create_topic(bootstrap, topic_name, 2)
    b = ["--bootstrap-server", bootstrap]
    c = FlexClient(bootstrap)
    g, m = gid(bootstrap), str(uuid.uuid4())
    # Subscribed to a topic that does not exist: the group has no share state, so it can be
    # deleted without the share coordinator.
    missing_topic = f"nope-{uuid.uuid4().hex[:6]}"
    assert share_heartbeat(c, g, m, 0, [missing_topic])["error"] == 0
    cmd = "consumer.group.ShareGroupCommand"
    assert g in tool(kafka_libs, cmd, *b, "--list").split()
    listed = tool(kafka_libs, cmd, *b, "--list", "--state", "Stable")
    assert re.search(rf"^{g}\s+Stable$", listed, re.M), listed
    members = tool(kafka_libs, cmd, *b, "--describe", "--group", g, "--members")
    assert re.search(rf"^{g}\s+{m}\s+/127\.0\.0\.1\s+flexpy\s+0\s*$", members, re.M), members
    state = tool(kafka_libs, cmd, *b, "--describe", "--group", g, "--state")
    assert re.search(rf"^{g}\s+\S+\s+\(\d+\)\s+Stable\s+1$", state, re.M), state
    out = tool(kafka_libs, cmd, *b, "--delete", "--group", g, check=False)
    assert f"Share group '{g}' is not EMPTY." in out, out
    described = tool(kafka_libs, "consumer.group.ConsumerGroupCommand", *b, "--describe",
                     "--group", g, check=False)
    # Kafka's ConsumerGroupDescribe refuses the share group; so does Spate's, but the admin
    # client then falls back to DescribeGroups, which Spate serves up to v5 only (Dead,
    # where Kafka's v6 names the group's type; docs/compat.md).
    expected = (f"Group {g} is not a consumer group." if EXTERNAL
                else f"Consumer group '{g}' does not exist.")
    assert expected in described, described
    assert share_heartbeat(c, g, m, -1)["error"] == 0
    out = tool(kafka_libs, cmd, *b, "--delete", "--group", g)
    assert f"Deletion of requested share groups ('{g}') was successful." in out, out
    assert g not in tool(kafka_libs, cmd, *b, "--list").split()
    c.close()


def test_group_configs(bootstrap, topic_name):
    """A share group's own configs (GROUP resources): described with the broker's
    defaults, refused outside Kafka's bounds with Kafka's messages, described back with
    source GROUP_CONFIG, and the heartbeat interval applied from the next heartbeat."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource
    from kafkautil import admin
    g = f"share-cfg-{uuid.uuid4().hex[:6]}"
    a = admin(bootstrap)
    res = ConfigResource(ConfigResource.Type.GROUP, g)
    served = {"share.session.timeout.ms", "share.heartbeat.interval.ms",
              "share.record.lock.duration.ms", "share.delivery.count.limit",
              "share.partition.max.record.locks", "share.auto.offset.reset",
              "share.isolation.level", "share.renew.acknowledge.enable"}

    def described():
        cfg = a.describe_configs([res])[res].result(30)
        return {k: (v.value, v.source) for k, v in cfg.items() if k in served}

    assert described() == {
        "share.session.timeout.ms": ("45000", 5), "share.heartbeat.interval.ms": ("5000", 5),
        "share.record.lock.duration.ms": ("30000", 5), "share.delivery.count.limit": ("5", 5),
        "share.partition.max.record.locks": ("2000", 5), "share.auto.offset.reset": ("latest", 5),
        "share.isolation.level": ("read_uncommitted", 5),
        "share.renew.acknowledge.enable": ("true", 5)}

    def alter(name, value):
        r = ConfigResource(ConfigResource.Type.GROUP, g, incremental_configs=[
            ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)])
        try:
            a.incremental_alter_configs([r])[r].result(30)
            return None
        except Exception as e:  # noqa: BLE001 (the KafkaException carries the code)
            err = e.args[0]
            return err.code(), err.str()

    bad_reset = ("Invalid value {0} for configuration share.auto.offset.reset: Invalid value "
                 "`{0}` for configuration share.auto.offset.reset. The value must be either "
                 "'earliest', 'latest' or of the format 'by_duration:<PnDTnHnMn.nS>'.")
    for name, value, message in [
        ("share.record.lock.duration.ms", "1000",
         "share.record.lock.duration.ms must be in the range 15000 to 60000 inclusive."),
        ("share.delivery.count.limit", "11",
         "share.delivery.count.limit must be in the range 2 to 10 inclusive."),
        ("share.partition.max.record.locks", "50",
         "Invalid value 50 for configuration share.partition.max.record.locks: Value must be at least 100"),
        ("share.partition.max.record.locks", "5000",
         "share.partition.max.record.locks must be in the range 100 to 4000 inclusive."),
        ("share.session.timeout.ms", "1000",
         "share.session.timeout.ms must be in the range 45000 to 60000 inclusive."),
        ("share.record.lock.duration.ms", "x",
         "Invalid value x for configuration share.record.lock.duration.ms: Not a number of type INT"),
        ("share.auto.offset.reset", "none", bad_reset.format("none")),
        ("share.auto.offset.reset", "EARLIEST", bad_reset.format("EARLIEST")),
        ("share.auto.offset.reset", "by_duration:-PT1H", bad_reset.format("by_duration:-PT1H")),
        ("share.isolation.level", "READ_COMMITTED",
         "Invalid value READ_COMMITTED for configuration share.isolation.level: String must be one of: read_committed, read_uncommitted"),
        ("share.renew.acknowledge.enable", "maybe",
         "Invalid value maybe for configuration share.renew.acknowledge.enable: Expected value to be either true or false"),
    ]:
        assert alter(name, value) == (40, message), (name, value)
    for name, value in [("share.record.lock.duration.ms", "20000"),
                        ("share.delivery.count.limit", "3"),
                        ("share.auto.offset.reset", "by_duration:PT1H"),
                        ("share.isolation.level", "read_committed"),
                        ("share.renew.acknowledge.enable", "false"),
                        ("share.heartbeat.interval.ms", "6000")]:
        assert alter(name, value) is None, (name, value)
        assert described()[name] == (value, 8)
    create_topic(bootstrap, topic_name, 1)
    coordinator(bootstrap, g).close()
    c = FlexClient(bootstrap)
    r = share_heartbeat(c, g, str(uuid.uuid4()), 0, [topic_name])
    assert (r["error"], r["interval"]) == (0, 6000)
    c.close()


def test_restart_resumes_the_group(restartable_broker):
    """The share-group records replayed on load: members, epochs and subscriptions are
    back after a restart, and members carry on at their epochs."""
    bs = restartable_broker.bootstrap
    topic = f"share-restart-{uuid.uuid4().hex[:6]}"
    create_topic(bs, topic, 2)
    c = FlexClient(bs)
    g, a, b = gid(bs), str(uuid.uuid4()), str(uuid.uuid4())
    joined = share_heartbeat(c, g, a, 0, [topic], rack="r1")
    assert joined["epoch"] == 1
    e = until_assigned(c, g, a, 1, 2)["epoch"]
    assert share_heartbeat(c, g, b, 0, [topic])["epoch"] == e + 1
    assert share_heartbeat(c, g, a, e)["epoch"] == e + 1
    [before] = share_describe(c, [g])
    c.close()
    assert restartable_broker.stop() == 0
    restartable_broker.start()
    c = FlexClient(bs)
    coordinator(bs, g).close()
    [after] = share_describe(c, [g])
    for k in ("error", "state", "epoch", "assignment_epoch"):
        assert after[k] == before[k], (k, before, after)
    assert members_of(after) == members_of(before)
    for m in (a, b):
        r = share_heartbeat(c, g, m, e + 1)
        assert (r["error"], r["epoch"]) == (0, e + 1), r
    c.close()


def test_assignment_after_initialization(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 4)
    c = FlexClient(bootstrap)
    g, a, b = gid(bootstrap), str(uuid.uuid4()), str(uuid.uuid4())
    r = share_heartbeat(c, g, a, 0, [topic_name])
    # The share state is initialized after the first heartbeat; a later one assigns.
    until_assigned(c, g, a, r["epoch"], 4)
    r = share_heartbeat(c, g, b, 0, [topic_name])
    assert sum(len(p) for p in r["assignment"].values()) == 2
    c.close()


def test_cli_offsets_reset_describe_delete(bootstrap, topic_name, kafka_libs):  # noqa: F811
    create_topic(bootstrap, topic_name, 2)
    b = ["--bootstrap-server", bootstrap]
    c = FlexClient(bootstrap)
    g, m = gid(bootstrap), str(uuid.uuid4())
    r = share_heartbeat(c, g, m, 0, [topic_name])
    assert r["error"] == 0
    until_assigned(c, g, m, r["epoch"], 2)
    assert share_heartbeat(c, g, m, -1)["error"] == 0
    cmd = "consumer.group.ShareGroupCommand"
    reset = tool(kafka_libs, cmd, *b, "--reset-offsets", "--group", g, "--topic", topic_name,
                 "--to-earliest", "--execute")
    assert len(re.findall(rf"^{g}\s+{topic_name}\s+[01]\s+0$", reset, re.M)) == 2, reset
    described = tool(kafka_libs, cmd, *b, "--describe", "--group", g)
    assert len(re.findall(rf"^{g}\s+{topic_name}\s+[01]\s+0\s+0$", described, re.M)) == 2
    out = tool(kafka_libs, cmd, *b, "--delete-offsets", "--group", g, "--topic", topic_name)
    assert re.search(rf"^{topic_name}\s+Successful$", out, re.M), out
    out = tool(kafka_libs, cmd, *b, "--delete", "--group", g)
    assert "was successful" in out
    c.close()
