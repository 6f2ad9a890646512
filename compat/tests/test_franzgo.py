"""franz-go (kgo + kadm) against the broker, via the compat/go program."""

import pytest

from kafkautil import COMPAT, ROOT, brokers_of, go_program, kafka_partition, run_json

BIN = ROOT / "target" / "compat" / "franzgo"


@pytest.fixture(scope="module")
def franzgo():
    return go_program(COMPAT / "go", BIN)


def expected_produce(codec, parts, count):
    out = []
    for i in range(count):
        hs = [["n", str(i)]] + ([["extra", "x"]] if i % 4 == 0 else [])
        out.append({"partition": i % parts, "key": None if i % 9 == 0 else f"g{i}",
                    "value": None if i % 11 == 5 else f"franz-{codec}-{i}", "headers": hs})
    # Per partition in produce order, offsets from 0.
    by_part = {}
    for r in out:
        lst = by_part.setdefault(r["partition"], [])
        lst.append({**r, "offset": len(lst)})
    return [r for p in sorted(by_part) for r in by_part[p]]


def strip(records):
    return [{k: r[k] for k in ("partition", "offset", "key", "value", "headers")}
            for r in records]


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_produce_consume_codec(bootstrap, topic_name, franzgo, codec):
    res = run_json([franzgo, bootstrap, "produce", topic_name, codec, "all", "0", "3", "300"])
    assert all(p["error"] is None for p in res["produced"])
    assert strip(res["records"]) == expected_produce(codec, 3, 300)


@pytest.mark.parametrize("acks", ["0", "1"])
def test_acks(bootstrap, topic_name, franzgo, acks):
    res = run_json([franzgo, bootstrap, "produce", topic_name, "snappy", acks, "0", "2", "200"])
    assert all(p["error"] is None for p in res["produced"])
    if acks == "1":
        per = {}
        for p in res["produced"]:
            per.setdefault(p["partition"], []).append(p["offset"])
        assert per == {0: list(range(100)), 1: list(range(100))}
    assert strip(res["records"]) == expected_produce("snappy", 2, 200)


def test_idempotent_producer_default(bootstrap, topic_name, franzgo):
    """franz-go's default producer is idempotent (needs InitProducerId)."""
    res = run_json([franzgo, bootstrap, "produce", topic_name, "lz4", "all", "1", "2", "100"])
    assert [p["error"] for p in res["produced"]] == [None] * 100
    assert strip(res["records"]) == expected_produce("lz4", 2, 100)


def test_keyed_32_partitions(bootstrap, topic_name, franzgo):
    res = run_json([franzgo, bootstrap, "keyed", topic_name, "32", "3000"], timeout=150)
    want = {}
    for i in range(3000):
        key = f"key-{i % 101}"
        want.setdefault(kafka_partition(key.encode(), 32), []).append((key, str(i)))
    assert len(want) >= 28
    got = {}
    for r in res["records"]:
        got.setdefault(r["partition"], []).append((r["offset"], r["key"], r["value"]))
    assert got == {p: [(o, k, v) for o, (k, v) in enumerate(rs)] for p, rs in want.items()}


def test_record_too_large(bootstrap, topic_name, franzgo):
    res = run_json([franzgo, bootstrap, "too-large", topic_name])
    assert res["ok"] == [{"partition": 0, "offset": 0, "error": None}]
    assert res["big"][0]["error"] == {"code": 10, "name": "MESSAGE_TOO_LARGE"}


def test_admin(bootstrap, topic_name, franzgo):
    r = run_json([franzgo, bootstrap, "admin", topic_name])
    D, T = "DEFAULT_CONFIG", "DYNAMIC_TOPIC_CONFIG"
    assert r["create_again"] == {"code": 36, "name": "TOPIC_ALREADY_EXISTS"}
    assert r["configs_created"] == {
        "retention.ms": ["3600000", T], "cleanup.policy": ["delete", D],
        "max.message.bytes": ["1048588", D], "segment.bytes": ["1073741824", D],
        "retention.bytes": ["-1", D]}
    assert r["incremental_alter"] is None
    assert r["configs_incremental"] == {
        "retention.ms": ["604800000", D], "cleanup.policy": ["delete", D],
        "max.message.bytes": ["1048588", D], "segment.bytes": ["536870912", T],
        "retention.bytes": ["-1", D]}
    assert r["legacy_alter"] is None
    assert r["configs_legacy"] == {
        "retention.ms": ["604800000", D], "cleanup.policy": ["delete", T],
        "max.message.bytes": ["1048588", D], "segment.bytes": ["1073741824", D],
        "retention.bytes": ["1000000", T]}
    assert r["create_partitions"] is None
    assert r["shrink_partitions"] == {"code": 37, "name": "INVALID_PARTITIONS"}
    base = 1_600_000_000_000
    assert r["start"] == {str(p): [0, -1, None] for p in range(4)}
    assert r["end"] == {str(p): [10 * (p + 1), -1, None] for p in range(4)}
    # First offset whose timestamp >= base+450 is offset 3 (it carries base+50000).
    assert r["after_milli"] == {str(p): [3, base + 50_000, None] for p in range(4)}
    assert r["max_ts"] == {str(p): [3, base + 50_000, None] for p in range(4)}
    assert r["delete_records"] == {"1": [15, None],
                                   "2": [-1, {"code": 1, "name": "OFFSET_OUT_OF_RANGE"}]}
    assert r["start_after_delete"] == {"0": [0, -1, None], "1": [15, -1, None],
                                       "2": [0, -1, None], "3": [0, -1, None]}
    brokers = brokers_of(bootstrap)
    assert sorted(tuple(b) for b in r["brokers"]) == brokers
    assert r["controller"] in [b[0] for b in brokers]
    assert r["log_dirs"] == 1
    sizes = r["log_dir_sizes"]
    assert sorted(sizes) == ["0", "1", "2", "3"]
    assert all(sizes[str(p)] > 0 for p in range(4))
    assert sizes["0"] < sizes["1"] < sizes["2"] < sizes["3"]
    assert r["delete"] is None
    assert r["delete_again"] == {"code": 3, "name": "UNKNOWN_TOPIC_OR_PARTITION"}


def test_group_transact_session(bootstrap, topic_name, franzgo):
    """franz-go's GroupTransactSession: consume-transform-produce with the group's offsets
    in each transaction; every other transaction is aborted, and its input read again."""
    res = run_json([franzgo, bootstrap, "txn-session", topic_name, "50"], timeout=120)
    assert res["values"] == [f"x{i}" for i in range(50)], res
    assert res["committed"] == 50
    assert res["rounds"] >= 4, res   # some aborted rounds happened and were redone
