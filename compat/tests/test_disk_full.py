"""No acknowledged record is lost when a write fails: the broker's data dir on a small
file system that the test fills up with a ballast file.

Each test mounts its own small file system under target/compat/runs/ (tmpfs, where spate
falls back to buffered I/O since tmpfs rejects O_DIRECT, or a loop-mounted ext4 image,
spate's O_DIRECT path), starts a private spate on it, fills it and then frees it again.
The three variants meet the full disk in a buffered write, in fallocate and in an
O_DIRECT write. The contract:

* every record whose delivery was acknowledged (a librdkafka delivery report without
  error, a Java callback without exception) is read back at exactly the acknowledged
  offset with exactly its value: while the broker runs, after a SIGTERM restart and after
  a kill -9 restart; no offset is acknowledged to two different records;
* while the partition's file system is full, Produce is answered KAFKA_STORAGE_ERROR (56),
  an idempotent producer's retry of the failed batch included (it must not be taken
  for a duplicate of a batch that was never written); the broker keeps running, serving
  reads and metadata;
* once space is freed the partition is writable again without a restart, within seconds,
  and librdkafka's pending records are delivered: in order, each once, at contiguous
  offsets.

Needs root (mount); skipped otherwise, and against an external broker."""
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from conftest import EXTERNAL, RUNS, free_port
from grouputil import ConfiguredBroker, RawClient
from kafkautil import admin, create_topic, java_jar, produce, wait_topic, watermarks
from test_idempotent_raw import record_batch

pytestmark = pytest.mark.timeout(240)

KAFKA_STORAGE_ERROR = 56
MIB = 1 << 20
VALUE_BYTES = 1000
# Small settings so that a file system of a few dozen MiB is enough: segments grow in
# fallocate steps of 1 MiB (default 16 MiB; 0: no fallocate, the write itself meets the
# full disk) and roll at 1 MiB (Kafka's minimum).
BROKER_TOML = """\
segment_preallocate_bytes = {prealloc}
offsets_topic_num_partitions = 1
"""
# (file system, its size in MiB, segment_preallocate_bytes): where the disk-full error
# comes from. tmpfs, no preallocation: a buffered write fails (possibly after a short
# write); ext4 with preallocation: fallocate of the next step fails; ext4 without: an
# O_DIRECT write fails.
TMPFS_WRITE = ("tmpfs", 24, 0)
EXT4_FALLOCATE = ("ext4", 48, MIB)
EXT4_DIRECT_WRITE = ("ext4", 48, 0)
TOPIC_CONFIG = {"segment.bytes": str(MIB), "retention.ms": "-1"}
# How long after the ballast is removed a write must succeed again (the broker retries a
# failed partition with a backoff of at most a few seconds).
WRITABLE_AGAIN_S = 15


def _run(cmd, timeout=60):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _unmount_stale():
    """Unmount what an earlier run left mounted because it was killed before its teardown
    (pytest-timeout ends the process): mounts under RUNS whose owning pid is gone."""
    try:
        mounts = [line.split()[1] for line in open("/proc/mounts")]
    except OSError:
        return
    for m in mounts:
        mnt = Path(m)
        if mnt.parent.parent != RUNS or not mnt.parent.name.startswith("fs-"):
            continue
        try:
            owner = int((mnt.parent / "owner").read_text())
        except (OSError, ValueError):
            continue
        if owner != os.getpid() and not Path(f"/proc/{owner}").exists():
            _run(["umount", "-l", m])
            shutil.rmtree(mnt.parent, ignore_errors=True)


