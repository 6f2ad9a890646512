"""Memory bounds with real clients: consumers asking for unbounded fetches read every
record exactly once and in order while the broker's memory stays bounded (responses are
capped by fetch_max_bytes), and clients carry on after the broker closes their idle
connections (connections_max_idle_ms)."""
import subprocess
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition as CTopicPartition
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from conftest import EXTERNAL, ROOT, RUNS, SPATE_BIN, SPATE_CORES, SpateBroker, free_port, port_accepts
from kafkautil import OP_TIMEOUT, create_topic, produce

FETCH_MAX_BYTES = 1 << 20
IDLE_MS = 1500
PARTITIONS = 12
PER_PARTITION = 500
VALUE = 1000  # bytes per record: ~6 MB in the topic, six times fetch_max_bytes
CACHE_PER_SHARD = 8 << 20


class ConfiguredBroker(SpateBroker):
    """A SpateBroker started with a config file (small fetch_max_bytes and idle time)
    and --http for the metrics."""

    def __init__(self, data_dir, port, http_port, config):
        super().__init__(data_dir, port)
        self.http_port = http_port
        self.config_path = data_dir.parent / (data_dir.name + ".toml")
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(config)

    def start(self, timeout=30.0):
        if not SPATE_BIN.exists():
            pytest.fail(f"{SPATE_BIN} does not exist: build it first")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(SPATE_BIN), "--config", str(self.config_path), "--data-dir", str(self.data_dir),
                 "--listen", self.bootstrap, "--cores", SPATE_CORES,
                 "--http", f"127.0.0.1:{self.http_port}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"spate exited with {self.proc.returncode}:\n{self.log_tail()}")
            if port_accepts(self.port):
                return
            time.sleep(0.05)
        self.kill()
        pytest.fail(f"spate did not start:\n{self.log_tail()}")

    def rss(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def metric_total(self, name):
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=10) as r:
            body = r.read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
                   if line.startswith(name + "{") or line.startswith(name + " "))


@pytest.fixture(scope="module")
def broker():
    if EXTERNAL:
        pytest.skip("these tests start their own broker with a config file")
    RUNS.mkdir(parents=True, exist_ok=True)
    b = ConfiguredBroker(RUNS / f"spate-membound-{uuid.uuid4().hex[:10]}", free_port(), free_port(),
                         f"fetch_max_bytes = {FETCH_MAX_BYTES}\nconnections_max_idle_ms = {IDLE_MS}\n"
                         f"batch_cache_bytes_per_shard = {CACHE_PER_SHARD}\n")
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def loaded_topic(broker):
    """A topic with PARTITIONS x PER_PARTITION records whose values name their
    partition and sequence number."""
    name = f"c-membound-{uuid.uuid4().hex[:6]}"
    create_topic(broker.bootstrap, name, PARTITIONS)
    records = [{"partition": p, "key": f"{p}".encode(),
                "value": f"{p}:{i}:".encode().ljust(VALUE, b"x")}
               for i in range(PER_PARTITION) for p in range(PARTITIONS)]
    reports = produce(broker.bootstrap, name, records, {"acks": "all", "batch.size": 200_000})
    assert all(err is None for err, *_ in reports)
    return name


class RssSampler:
    def __init__(self, broker):
        self.broker, self.peak, self.stop = broker, 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, self.broker.rss())
            time.sleep(0.05)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def check_all_once_in_order(got):
    for p in range(PARTITIONS):
        assert [o for o, _ in got[p]] == list(range(PER_PARTITION)), f"offsets of partition {p}"
        assert [v.split(b":")[:2] for _, v in got[p]] == \
            [[str(p).encode(), str(i).encode()] for i in range(PER_PARTITION)], f"values of partition {p}"


def test_confluent_consumer_with_unbounded_fetch_sizes(broker, loaded_topic):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "membound-unused",
                  "enable.auto.commit": False, "auto.offset.reset": "error",
                  "fetch.max.bytes": 2147483135, "max.partition.fetch.bytes": 1_000_000_000,
                  "receive.message.max.bytes": 2147483647, "fetch.wait.max.ms": 100,
                  "enable.partition.eof": False})
    got = {p: [] for p in range(PARTITIONS)}
    total = PARTITIONS * PER_PARTITION
    with RssSampler(broker) as rss:
        try:
            c.assign([CTopicPartition(loaded_topic, p, 0) for p in range(PARTITIONS)])
            deadline = time.monotonic() + 90
            n = 0
            while n < total and time.monotonic() < deadline:
                m = c.poll(0.2)
                if m is None:
                    continue
                assert not m.error(), m.error()
                got[m.partition()].append((m.offset(), m.value()))
                n += 1
            extra = c.poll(1.0)
            assert extra is None or extra.error(), f"extra record {extra.partition()}/{extra.offset()}"
        finally:
            c.close()
    assert sum(map(len, got.values())) == total
    check_all_once_in_order(got)
    # Baseline plus caches: well under what unbounded responses would pile up.
    assert rss.peak < 300 << 20, f"broker RSS peaked at {rss.peak >> 20} MiB"


