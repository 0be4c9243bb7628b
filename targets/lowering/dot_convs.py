"""Which int8 convolutions get the dot-product kernels: :func:`mark_pair_convs` casts the data of every
int8 standard conv (pointwise or KxK, ``groups=1``) to the codes its intrinsic takes (``uint8`` where the
input cannot be negative, :func:`nonnegative`; ``int16`` pairs otherwise), read by
:func:`hanasc.targets.lowering.blocked_layout.convert_to_blocked`."""

from __future__ import annotations

import os

import numpy as np
import tvm
from tvm import relax
from tvm.ir import IRModule

from hanasc.core.relax_params import bound_value, rewrite_functions
from hanasc.passes.packing import tiles_pack, unpack_bits, unpacked_param
from hanasc.targets.lowering.conv_compute import (
    WEIGHT_TILES,
    dot_conv_name,
    pair_conv2d,
    pair_group,
    weight_tiles,
)
from hanasc.targets.lowering.quad_depthwise import QUAD_BLOCK

# every int8 pointwise conv: with 8-channel blocks (AVX2) the 16-input-channel expand of EfficientNet-Lite0
# is faster as pairs too (W8A8 13.4 -> 13.0 ms; with 16-channel blocks it had been slower than fp32)
PAIR_MIN_CHANNELS = 8
SIGNED_OFFSET = 128  # int8 codes + 128 are uint8 codes (vpdpbusd's unsigned operand)


def mark_pair_convs(
    mod: IRModule,
    min_channels: int = PAIR_MIN_CHANNELS,
    signed_weights: dict[str, np.ndarray] | None = None,
    quad_depthwise: bool = False,
) -> IRModule:
    """Ask for the pair kernel: every int8 x int8 -> int32 conv2d (any window, ``groups=1``, NCHW) with at
    least ``min_channels`` input channels, channel counts multiples of 8 and its weight a parameter, gets its
    data cast to int16 (same codes), or to uint8 where the codes cannot be negative (the input is a ReLU /
    ReLU6 / sigmoid output: :func:`nonnegative`). :func:`convert_to_blocked` lowers int16 (uint8) x int8
    blocked convs with :func:`pair_conv2d`.

    ``signed_weights`` (AVX512-VNNI, whose ``vpdpbusd`` sums uint8 x int8 quads in int32 without
    saturating): the values of the int8 weight parameters. A conv whose codes can be negative then runs as
    quads too, on ``x + 128`` (uint8), its output corrected by the constant ``128 * sum(w)`` per output
    channel (computed here, fused into the conv's epilogue): half the instructions and half the activation
    bytes of the int16 pairs. Not for a padded conv: its zero border would read as -128 there (such a conv
    keeps the int16 pairs, whose zero border is a zero).

    KxK convs (ResNet-18's 3x3 on ReLU outputs, 160x160, 1 thread, AVX512-VNNI): uniform W8A8 26.3 ms with
    int32-widened code, 7.9 ms as quads, against 19.2 ms fp32.

    ``quad_depthwise`` (:func:`hanasc.targets.isa.supports_quad_depthwise`): an int8 depthwise conv
    (:func:`is_quad_depthwise`) on codes that cannot be negative gets its data cast to uint8, which
    :mod:`hanasc.targets.lowering.quad_depthwise` reads as they are (signed codes stay int8: that kernel
    shifts
    them)."""
    mod = mod.clone()  # the caller's module stays as it was
    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            mod[gv] = _MarkPairConvs(min_channels, signed_weights or {}, quad_depthwise).visit_expr(func)
    return mod


def is_quad_depthwise(call: relax.Call, block: int = QUAD_BLOCK) -> bool:
    """Whether an NCHW ``conv2d`` is an int8 x int8 -> int32 depthwise conv (one channel per group, no
    dilation, its weight a variable) whose channels fill whole ``block``-channel blocks."""
    attrs = call.attrs
    data, weight = call.args
    if (str(attrs.data_layout), str(attrs.kernel_layout), str(attrs.out_layout)) != ("NCHW", "OIHW", "NCHW"):
        return False
    if str(attrs.out_dtype) != "int32" or not isinstance(weight, relax.Var):
        return False
    if str(data.ty.dtype) != "int8" or str(weight.ty.dtype) != "int8" or len(weight.ty.shape) != 4:
        return False
    channels = int(data.ty.shape[1])
    dilated = any(int(d) != 1 for d in attrs.dilation)
    depthwise = int(attrs.groups) == channels == int(weight.ty.shape[0]) and int(weight.ty.shape[1]) == 1
    return depthwise and not dilated and channels % block == 0


