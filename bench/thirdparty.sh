#!/usr/bin/env bash
# Spate against Apache Kafka with load generators Spate's developers did not write, in
# alternating runs (Spate, Kafka, Spate, Kafka, ...; a fresh broker and data directory
# for every run, both on the same disk under target/thirdparty-bench/):
#   * librdkafka's rdkafka_performance, built from the vendored source tree of the
#     rdkafka-sys crate (fetched by cargo into a scratch project under target/), in
#     latency mode at a fixed rate (-P -l -r RATE, linger.ms=5);
#   * Kafka's org.apache.kafka.tools.ProducerPerformance (what
#     kafka-producer-perf-test.sh runs) at a fixed rate;
#   * Kafka's org.apache.kafka.tools.EndToEndLatency (one message at a time, produce
#     to consume);
#   * consume throughput: a topic pre-filled by rdkafka_performance -P (CONSUME_BYTES of
#     SIZE-byte records, as fast as it goes, acks=1), then read from the start by
#     librdkafka (rdkafka_performance -G, a group consumer) or by Kafka's
#     org.apache.kafka.tools.ConsumerPerformance (what kafka-consumer-perf-test.sh
#     runs); the broker CPU is counted over the consume only.
# Kafka's jars come from Maven Central as compat/reference-kafka.sh gets them
# (compat/reference/pom.xml, cache target/compat/kafka-libs).
#
# Prints one markdown table per workload: the median over PAIRS runs of each broker,
# with the spread (min-max) of p99, throughput and the broker's CPU time per message
# (utime+stime of the broker process over the run, from /proc/<pid>/stat).
#
# Environment (defaults in brackets):
#   PAIRS [3]           runs of each broker per workload
#   RATES ["1000 10000 50000"]  msg/s of the fixed-rate produce runs
#   SIZE [100]          record size in bytes
#   ACKS [1]            1 or -1 (all)
#   SECONDS_PER_RUN [20]  length of a fixed-rate run (messages = rate * seconds)
#   E2E_COUNT [5000]    messages of an EndToEndLatency run (0 skips it)
#   PARTITIONS [16]
#   BROKER_CPUS [0]     taskset CPU list of the broker; CLIENT_CPUS [1] of the client
#   SPATE_CORES [1]     spate --cores
#   TOOLS ["rdkafka java e2e"]  which generators to run; the consume runs are
#                       "rdkafka-consume" and "java-consume"
#   CONSUME_BYTES [1000000000]  bytes of records pre-filled for a consume run (more than
#                       Spate's default 256 MiB batch cache per shard: most reads go to disk)
#   FILL_LINGER_MS [5]  linger.ms of that fill. librdkafka closes a batch when it lingered
#                       this long or reached batch.size (1 MB), so with a short linger the
#                       batches depend on how fast the broker acknowledges and the two
#                       brokers store different data; a long one (e.g. 1000) fills every
#                       batch to batch.size on both, for a like-for-like consume (the
#                       fill's queue holds 2 M records, room for a full batch per partition)
#   RDK_CONSUME_PROPS [""]  librdkafka properties of the rdkafka-consume runs, as
#                       "key=value key=value" (e.g. "fetch.queue.backoff.ms=10": with the
#                       default 1000, a consumer whose queue reached queued.max.messages.kbytes
#                       stops fetching for a whole second, and the count of those pauses
#                       decides the result; docs/benchmarks.md)
#   SPATE_CONFIG        optional TOML file passed to spate --config (A/B of settings)
#   OUT [target/thirdparty-bench]
#   NO_BUILD=1          skip cargo build of spate
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
cd "$ROOT"

