"""Moving a partition between a broker's log directories (AlterReplicaLogDirs, KIP-113):
`kafka-reassign-partitions.sh` with `log_dirs` moves a partition while a producer keeps
writing; `kafka-log-dirs.sh` sees it in its new directory once `--verify` says it is
done, and a consumer reads every acknowledged record once, in order. A broker killed
(SIGKILL) in the middle of a move keeps every acknowledged record, once, in exactly one
directory, and finishes the move after the restart. The Java Admin's
`alterReplicaLogDirs` gets Kafka's error codes.

Clients: Kafka's ReassignPartitionsCommand and LogDirsCommand (Java admin client), the
Java Admin API, confluent-kafka (librdkafka) producers and consumers."""
import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from test_kafka_cli import kafka_libs, tool  # noqa: F401 (the fixture is used by name)
from test_log_dirs import DirsBroker, base, log_dirs_report, where  # noqa: F401

pytestmark = pytest.mark.timeout(300)

NODE = 0
VALUE = b"v" * 1000


def other_dir(dirs, at):
    (target,) = [d for d in dirs if str(d) != at]
    return target


def created(dirs):
    """The log dir of mv-0, once its directory exists (Kafka creates it just after the
    topic shows a leader)."""
    wait_for("mv-0's log", lambda: any((d / "mv-0").is_dir() for d in dirs))
    return where(dirs, "mv", 1)[0]


def fill(broker, topic, count):
    """`count` 1 kB records to partition 0; the acknowledged (offset, value) pairs."""
    acked = []
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": True,
                  "linger.ms": 5})

    def done(err, msg):
        assert err is None, err
        acked.append((msg.offset(), msg.value()))
    for i in range(count):
        p.produce("mv", value=b"%08d" % i + VALUE, partition=0, on_delivery=done)
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    return acked


class Writer(threading.Thread):
    """Produces to partition 0 until stopped, keeping what was acknowledged."""

    def __init__(self, broker, prefix):
        super().__init__(daemon=True)
        self.acked, self.errors = [], []
        self.stopping = threading.Event()
        self.producer = Producer({"bootstrap.servers": broker.bootstrap,
                                  "enable.idempotence": True, "linger.ms": 5,
                                  "message.timeout.ms": 60000, "retry.backoff.ms": 50})
        self.prefix = prefix

    def run(self):
        def done(err, msg):
            if err is None:
                self.acked.append((msg.offset(), msg.value()))
            else:
                self.errors.append(err)
        i = 0
        while not self.stopping.is_set():
            try:
                self.producer.produce("mv", value=self.prefix + b"%08d" % i, partition=0,
                                      on_delivery=done)
                i += 1
            except BufferError:
                pass
            self.producer.poll(0.002)

    def finish(self, flush=True):
        self.stopping.set()
        self.join(10)
        if flush:
            self.producer.flush(60)


def read_all(broker):
    """Every record of partition 0 up to its high watermark: [(offset, value)]."""
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "mv-check",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest",
                  "fetch.wait.max.ms": 100})
    try:
        _, high = c.get_watermark_offsets(TopicPartition("mv", 0), timeout=30)
        c.assign([TopicPartition("mv", 0, 0)])
        out = []
        deadline = time.monotonic() + 120
        while (not out or out[-1][0] < high - 1) and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None or m.error():
                continue
            out.append((m.offset(), m.value()))
        return out
    finally:
        c.close()


def assert_every_acked_once(read, acked):
    offsets = [o for o, _ in read]
    assert offsets == sorted(set(offsets)), "offsets repeat or go back"
    values = [v for _, v in read]
    assert len(values) == len(set(values)), "a record is there twice"
    at = dict(read)
    missing = [(o, v[:12]) for o, v in acked if at.get(o) != v]
    assert not missing, f"{len(missing)} acknowledged records not read back: {missing[:5]}"


