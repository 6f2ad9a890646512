#!/usr/bin/env bash
# The real-client suites against a 3-node cluster (scripts/local-cluster.sh, release
# broker, free loopback ports), bootstrapping through node 1: every client and
# Kafka's tools find the partition leaders and coordinators on all three brokers.
# Called by test.sh after compat/run.sh (which installed the clients and built the
# broker); extra arguments go to pytest.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"

export SPATE_BIN="${SPATE_BIN:-$ROOT/target/release/spate}"
export SPATE_CLUSTER_DIR="$ROOT/target/compat/cluster"
# Six free loopback ports (unless given).
free_ports() {
  python3 -c 'import socket
s = [socket.socket() for _ in range(6)]
for x in s: x.bind(("127.0.0.1", 0))
print(",".join(str(x.getsockname()[1]) for x in s))'
}
if [[ -z "${SPATE_CLUSTER_PORTS:-}" || -z "${SPATE_CLUSTER_CONTROLLER_PORTS:-}" ]]; then
  IFS=, read -r -a six <<< "$(free_ports)"
  export SPATE_CLUSTER_PORTS="${six[0]},${six[1]},${six[2]}"
  export SPATE_CLUSTER_CONTROLLER_PORTS="${six[3]},${six[4]},${six[5]}"
fi
# Lots of partitions are created by the suites: keep the internal topics small.
config="$SPATE_CLUSTER_DIR.toml"
printf 'offsets_topic_num_partitions = 6\ntransaction_state_num_partitions = 6\nshare_coordinator_state_topic_num_partitions = 6\n' > "$config"
export SPATE_CLUSTER_CONFIG="$config"

rm -rf "$SPATE_CLUSTER_DIR"
trap '"$ROOT/scripts/local-cluster.sh" stop || true' EXIT
"$ROOT/scripts/local-cluster.sh" start
IFS=, read -r -a ports <<< "$SPATE_CLUSTER_PORTS"

# The client suites whose tests run against any broker (the rest start brokers of
# their own, or check a single node's layout).
cd "$ROOT"
SPATE_COMPAT_BOOTSTRAP="127.0.0.1:${ports[1]}" timeout 1200 python3 -m pytest \
  compat/tests/test_kcat.py compat/tests/test_kafka_python.py compat/tests/test_java.py \
  compat/tests/test_franzgo.py compat/tests/test_kafkajs.py compat/tests/test_confluent.py \
  compat/tests/test_kafka_cli.py \
  -p no:cacheprovider -q -rfEs -W ignore::DeprecationWarning "$@"
