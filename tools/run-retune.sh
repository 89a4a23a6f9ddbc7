#!/usr/bin/env bash
# Register/occupancy retuning without a rebuild, on the GPU machine (after tools/stage-gpu.sh;
# .gpu-pack carried, and PTX: the tree's sm_90a.ptx or a subset made here with
# tools/retune-ptx.py --keep, carried beside it). Each VARIANT is "NAME [--blocks REGEX=N ...]";
# every one is retuned from PTX (tools/retune-ptx.py), compiled by ptxas (in parallel), and, when
# no retuned kernel spills, timed by `attn --code-object` with $BENCH; `base` (PTX as built) runs
# first and last. Results: $OUT/retune/{ptxas,bench}-NAME.txt and the TFLOP/s table
# $OUT/retune/table.txt (printed last).
# usage: [BENCH="..."] tools/run-retune.sh PTX 'NAME --blocks RX=N ...' ...
set -u
cd "$(dirname "$0")/.."
PTX=$1; shift
OUT=${OUT:-out}; R="$OUT/retune"; mkdir -p "$R"
BENCH=${BENCH:---pass bwd --max-seqlen 4096 --iters 10 --compare none}
export ATTN_REQUIRE_GPU=1
[ -d .gpu ] || python3 -c "import tarfile; tarfile.open('.gpu-pack/gpu.tar.xz').extractall()"
target=$(basename "$PTX"); target=${target%%.*}
work=$(mktemp -d)
names=(base)
python3 tools/retune-ptx.py "$PTX" "$work/base.ptx" > /dev/null
for v in "$@"; do
  read -r name rules <<< "$v"
  names+=("$name")
  # shellcheck disable=SC2086
  python3 tools/retune-ptx.py "$PTX" "$work/$name.ptx" $rules > /dev/null || exit 2
done
for name in "${names[@]}"; do
  ptxas -arch="$target" -O3 -v "$work/$name.ptx" -o "$work/$target.$name.cubin" > "$R/ptxas-$name.txt" 2>&1 &
done
wait
for name in "${names[@]}" base; do
  if grep -E "[1-9][0-9]* bytes spill (stores|loads)" "$R/ptxas-$name.txt" > /dev/null; then
    echo "$name: spills, not timed" | tee -a "$R/skipped.txt"; continue
  fi
  tag=$name; [ -e "$R/bench-$name.txt" ] && tag=$name-again
  # shellcheck disable=SC2086
  .gpu/attn --code-object "$work/$target.$name.cubin" bench $BENCH > "$R/bench-$tag.txt" 2>&1
done
python3 - "$R" > "$R/table.txt" <<'PY'
import glob, os, sys
rows, cols = {}, []
for f in sorted(glob.glob(os.path.join(sys.argv[1], "bench-*.txt")), key=os.path.getmtime):
    name = os.path.basename(f)[6:-4]
    cols.append(name)
    for line in open(f):
        c = [x.strip() for x in line.split("|")]
        if len(c) > 9 and c[1] in ("fwd", "bwd"):
            rows.setdefault(tuple(c[1:6]), {})[name] = c[9]
print("pass dtype D causal S | " + " | ".join(cols))
for k, v in rows.items():
    print(" ".join(k), "|", " | ".join(v.get(n, "-") for n in cols))
PY
rm -rf "$work"
cat "$R/table.txt"
