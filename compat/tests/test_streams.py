"""Kafka Streams 4.4.0 against the broker (compat/frameworks CountingApp): a KTable of counts
per key and counts per key and tumbling window, at_least_once, state in a key-value and a
window store with changelog topics that Streams creates (compacted, and compact,delete for
the window store). The app is stopped, its state directory wiped, and a new instance must
restore both stores from the changelogs: the counts it emits afterwards continue the full
history exactly."""
import shutil
import time

import pytest

from frameworkutil import (JavaProcess, KEEP, TopicReader, run_dir, streams_classpath,
                           topic_configs, wait_until)
from grouputil import committed
from kafkautil import create_topic, kafka_partition, produce

MAIN = "dev.spate.compat.frameworks.CountingApp"
WINDOW_MS = 60_000
GRACE_MS = 3_600_000
DAY_MS = 86_400_000
PARTITIONS = 2
# The input is partitioned as the Java client (and so Streams) would: murmur2.
JAVA_PARTITIONER = {"partitioner": "murmur2_random"}
KEYS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]


@pytest.fixture(scope="module")
def streams_cp():
    return streams_classpath()


def make_input(start, count, base, windows):
    """Records i in [start, start+count): a key drawn unevenly from KEYS, an event time in
    one of `windows` (window indexes from base), in no particular time order."""
    out = []
    for i in range(start, start + count):
        key = KEYS[(i * i + i // 3) % len(KEYS)]
        w = windows[(i * 7) % len(windows)]
        out.append({"key": key.encode(), "value": f"v{i}".encode(),
                    "timestamp": base + w * WINDOW_MS + (i * 997) % WINDOW_MS})
    return out


def expected_updates(records):
    """What the app must emit with its cache off: per key the running count, per
    key@window the running count in that window, each in input order."""
    counts, windows = {}, {}
    for r in records:
        k = r["key"].decode()
        wk = f"{k}@{r['timestamp'] - r['timestamp'] % WINDOW_MS}"
        for updates, key in ((counts, k), (windows, wk)):
            seq = updates.setdefault(key, [])
            seq.append(str(len(seq) + 1))
    return counts, windows


def by_key(records):
    """{key: [values in offset order]}, checking that each key went to the partition the
    default partitioner picks for it."""
    out = {}
    for part, _off, key, value in sorted(records):
        assert part == kafka_partition(key, PARTITIONS), (key, part)
        out.setdefault(key.decode(), []).append(value.decode())
    return out


def test_streams_ktable_and_windows_restore_after_state_wipe(bootstrap, topic_name, streams_cp):
    work = run_dir("streams")
    state_dir = work / "state"
    app_id = f"{topic_name}-app"
    source, counts_topic, windows_topic = (f"{topic_name}-{s}" for s in ("in", "counts", "windows"))
    for t in (source, counts_topic, windows_topic):
        create_topic(bootstrap, t, partitions=PARTITIONS)
    # Event times a few minutes old, whole windows from base on.
    base = (int(time.time() * 1000) // WINDOW_MS - 8) * WINDOW_MS
    first = make_input(0, 90, base, [0, 1, 2])
    second = make_input(90, 60, base, [1, 2, 3])
    args = [bootstrap, app_id, state_dir, source, counts_topic, windows_topic, WINDOW_MS]
    apps = []

    def start_app():
        app = JavaProcess(f"app{len(apps) + 1}", streams_cp, MAIN, args, work)
        apps.append(app)
        return app.start()

    def states(app):
        return [e["state"] for e in app.events() if e["event"] == "state"]

    def stop_app(app):
        assert app.stop() is not None, f"{app.name} did not stop within 30 s\n{app.tail()}"
        closed = [e for e in app.events() if e["event"] == "closed"]
        assert closed == [{"event": "closed", "clean": True}], app.tail()
        assert not [e for e in app.events() if e["event"] == "error"], app.tail()

    counts = TopicReader(bootstrap, counts_topic, PARTITIONS)
    windows = TopicReader(bootstrap, windows_topic, PARTITIONS)
    try:
        for r in produce(bootstrap, source, first, conf=JAVA_PARTITIONER):
            assert r[0] is None, r
        app = start_app()
        want_counts, want_windows = expected_updates(first)
        assert by_key(counts.wait_count(len(first), 90, [app])) == want_counts
        assert by_key(windows.wait_count(len(first), 30, [app])) == want_windows
        stop_app(app)

        # The stores' changelogs, as Streams created them.
        changelog = f"{app_id}-counts-store-changelog"
        window_changelog = f"{app_id}-window-store-changelog"
        assert topic_configs(bootstrap, changelog, ["cleanup.policy"]) == \
            {"cleanup.policy": "compact"}
        # The window store keeps size + grace; its changelog one day more.
        assert topic_configs(bootstrap, window_changelog, ["cleanup.policy", "retention.ms"]) == \
            {"cleanup.policy": "compact,delete", "retention.ms": str(WINDOW_MS + GRACE_MS + DAY_MS)}

        shutil.rmtree(state_dir)
        app = start_app()
        wait_until(lambda: "RUNNING" in states(app), 60, "the restarted app RUNNING", [app])
        restored = {}
        for e in app.events():
            if e["event"] == "restored":
                restored.setdefault(e["store"], 0)
                restored[e["store"]] += e["records"]
                assert e["topic"] == {"counts-store": changelog,
                                      "window-store": window_changelog}[e["store"]], e
        # Each store came back from its changelog: at least one record per key (or key and
        # window), at most one per input record (fewer once the changelog is compacted).
        assert len(want_counts) <= restored.get("counts-store", 0) <= len(first), restored
        assert len(want_windows) <= restored.get("window-store", 0) <= len(first), restored

        for r in produce(bootstrap, source, second, conf=JAVA_PARTITIONER):
            assert r[0] is None, r
        want_counts, want_windows = expected_updates(first + second)
        total = len(first) + len(second)
        assert by_key(counts.wait_count(total, 60, [app])) == want_counts
        assert by_key(windows.wait_count(total, 30, [app])) == want_windows
        stop_app(app)
        # The app's group committed every input record once it closed.
        per_part = {}
        for r in first + second:
            p = kafka_partition(r["key"], PARTITIONS)
            per_part[p] = per_part.get(p, 0) + 1
        assert committed(bootstrap, app_id, source, PARTITIONS) == per_part
    finally:
        counts.close()
        windows.close()
        for app in apps:
            app.kill()
    if not KEEP:
        shutil.rmtree(work, ignore_errors=True)


def test_streams_exactly_once_v2_across_kill9(bootstrap, topic_name, streams_cp):
    """processing.guarantee=exactly_once_v2: the app is killed with kill -9 while it
    processes, restarted, and the outputs read with read_committed hold every update
    exactly once (the killed instance's open transaction is aborted, its input
    reprocessed from the offsets committed in the last committed transaction)."""
    work = run_dir("streams-eos")
    state_dir = work / "state"
    app_id = f"{topic_name}-eos"
    source, counts_topic, windows_topic = (f"{topic_name}-{s}" for s in ("in", "counts", "windows"))
    for t in (source, counts_topic, windows_topic):
        create_topic(bootstrap, t, partitions=PARTITIONS)
    base = (int(time.time() * 1000) // WINDOW_MS - 8) * WINDOW_MS
    first = make_input(0, 120, base, [0, 1, 2])
    second = make_input(120, 400, base, [1, 2, 3])
    args = [bootstrap, app_id, state_dir, source, counts_topic, windows_topic, WINDOW_MS,
            "exactly_once_v2"]
    apps = []

    def start_app():
        app = JavaProcess(f"app{len(apps) + 1}", streams_cp, MAIN, args, work)
        apps.append(app)
        return app.start()

    counts = TopicReader(bootstrap, counts_topic, PARTITIONS, "read_committed")
    windows = TopicReader(bootstrap, windows_topic, PARTITIONS, "read_committed")
    try:
        for r in produce(bootstrap, source, first, conf=JAVA_PARTITIONER):
            assert r[0] is None, r
        app = start_app()
        assert by_key(counts.wait_count(len(first), 120, [app])) == expected_updates(first)[0]
        # More input, and kill -9 while it is being processed (some of it committed).
        for r in produce(bootstrap, source, second, conf=JAVA_PARTITIONER):
            assert r[0] is None, r
        wait_until(lambda: counts.poll(0.1) or len(counts.records) > len(first), 60,
                   "processing of the second input", [app])
        app.kill()
        app = start_app()
        want_counts, want_windows = expected_updates(first + second)
        total = len(first) + len(second)
        assert by_key(counts.wait_count(total, 120, [app])) == want_counts
        assert by_key(windows.wait_count(total, 60, [app])) == want_windows
    finally:
        counts.close()
        windows.close()
        for app in apps:
            app.kill()
    if not KEEP:
        shutil.rmtree(work, ignore_errors=True)
