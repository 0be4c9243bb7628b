"""Default CPU schedules for channel-blocked convolutions (no tuning, no device needed).

TVM 0.27 has no CPU schedule library: an untuned convolution is a naive loop nest whose innermost loop
is the reduction, which LLVM cannot vectorize. :class:`BlockedConv` is a dlight rule (applied with
``dlight.ApplyDefaultSchedule`` to every fused PrimFunc the tuning database has no record for) that
gives the ``NCHW16c`` convolutions of :mod:`hanasc.targets.lowering.blocked_layout` the classic
direct-convolution
schedule: a register tile of ``x_tile`` output pixels x the channel block accumulated in a local buffer,
the 16-channel block vectorized (one AVX-512 register, four NEON registers), the tile's pixels unrolled,
the reduction outside them, and the fused epilogue (bias, ReLU6, residual add) applied to the tile as it
is written back. Any kernel the rule does not recognise is left as it was.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

from tvm import DataType, s_tir
from tvm.target import Target

from hanasc.targets import arm_int8, x86_int8
from hanasc.targets.cpu_rules import BlockRule, runs_parallel, vectorize_injective
from hanasc.targets.isa import (
    depthwise_vpermb,
    supports_pair_kernels,
    supports_quad_depthwise,
    supports_sdot,
    vector_registers,
)
from hanasc.targets.lowering.conv_compute import (
    DATA_CONVERT,
    DOT_CROP,
    PAIR_CONV,
    QUAD_CONV,
    SDOT_CONV,
    WEIGHT_UNPACK,
    divisors_fall_short,
    x_tile,
)
from hanasc.targets.lowering.quad_depthwise import QUAD_DEPTHWISE

CONV_BLOCKS = ("conv2d_nchwc", "depthwise_conv2d_nchwc")
OUT_BLOCKED = "conv2d_nchw_oblocked"  # an NCHW conv computed in output-channel blocks (blocked_layout)
X_TILE = 8  # output pixels per register tile of BlockedConv (pipelines.layout_blocks sizes blocks by it)


def float_conv_tile(width: int, limit: int = 8) -> int:
    """The output-pixel tile of a float (or widened int) direct conv: :func:`x_tile`, unless no divisor
    of the width reaches ``limit // 2`` (prime widths such as 11, 13; 26): then ``limit`` pixels, the last
    tile cut short by a predicate. 1 thread, Zen 4, fp32 3x3 + 1x1 + depthwise stack, 64-128 channels:
    width 11 0.63 -> 0.21 ms, 13 0.88 -> 0.27, 26 1.91 -> 1.15, 9 0.17 -> 0.16 (onnxruntime 0.19, 0.25,
    1.02, 0.13); SqueezeNet 1.1 fp32 (its 13x13 stage) 21.4 -> 9.9 ms. The int8 dot-product kernels do
    not take a predicate (tensorized under one, SqueezeNet W8A8 went 7.6 -> 39 ms): they compute whole
    tiles past the edge instead (:func:`hanasc.targets.lowering.conv_compute.dot_conv_width`)."""
    return limit if divisors_fall_short(width, limit) else x_tile(width, limit)


class BlockedConv(BlockRule):
    """Register-tiled, vectorized direct convolution for ``conv2d_nchwc`` / ``depthwise_conv2d_nchwc``."""

    def __init__(self, x_tile_limit: int = X_TILE, min_parallel_cores: int = 4) -> None:
        self.x_tile_limit = x_tile_limit
        self.min_parallel_cores = min_parallel_cores

    def parallel(self, target: Target) -> bool:
        return runs_parallel(target, self.min_parallel_cores)

    def schedule(self, sch: s_tir.Schedule, blocks: list, target: Target) -> bool:
        names = [sch.get(b).name_hint for b in blocks]
        convs = [i for i, name in enumerate(names) if name.startswith((*CONV_BLOCKS, OUT_BLOCKED))]
        if len(convs) != 1:
            return False
        schedule = _schedule_out_blocked if names[convs[0]].startswith(OUT_BLOCKED) else _schedule
        if names[convs[0]].startswith(QUAD_DEPTHWISE):
            if not supports_quad_depthwise(target):
                return False
            intrinsic = x86_int8.register_depthwise(depthwise_vpermb(target))
            schedule = functools.partial(_schedule_quad_depthwise, intrinsic=intrinsic)
        elif names[convs[0]].startswith((PAIR_CONV, QUAD_CONV)):
            if not supports_pair_kernels(target):
                return False
            out_block = int(sch.get(sch.get_loops(blocks[convs[0]])[4]).extent)
            lanes = x86_int8.dot_lanes(target, out_block)
            schedule = functools.partial(
                _schedule_pairs,
                lanes=lanes,
                register=x86_int8.registrar(target, lanes),
                accumulators=x86_int8.accumulators(target, lanes),
            )
        elif names[convs[0]].startswith(SDOT_CONV):
            if not supports_sdot(target):
                return False
            schedule = functools.partial(_schedule_pairs, lanes=arm_int8.LANES, register=arm_int8.register)
        if schedule in (_schedule, _schedule_out_blocked):
            schedule = functools.partial(schedule, registers=vector_registers(target))
        schedule(_ConvKernel(sch, blocks, convs[0], self.x_tile_limit, self.parallel(target)))
        return True


@dataclass(frozen=True)
class _ConvKernel:
    """One fused conv kernel as :class:`BlockedConv` schedules it: ``blocks[index]`` the conv, the blocks
    before it its producers (padding, weight repacking), those after it its consumers (the epilogue)."""

    sch: s_tir.Schedule
    blocks: list
    index: int
    x_tile_limit: int
    parallel: bool

    @property
    def conv(self):
        return self.blocks[self.index]

    @property
    def producers(self) -> list:
        return self.blocks[: self.index]

    @property
    def consumers(self) -> list:
        return self.blocks[self.index + 1 :]

    def writeback(self) -> tuple:
        """``(writeback, epilogue)``: the conv's write-back block and the element-wise ops folded into it."""
        return _writeback(self.sch, self.conv, self.consumers)


