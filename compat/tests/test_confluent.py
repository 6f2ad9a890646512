"""confluent-kafka-python (librdkafka) against the broker: produce/consume, codecs,
headers, nulls, size limits, many partitions, acks, admin APIs, list offsets."""
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewPartitions, NewTopic, OffsetSpec)

from kafkautil import (OP_TIMEOUT, admin, brokers_of, consume, create_topic, kafka_partition, produce,
                       wait_topic, watermarks)

MAX_MESSAGE_BYTES = 1048588          # Kafka's default max.message.bytes
# One uncompressed batch holding one record with a null key, no headers and a value of
# N bytes (N needing a 3-byte varint) is N + 72 bytes: 61 bytes of batch header, then the
# record: length varint (3) + attributes (1) + timestamp delta (1) + offset delta (1) +
# key length -1 (1) + value length varint (3) + value + header count (1).
MAX_VALUE_AT_LIMIT = MAX_MESSAGE_BYTES - 72
BIG_CLIENT = {"message.max.bytes": 4 * 1024 * 1024, "compression.type": "none",
              "linger.ms": 0, "batch.num.messages": 1, "retries": 0}


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_produce_consume_codec(bootstrap, topic_name, codec):
    create_topic(bootstrap, topic_name, 1)
    recs = [{"key": f"k{i}".encode(), "value": (f"value-{i}-" * 20).encode(),
             "headers": [("codec", codec.encode()), ("i", str(i).encode())]}
            for i in range(200)]
    reports = produce(bootstrap, topic_name, recs, {"compression.type": codec, "acks": "all"})
    assert [(e, p, o) for e, p, o, _, _ in reports] == [(None, 0, i) for i in range(200)]
    got = consume(bootstrap, topic_name, 0, 200)
    assert [(m["offset"], m["key"], m["value"], m["headers"]) for m in got] == \
        [(i, r["key"], r["value"], r["headers"]) for i, r in enumerate(recs)]
    assert watermarks(bootstrap, topic_name, 0) == (0, 200)


def test_headers_and_nulls(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 1)
    recs = [
        {"key": None, "value": b"null-key"},
        {"key": b"null-value", "value": None},
        {"key": None, "value": None},
        {"key": b"", "value": b""},
        {"key": b"hdrs", "value": b"v", "headers": [("a", b"1"), ("a", b"2"), ("empty", b""),
                                                    ("nullv", None), ("\u00fcnicode", b"\xff\x00")]},
        {"key": b"\x00\xff" * 50, "value": bytes(range(256))},
    ]
    reports = produce(bootstrap, topic_name, recs, {"acks": "all"})
    assert [(e, o) for e, _, o, _, _ in reports] == [(None, i) for i in range(len(recs))]
    got = consume(bootstrap, topic_name, 0, len(recs))
    assert [(m["key"], m["value"]) for m in got] == [(r["key"], r["value"]) for r in recs]
    assert [m["headers"] for m in got] == [None, None, None, None,
                                           [("a", b"1"), ("a", b"2"), ("empty", b""),
                                            ("nullv", None), ("\u00fcnicode", b"\xff\x00")],
                                           None]


def test_large_record_at_limit(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 1)
    value = bytes((i * 7) % 251 for i in range(MAX_VALUE_AT_LIMIT))
    reports = produce(bootstrap, topic_name, [{"value": value}], BIG_CLIENT)
    assert [(e, o) for e, _, o, _, _ in reports] == [(None, 0)]
    got = consume(bootstrap, topic_name, 0, 1)
    assert got[0]["value"] == value and got[0]["key"] is None


def test_large_record_over_limit_rejected(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 1)
    value = b"x" * (MAX_VALUE_AT_LIMIT + 1)
    reports = produce(bootstrap, topic_name, [{"value": value}], BIG_CLIENT)
    assert len(reports) == 1
    err = reports[0][0]
    assert err is not None and err.code() == KafkaError.MSG_SIZE_TOO_LARGE, err
    # A record right after still works, and the rejected one left no trace.
    reports = produce(bootstrap, topic_name, [{"value": b"after"}], {"acks": "all"})
    assert [(e, o) for e, _, o, _, _ in reports] == [(None, 0)]
    assert watermarks(bootstrap, topic_name, 0) == (0, 1)


