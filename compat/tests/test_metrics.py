"""The Prometheus endpoint (--http) against real client traffic (confluent-kafka):
probes, a well-formed text exposition, counters and gauges that move by exactly what the
clients did, consumer-group lag, and the Grafana dashboard in docs/grafana/ checked
against a real scrape so that its queries cannot drift from the metric names.

Runs its own broker (a SpateBroker with --http on a second free port), so it does not
touch the session broker; skipped against an external broker."""
import json
import math
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from conftest import EXTERNAL, ROOT, RUNS, SPATE_BIN, SPATE_CORES, SpateBroker, free_port, port_accepts
from kafkautil import OP_TIMEOUT, create_topic, produce

DASHBOARD = ROOT / "docs" / "grafana" / "spate-dashboard.json"

# Every metric family the broker documents (docs/metrics.md), with its type and labels.
FAMILIES = {
    "spate_topic_bytes_in_total": ("counter", {"topic"}),
    "spate_topic_messages_in_total": ("counter", {"topic"}),
    "spate_topic_bytes_out_total": ("counter", {"topic"}),
    "spate_topic_messages_out_total": ("counter", {"topic"}),
    "spate_request_latency_seconds": ("histogram", {"request"}),
    "spate_request_errors_total": ("counter", {"request", "error"}),
    "spate_quota_throttles_total": ("counter", {"quota"}),
    "spate_quota_throttle_seconds_total": ("counter", {"quota"}),
    "spate_request_queue_time_seconds": ("histogram", {"request"}),
    "spate_produce_stage_seconds": ("histogram", {"stage"}),
    "spate_partition_log_end_offset": ("gauge", {"topic", "partition"}),
    "spate_partition_log_start_offset": ("gauge", {"topic", "partition"}),
    "spate_partition_high_watermark": ("gauge", {"topic", "partition"}),
    "spate_partition_size_bytes": ("gauge", {"topic", "partition"}),
    "spate_partition_segments": ("gauge", {"topic", "partition"}),
    "spate_partition_offline": ("gauge", {"topic", "partition"}),
    "spate_partition_leader": ("gauge", {"topic", "partition"}),
    "spate_partition_under_replicated": ("gauge", {"topic", "partition"}),
    "spate_partition_in_sync_replicas": ("gauge", {"topic", "partition"}),
    "spate_partition_follower_lag": ("gauge", {"topic", "partition"}),
    "spate_isr_shrinks_total": ("counter", {"shard"}),
    "spate_isr_expands_total": ("counter", {"shard"}),
    "spate_offline_partitions": ("gauge", set()),
    "spate_partition_last_stable_offset": ("gauge", {"topic", "partition"}),
    "spate_transactions_ongoing": ("gauge", {"shard"}),
    "spate_transactions_committed_total": ("counter", {"shard"}),
    "spate_transactions_aborted_total": ("counter", {"shard"}),
    "spate_share_coordinator_partitions_loaded": ("gauge", {"shard"}),
    "spate_share_coordinator_share_partitions": ("gauge", {"shard"}),
    "spate_share_coordinator_writes_total": ("counter", {"shard"}),
    "spate_share_coordinator_snapshots_total": ("counter", {"shard"}),
    "spate_log_writes_total": ("counter", {"shard"}),
    "spate_log_bytes_written_total": ("counter", {"shard"}),
    "spate_log_write_seconds_total": ("counter", {"shard"}),
    "spate_log_zero_fills_total": ("counter", {"shard"}),
    "spate_log_zero_filled_bytes_total": ("counter", {"shard"}),
    "spate_log_fsyncs_total": ("counter", {"shard"}),
    "spate_log_fsync_seconds_total": ("counter", {"shard"}),
    "spate_batch_cache_hits_total": ("counter", {"shard"}),
    "spate_batch_cache_misses_total": ("counter", {"shard"}),
    "spate_read_aheads_total": ("counter", {"shard"}),
    "spate_read_ahead_bytes_total": ("counter", {"shard"}),
    "spate_read_ahead_hits_total": ("counter", {"shard"}),
    "spate_batch_cache_bytes": ("gauge", {"shard"}),
    "spate_connections": ("gauge", {"shard"}),
    "spate_connections_accepted_total": ("counter", {"shard"}),
    "spate_connections_refused_total": ("counter", {"shard"}),
    "spate_tls_handshake_failures_total": ("counter", {"shard"}),
    "spate_connections_idle_closed_total": ("counter", {"shard"}),
    "spate_request_memory_waits_total": ("counter", {"shard"}),
    "spate_queued_request_bytes": ("gauge", set()),
    "spate_queued_request_bytes_limit": ("gauge", set()),
    "spate_shard_cpu_seconds_total": ("counter", {"shard"}),
    "spate_shard_queue_depth": ("gauge", {"shard"}),
    "spate_cleaner_dirty_ratio": ("gauge", {"topic", "partition"}),
    "spate_cleaner_compaction_lag_seconds": ("gauge", {"topic", "partition"}),
    "spate_cleaner_uncleanable": ("gauge", {"topic", "partition"}),
    "spate_cleaner_last_clean_timestamp_seconds": ("gauge", {"topic", "partition"}),
    "spate_cleaner_runs_total": ("counter", set()),
    "spate_cleaner_failures_total": ("counter", set()),
    "spate_cleaner_bytes_read_total": ("counter", set()),
    "spate_cleaner_bytes_written_total": ("counter", set()),
    "spate_cleaner_records_removed_total": ("counter", set()),
    "spate_cleaner_busy_seconds_total": ("counter", set()),
    "spate_cleaner_last_run_end_timestamp_seconds": ("gauge", set()),
    "spate_cleaner_last_run_seconds": ("gauge", set()),
    "spate_cleaner_buffer_utilization_ratio": ("gauge", set()),
    "spate_schema_registry_validation_refused_produces_total": ("counter", set()),
    "spate_schema_registry_validation_refused_records_total": ("counter", set()),
    "spate_consumer_group_committed_offset": ("gauge", {"group", "topic", "partition"}),
    "spate_consumer_group_lag": ("gauge", {"group", "topic", "partition"}),
    "spate_metadata_quorum_leader": ("gauge", set()),
    "spate_metadata_quorum_active": ("gauge", set()),
    "spate_metadata_quorum_epoch": ("gauge", set()),
    "spate_metadata_quorum_log_end_offset": ("gauge", set()),
    "spate_metadata_quorum_applied_offset": ("gauge", set()),
    "spate_metadata_published_offset": ("gauge", set()),
    "spate_groups": ("gauge", {"protocol", "state"}),
    "spate_consumer_group_rebalances_total": ("counter", {"shard"}),
    "spate_share_partitions": ("gauge", {"shard"}),
    "spate_share_records_in_flight": ("gauge", {"shard"}),
    "spate_share_records_locked": ("gauge", {"shard"}),
    "spate_share_records_acquired_total": ("counter", {"shard"}),
    "spate_share_records_redelivered_total": ("counter", {"shard"}),
    "spate_share_sessions": ("gauge", set()),
    "spate_share_group_members": ("gauge", {"shard"}),
}


