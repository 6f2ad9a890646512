#!/usr/bin/env bash
# Raw-disk baseline for the log engine benchmarks: sequential O_DIRECT writes (and
# 1 MiB reads) with fio's io_uring engine, queue depth 1, on the file system of target/.
# Usage: bash log/benches/fio.sh   (needs fio: apt-get install -y fio)
set -euo pipefail
f="${FIO_FILE:-$(cd "$(dirname "$0")/../.." && pwd)/target/fio.tmp}"
trap 'rm -f "$f"' EXIT
run() {
    local label=$1; shift
    fio --name=seq --filename="$f" --direct=1 --ioengine=io_uring --output-format=terse --terse-version=3 "$@" |
        awk -F';' -v l="$label" '{ if ($48 > 0) printf "%-28s write %8.1f MiB/s %7d IOPS\n", l, $48/1024, $49;
                                   else printf "%-28s read  %8.1f MiB/s %7d IOPS\n", l, $7/1024, $8 }'
}
for bs in 1m 64k 4k; do
    run "write bs=$bs" --rw=write --bs=$bs --size=2g
    rm -f "$f"
done
for bs in 1m 64k; do
    run "write bs=$bs fdatasync=1" --rw=write --bs=$bs --size=512m --fdatasync=1
    rm -f "$f"
done
run "read bs=1m (after layout)" --rw=read --bs=1m --size=2g
