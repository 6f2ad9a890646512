"""Several log directories (JBOD, `--log-dirs` / Kafka's `log.dirs`): partitions spread
over them and stay where they are across restarts; Kafka's `kafka-log-dirs.sh`
(LogDirsCommand) reports each directory with its partitions; a directory that cannot be
used at start, or that fails a write with an I/O error while the broker runs, takes only
its own partitions offline (Metadata: no leader; produce refused) while the other
directories keep serving, and its partitions come back, with every record, once it is
repaired and the broker restarted.

Clients: Kafka's LogDirsCommand (Java admin client) and confluent-kafka (librdkafka).
The I/O-error test needs root: its directory is an ext4 file system on a loop device
whose backing file the test cuts short, so that writes there fail with EIO."""
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from conftest import EXTERNAL, RUNS, free_port
from grouputil import ConfiguredBroker
from kafkautil import admin, consume, create_topic, produce
from test_kafka_cli import kafka_libs, tool  # noqa: F401 (the fixture is used by name)

pytestmark = pytest.mark.timeout(300)

LEADER_NOT_AVAILABLE = 5
# One partition each for the internal topics keeps the spread easy to reason about.
BROKER_TOML = """\
offsets_topic_num_partitions = 1
transaction_state_num_partitions = 1
"""
RECORDS_PER_PARTITION = 10


class DirsBroker(ConfiguredBroker):
    """A spate with several log dirs (the first also holds the metadata log)."""

    def __init__(self, base: Path, dirs):
        base.mkdir(parents=True, exist_ok=True)
        conf = base / "spate.toml"
        conf.write_text(BROKER_TOML)
        super().__init__(Path(dirs[0]), free_port(), {
            "SPATE_LOG_DIRS": ",".join(str(d) for d in dirs), "SPATE_CONFIG": str(conf)})
        self.log_path = base / "spate.log"


@pytest.fixture
def base():
    if EXTERNAL:
        pytest.skip("log dir tests need brokers the suite starts itself")
    path = RUNS / f"logdirs-{uuid.uuid4().hex[:10]}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


def log_dirs_report(libs, broker, topics):
    """{log dir: (error, {partition name: size})} as kafka-log-dirs.sh describes them."""
    out = tool(libs, "LogDirsCommand", "--bootstrap-server", broker.bootstrap, "--describe",
               "--topic-list", ",".join(topics))
    report = json.loads(next(l for l in out.splitlines() if l.startswith("{")))
    (b,) = report["brokers"]
    return {d["logDir"]: (d["error"], {p["partition"]: p["size"] for p in d["partitions"]})
            for d in b["logDirs"]}


def where(dirs, topic, partitions):
    """The log dir holding each partition's directory, from the file system."""
    found = {}
    for p in range(partitions):
        holders = [str(d) for d in dirs if (Path(d) / f"{topic}-{p}").is_dir()]
        assert len(holders) == 1, f"{topic}-{p} is in {holders}"
        found[p] = holders[0]
    return found


def fill(broker, topic, partitions):
    records = [{"partition": p, "key": f"k{p}-{i}".encode(), "value": f"v{p}-{i}".encode()}
               for p in range(partitions) for i in range(RECORDS_PER_PARTITION)]
    reports = produce(broker.bootstrap, topic, records)
    assert all(err is None for err, *_ in reports), reports
    return records


def assert_partition_holds(broker, topic, p):
    got = consume(broker.bootstrap, topic, p, RECORDS_PER_PARTITION)
    assert [(m["offset"], m["value"]) for m in got] == \
        [(i, f"v{p}-{i}".encode()) for i in range(RECORDS_PER_PARTITION)]


def leaders(broker, topic):
    """{partition: (leader, error code or None)} from a Metadata request."""
    md = admin(broker.bootstrap).list_topics(topic=topic, timeout=10)
    return {p: (m.leader, m.error.code() if m.error else None)
            for p, m in md.topics[topic].partitions.items()}


def produce_one(broker, topic, partition, timeout_s=5):
    """Produce one record; returns the delivery error (None when acknowledged)."""
    result = []
    prod = Producer({"bootstrap.servers": broker.bootstrap, "message.timeout.ms": timeout_s * 1000,
                     "retry.backoff.ms": 100})
    prod.produce(topic, value=b"x", partition=partition, on_delivery=lambda e, m: result.append(e))
    prod.flush(timeout_s + 10)
    assert len(result) == 1
    return result[0]


def test_partitions_spread_over_log_dirs_and_stay_there(base, kafka_libs):
    dirs = [base / f"d{i}" for i in range(3)]
    b = DirsBroker(base, dirs)
    b.start()
    try:
        create_topic(b.bootstrap, "jbod", 6)
        fill(b, "jbod", 6)
        placed = where(dirs, "jbod", 6)
        # With the two internal partitions: 8 partitions, the fewest-first rule gives
        # every directory 2 or 3 of them.
        counts = {str(d): sum(1 for e in d.iterdir() if e.is_dir() and e.name.rsplit("-", 1)[-1].isdigit())
                  for d in dirs}
        assert sorted(counts.values()) == [2, 3, 3], counts
        report = log_dirs_report(kafka_libs, b, ["jbod"])
        assert sorted(report) == sorted(str(d.resolve()) for d in dirs), report
        for d, (error, parts) in report.items():
            assert error is None, report
            assert sorted(parts) == sorted(f"jbod-{p}" for p, at in placed.items()
                                           if str(Path(at).resolve()) == d), (d, parts, placed)
            assert all(size > 0 for size in parts.values()), report

        b.stop()
        b.wait_port_closed()
        b.start()
        assert where(dirs, "jbod", 6) == placed
        for p in range(6):
            assert_partition_holds(b, "jbod", p)
        # Appends continue in the same directories.
        assert produce_one(b, "jbod", 5) is None
        assert where(dirs, "jbod", 6) == placed
    finally:
        b.stop()


