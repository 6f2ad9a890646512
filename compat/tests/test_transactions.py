"""Transactions through librdkafka (confluent-kafka): commit and abort seen through
read_committed and read_uncommitted consumers with exact offsets (markers take one),
consume-transform-produce with offsets sent to the transaction, zombie fencing, the
coordinator aborting a transaction past its timeout, and a kill -9 of the broker with a
transaction open."""
import shutil
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from conftest import EXTERNAL, RUNS, free_port
from grouputil import ConfiguredBroker
from kafkautil import JAVA_JAR, OP_TIMEOUT, create_topic, java_jar, run_json, watermarks
from test_kafka_cli import kafka_libs  # noqa: F401 (fixture)


def tx_producer(bootstrap, txn_id, **conf):
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id,
                  "linger.ms": 5, **conf})
    p.init_transactions(OP_TIMEOUT)
    return p


def read(bootstrap, topic, isolation, partition=0):
    """Every record from the start to the end, as (offset, value)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{uuid.uuid4().hex[:6]}",
                  "isolation.level": isolation, "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "enable.partition.eof": True})
    out = []
    try:
        c.assign([TopicPartition(topic, partition, 0)])
        deadline = time.monotonic() + OP_TIMEOUT
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    return out
                raise KafkaException(m.error())
            out.append((m.offset(), m.value()))
        raise AssertionError(f"did not reach the end of {topic}")
    finally:
        c.close()


def test_commit_and_abort_as_read_committed_and_uncommitted_see_them(bootstrap):
    topic = f"tx-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, 1)
    p = tx_producer(bootstrap, f"tid-{uuid.uuid4().hex[:8]}")
    p.begin_transaction()
    for i in range(5):
        p.produce(topic, key=b"k", value=f"c{i}".encode(), partition=0)
    p.commit_transaction(OP_TIMEOUT)
    p.begin_transaction()
    for i in range(3):
        p.produce(topic, key=b"k", value=f"a{i}".encode(), partition=0)
    p.flush()
    p.abort_transaction(OP_TIMEOUT)
    p.begin_transaction()
    p.produce(topic, key=b"k", value=b"last", partition=0)
    p.commit_transaction(OP_TIMEOUT)
    # Offsets 5, 9 and 11 hold the markers.
    committed = [(i, f"c{i}".encode()) for i in range(5)] + [(10, b"last")]
    aborted = [(6 + i, f"a{i}".encode()) for i in range(3)]
    assert read(bootstrap, topic, "read_committed") == committed
    assert read(bootstrap, topic, "read_uncommitted") == sorted(committed + aborted)
    assert watermarks(bootstrap, topic, 0) == (0, 12)


def test_open_transaction_is_invisible_to_read_committed_until_it_commits(bootstrap):
    topic = f"tx-open-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, 1)
    plain = Producer({"bootstrap.servers": bootstrap})
    plain.produce(topic, value=b"before", partition=0)
    plain.flush(OP_TIMEOUT)
    p = tx_producer(bootstrap, f"tid-{uuid.uuid4().hex[:8]}")
    p.begin_transaction()
    p.produce(topic, value=b"in-txn", partition=0)
    p.flush()
    plain.produce(topic, value=b"after", partition=0)
    plain.flush(OP_TIMEOUT)
    # The last stable offset stops at the open transaction: later records wait too.
    assert read(bootstrap, topic, "read_committed") == [(0, b"before")]
    p.commit_transaction(OP_TIMEOUT)
    assert read(bootstrap, topic, "read_committed") == [(0, b"before"), (1, b"in-txn"),
                                                        (2, b"after")]


def test_consume_transform_produce_commits_offsets_with_the_output(bootstrap):
    src, dst = f"ctp-in-{uuid.uuid4().hex[:6]}", f"ctp-out-{uuid.uuid4().hex[:6]}"
    create_topic(bootstrap, src, 1)
    create_topic(bootstrap, dst, 1)
    feed = Producer({"bootstrap.servers": bootstrap})
    for i in range(30):
        feed.produce(src, value=f"{i}".encode(), partition=0)
    feed.flush(OP_TIMEOUT)
    group = f"ctp-{uuid.uuid4().hex[:6]}"

    def run_round(count, commit):
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                      "isolation.level": "read_committed", "enable.auto.commit": False,
                      "auto.offset.reset": "earliest"})
        c.assign([TopicPartition(src, 0)])
        p = tx_producer(bootstrap, f"ctp-{group}")
        p.begin_transaction()
        got = []
        deadline = time.monotonic() + OP_TIMEOUT
        while len(got) < count and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append(m)
                p.produce(dst, value=b"x" + m.value(), partition=0)
        assert len(got) == count
        p.send_offsets_to_transaction([TopicPartition(src, 0, got[-1].offset() + 1)],
                                      c.consumer_group_metadata(), OP_TIMEOUT)
        if commit:
            p.commit_transaction(OP_TIMEOUT)
        else:
            p.abort_transaction(OP_TIMEOUT)
        c.close()

    run_round(10, True)
    run_round(10, False)   # output and offsets both discarded
    run_round(10, True)    # the same 10 again
    run_round(10, True)
    values = [v for _, v in read(bootstrap, dst, "read_committed")]
    assert values == [b"x%d" % i for i in range(30)]
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    (tp,) = c.committed([TopicPartition(src, 0)], timeout=OP_TIMEOUT)
    c.close()
    assert tp.offset == 30


def test_a_new_producer_with_the_same_id_fences_the_old_one(bootstrap):
    topic = f"tx-fence-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, 1)
    txn_id = f"tid-{uuid.uuid4().hex[:8]}"
    zombie = tx_producer(bootstrap, txn_id)
    zombie.begin_transaction()
    zombie.produce(topic, value=b"zombie", partition=0)
    zombie.flush()
    # The new instance's InitProducerId aborts the zombie's transaction and fences it.
    fresh = tx_producer(bootstrap, txn_id)
    fresh.begin_transaction()
    fresh.produce(topic, value=b"fresh", partition=0)
    fresh.commit_transaction(OP_TIMEOUT)
    with pytest.raises(KafkaException) as e:
        zombie.commit_transaction(OP_TIMEOUT)
    assert e.value.args[0].fatal() or e.value.args[0].txn_requires_abort(), e.value
    assert [v for _, v in read(bootstrap, topic, "read_committed")] == [b"fresh"]


@pytest.fixture
def txn_broker():
    if EXTERNAL:
        pytest.skip("needs a broker the suite starts itself")
    RUNS.mkdir(parents=True, exist_ok=True)
    data = RUNS / f"spate-txn-{uuid.uuid4().hex[:10]}"
    cfg = RUNS / (data.name + ".toml")
    cfg.write_text("transaction_abort_timed_out_check_interval_ms = 200\n"
                   "transactional_id_expiration_ms = 3000\n")
    broker = ConfiguredBroker(data, free_port(), {"SPATE_CONFIG": str(cfg)})
    broker.start()
    yield broker
    broker.stop()
    shutil.rmtree(broker.data_dir, ignore_errors=True)
    cfg.unlink(missing_ok=True)


def test_the_coordinator_aborts_a_transaction_past_its_timeout(txn_broker):
    bs = txn_broker.bootstrap
    topic = f"tx-timeout-{uuid.uuid4().hex[:8]}"
    create_topic(bs, topic, 1)
    p = tx_producer(bs, f"tid-{uuid.uuid4().hex[:8]}", **{"transaction.timeout.ms": 1500})
    p.begin_transaction()
    p.produce(topic, value=b"late", partition=0)
    p.flush()
    # Aborted by the coordinator: a marker follows, the record never becomes visible.
    deadline = time.monotonic() + 30
    while watermarks(bs, topic, 0)[1] < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert watermarks(bs, topic, 0) == (0, 2)
    assert read(bs, topic, "read_committed") == []
    assert read(bs, topic, "read_uncommitted") == [(0, b"late")]
    with pytest.raises(KafkaException):
        p.commit_transaction(OP_TIMEOUT)


def test_kill9_with_transactions_committed_and_open(txn_broker):
    bs = txn_broker.bootstrap
    topic = f"tx-kill-{uuid.uuid4().hex[:8]}"
    create_topic(bs, topic, 1)
    txn_id = f"tid-{uuid.uuid4().hex[:8]}"
    p = tx_producer(bs, txn_id)
    p.begin_transaction()
    for i in range(4):
        p.produce(topic, value=f"c{i}".encode(), partition=0)
    p.commit_transaction(OP_TIMEOUT)
    p.begin_transaction()
    p.produce(topic, value=b"open", partition=0)
    p.flush()
    txn_broker.kill()
    txn_broker.wait_port_closed()
    txn_broker.start()
    # The committed transaction survives; the open one is aborted when the producer's
    # id is initialised again (or by its timeout), and never shows.
    again = tx_producer(bs, txn_id)
    again.begin_transaction()
    again.produce(topic, value=b"after", partition=0)
    again.commit_transaction(OP_TIMEOUT)
    got = read(bs, topic, "read_committed")
    assert [v for _, v in got] == [b"c0", b"c1", b"c2", b"c3", b"after"]
    assert [o for o, _ in got][:4] == [0, 1, 2, 3]


def test_kafka_transactions_tool(bootstrap, kafka_libs):
    """kafka-transactions.sh list, describe, describe-producers and find-hanging."""
    from test_kafka_cli import tool
    topic = f"tx-tool-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, 1)
    txn_id = f"tool-{uuid.uuid4().hex[:8]}"
    p = tx_producer(bootstrap, txn_id, **{"transaction.timeout.ms": 60000})
    p.begin_transaction()
    p.produce(topic, value=b"open", partition=0)
    p.flush()
    b = ["--bootstrap-server", bootstrap]
    listing = tool(kafka_libs, "TransactionsCommand", *b, "list")
    line = next(l for l in listing.splitlines() if txn_id in l)
    assert "Ongoing" in line, listing
    described = tool(kafka_libs, "TransactionsCommand", *b, "describe",
                     "--transactional-id", txn_id)
    assert "Ongoing" in described and f"{topic}-0" in described, described
    producers = tool(kafka_libs, "TransactionsCommand", *b, "describe-producers",
                     "--topic", topic, "--partition", "0")
    # One producer, whose open transaction starts at offset 0 (the last column).
    rows = [l.split() for l in producers.splitlines()[1:] if l.strip()]
    assert len(rows) == 1 and rows[0][-1] == "0", producers
    hanging = tool(kafka_libs, "TransactionsCommand", *b, "find-hanging", "--broker-id", "0")
    assert txn_id not in hanging, hanging   # open well within its timeout: not hanging
    p.commit_transaction(OP_TIMEOUT)
    listing = tool(kafka_libs, "TransactionsCommand", *b, "list")
    line = next(l for l in listing.splitlines() if txn_id in l)
    assert "CompleteCommit" in line, listing


def test_java_transactional_producer_and_read_committed_consumer(bootstrap):
    """Java kafka-clients: commit, abort, commit, then a second producer with the same
    transactional id fences the first (whose open transaction is aborted)."""
    java_jar()
    topic, txn_id = f"tx-java-{uuid.uuid4().hex[:8]}", f"java-{uuid.uuid4().hex[:8]}"
    res = run_json(["java", "-XX:TieredStopAtLevel=1", "-Xmx512m", "-cp", str(JAVA_JAR),
                    "dev.spate.compat.Transactions", bootstrap, topic, txn_id], timeout=120)
    assert res["fenced"] == "ProducerFencedException", res
    # Markers at 5, 9, 11; the zombie's record at 12 is aborted by the fence (marker 13).
    assert res["read_committed"] == [f"{i}:c{i}" for i in range(5)] + ["10:last", "14:second"]
    assert res["read_uncommitted"] == [f"{i}:c{i}" for i in range(5)] + \
        [f"{6 + i}:a{i}" for i in range(3)] + ["10:last", "12:zombie", "14:second"]


def test_idle_transactional_ids_expire(txn_broker, kafka_libs):
    """An id without a transaction for transactional_id_expiration_ms is forgotten
    (kafka-transactions.sh no longer lists it); using it again starts afresh."""
    from test_kafka_cli import tool
    bs = txn_broker.bootstrap
    topic = f"tx-expire-{uuid.uuid4().hex[:8]}"
    create_topic(bs, topic, 1)
    txn_id = f"idle-{uuid.uuid4().hex[:8]}"
    p = tx_producer(bs, txn_id)
    p.begin_transaction()
    p.produce(topic, value=b"v", partition=0)
    p.commit_transaction(OP_TIMEOUT)
    p.flush()
    b = ["--bootstrap-server", bs]
    assert txn_id in tool(kafka_libs, "TransactionsCommand", *b, "list")
    deadline = time.monotonic() + 30
    while txn_id in tool(kafka_libs, "TransactionsCommand", *b, "list"):
        assert time.monotonic() < deadline, "the idle transactional id was not expired"
        time.sleep(1)
    again = tx_producer(bs, txn_id)
    again.begin_transaction()
    again.produce(topic, value=b"w", partition=0)
    again.commit_transaction(OP_TIMEOUT)
    assert [v for _, v in read(bs, topic, "read_committed")] == [b"v", b"w"]


def test_kill9_during_commit_is_all_or_nothing(txn_broker):
    """kill -9 of the broker while a transaction over 24 partitions commits, a few times:
    after the restart (and the producer's id initialised again, which finishes or aborts
    what was left), read_committed sees all of the transaction or none of it."""
    import threading
    bs = txn_broker.bootstrap
    parts = 24
    topic = f"tx-kill-commit-{uuid.uuid4().hex[:8]}"
    create_topic(bs, topic, parts)
    outcomes = []
    # From before the commit reaches the broker to after it is answered.
    for rnd, delay in enumerate((0.0, 0.002, 0.006, 0.02)):
        txn_id = f"kc-{rnd}-{uuid.uuid4().hex[:6]}"
        p = tx_producer(bs, txn_id)
        p.begin_transaction()
        for part in range(parts):
            p.produce(topic, value=f"r{rnd}-p{part}".encode(), partition=part)
        p.flush()
        t = threading.Thread(target=lambda: _try_commit(p), daemon=True)
        t.start()
        time.sleep(delay)
        txn_broker.kill()
        txn_broker.wait_port_closed()
        txn_broker.start()
        # A new instance of the id: finishes a decided commit, aborts an undecided one.
        tx_producer(bs, txn_id)
        values = read_all_partitions(bs, topic, parts)
        seen = [values.count(f"r{rnd}-p{part}".encode()) for part in range(parts)]
        assert set(seen) in ({0}, {1}), f"round {rnd}: half-visible commit {seen}"
        outcomes.append(seen[0])
    # Both ways may happen; what must not is a mix, checked above.
    assert len(outcomes) == 4


def read_all_partitions(bootstrap, topic, parts):
    """Every value read_committed sees in all partitions of `topic`."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"r-{uuid.uuid4().hex[:6]}",
                  "isolation.level": "read_committed", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "enable.partition.eof": True})
    out, ended = [], set()
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(parts)])
        deadline = time.monotonic() + OP_TIMEOUT
        while len(ended) < parts and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    ended.add(m.partition())
                    continue
                raise KafkaException(m.error())
            out.append(m.value())
        assert len(ended) == parts, f"did not reach the end of {topic}"
        return out
    finally:
        c.close()


