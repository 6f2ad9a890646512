#!/usr/bin/env bash
# The nemesis test (docs/replication.md): a 3-node cluster in private network
# namespaces, idempotent acks=all producers and a consumer group, 300 s of kill -9,
# SIGSTOP and cut links, then a checker. Needs root (ip netns, tc).
#
#   compat/nemesis/run.sh                          # against Spate (target/release/spate)
#   compat/nemesis/run.sh --duration 60 --seed 7   # shorter, a given seed
#   compat/nemesis/run.sh --target kafka           # against Apache Kafka 4.4.0 (jars from
#                                                  # Maven Central, as compat/reference-kafka.sh)
#   SPATE_BIN=/path/to/spate compat/nemesis/run.sh
#
# Everything of a run (node logs, data dirs, timeline.log, result.json) goes under
# target/nemesis/<target>-<time>-<seed>/. Exits non-zero when the checker fails. The
# whole run is bounded (the duration plus 20 minutes); the namespaces and the nodes are
# removed on every exit, and leftovers of an earlier crashed run at the start.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
log() { printf '[nemesis] %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { log "needs root (network namespaces)"; exit 2; }
for t in ip tc python3; do command -v "$t" >/dev/null || { log "missing tool: $t"; exit 2; }; done
python3 -c 'import confluent_kafka' 2>/dev/null || {
  log "pip install -r compat/requirements.txt"; timeout 600 python3 -m pip install -q -r "$ROOT/compat/requirements.txt"; }

duration=300 target=spate
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --duration) duration="${args[$((i + 1))]}" ;;
    --duration=*) duration="${args[$i]#*=}" ;;
    --target) target="${args[$((i + 1))]}" ;;
    --target=*) target="${args[$i]#*=}" ;;
  esac
done

if [ "$target" = kafka ]; then
  LIBS="$ROOT/target/compat/kafka-libs"
  if [[ ! -f "$LIBS/.complete" ]]; then
    log "fetching the Kafka 4.4.0 jars (compat/reference/pom.xml)"
    mkdir -p "$LIBS"
    (cd "$ROOT/compat/reference" && timeout 900 mvn -q -B dependency:copy-dependencies \
      -DoutputDirectory="$LIBS")
    touch "$LIBS/.complete"
  fi
fi

cleanup() { timeout 60 python3 "$HERE/nemesis.py" --clean-leftovers || true; }
trap cleanup EXIT
cleanup
# SIGINT first (the script heals, stops the nodes and removes its namespaces), SIGKILL
# a minute later; the trap then removes whatever is left.
set +e
timeout -s INT -k 60 "$((duration + 1200))" python3 -u "$HERE/nemesis.py" "$@"
rc=$?
set -e
[ $rc -eq 124 ] && log "timed out"
exit $rc
