"""Durability across restarts (only against a spate the suite starts itself)."""
import os
import threading
import time

from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import ConfigResource

from kafkautil import OP_TIMEOUT, admin, consume, create_topic, produce, wait_topic, watermarks


# spate must exit 0 after SIGTERM; the JVM (Kafka, for validating the suite) exits 143.
TERM_EXIT_CODES = {int(c) for c in os.environ.get("SPATE_COMPAT_TERM_EXIT_CODES", "0").split(",")}


def _records(prefix, n, parts):
    return [{"key": f"{prefix}-k{i}".encode(), "value": f"{prefix}-v{i}-{'z' * (i % 200)}".encode(),
             "partition": i % parts, "headers": [("i", str(i).encode())]} for i in range(n)]


def _check(bootstrap, topic, recs, parts, start_offsets=None):
    for p in range(parts):
        want = [r for r in recs if r["partition"] == p]
        got = consume(bootstrap, topic, p, len(want))
        assert [(m["offset"], m["key"], m["value"], m["headers"]) for m in got] == \
            [(i, r["key"], r["value"], r["headers"]) for i, r in enumerate(want)], f"partition {p}"


def _restart_and_check(broker, how, codec):
    topic = f"restart-{how}-{codec}"
    parts = 4
    create_topic(broker.bootstrap, topic, parts, {"retention.ms": "86400000"})
    recs = _records("a", 2000, parts)
    reports = produce(broker.bootstrap, topic, recs, {"acks": "all", "compression.type": codec})
    assert all(e is None for e, *_ in reports)
    if how == "kill":
        broker.kill()
    else:
        rc = broker.stop()
        assert rc in TERM_EXIT_CODES, f"exit code {rc} after SIGTERM:\n" + broker.log_tail()
    broker.wait_port_closed()
    broker.start()
    wait_topic(broker.bootstrap, topic, parts)
    _check(broker.bootstrap, topic, recs, parts)
    # Configs survive, and offsets continue where they were.
    a = admin(broker.bootstrap)
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    cfg = a.describe_configs([res], request_timeout=OP_TIMEOUT)[res].result(OP_TIMEOUT)
    assert cfg["retention.ms"].value == "86400000"
    more = _records("b", 400, parts)
    reports = produce(broker.bootstrap, topic, more, {"acks": "all"})
    assert sorted((p, o) for e, p, o, _, _ in reports) == \
        sorted((p, 500 + i) for p in range(parts) for i in range(100))
    _check(broker.bootstrap, topic, recs + more, parts)


def test_kill9_restart_lz4(restartable_broker):
    _restart_and_check(restartable_broker, "kill", "lz4")


def test_kill9_restart_uncompressed(restartable_broker):
    _restart_and_check(restartable_broker, "kill", "none")


def test_sigterm_restart_zstd(restartable_broker):
    _restart_and_check(restartable_broker, "term", "zstd")


def test_kill9_during_produce_keeps_acknowledged(restartable_broker):
    """kill -9 while a producer is writing: every acknowledged record is there after
    the restart, at the offset it was acknowledged with."""
    b = restartable_broker
    topic = "kill-mid-produce"
    create_topic(b.bootstrap, topic, 2)
    acked = []
    lock = threading.Lock()

    def cb(err, msg):
        if err is None:
            with lock:
                acked.append((msg.partition(), msg.offset(), msg.value()))

    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 2,
                  "message.timeout.ms": 5000, "retries": 0, "enable.idempotence": False})
    stop = threading.Event()

    def run():
        i = 0
        while not stop.is_set() and i < 200_000:
            try:
                p.produce(topic, value=f"m{i}".encode(), partition=i % 2, on_delivery=cb)
                i += 1
            except BufferError:
                pass
            p.poll(0.001)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    deadline = time.monotonic() + OP_TIMEOUT
    while time.monotonic() < deadline:
        with lock:
            if len(acked) >= 3000:
                break
        time.sleep(0.01)
    b.kill()
    stop.set()
    t.join(10)
    p.flush(10)
    with lock:
        snapshot = list(acked)
    assert len(snapshot) >= 3000
    b.wait_port_closed()
    b.start()
    wait_topic(b.bootstrap, topic, 2)
    for part in (0, 1):
        mine = {o: v for pp, o, v in snapshot if pp == part}
        low, high = watermarks(b.bootstrap, topic, part)
        assert low == 0
        assert high >= max(mine) + 1, f"partition {part}: high watermark {high} < acked"
        got = consume(b.bootstrap, topic, part, high)
        by_off = {m["offset"]: m["value"] for m in got}
        assert [m["offset"] for m in got] == list(range(high))
        missing = [(o, v) for o, v in sorted(mine.items()) if by_off.get(o) != v]
        assert not missing, f"partition {part}: acknowledged records lost: {missing[:5]}"


