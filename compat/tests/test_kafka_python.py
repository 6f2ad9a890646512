"""kafka-python (pure Python protocol implementation) against the broker."""
import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, NewPartitions, NewTopic
from kafka.errors import MessageSizeTooLargeError, TopicAlreadyExistsError

from kafkautil import OP_TIMEOUT, brokers_of

TIMEOUT_MS = OP_TIMEOUT * 1000


def _admin(bootstrap):
    return KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=TIMEOUT_MS,
                            client_id="compat-kafka-python")


def _create(bootstrap, name, partitions, configs=None):
    a = _admin(bootstrap)
    try:
        a.create_topics([NewTopic(name, partitions, 1, topic_configs=configs or {})],
                        timeout_ms=TIMEOUT_MS)
    finally:
        a.close()
    deadline = time.monotonic() + OP_TIMEOUT
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                      request_timeout_ms=TIMEOUT_MS)
    try:
        while time.monotonic() < deadline:
            parts = c.partitions_for_topic(name)
            if parts and len(parts) == partitions:
                return
            time.sleep(0.2)
    finally:
        c.close()
    raise AssertionError(f"topic {name} did not appear")


def _producer(bootstrap, **kw):
    return KafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=TIMEOUT_MS,
                         max_block_ms=TIMEOUT_MS, linger_ms=5,
                         max_in_flight_requests_per_connection=1, **kw)


def _consume(bootstrap, topic, partition, count, start=0):
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="none", request_timeout_ms=TIMEOUT_MS,
                      fetch_max_wait_ms=100)
    try:
        tp = TopicPartition(topic, partition)
        c.assign([tp])
        c.seek(tp, start)
        out = []
        deadline = time.monotonic() + OP_TIMEOUT
        while len(out) < count and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=200).values():
                out.extend(recs)
        assert len(out) == count, f"read {len(out)} of {count}"
        assert not c.poll(timeout_ms=300), "unexpected extra records"
        return out
    finally:
        c.close()


@pytest.mark.parametrize("codec", [None, "gzip", "snappy", "lz4", "zstd"])
def test_produce_consume_codec(bootstrap, topic_name, codec):
    _create(bootstrap, topic_name, 1)
    p = _producer(bootstrap, acks="all", compression_type=codec)
    recs = [(f"k{i}".encode() if i % 5 != 1 else None,
             (f"kp-{codec}-{i};" * 10).encode() if i % 7 or i % 5 == 1 else None,
             [("h", f"{i}".encode())] if i % 3 else [])
            for i in range(150)]
    try:
        futs = [p.send(topic_name, key=k, value=v, headers=h) for k, v, h in recs]
        md = [f.get(timeout=OP_TIMEOUT) for f in futs]
    finally:
        p.close(timeout=OP_TIMEOUT)
    assert [(m.partition, m.offset) for m in md] == [(0, i) for i in range(150)]
    got = _consume(bootstrap, topic_name, 0, 150)
    assert [(r.offset, r.key, r.value, list(r.headers)) for r in got] == \
        [(i, k, v, h) for i, (k, v, h) in enumerate(recs)]


def test_acks_zero_and_one(bootstrap, topic_name):
    _create(bootstrap, topic_name, 2)
    for acks, part in ((0, 0), (1, 1)):
        p = _producer(bootstrap, acks=acks)
        try:
            futs = [p.send(topic_name, value=f"a{acks}-{i}".encode(), partition=part)
                    for i in range(100)]
            md = [f.get(timeout=OP_TIMEOUT) for f in futs]
        finally:
            p.close(timeout=OP_TIMEOUT)
        if acks == 1:
            assert [m.offset for m in md] == list(range(100))
        got = _consume(bootstrap, topic_name, part, 100)
        assert [(r.offset, r.value) for r in got] == \
            [(i, f"a{acks}-{i}".encode()) for i in range(100)]


def test_idempotent_producers_get_distinct_ids(bootstrap, topic_name):
    """Two idempotent kafka-python producers (InitProducerId without transactional
    id) each get their own producer id; both write, neither fences the other."""
    _create(bootstrap, topic_name, 1)
    a = _producer(bootstrap, enable_idempotence=True, acks="all")
    b = _producer(bootstrap, enable_idempotence=True, acks="all")
    try:
        for i in range(5):
            a.send(topic_name, value=f"a{i}".encode(), partition=0).get(timeout=30)
            b.send(topic_name, value=f"b{i}".encode(), partition=0).get(timeout=30)
    finally:
        a.close()
        b.close()
    got = [m.value for m in _consume(bootstrap, topic_name, 0, 10)]
    assert got == [f"{p}{i}".encode() for i in range(5) for p in "ab"]


