"""KIP-848's online migration between classic and consumer groups
(group.consumer.migration.policy, bidirectional by default): a rolling upgrade of Java
consumers from group.protocol=classic to consumer, and a rolling downgrade back, with
records flowing. Every record must be read, the partitions owned exactly once at the
end, and the group's type (ListGroups) must follow. Checked against Apache Kafka 4.4.0
(compat/reference-kafka.sh; SPATE_COMPAT_BOOTSTRAP=127.0.0.1:39092)."""
import struct
import time
import uuid

import pytest

from conftest import EXTERNAL
from flexraw import FlexClient, consumer_group_heartbeat as heartbeat
from grouputil import (ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS, consumer_protocol_assignment,
                       consumer_protocol_metadata, coordinator, group_id)
from kafkautil import admin, produce
from test_consumer_group_protocol import (DEADLINE, GROUP_ID_NOT_FOUND, JavaMember,  # noqa: F401
                                          _configured_broker, cg_bootstrap, cg_broker, new_topic,
                                          owns_exactly_once, partitions, wait_for)

PARTITIONS = 6
BATCH = 60


def group_type(bootstrap, group):
    """The group's type as ListGroups (v5) reports it: "classic" or "consumer"."""
    a = admin(bootstrap)  # kept alive until the answer arrives
    listed = a.list_consumer_groups(request_timeout=15).result()
    for g in listed.valid:
        if g.group_id == group:
            return g.type.name.lower()
    return None


def wait_type(bootstrap, group, wanted, timeout=DEADLINE):
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = group_type(bootstrap, group)
        if seen == wanted:
            return
        time.sleep(0.5)
    raise AssertionError(f"group {group} is {seen}, not {wanted}")


class Flow:
    """Batches of records produced round-robin over the partitions, the offsets they
    land at known in advance."""

    def __init__(self, bootstrap, topic):
        self.bootstrap, self.topic = bootstrap, topic
        self.next = [0] * PARTITIONS
        self.expected = set()

    def batch(self):
        produce(self.bootstrap, self.topic,
                [{"value": b"v", "partition": i % PARTITIONS} for i in range(BATCH)])
        for i in range(BATCH):
            p = i % PARTITIONS
            self.expected.add(f"{self.topic}-{p}@{self.next[p]}")
            self.next[p] += 1


def read_all(members, flow, what):
    """Every produced record was read by some member (the live ones keep reading)."""
    def done():
        seen = set()
        for m in members:
            seen.update(m.records)
        return flow.expected <= seen
    wait_for(members, done, what)
    seen = set()
    for m in members:
        seen.update(m.records)
    assert seen == flow.expected, sorted(seen ^ flow.expected)[:10]


def roll(bootstrap, start, end, wanted_types):
    """Two members of protocol `start` are replaced one at a time by members of
    protocol `end` while records flow; returns when the group is of `wanted_types[1]`."""
    topic = new_topic(bootstrap, PARTITIONS, "mig")
    g = group_id("mig")
    all_parts = partitions(topic, PARTITIONS)
    flow = Flow(bootstrap, topic)
    everyone = []

    def member(protocol):
        m = JavaMember(bootstrap, g, "topics", topic, protocol=protocol)
        everyone.append(m)
        return m

    try:
        old = [member(start), member(start)]
        flow.batch()
        wait_for(old, lambda: owns_exactly_once(old, all_parts)
                 and all(len(m.assigned or ()) == 3 for m in old), f"two {start} members with three each")
        wait_type(bootstrap, g, wanted_types[0])
        read_all(everyone, flow, "the first batch")
        live = list(old)
        for i in range(2):
            new = member(end)
            live.append(new)
            flow.batch()
            wait_for(live, lambda: bool(new.assigned), f"{end} member {i} owning partitions")
            live.remove(old[i])
            old[i].close()
            flow.batch()
            wait_for(live, lambda: owns_exactly_once(live, all_parts)
                     and all(len(m.assigned or ()) == 3 for m in live),
                     f"three each after {start} member {i} left")
        flow.batch()
        read_all(everyone, flow, "every batch")
        assert owns_exactly_once(live, all_parts)
        wait_type(bootstrap, g, wanted_types[1])
    finally:
        for m in everyone:
            m.kill9()


def test_rolling_upgrade_classic_to_consumer(cg_bootstrap):  # noqa: F811
    """The first consumer-protocol member converts the classic group (the online
    upgrade); the classic member left is served by the consumer group until it goes."""
    roll(cg_bootstrap, "classic", "consumer", ("classic", "consumer"))


def test_rolling_downgrade_consumer_to_classic(cg_bootstrap):  # noqa: F811
    """Classic members join the consumer group; when the last consumer-protocol member
    leaves, the group turns classic (the online downgrade) and rebalances."""
    roll(cg_bootstrap, "consumer", "classic", ("consumer", "classic"))