def test_clients_ride_through_restart(restartable_broker):
    """One consumer and one producer stay up while the broker is killed and restarted:
    the consumer continues exactly where it was (no gap, no duplicate) and the producer
    goes on appending after the restart."""
    from confluent_kafka import Consumer
    b = restartable_broker
    topic = "ride-through"
    create_topic(b.bootstrap, topic, 1)
    produce(b.bootstrap, topic, [{"value": f"a{i}".encode()} for i in range(1000)],
            {"acks": "all"})
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "compat-unused",
                  "enable.auto.commit": False, "enable.auto.offset.store": False,
                  "auto.offset.reset": "error", "fetch.wait.max.ms": 100,
                  "reconnect.backoff.max.ms": 500, "max.partition.fetch.bytes": 2048})
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 5,
                  "max.in.flight.requests.per.connection": 1, "message.timeout.ms": 60000,
                  "reconnect.backoff.max.ms": 500})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        seen = []

        def read_until(n, timeout):
            deadline = time.monotonic() + timeout
            while len(seen) < n and time.monotonic() < deadline:
                m = c.poll(0.2)
                if m is None or m.error():
                    continue
                seen.append((m.offset(), m.value()))

        read_until(300, OP_TIMEOUT)
        assert len(seen) >= 300
        b.kill()
        b.wait_port_closed()
        b.start()
        reports = []
        for i in range(200):
            p.produce(topic, value=f"b{i}".encode(),
                      on_delivery=lambda e, m: reports.append((e, m.offset())))
        assert p.flush(60) == 0
        assert [r for r in reports if r[0] is not None] == []
        assert [o for _, o in reports] == list(range(1000, 1200))
        read_until(1200, 60)
        want = [(i, f"a{i}".encode()) for i in range(1000)] + \
            [(1000 + i, f"b{i}".encode()) for i in range(200)]
        assert seen == want
    finally:
        c.close()