def test_kafka_python_consumer_with_unbounded_fetch_sizes(broker, loaded_topic):
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="none", request_timeout_ms=OP_TIMEOUT * 1000,
                      fetch_max_wait_ms=100, fetch_max_bytes=2**31 - 1,
                      max_partition_fetch_bytes=2**31 - 1)
    got = {p: [] for p in range(PARTITIONS)}
    total = PARTITIONS * PER_PARTITION
    with RssSampler(broker) as rss:
        try:
            tps = [TopicPartition(loaded_topic, p) for p in range(PARTITIONS)]
            c.assign(tps)
            for tp in tps:
                c.seek(tp, 0)
            deadline = time.monotonic() + 90
            n = 0
            while n < total and time.monotonic() < deadline:
                for tp, recs in c.poll(timeout_ms=200).items():
                    got[tp.partition].extend((r.offset, r.value) for r in recs)
                    n += len(recs)
            assert not c.poll(timeout_ms=500), "unexpected extra records"
        finally:
            c.close()
    assert sum(map(len, got.values())) == total
    check_all_once_in_order(got)
    assert rss.peak < 300 << 20, f"broker RSS peaked at {rss.peak >> 20} MiB"


def test_clients_survive_idle_close(broker):
    topic = f"c-membound-idle-{uuid.uuid4().hex[:6]}"
    create_topic(broker.bootstrap, topic, 1)
    closed_before = broker.metric_total("spate_connections_idle_closed_total")

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks=1, linger_ms=5,
                             request_timeout_ms=OP_TIMEOUT * 1000, max_block_ms=OP_TIMEOUT * 1000,
                             max_in_flight_requests_per_connection=1)
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="none",
                             request_timeout_ms=OP_TIMEOUT * 1000, fetch_max_wait_ms=100)
    tp = TopicPartition(topic, 0)
    got = []

    def read_until(count):
        deadline = time.monotonic() + OP_TIMEOUT
        while len(got) < count and time.monotonic() < deadline:
            for recs in consumer.poll(timeout_ms=200).values():
                got.extend((r.offset, r.value) for r in recs)
        assert len(got) == count, f"read {len(got)} of {count}"

    try:
        consumer.assign([tp])
        consumer.seek(tp, 0)
        for i in range(50):
            producer.send(topic, value=f"a{i}".encode(), partition=0)
        producer.flush(OP_TIMEOUT)
        read_until(50)
        # Both stay silent for twice the idle time: the broker closes their connections.
        time.sleep(2 * IDLE_MS / 1000 + 1)
        for i in range(50):
            producer.send(topic, value=f"b{i}".encode(), partition=0).get(timeout=OP_TIMEOUT)
        read_until(100)
        assert not consumer.poll(timeout_ms=300), "unexpected extra records"
    finally:
        producer.close(timeout=5)
        consumer.close()
    assert got == [(i, f"a{i}".encode()) for i in range(50)] + [(50 + i, f"b{i}".encode()) for i in range(50)]

    # librdkafka reconnects too: a producer idle past the limit still delivers.
    reports = []
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5})
    p.produce(topic, value=b"c0", partition=0, on_delivery=lambda e, m: reports.append((e, m.offset())))
    assert p.flush(OP_TIMEOUT) == 0
    time.sleep(2 * IDLE_MS / 1000 + 1)
    p.produce(topic, value=b"c1", partition=0, on_delivery=lambda e, m: reports.append((e, m.offset())))
    assert p.flush(OP_TIMEOUT) == 0
    assert reports == [(None, 100), (None, 101)]
    assert broker.metric_total("spate_connections_idle_closed_total") > closed_before


def test_many_small_writes_keep_the_batch_cache_within_its_budget(broker):
    """Many small produce requests, each its own small write: the batch cache used to
    keep every write's 64 KiB+ aligned buffer alive for a few hundred bytes of batches
    (34 MB of small requests took RSS to 2.1 GB). Cached batches are now charged what
    they pin, so the cache stays within batch_cache_bytes_per_shard and RSS stays flat."""
    topic = f"small-writes-{uuid.uuid4().hex[:8]}"
    parts, n, size = 16, 40000, 300
    create_topic(broker.bootstrap, topic, parts)
    rss_before = broker.rss()
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0, "batch.num.messages": 1,
                  "acks": 1, "enable.idempotence": False})
    errors = []
    for i in range(n):
        while True:
            try:
                p.produce(topic, value=b"%08d" % i + b"v" * (size - 8), partition=i % parts,
                          on_delivery=lambda err, msg: err and errors.append(err))
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    assert p.flush(OP_TIMEOUT) == 0 and not errors, errors[:3]
    cache = broker.metric_total("spate_batch_cache_bytes")
    assert 0 < cache <= int(SPATE_CORES) * CACHE_PER_SHARD, cache
    grown = broker.rss() - rss_before
    assert grown < 150 << 20, f"RSS grew by {grown >> 20} MiB for {n * size >> 20} MiB of small writes"
    # Every record is there, once, in order (read back from cache and disk).
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"g-{topic}", "enable.auto.commit": False})
    c.assign([CTopicPartition(topic, q, 0) for q in range(parts)])
    seen = {q: [] for q in range(parts)}
    deadline = time.monotonic() + OP_TIMEOUT
    while sum(len(v) for v in seen.values()) < n and time.monotonic() < deadline:
        for m in c.consume(500, timeout=1.0):
            assert m.error() is None, m.error()
            seen[m.partition()].append((m.offset(), int(m.value()[:8])))
    c.close()
    for q in range(parts):
        want = list(range(q, n, parts))
        assert [o for o, _ in seen[q]] == list(range(len(want))), f"partition {q} offsets"
        assert [i for _, i in seen[q]] == want, f"partition {q} records"
