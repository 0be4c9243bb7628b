"""How convolutions are lowered in the CPU pipeline (``LegalizeOps`` rules): blocked ``NCHW[x]c`` convs as
the TE compute :func:`hanasc.targets.lowering.conv_compute.blocked_conv2d`, NCHW convs with blockable output
channels
in output-channel blocks, everything else by TVM's own rules. :mod:`hanasc.targets.lowering.blocked_layout`
decides
the layouts; this module lowers what it produced."""

from __future__ import annotations

import re

import tvm
from tvm import relax
from tvm.ir import IRModule

from hanasc.core.relax_params import rewrite_functions
from hanasc.targets.lowering.conv_compute import blocked_conv2d, out_blocked_conv2d

BLOCKS = (16, 8, 4, 2)  # tried in order; a conv none divides (the RGB stem, odd widths) stays NCHW
BLOCKED_LAYOUT = re.compile(r"NCHW(\d+)c")
_KERNEL = re.compile(r"OIHW(\d+)i(\d+)o")


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
        *window_attrs(attrs),
        block,
        _out_dtype(call),
        primfunc_name_hint="conv2d_nchw_oblocked",
    )


def window_attrs(attrs) -> tuple[list[int], list[int], list[int]]:
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
    if not BLOCKED_LAYOUT.fullmatch(data_layout):
        return legalize_nchw_conv2d(bb, call, out_blocked)
    if str(attrs.out_layout) != data_layout or not _KERNEL.fullmatch(str(attrs.kernel_layout)):
        raise ValueError(f"unsupported blocked conv2d layouts {data_layout}/{attrs.kernel_layout}")
    return bb.call_te(
        blocked_conv2d,
        call.args[0],
        call.args[1],
        *window_attrs(attrs),
        int(attrs.groups),
        _out_dtype(call),
        primfunc_name_hint="conv2d_nchwc",
    )


def legalize_call(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
    """``call`` lowered by TVM's registered legalization (``call_tir`` of a TE compute)."""
    return call.op.get_attr("FLegalize")(bb, call)


@relax.expr_functor.mutator
class LegalizeOpKinds(relax.PyExprMutator):
    """Every call of the op kinds ``ops`` -> its legalized ``call_tir`` (in the layout it has now)."""

    def __init__(self, mod: IRModule, ops: set[str]) -> None:
        super().__init__(mod)
        self.mod_, self.ops = mod, ops

    def run(self) -> IRModule:
        return rewrite_functions(self, self.mod_)

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if isinstance(call.op, tvm.ir.Op) and call.op.name in self.ops:
            return legalize_call(self.builder_, call)
        return call


def legalize_map(out_blocked: bool = False) -> dict:
    """The ``customize_legalize_map`` for ``LegalizeOps`` that lowers blocked convolutions.

    ``out_blocked`` (CPU targets): NCHW convolutions with blockable output channels are computed in
    output-channel blocks too (:func:`out_blocked_conv2d`)."""

    def legalize(bb: relax.BlockBuilder, call: relax.Call) -> relax.Expr:
        return legalize_blocked_conv2d(bb, call, out_blocked)

    return {"relax.nn.conv2d": legalize}
