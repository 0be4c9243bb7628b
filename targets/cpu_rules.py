"""The base of hanasc's default CPU schedule rules (:mod:`hanasc.targets.cpu_schedules`,
:mod:`hanasc.targets.cpu_nonconv_schedules`): a dlight rule over the blocks under a PrimFunc's root
(:class:`BlockRule`), whether a kernel runs on the thread pool (:func:`runs_parallel`), and the
vectorization of a spatial block's innermost loop (:func:`vectorize_injective`).
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
from tvm.target import Target


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


class BlockRule(CPUScheduleRule):
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


def vectorize_injective(sch: s_tir.Schedule, block, parallel: bool = False, tail: bool = False) -> None:
    """The innermost loop of a spatial ``block`` vectorized: split by 16 or 8 lanes when one divides it,
    whole when it is short (<= 64); a longer loop neither divides stays scalar, or with ``tail`` is
    vectorized by 16 up to a short scalar tail of its own (``loop_partition``: the NCHW copy-back of
    SqueezeNet 1.1's stem, 64 x 111 x 111, Zen 4: 876 -> 684 us int8, 760 -> 570 us fp32, outputs
    identical). ``parallel``: the outermost loop on the thread pool."""
    loops = sch.get_loops(block)
    inner = loops[-1]
    extent = int(sch.get(inner).extent)
    width = next((w for w in (16, 8) if extent % w == 0), extent if extent <= 64 else None)
    if parallel and len(loops) > 1:
        sch.parallel(loops[0])
    if width is None and tail:
        _vectorize_with_tail(sch, inner, extent)
        return
    if width is None or width == 1:
        return
    if extent > width:
        inner = sch.split(inner, [None, width])[1]
    sch.vectorize(inner)


def _vectorize_with_tail(sch: s_tir.Schedule, loop, extent: int, lanes: int = 16) -> None:
    """``loop`` vectorized by ``lanes`` over its first ``extent // lanes * lanes`` iterations, the rest a
    scalar loop of its own; left scalar where the partition does not apply."""
    try:
        body, _tail = sch.loop_partition(loop, [extent // lanes * lanes, None])
    except Exception:  # a loop the partition does not take: it stays scalar
        return
    sch.vectorize(sch.split(body, [None, lanes])[1])