def _try_commit(p):
    try:
        p.commit_transaction(10)
    except KafkaException:
        pass


def test_java_perf_test_in_transactions_keeps_every_record_in_order(bootstrap, kafka_libs):
    """Kafka's own ProducerPerformance as a transactional producer (transaction version
    2: Produce v12 adds partitions as it writes, EndTxn v5 bumps the epoch), five requests
    in flight over 8 partitions, a transaction every 50 ms: every record committed once,
    each partition's records in the order sent. (Pipelined first writes of a transaction
    must reach a partition in order while the coordinator is asked about the first.)"""
    import subprocess
    topic = f"tx-perf-{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic, 8)
    count = 100_000
    cmd = ["java", "-Xmx512m", "-XX:TieredStopAtLevel=1", "-cp", f"{kafka_libs}/*",
           "org.apache.kafka.tools.ProducerPerformance", "--topic", topic,
           "--num-records", str(count), "--record-size", "100", "--throughput", "-1",
           "--transactional-id", f"perf-{uuid.uuid4().hex[:6]}", "--transaction-duration-ms", "50",
           "--producer-props", f"bootstrap.servers={bootstrap}", "acks=all", "linger.ms=5",
           "batch.size=16384", "max.in.flight.requests.per.connection=5"]
    res = subprocess.run(cmd, capture_output=True, timeout=180, stdin=subprocess.DEVNULL)
    out = res.stdout.decode(errors="replace")
    assert res.returncode == 0 and f"{count} records sent" in out, out[-2000:] + res.stderr.decode()[-2000:]
    # read_committed sees every record; the markers account for the offsets in between.
    total = 0
    for p in range(8):
        records = read(bootstrap, topic, "read_committed", partition=p)
        offsets = [o for o, _ in records]
        assert offsets == sorted(offsets)
        total += len(records)
    assert total == count
