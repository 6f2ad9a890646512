"""Broker configs as Kafka describes and changes them: DescribeConfigs of broker 0 and of
the cluster default (Java Admin with synonyms and documentation, kafka-python,
kafka-configs.sh), dynamic broker configs set, applied to topics without a restart,
deleted and kept across a restart, and Kafka's refusals."""
import re
import socket
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from kafkautil import JAVA_JAR, OP_TIMEOUT, create_topic, java_jar, run_json
from test_kafka_cli import kafka_libs, tool  # noqa: F401 (fixture)

ADMIN = ["java", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xmx512m", "-cp", str(JAVA_JAR),
         "dev.spate.compat.AdminScenario"]

# Configs whose description is the same on Kafka 4.4 (as compat/reference runs it) and
# Spate with its embedded default: (value, source, read-only, type, synonyms).
D = "DEFAULT_CONFIG"
SAME = {
    "log.retention.ms": (None, D, False, "LONG", []),
    "log.retention.hours": ("168", D, True, "INT", [D]),
    "log.retention.minutes": (None, D, True, "INT", []),
    "log.roll.ms": (None, D, False, "LONG", []),
    "log.roll.hours": ("168", D, True, "INT", [D]),
    "log.flush.interval.ms": (None, D, False, "LONG", []),
    "log.segment.bytes": ("1073741824", D, False, "INT", [D]),
    "message.max.bytes": ("1048588", D, False, "INT", [D]),
    "log.cleanup.policy": ("delete", D, False, "LIST", [D]),
    "compression.type": ("producer", D, False, "STRING", [D]),
    "log.cleaner.min.cleanable.ratio": ("0.5", D, False, "DOUBLE", [D]),
    "log.cleaner.delete.retention.ms": ("86400000", D, False, "LONG", [D]),
    "log.message.timestamp.type": ("CreateTime", D, False, "STRING", [D]),
    "log.cleaner.enable": ("true", D, True, "BOOLEAN", [D]),
    "delete.topic.enable": ("true", D, True, "BOOLEAN", [D]),
    "fetch.max.bytes": ("57671680", D, True, "INT", [D]),
    "socket.request.max.bytes": ("104857600", D, True, "INT", [D]),
    "offsets.topic.num.partitions": ("50", D, True, "INT", [D]),
    "share.coordinator.state.topic.num.partitions": ("50", D, True, "INT", [D]),
    "default.replication.factor": ("1", D, True, "INT", [D]),
    "max.request.partition.size.limit": ("2000", D, True, "INT", [D]),
    "unclean.leader.election.enable": ("false", D, False, "BOOLEAN", [D]),
    "ssl.principal.mapping.rules": ("DEFAULT", D, True, "STRING", [D]),
    "sasl.oauthbearer.clock.skew.seconds": ("30", D, True, "INT", [D]),
    "sasl.oauthbearer.expected.audience": ("", D, True, "LIST", [D]),
    "sasl.oauthbearer.expected.issuer": (None, D, True, "STRING", []),
    "sasl.oauthbearer.jwks.endpoint.url": (None, D, True, "STRING", []),
    "sasl.oauthbearer.scope.claim.name": ("scope", D, True, "STRING", [D]),
    "sasl.oauthbearer.sub.claim.name": ("sub", D, True, "STRING", [D]),
    "sasl.server.max.receive.size": ("524288", D, True, "INT", [D]),
    # Not read-only on either: their listener.name.<listener>. form changes per broker.
    "ssl.keystore.location": (None, D, False, "STRING", []),
    "ssl.truststore.location": (None, D, False, "STRING", []),
}
# Described alike but for read-only: Kafka 4.4 changes these per broker at runtime, Spate
# does not (docs/configuration.md). (value, source, type, synonyms)
SAME_BUT_READ_ONLY = {
    "ssl.cipher.suites": ("", D, "LIST", [D]),
    "ssl.client.auth": ("none", D, "STRING", [D]),
    "ssl.enabled.protocols": ("TLSv1.2,TLSv1.3", D, "LIST", [D]),
    "ssl.endpoint.identification.algorithm": ("https", D, "STRING", [D]),
    "ssl.protocol": ("TLSv1.3", D, "STRING", [D]),
}
# Kafka's defaults, described as Kafka 4.4 describes them when nothing sets them (the
# reference run sets them to 1 for its single node; Spate's single node creates its
# internal topics with one replica whatever they say).
SAME.update({
    "offsets.topic.replication.factor": ("3", D, True, "SHORT", [D]),
    "transaction.state.log.replication.factor": ("3", D, True, "SHORT", [D]),
    "transaction.state.log.min.isr": ("2", D, True, "INT", [D]),
    "share.coordinator.state.topic.replication.factor": ("3", D, True, "SHORT", [D]),
    "share.coordinator.state.topic.min.isr": ("2", D, True, "SHORT", [D]),
})


