#!/usr/bin/env bash
# Side by side: Apache Kafka (KRaft, combined broker+controller, one node) and Spate on
# 127.0.0.1, data on the same disk (under target/bench-compare/), the same workload
# driven by two clients:
#   * spate-bench (this crate's lean Kafka-protocol client), and
#   * Kafka's own producer perf test (org.apache.kafka.tools.ProducerPerformance from
#     the kafka-tools jar, i.e. what kafka-producer-perf-test.sh runs).
# Prints a table and the Spate/Kafka ratios; raw outputs and results.json go to
# target/bench-compare/.
#
# Kafka's jars come from Maven Central the same way compat/reference-kafka.sh gets them
# (compat/reference/pom.xml, shared cache target/compat/kafka-libs). Kafka runs with the
# JVM settings of its own kafka-server-start.sh (1 GiB heap, G1), not the compat
# script's fast-start flags.
#
# Environment (defaults in brackets):
#   DURATION [10]        seconds per load run
#   RECORD_SIZE [100]    bytes per record
#   PARTITIONS [16]      partitions of the test topic
#   ACKS [1]             produce acks for every run
#   COMPRESSION [none]   none|gzip|snappy|lz4|zstd
#   BROKER_CPUS [0]      taskset CPU list for the broker under test ("" = no pinning)
#   CLIENT_CPUS [1]      taskset CPU list for the load clients ("" = no pinning)
#   SPATE_CORES [1]      spate --cores
#   RATE [auto]          msg/s for the fixed-rate latency runs (auto: half of the lower
#                        of the two spate-bench peaks, so both brokers get the same load)
#   OUT [target/bench-compare]  output directory (emptied first)
#   NO_BUILD=1           skip cargo build
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
cd "$ROOT"

DURATION="${DURATION:-10}"
RECORD_SIZE="${RECORD_SIZE:-100}"
PARTITIONS="${PARTITIONS:-16}"
ACKS="${ACKS:-1}"
COMPRESSION="${COMPRESSION:-none}"
BROKER_CPUS="${BROKER_CPUS-0}"
CLIENT_CPUS="${CLIENT_CPUS-1}"
SPATE_CORES="${SPATE_CORES:-1}"
RATE="${RATE:-auto}"
WORK="${OUT:-$ROOT/target/bench-compare}"
LIBS="$ROOT/target/compat/kafka-libs"
BENCH="$ROOT/target/release/spate-bench"
SPATE="$ROOT/target/release/spate"
SPATE_PORT="${SPATE_PORT:-29192}"
KAFKA_PORT="${KAFKA_PORT:-29292}"
KAFKA_CPORT="${KAFKA_CPORT:-29293}"
TOPIC="cmp-${RECORD_SIZE}b-${PARTITIONS}p"

pin() { # pin CPUS cmd...  (foreground only)
  local cpus="$1"; shift
  if [[ -n "$cpus" ]] && command -v taskset >/dev/null; then taskset -c "$cpus" "$@"; else "$@"; fi
}
# Brokers start in the background as a plain command (no function, no subshell), so
# that $! is the broker's own pid (taskset execs it) and SIGTERM reaches it.
BROKER_PIN=()
if [[ -n "$BROKER_CPUS" ]] && command -v taskset >/dev/null; then BROKER_PIN=(taskset -c "$BROKER_CPUS"); fi
log() { echo "== $*" >&2; }

if [[ "${NO_BUILD:-}" != 1 ]]; then
  cargo build --release -p spate-node -p spate-bench
fi
if [[ ! -f "$LIBS/.complete" ]]; then
  log "fetching Apache Kafka jars with Maven (compat/reference/pom.xml)"
  mkdir -p "$LIBS"
  (cd "$ROOT/compat/reference" && timeout 900 mvn -q -B dependency:copy-dependencies -DoutputDirectory="$LIBS")
  touch "$LIBS/.complete"
fi
KAFKA_VERSION="$(ls "$LIBS" | sed -n 's/^kafka-clients-\(.*\)\.jar$/\1/p' | head -1)"

