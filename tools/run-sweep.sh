#!/usr/bin/env bash
# A decode tuning run: the GPU suite, `attn bench --decode` beside torch, then forced split
# counts on rows 1, 2 and 5 (GQA). Run there from the repository root after tools/stage-gpu.sh;
# the summary goes last (the device tool returns the output's tail).
set -o pipefail
OUT=${OUT:-out}; mkdir -p "$OUT"
tools/gpu-suite.sh > "$OUT/suite.log" 2>&1; echo "suite rc $?" > "$OUT/summary.txt"
grep -E "passed on|Unsupported here|FAILED|failed|panicked|ERROR SUMMARY|gpu-suite exit" "$OUT/suite.log" | head -40 >> "$OUT/summary.txt"
.gpu/attn bench --decode --iters 30 --json "$OUT/decode.json" > "$OUT/decode.txt" 2>&1
for s in ${SPLITS-2 3 4 8 16 24 32 48}; do
  echo "splits $s: $(.gpu/attn bench --decode 1,2,5 --compare none --iters 20 --splits $s 2>&1 | grep -E '^\| [0-9]' | awk -F'|' '{printf "%s %s %s;", $3, $4, $5}')" >> "$OUT/sweep.txt"
done
grep -E "split|^\| [0-9]" "$OUT/decode.txt"
cat "$OUT/sweep.txt" "$OUT/summary.txt"
