"""Default CPU schedules for channel-blocked convolutions (no tuning, no device needed).

TVM 0.27 has no CPU schedule library: an untuned convolution is a naive loop nest whose innermost loop
is the reduction, which LLVM cannot vectorize. :class:`BlockedConv` is a dlight rule (applied with
``dlight.ApplyDefaultSchedule`` to every fused PrimFunc the tuning database has no record for) that
gives the ``NCHW16c`` convolutions of :mod:`hanasc.passes.blocked_layout` the classic direct-convolution
schedule: a register tile of ``x_tile`` output pixels x the channel block accumulated in a local buffer,
the 16-channel block vectorized (one AVX-512 register, four NEON registers), the tile's pixels unrolled,
the reduction outside them, and the fused epilogue (bias, ReLU6, residual add) applied to the tile as it
is written back. Any kernel the rule does not recognise is left as it was.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable

from tvm import DataType, s_tir, tirx
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.target import Target

from hanasc.passes.conv_compute import (
    DOT_CROP,
    PAIR_CONV,
    QUAD_CONV,
    SDOT_CONV,
    divisors_fall_short,
    x_tile,
)

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
    tiles past the edge instead (:func:`hanasc.passes.conv_compute.dot_conv_width`)."""
    return limit if divisors_fall_short(width, limit) else x_tile(width, limit)


def runs_parallel(target: Target, min_parallel_cores: int) -> bool:
    """Whether to run a kernel's rows on the thread pool: on targets with at least ``min_parallel_cores``
    cores (or an unknown count). On the 2-vCPU host where this was measured, parallel kernels cost
    EfficientNet-Lite0 4 ms at 1 thread (pool workers spin between kernels) and gained nothing at 2."""
    cores = target.attrs.get("num-cores")
    return cores is None or int(cores) >= min_parallel_cores


def _root_schedule(rule: CPUScheduleRule, func, target: Target) -> tuple[s_tir.Schedule, list] | None:
    """A schedule of ``func`` and the blocks under its root, or None when ``rule`` does not apply (not a
    PrimFunc, another target, no root block)."""
    if not isinstance(func, tirx.PrimFunc) or not rule.is_target_available(target):
        return None
    sch = s_tir.Schedule(func)
    try:
        return sch, sch.get_child_blocks(sch.get_sblock("root"))
    except Exception:  # no root block: not a kernel these rules know
        return None


