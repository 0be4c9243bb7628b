"""The Relax rewrites around the blocked layout's ``ConvertLayout``
(:func:`hanasc.targets.lowering.blocked_layout.convert_to_blocked`): clips as ``maximum``/``minimum``
before it (``clip`` has no layout rule), and pairs of ``layout_transform`` folded into one after it.
"""

from __future__ import annotations

import re

import tvm
from tvm import relax
from tvm.ir import IRModule
from tvm.relax.dpl import is_op, rewrite_call, wildcard


def clip_as_min_max(mod: IRModule) -> IRModule:
    """Clips as Relax ``maximum``/``minimum`` ops, which have a layout rule.

    Rewrites ``relax.clip(x, lo, hi)``, and the ONNX importer's ``call_tir(maximum|minimum, (x, s))``
    with a scalar ``s`` (its ``Clip``/``Relu6`` lowering), to ``relax.op.maximum``/``minimum``.
    """
    x, lo, hi = wildcard(), wildcard(), wildcard()
    pattern = is_op("relax.clip")(x, lo, hi)

    def rewriter(_expr, matches):
        dtype = matches[x].ty.dtype
        low = relax.const(float(matches[lo].value), dtype)
        high = relax.const(float(matches[hi].value), dtype)
        return relax.op.minimum(relax.op.maximum(matches[x], low), high)

    mod = mod.clone()  # the caller's module stays as it was
    mutator = _ScalarMinMaxToOps(mod)
    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            mod[gv] = mutator.visit_expr(rewrite_call(pattern, rewriter, func))
    return relax.transform.DeadCodeElimination()(mod)


_SCALAR_OPS = {"maximum": relax.op.maximum, "minimum": relax.op.minimum}


@relax.expr_functor.mutator
class _ScalarMinMaxToOps(relax.PyExprMutator):
    """``call_tir(maximum*, (x, scalar))`` (as ``bb.emit_te(topi.maximum, x, s)`` emits) -> Relax op."""

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if call.op != tvm.ir.Op.get("relax.call_tir") or len(call.args[1].fields) != 2:
            return call
        op = _SCALAR_OPS.get(re.sub(r"\d+$", "", call.args[0].name_hint))
        data, scalar = call.args[1].fields
        ok = op is not None and len(scalar.ty.shape) == 0 and scalar.ty.dtype == data.ty.dtype
        return op(data, scalar) if ok else call


def fold_layout_transform_pairs(mod: IRModule) -> IRModule:
    """``layout_transform(layout_transform(x, a), b)`` -> one ``layout_transform(x, b . a)`` when the inner
    result has no other use: between convolutions of different blocks (``NCHW8c`` -> ``NCHW`` ->
    ``NCHW16c``) the activation is copied once instead of twice."""
    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            uses = _use_counts(func)
            mod[gv] = _FoldTransformPairs(relax.analysis.get_var2val(func), uses).visit_expr(func)
    return relax.transform.DeadCodeElimination()(mod)


def _use_counts(func: relax.Function) -> dict:
    """How many bindings (and the function's result) use each variable of ``func``."""
    counts: dict = {}
    for value in [*relax.analysis.get_var2val(func).values(), func.body.body]:
        for var in relax.analysis.free_vars(value):
            counts[var] = counts.get(var, 0) + 1
    return counts


@relax.expr_functor.mutator
class _FoldTransformPairs(relax.PyExprMutator):
    """See :func:`fold_layout_transform_pairs`."""

    def __init__(self, var2val: dict, uses: dict) -> None:
        super().__init__()
        self.var2val, self.uses = var2val, uses

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not is_unpadded_transform(call) or not isinstance(call.args[0], relax.Var):
            return call
        inner = self.var2val.get(call.args[0])
        if not is_unpadded_transform(inner) or self.uses.get(call.args[0], 0) != 1:
            return call
        first, second = inner.attrs.index_map, call.attrs.index_map
        composed = tvm.tirx.IndexMap.from_func(
            lambda *i: second.map_indices(first.map_indices(list(i))), ndim=len(first.initial_indices)
        )
        return relax.op.layout_transform(inner.args[0], composed)


def is_unpadded_transform(expr) -> bool:
    return (
        isinstance(expr, relax.Call)
        and isinstance(expr.op, tvm.ir.Op)
        and expr.op.name == "relax.layout_transform"
        and expr.attrs.pad_value is None
    )