def test_topic_config_max_message_bytes(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 1, {"max.message.bytes": "2000"})
    ok = b"o" * (2000 - 72 + 2)  # value < 128+... uses 2-byte varints: overhead 70
    r = produce(bootstrap, topic_name, [{"value": ok}], BIG_CLIENT)
    assert r[0][0] is None, r[0][0]
    r = produce(bootstrap, topic_name, [{"value": ok + b"!"}], BIG_CLIENT)
    assert r[0][0] is not None and r[0][0].code() == KafkaError.MSG_SIZE_TOO_LARGE


def test_many_partitions_keyed(bootstrap, topic_name):
    parts = 32
    create_topic(bootstrap, topic_name, parts)
    recs = [{"key": f"key-{i % 97}".encode(), "value": f"{i}".encode()} for i in range(2000)]
    reports = produce(bootstrap, topic_name, recs,
                      {"partitioner": "murmur2_random", "acks": "all"})
    assert all(e is None for e, *_ in reports)
    for _, p, _, k, _ in reports:
        assert p == kafka_partition(k, parts)
    expected = {p: [] for p in range(parts)}
    for r in recs:
        expected[kafka_partition(r["key"], parts)].append(r)
    assert sum(1 for v in expected.values() if v) >= 30
    for p in range(parts):
        want = expected[p]
        if not want:
            assert watermarks(bootstrap, topic_name, p) == (0, 0)
            continue
        got = consume(bootstrap, topic_name, p, len(want))
        assert [(m["offset"], m["key"], m["value"]) for m in got] == \
            [(i, r["key"], r["value"]) for i, r in enumerate(want)], f"partition {p}"


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_acks(bootstrap, topic_name, acks):
    create_topic(bootstrap, topic_name, 1)
    recs = [{"key": str(i).encode(), "value": f"acks-{acks}-{i}".encode()} for i in range(300)]
    reports = produce(bootstrap, topic_name, recs, {"acks": acks})
    assert all(e is None for e, *_ in reports)
    if acks == "0":
        # No response: librdkafka reports no offset.
        assert {o for _, _, o, _, _ in reports} == {None}  # no response, no offset
    else:
        assert [o for _, _, o, _, _ in reports] == list(range(300))
    got = consume(bootstrap, topic_name, 0, 300)
    assert [(m["offset"], m["value"]) for m in got] == \
        [(i, r["value"]) for i, r in enumerate(recs)]


def test_consume_from_middle_and_timestamps(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 1)
    base = 1_700_000_000_000
    recs = [{"value": f"t{i}".encode(), "timestamp": base + i * 1000} for i in range(50)]
    produce(bootstrap, topic_name, recs, {"acks": "all", "linger.ms": 50})
    got = consume(bootstrap, topic_name, 0, 20, start=30)
    assert [(m["offset"], m["value"], m["timestamp"], m["timestamp_type"]) for m in got] == \
        [(30 + i, f"t{30 + i}".encode(), base + (30 + i) * 1000, 1) for i in range(20)]


def test_offsets_for_times_and_list_offsets(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 1)
    base = 1_700_000_000_000
    # Timestamps go up, except that record 7 carries the largest one.
    ts = [base + i * 1000 for i in range(10)]
    ts[7] = base + 100_000
    produce(bootstrap, topic_name, [{"value": f"v{i}".encode(), "timestamp": t}
                                    for i, t in enumerate(ts)],
            {"acks": "all", "linger.ms": 50})
    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "compat-unused",
                  "enable.auto.commit": False})
    try:
        def oft(t):
            r = c.offsets_for_times([TopicPartition(topic_name, 0, t)], timeout=OP_TIMEOUT)
            assert r[0].error is None
            return r[0].offset
        assert oft(base) == 0
        assert oft(base - 5) == 0
        assert oft(base + 3000) == 3
        assert oft(base + 3500) == 4
        assert oft(base + 9000) == 7       # first record with timestamp >= target
        assert oft(base + 100_000) == 7
        assert oft(base + 100_001) == -1   # none: end
    finally:
        c.close()

    a = admin(bootstrap)
    tp = TopicPartition(topic_name, 0)

    def lo(spec):
        res = a.list_offsets({tp: spec}, request_timeout=OP_TIMEOUT)[tp].result(OP_TIMEOUT)
        return res.offset, res.timestamp
    assert lo(OffsetSpec.earliest())[0] == 0
    assert lo(OffsetSpec.latest())[0] == 10
    assert lo(OffsetSpec.for_timestamp(base + 2000)) == (2, base + 2000)
    assert lo(OffsetSpec.max_timestamp()) == (7, base + 100_000)


