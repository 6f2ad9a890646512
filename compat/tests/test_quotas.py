"""Client quotas (issue 16; docs/security.md#quotas).

A private broker (the quotas set here would slow other tests). Quotas are set and
described with Kafka's own kafka-configs.sh (ConfigCommand: AlterClientQuotas,
DescribeClientQuotas); librdkafka (confluent-kafka) producers and consumers are then
held to their byte rates, a client over its share of request time is throttled, and a
client IP over its connection creation rate has its new connections closed.
"""
import shutil
import socket
import statistics
import struct
import subprocess
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import EXTERNAL, RUNS, SpateBroker, free_port
from flexraw import TAGS, FlexClient, carray
from grouputil import cstr
from test_kafka_cli import TOOL_TIMEOUT, TOOLS, kafka_libs, tool  # noqa: F401 (a fixture)

pytestmark = pytest.mark.skipif(bool(EXTERNAL), reason="needs its own broker")

RATE = 400_000  # bytes/s for the throttled producer and consumer
VALUE = 1000
# A client may run a second's worth ahead of its quota (docs/security.md#quotas): the
# rate is checked over windows of WINDOW s ending between STEADY_FROM and UNTIL.
WINDOW, STEADY_FROM, UNTIL = 5.0, 6.0, 16.0


@pytest.fixture(scope="module")
def broker():
    RUNS.mkdir(parents=True, exist_ok=True)
    b = SpateBroker(RUNS / f"spate-quotas-{uuid.uuid4().hex[:10]}", free_port())
    b.start()
    yield b
    b.stop()
    shutil.rmtree(b.data_dir, ignore_errors=True)


def configs(libs, broker, *args):
    return tool(libs, "ConfigCommand", "--bootstrap-server", broker.bootstrap, *args)


