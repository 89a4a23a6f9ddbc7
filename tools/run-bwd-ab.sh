#!/usr/bin/env bash
# Backward A/B on the GPU machine: this build (.gpu) against an alternative build of the tree
# (.gpu-altpack/gpu.tar.xz, unpacked to .gpu-alt), both timed twice, interleaved (bf16, S <= 4096);
# an ncu profile of this build's dq and dkdv kernels at D = 128, S = 4096; and the canonical
# forward table against the baseline build (.gpu-basepack, tools/compare-base.sh). Logs in $OUT.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-out}; mkdir -p "$OUT"
unpack() { python3 -c "import tarfile, sys; tarfile.open(sys.argv[1]).extractall()" "$1"; }
[ -d .gpu ] || unpack .gpu-pack/gpu.tar.xz
[ -f .gpu-altpack/gpu.tar.xz ] && [ ! -d .gpu-alt ] && mkdir -p .alt && (cd .alt && unpack ../.gpu-altpack/gpu.tar.xz) && mv .alt/.gpu .gpu-alt
[ -f .gpu-basepack/base.tar.xz ] && [ ! -d .gpu-base ] && unpack .gpu-basepack/base.tar.xz
for i in 1 2; do
  .gpu/attn bench --pass bwd --dtype bf16 --max-seqlen 4096 --iters 10 --json "$OUT/new$i.json" > /dev/null 2>&1
  [ -x .gpu-alt/attn ] && .gpu-alt/attn bench --pass bwd --dtype bf16 --max-seqlen 4096 --iters 10 --json "$OUT/alt$i.json" > /dev/null 2>&1
done
OUT="$OUT" python3 - <<'PY' | tee "$OUT/ab.txt"
import json, os
o = os.environ["OUT"]
def load(n):
    try: return {(r["d"], r["causal"], r["seqlen"]): r["tflops"] for r in json.load(open(f"{o}/{n}.json"))}
    except Exception: return {}
n1, n2, a1, a2 = (load(x) for x in ["new1", "new2", "alt1", "alt2"])
for k in sorted(n1):
    alt = f"alt {a1.get(k, 0):.1f} {a2.get(k, 0):.1f} ratio new/alt {(n1[k] + n2[k]) / max(a1.get(k, 0) + a2.get(k, 0), 1e-9):.3f}" if a1 else ""
    print(k, f"new {n1[k]:.1f} {n2[k]:.1f}", alt)
PY
ncu --section SpeedOfLight --section WarpStateStats --section Occupancy --section LaunchStats \
  --section ComputeWorkloadAnalysis -k regex:attn_bwd_d --launch-skip 24 --launch-count 2 \
  .gpu/attn bench --pass bwd --dtype bf16 --d 128 --max-seqlen 4096 --iters 1 > "$OUT/ncu.txt" 2>&1
grep -E 'attn_bwd|Duration|Compute \(SM\) Throughput|Memory Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Stall|Warp Cycles Per Issued|Issue Slots Busy|Block Limit' "$OUT/ncu.txt" | head -60
OUT="$OUT" tools/compare-base.sh 2>&1 | tee "$OUT/fwd-base.txt"
cat "$OUT/ab.txt"