# --------------------------------------------------------------------------------------
# A small parser for the Prometheus text exposition format (version 0.0.4).
# --------------------------------------------------------------------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})?\s+(\S+)(?:\s+(-?\d+))?\s*$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')


def _unescape(v):
    out, i = [], 0
    while i < len(v):
        c = v[i]
        if c == "\\" and i + 1 < len(v):
            nxt = v[i + 1]
            out.append({"n": "\n", "\\": "\\", '"': '"'}.get(nxt, "\\" + nxt))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _labels(text):
    labels, pos = {}, 0
    text = text.strip()
    while pos < len(text):
        m = _LABEL.match(text, pos)
        assert m, f"bad label set at {text[pos:]!r}"
        name, value = m.group(1), _unescape(m.group(2))
        assert name not in labels, f"label {name} repeated in {{{text}}}"
        labels[name] = value
        pos = m.end()
    return labels


def _value(s):
    if s in ("+Inf", "Inf"):
        return math.inf
    if s == "-Inf":
        return -math.inf
    if s == "NaN":
        return math.nan
    return float(s)


class Exposition:
    """A parsed scrape: families (name -> type, help) and samples."""

    def __init__(self, text):
        self.types, self.helps = {}, {}
        self.samples = []           # (sample name, labels dict, value)
        self.family_of = {}          # sample name -> family name
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 3 and parts[1] == "HELP":
                    assert parts[2] not in self.helps, f"line {n}: second HELP for {parts[2]}"
                    self.helps[parts[2]] = parts[3] if len(parts) > 3 else ""
                elif len(parts) >= 3 and parts[1] == "TYPE":
                    name, kind = parts[2], parts[3].strip()
                    assert name not in self.types, f"line {n}: second TYPE for {name}"
                    assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
                    self.types[name] = kind
                continue
            m = _SAMPLE.match(line)
            assert m, f"line {n} is not a sample: {line!r}"
            name, labels, value = m.group(1), _labels(m.group(2) or ""), _value(m.group(3))
            self.samples.append((name, labels, value))
            self.family_of[name] = self._family(name, n)

    def _family(self, name, n):
        if name in self.types:
            return name
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[: -len(suffix)]
            if name.endswith(suffix) and self.types.get(base) == "histogram":
                return base
        raise AssertionError(f"line {n}: sample {name} has no # TYPE before it")

    def series(self, name, **match):
        """{frozenset(labels): value} of samples named `name` whose labels include `match`."""
        out = {}
        for n, labels, v in self.samples:
            if n == name and all(labels.get(k) == str(val) for k, val in match.items()):
                key = frozenset(labels.items())
                assert key not in out, f"duplicate series {name}{labels}"
                out[key] = v
        return out

    def value(self, name, default=0.0, **labels):
        """The one sample with exactly these labels (default when absent)."""
        want = frozenset((k, str(v)) for k, v in labels.items())
        return self.series(name).get(want, default)

    def by(self, name, label, **match):
        """{label value: sample value} for samples of `name` matching `match`."""
        return {dict(k)[label]: v for k, v in self.series(name, **match).items()}

    def total(self, name, **match):
        return sum(self.series(name, **match).values())

    def names(self):
        return set(self.family_of)


