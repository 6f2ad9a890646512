#!/usr/bin/env bash
# Replication at acks=all: a 3-node Spate cluster against a 3-node Apache Kafka cluster
# on this one machine, in alternating runs (Spate, Kafka, Spate, Kafka, ...), each run on
# fresh clusters with fresh data directories under target/bench-replication/.
#
#   * Spate: three `spate` processes, each a broker and a controller-quorum voter, with
#     the flags scripts/local-cluster.sh uses (--cores 1 each; the shard of node N is
#     pinned with --cpu-list to the Nth CPU of SPATE_CPUS).
#   * Kafka: three KRaft nodes in combined mode (process.roles=broker,controller, three
#     static voters), the JVM flags of kafka-server-start.sh (G1, MaxGCPauseMillis=20, ...)
#     except the heap: KAFKA_HEAP (512m) instead of 1G, so that three JVMs fit next to
#     everything else on this machine. Not pinned (the JVMs' threads use every CPU).
#     Jars from Maven Central as compat/reference-kafka.sh gets them
#     (compat/reference/pom.xml, cache target/compat/kafka-libs).
#   * Every listener is on 127.0.0.1. The topic has PARTITIONS partitions, replication
#     factor 3, min.insync.replicas=2, and every partition is led by node 0 (explicit
#     replica assignment 0,1,2 / 0,2,1): spate-bench sends every request to its one
#     bootstrap broker and does not route by leader, so node 0 leads and nodes 1 and 2
#     follow (they fetch from node 0). Load starts once every partition has 3 in-sync
#     replicas.
#   * Load (spate-bench, acks=-1, SIZE-byte records): a 5 s unmeasured warm-up, the
#     peak, then a fixed-rate run at each of RATES (latency from the intended send time,
#     linger 5 ms); with JAVA_RATE > 0 also Kafka's ProducerPerformance (acks=all) at
#     that rate. The client is not pinned.
#   * Broker CPU: utime+stime of the three broker processes (/proc/PID/stat) over each
#     load run, divided by the messages of the run.
#   * After the load, the ISR of every partition is checked again and each node's log is
#     searched for warnings (written to the output directory).
#
# Prints one markdown table: medians over PAIRS runs of each cluster (min-max in
# brackets), and the Spate/Kafka ratios. Raw outputs in OUT.
#
# Environment (defaults in brackets):
#   PAIRS [3]            runs of each cluster
#   PARTITIONS [16]
#   SIZE [100]           record size in bytes
#   DURATION [15]        seconds per load run
#   RATES ["20000 100000"]  msg/s of the fixed-rate spate-bench runs
#   JAVA_RATE [0]        msg/s of a ProducerPerformance run (0: none)
#   SPATE_CPUS ["0 1 1"] the CPU each Spate node's shard is pinned to
#   KAFKA_HEAP [512m]    -Xms/-Xmx of each Kafka node
#   SPATE_BIN [target/release/spate], BENCH_BIN [target/release/spate-bench]
#   OUT [target/bench-replication]  output directory (emptied first)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
cd "$ROOT"

PAIRS="${PAIRS:-3}"
PARTITIONS="${PARTITIONS:-16}"
SIZE="${SIZE:-100}"
DURATION="${DURATION:-15}"
RATES="${RATES:-20000 100000}"
JAVA_RATE="${JAVA_RATE:-0}"
read -r -a SPATE_CPUS <<< "${SPATE_CPUS:-0 1 1}"
KAFKA_HEAP="${KAFKA_HEAP:-512m}"
SPATE="${SPATE_BIN:-$ROOT/target/release/spate}"
BENCH="${BENCH_BIN:-$ROOT/target/release/spate-bench}"
WORK="${OUT:-$ROOT/target/bench-replication}"
LIBS="$ROOT/target/compat/kafka-libs"
SPATE_PORTS=(29500 29510 29520)   # controller: port + 1
KAFKA_PORTS=(29600 29610 29620)   # controller: port + 1
TOPIC="repl"

log() { echo "== $(date -u +%T) $*" >&2; }
[[ -x "$SPATE" && -x "$BENCH" ]] || { echo "need $SPATE and $BENCH (cargo build --release -p spate-node -p spate-bench)" >&2; exit 1; }
if [[ ! -f "$LIBS/.complete" ]]; then
  log "fetching Apache Kafka jars with Maven (compat/reference/pom.xml)"
  mkdir -p "$LIBS"
  (cd "$ROOT/compat/reference" && timeout 900 mvn -q -B dependency:copy-dependencies -DoutputDirectory="$LIBS")
  touch "$LIBS/.complete"
