#!/usr/bin/env bash
# Install hanasc and everything its targets and tests need on a fresh Debian machine (Python 3.11).
#   bash scripts/install.sh         # the tool (with torch for the bundled models)
#   bash scripts/install.sh --dev   # plus pytest and ruff
set -euo pipefail
cd "$(dirname "$0")/.."

extras="torch"
[[ "${1:-}" == "--dev" ]] && extras="torch,dev"

# Debian packages: g++, cmake, pkg-config (C API of bundles), aarch64 cross-compiler and qemu-user
# (cortex-a78 bundle), Fashion-MNIST (bench data).
apt_packages=(g++ cmake pkg-config g++-aarch64-linux-gnu qemu-user dataset-fashion-mnist)
apt_packages+=(llvm-19)  # llvm-mc / llvm-mca 19 (Neoverse N1 model): hanasc simulate
missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    sudo=""
    [[ "$(id -u)" -ne 0 ]] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# torch is pinned (an unpinned torch pulls a multi-GB CUDA build); install it first so nothing else picks one.
python3 -m pip install -q "torch==2.13.0"
python3 -m pip install -q -e ".[${extras}]"
# Model corpus (docs/corpus.md): the PP-OCR det/rec/cls ONNX files ship inside this wheel; its own imports
# (OpenCV, ...) are not needed, hanasc only reads the files.
python3 -m pip install -q --no-deps "rapidocr-onnxruntime==1.4.4"

# The aarch64 TVM runtime (libtvm_runtime.so, libtvm_ffi.so, libtvm_runtime_cuda.so) for the cortex-a78 and
# jetson-orin bundles: the aarch64 wheels of the installed TVM versions, fetched once into the hanasc cache.
python3 -m hanasc.targets.aarch64_runtime