# --------------------------------------------------------------------------------------
# The broker with --http.
# --------------------------------------------------------------------------------------

class HttpSpateBroker(SpateBroker):
    """A SpateBroker started with `--http 127.0.0.1:<http_port>` as well."""

    def __init__(self, data_dir, port, http_port):
        super().__init__(data_dir, port)
        self.http_port = http_port

    @property
    def http(self):
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout=30.0):
        if not SPATE_BIN.exists():
            pytest.fail(f"{SPATE_BIN} does not exist: build it first")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start #{self.starts} (http {self.http_port}) ===\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [str(SPATE_BIN), "--data-dir", str(self.data_dir), "--listen", self.bootstrap,
                 "--cores", SPATE_CORES, "--http", f"127.0.0.1:{self.http_port}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"spate exited with {self.proc.returncode} during start-up:\n"
                            + self.log_tail())
            if port_accepts(self.port) and get(self.http + "/ready", timeout=1)[0] == 200:
                return
            time.sleep(0.05)
        self.kill()
        pytest.fail(f"spate not ready on {self.bootstrap} / {self.http} within {timeout}s:\n"
                    + self.log_tail())

    def scrape(self):
        status, body, headers = get(self.http + "/metrics")
        assert status == 200, f"/metrics answered {status}: {body[:300]!r}"
        return Exposition(body.decode())


