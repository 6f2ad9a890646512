"""KIP-890 on the wire, request by request (what clients only do by accident):
part 1, a transactional write to a partition the producer never added to its transaction
is refused (TRANSACTION_ABORTABLE; INVALID_TXN_STATE for older clients), so no hanging transaction can start; part 2
(transaction version 2, finalized as on Kafka 4), a Produce v12+ write adds its partition
to the transaction itself, and every EndTxn v5 bumps the producer epoch, which fences
the late writes of the transaction that just ended. Kafka 4.4 is the reference."""
import struct
import time
import uuid

import crc32c
import pytest

from flexraw import TAGS, FlexClient, carray
from grouputil import cstr, uvarint, varint
from kafkautil import create_topic
from test_transactions import read as read_once

pytestmark = pytest.mark.timeout(120)

INVALID_PRODUCER_EPOCH = 47
TRANSACTION_ABORTABLE = 120
CONCURRENT_TRANSACTIONS = 51
# Coordinator loading or not yet elected: retried.
COORDINATOR_RETRY = {14, 15, 16}
TRANSACTIONAL = 0x10


def txn_batch(pid, epoch, seq, values):
    """A transactional RecordBatch v2 (magic 2, uncompressed)."""
    ts = int(time.time() * 1000)
    recs = b""
    for i, v in enumerate(values):
        body = (struct.pack(">b", 0) + varint(0, 64) + varint(i, 64) + varint(-1, 64)
                + varint(len(v), 64) + v + varint(0, 64))
        recs += varint(len(body), 64) + body
    after_crc = (struct.pack(">hiqqqhii", TRANSACTIONAL, len(values) - 1, ts, ts, pid, epoch,
                             seq, len(values)) + recs)
    after_len = struct.pack(">ibI", -1, 2, crc32c.crc32c(after_crc)) + after_crc
    return struct.pack(">qi", 0, len(after_len)) + after_len


class TxnClient:
    def __init__(self, bootstrap, txn_id):
        self.c = FlexClient(bootstrap)
        self.txn_id = txn_id

    def close(self):
        self.c.close()

    def _retry(self, call):
        deadline = time.monotonic() + 30
        while True:
            out = call()
            if out[0] not in COORDINATOR_RETRY | {CONCURRENT_TRANSACTIONS} or time.monotonic() > deadline:
                return out
            time.sleep(0.1)

    def find_coordinator(self):
        """FindCoordinator v4 for the transactional id (on Kafka this also creates
        `__transaction_state`): its error code."""
        body = struct.pack(">b", 1) + carray([cstr(self.txn_id)]) + TAGS

        def call():
            r = self.c.call(10, 4, body)
            r.i32()
            r.uvarint()  # one coordinator
            r.str()
            r.i32()
            r.str()
            r.i32()
            return (r.i16(),)
        return self._retry(call)[0]

    def init(self):
        """FindCoordinator, then InitProducerId v5: (error, producer id, epoch)."""
        assert self.find_coordinator() == 0
        body = cstr(self.txn_id) + struct.pack(">iqh", 60000, -1, -1) + TAGS

        def call():
            r = self.c.call(22, 5, body)
            r.i32()
            return r.i16(), r.take(">q"), r.i16()
        return self._retry(call)

    def add_partitions(self, pid, epoch, topic, partitions):
        """AddPartitionsToTxn v3 (transaction version 1): the partitions' error codes."""
        body = (cstr(self.txn_id) + struct.pack(">qh", pid, epoch)
                + carray([cstr(topic) + carray([struct.pack(">i", p) for p in partitions]) + TAGS])
                + TAGS)

        def call():
            r = self.c.call(24, 3, body)
            r.i32()
            codes = []
            for _ in range(r.uvarint() - 1):
                r.str()
                for _ in range(r.uvarint() - 1):
                    r.i32()
                    codes.append(r.i16())
                    r.tags()
                r.tags()
            return (max(codes, key=abs),)
        return self._retry(call)[0]

    def produce(self, version, topic, partition, batch):
        """Produce v11/v12 (acks=-1): (error, base offset)."""
        body = (cstr(self.txn_id) + struct.pack(">hi", -1, 30000)
                + carray([cstr(topic) + carray([
                    struct.pack(">i", partition) + uvarint(len(batch) + 1) + batch + TAGS]) + TAGS])
                + TAGS)
        r = self.c.call(0, version, body)
        r.uvarint()  # one topic
        r.str()
        r.uvarint()  # one partition
        r.i32()
        return r.i16(), r.take(">q")

    def end(self, version, pid, epoch, commit):
        """EndTxn: (error, producer id, epoch) (-1s before v5)."""
        body = cstr(self.txn_id) + struct.pack(">qh?", pid, epoch, commit) + TAGS

        def call():
            r = self.c.call(26, version, body)
            r.i32()
            err = r.i16()
            if version >= 5:
                return err, r.take(">q"), r.i16()
            return err, -1, -1
        return self._retry(call)


