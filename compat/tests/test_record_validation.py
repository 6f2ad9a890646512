"""Record-level validation of produced batches. Each malformed RecordBatch v2 is sent in
a raw Produce v7 request (CRC correct, so only record-level checks can catch it); the
answer must carry the exact error code, the high watermark must not move, and the
topic read back by confluent-kafka and kafka-python must hold exactly the good records
produced before and after, nothing else. Compression bombs must be refused without the
broker's memory growing with what they inflate to.

Expected codes are Spate's (docs/codec.md, "Record validation"). Where Kafka 4.4 answers
differently the case carries Kafka's code too; run the file against a real Kafka with
SPATE_COMPAT_REFERENCE=kafka SPATE_COMPAT_BOOTSTRAP=host:port to check those."""
import gzip
import os
import random
import struct
import time
import zlib

import crc32c
import lz4.frame
import pytest
import snappy
import zstandard

from grouputil import RawClient, varint
from kafkautil import OP_TIMEOUT, consume, create_topic, watermarks

pytestmark = pytest.mark.timeout(240)

REFERENCE_KAFKA = os.environ.get("SPATE_COMPAT_REFERENCE") == "kafka"

NONE = 0
UNKNOWN_SERVER_ERROR = -1
CORRUPT_MESSAGE = 2
MESSAGE_TOO_LARGE = 10
INVALID_TIMESTAMP = 32
UNSUPPORTED_COMPRESSION_TYPE = 76
INVALID_RECORD = 87

GZIP, SNAPPY, LZ4, ZSTD = 1, 2, 3, 4


def varlong(n):
    return varint(n, 64)


def record(offset_delta, value, key=None, ts_delta=0, headers=(), length_adjust=0):
    body = struct.pack(">b", 0) + varlong(ts_delta) + varint(offset_delta)
    body += varint(-1) if key is None else varint(len(key)) + key
    body += varint(-1) if value is None else varint(len(value)) + value
    body += varint(len(headers))
    for k, v in headers:
        body += varint(len(k)) + k + (varint(-1) if v is None else varint(len(v)) + v)
    return varint(len(body) + length_adjust) + body


def _record_with_header_count(n):
    # attributes, timestampDelta 0, offsetDelta 0, null key, empty value, header count n
    body = b"\x00" + varint(0) + varint(0) + varint(-1) + varint(0) + varint(n)
    return varint(len(body)) + body


def records(values, **kw):
    return b"".join(record(i, v, **kw) for i, v in enumerate(values))


def compress(codec, raw):
    if codec == GZIP:
        return gzip.compress(raw)
    if codec == SNAPPY:
        return snappy.compress(raw)          # raw snappy, as librdkafka writes it
    if codec == LZ4:
        return lz4.frame.compress(raw)
    if codec == ZSTD:
        return zstandard.ZstdCompressor().compress(raw)
    return raw


def batch(body, count, last_offset_delta=None, attrs=0, base_ts=None, max_ts=None,
          pid=-1, epoch=-1, seq=-1):
    """A RecordBatch v2 around an already encoded (and maybe compressed) records body,
    with a correct CRC."""
    now = int(time.time() * 1000)
    base_ts = now if base_ts is None else base_ts
    max_ts = base_ts if max_ts is None else max_ts
    lod = count - 1 if last_offset_delta is None else last_offset_delta
    after_crc = struct.pack(">hiqqqhii", attrs, lod, base_ts, max_ts, pid, epoch, seq, count) + body
    after_len = struct.pack(">ibI", -1, 2, crc32c.crc32c(after_crc)) + after_crc
    return struct.pack(">qi", 0, len(after_len)) + after_len


def good(values, codec=0):
    return batch(compress(codec, records(values)), len(values), attrs=codec)


def _garbage(n, seed):
    rnd = random.Random(seed)
    return bytes(rnd.randrange(256) for _ in range(n))


