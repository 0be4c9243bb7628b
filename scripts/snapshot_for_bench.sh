#!/usr/bin/env bash
# Copy the working tree's packages into a frozen folder so a long benchmark keeps running the code it
# started with while the tree changes:  bash scripts/snapshot_for_bench.sh DIR; then
#   PYTHONPATH=DIR python DIR/bench/bench_compile.py ...
set -euo pipefail
dest=${1:?usage: snapshot_for_bench.sh DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$dest"
mkdir -p "$dest/hanasc"
cp -r "$root/toolchain/." "$dest/hanasc/"
for pkg in cost_models passes targets; do cp -r "$root/$pkg" "$dest/hanasc/$pkg"; done
cp -r "$root/bench" "$dest/bench"
mkdir -p "$dest/tests" && cp "$root/tests/builders.py" "$dest/tests/"  # benches build test models with it
echo "snapshot of $(git -C "$root" rev-parse --short HEAD) in $dest"