@pytest.fixture(scope="module")
def jar():
    java_jar()


def admin(bootstrap, *args):
    return run_json(ADMIN + [bootstrap, *args])


def test_describe_broker_like_kafka(bootstrap, jar):
    configs = admin(bootstrap, "broker-configs", "0")["configs"]
    for name, (value, source, read_only, kind, synonyms) in SAME.items():
        c = configs[name]
        got = (c["value"], c["source"], c["read_only"], c["type"], [s[2] for s in c["synonyms"]])
        assert got == (value, source, read_only, kind, synonyms), name
        assert all(s[0] == name and s[1] == value for s in c["synonyms"]), name
        assert c["documented"] and not c["sensitive"], name
    for name, (value, source, kind, synonyms) in SAME_BUT_READ_ONLY.items():
        c = configs[name]
        got = (c["value"], c["source"], c["type"], [s[2] for s in c["synonyms"]])
        assert got == (value, source, kind, synonyms), name
        assert c["documented"] and not c["sensitive"], name
    # kafka-python and others read advertised.listeners: static, read-only.
    adv = configs["advertised.listeners"]
    assert (adv["value"], adv["source"], adv["read_only"], adv["type"]) == (
        f"PLAINTEXT://{bootstrap}", "STATIC_BROKER_CONFIG", True, "LIST")
    assert adv["synonyms"] == [["advertised.listeners", f"PLAINTEXT://{bootstrap}", "STATIC_BROKER_CONFIG"]]
    for name in ("node.id", "broker.id"):
        assert (configs[name]["value"], configs[name]["source"]) == ("0", "STATIC_BROKER_CONFIG")
    assert configs["log.dirs"]["source"] == "STATIC_BROKER_CONFIG" and configs["log.dirs"]["value"]
    # The cluster default lists only dynamic defaults (Kafka 4.4 formats its cluster
    # with min.insync.replicas=1 as one; Spate starts with none).
    default = admin(bootstrap, "broker-configs", "")["configs"]
    assert set(default) <= {"min.insync.replicas"}


def test_kafka_python_describes_broker(bootstrap):
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource
    a = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(OP_TIMEOUT * 1000))
    try:
        cfg = a.describe_configs([ConfigResource("BROKER", "0")], config_filter="all")["broker"]["0"]
        adv = cfg["advertised.listeners"]
        assert (adv["value"], adv["read_only"], adv["config_source"]) == (
            f"PLAINTEXT://{bootstrap}", True, "STATIC_BROKER_CONFIG")
        seg = cfg["log.segment.bytes"]
        assert (seg["value"], seg["read_only"], seg["config_source"]) == ("1073741824", False, "DEFAULT_CONFIG")
    finally:
        a.close()


def test_topic_config_synonyms_like_kafka(bootstrap, topic_name, jar):
    """A topic's configs list the broker layers of their synonyms as Kafka 4.4 does: a
    default whose broker config is null unless set (segment.ms: log.roll.ms) has none."""
    create_topic(bootstrap, topic_name, config={"retention.ms": "3600000"})
    configs = admin(bootstrap, "topic-configs", topic_name)["configs"]
    want = {
        "retention.ms": ("3600000", "DYNAMIC_TOPIC_CONFIG", [["retention.ms", "3600000", "DYNAMIC_TOPIC_CONFIG"]]),
        "segment.ms": ("604800000", D, []),
        "flush.ms": ("9223372036854775807", D, []),
        "segment.jitter.ms": ("0", D, []),
        "follower.replication.throttled.replicas": ("", D, []),
        "segment.bytes": ("1073741824", D, [["log.segment.bytes", "1073741824", D]]),
        "cleanup.policy": ("delete", D, [["log.cleanup.policy", "delete", D]]),
        "max.message.bytes": ("1048588", D, [["message.max.bytes", "1048588", D]]),
        "delete.retention.ms": ("86400000", D, [["log.cleaner.delete.retention.ms", "86400000", D]]),
    }
    assert {k: (configs[k]["value"], configs[k]["source"], configs[k]["synonyms"]) for k in want} == want
    assert all(c["documented"] and not c["read_only"] for c in configs.values())