def _describe(a, topic):
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    return a.describe_configs([res], request_timeout=OP_TIMEOUT)[res].result(OP_TIMEOUT)


def test_admin_create_with_configs_and_describe(bootstrap, topic_name):
    a = admin(bootstrap)
    fs = a.create_topics([NewTopic(topic_name, 3, 1, config={"retention.ms": "3600000",
                                                              "cleanup.policy": "delete",
                                                              "segment.bytes": "10485760"})],
                         operation_timeout=OP_TIMEOUT, request_timeout=OP_TIMEOUT)
    fs[topic_name].result(OP_TIMEOUT)
    wait_topic(bootstrap, topic_name, 3)
    cfg = _describe(a, topic_name)
    assert cfg["retention.ms"].value == "3600000"
    assert cfg["retention.ms"].source == ConfigResource.Type.UNKNOWN or \
        cfg["retention.ms"].is_default is False
    assert cfg["segment.bytes"].value == "10485760"
    assert cfg["cleanup.policy"].value == "delete"
    assert cfg["max.message.bytes"].value == "1048588"
    assert cfg["max.message.bytes"].is_default is True

    # Creating it again fails with TOPIC_ALREADY_EXISTS.
    fs = a.create_topics([NewTopic(topic_name, 3, 1)], request_timeout=OP_TIMEOUT)
    with pytest.raises(KafkaException) as ei:
        fs[topic_name].result(OP_TIMEOUT)
    assert ei.value.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS


def test_admin_describe_default_configs(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 1)
    cfg = _describe(admin(bootstrap), topic_name)
    want = {"retention.ms": "604800000", "cleanup.policy": "delete",
            "max.message.bytes": "1048588", "compression.type": "producer",
            "retention.bytes": "-1", "segment.bytes": "1073741824",
            "min.insync.replicas": "1", "message.timestamp.type": "CreateTime"}
    assert {k: cfg[k].value for k in want} == want
    # min.insync.replicas: Kafka 4 sets a cluster-level dynamic default for it (KIP-966),
    # so only its value is checked.
    defaults = [k for k in want if k != "min.insync.replicas"]
    assert all(cfg[k].is_default for k in defaults)
    assert {k: cfg[k].source for k in defaults} == {k: 5 for k in defaults}  # DEFAULT_CONFIG
    assert all(not cfg[k].is_read_only for k in want)


