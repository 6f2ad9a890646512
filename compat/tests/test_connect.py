"""Kafka Connect (distributed worker, FileStreamSource and FileStreamSink) against the
broker: the worker keeps its configs, source offsets and statuses in compacted topics it
creates itself, and sinks through a consumer group; a restarted worker carries on from
what it committed there. Connect 4.3.1: compat/frameworks/connect/pom.xml says why."""
import shutil
import time

import pytest

from conftest import free_port
from frameworkutil import (JavaProcess, Rest, connect_classpath, run_dir, topic_configs,
                           wait_until, KEEP)
from kafkautil import consume, create_topic

WORKER_MAIN = "org.apache.kafka.connect.cli.ConnectDistributed"
SOURCE = "org.apache.kafka.connect.file.FileStreamSourceConnector"
SINK = "org.apache.kafka.connect.file.FileStreamSinkConnector"


@pytest.fixture(scope="module")
def connect_cp():
    return connect_classpath()


def worker_properties(bootstrap, port, prefix):
    return "\n".join([
        f"bootstrap.servers={bootstrap}",
        f"group.id={prefix}-workers",
        f"config.storage.topic={prefix}-configs",
        f"offset.storage.topic={prefix}-offsets",
        f"status.storage.topic={prefix}-status",
        "config.storage.replication.factor=1",
        "offset.storage.replication.factor=1",
        "status.storage.replication.factor=1",
        "offset.storage.partitions=3",
        "status.storage.partitions=2",
        "key.converter=org.apache.kafka.connect.storage.StringConverter",
        "value.converter=org.apache.kafka.connect.storage.StringConverter",
        # Source offsets and sink group offsets are committed every second.
        "offset.flush.interval.ms=1000",
        "scheduled.rebalance.max.delay.ms=0",
        f"listeners=http://127.0.0.1:{port}",
        "rest.advertised.host.name=127.0.0.1",
        f"rest.advertised.port={port}",
        "plugin.discovery=service_load",
        "",
    ])


def put_connector(rest, name, config, procs, timeout=60):
    """Create (or update) a connector; retried while the worker is still joining."""
    def attempt():
        status, body = rest.call("PUT", f"/connectors/{name}/config", config)
        return status in (200, 201) and body
    return wait_until(attempt, timeout, f"PUT /connectors/{name}/config", procs)


def wait_running(rest, name, procs, timeout=60):
    def running():
        status, body = rest.call("GET", f"/connectors/{name}/status")
        if status != 200:
            return False
        tasks = body.get("tasks", [])
        for t in tasks:
            assert t["state"] != "FAILED", f"{name} task failed: {t.get('trace')}"
        return (body["connector"]["state"] == "RUNNING" and len(tasks) == 1
                and tasks[0]["state"] == "RUNNING")
    wait_until(running, timeout, f"connector {name} and its task RUNNING", procs)


def offsets(rest, name):
    """GET /connectors/NAME/offsets as [(partition, offset)] (None while unavailable)."""
    status, body = rest.call("GET", f"/connectors/{name}/offsets", timeout=20)
    if status != 200:
        return None
    return sorted((tuple(sorted(o["partition"].items())), tuple(sorted(o["offset"].items())))
                  for o in body["offsets"])


def wait_offsets(rest, name, want, procs, timeout=40):
    last = []

    def done():
        last[:] = [offsets(rest, name)]
        return last[0] == want
    try:
        wait_until(done, timeout, f"{name} offsets {want}", procs)
    except AssertionError as e:
        raise AssertionError(f"{e}\nlast offsets of {name}: {last}") from None


def wait_sink_file(path, want, procs, timeout=60):
    """Wait until the sink file holds exactly `want` (lines); fail at once on anything
    that is not a prefix of it (a duplicate, a reordering, a stray line)."""
    def check():
        try:
            got = path.read_text().splitlines() if path.exists() else []
        except OSError:
            return False
        assert got == want[:len(got)], (
            f"sink file diverges from the source: first difference at line "
            f"{next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), len(want))}, "
            f"{len(got)} lines, want {len(want)}")
        return got == want
    wait_until(check, timeout, f"{len(want)} lines in {path.name}", procs)


