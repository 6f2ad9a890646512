"""Group-coordinator semantics checked request by request against Kafka's
GroupCoordinator (group-coordinator/.../GroupMetadataManager.java, ClassicGroup.java,
OffsetMetadataManager.java), plus the real-client consequence of one of them (a zombie
static member must be fenced, not told to rejoin)."""
import time

import pytest
from confluent_kafka import KafkaError

from grouputil import (FENCED_INSTANCE_ID, GROUP_ID_NOT_FOUND, ILLEGAL_GENERATION,
                       MEMBER_ID_REQUIRED, REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID, RawClient,
                       TrackedConsumer, consumer_protocol_assignment, consumer_protocol_metadata,
                       coordinator, group_id, offset_commit, offset_fetch, poll_until)
from kafkautil import create_topic, produce

pytestmark = pytest.mark.timeout(90)

INVALID_SESSION_TIMEOUT = 26
OFFSET_METADATA_TOO_LARGE = 12
UNKNOWN_TOPIC_OR_PARTITION = 3


def _coordinator(bootstrap, g):
    return coordinator(bootstrap, g)


def _stable_member(raw, g, meta, instance_id=None, assignment=b""):
    j = raw.join_new(g, protocols=[("range", meta)], instance_id=instance_id)
    assert j["error"] == 0, j
    s = raw.sync(g, j["generation"], j["member_id"], [(j["member_id"], assignment)],
                 instance_id=instance_id)
    assert s["error"] == 0, s
    return j["member_id"], j["generation"]


def test_static_member_replaced_old_id_is_fenced(bootstrap, topic_name):
    """ClassicGroup.validateMember: a request naming a group.instance.id that now maps to
    another member id is FENCED_INSTANCE_ID (82) (Heartbeat, SyncGroup, JoinGroup,
    OffsetCommit, LeaveGroup); without the instance id it is UNKNOWN_MEMBER_ID."""
    create_topic(bootstrap, topic_name, 1)
    g = group_id("fence")
    meta = consumer_protocol_metadata([topic_name])
    asg = consumer_protocol_assignment(topic_name, [0])
    a = _coordinator(bootstrap, g)
    b = _coordinator(bootstrap, g)
    try:
        # Static members get their id at once (no MEMBER_ID_REQUIRED round).
        first = a.join(g, "", protocols=[("range", meta)], instance_id="i1")
        assert first["error"] == 0 and first["member_id"], first
        old, gen = first["member_id"], first["generation"]
        assert a.sync(g, gen, old, [(old, asg)], instance_id="i1") == {"error": 0, "assignment": asg}
        # The same instance restarts: it replaces the old member, same generation, and
        # gets the assignment it had.
        j = b.join(g, "", protocols=[("range", meta)], instance_id="i1")
        assert j["error"] == 0, j
        new = j["member_id"]
        assert new != old and j["generation"] == gen
        # Before JoinGroup v9 (no skip_assignment), Kafka answers a replaced static
        # leader with the OLD leader id and no member list, so that it does not run the
        # assignor for a stable group (GroupCoordinator: "always returning the old
        # leader id"). Compared at the end.
        rejoin_leader = (j["leader"], j["members"])
        assert b.sync(g, gen, new, [], instance_id="i1") == {"error": 0, "assignment": asg}
        assert b.heartbeat(g, gen, new, instance_id="i1") == 0
        # The zombie.
        codes = {
            "heartbeat": a.heartbeat(g, gen, old, instance_id="i1"),
            "sync": a.sync(g, gen, old, [], instance_id="i1")["error"],
            "join": a.join(g, old, protocols=[("range", meta)], instance_id="i1")["error"],
            "commit": offset_commit(a, g, gen, old, [(topic_name, 0, 1, None)],
                                    instance_id="i1")[(topic_name, 0)],
            "leave": a.leave(g, [(old, "i1")])[1][0][2],
        }
        got = {"zombie": codes, "zombie without instance id": a.heartbeat(g, gen, old),
               # The new member was not disturbed.
               "new member heartbeat": b.heartbeat(g, gen, new, instance_id="i1"),
               "rejoin (leader, members)": rejoin_leader}
        want = {"zombie": {k: FENCED_INSTANCE_ID for k in codes},
                "zombie without instance id": UNKNOWN_MEMBER_ID,
                "new member heartbeat": 0,
                "rejoin (leader, members)": (old, [])}
        # Removal by instance id alone (admin removeMembersFromConsumerGroup).
        got["leave by instance id"] = b.leave(g, [("", "i1")])
        want["leave by instance id"] = (0, [("", "i1", 0)])
        d = b.describe_group(g)
        got["after"] = (d["state"], d["members"])
        want["after"] = ("Empty", [])
        assert got == want
    finally:
        a.close()
        b.close()