def _schedule(kernel: _ConvKernel, registers: tuple[int, int] = (8, 16)) -> None:
    """The direct-convolution schedule of a blocked conv (see the module docstring). The padding of an fp32
    depthwise conv is inlined (read in place, the border through a select: EfficientNet-Lite0 fp32 16.7 ->
    15.5 ms, 1 thread, AVX2); other convs pad in a separate vectorized pass (int8 depthwise measured 0.4 ms
    slower inlined). ``registers``: the target's (vector lanes, vector registers), for
    :func:`_row_tile`."""
    sch, conv = kernel.sch, kernel.conv
    writeback, epilogue = kernel.writeback()
    loops = sch.get_loops(conv)
    n, oc, y, x, ob, *reduce = loops
    width = int(sch.get(x).extent)
    tile = float_conv_tile(width, kernel.x_tile_limit)
    if not sch.get(conv).name_hint.startswith("depthwise"):
        tile = _row_tile(width, int(sch.get(ob).extent), kernel.x_tile_limit, registers) or tile
    xo, xi = sch.split(x, [None, tile])
    first, second = (y, oc) if _rows_outer(sch, conv) else (oc, y)
    sch.reorder(n, first, second, xo, *reduce, xi, ob)
    outer = sch.fuse(n, first, second)
    if kernel.parallel:
        sch.parallel(outer)
    inline_padding = sch.get(conv).name_hint.startswith("depthwise") and "float" in str(
        sch.get(conv).writes[0].source.dtype
    )
    for block in kernel.producers:
        if inline_padding:  # fp32 depthwise: read the input in place, the border by a select
            sch.compute_inline(block)
        else:  # a separate, vectorized pass (per-row padding measured slower)
            sch.vectorize(sch.get_loops(block)[-1])
    _write_back_at(sch, writeback, epilogue, xo)
    sch.unroll(xi)
    sch.vectorize(ob)
    sch.vectorize(sch.get_loops(writeback)[-1])
    init = sch.decompose_reduction(conv, reduce[0])
    sch.vectorize(sch.get_loops(init)[-1])


