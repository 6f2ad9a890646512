"""KIP-932 share groups through Kafka's Java KafkaShareConsumer: several members sharing
one partition, explicit acknowledgement (accept, release, reject), redelivery after a
lock expires and after a member dies, the delivery-count limit, and records surviving a
broker restart in their acknowledged state. Every expectation was checked against Apache
Kafka 4.4.0 first (compat/reference-kafka.sh; run this file with
SPATE_COMPAT_BOOTSTRAP=127.0.0.1:39092 to check again)."""
import json
import queue
import subprocess
import threading
import time
import uuid

import pytest

from conftest import EXTERNAL, RUNS
from kafkautil import JAVA_JAR, create_topic, java_jar, produce, wait_topic
from test_kafka_cli import kafka_libs, tool  # noqa: F401 (kafka_libs is a fixture)

DEADLINE = 60
# Kafka's smallest record lock duration (group.share.min.record.lock.duration.ms).
LOCK_MS = 15000


class ShareMember:
    """A ShareMember process (compat/java): commands on stdin, JSON answers on stdout."""

    def __init__(self, bootstrap, group, topic, mode="explicit", max_poll_records=500):
        java_jar()
        cmd = ["java", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp", str(JAVA_JAR),
               "dev.spate.compat.ShareMember", bootstrap, group, topic, mode,
               str(max_poll_records)]
        RUNS.mkdir(parents=True, exist_ok=True)
        self.log_path = RUNS / f"share-member-{group}-{uuid.uuid4().hex[:6]}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=log, text=True)
        self.answers = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        assert self._answer(DEADLINE) == {"ready": True}

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.answers.put(json.loads(line))
            except ValueError:
                pass
        self.answers.put(None)

    def _answer(self, timeout):
        try:
            a = self.answers.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no answer from the share member (log {self.log_path})")
        assert a is not None, f"share member exited (log {self.log_path})"
        return a

    def send(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def ask(self, line, timeout=DEADLINE):
        self.send(line)
        a = self._answer(timeout)
        assert "error" not in a, (line, a)
        return a

    def poll(self, ms=1000):
        return self.ask(f"poll {ms}")["polled"]

    def poll_until(self, count, deadline=DEADLINE):
        """Poll until at least `count` records came (the records of every poll)."""
        got = []
        end = time.monotonic() + deadline
        while len(got) < count and time.monotonic() < end:
            got.extend(self.poll(500))
        return got

    def take(self, count, deadline=DEADLINE):
        """Explicit mode: poll and accept every record of each poll until at least
        `count` came, then commit; the records."""
        got = []
        end = time.monotonic() + deadline
        while len(got) < count and time.monotonic() < end:
            polled = self.poll(500)
            for r in polled:
                self.ack(r, "accept")
            got.extend(polled)
        committed = self.commit()
        assert all(e is None for e in committed.values()), committed
        return got

    def ack(self, record, kind):
        self.ask(f"ack {record['p']} {record['o']} {kind}")

    def commit(self):
        return self.ask("commit")["committed"]

    def close(self):
        if self.proc.poll() is None:
            self.send("close")
            try:
                self._answer(DEADLINE)
            finally:
                self.proc.stdin.close()
                self.proc.wait(30)

    def kill9(self):
        self.proc.kill()
        self.proc.wait(10)


def group_config(libs, bootstrap, group, **configs):
    """Set share.* group configs with kafka-configs.sh (names with dots: pass a dict)."""
    entries = ",".join(f"{k}={v}" for k, v in configs.items())
    tool(libs, "ConfigCommand", "--bootstrap-server", bootstrap, "--entity-type", "groups",
         "--entity-name", group, "--alter", "--add-config", entries)


def earliest_group(libs, bootstrap, prefix, **more):
    group = f"{prefix}-{uuid.uuid4().hex[:8]}"
    group_config(libs, bootstrap, group, **{"share.auto.offset.reset": "earliest", **more})
    return group


def fill(bootstrap, topic, n, partition=0):
    """n records "v0".."v{n-1}", one batch each (so that acquisition can split them)."""
    reports = produce(bootstrap, topic,
                      [{"value": f"v{i}".encode(), "partition": partition} for i in range(n)],
                      conf={"linger.ms": 0, "batch.size": 1})
    assert all(err is None for err, *_ in reports), reports
    return [off for _, _, off, *_ in reports]


@pytest.fixture
def share_topic(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, partitions=1)
    wait_topic(bootstrap, topic_name, 1)
    return topic_name


def values(records):
    return [r["v"] for r in records]


def test_members_share_one_partition_and_each_record_is_delivered_once(
        bootstrap, share_topic, kafka_libs):
    group = earliest_group(kafka_libs, bootstrap, "share-many")
    fill(bootstrap, share_topic, 300)
    # Small polls, so that no member takes every record in one go.
    members = [ShareMember(bootstrap, group, share_topic, "implicit", 10) for _ in range(3)]
    try:
        seen = {i: [] for i in range(3)}
        end = time.monotonic() + DEADLINE
        while sum(len(v) for v in seen.values()) < 300 and time.monotonic() < end:
            # All three poll at once, so that they compete for the partition's records.
            for m in members:
                m.send("poll 500")
            for i, m in enumerate(members):
                a = m._answer(DEADLINE)
                assert "polled" in a, a
                seen[i].extend(a["polled"])
        everything = [r for rs in seen.values() for r in rs]
        assert sorted(values(everything), key=lambda v: int(v[1:])) == [f"v{i}" for i in range(300)]
        assert all(r["d"] == 1 for r in everything)
        assert sum(1 for rs in seen.values() if rs) >= 2, {i: len(v) for i, v in seen.items()}
    finally:
        for m in members:
            m.close()


def test_explicit_accept_release_reject(bootstrap, share_topic, kafka_libs):
    group = earliest_group(kafka_libs, bootstrap, "share-explicit")
    fill(bootstrap, share_topic, 10)
    a = ShareMember(bootstrap, group, share_topic)
    try:
        got = a.poll_until(10)
        assert values(got) == [f"v{i}" for i in range(10)]
        for r in got:
            kind = {5: "release", 6: "release", 7: "reject"}.get(r["o"], "accept")
            a.ack(r, kind)
        assert a.commit() == {f"{share_topic}-0": None}
        again = a.poll_until(2)
        assert [(r["v"], r["d"]) for r in again] == [("v5", 2), ("v6", 2)]
        for r in again:
            a.ack(r, "accept")
        assert a.commit() == {f"{share_topic}-0": None}
        # Nothing is left: the rejected record is never delivered again.
        assert a.poll(2000) == []
    finally:
        a.close()
    b = ShareMember(bootstrap, group, share_topic)
    try:
        assert b.poll(3000) == []
    finally:
        b.close()


def test_renew_acknowledgement_and_its_group_switch(bootstrap, share_topic, kafka_libs):
    """RENEW (KIP-1222) keeps a record's lock; with the group's
    share.renew.acknowledge.enable=false the broker refuses it per partition with
    INVALID_RECORD_STATE (Kafka's ShareGroupConfigProvider.isRenewAcknowledgeEnabled)."""
    fill(bootstrap, share_topic, 2)
    on = earliest_group(kafka_libs, bootstrap, "share-renew-on")
    a = ShareMember(bootstrap, on, share_topic)
    try:
        got = a.poll_until(2)
        assert values(got) == ["v0", "v1"]
        a.ack(got[0], "renew")
        a.ack(got[1], "accept")
        assert a.commit() == {f"{share_topic}-0": None}
    finally:
        a.close()
    off = earliest_group(kafka_libs, bootstrap, "share-renew-off",
                         **{"share.renew.acknowledge.enable": "false"})
    b = ShareMember(bootstrap, off, share_topic)
    try:
        got = b.poll_until(2)
        assert values(got) == ["v0", "v1"]
        b.ack(got[0], "renew")
        assert b.commit() == {f"{share_topic}-0": "InvalidRecordStateException"}
    finally:
        b.close()


def test_records_return_after_the_lock_expires(bootstrap, share_topic, kafka_libs):
    group = earliest_group(kafka_libs, bootstrap, "share-lock",
                           **{"share.record.lock.duration.ms": LOCK_MS})
    fill(bootstrap, share_topic, 3)
    a = ShareMember(bootstrap, group, share_topic)
    b = ShareMember(bootstrap, group, share_topic)
    try:
        held = a.poll_until(3)
        assert values(held) == ["v0", "v1", "v2"]
        # While a holds them, b gets nothing.
        assert b.poll(2000) == []
        got = b.poll_until(3, deadline=LOCK_MS / 1000 + 30)
        assert [(r["v"], r["d"]) for r in got] == [("v0", 2), ("v1", 2), ("v2", 2)]
        # a's lock is gone: its acknowledgement fails.
        for r in held:
            a.ack(r, "accept")
        assert a.commit() == {f"{share_topic}-0": "InvalidRecordStateException"}
        for r in got:
            b.ack(r, "accept")
        assert b.commit() == {f"{share_topic}-0": None}
    finally:
        a.close()
        b.close()


def test_records_of_a_killed_member_are_redelivered(bootstrap, share_topic, kafka_libs):
    group = earliest_group(kafka_libs, bootstrap, "share-kill",
                           **{"share.record.lock.duration.ms": LOCK_MS})
    fill(bootstrap, share_topic, 4)
    a = ShareMember(bootstrap, group, share_topic)
    held = a.poll_until(4)
    assert values(held) == ["v0", "v1", "v2", "v3"]
    a.kill9()
    b = ShareMember(bootstrap, group, share_topic)
    try:
        got = b.poll_until(4, deadline=LOCK_MS / 1000 + 30)
        assert [(r["v"], r["d"]) for r in got] == [("v0", 2), ("v1", 2), ("v2", 2), ("v3", 2)]
        for r in got:
            b.ack(r, "accept")
        assert b.commit() == {f"{share_topic}-0": None}
    finally:
        b.close()


def test_delivery_count_limit_archives_a_record(bootstrap, share_topic, kafka_libs):
    group = earliest_group(kafka_libs, bootstrap, "share-limit",
                           **{"share.delivery.count.limit": 2})
    fill(bootstrap, share_topic, 2)
    a = ShareMember(bootstrap, group, share_topic)
    try:
        first = a.poll_until(2)
        assert [(r["v"], r["d"]) for r in first] == [("v0", 1), ("v1", 1)]
        a.ack(first[0], "release")
        a.ack(first[1], "accept")
        assert a.commit() == {f"{share_topic}-0": None}
        second = a.poll_until(1)
        assert [(r["v"], r["d"]) for r in second] == [("v0", 2)]
        a.ack(second[0], "release")
        assert a.commit() == {f"{share_topic}-0": None}
        # Delivered twice and released: archived, never delivered again.
        assert a.poll(3000) == []
    finally:
        a.close()


@pytest.mark.skipif(bool(EXTERNAL), reason="restarts the broker it starts itself")
def test_acknowledged_state_survives_a_restart(restartable_broker, kafka_libs):
    broker = restartable_broker
    bootstrap = broker.bootstrap
    topic = f"share-restart-{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, topic, partitions=1)
    wait_topic(bootstrap, topic, 1)
    group = earliest_group(kafka_libs, bootstrap, "share-restart")
    fill(bootstrap, topic, 6)
    a = ShareMember(bootstrap, group, topic)
    try:
        got = a.poll_until(6)
        for r in got:
            a.ack(r, "accept" if r["o"] < 3 else "release")
        assert a.commit() == {f"{topic}-0": None}
    finally:
        a.close()
    broker.kill()
    broker.start()
    b = ShareMember(bootstrap, group, topic)
    try:
        got = b.poll_until(3)
        # The accepted records stay acknowledged; the released ones come back, counted.
        assert [(r["v"], r["d"]) for r in got] == [("v3", 2), ("v4", 2), ("v5", 2)]
    finally:
        b.close()
