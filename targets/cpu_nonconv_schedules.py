"""Default CPU schedules for the kernels around the convolutions (no tuning, no device needed):
element-wise kernels and layout transforms (:class:`Injective`), reductions over spatial axes such as
pools and squeeze-excite means (:class:`ChannelBlockReduction`), and the classifier's matmul of a few rows
(:class:`RowMatmul`). TVM's naive loop nests for them reduce innermost and stay scalar; each rule here
is a dlight rule like :class:`hanasc.targets.cpu_schedules.BlockedConv` and leaves any kernel it does not
recognise as it was.
"""

from __future__ import annotations

import contextlib

from tvm import s_tir, tirx
from tvm.target import Target

from hanasc.targets.cpu_rules import BlockRule, runs_parallel, vectorize_injective
from hanasc.targets.isa import vector_registers
from hanasc.targets.lowering.conv_compute import x_tile


class Injective(BlockRule):
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


class ChannelBlockReduction(BlockRule):
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


class RowMatmul(BlockRule):
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
