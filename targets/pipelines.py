"""The compile pipelines of hanasc's Relax targets, stage by stage.

``fused_passes`` takes a module to fused PrimFuncs (what MetaSchedule tunes), ``default_schedule_passes``
schedules what the tuning database has no record for (the blocked-convolution and GEMV rules on CPUs,
dlight on GPUs), and ``tuned_pipeline`` is the whole pipeline with or without the database. CPU builds
run on modules whose convolutions are channel-blocked
(:func:`hanasc.targets.lowering.blocked_layout.convert_to_blocked`).
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field

from hanasc.targets.cpu_nonconv_schedules import ChannelBlockReduction, Injective, RowMatmul
from hanasc.targets.cpu_schedules import X_TILE, BlockedConv
from hanasc.targets.cuda_int8 import Dp4aMatmul
from hanasc.targets.cuda_schedules import SmallReduction
from hanasc.targets.isa import (
    is_gpu,
    supports_pair_kernels,
    supports_quad_depthwise,
    supports_sdot,
    supports_vnni,
    vector_registers,
)
from hanasc.targets.lowering import blocked_layout
from hanasc.targets.lowering.blocked_lowering import BLOCKS, legalize_map
from hanasc.targets.lowering.constant_layouts import FoldConstantLayouts
from hanasc.targets.lowering.transposed_conv import transposed_convs_as_convs


def backend(target):
    """The module of TVM's default pipeline stages for ``target`` (CPU or CUDA)."""
    if is_gpu(target):
        from tvm.relax.backend.cuda import pipeline
    else:
        from tvm.relax.backend.cpu_generic import pipeline
    return pipeline