def configs_tool(libs, bootstrap, *args):
    return tool(libs, "ConfigCommand", "--bootstrap-server", bootstrap, "--entity-type", "brokers", *args)


def produce_one(bootstrap, topic, size):
    """Produce one record of `size` bytes; the delivery error code (0: stored)."""
    p = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 10_000_000,
                  "enable.idempotence": False, "retries": 0, "linger.ms": 0})
    errors = []
    p.produce(topic, value=b"x" * size, on_delivery=lambda e, m: errors.append(e))
    p.flush(OP_TIMEOUT)
    assert len(errors) == 1
    return 0 if errors[0] is None else errors[0].code()


def test_dynamic_broker_configs(restartable_broker, kafka_libs, jar):
    b = restartable_broker.bootstrap
    topic = "dyn-broker-configs"
    create_topic(b, topic)

    # Cluster default and broker 0, through kafka-configs.sh as an operator would.
    configs_tool(kafka_libs, b, "--entity-default", "--alter", "--add-config",
                 "message.max.bytes=2000,log.retention.ms=3600000")
    configs_tool(kafka_libs, b, "--entity-name", "0", "--alter", "--add-config", "log.segment.bytes=2097152")
    out = configs_tool(kafka_libs, b, "--entity-default", "--describe")
    lines = sorted(l.strip() for l in out.splitlines() if "sensitive=" in l and "min.insync.replicas" not in l)
    assert lines == [
        "log.retention.ms=3600000 sensitive=false synonyms={DYNAMIC_DEFAULT_BROKER_CONFIG:log.retention.ms=3600000}",
        "message.max.bytes=2000 sensitive=false synonyms={DYNAMIC_DEFAULT_BROKER_CONFIG:message.max.bytes=2000}",
    ], out
    out = configs_tool(kafka_libs, b, "--entity-name", "0", "--describe")
    assert "Dynamic configs for broker 0 are:" in out
    assert [l.strip() for l in out.splitlines() if "sensitive=" in l] == [
        "log.segment.bytes=2097152 sensitive=false synonyms={DYNAMIC_BROKER_CONFIG:log.segment.bytes=2097152, "
        "DEFAULT_CONFIG:log.segment.bytes=1073741824}"], out
    out = configs_tool(kafka_libs, b, "--entity-name", "0", "--describe", "--all")
    assert re.search(r"^  message\.max\.bytes=2000 sensitive=false synonyms=\{DYNAMIC_DEFAULT_BROKER_CONFIG:"
                     r"message\.max\.bytes=2000, DEFAULT_CONFIG:message\.max\.bytes=1048588\}$", out, re.M), out

    # Topics without an override take the new defaults at once: the value, its source,
    # and the behaviour (a record over the new message.max.bytes is refused).
    topic_out = tool(kafka_libs, "ConfigCommand", "--bootstrap-server", b, "--entity-type", "topics",
                     "--entity-name", topic, "--describe", "--all")
    assert re.search(r"^  max\.message\.bytes=2000 sensitive=false synonyms=\{DYNAMIC_DEFAULT_BROKER_CONFIG:"
                     r"message\.max\.bytes=2000, DEFAULT_CONFIG:message\.max\.bytes=1048588\}$", topic_out, re.M), topic_out
    assert re.search(r"^  segment\.bytes=2097152 sensitive=false synonyms=\{DYNAMIC_BROKER_CONFIG:", topic_out, re.M)
    # The hours form, the default of log.retention.ms, follows it as Kafka lists it.
    assert re.search(r"^  retention\.ms=3600000 sensitive=false synonyms=\{DYNAMIC_DEFAULT_BROKER_CONFIG:"
                     r"log\.retention\.ms=3600000, DEFAULT_CONFIG:log\.retention\.hours=168\}$", topic_out, re.M), topic_out
    assert produce_one(b, topic, 5000) == KafkaError.MSG_SIZE_TOO_LARGE
    assert produce_one(b, topic, 500) == 0

    # Kafka's refusals, through the Java Admin client; nothing changes.
    refusals = {
        ("0", "SET", "num.partitions", "3"):
            "InvalidRequestException: Cannot update these configs dynamically: [num.partitions]",
        ("", "SET", "log.retention.hours", "5"):
            "InvalidRequestException: Cannot update these configs dynamically: [log.retention.hours]",
        ("0", "SET", "log.segment.bytes", "100"):
            "InvalidRequestException: Invalid value 100 for configuration log.segment.bytes: "
            "Value must be at least 1048576",
        ("", "SET", "log.retention.ms", "abc"):
            "InvalidRequestException: Invalid value abc for configuration log.retention.ms: Not a number of type LONG",
        ("", "SET", "log.roll.ms", "0"):
            "InvalidRequestException: requirement failed: log.roll.ms must be greater than or equal to 1",
        ("0", "SET", "log.cleaner.min.cleanable.ratio", "2"):
            "InvalidRequestException: Invalid value 2.0 for configuration log.cleaner.min.cleanable.ratio: "
            "Value must be no more than 1",
        ("", "SET", "compression.type", "foo"):
            "InvalidRequestException: Invalid value foo for configuration compression.type: "
            "String must be one of: uncompressed, zstd, lz4, snappy, gzip, producer",
        ("0", "APPEND", "log.retention.ms", "5"):
            "InvalidConfigurationException: Config value append is not allowed for config key: log.retention.ms",
    }
    for args, error in refusals.items():
        assert admin(b, "alter-broker", *args) == {"error": error}, args
    # A list config appends to its default; an unknown name is kept (for plugins) and
    # described as a secret of unknown type.
    assert admin(b, "alter-broker", "", "APPEND", "log.cleanup.policy", "compact") == {"error": None}
    assert admin(b, "alter-broker", "", "SET", "custom.plugin.setting", "1") == {"error": None}
    default = admin(b, "broker-configs", "")["configs"]
    assert default["log.cleanup.policy"]["value"] == "delete,compact"
    assert {k: default["custom.plugin.setting"][k] for k in ("value", "sensitive", "read_only", "type", "source")} == {
        "value": None, "sensitive": True, "read_only": True, "type": "UNKNOWN",
        "source": "DYNAMIC_DEFAULT_BROKER_CONFIG"}

    # Kept across a restart.
    restartable_broker.stop()
    restartable_broker.wait_port_closed()
    restartable_broker.start()
    default = admin(b, "broker-configs", "")["configs"]
    assert {k: v["value"] for k, v in default.items() if k != "min.insync.replicas"} == {
        "message.max.bytes": "2000", "log.retention.ms": "3600000", "log.cleanup.policy": "delete,compact",
        "custom.plugin.setting": None}
    assert produce_one(b, topic, 5000) == KafkaError.MSG_SIZE_TOO_LARGE

    # Deleted: back to the static defaults, for the topics too.
    configs_tool(kafka_libs, b, "--entity-default", "--alter", "--delete-config",
                 "message.max.bytes,log.retention.ms,log.cleanup.policy,custom.plugin.setting")
    configs_tool(kafka_libs, b, "--entity-name", "0", "--alter", "--delete-config", "log.segment.bytes")
    assert set(admin(b, "broker-configs", "")["configs"]) <= {"min.insync.replicas"}
    broker = admin(b, "broker-configs", "0")["configs"]
    assert (broker["message.max.bytes"]["value"], broker["message.max.bytes"]["source"]) == ("1048588", D)
    assert (broker["log.segment.bytes"]["value"], broker["log.segment.bytes"]["source"]) == ("1073741824", D)
    assert produce_one(b, topic, 5000) == 0

    # kafka-python's legacy AlterConfigs (it re-sends the resource's other dynamic
    # configs, as AlterConfigs replaces the whole set) and incremental one.
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource
    a = KafkaAdminClient(bootstrap_servers=b, request_timeout_ms=int(OP_TIMEOUT * 1000))
    try:
        r = a.alter_configs([ConfigResource("BROKER", "0", configs={"log.roll.ms": "7200000"})], incremental=False)
        assert r == {"broker": {"0": "OK"}}
        r = a.alter_configs([ConfigResource("BROKER", "0", configs={"log.segment.bytes": "3145728"})], incremental=False)
        assert r == {"broker": {"0": "OK"}}
        r = a.alter_configs([ConfigResource("BROKER", "0", configs={"message.max.bytes": "3000"})], incremental=True)
        assert r == {"broker": {"0": "OK"}}
        broker = admin(b, "broker-configs", "0")["configs"]
        assert {k: v["value"] for k, v in broker.items() if v["source"] == "DYNAMIC_BROKER_CONFIG"} == {
            "log.roll.ms": "7200000", "log.segment.bytes": "3145728", "message.max.bytes": "3000"}
        assert broker["log.roll.ms"]["synonyms"] == [["log.roll.ms", "7200000", "DYNAMIC_BROKER_CONFIG"],
                                                    ["log.roll.hours", "168", "DEFAULT_CONFIG"]]
    finally:
        a.close()


