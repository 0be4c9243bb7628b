"""What the channel-coupling analysis (:mod:`hanasc.passes.channel_groups`) knows about Relax ops: which
carry channels through unchanged, how a reshape moves a channel axis, and which ``call_tir`` is Clip's
whole-tensor maximum / minimum (the form TVM's ONNX importer gives it)."""

from __future__ import annotations

from math import prod

import tvm
from tvm import relax, tirx

# ops that map each element to one element of the same shape (extra scalar attrs only)
UNARY_ELEMENTWISE = frozenset(
    f"relax.{name}"
    for name in (
        "nn.relu",
        "nn.relu6",
        "nn.gelu",
        "nn.gelu_tanh",
        "nn.silu",
        "nn.leakyrelu",
        "nn.softplus",
        "sigmoid",
        "tanh",
        "clip",
        "exp",
        "log",
        "sqrt",
        "rsqrt",
        "abs",
        "negative",
        "erf",
        "square",
        "astype",
        "floor",
        "ceil",
        "round",
    )
)
BINARY_ELEMENTWISE = frozenset(
    f"relax.{name}" for name in ("add", "subtract", "multiply", "divide", "maximum", "minimum", "power")
)
REDUCTIONS = frozenset(f"relax.{name}" for name in ("mean", "sum", "max", "min", "prod"))
POOLS = frozenset(f"relax.nn.{name}" for name in ("max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"))
SHAPE_ONLY = frozenset(("relax.reshape", "relax.flatten", "relax.squeeze", "relax.expand_dims"))
TIR_CLIP_OPS = ("maximum", "minimum")


def static_shape(expr: relax.Expr) -> tuple[int, ...] | None:
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    try:
        return tuple(int(d) for d in ty.shape)
    except (TypeError, ValueError):
        return None


def op_name(call: relax.Call) -> str:
    return call.op.name if isinstance(call.op, tvm.ir.Op) else ""


def tir_clip_op(call: relax.Call, mod=None) -> str | None:
    """``"maximum"``/``"minimum"`` when ``call`` is a call_tir of a whole-tensor max/min against a scalar."""
    callee = call.args[0]
    args = call.args[1]
    if not isinstance(callee, relax.GlobalVar) or not isinstance(args, relax.Tuple) or len(args.fields) != 2:
        return None
    if static_shape(args.fields[1]) != () or static_shape(call) != static_shape(args.fields[0]):
        return None
    if mod is None or callee not in mod.get_global_vars():
        stem = callee.name_hint.rstrip("0123456789")
        return stem if stem in TIR_CLIP_OPS else None
    stores = buffer_stores(mod[callee].body) if isinstance(mod[callee], tirx.PrimFunc) else []
    if len(stores) != 1:
        return None
    value = stores[0].value
    kind = {"Max": "maximum", "Min": "minimum"}.get(type(value).__name__)
    loads = (getattr(value, "a", None), getattr(value, "b", None))
    if kind is None or not all(type(x).__name__ in ("BufferLoad", "TensorLoad") for x in loads):
        return None
    if len(loads[1].indices) != 0 or len(loads[0].indices) != len(stores[0].indices):
        return None
    return kind


def buffer_stores(stmt) -> list:
    if isinstance(stmt, tirx.BufferStore):
        return [stmt]
    found = []
    for attr in ("body", "block"):
        child = getattr(stmt, attr, None)
        if child is not None:
            found += buffer_stores(child)
    for child in getattr(stmt, "seq", None) or []:
        found += buffer_stores(child)
    return found


def channel_reshape(in_shape, axis: int, channels: int, block: int, out_shape) -> tuple[int, int] | None:
    """Where a channel axis lands after a reshape, as (axis, block); None when channels get mixed."""
    outer = prod(in_shape[:axis])
    inner = block * prod(in_shape[axis + 1 :])
    for k, dim in enumerate(out_shape):
        if prod(out_shape[:k]) == outer and dim % channels == 0:
            new_block = dim // channels
            if new_block * prod(out_shape[k + 1 :]) == inner:
                return k, new_block
    return None