def get(url, timeout=10):
    """(status, body, headers); status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)
    except (urllib.error.URLError, OSError):
        return 0, b"", {}


@pytest.fixture(scope="module")
def broker():
    if EXTERNAL:
        pytest.skip("the metrics tests start their own broker with --http")
    RUNS.mkdir(parents=True, exist_ok=True)
    b = HttpSpateBroker(RUNS / f"spate-metrics-{uuid.uuid4().hex[:10]}", free_port(), free_port())
    b.start()
    yield b
    rc = b.stop()
    if rc not in (0, None):
        print(f"spate exited with {rc} after SIGTERM:\n{b.log_tail()}")
    if rc == 0:
        shutil.rmtree(b.data_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _alive(request):
    """Fails the test during which the metrics broker died, with its log."""
    if "broker" not in request.fixturenames:
        yield
        return
    b = request.getfixturevalue("broker")
    yield
    if b.proc.poll() is not None:
        code, tail = b.proc.returncode, b.log_tail()
        b.start()
        pytest.fail(f"spate exited with {code} during this test:\n{tail}")


def new_topic(prefix="m"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def group_consume_all(bootstrap, topic, group, count, timeout=OP_TIMEOUT):
    """Subscribe with a classic group consumer, read `count` records, commit them
    synchronously; returns {partition: next offset} as committed."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "fetch.wait.max.ms": 100, "session.timeout.ms": 10000})
    try:
        c.subscribe([topic])
        seen, nxt = 0, {}
        deadline = time.monotonic() + timeout
        while seen < count and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None or m.error():
                continue
            seen += 1
            nxt[m.partition()] = m.offset() + 1
        assert seen == count, f"group {group} read {seen} of {count} records"
        committed = c.commit(asynchronous=False)
        assert all(tp.error is None for tp in committed), committed
        return {tp.partition: tp.offset for tp in committed}, nxt
    finally:
        c.close()


def wait_for(pred, what, timeout=10.0):
    """Scrape until `pred` holds (gauges taken on the shards may lag a request)."""
    deadline = time.monotonic() + timeout
    while True:
        last = pred()
        if last or time.monotonic() > deadline:
            assert last, f"timed out waiting for {what}"
            return last
        time.sleep(0.1)


# --------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------

def test_probes_and_unknown_path(broker):
    assert get(broker.http + "/health")[:2] == (200, b"ok\n")
    assert get(broker.http + "/ready")[:2] == (200, b"ready\n")
    for path in ("/nope", "/metricsx", "/", "/health/more"):
        assert get(broker.http + path)[0] == 404, path
    status, body, headers = get(broker.http + "/metrics?x=1")  # a query string is ignored
    assert status == 200
    ctype = {k.lower(): v for k, v in headers.items()}["content-type"]
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype


def test_exposition_is_well_formed(broker):
    e = broker.scrape()
    for name, (kind, labels) in FAMILIES.items():
        assert e.types.get(name) == kind, f"{name}: TYPE {e.types.get(name)}, expected {kind}"
        assert e.helps.get(name), f"{name} has no HELP"
    undocumented = set(e.types) - set(FAMILIES)
    assert not undocumented, f"metric families not in docs/metrics.md / this test: {undocumented}"
    shards = {str(i) for i in range(int(SPATE_CORES))}
    for name, labels, value in e.samples:
        fam = e.family_of[name]
        want = FAMILIES[fam][1] | ({"le"} if name.endswith("_bucket") else set())
        assert set(labels) == want, f"{name}{labels}: labels should be {want}"
        assert not math.isnan(value) and value >= 0, f"{name}{labels} = {value}"
        if "shard" in labels:
            assert labels["shard"] in shards, f"{name}{labels}"
    for fam in ("spate_log_writes_total", "spate_shard_cpu_seconds_total", "spate_connections",
                "spate_shard_queue_depth"):
        assert set(e.by(fam, "shard")) == shards, f"{fam} should have one series per shard"
    # Histograms: cumulative, ordered buckets ending in +Inf == _count.
    for fam in ("spate_request_latency_seconds", "spate_request_queue_time_seconds"):
        for req in {lab["request"] for n, lab, _ in e.samples if n == fam + "_count"}:
            buckets = sorted((_value(lab["le"]), v) for lab, v in
                             ((dict(k), v) for k, v in e.series(fam + "_bucket", request=req).items()))
            assert buckets and buckets[-1][0] == math.inf, f"{fam}{{{req}}} has no +Inf bucket"
            counts = [v for _, v in buckets]
            assert counts == sorted(counts), f"{fam}{{{req}}} buckets not cumulative: {buckets}"
            assert counts[-1] == e.value(fam + "_count", request=req)
            assert e.value(fam + "_sum", request=req) >= 0


