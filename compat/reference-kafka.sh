#!/usr/bin/env bash
# Start/stop a real single-node Apache Kafka (KRaft, combined broker+controller) on
# loopback, to validate that the compat suite's assertions match Kafka's behaviour.
#
#   compat/reference-kafka.sh start   # prints the bootstrap address when ready
#   SPATE_COMPAT_BOOTSTRAP=127.0.0.1:39092 compat/run.sh
#   compat/reference-kafka.sh stop
#
# The broker jars come from Maven Central via compat/reference/pom.xml; data, config
# and logs live under target/compat/ (never /tmp).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
WORK="$ROOT/target/compat/reference"
LIBS="$ROOT/target/compat/kafka-libs"
PORT="${SPATE_REF_PORT:-39092}"
CPORT="${SPATE_REF_CONTROLLER_PORT:-39093}"
PIDFILE="$WORK/kafka.pid"

fetch_libs() {
  if [[ ! -f "$LIBS/.complete" ]]; then
    mkdir -p "$LIBS"
    (cd "$HERE/reference" && timeout 900 mvn -q -B dependency:copy-dependencies \
      -DoutputDirectory="$LIBS")
    touch "$LIBS/.complete"
  fi
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
  fetch_libs
  if [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "127.0.0.1:$PORT"; return 0
  fi
  for p in "$PORT" "$CPORT"; do
    if port_open "$p"; then echo "127.0.0.1:$p is already in use by another process" >&2; return 1; fi
  done
  rm -rf "$WORK"; mkdir -p "$WORK/data"
  cat > "$WORK/server.properties" <<PROPS
process.roles=broker,controller
node.id=0
controller.quorum.voters=0@127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$WORK/data
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
  local cp="$LIBS/*"
  local jvm=(-Xms256m -Xmx1g -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true)
  timeout 120 java "${jvm[@]}" -cp "$cp" kafka.tools.StorageTool format \
    -t "$(timeout 60 java -cp "$cp" kafka.tools.StorageTool random-uuid)" \
    -c "$WORK/server.properties" > "$WORK/format.log" 2>&1
  nohup java "${jvm[@]}" -cp "$cp" kafka.Kafka "$WORK/server.properties" \
    > "$WORK/kafka.log" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  for _ in $(seq 1 120); do
    if port_open "$PORT"; then echo "127.0.0.1:$PORT"; return 0; fi
    kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { tail -50 "$WORK/kafka.log" >&2; return 1; }
    sleep 0.5
  done
  echo "Kafka did not open 127.0.0.1:$PORT in 60s" >&2; stop; return 1
}

stop() {
  [[ -f "$PIDFILE" ]] || return 0
  local pid; pid="$(cat "$PIDFILE")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
  fi
  rm -f "$PIDFILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
