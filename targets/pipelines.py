"""The compile pipelines of hanasc's Relax targets, stage by stage.

``fused_passes`` takes a module to fused PrimFuncs (what MetaSchedule tunes), ``default_schedule_passes``
schedules what the tuning database has no record for (the blocked-convolution and GEMV rules on CPUs,
dlight on GPUs), and ``tuned_pipeline`` is the whole pipeline with or without the database. CPU builds
run on modules whose convolutions are channel-blocked
(:func:`hanasc.passes.blocked_layout.convert_to_blocked`).
"""

from __future__ import annotations


def is_gpu(target) -> bool:
    """Whether ``target`` compiles kernels for a CUDA GPU (else a CPU)."""
    return target.kind.name == "cuda"


def backend(target):
    """The module of TVM's default pipeline stages for ``target`` (CPU or CUDA)."""
    if is_gpu(target):
        from tvm.relax.backend.cuda import pipeline
    else:
        from tvm.relax.backend.cpu_generic import pipeline
    return pipeline


def fused_passes(target) -> list:
    """The target's default pipeline up to fused PrimFuncs (what MetaSchedule tunes), minus GPU dlight."""
    from tvm import relax

    from hanasc.passes.blocked_layout import legalize_map

    stages = backend(target)
    legalize = stages.legalize_passes(target)
    assert isinstance(legalize[0], type(relax.transform.LegalizeOps()))
    # Blocked (NCHW16c) convolutions need their own lowering; every other op is legalized as usual.
    passes = [
        *stages.library_dispatch_passes(target),
        relax.transform.LegalizeOps(legalize_map(not is_gpu(target))),
    ]
    return passes + legalize[1:-1] if is_gpu(target) else passes + legalize[1:]


def default_schedule_passes(target) -> list:
    """What schedules the kernels the database has no record for: dlight on GPUs, the blocked-conv rule
    (:mod:`hanasc.targets.cpu_schedules`) on CPUs."""
    if is_gpu(target):
        return backend(target).legalize_passes(target)[-1:]
    from tvm.s_tir import dlight

    return [dlight.ApplyDefaultSchedule(*cpu_default_rules())]


def cpu_default_rules() -> list:
    """Schedule rules that make a CPU kernel fast without tuning (tried in order)."""
    from tvm.s_tir import dlight

    from hanasc.targets.cpu_schedules import BlockedConv, Injective

    return [BlockedConv(), dlight.cpu.GEMV(), Injective()]


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
