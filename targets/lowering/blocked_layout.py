"""Channel-blocked convolutions for CPUs (NCHW[x]c): the layout x86 and Arm vector units like.

In ``NCHW16c`` an activation is ``(N, C/16, H, W, 16)``: the innermost 16 channels fill one AVX-512
register (or four NEON registers), so a convolution's inner loop is a broadcast-multiply-add of a
16-wide weight vector, and a depthwise convolution vectorizes over channels with unit stride.

TVM 0.27's Relax ``ConvertLayout`` rewrites ``nn.conv2d`` to ``NCHW16c`` (and propagates the layout
through element-wise ops that have a layout rule), but ``LegalizeOps`` cannot lower a blocked
convolution. :func:`hanasc.targets.lowering.blocked_lowering.legalize_blocked_conv2d` is that lowering (a TE
compute), and :func:`convert_to_blocked` the whole rewrite: ``clip`` as ``maximum``/``minimum``
(``clip`` has no layout rule), then ``ConvertLayout``. Convolutions whose channels are not multiples of
the block (the RGB stem) stay in NCHW; ``layout_transform`` ops convert at the boundaries.

Where ``ConvertLayout`` has no rule for an op (TVM raises), the op is lowered in NCHW before the rewrite, so
that the layout changes around it, and where even that fails, the round's convolutions stay NCHW: the
result is always a correct module, and :class:`LayoutReport` says what fell back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import tvm
from tvm import relax
from tvm.ir import IRModule

from hanasc.core.relax_params import rewrite_functions
from hanasc.targets.lowering.blocked_lowering import (
    BLOCKED_LAYOUT,
    BLOCKS,
    LegalizeOpKinds,
    legalize_blocked_conv2d,
    legalize_call,
    window_attrs,
)
from hanasc.targets.lowering.broadcast_constants import full_rank_constants
from hanasc.targets.lowering.conv_compute import (
    dot_conv_name,
    pair_conv2d,
    pair_group,
    pair_index_map,
)
from hanasc.targets.lowering.dot_convs import emit_dot_weight, lower_dot_dense, mark_pair_convs, param_names
from hanasc.targets.lowering.layout_rewrites import (
    clip_as_min_max,
    fold_layout_transform_pairs,
    is_unpadded_transform,
)
from hanasc.targets.lowering.quad_depthwise import (
    QUAD_BLOCK,
    QUAD_DEPTHWISE,
    QUAD_OFFSET,
    QUAD_WEIGHT,
    quad_depthwise_conv2d,
    quad_offset,
    quad_weight,
)
from hanasc.targets.quiet import filtered_native_stderr


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
    signed_weights: dict | None = None,
    quad_depthwise: bool = False,
) -> IRModule:
    """Every conv2d in ``NCHW{b}c`` for the first block ``b`` that divides its channels (else NCHW).

    Each round converts the convolutions its block divides (``ConvertLayout`` carries the layout through
    the element-wise ops around them), then lowers them, and every other op it left in a blocked layout
    (pooling), to ``call_tir`` so that the next, smaller block only converts the convolutions still in NCHW.

    ``pair_kernels`` (x86 with AVX2, :func:`hanasc.targets.isa.supports_pair_kernels`): int8 standard
    convs (:func:`mark_pair_convs`) are lowered with :func:`pair_conv2d`, their weight parameter
    transformed to :func:`pair_kernel_layout` in the graph (prepacked once when the weights are bound).
    ``sdot`` (aarch64 with dotprod, :func:`hanasc.targets.isa.supports_sdot`): every int8 x int8 conv
    (any window, ``groups=1``) is lowered the same way on its int8 codes, 4 input channels a lane.
    ``signed_weights`` (AVX512-VNNI): int8 weight values by parameter name; with them, pair-kernel convs on
    signed codes run as quads too (:func:`mark_pair_convs`). ``quad_depthwise`` (x86 with AVX512-VNNI and
    VBMI, :func:`hanasc.targets.isa.supports_quad_depthwise`): int8 depthwise convs in 16-channel
    blocks are lowered with :func:`hanasc.targets.lowering.quad_depthwise.quad_depthwise_conv2d`.

    Never raises for a layout the rewrite cannot handle: such ops stay NCHW (:func:`_convert_round`), and
    ``report`` (when given) records what fell back.
    """
    report = report if report is not None else LayoutReport()
    try:
        mod = full_rank_constants(clip_as_min_max(mod))
        if pair_kernels:
            mod = mark_pair_convs(mod, signed_weights=signed_weights, quad_depthwise=quad_depthwise)
        dots = pair_kernels or sdot
        if dots:
            mod = lower_dot_dense(mod, sdot=sdot)
        original = mod
        for index, block in enumerate(blocks):
            mod = _convert_round(mod, block, report)
            if index < len(blocks) - 1:
                mod = _LowerBlockedConvs(mod, dots, sdot=sdot, quad_depthwise=quad_depthwise).run()
            elif dots:
                mod = _LowerBlockedConvs(mod, dots, True, sdot, quad_depthwise).run()
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
            return convert(LegalizeOpKinds(mod, set(ops)).run())
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


@relax.expr_functor.mutator
class _LowerBlockedConvs(relax.PyExprMutator):
    """Blocked ``nn.conv2d`` calls, and other ops in a blocked layout, -> ``call_tir`` (leaves every other
    op, and NCHW convs, alone)."""

    def __init__(
        self,
        mod: IRModule,
        pairs: bool = False,
        pairs_only: bool = False,
        sdot: bool = False,
        quad_depthwise: bool = False,
    ):
        super().__init__(mod)
        self.mod_ = mod
        self.pairs, self.pairs_only, self.sdot = pairs, pairs_only, sdot
        self.quad_depthwise = quad_depthwise
        self.params = param_names(mod)

    def run(self) -> IRModule:
        return rewrite_functions(self, self.mod_)

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or not BLOCKED_LAYOUT.fullmatch(_layout_attr(call) or ""):
            return call
        if call.op != tvm.ir.Op.get("relax.nn.conv2d"):
            # pooling (or any op) left in a blocked layout: its layout rule checks for 4-D inputs, so the
            # next round's ConvertLayout would fail on it; TVM's own lowering handles NCHW[x]c
            return call if self.pairs_only else legalize_call(self.builder_, call)
        depthwise = self._quad_depthwise(call) if self.quad_depthwise else None
        if depthwise is not None:
            return depthwise
        weight = self._pair_weight(call) if self.pairs else None
        if weight is not None:
            attrs = call.attrs
            group = pair_group(call.args[0].ty.dtype)
            index_map = pair_index_map(int(call.ty.shape[-1]), group)
            packed, bits = emit_dot_weight(self, weight, index_map, self.params)
            return self.builder_.call_te(
                pair_conv2d,
                call.args[0],
                packed,
                *window_attrs(attrs),
                "int32",
                bits,
                primfunc_name_hint=dot_conv_name(call.args[0].ty.dtype),
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
        weight = self._oihw_weight(kernel)
        if weight is None or len(weight.ty.shape) != 4 or int(weight.ty.shape[1]) % pair_group(data.ty.dtype):
            return None
        return weight

    def _oihw_weight(self, kernel: relax.Expr) -> relax.Var | None:
        """The OIHW variable a blocked conv's kernel was transformed from (None: another expression)."""
        source = self.lookup_binding(kernel) if isinstance(kernel, relax.Var) else kernel
        if not is_unpadded_transform(source) or not isinstance(source.args[0], relax.Var):
            return None
        return source.args[0]

    def _quad_depthwise(self, call: relax.Call) -> relax.Expr | None:
        """An int8 depthwise conv in 16-channel blocks as :func:`quad_depthwise_conv2d` (its weight, and
        for signed codes the offset, computed from the OIHW weight by graph ops), else None."""
        data, kernel = call.args
        attrs = call.attrs
        if str(data.ty.dtype) not in ("uint8", "int8") or str(kernel.ty.dtype) != "int8":
            return None
        channels = int(data.ty.shape[1]) * int(data.ty.shape[-1])
        if int(data.ty.shape[-1]) != QUAD_BLOCK or int(attrs.groups) != channels:
            return None
        if str(attrs.out_dtype) != "int32" or any(int(d) != 1 for d in attrs.dilation):
            return None
        weight = self._oihw_weight(kernel)
        if weight is None or [int(d) for d in weight.ty.shape][:2] != [channels, 1]:
            return None
        bb = self.builder_
        tiles = bb.emit(bb.call_te(quad_weight, weight, primfunc_name_hint=QUAD_WEIGHT))
        offset = None
        if str(data.ty.dtype) == "int8":
            offset = bb.emit(bb.call_te(quad_offset, weight, primfunc_name_hint=QUAD_OFFSET))
        strides, padding, _ = window_attrs(attrs)
        kernel_width = int(weight.ty.shape[3])
        return bb.call_te(
            quad_depthwise_conv2d,
            data,
            tiles,
            strides,
            padding,
            kernel_width,
            offset,
            primfunc_name_hint=QUAD_DEPTHWISE,
        )
