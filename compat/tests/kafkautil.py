"""Shared helpers: confluent-kafka admin/producer/consumer wrappers (all bounded in time),
Kafka's murmur2 partitioner, and a runner for the non-Python client programs."""
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

COMPAT = Path(__file__).resolve().parent.parent
ROOT = COMPAT.parent
OP_TIMEOUT = 30  # seconds for any single client call
JAVA_JAR = COMPAT / "java" / "target" / "spate-compat-java.jar"


def _stale(target, sources):
    """Whether `target` is missing or older than any of `sources`."""
    newest = max(p.stat().st_mtime for p in sources)
    return not target.exists() or target.stat().st_mtime < newest


def go_program(src, binary):
    """Build the Go program in `src` into `binary` if it is missing or stale."""
    if _stale(binary, [p for p in src.iterdir() if p.is_file()]):
        if shutil.which("go") is None:
            pytest.fail("go is not installed (compat/run.sh installs the suite's tools)")
        binary.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["go", "build", "-o", str(binary), "."], cwd=src, check=True, timeout=600,
                       env={**os.environ, "GOFLAGS": "-mod=readonly"})
    return str(binary)


def java_jar():
    """The compat Java programs' jar (with dependencies), rebuilt if stale."""
    java = COMPAT / "java"
    sources = [p for p in (java / "src").rglob("*") if p.is_file()] + [java / "pom.xml"]
    if _stale(JAVA_JAR, sources):
        if shutil.which("mvn") is None:
            pytest.fail("maven is not installed (compat/run.sh installs the suite's tools)")
        subprocess.run(["mvn", "-q", "-B", "package"], cwd=java, check=True, timeout=900)
    return JAVA_JAR


def admin(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000})


def create_topic(bootstrap, name, partitions=1, config=None):
    a = admin(bootstrap)
    fs = a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                   config=config or {})],
                         operation_timeout=OP_TIMEOUT, request_timeout=OP_TIMEOUT)
    fs[name].result(timeout=OP_TIMEOUT)
    wait_topic(bootstrap, name, partitions)


def wait_topic(bootstrap, name, partitions, timeout=OP_TIMEOUT):
    """Wait until metadata shows the topic with all partitions led."""
    a = admin(bootstrap)
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        md = a.list_topics(topic=name, timeout=10)
        t = md.topics.get(name)
        last = t
        if t is not None and t.error is None and len(t.partitions) == partitions and \
                all(p.leader >= 0 and p.error is None for p in t.partitions.values()):
            return
        time.sleep(0.1)
    raise AssertionError(f"topic {name} not ready with {partitions} partitions: {last}")


def produce(bootstrap, topic, records, conf=None, timeout=OP_TIMEOUT):
    """Produce records (dicts: key, value, partition?, headers?, timestamp?) in order.
    Returns the delivery reports [(error, partition, offset)] in delivery order."""
    reports = []

    def cb(err, msg):
        reports.append((err, msg.partition(), msg.offset(), msg.key(), msg.value()))

    # One request in flight: without idempotence, retries could otherwise reorder.
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                  "max.in.flight.requests.per.connection": 1,
                  "message.timeout.ms": timeout * 1000, **(conf or {})})
    for r in records:
        kw = {}
        if r.get("partition") is not None:
            kw["partition"] = r["partition"]
        if r.get("headers") is not None:
            kw["headers"] = r["headers"]
        if r.get("timestamp") is not None:
            kw["timestamp"] = r["timestamp"]
        while True:
            try:
                p.produce(topic, value=r.get("value"), key=r.get("key"), on_delivery=cb, **kw)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    left = p.flush(timeout)
    assert left == 0, f"{left} messages still in flight after {timeout}s"
    return reports


def consume(bootstrap, topic, partition, count, start=0, timeout=OP_TIMEOUT, conf=None):
    """Read `count` records from one partition starting at `start` (group-less: assign)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "compat-unused",
                  "enable.auto.commit": False, "enable.auto.offset.store": False,
                  "auto.offset.reset": "error", "fetch.wait.max.ms": 100,
                  "enable.partition.eof": False, **(conf or {})})
    try:
        c.assign([TopicPartition(topic, partition, start)])
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < count and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                raise KafkaException(m.error())
            ts_type, ts = m.timestamp()
            out.append({"partition": m.partition(), "offset": m.offset(), "key": m.key(),
                        "value": m.value(), "headers": m.headers(), "timestamp": ts,
                        "timestamp_type": ts_type})
        assert len(out) == count, f"read {len(out)} of {count} records from {topic}/{partition}"
        # Nothing more should be there.
        extra = c.poll(0.5)
        assert extra is None or extra.error() is not None, \
            f"unexpected extra record at offset {extra.offset()}"
        return out
    finally:
        c.close()


def kafka_python_round_trip(common, topic, count=5):
    """kafka-python produces `count` records to partition 0 of `topic` and reads them
    back, with the connection settings `common` (security ones included)."""
    from kafka import KafkaConsumer, KafkaProducer
    p = KafkaProducer(**common)
    for i in range(count):
        p.send(topic, value=f"kpy-{i}".encode(), partition=0).get(timeout=30)
    p.close()
    c = KafkaConsumer(topic, auto_offset_reset="earliest", consumer_timeout_ms=10000, **common)
    got = [m.value for _, m in zip(range(count), c)]
    c.close()
    assert got == [f"kpy-{i}".encode() for i in range(count)]


def watermarks(bootstrap, topic, partition):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "compat-unused",
                  "enable.auto.commit": False})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=OP_TIMEOUT)
    finally:
        c.close()


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (as in the Java client's Utils.murmur2), signed 32-bit result."""
    m = 0x5BD1E995
    r = 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    i = 0
    while length - i >= 4:
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
        i += 4
    rem = length - i
    if rem == 3:
        h ^= data[i + 2] << 16
    if rem >= 2:
        h ^= data[i + 1] << 8
    if rem >= 1:
        h ^= data[i]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def kafka_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for a non-null key."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def run_json(cmd, timeout=120, cwd=None, env=None):
    """Run a client program; its last stdout line must be a JSON object. `env`: more
    environment variables for it."""
    try:
        res = subprocess.run(cmd, capture_output=True, timeout=timeout, cwd=cwd or ROOT,
                             stdin=subprocess.DEVNULL,
                             env=None if env is None else {**os.environ, **env})
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{cmd[:4]} timed out after {timeout}s; stderr:\n"
                             f"{(e.stderr or b'').decode(errors='replace')[-3000:]}")
    out = res.stdout.decode(errors="replace").strip().splitlines()
    err = res.stderr.decode(errors="replace")
    if res.returncode != 0 or not out:
        raise AssertionError(f"{cmd} exited {res.returncode}\nstdout:\n"
                             + "\n".join(out[-30:]) + f"\nstderr:\n{err[-4000:]}")
    try:
        return json.loads(out[-1])
    except json.JSONDecodeError:
        raise AssertionError(f"{cmd} printed no JSON result:\n" + "\n".join(out[-30:])
                             + f"\nstderr:\n{err[-3000:]}")


__all__ = ["admin", "create_topic", "wait_topic", "produce", "consume", "watermarks",
           "murmur2", "kafka_partition", "run_json", "KafkaError", "TopicPartition"]


def brokers_of(bootstrap):
    """[(id, host, port)] of every broker, sorted: one for a single node, three for the
    cluster the suite can also run against (compat/run.sh --cluster)."""
    md = admin(bootstrap).list_topics(timeout=OP_TIMEOUT)
    return sorted((b.id, b.host, b.port) for b in md.brokers.values())