def reassign(libs, broker, plan, *extra):
    return tool(libs, "reassign.ReassignPartitionsCommand", "--bootstrap-server",
                broker.bootstrap, "--execute", "--reassignment-json-file", plan, *extra)


def verified(libs, broker, plan):
    out = tool(libs, "reassign.ReassignPartitionsCommand", "--bootstrap-server",
               broker.bootstrap, "--verify", "--reassignment-json-file", plan)
    return out if "in progress" not in out else None


def wait_for(what, check, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def plan_to(tmp_path, target):
    plan = tmp_path / "move.json"
    plan.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": "mv", "partition": 0, "replicas": [NODE], "log_dirs": [str(target)]}]}))
    return plan


def test_reassign_moves_a_partition_between_log_dirs_under_writes(base, kafka_libs, tmp_path):
    dirs = [base / "a", base / "b"]
    b = DirsBroker(base, dirs)
    b.start()
    try:
        from kafkautil import create_topic
        create_topic(b.bootstrap, "mv", 1)
        acked = fill(b, "mv", 20000)
        source = created(dirs)
        target = other_dir(dirs, source)
        writer = Writer(b, b"w")
        writer.start()
        time.sleep(0.5)
        out = reassign(kafka_libs, b, plan_to(tmp_path, target))
        assert f"Successfully started moving log directory to {target} for replica mv-0 with broker 0" \
            in out, out
        done = wait_for("the move", lambda: verified(kafka_libs, b, tmp_path / "move.json"))
        assert "Reassignment of partition mv-0 is completed." in done, done
        time.sleep(0.5)
        writer.finish()
        assert not writer.errors, writer.errors[:3]
        assert len(writer.acked) > 100, "the producer kept writing during the move"
        # In the new directory only; the old one's log is gone.
        assert where(dirs, "mv", 1) == {0: str(target)}
        wait_for("the old log removed", lambda: not any(
            p.name.startswith("mv-0") for p in Path(source).iterdir()))
        assert not any(p.name.endswith("-future") for d in dirs for p in d.iterdir())
        report = log_dirs_report(kafka_libs, b, ["mv"])
        assert "mv-0" in report[str(target.resolve())][1], report
        assert "mv-0" not in report[str(Path(source).resolve())][1], report
        assert_every_acked_once(read_all(b), acked + writer.acked)
        # And after a restart, from the new directory.
        b.stop()
        b.wait_port_closed()
        b.start()
        assert where(dirs, "mv", 1) == {0: str(target)}
        assert_every_acked_once(read_all(b), acked + writer.acked)
    finally:
        b.stop()


def test_a_broker_killed_during_a_move_keeps_every_record(base, kafka_libs, tmp_path):
    dirs = [base / "a", base / "b"]
    b = DirsBroker(base, dirs)
    b.start()
    try:
        from kafkautil import create_topic
        create_topic(b.bootstrap, "mv", 1)
        acked = fill(b, "mv", 8000)
        source = created(dirs)
        target = other_dir(dirs, source)
        writer = Writer(b, b"w")
        writer.start()
        # 8 MB at 1 MB/s: the move is still copying when the broker is killed.
        out = reassign(kafka_libs, b, plan_to(tmp_path, target),
                       "--replica-alter-log-dirs-throttle", 1000000)
        assert f"Successfully started moving log directory to {target} for replica mv-0 with broker 0" \
            in out, out
        wait_for("the future log", lambda: any(
            p.name.startswith("mv-0.") and p.name.endswith("-future") for p in target.iterdir()))
        time.sleep(2)
        report = tool(kafka_libs, "LogDirsCommand", "--bootstrap-server", b.bootstrap,
                      "--describe", "--topic-list", "mv")
        future = [p for line in report.splitlines() if line.startswith("{")
                  for br in json.loads(line)["brokers"] for d in br["logDirs"]
                  for p in d["partitions"] if p["isFuture"]]
        assert len(future) == 1 and future[0]["offsetLag"] > 0, report
        b.kill()
        writer.finish(flush=False)
        b.wait_port_closed()
        b.start()
        # Exactly one `mv-0`, in either directory, with every acknowledged record once.
        assert len(where(dirs, "mv", 1)) == 1
        assert_every_acked_once(read_all(b), acked + writer.acked)
        # The move starts over and completes.
        tool(kafka_libs, "ConfigCommand", "--bootstrap-server", b.bootstrap, "--entity-type",
             "brokers", "--entity-name", NODE, "--alter", "--delete-config",
             "replica.alter.log.dirs.io.max.bytes.per.second")
        wait_for("the move after the restart", lambda: where(dirs, "mv", 1) == {0: str(target)}
                 and not any(p.name.endswith("-future") for p in target.iterdir()))
        assert_every_acked_once(read_all(b), acked + writer.acked)
    finally:
        b.stop()


ALTER = """
import java.util.*;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.common.TopicPartitionReplica;

public class AlterDirs {
    public static void main(String[] a) throws Exception {
        try (Admin admin = Admin.create(Map.of("bootstrap.servers", a[0]))) {
            for (int i = 1; i + 2 < a.length; i += 3) {
                TopicPartitionReplica r = new TopicPartitionReplica(a[i], Integer.parseInt(a[i + 1]), 0);
                try {
                    admin.alterReplicaLogDirs(Map.of(r, a[i + 2])).values().get(r).get();
                    System.out.println("OK");
                } catch (java.util.concurrent.ExecutionException e) {
                    System.out.println(e.getCause().getClass().getSimpleName());
                }
            }
        }
    }
}
"""


def test_alter_replica_log_dirs_error_codes(base, kafka_libs, tmp_path):
    dirs = [base / "a", base / "b"]
    b = DirsBroker(base, dirs)
    b.start()
    try:
        from kafkautil import create_topic
        create_topic(b.bootstrap, "mv", 1)
        at = created(dirs)
        src = tmp_path / "AlterDirs.java"
        src.write_text(ALTER)
        r = subprocess.run(["java", "-cp", f"{kafka_libs}/*", str(src), b.bootstrap,
                            "mv", "0", str(base / "nowhere"),
                            "mv", "0", str(Path(at).resolve()),
                            "nosuch", "0", str(dirs[0].resolve())],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["LogDirNotFoundException", "OK",
                                    "UnknownTopicOrPartitionException"], r.stdout
        # Already there: nothing moves.
        assert where(dirs, "mv", 1) == {0: at}

        # A move asked back to where the partition is, while it copies: the copy is
        # dropped and the partition stays.
        fill(b, "mv", 3000)
        tool(kafka_libs, "ConfigCommand", "--bootstrap-server", b.bootstrap, "--entity-type",
             "brokers", "--entity-name", NODE, "--alter", "--add-config",
             "replica.alter.log.dirs.io.max.bytes.per.second=300000")
        target = other_dir(dirs, at)
        r = subprocess.run(["java", "-cp", f"{kafka_libs}/*", str(src), b.bootstrap,
                            "mv", "0", str(target.resolve())],
                           capture_output=True, text=True, timeout=120)
        assert r.stdout.split() == ["OK"], (r.stdout, r.stderr)
        wait_for("the future log", lambda: any(p.name.endswith("-future") for p in target.iterdir()))
        r = subprocess.run(["java", "-cp", f"{kafka_libs}/*", str(src), b.bootstrap,
                            "mv", "0", str(Path(at).resolve())],
                           capture_output=True, text=True, timeout=120)
        assert r.stdout.split() == ["OK"], (r.stdout, r.stderr)
        wait_for("the future log dropped", lambda: not any(
            p.name.endswith("-future") for p in target.iterdir()))
        time.sleep(1)
        assert where(dirs, "mv", 1) == {0: at}
    finally:
        b.stop()
