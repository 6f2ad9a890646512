#!/usr/bin/env python3
"""Markdown rows of results for docs/replication.md, from the result.json of runs:
    python3 compat/nemesis/table.py target/nemesis/*/result.json"""
import json
import sys

KINDS = ["kill", "kill-leader", "kill-controller", "pause-short", "pause-long", "isolate", "cut-pair"]

print("| target | seed | faults for | run took | faults: " + ", ".join(KINDS) + " (total) | acked | lost | misplaced "
      "| duplicates | order violations | replica log mismatches | unacked but present | read but absent "
      "| nodes that exited by themselves | verdict |")
print("|" + "---|" * 15)
for path in sys.argv[1:]:
    r = json.load(open(path))
    if "acked" not in r:
        print(f"| {r['target']} | {r['seed']} | {r['duration']} s | {r.get('elapsed_s')} s | no verdict: {r.get('error')} |"
              + " |" * 10)
        continue
    f = r["faults"]
    faults = " / ".join(str(f.get(k, 0)) for k in KINDS) + f" ({r['faults_total']})"
    verdict = "PASS" if r["passed"] else "FAIL"
    print(f"| {r['target']} | {r['seed']} | {r['duration']} s | {r['elapsed_s']} s | {faults} | {r['acked']} "
          f"| {r['lost']} | {r['misplaced']} | {r['duplicates']} | {r['order_violations']} "
          f"| {r['replica_mismatches']} | {r['unacked_present']} | {r['consumed_absent']} "
          f"| {len(r['crashes'])} | {verdict} |")
