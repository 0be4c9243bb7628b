"""Exact int8 convolutions (pointwise and KxK, ``groups=1``) on AVX2 CPUs: the ``vpmaddwd`` tensor
intrinsic (and, with AVX512-VNNI, ``vpdpwssd`` / ``vpdpbusd``).

AVX2 has no 8-bit dot product that is exact for signed x signed codes, but ``vpmaddwd`` multiplies 16
pairs of int16 values and adds adjacent products into 8 int32 lanes. With activations stored as int16
codes (-127..127) and int8 weights widened in the register (``vpmovsxbw``), one instruction does 16
multiply-adds of a pointwise convolution (8 output channels x 2 input channels) exactly: a pair sum is at
most 2 * 127 * 128. The fp32 kernel does 8 per FMA, the plain int8 kernel 8 per ``vpmulld`` + ``vpaddd``.

:func:`hanasc.targets.lowering.blocked_layout.convert_to_blocked` (``pair_kernels=True``) lowers such
convolutions to
``conv2d_nchwc_int_pairs``, and :class:`hanasc.targets.cpu_schedules.BlockedConv` tensorizes them with
:data:`PMADDWD_I16` (with AVX512-VNNI: ``vpdpwssd`` / ``vpdpbusd``, on zmm registers of 16 output
channels where the output block holds 16, :func:`dot_lanes`). Where the activation codes cannot be
negative (the output of a ReLU / ReLU6:
:func:`hanasc.targets.lowering.dot_convs.nonnegative`) they stay bytes (``uint8``) and :data:`PMADDUBSW_U8`
does 32 multiply-adds (8 output x 4 input channels) in two instructions, exactly: ``vpmaddubsw``'s int16
pair sums stay below 2 * 127 * 128. Registered here (importing ``tvm.s_tir.tensor_intrin`` takes minutes).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from hanasc.targets.isa import has_feature, supports_vnni

PMADDWD_I16 = "hanasc_avx2_pmaddwd_8x2_i16"
PMADDUBSW_U8 = "hanasc_avx2_pmaddubsw_8x4_u8"
VPDPWSSD_I16 = "hanasc_avx512vnni_vpdpwssd_8x2_i16"
VPDPBUSD_U8 = "hanasc_avx512vnni_vpdpbusd_8x4_u8"
VPDPWSSD_I16_ZMM = "hanasc_avx512vnni_vpdpwssd_16x2_i16"
VPDPBUSD_U8_ZMM = "hanasc_avx512vnni_vpdpbusd_16x4_u8"
VPERMB_DPBUSD_DW = "hanasc_avx512vbmi_vpermb_vpdpbusd_16x4_dw"
VPERMD_DPBUSD_DW = "hanasc_avx512bw_vpermd_vpshufb_vpdpbusd_16x4_dw"
LANES = 8  # int32 accumulator lanes of one ymm register: output channels per intrinsic call
_LLVM_INTRIN = "llvm.x86.avx2.pmadd.wd"
_LLVM_UBSW = "llvm.x86.avx2.pmadd.ub.sw"
_LLVM_DPBUSD_512 = "llvm.x86.avx512.vpdpbusd.512"
_LLVM_VPERMB_512 = "llvm.x86.avx512.permvar.qi.512"
_LLVM_VPERMD_512 = "llvm.x86.avx512.permvar.si.512"
_LLVM_PSHUFB_512 = "llvm.x86.avx512.pshuf.b.512"
_registered: set[str] = set()


def dot_lanes(target, out_block: int) -> int:
    """Output channels (int32 lanes) one dot-product instruction accumulates: 16 (a 512-bit ``vpdpbusd`` /
    ``vpdpwssd``) on AVX512-VNNI where the output block holds 16 channels, else 8 (ymm).
    ``HANASC_INT8_ZMM=0`` keeps ymm. 1 thread, Zen 4, W8A8, one process, 40 interleaved runs, outputs
    identical: MobileNetV2 4.04 -> 3.55 ms, EfficientNet-Lite0 4.32 -> 3.92; 20 runs: ResNet-18 8.04 ->
    6.65, SqueezeNet 1.1 4.34 -> 4.11 (the same tile: half the instructions)."""
    zmm = os.environ.get("HANASC_INT8_ZMM", "1") != "0" and supports_vnni(target) and out_block % 16 == 0
    return 16 if zmm else LANES


def accumulators(target, lanes: int = LANES) -> int:
    """The accumulator registers of a dot-product kernel's register tile. ymm (``lanes`` 8): 16 where
    AVX-512 gives 32 vector registers (AVX512-VL: ymm16-31), 8 with AVX2's 16 (one process each, 30
    interleaved runs, W8A8, 1 thread, Zen 4: 16 instead of 8, EfficientNet-Lite0 0.968x, MobileNetV3-Small
    0.961x, SqueezeNet 1.1 0.971x, ResNet-18 1.001x; 24 was 1.178x on SqueezeNet, its prime widths). zmm
    (``lanes`` 16): 8, the same tile of 8 pixels x 16 channels (12: Lite0 1.00x, ResNet-18 1.01x)."""
    if lanes == 16:
        return 8
    return 16 if has_feature(target, "avx512f") and has_feature(target, "avx512vl") else 8


def instructions(target, lanes: int = LANES) -> dict[int, tuple[str, str]]:
    """Input channels a lane -> (the LLVM intrinsic, the instruction mnemonic) of ``target``'s int8 kernels
    on ``lanes`` output channels (what a test or an audit looks for in the scheduled TIR and in the
    library's assembly)."""
    if supports_vnni(target):
        width = 32 * lanes
        return {
            2: (f"llvm.x86.avx512.vpdpwssd.{width}", "vpdpwssd"),
            4: (f"llvm.x86.avx512.vpdpbusd.{width}", "vpdpbusd"),
        }
    return {2: (_LLVM_INTRIN, "vpmaddwd"), 4: (_LLVM_UBSW, "vpmaddubsw")}


def registrar(target, lanes: int = LANES):
    """``register(group)`` for ``target``'s instructions on ``lanes`` output channels (what the pair-kernel
    schedule tensorizes with)."""
    import functools

    return functools.partial(register, vnni=supports_vnni(target), lanes=lanes)


def register(group: int = 2, vnni: bool = False, lanes: int = LANES) -> str:
    """Register the intrinsic for ``group`` input channels per lane (2: :data:`PMADDWD_I16`, 4:
    :data:`PMADDUBSW_U8`; with ``vnni`` :data:`VPDPWSSD_I16`, :data:`VPDPBUSD_U8`, on 16 ``lanes``
    :data:`VPDPWSSD_I16_ZMM`, :data:`VPDPBUSD_U8_ZMM`), once per process, and return its name."""
    from tvm.s_tir import TensorIntrin

    names = {
        (2, False, LANES): (PMADDWD_I16, _pmaddwd_8x2_i16),
        (4, False, LANES): (PMADDUBSW_U8, _pmaddubsw_8x4_u8),
        (2, True, LANES): (VPDPWSSD_I16, _vnni(2, LANES)),
        (4, True, LANES): (VPDPBUSD_U8, _vnni(4, LANES)),
        (2, True, 16): (VPDPWSSD_I16_ZMM, _vnni(2, 16)),
        (4, True, 16): (VPDPBUSD_U8_ZMM, _vnni(4, 16)),
    }
    name, combine = names[(group, vnni, lanes)]
    if name not in _registered:
        act = "int16" if group == 2 else "uint8"
        desc, impl = dot_func(group, act, lanes), dot_func(group, act, lanes, combine)
        TensorIntrin.register(name, desc, impl, override=True)
        _registered.add(name)
    return name


def dot_func(
    group: int,
    activation_dtype: str,
    lanes: int = LANES,
    combine: Callable | None = None,
    bind_weights: bool = True,
):
    """A dot intrinsic's PrimFunc on ``A`` (``group`` activation codes), ``B`` (``lanes`` x ``group`` int8
    weights) and ``C`` (``lanes`` int32 accumulators); these and :mod:`hanasc.targets.arm_int8`'s.

    Without ``combine``: the computation they all match, ``C[i] += sum_k A[k] * B[i, k]``, i < ``lanes``,
    k < ``group``, in int32. With it: the implementation, ``C = combine(C, a_vec, b_vec)`` on vectors, where
    ``a_vec`` is A's ``group`` codes (one 32-bit word) broadcast to every lane and ``b_vec`` the weights
    (widened to int16 for int16 activations), both of ``group * lanes`` elements. ``bind_weights`` False:
    ``b_vec`` is read inside the instruction's operands, not bound first (aarch64 ``sdot``, whose kernels
    keep a bound vector in a local buffer)."""
    from tvm.script import tirx as T

    operand = f"{'int16' if activation_dtype == 'int16' else 'int8'}x{group * lanes}"

    @T.prim_func(s_tir=True)
    def func(
        A: T.Buffer((group,), activation_dtype, offset_factor=1),
        B: T.Buffer((lanes, group), "int8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:group], B[0:lanes, 0:group])
            T.writes(C[0:lanes])
            if combine is None:
                for i in T.serial(0, lanes):
                    for k in T.serial(0, group):
                        with T.sblock("update"):
                            vi, vk = T.axis.remap("SR", [i, k])
                            C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")
            else:
                word = T.reinterpret(A.vload([0], f"{activation_dtype}x{group}"), dtype="int32")
                a_vec = T.reinterpret(T.broadcast(word, lanes), dtype=operand)
                if bind_weights:
                    b_vec = _dot_weights(B, operand)
                    C[T.ramp(T.int32(0), 1, lanes)] = combine(
                        C.vload([0], dtype=f"int32x{lanes}"), a_vec, b_vec
                    )
                else:
                    C[T.ramp(T.int32(0), 1, lanes)] = combine(
                        C.vload([0], dtype=f"int32x{lanes}"), a_vec, _dot_weights(B, operand)
                    )

    return func


def _dot_weights(weights, operand: str):
    """All of a dot intrinsic's int8 ``weights`` as one vector of the ``operand`` type (widened to int16)."""
    from tvm.script import tirx as T

    loaded = weights.vload([0, 0], dtype=f"int8x{operand.split('x')[1]}")
    return T.cast(loaded, operand) if operand.startswith("int16") else loaded


def _pmaddwd_8x2_i16(acc, a_vec, b_vec):
    """``C[i] += A[0] * B[i, 0] + A[1] * B[i, 1]`` for i < 8 (int32): A two int16 activations (loaded as one
    32-bit pair and broadcast), B 8 x 2 int8 weights (sign-extended to int16), one ``vpmaddwd``."""
    from tvm.script import tirx as T

    return acc + T.call_llvm_pure_intrin(
        T.llvm_lookup_intrinsic_id(_LLVM_INTRIN), a_vec, b_vec, dtype="int32x8"
    )


def _pmaddubsw_8x4_u8(acc, a_vec, b_vec):
    """``C[i] += sum_k A[k] * B[i, k]`` for i < 8, k < 4 (int32): A four non-negative activation codes
    (0..127, stored as uint8, broadcast as one 32-bit word), B 8 x 4 int8 weights; ``vpmaddubsw`` multiplies
    unsigned by signed bytes and adds adjacent products into int16 (at most 2 * 127 * 127 = 32258: never
    saturates for codes <= 127 and weights in -127..127), ``vpmaddwd`` by ones adds those pairs into int32.
    32 multiply-adds in two instructions, against 16 for :data:`PMADDWD_I16`."""
    from tvm.script import tirx as T

    return acc + T.call_llvm_pure_intrin(
        T.llvm_lookup_intrinsic_id(_LLVM_INTRIN),
        T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(_LLVM_UBSW), a_vec, b_vec, dtype="int16x16"),
        T.broadcast(T.int16(1), 16),
        dtype="int32x8",
    )


def _vnni(group: int, lanes: int) -> Callable:
    """``C[i] = vpdp(C[i], A, B[i])`` for i < ``lanes`` (int32; 8: ymm, 16: zmm), one AVX512-VNNI
    instruction: ``group`` 2, ``vpdpwssd`` (two int16 activations x two int8 weights widened to int16);
    ``group`` 4, ``vpdpbusd`` (four uint8 activations x four int8 weights). Both add into the accumulator in
    int32 without an int16 intermediate, so the sums are exact for any codes."""
    intrin = f"llvm.x86.avx512.{'vpdpwssd' if group == 2 else 'vpdpbusd'}.{32 * lanes}"

    def combine(acc, a_vec, b_vec):
        from tvm.script import tirx as T

        return T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id(intrin), acc, a_vec, b_vec, dtype=f"int32x{lanes}"
        )

    return combine


def register_depthwise(vpermb: bool = True) -> str:
    """Register the four-tap depthwise intrinsic once per process and return its name: ``C[j] += sum_t
    A[t, j] * B[j, t]`` for 16 channels ``j`` and 4 taps ``t`` (int32), A four adjacent pixels of a
    16-channel block (64 bytes, unsigned codes), B the weights' 16 x 4 bytes. The pixels are turned into
    16 groups of a channel's four taps by one ``vpermb`` (``vpermb``: :data:`VPERMB_DPBUSD_DW`, AVX512-VBMI)
    or by ``vpermd`` (each 128-bit lane gathers four channels of the four pixels) and an in-lane
    ``vpshufb`` (:data:`VPERMD_DPBUSD_DW`, AVX512-BW); one 512-bit ``vpdpbusd`` sums them into the
    accumulator."""
    from tvm.s_tir import TensorIntrin

    name = VPERMB_DPBUSD_DW if vpermb else VPERMD_DPBUSD_DW
    if name not in _registered:
        TensorIntrin.register(
            name, _depthwise_func(vpermb, impl=False), _depthwise_func(vpermb), override=True
        )
        _registered.add(name)
    return name


def _depthwise_func(vpermb: bool, impl: bool = True):
    """:func:`register_depthwise`'s description (``impl`` False: the scalar loops) or implementation."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def func(
        A: T.Buffer((4, 16), "uint8", offset_factor=1),
        B: T.Buffer((16, 4), "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4, 0:16], B[0:16, 0:4])
            T.writes(C[0:16])
            if impl:
                C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(_LLVM_DPBUSD_512),
                    C.vload([0], dtype="int32x16"),
                    _taps(A.vload([0, 0], "uint8x64"), vpermb),
                    B.vload([0, 0], dtype="int8x64"),
                    dtype="int32x16",
                )
            else:
                for j in T.serial(0, 16):
                    for t in T.serial(0, 4):
                        with T.sblock("update"):
                            vj, vt = T.axis.remap("SR", [j, t])
                            C[vj] = C[vj] + T.cast(A[vt, vj], "int32") * T.cast(B[vj, vt], "int32")

    return func


def _transpose_index(dtype: str, lanes: int, shift: int, mask: int):
    """The constant vector ``i -> (i & 3) << shift | (i & mask) >> 2`` for ``i < lanes``: read by a
    permutation, a transpose of groups of four (``shift`` 4: 4 x 16 bytes; 2: 4 x 4 within each group of 16
    when ``mask`` is 15)."""
    from tvm import tirx

    def splat(value: int):
        return tirx.Broadcast(tirx.const(value, dtype), lanes)

    lane = tirx.Ramp(tirx.const(0, dtype), tirx.const(1, dtype), lanes)
    low = tirx.shift_left(tirx.bitwise_and(lane, splat(3)), splat(shift))
    return tirx.bitwise_or(low, tirx.shift_right(tirx.bitwise_and(lane, splat(mask)), splat(2)))


def _taps(pixels, vpermb: bool):
    """Four pixels of 16 channels (``uint8x64``, pixel-major) as 16 channels of 4 taps (``int8x64``)."""
    from tvm import tirx

    if vpermb:  # byte 4 * j + t <- byte 16 * t + j
        data = tirx.reinterpret("int8x64", pixels)
        return tirx.call_llvm_pure_intrin(
            "int8x64", _LLVM_VPERMB_512, data, _transpose_index("int8", 64, 4, 63)
        )
    # lane L gathers dword L of each pixel (channels 4L..4L+3), then each lane's 4 x 4 bytes are transposed
    words = tirx.reinterpret("int32x16", pixels)
    gathered = tirx.call_llvm_pure_intrin(
        "int32x16", _LLVM_VPERMD_512, words, _transpose_index("int32", 16, 2, 15)
    )
    gathered = tirx.reinterpret("int8x64", gathered)
    return tirx.call_llvm_pure_intrin(
        "int8x64", _LLVM_PSHUFB_512, gathered, _transpose_index("int8", 64, 2, 15)
    )
