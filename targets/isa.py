"""What a TVM target's processor is and has: GPU or CPU, x86 or not, its SIMD registers, the instructions
hanasc's int8 kernels may use (:mod:`hanasc.targets.x86_int8`, :mod:`hanasc.targets.arm_int8`).

The one place these questions are answered: the layout stage (:mod:`hanasc.targets.pipelines`), the
schedules (:mod:`hanasc.targets.cpu_schedules`) and the intrinsics all ask here. Importing this module
imports no TVM; LLVM is asked (``has_feature``) on first use. The environment variables ``HANASC_INT8_*``
turn kernels off (to compare, or to work around a CPU).
"""

from __future__ import annotations

import os


def is_gpu(target) -> bool:
    """Whether ``target`` compiles kernels for a CUDA GPU (else a CPU)."""
    return target.kind.name == "cuda"


def is_x86(target) -> bool:
    """Whether an LLVM ``target`` compiles for x86 (its ``mtriple``; none given: this host, x86 here)."""
    triple = str(target.attrs.get("mtriple", "") or "")
    return target.kind.name == "llvm" and (not triple or triple.startswith(("x86_64", "i686", "i386")))


def has_feature(target, feature: str) -> bool:
    """Whether LLVM reports ``feature`` (``avx2``, ``avx512f``, ...) for ``target``; False when it cannot
    query the target."""
    from tvm.target import codegen

    try:
        return bool(codegen.target_has_features(feature, target))
    except Exception:  # an LLVM that cannot query this target
        return False


def vector_registers(target) -> tuple[int, int]:
    """``(fp32 lanes of one SIMD register, SIMD registers)`` of a CPU target: AVX-512 (16, 32), AVX2 / AVX
    (8, 16), SSE (4, 16), AArch64 NEON (4, 32); another CPU (16, 32)."""
    triple = str(target.attrs.get("mtriple", "") or "")
    if triple.startswith(("aarch64", "arm64")):
        return 4, 32
    if not is_x86(target):
        return 16, 32
    if has_feature(target, "avx512f"):
        return 16, 32
    return (8, 16) if has_feature(target, "avx") else (4, 16)


def supports_pair_kernels(target) -> bool:
    """Whether ``target`` is an x86 CPU with AVX2 (``vpmaddwd`` on ymm registers); the environment variable
    ``HANASC_INT8_PAIRS=0`` turns the pair kernels off."""
    if os.environ.get("HANASC_INT8_PAIRS", "1") == "0" or not is_x86(target):
        return False
    return has_feature(target, "avx2")


def supports_vnni(target) -> bool:
    """Whether ``target`` has AVX512-VNNI on ymm registers (``avx512vnni`` + ``avx512vl``): the pair and quad
    kernels then accumulate with one ``vpdpwssd`` / ``vpdpbusd`` instead of two or three instructions;
    ``HANASC_INT8_VNNI=0`` keeps the AVX2 instructions."""
    if os.environ.get("HANASC_INT8_VNNI", "1") == "0" or not supports_pair_kernels(target):
        return False
    return has_feature(target, "avx512vnni") and has_feature(target, "avx512vl")


def supports_quad_depthwise(target) -> bool:
    """Whether ``target`` runs int8 depthwise convs as four-tap byte dot products
    (:mod:`hanasc.targets.lowering.quad_depthwise`): AVX512-VNNI with 512-bit ``vpdpbusd`` and AVX512-BW's
    byte shuffles (:func:`depthwise_vpermb` picks the transpose); ``HANASC_QUAD_DEPTHWISE=0`` keeps the
    int32-widened depthwise code."""
    if os.environ.get("HANASC_QUAD_DEPTHWISE", "1") == "0" or not supports_vnni(target):
        return False
    return has_feature(target, "avx512f") and has_feature(target, "avx512bw")


def depthwise_vpermb(target) -> bool:
    """Whether ``target``'s four-tap depthwise kernel transposes with one ``vpermb`` (AVX512-VBMI), else
    with ``vpermd`` + ``vpshufb`` (AVX512-BW); ``HANASC_DEPTHWISE_VPERMB=0`` forces the latter."""
    return os.environ.get("HANASC_DEPTHWISE_VPERMB", "1") != "0" and has_feature(target, "avx512vbmi")


def supports_sdot(target) -> bool:
    """Whether ``target`` is an aarch64 CPU with the dot-product extension (``+dotprod``); the environment
    variable ``HANASC_INT8_PAIRS=0`` turns these kernels off like the x86 ones."""
    if os.environ.get("HANASC_INT8_PAIRS", "1") == "0" or target.kind.name != "llvm":
        return False
    triple = str(target.attrs.get("mtriple", "") or "")
    mattr = [str(a) for a in (target.attrs.get("mattr") or [])]
    return triple.startswith(("aarch64", "arm64")) and "+dotprod" in mattr
