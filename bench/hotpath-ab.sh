#!/usr/bin/env bash
# A/B of two Spate builds on one node (no cluster): the same spate-bench workloads
# against BASE_BIN and NEW_BIN in alternating runs (base, new, base, new, ...), a fresh
# broker and data directory under OUT for every run. Broker pinned to BROKER_CPUS with
# --cores 1, spate-bench to CLIENT_CPUS, as in docs/benchmarks.md "Broker load".
# Each workload is a shipped bench/workloads/NAME.toml run with --duration DURATION and
# --acks A, on its own topic (RF=1, created by spate-bench). Broker CPU time per message:
# utime+stime of the broker process (/proc/PID/stat) over the run.
#
# Prints a markdown table of medians over PAIRS runs (min-max in brackets).
#
# Environment (defaults in brackets):
#   BASE_BIN (required)  the "before" broker binary
#   NEW_BIN [target/release/spate]  the "after" broker binary
#   BENCH_BIN [target/release/spate-bench]
#   PAIRS [3]  DURATION [10]  BROKER_CPUS [0]  CLIENT_CPUS [1]
#   RUNS ["100-byte-peak:1 100-byte-peak:-1 16-partitions-fixed-rate-latency:1
#          16-partitions-fixed-rate-latency:-1"]   workload:acks pairs
#   OUT [target/bench-hotpath-ab]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BASE_BIN="${BASE_BIN:?set BASE_BIN to the before binary}"
NEW_BIN="${NEW_BIN:-$ROOT/target/release/spate}"
BENCH="${BENCH_BIN:-$ROOT/target/release/spate-bench}"
PAIRS="${PAIRS:-3}"
DURATION="${DURATION:-10}"
BROKER_CPUS="${BROKER_CPUS:-0}"
CLIENT_CPUS="${CLIENT_CPUS:-1}"
RUNS="${RUNS:-100-byte-peak:1 100-byte-peak:-1 16-partitions-fixed-rate-latency:1 16-partitions-fixed-rate-latency:-1}"
WORK="${OUT:-$ROOT/target/bench-hotpath-ab}"
PORT="${PORT:-29700}"

log() { echo "== $(date -u +%T) $*" >&2; }
rm -rf "$WORK"; mkdir -p "$WORK"
PID=""
alive() { kill -0 "$1" 2>/dev/null && [[ "$(ps -o stat= -p "$1" 2>/dev/null)" != Z* ]]; }
stop_broker() {
  if [[ -n "$PID" ]]; then
    kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 1 60); do alive "$PID" || break; sleep 0.5; done
    if alive "$PID"; then kill -KILL "$PID" 2>/dev/null || true; fi
    wait "$PID" 2>/dev/null || true
  fi
  PID=""
  rm -rf "$WORK/data"
}
trap stop_broker EXIT
trap 'exit 130' INT TERM

RESULTS="$WORK/results.tsv"
HZ="$(getconf CLK_TCK)"
printf "build\trun\tworkload\tacks\tmsgs_per_s\tmb_per_s\tp50\tp99\tp999\te2e_p99\terrors\tcpu_us_per_msg\n" > "$RESULTS"
one() { # BUILD BIN RUN
  local build="$1" bin="$2" run="$3" spec wl acks out t0 t1
  mkdir -p "$WORK/data"
  taskset -c "$BROKER_CPUS" "$bin" --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" --cores 1 \
    > "$WORK/$build-$run.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 100); do grep -q "spate ready to serve" "$WORK/$build-$run.log" && break; sleep 0.1; done
  for spec in $RUNS; do
    wl="${spec%:*}"; acks="${spec##*:}"
    out="$WORK/$build-$run-$wl-acks$acks"
    local cmd=(taskset -c "$CLIENT_CPUS" "$BENCH" run --workload "bench/workloads/$wl.toml"
               --bootstrap "127.0.0.1:$PORT" --topic "ab-$wl-$acks" --acks "$acks"
               --duration "$DURATION" --quiet --json "$out.json")
    local line="${cmd[*]}"
    echo "${line//$ROOT\//}" > "$out.cmd"
    log "$build run $run: $(cat "$out.cmd")"
    t0="$(awk '{print $14 + $15}' "/proc/$PID/stat")"
    timeout $((DURATION * 3 + 60)) "${cmd[@]}" > "$out.out" 2>&1 || echo "(exit $?)" >> "$out.out"
    t1="$(awk '{print $14 + $15}' "/proc/$PID/stat")"
    python3 - "$build" "$run" "$wl" "$acks" "$out.json" "$t0" "$t1" "$HZ" >> "$RESULTS" <<'PY'
