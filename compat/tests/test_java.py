"""Java kafka-clients (the reference client) against the broker, via compat/java."""

import pytest

from kafkautil import JAVA_JAR as JAR, brokers_of, java_jar, kafka_partition, run_json

JVM = ["java", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xmx512m", "-jar", str(JAR)]


@pytest.fixture(scope="module")
def java():
    java_jar()
    return JVM


def expected(codec, parts, count):
    by_part = {}
    for i in range(count):
        hs = [["h", str(i)]] + ([["nul", None]] if i % 5 == 0 else [])
        lst = by_part.setdefault(i % parts, [])
        lst.append({"partition": i % parts, "offset": len(lst),
                    "key": None if i % 8 == 0 else f"j{i}",
                    "value": None if i % 13 == 6 else f"java-{codec}-{i}", "headers": hs})
    return [r for p in sorted(by_part) for r in by_part[p]]


def strip(records):
    return [{k: r[k] for k in ("partition", "offset", "key", "value", "headers")}
            for r in records]


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_produce_consume_codec(bootstrap, topic_name, java, codec):
    res = run_json([*java, bootstrap, "produce", topic_name, codec, "all", "false", "3", "240"])
    per = {}
    for p in res["produced"]:
        assert p["error"] is None
        per.setdefault(p["partition"], []).append(p["offset"])
    assert per == {p: list(range(80)) for p in range(3)}
    assert strip(res["records"]) == expected(codec, 3, 240)
    assert {r["timestamp_type"] for r in res["records"]} == {"CreateTime"}


@pytest.mark.parametrize("acks", ["0", "1"])
def test_acks(bootstrap, topic_name, java, acks):
    res = run_json([*java, bootstrap, "produce", topic_name, "gzip", acks, "false", "1", "100"])
    offsets = [p["offset"] for p in res["produced"]]
    # With acks=0 the Java producer reports no offset (-1).
    assert offsets == ([-1] * 100 if acks == "0" else list(range(100)))
    assert strip(res["records"]) == expected("gzip", 1, 100)


def test_idempotent_producer_default(bootstrap, topic_name, java):
    """Java's default producer is idempotent (enable.idempotence=true, acks=all): this
    needs InitProducerId and the broker's sequence checks."""
    res = run_json([*java, bootstrap, "produce", topic_name, "lz4", "all", "default", "2", "100"])
    assert [p["error"] for p in res["produced"]] == [None] * 100
    assert strip(res["records"]) == expected("lz4", 2, 100)


def test_keyed_32_partitions(bootstrap, topic_name, java):
    res = run_json([*java, bootstrap, "keyed", topic_name, "32", "1500"], timeout=150)
    want = {}
    for i in range(1500):
        key = f"key-{i % 101}"
        want.setdefault(kafka_partition(key.encode(), 32), []).append((key, str(i)))
    got = {}
    for r in res["records"]:
        got.setdefault(r["partition"], []).append((r["offset"], r["key"], r["value"]))
    assert got == {p: [(o, k, v) for o, (k, v) in enumerate(rs)] for p, rs in want.items()}


def test_record_too_large(bootstrap, topic_name, java):
    res = run_json([*java, bootstrap, "too-large", topic_name])
    assert res == {"ok_offset": 0, "big": {"exception": "RecordTooLargeException"}, "end": 1}


def test_admin(bootstrap, topic_name, java):
    r = run_json([*java, bootstrap, "admin", topic_name], timeout=150)
    D, T = "DEFAULT_CONFIG", "DYNAMIC_TOPIC_CONFIG"
    assert r["create_again"] == {"exception": "TopicExistsException"}
    assert r["configs_created"] == {
        "cleanup.policy": ["delete", D, True], "compression.type": ["producer", T, False],
        "max.message.bytes": ["1048588", D, True], "message.timestamp.type": ["CreateTime", D, True],
        "retention.ms": ["123456789", T, False], "segment.bytes": ["1073741824", D, True]}
    assert r["configs_altered"] == {
        "cleanup.policy": ["delete", D, True], "compression.type": ["producer", T, False],
        "max.message.bytes": ["2000000", T, False], "message.timestamp.type": ["CreateTime", D, True],
        "retention.ms": ["604800000", D, True], "segment.bytes": ["1073741824", D, True]}
    assert r["alter_invalid"] == {"exception": "InvalidConfigurationException"}
    brokers = brokers_of(bootstrap)
    assert r["cluster_id_present"] is True
    assert r["controller"] in [b[0] for b in brokers]
    assert sorted(tuple(n) for n in r["nodes"]) == brokers
    assert r["create_partitions_same"] == {"exception": "InvalidPartitionsException"}
    assert r["produced"] == [[p, i] for p in range(3) for i in range(10)]
    base = 1_500_000_000_000
    assert r["list_offsets"] == {
        "earliest": [0, -1], "latest": [10, -1], "ts_2500": [3, base + 3000],
        "ts_after_all": [-1, -1], "max_timestamp": [6, base + 1_000_000]}
    assert r["delete_records_low"] == 4
    assert r["earliest_after_delete"] == 4
    # offsetsForTimes on partition 2 (records 0-3 deleted) answers the new start.
    assert r["offsets_for_times"] == [[3, base + 3000], [4, base + 4000]]
    assert r["beginning"] == {"0": 0, "1": 0, "2": 4}
    assert r["end"] == {"0": 10, "1": 10, "2": 10}
    assert r["partition2"] == [[i, f"2:{i}", base + (1_000_000 if i == 6 else 1000 * i)]
                               for i in range(4, 10)]
    assert r["log_dirs"] == 1
    assert sorted(r["log_dir_sizes"]) == ["0", "1", "2"]
    assert all(v > 0 for v in r["log_dir_sizes"].values())
    assert r["listed_after_delete"] is False
    assert r["delete_again"] == {"exception": "UnknownTopicOrPartitionException"}


def test_topic_ids(bootstrap, topic_name, java):
    r = run_json([*java, bootstrap, "topic-ids", topic_name])
    assert r == {"created_id_nonzero": True, "created_partitions": 3, "same_id_by_name": True,
                 "by_id": [topic_name, 3, False], "produced_offset": 0,
                 "delete_by_id": None, "listed_after_delete": False,
                 "describe_deleted_id": {"exception": "UnknownTopicIdException"}}