class _BlockRule(CPUScheduleRule):
    """A rule that schedules the blocks under a PrimFunc's root: :meth:`schedule` says whether it did; a
    kernel it declines, or one whose scheduling raises (a shape it does not handle), is left as it was."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool) -> s_tir.Schedule | None:
        root = _root_schedule(self, func, target)
        if root is None:
            return None
        sch, blocks = root
        try:
            done = self.schedule(sch, blocks, target)
        except Exception:  # a kernel of a structure the rule does not handle: leave it
            return None
        return sch if done else None

    def schedule(self, sch: s_tir.Schedule, blocks: list, target: Target) -> bool:
        raise NotImplementedError


class BlockedConv(_BlockRule):
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
        if names[convs[0]].startswith((PAIR_CONV, QUAD_CONV)):
            from hanasc.targets import x86_int8

            if not x86_int8.supports_pair_kernels(target):
                return False
            register = x86_int8.registrar(target)
            schedule = functools.partial(_schedule_pairs, lanes=x86_int8.LANES, register=register)
        elif names[convs[0]].startswith(SDOT_CONV):
            from hanasc.targets import arm_int8

            if not arm_int8.supports_sdot(target):
                return False
            schedule = functools.partial(_schedule_pairs, lanes=arm_int8.LANES, register=arm_int8.register)
        schedule(sch, blocks, convs[0], self.x_tile_limit, self.parallel(target))
        return True


def _schedule(sch: s_tir.Schedule, blocks: list, conv_index: int, x_tile_limit: int, parallel: bool) -> None:
    """The direct-convolution schedule of a blocked conv (see the module docstring). The padding of an fp32
    depthwise conv is inlined (read in place, the border through a select: EfficientNet-Lite0 fp32 16.7 ->
    15.5 ms, 1 thread, AVX2); other convs pad in a separate vectorized pass (int8 depthwise measured 0.4 ms
    slower inlined)."""
    conv = blocks[conv_index]
    producers = blocks[:conv_index]
    writeback, epilogue = _writeback(sch, conv, blocks[conv_index + 1 :])
    loops = sch.get_loops(conv)
    n, oc, y, x, ob, *reduce = loops
    width = int(sch.get(x).extent)
    xo, xi = sch.split(x, [None, float_conv_tile(width, x_tile_limit)])
    first, second = (y, oc) if _rows_outer(sch, conv) else (oc, y)
    sch.reorder(n, first, second, xo, *reduce, xi, ob)
    outer = sch.fuse(n, first, second)
    if parallel:
        sch.parallel(outer)
    inline_padding = sch.get(conv).name_hint.startswith("depthwise") and "float" in str(
        sch.get(conv).writes[0].source.dtype
    )
    for block in producers:
        if inline_padding:  # fp32 depthwise: read the input in place, the border by a select
            sch.compute_inline(block)
        else:  # a separate, vectorized pass (per-row padding measured slower)
            sch.vectorize(sch.get_loops(block)[-1])
    sch.reverse_compute_at(writeback, xo)
    if epilogue is not None:
        sch.reverse_compute_at(epilogue, xo)
        sch.vectorize(sch.get_loops(epilogue)[-1])
    sch.unroll(xi)
    sch.vectorize(ob)
    sch.vectorize(sch.get_loops(writeback)[-1])
    init = sch.decompose_reduction(conv, reduce[0])
    sch.vectorize(sch.get_loops(init)[-1])


def _schedule_pairs(
    sch: s_tir.Schedule,
    blocks: list,
    conv_index: int,
    _x_tile_limit: int,
    parallel: bool,
    lanes: int,
    register: Callable[[int], str],
) -> None:
    """A ``conv2d_nchwc_int_pairs`` kernel (:func:`hanasc.passes.conv_compute.pair_conv2d`): a register
    tile of 8 ymm accumulators (8 pixels of an 8-channel block, 4 of a 16-channel one), the reduction
    outside it, every 8 output channels x 2 input channels one ``vpmaddwd``
    (:data:`hanasc.targets.x86_int8.PMADDWD_I16`), the fused requantization applied as the tile is written
    back. Output widths the limit does not divide (7, 14 with 16 channels) use a tile of up to 8 pixels,
    one group of 8 output channels at a time. Measured on EfficientNet-Lite0 W8A8 (AVX2, 8-channel blocks,
    1 thread): 4-pixel tiles 14.2 ms, 8-pixel tiles 13.4 ms. The same schedule serves the quad kernels
    and, with ``lanes=4`` and :data:`hanasc.targets.arm_int8.SDOT_I8`, the aarch64 ``sdot`` kernels:
    ``register(group)`` registers the intrinsic for ``group`` input channels a lane."""
    conv = blocks[conv_index]
    producers = blocks[:conv_index]
    writeback, epilogue = _writeback(sch, conv, blocks[conv_index + 1 :])
    n, oc, y, x, ob, rco, ry, rx, rci, k = sch.get_loops(conv)
    width = int(sch.get(x).extent)
    limit = max(1, 8 * lanes // int(sch.get(ob).extent))  # 8 vector accumulators
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
    if parallel:
        sch.parallel(outer)
    for block in producers:  # padding (KxK convs only)
        sch.vectorize(sch.get_loops(block)[-1])
    sch.reverse_compute_at(writeback, xo)
    if epilogue is not None:
        sch.reverse_compute_at(epilogue, xo)
        sch.vectorize(sch.get_loops(epilogue)[-1])
    init = sch.decompose_reduction(conv, rco)
    sch.vectorize(sch.get_loops(init)[-1])
    sch.tensorize(oi, register(int(sch.get(k).extent)))
    sch.unroll(xi)
    if not oc_outer:
        sch.unroll(oo)
    sch.vectorize(sch.get_loops(writeback)[-1])


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


def _schedule_out_blocked(
    sch: s_tir.Schedule, blocks: list, conv_index: int, x_tile_limit: int, parallel: bool
) -> None:
    """An NCHW convolution lowered as ``weight_pack`` -> ``conv2d_nchw_oblocked`` -> ``conv2d_nchw_unblock``
    (:func:`hanasc.passes.conv_compute.out_blocked_conv2d`): the blocked schedule on a local tile, the
    copy back to NCHW (with the fused epilogue) vectorized along the tile's pixels."""
    conv = blocks[conv_index]
    producers, consumers = blocks[:conv_index], blocks[conv_index + 1 :]
    *middle, last = consumers
    for block in middle:  # the unblocking copy, bias, clip, ...: folded into the last element-wise op
        sch.compute_inline(block)
    n, oc, y, x, ob, *reduce = sch.get_loops(conv)
    # at most 64 accumulator lanes: 8 AVX2 registers of 8 floats (16-channel blocks: 4 pixels)
    tile = x_tile(int(sch.get(x).extent), min(x_tile_limit, max(1, 64 // int(sch.get(ob).extent))))
    xo, xi = sch.split(x, [None, tile])
    sch.reorder(n, oc, y, xo, *reduce, xi, ob)
    outer = sch.fuse(n, oc, y)
    if parallel:
        sch.parallel(outer)
    for block in producers:  # padding and the weight repacking: separate passes over small buffers
        vectorize_injective(sch, block)
    # the copy back to NCHW per output row, along the row: per tile it stored each channel's few pixels
    # to its own plane (byte scatters 4 KiB apart, 18x slower on a 1x1 3 -> 16 conv at 64x64)
    sch.reverse_compute_at(last, outer)
    sch.set_scope(conv, 0, "local")
    vectorize_injective(sch, last)
    sch.unroll(xi)
    sch.vectorize(ob)
    init = sch.decompose_reduction(conv, reduce[0])
    sch.vectorize(sch.get_loops(init)[-1])


def vectorize_injective(sch: s_tir.Schedule, block, parallel: bool = False) -> None:
    """The innermost loop of a spatial ``block`` vectorized: split by 16 or 8 lanes when one divides it,
    whole when it is short (<= 64); a longer loop neither divides stays scalar. ``parallel``: the
    outermost loop on the thread pool."""
    loops = sch.get_loops(block)
    inner = loops[-1]
    extent = int(sch.get(inner).extent)
    width = next((w for w in (16, 8) if extent % w == 0), extent if extent <= 64 else None)
    if parallel and len(loops) > 1:
        sch.parallel(loops[0])
    if width is None or width == 1:
        return
    if extent > width:
        inner = sch.split(inner, [None, width])[1]
    sch.vectorize(inner)


class Injective(_BlockRule):
    """Element-wise / injective kernels (a standalone activation quantize, ``layout_transform``): each
    block in the order that keeps its stores contiguous (:func:`in_output_order`), its innermost loop
    vectorized (:func:`vectorize_injective`), producers inlined into their consumers where possible; on
    the thread pool only where :func:`runs_parallel` says so."""

    def __init__(self, min_parallel_cores: int = 4) -> None:
        self.min_parallel_cores = min_parallel_cores

    def schedule(self, sch: s_tir.Schedule, blocks: list, target: Target) -> bool:
        if not blocks or not all(_is_spatial(sch, b) for b in blocks):
            return False
        parallel = runs_parallel(target, self.min_parallel_cores)
        for block in blocks[:-1]:
            with contextlib.suppress(Exception):  # an output, or read twice: its own loop
                sch.compute_inline(block)
        for block in sch.get_child_blocks(sch.get_sblock("root")):
            in_output_order(sch, block)
            vectorize_injective(sch, block, parallel)
        return True


def in_output_order(sch: s_tir.Schedule, block) -> bool:
    """Iterate a single-store spatial ``block`` in its output buffer's order when the output's innermost
    axis is shorter than the loop nest's innermost one; True when the block was re-laid.

    TE writes a ``layout_transform`` as loops over its *input*: ``NCHW16c -> NCHW8c`` then stores each
    16-lane vector to two places (scalarized), ``NCHW -> NCHW16c`` scatters 16 pixels to 16 places. In the
    output's order the 8 (16) lanes are contiguous stores. ``NCHW8c -> NCHW16c`` keeps the input's order
    (8 lanes contiguous on both sides). EfficientNet-Lite0 W8A8 (1 thread, AVX-512, 9 transforms): 0.645 ->
    0.177 ms in all."""
    stmt = sch.get(block)
    store = stmt.body
    if not isinstance(store, tirx.BufferStore) or not stmt.iter_vars:
        return False
    variables = [iv.var for iv in stmt.iter_vars]
    if int(store.buffer.shape[-1]) >= int(stmt.iter_vars[-1].dom.extent):
        return False  # the input's innermost run is the shorter one: its order keeps both sides contiguous
    try:
        sch.transform_block_layout(block, tirx.IndexMap(variables, list(store.indices), None))
    except Exception:  # not a bijective affine map (padding, a reshape): keep the input order
        return False
    return True


def _is_spatial(sch: s_tir.Schedule, block) -> bool:
    """Whether ``block`` has only spatial iteration variables, each under a loop of its own."""
    stmt = sch.get(block)
    loops = sch.get_loops(block)
    own = all(len(sch.get_child_blocks(loop)) == 1 for loop in loops)
    return own and all(int(v.iter_type) == tirx.IterVar.DataPar for v in stmt.iter_vars)


def _reduction_lanes(sch: s_tir.Schedule, stmt, last_loop, n_spatial: int) -> int | None:
    """The vector of a :class:`ChannelBlockReduction`: the whole channel block when it is the last axis
    of input and output (at most 64 lanes); else (an NCHW pool, its reads strided along the row) the
    widest divisor of the last output axis up to 16, at least 4; None: not this rule's kernel."""
    extent = int(sch.get(last_loop).extent)
    lane_var = stmt.iter_vars[n_spatial - 1].var
    if all(_is_var(region[-1].min, lane_var) for region in (stmt.writes[0].region, stmt.reads[0].region)):
        return extent if extent <= 64 else None
    if len(stmt.reads) > 1:  # an NCHW conv (a depthwise one on RGB channels), not a pool: its border select
        return None  # per lane made it 10x slower than LLVM's own loop (3 x 64 x 64, 3x3: 41 vs 4.3 us)
    lanes = x_tile(extent, 16)
    return lanes if lanes >= 4 else None


class ChannelBlockReduction(_BlockRule):
    """A reduction over spatial axes of a channel-blocked tensor (the global average pool of a
    squeeze-excite block or a classifier head: ``mean`` over H, W of ``NCHW8c``; a max pool, its padding
    read in place), with its element-wise epilogue (divide, requantize): the channel block is the vector,
    accumulated in registers while the reduction loops run outside it, and the epilogue applied as it is
    written back. TVM's naive loop nest reduces innermost and stays scalar (MobileNetV3-Small: 10 such
    kernels). An NCHW pool (the max pool after an RGB stem, which stays NCHW) vectorizes along the output
    row the same way (:func:`_reduction_lanes`)."""

    def schedule(self, sch: s_tir.Schedule, blocks: list, target: Target) -> bool:
        reductions = [i for i, b in enumerate(blocks) if not _is_spatial(sch, b)]
        if len(reductions) != 1:
            return False
        producers, reduction, epilogue = (
            blocks[: reductions[0]],
            blocks[reductions[0]],
            blocks[reductions[0] + 1 :],
        )
        stmt = sch.get(reduction)
        kinds = [int(v.iter_type) for v in stmt.iter_vars]
        loops = sch.get_loops(reduction)
        n_spatial = kinds.count(tirx.IterVar.DataPar)
        expected = [tirx.IterVar.DataPar] * n_spatial + [tirx.IterVar.CommReduce] * (len(kinds) - n_spatial)
        if len(loops) != len(kinds) or kinds != expected or not 2 <= n_spatial < len(kinds):
            return False  # spatial loops, then reduction loops
        spatial, reduce = loops[:n_spatial], loops[n_spatial:]
        lanes = _reduction_lanes(sch, stmt, spatial[-1], n_spatial)
        if lanes is None:
            return False
        for block in producers:  # the padding of a pool: read in place, the border by a select
            sch.compute_inline(block)
        *middle, last = epilogue or [None]
        for block in middle:
            sch.compute_inline(block)
        writeback = sch.cache_write(reduction, 0, "local")
        if last is not None:
            sch.reverse_compute_inline(last)
        if lanes < int(sch.get(spatial[-1]).extent):
            spatial = [*spatial[:-1], *sch.split(spatial[-1], [None, lanes])]
        sch.reorder(*spatial[:-1], *reduce, spatial[-1])
        outer = sch.fuse(*spatial[:-1])
        sch.reverse_compute_at(writeback, outer)
        sch.vectorize(spatial[-1])
        init = sch.decompose_reduction(reduction, reduce[0])
        sch.vectorize(sch.get_loops(init)[-1])
        sch.vectorize(sch.get_loops(writeback)[-1])
        return True


class RowMatmul(_BlockRule):
    """A matmul of a few rows by a ``(K, N)`` weight (the classifier after global pooling, ``x @ W``):
    TVM's naive loop nest reduces over K innermost, striding through W by N (EfficientNet-Lite0's
    1280 x 1000 classifier: 2.1 ms fp32, 1.2 ms int8 on AVX2). This rule keeps a register tile of the
    output row (up to 8 SIMD registers of N), streams W row by row along its contiguous N axis, and applies
    the fused epilogue (bias, dequantize) as the tile is written back. int8 x int8 -> int32 products widen
    in the registers. Many rows in one loop (a sequence head: PP-OCR's recognizer, 40 x 120 by 120 x 6625)
    take tiles of up to ``max_rows`` rows under each column tile, with the reduction outside the rows; a
    width no half or quarter register divides takes its widest divisor as the vector (6625 = 5^3 x 53: 5
    lanes). That head: 7.0 -> 2.25 ms, the model 24.8 -> 19.7 ms (onnxruntime 20.2; 1 thread, Zen 4).
    Kernels of another form (``W`` as ``(N, K)``: ``dlight.cpu.GEMV``; rows over several loops) are left
    alone."""

    def __init__(self, accumulators: int = 8, max_rows: int = 4) -> None:
        self.accumulators = accumulators
        self.max_rows = max_rows

    def schedule(self, sch: s_tir.Schedule, blocks: list, target: Target) -> bool:
        from hanasc.targets.pipelines import vector_registers

        names = [sch.get(b).name_hint for b in blocks]
        matmuls = [i for i, name in enumerate(names) if name.startswith("matmul")]
        if len(matmuls) != 1 or matmuls[0] != 0:
            return False
        matmul, *consumers = blocks
        stmt = sch.get(matmul)
        kinds = [int(v.iter_type) for v in stmt.iter_vars]
        if kinds[-1] != tirx.IterVar.CommReduce or tirx.IterVar.CommReduce in kinds[:-1]:
            return False
        loops = sch.get_loops(matmul)
        if len(loops) != len(kinds) or len(loops) < 2:
            return False
        *rows, col, k = loops
        n_var, k_var = stmt.iter_vars[-2].var, stmt.iter_vars[-1].var
        weight = stmt.reads[1].region
        if not (_is_var(weight[-1].min, n_var) and _is_var(weight[-2].min, k_var)):
            return False  # W indexed [.., n] with n contiguous, [.., k, n]
        row_count = 1
        for loop in rows:
            row_count *= int(sch.get(loop).extent)
        lanes, _ = vector_registers(target)
        width = int(sch.get(col).extent)
        lanes = min(lanes, width)  # a head narrower than one register (2 classes): one partial vector
        # a width the register does not divide (1000 classes, 16 lanes) takes half or quarter vectors
        lanes = next((v for v in (lanes, lanes // 2, lanes // 4) if v >= 4 and width % v == 0), lanes)
        if width % lanes:  # an odd width (an OCR head's 6625 classes): the widest divisor, if >= 4 lanes
            lanes = x_tile(width, lanes)
        last_rows = int(sch.get(rows[-1]).extent)
        if width % lanes or lanes < min(4, width) or (row_count > self.max_rows and row_count != last_rows):
            return False  # no vector divides the width; or many rows over several loops (batched)
        row_tile = row_count if row_count <= self.max_rows else x_tile(last_rows, self.max_rows)
        per_row = max(1, self.accumulators // row_tile)
        regs = next(r for r in range(per_row, 0, -1) if (width // lanes) % r == 0)
        *middle, last = consumers or [None]
        for block in middle:
            sch.compute_inline(block)
        writeback = sch.cache_write(matmul, 0, "local")
        if last is not None:
            sch.reverse_compute_inline(last)
        outer, tile_regs, vec = sch.split(col, [None, regs, lanes])
        if row_count > row_tile:  # many rows (a sequence head): tiles of rows under each column tile, so
            rows = sch.split(rows[-1], [None, row_tile])  # the weight's column strip stays in cache
            sch.reorder(outer, rows[0], k, rows[1], tile_regs, vec)  # row_tile x regs accumulators
            sch.reverse_compute_at(writeback, rows[0])
            rows = rows[1:]
        else:
            sch.reorder(outer, *rows, k, tile_regs, vec)
            sch.reverse_compute_at(writeback, outer)
        for loop in rows:
            sch.unroll(loop)
        sch.unroll(tile_regs)
        sch.vectorize(vec)
        init = sch.decompose_reduction(matmul, k)
        sch.vectorize(sch.get_loops(init)[-1])
        wb_loops = sch.get_loops(writeback)
        inner = wb_loops[-1]
        if int(sch.get(inner).extent) > lanes and int(sch.get(inner).extent) % lanes == 0:
            inner = sch.split(inner, [None, lanes])[1]
        sch.vectorize(inner)
        return True


def _is_var(expr, var) -> bool:
    """Whether ``expr`` is the iteration variable ``var`` itself."""
    return isinstance(expr, tirx.Var) and expr.same_as(var)