class SmallFs:
    """A small file system mounted under RUNS, and a ballast file that fills it."""

    def __init__(self, kind, size_mb):
        self.kind = kind
        self.base = RUNS / f"fs-{kind}-{uuid.uuid4().hex[:10]}"
        self.mnt = self.base / "mnt"
        self.image = self.base / "fs.img"
        self.size_mb = size_mb
        self.mounted = False
        self.ballast = self.mnt / "ballast"

    def mount(self):
        if os.geteuid() != 0:
            pytest.skip("mounting a small file system needs root")
        self.mnt.mkdir(parents=True)
        (self.base / "owner").write_text(str(os.getpid()))
        if self.kind == "tmpfs":
            cmd = ["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m", "tmpfs", str(self.mnt)]
        else:
            if shutil.which("mkfs.ext4") is None:
                pytest.skip("mkfs.ext4 is not installed")
            with open(self.image, "wb") as f:
                f.truncate(self.size_mb * MIB)
            mk = _run(["mkfs.ext4", "-q", "-F", "-m", "0", str(self.image)])
            if mk.returncode != 0:
                pytest.skip(f"mkfs.ext4 failed: {mk.stderr.strip()}")
            cmd = ["mount", "-o", "loop", str(self.image), str(self.mnt)]
        res = _run(cmd)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a {self.kind} file system: {res.stderr.strip()}")
        self.mounted = True

    def unmount(self):
        if self.mounted:
            if _run(["umount", str(self.mnt)]).returncode != 0:
                _run(["umount", "-l", str(self.mnt)])
            self.mounted = False
        shutil.rmtree(self.base, ignore_errors=True)

    def avail(self):
        st = os.statvfs(self.mnt)
        return st.f_bavail * st.f_frsize

    def fill(self, leave):
        """Write the ballast until the file system is full, then shrink it so that about
        `leave` bytes are free."""
        fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        chunk = b"\0" * (256 << 10)
        size = 0
        try:
            while True:
                try:
                    n = os.write(fd, chunk)
                except OSError as e:
                    if e.errno != 28:   # ENOSPC
                        raise
                    break
                size += n
                if n < len(chunk):
                    break
            os.fsync(fd)
            os.ftruncate(fd, max(0, size - leave))
            os.fsync(fd)
        finally:
            os.close(fd)
        return self.avail()

    def free(self):
        os.unlink(self.ballast)
        # Commit the unlink (ext4 reuses freed blocks once the journal has committed it).
        fd = os.open(self.mnt, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class DiskBroker(ConfiguredBroker):
    """A spate whose data dir is on the small file system; its log stays outside it."""

    def __init__(self, fs, prealloc):
        conf = fs.base / "spate.toml"
        conf.write_text(BROKER_TOML.format(prealloc=prealloc))
        super().__init__(fs.mnt / "data", free_port(), {"SPATE_CONFIG": str(conf)})
        self.log_path = fs.base / "spate.log"


@pytest.fixture
def disk(request):
    """(SmallFs, DiskBroker) on a file system of the parametrized kind."""
    if EXTERNAL:
        pytest.skip("disk-full tests need a broker the suite starts itself")
    kind, size_mb, prealloc = request.param
    RUNS.mkdir(parents=True, exist_ok=True)
    _unmount_stale()
    fs = SmallFs(kind, size_mb)
    broker = None
    try:
        fs.mount()
        broker = DiskBroker(fs, prealloc)
        broker.start()
        yield fs, broker
    finally:
        if broker is not None:
            broker.kill()
            broker.wait_port_closed()
            # Keep the broker's log next to the other runs' logs.
            if broker.log_path.exists():
                shutil.copy(broker.log_path, RUNS / f"{fs.base.name}.log")
        fs.unmount()


# ---------------------------------------------------------------------------------------
# Raw Produce (v7, acks=-1): a probe whose error code we see as the broker sent it.

class RawProducer:
    def __init__(self, bootstrap, timeout=20):
        self.raw = RawClient.to(bootstrap, timeout=timeout)

    def close(self):
        self.raw.close()

    def init_producer_id(self):
        return self.raw.init_producer_id()

    def produce(self, topic, partition, batch):
        """(error_code, base_offset)."""
        return self.raw.produce(topic, partition, batch, timeout_ms=10000)


def plain_batch(values):
    """A batch without producer id (not idempotent)."""
    return record_batch(-1, -1, -1, values)


# The probes are large (512 KiB) so that they do not fit in what a failed write of the
# producer's ~100 KB batches may have left free.
PLAIN_PROBE = b"plain-probe-" + b"p" * (512 << 10)
IDEM_PROBE = b"idem-probe-" + b"i" * (512 << 10)


# ---------------------------------------------------------------------------------------
# Checks.

def read_log(bootstrap, topic, partition, timeout=60):
    """The whole partition, [(offset, value)], from offset 0 to the high watermark."""
    low, high = watermarks(bootstrap, topic, partition)
    assert low == 0, f"log start offset {low}"
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "compat-unused",
                  "enable.auto.commit": False, "enable.auto.offset.store": False,
                  "auto.offset.reset": "error", "fetch.wait.max.ms": 100,
                  "enable.partition.eof": False})
    log = []
    try:
        c.assign([TopicPartition(topic, partition, 0)])
        deadline = time.monotonic() + timeout
        while high and (not log or log[-1][0] < high - 1) and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                raise KafkaException(m.error())
            log.append((m.offset(), m.value()))
    finally:
        c.close()
    assert not high or (log and log[-1][0] == high - 1), \
        f"read up to {log[-1][0] if log else None} of a log ending at {high} in {timeout}s"
    return log


