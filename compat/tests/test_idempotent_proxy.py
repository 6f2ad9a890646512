"""The idempotent producer (confluent-kafka / librdkafka, enable.idempotence) through a TCP
proxy that cuts its connections mid-stream: requests are lost half-sent, or written by
the broker with the answer lost (the retry is then a duplicate the broker must answer
with the original offset). Every record must end up in the log exactly once, in order,
at contiguous offsets.

A dedicated spate advertises the proxy's address (SPATE_ADVERTISED_LISTENER) so the
client keeps talking through the proxy after bootstrap."""
import shutil
import time
import uuid

import pytest
from confluent_kafka import Producer

from conftest import RUNS, free_port
from grouputil import ConfiguredBroker, CuttingProxy
from kafkautil import consume, create_topic

pytestmark = pytest.mark.timeout(150)

PARTS = 3
COUNT = 3000


@pytest.fixture
def proxied_broker():
    RUNS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proxy = CuttingProxy(port, [])
    broker = ConfiguredBroker(RUNS / f"spate-proxy-{uuid.uuid4().hex[:10]}", port,
                              {"SPATE_ADVERTISED_LISTENER": f"127.0.0.1:{proxy.port}"})
    broker.start()
    proxy.start()
    yield broker, proxy
    proxy.stop()
    broker.stop()
    shutil.rmtree(broker.data_dir, ignore_errors=True)


def _value(i):
    return f"v{i}-".encode() + b"x" * 200


SCHEDULES = {
    # (direction, bytes after the connection's first Produce request started)
    "answers-lost": [("down", 20), ("down", 400), ("down", 150), ("down", 800)],
    "requests-cut": [("up", 10), ("up", 20000), ("up", 700), ("up", 30000)],
    "mixed": [("down", 40), ("up", 5000), ("down", 300), ("up", 90), ("down", 1)],
}


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_idempotent_producer_survives_cut_connections(proxied_broker, schedule):
    broker, proxy = proxied_broker
    via_proxy = f"127.0.0.1:{proxy.port}"
    topic = f"idem-proxy-{schedule}-{uuid.uuid4().hex[:6]}"
    create_topic(via_proxy, topic, PARTS)
    proxy.schedule = list(SCHEDULES[schedule])

    reports = []
    p = Producer({"bootstrap.servers": via_proxy, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 2, "batch.num.messages": 20,
                  "max.in.flight.requests.per.connection": 5,
                  "message.timeout.ms": 90000, "retry.backoff.ms": 50,
                  "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500,
                  "socket.timeout.ms": 10000})

    def cb(err, msg):
        reports.append((err, msg.partition(), msg.offset(), msg.value()))

    deadline = time.monotonic() + 100
    for i in range(COUNT):
        while True:
            try:
                p.produce(topic, key=f"k{i}".encode(), value=_value(i),
                          partition=i % PARTS, on_delivery=cb)
                break
            except BufferError:
                p.poll(0.05)
        if i % 100 == 99:           # spread the records over time and many requests
            p.poll(0.01)
    left = p.flush(max(1, deadline - time.monotonic()))
    assert left == 0, f"{left} records undelivered; cuts so far {proxy.cuts_done}"
    assert proxy.cuts_done == [tuple(x) for x in SCHEDULES[schedule]], \
        f"the proxy cut {proxy.cuts_done}, planned {SCHEDULES[schedule]}"

    errors = [(e, v) for e, _, _, v in reports if e is not None]
    assert not errors, errors[:5]
    assert len(reports) == COUNT
    # Delivery reports: per partition, in production order, offsets 0..n-1.
    by_part = {}
    for _, part, off, val in reports:
        by_part.setdefault(part, []).append((off, val))
    for part in range(PARTS):
        want = [_value(i) for i in range(part, COUNT, PARTS)]
        got = sorted(by_part[part])
        assert [o for o, _ in got] == list(range(len(want))), f"partition {part} offsets"
        assert [v for _, v in got] == want, f"partition {part} values"
    # The log itself: exactly the records, once, in order, contiguous.
    for part in range(PARTS):
        want = [_value(i) for i in range(part, COUNT, PARTS)]
        got = consume(via_proxy, topic, part, len(want))
        assert [m["offset"] for m in got] == list(range(len(want)))
        assert [m["value"] for m in got] == want, f"partition {part}"
