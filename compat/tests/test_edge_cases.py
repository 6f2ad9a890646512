"""Broker-side rules that a Kafka operator relies on, checked with confluent-kafka
(librdkafka) unless noted: error codes for bad admin requests, timestamp handling,
compressed batches far larger than max.message.bytes once
decompressed, DeleteRecords to the high watermark."""
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import ConfigResource, NewTopic, OffsetSpec

from kafkautil import OP_TIMEOUT, admin, consume, create_topic, produce, watermarks


def _create_error(bootstrap, topic):
    a = admin(bootstrap)
    fs = a.create_topics([topic], operation_timeout=OP_TIMEOUT, request_timeout=OP_TIMEOUT)
    with pytest.raises(KafkaException) as ei:
        fs[topic.topic].result(OP_TIMEOUT)
    return ei.value.args[0].code()


def test_describe_configs_core_defaults(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 1)
    a = admin(bootstrap)
    res = ConfigResource(ConfigResource.Type.TOPIC, topic_name)
    cfg = a.describe_configs([res], request_timeout=OP_TIMEOUT)[res].result(OP_TIMEOUT)
    want = {
        "cleanup.policy": "delete", "compression.type": "producer",
        "flush.messages": "9223372036854775807", "flush.ms": "9223372036854775807",
        "index.interval.bytes": "4096", "max.message.bytes": "1048588",
        "message.timestamp.type": "CreateTime", "min.insync.replicas": "1",
        "retention.bytes": "-1", "retention.ms": "604800000",
        "segment.bytes": "1073741824", "segment.ms": "604800000",
    }
    assert {k: cfg[k].value if k in cfg else None for k in want} == want
    assert not any(cfg[k].is_sensitive or cfg[k].is_read_only for k in want)


def test_describe_configs_full_topic_set(bootstrap, topic_name):
    """The other topic configs Kafka describes (tools such as kafka-configs, AKHQ and
    Terraform providers read them), with Kafka's defaults. Tiered-storage (remote.*,
    local.*) and 4.x-only experimental keys are left out."""
    create_topic(bootstrap, topic_name, 1)
    a = admin(bootstrap)
    res = ConfigResource(ConfigResource.Type.TOPIC, topic_name)
    cfg = a.describe_configs([res], request_timeout=OP_TIMEOUT)[res].result(OP_TIMEOUT)
    want = {
        "compression.gzip.level": "-1", "compression.lz4.level": "9",
        "compression.zstd.level": "3", "delete.retention.ms": "86400000",
        "file.delete.delay.ms": "60000", "follower.replication.throttled.replicas": "",
        "leader.replication.throttled.replicas": "",
        "max.compaction.lag.ms": "9223372036854775807",
        "message.timestamp.after.max.ms": "3600000",
        "message.timestamp.before.max.ms": "9223372036854775807",
        "min.cleanable.dirty.ratio": "0.5", "min.compaction.lag.ms": "0",
        "preallocate": "false", "segment.index.bytes": "10485760", "segment.jitter.ms": "0",
        "unclean.leader.election.enable": "false",
    }
    assert {k: cfg[k].value if k in cfg else None for k in want} == want


def test_default_rejects_timestamp_two_hours_ahead(bootstrap, topic_name):
    """Kafka 4's default message.timestamp.after.max.ms is one hour."""
    create_topic(bootstrap, topic_name, 1)
    now = int(time.time() * 1000)
    r = produce(bootstrap, topic_name, [{"value": b"future", "timestamp": now + 2 * 3600_000}],
                {"acks": "all", "retries": 0})
    assert r[0][0] is not None and r[0][0].code() == KafkaError.INVALID_TIMESTAMP, r[0][0]
    r = produce(bootstrap, topic_name, [{"value": b"ancient", "timestamp": 1000}],
                {"acks": "all"})
    assert [(e, o) for e, _, o, _, _ in r] == [(None, 0)]


@pytest.mark.parametrize("case", ["bad-value", "unknown-key", "zero-partitions",
                                  "replication-3", "bad-name"])