def _zeros_stream(codec, total, value_record=False):
    """`total` zero bytes compressed without holding them: either raw zeros, or one
    record (count 1) whose value is `total` zero bytes (framing valid all along)."""
    chunk = bytes(1 << 20)
    prefix = b""
    if value_record:
        # timestampDelta, offsetDelta, null key, value length
        body_rest = varlong(0) + varint(0) + varint(-1) + varint(total)
        body_len = 1 + len(body_rest) + total + 1            # attrs .. value, headers
        prefix = varint(body_len) + b"\x00" + body_rest
    if codec == ZSTD:
        c = zstandard.ZstdCompressor(level=3).compressobj()
    else:
        c = zlib.compressobj(9, zlib.DEFLATED, 31)           # gzip container
    out = [c.compress(prefix)]
    for _ in range(total // len(chunk)):
        out.append(c.compress(chunk))
    if value_record:
        out.append(c.compress(b"\x00"))                      # header count 0
    out.append(c.flush())
    return b"".join(out)


# (name, batch, Spate's code, Kafka 4.4's code when it differs or None)
def malformed_cases():
    now = int(time.time() * 1000)
    three = [b"m-0", b"m-1", b"m-2"]
    rec = records(three)
    cases = [
        ("count larger than records", batch(rec, 4), INVALID_RECORD, None),
        ("count smaller than records", batch(rec, 2), INVALID_RECORD, None),
        ("count zero", batch(b"", 0, last_offset_delta=0), INVALID_RECORD, None),
        ("truncated record", batch(rec[:-2], 3), INVALID_RECORD, None),
        ("record length too long", batch(
            record(0, b"a") + record(1, b"b", length_adjust=3) + record(2, b"c"), 3),
         INVALID_RECORD, None),
        ("record length too short", batch(
            record(0, b"a") + record(1, b"bbbb", length_adjust=-2) + record(2, b"c"), 3),
         INVALID_RECORD, None),
        ("random bytes as records", batch(_garbage(200, 1), 3), INVALID_RECORD, None),
        ("lastOffsetDelta 1000", batch(rec, 3, last_offset_delta=1000), INVALID_RECORD, None),
        ("negative header count", batch(_record_with_header_count(-2), 1),
         INVALID_RECORD, None),
        ("timestamp delta overflow", batch(
            record(0, b"a") + record(1, b"b", ts_delta=(1 << 63) - 1), 2, base_ts=now),
         INVALID_TIMESTAMP, None),
    ]
    for codec, name in ((GZIP, "gzip"), (SNAPPY, "snappy"), (LZ4, "lz4"), (ZSTD, "zstd")):
        # Kafka: the decoder's IOException surfaces as a KafkaException, answered as
        # UNKNOWN_SERVER_ERROR.
        cases.append((f"garbage {name}", batch(_garbage(300, codec), 3, attrs=codec),
                      INVALID_RECORD, UNKNOWN_SERVER_ERROR))
        cases.append((f"{name} with count larger than records",
                      batch(compress(codec, rec), 4, attrs=codec), INVALID_RECORD, None))
        cases.append((f"{name} with trailing record",
                      batch(compress(codec, rec), 2, attrs=codec), INVALID_RECORD, None))
        cases.append((f"{name} with a truncated stream",
                      batch(compress(codec, rec)[:-3], 3, attrs=codec), INVALID_RECORD,
                      UNKNOWN_SERVER_ERROR))
    for codec in (5, 6, 7):
        # Kafka: CompressionType.forId throws IllegalArgumentException, answered as
        # UNKNOWN_SERVER_ERROR.
        cases.append((f"unknown codec {codec}", batch(rec, 3, attrs=codec),
                      UNSUPPORTED_COMPRESSION_TYPE, UNKNOWN_SERVER_ERROR))
    return cases


class RawProducer:
    def __init__(self, bootstrap):
        self.bootstrap = bootstrap
        self.raw = RawClient.to(bootstrap)

    def close(self):
        self.raw.close()

    def produce(self, topic, data, partition=0):
        """Produce v7, acks=-1: (error_code, base_offset); 'closed' if the broker closed
        the connection instead of answering."""
        try:
            return self.raw.produce(topic, partition, data)
        except (ConnectionError, OSError):
            self.raw.close()
            self.raw = RawClient.to(self.bootstrap)
            return "closed", -1


def _high_watermark(bootstrap, topic):
    return watermarks(bootstrap, topic, 0)[1]


def _expected(spate_code, kafka_code):
    return kafka_code if REFERENCE_KAFKA and kafka_code is not None else spate_code


def _read_back(bootstrap, topic, values):
    """confluent-kafka (librdkafka) and kafka-python must read exactly `values`."""
    got = consume(bootstrap, topic, 0, len(values))
    assert [m["value"] for m in got] == values
    assert [m["offset"] for m in got] == list(range(len(values)))
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                      auto_offset_reset="earliest", consumer_timeout_ms=3000)
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        seen = []
        deadline = time.monotonic() + OP_TIMEOUT
        while time.monotonic() < deadline:
            batch_ = c.poll(timeout_ms=500)
            for msgs in batch_.values():
                seen += [(m.offset, m.value) for m in msgs]
            if len(seen) >= len(values):
                extra = c.poll(timeout_ms=1000)
                seen += [(m.offset, m.value) for msgs in extra.values() for m in msgs]
                break
        assert seen == list(enumerate(values)), seen
    finally:
        c.close()


