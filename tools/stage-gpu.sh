#!/usr/bin/env bash
# Builds the GPU test binaries and the `attn` CLI here (x86-64 Linux, no GPU needed) and stages
# them in .gpu/ (git-ignored) for a machine that has a GPU but no Rust. See docs/gpu-testing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .gpu && mkdir -p .gpu
cargo build --release -p attn-cli
cp target/release/attn .gpu/
for t in abi fwd decode malformed precision bwd ck; do
  exe=$(cargo test --release -p attn-tests --test "$t" --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))/\1/p' | tail -1)
  cp "$exe" ".gpu/test-$t"
done
# One layer's forward + backward on cudarc buffers and on owned buffers (crates/attn-host/examples),
# and the cudarc interop's unit tests (its context checks need a real device).
cargo build --release -p attn-host --features cudarc --example cudarc_layer --example owned_layer
cp target/release/examples/cudarc_layer target/release/examples/owned_layer .gpu/
exe=$(cargo test --release -p attn-host --features cudarc --lib --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))/\1/p' | tail -1)
cp "$exe" .gpu/test-interop
ls -la .gpu
# Each binary embeds every code object: strip and pack them so the folder that travels to the GPU
# machine stays well under its 64 MiB limit (tools/gpu-suite.sh unpacks it). xz with a large
# window (256 MiB: a binary is ~67 MB) stores the code objects that every binary embeds once.
strip .gpu/*
rm -rf .gpu-pack && mkdir -p .gpu-pack && tar -cf - .gpu | xz -9 --lzma2=preset=9,dict=256MiB -T2 > .gpu-pack/gpu.tar.xz
ls -la .gpu-pack
