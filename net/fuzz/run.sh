#!/usr/bin/env bash
# Runs every spate-net fuzz target for SECONDS each (default 60).
# Usage: net/fuzz/run.sh [SECONDS]
# Needs cargo-fuzz (installed here if missing) and a nightly toolchain; without nightly
# it tries the default toolchain with RUSTC_BOOTSTRAP=1, and fails loudly if that cannot
# build the targets either. Crashes are saved under net/fuzz/artifacts/<target>/ and make
# the script exit non-zero.
set -euo pipefail
SECONDS_PER_TARGET="${1:-60}"
cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if command -v rustup >/dev/null 2>&1 && rustup run nightly rustc --version >/dev/null 2>&1; then
    FUZZ=(cargo +nightly fuzz)
else
    echo "WARNING: no nightly toolchain; trying the default toolchain with RUSTC_BOOTSTRAP=1" >&2
    export RUSTC_BOOTSTRAP=1
    FUZZ=(cargo fuzz)
fi
if ! "${FUZZ[@]}" build; then
    echo "ERROR: could not build the fuzz targets (cargo-fuzz needs nightly or RUSTC_BOOTSTRAP=1)" >&2
    exit 1
fi

TARGETS=(decode_request decode_response record_batch metadata_record)
for t in "${TARGETS[@]}"; do
    mkdir -p "corpus/$t"
    # Seed the corpus with the committed seeds and, for requests, the captured frames.
    if [ -d "seeds/$t" ]; then cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true; fi
    if [ "$t" = decode_request ]; then cp -n ../tests/fixtures/*.bin "corpus/$t/" 2>/dev/null || true; fi
done
status=0
for t in "${TARGETS[@]}"; do
    echo "== fuzzing $t for ${SECONDS_PER_TARGET}s" >&2
    if ! "${FUZZ[@]}" run "$t" "corpus/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1; then
        echo "FAILED: $t (crash input in net/fuzz/artifacts/$t/)" >&2
        status=1
    fi
done
[ "$status" = 0 ] && echo "fuzz: all targets ran ${SECONDS_PER_TARGET}s without findings" >&2
exit $status
