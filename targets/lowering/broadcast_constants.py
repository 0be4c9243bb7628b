"""Constants of element-wise ops in the shapes ``ConvertLayout`` can carry into a blocked layout.

paddle2onnx writes an activation's scale as a ``(1, 1, 1, 1)`` constant (``x * 1.0`` around its
hardswish) and a folded batch norm as ``(C, 1, 1)``. Relax's ``ConvertLayout`` cannot transform either into
``NCHW16c`` (one channel does not block; a rank-3 operand has no ``C`` axis to block), so it keeps the op in
NCHW, with a layout transform before and after it around every conv (PP-OCRv4's recognizer: 66 transforms,
2.5 ms of 20 ms on one Zen 4 core). :func:`full_rank_constants` reshapes such constants, which changes no
value: a constant of ones-only shape becomes a scalar, a lower-rank one gets the other operand's rank.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.ir import IRModule

from hanasc.core.relax_params import rewrite_functions

_ELEMENTWISE = {
    "relax.add",
    "relax.subtract",
    "relax.multiply",
    "relax.divide",
    "relax.maximum",
    "relax.minimum",
    "relax.power",
}


def full_rank_constants(mod: IRModule) -> IRModule:
    """``mod`` with every constant operand of a binary element-wise op that holds one value as a scalar,
    and every other constant of lower rank than the other operand at that rank; everything else
    unchanged."""
    return rewrite_functions(_FullRank(mod), mod)


def _rank(expr: relax.Expr) -> int | None:
    shape = getattr(getattr(expr, "ty", None), "shape", None)
    return None if shape is None else len(shape)


@relax.expr_functor.mutator
class _FullRank(relax.PyExprMutator):
    """See :func:`full_rank_constants`."""

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or call.op.name not in _ELEMENTWISE or len(call.args) != 2:
            return call
        ranks = [_rank(arg) for arg in call.args]
        if None in ranks:
            return call
        args = list(call.args)
        for index, arg in enumerate(args):
            other = ranks[1 - index]
            if not isinstance(arg, tvm.ir.expr.Constant) or not 1 <= ranks[index] <= other:
                continue
            value = arg.value.numpy()
            if value.size == 1:  # broadcast everywhere: a scalar, which any layout takes
                args[index] = relax.const(value.reshape(()))
            elif ranks[index] < other:
                args[index] = relax.const(value.reshape((1,) * (other - value.ndim) + value.shape))
        if all(new.same_as(old) for new, old in zip(args, call.args, strict=True)):
            return call
        return relax.Call(call.op, args, call.attrs)