def _is_pair_candidate(call: relax.Call, min_channels: int) -> bool:
    attrs = call.attrs
    data, weight = call.args
    if (str(attrs.data_layout), str(attrs.kernel_layout), str(attrs.out_layout)) != ("NCHW", "OIHW", "NCHW"):
        return False
    if int(attrs.groups) != 1 or str(attrs.out_dtype) != "int32" or not isinstance(weight, relax.Var):
        return False
    if str(data.ty.dtype) != "int8" or str(weight.ty.dtype) != "int8":
        return False
    out_channels, in_channels, _, _ = (int(d) for d in weight.ty.shape)  # any window: 1x1, 3x3, 7x1...
    return in_channels >= min_channels and in_channels % 8 == 0 and out_channels % 8 == 0


@relax.expr_functor.mutator
class _MarkPairConvs(relax.PyExprMutator):
    """See :func:`mark_pair_convs`."""

    def __init__(
        self, min_channels: int, signed_weights: dict[str, np.ndarray], quad_depthwise: bool
    ) -> None:
        super().__init__()
        self.min_channels = min_channels
        self.signed_weights = signed_weights
        self.quad_depthwise = quad_depthwise

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if call.op != tvm.ir.Op.get("relax.nn.conv2d"):
            return call
        depthwise = self.quad_depthwise and is_quad_depthwise(call)
        if not depthwise and not _is_pair_candidate(call, self.min_channels):
            return call
        x, weight = call.args
        if nonnegative(x, lambda v: bound_value(self, v)):
            return relax.Call(call.op, [relax.op.astype(x, "uint8"), weight], call.attrs)
        if depthwise:  # signed codes stay int8: the depthwise kernel shifts them as it pads
            return call
        w = self._weight_values(weight)
        padded = any(int(p) for p in call.attrs.padding)
        if w is None or padded or w.dtype != np.int8 or w.ndim != 4:
            return relax.Call(call.op, [relax.op.astype(x, "int16"), weight], call.attrs)
        shifted = relax.op.add(relax.op.astype(x, "int16"), relax.const(SIGNED_OFFSET, "int16"))
        quads = relax.Call(call.op, [relax.op.astype(shifted, "uint8"), weight], call.attrs)
        offset = SIGNED_OFFSET * w.astype(np.int64).sum(axis=(1, 2, 3)).reshape(1, -1, 1, 1)
        return relax.op.subtract(quads, relax.const(offset.astype(np.int32)))

    def _weight_values(self, weight: relax.Var) -> np.ndarray | None:
        """The int8 values of a weight parameter, or of 4/2-bit codes unpacked from one in the graph."""
        if str(weight.name) in self.signed_weights:
            return self.signed_weights[str(weight.name)]
        found = unpacked_param(weight, lambda v: bound_value(self, v), self.signed_weights)
        if found is None:
            return None
        source, bits, shape = found
        return unpack_bits(self.signed_weights[source], bits, shape)


def emit_dot_weight(mutator, weight: relax.Expr, index_map, params: set[str]) -> tuple[relax.Expr, int]:
    """The weight operand of a dot-product conv and its bits, emitted by ``mutator`` (a
    ``relax.PyExprMutator``): ``weight`` (int8) transformed to the kernel's layout by ``index_map``; when
    ``weight`` is :func:`hanasc.passes.packing.unpack_expr` of a 4/2-bit parameter (one of ``params``) and
    its tiles fill whole bytes, those tiles packed (:func:`hanasc.targets.lowering.conv_compute.weight_tiles`,
    computed once when the weights are bound) for the kernel to unpack in its registers.
    ``HANASC_PACKED_TILES=0``: always int8 (the unpacking then runs as a kernel of its own every
    inference)."""
    builder = mutator.builder_
    packed = builder.emit(relax.op.layout_transform(weight, index_map))
    if not isinstance(weight, relax.Var) or os.environ.get("HANASC_PACKED_TILES", "1") == "0":
        return packed, 8
    found = unpacked_param(weight, lambda v: bound_value(mutator, v), params)
    if found is None or not tiles_pack(int(packed.ty.shape[3]), found[1]):
        return packed, 8
    bits = found[1]
    return builder.emit(builder.call_te(weight_tiles, packed, bits, primfunc_name_hint=WEIGHT_TILES)), bits


