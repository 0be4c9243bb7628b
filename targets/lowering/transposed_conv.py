"""Transposed convolutions whose kernel equals their stride, as a 1x1 convolution and a depth-to-space.

A ``ConvTranspose`` with kernel ``k x k``, stride ``k``, no padding and no dilation (a U-Net's or an FPN's
2x up-convolution) writes each input pixel to its own ``k x k`` output patch: the patches do not overlap, so

    y[n, o, h*k + i, w*k + j] = sum_c x[n, c, h, w] * W[c, o, i, j]

is a 1x1 convolution to ``O * k * k`` channels, ``(o, i, j)`` in C order, followed by moving those
channels into the patch (a reshape, a transpose and a reshape). The 1x1 convolution then takes the CPU
targets' blocked kernels; TVM's own ``conv2d_transpose`` lowering (zero-inserted input, untiled loops) ran
U-Net-tiny's one up-convolution (64 -> 32 channels, 48x80 -> 96x160) in 26.5 ms of the model's 32 ms on
one Zen 4 core, where onnxruntime runs the whole model in 4.8 ms. Other transposed convolutions (overlapping
windows, padding, groups) are left as they are.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir import IRModule

from hanasc.core.relax_params import rewrite_functions

_TRANSPOSE = "relax.nn.conv2d_transpose"


def transposed_convs_as_convs(mod: IRModule) -> IRModule:
    """Every non-overlapping ``conv2d_transpose`` of ``mod`` (see the module docstring) rewritten as
    ``conv2d`` (1x1) + depth-to-space; the others, and every other op, unchanged."""
    return rewrite_functions(_AsConv(mod), mod)


def is_patch_transpose(call: relax.Call) -> bool:
    """Whether ``call`` is a ``conv2d_transpose`` whose windows do not overlap: kernel == stride, no
    padding, output padding or dilation, one group, NCHW data and IOHW weights."""
    if not isinstance(call.op, tvm.ir.Op) or call.op.name != _TRANSPOSE:
        return False
    attrs = call.attrs
    layouts = (str(attrs.data_layout), str(attrs.kernel_layout), str(attrs.out_layout))
    kernel = [int(d) for d in list(call.args[1].ty.shape)[2:]]
    return (
        layouts == ("NCHW", "IOHW", "NCHW")
        and int(attrs.groups) == 1
        and [int(s) for s in attrs.strides] == kernel
        and all(int(p) == 0 for p in attrs.padding)
        and all(int(p) == 0 for p in attrs.output_padding)
        and all(int(d) == 1 for d in attrs.dilation)
    )


@relax.expr_functor.mutator
class _AsConv(relax.PyExprMutator):
    """See :func:`transposed_convs_as_convs`."""

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not is_patch_transpose(call):
            return call
        data, weight = call.args
        n, _, height, width = (int(d) for d in data.ty.shape)
        in_channels, out_channels, kh, kw = (int(d) for d in weight.ty.shape)
        weight_1x1 = _as_pointwise(weight, in_channels, out_channels * kh * kw)
        out_dtype = call.attrs.out_dtype
        conv = relax.op.nn.conv2d(data, weight_1x1, out_dtype=str(out_dtype) if out_dtype else None)
        patches = relax.op.reshape(conv, (n, out_channels, kh, kw, height, width))
        moved = relax.op.permute_dims(patches, [0, 1, 4, 2, 5, 3])  # (n, o, h, i, w, j)
        return relax.op.reshape(moved, (n, out_channels, height * kh, width * kw))


def _as_pointwise(weight: relax.Expr, in_channels: int, out_channels: int) -> relax.Expr:
    """IOHW ``weight`` as an OIHW 1x1 kernel with ``(o, i, j)`` output channels: computed here when it is a
    constant, else in the graph (folded once the weights are bound)."""
    if isinstance(weight, tvm.ir.expr.Constant):
        value = weight.value.numpy()
        pointwise = np.ascontiguousarray(value.transpose(1, 2, 3, 0).reshape(out_channels, in_channels, 1, 1))
        return relax.const(pointwise, str(value.dtype))
    moved = relax.op.permute_dims(weight, [1, 2, 3, 0])
    return relax.op.reshape(moved, (out_channels, in_channels, 1, 1))