def test_java_clients_ride_through_restart(restartable_broker):
    """The Java consumer keeps its position across a kill -9 restart (it re-validates it,
    with OffsetsForLeaderEpoch where the leader epoch moved) and its producer reconnects."""
    import json
    import subprocess
    from test_java import JAR, JVM
    if not JAR.exists():
        import pytest
        pytest.skip("the Java jar is built by compat/run.sh")
    b = restartable_broker
    topic = "java-ride-through"
    create_topic(b.bootstrap, topic, 1)
    produce(b.bootstrap, topic, [{"value": f"before-{i}".encode()} for i in range(500)],
            {"acks": "all"})
    proc = subprocess.Popen([*JVM, b.bootstrap, "ride-through", topic, "500", "200"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 60
        while not line.startswith("PAUSED") and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
        assert line.startswith("PAUSED"), f"java scenario did not pause: {line!r}"
        b.kill()
        b.wait_port_closed()
        b.start()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, _ = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0
    res = json.loads(out.strip().splitlines()[-1])
    assert res["produced_after"] == list(range(500, 600))
    assert res["seen"] == [[i, f"before-{i}"] for i in range(500)] + \
        [[500 + i, f"after-{i}"] for i in range(100)]
    assert res["position"] == 600


def test_many_segments_survive_restart(restartable_broker):
    """segment.bytes=1 MiB and ~4 MiB of data: several segments. After kill -9 every
    record is read back from anywhere in the log (index lookups), by offset and by time;
    after DeleteRecords and a clean restart the low watermark stays."""
    from confluent_kafka import Consumer
    b = restartable_broker
    topic = "segments"
    create_topic(b.bootstrap, topic, 1, {"segment.bytes": "1048576"})
    base = 1_700_000_000_000
    recs = [{"key": f"{i}".encode(), "value": (f"{i:06d}" * 170).encode(),
             "timestamp": base + i} for i in range(4000)]
    r = produce(b.bootstrap, topic, recs, {"acks": "all", "linger.ms": 10,
                                           "compression.type": "none"})
    assert [o for _, _, o, _, _ in r] == list(range(4000))
    b.kill()
    b.wait_port_closed()
    b.start()
    wait_topic(b.bootstrap, topic, 1)
    assert watermarks(b.bootstrap, topic, 0) == (0, 4000)
    for start in (0, 1234, 2999, 3999):
        got = consume(b.bootstrap, topic, 0, 4000 - start, start=start)
        assert [(m["offset"], m["value"], m["timestamp"]) for m in got] == \
            [(i, recs[i]["value"], base + i) for i in range(start, 4000)], f"from {start}"
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "compat-unused"})
    try:
        res = c.offsets_for_times([TopicPartition(topic, 0, base + 2345)], timeout=OP_TIMEOUT)
        assert res[0].offset == 2345
    finally:
        c.close()
    a = admin(b.bootstrap)
    tp = TopicPartition(topic, 0, 2500)
    assert a.delete_records([tp], request_timeout=OP_TIMEOUT)[tp].result(OP_TIMEOUT) \
        .low_watermark == 2500
    rc = b.stop()
    assert rc in TERM_EXIT_CODES
    b.start()
    wait_topic(b.bootstrap, topic, 1)
    assert watermarks(b.bootstrap, topic, 0) == (2500, 4000)
    got = consume(b.bootstrap, topic, 0, 1500, start=2500)
    assert [m["offset"] for m in got] == list(range(2500, 4000))


def test_metadata_log_full_disk_stops_broker_and_loses_nothing(monkeypatch):
    """Fail-stop on a metadata log that cannot be written (docs/failures.md): with the
    data dir on a full tmpfs, a CreateTopics whose record does not fit makes the broker
    exit 1 with a clear message; after space is freed it restarts with every change it
    had acknowledged, and changes made after that survive the next restart (nothing is
    stuck behind a torn entry). Needs root to mount the tmpfs; skipped otherwise."""
    import subprocess
    import uuid

    import pytest
    from confluent_kafka.admin import NewTopic

    from conftest import EXTERNAL, RUNS, SpateBroker, free_port
    if EXTERNAL:
        pytest.skip("needs a broker the suite starts itself")
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = RUNS / f"tmpfs-{uuid.uuid4().hex[:8]}"
    mnt.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mnt)]).returncode:
        mnt.rmdir()
        pytest.skip("cannot mount a tmpfs here")
    # Small footprint: no segment preallocation, one __consumer_offsets partition.
    cfg = RUNS / f"{mnt.name}.toml"
    cfg.write_text("offsets_topic_num_partitions = 1\nsegment_preallocate_bytes = 0\n")
    monkeypatch.setenv("SPATE_CONFIG", str(cfg))
    broker = SpateBroker(mnt / "data", free_port())
    try:
        broker.start()
        create_topic(broker.bootstrap, "before-full", 1)
        with open(mnt / "filler", "wb") as f:
            try:
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
            except OSError:
                pass
        a = admin(broker.bootstrap)
        fs = a.create_topics([NewTopic("when-full", 2000, 1)], request_timeout=10)
        with pytest.raises(Exception):
            fs["when-full"].result(20)
        assert broker.proc.wait(30) == 1, broker.log_tail()
        assert "fatal fault: the metadata log cannot be written" in broker.log_tail()
        os.remove(mnt / "filler")
        broker.start()
        topics = admin(broker.bootstrap).list_topics(timeout=OP_TIMEOUT).topics
        assert "before-full" in topics and "when-full" not in topics
        create_topic(broker.bootstrap, "after-restart", 2)
        assert broker.stop() == 0, broker.log_tail()
        broker.wait_port_closed()
        broker.start()
        topics = admin(broker.bootstrap).list_topics(timeout=OP_TIMEOUT).topics
        assert {"before-full", "after-restart"} <= set(topics)
    finally:
        broker.kill()
        broker.wait_port_closed()
        subprocess.run(["umount", str(mnt)])
        mnt.rmdir()
        cfg.unlink()