def assert_contiguous(log, when):
    assert [o for o, _ in log] == list(range(len(log))), \
        f"{when}: the log's offsets are not 0..{len(log) - 1}"


def assert_acks_kept(log, acks, when):
    """`acks` [(offset, value)] against the log [(offset, value)]: no offset acknowledged
    to two different records, no record acknowledged at two offsets, every acknowledged
    record in the log at its offset with its value. Returns {offset: value}. One message
    lists every violation (the counts tell the failure modes apart)."""
    by_off, clashes = {}, set()
    for o, v in acks:
        if o in by_off and by_off[o] != v:
            clashes.add(o)
        by_off.setdefault(o, v)
    values = [v for _, v in acks]
    twice = len(values) - len(set(values))
    in_log = dict(log)
    lost = [(o, v) for o, v in acks if in_log.get(o) != v]
    if clashes or twice or lost:
        msg = [f"{when}: {len(acks)} acknowledgements, log end offset {len(log)}"]
        if clashes:
            msg.append(f"{len(clashes)} offsets acknowledged to two different records "
                       f"(e.g. {sorted(clashes)[:3]})")
        if twice:
            msg.append(f"{twice} records acknowledged more than once")
        if lost:
            o, v = lost[0]
            msg.append(f"{len(lost)} acknowledged records not in the log at their offset "
                       f"(first: offset {o}, acknowledged for {v[:8]!r}, the log has "
                       f"{(in_log.get(o) or b'nothing')[:8]!r})")
        raise AssertionError("; ".join(msg))
    return by_off


def wait_stalled(p, reports, quiet_s=3.0, bound_s=60.0):
    """Serve delivery reports until all are in or none arrived for `quiet_s`."""
    deadline = time.monotonic() + bound_s
    seen, since = len(reports), time.monotonic()
    while time.monotonic() < deadline and len(p) > 0:
        p.poll(0.1)
        if len(reports) != seen:
            seen, since = len(reports), time.monotonic()
        elif time.monotonic() - since > quiet_s:
            break


def value(tag, i):
    head = f"{tag}{i:06d}-".encode()
    return head + b"x" * (VALUE_BYTES - len(head))


def java_value(i):
    """What the Java program's acked-lines scenario sends as record i."""
    head = f"j{i}-".encode()
    return head + b"x" * (VALUE_BYTES - len(head))


def reserve_producer_ids(bootstrap):
    """One InitProducerId before the disk is filled: the broker reserves a block of
    producer ids in its metadata log, so later ones need no disk space. Returns it."""
    raw = RawProducer(bootstrap)
    try:
        return raw.init_producer_id()
    finally:
        raw.close()


# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("disk", [TMPFS_WRITE, EXT4_FALLOCATE], indirect=True,
                         ids=["tmpfs-write", "ext4-fallocate"])
