#!/usr/bin/env bash
# The forward-features GPU run: the GPU suite, `attn bench --features` beside torch, and the
# canonical bf16 table of this build against a baseline build (.gpu-base/attn, optional), each
# twice, interleaved. Run there from the repository root after tools/stage-gpu.sh.
set -o pipefail
OUT=${OUT:-out}; mkdir -p "$OUT"
tools/gpu-suite.sh > "$OUT/suite.log" 2>&1; echo "suite rc $?"
grep -E "passed on|Unsupported here|FAILED|failed|panicked|ERROR SUMMARY|gpu-suite exit|f32 D=" "$OUT/suite.log" | head -40
.gpu/attn bench --features --iters 20 --json "$OUT/features.json" > "$OUT/features.txt" 2>&1; echo "features rc $?"
grep -E "^\| (dropout|bias|alibi|softcap|varlen)" "$OUT/features.txt" | awk -F'|' '{print $2,$3,$5,$6,$7,$8,$9,$10,$11,$12,$13}'
OUT="$OUT" tools/compare-base.sh