def wait_leaders(bootstrap, topic, want, timeout=OP_TIMEOUT):
    """Wait until metadata shows `topic`'s partitions with the leaders `want`
    ({partition: leader}); returns the last leaders seen."""
    a = admin(bootstrap)
    deadline = time.monotonic() + timeout
    leaders = None
    while time.monotonic() < deadline:
        t = a.list_topics(topic=topic, timeout=10).topics.get(topic)
        if t is not None and t.error is None:
            leaders = {i: p.leader for i, p in t.partitions.items()}
            if leaders == want:
                break
        time.sleep(0.1)
    return leaders


def test_corrupt_closed_segment_takes_only_its_partition_offline(restartable_broker):
    """A batch header zeroed in the middle of a closed segment is damage to acknowledged
    data: the broker must not truncate it away (which loses the acknowledged records
    after it), but keep the partition offline with KAFKA_STORAGE_ERROR and say why,
    while the topic's other partitions keep serving."""
    from confluent_kafka import KafkaError
    broker = restartable_broker
    topic = "corrupt-closed-segment"
    # Kafka's minimum segment size: 3 MB of records make a few closed segments.
    create_topic(broker.bootstrap, topic, 2, {"segment.bytes": "1048576"})
    recs = [{"key": b"k", "value": f"{i:06d}".encode() + b"x" * 3000, "partition": i % 2} for i in range(2000)]
    reports = produce(broker.bootstrap, topic, recs, {"acks": "all", "linger.ms": "0", "batch.size": "4096"})
    assert all(e is None for e, *_ in reports)
    rc = broker.stop()
    assert rc in TERM_EXIT_CODES, broker.log_tail()
    broker.wait_port_closed()
    seg = broker.data_dir / f"{topic}-0" / ("0" * 20 + ".log")
    assert seg.stat().st_size > 4 * 4096
    # Zero the header of the last batch of the first (closed) segment: the records in it
    # were acknowledged; a scan that took the zeros for unwritten space would cut them.
    data = seg.read_bytes()
    pos, starts = 0, []
    while pos + 12 <= len(data):
        starts.append(pos)
        pos += 12 + int.from_bytes(data[pos + 8:pos + 12], "big")
    victim = starts[-1]
    with open(seg, "r+b") as f:
        f.seek(victim)
        f.write(bytes(61))
    size_before = seg.stat().st_size
    broker.start()
    # The broker reports the replica it could not open as offline, and the controller
    # takes its leadership away (as Kafka's for a replica in a failed log dir): partition
    # 0 has no leader (its only replica stays in its ISR), partition 1 is led.
    leaders = wait_leaders(broker.bootstrap, topic, {0: -1, 1: 0})
    assert leaders == {0: -1, 1: 0}, leaders
    # Partition 1 serves; a produce to partition 0 fails.
    ok = produce(broker.bootstrap, topic, [{"value": b"after", "partition": 1}], {"acks": "all"})
    assert ok[0][0] is None and ok[0][2] == 1000
    bad = produce(broker.bootstrap, topic, [{"value": b"after", "partition": 0}],
                  {"acks": "all", "message.timeout.ms": "3000", "retries": "1"})
    err = bad[0][0]
    assert err is not None and err.code() in (KafkaError.KAFKA_STORAGE_ERROR, KafkaError._MSG_TIMED_OUT), err
    assert seg.stat().st_size == size_before, "the damaged segment was not truncated"
    assert "opening partition log failed" in broker.log_tail(200), broker.log_tail(200)