def test_librdkafka_idempotent_disk_full(disk):
    """librdkafka, enable.idempotence=true, acks=all: 6000 records of 1 KB into ~3.5 MiB of
    free space. What was acknowledged while full is in the log; the rest waits (the
    broker answers 56); after the ballast is removed everything is delivered, once, in
    order; the log survives SIGTERM and kill -9 restarts exactly."""
    fs, b = disk
    topic, other = "full", "other"
    count = 6000
    create_topic(b.bootstrap, topic, 1, TOPIC_CONFIG)
    create_topic(b.bootstrap, other, 1, TOPIC_CONFIG)
    other_recs = [{"value": value("o", i)} for i in range(20)]
    produce(b.bootstrap, other, other_recs, {"acks": "all"})
    # A first read before the disk is full (creates whatever a consumer needs).
    assert len(read_log(b.bootstrap, other, 0)) == 20
    pid, epoch = reserve_producer_ids(b.bootstrap)

    # ~3.5 MiB free: the disk runs full in the middle of a 1 MiB segment.
    left = fs.fill(3 * MIB + MIB // 2)
    assert left <= 4 * MIB + MIB // 2, f"{left} bytes still free after filling"

    reports = []
    p = Producer({"bootstrap.servers": b.bootstrap, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 5, "batch.num.messages": 100, "compression.type": "none",
                  "message.timeout.ms": 150000, "retry.backoff.ms": 100,
                  "retry.backoff.max.ms": 1000, "reconnect.backoff.max.ms": 1000})

    def cb(err, msg):
        reports.append((err, msg.offset(), msg.value(), time.monotonic()))

    for i in range(count):
        while True:
            try:
                p.produce(topic, value=value("r", i), partition=0, on_delivery=cb)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    try:
        wait_stalled(p, reports)
        assert b.proc.poll() is None, "spate exited on a full disk:\n" + b.log_tail()
        failed = [(e, v[:8]) for e, _, v, _ in reports if e is not None]
        assert not failed, f"delivery failed while full (message.timeout.ms is 150 s): {failed[:3]}"
        # 1. While full: what was acknowledged is readable, at its offset.
        log = read_log(b.bootstrap, topic, 0)
        full_acks = assert_acks_kept(log, [(o, v) for _, o, v, _ in reports],
                                     "while the disk is full")
        assert_contiguous(log, "while the disk is full")
        # 2. Not everything fits: ~6 MB of records, ~3.5 MiB free.
        assert len(full_acks) < count, \
            (f"all {count} records ({count * VALUE_BYTES} bytes) were acknowledged with "
             f"{left} bytes free; the log holds {len(log)}")
        # 3. Produce is answered KAFKA_STORAGE_ERROR, an idempotent retry included.
        raw = RawProducer(b.bootstrap)
        try:
            assert raw.produce(topic, 0, plain_batch([PLAIN_PROBE]))[0] == KAFKA_STORAGE_ERROR
            idem = record_batch(pid, epoch, 0, [IDEM_PROBE])
            assert raw.produce(topic, 0, idem)[0] == KAFKA_STORAGE_ERROR
            assert raw.produce(topic, 0, idem)[0] == KAFKA_STORAGE_ERROR, \
                "the retry of a batch that failed to be written was not answered 56"
        finally:
            raw.close()
        # 4. Reads and metadata of the other topic are still served.
        assert read_log(b.bootstrap, other, 0) == \
            [(i, r["value"]) for i, r in enumerate(other_recs)]
        md = admin(b.bootstrap).list_topics(timeout=10)
        assert {topic, other} <= set(md.topics)
        assert all(md.topics[t].error is None for t in (topic, other))
        assert b.proc.poll() is None, "spate exited on a full disk:\n" + b.log_tail()

        # 5. Free space: writable again without a restart; the pending records go out.
        fs.free()
        freed = time.monotonic()
        n_before = len(reports)
        raw = RawProducer(b.bootstrap)
        try:
            while True:
                err, idem_offset = raw.produce(topic, 0, idem)   # the failed batch, again
                if err == 0 or time.monotonic() - freed > WRITABLE_AGAIN_S:
                    break
                assert err == KAFKA_STORAGE_ERROR, err
                p.poll(0.5)
        finally:
            raw.close()
        assert err == 0, f"still error {err} {WRITABLE_AGAIN_S}s after space was freed"
        probe_ok = time.monotonic()
        left_over = p.flush(60)
        assert left_over == 0, f"{left_over} records undelivered 60 s after space was freed"
        later = reports[n_before:]
        assert later, "no record was pending when space was freed"
        assert later[0][3] - freed < WRITABLE_AGAIN_S, \
            f"the first pending record was delivered {later[0][3] - freed:.1f}s after the free"
        print(f"{len(full_acks)} of {count} acknowledged while full ({left} bytes free); "
              f"after the free: probe written after {probe_ok - freed:.1f}s, first pending "
              f"record after {later[0][3] - freed:.1f}s, all after {later[-1][3] - freed:.1f}s")
    finally:
        p.purge()
        p.flush(1)

    failed = [(e, v[:8]) for e, _, v, _ in reports if e is not None]
    assert not failed, failed[:3]
    assert len(reports) == count
    ack_list = [(o, v) for _, o, v, _ in reports]

    def check(when):
        log = read_log(b.bootstrap, topic, 0)
        acks = assert_acks_kept(log, ack_list, when)
        assert_contiguous(log, when)
        # In production order (idempotence keeps the order across retries).
        assert [v for _, v in sorted(acks.items())] == [value("r", i) for i in range(count)], \
            f"{when}: the acknowledged offsets are not in production order"
        by_off = dict(log)
        assert by_off[idem_offset] == IDEM_PROBE, when
        # Nothing else in the log but (at most) the plain probe that was answered 56.
        rest = [(o, v) for o, v in log if o not in acks and o != idem_offset]
        assert [v for _, v in rest] in ([], [PLAIN_PROBE]), \
            f"{when}: unexpected records {[(o, v[:12]) for o, v in rest[:3]]}"
        return log

    log = check("after space was freed")
    rc = b.stop()
    assert rc == 0, f"exit code {rc} after SIGTERM:\n" + b.log_tail()
    b.start()
    wait_topic(b.bootstrap, topic, 1)
    assert check("after a SIGTERM restart") == log
    b.kill()
    b.wait_port_closed()
    b.start()
    wait_topic(b.bootstrap, topic, 1)
    assert check("after a kill -9 restart") == log
    # And it goes on at the end of the log.
    r = produce(b.bootstrap, topic, [{"value": b"last"}], {"acks": "all"})
    assert [(e, o) for e, _, o, _, _ in r] == [(None, len(log))]


@pytest.mark.parametrize("disk", [EXT4_DIRECT_WRITE], indirect=True, ids=["ext4-direct-write"])
def test_java_default_producer_disk_full(disk):
    """Java kafka-clients 4.4.0 with its defaults (idempotent, acks=all): 3000 records of
    1 KB into ~1.5 MB of free space, delivery.timeout.ms=20000. What was acknowledged is
    in the log while the broker runs, after kill -9 on the full disk and a restart once
    space is freed, and after a SIGTERM restart."""
    from test_java import JVM
    java_jar()
    fs, b = disk
    topic = "full-java"
    count = 3000
    create_topic(b.bootstrap, topic, 1, TOPIC_CONFIG)
    reserve_producer_ids(b.bootstrap)
    left = fs.fill(MIB + MIB // 2)
    assert left <= 3 * MIB, f"{left} bytes still free after filling"

    res = subprocess.run([*JVM, b.bootstrap, "acked-lines", topic, "0", str(count),
                          str(VALUE_BYTES), "20000"],
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    lines = res.stdout.splitlines()
    assert res.returncode == 0, f"java exited {res.returncode}:\n{res.stderr[-3000:]}"
    acks, errs = [], []
    for line in lines:
        f = line.split()
        if f and f[0] == "ACK":
            assert f[1] == "0"
            acks.append((int(f[2]), java_value(int(f[3]))))
        elif f and f[0] == "ERR":
            errs.append((int(f[1]), f[2]))
    assert len(acks) + len(errs) == count, lines[-1:]
    assert b.proc.poll() is None, "spate exited on a full disk:\n" + b.log_tail()
    log = read_log(b.bootstrap, topic, 0)
    acked = assert_acks_kept(log, acks, "while the disk is full")
    assert_contiguous(log, "while the disk is full")
    assert acked, "nothing was acknowledged (about 1.5 MB were free)"
    print(f"java: {len(acked)} of {count} acknowledged ({left} bytes free), failed: "
          f"{sorted(set(e for _, e in errs))}")
    assert errs, (f"all {count} records ({count * VALUE_BYTES} bytes) were acknowledged "
                  f"with {left} bytes free; the log holds {len(log)}")

    b.kill()
    b.wait_port_closed()
    fs.free()
    b.start()
    wait_topic(b.bootstrap, topic, 1)
    log = read_log(b.bootstrap, topic, 0)
    assert_acks_kept(log, acks, "after kill -9 on the full disk and a restart")
    assert_contiguous(log, "after kill -9 on the full disk and a restart")
    rc = b.stop()
    assert rc == 0, f"exit code {rc} after SIGTERM:\n" + b.log_tail()
    b.start()
    wait_topic(b.bootstrap, topic, 1)
    assert read_log(b.bootstrap, topic, 0) == log, "the log changed across a SIGTERM restart"
    # Writable again at the end of the log.
    r = produce(b.bootstrap, topic, [{"value": b"last"}], {"acks": "all"})
    assert [(e, o) for e, _, o, _, _ in r] == [(None, len(log))]
