#!/usr/bin/env bash
# What compaction costs the produce path: produce latency of a fixed-rate workload on a
# plain topic, with a second producer updating 1024 keys of a compacted topic in the
# background, once with the log cleaner off and once with it on (same load, so the
# difference is the cleaner's). Also reports the cleaner's read and write MB/s.
#
#   bench/compaction.sh [seconds] [pairs]   # default 20 s per run, 3 off/on pairs
#
# Broker: --cores 1 pinned to CPU 0; both load generators on CPU 1; the cleaner thread
# is not pinned (nice 10). Needs 2 CPUs; builds release spate and spate-bench.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
cd "$ROOT"
DURATION="${1:-20}"
PAIRS="${2:-3}"
WORK="$ROOT/target/bench-compaction"
BENCH="$ROOT/target/release/spate-bench"
SPATE="$ROOT/target/release/spate"
cargo build --release -q -p spate-node -p spate-bench
rm -rf "$WORK"; mkdir -p "$WORK"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

BROKER_PID=""
stop_broker() {
  if [[ -n "$BROKER_PID" ]] && kill -0 "$BROKER_PID" 2>/dev/null; then
    kill -TERM "$BROKER_PID"; wait "$BROKER_PID" 2>/dev/null || true
  fi
  BROKER_PID=""
}
trap stop_broker EXIT

scrape() { curl -s "http://127.0.0.1:$HTTP/metrics" | awk -v m="$1" '$1==m {print $2}'; }

run() {  # run NAME CLEANER_ENABLE
  local name="$1" enable="$2"
  PORT="$(free_port)"; HTTP="$(free_port)"
  cat > "$WORK/$name.toml" <<TOML
[log_cleaner]
enable = $enable
backoff_ms = 1000
TOML
  taskset -c 0 "$SPATE" --config "$WORK/$name.toml" --data-dir "$WORK/$name-data" \
    --listen "127.0.0.1:$PORT" --http "127.0.0.1:$HTTP" --cores 1 > "$WORK/$name.log" 2>&1 &
  BROKER_PID=$!
  for _ in $(seq 1 100); do grep -q "spate ready" "$WORK/$name.log" && break; sleep 0.1; done
  python3 - "$PORT" <<'PY'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
a = AdminClient({"bootstrap.servers": f"127.0.0.1:{sys.argv[1]}"})
fs = a.create_topics([NewTopic("compacted", 4, 1, config={
    "cleanup.policy": "compact", "segment.bytes": "1048576",
    "min.cleanable.dirty.ratio": "0.1"})])
for f in fs.values():
    f.result(30)
PY
  # Background: 20k msg/s of 1 KiB updates to 1024 keys of the compacted topic.
  taskset -c 1 "$BENCH" produce --bootstrap "127.0.0.1:$PORT" --topic compacted --partitions 4 \
    --record-size 1024 --key-size 16 --compressibility 0.5 --rate 20000 --linger-ms 5 \
    --duration "$((DURATION + 6))" --warmup 0 --acks 1 --quiet --json "$WORK/$name-bg.json" &
  local bg=$!
  sleep 5
  local read0 written0; read0="$(scrape spate_cleaner_bytes_read_total)"; written0="$(scrape spate_cleaner_bytes_written_total)"
  # Measured: 20k msg/s of 1 KiB records to 16 partitions of a plain topic (the
  # 16-partitions-fixed-rate-latency workload's shape, produce only).
  taskset -c 1 "$BENCH" produce --bootstrap "127.0.0.1:$PORT" --topic plain --partitions 16 \
    --record-size 1024 --compressibility 0.5 --acks 1 --rate 20000 --linger-ms 5 \
    --connections 4 --max-in-flight 5 --warmup 2 --duration "$DURATION" --quiet \
    --json "$WORK/$name.json"
  local read1 written1; read1="$(scrape spate_cleaner_bytes_read_total)"; written1="$(scrape spate_cleaner_bytes_written_total)"
  local runs; runs="$(scrape spate_cleaner_runs_total)"
  wait "$bg" || true
  stop_broker
  python3 - "$WORK/$name.json" "$name" "$read0" "$read1" "$written0" "$written1" "$DURATION" "$runs" <<'PY'
import json, sys
path, name, r0, r1, w0, w1, dur, runs = sys.argv[1:]
d = json.load(open(path))
lat = d["produce_latency_ms"]
mbps = lambda a, b: (float(b or 0) - float(a or 0)) / float(dur) / 1e6
print(f"| {name} | {d['msgs_per_sec']:.0f} | "
      + " | ".join(f"{lat[k]:.2f}" for k in ("p50", "p95", "p99", "p999"))
      + f" | {mbps(r0, r1):.1f} | {mbps(w0, w1):.1f} | {float(runs):.0f} |")
PY
}

echo "| cleaner | produce msgs/s | p50 ms | p95 ms | p99 ms | p99.9 ms | cleaner read MB/s | cleaner write MB/s | cleans |"
echo "|---|---|---|---|---|---|---|---|---|"
# Alternating pairs, so that drift of the machine hits both sides alike.
for i in $(seq 1 "$PAIRS"); do
  run "off-$i" false
  run "on-$i" true
done
