#!/usr/bin/env bash
# Transactional produce next to idempotent produce, on Spate and on Apache Kafka, with
# Kafka's own perf test (org.apache.kafka.tools.ProducerPerformance, the Java producer:
# acks=all, idempotent; transactional mode commits every TXN_MS). Brokers alternate,
# PAIRS times; each broker gets, per mode, a peak run and a fixed-rate run (latency).
#
#   bench/transactions.sh            # defaults below; prints a Markdown table
#   PAIRS=3 RATE=100000 bench/transactions.sh
#
# Environment: PAIRS [2], RECORDS [2000000] per peak run, RATE [50000] msg/s and
# SECONDS_AT_RATE [15] for the latency runs, TXN_MS [100] transaction length,
# RECORD_SIZE [100], PARTITIONS [16], BROKER_CPUS [0], CLIENT_CPUS [1],
# OUT [target/bench-transactions].
# Broker CPU per message is the broker process's user+system time over the run
# (/proc/PID/stat) divided by the records sent.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
cd "$ROOT"
PAIRS="${PAIRS:-2}"
RECORDS="${RECORDS:-2000000}"
RATE="${RATE:-50000}"
SECONDS_AT_RATE="${SECONDS_AT_RATE:-15}"
TXN_MS="${TXN_MS:-100}"
RECORD_SIZE="${RECORD_SIZE:-100}"
PARTITIONS="${PARTITIONS:-16}"
BROKER_CPUS="${BROKER_CPUS-0}"
CLIENT_CPUS="${CLIENT_CPUS-1}"
WORK="${OUT:-$ROOT/target/bench-transactions}"
LIBS="$ROOT/target/compat/kafka-libs"
SPATE="$ROOT/target/release/spate"

cargo build --release -q -p spate-node
if [[ ! -f "$LIBS/.complete" ]]; then
  mkdir -p "$LIBS"
  (cd "$ROOT/compat/reference" && timeout 900 mvn -q -B dependency:copy-dependencies -DoutputDirectory="$LIBS")
  touch "$LIBS/.complete"
fi
rm -rf "$WORK"; mkdir -p "$WORK"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
alive() { kill -0 "$1" 2>/dev/null; }
PIN_BROKER=(); PIN_CLIENT=()
if command -v taskset >/dev/null; then
  [[ -n "$BROKER_CPUS" ]] && PIN_BROKER=(taskset -c "$BROKER_CPUS")
  [[ -n "$CLIENT_CPUS" ]] && PIN_CLIENT=(taskset -c "$CLIENT_CPUS")
fi

BROKER_PID=""
stop_broker() {
  if [[ -n "$BROKER_PID" ]] && alive "$BROKER_PID"; then
    kill -TERM "$BROKER_PID" 2>/dev/null || true
    for _ in $(seq 1 120); do alive "$BROKER_PID" || break; sleep 0.5; done
    alive "$BROKER_PID" && kill -KILL "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
  fi
  BROKER_PID=""
}
trap stop_broker EXIT

start_spate() {  # start_spate DIR PORT
  "${PIN_BROKER[@]}" "$SPATE" --data-dir "$1/data" --listen "127.0.0.1:$2" --cores 1 > "$1/broker.log" 2>&1 &
  BROKER_PID=$!
  for _ in $(seq 1 100); do grep -q "spate ready" "$1/broker.log" && return 0; sleep 0.1; done
  echo "spate did not start" >&2; return 1
}