def test_produce_moves_topic_partition_and_log_metrics(broker):
    n, parts, value_len = 600, 3, 120
    topic = new_topic("produce")
    create_topic(broker.bootstrap, topic, parts)
    before = broker.scrape()
    assert before.value("spate_topic_messages_in_total", None, topic=topic) is None
    recs = [{"key": f"key-{i}".encode(), "value": bytes([65 + i % 26]) * value_len}
            for i in range(n)]
    reports = produce(broker.bootstrap, topic, recs, {"acks": "all", "compression.type": "none"})
    assert all(err is None for err, *_ in reports)
    per_partition = {p: sum(1 for _, q, *_ in reports if q == p) for p in range(parts)}

    after = wait_for(lambda: (lambda e: e if e.by("spate_partition_log_end_offset", "partition",
                                                    topic=topic) and sum(e.by(
        "spate_partition_log_end_offset", "partition", topic=topic).values()) == n else None)(
        broker.scrape()), "log end offsets to reach N")

    # Topic counters: exactly N records; bytes are the record batches (headers included).
    assert after.value("spate_topic_messages_in_total", topic=topic) == n
    bytes_in = after.value("spate_topic_bytes_in_total", topic=topic)
    assert bytes_in >= n * value_len, bytes_in
    assert bytes_in < n * (value_len + 64), f"{bytes_in} bytes for {n} uncompressed records"
    assert after.value("spate_topic_messages_out_total", topic=topic) == 0
    assert after.value("spate_topic_bytes_out_total", topic=topic) == 0

    # Partition gauges: per-partition end offsets are the delivery reports' counts.
    leo = {int(p): v for p, v in after.by("spate_partition_log_end_offset", "partition",
                                          topic=topic).items()}
    assert leo == per_partition
    assert {int(p): v for p, v in after.by("spate_partition_high_watermark", "partition",
                                           topic=topic).items()} == per_partition
    assert set(after.by("spate_partition_log_start_offset", "partition", topic=topic).values()) == {0}
    assert all(v >= 1 for v in after.by("spate_partition_segments", "partition", topic=topic).values())
    # Uncompressed batches are stored as produced: the segments hold exactly bytes_in.
    assert after.total("spate_partition_size_bytes", topic=topic) == bytes_in

    # Request latency / queue time histograms rose for Produce.
    for fam in ("spate_request_latency_seconds_count", "spate_request_queue_time_seconds_count"):
        assert after.value(fam, request="Produce") > before.value(fam, request="Produce"), fam
    assert after.value("spate_request_latency_seconds_sum", request="Produce") > \
        before.value("spate_request_latency_seconds_sum", request="Produce")

    # Log writes: at least one group-commit write, bytes written >= the batches (padding).
    assert after.total("spate_log_writes_total") > before.total("spate_log_writes_total")
    assert after.total("spate_log_bytes_written_total") - \
        before.total("spate_log_bytes_written_total") >= bytes_in
    assert after.total("spate_connections_accepted_total") > \
        before.total("spate_connections_accepted_total")
    assert after.total("spate_shard_cpu_seconds_total") >= before.total("spate_shard_cpu_seconds_total")


