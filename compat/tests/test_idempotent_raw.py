"""The broker's idempotent-producer checks, request by request (what real clients only do
by accident): InitProducerId, then Produce v7 with hand-built v2 record batches whose
producer id / epoch / sequence we choose. Kafka's ProducerStateManager is the reference:
a duplicate of one of the last five batches is answered with its original offset and not
written again, a sequence gap or an old batch out of the window is
OUT_OF_ORDER_SEQUENCE_NUMBER, a lower epoch is INVALID_PRODUCER_EPOCH, a new epoch must
start at sequence 0. The state must survive a restart (rebuilt from the log)."""
import os
import struct
import time
import uuid

import crc32c
import pytest

from grouputil import RawClient, varint
from kafkautil import consume, create_topic, watermarks

# spate exits 0 after SIGTERM; the JVM (Kafka, when validating the suite) exits 143.
TERM_EXIT_CODES = {int(c) for c in os.environ.get("SPATE_COMPAT_TERM_EXIT_CODES", "0").split(",")}

pytestmark = pytest.mark.timeout(90)

NONE = 0
INVALID_REQUEST = 42
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
INVALID_PRODUCER_EPOCH = 47


def _varint(n):
    return varint(n, 64)


def _record(offset_delta, value):
    body = (struct.pack(">b", 0) + _varint(0) + _varint(offset_delta) + _varint(-1)
            + _varint(len(value)) + value + _varint(0))
    return _varint(len(body)) + body


def record_batch(pid, epoch, base_seq, values, ts=None):
    """A RecordBatch v2 (magic 2, uncompressed) of the given producer state. The
    timestamp must be recent: Kafka drops producer state whose last timestamp is older
    than producer.id.expiration.ms (1 day) when it reloads a partition."""
    ts = int(time.time() * 1000) if ts is None else ts
    recs = b"".join(_record(i, v) for i, v in enumerate(values))
    after_crc = (struct.pack(">hiqqqhii", 0, len(values) - 1, ts, ts, pid, epoch, base_seq,
                             len(values)) + recs)
    crc = crc32c.crc32c(after_crc)
    after_len = struct.pack(">ibI", -1, 2, crc) + after_crc
    return struct.pack(">qi", 0, len(after_len)) + after_len


class Producer:
    def __init__(self, bootstrap):
        self.raw = RawClient.to(bootstrap)

    def close(self):
        self.raw.close()

    def init_producer_id(self):
        return self.raw.init_producer_id()

    def init_producer_id_v4(self, producer_id, producer_epoch, transactional_id=None):
        """InitProducerId v4 (flexible) with a client-supplied producer id and epoch;
        returns (error_code, producer_id, producer_epoch)."""
        txn = b"\x00" if transactional_id is None else (
            bytes([len(transactional_id) + 1]) + transactional_id.encode())
        body = txn + struct.pack(">iqh", 60000, producer_id, producer_epoch) + b"\x00"
        deadline = time.monotonic() + 30
        while True:
            r = self.raw.call_flexible(22, 4, body)
            r.i32()
            err, pid, epoch = r.i16(), r.take(">q"), r.i16()
            if err not in (14, 15, 16) or time.monotonic() > deadline:
                return err, pid, epoch
            time.sleep(0.2)

    def produce(self, topic, partition, batch):
        """Produce v7, acks=-1; returns (error_code, base_offset)."""
        return self.raw.produce(topic, partition, batch)


def _vals(tag, n):
    return [f"{tag}-{i}".encode() for i in range(n)]


def _end(bootstrap, topic):
    return watermarks(bootstrap, topic, 0)[1]


def test_sequence_checks(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 1)
    p = Producer(bootstrap)
    try:
        pid, epoch = p.init_producer_id()
        assert pid >= 0 and epoch == 0
        pid2, _ = p.init_producer_id()
        assert pid2 != pid, "each InitProducerId without transactional id is a new producer"
        written = []
        # Six batches of 5 records: sequences 0, 5, ..., 25 at offsets 0, 5, ..., 25.
        batches = [record_batch(pid, 0, 5 * i, _vals(f"b{i}", 5)) for i in range(6)]
        for i, b in enumerate(batches):
            assert p.produce(topic_name, 0, b) == (NONE, 5 * i)
            written += _vals(f"b{i}", 5)
        # Duplicates of the last five batches: the original offset, nothing written.
        for i in (5, 1, 3):
            assert p.produce(topic_name, 0, batches[i]) == (NONE, 5 * i), f"batch {i}"
        assert _end(bootstrap, topic_name) == 30
        # Batch 0 fell out of the five-batch window: out of order.
        assert p.produce(topic_name, 0, batches[0])[0] == OUT_OF_ORDER_SEQUENCE_NUMBER
        # A gap (expected 30).
        assert p.produce(topic_name, 0, record_batch(pid, 0, 31, _vals("gap", 2)))[0] == \
            OUT_OF_ORDER_SEQUENCE_NUMBER
        # A batch overlapping the last one without being it.
        assert p.produce(topic_name, 0, record_batch(pid, 0, 27, _vals("overlap", 5)))[0] == \
            OUT_OF_ORDER_SEQUENCE_NUMBER
        assert _end(bootstrap, topic_name) == 30
        # In sequence again.
        assert p.produce(topic_name, 0, record_batch(pid, 0, 30, _vals("b6", 3))) == (NONE, 30)
        written += _vals("b6", 3)
        # A new epoch must start at sequence 0...
        assert p.produce(topic_name, 0, record_batch(pid, 1, 33, _vals("e1", 2)))[0] == \
            OUT_OF_ORDER_SEQUENCE_NUMBER
        assert p.produce(topic_name, 0, record_batch(pid, 1, 0, _vals("e1", 2))) == (NONE, 33)
        written += _vals("e1", 2)
        # ...and fences the old one.
        assert p.produce(topic_name, 0, record_batch(pid, 0, 33, _vals("old", 1)))[0] == \
            INVALID_PRODUCER_EPOCH
        # The other producer id has its own sequences.
        assert p.produce(topic_name, 0, record_batch(pid2, 0, 0, _vals("p2", 4))) == (NONE, 35)
        written += _vals("p2", 4)
        assert p.produce(topic_name, 0, record_batch(pid, 1, 2, _vals("e1b", 1))) == (NONE, 39)
        written += _vals("e1b", 1)
        # Sequence numbers wrap at 2^31-1 (Kafka: next after MAX is 0): covered by neither
        # client here; skipped.
    finally:
        p.close()
    got = consume(bootstrap, topic_name, 0, len(written))
    assert [m["value"] for m in got] == written
    assert [m["offset"] for m in got] == list(range(len(written)))


