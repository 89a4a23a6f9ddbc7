#!/usr/bin/env bash
# The canonical bf16 table of this build (.gpu/attn) against a baseline build (.gpu-base/attn),
# each timed twice, interleaved; prints TFLOP/s per shape and the ratio new / base. Does nothing
# without .gpu-base/attn. Run there from the repository root; JSON goes to $OUT.
OUT=${OUT:-out}; mkdir -p "$OUT"
[ -x .gpu-base/attn ] || exit 0
for i in 1 2; do
  .gpu-base/attn bench --dtype bf16 --iters 20 --json "$OUT/base$i.json" > /dev/null 2>&1
  .gpu/attn bench --dtype bf16 --iters 20 --json "$OUT/new$i.json" > /dev/null 2>&1
done
OUT="$OUT" python3 - <<'PY'
import json, os
o = os.environ["OUT"]
load = lambda n: {(r["d"], r["causal"], r["seqlen"]): r["tflops"] for r in json.load(open(f"{o}/{n}.json"))}
b1, b2, n1, n2 = (load(x) for x in ["base1", "base2", "new1", "new2"])
for k in sorted(b1):
    print(k, f"base {b1[k]:.1f} {b2[k]:.1f} new {n1[k]:.1f} {n2[k]:.1f} ratio {(n1[k] + n2[k]) / (b1[k] + b2[k]):.3f}")
PY
