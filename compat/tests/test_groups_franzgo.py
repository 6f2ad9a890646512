"""franz-go consumer groups (kgo's default cooperative-sticky balancer, manual commits)
and kadm's group admin (describe, offsets, lag, delete), via compat/gogroups."""

import pytest

from grouputil import group_id
from kafkautil import COMPAT, ROOT, go_program, run_json

BIN = ROOT / "target" / "compat" / "franzgo-groups"

pytestmark = pytest.mark.timeout(150)


@pytest.fixture(scope="module")
def franzgo_groups():
    return go_program(COMPAT / "gogroups", BIN)


def test_franzgo_two_members_cooperative(bootstrap, topic_name, franzgo_groups):
    g = group_id("franz")
    r = run_json([franzgo_groups, bootstrap, "group", topic_name, g, "4", "400"], timeout=130)
    # Every record exactly once.
    seen = {}
    for p, o, v in r["records"]:
        seen.setdefault((p, o), []).append(v)
    dups = {k: v for k, v in seen.items() if len(v) > 1}
    assert not dups, dups
    assert sorted(v[0] for v in seen.values()) == sorted(f"v{i}" for i in range(400))
    assert sorted(seen) == [(p, o) for p in range(4) for o in range(100)]
    # c1 had everything, then gave up exactly what c2 got (cooperative: no full revoke).
    assert r["c1_events"][0] == ["assigned", [0, 1, 2, 3]]
    c1, c2 = set(r["c1_final"]), set(r["c2_final"])
    assert len(c1) == 2 and len(c2) == 2 and c1 | c2 == {0, 1, 2, 3}
    revoked = [set(ps) for ev, ps in r["c1_events"] if ev == "revoked" and ps]
    assert revoked == [c2], r["c1_events"]
    assert not [e for e in r["c1_events"] + r["c2_events"] if e[0] == "lost"]
    assert r["describe"] == {"state": "Stable", "protocol_type": "consumer",
                             "protocol": "cooperative-sticky", "members": 2, "err": "<nil>"}
    assert r["committed"] == {str(p): 100 for p in range(4)}
    assert r["lag"] == {str(p): 0 for p in range(4)}
    assert r["deleted"] == "<nil>"
    assert "GROUP_ID_NOT_FOUND" in r["deleted_again"], r["deleted_again"]