PAIRS="${PAIRS:-3}"
RATES="${RATES:-1000 10000 50000}"
SIZE="${SIZE:-100}"
ACKS="${ACKS:-1}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-20}"
E2E_COUNT="${E2E_COUNT:-5000}"
PARTITIONS="${PARTITIONS:-16}"
BROKER_CPUS="${BROKER_CPUS-0}"
CLIENT_CPUS="${CLIENT_CPUS-1}"
SPATE_CORES="${SPATE_CORES:-1}"
TOOLS="${TOOLS:-rdkafka java e2e}"
CONSUME_BYTES="${CONSUME_BYTES:-1000000000}"
FILL_LINGER_MS="${FILL_LINGER_MS:-5}"
SPATE_CONFIG="${SPATE_CONFIG:-}"
RDK_CONSUME_X=()
for kv in ${RDK_CONSUME_PROPS:-}; do RDK_CONSUME_X+=(-X "$kv"); done
WORK="${OUT:-$ROOT/target/thirdparty-bench}"
LIBS="$ROOT/target/compat/kafka-libs"
RDK_DIR="$ROOT/target/thirdparty"
RDK_VERSION="${RDK_VERSION:-=4.10.0}"   # rdkafka-sys 4.10.0 vendors librdkafka 2.12.1
SPATE="$ROOT/target/release/spate"
SPATE_PORT="${SPATE_PORT:-29392}"
KAFKA_PORT="${KAFKA_PORT:-29492}"
KAFKA_CPORT="${KAFKA_CPORT:-29493}"

log() { echo "== $*" >&2; }
pin() { local c="$1"; shift; if [[ -n "$c" ]]; then taskset -c "$c" "$@"; else "$@"; fi; }
BROKER_PIN=()
[[ -n "$BROKER_CPUS" ]] && BROKER_PIN=(taskset -c "$BROKER_CPUS")

# --- tools ----------------------------------------------------------------------
if [[ "${NO_BUILD:-}" != 1 ]]; then cargo build --release -p spate-node; fi
if [[ ! -f "$LIBS/.complete" ]]; then
  log "fetching Apache Kafka jars with Maven (compat/reference/pom.xml)"
  mkdir -p "$LIBS"
  (cd "$ROOT/compat/reference" && timeout 900 mvn -q -B dependency:copy-dependencies -DoutputDirectory="$LIBS")
  touch "$LIBS/.complete"
fi
RDKP="$RDK_DIR/librdkafka/examples/rdkafka_performance"
if [[ ! -x "$RDKP" ]]; then
  log "building rdkafka_performance from the rdkafka-sys crate's vendored librdkafka"
  mkdir -p "$RDK_DIR/rdk-fetch/src"
  cat > "$RDK_DIR/rdk-fetch/Cargo.toml" <<TOML
[package]
name = "rdk-fetch"
version = "0.0.0"
edition = "2021"
[dependencies]
rdkafka-sys = "$RDK_VERSION"
[workspace]
TOML
  echo 'fn main() {}' > "$RDK_DIR/rdk-fetch/src/main.rs"
  (cd "$RDK_DIR/rdk-fetch" && cargo fetch -q)
  src="$(cd "$RDK_DIR/rdk-fetch" && cargo metadata --format-version 1 \
    | python3 -c 'import json,sys,os; d=json.load(sys.stdin); print([os.path.dirname(p["manifest_path"]) for p in d["packages"] if p["name"]=="rdkafka-sys"][0])')"
  rm -rf "$RDK_DIR/librdkafka"; cp -r "$src/librdkafka" "$RDK_DIR/librdkafka"
  (cd "$RDK_DIR/librdkafka" && ./configure --disable-ssl --disable-sasl --disable-zstd \
      --disable-lz4-ext --disable-gssapi --disable-curl > ../configure.log 2>&1 \
    && make -j2 libs > ../make.log 2>&1 && make -C examples rdkafka_performance >> ../make.log 2>&1)