def test_zombie_static_consumer_is_fenced(bootstrap, topic_name):
    """Two confluent-kafka consumers with the same group.instance.id: the second one
    takes over, the first gets a fatal FENCED_INSTANCE_ID error, and the group settles
    (no endless rebalancing between the two)."""
    create_topic(bootstrap, topic_name, 2)
    produce(bootstrap, topic_name, [{"value": f"v{i}".encode(), "partition": i % 2}
                                    for i in range(20)])
    g = group_id("zombie")
    conf = {"group.instance.id": "dup", "session.timeout.ms": 10000}
    a = TrackedConsumer(bootstrap, g, [topic_name], "a", **conf)
    cs = [a]
    b = None
    try:
        poll_until(cs, lambda: len(a.records) >= 20, timeout=30, what="a reads")
        b = TrackedConsumer(bootstrap, g, [topic_name], "b", **conf)
        cs.append(b)
        fatal = []

        def step_a():
            m = a.c.poll(0.05)
            if m is not None and m.error() is not None:
                fatal.append(m.error())

        deadline = time.monotonic() + 20
        def is_fatal(e):
            return e.fatal() or e.code() == KafkaError._FATAL

        while time.monotonic() < deadline and not any(is_fatal(e) for e in fatal):
            step_a()
            b.step(0.05)
        assert any(is_fatal(e) for e in fatal), \
            f"the fenced consumer got no fatal error: {fatal}; in 20 s a had " \
            f"{len(a.events)} rebalance callbacks ({a.events[:4]}...), b {len(b.events)}"
        # librdkafka reports the fatal error as _FATAL; the cause is in the message.
        msg = " ".join(str(e) for e in fatal)
        assert "FENCED" in msg.upper() or "fenced" in msg, msg
        # b owns everything and stays put.
        poll_until([b], lambda: b.assignment == {0, 1}, timeout=20, what="b owns both partitions")
        events = list(b.events)
        t_end = time.monotonic() + 4
        while time.monotonic() < t_end:
            b.step(0.1)
        assert b.events == events, f"b kept rebalancing: {b.events[len(events):]}"
    finally:
        for c in cs:
            try:
                c.close()
            except Exception:   # the fenced consumer's close may report the fatal error
                pass


