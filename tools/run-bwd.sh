#!/usr/bin/env bash
# The backward's device run: the ABI echo, the backward tests (and, with FULL=1, the whole GPU
# suite), racecheck/memcheck of one backward test, then the backward bench beside PyTorch.
# Runs on the GPU machine after tools/stage-gpu.sh (the .gpu-pack folder carried); logs in $OUT,
# the summary last. SAN=0 skips the sanitizers; DET_BENCH="..." also times the deterministic
# backward (`--deterministic`, no peers) with those arguments.
# usage: [FULL=1] [SAN=0] [BENCH="--max-seqlen 4096"] [DET_BENCH="..."] tools/run-bwd.sh
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-out}; mkdir -p "$OUT"
STEP_DIR="$OUT"
# shellcheck source=tools/step.sh
. tools/step.sh
step abi .gpu/test-abi --nocapture
step bwd .gpu/test-bwd --nocapture --test-threads 1
if [ "${FULL:-0}" = 1 ]; then
  step fwd .gpu/test-fwd --nocapture --test-threads 1
  step decode .gpu/test-decode --nocapture --test-threads 1
  step precision .gpu/test-precision --nocapture
  step malformed-memcheck compute-sanitizer --tool memcheck --error-exitcode 9 .gpu/test-malformed --nocapture
  step check .gpu/attn check --cases 3
fi
if [ "${SAN:-1}" = 1 ]; then
  step bwd-memcheck compute-sanitizer --tool memcheck --error-exitcode 9 .gpu/test-bwd --nocapture backward_sanitizer_smoke
  step bwd-racecheck compute-sanitizer --tool racecheck --error-exitcode 9 .gpu/test-bwd --nocapture backward_sanitizer_smoke
fi
if [ -n "${BENCH+x}" ]; then
  step bench .gpu/attn bench --pass bwd --compare torch --json "$OUT/bench-bwd.json" ${BENCH}
  tail -40 "$OUT/bench.txt"
fi
if [ -n "${DET_BENCH+x}" ]; then
  step bench-det .gpu/attn bench --pass bwd --deterministic --compare none ${DET_BENCH}
  tail -30 "$OUT/bench-det.txt"
fi
for f in bwd fwd decode; do [ -f "$OUT/$f.txt" ] && grep -B2 -A30 'cases failed' "$OUT/$f.txt" | head -60; done
printf '%s\n' "${summary[@]}"