def layout_blocks(target) -> tuple[int, ...]:
    """The channel blocks of the target's blocked layout, largest first: the largest block whose register
    tile (:data:`hanasc.targets.cpu_schedules.X_TILE` pixels x the block's vector registers) takes at most
    half the register file, then every smaller one. AVX2 (16 ymm registers): ``(8, 4, 2)``: a 16-channel
    tile of 8 pixels needs 16 accumulators and spills (measured on EfficientNet-Lite0, 1 thread: fp32
    25.5 -> 18.6 ms, W8A8 17.0 -> 14.3 ms with 8 instead of 16, and no ``NCHW16c`` <-> ``NCHW8c``
    transforms between stages); AVX-512: ``(16, 8, 4, 2)``; NEON (32 q registers, 4 lanes): ``(8, 4, 2)``."""
    lanes, registers = vector_registers(target)
    fitting = [b for b in BLOCKS if max(1, b // lanes) * X_TILE <= registers // 2]
    return tuple(b for b in BLOCKS if b <= fitting[0]) if fitting else BLOCKS[-1:]


def to_blocked_layout(mod, target, report=None, int8_weights: dict | None = None):
    """The layout stage of every CPU build: non-overlapping transposed convs as 1x1 convs
    (:func:`hanasc.targets.lowering.transposed_conv.transposed_convs_as_convs`), convolutions in the target's
    blocks
    (:func:`layout_blocks`), int8 pointwise convs as ``vpmaddwd`` pair / ``vpmaddubsw`` quad kernels where
    the target has AVX2 (:func:`hanasc.targets.isa.supports_pair_kernels`), int8 convs as ``sdot``
    kernels on aarch64 with dotprod (:func:`hanasc.targets.isa.supports_sdot`). ``report``: a
    :class:`hanasc.targets.lowering.blocked_layout.LayoutReport` to fill. ``int8_weights``: the late-bound
    integer
    weights by parameter name; on AVX512-VNNI CPUs (:func:`hanasc.targets.isa.supports_vnni`) they let
    convs on signed codes run as ``vpdpbusd`` quads
    (:func:`hanasc.targets.lowering.dot_convs.mark_pair_convs`); with
    AVX512-VBMI too, int8 depthwise convs sum four taps a lane
    (:mod:`hanasc.targets.lowering.quad_depthwise`)."""
    return blocked_layout.convert_to_blocked(
        transposed_convs_as_convs(mod),
        blocks=layout_blocks(target),
        pair_kernels=supports_pair_kernels(target),
        report=report,
        sdot=supports_sdot(target),
        signed_weights=int8_weights if supports_vnni(target) else None,
        quad_depthwise=supports_quad_depthwise(target),
    )


def fused_passes(target) -> list:
    """The target's default pipeline up to fused PrimFuncs (what MetaSchedule tunes), minus GPU dlight."""
    from tvm import relax

    stages = backend(target)
    legalize = stages.legalize_passes(target)
    assert isinstance(legalize[0], type(relax.transform.LegalizeOps()))
    # Blocked (NCHW16c) convolutions need their own lowering; every other op is legalized as usual. Layout
    # ops on constants (bound weights, biases, scales) are computed first, in numpy, not compiled one by one.
    passes = [
        *stages.library_dispatch_passes(target),
        FoldConstantLayouts,
        relax.transform.LegalizeOps(legalize_map(not is_gpu(target))),
    ]
    return passes + legalize[1:-1] if is_gpu(target) else passes + legalize[1:]


def default_fusion_passes(target) -> list:
    """TVM's default pipeline for ``target`` up to fused PrimFuncs, NCHW and unscheduled (what the cost
    models' ``default`` lowering reads): library dispatch, LegalizeOps, FoldConstant, FuseOps, FuseTIR;
    the GPU's dlight stage left out."""
    stages = backend(target)
    legalize = stages.legalize_passes(target)
    return [*stages.library_dispatch_passes(target), *(legalize[:-1] if is_gpu(target) else legalize)]


def kernel_schedule_passes(target) -> list:
    """What schedules one fused kernel compiled alone (to time it): the GPU default rules
    (:func:`gpu_default_rules`, a GPU kernel needs thread bindings); nothing on CPUs (the kernel runs as
    lowered)."""
    return default_schedule_passes(target) if is_gpu(target) else []


def default_schedule_passes(target) -> list:
    """What schedules the kernels the database has no record for: dlight on GPUs, the blocked-conv rule
    (:mod:`hanasc.targets.cpu_schedules`) on CPUs."""
    from tvm.s_tir import dlight

    return [dlight.ApplyDefaultSchedule(*(gpu_default_rules() if is_gpu(target) else cpu_default_rules()))]


def gpu_default_rules() -> list:
    """Schedule rules of GPU kernels (tried in order): int8 GEMMs and convs as ``dp4a``
    (:class:`hanasc.targets.cuda_int8.Dp4aMatmul`), then TVM's dlight defaults for CUDA (tensor-core
    ``wmma`` for fp16 GEMMs whose sizes all exceed 64), with depthwise convs and other reductions over a
    few elements one thread per output (:class:`hanasc.targets.cuda_schedules.SmallReduction`) before
    dlight's ``GeneralReduction``."""
    from tvm.s_tir import dlight

    gpu = dlight.gpu
    return [
        Dp4aMatmul(),
        gpu.Matmul(),
        gpu.GEMV(),
        gpu.Reduction(),
        SmallReduction(),
        gpu.GeneralReduction(),
        gpu.Fallback(),
    ]


def cpu_default_rules() -> list:
    """Schedule rules that make a CPU kernel fast without tuning (tried in order)."""
    from tvm.s_tir import dlight

    return [BlockedConv(), RowMatmul(), SafeRule(dlight.cpu.GEMV()), ChannelBlockReduction(), Injective()]


class SafeRule:
    """A schedule rule that declines (None) instead of raising on a kernel it cannot handle: a kernel no
    rule schedules runs TVM's naive loop nest, which is slow but correct."""

    def __init__(self, rule) -> None:
        self.rule = rule

    def apply(self, func, target, tunable):
        try:
            return self.rule.apply(func, target, tunable)
        except Exception:  # TVM's rules assert on shapes they do not expect
            return None

    def is_target_available(self, target) -> bool:
        return self.rule.is_target_available(target)


@dataclass
class BuildReport:
    """What one build of a Relax target fell back on (the build is correct either way).

    ``layout``: :meth:`hanasc.targets.lowering.blocked_layout.LayoutReport.to_json` (CPU builds);
    ``kernels``: the
    fused kernels of the library; ``naive``: those with neither a tuned record nor a default schedule (TVM's
    naive loop nest); ``rebuilds``: builds that failed and were redone in a simpler form, with the reason.
    """

    target: str
    layout: dict | None = None
    layout_line: str = ""
    kernels: int = 0
    naive: list[str] = field(default_factory=list)
    rebuilds: list[str] = field(default_factory=list)

    @property
    def fallback_kernels(self) -> int:
        """How many kernels fell back to naive loops."""
        return len(self.naive)

    @property
    def layout_fell_back(self) -> bool:
        layout = self.layout or {}
        return bool(layout.get("kept_nchw") or layout.get("skipped_blocks") or layout.get("whole_module"))

    def line(self) -> str:
        """One line for a summary: layout fallbacks, naive kernels, rebuilds."""
        parts = [self.layout_line] if self.layout_line else []
        parts.append(f"{self.fallback_kernels} of {self.kernels} kernels without a schedule (naive loops)")
        parts += [f"rebuilt: {r}" for r in self.rebuilds]
        return f"{self.target} build: " + "; ".join(parts)

    def to_json(self) -> dict:
        return {
            "target": self.target,
            "layout": self.layout,
            "kernels": self.kernels,
            "naive_kernels": list(self.naive),
            "fallback_kernels": self.fallback_kernels,
            "rebuilds": list(self.rebuilds),
        }


_COLLECTORS: contextvars.ContextVar[tuple[list, ...]] = contextvars.ContextVar(
    "hanasc_build_reports", default=()
)


@contextlib.contextmanager
def collect_build_reports():
    """``with collect_build_reports() as reports:``: every :class:`BuildReport` of the builds inside (the
    compile and apply summaries print them)."""
    reports: list[BuildReport] = []
    token = _COLLECTORS.set((*_COLLECTORS.get(), reports))
    try:
        yield reports
    finally:
        _COLLECTORS.reset(token)


def record_build(report: BuildReport) -> None:
    """Hand ``report`` to every open :func:`collect_build_reports`."""
    for reports in _COLLECTORS.get():
        reports.append(report)


def unscheduled_kernels(mod) -> tuple[int, list[str]]:
    """``(kernels, names of those not scheduled)`` of a module after its schedule passes: a PrimFunc is
    scheduled when a tuned record or a default rule marked it ``tirx.is_scheduled``."""
    from tvm import tirx

    names = []
    total = 0
    for gv, func in mod.functions.items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        total += 1
        attrs = func.attrs or {}
        if "tirx.is_scheduled" not in attrs or not int(attrs["tirx.is_scheduled"]):
            names.append(gv.name_hint)
    return total, sorted(names)


def has_default_schedule(func, target) -> bool:
    """Whether a fused PrimFunc gets a schedule from :func:`cpu_default_rules` (GPU: dlight always)."""
    if is_gpu(target):
        return False
    with target:
        return any(rule.apply(func, target, False) is not None for rule in cpu_default_rules())


def tuned_pipeline(target, layout_rewrite: bool = False, database: bool = True):
    """The fused default pipeline with ``MetaScheduleApplyDatabase`` (the database must be current).

    ``database=False``: the same pipeline without tuned schedules (what an untuned build runs).
    """
    import tvm
    from tvm import relax

    stages = backend(target)
    pre = [relax.transform.AttachAttrLayoutFreeBuffers()] if layout_rewrite else []
    post = (
        [
            relax.transform.SplitLayoutRewritePreproc(),
            relax.transform.LiftTransformParams(),
            relax.transform.FoldConstant(),
        ]
        if layout_rewrite
        else []
    )
    passes = (
        fused_passes(target)
        + pre
        + ([relax.transform.MetaScheduleApplyDatabase(enable_warning=False)] if database else [])
        + post
        + default_schedule_passes(target)
        + stages.dataflow_lower_passes(target)
        + stages.finalize_passes(target)
    )

    @tvm.transform.module_pass(opt_level=0)
    def _pipeline(mod, _ctx):
        with target:
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline
