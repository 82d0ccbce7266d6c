#!/usr/bin/env bash
# `make fuzz`: the property suites at length.
#
# - the eight functions under generated payloads (tests/e2e/tests/properties.rs), split into
#   FUZZ_SHARDS processes with seeds of their own, FUZZ_CASES cases in all;
# - the emulator's `$filter` parser (tests/emulator/src/odata/filter/props.rs), FILTER_CASES cases for
#   each of its three properties, in a release build without LTO (about 14,000 cases a second here).
#
# Prints the number of cases each ran; fails if any case failed. The binaries must be built first
# (`make fuzz` does it).
set -euo pipefail
cd "$(dirname "$0")/.."

CASES="${FUZZ_CASES:-1000000}"
SHARDS="${FUZZ_SHARDS:-4}"
FILTER_CASES="${FILTER_CASES:-340000}"
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

cargo test --locked -p e2e-tests --test properties --no-run >/dev/null 2>&1
started=$(date +%s)
pids=()
for shard in $(seq "$SHARDS"); do
    seed=$(( $(date +%s%N) % 4294967296 + shard ))
    PROPTEST_CASES=$(( CASES / SHARDS )) PROPTEST_RNG_SEED="$seed" \
        cargo test --locked -q -p e2e-tests --test properties no_payload -- --nocapture \
        >"$OUT/shard-$shard.log" 2>&1 &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
functions=0
for log in "$OUT"/shard-*.log; do
    line="$(grep -m1 '^property cases run:' "$log" || true)"
    echo "functions: ${line:-no report}"
    n="$(sed -n 's/^property cases run: \([0-9]*\).*/\1/p' "$log" | head -1)"
    functions=$(( functions + ${n:-0} ))
    if grep -q 'panicked' "$log"; then status=1; grep -A20 'panicked' "$log" | head -40; fi
done
echo "functions: $functions cases in $(( $(date +%s) - started )) s over $SHARDS shards"

started=$(date +%s)
if PROPTEST_CASES="$FILTER_CASES" CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
    cargo test --locked --release -p dataverse-emulator --lib odata::filter::props >"$OUT/filter.log" 2>&1; then
    passed="$(grep -c '^test odata::filter::props.* ok$' "$OUT/filter.log" || true)"
    echo "\$filter parser: $FILTER_CASES cases for each property, clean ($passed tests passed), in $(( $(date +%s) - started )) s"
else
    status=1
    tail -40 "$OUT/filter.log"
fi
exit "$status"