def test_offset_commit_validation(bootstrap, topic_name):
    """OffsetMetadataManager.validateOffsetCommit + ClassicGroup.validateOffsetCommit.
    Every case is recorded and compared at the end, so one run shows every mismatch."""
    create_topic(bootstrap, topic_name, 2)
    g = group_id("oc")
    t = topic_name
    meta = consumer_protocol_metadata([t])
    raw = _coordinator(bootstrap, g)
    got, want = {}, {}

    def check(name, value, expected):
        got[name], want[name] = value, expected

    try:
        # Group does not exist, generation >= 0: ILLEGAL_GENERATION before v9,
        # GROUP_ID_NOT_FOUND from v9.
        check("no group, gen 3, v7", offset_commit(raw, g, 3, "m", [(t, 0, 1, None)]),
              {(t, 0): ILLEGAL_GENERATION})
        check("no group, gen 3, v9", offset_commit(raw, g, 3, "m", [(t, 0, 1, None)], version=9),
              {(t, 0): GROUP_ID_NOT_FOUND})
        # A member that joined but has not synced: the group is CompletingRebalance.
        first = raw.join(g, "", protocols=[("range", meta)])
        assert first["error"] == MEMBER_ID_REQUIRED
        j = raw.join(g, first["member_id"], protocols=[("range", meta)])
        me, gen = j["member_id"], j["generation"]
        check("completing rebalance", offset_commit(raw, g, gen, me, [(t, 0, 1, None)]),
              {(t, 0): REBALANCE_IN_PROGRESS})
        assert raw.sync(g, gen, me, [(me, b"")])["error"] == 0
        # Stable.
        check("member", offset_commit(raw, g, gen, me, [(t, 0, 5, "m5"), (t, 1, 7, None)]),
              {(t, 0): 0, (t, 1): 0})
        check("next generation", offset_commit(raw, g, gen + 1, me, [(t, 0, 6, None)]),
              {(t, 0): ILLEGAL_GENERATION})
        check("unknown member", offset_commit(raw, g, gen, "nobody", [(t, 0, 6, None)]),
              {(t, 0): UNKNOWN_MEMBER_ID})
        # No member id and no generation (an admin / simple consumer) while the group has
        # members: UNKNOWN_MEMBER_ID.
        check("simple commit, group has members", offset_commit(raw, g, -1, "", [(t, 0, 6, None)]),
              {(t, 0): UNKNOWN_MEMBER_ID})
        # Per-partition errors: metadata too large, unknown topic / partition.
        check("per partition", offset_commit(raw, g, gen, me, [
            (t, 0, 8, "x" * 5000), (t, 1, 9, "ok"), (t, 2, 1, None), ("no-such-topic-" + g, 0, 1, None)]),
            {(t, 0): OFFSET_METADATA_TOO_LARGE, (t, 1): 0, (t, 2): UNKNOWN_TOPIC_OR_PARTITION,
             ("no-such-topic-" + g, 0): UNKNOWN_TOPIC_OR_PARTITION})
        check("fetch", offset_fetch(raw, g, t, [0, 1]), ({0: (5, "m5", 0), 1: (9, "ok", 0)}, 0))
        # After the member left, a simple commit works.
        check("leave", raw.leave(g, [(me, None)]), (0, [(me, None, 0)]))
        check("simple commit, empty group", offset_commit(raw, g, -1, "", [(t, 0, 11, None)]),
              {(t, 0): 0})
        check("fetch after simple commit", offset_fetch(raw, g, t, [0])[0], {0: (11, "", 0)})
    finally:
        raw.close()
    bad = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert not bad, "mismatches (got, want): " + repr(bad)


def test_simple_group_and_unknown_group(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 1)
    g = group_id("simple")
    raw = _coordinator(bootstrap, g)
    try:
        # Never seen: OffsetFetch answers "no offset", DescribeGroups (< v6) "Dead".
        fetched, top = offset_fetch(raw, g, topic_name, [0])
        assert top == 0 and fetched == {0: (-1, "", 0)}, fetched
        d = raw.describe_group(g)
        assert (d["error"], d["group_id"], d["state"], d["protocol_type"], d["members"]) == \
            (0, g, "Dead", "", [])
        # A commit without generation creates a "simple" group (protocol type "").
        assert offset_commit(raw, g, -1, "", [(topic_name, 0, 3, "meta")]) == {(topic_name, 0): 0}
        assert offset_fetch(raw, g, topic_name, [0])[0] == {0: (3, "meta", 0)}
        d = raw.describe_group(g)
        assert (d["error"], d["state"], d["protocol_type"], d["members"]) == (0, "Empty", "", [])
        # ListGroups v2 lists it with an empty protocol type.
        r = raw.call(16, 2, b"")
        r.i32()
        assert r.i16() == 0
        listed = dict(r.array(lambda x: (x.str(), x.str())))
        assert listed.get(g) == "", listed.get(g)
    finally:
        raw.close()


def _delete_groups(raw, groups):
    """DeleteGroups v1: {group: error}."""
    import struct
    from grouputil import _str
    r = raw.call(42, 1, struct.pack(">i", len(groups)) + b"".join(_str(x) for x in groups))
    r.i32()
    return dict(r.array(lambda x: (x.str(), x.i16())))


def _list_groups(raw):
    r = raw.call(16, 2, b"")
    r.i32()
    assert r.i16() == 0
    return dict(r.array(lambda x: (x.str(), x.str())))