def _row_tile(width: int, block: int, x_tile_limit: int, registers: tuple[int, int]) -> int | None:
    """The whole output row as the register tile of a standard conv whose width no divisor tiles well
    (:func:`divisors_fall_short`: 11, 13) when its accumulators fit half the register file (AVX-512: up to
    16 pixels of a 16-channel block), else None. SqueezeNet 1.1 fp32 (13x13 stage), 1 thread, Zen 4: 0.88x
    (against 8-pixel tiles, the last one cut short); other widths keep their tiles (16-pixel tiles measured
    1.01x on EfficientNet-Lite0 fp32, 0.99x on ResNet-18)."""
    lanes, count = registers
    fits = width * max(1, block // lanes) <= count // 2
    return width if fits and divisors_fall_short(width, x_tile_limit) else None


def _schedule_pairs(
    kernel: _ConvKernel, lanes: int, register: Callable[[int], str], accumulators: int = 8
) -> None:
    """A ``conv2d_nchwc_int_pairs`` kernel (:func:`hanasc.targets.lowering.conv_compute.pair_conv2d`): a
    register
    tile of ``accumulators`` registers of ``lanes`` output channels (8 ymm: 8 pixels of an 8-channel
    block, 4 of a 16-channel one; 16 ymm, twice the pixels; 8 zmm: 8 pixels of a 16-channel block), the
    reduction outside it, every 8 output channels x 2 input channels one ``vpmaddwd``
    (:data:`hanasc.targets.x86_int8.PMADDWD_I16`), the fused requantization applied as the tile is written
    back. Output widths the limit does not divide (7, 14 with 16 channels) use a tile of up to 8 pixels,
    one group of 8 output channels at a time. Measured on EfficientNet-Lite0 W8A8 (AVX2, 8-channel blocks,
    1 thread): 4-pixel tiles 14.2 ms, 8-pixel tiles 13.4 ms. The same schedule serves the quad kernels
    and, with ``lanes=4`` and :data:`hanasc.targets.arm_int8.SDOT_I8`, the aarch64 ``sdot`` kernels:
    ``register(group)`` registers the intrinsic for ``group`` input channels a lane; ``accumulators``: the
    vector registers the tile accumulates in (:func:`hanasc.targets.x86_int8.accumulators`)."""
    sch, conv = kernel.sch, kernel.conv
    writeback, epilogue = kernel.writeback()
    n, oc, y, x, ob, rco, ry, rx, rci, k = sch.get_loops(conv)
    width = int(sch.get(x).extent)
    limit = max(1, accumulators * lanes // int(sch.get(ob).extent))  # pixels a register tile holds
    tile, oc_outer = x_tile(width, limit), False
    if tile < min(limit, width):
        tile, oc_outer = x_tile(width, 8), True
    xo, xi = sch.split(x, [None, tile])
    oo, oi = sch.split(ob, [None, lanes])
    first, second = (y, oc) if _rows_outer(sch, conv) else (oc, y)
    if oc_outer:
        sch.reorder(n, first, second, xo, oo, rco, ry, rx, rci, xi, oi, k)
    else:
        sch.reorder(n, first, second, xo, rco, ry, rx, rci, oo, xi, oi, k)
    outer = sch.fuse(n, first, second)
    if kernel.parallel:
        sch.parallel(outer)
    for (
        block
    ) in kernel.producers:  # padding (KxK convs only), 4/2-bit weights unpacked (conv_compute.unpack_tiles)
        if sch.get(block).name_hint.startswith(WEIGHT_UNPACK):
            _unpack_at(sch, block, conv, rci)
        else:
            sch.vectorize(sch.get_loops(block)[-1])
    _write_back_at(sch, writeback, epilogue, xo)
    init = sch.decompose_reduction(conv, rco)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(oi, register(int(sch.get(k).extent)))
    sch.unroll(xi)
    if not oc_outer:
        sch.unroll(oo)
    sch.vectorize(sch.get_loops(writeback)[-1])


def _schedule_quad_depthwise(kernel: _ConvKernel, intrinsic: str) -> None:
    """A :func:`hanasc.targets.lowering.quad_depthwise.quad_depthwise_conv2d` kernel: a register tile of up to
    ``x_tile_limit`` output pixels of one 16-channel block (one 512-bit accumulator each), the kernel rows
    and tap groups outside it, each pixel's four taps one ``intrinsic`` call (a transpose + ``vpdpbusd``),
    the padding (and shift) a vectorized pass of its own, the offset and the fused requantization applied
    as the tile is written back."""
    sch, conv = kernel.sch, kernel.conv
    writeback, epilogue = kernel.writeback()
    n, oc, y, x, ob, ry, rxo, rxi = sch.get_loops(conv)
    xo, xi = sch.split(x, [None, x_tile(int(sch.get(x).extent), kernel.x_tile_limit)])
    sch.reorder(n, oc, y, xo, ry, rxo, xi, ob, rxi)
    outer = sch.fuse(n, oc, y)
    if kernel.parallel:
        sch.parallel(outer)
    for block in kernel.producers:
        sch.vectorize(sch.get_loops(block)[-1])
    _write_back_at(sch, writeback, epilogue, xo)
    init = sch.decompose_reduction(conv, ry)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(ob, intrinsic)
    sch.unroll(xi)
    sch.vectorize(sch.get_loops(writeback)[-1])


def _write_back_at(sch: s_tir.Schedule, writeback, epilogue, loop) -> None:
    """The register tile's write-back (and the epilogue loop :func:`_writeback` left, vectorized) under
    ``loop``, the tile loop."""
    sch.reverse_compute_at(writeback, loop)
    if epilogue is not None:
        sch.reverse_compute_at(epilogue, loop)
        sch.vectorize(sch.get_loops(epilogue)[-1])


def _unpack_at(sch: s_tir.Schedule, unpack, conv, loop) -> None:
    """Unpack each weight tile where the dot products read it: the tile's ``ob x g`` values, one vector
    shift and mask, inside the reduction ``loop``, reused by the register tile's pixels."""
    depth = [sch.get_sref(outer).same_as(sch.get_sref(loop)) for outer in sch.get_loops(conv)].index(True) + 1
    sch.compute_at(unpack, loop)
    inner = sch.get_loops(unpack)[depth:]
    sch.vectorize(sch.fuse(*inner) if len(inner) > 1 else inner[0])


ROWS_OUTER_WEIGHT_BYTES = 256 * 1024  # half the L2 of a Zen 3 or Cortex-A78 core


def _rows_outer(sch: s_tir.Schedule, conv) -> bool:
    """Whether to run a conv's output rows outside its output-channel blocks: one input row (all its
    channels) is then read once for every block instead of the whole input once per block, which pays
    when the weights, read once per row, stay in L2 (EfficientNet-Lite0 fp32, 1 thread: input 112 x 112 x
    16 was streamed 12 times by the 16 -> 96 expand; one process, 60 interleaved runs: fp32 15.93 ->
    15.75 ms, W8A8 10.78 -> 10.62 ms on a quiet machine, more where the cache is shared with other work).
    Depthwise convs read only their own channels: blocks stay outside."""
    stmt = sch.get(conv)
    if stmt.name_hint.startswith("depthwise") or len(stmt.reads) < 2:
        return False
    weight = stmt.reads[1].source
    size = 1
    for dim in weight.shape:
        size *= int(dim)
    return size * max(1, DataType(str(weight.dtype)).bits // 8) <= ROWS_OUTER_WEIGHT_BYTES


def _writeback(sch: s_tir.Schedule, conv, consumers: list):
    """The conv's register tile written back through a local stage, with its element-wise consumers (bias,
    clip, hardswish, residual add, requantization) folded into the last one. That one is applied to the
    tile as it is written back when it reads the conv output once, else (hardswish) it stays a loop of
    its own per tile; one that spreads the conv's output over a larger tensor (squeeze-excite's scale,
    before: an unscheduled kernel, 0.23 ms instead of 0.01 on MobileNetV3-Small) runs after the conv, as
    a vectorized loop. Returns (writeback block, the per-tile loop's block or None)."""
    *middle, last = consumers or [None]
    # a conv computed wider than its output (conv_compute.dot_conv_width): the epilogue keeps its own loop,
    # which compute-at clips to the output's columns (inlined, it would write the extra ones past the row)
    cropped = any(sch.get(block).name_hint == DOT_CROP for block in consumers)
    for block in middle:
        sch.compute_inline(block)
    # a broadcasting epilogue (squeeze-excite: a conv on the pooled 1x1 vector, its scale applied to the
    # whole map) covers more than the conv's tile: a vectorized loop of its own after the conv
    spread = last is not None and not cropped and _written_shape(sch, last) != _written_shape(sch, conv)
    # counted before cache_write: afterwards the conv writes the local stage, which ``last`` does not read
    reads_once = (
        last is not None and not cropped and _loads_of(sch, last, sch.get(conv).writes[0].source) == 1
    )
    writeback = sch.cache_write(conv, 0, "local")
    if spread:
        vectorize_injective(sch, last)
        return writeback, None
    if reads_once:
        sch.reverse_compute_inline(last)
        return writeback, None
    return writeback, last


def _written_shape(sch: s_tir.Schedule, block) -> list[int]:
    return [int(d) for d in sch.get(block).writes[0].source.shape]


def _loads_of(sch: s_tir.Schedule, block, buffer) -> int:
    """How many times ``block``'s body reads ``buffer`` (counted in its printed body: 0.27 exposes no
    TIR visitor to Python)."""
    return len(re.findall(rf"\b{re.escape(buffer.name)}\[", sch.get(block).body.script()))


def _schedule_out_blocked(kernel: _ConvKernel, registers: tuple[int, int] = (8, 16)) -> None:
    """An NCHW convolution lowered as ``weight_pack`` -> ``conv2d_nchw_oblocked`` -> ``conv2d_nchw_unblock``
    (:func:`hanasc.targets.lowering.conv_compute.out_blocked_conv2d`): the blocked schedule on a local tile,
    the
    copy back to NCHW (with the fused epilogue) vectorized along the tile's pixels. The tile's
    accumulators fill half the register file (``registers``: vector lanes, registers): AVX2 4 pixels of a
    16-channel block, AVX-512 8 (Zen 4, the 3 -> 32 3x3/2 RGB stem at 224: 278 -> 265 us)."""
    sch, conv = kernel.sch, kernel.conv
    *middle, last = kernel.consumers
    for block in middle:  # the unblocking copy, bias, clip, ...: folded into the last element-wise op
        sch.compute_inline(block)
    n, oc, y, x, ob, *reduce = sch.get_loops(conv)
    lanes, count = registers
    pixels = max(1, lanes * count // 2 // int(sch.get(ob).extent))
    tile = x_tile(int(sch.get(x).extent), min(kernel.x_tile_limit, pixels))
    xo, xi = sch.split(x, [None, tile])
    sch.reorder(n, oc, y, xo, *reduce, xi, ob)
    outer = sch.fuse(n, oc, y)
    if kernel.parallel:
        sch.parallel(outer)
    for block in kernel.producers:  # padding and the weight repacking: separate passes over small buffers
        if sch.get(block).name_hint == DATA_CONVERT:  # int8 codes made float as they are padded
            sch.compute_inline(block)
        else:
            vectorize_injective(sch, block)
    # the copy back to NCHW per output row, along the row: per tile it stored each channel's few pixels
    # to its own plane (byte scatters 4 KiB apart, 18x slower on a 1x1 3 -> 16 conv at 64x64)
    sch.reverse_compute_at(last, outer)
    sch.set_scope(conv, 0, "local")
    vectorize_injective(sch, last, tail=True)
    sch.unroll(xi)
    sch.vectorize(ob)
    init = sch.decompose_reduction(conv, reduce[0])
    sch.vectorize(sch.get_loops(init)[-1])
