"""Compile a hanasc module so that integer weights reach the library as stored (int8, packed 4/2-bit).

Float weights are bound as constants before the pipeline (so constant folding sees them); integer weights
are bound after legalization and fusion, inside the target's own default pipeline, so FoldConstant cannot
widen them at compile time and the library unpacks/dequantizes them at run time. Used by every Relax target
(host, cortex-a78, jetson-orin): their libraries carry the bit-widths the search chose.
"""

from __future__ import annotations

import numpy as np

from hanasc.core.relax_params import bind_weights, bound_value, is_packed, weights_of
from hanasc.passes.packing import pack_bits, pack_tiles, unpack_bits, unpack_expr, unpacked_param
from hanasc.targets import pipelines, tuning
from hanasc.targets.isa import is_gpu
from hanasc.targets.lowering.blocked_layout import LayoutReport, first_line
from hanasc.targets.lowering.constant_layouts import folded_value
from hanasc.targets.lowering.conv_compute import WEIGHT_TILES
from hanasc.targets.lowering.quad_depthwise import (
    QUAD_OFFSET,
    QUAD_WEIGHT,
    quad_offset_values,
    quad_weight_values,
)
from hanasc.targets.tuning_database import RECORDS, open_database


def compile_late_bound(mod, target):
    """Compile ``mod`` (weights as parameters, or already bound) for ``target`` with hanasc's pipeline
    (:mod:`hanasc.targets.pipelines`: on CPUs channel-blocked convolutions with default schedules, on
    GPUs TVM's dlight defaults), integer weights bound after fusion.

    What has no rule falls back instead of failing: ops the layout rewrite cannot convert stay NCHW
    (:func:`hanasc.targets.lowering.blocked_layout.convert_to_blocked`), kernels no schedule rule handles run
    naive
    loops, and a CPU build that fails anyway is redone in NCHW, then without default schedules. The
    :class:`hanasc.targets.pipelines.BuildReport` of the build that succeeded goes to the open
    :func:`hanasc.targets.pipelines.collect_build_reports`.
    """
    if target.kind.name not in ("llvm", "cuda"):
        raise ValueError(f"late binding supports llvm and cuda targets, not '{target.kind.name}'")
    gpu = is_gpu(target)
    # (blocked layout, default schedules): GPU kernels need dlight's thread bindings, so no fallback there
    plans = [(False, True)] if gpu else [(True, True), (False, True), (False, False)]
    rebuilds: list[str] = []
    for index, (blocked, schedules) in enumerate(plans):
        report = pipelines.BuildReport(target=_target_name(target), rebuilds=list(rebuilds))
        try:
            executable = _compile(mod, target, blocked, schedules, report)
        except Exception as exc:  # TVM raises many types; the last plan's failure is the model's own
            if index == len(plans) - 1:
                raise

            what = "blocked layout" if blocked else "default schedules"
            rebuilds.append(f"{what} failed to build ({first_line(exc)})")
            continue
        pipelines.record_build(report)
        return executable
    raise AssertionError("unreachable")


def _target_name(target) -> str:
    attrs = target.attrs
    detail = attrs.get("mcpu") or attrs.get("arch")
    return f"{target.kind.name}/{detail}" if detail else str(target.kind.name)


def _compile(mod, target, blocked: bool, schedules: bool, report):
    """One build of :func:`compile_late_bound`: channel-blocked convolutions or not, default schedules
    or not (the database's records apply either way); fills ``report``."""
    import tvm

    early, pipeline = shipped_pipeline(mod, target, blocked, schedules, report)
    return tvm.compile(early, target=target, relax_pipeline=pipeline)


def lower_as_shipped(mod, target, schedules: bool = False):
    """The Relax module the shipped build hands to code generation (VM memory plan included), without
    compiling it: what the memory estimate reads. Falls back to NCHW like :func:`compile_late_bound`.
    ``schedules``: apply the default kernel schedules too (they do not change the memory plan)."""

    def lower(blocked: bool, report):
        early, pipeline = shipped_pipeline(mod, target, blocked, schedules, report)
        with target:
            return pipeline(early)

    return _blocked_else_nchw(target, lower)


def fused_as_shipped(mod, target):
    """The shipped build's module at the point where its kernels are fused PrimFuncs (``call_tir`` in
    ``main``; blocked layout, prepacked integer weights, no schedules): the kernels the artifact runs, by the
    names its VM calls them. Falls back to NCHW like :func:`compile_late_bound`."""
    import tvm
    from tvm import relax

    def fuse(blocked: bool, report):
        early, _ = _early_stages(mod, target, blocked, report)
        with target:  # reshape-like kernels become views, as in the build's first lowering pass
            passes = [*pipelines.fused_passes(target), relax.transform.RewriteDataflowReshape()]
            return tvm.transform.Sequential(passes)(early)

    return _blocked_else_nchw(target, fuse)


