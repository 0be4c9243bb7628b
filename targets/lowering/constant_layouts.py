"""Layout ops and element-wise arithmetic on constants evaluated in numpy before legalization.

The blocked layout transforms every bound weight, bias and per-channel scale (``layout_transform``,
``permute_dims``, ``reshape`` of a constant), and quantization multiplies constant scales together. Left to
TVM's ``FoldConstant`` after legalization, each such op is compiled into a kernel of its own and run once:
7.5 s of a 23.6 s EfficientNet-Lite0 W8A8 build (about 250 ops). :func:`fold_constant_layouts` computes
them directly (``IndexMap.map_tensor``, numpy), so ``FoldConstant`` finds nothing of theirs left to compile.
Element-wise ops are folded only where numpy computes the same bits as the kernel would: IEEE float
arithmetic, integer ``add`` / ``subtract`` / ``multiply`` (wrapping), comparisons and selects, and casts
that cannot overflow (to a float type, or from an integer type to a wider one).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir import IRModule

from hanasc.core.relax_params import bound_value, rewrite_functions

_LAYOUT_OPS = ("relax.layout_transform", "relax.permute_dims", "relax.reshape")
_BINARY = {
    "relax.add": np.add,
    "relax.subtract": np.subtract,
    "relax.multiply": np.multiply,
    "relax.maximum": np.maximum,
    "relax.minimum": np.minimum,
}
_FLOAT_BINARY = {"relax.divide": np.divide}


def fold_constant_layouts(mod: IRModule) -> IRModule:
    """``mod`` with every layout op whose input is a constant (directly, or through earlier folded
    bindings) replaced by the constant it computes; a padding ``layout_transform`` is left to
    ``FoldConstant``."""
    return relax.transform.DeadCodeElimination()(_FoldConstantLayouts(mod).run())


@tvm.transform.module_pass(opt_level=0, name="FoldConstantLayouts")
def FoldConstantLayouts(mod: IRModule, _ctx) -> IRModule:
    """:func:`fold_constant_layouts` as a pass for a ``tvm.transform.Sequential``."""
    return fold_constant_layouts(mod)


def folded_elementwise(call: relax.Call, values: list[np.ndarray]) -> np.ndarray | None:
    """``call`` (an element-wise op) evaluated on ``values`` (its tensor arguments) where numpy gives the
    kernel's exact result, else None."""
    name = call.op.name if isinstance(call.op, tvm.ir.Op) else ""
    dtype = str(call.ty.dtype)
    floats = all(v.dtype.kind == "f" for v in values)
    if name in _BINARY and len(values) == 2 and values[0].dtype == values[1].dtype:
        result = _BINARY[name](values[0], values[1])
    elif name in _FLOAT_BINARY and len(values) == 2 and floats and values[0].dtype == values[1].dtype:
        result = _FLOAT_BINARY[name](values[0], values[1])
    elif name == "relax.isnan" and len(values) == 1:
        result = np.isnan(values[0])
    elif name == "relax.where" and len(values) == 3:
        result = np.where(values[0], values[1], values[2])
    elif name == "relax.astype" and len(values) == 1 and _exact_cast(values[0].dtype, np.dtype(dtype)):
        result = values[0]
    else:
        return None
    result = np.asarray(result).astype(dtype, copy=False)
    return result if tuple(result.shape) == tuple(int(d) for d in call.ty.shape) else None


def _exact_cast(source: np.dtype, target: np.dtype) -> bool:
    """Whether casting ``source`` to ``target`` cannot overflow (numpy and TVM then agree)."""
    if target.kind == "f":
        return True
    return source.kind in "iub" and np.can_cast(source, target, casting="safe")


def folded_value(call: relax.Call, value: np.ndarray) -> np.ndarray | None:
    """``call`` (a layout op of one tensor) evaluated on ``value``; None for another op, a padding
    ``layout_transform`` or a shape that is not static."""
    name = call.op.name if isinstance(call.op, tvm.ir.Op) else ""
    try:
        shape = tuple(int(d) for d in call.ty.shape)
    except (TypeError, AttributeError):  # a symbolic shape
        return None
    if name == "relax.permute_dims":
        axes = call.attrs.axes
        result = np.transpose(value, None if axes is None else [int(a) for a in axes])
    elif name == "relax.reshape":
        result = value.reshape(shape)
    elif name == "relax.layout_transform" and call.attrs.pad_value is None:
        result = call.attrs.index_map.map_tensor(tvm.runtime.tensor(value)).numpy()
    else:
        return None
    return np.ascontiguousarray(result) if tuple(result.shape) == shape else None


@relax.expr_functor.mutator
class _FoldConstantLayouts(relax.PyExprMutator):
    """See :func:`fold_constant_layouts`."""

    def __init__(self, mod: IRModule) -> None:
        super().__init__(mod)
        self.mod_ = mod

    def run(self) -> IRModule:
        return rewrite_functions(self, self.mod_)

    def _constant(self, expr: relax.Expr) -> np.ndarray | None:
        if isinstance(expr, relax.Var):
            expr = bound_value(self, expr)
        value = getattr(expr, "value", None) if isinstance(expr, tvm.ir.expr.Constant) else None
        return value.numpy() if hasattr(value, "numpy") else None  # a tensor constant (not a PrimValue)

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or not call.args:
            return call
        if call.op.name in _LAYOUT_OPS:
            value = self._constant(call.args[0])
            result = None if value is None else folded_value(call, value)
        else:
            values = [self._constant(arg) for arg in call.args]
            known = _static(call) and all(v is not None for v in values)
            result = folded_elementwise(call, values) if known else None
        return call if result is None else relax.const(result, str(result.dtype))


def _static(call: relax.Call) -> bool:
    """Whether ``call`` returns one tensor of static shape."""
    try:
        return call.ty.shape is not None and all(isinstance(int(d), int) for d in call.ty.shape)
    except (TypeError, AttributeError):
        return False
