#!/usr/bin/env bash
# Runs real Apache Kafka behind spate's command line, so the whole compat suite
# (restart tests included) can be validated against Kafka:
#
#   SPATE_BIN=compat/reference/kafka-as-spate.sh python3 -m pytest compat/tests
#
# Usage (as spate): kafka-as-spate.sh --data-dir DIR --listen 127.0.0.1:PORT [--cores N]
# SPATE_LOG_DIRS (a comma-separated list, as spate takes it) becomes Kafka's log.dirs.
# Needs the jars fetched by `compat/reference-kafka.sh start` (or its fetch step).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LIBS="$(cd "$HERE/../.." && pwd)/target/compat/kafka-libs"
DATA="" LISTEN=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --data-dir) DATA="$2"; shift 2 ;;
    --listen) LISTEN="$2"; shift 2 ;;
    --cores) shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n "$DATA" && -n "$LISTEN" ]] || { echo "need --data-dir and --listen" >&2; exit 2; }
mkdir -p "$DATA"
PROPS="$DATA/server.properties"
if [[ ! -f "$PROPS" ]]; then
  CPORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  cat > "$PROPS" <<PROPS
process.roles=broker,controller
node.id=0
controller.quorum.voters=0@127.0.0.1:$CPORT
listeners=PLAINTEXT://$LISTEN,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://$LISTEN
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=${SPATE_LOG_DIRS:-$DATA/logs}
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
PROPS
  java -cp "$LIBS/*" kafka.tools.StorageTool format -t "$(java -cp "$LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)" -c "$PROPS" >/dev/null 2>&1
fi
# KAFKA_JVM_OPTS replaces the test-suite JVM flags (benchmarks pass Kafka's own).
# shellcheck disable=SC2086
exec java ${KAFKA_JVM_OPTS:--Xms256m -Xmx1g -XX:+UseSerialGC -XX:TieredStopAtLevel=1} -cp "$LIBS/*" kafka.Kafka "$PROPS"
