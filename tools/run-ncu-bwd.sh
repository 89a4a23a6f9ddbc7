#!/usr/bin/env bash
# ncu of the D = 128 bf16 backward at S = 4096 (non-causal), as docs/perf.md's b9 rows quote it:
# the fused kernel (SpeedOfLight ... Occupancy; the stall reasons; per-SASS stall samples as CSV)
# and the deterministic dq + dk/dv pair. The bench's shapes run in order (S = 512, 1024, 2048,
# 4096) with 4 launches each at --iters 1, hence the skips. Runs on the GPU machine after
# tools/stage-gpu.sh (.gpu-pack carried); output in $OUT.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-out}; mkdir -p "$OUT"
export ATTN_REQUIRE_GPU=1
[ -d .gpu ] || python3 -c "import tarfile; tarfile.open('.gpu-pack/gpu.tar.xz').extractall()"
A=".gpu/attn bench --pass bwd --dtype bf16 --d 128 --max-seqlen 4096 --iters 1 --compare none"
S="--section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats"
# shellcheck disable=SC2086
{
  timeout 250 ncu -k regex:attn_bwd_fused --launch-skip 12 --launch-count 1 $S $A > "$OUT/ncu-fused.txt" 2>&1
  timeout 250 ncu -k regex:"attn_bwd_(dq|dkdv)_bf16" --launch-skip 24 --launch-count 2 $S $A --deterministic > "$OUT/ncu-det.txt" 2>&1
  timeout 200 ncu -k regex:attn_bwd_fused --launch-skip 12 --launch-count 1 --section WarpStateStats --print-details all $A > "$OUT/ncu-stalls.txt" 2>&1
  timeout 250 ncu -k regex:attn_bwd_fused --launch-skip 12 --launch-count 1 --section WarpStateStats --section SourceCounters --page source --print-source sass --csv $A > "$OUT/ncu-sass.csv" 2>&1
}
grep -E "attn_bwd|Duration|Issue Slots Busy|Warp Cycles Per Issued|Achieved Occupancy|Stall (Wait|Short|Long|Barrier)" "$OUT"/ncu-*.txt
