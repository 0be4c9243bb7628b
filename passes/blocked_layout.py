"""Channel-blocked convolutions for CPUs (NCHW[x]c): the layout x86 and Arm vector units like.

In ``NCHW16c`` an activation is ``(N, C/16, H, W, 16)``: the innermost 16 channels fill one AVX-512
register (or four NEON registers), so a convolution's inner loop is a broadcast-multiply-add of a
16-wide weight vector, and a depthwise convolution vectorizes over channels with unit stride.

TVM 0.27's Relax ``ConvertLayout`` rewrites ``nn.conv2d`` to ``NCHW16c`` (and propagates the layout
through element-wise ops that have a layout rule), but ``LegalizeOps`` cannot lower a blocked
convolution. :func:`legalize_blocked_conv2d` is that lowering (a TE compute), and
:func:`convert_to_blocked` the whole rewrite: ``clip`` as ``maximum``/``minimum`` (``clip`` has no layout
rule), then ``ConvertLayout``. Convolutions whose channels are not multiples of the block (the RGB stem)
stay in NCHW; ``layout_transform`` ops convert at the boundaries.

Where ``ConvertLayout`` has no rule for an op (TVM raises), the op is lowered in NCHW before the rewrite, so
that the layout changes around it, and where even that fails, the round's convolutions stay NCHW: the
result is always a correct module, and :class:`LayoutReport` says what fell back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax, te
from tvm.ir import IRModule
from tvm.relax.dpl import is_op, rewrite_call, wildcard

from hanasc.relax_params import bound_value

BLOCKS = (16, 8, 4, 2)  # tried in order; a conv none divides (the RGB stem, odd widths) stays NCHW
_BLOCKED = re.compile(r"NCHW(\d+)c")
_KERNEL = re.compile(r"OIHW(\d+)i(\d+)o")


def _sliding_window(data: te.Tensor, kh: int, kw: int, strides, padding, dilation):
    """``(padded data, out_h, out_w, (sh, sw), (dh, dw))`` of a KhxKw window over axes 2 and 3 of ``data``
    (NCHW or NCHWc); ``padding`` is (top, left, bottom, right)."""
    height, width = int(data.shape[2]), int(data.shape[3])
    sh, sw = (int(s) for s in strides)
    dh, dw = (int(d) for d in dilation)
    top, left, bottom, right = (int(p) for p in padding)
    out_h = (height + top + bottom - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + left + right - dw * (kw - 1) - 1) // sw + 1
    inner = (0,) * (len(data.shape) - 4)
    padded = (
        tvm.topi.nn.pad(data, (0, 0, top, left, *inner), (0, 0, bottom, right, *inner), name="pad")
        if top or left or bottom or right
        else data
    )
    return padded, out_h, out_w, (sh, sw), (dh, dw)


def blocked_conv2d(
    data: te.Tensor, kernel: te.Tensor, strides, padding, dilation, groups: int, out_dtype: str = ""
) -> te.Tensor:
    """``(N, C/b, H, W, b)`` x ``(O/b, I/ib, Kh, Kw, ib, b)`` -> ``(N, O/b, OH, OW, b)``.

    ``groups`` is 1 (a full convolution, ``ib`` the input block) or the channel count (depthwise, kernel
    ``(C/b, 1, Kh, Kw, 1, b)``). ``padding`` is (top, left, bottom, right). Products and sums are in
    ``out_dtype`` (default: the data's; int8 convolutions accumulate in int32).
    """
    n, c_chunks, _, _, block = (int(d) for d in data.shape)
    o_chunks, i_chunks, kh, kw, i_block, o_block = (int(d) for d in kernel.shape)
    padded, out_h, out_w, (sh, sw), (dh, dw) = _sliding_window(data, kh, kw, strides, padding, dilation)
    ry, rx = te.reduce_axis((0, kh), "ry"), te.reduce_axis((0, kw), "rx")
    dtype = out_dtype or data.dtype
    if groups == 1:
        rc = te.reduce_axis((0, i_chunks * i_block), "rc")
        return te.compute(
            (n, o_chunks, out_h, out_w, o_block),
            lambda b, oc, y, x, ob: te.sum(
                padded[b, rc // block, y * sh + ry * dh, x * sw + rx * dw, rc % block].astype(dtype)
                * kernel[oc, rc // i_block, ry, rx, rc % i_block, ob].astype(dtype),
                axis=[rc, ry, rx],
            ),
            name="conv2d_nchwc",
        )
    if groups != c_chunks * block or o_chunks != c_chunks or o_block != block:
        raise ValueError(f"blocked conv2d: groups={groups} is neither 1 nor depthwise")
    return te.compute(
        (n, o_chunks, out_h, out_w, o_block),
        lambda b, oc, y, x, ob: te.sum(
            padded[b, oc, y * sh + ry * dh, x * sw + rx * dw, ob].astype(dtype)
            * kernel[oc, 0, ry, rx, 0, ob].astype(dtype),
            axis=[ry, rx],
        ),
        name="depthwise_conv2d_nchwc",
    )


def out_blocked_conv2d(
    data: te.Tensor, kernel: te.Tensor, strides, padding, dilation, block: int, out_dtype: str = ""
) -> te.Tensor:
    """``(N, C, H, W)`` x ``(O, C, Kh, Kw)`` -> ``(N, O, OH, OW)``, computed in blocks of ``block`` output
    channels: for a convolution that stays NCHW because its input channels do not block (the RGB stem).

    Three stages: the weights repacked to ``(O/b, C, Kh, Kw, b)`` (``weight_pack``, a few hundred values
    per call), the convolution into a ``(N, O/b, OH, OW, b)`` buffer (``conv2d_nchw_oblocked``: the
    channel block is the vector :class:`hanasc.targets.cpu_schedules.BlockedConv` puts in registers) and
    its copy back to NCHW (``conv2d_nchw_unblock``, where the fused epilogue goes).
    """
    n = int(data.shape[0])
    out_channels, in_channels, kh, kw = (int(d) for d in kernel.shape)
    padded, out_h, out_w, (sh, sw), (dh, dw) = _sliding_window(data, kh, kw, strides, padding, dilation)
    packed = te.compute(
        (out_channels // block, in_channels, kh, kw, block),
        lambda oc, c, y, x, ob: kernel[oc * block + ob, c, y, x],
        name="weight_pack",
    )
    dtype = out_dtype or data.dtype
    compute = _exact_float_dtype(data.dtype, kernel.dtype, dtype, in_channels * kh * kw)
    rc, ry, rx = (
        te.reduce_axis((0, in_channels), "rc"),
        te.reduce_axis((0, kh), "ry"),
        te.reduce_axis((0, kw), "rx"),
    )
    conv = te.compute(
        (n, out_channels // block, out_h, out_w, block),
        lambda b, oc, y, x, ob: te.sum(
            padded[b, rc, y * sh + ry * dh, x * sw + rx * dw].astype(compute)
            * packed[oc, rc, ry, rx, ob].astype(compute),
            axis=[rc, ry, rx],
        ),
        name="conv2d_nchw_oblocked",
    )
    return te.compute(
        (n, out_channels, out_h, out_w),
        lambda b, c, y, x: conv[b, c // block, y, x, c % block].astype(dtype),
        name="conv2d_nchw_unblock",
    )


PAIR_CONV = "conv2d_nchwc_int_pairs"  # the block name cpu_schedules.BlockedConv tensorizes with vpmaddwd
QUAD_CONV = "conv2d_nchwc_int_quads"  # non-negative uint8 codes x int8, tensorized with vpmaddubsw
SDOT_CONV = "conv2d_nchwc_int_sdot"  # int8 x int8 quads on aarch64 with dotprod (targets.arm_int8)
# every int8 pointwise conv: with 8-channel blocks (AVX2) the 16-input-channel expand of EfficientNet-Lite0
# is faster as pairs too (W8A8 13.4 -> 13.0 ms; with 16-channel blocks it had been slower than fp32)
PAIR_MIN_CHANNELS = 8


def pair_group(data_dtype: str) -> int:
    """Input channels per intrinsic lane for a marked conv's data: 2 for int16 codes (``vpmaddwd``), 4 for
    non-negative uint8 codes (``vpmaddubsw``) and for int8 codes (``sdot``)."""
    return 2 if str(data_dtype) == "int16" else 4


def _dot_conv_name(data_dtype: str) -> str:
    return {"int16": PAIR_CONV, "uint8": QUAD_CONV}.get(str(data_dtype), SDOT_CONV)


def pair_kernel_layout(out_block: int, group: int = 2) -> str:
    """The kernel layout of a pair (quad) conv: ``(O/ob, Kh, Kw, I/g, ob, g)``, ``g`` input channels
    innermost."""
    return f"OHWI{out_block}o{group}i"


def pair_conv2d(data: te.Tensor, kernel: te.Tensor, strides, padding, dilation, out_dtype: str = "int32"):
    """``(N, C/b, H, W, b)`` int16 (uint8) x ``(O/ob, Kh, Kw, C/g, ob, g)`` int8 -> ``(N, O/ob, OH, OW, ob)``
    int32, ``g`` = :func:`pair_group` (2 for int16 data, 4 for uint8).

    The convolution the ``vpmaddwd`` (``vpmaddubsw``) intrinsic computes (:mod:`hanasc.targets.x86_int8`):
    the reduction is split as (C/b, Kh, Kw, b/g, g) so that the innermost ``g`` input channels are adjacent
    in both the activation and the weight (no division in the index expressions). ``g`` must divide ``b``.
    """
    n, c_chunks, _, _, block = (int(d) for d in data.shape)
    o_chunks, kh, kw, _, o_block, group = (int(d) for d in kernel.shape)
    padded, out_h, out_w, (sh, sw), (dh, dw) = _sliding_window(data, kh, kw, strides, padding, dilation)
    per_block = block // group
    rco, ry, rx = (
        te.reduce_axis((0, c_chunks), "rco"),
        te.reduce_axis((0, kh), "ry"),
        te.reduce_axis((0, kw), "rx"),
    )
    rci, k = te.reduce_axis((0, per_block), "rci"), te.reduce_axis((0, group), "k")
    return te.compute(
        (n, o_chunks, out_h, out_w, o_block),
        lambda b, oc, y, x, ob: te.sum(
            padded[b, rco, y * sh + ry * dh, x * sw + rx * dw, rci * group + k].astype(out_dtype)
            * kernel[oc, ry, rx, rco * per_block + rci, ob, k].astype(out_dtype),
            axis=[rco, ry, rx, rci, k],
        ),
        name=_dot_conv_name(data.dtype),
    )


def mark_pair_convs(mod: IRModule, min_channels: int = PAIR_MIN_CHANNELS) -> IRModule:
    """Ask for the pair kernel: every int8 x int8 -> int32 pointwise conv2d (1x1, ``groups=1``, NCHW) with at
    least ``min_channels`` input channels, channel counts multiples of 8 and its weight a parameter, gets its
    data cast to int16 (same codes), or to uint8 where the codes cannot be negative (the input is a ReLU /
    ReLU6 / sigmoid output: :func:`nonnegative`). :func:`convert_to_blocked` lowers int16 (uint8) x int8
    blocked convs with :func:`pair_conv2d`."""
    for gv, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            mod[gv] = _MarkPairConvs(min_channels).visit_expr(func)
    return mod


def _is_pair_candidate(call: relax.Call, min_channels: int) -> bool:
    attrs = call.attrs
    data, weight = call.args
    if (str(attrs.data_layout), str(attrs.kernel_layout), str(attrs.out_layout)) != ("NCHW", "OIHW", "NCHW"):
        return False
    if int(attrs.groups) != 1 or str(attrs.out_dtype) != "int32" or not isinstance(weight, relax.Var):
        return False
    if str(data.ty.dtype) != "int8" or str(weight.ty.dtype) != "int8":
        return False
    out_channels, in_channels, kh, kw = (int(d) for d in weight.ty.shape)
    return (
        (kh, kw) == (1, 1) and in_channels >= min_channels and in_channels % 8 == 0 and out_channels % 8 == 0
    )


@relax.expr_functor.mutator
class _MarkPairConvs(relax.PyExprMutator):
    """See :func:`mark_pair_convs`."""

    def __init__(self, min_channels: int) -> None:
        super().__init__()
        self.min_channels = min_channels

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if call.op != tvm.ir.Op.get("relax.nn.conv2d") or not _is_pair_candidate(call, self.min_channels):
            return call
        codes = "uint8" if nonnegative(call.args[0], lambda v: bound_value(self, v)) else "int16"
        data = relax.op.astype(call.args[0], codes)
        return relax.Call(call.op, [data, call.args[1]], call.attrs)


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
    pooling, layout changes, ``divide`` / ``multiply`` by positive constants). Unknown ops: False."""
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


def _exact_float_dtype(data_dtype: str, kernel_dtype: str, out_dtype: str, reduction: int) -> str:
    """The dtype to accumulate a convolution in: ``float32`` for an int8 x int8 -> int32 one whose sums
    of ``reduction`` products stay below 2**24 (each partial sum is then an exact float32 integer, and
    vector FMAs are cheaper than AVX2's ``vpmulld``), else ``out_dtype``."""
    dtypes = {str(data_dtype), str(kernel_dtype)}
    largest = 128 if dtypes == {"int8"} else 255 if dtypes <= {"int8", "uint8"} else None
    exact = largest is not None and reduction * largest * largest < 2**24
    return "float32" if exact and str(out_dtype) == "int32" else out_dtype


def _out_block(call: relax.Call) -> int | None:
    """The output-channel block for an NCHW/OIHW ``groups=1`` conv2d (None: not such a conv)."""
    attrs = call.attrs
    layouts = (str(attrs.data_layout), str(attrs.kernel_layout), str(attrs.out_layout))
    if layouts != ("NCHW", "OIHW", "NCHW") or int(attrs.groups) != 1:
        return None
    out_channels = int(call.args[1].ty.shape[0])
    return next((b for b in BLOCKS if out_channels % b == 0), None)


def legalize_nchw_conv2d(bb: relax.BlockBuilder, call: relax.Call, out_blocked: bool) -> relax.Expr:
    """An NCHW conv2d: :func:`out_blocked_conv2d` when ``out_blocked`` and its output channels block,
    else TVM's own lowering."""
    block = _out_block(call) if out_blocked else None
    if block is None:
        from tvm.relax.transform.legalize_ops.nn import _nn_conv2d

        return _nn_conv2d(bb, call)
    attrs = call.attrs
    return bb.call_te(
        out_blocked_conv2d,
        call.args[0],
        call.args[1],
        *_window_attrs(attrs),
        block,
        _out_dtype(call),
        primfunc_name_hint="conv2d_nchw_oblocked",
    )


def _window_attrs(attrs) -> tuple[list[int], list[int], list[int]]:
    """A conv2d call's strides, padding and dilation as the TE computes take them."""
    return (
        [int(s) for s in attrs.strides],
        [int(p) for p in attrs.padding],
        [int(d) for d in attrs.dilation],
    )


def _out_dtype(call: relax.Call) -> str:
    dtype = str(call.attrs.out_dtype)
    return "" if dtype in ("", "void", "None") else dtype


def legalize_blocked_conv2d(
    bb: relax.BlockBuilder, call: relax.Call, out_blocked: bool = False
) -> relax.Expr:
    """``LegalizeOps`` rule for ``relax.nn.conv2d``: blocked layouts via :func:`blocked_conv2d`, NCHW ones
    via :func:`legalize_nchw_conv2d`."""
    attrs = call.attrs
    data_layout = str(attrs.data_layout)
    if not _BLOCKED.fullmatch(data_layout):
        return legalize_nchw_conv2d(bb, call, out_blocked)
    if str(attrs.out_layout) != data_layout or not _KERNEL.fullmatch(str(attrs.kernel_layout)):
        raise ValueError(f"unsupported blocked conv2d layouts {data_layout}/{attrs.kernel_layout}")
    return bb.call_te(
        blocked_conv2d,
        call.args[0],
        call.args[1],
        *_window_attrs(attrs),
        int(attrs.groups),
        _out_dtype(call),
        primfunc_name_hint="conv2d_nchwc",
    )


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


@dataclass
class LayoutReport:
    """What :func:`convert_to_blocked` could not convert; everything else runs blocked.

    ``kept_nchw``: op name -> how many of its calls were lowered in NCHW because ``ConvertLayout`` had no
    rule for them in a blocked layout; ``skipped_blocks``: blocks whose round failed even so (their
    convolutions stay NCHW); ``whole_module``: why nothing was converted (None: converted); ``errors``: the
    first line of each TVM error met.
    """

    kept_nchw: dict[str, int] = field(default_factory=dict)
    skipped_blocks: list[int] = field(default_factory=list)
    whole_module: str | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def fell_back(self) -> bool:
        return bool(self.kept_nchw or self.skipped_blocks or self.whole_module)

    def summary(self) -> str:
        """One line: what fell back to NCHW (or that nothing did)."""
        if self.whole_module:
            return f"layout: whole module NCHW ({self.whole_module})"
        parts = [f"{n} {op.removeprefix('relax.')} kept NCHW" for op, n in sorted(self.kept_nchw.items())]
        parts += [f"NCHW{b}c round skipped" for b in self.skipped_blocks]
        return "layout: " + ("; ".join(parts) if parts else "blocked where channels allow")

    def to_json(self) -> dict:
        return {
            "kept_nchw": dict(self.kept_nchw),
            "skipped_blocks": list(self.skipped_blocks),
            "whole_module": self.whole_module,
            "errors": list(self.errors),
        }


def first_line(exc: BaseException) -> str:
    """A TVM error's message in one line (its check, not its traceback)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    marks = ("Check failed", "InternalError", "TVMError")
    checks = [line for line in lines if any(mark in line for mark in marks)]
    text = (checks or lines or [type(exc).__name__])[-1]
    return text[:200]


def convert_to_blocked(
    mod: IRModule,
    blocks: tuple[int, ...] = BLOCKS,
    pair_kernels: bool = False,
    report: LayoutReport | None = None,
    sdot: bool = False,
) -> IRModule:
    """Every conv2d in ``NCHW{b}c`` for the first block ``b`` that divides its channels (else NCHW).

    Each round converts the convolutions its block divides (``ConvertLayout`` carries the layout through
    the element-wise ops around them), then lowers them, and every other op it left in a blocked layout
    (pooling), to ``call_tir`` so that the next, smaller block only converts the convolutions still in NCHW.

    ``pair_kernels`` (x86 with AVX2, :func:`hanasc.targets.x86_int8.supports_pair_kernels`): int8 pointwise
    convs (:func:`mark_pair_convs`) are lowered with :func:`pair_conv2d`, their weight parameter
    transformed to :func:`pair_kernel_layout` in the graph (prepacked once when the weights are bound).
    ``sdot`` (aarch64 with dotprod, :func:`hanasc.targets.arm_int8.supports_sdot`): every int8 x int8 conv
    (any window, ``groups=1``) is lowered the same way on its int8 codes, 4 input channels a lane.

    Never raises for a layout the rewrite cannot handle: such ops stay NCHW (:func:`_convert_round`), and
    ``report`` (when given) records what fell back.
    """
    report = report if report is not None else LayoutReport()
    try:
        mod = clip_as_min_max(mod)
        if pair_kernels:
            mod = mark_pair_convs(mod)
        original = mod
        dots = pair_kernels or sdot
        for index, block in enumerate(blocks):
            mod = _convert_round(mod, block, report)
            if index < len(blocks) - 1:
                mod = _LowerBlockedConvs(mod, dots, sdot=sdot).run()
            elif dots:
                mod = _LowerBlockedConvs(mod, dots, pairs_only=True, sdot=sdot).run()
        return fold_layout_transform_pairs(mod)
    except Exception as exc:  # any failure of the rewrite itself: the module as it came, in NCHW
        report.whole_module = first_line(exc)
        report.errors.append(report.whole_module)
        return original if "original" in locals() else mod


def _convert_round(mod: IRModule, block: int, report: LayoutReport) -> IRModule:
    """``ConvertLayout`` of the convolutions to ``NCHW{block}c``. Where TVM has no layout rule for an op
    that the new layout reaches, that op kind is lowered in NCHW first (``call_tir`` is opaque to the
    rewrite, which converts back to NCHW before it); the smallest set of such op kinds that lets the round
    convert is kept. Where none does, the round is skipped (its convolutions stay NCHW)."""
    from hanasc.targets.quiet import filtered_native_stderr

    rewrite = relax.transform.ConvertLayout({"relax.nn.conv2d": [f"NCHW{block}c", f"OIHW1i{block}o"]})

    def convert(module: IRModule) -> IRModule:
        # a rewrite that raises leaves TVM's C++ "BlockBuilder destroyed with remaining blocks!" on stderr
        with filtered_native_stderr(("BlockBuilder destroyed with remaining blocks",)):
            return rewrite(module)

    try:
        return convert(mod)
    except Exception as exc:  # TVM raises InternalError / TVMError for an op it has no rule for
        report.errors.append(first_line(exc))

    def attempt(ops: list[str]) -> IRModule | None:
        try:
            return convert(_LegalizeOps(mod, set(ops)).run())
        except Exception:  # still no rule: more ops must stay NCHW
            return None

    kept: list[str] = []
    for op in _fallback_candidates(mod):
        kept.append(op)
        if attempt(kept) is not None:
            break
    else:
        report.skipped_blocks.append(block)
        return mod
    for op in list(kept):  # keep only the op kinds the round really needs in NCHW
        if len(kept) > 1 and attempt([k for k in kept if k != op]) is not None:
            kept.remove(op)
    counts = _op_counts(mod)
    for op in kept:
        report.kept_nchw[op] = report.kept_nchw.get(op, 0) + counts.get(op, 0)
    return attempt(kept)


_LAYOUT_TRANSFORM = "relax.layout_transform"
_NEVER_FALLBACK = {"relax.nn.conv2d", _LAYOUT_TRANSFORM}


def _op_counts(mod: IRModule) -> dict[str, int]:
    """How many calls of each Relax operator the module's Relax functions hold."""
    counts: dict[str, int] = {}

    @relax.expr_functor.visitor
    class Counter(relax.PyExprVisitor):
        def visit_call_(self, call: relax.Call) -> None:
            super().visit_call_(call)
            if isinstance(call.op, tvm.ir.Op):
                counts[call.op.name] = counts.get(call.op.name, 0) + 1

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            Counter().visit_expr(func)
    return counts


def _layout_attr(call: relax.Call) -> str | None:
    """A call's data layout attribute (``layout`` or ``data_layout``), if it has one."""
    for name in ("data_layout", "layout"):
        try:
            return str(getattr(call.attrs, name))
        except AttributeError:
            continue
    return None


def _fallback_candidates(mod: IRModule) -> list[str]:
    """Op kinds that can be lowered ahead of the rewrite: those with a layout attribute (pooling, resize;
    the usual suspects) first, then the rest; never conv2d (what the rewrite is for)."""
    layouts: dict[str, bool] = {}

    @relax.expr_functor.visitor
    class Finder(relax.PyExprVisitor):
        def visit_call_(self, call: relax.Call) -> None:
            super().visit_call_(call)
            op = call.op
            if not isinstance(op, tvm.ir.Op) or op.name in _NEVER_FALLBACK:
                return
            if op.get_attr("FLegalize") is None or op.get_attr("FRelaxInferLayout") is None:
                return
            layouts[op.name] = layouts.get(op.name, False) or _layout_attr(call) is not None

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            Finder().visit_expr(func)
    return sorted(layouts, key=lambda op: (not layouts[op], op))


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
        if not _is_unpadded_transform(call) or not isinstance(call.args[0], relax.Var):
            return call
        inner = self.var2val.get(call.args[0])
        if not _is_unpadded_transform(inner) or self.uses.get(call.args[0], 0) != 1:
            return call
        first, second = inner.attrs.index_map, call.attrs.index_map
        composed = tvm.tirx.IndexMap.from_func(
            lambda *i: second.map_indices(first.map_indices(list(i))), ndim=len(first.initial_indices)
        )
        return relax.op.layout_transform(inner.args[0], composed)


def _is_unpadded_transform(expr) -> bool:
    return (
        isinstance(expr, relax.Call)
        and isinstance(expr.op, tvm.ir.Op)
        and expr.op.name == _LAYOUT_TRANSFORM
        and expr.attrs.pad_value is None
    )


@relax.expr_functor.mutator
class _LowerBlockedConvs(relax.PyExprMutator):
    """Blocked ``nn.conv2d`` calls, and other ops in a blocked layout, -> ``call_tir`` (leaves every other
    op, and NCHW convs, alone)."""

    def __init__(self, mod: IRModule, pairs: bool = False, pairs_only: bool = False, sdot: bool = False):
        super().__init__(mod)
        self.mod_ = mod
        self.pairs, self.pairs_only, self.sdot = pairs, pairs_only, sdot

    def run(self) -> IRModule:
        for gv, func in list(self.mod_.functions.items()):
            if isinstance(func, relax.Function):
                self.builder_.update_func(gv, self.visit_expr(func))
        return self.builder_.get()

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or not _BLOCKED.fullmatch(_layout_attr(call) or ""):
            return call
        if call.op != tvm.ir.Op.get("relax.nn.conv2d"):
            # pooling (or any op) left in a blocked layout: its layout rule checks for 4-D inputs, so the
            # next round's ConvertLayout would fail on it; TVM's own lowering handles NCHW[x]c
            return call if self.pairs_only else _legalize(self.builder_, call)
        weight = self._pair_weight(call) if self.pairs else None
        if weight is not None:
            attrs = call.attrs
            group = pair_group(call.args[0].ty.dtype)
            packed = relax.op.layout_transform(weight, _pair_index_map(int(call.ty.shape[-1]), group))
            return self.builder_.call_te(
                pair_conv2d,
                call.args[0],
                self.builder_.emit(packed),
                *_window_attrs(attrs),
                "int32",
                primfunc_name_hint=_dot_conv_name(call.args[0].ty.dtype),
            )
        return call if self.pairs_only else legalize_blocked_conv2d(self.builder_, call)

    def _pair_weight(self, call: relax.Call):
        """The OIHW int8 weight parameter of an int16 (uint8) x int8 -> int32 blocked conv (None: not a pair
        conv)."""
        data, kernel = call.args
        dtypes = ("int8",) if self.sdot else ("int16", "uint8")
        if str(data.ty.dtype) not in dtypes or str(kernel.ty.dtype) != "int8":
            return None
        if int(call.attrs.groups) != 1 or int(data.ty.shape[-1]) % pair_group(data.ty.dtype):
            return None
        if str(call.attrs.out_dtype) != "int32" or int(call.ty.shape[-1]) % (4 if self.sdot else 8):
            return None
        source = self.lookup_binding(kernel) if isinstance(kernel, relax.Var) else kernel
        if not _is_unpadded_transform(source) or not isinstance(source.args[0], relax.Var):
            return None
        weight = source.args[0]
        if len(weight.ty.shape) != 4 or int(weight.ty.shape[1]) % pair_group(data.ty.dtype):
            return None
        return weight


def _legalize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    """``call`` lowered by TVM's registered legalization (``call_tir`` of a TE compute)."""
    return call.op.get_attr("FLegalize")(bb, call)


@relax.expr_functor.mutator
class _LegalizeOps(relax.PyExprMutator):
    """Every call of the op kinds ``ops`` -> its legalized ``call_tir`` (in the layout it has now)."""

    def __init__(self, mod: IRModule, ops: set[str]) -> None:
        super().__init__(mod)
        self.mod_, self.ops = mod, ops

    def run(self) -> IRModule:
        for gv, func in list(self.mod_.functions.items()):
            if isinstance(func, relax.Function):
                self.builder_.update_func(gv, self.visit_expr(func))
        return self.builder_.get()

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if isinstance(call.op, tvm.ir.Op) and call.op.name in self.ops:
            return _legalize(self.builder_, call)
        return call


def _pair_index_map(out_block: int, group: int = 2):
    """OIHW -> :func:`pair_kernel_layout` (``(O/ob, Kh, Kw, I/g, ob, g)``)."""
    return tvm.tirx.IndexMap.from_func(
        lambda o, i, y, x: (o // out_block, y, x, i // group, o % out_block, i % group), ndim=4
    )


def legalize_map(out_blocked: bool = False) -> dict:
    """The ``customize_legalize_map`` for ``LegalizeOps`` that lowers blocked convolutions.

    ``out_blocked`` (CPU targets): NCHW convolutions with blockable output channels are computed in
    output-channel blocks too (:func:`out_blocked_conv2d`)."""

    def legalize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        return legalize_blocked_conv2d(bb, call, out_blocked)

    return {"relax.nn.conv2d": legalize}