fi
KAFKA_VERSION="$(find "$LIBS" -name 'kafka-clients-*.jar' | sed 's/.*kafka-clients-\(.*\)\.jar$/\1/' | head -1)"

rm -rf "$WORK"; mkdir -p "$WORK"
PIDS=()
alive() { kill -0 "$1" 2>/dev/null && [[ "$(ps -o stat= -p "$1" 2>/dev/null)" != Z* ]]; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
stop_cluster() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 1 60); do alive "$p" || break; sleep 0.5; done
    if alive "$p"; then kill -KILL "$p" 2>/dev/null || true; fi
    wait "$p" 2>/dev/null || true
  done
  PIDS=()
  for p in "${SPATE_PORTS[@]}" "${KAFKA_PORTS[@]}"; do
    for _ in $(seq 1 60); do port_open "$p" || break; sleep 0.5; done
  done
}
cleanup() { stop_cluster; rm -rf "$WORK"/*/data-*; }
trap cleanup EXIT
trap 'exit 130' INT TERM

start_spate() { # DIR
  local dir="$1" n voters=""
  for n in 0 1 2; do voters+="${voters:+,}$n@127.0.0.1:$((SPATE_PORTS[n] + 1))"; done
  for n in 0 1 2; do
    mkdir -p "$dir/data-$n"
    "$SPATE" --node-id "$n" --data-dir "$dir/data-$n" --listen "127.0.0.1:${SPATE_PORTS[n]}" \
      --controller-listen "127.0.0.1:$((SPATE_PORTS[n] + 1))" --controller-quorum-voters "$voters" \
      --cores 1 --cpu-list "${SPATE_CPUS[n]}" > "$dir/node-$n.log" 2>&1 < /dev/null &
    PIDS+=($!)
  done
  for n in 0 1 2; do
    for _ in $(seq 1 300); do
      grep -q "spate ready to serve" "$dir/node-$n.log" 2>/dev/null && break
      alive "${PIDS[n]}" || { tail -30 "$dir/node-$n.log" >&2; return 1; }
      sleep 0.2
    done
    grep -q "spate ready to serve" "$dir/node-$n.log" || { echo "spate node $n not ready" >&2; return 1; }
  done
}

start_kafka() { # DIR
  local dir="$1" n voters="" cid cp="$LIBS/*" port cport
  for n in 0 1 2; do voters+="${voters:+,}$n@127.0.0.1:$((KAFKA_PORTS[n] + 1))"; done
  cid="$(timeout 60 java -cp "$cp" kafka.tools.StorageTool random-uuid)"
  for n in 0 1 2; do
    mkdir -p "$dir/data-$n"
    port="${KAFKA_PORTS[n]}"; cport=$((port + 1))
    cat > "$dir/server-$n.properties" <<PROPS
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data-$n
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
PROPS
    timeout 120 java -cp "$cp" kafka.tools.StorageTool format -t "$cid" \
      -c "$dir/server-$n.properties" > "$dir/format-$n.log" 2>&1
  done
  for n in 0 1 2; do
    java "-Xms$KAFKA_HEAP" "-Xmx$KAFKA_HEAP" -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
      -Djava.awt.headless=true -cp "$cp" kafka.Kafka "$dir/server-$n.properties" \
      > "$dir/node-$n.log" 2>&1 < /dev/null &
    PIDS+=($!)
  done
  for n in 0 1 2; do
    for _ in $(seq 1 360); do
      port_open "${KAFKA_PORTS[n]}" && break
      alive "${PIDS[n]}" || { tail -30 "$dir/node-$n.log" >&2; return 1; }
      sleep 0.5
    done
    port_open "${KAFKA_PORTS[n]}" || { echo "kafka node $n not listening" >&2; return 1; }
  done
}

# Every partition led by node 0; the followers alternate so both orders occur.
assignment() {
  local p a=""
  for ((p = 0; p < PARTITIONS; p++)); do
    if ((p % 2)); then a+="${a:+,}0:2:1"; else a+="${a:+,}0:1:2"; fi
  done
  echo "$a"
}

# isr_state BOOT -> one line per partition: "PART LEADER ISR-COUNT"
isr_state() {
  timeout 20 kcat -b "$1" -L -t "$TOPIC" -m 10 2>/dev/null \
    | sed -n 's/^ *partition \([0-9]*\), leader \(-\{0,1\}[0-9]*\), replicas: [0-9,]*, isrs: \([0-9,]*\).*/\1 \2 \3/p' \
    | awk '{print $1, $2, split($3, a, ",")}'
}
full_isr() { # BOOT -> true when every partition is led by node 0 with 3 in-sync replicas
  local n
  n="$(isr_state "$1" | awk '$2 == 0 && $3 == 3' | wc -l)"
  [[ "$n" == "$PARTITIONS" ]]
}