def test_consumer_group_lag_and_committed_offsets(broker):
    n, parts = 450, 3
    topic, group = new_topic("lag"), f"g-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, parts)
    produce(broker.bootstrap, topic,
            [{"key": f"k{i}".encode(), "value": b"v" * 50} for i in range(n)], {"acks": "all"})
    before = broker.scrape()
    end = {int(p): int(v) for p, v in
           before.by("spate_partition_log_end_offset", "partition", topic=topic).items()}
    assert sum(end.values()) == n
    assert not before.series("spate_consumer_group_lag", group=group)
    bytes_in = before.value("spate_topic_bytes_in_total", topic=topic)

    committed, nxt = group_consume_all(broker.bootstrap, topic, group, n)
    assert committed == {p: e for p, e in end.items() if e > 0} == nxt

    def settled():
        e = broker.scrape()
        return e if len(e.series("spate_consumer_group_lag", group=group)) == len(committed) else None
    after = wait_for(settled, "lag series for every committed partition")
    lag = {int(p): v for p, v in after.by("spate_consumer_group_lag", "partition",
                                          group=group, topic=topic).items()}
    assert lag == {p: 0 for p in committed}
    got = {int(p): v for p, v in after.by("spate_consumer_group_committed_offset", "partition",
                                          group=group, topic=topic).items()}
    assert got == {p: end[p] for p in committed}
    # One consumer read every record once.
    assert after.value("spate_topic_messages_out_total", topic=topic) == n
    assert after.value("spate_topic_bytes_out_total", topic=topic) == bytes_in
    for api in ("Fetch", "OffsetCommit", "JoinGroup", "SyncGroup"):
        assert after.value("spate_request_latency_seconds_count", request=api) > \
            before.value("spate_request_latency_seconds_count", request=api), api
    assert after.value("spate_request_queue_time_seconds_count", request="Fetch") > \
        before.value("spate_request_queue_time_seconds_count", request="Fetch")
    hits = after.total("spate_batch_cache_hits_total") + after.total("spate_batch_cache_misses_total")
    assert hits > before.total("spate_batch_cache_hits_total") + \
        before.total("spate_batch_cache_misses_total"), "fetches read no batches"

    # Lag is the high watermark minus the committed offset: commit k records short.
    k = 7
    p0 = max(end, key=end.get)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group,
                  "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(topic, p0, end[p0] - k)], asynchronous=False)
    finally:
        c.close()
    e = wait_for(lambda: (lambda s: s if s.value("spate_consumer_group_lag", group=group, topic=topic,
                                                  partition=p0) == k else None)(broker.scrape()),
                 f"lag {k} on partition {p0}")
    assert e.value("spate_consumer_group_committed_offset", group=group, topic=topic,
                   partition=p0) == end[p0] - k
    others = {int(p): v for p, v in e.by("spate_consumer_group_lag", "partition", group=group,
                                         topic=topic).items() if int(p) != p0}
    assert set(others.values()) <= {0}
    # Producing more raises the lag by exactly what was produced to that partition.
    reports = produce(broker.bootstrap, topic, [{"value": b"x", "partition": p0}] * 5)
    assert len(reports) == 5
    wait_for(lambda: broker.scrape().value("spate_consumer_group_lag", group=group, topic=topic,
                                           partition=p0) == k + 5, f"lag {k + 5}")


def test_flush_messages_1_fsyncs_every_write(broker):
    topic = new_topic("fsync")
    create_topic(broker.bootstrap, topic, 1, {"flush.messages": "1"})
    before = broker.scrape()
    n = 30
    # One record per request, one request in flight: one group-commit write each.
    produce(broker.bootstrap, topic, [{"value": b"f" * 10}] * n,
            {"acks": "all", "linger.ms": 0, "batch.num.messages": 1})
    after = broker.scrape()
    writes = after.total("spate_log_writes_total") - before.total("spate_log_writes_total")
    syncs = after.total("spate_log_fsyncs_total") - before.total("spate_log_fsyncs_total")
    assert 1 <= writes <= n
    assert syncs == writes, f"{writes} writes but {syncs} fdatasyncs with flush.messages=1"
    spent = after.total("spate_log_fsync_seconds_total") - before.total("spate_log_fsync_seconds_total")
    assert 0 < spent < 60, f"{spent} s in {syncs} fdatasyncs"
    assert after.value("spate_topic_messages_in_total", topic=topic) == n


def test_fetch_errors_are_counted(broker):
    topic = new_topic("err")
    create_topic(broker.bootstrap, topic, 1)
    produce(broker.bootstrap, topic, [{"value": b"one"}])
    before = broker.scrape().value("spate_request_errors_total", request="Fetch",
                                   error="OFFSET_OUT_OF_RANGE")
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "metrics-unused",
                  "enable.auto.commit": False, "auto.offset.reset": "error"})
    try:
        c.assign([TopicPartition(topic, 0, 1000)])
        deadline, err = time.monotonic() + OP_TIMEOUT, None
        while err is None and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and m.error():
                err = m.error()
        assert err is not None, "no offset-out-of-range error reached the consumer"
    finally:
        c.close()
    after = broker.scrape().value("spate_request_errors_total", request="Fetch",
                                  error="OFFSET_OUT_OF_RANGE")
    assert after >= before + 1


