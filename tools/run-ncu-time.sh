#!/usr/bin/env bash
# Kernel-only durations (ncu gpu__time_duration) of our decode rows, to separate in-kernel time
# from what the event-timed bench sees. Run there after tools/stage-gpu.sh.
OUT=${OUT:-out}; mkdir -p "$OUT"
[ -d .gpu ] || python3 -c "import tarfile; tarfile.open('.gpu-pack/gpu.tar.xz').extractall()"
for r in 1 2 3 6; do
  ncu --clock-control none --kernel-name regex:attn_ --metrics gpu__time_duration.sum,sm__cycles_elapsed.avg.per_second,dram__bytes_read.sum.per_second --launch-skip 6 --launch-count 4 .gpu/attn bench --decode $r --compare none --iters 3 > "$OUT/ncu-$r.txt" 2>&1
  echo "row $r:"; grep -E "attn_fwd|attn_merge|gpu__time_duration|dram__bytes|sm__cycles" "$OUT/ncu-$r.txt" | head -16
done
