"""Exact int8 pointwise convolutions on Arm CPUs with the dot-product extension: the ``sdot`` intrinsic.

``sdot`` (Armv8.2 dotprod, on every Cortex-A78) multiplies 16 signed bytes by 16 signed bytes and adds each
group of four products into one of four int32 lanes: 16 multiply-adds of a pointwise convolution (4 output
channels x 4 input channels) in one instruction, exact for any int8 codes (no saturating intermediate, unlike
x86's ``vpmaddubsw``), so signed activations need no widening and no offset.
:func:`hanasc.targets.lowering.blocked_layout.convert_to_blocked` (``dot_kernels="sdot"``) lowers int8 1x1
convs to
``conv2d_nchwc_int_sdot`` (weights as ``OHWI{ob}o4i``), and :class:`hanasc.targets.cpu_schedules.BlockedConv`
tensorizes them with :data:`SDOT_I8`. Compiled here for aarch64 and checked under qemu; not timed on a device.
"""

from __future__ import annotations

from hanasc.targets.x86_int8 import dot_func

SDOT_I8 = "hanasc_neon_sdot_4x4_i8"
LANES = 4  # int32 lanes of one q register: output channels per sdot
GROUP = 4  # input channels per lane
_LLVM_SDOT = "llvm.aarch64.neon.sdot.v4i32.v16i8"
_registered: set[str] = set()


def register(group: int = GROUP) -> str:
    """Register :data:`SDOT_I8` (``group`` input channels a lane: always 4) once per process and return its
    name."""
    if group != GROUP:
        raise ValueError(f"sdot reduces {GROUP} input channels a lane, not {group}")
    from tvm.s_tir import TensorIntrin

    if SDOT_I8 not in _registered:
        desc, impl = dot_func(GROUP, "int8", LANES), dot_func(GROUP, "int8", LANES, _sdot, bind_weights=False)
        TensorIntrin.register(SDOT_I8, desc, impl, override=True)
        _registered.add(SDOT_I8)
    return SDOT_I8


def _sdot(acc, a_vec, b_vec):
    """``C[i] += sum_k A[k] * B[i, k]`` for i, k < 4: A the four input codes of one pixel (one 32-bit word,
    broadcast to the four lanes), B the 4 x 4 weights (16 contiguous bytes), one ``sdot``."""
    from tvm.script import tirx as T

    return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(_LLVM_SDOT), acc, b_vec, a_vec, dtype="int32x4")