def test_fetch_min_bytes_counts_records_sent_once(broker):
    topic = new_topic("minbytes")
    create_topic(broker.bootstrap, topic, 1)
    produce(broker.bootstrap, topic, [{"value": b"m" * 100}] * 10)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "metrics-unused",
                  "enable.auto.commit": False, "fetch.min.bytes": 1_000_000,
                  "fetch.wait.max.ms": 1000})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        got, deadline = 0, time.monotonic() + OP_TIMEOUT
        while got < 10 and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and not m.error():
                got += 1
        assert got == 10
    finally:
        c.close()
    e = broker.scrape()
    assert e.value("spate_topic_messages_out_total", topic=topic) == 10
    assert e.value("spate_topic_bytes_out_total", topic=topic) == \
        e.value("spate_topic_bytes_in_total", topic=topic)


def test_fetch_max_bytes_counts_records_sent_once(broker):
    topic, n = new_topic("maxbytes"), 2000
    create_topic(broker.bootstrap, topic, 2)
    produce(broker.bootstrap, topic, [{"value": b"t" * 1000, "partition": i % 2} for i in range(n)],
            {"linger.ms": 20})
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "metrics-unused",
                  "enable.auto.commit": False, "fetch.max.bytes": 1048576,
                  "max.partition.fetch.bytes": 1048576, "message.max.bytes": 1000000})
    try:
        c.assign([TopicPartition(topic, 0, 0), TopicPartition(topic, 1, 0)])
        got, deadline = 0, time.monotonic() + OP_TIMEOUT
        while got < n and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and not m.error():
                got += 1
        assert got == n
    finally:
        c.close()
    e = broker.scrape()
    assert e.value("spate_topic_messages_out_total", topic=topic) == n


def test_restart_keeps_gauges_and_lag_resets_counters(broker):
    """Counters live in memory (they restart at 0); partition gauges come from the logs
    and committed offsets from __consumer_offsets, so they and the lag survive."""
    topic, group = new_topic("restart"), f"g-{uuid.uuid4().hex[:8]}"
    create_topic(broker.bootstrap, topic, 2)
    produce(broker.bootstrap, topic, [{"key": f"{i}".encode(), "value": b"r"} for i in range(100)])
    group_consume_all(broker.bootstrap, topic, group, 100)
    produce(broker.bootstrap, topic, [{"key": f"x{i}".encode(), "value": b"r"} for i in range(30)])
    before = wait_for(lambda: (lambda e: e if sum(e.by("spate_consumer_group_lag", "partition",
                                                         group=group).values()) == 30 else None)(
        broker.scrape()), "lag 30 before the restart")
    assert broker.stop() == 0, broker.log_tail()
    broker.start()
    after = broker.scrape()
    for fam, labels in (("spate_partition_log_end_offset", {"topic": topic}),
                        ("spate_partition_high_watermark", {"topic": topic}),
                        ("spate_partition_size_bytes", {"topic": topic}),
                        ("spate_consumer_group_committed_offset", {"group": group}),
                        ("spate_consumer_group_lag", {"group": group})):
        assert after.series(fam, **labels) == before.series(fam, **labels), fam
    assert after.value("spate_topic_messages_in_total", None, topic=topic) is None
    assert after.total("spate_connections_accepted_total") < \
        before.total("spate_connections_accepted_total")
    assert after.total("spate_request_latency_seconds_count") < \
        before.total("spate_request_latency_seconds_count")


# --------------------------------------------------------------------------------------
# The Grafana dashboard against a real scrape.
# --------------------------------------------------------------------------------------

_METRIC_REF = re.compile(r"\b(spate_[a-zA-Z0-9_:]+)\s*(\{[^}]*\})?")
_BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"')


def dashboard_exprs(d):
    """(panel title, expr) of every query in every panel (rows' nested panels too),
    plus the templating variables' queries."""
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((p.get("title", "?"), t["expr"]))
            walk(p.get("panels", []))
    walk(d.get("panels", []))
    for v in d.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if v.get("type") == "query" and q:
            out.append((f"${v['name']}", q))
    return out