rm -rf "$WORK"
mkdir -p "$WORK"
BROKER_PID=""
alive() { kill -0 "$1" 2>/dev/null && [[ "$(ps -o stat= -p "$1" 2>/dev/null)" != Z* ]]; }
stop_broker() {
  if [[ -n "$BROKER_PID" ]] && alive "$BROKER_PID"; then
    kill -TERM "$BROKER_PID" 2>/dev/null || true
    for _ in $(seq 1 120); do alive "$BROKER_PID" || break; sleep 0.5; done
    alive "$BROKER_PID" && kill -KILL "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
  fi
  BROKER_PID=""
  # The next broker must not share a listening port (SO_REUSEPORT) with this one.
  for _ in $(seq 1 60); do port_open "$SPATE_PORT" || port_open "$KAFKA_PORT" || break; sleep 0.5; done
}
cleanup() { stop_broker; rm -rf "$WORK/spate/data" "$WORK/kafka/data"; }
trap cleanup EXIT

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_spate() {
  mkdir -p "$WORK/spate"
  "${BROKER_PIN[@]}" "$SPATE" --data-dir "$WORK/spate/data" --listen "127.0.0.1:$SPATE_PORT" \
    --cores "$SPATE_CORES" > "$WORK/spate/spate.log" 2>&1 &
  BROKER_PID=$!
  for _ in $(seq 1 100); do
    grep -q "spate ready to serve" "$WORK/spate/spate.log" 2>/dev/null && return 0
    alive "$BROKER_PID" || break
    sleep 0.1
  done
  cat "$WORK/spate/spate.log" >&2; echo "spate did not start" >&2; return 1
}

start_kafka() {
  local dir="$WORK/kafka"
  mkdir -p "$dir/data"
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=0
controller.quorum.voters=0@127.0.0.1:$KAFKA_CPORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
  local cp="$LIBS/*"
  # kafka-server-start.sh / kafka-run-class.sh defaults.
  local jvm=(-Xms1G -Xmx1G -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20
             -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent
             -Djava.awt.headless=true)
  timeout 120 java -cp "$cp" kafka.tools.StorageTool format \
    -t "$(timeout 60 java -cp "$cp" kafka.tools.StorageTool random-uuid)" \
    -c "$dir/server.properties" > "$dir/format.log" 2>&1
  "${BROKER_PIN[@]}" java "${jvm[@]}" -cp "$cp" kafka.Kafka "$dir/server.properties" \
    > "$dir/kafka.log" 2>&1 < /dev/null &
  BROKER_PID=$!
  for _ in $(seq 1 240); do
    port_open "$KAFKA_PORT" && { sleep 2; return 0; }
    alive "$BROKER_PID" || break
    sleep 0.5
  done
  tail -50 "$dir/kafka.log" >&2; echo "kafka did not start" >&2; return 1
}

# spate-bench NAME BOOTSTRAP MODE [extra flags...]
run_bench() {
  local name="$1" boot="$2" mode="$3"; shift 3
  local cmd=("$BENCH" "$mode" --bootstrap "$boot" --topic "$TOPIC" --partitions "$PARTITIONS"
             --record-size "$RECORD_SIZE" --duration "$DURATION" --acks "$ACKS"
             --compression "$COMPRESSION" --json "$WORK/$name.json" --quiet "$@")
  echo "${cmd[*]}" | sed "s#$ROOT/##g" > "$WORK/$name.cmd"
  log "$name: $(cat "$WORK/$name.cmd")"
  pin "$CLIENT_CPUS" timeout $((${DURATION%.*} + 90)) "${cmd[@]}" > "$WORK/$name.out" 2>&1 \
    || { cat "$WORK/$name.out" >&2; echo "(run $name failed)" >&2; }
  cat "$WORK/$name.out" >&2
}

# perf_test NAME BOOTSTRAP NUM_RECORDS THROUGHPUT
perf_test() {
  local name="$1" boot="$2" num="$3" tput="$4"
  local cmd=(java -Xmx1G -cp "$LIBS/*" org.apache.kafka.tools.ProducerPerformance
             --topic "$TOPIC" --num-records "$num" --record-size "$RECORD_SIZE" --throughput "$tput"
             --producer-props "bootstrap.servers=$boot" "acks=$ACKS" linger.ms=5 batch.size=131072
             "compression.type=$COMPRESSION" buffer.memory=67108864)
  echo "${cmd[*]}" | sed "s#$ROOT/##g; s#$LIBS/\*#target/compat/kafka-libs/*#g" > "$WORK/$name.cmd"
  log "$name: $(cat "$WORK/$name.cmd")"
  pin "$CLIENT_CPUS" timeout $((${DURATION%.*} * 6 + 60)) "${cmd[@]}" > "$WORK/$name.out" 2>&1 \
    || echo "(run $name failed or timed out)" >> "$WORK/$name.out"
  tail -2 "$WORK/$name.out" >&2
}

jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); v=d
for k in sys.argv[2].split("."): v=v[k]
print(v)' "$1" "$2" 2>/dev/null || echo 0; }

