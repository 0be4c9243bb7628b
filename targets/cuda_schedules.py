"""GPU schedules for kernels dlight maps badly: reductions over a few elements (depthwise convolutions).

dlight's ``GeneralReduction`` gives each output element a thread block and spreads its reduction over the
block's threads; a 3x3 depthwise conv then keeps 9 of 256 threads busy and pays two shuffles and three
barriers per output. :class:`SmallReduction` comes before it: one thread per output element, its few taps
summed in a register, consecutive threads on consecutive output pixels (coalesced reads), padding and the
epilogue (bias, activation, requantization) inlined.
"""

from __future__ import annotations

import math

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import get_root_block, get_sblock_info
from tvm.s_tir.dlight.gpu.base import GPUScheduleRule
from tvm.s_tir.dlight.gpu.matmul import (
    auto_inline_consumer_chain,
    auto_inline_producers,
    get_reduction_blocks,
)
from tvm.target import Target

MAX_TAPS = 64  # largest reduction a thread sums alone (7x7 depthwise: 49)
THREADS = 128


def single_reduction(rule: GPUScheduleRule, func, target: Target) -> tuple[s_tir.Schedule, object] | None:
    """``(schedule, block)`` of the one reduction block of ``func`` when ``rule`` may schedule it for
    ``target`` (a PrimFunc, a GPU target, exactly one reduction block), else None."""
    if not isinstance(func, tirx.PrimFunc) or not rule.is_target_available(target):
        return None
    sch = s_tir.Schedule(func)
    reductions = get_reduction_blocks(sch, sch.get_child_blocks(get_root_block(sch)))
    if reductions is None or len(reductions) != 1:
        return None
    return sch, reductions[0]


class SmallReduction(GPUScheduleRule):
    """dlight rule: a reduction of at most :data:`MAX_TAPS` elements per output, with at least a block of
    outputs, as one thread per output element."""

    def apply(self, func: tirx.PrimFunc, target: Target, _: bool) -> s_tir.Schedule | None:
        found = single_reduction(self, func, target)
        if found is None:
            return None
        sch, main = found
        if len(sch.get_loops(main)) != len(sch.get(main).iter_vars):
            return None
        iters = get_sblock_info(sch, main).iters  # loops and iter vars one to one, as TE builds them
        kinds = "".join(it.kind for it in iters)
        spatial = len(kinds.rstrip("R"))
        if kinds != "S" * spatial + "R" * (len(kinds) - spatial) or spatial == len(kinds):
            return None
        if any(not isinstance(it.dom, int) for it in iters):
            return None
        taps = math.prod(it.dom for it in iters[spatial:])
        outputs = math.prod(it.dom for it in iters[:spatial])
        if taps > MAX_TAPS or outputs < THREADS:
            return None
        loops = [it.loop_rv for it in iters]
        return self._schedule(sch, main, loops[:spatial], loops[spatial])

    @staticmethod
    def _schedule(sch: s_tir.Schedule, main, spatial_loops: list, first_reduction) -> s_tir.Schedule:
        bx, tx = sch.split(sch.fuse(*spatial_loops), [None, THREADS])
        sch.bind(bx, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
        write_back = sch.cache_write(main, 0, "local")
        sch.reverse_compute_at(write_back, tx, preserve_unit_loops=True)
        auto_inline_producers(sch, main)
        auto_inline_consumer_chain(sch, write_back)
        sch.decompose_reduction(main, first_reduction)
        return sch
