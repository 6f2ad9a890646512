"""Kafka's own command-line tools (the classes behind kafka-topics.sh, kafka-configs.sh,
kafka-console-producer/consumer.sh, kafka-consumer-groups.sh, kafka-get-offsets.sh,
kafka-delete-records.sh, kafka-log-dirs.sh and kafka-broker-api-versions.sh), run from
the Apache Kafka jars that compat/reference/pom.xml pulls from Maven Central."""
import json
import re
import subprocess
import time
import uuid

import pytest

from conftest import COMPAT, ROOT
from kafkautil import kafka_partition

LIBS = ROOT / "target" / "compat" / "kafka-libs"
TOOLS = "org.apache.kafka.tools."
TOOL_TIMEOUT = 90


@pytest.fixture(scope="session")
def kafka_libs():
    """The Kafka jars (fetched once with Maven, as compat/reference-kafka.sh does)."""
    if not (LIBS / ".complete").exists():
        LIBS.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mvn", "-q", "-B", "dependency:copy-dependencies", f"-DoutputDirectory={LIBS}"],
                       cwd=COMPAT / "reference", check=True, timeout=900)
        (LIBS / ".complete").touch()
    return LIBS


def tool(libs, cls, *args, stdin=None, check=True):
    """Run one Kafka tool class; returns its stdout."""
    cmd = ["java", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp", f"{libs}/*", TOOLS + cls, *map(str, args)]
    r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    if check and r.returncode != 0:
        raise AssertionError(f"{cls} {args} exited {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")
    return r.stdout


def test_topics_configs_and_offsets_tools(bootstrap, topic_name, kafka_libs, tmp_path):
    b = ["--bootstrap-server", bootstrap]
    tool(kafka_libs, "TopicCommand", *b, "--create", "--topic", topic_name, "--partitions", 3,
         "--replication-factor", 1, "--config", "retention.ms=3600000")
    assert topic_name in tool(kafka_libs, "TopicCommand", *b, "--list").split()
    described = tool(kafka_libs, "TopicCommand", *b, "--describe", "--topic", topic_name)
    assert re.search(r"PartitionCount:\s*3\b", described), described
    assert "retention.ms=3600000" in described
    # One replica per partition, led by the broker that holds it (node 0 alone on one node).
    assert len(re.findall(r"Partition:\s*\d+\s+Leader:\s*(\d+)\s+Replicas:\s*\1\s+Isr:\s*\1\b", described)) == 3, described

    tool(kafka_libs, "TopicCommand", *b, "--alter", "--topic", topic_name, "--partitions", 4)
    assert re.search(r"PartitionCount:\s*4\b", tool(kafka_libs, "TopicCommand", *b, "--describe", "--topic", topic_name))

    tool(kafka_libs, "ConfigCommand", *b, "--entity-type", "topics", "--entity-name", topic_name,
         "--alter", "--add-config", "retention.ms=5000,max.message.bytes=2000000")
    configs = tool(kafka_libs, "ConfigCommand", *b, "--entity-type", "topics", "--entity-name", topic_name, "--describe")
    assert "retention.ms=5000" in configs and "max.message.bytes=2000000" in configs, configs
    tool(kafka_libs, "ConfigCommand", *b, "--entity-type", "topics", "--entity-name", topic_name,
         "--alter", "--delete-config", "max.message.bytes")
    configs = tool(kafka_libs, "ConfigCommand", *b, "--entity-type", "topics", "--entity-name", topic_name, "--describe")
    assert "max.message.bytes=2000000" not in configs, configs

    # 30 keyed records into partition 0..3 by the console producer, then exact offsets.
    lines = "".join(f"k{i}:v{i}\n" for i in range(30))
    tool(kafka_libs, "ConsoleProducer", *b, "--topic", topic_name, "--property", "parse.key=true",
         "--property", "key.separator=:", stdin=lines)
    ends = tool(kafka_libs, "GetOffsetShell", *b, "--topic", topic_name)
    per_partition = {int(p): int(o) for t, p, o in (l.split(":") for l in ends.split()) if t == topic_name}
    assert sorted(per_partition) == [0, 1, 2, 3] and sum(per_partition.values()) == 30, ends

    # Delete the records of partition 0 below its end; its earliest offset moves there.
    spec = tmp_path / "delete.json"
    spec.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": topic_name, "partition": 0, "offset": per_partition[0]}]}))
    tool(kafka_libs, "DeleteRecordsCommand", *b, "--offset-json-file", spec)
    earliest = tool(kafka_libs, "GetOffsetShell", *b, "--topic", topic_name, "--partitions", "0", "--time", "-2")
    assert earliest.split() == [f"{topic_name}:0:{per_partition[0]}"], earliest

    dirs = tool(kafka_libs, "LogDirsCommand", *b, "--describe", "--topic-list", topic_name)
    report = json.loads(next(l for l in dirs.splitlines() if l.startswith("{")))
    parts = [p for broker in report["brokers"] for d in broker["logDirs"] for p in d["partitions"]]
    assert sorted(p["partition"] for p in parts) == [f"{topic_name}-{i}" for i in range(4)], parts

    tool(kafka_libs, "TopicCommand", *b, "--delete", "--topic", topic_name)
    assert topic_name not in tool(kafka_libs, "TopicCommand", *b, "--list").split()


def test_console_consumer_group_and_lag(bootstrap, topic_name, kafka_libs):
    b = ["--bootstrap-server", bootstrap]
    group = f"cli-{uuid.uuid4().hex[:8]}"
    tool(kafka_libs, "TopicCommand", *b, "--create", "--topic", topic_name, "--partitions", 2)
    # Keyed so that each partition gets 10: reading 12 takes both (in a cluster they may
    # be led by different brokers, and a partition never fetched has no position to commit).
    keys = [k for k in (f"k{i}" for i in range(200)) if kafka_partition(k.encode(), 2) == 0][:10]
    keys += [k for k in (f"k{i}" for i in range(200)) if kafka_partition(k.encode(), 2) == 1][:10]
    tool(kafka_libs, "ConsoleProducer", *b, "--topic", topic_name, "--property", "parse.key=true",
         "--property", "key.separator=:", stdin="".join(f"{k}:m{i}\n" for i, k in enumerate(keys)))
    # The console consumer reads 12 of the 20 in a group and commits what it read.
    out = tool(kafka_libs, "consumer.ConsoleConsumer", *b, "--topic", topic_name, "--group", group,
               "--from-beginning", "--max-messages", 12, "--timeout-ms", 30000)
    got = out.split()
    assert len(got) == 12 and len(set(got)) == 12 and set(got) <= {f"m{i}" for i in range(20)}, out

    assert group in tool(kafka_libs, "consumer.group.ConsumerGroupCommand", *b, "--list").split()
    described = tool(kafka_libs, "consumer.group.ConsumerGroupCommand", *b, "--describe", "--group", group)
    rows = [l.split() for l in described.splitlines() if l.startswith(group)]
    # GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG ...
    table = {int(r[2]): (int(r[3]), int(r[4]), int(r[5])) for r in rows if r[1] == topic_name}
    assert sorted(table) == [0, 1], described
    assert sum(end for _, end, _ in table.values()) == 20
    assert all(lag == end - cur for cur, end, lag in table.values())
    assert sum(cur for cur, _, _ in table.values()) >= 12

    # Reset to the earliest offsets, then the lag is the whole topic.
    tool(kafka_libs, "consumer.group.ConsumerGroupCommand", *b, "--reset-offsets", "--group", group,
         "--topic", topic_name, "--to-earliest", "--execute")
    described = tool(kafka_libs, "consumer.group.ConsumerGroupCommand", *b, "--describe", "--group", group)
    lags = [int(l.split()[5]) for l in described.splitlines() if l.startswith(group) and topic_name in l]
    assert sum(lags) == 20, described

    tool(kafka_libs, "consumer.group.ConsumerGroupCommand", *b, "--delete", "--group", group)
    assert group not in tool(kafka_libs, "consumer.group.ConsumerGroupCommand", *b, "--list").split()


def test_broker_api_versions(bootstrap, kafka_libs):
    out = tool(kafka_libs, "BrokerApiVersionsCommand", "--bootstrap-server", bootstrap)
    assert "Produce(0): 3 to 13 [usable: 13]" in out, out   # as Kafka 4.4 (KIP-896 dropped v0-2)
    assert "Fetch(1)" in out and "JoinGroup(11)" in out
    assert "EndTxn(26): 0 to 5" in out, out
    # Anything the broker does not serve is listed as unsupported.
    assert "ElectLeaders(43): 0 to 2" in out, out


def test_broker_loggers_described_and_changed_at_runtime(bootstrap, session_broker, kafka_libs):
    """kafka-configs.sh --entity-type broker-loggers: every logger with its level,
    levels changed and reset at runtime, Kafka's errors for unknown loggers, bad levels
    and the root logger's removal. (Loggers are the broker's own names: log4j classes on
    Kafka, `tracing` targets on Spate; the test picks one that exists.)"""
    b = ["--bootstrap-server", bootstrap, "--entity-type", "broker-loggers", "--entity-name", "0"]

    def levels():
        out = tool(kafka_libs, "ConfigCommand", *b, "--describe")
        found = dict(re.findall(r"^\s+(\S+)=(\w+) sensitive=false", out, re.M))
        assert "root" in found, out
        return found

    before = levels()
    root = before["root"]
    logger = "spate.conn" if "spate.conn" in before else next(n for n in sorted(before) if n != "root")
    quieter = "DEBUG" if root != "DEBUG" else "TRACE"
    tool(kafka_libs, "ConfigCommand", *b, "--alter", "--add-config", f"{logger}={quieter}")
    assert levels()[logger] == quieter
    if session_broker is not None and logger == "spate.conn":
        # The new level is in effect: connections are logged at DEBUG now.
        deadline = time.monotonic() + 10
        while b"connection opened" not in session_broker.log_path.read_bytes() and time.monotonic() < deadline:
            tool(kafka_libs, "ConfigCommand", *b, "--describe")
        assert b"connection opened" in session_broker.log_path.read_bytes()
    tool(kafka_libs, "ConfigCommand", *b, "--alter", "--delete-config", logger)
    assert levels()[logger] == root

    failed = subprocess.run(
        ["java", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp", f"{kafka_libs}/*", TOOLS + "ConfigCommand", *b,
         "--alter", "--add-config", "no.such.logger.x=DEBUG"], capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    # kafka-configs.sh checks the name against the described loggers first.
    assert failed.returncode != 0 and "Invalid broker logger(s): no.such.logger.x" in failed.stderr, failed
    failed = subprocess.run(
        ["java", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp", f"{kafka_libs}/*", TOOLS + "ConfigCommand", *b,
         "--alter", "--add-config", f"{logger}=LOUD"], capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    assert failed.returncode != 0 and "not a supported log level" in failed.stdout + failed.stderr, failed
    failed = subprocess.run(
        ["java", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-cp", f"{kafka_libs}/*", TOOLS + "ConfigCommand", *b,
         "--alter", "--delete-config", "root"], capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    assert failed.returncode != 0 and "Removing the log level of the root logger is not allowed" in \
        failed.stdout + failed.stderr, failed
    assert levels() == before