def refused(libs, broker, *args):
    """What ConfigCommand prints on stderr when the broker refuses the change."""
    cmd = ["java", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp", f"{libs}/*", TOOLS +
           "ConfigCommand", "--bootstrap-server", broker.bootstrap, *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    assert "InvalidRequestException" in r.stderr, r.stderr
    return r.stderr


def test_kafka_configs_sets_describes_and_removes_quotas(broker, kafka_libs):  # noqa: F811
    configs(kafka_libs, broker, "--alter", "--add-config",
            "producer_byte_rate=1024,consumer_byte_rate=2048",
            "--entity-type", "users", "--entity-name", "alice",
            "--entity-type", "clients", "--entity-name", "app")
    configs(kafka_libs, broker, "--alter", "--add-config", "producer_byte_rate=4096",
            "--entity-type", "users", "--entity-default")
    configs(kafka_libs, broker, "--alter", "--add-config", "connection_creation_rate=50",
            "--entity-type", "ips", "--entity-name", "10.1.2.3")
    out = configs(kafka_libs, broker, "--describe", "--entity-type", "users",
                  "--entity-name", "alice", "--entity-type", "clients", "--entity-name", "app")
    assert ("Quota configs for user-principal 'alice', client-id 'app' are "
            "consumer_byte_rate=2048.0, producer_byte_rate=1024.0") in out, out
    out = configs(kafka_libs, broker, "--describe", "--entity-type", "users",
                  "--entity-default")
    assert "Quota configs for the default user-principal are producer_byte_rate=4096.0" in out, out
    out = configs(kafka_libs, broker, "--describe", "--entity-type", "ips")
    assert "Quota configs for ip '10.1.2.3' are connection_creation_rate=50.0" in out, out
    # Every entity of users alone (the tool's filter is strict: the user-and-client
    # entity is not one).
    out = configs(kafka_libs, broker, "--describe", "--entity-type", "users")
    assert "the default user-principal" in out and "'alice'" not in out, out

    # Refusals carry Kafka's messages (INVALID_REQUEST).
    bad = refused(kafka_libs, broker, "--alter", "--add-config", "producer_byte_rate=1.5",
                  "--entity-type", "clients", "--entity-name", "x")
    assert "producer_byte_rate cannot be a fractional value" in bad, bad
    bad = refused(kafka_libs, broker, "--alter", "--add-config", "request_percentage=0",
                  "--entity-type", "clients", "--entity-name", "x")
    assert "Quota request_percentage must be greater than 0" in bad, bad

    for args in (["--entity-type", "users", "--entity-name", "alice",
                  "--entity-type", "clients", "--entity-name", "app",
                  "--delete-config", "producer_byte_rate,consumer_byte_rate"],
                 ["--entity-type", "users", "--entity-default",
                  "--delete-config", "producer_byte_rate"],
                 ["--entity-type", "ips", "--entity-name", "10.1.2.3",
                  "--delete-config", "connection_creation_rate"]):
        configs(kafka_libs, broker, "--alter", *args)
    for kind in ("users", "clients", "ips"):
        out = configs(kafka_libs, broker, "--describe", "--entity-type", kind)
        assert "Quota configs" not in out, out

    # Quotas live in the metadata log: they survive a restart.
    configs(kafka_libs, broker, "--alter", "--add-config", "consumer_byte_rate=777",
            "--entity-type", "clients", "--entity-name", "kept")
    broker.stop()
    broker.start()
    out = configs(kafka_libs, broker, "--describe", "--entity-type", "clients",
                  "--entity-name", "kept")
    assert "Quota configs for client-id 'kept' are consumer_byte_rate=777.0" in out, out
    configs(kafka_libs, broker, "--alter", "--delete-config", "consumer_byte_rate",
            "--entity-type", "clients", "--entity-name", "kept")


def _create(broker, topic):
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)


def _produce_for(broker, topic, client_id, seconds, out):
    """Produces VALUE-byte records as fast as librdkafka lets it for `seconds`; appends
    (time since start, delivered bytes so far) samples to out["samples"]."""
    delivered = [0]
    throttles = []

    def on_delivery(err, msg):
        assert err is None, err
        delivered[0] += len(msg.value())

    p = Producer({"bootstrap.servers": broker.bootstrap, "client.id": client_id,
                  "linger.ms": 5, "throttle_cb": lambda e: throttles.append(e.throttle_time),
                  "queue.buffering.max.kbytes": 2048, "batch.size": 16384,
                  "max.in.flight": 5})
    start = time.monotonic()
    value = b"v" * VALUE
    while (now := time.monotonic() - start) < seconds:
        try:
            p.produce(topic, value=value, partition=0, on_delivery=on_delivery)
        except BufferError:
            p.poll(0.05)
        p.poll(0)
        out.setdefault("samples", []).append((now, delivered[0]))
    p.flush(60)
    out["throttles"] = throttles


def _rate_between(samples, t0, t1):
    def at(t):
        return next(b for s, b in samples if s >= t)
    return (at(t1) - at(t0)) / (t1 - t0)


def _windowed_rate(samples):
    """The median rate over WINDOW-s spans ending every 0.5 s from STEADY_FROM on."""
    ends = [STEADY_FROM + i / 2 for i in range(int((UNTIL - 0.5 - STEADY_FROM) * 2) + 1)]
    return statistics.median(_rate_between(samples, e - WINDOW, e) for e in ends)


def test_a_producer_and_a_consumer_are_held_to_their_byte_rates(broker, kafka_libs):  # noqa: F811
    topic, filled = f"quota-p-{uuid.uuid4().hex[:6]}", f"quota-c-{uuid.uuid4().hex[:6]}"
    _create(broker, topic)
    _create(broker, filled)
    # Enough for the consumer, written before its quota exists (no quota: full speed).
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20})
    for _ in range(int(RATE * (UNTIL + 4)) // VALUE):
        while True:
            try:
                p.produce(filled, value=b"c" * VALUE, partition=0)
                break
            except BufferError:
                p.poll(0.1)
    assert p.flush(60) == 0

    configs(kafka_libs, broker, "--alter", "--add-config", f"producer_byte_rate={RATE}",
            "--entity-type", "clients", "--entity-name", "slow-producer")
    configs(kafka_libs, broker, "--alter", "--add-config", f"consumer_byte_rate={RATE}",
            "--entity-type", "clients", "--entity-name", "slow-consumer")

    produced = {}
    t = threading.Thread(target=_produce_for, args=(broker, topic, "slow-producer", UNTIL, produced))
    t.start()
    c = Consumer({"bootstrap.servers": broker.bootstrap, "client.id": "slow-consumer",
                  "group.id": f"g-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False,
                  "fetch.max.bytes": 1 << 20})
    c.assign([TopicPartition(filled, 0, 0)])
    consumed, samples, start = 0, [], time.monotonic()
    while (now := time.monotonic() - start) < UNTIL:
        for m in c.consume(1000, 0.2):
            assert m.error() is None, m.error()
            consumed += len(m.value())
        samples.append((now, consumed))
    c.close()
    t.join(120)

    produce_rate = _windowed_rate(produced["samples"])
    consume_rate = _windowed_rate(samples)
    # Within 10 % of the quota (Kafka counts whole requests and responses, a little more
    # than the values counted here).
    assert 0.9 * RATE <= produce_rate <= 1.1 * RATE, produce_rate
    assert 0.9 * RATE <= consume_rate <= 1.1 * RATE, consume_rate
    # The broker told the producer (throttle_time_ms in its responses).
    assert produced["throttles"] and max(produced["throttles"]) > 0

    # Without its quota the producer runs free again.
    configs(kafka_libs, broker, "--alter", "--delete-config", "producer_byte_rate",
            "--entity-type", "clients", "--entity-name", "slow-producer")
    free = {}
    _produce_for(broker, topic, "slow-producer", 3.0, free)
    assert _rate_between(free["samples"], 1.0, 2.9) > 3 * RATE


def _api_versions_from(source_ip, port):
    """Opens a connection from `source_ip` and sends ApiVersions v0: whether an answer
    came (False: the broker closed the connection)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source_ip, 0))
    try:
        header = struct.pack(">hhi", 18, 0, 7) + struct.pack(">h", 1) + b"q"
        s.sendall(struct.pack(">i", len(header)) + header)
        got = s.recv(4)
        return len(got) == 4
    except (ConnectionResetError, socket.timeout):
        return False
    finally:
        s.close()


def test_connections_over_an_ips_creation_rate_are_closed(broker, kafka_libs):  # noqa: F811
    # Another loopback address than the tools' own, so that only these connections count.
    ip = "127.0.0.9"
    configs(kafka_libs, broker, "--alter", "--add-config", "connection_creation_rate=2",
            "--entity-type", "ips", "--entity-name", ip)
    try:
        # 2/s: a second's worth at once is fine, then they are closed (after the
        # throttle, so that a client does not reconnect at once).
        answered = [_api_versions_from(ip, broker.port) for _ in range(2)]
        assert all(answered), answered
        started = time.monotonic()
        assert not _api_versions_from(ip, broker.port)
        assert time.monotonic() - started >= 0.3, "closed only after a throttle"
        # Other addresses are not limited.
        assert _api_versions_from("127.0.0.1", broker.port)
    finally:
        configs(kafka_libs, broker, "--alter", "--delete-config", "connection_creation_rate",
                "--entity-type", "ips", "--entity-name", ip)
    assert _api_versions_from(ip, broker.port)


def _create_topics_raw(client, version, topics):
    """CreateTopics (flexible, v5+) of (name, partitions): (throttle_time_ms,
    {name: error code})."""
    body = carray([cstr(name) + struct.pack(">ih", n, 1) + carray([]) + carray([]) + TAGS
                   for name, n in topics]) + struct.pack(">i?", 30000, False) + TAGS
    r = client.call(19, version, body)
    throttle = r.i32()

    def config(x):
        x.str(), x.str(), x.bool(), x.i8(), x.bool()
        x.tags()

    def topic(x):
        name = x.str()
        if version >= 7:
            x.uuid()
        error = x.i16()
        x.str()
        x.i32(), x.i16()
        x.array(config)
        x.tags()
        return name, error

    return throttle, dict(r.array(topic))


def test_topic_creation_is_held_to_the_controller_mutation_rate(broker, kafka_libs):  # noqa: F811
    # FlexClient's client id.
    configs(kafka_libs, broker, "--alter", "--add-config", "controller_mutation_rate=2",
            "--entity-type", "clients", "--entity-name", "flexpy")
    p = uuid.uuid4().hex[:6]
    client = FlexClient(broker.bootstrap)
    try:
        # Strict (v6+): the first topic takes the client over its quota (a second's worth
        # is 2 partitions; it creates 4), the next is refused, as in Kafka.
        throttle, errors = _create_topics_raw(client, 7, [(f"m-{p}-a", 4), (f"m-{p}-b", 1)])
        assert errors == {f"m-{p}-a": 0, f"m-{p}-b": 89}, errors
        assert throttle > 0
        # Permissive (v5): every topic is created, and the response throttles.
        throttle, errors = _create_topics_raw(client, 5, [(f"m-{p}-c", 1), (f"m-{p}-d", 1)])
        assert errors == {f"m-{p}-c": 0, f"m-{p}-d": 0}, errors
        assert throttle > 0
    finally:
        client.close()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    names = set(admin.list_topics(timeout=30).topics)
    assert {f"m-{p}-a", f"m-{p}-c", f"m-{p}-d"} <= names and f"m-{p}-b" not in names
    configs(kafka_libs, broker, "--alter", "--delete-config", "controller_mutation_rate",
            "--entity-type", "clients", "--entity-name", "flexpy")


def _metadata_for(broker, client_id, seconds):
    """Metadata v12 requests, one after another, for `seconds` (a raw client, which
    does not wait on throttles itself: the broker's mute holds it back): (requests
    answered, their throttle_time_ms values)."""
    client = FlexClient(broker.bootstrap, client_id=client_id)
    # All topics (a null array), no auto-creation, no authorized operations.
    body = b"\x00" + struct.pack(">??", False, False) + TAGS
    throttles = []
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            throttles.append(client.call(3, 12, body).i32())
    finally:
        client.close()
    return len(throttles), throttles


def test_a_client_over_its_request_percentage_is_throttled(broker, kafka_libs):  # noqa: F811
    # 0.01 % of a shard: 0.1 ms of broker time a second, less than a handful of
    # metadata requests' worth.
    configs(kafka_libs, broker, "--alter", "--add-config", "request_percentage=0.01",
            "--entity-type", "clients", "--entity-name", "busy-client")
    try:
        out = configs(kafka_libs, broker, "--describe", "--entity-type", "clients",
                      "--entity-name", "busy-client")
        assert "Quota configs for client-id 'busy-client' are request_percentage=0.01" in out, out

        held, throttles = _metadata_for(broker, "busy-client", 3.0)
        free, free_throttles = _metadata_for(broker, "free-client", 3.0)
        # The throttled client is told, and held back by the muted connection (a
        # throttle is at most 1 s, as Kafka bounds it by its quota window).
        assert max(throttles) > 0, throttles
        assert max(throttles) <= 1000, throttles
        assert held * 10 < free, (held, free)
        # A client id without the quota is not throttled.
        assert free_throttles and max(free_throttles) == 0

        # librdkafka's producer gets the throttle from its produce responses, where
        # throttle_time_ms comes after the partitions.
        topic = f"quota-r-{uuid.uuid4().hex[:6]}"
        _create(broker, topic)
        produced = {}
        _produce_for(broker, topic, "busy-client", 3.0, produced)
        assert produced["throttles"] and max(produced["throttles"]) > 0, produced["throttles"]
    finally:
        configs(kafka_libs, broker, "--alter", "--delete-config", "request_percentage",
                "--entity-type", "clients", "--entity-name", "busy-client")
    # Without its quota the client runs free again.
    again, throttles = _metadata_for(broker, "busy-client", 3.0)
    assert max(throttles) == 0 and again * 10 > free, (again, free)
