"""Listeners changed at runtime, as Kafka 4.4 changes them: `listeners` and
`listener.security.protocol.map` set on broker 0 with kafka-configs.sh (ConfigCommand),
a new listener accepting at once (records produced through it), described with Kafka's
sources and synonyms, Metadata and DescribeTopicPartitions on it naming no broker (it
is not in the broker's registration), removed (the port refuses, its open connections are closed), Kafka's
refusals, and kept across a restart; SSL, SASL_PLAINTEXT and SASL_SSL listeners added
the same way speak their protocols with the broker's [ssl] and [sasl] settings.

Against a reference Kafka (SPATE_COMPAT_BOOTSTRAP) it runs on that broker, leaves its
listener settings as it found them, and skips the restart."""
import shutil
import socket
import ssl
import struct
import time
import uuid

import pytest
from confluent_kafka.admin import AdminClient

from conftest import EXTERNAL, _new_broker, free_port, port_accepts
from flexraw import TAGS, FlexClient, carray, describe_topic_partitions
from grouputil import RawClient, cstr
from kafkautil import consume, create_topic
from test_broker_configs import admin, configs_tool, jar  # noqa: F401 (fixture)
from test_idempotent_raw import record_batch
from test_kafka_cli import kafka_libs  # noqa: F401 (fixture)
from test_security import peer_common_name, sasl_handshake_frame, secure  # noqa: F401 (fixture)

pytestmark = pytest.mark.timeout(300)

DEFAULT_LISTENERS = "PLAINTEXT://:9092"
DEFAULT_MAP = "SASL_SSL:SASL_SSL,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT"
LISTENER_NOT_FOUND = 72


@pytest.fixture
def target():
    """(bootstrap, broker): a private spate (restartable), or the external broker."""
    if EXTERNAL:
        yield EXTERNAL, None
        return
    broker = _new_broker()
    broker.start()
    yield broker.bootstrap, broker
    broker.stop()
    shutil.rmtree(broker.data_dir, ignore_errors=True)


def listener_configs(b):
    c = admin(b, "broker-configs", "0")["configs"]
    return c, c["listeners"], c["listener.security.protocol.map"]