fi
export LD_LIBRARY_PATH="$RDK_DIR/librdkafka/src${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# --- brokers --------------------------------------------------------------------
rm -rf "$WORK"; mkdir -p "$WORK"
BROKER_PID=""
alive() { kill -0 "$1" 2>/dev/null && [[ "$(ps -o stat= -p "$1" 2>/dev/null)" != Z* ]]; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
stop_broker() {
  if [[ -n "$BROKER_PID" ]] && alive "$BROKER_PID"; then
    kill -TERM "$BROKER_PID" 2>/dev/null || true
    for _ in $(seq 1 120); do alive "$BROKER_PID" || break; sleep 0.5; done
    alive "$BROKER_PID" && kill -KILL "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
  fi
  BROKER_PID=""
  for _ in $(seq 1 60); do port_open "$SPATE_PORT" || port_open "$KAFKA_PORT" || break; sleep 0.5; done
  rm -rf "$WORK/data"
}
trap stop_broker EXIT

start_spate() {
  mkdir -p "$WORK/data"
  "${BROKER_PIN[@]}" "$SPATE" --data-dir "$WORK/data" --listen "127.0.0.1:$SPATE_PORT" \
    --cores "$SPATE_CORES" ${SPATE_CONFIG:+--config "$SPATE_CONFIG"} > "$WORK/spate.log" 2>&1 &
  BROKER_PID=$!
  for _ in $(seq 1 100); do
    grep -q "spate ready to serve" "$WORK/spate.log" 2>/dev/null && return 0
    alive "$BROKER_PID" || break; sleep 0.1
  done
  cat "$WORK/spate.log" >&2; return 1
}

start_kafka() {
  mkdir -p "$WORK/data"
  cat > "$WORK/server.properties" <<PROPS
process.roles=broker,controller
node.id=0
controller.quorum.voters=0@127.0.0.1:$KAFKA_CPORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$WORK/data
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
  local cp="$LIBS/*"
  timeout 120 java -cp "$cp" kafka.tools.StorageTool format \
    -t "$(timeout 60 java -cp "$cp" kafka.tools.StorageTool random-uuid)" \
    -c "$WORK/server.properties" > "$WORK/format.log" 2>&1
  # kafka-server-start.sh's JVM settings.
  "${BROKER_PIN[@]}" java -Xms1G -Xmx1G -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
    -Djava.awt.headless=true -cp "$cp" kafka.Kafka "$WORK/server.properties" \
    > "$WORK/kafka.log" 2>&1 < /dev/null &
  BROKER_PID=$!
  for _ in $(seq 1 240); do
    port_open "$KAFKA_PORT" && { sleep 2; return 0; }
    alive "$BROKER_PID" || break; sleep 0.5
  done
  tail -50 "$WORK/kafka.log" >&2; return 1
}

create_topic() { # BOOT TOPIC
  timeout 120 java -cp "$LIBS/*" org.apache.kafka.tools.TopicCommand --bootstrap-server "$1" \
    --create --topic "$2" --partitions "$PARTITIONS" --replication-factor 1 > /dev/null
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$BROKER_PID/stat"; }

# --- one run ---------------------------------------------------------------------
# run BROKER WORKLOAD -> appends "broker workload p50 p95 p99 p999 msgs_per_s cpu_us_per_msg"
RESULTS="$WORK/results.tsv"
run() {
  local broker="$1" wl="$2" boot port
  if [[ "$broker" == spate ]]; then start_spate; port=$SPATE_PORT; else start_kafka; port=$KAFKA_PORT; fi
  boot="127.0.0.1:$port"
  local topic="t-$wl" out="$WORK/$broker-$wl-$RUN.out"
  create_topic "$boot" "$topic"
  local tool="${wl%-*}" rate="${wl##*-}" count
  count=$((rate * SECONDS_PER_RUN))
  if [[ "$tool" == *-consume ]]; then
    count=$((CONSUME_BYTES / SIZE))
    pin "$CLIENT_CPUS" timeout 600 "$RDKP" -P -t "$topic" -b "$boot" -s "$SIZE" -a 1 -c "$count" \
      -X linger.ms="$FILL_LINGER_MS" -X queue.buffering.max.messages=2000000 -q > "$out.fill" 2>&1 || true
  fi
  local t0; t0="$(cpu_ticks)"
  case "$tool" in
    rdkafka)
      pin "$CLIENT_CPUS" timeout $((SECONDS_PER_RUN * 3 + 60)) "$RDKP" -P -t "$topic" -b "$boot" \
        -s "$SIZE" -r "$rate" -a "$ACKS" -c "$count" -l -A "$out.lat" -X linger.ms=5 > "$out" 2>&1 || true
      ;;
    java)
      pin "$CLIENT_CPUS" timeout $((SECONDS_PER_RUN * 3 + 60)) java -Xmx1G -cp "$LIBS/*" \
        org.apache.kafka.tools.ProducerPerformance --topic "$topic" --num-records "$count" \
        --record-size "$SIZE" --throughput "$rate" \
        --producer-props "bootstrap.servers=$boot" "acks=$ACKS" linger.ms=5 > "$out" 2>&1 || true
      ;;
    rdkafka-consume)
      pin "$CLIENT_CPUS" timeout 600 "$RDKP" -G "g-$RUN" -t "$topic" -b "$boot" -c "$count" -q \
        "${RDK_CONSUME_X[@]}" > "$out" 2>&1 || true
      ;;
    java-consume)
      pin "$CLIENT_CPUS" timeout 600 java -Xmx1G -cp "$LIBS/*" \
        org.apache.kafka.tools.ConsumerPerformance --bootstrap-server "$boot" --topic "$topic" \
        --num-records "$count" --group "g-$RUN" --timeout 60000 > "$out" 2>&1 || true
      ;;
    e2e)
      count="$E2E_COUNT"
      pin "$CLIENT_CPUS" timeout 600 java -Xmx1G -cp "$LIBS/*" org.apache.kafka.tools.EndToEndLatency \
        "$boot" "$topic" "$count" "$ACKS" "$SIZE" > "$out" 2>&1 || true
      ;;
  esac
  local t1; t1="$(cpu_ticks)"
  local hz; hz="$(getconf CLK_TCK)"
  python3 - "$tool" "$out" "$broker" "$wl" "$count" "$t0" "$t1" "$hz" >> "$RESULTS" <<'PY'
