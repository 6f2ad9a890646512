"""kafkajs (pure JS, old non-flexible protocol versions) against the broker, via
compat/node/scenario.js. kafkajs has no group-less consumer: what it produces is read
back here with confluent-kafka; kafkajs consumption waits for consumer groups."""
import shutil
import subprocess
import time

import pytest

from kafkautil import COMPAT, brokers_of, consume, run_json, watermarks

NODE_DIR = COMPAT / "node"


@pytest.fixture(scope="module")
def kafkajs():
    if shutil.which("node") is None:
        pytest.fail("node is not installed (compat/run.sh installs the suite's tools)")
    if not (NODE_DIR / "node_modules" / "kafkajs").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True,
                       timeout=300)
    return ["node", str(NODE_DIR / "scenario.js")]


@pytest.mark.parametrize("codec,acks", [("none", "-1"), ("gzip", "-1"), ("none", "1"),
                                        ("gzip", "0")])
def test_produce(bootstrap, topic_name, kafkajs, codec, acks):
    parts, count = 2, 100
    res = run_json([*kafkajs, bootstrap, "produce", topic_name, codec, acks, str(parts),
                    str(count)])
    # 4 send() calls of 25 records, split by partition parity: 13+12 or 12+13.
    if acks != "0":
        got = [(p["partition"], p["error"], p["base_offset"]) for p in res["produced"]]
        want, seen = [], {0: 0, 1: 0}
        for start in range(0, count, 25):
            n = {0: 0, 1: 0}
            for i in range(start, start + 25):
                n[i % parts] += 1
            for p in (1, 0):  # kafkajs reports partitions in this order here
                want.append((p, 0, str(seen[p])))
                seen[p] += n[p]
        assert sorted(got) == sorted(want)
    if acks == "0":
        # No acknowledgement: the records may still be in flight when kafkajs lists the
        # offsets. Give the broker a moment, then everything must be there.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and \
                [watermarks(bootstrap, topic_name, p) for p in range(parts)] != [(0, 50)] * parts:
            time.sleep(0.2)
        assert [watermarks(bootstrap, topic_name, p) for p in range(parts)] == [(0, 50)] * parts
    else:
        assert res["offsets"] == {"0": ["0", "50"], "1": ["0", "50"]}
    for p in range(parts):
        rs = consume(bootstrap, topic_name, p, 50)
        exp = [i for i in range(count) if i % parts == p]
        assert [(m["offset"], m["key"], m["value"], m["headers"]) for m in rs] == [
            (n, None if i % 6 == 0 else f"js{i}".encode(),
             None if i % 10 == 3 else f"kafkajs-{codec}-{i}".encode(),
             [("idx", str(i).encode())]) for n, i in enumerate(exp)]


def test_admin(bootstrap, topic_name, kafkajs):
    r = run_json([*kafkajs, bootstrap, "admin", topic_name])
    assert r["created"] is True
    # kafkajs turns TOPIC_ALREADY_EXISTS into a `false` return value.
    assert (r["create_again"], r["create_again_value"]) == ("returned", False)
    assert r["configs_created"] == {
        "_error": 0, "retention.ms": ["7777777", False, False],
        "segment.bytes": ["2097152", False, False], "cleanup.policy": ["delete", True, False],
        "max.message.bytes": ["1048588", True, False], "retention.bytes": ["-1", True, False]}
    assert r["alter"] == [[0, topic_name]]
    # Legacy AlterConfigs replaced the whole override set.
    assert r["configs_altered"] == {
        "_error": 0, "retention.ms": ["604800000", True, False],
        "segment.bytes": ["1073741824", True, False], "cleanup.policy": ["delete", True, False],
        "max.message.bytes": ["1048588", True, False],
        "retention.bytes": ["5000000", False, False]}
    assert r["shrink"] == {"type": "INVALID_PARTITIONS", "name": "KafkaJSProtocolError",
                           "retriable": False}
    ids = [b[0] for b in brokers_of(bootstrap)]
    assert [m[0] for m in r["metadata"]] == [0, 1, 2]
    # One replica per partition, led by a broker of the cluster.
    assert all(leader in ids and replicas == [leader] and isr == [leader] and err == 0
               for _, leader, replicas, isr, err in r["metadata"]), r["metadata"]
    assert r["sent"] == [[2, 0, "0"]]
    assert r["offsets"] == [[0, "0", "0", "0"], [1, "0", "0", "0"], [2, "0", "20", "20"]]
    # First offset with timestamp >= base+4500 is 5; kafkajs maps "none" (-1) to the end.
    assert r["by_ts"] == {"0": "0", "1": "0", "2": "5"}
    assert r["by_ts_future"] == {"0": "0", "1": "0", "2": "20"}
    assert r["offsets_after_delete"] == [[0, "0", "0"], [1, "0", "0"], [2, "12", "20"]]
    brokers = brokers_of(bootstrap)
    assert sorted(tuple(b) for b in r["cluster"]["brokers"]) == brokers
    assert r["cluster"]["controller"] in [b[0] for b in brokers]
    assert r["cluster"]["has_id"] is True
    assert r["listed"] is True and r["listed_after_delete"] is False
