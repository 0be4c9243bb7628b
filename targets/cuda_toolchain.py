"""This machine's CUDA: whether it has a GPU TVM can use, and which compiler builds CUDA kernels here
(NVRTC when ``cuda-bindings`` is installed, else nvcc). Read by the Orin target's local-GPU runs
(:mod:`hanasc.targets.jetson_orin`) and by CUDA tuning (:mod:`hanasc.targets.tuning`)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator


def local_gpu_available() -> bool:
    """Whether this machine has a CUDA GPU TVM can use."""
    try:
        import tvm

        return bool(tvm.cuda(0).exist)
    except Exception:
        return False


def _has_nvrtc() -> bool:
    try:
        return importlib.util.find_spec("cuda.bindings") is not None
    except ModuleNotFoundError:
        return False


@contextlib.contextmanager
def kernel_compiler() -> Iterator[None]:
    """TVM compiles CUDA kernels with NVRTC (needs ``cuda-bindings``) or nvcc: use nvcc if NVRTC is absent."""
    if _has_nvrtc() or "TVM_CUDA_COMPILE_MODE" in os.environ:
        yield
        return
    os.environ["TVM_CUDA_COMPILE_MODE"] = "nvcc"
    try:
        yield
    finally:
        os.environ.pop("TVM_CUDA_COMPILE_MODE", None)
