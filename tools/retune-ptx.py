#!/usr/bin/env python3
"""Retunes a PTX module that `cargo xtask build-kernels` wrote: keeps the entries whose names
match --keep (all by default) and sets `.minnctapersm N` (resident blocks per SM asked of ptxas:
at most 65536 / (N * threads) registers) on those matching each --blocks REGEX=N, in order.
`ptxas -arch=sm_90a -O3 -v OUT -o sm_90a.NAME.cubin` then makes a cubin that
`attn --code-object sm_90a.NAME.cubin bench ...` times without rebuilding anything (the tile
shapes must be the host's: only registers change). See docs/gpu-testing.md, "Retuning".

usage: tools/retune-ptx.py IN.ptx OUT.ptx [--keep REGEX] [--blocks REGEX=N ...]
"""
import argparse
import re
import sys

# Declared once at module scope by the NVPTX backend, after the first entry's comment.
SHARED = ".extern .shared .align 16 .b8 gpu_launch_sized_workgroup_mem[];\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--keep", default="", help="regex of the entry names to keep (default: all)")
    ap.add_argument("--blocks", action="append", default=[], metavar="REGEX=N")
    a = ap.parse_args()
    rules = []
    for r in a.blocks:
        rx, _, n = r.rpartition("=")
        if not rx or not n.isdigit() or int(n) < 1:
            sys.exit(f"--blocks {r!r}: expected REGEX=N with N >= 1")
        rules.append((re.compile(rx), n))
    keep = re.compile(a.keep)
    text = open(a.src).read()
    starts = [m.start() for m in re.finditer(r"^\t// \.globl\t", text, re.M)]
    if not starts:
        sys.exit(f"{a.src}: no entries")
    head = text[: starts[0]]
    parts = [head if SHARED in text[: starts[0]] else head + SHARED]
    kept, tuned = 0, 0
    for lo, hi in zip(starts, starts[1:] + [len(text)]):
        entry = text[lo:hi].replace(SHARED, "")
        name = re.search(r"\.entry (\w+)\(", entry)
        if name is None or not keep.search(name.group(1)):
            continue
        for rx, n in rules:
            if rx.search(name.group(1)):
                entry, k = re.subn(r"\.minnctapersm \d+", ".minnctapersm " + n, entry)
                if k == 0:  # (every kernel has one: xtask writes its launch bounds)
                    sys.exit(f"{name.group(1)}: no .minnctapersm to retune")
                tuned += 1
        parts.append(entry)
        kept += 1
    open(a.out, "w").write("".join(parts))
    print(f"{a.out}: {kept} entries, {tuned} retuned")


if __name__ == "__main__":
    main()