start_kafka() {  # start_kafka DIR PORT: Kafka in KRaft combined mode, with the JVM flags
  # of its own kafka-server-start.sh (compat/reference/kafka-as-spate.sh writes the config).
  KAFKA_JVM_OPTS="-Xms1G -Xmx1G -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true" \
    "${PIN_BROKER[@]}" "$ROOT/compat/reference/kafka-as-spate.sh" --data-dir "$1/data" --listen "127.0.0.1:$2" \
    > "$1/broker.log" 2>&1 < /dev/null &
  BROKER_PID=$!
  for _ in $(seq 1 240); do port_open "$2" && { sleep 2; return 0; }; sleep 0.5; done
  echo "kafka did not start" >&2; return 1
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$BROKER_PID/stat"; }

perf() {  # perf NAME PORT NUM THROUGHPUT [txn]
  local name="$1" port="$2" num="$3" tput="$4" txn="${5:-}"
  local cmd=(java -Xmx1G -cp "$LIBS/*" org.apache.kafka.tools.ProducerPerformance
             --topic bench-tx --num-records "$num" --record-size "$RECORD_SIZE" --throughput "$tput")
  [[ -n "$txn" ]] && cmd+=(--transactional-id "bench-$name" --transaction-duration-ms "$TXN_MS")
  cmd+=(--producer-props "bootstrap.servers=127.0.0.1:$port" acks=all enable.idempotence=true
        linger.ms=5 batch.size=131072 buffer.memory=67108864)
  echo "${cmd[*]}" | sed "s#$LIBS/\*#target/compat/kafka-libs/*#g" > "$WORK/$name.cmd"
  local t0; t0="$(cpu_ticks)"
  "${PIN_CLIENT[@]}" timeout 300 "${cmd[@]}" > "$WORK/$name.out" 2>&1 || echo "(failed)" >> "$WORK/$name.out"
  local t1; t1="$(cpu_ticks)"
  # The summary line: "N records sent, X records/sec (Y MB/sec), ... p50, p95, p99, p99.9".
  python3 - "$WORK/$name.out" "$t0" "$t1" "$(getconf CLK_TCK)" "$name" <<'PY' >> "$WORK/rows.tsv"
import re, sys
path, t0, t1, hz, name = sys.argv[1:]
line = [l for l in open(path) if "records sent" in l][-1]
n = float(re.search(r"(\d+) records sent", line).group(1))
rate = float(re.search(r"([\d.]+) records/sec", line).group(1))
mb = float(re.search(r"\(([\d.]+) MB/sec\)", line).group(1))
p = [float(x) for x in re.findall(r"([\d.]+) ms (?:50th|95th|99th|99\.9th)", line)]
cpu_us = (float(t1) - float(t0)) / float(hz) * 1e6 / n
print("\t".join([name, f"{rate:.0f}", f"{mb:.1f}", *[f"{x:.0f}" for x in p], f"{cpu_us:.2f}"]))
PY
  tail -1 "$WORK/rows.tsv" >&2
}

for pair in $(seq 1 "$PAIRS"); do
  for broker in spate kafka; do
    dir="$WORK/$broker-$pair"; mkdir -p "$dir"; port="$(free_port)"
    "start_$broker" "$dir" "$port"
    "${PIN_CLIENT[@]}" java -cp "$LIBS/*" org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$port" \
      --create --topic bench-tx --partitions "$PARTITIONS" --replication-factor 1 > /dev/null 2>&1
    perf "$broker-$pair-warmup" "$port" 500000 -1 > /dev/null 2>&1 || true
    perf "$broker-$pair-idempotent-peak" "$port" "$RECORDS" -1
    perf "$broker-$pair-transactional-peak" "$port" "$RECORDS" -1 txn
    perf "$broker-$pair-idempotent-at-rate" "$port" "$((RATE * SECONDS_AT_RATE))" "$RATE"
    perf "$broker-$pair-transactional-at-rate" "$port" "$((RATE * SECONDS_AT_RATE))" "$RATE" txn
    stop_broker
  done
done

echo
echo "| run | msg/s | MB/s | p50 / p95 / p99 / p99.9 ms | broker CPU µs/msg |"
echo "|---|---:|---:|---:|---:|"
grep -v warmup "$WORK/rows.tsv" | sort -t- -k3,3 -k4,4 -k1,1r -k2,2n | while IFS=$'\t' read -r name rate mb p50 p95 p99 p999 cpu; do
  echo "| $name | $rate | $mb | $p50 / $p95 / $p99 / $p999 | $cpu |"
done