def test_create_topic_errors(bootstrap, topic_name, case):
    if case == "bad-value":
        t, code = NewTopic(topic_name, 1, 1, config={"retention.ms": "soon"}), \
            KafkaError.INVALID_CONFIG
    elif case == "unknown-key":
        t, code = NewTopic(topic_name, 1, 1, config={"no.such.topic.config": "1"}), \
            KafkaError.INVALID_CONFIG
    elif case == "zero-partitions":
        t, code = NewTopic(topic_name, 0, 1), KafkaError.INVALID_PARTITIONS
    elif case == "replication-3":
        t, code = NewTopic(topic_name, 1, 3), KafkaError.INVALID_REPLICATION_FACTOR
    else:
        t, code = NewTopic(topic_name + "/x", 1, 1), KafkaError.TOPIC_EXCEPTION
    assert _create_error(bootstrap, t) == code
    # Nothing was created.
    md = admin(bootstrap).list_topics(timeout=OP_TIMEOUT)
    assert t.topic not in md.topics or md.topics[t.topic].error is not None


# Kafka 4.4's minimums (LogConfig's ConfigDef): (config, below the minimum, the minimum).
CONFIG_MINIMUMS = [
    ("segment.bytes", "16384", "1048576"),
    ("segment.bytes", "1048575", "1048576"),
    ("segment.ms", "0", "1"),
    ("segment.index.bytes", "3", "4"),
    ("index.interval.bytes", "-1", "0"),
    ("max.message.bytes", "-1", "0"),
    ("retention.ms", "-2", "-1"),
    ("min.insync.replicas", "0", "1"),
    ("flush.messages", "0", "1"),
    ("flush.ms", "-1", "0"),
    ("message.timestamp.after.max.ms", "-1", "0"),
    ("message.timestamp.before.max.ms", "-1", "0"),
]


@pytest.mark.parametrize("name,below,minimum", CONFIG_MINIMUMS)
def test_config_minimums_create(bootstrap, topic_name, name, below, minimum):
    """CreateTopics refuses a value below Kafka's minimum with INVALID_CONFIG and
    Kafka's message, and accepts the minimum itself."""
    a = admin(bootstrap)
    fs = a.create_topics([NewTopic(topic_name, 1, 1, config={name: below})],
                         operation_timeout=OP_TIMEOUT, request_timeout=OP_TIMEOUT)
    with pytest.raises(KafkaException) as ei:
        fs[topic_name].result(OP_TIMEOUT)
    err = ei.value.args[0]
    assert err.code() == KafkaError.INVALID_CONFIG
    assert err.str() == (f"Invalid value {below} for configuration {name}: "
                         f"Value must be at least {minimum}"), err.str()
    fs = a.create_topics([NewTopic(topic_name, 1, 1, config={name: minimum})],
                         operation_timeout=OP_TIMEOUT, request_timeout=OP_TIMEOUT)
    fs[topic_name].result(OP_TIMEOUT)
    res = ConfigResource(ConfigResource.Type.TOPIC, topic_name)
    deadline = time.monotonic() + OP_TIMEOUT
    while True:   # Kafka may not know the new topic on this path for a moment
        try:
            cfg = a.describe_configs([res], request_timeout=OP_TIMEOUT)[res].result(OP_TIMEOUT)
            break
        except KafkaException as e:
            if e.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert cfg[name].value == minimum


