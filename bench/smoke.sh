#!/usr/bin/env bash
# Smoke test for spate-bench against a real spate broker:
# builds release `spate` and `spate-bench`, starts a broker on a free loopback port
# (data under target/bench-smoke/), runs ~3 s of produce, consume and e2e at a modest
# fixed rate, checks the JSON reports, stops the broker. Exits non-zero on failure.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
cd "$ROOT"
WORK="$ROOT/target/bench-smoke"
BENCH="$ROOT/target/release/spate-bench"
SPATE="$ROOT/target/release/spate"

if [[ "${SPATE_SMOKE_NO_BUILD:-}" != 1 ]]; then
  cargo build --release -p spate-node -p spate-bench
fi

rm -rf "$WORK"
mkdir -p "$WORK"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
BROKER_PID=""
cleanup() {
  if [[ -n "$BROKER_PID" ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
    kill -TERM "$BROKER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$BROKER_PID" 2>/dev/null && kill -KILL "$BROKER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK/data"
}
trap cleanup EXIT

"$SPATE" --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" --cores 1 > "$WORK/spate.log" 2>&1 &
BROKER_PID=$!
for _ in $(seq 1 100); do
  grep -q "spate ready to serve" "$WORK/spate.log" 2>/dev/null && break
  kill -0 "$BROKER_PID" 2>/dev/null || { cat "$WORK/spate.log" >&2; echo "smoke: broker died" >&2; exit 1; }
  sleep 0.1
done
grep -q "spate ready to serve" "$WORK/spate.log" || { echo "smoke: broker not ready" >&2; exit 1; }

COMMON=(--bootstrap "127.0.0.1:$PORT" --topic smoke --partitions 3 --record-size 200 --quiet)
echo "smoke: produce"
timeout 60 "$BENCH" produce "${COMMON[@]}" --duration 3 --rate 2000 --acks 1 --json "$WORK/produce.json"
echo "smoke: consume"
timeout 60 "$BENCH" consume "${COMMON[@]}" --duration 20 --json "$WORK/consume.json"
echo "smoke: e2e"
timeout 60 "$BENCH" e2e "${COMMON[@]}" --duration 3 --rate 2000 --acks -1 --compression lz4 --json "$WORK/e2e.json"

python3 - "$WORK" <<'PY'
import json, sys, os
work = sys.argv[1]
def load(name):
    with open(os.path.join(work, name)) as f:
        return json.load(f)
p, c, e = load("produce.json"), load("consume.json"), load("e2e.json")
fails = []
def need(cond, what):
    if not cond:
        fails.append(what)
for name, d in (("produce", p), ("consume", c), ("e2e", e)):
    for k in ("msgs_per_sec", "mb_per_sec", "produce_latency_ms", "msgs", "errors"):
        need(k in d, f"{name}: field {k} missing")
    for k in ("p50", "p95", "p99", "p999", "max"):
        need(k in d.get("produce_latency_ms", {}), f"{name}: produce_latency_ms.{k} missing")
    need(d.get("errors") == 0, f"{name}: errors {d.get('errors')} ({d.get('first_error')})")
    need(d.get("msgs", 0) > 0, f"{name}: no messages")
    need(os.path.exists(os.path.join(work, name + ".svg")), f"{name}: no svg")
need(p["produce_latency_ms"]["count"] > 0 and p["produce_latency_ms"]["max"] > 0, "produce: empty latency histogram")
need(c["consumed_msgs"] == p["produced_msgs"], f"consume read {c['consumed_msgs']} of {p['produced_msgs']} produced")
need(5000 <= p["produced_msgs"] <= 7000, f"produce at 2000 msg/s for 3 s sent {p['produced_msgs']}")
need("e2e_latency_ms" in e, "e2e: e2e_latency_ms missing")
for k in ("p50", "p95", "p99", "p999", "max"):
    need(k in e.get("e2e_latency_ms", {}), f"e2e: e2e_latency_ms.{k} missing")
need(e["consumed_msgs"] == e["produced_msgs"], f"e2e consumed {e['consumed_msgs']} of {e['produced_msgs']}")
need(e.get("e2e_latency_ms", {}).get("count", 0) == e["produced_msgs"], "e2e: latency count differs from messages")
if fails:
    print("smoke: FAILED\n  " + "\n  ".join(fails))
    sys.exit(1)
print(f"smoke: produce {p['produced_msgs']} msgs (p99 {p['produce_latency_ms']['p99']} ms), "
      f"consume {c['consumed_msgs']}, e2e {e['consumed_msgs']} (p99 {e['e2e_latency_ms']['p99']} ms)")
PY
echo "smoke: ok"