def test_a_log_dir_unusable_at_start_takes_only_its_partitions_offline(base, kafka_libs):
    dirs = [base / "a", base / "b"]
    b = DirsBroker(base, dirs)
    b.start()
    try:
        create_topic(b.bootstrap, "half", 4)
        create_topic(b.bootstrap, "gone", 4)
        fill(b, "half", 4)
        placed = where(dirs, "half", 4)
        on_b = sorted(p for p, d in placed.items() if d == str(dirs[1]))
        on_a = sorted(p for p, d in placed.items() if d == str(dirs[0]))
        assert on_a and on_b, placed
        assert b.stop() == 0
        b.wait_port_closed()

        # The second directory's disk is "gone": a file where the directory was.
        saved = base / "b.saved"
        dirs[1].rename(saved)
        dirs[1].write_text("not a directory")
        b.start()
        report = log_dirs_report(kafka_libs, b, ["half"])
        assert report[str(dirs[1].resolve())][0] is not None, report  # KafkaStorageException
        assert sorted(report[str(dirs[0].resolve())][1]) == [f"half-{p}" for p in on_a], report
        state = leaders(b, "half")
        for p in on_b:
            assert state[p] == (-1, LEADER_NOT_AVAILABLE), state
        for p in on_a:
            assert state[p] == (0, None), state
            assert_partition_holds(b, "half", p)
        assert produce_one(b, "half", on_a[0]) is None
        assert produce_one(b, "half", on_b[0]) is not None
        # New partitions go to the healthy directory.
        create_topic(b.bootstrap, "fresh", 3)
        assert set(where([dirs[0]], "fresh", 3).values()) == {str(dirs[0])}
        # A topic with partitions on the offline directory, deleted and created again:
        # the new one is placed in the healthy directory and led.
        assert any(leader == -1 for leader, _ in leaders(b, "gone").values())
        a = admin(b.bootstrap)
        for f in a.delete_topics(["gone"], operation_timeout=30).values():
            f.result(timeout=30)
        create_topic(b.bootstrap, "gone", 4)
        assert set(where([dirs[0]], "gone", 4).values()) == {str(dirs[0])}
        assert b.stop() == 0
        b.wait_port_closed()

        # Repaired: everything is back, with every record. The deleted topic's old logs
        # on the repaired directory are removed by hand first (partition directories
        # carry no topic id yet, so the broker would refuse a partition in two places).
        for p in range(4):
            shutil.rmtree(saved / f"gone-{p}", ignore_errors=True)
        dirs[1].unlink()
        saved.rename(dirs[1])
        b.start()
        assert all(leader == 0 and err is None for leader, err in leaders(b, "half").values())
        for p in on_b:
            assert_partition_holds(b, "half", p)
        for d, (error, _) in log_dirs_report(kafka_libs, b, ["half"]).items():
            assert error is None, d
    finally:
        b.stop()


def _run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_an_io_error_takes_its_log_dir_offline_and_the_other_keeps_serving(base, kafka_libs):
    if os.geteuid() != 0:
        pytest.skip("mounting a loop device needs root")
    if shutil.which("mkfs.ext4") is None or shutil.which("losetup") is None:
        pytest.skip("mkfs.ext4 or losetup is not installed")
    base.mkdir(parents=True)
    image, mnt = base / "disk.img", base / "disk"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(256 << 20)
    assert _run(["mkfs.ext4", "-q", "-F", str(image)]).returncode == 0
    loop = _run(["losetup", "-f", "--show", str(image)])
    if loop.returncode != 0:
        pytest.skip(f"no loop device: {loop.stderr.strip()}")
    dev = loop.stdout.strip()
    b = None
    try:
        if _run(["mount", dev, str(mnt)]).returncode != 0:
            pytest.skip("cannot mount the loop device")
        dirs = [base / "good", mnt / "data"]
        b = DirsBroker(base, dirs)
        b.start()
        create_topic(b.bootstrap, "disk", 4)
        fill(b, "disk", 4)
        placed = where(dirs, "disk", 4)
        on_bad = sorted(p for p, d in placed.items() if d == str(dirs[1]))
        on_good = sorted(p for p, d in placed.items() if d == str(dirs[0]))
        assert on_bad and on_good, placed

        # The disk fails: the device shrinks to 1 MiB, so writes past it get EIO.
        os.truncate(image, 1 << 20)
        assert _run(["losetup", "-c", dev]).returncode == 0
        # A write there fails and is not acknowledged; then the whole directory goes.
        assert produce_one(b, "disk", on_bad[0]) is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            state = leaders(b, "disk")
            if all(state[p] == (-1, LEADER_NOT_AVAILABLE) for p in on_bad):
                break
            time.sleep(0.5)
        assert all(state[p] == (-1, LEADER_NOT_AVAILABLE) for p in on_bad), state
        assert all(state[p] == (0, None) for p in on_good), state
        report = log_dirs_report(kafka_libs, b, ["disk"])
        assert report[str(dirs[1].resolve())][0] is not None, report
        assert report[str(dirs[0].resolve())][0] is None, report
        # The healthy directory keeps taking writes and serving reads.
        for p in on_good:
            assert produce_one(b, "disk", p) is None
            got = consume(b.bootstrap, "disk", p, RECORDS_PER_PARTITION + 1)
            assert [m["value"] for m in got] == \
                [f"v{p}-{i}".encode() for i in range(RECORDS_PER_PARTITION)] + [b"x"]
        assert b"log dir failed" in b.log_path.read_bytes()
    finally:
        if b is not None:
            b.kill()
        _run(["umount", "-l", str(mnt)])
        _run(["losetup", "-d", dev])