def test_connect_file_source_to_sink_across_restart(bootstrap, topic_name, connect_cp):
    work = run_dir("connect")
    create_topic(bootstrap, topic_name, partitions=1)
    source_file = work / "source.txt"
    sink_file = work / "sink.txt"
    # ASCII only: FileStreamSource counts its position in characters and skips bytes.
    first = [f"{topic_name} line {i:03d} {'x' * (i % 7)}" for i in range(50)]
    second = [f"{topic_name} line {i:03d} after restart" for i in range(50, 80)]
    source_file.write_text("".join(line + "\n" for line in first))

    port = free_port()
    props = work / "worker.properties"
    props.write_text(worker_properties(bootstrap, port, f"{topic_name}-connect"))
    rest = Rest(port)
    workers = []

    def start_worker():
        w = JavaProcess(f"worker{len(workers) + 1}", connect_cp, WORKER_MAIN, [props], work)
        workers.append(w)
        w.start()
        wait_until(lambda: rest.call("GET", "/")[0] == 200, 60, "the worker's REST API", [w])
        return w

    source_conf = {"connector.class": SOURCE, "tasks.max": "1", "file": str(source_file),
                   "topic": topic_name}
    sink_conf = {"connector.class": SINK, "tasks.max": "1", "file": str(sink_file),
                 "topics": topic_name}
    try:
        w = start_worker()
        put_connector(rest, "file-source", source_conf, [w])
        put_connector(rest, "file-sink", sink_conf, [w])
        wait_running(rest, "file-source", [w])
        wait_running(rest, "file-sink", [w])
        wait_sink_file(sink_file, first, [w])

        # What the worker committed: the source's byte position in the offsets topic, the
        # sink's consumer group offset. Waiting for both makes the restart below exact.
        size = source_file.stat().st_size
        file_part = (("filename", str(source_file)),)
        sink_part = (("kafka_partition", 0), ("kafka_topic", topic_name))
        wait_offsets(rest, "file-source", [(file_part, (("position", size),))], [w])
        wait_offsets(rest, "file-sink", [(sink_part, (("kafka_offset", 50),))], [w])

        prefix = f"{topic_name}-connect"
        for suffix in ("configs", "offsets", "status"):
            assert topic_configs(bootstrap, f"{prefix}-{suffix}", ["cleanup.policy"]) == \
                {"cleanup.policy": "compact"}, suffix

        assert w.stop() is not None, f"worker did not stop within 30 s\n{w.tail()}"
        with open(source_file, "a") as f:
            f.write("".join(line + "\n" for line in second))

        w = start_worker()
        # The connectors come back from the config topic: no new PUT.
        wait_running(rest, "file-source", [w])
        wait_running(rest, "file-sink", [w])
        wait_sink_file(sink_file, first + second, [w])
        wait_offsets(rest, "file-source",
                     [(file_part, (("position", source_file.stat().st_size),))], [w])
        wait_offsets(rest, "file-sink", [(sink_part, (("kafka_offset", 80),))], [w])
        # Nothing more arrives late (two more flush intervals).
        time.sleep(2.5)
        wait_sink_file(sink_file, first + second, [w], timeout=0)

        status, body = rest.call("GET", "/connectors")
        assert (status, sorted(body)) == (200, ["file-sink", "file-source"])
        recs = consume(bootstrap, topic_name, 0, 80)
        assert [(r["offset"], r["key"], r["value"].decode()) for r in recs] == \
            [(i, None, line) for i, line in enumerate(first + second)]
        assert w.stop() is not None, f"worker did not stop within 30 s\n{w.tail()}"
    finally:
        for w in workers:
            w.kill()
    if not KEEP:
        shutil.rmtree(work, ignore_errors=True)