def test_record_too_large(bootstrap, topic_name):
    _create(bootstrap, topic_name, 1)
    p = _producer(bootstrap, acks=1, max_request_size=4 * 1024 * 1024, retries=0)
    try:
        ok = p.send(topic_name, value=b"y" * (1048588 - 72)).get(timeout=OP_TIMEOUT)
        assert ok.offset == 0
        with pytest.raises(MessageSizeTooLargeError):
            p.send(topic_name, value=b"y" * (1048588 - 71)).get(timeout=OP_TIMEOUT)
    finally:
        p.close(timeout=OP_TIMEOUT)


def test_offsets_and_times(bootstrap, topic_name):
    _create(bootstrap, topic_name, 1)
    base = 1_650_000_000_000
    ts = [base + i * 10 for i in range(20)]
    ts[12] = base + 99_999
    p = _producer(bootstrap, acks="all")
    try:
        for i, t in enumerate(ts):
            p.send(topic_name, value=f"{i}".encode(), timestamp_ms=t)
        p.flush(timeout=OP_TIMEOUT)
    finally:
        p.close(timeout=OP_TIMEOUT)
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                      request_timeout_ms=TIMEOUT_MS)
    try:
        tp = TopicPartition(topic_name, 0)
        assert c.beginning_offsets([tp]) == {tp: 0}
        assert c.end_offsets([tp]) == {tp: 20}
        r = c.offsets_for_times({tp: base + 55})
        assert (r[tp].offset, r[tp].timestamp) == (6, base + 60)
        r = c.offsets_for_times({tp: base + 150})
        assert (r[tp].offset, r[tp].timestamp) == (12, base + 99_999)
        assert c.offsets_for_times({tp: base + 100_000}) == {tp: None}
    finally:
        c.close()
    got = _consume(bootstrap, topic_name, 0, 20)
    assert [r.timestamp for r in got] == ts