def test_empty_group_is_retained_after_last_member_leaves(bootstrap):
    """Kafka keeps a classic group whose last member left as Empty, with its protocol
    type (until offsets.retention.check.interval.ms cleans it up): DescribeGroups shows
    Empty/"consumer", ListGroups lists it, DeleteGroups deletes it (NONE, not
    GROUP_ID_NOT_FOUND)."""
    g = group_id("keep")
    meta = consumer_protocol_metadata(["t"])
    raw = _coordinator(bootstrap, g)
    try:
        me, gen = _stable_member(raw, g, meta)
        assert raw.leave(g, [(me, None)]) == (0, [(me, None, 0)])
        time.sleep(1.0)   # longer than any housekeeping tick
        d = raw.describe_group(g)
        got = {"describe": (d["error"], d["state"], d["protocol_type"], d["members"]),
               "listed": _list_groups(raw).get(g),
               "delete": _delete_groups(raw, [g])}
        want = {"describe": (0, "Empty", "consumer", []), "listed": "consumer", "delete": {g: 0}}
        d = raw.describe_group(g)
        got["after delete"] = (d["error"], d["state"])
        want["after delete"] = (0, "Dead")
        got["delete again"] = _delete_groups(raw, [g])
        want["delete again"] = {g: GROUP_ID_NOT_FOUND}
        assert got == want
    finally:
        raw.close()


def test_session_timeouts(bootstrap):
    g = group_id("sess")
    meta = consumer_protocol_metadata(["t"])
    raw = _coordinator(bootstrap, g)
    try:
        for bad in (5999, 1800001):
            r = raw.join(g, "", protocols=[("range", meta)], session_ms=bad)
            assert r["error"] == INVALID_SESSION_TIMEOUT, (bad, r)
        me, gen = _stable_member(raw, g, meta)
        assert raw.heartbeat(g, gen, me) == 0
        # Silence for longer than the session timeout (6 s): the member is gone.
        time.sleep(7.5)
        assert raw.heartbeat(g, gen, me) == UNKNOWN_MEMBER_ID
        d = raw.describe_group(g)
        assert d["members"] == []
        # Kafka keeps the group as Empty (see the test above).
        assert (d["state"], d["protocol_type"]) == ("Empty", "consumer")
    finally:
        raw.close()


def test_follower_sync_waits_for_leader(bootstrap):
    """SyncGroup of a follower is answered when the leader's SyncGroup brings the
    assignment; each member gets its own."""
    g = group_id("sync")
    meta = consumer_protocol_metadata(["t"])
    a = _coordinator(bootstrap, g)
    b = _coordinator(bootstrap, g)
    try:
        fa = a.join(g, "", protocols=[("range", meta)])
        fb = b.join(g, "", protocols=[("range", meta)])
        assert fa["error"] == fb["error"] == MEMBER_ID_REQUIRED
        ca = a.send(11, 5, RawClient.join_body(g, fa["member_id"], "consumer", [("range", meta)]))
        cb = b.send(11, 5, RawClient.join_body(g, fb["member_id"], "consumer", [("range", meta)]))
        ja = RawClient.parse_join(a.receive(ca))
        jb = RawClient.parse_join(b.receive(cb))
        assert ja["error"] == jb["error"] == 0 and ja["generation"] == jb["generation"]
        assert ja["leader"] == jb["leader"]
        leader, follower = (a, b) if ja["leader"] == ja["member_id"] else (b, a)
        lj, fj = (ja, jb) if leader is a else (jb, ja)
        assert len(lj["members"]) == 2 and fj["members"] == []
        gen = lj["generation"]
        # Follower first: its SyncGroup waits.
        fc = follower.send(14, 3, _sync_body(g, gen, fj["member_id"], []))
        follower.sock.settimeout(1.0)
        with pytest.raises(OSError):
            follower.receive(fc)   # nothing yet (times out)
        follower.sock.settimeout(30)
        asg_l = consumer_protocol_assignment("t", [0])
        asg_f = consumer_protocol_assignment("t", [1])
        s = leader.sync(g, gen, lj["member_id"], [(lj["member_id"], asg_l), (fj["member_id"], asg_f)])
        assert s == {"error": 0, "assignment": asg_l}
        r = follower.receive(fc)
        r.i32()
        assert (r.i16(), r.bytes()) == (0, asg_f)
    finally:
        a.close()
        b.close()


def _sync_body(g, gen, member, assignments):
    from grouputil import _bytes, _nstr, _str
    import struct
    return (_str(g) + struct.pack(">i", gen) + _str(member) + _nstr(None)
            + struct.pack(">i", len(assignments))
            + b"".join(_str(m) + _bytes(x) for m, x in assignments))
