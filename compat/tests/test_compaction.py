"""Log compaction through real clients (confluent-kafka / librdkafka): the latest record
per key survives at its original offset, tombstones go after delete.retention.ms, the
policy is described and altered as Kafka does, and a broker killed mid-clean loses
nothing acknowledged and never shows a mix of old and new segments."""
import random
import shutil
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

from conftest import EXTERNAL, RUNS, free_port
from grouputil import ConfiguredBroker
from kafkautil import OP_TIMEOUT, admin, create_topic, produce, watermarks

# Cleaner settings that make compaction visible within seconds. Against real Kafka
# (SPATE_BIN=compat/reference/kafka-as-spate.sh) these are ignored and Kafka's 15 s
# log.cleaner.backoff.ms applies: the deadlines below allow for it.
CLEANER_TOML = """
[log_cleaner]
backoff_ms = 200
"""
DEADLINE = 90

COMPACT = {
    "cleanup.policy": "compact",
    "segment.ms": "100",
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "2000",
}


def _broker(extra=""):
    RUNS.mkdir(parents=True, exist_ok=True)
    data = RUNS / f"spate-compact-{uuid.uuid4().hex[:10]}"
    cfg = RUNS / (data.name + ".toml")
    cfg.write_text(CLEANER_TOML + extra)
    return ConfiguredBroker(data, free_port(), {"SPATE_CONFIG": str(cfg)}), cfg


@pytest.fixture
def compacting_broker():
    if EXTERNAL:
        pytest.skip("needs a broker started with a short cleaner backoff")
    broker, cfg = _broker()
    broker.start()
    yield broker
    broker.stop()
    shutil.rmtree(broker.data_dir, ignore_errors=True)
    cfg.unlink(missing_ok=True)


def read_all(bootstrap, topic, partition=0):
    """Every record from the log start to the high watermark: (offset, key, value)."""
    low, _ = watermarks(bootstrap, topic, partition)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "compat-unused",
                  "enable.auto.commit": False, "auto.offset.reset": "error",
                  "fetch.wait.max.ms": 100, "enable.partition.eof": True})
    out = []
    try:
        c.assign([TopicPartition(topic, partition, low)])
        deadline = time.monotonic() + OP_TIMEOUT
        while time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    return out
                raise AssertionError(m.error())
            out.append((m.offset(), m.key(), m.value()))
        raise AssertionError(f"did not reach the end of {topic}")
    finally:
        c.close()


def cleaner_output(part_dir):
    """The files of a clean in progress (see log/src/clean/swap.rs)."""
    return sorted(p.name for p in part_dir.iterdir() if p.suffix in (".cleaned", ".swap"))


