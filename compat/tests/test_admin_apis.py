"""Admin APIs Kafka 4's tools call: DescribeTopicPartitions (what kafka-topics.sh
--describe calls first, paged by a cursor) and ListConfigResources (KIP-1142), through
Kafka 4.4's CLI, the Java Admin client and raw requests for the exact fields."""
import re

import pytest

from flexraw import FlexClient, describe_topic_partitions, list_config_resources
from kafkautil import JAVA_JAR, create_topic, java_jar, run_json
from test_kafka_cli import kafka_libs, tool  # noqa: F401 (fixture)

ADMIN = ["java", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xmx512m", "-cp", str(JAVA_JAR),
         "dev.spate.compat.AdminScenario"]
UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_TOPIC_EXCEPTION = 17
INVALID_REQUEST = 42
UNSUPPORTED_VERSION = 35
# Every operation of a topic, as Kafka reports it without an authorizer.
TOPIC_OPERATIONS = 3576


@pytest.fixture(scope="module")
def jar():
    java_jar()


@pytest.fixture
def topics(bootstrap, topic_name):
    """Three topics with 3, 2 and 1 partitions, named so that they sort a < b < c."""
    names = [f"{topic_name}-{s}" for s in "abc"]
    for name, n in zip(names, (3, 2, 1)):
        create_topic(bootstrap, name, partitions=n)
    return names


def pages(result):
    got, cursor = result
    return [(t["name"], t["error"], [p["index"] for p in t["partitions"]]) for t in got], cursor


def test_describe_topic_partitions_pages_by_cursor(bootstrap, topics):
    a, b, c = topics
    client = FlexClient(bootstrap)
    try:
        assert pages(describe_topic_partitions(client, [c, b, a], limit=2)) == ([(a, 0, [0, 1])], (a, 2))
        # A topic that fills the page exactly moves the cursor to the next topic's start.
        assert pages(describe_topic_partitions(client, [a, b, c], limit=3, cursor=(a, 2))) == (
            [(a, 0, [2]), (b, 0, [0, 1])], (c, 0))
        assert pages(describe_topic_partitions(client, [a, b, c], limit=3, cursor=(c, 0))) == ([(c, 0, [0])], None)
        # A limit below 1 means 1; a cursor past the last partition gives none.
        assert pages(describe_topic_partitions(client, [b], limit=0)) == ([(b, 0, [0])], (b, 1))
        assert pages(describe_topic_partitions(client, [c], limit=5, cursor=(c, 9))) == ([(c, 0, [])], None)

        got, cursor = describe_topic_partitions(client, [a, f"{c}-missing", "bad name!"], limit=100)
        assert cursor is None
        assert [(t["name"], t["error"], t["partitions"]) for t in got[:2]] == [
            ("bad name!", INVALID_TOPIC_EXCEPTION, []), (a, 0, got[1]["partitions"])]
        assert (got[2]["name"], got[2]["error"], got[2]["partitions"]) == (
            f"{c}-missing", UNKNOWN_TOPIC_OR_PARTITION, [])
        assert got[1]["partitions"][0] == {"error": 0, "index": 0, "leader": 0, "epoch": 0, "replicas": [0],
                                           "isr": [0], "elr": [], "last_known_elr": [], "offline": []}
        assert got[1]["id"].int != 0 and got[1]["internal"] is False
        assert {t["authorized_operations"] for t in got} == {TOPIC_OPERATIONS}

        # The cursor's topic must be requested, its partition not negative: every
        # requested topic gets INVALID_REQUEST.
        for bad in [(f"{c}-missing", 0), (a, -1)]:
            got, cursor = describe_topic_partitions(client, [a, b], limit=10, cursor=bad)
            assert ([(t["name"], t["error"], t["partitions"]) for t in got], cursor) == (
                [(a, INVALID_REQUEST, []), (b, INVALID_REQUEST, [])], None)

        # All topics (an empty list), from a cursor: names at or after it, in order.
        got, _ = describe_topic_partitions(client, [], limit=2000, cursor=(b, 1))
        names = [t["name"] for t in got]
        assert names[:2] == [b, c] and names == sorted(names)
        assert [p["index"] for p in got[0]["partitions"]] == [1]
    finally:
        client.close()


def test_kafka_topics_describe(bootstrap, topics, kafka_libs):
    a = topics[0]
    out = tool(kafka_libs, "TopicCommand", "--bootstrap-server", bootstrap, "--describe", "--topic", a,
               "--partition-size-limit-per-response", 1)
    lines = out.rstrip("\n").splitlines()
    assert re.fullmatch(rf"Topic: {a}\tTopicId: \S+\tPartitionCount: 3\tReplicationFactor: 1\tConfigs: .*",
                        lines[0]), lines[0]
    assert lines[1:] == [f"\tTopic: {a}\tPartition: {p}\tLeader: 0\tReplicas: 0\tIsr: 0\tElr: \tLastKnownElr: "
                         for p in range(3)], out


def test_java_describe_topics_with_paging(bootstrap, topics, jar):
    a, b, c = topics
    out = run_json(ADMIN + [bootstrap, "describe-topics", "2", a, b, c, f"{c}-missing"])
    assert out["errors"] == {f"{c}-missing": "UnknownTopicOrPartitionException: This server does not host this topic-partition."}
    assert {name: [p[0] for p in t["partitions"]] for name, t in out["topics"].items()} == {
        a: [0, 1, 2], b: [0, 1], c: [0]}
    assert all(p[1:] == [0, [0], [0]] for t in out["topics"].values() for p in t["partitions"])
    assert all(t["topic_id_set"] and not t["internal"] for t in out["topics"].values())


def test_list_config_resources(bootstrap, topics, jar):
    out = run_json(ADMIN + [bootstrap, "list-config-resources", "BROKER", "BROKER_LOGGER"])
    assert out == {"resources": [["BROKER", "0"], ["BROKER_LOGGER", "0"]], "error": None}
    out = run_json(ADMIN + [bootstrap, "list-config-resources"])
    assert out["error"] is None
    listed = {tuple(r) for r in out["resources"]}
    assert {("BROKER", "0"), ("BROKER_LOGGER", "0")} | {("TOPIC", t) for t in topics} <= listed
    assert {r[0] for r in listed} == {"BROKER", "BROKER_LOGGER", "TOPIC"}
    out = run_json(ADMIN + [bootstrap, "list-config-resources", "UNKNOWN"])
    assert out == {"error": "UnsupportedVersionException: The version of API is not supported."}

    client = FlexClient(bootstrap)
    try:
        # Kafka's order: groups, client metrics, broker loggers, brokers, topics.
        error, resources = list_config_resources(client, 1, [2, 4, 8, 16, 32])
        assert error == 0 and resources[:2] == [(8, "0"), (4, "0")]
        assert {(2, t) for t in topics} <= set(resources[2:]) and {k for k, _ in resources[2:]} == {2}
        # Version 0 is ListClientMetricsResources: client-metrics subscriptions only.
        assert list_config_resources(client, 0) == (0, [])
        assert list_config_resources(client, 1, [2, 3]) == (UNSUPPORTED_VERSION, [])
    finally:
        client.close()