def wait_for(check, what, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def set_listeners(libs, b, listeners, protocol_map=None):
    value = f"listeners=[{listeners}]"
    if protocol_map is not None:
        value += f",listener.security.protocol.map=[{protocol_map}]"
    configs_tool(libs, b, "--entity-name", "0", "--alter", "--add-config", value)


def with_entry(csv, entry):
    """The protocol map `csv` with `entry` (NAME:PROTOCOL) in place of that name's."""
    items = [i for i in csv.split(",") if i and i.split(":")[0] != entry.split(":")[0]]
    return ",".join(items + [entry])


def metadata(addr, topic):
    """Metadata v12 for one topic: (brokers, controller id, [(error, leader, offline)])."""
    client = FlexClient(addr)
    try:
        r = client.call(3, 12, carray([b"\x00" * 16 + cstr(topic) + TAGS]) + b"\x00\x00" + TAGS)
    finally:
        client.close()
    r.i32()

    def broker(x):
        b = (x.i32(), x.str(), x.i32(), x.str())
        x.tags()
        return b

    def partition(x):
        err, _, leader, _ = x.i16(), x.i32(), x.i32(), x.i32()
        x.array(lambda y: y.i32())
        x.array(lambda y: y.i32())
        offline = x.array(lambda y: y.i32())
        x.tags()
        return (err, leader, offline)

    def topic_entry(x):
        x.i16(), x.str(), x.uuid(), x.bool()
        partitions = x.array(partition)
        x.i32()
        x.tags()
        return partitions

    brokers = r.array(broker)
    r.str()
    controller = r.i32()
    (partitions,) = r.array(topic_entry)
    return brokers, controller, partitions


def sasl_handshake(addr):
    """SaslHandshake v1 for PLAIN: (error code, the broker's mechanisms)."""
    raw = RawClient.to(addr)
    try:
        r = raw.call(17, 1, struct.pack(">h", 5) + b"PLAIN")
        return r.i16(), r.array(lambda x: x.str())
    finally:
        raw.close()


def api_versions_ok(sock):
    """ApiVersions v0 on an open socket: its error code is 0."""
    hdr = struct.pack(">hhi", 18, 0, 1) + struct.pack(">h", 4) + b"test"
    sock.sendall(struct.pack(">i", len(hdr)) + hdr)
    n = struct.unpack(">i", recv_exact(sock, 4))[0]
    data = recv_exact(sock, n)
    return struct.unpack_from(">ih", data) == (1, 0)


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def closed_by_broker(sock, timeout=15):
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_dynamic_listeners(target, kafka_libs, jar):
    b, broker = target
    configs, lst, pmap = listener_configs(b)
    try:
        scenario(b, broker, kafka_libs, configs, lst, pmap)
    finally:
        # As it was: Kafka's reference broker keeps running for other tests.
        for name, entry in (("listeners", lst), ("listener.security.protocol.map", pmap)):
            if entry["source"] == "DYNAMIC_BROKER_CONFIG":
                configs_tool(kafka_libs, b, "--entity-name", "0", "--alter", "--add-config",
                             f"{name}=[{entry['value']}]")
            else:
                configs_tool(kafka_libs, b, "--entity-name", "0", "--alter", "--delete-config", name)
    _, now, now_map = listener_configs(b)
    assert (now["value"], now_map["value"]) == (lst["value"], pmap["value"])


def scenario(b, broker, kafka_libs, configs, lst, pmap):
    # Kafka's type, read-only flag and default, whatever set them before.
    assert (lst["type"], lst["read_only"], lst["synonyms"][-1]) == (
        "LIST", False, ["listeners", DEFAULT_LISTENERS, "DEFAULT_CONFIG"])
    assert (pmap["type"], pmap["read_only"], pmap["synonyms"][-1]) == (
        "STRING", False, ["listener.security.protocol.map", DEFAULT_MAP, "DEFAULT_CONFIG"])
    if broker is not None:
        # A fresh spate started with --listen: one static PLAINTEXT listener.
        assert (lst["value"], lst["source"], lst["synonyms"]) == (
            f"PLAINTEXT://{b}", "STATIC_BROKER_CONFIG",
            [["listeners", f"PLAINTEXT://{b}", "STATIC_BROKER_CONFIG"],
             ["listeners", DEFAULT_LISTENERS, "DEFAULT_CONFIG"]])
        assert (pmap["value"], pmap["source"]) == (DEFAULT_MAP, "DEFAULT_CONFIG")
    static_listeners = next(s[1] for s in lst["synonyms"] if s[2] == "STATIC_BROKER_CONFIG")
    topic = f"dyn-listeners-{uuid.uuid4().hex[:8]}"
    create_topic(b, topic)

    # Added: accepting at once, described as Kafka describes it.
    port = free_port()
    extra = f"EXTRA://127.0.0.1:{port}"
    extra_addr = f"127.0.0.1:{port}"
    listeners = f"{static_listeners},{extra}"
    protocol_map = with_entry(pmap["value"], "EXTRA:PLAINTEXT")
    set_listeners(kafka_libs, b, listeners, protocol_map)
    wait_for(lambda: port_accepts(port), f"{extra} to accept")
    _, lst, pmap = listener_configs(b)
    assert (lst["value"], lst["source"]) == (listeners, "DYNAMIC_BROKER_CONFIG")
    assert [s[2] for s in lst["synonyms"]] == ["DYNAMIC_BROKER_CONFIG", "STATIC_BROKER_CONFIG", "DEFAULT_CONFIG"]
    assert (pmap["value"], pmap["source"]) == (protocol_map, "DYNAMIC_BROKER_CONFIG")
    assert pmap["synonyms"][0] == ["listener.security.protocol.map", protocol_map, "DYNAMIC_BROKER_CONFIG"]

    # Requests through it are served: a produce lands in the log (read back through
    # the registered listener).
    raw = RawClient.to(extra_addr)
    try:
        err, _ = raw.produce(topic, 0, record_batch(-1, -1, -1, [b"via-extra"]))
    finally:
        raw.close()
    assert err == 0
    assert [m["value"] for m in consume(b, topic, 0, 1)] == [b"via-extra"]
    # Not in the broker's registration: Metadata on it names no broker, and the
    # partitions it leads have no leader there.
    brokers, controller, partitions = metadata(extra_addr, topic)
    assert (brokers, controller) == ([], 0)
    assert partitions == [(LISTENER_NOT_FOUND, -1, [0])]
    brokers, _, partitions = metadata(b, topic)
    assert [x[0] for x in brokers] == [0] and partitions == [(0, 0, [])]
    client = FlexClient(extra_addr)
    try:
        (described,), _ = describe_topic_partitions(client, [topic])
    finally:
        client.close()
    assert [(p["error"], p["leader"], p["offline"]) for p in described["partitions"]] == [(0, -1, [0])]
    # So a client bootstrapped there learns of no broker to send anything to.
    md = AdminClient({"bootstrap.servers": extra_addr}).list_topics(topic, timeout=10)
    assert (md.brokers, md.controller_id) == ({}, 0)
    assert {p: (x.leader, x.error.code()) for p, x in md.topics[topic].partitions.items()} == {
        0: (-1, LISTENER_NOT_FOUND)}

    # Kafka's refusals.
    other = f"OTHER://127.0.0.1:{free_port()}"
    entries = ", ".join(f"{listeners},{other}".split(","))
    without_ib = ",".join(e for e in listeners.split(",") if not e.startswith("PLAINTEXT://"))
    names = ",".join(e.split("://")[0] for e in without_ib.split(","))
    refusals = {
        ("", "SET", "listeners", listeners):
            "InvalidRequestException: Cannot update these configs at default cluster level, "
            "broker id must be specified: [listeners]",
        ("0", "SET", "advertised.listeners", f"PLAINTEXT://{b}"):
            "InvalidRequestException: Cannot update these configs dynamically: [advertised.listeners]",
        ("0", "SET", "listeners", f"{listeners},{other}"):
            f"InvalidRequestException: Error creating broker listeners from '[{entries}]': "
            "No security protocol defined for listener OTHER",
        ("0", "SET", "listener.security.protocol.map", with_entry(protocol_map, "EXTRA:SASL_PLAINTEXT")):
            "InvalidRequestException: Invalid value org.apache.kafka.common.config.ConfigException: "
            "Security protocol cannot be updated for existing listener ListenerName(EXTRA) for "
            "configuration Invalid dynamic configuration",
        ("0", "SET", "listeners", without_ib):
            "InvalidRequestException: requirement failed: advertised.listeners listener names must be "
            f"equal to or a subset of the ones defined in listeners. Found PLAINTEXT. The valid options "
            f"based on the current configuration are {names}",
    }
    if "controller.listener.names" in configs:
        # A combined Kafka node: its controller listener is among `listeners` (Spate's
        # is `controller_listen`, not a Kafka listener).
        no_controller = ",".join(e for e in listeners.split(",") if not e.startswith("CONTROLLER://"))
        refusals[("0", "SET", "listeners", no_controller)] = (
            "InvalidRequestException: requirement failed: controller.listener.names must contain at "
            "least one value appearing in the 'listeners' configuration when running the KRaft "
            "controller role")
    for args, error in refusals.items():
        assert admin(b, "alter-broker", *args) == {"error": error}, args
    assert listener_configs(b)[1]["value"] == listeners

    # Removed: the port refuses and the connections on it are closed.
    conn = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        assert api_versions_ok(conn)
        set_listeners(kafka_libs, b, static_listeners)
        wait_for(lambda: not port_accepts(port), f"{extra} to refuse")
        assert closed_by_broker(conn)
    finally:
        conn.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)

    if broker is not None:
        # A SASL_PLAINTEXT listener speaks SASL from its first connection: only
        # ApiVersions and SaslHandshake before authentication (spate's [sasl] enables
        # PLAIN by default; the reference Kafka has no SASL set up).
        port, sasl_port = free_port(), free_port()
        listeners = f"{static_listeners},EXTRA://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port}"
        set_listeners(kafka_libs, b, listeners)
        wait_for(lambda: port_accepts(sasl_port), "the SASL_PLAINTEXT listener to accept")
        assert sasl_handshake(f"127.0.0.1:{sasl_port}") == (0, ["PLAIN"])
        raw = RawClient.to(f"127.0.0.1:{sasl_port}")
        try:
            with pytest.raises(ConnectionError):
                raw.call(3, 1, struct.pack(">i", -1))
        finally:
            raw.close()

        # Kept across a restart: the broker starts with its dynamic listeners.
        broker.stop()
        broker.wait_port_closed()
        assert not port_accepts(port) and not port_accepts(sasl_port)
        broker.start()
        wait_for(lambda: port_accepts(port), "the dynamic listener to accept after the restart")
        assert listener_configs(b)[1]["value"] == listeners
        assert sasl_handshake(f"127.0.0.1:{sasl_port}") == (0, ["PLAIN"])
        brokers, _, _ = metadata(f"127.0.0.1:{port}", topic)
        assert brokers == []
        assert [m["value"] for m in consume(b, topic, 0, 1)] == [b"via-extra"]