import re, sys
tool, out, broker, wl, count, t0, t1, hz = sys.argv[1:]
count = int(count); cpu = (int(t1) - int(t0)) / int(hz)
text = open(out, errors="replace").read()
p = [float("nan")] * 4; rate = float("nan")
if tool == "rdkafka":
    try:
        lat = sorted(int(x) / 1000.0 for x in open(out + ".lat") if x.strip())
        if lat:
            p = [lat[min(len(lat) - 1, int(len(lat) * q))] for q in (0.5, 0.95, 0.99, 0.999)]
    except FileNotFoundError:
        pass
    m = re.findall(r"delivered .* in (\d+)ms: (\d+) msgs/s", text)
    if m:
        rate = float(m[-1][1])
elif tool == "rdkafka-consume":
    # "N messages (B bytes) consumed in Tms: R msgs/s (M MB/s)", from the first message on
    m = re.search(r"(\d+) messages \((\d+) bytes\) consumed in (\d+)ms: (\d+) msgs/s", text)
    if m:
        rate = float(m.group(4))
elif tool == "java-consume":
    # CSV: start, end, MB, MB/s, msgs, msgs/s, rebalance ms, fetch ms, fetch MB/s, fetch msgs/s;
    # the fetch.* columns leave out the group join.
    for line in text.splitlines():
        f = [x.strip() for x in line.split(",")]
        if len(f) >= 10 and re.match(r"^[\d.]+$", f[9]):
            rate = float(f[9])
elif tool == "java":
    m = re.search(r"records sent, ([\d.]+) records/sec .*?([\d.]+) ms 50th, ([\d.]+) ms 95th, ([\d.]+) ms 99th, ([\d.]+) ms 99.9th", text)
    if m:
        rate = float(m.group(1)); p = [float(m.group(i)) for i in (2, 3, 4, 5)]
else:
    m = re.search(r"Percentiles: 50th = ([\d.]+), 99th = ([\d.]+), 99.9th = ([\d.]+)", text)
    if m:
        p = [float(m.group(1)), float("nan"), float(m.group(2)), float(m.group(3))]
    m = re.search(r"Avg latency: ([\d.]+) ms", text)
    if m and float(m.group(1)) > 0:
        rate = 1000.0 / float(m.group(1))
