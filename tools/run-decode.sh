#!/usr/bin/env bash
# The inference-path GPU run: the GPU suite (decode tests included), `attn bench --decode` beside
# torch, and the canonical bf16 table of this build against a baseline build (.gpu-base/attn,
# optional), interleaved. Run there from the repository root after tools/stage-gpu.sh.
set -o pipefail
OUT=${OUT:-out}; mkdir -p "$OUT"
# Optional extra builds, packed like .gpu-pack: .gpu-altpack (an alternative build of this tree,
# benched with --decode only) and .gpu-basepack (the baseline `attn` for the canonical table).
unpack() { python3 -c "import tarfile, sys; tarfile.open(sys.argv[1]).extractall()" "$1"; }
[ -f .gpu-altpack/gpu.tar.xz ] && [ ! -d .gpu-alt ] && mkdir -p .alt && (cd .alt && unpack ../.gpu-altpack/gpu.tar.xz) && mv .alt/.gpu .gpu-alt
[ -f .gpu-basepack/base.tar.xz ] && [ ! -d .gpu-base ] && unpack .gpu-basepack/base.tar.xz
tools/gpu-suite.sh > "$OUT/suite.log" 2>&1; echo "suite rc $?" > "$OUT/summary.txt"
grep -E "passed on|Unsupported here|FAILED|failed|panicked|ERROR SUMMARY|gpu-suite exit" "$OUT/suite.log" | head -60 >> "$OUT/summary.txt"
.gpu/attn bench --decode --iters 30 --json "$OUT/decode.json" > "$OUT/decode.txt" 2>&1; echo "decode bench rc $?"
cat "$OUT/decode.txt" | tail -40
if [ -x .gpu-alt/attn ]; then
  .gpu-alt/attn bench --decode --compare none --iters 30 --json "$OUT/decode-alt.json" > "$OUT/decode-alt.txt" 2>&1; echo "alt decode bench rc $?"
  grep -E "split|^\| [0-9]" "$OUT/decode-alt.txt" | head -20
fi
OUT="$OUT" tools/compare-base.sh
# The suite's summary last (the device tool returns the output's tail).
cat "$OUT/summary.txt"