create_topic() { # BOOT DIR
  timeout 120 java -Xmx256m -cp "$LIBS/*" org.apache.kafka.tools.TopicCommand --bootstrap-server "$1" \
    --create --topic "$TOPIC" --replica-assignment "$(assignment)" \
    --config min.insync.replicas=2 > "$2/create-topic.log" 2>&1
  for _ in $(seq 1 120); do
    full_isr "$1" && return 0
    sleep 1
  done
  isr_state "$1" >&2; echo "ISR not full after 120 s" >&2; return 1
}

cpu_ticks() { # sum of utime+stime of the running cluster's processes
  local p t=0
  for p in "${PIDS[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$t"
}

RESULTS="$WORK/results.tsv"
HZ="$(getconf CLK_TCK)"
# measure CLUSTER RUN WORKLOAD OUTFILE cmd... : runs the load, appends one result line.
measure() {
  local cluster="$1" run="$2" wl="$3" out="$4"; shift 4
  echo "$*" | sed "s#$ROOT/##g; s#$LIBS/\*#target/compat/kafka-libs/*#g" > "$out.cmd"
  log "$cluster run $run $wl: $(cat "$out.cmd")"
  local t0 t1
  t0="$(cpu_ticks)"
  timeout $((DURATION * 4 + 90)) "$@" > "$out" 2>&1 || echo "(exit status $?)" >> "$out"
  t1="$(cpu_ticks)"
  python3 - "$cluster" "$run" "$wl" "$out" "$t0" "$t1" "$HZ" "$SIZE" >> "$RESULTS" <<'PY'
import json, math, re, sys
cluster, run, wl, out, t0, t1, hz, size = sys.argv[1:]
cpu = (int(t1) - int(t0)) / int(hz)
nan = math.nan
msgs = rate = mb = p50 = p99 = p999 = nan; errors = 0
if wl.startswith("java"):
    text = open(out, errors="replace").read()
    m = re.search(r"(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\).*?([\d.]+) ms 50th, [\d.]+ ms 95th, ([\d.]+) ms 99th, ([\d.]+) ms 99.9th", text)
    if m:
        msgs, rate, mb, p50, p99, p999 = (float(x) for x in m.groups())
    errors = len(re.findall(r"Exception", text))
else:
    try:
        d = json.load(open(out + ".json"))
        msgs, rate, mb = d["msgs"], d["msgs_per_sec"], d["mb_per_sec"]
        lat = d["produce_latency_ms"]
        p50, p99, p999 = lat["p50"], lat["p99"], lat["p999"]
        errors = d["errors"]
    except Exception as e:
        print("no result in %s: %s" % (out, e), file=sys.stderr)
us = cpu * 1e6 / msgs if msgs and not math.isnan(msgs) else nan
print("\t".join([cluster, run, wl] + ["%.0f" % rate, "%.2f" % mb, "%.3f" % p50, "%.3f" % p99,
                 "%.3f" % p999, str(errors), "%.2f" % cpu, "%.3f" % us]))
PY
  tail -n 1 "$RESULTS" >&2
}

one_run() { # CLUSTER RUN
  local cluster="$1" run="$2" dir="$WORK/$1-$2" boot port0
  mkdir -p "$dir"
  log "$cluster run $run: starting 3 nodes"
  if [[ "$cluster" == spate ]]; then start_spate "$dir"; port0="${SPATE_PORTS[0]}"
  else start_kafka "$dir"; port0="${KAFKA_PORTS[0]}"; fi
  boot="127.0.0.1:$port0"
  create_topic "$boot" "$dir"
  log "$cluster run $run: $PARTITIONS partitions, 3 in-sync replicas each"
  local common=(--bootstrap "$boot" --topic "$TOPIC" --partitions "$PARTITIONS" --record-size "$SIZE"
                --acks -1 --compression none --quiet)
  # unmeasured warm-up (the JVMs' JIT needs it; Spate gets the same)
  timeout 120 "$BENCH" produce "${common[@]}" --duration 5 > "$dir/warmup.out" 2>&1 || true
  measure "$cluster" "$run" peak "$dir/peak" \
    "$BENCH" produce "${common[@]}" --duration "$DURATION" --json "$dir/peak.json"
  local r
  for r in $RATES; do
    measure "$cluster" "$run" "rate-$r" "$dir/rate-$r" \
      "$BENCH" produce "${common[@]}" --duration "$DURATION" --rate "$r" --linger-ms 5 --warmup 1 \
      --json "$dir/rate-$r.json"
  done
  if [[ "$JAVA_RATE" != 0 ]]; then
    measure "$cluster" "$run" "java-$JAVA_RATE" "$dir/java-$JAVA_RATE" \
      java -Xmx512m -cp "$LIBS/*" org.apache.kafka.tools.ProducerPerformance --topic "$TOPIC" \
      --num-records $((JAVA_RATE * DURATION)) --record-size "$SIZE" --throughput "$JAVA_RATE" \
      --producer-props "bootstrap.servers=$boot" acks=all linger.ms=5
  fi
  # The ISR after the load, and what the nodes complained about.
  isr_state "$boot" > "$dir/isr-after.txt" || true
  if ! full_isr "$boot"; then log "$cluster run $run: ISR NOT FULL after the load (see $dir/isr-after.txt)"; fi
  grep -hiE 'WARN|ERROR|NOT_ENOUGH|ISR change|shrink|panick' "$dir"/node-*.log > "$dir/warnings.txt" || true
  log "$cluster run $run: $(wc -l < "$dir/warnings.txt") warning/error lines in the node logs"
  stop_cluster
  rm -rf "$dir"/data-*
}