def test_admin_incremental_alter_configs(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 1)
    a = admin(bootstrap)
    res = ConfigResource(ConfigResource.Type.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("max.message.bytes", "2097152", incremental_operation=AlterConfigOpType.SET),
    ])
    a.incremental_alter_configs([res], request_timeout=OP_TIMEOUT)[res].result(OP_TIMEOUT)
    cfg = _describe(a, topic_name)
    assert cfg["retention.ms"].value == "7200000" and not cfg["retention.ms"].is_default
    assert cfg["max.message.bytes"].value == "2097152"
    # DELETE returns a key to its default.
    res = ConfigResource(ConfigResource.Type.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)])
    a.incremental_alter_configs([res], request_timeout=OP_TIMEOUT)[res].result(OP_TIMEOUT)
    cfg = _describe(a, topic_name)
    assert cfg["retention.ms"].value == "604800000" and cfg["retention.ms"].is_default
    assert cfg["max.message.bytes"].value == "2097152"
    # An unknown key is rejected with INVALID_CONFIG.
    res = ConfigResource(ConfigResource.Type.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("no.such.config", "1", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as ei:
        a.incremental_alter_configs([res], request_timeout=OP_TIMEOUT)[res].result(OP_TIMEOUT)
    assert ei.value.args[0].code() == KafkaError.INVALID_CONFIG


def test_admin_create_partitions_and_delete_topic(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 2)
    a = admin(bootstrap)
    a.create_partitions([NewPartitions(topic_name, 5)],
                        request_timeout=OP_TIMEOUT)[topic_name].result(OP_TIMEOUT)
    wait_topic(bootstrap, topic_name, 5)
    r = produce(bootstrap, topic_name, [{"value": b"p4", "partition": 4}], {"acks": "all"})
    assert [(e, p, o) for e, p, o, _, _ in r] == [(None, 4, 0)]
    # Shrinking is invalid.
    with pytest.raises(KafkaException) as ei:
        a.create_partitions([NewPartitions(topic_name, 3)],
                            request_timeout=OP_TIMEOUT)[topic_name].result(OP_TIMEOUT)
    assert ei.value.args[0].code() == KafkaError.INVALID_PARTITIONS

    a.delete_topics([topic_name], request_timeout=OP_TIMEOUT)[topic_name].result(OP_TIMEOUT)
    deadline = time.monotonic() + OP_TIMEOUT
    while time.monotonic() < deadline:
        md = a.list_topics(timeout=10)
        if topic_name not in md.topics:
            break
        time.sleep(0.2)
    assert topic_name not in a.list_topics(timeout=10).topics
    # Deleting it again: UNKNOWN_TOPIC_OR_PART.
    with pytest.raises(KafkaException) as ei:
        a.delete_topics([topic_name], request_timeout=OP_TIMEOUT)[topic_name].result(OP_TIMEOUT)
    assert ei.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


def test_admin_delete_records(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 1)
    produce(bootstrap, topic_name, [{"value": f"d{i}".encode()} for i in range(100)],
            {"acks": "all"})
    a = admin(bootstrap)
    tp = TopicPartition(topic_name, 0, 40)
    res = a.delete_records([tp], request_timeout=OP_TIMEOUT)[tp].result(OP_TIMEOUT)
    assert res.low_watermark == 40
    assert watermarks(bootstrap, topic_name, 0) == (40, 100)
    lo = a.list_offsets({TopicPartition(topic_name, 0): OffsetSpec.earliest()},
                        request_timeout=OP_TIMEOUT)
    assert list(lo.values())[0].result(OP_TIMEOUT).offset == 40
    got = consume(bootstrap, topic_name, 0, 60, start=40)
    assert [(m["offset"], m["value"]) for m in got] == \
        [(i, f"d{i}".encode()) for i in range(40, 100)]
    # Deleting beyond the high watermark is OFFSET_OUT_OF_RANGE.
    tp = TopicPartition(topic_name, 0, 101)
    with pytest.raises(KafkaException) as ei:
        a.delete_records([tp], request_timeout=OP_TIMEOUT)[tp].result(OP_TIMEOUT)
    assert ei.value.args[0].code() == KafkaError.OFFSET_OUT_OF_RANGE


def test_admin_describe_cluster_and_metadata(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 4)
    a = admin(bootstrap)
    d = a.describe_cluster(request_timeout=OP_TIMEOUT).result(OP_TIMEOUT)
    brokers = brokers_of(bootstrap)
    ids = [b[0] for b in brokers]
    assert sorted((n.id, n.host, n.port) for n in d.nodes) == brokers
    # KRaft brokers name a live broker as the controller.
    assert d.controller is not None and d.controller.id in ids
    assert d.cluster_id
    md = a.list_topics(topic=topic_name, timeout=OP_TIMEOUT)
    t = md.topics[topic_name]
    assert sorted(t.partitions) == [0, 1, 2, 3]
    for p in t.partitions.values():
        assert p.leader in ids and (p.replicas, p.isrs) == ([p.leader], [p.leader])
    assert sorted(md.brokers) == ids


def test_auto_create_on_metadata(bootstrap, topic_name):
    """Producing to an unknown topic creates it (auto-create on Metadata, 1 partition)."""
    r = produce(bootstrap, topic_name, [{"value": b"auto"}],
                {"acks": "all", "allow.auto.create.topics": True})
    assert [(e, p, o) for e, p, o, _, _ in r] == [(None, 0, 0)]
    md = admin(bootstrap).list_topics(topic=topic_name, timeout=OP_TIMEOUT)
    assert sorted(md.topics[topic_name].partitions) == [0]
    assert consume(bootstrap, topic_name, 0, 1)[0]["value"] == b"auto"


def test_fetch_out_of_range_and_reset(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 1)
    produce(bootstrap, topic_name, [{"value": f"r{i}".encode()} for i in range(5)],
            {"acks": "all"})
    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "compat-unused",
                  "enable.auto.commit": False, "enable.auto.offset.store": False,
                  "auto.offset.reset": "error"})
    try:
        c.assign([TopicPartition(topic_name, 0, 1000)])
        deadline = time.monotonic() + OP_TIMEOUT
        err = None
        while err is None and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None:
                assert m.error() is not None, f"unexpected record at {m.offset()}"
                err = m.error()
        assert err is not None and err.code() == KafkaError._AUTO_OFFSET_RESET, err
    finally:
        c.close()
    # With reset to earliest, the same position reads from the start.
    got = consume(bootstrap, topic_name, 0, 5, start=1000, conf={"auto.offset.reset": "earliest"})
    assert [(m["offset"], m["value"]) for m in got] == [(i, f"r{i}".encode()) for i in range(5)]


