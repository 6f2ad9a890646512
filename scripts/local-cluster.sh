#!/usr/bin/env bash
# A 3-node Spate cluster on this machine, on loopback: every node is a broker and a
# voter of the controller quorum (Kafka's combined mode).
#
#   scripts/local-cluster.sh start [N...]   start every node, or only nodes N...
#   scripts/local-cluster.sh stop [N...]    stop (SIGTERM, then SIGKILL after 30 s)
#   scripts/local-cluster.sh kill N...      kill -9 nodes N (failure drills)
#   scripts/local-cluster.sh status         which nodes run, and their bootstrap address
#
# Kafka listeners on 127.0.0.1:9092, 9192 and 9292; controllers on 9093, 9193 and 9293;
# data and logs under ./cluster-data/node-N. Settings (environment):
#   SPATE_BIN                  the broker binary (default target/release/spate, built
#                              with cargo when missing)
#   SPATE_CLUSTER_DIR          where data and logs go (default ./cluster-data)
#   SPATE_CLUSTER_PORTS        the three Kafka ports (default 9092,9192,9292)
#   SPATE_CLUSTER_CONTROLLER_PORTS  the three controller ports (default 9093,9193,9293)
#   SPATE_CLUSTER_CORES        shards per node (default 1)
#   SPATE_CLUSTER_CONFIG       a TOML file every node also reads (e.g. shorter sessions)
#   SPATE_CLUSTER_RACKS        three rack names, one per node (broker_rack; default none)
#   SPATE_CLUSTER_LOG_DIRS     log dirs per node (default 1): node-N, then node-N.d1, ...
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${SPATE_BIN:-target/release/spate}"
dir="${SPATE_CLUSTER_DIR:-cluster-data}"
IFS=, read -r -a ports <<< "${SPATE_CLUSTER_PORTS:-9092,9192,9292}"
IFS=, read -r -a cports <<< "${SPATE_CLUSTER_CONTROLLER_PORTS:-9093,9193,9293}"
cores="${SPATE_CLUSTER_CORES:-1}"
log_dir_count="${SPATE_CLUSTER_LOG_DIRS:-1}"
racks=()
[ -n "${SPATE_CLUSTER_RACKS:-}" ] && IFS=, read -r -a racks <<< "$SPATE_CLUSTER_RACKS"
nodes=(0 1 2)
[ "${#ports[@]}" = 3 ] && [ "${#cports[@]}" = 3 ] || {
  echo "need three Kafka ports and three controller ports" >&2; exit 2; }
[ "${#racks[@]}" = 0 ] || [ "${#racks[@]}" = 3 ] || {
  echo "SPATE_CLUSTER_RACKS needs three rack names" >&2; exit 2; }

voters="0@127.0.0.1:${cports[0]},1@127.0.0.1:${cports[1]},2@127.0.0.1:${cports[2]}"

pid_of() { cat "$dir/node-$1.pid" 2>/dev/null || true; }
running() { local p; p="$(pid_of "$1")"; [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

start_node() {
  local n=$1
  if running "$n"; then echo "node $n already runs (pid $(pid_of "$n"))"; return; fi
  mkdir -p "$dir/node-$n"
  local config=()
  if [ "${#racks[@]}" = 3 ]; then
    # The node's own file: its rack first (a top-level key), then the shared settings.
    { echo "broker_rack = \"${racks[$n]}\""
      if [ -n "${SPATE_CLUSTER_CONFIG:-}" ]; then cat "$SPATE_CLUSTER_CONFIG"; fi
    } > "$dir/node-$n.toml"
    config=(--config "$dir/node-$n.toml")
  elif [ -n "${SPATE_CLUSTER_CONFIG:-}" ]; then
    config=(--config "$SPATE_CLUSTER_CONFIG")
  fi
  # Further log dirs (JBOD) beside the data dir, which holds the metadata log.
  if [ "$log_dir_count" -gt 1 ]; then
    local dirs="$dir/node-$n" i
    for i in $(seq 1 $((log_dir_count - 1))); do dirs="$dirs,$dir/node-$n.d$i"; done
    config+=(--log-dirs "$dirs")
  fi
  # One shard per node: spread the nodes over the CPUs (each would pin CPU 0 otherwise).
  [ "$cores" = 1 ] && config+=(--cpu-list "$((n % $(nproc)))")
  echo "=== start $(date -u +%FT%TZ) ===" >> "$dir/node-$n.log"
  nohup "$bin" "${config[@]}" --node-id "$n" --data-dir "$dir/node-$n" \
    --listen "127.0.0.1:${ports[$n]}" --controller-listen "127.0.0.1:${cports[$n]}" \
    --controller-quorum-voters "$voters" --cores "$cores" \
    >> "$dir/node-$n.log" 2>&1 < /dev/null &
  echo $! > "$dir/node-$n.pid"
}

# Waits until node N logged "spate ready to serve" in its latest start.
wait_ready() {
  local n=$1 deadline=$((SECONDS + 90))
  until awk '/^=== start/{r=0} /spate ready to serve/{r=1} END{exit !r}' "$dir/node-$n.log"; do
    if ! running "$n"; then
      echo "node $n exited during start-up; its log:" >&2
      tail -n 30 "$dir/node-$n.log" >&2; return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      echo "node $n not ready after 90 s; its log: $dir/node-$n.log" >&2; return 1
    fi
    sleep 0.2
  done
}

stop_node() {
  local n=$1 signal=$2
  running "$n" || { rm -f "$dir/node-$n.pid"; return; }
  local p; p="$(pid_of "$n")"
  kill "-$signal" "$p"
  for _ in $(seq 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$p" 2>/dev/null && kill -KILL "$p"
  rm -f "$dir/node-$n.pid"
}

cmd="${1:-status}"; shift || true
selected=("${@:-${nodes[@]}}")
for n in "${selected[@]}"; do
  case "$n" in 0|1|2) ;; *) echo "no node $n (nodes are 0, 1, 2)" >&2; exit 2 ;; esac
done

case "$cmd" in
  start)
    if [ ! -x "$bin" ]; then cargo build --release -p spate-node --bin spate; fi
    mkdir -p "$dir"
    # Together: a node is ready once a majority of voters elected a controller.
    for n in "${selected[@]}"; do start_node "$n"; done
    for n in "${selected[@]}"; do wait_ready "$n"; done
    echo "cluster ready: bootstrap 127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
    ;;
  stop) for n in "${selected[@]}"; do stop_node "$n" TERM; done ;;
  kill) for n in "${selected[@]}"; do stop_node "$n" KILL; done ;;
  status)
    for n in "${nodes[@]}"; do
      if running "$n"; then echo "node $n: running (pid $(pid_of "$n")), 127.0.0.1:${ports[$n]}"
      else echo "node $n: stopped"; fi
    done
    ;;
  *) echo "usage: $0 start|stop|kill|status [N...]" >&2; exit 2 ;;
esac
