#!/usr/bin/env bash
# Installs what the compat suites need (idempotent; fast when already installed), builds
# spate, and runs the suites with pytest. Exits non-zero on any failure, and when pytest
# collected no test.
#
#   compat/run.sh                      # build spate, run everything
#   compat/run.sh -k kcat              # extra arguments go to pytest
#   compat/run.sh compat/tests/test_kcat.py   # only these files
#   SPATE_COMPAT_BOOTSTRAP=127.0.0.1:19092 compat/run.sh   # against a running broker
#                                                          # (no cargo build; restart tests skip)
#   SPATE_COMPAT_SKIP_BUILD=1 compat/run.sh                # use the existing target/release/spate
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
OUT="$ROOT/target/compat"
mkdir -p "$OUT"
log() { printf '[compat] %s\n' "$*" >&2; }
need() { command -v "$1" >/dev/null 2>&1 || { log "missing tool: $1 ($2)"; exit 1; }; }

# 1. System packages: kcat (the old-librdkafka canary) and the toolchains the clients need.
apt_pkgs=()
command -v kcat >/dev/null 2>&1 || apt_pkgs+=(kcat)
command -v java >/dev/null 2>&1 || apt_pkgs+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || apt_pkgs+=(maven)
command -v node >/dev/null 2>&1 || apt_pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || apt_pkgs+=(npm)
# ip and tc, for the nemesis test's network namespaces and cut links.
{ command -v ip && command -v tc; } >/dev/null 2>&1 || apt_pkgs+=(iproute2)
if ((${#apt_pkgs[@]})); then
  log "apt-get install ${apt_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  timeout 600 apt-get update -qq
  timeout 900 apt-get install -y -qq "${apt_pkgs[@]}" >/dev/null
fi
need go "Go >= 1.26 is needed for franz-go; install it from the Go distribution"
need python3 "install python3"

# 2. Python clients and pytest (pinned).
if ! python3 - "$HERE/requirements.txt" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line:
        name, want = line.split("==")
        name = name.split("[")[0]  # extras, e.g. confluent-kafka[avro]
        assert version(name) == want, name
PY
then
  log "pip install -r compat/requirements.txt"
  timeout 600 python3 -m pip install -q -r "$HERE/requirements.txt"
fi

# 3. kafkajs.
if [[ ! -d "$HERE/node/node_modules/kafkajs" || "$HERE/node/package-lock.json" -nt "$HERE/node/node_modules/.package-lock.json" ]]; then
  log "npm ci (kafkajs)"
  (cd "$HERE/node" && timeout 300 npm ci --no-audit --no-fund --loglevel=error)
fi

# 4. franz-go program.
GO_BIN="$OUT/franzgo"
if [[ ! -x "$GO_BIN" ]] || [[ -n "$(find "$HERE/go" -type f -newer "$GO_BIN" -print -quit)" ]]; then
  log "go build (franz-go)"
  (cd "$HERE/go" && GOFLAGS=-mod=readonly timeout 600 go build -o "$GO_BIN" .)
fi

# 5. Java kafka-clients program.
JAR="$HERE/java/target/spate-compat-java.jar"
if [[ ! -f "$JAR" ]] || [[ -n "$(find "$HERE/java/src" "$HERE/java/pom.xml" -type f -newer "$JAR" -print -quit)" ]]; then
  log "mvn package (Java kafka-clients)"
  (cd "$HERE/java" && timeout 900 mvn -q -B package)
fi

# 5b. Kafka Streams (4.4.0, with the compat Streams app) and Kafka Connect / MirrorMaker 2
# (4.3.1): jars and their runtime dependencies under compat/frameworks/target and
# compat/frameworks/connect/target (test_streams.py, test_connect.py, test_mirrormaker.py).
# The stamps are what compat/tests/frameworkutil.py checks as well; target/lib is emptied
# first so that no jar of an older version stays on the classpath.
FW="$HERE/frameworks"
FW_STAMP="$FW/target/lib/.built"
if [[ ! -f "$FW_STAMP" ]] || [[ -n "$(find "$FW/src" "$FW/pom.xml" -type f -newer "$FW_STAMP" -print -quit)" ]]; then
  log "mvn package (Kafka Streams app)"
  (cd "$FW" && rm -rf target/lib && timeout 900 mvn -q -B package && touch "$FW_STAMP")
fi
CONNECT_STAMP="$FW/connect/target/lib/.built"
if [[ ! -f "$CONNECT_STAMP" || "$FW/connect/pom.xml" -nt "$CONNECT_STAMP" ]]; then
  log "mvn package (Kafka Connect and MirrorMaker 2)"
  (cd "$FW/connect" && rm -rf target/lib && timeout 900 mvn -q -B package && touch "$CONNECT_STAMP")
fi

# 6. The broker.
if [[ -z "${SPATE_COMPAT_BOOTSTRAP:-}" && -z "${SPATE_COMPAT_SKIP_BUILD:-}" && -z "${SPATE_BIN:-}" ]]; then
  log "cargo build --release -p spate-node"
  (cd "$ROOT" && timeout 3600 cargo build --release -p spate-node)
fi

# 7. The suites.
# Run compat/tests unless the arguments name test files or directories themselves.
targets=("$HERE/tests")
for a in "$@"; do
  if [[ "$a" != -* && -e "${a%%::*}" ]]; then targets=(); break; fi
done
log "pytest ${targets[*]:-} $*"
set +e
(cd "$ROOT" && timeout 1800 python3 -m pytest "${targets[@]}" -p no:cacheprovider -q -rfEs \
  -W ignore::DeprecationWarning --junitxml="$OUT/junit.xml" "$@")
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
  log "pytest collected no tests: failing"
  exit 1
fi
exit $rc