# Every broker gets the same unmeasured warm-up load first (the JVM's JIT needs it;
# Spate gets it too so the two are treated alike).
warm() { DURATION=5 run_bench "$1-warmup" "$2" produce >/dev/null 2>&1 || true; }

# --- phase 1: peaks -------------------------------------------------------------
log "Spate peak"
start_spate
warm spate "127.0.0.1:$SPATE_PORT"
run_bench spate-peak "127.0.0.1:$SPATE_PORT" produce
stop_broker; rm -rf "$WORK/spate/data"

log "Kafka peak"
start_kafka
warm kafka "127.0.0.1:$KAFKA_PORT"
run_bench kafka-peak "127.0.0.1:$KAFKA_PORT" produce
stop_broker; rm -rf "$WORK/kafka/data"

SPATE_PEAK="$(jget "$WORK/spate-peak.json" msgs_per_sec)"
KAFKA_PEAK="$(jget "$WORK/kafka-peak.json" msgs_per_sec)"
if [[ "$RATE" == auto ]]; then
  RATE="$(python3 -c "import sys; print(max(1000, int(min(float(sys.argv[1]), float(sys.argv[2])) / 2)))" "$SPATE_PEAK" "$KAFKA_PEAK")"
fi
SPATE_HALF="$(python3 -c "import sys; print(max(1000, int(float(sys.argv[1]) / 2)))" "$SPATE_PEAK")"
KAFKA_HALF="$(python3 -c "import sys; print(max(1000, int(float(sys.argv[1]) / 2)))" "$KAFKA_PEAK")"
log "fixed rate for the side-by-side latency runs: $RATE msg/s; spate half-peak: $SPATE_HALF msg/s"
# Kafka's perf test is bounded by a record count: size it to ~DURATION at each rate.
PT_PEAK_N="$(python3 -c "import sys; print(int(max(100000, float(sys.argv[1]) * float(sys.argv[2]))))" "$KAFKA_PEAK" "$DURATION")"

# --- phase 2: latency at a fixed rate + the independent client, per broker -------
log "Spate: latency and Kafka perf test"
start_spate
warm spate "127.0.0.1:$SPATE_PORT"
run_bench spate-produce-rate "127.0.0.1:$SPATE_PORT" produce --rate "$RATE" --linger-ms 5 --warmup 1
run_bench spate-e2e-rate "127.0.0.1:$SPATE_PORT" e2e --rate "$RATE" --linger-ms 5 --warmup 1
run_bench spate-produce-halfpeak "127.0.0.1:$SPATE_PORT" produce --rate "$SPATE_HALF" --linger-ms 5 --warmup 1
perf_test spate-perftest-peak "127.0.0.1:$SPATE_PORT" "$PT_PEAK_N" -1
# The Java producer on one core tops out well below the brokers' peaks: its fixed-rate
# run uses half of what it reached against Spate, for both brokers.
PT_PEAK="$(python3 - "$WORK/spate-perftest-peak.out" <<'PY'
import re, sys
m = re.findall(r"records sent, ([\d.]+) records/sec", open(sys.argv[1]).read())
print(int(float(m[-1])) if m else 100000)
PY
)"
PT_RATE="${PT_RATE:-$(( PT_PEAK / 2 ))}"
PT_RATE_N="$(python3 -c "import sys; print(int(float(sys.argv[1]) * float(sys.argv[2])))" "$PT_RATE" "$DURATION")"
log "fixed rate for the Kafka perf test runs: $PT_RATE msg/s"
perf_test spate-perftest-rate "127.0.0.1:$SPATE_PORT" "$PT_RATE_N" "$PT_RATE"
stop_broker; rm -rf "$WORK/spate/data"

log "Kafka: latency and Kafka perf test"
start_kafka
warm kafka "127.0.0.1:$KAFKA_PORT"
run_bench kafka-produce-rate "127.0.0.1:$KAFKA_PORT" produce --rate "$RATE" --linger-ms 5 --warmup 1
run_bench kafka-e2e-rate "127.0.0.1:$KAFKA_PORT" e2e --rate "$RATE" --linger-ms 5 --warmup 1
run_bench kafka-produce-halfpeak "127.0.0.1:$KAFKA_PORT" produce --rate "$KAFKA_HALF" --linger-ms 5 --warmup 1
perf_test kafka-perftest-peak "127.0.0.1:$KAFKA_PORT" "$PT_PEAK_N" -1
perf_test kafka-perftest-rate "127.0.0.1:$KAFKA_PORT" "$PT_RATE_N" "$PT_RATE"
stop_broker; rm -rf "$WORK/kafka/data"