def _blocked_else_nchw(target, lower):
    """``lower(blocked, report)`` in blocked layout (CPUs), redone in NCHW when that raises."""
    for blocked in (not is_gpu(target), False):
        report = pipelines.BuildReport(target=_target_name(target))
        try:
            return lower(blocked, report)
        except Exception:  # TVM raises many types; the NCHW lowering is the fallback, as in the build
            if not blocked:
                raise
    raise AssertionError("unreachable")


def _early_stages(mod, target, blocked: bool, report) -> tuple:
    """``(module, packed weights)``: ``mod`` with float weights bound, in blocked layout when ``blocked``,
    its packed integer weights prepacked for their kernels (bound later, after fusion)."""
    packed = {k: v for k, v in weights_of(mod).items() if is_packed(v)}
    early = bind_weights(mod, keep_packed=True) if weights_of(mod) else mod
    if blocked:
        layout = LayoutReport()
        # x86 with AVX2: int8 pointwise convs as exact vpmaddwd kernels, their weights prepacked below
        early = pipelines.to_blocked_layout(early, target, report=layout, int8_weights=packed)
        report.layout, report.layout_line = layout.to_json(), layout.summary()
    elif not is_gpu(target):
        report.layout_line = "layout: whole module NCHW (blocked build failed)"
    if packed:
        early, packed = prepack_weights(early, packed)
    return early, packed