@pytest.mark.skipif(bool(EXTERNAL), reason="needs its own broker with TLS and SASL")
def test_tls_listeners_added_at_runtime(secure, kafka_libs, jar):
    """SSL and SASL_SSL listeners added at runtime speak TLS with the broker's [ssl]
    settings (the certificate of its SSL listener) and SASL with its [sasl] ones."""
    broker, pki, ports = secure
    b = broker.bootstrap
    _, lst, pmap = listener_configs(b)
    tls_port, sasl_port = free_port(), free_port()
    listeners = f"{lst['value']},TLS2://127.0.0.1:{tls_port},SECURE2://127.0.0.1:{sasl_port}"
    protocol_map = with_entry(with_entry(pmap["value"], "TLS2:SSL"), "SECURE2:SASL_SSL")
    set_listeners(kafka_libs, b, listeners, protocol_map)
    try:
        wait_for(lambda: port_accepts(tls_port) and port_accepts(sasl_port), "the TLS listeners to accept")
        assert peer_common_name(pki, tls_port) == peer_common_name(pki, ports["SSL"])
        ctx = ssl.create_default_context(cafile=str(pki.ca_file))
        with socket.create_connection(("127.0.0.1", sasl_port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(sasl_handshake_frame("PLAIN"))
                n = struct.unpack(">i", recv_exact(tls, 4))[0]
                r = struct.unpack_from(">ihih", recv_exact(tls, n))
                # (correlation id, error, one mechanism, its length: "PLAIN")
                assert r == (7, 0, 1, 5)
    finally:
        configs_tool(kafka_libs, b, "--entity-name", "0", "--alter", "--delete-config",
                     "listeners,listener.security.protocol.map")
    wait_for(lambda: not port_accepts(tls_port) and not port_accepts(sasl_port), "the TLS listeners to close")