# --- report ------------------------------------------------------------------------
python3 - "$WORK" "$RATE" "$SPATE_HALF" "$KAFKA_HALF" "$KAFKA_VERSION" "$PT_RATE" <<'PY'
import json, os, re, sys
work, rate, half, khalf, kver, ptrate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
def bench(name):
    try:
        with open(os.path.join(work, name + ".json")) as f:
            return json.load(f)
    except Exception:
        return None
def perftest(name):
    try:
        text = open(os.path.join(work, name + ".out")).read()
    except Exception:
        return None
    m = None
    for m in re.finditer(r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
                         r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99\.9th", text):
        pass
    if not m:
        return None
    g = m.groups()
    return {"msgs": int(g[0]), "msgs_per_sec": float(g[1]), "mb_per_sec": float(g[2]),
            "produce_latency_ms": {"mean": float(g[3]), "max": float(g[4]), "p50": float(g[5]),
                                   "p95": float(g[6]), "p99": float(g[7]), "p999": float(g[8])}}
res = {n: bench(n) for n in ("spate-peak", "kafka-peak", "spate-produce-rate", "kafka-produce-rate", "spate-e2e-rate", "spate-produce-halfpeak", "kafka-e2e-rate", "kafka-produce-halfpeak")}
res.update({n: perftest(n) for n in ("spate-perftest-peak", "kafka-perftest-peak", "spate-perftest-rate", "kafka-perftest-rate")})
res["rate"] = rate
res["perftest_rate"] = ptrate
res["spate_half_peak_rate"] = half
res["kafka_half_peak_rate"] = khalf
res["kafka_version"] = kver
with open(os.path.join(work, "results.json"), "w") as f:
    json.dump(res, f, indent=2)

def g(d, *ks):
    try:
        for k in ks:
            d = d[k]
        return float(d)
    except Exception:
        return float("nan")
def ratio(a, b):
    return a / b if b and b == b and a == a else float("nan")
rows = []
def row(what, s, k, better):
    rows.append((what, s, k, ratio(s, k), better))
row("peak msg/s (spate-bench)", g(res["spate-peak"], "msgs_per_sec"), g(res["kafka-peak"], "msgs_per_sec"), "higher")
row("peak msg/s (Kafka perf test)", g(res["spate-perftest-peak"], "msgs_per_sec"), g(res["kafka-perftest-peak"], "msgs_per_sec"), "higher")
for p in ("p50", "p95", "p99", "p999", "max"):
    row(f"produce {p} ms @ {rate} msg/s (spate-bench)", g(res["spate-produce-rate"], "produce_latency_ms", p),
        g(res["kafka-produce-rate"], "produce_latency_ms", p), "lower")
for p in ("p50", "p99", "p999"):
    row(f"e2e {p} ms @ {rate} msg/s (spate-bench)", g(res["spate-e2e-rate"], "e2e_latency_ms", p),
        g(res["kafka-e2e-rate"], "e2e_latency_ms", p), "lower")
for p in ("p50", "p95", "p99", "p999"):
    row(f"produce {p} ms @ {ptrate} msg/s (Kafka perf test)", g(res["spate-perftest-rate"], "produce_latency_ms", p),
        g(res["kafka-perftest-rate"], "produce_latency_ms", p), "lower")
print()
print(f"| metric | Spate | Kafka {kver} | Spate/Kafka |")
print("|---|---:|---:|---:|")
for what, s, k, r, better in rows:
    print(f"| {what} ({better} is better) | {s:,.3f} | {k:,.3f} | {r:.2f} |")
print()
for who, name, r in (("Spate", "spate-produce-halfpeak", half), ("Kafka", "kafka-produce-halfpeak", khalf)):
    h = res[name] or {}
    print(f"{who} at half of its own spate-bench peak ({r:,} msg/s): achieved {g(h,'msgs_per_sec'):,.0f} msg/s, produce "
          f"p50 {g(h,'produce_latency_ms','p50'):.3f} ms, p95 {g(h,'produce_latency_ms','p95'):.3f} ms, "
          f"p99 {g(h,'produce_latency_ms','p99'):.3f} ms, p99.9 {g(h,'produce_latency_ms','p999'):.3f} ms")
print(f"P99 produce latency ratio at half of own peak (Spate/Kafka): "
      f"{ratio(g(res['spate-produce-halfpeak'],'produce_latency_ms','p99'), g(res['kafka-produce-halfpeak'],'produce_latency_ms','p99')):.3f}")
PY
echo
echo "raw outputs, commands and results.json: target/bench-compare/"