def test_dashboard_is_valid_grafana_json():
    d = json.loads(DASHBOARD.read_text())
    assert d["schemaVersion"] >= 36 and d["title"] and d["uid"]
    assert any(i.get("name") == "DS_PROMETHEUS" and i.get("pluginId") == "prometheus"
               for i in d.get("__inputs", [])), "no DS_PROMETHEUS datasource input"
    ids, titles = set(), []

    def walk(panels):
        for p in panels:
            assert p["id"] not in ids, f"panel id {p['id']} repeated"
            ids.add(p["id"])
            assert {"x", "y", "w", "h"} <= set(p["gridPos"]), p.get("title")
            titles.append(p["title"])
            if p["type"] != "row":
                assert p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
                assert p.get("targets"), f"panel {p['title']} has no query"
                refs = [t["refId"] for t in p["targets"]]
                assert len(refs) == len(set(refs)), p["title"]
            walk(p.get("panels", []))
    walk(d["panels"])
    rows = [p["title"] for p in d["panels"] if p["type"] == "row"]
    assert len(rows) >= 6, rows


def test_dashboard_queries_match_a_real_scrape(broker):
    """Every metric a dashboard query names is exposed by the broker (after traffic that
    makes every family appear), with the labels the query selects or groups by."""
    # Traffic that makes every family non-empty, errors included.
    topic, group = new_topic("dash"), f"dash-{uuid.uuid4().hex[:6]}"
    create_topic(broker.bootstrap, topic, 2)
    produce(broker.bootstrap, topic, [{"key": f"{i}".encode(), "value": b"d" * 30}
                                      for i in range(40)], {"acks": "all"})
    group_consume_all(broker.bootstrap, topic, group, 40)
    e = broker.scrape()
    if not e.series("spate_request_errors_total"):
        test_fetch_errors_are_counted(broker)
        e = broker.scrape()
    labels_of = {}
    for name, labels, _ in e.samples:
        labels_of.setdefault(name, set()).update(labels)
    for name in FAMILIES:
        assert any(e.family_of[s] == name for s in labels_of), f"{name} has no samples"

    d = json.loads(DASHBOARD.read_text())
    exprs = dashboard_exprs(d)
    assert len(exprs) >= 15, exprs
    used = set()
    for title, expr in exprs:
        refs = _METRIC_REF.findall(expr)
        assert refs, f"{title}: {expr!r} names no spate metric"
        expr_labels = set()
        for name, sel in refs:
            assert name in labels_of, f"panel {title!r}: {name} is not in /metrics"
            used.add(e.family_of[name])
            expr_labels |= labels_of[name]
            for label in _MATCHER.findall(sel or ""):
                assert label in labels_of[name], f"panel {title!r}: {name} has no label {label}"
        for group_labels in _BY.findall(expr):
            for label in filter(None, (x.strip() for x in group_labels.split(","))):
                assert label in expr_labels, f"panel {title!r}: no metric in {expr!r} has {label}"
        for fn in re.findall(r"\b(rate|increase|irate|delta|deriv)\s*\(\s*(spate_\w+)", expr):
            kind = e.types[e.family_of[fn[1]]]
            if fn[0] in ("rate", "increase", "irate"):
                assert kind in ("counter", "histogram"), f"panel {title!r}: {fn[0]}() of {kind} {fn[1]}"
            else:
                assert kind == "gauge", f"panel {title!r}: {fn[0]}() of {kind} {fn[1]}"
    unused = set(FAMILIES) - used
    assert not unused, f"families the dashboard does not show: {unused}"


def test_dashboard_promql_parses(tmp_path):
    """Every panel query is valid PromQL (checked by promtool as recording rules, with the
    dashboard variables replaced as Grafana would); skipped without promtool."""
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    d = json.loads(DASHBOARD.read_text())
    rules = []
    for i, (title, expr) in enumerate(dashboard_exprs(d)):
        if title.startswith("$"):
            continue  # variables use Grafana's label_values(), not PromQL
        expr = (expr.replace("$__rate_interval", "1m").replace('"$topic"', '".*"')
                .replace('"$group"', '".*"'))
        assert "$" not in expr, f"panel {title!r}: unknown variable in {expr!r}"
        rules.append({"record": f"spate_dashboard:panel_{i}", "expr": expr})
    # JSON is valid YAML.
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    res = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