def test_malformed_batches_refused(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 1)
    p = RawProducer(bootstrap)
    written = []
    try:
        before = [b"before-0", b"before-1"]
        assert p.produce(topic_name, good(before)) == (NONE, 0)
        written += before
        hw = _high_watermark(bootstrap, topic_name)
        assert hw == 2
        mismatches = []
        for name, data, spate_code, kafka_code in malformed_cases():
            want = _expected(spate_code, kafka_code)
            err, _ = p.produce(topic_name, data)
            now_hw = _high_watermark(bootstrap, topic_name)
            if err != want or now_hw != hw:
                mismatches.append(f"{name}: code {err} (want {want}), high watermark {now_hw} "
                                  f"(want {hw})")
        assert not mismatches, "\n".join(mismatches)
        # Good batches in every codec are still accepted afterwards.
        for codec in (0, GZIP, SNAPPY, LZ4, ZSTD):
            vals = [f"after-{codec}-{i}".encode() for i in range(3)]
            assert p.produce(topic_name, good(vals, codec)) == (NONE, len(written)), codec
            written += vals
    finally:
        p.close()
    _read_back(bootstrap, topic_name, written)


@pytest.mark.skipif(REFERENCE_KAFKA, reason="Kafka stores uncompressed batches with "
                    "non-consecutive offset deltas as they are (and rewrites compressed ones)")
def test_non_consecutive_offset_deltas_refused(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 1)
    p = RawProducer(bootstrap)
    try:
        body = record(0, b"a") + record(2, b"b") + record(1, b"c")
        assert p.produce(topic_name, batch(body, 3))[0] == INVALID_RECORD
        assert p.produce(topic_name, batch(compress(LZ4, body), 3, attrs=LZ4))[0] == \
            INVALID_RECORD
        assert _high_watermark(bootstrap, topic_name) == 0
        assert p.produce(topic_name, good([b"ok"])) == (NONE, 0)
    finally:
        p.close()
    _read_back(bootstrap, topic_name, [b"ok"])


def _rss_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


def test_compression_bombs_refused_with_bounded_memory(bootstrap, session_broker, topic_name):
    create_topic(bootstrap, topic_name, 1)
    bombs = [
        # 1 GiB of zeros as the "records" (the zstd bomb): bad framing at once.
        ("zstd 1 GiB zeros", batch(_zeros_stream(ZSTD, 1 << 30), 3, attrs=ZSTD),
         INVALID_RECORD, None),
        ("gzip 512 MiB zeros", batch(_zeros_stream(GZIP, 512 << 20), 3, attrs=GZIP),
         INVALID_RECORD, None),
        # One well-framed record whose value is the zeros: only the inflate cap stops
        # it. Kafka accepts these (it has no cap; max.message.bytes applies to the
        # compressed size).
        ("zstd 1 GiB record", batch(_zeros_stream(ZSTD, 1 << 30, value_record=True), 1,
                                    attrs=ZSTD), MESSAGE_TOO_LARGE, NONE),
        ("gzip 512 MiB record", batch(_zeros_stream(GZIP, 512 << 20, value_record=True), 1,
                                      attrs=GZIP), MESSAGE_TOO_LARGE, NONE),
    ]
    for name, data, _, _ in bombs:
        assert len(data) < 1_000_000, f"{name}: {len(data)} bytes, over max.message.bytes"
    p = RawProducer(bootstrap)
    try:
        assert p.produce(topic_name, good([b"first"])) == (NONE, 0)
        pid = session_broker.proc.pid if session_broker is not None else None
        for name, data, spate_code, kafka_code in bombs:
            want = _expected(spate_code, kafka_code)
            started = time.monotonic()
            err, _ = p.produce(topic_name, data)
            took = time.monotonic() - started
            assert err == want, f"{name}: code {err}, want {want}"
            if want != NONE:
                assert _high_watermark(bootstrap, topic_name) == 1, name
            if pid is not None:
                rss = _rss_kib(pid, "VmRSS")
                print(f"{name}: answered {err} in {took:.2f}s, broker VmRSS {rss >> 10} MiB")
                assert rss < 300 << 10, f"{name}: broker RSS {rss >> 10} MiB"
        if pid is not None:
            hwm = _rss_kib(pid, "VmHWM")
            print(f"broker peak RSS (VmHWM) {hwm >> 10} MiB")
            assert hwm < 400 << 10, f"broker peak RSS {hwm >> 10} MiB"
        if REFERENCE_KAFKA:
            return
        assert p.produce(topic_name, good([b"last"])) == (NONE, 1)
    finally:
        p.close()
    _read_back(bootstrap, topic_name, [b"first", b"last"])