def wait_for(what, check, deadline=DEADLINE, every=0.5):
    """Poll `check` until it returns something true."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if check():
            return
        time.sleep(every)
    raise AssertionError(f"no {what} within {deadline}s")


def produce_rounds(bootstrap, topic, keys, rounds, tombstone, noise=0):
    """`rounds` updates of every key, pausing so that segments roll (segment.ms=100);
    in the last round the keys `tombstone` picks are deleted; each value carries
    `noise` incompressible bytes. Returns every (offset, key, value) written, in offset
    order."""
    rng = random.Random(f"{topic}-{keys}-{rounds}")
    written = []
    for r in range(rounds):
        recs = []
        for k in range(keys):
            key = f"key-{k:04d}".encode()
            last = r == rounds - 1
            value = None if last and tombstone(k) else \
                f"value-{r}-{k}-{'x' * (k % 40)}".encode() + rng.randbytes(noise)
            recs.append({"key": key, "value": value, "partition": 0})
        reports = produce(bootstrap, topic, recs, {"acks": "all", "compression.type": "lz4"})
        assert all(e is None for e, *_ in reports)
        written += [(o, k, v) for _, _, o, k, v in reports]
        time.sleep(0.25)
    return sorted(written)


def latest_per_key(written):
    latest = {}
    for o, k, v in sorted(written):
        latest[k] = (o, k, v)
    return sorted(latest.values())


def test_latest_value_per_key_at_its_offset_then_tombstones_go(compacting_broker):
    bs = compacting_broker.bootstrap
    topic = f"compact-{uuid.uuid4().hex[:8]}"
    create_topic(bs, topic, 1, COMPACT)
    written = produce_rounds(bs, topic, keys=300, rounds=6, tombstone=lambda k: k % 5 == 0)
    # A record of another key, later, rolls the last round into a sealed segment.
    time.sleep(0.3)
    sentinel = produce(bs, topic, [{"key": b"sentinel", "value": b"end", "partition": 0}])
    written.append((sentinel[0][2], b"sentinel", b"end"))
    want = latest_per_key(written)
    low, high = watermarks(bs, topic, 0)
    assert (low, high) == (0, len(written))

    # Compaction keeps exactly the latest record of every key, tombstones included for now,
    # each at the offset it was written at.
    wait_for("compaction to the latest record per key",
             lambda: read_all(bs, topic) == want)
    assert watermarks(bs, topic, 0) == (0, len(written)), "compaction moves no watermark"

    # Once delete.retention.ms has passed, the next clean removes the tombstones (Kafka
    # cleans when new dirty data comes; Spate also when the horizon passes by itself).
    time.sleep(2.5)
    filler = produce(bs, topic, [{"key": f"filler-{i}".encode(), "value": b"f", "partition": 0}
                                 for i in range(100)])
    time.sleep(0.3)
    end = produce(bs, topic, [{"key": b"sentinel-2", "value": b"end", "partition": 0}])
    alive = [r for r in want if r[2] is not None] + \
        [(o, k, v) for _, _, o, k, v in filler + end]
    assert len(alive) == len(want) - 60 + 101
    wait_for("removal of tombstones after delete.retention.ms",
             lambda: read_all(bs, topic) == alive)
    # A consumer starting at a compacted-away offset gets the next record.
    c = Consumer({"bootstrap.servers": bs, "group.id": "compat-unused",
                  "enable.auto.commit": False, "auto.offset.reset": "error"})
    try:
        c.assign([TopicPartition(topic, 0, 1)])
        m = None
        deadline = time.monotonic() + OP_TIMEOUT
        while m is None and time.monotonic() < deadline:
            m = c.poll(0.5)
        assert m is not None and not m.error()
        assert (m.offset(), m.key(), m.value()) == next(r for r in alive if r[0] >= 1)
    finally:
        c.close()


def test_cleanup_policy_is_described_and_altered_as_kafka_does(bootstrap):
    a = admin(bootstrap)
    topic = f"policy-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, 1, {"cleanup.policy": "compact, delete"})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)

    def policy():
        return a.describe_configs([res], request_timeout=OP_TIMEOUT)[res].result(OP_TIMEOUT)[
            "cleanup.policy"].value

    assert policy() == "compact,delete"
    res_set = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("cleanup.policy", "compact",
                    incremental_operation=AlterConfigOpType.SET)])
    a.incremental_alter_configs([res_set])[res_set].result(OP_TIMEOUT)
    assert policy() == "compact"
    res_sub = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("cleanup.policy", "delete",
                    incremental_operation=AlterConfigOpType.APPEND)])
    a.incremental_alter_configs([res_sub])[res_sub].result(OP_TIMEOUT)
    assert policy() == "compact,delete"
    bad = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
        ConfigEntry("cleanup.policy", "forever",
                    incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(Exception) as e:
        a.incremental_alter_configs([bad])[bad].result(OP_TIMEOUT)
    assert "String must be one of: compact, delete" in str(e.value)
    # A commit makes sure __consumer_offsets exists (Kafka creates it on first use).
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"policy-{uuid.uuid4().hex[:6]}",
                  "enable.auto.commit": False})
    try:
        deadline = time.monotonic() + OP_TIMEOUT
        while True:
            try:
                c.commit(offsets=[TopicPartition(topic, 0, 0)], asynchronous=False)
                break
            except Exception:  # the coordinator is still loading (Kafka: NOT_COORDINATOR)
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        c.close()
    offsets = ConfigResource(ConfigResource.Type.TOPIC, "__consumer_offsets")
    cfg = a.describe_configs([offsets], request_timeout=OP_TIMEOUT)[offsets].result(OP_TIMEOUT)
    assert cfg["cleanup.policy"].value == "compact"


def test_kill9_mid_clean_loses_nothing_acknowledged():
    """Kill the broker while it cleans (throttled to 500 kB/s over megabytes), five times: every
    restart recovers a log holding the last acknowledged value of every key, each record
    exactly as written at its offset, in offset order (old segments or new, never a mix)."""
    if EXTERNAL:
        pytest.skip("kills the broker")
    broker, cfg = _broker("io_max_bytes_per_second = 500000\n")
    broker.start()
    try:
        bs = broker.bootstrap
        topic = f"compact-kill-{uuid.uuid4().hex[:8]}"
        create_topic(bs, topic, 1, {**COMPACT, "delete.retention.ms": "86400000"})
        rng = random.Random(7)
        by_offset = {}
        mid_clean = 0
        for rnd in range(5):
            written = produce_rounds(bs, topic, keys=300, rounds=3, tombstone=lambda k: False,
                                     noise=1500)
            by_offset.update({o: (k, v) for o, k, v in written})
            # Wait for the clean to write its output, then kill -9 inside it (even rounds)
            # or right after it swapped its segments in (odd rounds).
            part_dir = broker.data_dir / f"{topic}-0"
            wait_for("clean writing its output", lambda: cleaner_output(part_dir), 60, 0.01)
            if rnd % 2 == 0:
                time.sleep(rng.random() * 0.3)
            else:
                wait_for("end of the clean", lambda: not cleaner_output(part_dir), 60, 0.01)
            broker.kill()
            broker.wait_port_closed()
            leftovers = cleaner_output(part_dir)
            mid_clean += bool(leftovers)
            broker.start()
            got = read_all(bs, topic)
            offsets = [o for o, _, _ in got]
            assert offsets == sorted(set(offsets)), f"round {rnd}: offsets out of order"
            for o, k, v in got:
                assert by_offset.get(o) == (k, v), f"round {rnd}: offset {o} holds {k}={v!r}"
            latest = {k: (o, v) for o, (k, v) in sorted(by_offset.items())}
            seen = {k: (o, v) for o, k, v in got}
            for k, (o, v) in latest.items():
                assert seen.get(k) == (o, v), \
                    f"round {rnd} (leftovers at kill: {leftovers}): key {k} lost its latest value"
        assert watermarks(bs, topic, 0)[1] == max(by_offset) + 1
        # Kills inside a clean found its files (then removed or rolled forward at start).
        assert mid_clean >= 2, "no kill landed while a clean was in progress"
        # And after all that, compaction completes: the latest record of every key.
        time.sleep(0.3)
        end = produce(bs, topic, [{"key": b"sentinel", "value": b"end", "partition": 0}])
        by_offset[end[0][2]] = (b"sentinel", b"end")
        want = latest_per_key((o, k, v) for o, (k, v) in by_offset.items())
        wait_for("compaction after the crashes", lambda: read_all(bs, topic) == want)
    finally:
        broker.stop()
        shutil.rmtree(broker.data_dir, ignore_errors=True)
        cfg.unlink(missing_ok=True)


def test_aborted_transactions_never_supersede_committed_records(compacting_broker):
    """Kafka's cleaner discards aborted transactional records and never lets them
    replace a committed value: after compaction a read_committed consumer still sees the
    committed value of a key that an aborted transaction overwrote."""
    from confluent_kafka import Producer
    bs = compacting_broker.bootstrap
    topic = f"compact-tx-{uuid.uuid4().hex[:8]}"
    create_topic(bs, topic, 1, COMPACT)
    p = Producer({"bootstrap.servers": bs, "transactional.id": f"ctx-{uuid.uuid4().hex[:6]}"})
    p.init_transactions(OP_TIMEOUT)
    p.begin_transaction()
    p.produce(topic, key=b"a", value=b"a1", partition=0)
    p.produce(topic, key=b"b", value=b"b1", partition=0)
    p.commit_transaction(OP_TIMEOUT)
    time.sleep(0.3)
    p.begin_transaction()
    p.produce(topic, key=b"a", value=b"a2-aborted", partition=0)
    p.flush()
    p.abort_transaction(OP_TIMEOUT)
    time.sleep(0.3)
    p.begin_transaction()
    p.produce(topic, key=b"b", value=b"b2", partition=0)
    p.commit_transaction(OP_TIMEOUT)
    time.sleep(0.3)
    produce(bs, topic, [{"key": b"sentinel", "value": b"end", "partition": 0}])

    def committed_view():
        c = Consumer({"bootstrap.servers": bs, "group.id": "compat-unused",
                      "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                      "enable.partition.eof": True})
        c.assign([TopicPartition(topic, 0, 0)])
        out = []
        deadline = time.monotonic() + OP_TIMEOUT
        try:
            while time.monotonic() < deadline:
                m = c.poll(0.3)
                if m is None:
                    continue
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        return out
                    raise AssertionError(m.error())
                out.append((m.key(), m.value()))
        finally:
            c.close()
        return out

    want = [(b"a", b"a1"), (b"b", b"b2"), (b"sentinel", b"end")]
    # b1 is superseded by b2 and goes; a1 stays (a2 was aborted).
    wait_for("compaction with an aborted transaction", lambda: committed_view() == want)


def batches_of(bootstrap, topic, partition=0):
    """Every batch of the partition as (base offset, is control), read with raw Fetch v4
    requests (clients never show markers)."""
    import struct
    from grouputil import RawClient, _str
    raw = RawClient.to(bootstrap)
    out, offset = [], 0
    try:
        while True:
            body = (struct.pack(">iiiib", -1, 0, 0, 1 << 20, 0) + struct.pack(">i", 1) + _str(topic)
                    + struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, 1 << 20))
            r = raw.call(1, 4, body)
            r.i32()
            r.i32()  # one topic
            r.str()
            r.i32()  # one partition
            r.i32()
            assert r.i16() == 0
            hw = r.take(">q")
            r.take(">q")
            r.array(lambda x: (x.take(">q"), x.take(">q")))
            data = r.bytes() or b""
            pos, last_end = 0, offset
            while pos + 12 <= len(data):
                base, length = struct.unpack_from(">qi", data, pos)
                if pos + 12 + length > len(data):
                    break
                attributes, last_delta = struct.unpack_from(">hi", data, pos + 21)
                out.append((base, bool(attributes & 0x20)))
                last_end = base + last_delta + 1
                pos += 12 + length
            if last_end >= hw or last_end == offset:
                return out
            offset = last_end
    finally:
        raw.close()


def test_markers_go_once_their_transactions_data_is_gone(compacting_broker):
    """Kafka's cleaner keeps a transaction marker while any batch of its transaction is
    in the log, then removes it after delete.retention.ms; the records and the other
    markers keep their offsets."""
    from confluent_kafka import Producer
    bs = compacting_broker.bootstrap
    topic = f"compact-markers-{uuid.uuid4().hex[:8]}"
    create_topic(bs, topic, 1, COMPACT)
    p = Producer({"bootstrap.servers": bs, "transactional.id": f"cm-{uuid.uuid4().hex[:6]}"})
    p.init_transactions(OP_TIMEOUT)
    for value in (b"v1", b"v2"):
        p.begin_transaction()
        p.produce(topic, key=b"k", value=value, partition=0)
        p.commit_transaction(OP_TIMEOUT)
        time.sleep(0.3)
    produce(bs, topic, [{"key": b"sentinel", "value": b"end", "partition": 0}])
    # Written: k=v1 @0, its marker @1, k=v2 @2, its marker @3, sentinel @4 (the cleaner
    # may already be at work). v1 is superseded; with its data gone its marker gets a horizon (2 s) and then goes.
    try:
        wait_for("the first transaction's marker removed",
                 lambda: batches_of(bs, topic) == [(2, False), (3, True), (4, False)], deadline=30)
    except AssertionError:
        raise AssertionError(f"batches (base offset, control): {batches_of(bs, topic)}")
    assert [(o, k, v) for o, k, v in read_all(bs, topic)] == [(2, b"k", b"v2"), (4, b"sentinel", b"end")]