def test_long_poll_delivers_new_records(bootstrap, topic_name):
    """A consumer waiting at the end gets records produced later (Fetch long-poll)."""
    import threading
    create_topic(bootstrap, topic_name, 1)
    produce(bootstrap, topic_name, [{"value": b"first"}], {"acks": "all"})
    later = threading.Timer(1.0, lambda: produce(bootstrap, topic_name,
                                                 [{"value": b"later"}], {"acks": "all"}))
    later.start()
    try:
        got = consume(bootstrap, topic_name, 0, 1, start=1,
                      conf={"fetch.wait.max.ms": 5000})
        assert [(m["offset"], m["value"]) for m in got] == [(1, b"later")]
    finally:
        later.join(OP_TIMEOUT)


def test_multi_topic_produce_and_fetch(bootstrap, topic_name):
    """One producer interleaving 5 topics x 4 partitions (multi-topic Produce requests)
    and one consumer assigned all 20 partitions (multi-topic Fetch requests)."""
    from confluent_kafka import Consumer
    topics = [f"{topic_name}-{t}" for t in range(5)]
    for t in topics:
        create_topic(bootstrap, t, 4)
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20,
                  "max.in.flight.requests.per.connection": 1, "compression.type": "lz4"})
    errors = []
    for i in range(2000):
        t = topics[i % 5]
        p.produce(t, value=f"{t}:{i}".encode(), partition=(i // 5) % 4,
                  on_delivery=lambda e, m: e and errors.append(e))
        p.poll(0)
    assert p.flush(OP_TIMEOUT) == 0 and not errors, errors[:3]
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "compat-unused",
                  "enable.auto.commit": False, "enable.auto.offset.store": False,
                  "fetch.wait.max.ms": 100})
    try:
        c.assign([TopicPartition(t, q, 0) for t in topics for q in range(4)])
        got = {}
        deadline = time.monotonic() + OP_TIMEOUT
        n = 0
        while n < 2000 and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None or m.error():
                continue
            got.setdefault((m.topic(), m.partition()), []).append((m.offset(), m.value()))
            n += 1
    finally:
        c.close()
    want = {}
    for i in range(2000):
        t = topics[i % 5]
        lst = want.setdefault((t, (i // 5) % 4), [])
        lst.append((len(lst), f"{t}:{i}".encode()))
    assert got == want