def param_names(mod: IRModule) -> set[str]:
    """The names of every Relax function's parameters in ``mod``."""
    functions = [f for f in mod.functions.values() if isinstance(f, relax.Function)]
    return {str(p.name) for func in functions for p in func.params}


_NONNEG_ALWAYS = {"relax.nn.relu", "relax.sigmoid", "relax.abs", "relax.exp", "relax.sqrt"}
_NONNEG_KEEP = {
    "relax.round",
    "relax.astype",
    "relax.mean",
    "relax.sum",
    "relax.nn.avg_pool2d",
    "relax.nn.max_pool2d",
    "relax.nn.adaptive_avg_pool2d",
    "relax.layout_transform",
    "relax.reshape",
}


def nonnegative(expr: relax.Expr, binding, depth: int = 24) -> bool:
    """Whether ``expr`` (followed through ``binding(var)``: its bound value, or None) can never be negative,
    proven from its ops: ReLU / sigmoid outputs, ``maximum`` with a non-negative side, ``minimum`` and
    ``clip`` of non-negative values or with a lower bound >= 0, and ops that keep the sign (round, casts,
    pooling, layout changes, ``divide`` / ``multiply`` by positive constants, ``concat`` of non-negative
    parts). Unknown ops: False."""
    if depth == 0:
        return False
    constant = _constant(expr, binding)
    if constant is not None:
        return bool((constant >= 0).all())
    if isinstance(expr, relax.Var):
        value = binding(expr)
        return value is not None and nonnegative(value, binding, depth - 1)
    if not isinstance(expr, relax.Call) or not isinstance(expr.op, tvm.ir.Op):
        return False
    name, args = expr.op.name, expr.args

    def nonneg(e) -> bool:
        return nonnegative(e, binding, depth - 1)

    if name in _NONNEG_ALWAYS:
        return True
    if name in _NONNEG_KEEP:
        return nonneg(args[0])
    if name == "relax.maximum":
        return nonneg(args[0]) or nonneg(args[1])
    if name == "relax.minimum":
        return nonneg(args[0]) and nonneg(args[1])
    if name == "relax.clip":
        low = args[1]
        value = getattr(low, "value", None)
        value = getattr(value, "value", value)  # a PrimValue wraps its PrimExpr
        bound = isinstance(value, (int, float)) and value >= 0
        return bound or nonneg(args[0])
    if name == "relax.concat" and isinstance(args[0], relax.Tuple):  # SqueezeNet's fire outputs
        return all(nonneg(field) for field in args[0].fields)
    if name in ("relax.multiply", "relax.divide"):
        return nonneg(args[0]) and _positive_constant(args[1], binding)
    if name == "relax.add":
        return nonneg(args[0]) and nonneg(args[1])
    return False


def _positive_constant(expr: relax.Expr, binding) -> bool:
    constant = _constant(expr, binding)
    return constant is not None and bool((constant > 0).all())


def _constant(expr: relax.Expr, binding, depth: int = 8) -> np.ndarray | None:
    """The value of ``expr`` when it is a constant expression (constants, ``isnan``, ``where``, ``reshape``:
    what the ONNX importer emits for a ``Clip`` bound), else None."""
    if depth == 0:
        return None
    if isinstance(expr, relax.Var):
        value = binding(expr)
        return None if value is None else _constant(value, binding, depth - 1)
    if isinstance(expr, tvm.ir.expr.Constant):
        return expr.value.numpy()
    if not isinstance(expr, relax.Call) or not isinstance(expr.op, tvm.ir.Op):
        return None
    name = expr.op.name
    if name not in ("relax.isnan", "relax.where", "relax.reshape"):
        return None
    count = 3 if name == "relax.where" else 1
    args = [_constant(a, binding, depth - 1) for a in expr.args[:count]]
    if any(a is None for a in args):
        return None
    if name == "relax.isnan":
        return np.isnan(args[0])
    return np.where(*args) if name == "relax.where" else args[0]


DENSE_BLOCK = 8  # input and output channels per block of a dense lowered as a dot conv


