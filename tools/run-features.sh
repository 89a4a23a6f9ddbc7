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
if [ -x .gpu-base/attn ]; then
  for i in 1 2; do
    .gpu-base/attn bench --dtype bf16 --iters 20 --json "$OUT/base$i.json" > /dev/null 2>&1
    .gpu/attn bench --dtype bf16 --iters 20 --json "$OUT/new$i.json" > /dev/null 2>&1
  done
  python3 - <<'PY'
import json, os
o = os.environ.get("OUT", "out")
load = lambda n: {(r["d"], r["causal"], r["seqlen"]): r["tflops"] for r in json.load(open(f"{o}/{n}.json"))}
b1, b2, n1, n2 = (load(x) for x in ["base1", "base2", "new1", "new2"])
for k in sorted(b1):
    print(k, f"base {b1[k]:.1f} {b2[k]:.1f} new {n1[k]:.1f} {n2[k]:.1f} ratio {(n1[k] + n2[k]) / (b1[k] + b2[k]):.3f}")
PY
fi
