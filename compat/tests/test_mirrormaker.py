"""MirrorMaker 2 in dedicated mode between two brokers (clusters A and B, A->B): the topic
is replicated to B as A.<topic> record for record (offsets, keys, values, headers,
timestamps), its configs follow, and a consumer group's offsets committed on A are
translated and committed on B, where a consumer of the same group resumes right after
what it had read on A. MirrorMaker 4.3.1: compat/frameworks/connect/pom.xml says why."""
import shutil
import time

import pytest

from conftest import EXTERNAL, _new_broker
from frameworkutil import (JavaProcess, KEEP, connect_classpath, list_topics, run_dir,
                           topic_configs, wait_until)
from grouputil import TrackedConsumer, committed, drain, group_id, poll_until
from kafkautil import consume, create_topic, produce, watermarks

MAIN = "org.apache.kafka.connect.mirror.MirrorMaker"
PARTITIONS = 2


@pytest.fixture(scope="module")
def connect_cp():
    return connect_classpath()


@pytest.fixture
def two_brokers():
    if EXTERNAL:
        pytest.skip("MirrorMaker needs two brokers that the suite starts itself")
    brokers = [_new_broker(), _new_broker()]
    try:
        for b in brokers:
            b.start()
        yield brokers
    finally:
        for b in brokers:
            b.stop()
            if not KEEP:
                shutil.rmtree(b.data_dir, ignore_errors=True)


def mm2_properties(a, b, topic, group):
    flow = "A->B"
    return "\n".join([
        "clusters=A,B",
        f"A.bootstrap.servers={a}",
        f"B.bootstrap.servers={b}",
        f"{flow}.enabled=true",
        f"{flow}.topics={topic}",
        f"{flow}.groups={group}",
        # No B->A flow and no heartbeats into A: one herder only.
        "B->A.enabled=false",
        "B->A.emit.heartbeats.enabled=false",
        "tasks.max=1",
        f"{flow}.emit.heartbeats.interval.seconds=1",
        f"{flow}.emit.checkpoints.interval.seconds=1",
        f"{flow}.sync.group.offsets.enabled=true",
        f"{flow}.sync.group.offsets.interval.seconds=1",
        f"{flow}.refresh.topics.interval.seconds=2",
        f"{flow}.refresh.groups.interval.seconds=1",
        # The worker's settings go with the target cluster. Offset syncs go out when the
        # source task commits its offsets.
        "B.offset.flush.interval.ms=1000",
        "replication.factor=1",
        "checkpoints.topic.replication.factor=1",
        "heartbeats.topic.replication.factor=1",
        "offset-syncs.topic.replication.factor=1",
        "offset.storage.replication.factor=1",
        "status.storage.replication.factor=1",
        "config.storage.replication.factor=1",
        "",
    ])


def records(start, count, base_ts):
    return [{"key": None if i % 9 == 4 else f"k{i}".encode(), "value": f"mirrored {i}".encode(),
             "partition": i % PARTITIONS, "timestamp": base_ts + i,
             "headers": [("n", str(i).encode()), ("empty", b"")]} for i in range(start, start + count)]


def strip(recs):
    return [(r["offset"], r["key"], r["value"], r["headers"], r["timestamp"], r["timestamp_type"])
            for r in recs]


def test_mirrormaker2_replicates_topic_and_syncs_group_offsets(two_brokers, topic_name, connect_cp):
    a, b = two_brokers
    work = run_dir("mm2")
    group = group_id("mm2")
    remote = f"A.{topic_name}"
    # Recent timestamps: the topics' retention.ms (copied to B) must not expire them.
    base_ts = int(time.time() * 1000) - 60_000
    first, second = records(0, 60, base_ts), records(60, 40, base_ts)
    create_topic(a.bootstrap, topic_name, partitions=PARTITIONS, config={"retention.ms": "123456789"})
    for r in produce(a.bootstrap, topic_name, first):
        assert r[0] is None, r

    props = work / "mm2.properties"
    props.write_text(mm2_properties(a.bootstrap, b.bootstrap, topic_name, group))
    mm = JavaProcess("mm2", connect_cp, MAIN, [props], work, heap="512m")
    consumer = None

    def replicated(n_per_partition):
        wait_until(lambda: remote in list_topics(b.bootstrap), 90, f"{remote} on B", [mm])
        wait_until(lambda: all(watermarks(b.bootstrap, remote, p)[1] >= n_per_partition
                               for p in range(PARTITIONS)),
                   60, f"{n_per_partition} records per partition of {remote} on B", [mm])
        for p in range(PARTITIONS):
            want = consume(a.bootstrap, topic_name, p, n_per_partition)
            got = consume(b.bootstrap, remote, p, n_per_partition)
            assert strip(got) == strip(want), f"partition {p}"

    try:
        mm.start()
        replicated(30)
        assert topic_configs(b.bootstrap, remote, ["retention.ms"]) == {"retention.ms": "123456789"}

        # The group reads everything there is on A so far and commits: 30 per partition.
        reader = TrackedConsumer(a.bootstrap, group, [topic_name], "a-reader")
        try:
            poll_until([reader], lambda: len(reader.records) == 60, what="60 records on A")
            drain([reader], 1.0)
        finally:
            reader.close()
        assert len(reader.records) == 60
        assert committed(a.bootstrap, group, topic_name, PARTITIONS) == {0: 30, 1: 30}
        # MirrorMaker translates them (the last offset sync is 29 -> 29 in each partition,
        # so 30 -> 30) and commits them for the same group on B.
        wait_until(lambda: committed(b.bootstrap, group, remote, PARTITIONS) == {0: 30, 1: 30},
                   90, f"group {group} offsets 30/30 on {remote} on B", [mm])

        for r in produce(a.bootstrap, topic_name, second):
            assert r[0] is None, r
        replicated(50)

        # On B the group resumes where it stopped on A: only the records produced since.
        consumer = TrackedConsumer(b.bootstrap, group, [remote], "b-reader", commit=False)
        poll_until([consumer], lambda: len(consumer.records) >= 40, timeout=60,
                   what="40 records on B")
        drain([consumer], 1.0)
        got = sorted((p, o, k, v) for p, o, k, v in consumer.records)
        want = sorted((r["partition"], 30 + (i // PARTITIONS), r["key"], r["value"])
                      for i, r in enumerate(second))
        assert got == want

        for t in ("mm2-configs.A.internal", "mm2-offsets.A.internal", "mm2-status.A.internal",
                  "A.checkpoints.internal", "heartbeats"):
            assert topic_configs(b.bootstrap, t, ["cleanup.policy"]) == \
                {"cleanup.policy": "compact"}, t
        assert topic_configs(a.bootstrap, "mm2-offset-syncs.B.internal", ["cleanup.policy"]) == \
            {"cleanup.policy": "compact"}
        assert mm.stop() is not None, f"MirrorMaker did not stop within 30 s\n{mm.tail()}"
        # MirrorMaker's periodic jobs (topic and group refresh, topic config and ACL sync)
        # log and carry on when a broker call fails: none may have failed. The ACL sync
        # finds no authorizer (DescribeAcls answers SECURITY_DISABLED) and says so.
        log = mm.log_path.read_text(errors="replace")
        failed = [line for line in log.splitlines() if "caught exception in scheduled task" in line]
        assert failed == [], mm.tail()
        assert "No ACL authorizer is configured on the source Kafka cluster" in log
    finally:
        if consumer is not None:
            consumer.close()
        mm.kill()
    if not KEEP:
        shutil.rmtree(work, ignore_errors=True)