def test_init_producer_id_ignores_client_producer_id(bootstrap, topic_name):
    """Kafka 4.4 (KafkaApis.handleInitProducerIdRequest, TransactionCoordinator.
    handleInitProducerId): without a transactional id the given producer id and epoch
    are ignored and a fresh producer id with epoch 0 comes back, so no client can bump
    (fence) another producer's epoch; exactly one of the two set is INVALID_REQUEST."""
    create_topic(bootstrap, topic_name, 1)
    victim, other = Producer(bootstrap), Producer(bootstrap)
    try:
        pid, epoch = victim.init_producer_id()
        assert victim.produce(topic_name, 0, record_batch(pid, epoch, 0, _vals("v", 2))) == (NONE, 0)
        # Another client names the victim's id and epoch: it gets a new id, epoch 0.
        for given_epoch in (epoch, 5, 32766):
            err, pid2, epoch2 = other.init_producer_id_v4(pid, given_epoch)
            assert err == NONE and epoch2 == 0 and pid2 >= 0 and pid2 != pid, (err, pid2, epoch2)
        # Both unset: a fresh id too.
        err, pid3, epoch3 = other.init_producer_id_v4(-1, -1)
        assert err == NONE and epoch3 == 0 and pid3 not in (pid, pid2)
        # Only one of producer id / epoch set.
        assert other.init_producer_id_v4(-1, 3) == (INVALID_REQUEST, -1, -1)
        assert other.init_producer_id_v4(pid, -1) == (INVALID_REQUEST, -1, -1)
        # The victim was not fenced: its epoch still writes, in sequence.
        assert victim.produce(topic_name, 0, record_batch(pid, epoch, 2, _vals("w", 1))) == (NONE, 2)
    finally:
        victim.close()
        other.close()
    assert [m["value"] for m in consume(bootstrap, topic_name, 0, 3)] == [b"v-0", b"v-1", b"w-0"]


@pytest.mark.parametrize("how", ["kill9", "sigterm"])
def test_producer_state_survives_restart(restartable_broker, how):
    broker = restartable_broker
    topic = f"idem-restart-{how}-{uuid.uuid4().hex[:6]}"
    create_topic(broker.bootstrap, topic, 1)
    p = Producer(broker.bootstrap)
    try:
        pid, _ = p.init_producer_id()
        batches = [record_batch(pid, 0, 3 * i, _vals(f"r{i}", 3)) for i in range(4)]
        for i, b in enumerate(batches):
            assert p.produce(topic, 0, b) == (NONE, 3 * i)
    finally:
        p.close()
    if how == "kill9":
        broker.kill()
    else:
        assert broker.stop() in TERM_EXIT_CODES, broker.log_tail()
    broker.wait_port_closed()
    broker.start()
    p = Producer(broker.bootstrap)
    try:
        deadline = time.monotonic() + 20
        while True:   # the partition may need a moment after start-up
            res = p.produce(topic, 0, batches[3])
            if res[0] == NONE or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        # The retry of the last batch before the restart is still a duplicate.
        assert res == (NONE, 9), res
        # An older batch of the window: Kafka keeps only the last batch per producer in
        # its snapshots, so after a clean restart it answers OUT_OF_ORDER_SEQUENCE_NUMBER;
        # rebuilt from the log it may still know it (original offset). Never a new write.
        older = p.produce(topic, 0, batches[1])
        assert older == (NONE, 3) or older[0] == OUT_OF_ORDER_SEQUENCE_NUMBER, older
        assert p.produce(topic, 0, record_batch(pid, 0, 13, _vals("gap", 1)))[0] == \
            OUT_OF_ORDER_SEQUENCE_NUMBER
        assert p.produce(topic, 0, record_batch(pid, 0, 12, _vals("r4", 3))) == (NONE, 12)
        # A new producer id still gets a different id after the restart.
        pid2, _ = p.init_producer_id()
        assert pid2 != pid
    finally:
        p.close()
    got = consume(broker.bootstrap, topic, 0, 15)
    assert [m["value"] for m in got] == [v for i in range(5) for v in _vals(f"r{i}", 3)]
