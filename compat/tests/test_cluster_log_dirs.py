"""A failed log directory in a 3-node cluster (KIP-858's behaviour): every node has two
log dirs; the second of node 1, which leads every partition of the topic, is an ext4 file
system on a loop device that the test cuts short so that writes there fail with EIO. The
partitions in that directory get a new leader among the other in-sync replicas within
seconds, node 1 leaves their ISRs, acks=all producing goes on with every acknowledged
record kept (exact offsets and values), the partitions in node 1's healthy directory keep
their leader, and once the disk is replaced (an empty directory) and node 1 restarted, its
replicas catch up and rejoin the ISRs.

Needs root (mount, losetup), mkfs.ext4 and losetup; skipped otherwise."""
import os
import shutil
import subprocess
import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from conftest import EXTERNAL
from test_cluster import Cluster, wait_for
from test_kafka_cli import kafka_libs, tool  # noqa: F401 (the fixture is used by name)
from kafkautil import consume

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.skipif(bool(EXTERNAL), reason="starts its own cluster")]

VICTIM = 1
PARTITIONS = 6


def _run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def state(admin, topic):
    """{partition: (leader, sorted ISR)} from Metadata."""
    md = admin.list_topics(topic, timeout=10)
    return {p.id: (p.leader, sorted(p.isrs)) for p in md.topics[topic].partitions.values()}


def produce_acked(bootstrap, topic, tag, acked):
    """Ten records to every partition, idempotent and acks=all; every acknowledged one
    goes into `acked[partition]` as (offset, value). All must be acknowledged."""
    failed = []
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                  "message.timeout.ms": 60000, "retry.backoff.ms": 100})

    def report(err, m):
        if err is None:
            acked.setdefault(m.partition(), []).append((m.offset(), m.value()))
        else:
            failed.append(err)
    for i in range(10):
        for part in range(PARTITIONS):
            p.produce(topic, value=f"{tag}-{part}-{i}".encode(), partition=part, on_delivery=report)
    assert p.flush(90) == 0
    assert failed == []


def assert_holds(bootstrap, topic, acked):
    for part, records in acked.items():
        records = sorted(records)
        got = consume(bootstrap, topic, part, len(records))
        assert [(m["offset"], m["value"]) for m in got] == records, part


@pytest.fixture
def loop_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a loop device needs root")
    if shutil.which("mkfs.ext4") is None or shutil.which("losetup") is None:
        pytest.skip("mkfs.ext4 or losetup is not installed")
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(256 << 20)
    assert _run(["mkfs.ext4", "-q", "-F", str(image)]).returncode == 0
    loop = _run(["losetup", "-f", "--show", str(image)])
    if loop.returncode != 0:
        pytest.skip(f"no loop device: {loop.stderr.strip()}")
    dev = loop.stdout.strip()
    mounted = []
    yield image, dev, mounted
    for mnt in mounted:
        _run(["umount", "-l", str(mnt)])
    _run(["losetup", "-d", dev])


def test_a_failed_log_dir_moves_its_partitions_leaderships(loop_disk, kafka_libs):
    image, dev, mounted = loop_disk
    c = Cluster()
    c.env["SPATE_CLUSTER_LOG_DIRS"] = "2"
    bad = c.dir / f"node-{VICTIM}.d1"
    bad.mkdir()
    if _run(["mount", dev, str(bad)]).returncode != 0:
        pytest.skip("cannot mount the loop device")
    mounted.append(bad)
    c.run("start")
    try:
        admin = AdminClient({"bootstrap.servers": c.bootstrap(0)})
        others = [n for n in range(3) if n != VICTIM]
        # kafka-topics.sh: this confluent-kafka refuses a replica assignment.
        assignment = ",".join(f"{VICTIM}:{others[p % 2]}:{others[(p + 1) % 2]}"
                              for p in range(PARTITIONS))
        tool(kafka_libs, "TopicCommand", "--bootstrap-server", c.bootstrap(0), "--create",
             "--topic", "jbod", "--replica-assignment", assignment,
             "--config", "min.insync.replicas=2")
        wait_for("full ISRs", lambda: all(
            leader == VICTIM and isr == [0, 1, 2]
            for leader, isr in state(admin, "jbod").values()))
        acked = {}
        produce_acked(c.bootstrap(0), "jbod", "before", acked)

        on_bad = sorted(p for p in range(PARTITIONS) if (bad / f"jbod-{p}").is_dir())
        on_good = sorted(p for p in range(PARTITIONS)
                         if (c.dir / f"node-{VICTIM}" / f"jbod-{p}").is_dir())
        assert on_bad and on_good and len(on_bad) + len(on_good) == PARTITIONS, (on_bad, on_good)

        # The disk fails: the device shrinks to 1 MiB, writes past it get EIO.
        os.truncate(image, 1 << 20)
        assert _run(["losetup", "-c", dev]).returncode == 0
        started = time.monotonic()
        # acks=all producing goes on: the records to the failed dir's partitions are
        # refused by node 1 (KAFKA_STORAGE_ERROR), then taken by their new leaders.
        produce_acked(c.bootstrap(0), "jbod", "during", acked)
        moved = wait_for("new leaders for the failed dir's partitions", lambda: (
            lambda s: s if all(s[p][0] in others and VICTIM not in s[p][1] for p in on_bad)
            else None)(state(admin, "jbod")), timeout=30)
        elapsed = time.monotonic() - started
        assert elapsed < 20, elapsed
        for p in on_good:
            assert moved[p] == (VICTIM, [0, 1, 2]), moved
        log = (c.dir / f"node-{VICTIM}.log").read_text(errors="replace")
        assert "log dir failed" in log
        produce_acked(c.bootstrap(2), "jbod", "after", acked)
        assert_holds(c.bootstrap(0), "jbod", acked)

        # Repair: node 1 stopped, the disk replaced by an empty one, node 1 restarted.
        c.run("stop", VICTIM)
        _run(["umount", "-l", str(bad)])
        mounted.remove(bad)
        shutil.rmtree(bad, ignore_errors=True)
        bad.mkdir()
        c.run("start", VICTIM)
        wait_for("node 1 back in every ISR", lambda: all(
            isr == [0, 1, 2] for _, isr in state(admin, "jbod").values()), timeout=90)
        produce_acked(c.bootstrap(VICTIM), "jbod", "repaired", acked)
        assert_holds(c.bootstrap(VICTIM), "jbod", acked)
        # Each replica is in one of node 1's directories (the empty one's partitions
        # were placed anew, in the directory with the fewest).
        for p in range(PARTITIONS):
            holders = [d for d in (c.dir / f"node-{VICTIM}", bad) if (d / f"jbod-{p}").is_dir()]
            assert len(holders) == 1, (p, holders)
    finally:
        c.run("stop")