import json, sys
build, run, wl, acks, path, t0, t1, hz = sys.argv[1:]
try:
    d = json.load(open(path))
except Exception:
    print("\t".join([build, run, wl, acks] + ["nan"] * 8)); sys.exit()
p = d["produce_latency_ms"]; e = d.get("e2e_latency_ms") or {}
cpu = (int(t1) - int(t0)) / int(hz)
print("\t".join([build, run, wl, acks, "%.0f" % d["msgs_per_sec"], "%.2f" % d["mb_per_sec"],
                 "%.3f" % p["p50"], "%.3f" % p["p99"], "%.3f" % p["p999"], "%.3f" % e.get("p99", float("nan")),
                 str(d["errors"]), "%.3f" % (cpu * 1e6 / d["msgs"] if d["msgs"] else float("nan"))]))
PY
    tail -n 1 "$RESULTS" >&2
  done
  stop_broker
}

uptime > "$WORK/uptime-before.txt"
for r in $(seq 1 "$PAIRS"); do
  one base "$BASE_BIN" "$r"
  one new "$NEW_BIN" "$r"
done
uptime > "$WORK/uptime-after.txt"

python3 - "$RESULTS" "$PAIRS" <<'PY' | tee "$WORK/table.md"
import csv, math, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
def vals(b, wl, a, k):
    xs = [float(r[k]) for r in rows if r["build"] == b and r["workload"] == wl and r["acks"] == a]
    return [x for x in xs if not math.isnan(x)]
def cell(xs, f):
    if not xs: return "-"
    m = f % statistics.median(xs)
    return m + (" (" + f % min(xs) + "-" + f % max(xs) + ")" if len(xs) > 1 else "")
print("\n| workload | acks | build | msgs/s | MB/s | produce p50 ms | p99 ms | p99.9 ms | e2e p99 ms | broker CPU us/msg |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
for wl, a in dict.fromkeys((r["workload"], r["acks"]) for r in rows):
    for b in ("base", "new"):
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (wl, a, b,
            cell(vals(b, wl, a, "msgs_per_s"), "%.0f"), cell(vals(b, wl, a, "mb_per_s"), "%.1f"),
            cell(vals(b, wl, a, "p50"), "%.2f"), cell(vals(b, wl, a, "p99"), "%.2f"),
            cell(vals(b, wl, a, "p999"), "%.2f"), cell(vals(b, wl, a, "e2e_p99"), "%.2f"),
            cell(vals(b, wl, a, "cpu_us_per_msg"), "%.3f")))
print("\n| workload | acks | new/base msgs/s | new/base p99 | new/base CPU per msg |")
print("|---|---|---:|---:|---:|")
med = lambda xs: statistics.median(xs) if xs else math.nan
for wl, a in dict.fromkeys((r["workload"], r["acks"]) for r in rows):
    r = lambda k: med(vals("new", wl, a, k)) / med(vals("base", wl, a, k)) if vals("base", wl, a, k) else math.nan
    print("| %s | %s | %.2f | %.2f | %.2f |" % (wl, a, r("msgs_per_s"), r("p99"), r("cpu_us_per_msg")))
PY