def test_config_minimums_alter(bootstrap, topic_name):
    """AlterConfigs and IncrementalAlterConfigs refuse segment.bytes below 1 MiB
    (Kafka 4.0+, KIP-1030) and leave the topic as it was; 1 MiB is accepted."""
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry
    create_topic(bootstrap, topic_name, 1)
    a = admin(bootstrap)
    want = ("Invalid value 16384 for configuration segment.bytes: "
            "Value must be at least 1048576")
    inc = ConfigResource(ConfigResource.Type.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("segment.bytes", "16384", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as ei:
        a.incremental_alter_configs([inc], request_timeout=OP_TIMEOUT)[inc].result(OP_TIMEOUT)
    assert ei.value.args[0].code() == KafkaError.INVALID_CONFIG
    assert ei.value.args[0].str() == want
    legacy = ConfigResource(ConfigResource.Type.TOPIC, topic_name, set_config={"segment.bytes": "16384"})
    with pytest.warns(DeprecationWarning), pytest.raises(KafkaException) as ei:
        a.alter_configs([legacy], request_timeout=OP_TIMEOUT)[legacy].result(OP_TIMEOUT)
    assert ei.value.args[0].code() == KafkaError.INVALID_CONFIG
    assert ei.value.args[0].str() == want
    res = ConfigResource(ConfigResource.Type.TOPIC, topic_name)
    cfg = a.describe_configs([res], request_timeout=OP_TIMEOUT)[res].result(OP_TIMEOUT)
    assert cfg["segment.bytes"].value == "1073741824" and cfg["segment.bytes"].is_default
    inc = ConfigResource(ConfigResource.Type.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("segment.bytes", "1048576", incremental_operation=AlterConfigOpType.SET)])
    a.incremental_alter_configs([inc], request_timeout=OP_TIMEOUT)[inc].result(OP_TIMEOUT)
    cfg = a.describe_configs([res], request_timeout=OP_TIMEOUT)[res].result(OP_TIMEOUT)
    assert cfg["segment.bytes"].value == "1048576"


def test_log_append_time(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 1, {"message.timestamp.type": "LogAppendTime"})
    before = int(time.time() * 1000)
    recs = [{"value": f"l{i}".encode(), "timestamp": 1_000_000_000_000 + i} for i in range(20)]
    produce(bootstrap, topic_name, recs, {"acks": "all", "compression.type": "lz4",
                                          "linger.ms": 20})
    after = int(time.time() * 1000)
    got = consume(bootstrap, topic_name, 0, 20)
    assert [(m["offset"], m["value"]) for m in got] == [(i, f"l{i}".encode()) for i in range(20)]
    assert {m["timestamp_type"] for m in got} == {2}  # TIMESTAMP_LOG_APPEND_TIME
    assert all(before - 1000 <= m["timestamp"] <= after + 1000 for m in got), \
        [m["timestamp"] for m in got]


def test_timestamp_bounds(bootstrap, topic_name):
    """message.timestamp.after.max.ms / before.max.ms reject CreateTime timestamps too far
    from the broker's clock with INVALID_TIMESTAMP."""
    create_topic(bootstrap, topic_name, 1, {"message.timestamp.after.max.ms": "3600000",
                                            "message.timestamp.before.max.ms": "86400000"})
    now = int(time.time() * 1000)
    for ts in (now + 2 * 3600_000, now - 2 * 86400_000):
        r = produce(bootstrap, topic_name, [{"value": b"bad", "timestamp": ts}],
                    {"acks": "all", "retries": 0})
        assert r[0][0] is not None and r[0][0].code() == KafkaError.INVALID_TIMESTAMP, r[0][0]
    r = produce(bootstrap, topic_name, [{"value": b"now", "timestamp": now}], {"acks": "all"})
    assert [(e, o) for e, _, o, _, _ in r] == [(None, 0)]
    assert watermarks(bootstrap, topic_name, 0) == (0, 1)


@pytest.mark.parametrize("codec", ["gzip", "zstd", "lz4", "snappy"])
def test_compressed_batch_bigger_than_limit_uncompressed(bootstrap, topic_name, codec):
    """max.message.bytes applies to the batch as sent (compressed): 3 MiB of zeros
    compresses far below 1 MiB and must be accepted and read back whole."""
    create_topic(bootstrap, topic_name, 1)
    value = bytes(3 * 1024 * 1024)
    recs = [{"key": b"big", "value": value}, {"key": b"small", "value": b"s"}]
    r = produce(bootstrap, topic_name, recs,
                {"compression.type": codec, "message.max.bytes": 8 * 1024 * 1024,
                 "acks": "all", "linger.ms": 50})
    assert [(e, o) for e, _, o, _, _ in r] == [(None, 0), (None, 1)]
    got = consume(bootstrap, topic_name, 0, 2,
                  conf={"fetch.message.max.bytes": 8 * 1024 * 1024,
                        "receive.message.max.bytes": 64 * 1024 * 1024})
    assert [(m["key"], m["value"]) for m in got] == [(b"big", value), (b"small", b"s")]


def test_delete_records_to_high_watermark(bootstrap, topic_name):
    """DeleteRecords with offset -1 deletes up to the high watermark."""
    create_topic(bootstrap, topic_name, 1)
    produce(bootstrap, topic_name, [{"value": f"{i}".encode()} for i in range(25)],
            {"acks": "all"})
    a = admin(bootstrap)
    tp = TopicPartition(topic_name, 0, -1)
    res = a.delete_records([tp], request_timeout=OP_TIMEOUT)[tp].result(OP_TIMEOUT)
    assert res.low_watermark == 25
    assert watermarks(bootstrap, topic_name, 0) == (25, 25)
    r = produce(bootstrap, topic_name, [{"value": b"next"}], {"acks": "all"})
    assert [(e, o) for e, _, o, _, _ in r] == [(None, 25)]
    got = consume(bootstrap, topic_name, 0, 1, start=25)
    assert [(m["offset"], m["value"]) for m in got] == [(25, b"next")]


def test_idempotent_librdkafka_producer(bootstrap, topic_name):
    """librdkafka's idempotent producer (InitProducerId, sequence numbers)."""
    create_topic(bootstrap, topic_name, 3)
    recs = [{"key": f"i{i}".encode(), "value": f"idem-{i}".encode(), "partition": i % 3}
            for i in range(600)]
    r = produce(bootstrap, topic_name, recs,
                {"enable.idempotence": True, "acks": "all", "compression.type": "zstd",
                 "max.in.flight.requests.per.connection": 5})
    assert all(e is None for e, *_ in r)
    for p in range(3):
        got = consume(bootstrap, topic_name, p, 200)
        assert [(m["offset"], m["value"]) for m in got] == \
            [(n, f"idem-{i}".encode()) for n, i in enumerate(range(p, 600, 3))]


def test_delete_and_recreate_same_name(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 2)
    produce(bootstrap, topic_name, [{"value": f"old{i}".encode(), "partition": i % 2}
                                    for i in range(10)], {"acks": "all"})
    a = admin(bootstrap)
    a.delete_topics([topic_name], request_timeout=OP_TIMEOUT)[topic_name].result(OP_TIMEOUT)
    deadline = time.monotonic() + OP_TIMEOUT
    while True:
        try:
            create_topic(bootstrap, topic_name, 1)
            break
        except KafkaException as e:
            # Kafka may still be deleting it for a moment.
            if time.monotonic() > deadline or e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
            time.sleep(0.2)
    assert watermarks(bootstrap, topic_name, 0) == (0, 0)
    r = produce(bootstrap, topic_name, [{"value": b"new"}], {"acks": "all"})
    assert [(e, p, o) for e, p, o, _, _ in r] == [(None, 0, 0)]
    assert [m["value"] for m in consume(bootstrap, topic_name, 0, 1)] == [b"new"]


def test_concurrent_producers_one_partition(bootstrap, topic_name):
    """Several connections (likely on different shards) append to the same partitions:
    offsets are dense, nothing is lost, each producer's order is kept."""
    import threading
    create_topic(bootstrap, topic_name, 2)
    n_prod, n = 4, 400
    errors = []

    def run(pid):
        try:
            recs = [{"key": f"p{pid}".encode(), "value": f"p{pid}-{i}".encode(),
                     "partition": i % 2} for i in range(n)]
            r = produce(bootstrap, topic_name, recs, {"acks": "all", "linger.ms": 1,
                                                      "batch.num.messages": 7})
            errors.extend(e for e, *_ in r if e is not None)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(n_prod)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(OP_TIMEOUT * 2)
    assert not errors, errors[:3]
    for part in (0, 1):
        got = consume(bootstrap, topic_name, part, n_prod * n // 2)
        assert [m["offset"] for m in got] == list(range(n_prod * n // 2))
        for pid in range(n_prod):
            mine = [m["value"] for m in got if m["key"] == f"p{pid}".encode()]
            assert mine == [f"p{pid}-{i}".encode() for i in range(part, n, 2)]


def test_topic_compression_type_recompresses(bootstrap, topic_name):
    """compression.type=gzip on the topic: the broker stores gzip batches whatever the
    producer sent (visible as a much smaller log), and consumers read the records."""
    from kafka import KafkaAdminClient
    gz, plain = topic_name + "-gz", topic_name + "-plain"
    create_topic(bootstrap, gz, 1, {"compression.type": "gzip"})
    create_topic(bootstrap, plain, 1)
    recs = [{"key": b"k", "value": b"compressible " * 40} for _ in range(300)]
    for t in (gz, plain):
        produce(bootstrap, t, recs, {"acks": "all", "compression.type": "none",
                                     "linger.ms": 20})
    a = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=OP_TIMEOUT * 1000)
    try:
        sizes = {}
        for d in a.describe_log_dirs():
            for ld in d["log_dirs"]:
                for t in ld["topics"]:
                    if t["name"] in (gz, plain):
                        sizes[t["name"]] = sum(p["partition_size"] for p in t["partitions"])
    finally:
        a.close()
    assert sizes[plain] > 300 * 520
    assert sizes[gz] * 5 < sizes[plain], sizes
    got = consume(bootstrap, gz, 0, 300)
    assert [(m["offset"], m["value"]) for m in got] == \
        [(i, b"compressible " * 40) for i in range(300)]


def test_validate_only_changes_nothing(bootstrap, topic_name):
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry
    a = admin(bootstrap)
    fs = a.create_topics([NewTopic(topic_name, 3, 1)], validate_only=True,
                         request_timeout=OP_TIMEOUT)
    fs[topic_name].result(OP_TIMEOUT)
    time.sleep(0.5)
    assert topic_name not in a.list_topics(timeout=OP_TIMEOUT).topics
    create_topic(bootstrap, topic_name, 1)
    res = ConfigResource(ConfigResource.Type.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)])
    a.incremental_alter_configs([res], validate_only=True,
                                request_timeout=OP_TIMEOUT)[res].result(OP_TIMEOUT)
    res = ConfigResource(ConfigResource.Type.TOPIC, topic_name)
    cfg = a.describe_configs([res], request_timeout=OP_TIMEOUT)[res].result(OP_TIMEOUT)
    assert (cfg["retention.ms"].value, cfg["retention.ms"].is_default) == ("604800000", True)


def test_describe_broker_configs(bootstrap):
    """kafka-configs --describe --entity-type brokers: core broker defaults."""
    a = admin(bootstrap)
    res = ConfigResource(ConfigResource.Type.BROKER, "0")
    cfg = a.describe_configs([res], request_timeout=OP_TIMEOUT)[res].result(OP_TIMEOUT)
    want = {"message.max.bytes": "1048588", "num.partitions": "1",
            "auto.create.topics.enable": "true", "log.retention.hours": "168",
            "log.segment.bytes": "1073741824", "compression.type": "producer",
            "log.cleanup.policy": "delete", "default.replication.factor": "1"}
    assert {k: cfg[k].value if k in cfg else None for k in want} == want


def test_small_fetch_limits_across_partitions(bootstrap, topic_name):
    """Tiny fetch.max.bytes / max.partition.fetch.bytes over 8 partitions: every fetch
    still returns at least one batch and every partition makes progress."""
    from confluent_kafka import Consumer
    create_topic(bootstrap, topic_name, 8)
    recs = [{"key": f"{i}".encode(), "value": f"small-{i}-".encode() * 5, "partition": i % 8}
            for i in range(1600)]
    # Small batches (4 records, ~300 bytes), so that a fetch can hold only a few.
    produce(bootstrap, topic_name, recs, {"acks": "all", "linger.ms": 20,
                                          "batch.num.messages": 4})
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "compat-unused",
                  "enable.auto.commit": False, "enable.auto.offset.store": False,
                  "fetch.max.bytes": 1024, "max.partition.fetch.bytes": 512,
                  "message.max.bytes": 1000,
                  "receive.message.max.bytes": 65536, "fetch.wait.max.ms": 50})
    try:
        c.assign([TopicPartition(topic_name, p, 0) for p in range(8)])
        got = {p: [] for p in range(8)}
        deadline = time.monotonic() + 60
        while sum(map(len, got.values())) < 1600 and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and not m.error():
                got[m.partition()].append((m.offset(), m.value()))
    finally:
        c.close()
    for p in range(8):
        assert got[p] == [(n, f"small-{i}-".encode() * 5)
                          for n, i in enumerate(range(p, 1600, 8))], f"partition {p}"


def test_fetch_min_bytes_waits_at_most_max_wait(bootstrap, topic_name):
    """fetch.min.bytes larger than what exists: the broker answers after max wait."""
    create_topic(bootstrap, topic_name, 1)
    produce(bootstrap, topic_name, [{"value": b"only"}], {"acks": "all"})
    t0 = time.monotonic()
    got = consume(bootstrap, topic_name, 0, 1,
                  conf={"fetch.min.bytes": 1_000_000, "fetch.wait.max.ms": 500})
    assert [m["value"] for m in got] == [b"only"]
    assert time.monotonic() - t0 < 10
