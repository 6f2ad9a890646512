"""A topic whose cleanup.policy contains `compact` refuses records without a key, as
Kafka's LogValidator does: INVALID_RECORD (87) for the partition, and from Produce v8 on
one record error per keyless record plus Kafka's message. Nothing of a refused batch is
stored (the end offset does not move) and keyed records, tombstones included, still go in.

Run against a real Kafka with SPATE_BIN=compat/reference/kafka-as-spate.sh: the
assertions are Kafka 4.4's answers."""
import struct

import pytest
from confluent_kafka import KafkaError
from kafka import KafkaProducer
from kafka.errors import InvalidRecordError

from grouputil import RawClient, _bytes, _nstr, _str
from kafkautil import OP_TIMEOUT, consume, create_topic, produce, watermarks
from test_record_validation import GZIP, INVALID_RECORD, batch, compress, record

pytestmark = pytest.mark.timeout(120)


def reason(topic, partition=0):
    return ("Compacted topic cannot accept message without key in topic partition "
            f"{topic}-{partition}")


def produce_v8(raw, topic, records):
    """Produce v8, acks=-1, partition 0: the partition's answer as a dict."""
    body = (_nstr(None) + struct.pack(">hi", -1, int(OP_TIMEOUT * 1000)) + struct.pack(">i", 1)
            + _str(topic) + struct.pack(">i", 1) + struct.pack(">i", 0) + _bytes(records))
    r = raw.call(0, 8, body)
    ((_, (part,)),) = r.array(lambda t: (t.str(), t.array(lambda p: {
        "index": p.i32(), "error": p.i16(), "base_offset": p.take(">q"),
        "log_append_time": p.take(">q"), "log_start_offset": p.take(">q"),
        "record_errors": p.array(lambda e: (e.i32(), e.str())),
        "message": p.str()})))
    return part


@pytest.fixture
def compacted(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 1, {"cleanup.policy": "compact"})
    return topic_name


@pytest.mark.parametrize("codec", [0, GZIP])
def test_raw_produce_gets_record_errors(bootstrap, compacted, codec):
    keys = [b"k0", None, b"k2", None, None, None]
    body = b"".join(record(i, b"v%d" % i, key=k) for i, k in enumerate(keys))
    host, port = bootstrap.split(":")
    raw = RawClient(host, int(port))
    try:
        part = produce_v8(raw, compacted, batch(compress(codec, body), len(keys), attrs=codec))
        why = reason(compacted)
        shown = ", ".join(f"RecordError(batchIndex={i}, message='{why}')" for i in (1, 3, 4))
        assert part == {
            "index": 0, "error": INVALID_RECORD, "base_offset": -1, "log_append_time": -1,
            "log_start_offset": 0,
            "record_errors": [(i, why) for i in (1, 3, 4, 5)],
            "message": "One or more records have been rejected due to 4 record errors in "
                       f"total, and only showing the first three errors at most: [{shown}]",
        }
        # Produce v7 has no record errors: the code alone.
        assert raw.produce(compacted, 0, batch(record(0, b"v"), 1)) == (INVALID_RECORD, -1)
        assert watermarks(bootstrap, compacted, 0) == (0, 0)
        # Keyed records (a tombstone, an empty key) are stored.
        keyed = record(0, b"v", key=b"k") + record(1, None, key=b"k") + record(2, b"v", key=b"")
        part = produce_v8(raw, compacted, batch(keyed, 3))
        assert (part["error"], part["base_offset"], part["record_errors"], part["message"]) == \
            (0, 0, [], None)
        assert watermarks(bootstrap, compacted, 0) == (0, 3)
    finally:
        raw.close()


@pytest.mark.parametrize("conf", [{}, {"compression.type": "lz4"},
                                  {"enable.idempotence": True}])
def test_confluent_kafka_null_key_is_refused(bootstrap, compacted, conf):
    reports = produce(bootstrap, compacted, [{"key": None, "value": b"no key"}],
                      conf={"message.timeout.ms": 20000, **conf})
    (err, *_), = reports
    assert err is not None and err.code() == KafkaError.INVALID_RECORD, err
    assert not err.retriable()
    assert watermarks(bootstrap, compacted, 0) == (0, 0)
    # The same producer settings with keys: stored and read back.
    reports = produce(bootstrap, compacted, [{"key": b"k%d" % i, "value": b"v%d" % i}
                                             for i in range(3)] + [{"key": b"k0", "value": None}],
                      conf=conf)
    assert [(e, off) for e, _, off, *_ in reports] == [(None, i) for i in range(4)]
    got = consume(bootstrap, compacted, 0, 4)
    assert [(m["key"], m["value"]) for m in got] == \
        [(b"k0", b"v0"), (b"k1", b"v1"), (b"k2", b"v2"), (b"k0", None)]


def test_kafka_python_null_key_is_refused(bootstrap, compacted):
    p = KafkaProducer(bootstrap_servers=bootstrap, retries=0)
    try:
        with pytest.raises(InvalidRecordError) as refused:
            p.send(compacted, key=None, value=b"no key").get(timeout=OP_TIMEOUT)
        # kafka-python reports the record error's message.
        assert reason(compacted) in str(refused.value)
        assert watermarks(bootstrap, compacted, 0) == (0, 0)
        meta = p.send(compacted, key=b"k", value=b"v").get(timeout=OP_TIMEOUT)
        assert meta.offset == 0
    finally:
        p.close()
    assert watermarks(bootstrap, compacted, 0) == (0, 1)