def read(bootstrap, topic, isolation, expected_count=1):
    """The partition's records once at least `expected_count` are visible (markers are
    written after EndTxn answers, so read_committed may lag it)."""
    deadline = time.monotonic() + 30
    while True:
        out = read_once(bootstrap, topic, isolation)
        if len(out) >= expected_count or time.monotonic() > deadline:
            return out
        time.sleep(0.1)


@pytest.fixture
def client(bootstrap):
    c = TxnClient(bootstrap, f"kip890-{uuid.uuid4().hex[:8]}")
    yield c
    c.close()


def test_a_write_outside_the_transaction_is_refused(bootstrap, client):
    topic = f"kip890-a-{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, topic, partitions=1)
    err, pid, epoch = client.init()
    assert err == 0
    # Transaction version 1 (Produce v11): the partition must have been added.
    assert client.produce(11, topic, 0, txn_batch(pid, epoch, 0, [b"stray"])) == (TRANSACTION_ABORTABLE, -1)
    assert client.add_partitions(pid, epoch, topic, [0]) == 0
    assert client.produce(11, topic, 0, txn_batch(pid, epoch, 0, [b"kept"])) == (0, 0)
    assert client.end(4, pid, epoch, True)[0] == 0
    assert read(bootstrap, topic, "read_committed") == [(0, b"kept")]


def test_version_2_adds_partitions_on_write_and_bumps_the_epoch_per_transaction(bootstrap, client):
    topic = f"kip890-b-{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, topic, partitions=1)
    err, pid, epoch = client.init()
    assert err == 0
    # Produce v12 joins the partition to the transaction: no AddPartitionsToTxn.
    assert client.produce(12, topic, 0, txn_batch(pid, epoch, 0, [b"one"])) == (0, 0)
    assert client.end(5, pid, epoch, True) == (0, pid, epoch + 1)
    # Once the marker is in (read_committed sees the record), a late write of the
    # committed transaction is fenced by the bump. (Before it, the write would still
    # join the transaction being committed, on Kafka too.)
    assert read(bootstrap, topic, "read_committed") == [(0, b"one")]
    err, _ = client.produce(12, topic, 0, txn_batch(pid, epoch, 1, [b"late"]))
    assert err == INVALID_PRODUCER_EPOCH
    # The next transaction runs at the bumped epoch, from sequence 0.
    assert client.produce(12, topic, 0, txn_batch(pid, epoch + 1, 0, [b"two"])) == (0, 2)
    assert client.end(5, pid, epoch + 1, False) == (0, pid, epoch + 2)
    # A retried EndTxn (the answer was lost) gets the same answer.
    assert client.end(5, pid, epoch + 1, False) == (0, pid, epoch + 2)
    # Aborting a transaction none of whose writes arrived only moves the epoch on
    # (franz-go does this when its produces failed before reaching the broker).
    assert client.end(5, pid, epoch + 2, False) == (0, pid, epoch + 3)
    assert read(bootstrap, topic, "read_committed") == [(0, b"one")]
    assert read(bootstrap, topic, "read_uncommitted", 2) == [(0, b"one"), (2, b"two")]