def lower_dot_dense(mod: IRModule, sdot: bool = False) -> IRModule:
    """Every int8 x int8 -> int32 ``matmul`` of a ``(rows, K)`` activation by a ``(K, N)`` weight parameter
    (the classifier), K and N multiples of 8, as a 1x1 dot-product conv on a 1x1 image
    (:func:`hanasc.targets.lowering.conv_compute.pair_conv2d`): the activation reshaped to ``(rows, K/8, 1,
    1, 8)``
    in the codes of the intrinsic (``uint8`` where it cannot be negative, else ``int16`` pairs; ``int8``
    with ``sdot``), the weight by one ``layout_transform`` that late binding applies once, in numpy. The
    widened int32 loop it replaces ran slower than the same layer in fp32 (EfficientNet-Lite0's 1280 x
    1000 classifier on AVX2: 0.41 ms int8 against 0.15 ms fp32; as a quad conv 0.09 ms, the whole W8A8
    model 0.25 ms faster in one process)."""
    return _LowerDotDense(mod, sdot).run()


def _dense_shapes(call: relax.Call) -> tuple[int, int, int] | None:
    """(rows, K, N) of an int8 x int8 -> int32 matmul by a 2-D weight parameter, else None."""
    if call.op != tvm.ir.Op.get("relax.matmul") or str(call.attrs.out_dtype) != "int32":
        return None
    data, weight = call.args
    if not isinstance(weight, relax.Var) or str(data.ty.dtype) != "int8" or str(weight.ty.dtype) != "int8":
        return None
    if len(data.ty.shape) != 2 or len(weight.ty.shape) != 2:
        return None
    (rows, k), (k2, n) = ([int(d) for d in data.ty.shape], [int(d) for d in weight.ty.shape])
    if k != k2 or k % DENSE_BLOCK or n % DENSE_BLOCK:
        return None
    return rows, k, n


@relax.expr_functor.mutator
class _LowerDotDense(relax.PyExprMutator):
    """See :func:`lower_dot_dense`."""

    def __init__(self, mod: IRModule, sdot: bool) -> None:
        super().__init__(mod)
        self.mod_, self.sdot = mod, sdot
        self.params = param_names(mod)

    def run(self) -> IRModule:
        return rewrite_functions(self, self.mod_)

    def _weight_source(self, weight: relax.Var) -> tuple[relax.Var, bool]:
        """The parameter a weight comes from, and whether it is its transpose: one ``layout_transform``
        of the parameter itself is what late binding prepacks (a transform of a transpose would run at
        every inference)."""
        source = self.lookup_binding(weight)
        if (
            isinstance(source, relax.Call)
            and source.op == tvm.ir.Op.get("relax.permute_dims")
            and isinstance(source.args[0], relax.Var)
            and len(source.args[0].ty.shape) == 2
            and (source.attrs.axes is None or [int(a) for a in source.attrs.axes] == [1, 0])
        ):
            return source.args[0], True
        return weight, False

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        shapes = _dense_shapes(call)
        if shapes is None:
            return call
        rows, k, n = shapes
        data, weight = call.args
        if self.sdot:
            codes = "int8"
        else:
            codes = "uint8" if nonnegative(data, lambda v: bound_value(self, v)) else "int16"
        group, block = pair_group(codes), DENSE_BLOCK
        zero = tvm.tirx.const(0, "int64")

        def pack(i, o):  # (K, N) -> (N/8, 1, 1, K/g, 8, g)
            return o // block, zero, zero, i // group, o % block, i % group

        # an (N, K) parameter read through permute_dims (ONNX Gemm with transB=1): the same map, axes swapped
        weight, transposed = self._weight_source(weight)
        index_map = tvm.tirx.IndexMap.from_func(
            (lambda o, i: pack(i, o)) if transposed else pack, ndim=2, index_dtype="int64"
        )
        packed, bits = emit_dot_weight(self, weight, index_map, self.params)
        blocked = self.builder_.emit(
            relax.op.reshape(relax.op.astype(data, codes), (rows, k // block, 1, 1, block))
        )
        name = dot_conv_name(codes)
        out = self.builder_.emit(
            self.builder_.call_te(
                pair_conv2d,
                blocked,
                packed,
                (1, 1),
                (0, 0, 0, 0),
                (1, 1),
                "int32",
                bits,
                primfunc_name_hint=name,
            )
        )
        return relax.op.reshape(out, (rows, n))