def test_admin_alter_configs_and_describe(bootstrap, topic_name):
    _create(bootstrap, topic_name, 1, {"retention.ms": "86400000"})
    a = _admin(bootstrap)
    try:
        r = a.describe_configs([ConfigResource("TOPIC", topic_name)], config_filter="all")
        cfg = r["topic"][topic_name]
        assert cfg["retention.ms"]["value"] == "86400000"
        assert cfg["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
        assert (cfg["cleanup.policy"]["value"], cfg["cleanup.policy"]["config_source"]) == \
            ("delete", "DEFAULT_CONFIG")
        assert cfg["retention.bytes"]["value"] == "-1"
        # Legacy (non-incremental) AlterConfigs. kafka-python re-sends the existing
        # overrides with it (AlterConfigs replaces the whole set), so both remain.
        r = a.alter_configs([ConfigResource("TOPIC", topic_name,
                                            configs={"segment.ms": "3600000"})],
                            incremental=False)
        assert r == {"topic": {topic_name: "OK"}}
        cfg = a.describe_configs([ConfigResource("TOPIC", topic_name)])["topic"][topic_name]
        assert {k: v["value"] for k, v in cfg.items()} == \
            {"segment.ms": "3600000", "retention.ms": "86400000"}
        # Incremental: changes one override, keeps the others.
        r = a.alter_configs([ConfigResource("TOPIC", topic_name,
                                            configs={"retention.ms": "1000"})],
                            incremental=True)
        assert r == {"topic": {topic_name: "OK"}}
        cfg = a.describe_configs([ConfigResource("TOPIC", topic_name)])["topic"][topic_name]
        assert {k: v["value"] for k, v in cfg.items()} == \
            {"segment.ms": "3600000", "retention.ms": "1000"}
    finally:
        a.close()


def test_admin_topics_partitions_records_cluster_logdirs(bootstrap, topic_name):
    _create(bootstrap, topic_name, 1)
    a = _admin(bootstrap)
    try:
        with pytest.raises(TopicAlreadyExistsError):
            a.create_topics([NewTopic(topic_name, 1, 1)], timeout_ms=TIMEOUT_MS)
        a.create_partitions({topic_name: NewPartitions(3)}, timeout_ms=TIMEOUT_MS)
        # One uncompressed record, null key, 100-byte value, no headers, one batch each:
        # kafka-python 3.0.12 writes it as a 170-byte batch.
        p = _producer(bootstrap, acks="all")
        try:
            for part in range(3):
                for i in range(part + 1):
                    p.send(topic_name, value=bytes([65 + part]) * 100, partition=part)
                    p.flush(timeout=OP_TIMEOUT)  # one batch per record
        finally:
            p.close(timeout=OP_TIMEOUT)
        res = a.delete_records({TopicPartition(topic_name, 2): 2}, timeout_ms=TIMEOUT_MS)
        assert [(tp.partition, m["low_watermark"] if isinstance(m, dict) else m)
                for tp, m in res.items()] in ([(2, 2)], [(2, {"low_watermark": 2})])

        c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                          request_timeout_ms=TIMEOUT_MS)
        try:
            tps = [TopicPartition(topic_name, i) for i in range(3)]
            assert c.beginning_offsets(tps) == dict(zip(tps, [0, 0, 2]))
            assert c.end_offsets(tps) == dict(zip(tps, [1, 2, 3]))
        finally:
            c.close()

        cl = a.describe_cluster()
        brokers = brokers_of(bootstrap)
        assert sorted((b["broker_id"], b["host"], b["port"]) for b in cl["brokers"]) == brokers
        # KRaft brokers name a live broker as the controller (here: the one answering).
        assert cl["controller_id"] in [b[0] for b in brokers] and cl["cluster_id"]

        # Every broker's dirs (one broker on a single node).
        dirs = a.describe_log_dirs()
        assert sorted(d["broker"] for d in dirs) == [b[0] for b in brokers]
        mine = {}
        for ld in (ld for d in dirs for ld in d["log_dirs"]):
            assert ld["error_code"] == 0
            for t in ld["topics"]:
                if t["name"] == topic_name:
                    for pp in t["partitions"]:
                        mine[pp["partition_index"]] = pp["partition_size"]
        # Sizes are the log's bytes (batches are stored as produced); deleting records
        # below the low watermark does not shrink the active segment.
        assert mine == {0: 170, 1: 340, 2: 510}

        a.delete_topics([topic_name], timeout_ms=TIMEOUT_MS)
        deadline = time.monotonic() + OP_TIMEOUT
        while time.monotonic() < deadline and topic_name in a.list_topics():
            time.sleep(0.2)
        assert topic_name not in a.list_topics()
    finally:
        a.close()


@pytest.mark.parametrize("api_version", [(1, 1), (2, 1), (2, 6), (3, 3)],
                         ids=lambda v: "v" + ".".join(map(str, v)))
def test_pinned_older_protocol_versions(bootstrap, topic_name, api_version):
    """kafka-python pinned to an older broker version sends older request versions of
    Metadata, Produce, Fetch and ListOffsets (non-flexible ones for < 2.4)."""
    _create(bootstrap, topic_name, 1)
    kw = {"api_version": api_version, "request_timeout_ms": TIMEOUT_MS}
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all", compression_type="gzip",
                      linger_ms=5, max_block_ms=TIMEOUT_MS,
                      max_in_flight_requests_per_connection=1, **kw)
    try:
        md = [p.send(topic_name, key=f"k{i}".encode(), value=f"old-{i}".encode(),
                     headers=[("h", b"1")]).get(timeout=OP_TIMEOUT) for i in range(20)]
    finally:
        p.close(timeout=OP_TIMEOUT)
    assert [m.offset for m in md] == list(range(20))
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      fetch_max_wait_ms=100, **kw)
    try:
        tp = TopicPartition(topic_name, 0)
        c.assign([tp])
        assert c.end_offsets([tp]) == {tp: 20}
        c.seek(tp, 5)
        out = []
        deadline = time.monotonic() + OP_TIMEOUT
        while len(out) < 15 and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=200).values():
                out.extend(recs)
    finally:
        c.close()
    assert [(r.offset, r.key, r.value, list(r.headers)) for r in out] == \
        [(i, f"k{i}".encode(), f"old-{i}".encode(), [("h", b"1")]) for i in range(5, 20)]