def test_static_takeover_downgrades(cg_bootstrap):  # noqa: F811
    """A classic static member restarting in the place of the group's last
    consumer-protocol static member (same group.instance.id) turns the group classic
    without a rebalance: it takes over that member's partitions."""
    topic = new_topic(cg_bootstrap, PARTITIONS, "migstatic")
    g = group_id("migstatic")
    all_parts = partitions(topic, PARTITIONS)
    everyone = []
    try:
        a = JavaMember(cg_bootstrap, g, "topics", topic, instance="a", protocol="consumer")
        everyone.append(a)
        wait_for([a], lambda: a.assigned == all_parts, "the consumer member owning all")
        b = JavaMember(cg_bootstrap, g, "topics", topic, protocol="classic")
        everyone.append(b)
        wait_for([a, b], lambda: owns_exactly_once([a, b], all_parts)
                 and len(b.assigned or ()) == 3, "the classic member owning three")
        wait_type(cg_bootstrap, g, "consumer")
        held = set(a.assigned)
        a.kill9()
        a2 = JavaMember(cg_bootstrap, g, "topics", topic, instance="a", protocol="classic")
        everyone.append(a2)
        wait_type(cg_bootstrap, g, "classic")
        wait_for([a2, b], lambda: owns_exactly_once([a2, b], all_parts), "the partitions owned again")
        assert a2.assigned == held
    finally:
        for m in everyone:
            m.kill9()


def assigned(data):
    """A ConsumerProtocolAssignment's partitions: {topic: [partitions]}."""
    pos = 6  # version, topic count
    out = {}
    for _ in range(struct.unpack_from(">i", data, 2)[0]):
        n = struct.unpack_from(">h", data, pos)[0]
        topic = data[pos + 2:pos + 2 + n].decode()
        pos += 2 + n
        count = struct.unpack_from(">i", data, pos)[0]
        out[topic] = list(struct.unpack_from(f">{count}i", data, pos + 4))
        pos += 4 + 4 * count
    return out


def classic_member(bootstrap, g, topic, parts):
    """A raw classic member of a new group, synced with all of `parts`."""
    raw = coordinator(bootstrap, g)
    joined = raw.join_new(g, protocols=[("range", consumer_protocol_metadata([topic]))])
    assert joined["error"] == 0, joined
    member, generation = joined["member_id"], joined["generation"]
    synced = raw.sync(g, generation, member, [(member, consumer_protocol_assignment(topic, parts))])
    assert synced["error"] == 0, synced
    return raw, member, generation


def test_raw_upgrade(cg_bootstrap):  # noqa: F811
    """The protocol exchanges of an upgrade: the joining ConsumerGroupHeartbeat converts the
    group and is served; the classic member is told to rejoin, rejoins at its member
    epoch and syncs its share from the server assignor."""
    topic = new_topic(cg_bootstrap, 4, "migraw")
    g = group_id("migraw")
    raw, member, generation = classic_member(cg_bootstrap, g, topic, [0, 1, 2, 3])
    c = FlexClient(cg_bootstrap)
    # Only a joining heartbeat converts a classic group.
    stranger = heartbeat(c, g, str(uuid.uuid4()), 1)
    assert (stranger["error"], stranger["message"]) == (
        GROUP_ID_NOT_FOUND, f"Group {g} is not a consumer group.")
    new = str(uuid.uuid4())
    r = heartbeat(c, g, new, 0, topics=[topic], rebalance_timeout_ms=30000, owned={})
    assert r["error"] == 0 and r["epoch"] > generation, r
    # The classic member still owns everything: the new member waits for its half.
    assert r["assignment"] == {}
    assert raw.heartbeat(g, generation + 1, member) == ILLEGAL_GENERATION
    assert raw.heartbeat(g, generation, member) == REBALANCE_IN_PROGRESS
    # Rejoining still owning everything (v0 subscriptions carry no owned partitions:
    # it counts as having revoked them all).
    rejoined = raw.join(g, member, protocols=[("range", consumer_protocol_metadata([topic]))])
    assert (rejoined["error"], rejoined["protocol"], rejoined["leader"], rejoined["members"]) == (
        0, "range", "", []), rejoined
    synced = raw.sync(g, rejoined["generation"], member)
    assert synced["error"] == 0, synced
    mine = assigned(synced["assignment"])[topic]
    assert len(mine) == 2, mine
    assert raw.heartbeat(g, rejoined["generation"], member) == 0
    c.close()
    raw.close()


def test_upgrade_refused_when_disabled():
    """group.consumer.migration.policy=disabled: a classic group with members is not
    converted (Kafka's message), and classic members still join a consumer group."""
    if EXTERNAL:
        pytest.skip("needs a broker of its own with the policy disabled")
    broker = _configured_broker("migoff", 'group_consumer_migration_policy = "disabled"\n')
    broker.start()
    try:
        topic = new_topic(broker.bootstrap, 2, "migoff")
        g = group_id("migoff")
        raw, _, _ = classic_member(broker.bootstrap, g, topic, [0, 1])
        c = FlexClient(broker.bootstrap)
        r = heartbeat(c, g, str(uuid.uuid4()), 0, topics=[topic], rebalance_timeout_ms=30000,
                      owned={})
        assert (r["error"], r["message"]) == (
            GROUP_ID_NOT_FOUND,
            f"Cannot upgrade classic group {g} to consumer group because the online upgrade is "
            "disabled.")
        g2 = group_id("migoff")
        r2 = heartbeat(c, g2, str(uuid.uuid4()), 0, topics=[topic], rebalance_timeout_ms=30000,
                       owned={})
        assert r2["error"] == 0
        raw2 = coordinator(broker.bootstrap, g2)
        joined = raw2.join_new(g2, protocols=[("range", consumer_protocol_metadata([topic]))])
        assert joined["error"] == 0 and joined["generation"] > r2["epoch"], joined
        c.close()
        raw.close()
        raw2.close()
    finally:
        broker.stop()


if __name__ == "__main__":
    pytest.main([__file__])