def shipped_pipeline(mod, target, blocked: bool, schedules: bool, report) -> tuple:
    """``(module, relax pipeline)`` of one shipped build: the module with its early stages applied (blocked
    layout, prepacked integer weights) and the pass that lowers it for code generation."""
    import tvm
    from tvm import relax

    early, packed = _early_stages(mod, target, blocked, report)
    stages = pipelines.backend(target)
    late = {k: tvm.runtime.tensor(v) for k, v in packed.items()}
    database = tuned_records(target)

    @tvm.transform.module_pass(opt_level=0, name="hanasc.LateBindPackedPipeline")
    def pipeline(m: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target:
            m = tvm.transform.Sequential(pipelines.fused_passes(target))(m)
            if database is not None:  # kernels tuned before, by any model, for this target
                with database:
                    m = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(m)
            if schedules:
                m = tvm.transform.Sequential(pipelines.default_schedule_passes(target))(m)
            report.kernels, report.naive = pipelines.unscheduled_kernels(m)
            if late:
                m = relax.transform.BindParams("main", late)(m)
                m["main"] = m["main"].without_attr("num_input")
            return tvm.transform.Sequential(
                stages.dataflow_lower_passes(target) + stages.finalize_passes(target)
            )(m)

    return early, pipeline


def tuned_records(target):
    """The target's persistent MetaSchedule database (:mod:`hanasc.targets.tuning`), if it has records."""
    path = tuning.database_dir(tuning.resolve_target(target))
    records = path / RECORDS
    if not records.is_file() or records.stat().st_size == 0:
        return None
    with tuning.light_intrinsics(is_gpu(target)):
        return open_database(path, snapshot=True)  # another process may be tuning into it


def prepack_weights(mod, values: dict[str, np.ndarray]) -> tuple:
    """Apply the ``layout_transform`` / ``permute_dims`` that ``main`` runs on a late-bound weight
    parameter once, now, in numpy: such a weight gets a new parameter holding it in the layout its op
    uses (``<name>.packed<i>``), so no kernel rearranges weights on every inference.

    Returns the new module and the values of its late-bound parameters (unused originals dropped).
    """
    from tvm import relax

    func = mod["main"]
    mutator = _prepack_mutator(values)
    body = mutator.visit_expr(func.body)
    if not mutator.new_values:
        return mod, values
    # the unpacking of a repacked weight in its old order is left unused: drop it (and its parameter)
    body = relax.analysis.remove_all_unused(body)
    used = {v.name for v in relax.analysis.free_vars(body)}
    params = [p for p in func.params if p.name in used or p.name not in values]
    params += [p for p in mutator.new_params if p.name in used]  # a repacking a later one replaced: dropped
    out = {k: v for k, v in {**values, **mutator.new_values}.items() if k in used}
    new = relax.Function(params, body, func.ret_ty, func.is_pure, func.attrs, func.span)
    mod = mod.clone() if hasattr(mod, "clone") else mod
    mod["main"] = new
    return mod, out


def _layout_op(call) -> bool:
    """Whether ``call`` is a ``layout_transform`` or ``permute_dims`` (what prepacking evaluates)."""
    import tvm

    return isinstance(call.op, tvm.ir.Op) and call.op.name in ("relax.layout_transform", "relax.permute_dims")


def _prepacked_value(call, value: np.ndarray) -> np.ndarray | None:
    """``call`` (a layout_transform or permute_dims of one weight) evaluated on ``value``; None when it is
    another op, or a layout_transform that pads."""
    return folded_value(call, value) if _layout_op(call) else None


def _prepack_mutator(values: dict[str, np.ndarray]):
    """A mutator that replaces layout ops on late-bound weight parameters (``values``) by new, already
    transformed parameters (collected in its ``new_params`` / ``new_values``)."""
    from tvm import relax

    @relax.expr_functor.mutator
    class Prepack(relax.PyExprMutator):
        """See :func:`_prepack_mutator`."""

        def __init__(self, values: dict[str, np.ndarray]) -> None:
            super().__init__()
            self.values = values
            self.new_values: dict[str, np.ndarray] = {}
            self.new_params: list = []

        def visit_call_(self, call):
            call = super().visit_call_(call)
            evaluate = _weight_op(call)
            if evaluate is not None:
                return self._evaluated(call, evaluate)
            if not call.args or not isinstance(call.args[0], relax.Var):
                return call
            if call.args[0].name not in self.values:
                return self._repacked(call) if _layout_op(call) else call
            result = _prepacked_value(call, self.values[call.args[0].name])
            if result is None:
                return call
            return self._new_param(call.args[0].name, result)

        def _new_param(self, source: str, value: np.ndarray):
            name = f"{source}.packed{len(self.new_params)}"
            var = relax.Var(name, relax.TensorType(value.shape, str(value.dtype)))
            self.new_values[name] = value
            self.new_params.append(var)
            return var

        def _repacked(self, call):
            """A layout op on 4/2-bit weights unpacked in the graph: the weights packed again in the
            layout the op produces, so only the unpacking runs per inference (no transform, no
            transpose)."""
            found = unpacked_param(call.args[0], lambda v: bound_value(self, v), self.values)
            if found is None:
                return call
            source, bits, shape = found
            result = _prepacked_value(call, unpack_bits(self.values[source], bits, shape))
            if result is None:
                return call
            return unpack_expr(self._new_param(source, pack_bits(result, bits)), bits, result.shape)

        def _evaluated(self, call, evaluate):
            """A graph op on one int8 weight (:func:`_weight_op`) evaluated once, in numpy: on a
            late-bound parameter, or on 4/2-bit weights unpacked in the graph (``evaluate(values, bits)``
            returns None where it needs the other)."""
            known = {**self.values, **self.new_values}
            weight = call.args[1].fields[0]
            if isinstance(weight, relax.Var) and weight.name in known:
                source, bits, value = weight.name, 8, known[weight.name]
            else:
                found = unpacked_param(weight, lambda v: bound_value(self, v), known)
                if found is None:
                    return call
                source, bits, shape = found
                value = unpack_bits(known[source], bits, shape)
            result = evaluate(value, bits)
            if result is None or result.shape != tuple(int(d) for d in call.ty.shape):
                return call
            return self._new_param(source, result)

    return Prepack(values)


def _weight_op(call):
    """``evaluate(values, bits)``, the numpy form of ``call``, when it is a ``call_tir`` of a graph op on one
    weight that prepacking computes once: the sub-byte tiles a dot-product kernel unpacks in its registers
    (:func:`hanasc.targets.lowering.conv_compute.weight_tiles`, from 4/2-bit weights), the int8 depthwise
    kernels'
    weight layout and offset (:mod:`hanasc.targets.lowering.quad_depthwise`); else None."""
    import tvm

    if call.op != tvm.ir.Op.get("relax.call_tir") or len(call.args[1].fields) != 1:
        return None
    ops = {
        WEIGHT_TILES: lambda values, bits: pack_tiles(values, bits) if bits < 8 else None,
        QUAD_WEIGHT: lambda values, _bits: quad_weight_values(values),
        QUAD_OFFSET: lambda values, _bits: quad_offset_values(values),
    }
    name = call.args[0].name_hint
    return next((fn for prefix, fn in ops.items() if name.startswith(prefix)), None)
