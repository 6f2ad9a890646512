"""kcat (librdkafka as packaged by Debian 12: 2.0.2) as the old-client canary."""
import json
import shutil
import subprocess

import pytest

from kafkautil import brokers_of, consume, create_topic, produce

pytestmark = pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed")


def kcat(args, stdin=None, timeout=60):
    res = subprocess.run(["kcat", *args], input=stdin, capture_output=True, timeout=timeout)
    assert res.returncode == 0, f"kcat {args} exited {res.returncode}: {res.stderr.decode()}"
    return res.stdout.decode()


def kcat_consume(bootstrap, topic, partition):
    out = kcat(["-b", bootstrap, "-C", "-t", topic, "-p", str(partition), "-o", "beginning",
                "-e", "-J", "-q", "-X", "fetch.wait.max.ms=100"])
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_kcat_version():
    out = subprocess.run(["kcat", "-V"], capture_output=True, timeout=10).stdout.decode()
    assert "librdkafka" in out


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_kcat_produce_consume(bootstrap, topic_name, codec):
    create_topic(bootstrap, topic_name, 1)
    lines = []
    for i in range(120):
        key = "" if i % 10 == 0 else f"key{i}"      # -Z: empty key is sent as null
        lines.append(f"{key}\t{codec}-value-{i}-{'x' * (i % 50)}")
    kcat(["-b", bootstrap, "-P", "-t", topic_name, "-p", "0", "-K", "\t", "-Z",
          "-H", "src=kcat", "-H", f"codec={codec}", "-X", f"compression.codec={codec}",
          "-X", "linger.ms=20", "-X", "acks=all"], stdin="\n".join(lines).encode() + b"\n")
    got = kcat_consume(bootstrap, topic_name, 0)
    assert [(m["partition"], m["offset"], m["key"], m["payload"], m["headers"]) for m in got] == \
        [(0, i, (None if i % 10 == 0 else f"key{i}"), f"{codec}-value-{i}-{'x' * (i % 50)}",
          ["src", "kcat", "codec", codec]) for i in range(120)]
    # And a current librdkafka reads what the old one wrote.
    got2 = consume(bootstrap, topic_name, 0, 120)
    assert [(m["offset"], m["key"], m["value"]) for m in got2] == \
        [(m["offset"], None if m["key"] is None else m["key"].encode(),
          m["payload"].encode()) for m in got]


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_kcat_reads_new_client_batches(bootstrap, topic_name, codec):
    create_topic(bootstrap, topic_name, 2)
    recs = [{"key": f"n{i}".encode(), "value": f"new-{i}".encode(), "partition": i % 2,
             "headers": [("i", str(i).encode())]} for i in range(80)]
    produce(bootstrap, topic_name, recs, {"compression.type": codec, "acks": "all"})
    for part in (0, 1):
        got = kcat_consume(bootstrap, topic_name, part)
        assert [(m["offset"], m["key"], m["payload"], m["headers"]) for m in got] == \
            [(j, f"n{i}", f"new-{i}", ["i", str(i)])
             for j, i in enumerate(range(part, 80, 2))]


def test_kcat_metadata_and_offset_query(bootstrap, topic_name):
    create_topic(bootstrap, topic_name, 3)
    base = 1_600_000_000_000
    produce(bootstrap, topic_name, [{"value": f"{i}".encode(), "partition": 1,
                                     "timestamp": base + i} for i in range(10)],
            {"acks": "all", "linger.ms": 20})
    md = json.loads(kcat(["-b", bootstrap, "-L", "-J", "-t", topic_name]))
    (t,) = md["topics"]
    assert t["topic"] == topic_name
    ids = [b[0] for b in brokers_of(bootstrap)]
    # One replica per partition, led by a broker of the cluster (node 0 alone on one node).
    parts = sorted((p["partition"], p["leader"], [r["id"] for r in p["replicas"]],
                    [r["id"] for r in p["isrs"]]) for p in t["partitions"])
    assert [p[0] for p in parts] == [0, 1, 2]
    assert all(leader in ids and replicas == [leader] and isr == [leader]
               for _, leader, replicas, isr in parts), parts
    assert sorted(b["id"] for b in md["brokers"]) == ids
    out = kcat(["-b", bootstrap, "-Q", "-t", f"{topic_name}:1:{base + 4}"])
    assert out.strip() == f"{topic_name} [1] offset 4"