uptime > "$WORK/uptime-before.txt"
log "load average before: $(cat "$WORK/uptime-before.txt")"
printf "cluster\trun\tworkload\tmsgs_per_s\tmb_per_s\tp50_ms\tp99_ms\tp999_ms\terrors\tcpu_s\tcpu_us_per_msg\n" > "$RESULTS"
for RUN in $(seq 1 "$PAIRS"); do
  one_run spate "$RUN"
  one_run kafka "$RUN"
done
uptime > "$WORK/uptime-after.txt"
log "load average after: $(cat "$WORK/uptime-after.txt")"

python3 - "$RESULTS" "$SIZE" "$PARTITIONS" "$PAIRS" "$KAFKA_VERSION" <<'PY' | tee "$WORK/table.md"
import csv, math, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
size, parts, pairs, kver = sys.argv[2:]
def vals(c, wl, k):
    out = []
    for r in rows:
        if r["cluster"] == c and r["workload"] == wl:
            try:
                v = float(r[k])
                if not math.isnan(v):
                    out.append(v)
            except ValueError:
                pass
    return out
def med(xs):
    return statistics.median(xs) if xs else math.nan
def cell(xs, fmt):
    if not xs:
        return "-"
    s = fmt % med(xs)
    if len(xs) > 1:
        s += " (" + fmt % min(xs) + "-" + fmt % max(xs) + ")"
    return s
print("\n#### RF=3, acks=all, min.insync.replicas=2, %s partitions, %s B records: 3-node Spate vs 3-node Kafka %s (median of %s runs each, min-max in brackets)\n" % (parts, size, kver, pairs))
print("| workload | cluster | msgs/s | MB/s | p50 ms | p99 ms | p99.9 ms | errors | broker CPU us/msg (3 nodes) |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
names = {"peak": "peak (spate-bench)"}
wls = list(dict.fromkeys(r["workload"] for r in rows))
for wl in wls:
    label = names.get(wl) or (wl.replace("rate-", "spate-bench at ") + " msg/s" if wl.startswith("rate-")
                              else wl.replace("java-", "ProducerPerformance at ") + " msg/s")
    for c in ("spate", "kafka"):
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            label, c, cell(vals(c, wl, "msgs_per_s"), "%.0f"), cell(vals(c, wl, "mb_per_s"), "%.1f"),
            cell(vals(c, wl, "p50_ms"), "%.2f"), cell(vals(c, wl, "p99_ms"), "%.2f"),
            cell(vals(c, wl, "p999_ms"), "%.2f"), "%d" % sum(vals(c, wl, "errors")),
            cell(vals(c, wl, "cpu_us_per_msg"), "%.2f")))
print("\n| workload | Spate/Kafka msgs/s | Spate/Kafka p99 | Spate/Kafka p99.9 | Spate/Kafka CPU per msg |")
print("|---|---:|---:|---:|---:|")
def ratio(wl, k):
    a, b = med(vals("spate", wl, k)), med(vals("kafka", wl, k))
    return "%.2f" % (a / b) if b and not math.isnan(a) and not math.isnan(b) else "-"
for wl in wls:
    print("| %s | %s | %s | %s | %s |" % (wl, ratio(wl, "msgs_per_s"), ratio(wl, "p99_ms"), ratio(wl, "p999_ms"), ratio(wl, "cpu_us_per_msg")))
PY
echo "raw outputs: ${WORK#"$ROOT"/}/ (results.tsv, table.md, per run: node logs, *.out, *.json, *.cmd, isr-after.txt, warnings.txt)"
