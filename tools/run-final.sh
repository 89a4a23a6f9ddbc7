#!/usr/bin/env bash
# One device call for a milestone: the whole GPU suite, memcheck + racecheck of the backward
# smoke test and of the seed entry points / graph test, the forward and backward benches beside
# PyTorch with their JSON and SVG plots, then `attn check` on the sm_80 code object. Runs on the
# GPU machine after tools/stage-gpu.sh (the .gpu-pack folder carried); logs in $OUT (also packed
# as logs.tar.gz), the summary last.
# usage: [ITERS=10] tools/run-final.sh
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-out}; mkdir -p "$OUT/logs"
STEP_DIR="$OUT/logs"
# shellcheck source=tools/step.sh
. tools/step.sh
step suite env OUT="$OUT/logs/suite" tools/gpu-suite.sh
step bwd-memcheck compute-sanitizer --tool memcheck --error-exitcode 9 .gpu/test-bwd --nocapture backward_sanitizer_smoke
step bwd-racecheck compute-sanitizer --tool racecheck --error-exitcode 9 .gpu/test-bwd --nocapture backward_sanitizer_smoke
step ck-memcheck compute-sanitizer --tool memcheck --error-exitcode 9 .gpu/test-ck --nocapture --test-threads 1
step bench-bwd .gpu/attn bench --pass bwd --compare torch --iters "${ITERS:-10}" --json "$OUT/bench-bwd.json"
step bench-fwd .gpu/attn bench --pass fwd --compare torch --iters "${ITERS:-10}" --json "$OUT/bench-fwd.json"
# The sm_80 code object on this GPU (its PTX, JIT-compiled at load: minutes): random forward +
# backward cases, last so that a slow JIT cannot cost the benches.
step check-sm80 timeout "${SM80_LIMIT:-200}" .gpu/attn --target sm_80 check --cases 1
tar -czf "$OUT/logs.tar.gz" -C "$OUT" logs
printf '%s\n' "${summary[@]}"