us_per_msg = cpu * 1e6 / count if count else float("nan")
print("\t".join([broker, wl] + ["%.2f" % x for x in p] + ["%.0f" % rate, "%.3f" % us_per_msg]))
PY
  tail -n 1 "$RESULTS" >&2
  stop_broker
}

WORKLOADS=()
for t in $TOOLS; do
  case "$t" in
    rdkafka|java) for r in $RATES; do WORKLOADS+=("$t-$r"); done ;;
    rdkafka-consume|java-consume) WORKLOADS+=("$t-0") ;;
    e2e) [[ "$E2E_COUNT" != 0 ]] && WORKLOADS+=("e2e-1") ;;
  esac
done

printf "broker\tworkload\tp50\tp95\tp99\tp99.9\tmsgs_per_s\tbroker_cpu_us_per_msg\n" > "$RESULTS"
for wl in "${WORKLOADS[@]}"; do
  for RUN in $(seq 1 "$PAIRS"); do
    log "$wl pair $RUN/$PAIRS (size $SIZE, acks $ACKS)"
    run spate "$wl"
    run kafka "$wl"
  done
done

python3 - "$RESULTS" "$SIZE" "$ACKS" "$PAIRS" "$PARTITIONS" <<'PY'
import csv, math, os, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
size, acks, pairs, partitions = sys.argv[2:]
def num(r, k):
    try: return float(r[k])
    except ValueError: return math.nan
def med(xs):
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else math.nan
def span(xs, fmt="%.1f"):
    xs = [x for x in xs if not math.isnan(x)]
    return (fmt + "-" + fmt) % (min(xs), max(xs)) if xs else "-"
names = {"rdkafka": "rdkafka_performance -P -l", "java": "ProducerPerformance", "e2e": "EndToEndLatency",
         "rdkafka-consume": "rdkafka_performance -G (consume)", "java-consume": "ConsumerPerformance"}
for wl in dict.fromkeys(r["workload"] for r in rows):
    tool, rate = wl.rsplit("-", 1)
    if tool.endswith("-consume"):
        props = os.environ.get("RDK_CONSUME_PROPS", "") if tool == "rdkafka-consume" else ""
        shown = names[tool] + (" with " + props if props else "")
        print("\n#### %s of a pre-filled topic, %s B records, %s partitions (median of %s runs each, min-max in brackets)\n" % (shown, size, partitions, pairs))
        print("| broker | msgs/s | MB/s | broker CPU us/msg |")
        print("|---|---|---|---|")
        for b in ("spate", "kafka"):
            rs = [r for r in rows if r["workload"] == wl and r["broker"] == b]
            col = lambda k: [num(r, k) for r in rs]
            mps = med(col("msgs_per_s"))
            print("| %s | %.0f (%s) | %.1f | %.3f (%s) |" % (
                b, mps, span(col("msgs_per_s"), "%.0f"), mps * int(size) / 1e6,
                med(col("broker_cpu_us_per_msg")), span(col("broker_cpu_us_per_msg"), "%.3f")))
        continue
    title = names[tool] + ("" if tool == "e2e" else " at %s msg/s" % rate)
    print("\n#### %s, %s B, acks=%s (median of %s runs each, min-max in brackets)\n" % (title, size, acks, pairs))
    print("| broker | p50 ms | p95 ms | p99 ms | p99.9 ms | msgs/s | broker CPU us/msg |")
    print("|---|---|---|---|---|---|---|")
    for b in ("spate", "kafka"):
        rs = [r for r in rows if r["workload"] == wl and r["broker"] == b]
        col = lambda k: [num(r, k) for r in rs]
        print("| %s | %.1f | %.1f | %.1f (%s) | %.1f | %.0f (%s) | %.2f (%s) |" % (
            b, med(col("p50")), med(col("p95")), med(col("p99")), span(col("p99")),
            med(col("p99.9")), med(col("msgs_per_s")), span(col("msgs_per_s")),
            med(col("broker_cpu_us_per_msg")), span(col("broker_cpu_us_per_msg"))))
PY