def _cleaner_threads(pid):
    tasks = Path(f"/proc/{pid}/task")
    return sum(1 for t in tasks.iterdir() if (t / "comm").read_text().startswith("spate-cleaner"))


def _wait(check, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


def test_dynamic_cleaner_and_connection_settings(restartable_broker, kafka_libs, jar):
    """log.cleaner.* and max.connections changed at runtime, as Kafka reconfigures its
    cleaner and connection quotas: the cleaner's thread count follows the config (its
    threads are counted in /proc), a connection over the new max.connections is closed,
    the settings survive a restart and go back when deleted; Kafka's refusal when the key
    maps would get less than 1 MiB per thread."""
    b = restartable_broker.bootstrap
    pid = restartable_broker.proc.pid
    assert _cleaner_threads(pid) == 1
    configs_tool(kafka_libs, b, "--entity-default", "--alter", "--add-config",
                 "log.cleaner.threads=3,log.cleaner.io.max.bytes.per.second=1048576.0,log.cleaner.backoff.ms=1000")
    assert _wait(lambda: _cleaner_threads(pid) == 3), _cleaner_threads(pid)
    broker = admin(b, "broker-configs", "0")["configs"]
    assert (broker["log.cleaner.threads"]["value"], broker["log.cleaner.threads"]["source"],
            broker["log.cleaner.threads"]["read_only"]) == ("3", "DYNAMIC_DEFAULT_BROKER_CONFIG", False)
    assert broker["log.cleaner.io.max.bytes.per.second"]["value"] == "1048576.0"
    # This broker's own value wins over the cluster default.
    configs_tool(kafka_libs, b, "--entity-name", "0", "--alter", "--add-config", "log.cleaner.threads=2")
    assert _wait(lambda: _cleaner_threads(pid) == 2), _cleaner_threads(pid)
    # 128 MiB of key maps cannot serve 200 threads (Kafka: at least 1 MiB each).
    refused = admin(b, "alter-broker", "0", "SET", "log.cleaner.threads", "200")
    assert refused["error"].startswith("InvalidRequestException:"), refused
    assert _cleaner_threads(pid) == 2
    assert admin(b, "alter-broker", "0", "SET", "log.cleaner.threads", "x") == {
        "error": "InvalidRequestException: Invalid value x for configuration log.cleaner.threads: "
                 "Not a number of type INT"}

    # max.connections=2: two connections are taken, the third is closed at once.
    configs_tool(kafka_libs, b, "--entity-name", "0", "--alter", "--add-config", "max.connections=2")
    host, port = b.split(":")
    held = [socket.create_connection((host, int(port)), timeout=5) for _ in range(2)]
    time.sleep(0.5)
    third = socket.create_connection((host, int(port)), timeout=5)
    try:
        assert third.recv(1) == b"", "a connection over max.connections must be closed"
    except ConnectionResetError:
        pass
    finally:
        third.close()
    for s in held:
        s.close()
    time.sleep(0.5)

    # Kept across a restart.
    restartable_broker.stop()
    restartable_broker.wait_port_closed()
    restartable_broker.start()
    pid = restartable_broker.proc.pid
    assert _wait(lambda: _cleaner_threads(pid) == 2), _cleaner_threads(pid)
    configs_tool(kafka_libs, b, "--entity-name", "0", "--alter", "--delete-config", "max.connections,log.cleaner.threads")
    assert _wait(lambda: _cleaner_threads(pid) == 3), _cleaner_threads(pid)
    configs_tool(kafka_libs, b, "--entity-default", "--alter", "--delete-config",
                 "log.cleaner.threads,log.cleaner.io.max.bytes.per.second,log.cleaner.backoff.ms")
    assert _wait(lambda: _cleaner_threads(pid) == 1), _cleaner_threads(pid)
    broker = admin(b, "broker-configs", "0")["configs"]
    assert (broker["log.cleaner.threads"]["value"], broker["log.cleaner.threads"]["source"]) == ("1", D)
    assert (broker["max.connections"]["value"], broker["max.connections"]["source"]) == ("10000", D)
