#!/usr/bin/env bash
# Runs on the GPU machine from the repository root, after tools/stage-gpu.sh staged .gpu/ here
# and the folder was carried over. Logs go to $OUT (or ./out). Exit status: that of the tests.
# usage: tools/gpu-suite.sh [bench args...]
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-out}; mkdir -p "$OUT"
export ATTN_REQUIRE_GPU=1
# (python's tarfile reads xz where no xz binary is installed)
[ -d .gpu ] || python3 -c "import tarfile; tarfile.open('.gpu-pack/gpu.tar.xz').extractall()"
rc=0
nvidia-smi -L 2>&1 | tee "$OUT/gpu.txt"
.gpu/attn info 2>&1 | tee "$OUT/info.txt"
.gpu/test-abi --nocapture 2>&1 | tee "$OUT/abi.txt"; rc=$((rc | PIPESTATUS[0]))
.gpu/test-fwd --nocapture --test-threads 1 2>&1 | tee "$OUT/fwd.txt"; rc=$((rc | PIPESTATUS[0]))
.gpu/test-decode --nocapture --test-threads 1 2>&1 | tee "$OUT/decode.txt"; rc=$((rc | PIPESTATUS[0]))
.gpu/test-precision --nocapture 2>&1 | tee "$OUT/precision.txt"; rc=$((rc | PIPESTATUS[0]))
.gpu/test-bwd --nocapture --test-threads 1 2>&1 | tee "$OUT/bwd.txt"; rc=$((rc | PIPESTATUS[0]))
# The seed's entry points, and a captured graph replaying dropout from the device generator.
.gpu/test-ck --nocapture --test-threads 1 2>&1 | tee "$OUT/ck.txt"; rc=$((rc | PIPESTATUS[0]))
# Malformed device arrays (cu_seqlens, seqused_k, device seed/offset) under memcheck: 0 errors.
compute-sanitizer --tool memcheck --error-exitcode 9 .gpu/test-malformed --nocapture 2>&1 | tee "$OUT/malformed-memcheck.txt"; rc=$((rc | PIPESTATUS[0]))
.gpu/test-interop interop:: --nocapture 2>&1 | tee "$OUT/interop.txt"; rc=$((rc | PIPESTATUS[0]))
.gpu/cudarc_layer 2>&1 | tee "$OUT/cudarc_layer.txt"; rc=$((rc | PIPESTATUS[0]))
.gpu/owned_layer 2>&1 | tee "$OUT/owned_layer.txt"; rc=$((rc | PIPESTATUS[0]))
.gpu/attn check --cases 4 2>&1 | tee "$OUT/check.txt"; rc=$((rc | PIPESTATUS[0]))
if [ $# -gt 0 ]; then
  .gpu/attn bench --json "$OUT/bench.json" "$@" 2>&1 | tee "$OUT/bench.txt"
fi
echo "gpu-suite exit $rc"
exit $rc
