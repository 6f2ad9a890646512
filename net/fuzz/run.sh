#!/usr/bin/env bash
# Runs every spate-net fuzz target for SECONDS each (default 60).
# Usage: net/fuzz/run.sh [SECONDS]
# Needs cargo-fuzz (installed here if missing) and a nightly toolchain; without nightly
# it tries stable with RUSTC_BOOTSTRAP=1, and fails loudly if neither works.
set -euo pipefail
SECONDS_PER_TARGET="${1:-60}"
cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if rustup run nightly rustc --version >/dev/null 2>&1; then
    FUZZ=(cargo +nightly fuzz)
elif RUSTC_BOOTSTRAP=1 cargo fuzz --help >/dev/null 2>&1; then
    echo "no nightly toolchain: using stable with RUSTC_BOOTSTRAP=1" >&2
    export RUSTC_BOOTSTRAP=1
    FUZZ=(cargo fuzz)
else
    echo "ERROR: cargo-fuzz needs a nightly toolchain (or RUSTC_BOOTSTRAP=1 on stable)" >&2
    exit 1
fi

TARGETS=(decode_request decode_response record_batch)
mkdir -p corpus
for t in "${TARGETS[@]}"; do
    mkdir -p "corpus/$t"
    # Seed the corpus with the committed seeds and the captured client requests.
    if [ -d "seeds/$t" ]; then cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true; fi
    if [ "$t" = decode_request ]; then cp -n ../tests/fixtures/*.bin "corpus/$t/" 2>/dev/null || true; fi
done
status=0
for t in "${TARGETS[@]}"; do
    echo "== fuzzing $t for ${SECONDS_PER_TARGET}s" >&2
    if ! "${FUZZ[@]}" run "$t" "corpus/$t" -- -max_total_time="$SECONDS_PER_TARGET" -max_len=65536 -rss_limit_mb=2048; then
        echo "FAILED: $t (see net/fuzz/artifacts/$t)" >&2
        status=1
    fi
done
exit $status
