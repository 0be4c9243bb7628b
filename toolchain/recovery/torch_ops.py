"""ONNX operators as torch functions: what :mod:`hanasc.recovery.torch_form` needs to run a cleaned CNN graph.

Each function takes the node, its input tensors (None for an omitted optional input) and returns its
outputs. Shapes and integer tensors (Shape, Gather, Reshape targets) stay torch int64 tensors. An operator
that is not here makes :class:`UnsupportedOp` name the node, so fine-tuning refuses the model in one line.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper


class UnsupportedOp(Exception):
    """An ONNX operator the torch form does not implement."""


def attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _ints(t: torch.Tensor | None) -> list[int]:
    return [] if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _spatial_padding(a: dict, x: torch.Tensor, kernel: list[int], strides: list[int], dilations: list[int]):
    """ONNX pads as a torch F.pad list (last dimension first), resolving ``auto_pad``."""
    rank = len(kernel)
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads_begin, pads_end = [], []
        for i in range(rank):
            size = x.shape[2 + i]
            out = -(-size // strides[i])
            total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size)
            small, large = total // 2, total - total // 2
            pads_begin.append(small if auto == "SAME_UPPER" else large)
            pads_end.append(large if auto == "SAME_UPPER" else small)
    else:
        pads = list(a.get("pads", [0] * 2 * rank))
        pads_begin, pads_end = pads[:rank], pads[rank:]
    flat: list[int] = []
    for i in reversed(range(rank)):
        flat += [pads_begin[i], pads_end[i]]
    return flat


def conv(node, inputs):
    x, w, b = ([*inputs, None])[:3]
    a = attrs(node)
    kernel = list(w.shape[2:])
    rank = len(kernel)
    strides = list(a.get("strides", [1] * rank))
    dilations = list(a.get("dilations", [1] * rank))
    x = F.pad(x, _spatial_padding(a, x, kernel, strides, dilations))
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[rank]
    return [fn(x, w, b, stride=strides, dilation=dilations, groups=int(a.get("group", 1)))]


def conv_transpose(node, inputs):
    x, w, b = ([*inputs, None])[:3]
    a = attrs(node)
    rank = w.dim() - 2
    pads = list(a.get("pads", [0] * 2 * rank))
    if pads[:rank] != pads[rank:]:
        raise UnsupportedOp(f"ConvTranspose node '{node.name}': asymmetric pads")
    fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[rank]
    return [
        fn(
            x,
            w,
            b,
            stride=list(a.get("strides", [1] * rank)),
            padding=pads[:rank],
            output_padding=list(a.get("output_padding", [0] * rank)),
            groups=int(a.get("group", 1)),
            dilation=list(a.get("dilations", [1] * rank)),
        )
    ]


def gemm(node, inputs):
    x, w, c = ([*inputs, None])[:3]
    a = attrs(node)
    x = x.t() if a.get("transA", 0) else x
    w = w.t() if a.get("transB", 0) else w
    y = a.get("alpha", 1.0) * (x @ w)
    return [y if c is None else y + a.get("beta", 1.0) * c]


def _pool_args(node, x):
    a = attrs(node)
    kernel = list(a["kernel_shape"])
    strides = list(a.get("strides", [1] * len(kernel)))
    padded = F.pad(x, _spatial_padding(a, x, kernel, strides, [1] * len(kernel)), value=float("-inf"))
    return a, kernel, strides, padded


def max_pool(node, inputs):
    a, kernel, strides, x = _pool_args(node, inputs[0])
    fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[len(kernel)]
    return [fn(x, kernel, strides, ceil_mode=bool(a.get("ceil_mode", 0)))]


def average_pool(node, inputs):
    a = attrs(node)
    x = inputs[0]
    kernel = list(a["kernel_shape"])
    strides = list(a.get("strides", [1] * len(kernel)))
    pads = _spatial_padding(a, x, kernel, strides, [1] * len(kernel))
    x = F.pad(x, pads)
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[len(kernel)]
    include = bool(a.get("count_include_pad", 0)) or not any(pads)
    if not include:
        raise UnsupportedOp(f"AveragePool node '{node.name}': padding excluded from the count")
    return [fn(x, kernel, strides, ceil_mode=bool(a.get("ceil_mode", 0)))]


def _axes(node, inputs, index: int = 1) -> list[int] | None:
    a = attrs(node)
    if "axes" in a:
        return list(a["axes"])
    return _ints(inputs[index]) if len(inputs) > index and inputs[index] is not None else None


def reduce(fn_name: str):
    def op(node, inputs):
        a = attrs(node)
        axes = _axes(node, inputs)
        keep = bool(a.get("keepdims", 1))
        x = inputs[0]
        if not axes:
            axes = list(range(x.dim()))
        return [getattr(torch, fn_name)(x, dim=axes, keepdim=keep)]

    return op


def clip(node, inputs):
    a = attrs(node)
    lo = inputs[1] if len(inputs) > 1 and inputs[1] is not None else a.get("min")
    hi = inputs[2] if len(inputs) > 2 and inputs[2] is not None else a.get("max")
    return [torch.clamp(inputs[0], None if lo is None else float(lo), None if hi is None else float(hi))]


def reshape(node, inputs):
    x, shape = inputs[0], _ints(inputs[1])
    shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return [x.reshape(shape)]


def flatten(node, inputs):
    axis = attrs(node).get("axis", 1)
    x = inputs[0]
    axis = axis if axis >= 0 else x.dim() + axis
    return [x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)]


def slice_op(node, inputs):
    x = inputs[0]
    starts, ends = _ints(inputs[1]), _ints(inputs[2])
    axes = _ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else list(range(len(starts)))
    steps = _ints(inputs[4]) if len(inputs) > 4 and inputs[4] is not None else [1] * len(starts)
    index = [slice(None)] * x.dim()
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        if step < 0:
            raise UnsupportedOp(f"Slice node '{node.name}': negative steps")
        size = x.shape[axis]
        index[axis] = slice(max(-size, min(start, size)), max(-size, min(end, size)), step)
    return [x[tuple(index)]]


def squeeze(node, inputs):
    axes = _axes(node, inputs)
    x = inputs[0]
    if axes is None:
        return [x.squeeze()]
    for axis in sorted((a if a >= 0 else a + x.dim() for a in axes), reverse=True):
        x = x.squeeze(axis)
    return [x]


def unsqueeze(node, inputs):
    x = inputs[0]
    axes = _axes(node, inputs) or []
    rank = x.dim() + len(axes)
    for axis in sorted(a if a >= 0 else a + rank for a in axes):
        x = x.unsqueeze(axis)
    return [x]


def batch_norm(node, inputs):
    x, scale, bias, mean, var = inputs[:5]
    eps = attrs(node).get("epsilon", 1e-5)
    return [F.batch_norm(x, mean, var, scale, bias, training=False, eps=eps)]


def resize(node, inputs):
    a = attrs(node)
    x = inputs[0]
    scales = inputs[2] if len(inputs) > 2 and inputs[2] is not None and inputs[2].numel() else None
    sizes = _ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else None
    mode = a.get("mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    torch_mode = {"nearest": "nearest", "linear": "bilinear" if x.dim() == 4 else "linear"}.get(mode)
    if torch_mode is None:
        raise UnsupportedOp(f"Resize node '{node.name}': mode {mode}")
    kwargs = {} if torch_mode == "nearest" else {"align_corners": False}
    if sizes:
        return [F.interpolate(x, size=sizes[2:], mode=torch_mode, **kwargs)]
    factors = [float(s) for s in scales.tolist()[2:]]
    return [F.interpolate(x, scale_factor=factors, mode=torch_mode, **kwargs)]


_CASTS = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.FLOAT16: torch.float16,
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.BOOL: torch.bool,
}


def cast(node, inputs):
    to = attrs(node)["to"]
    if to not in _CASTS:
        raise UnsupportedOp(f"Cast node '{node.name}': to type {to}")
    return [inputs[0].to(_CASTS[to])]


def constant(node, inputs):
    value = numpy_helper.to_array(attrs(node)["value"]) if "value" in attrs(node) else None
    if value is None:
        raise UnsupportedOp(f"Constant node '{node.name}': only a tensor 'value'")
    return [torch.from_numpy(np.array(value))]


def softmax(node, inputs):
    return [torch.softmax(inputs[0], dim=attrs(node).get("axis", -1))]


def hard_sigmoid(node, inputs):
    a = attrs(node)
    return [torch.clamp(a.get("alpha", 0.2) * inputs[0] + a.get("beta", 0.5), 0.0, 1.0)]


def concat(node, inputs):
    return [torch.cat(inputs, dim=attrs(node)["axis"])]


def split(node, inputs):
    a = attrs(node)
    axis = a.get("axis", 0)
    sizes = list(a["split"]) if "split" in a else _ints(inputs[1]) if len(inputs) > 1 else None
    if not sizes:
        sizes = [inputs[0].shape[axis] // len(node.output)] * len(node.output)
    return list(torch.split(inputs[0], sizes, dim=axis))


def gather(node, inputs):
    axis = attrs(node).get("axis", 0)
    return [
        torch.index_select(inputs[0], axis, inputs[1].reshape(-1).long()).reshape(
            (*inputs[0].shape[:axis], *inputs[1].shape, *inputs[0].shape[axis + 1 :])
        )
    ]


def pad(node, inputs):
    a = attrs(node)
    pads = _ints(inputs[1]) if len(inputs) > 1 else list(a["pads"])
    value = float(inputs[2]) if len(inputs) > 2 and inputs[2] is not None else 0.0
    rank = len(pads) // 2
    flat: list[int] = []
    for i in reversed(range(rank)):
        flat += [pads[i], pads[rank + i]]
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    return [
        F.pad(inputs[0], flat, mode=mode, value=value) if mode == "constant" else F.pad(inputs[0], flat, mode)
    ]


def _unary(fn: Callable) -> Callable:
    return lambda node, inputs: [fn(inputs[0])]


def _binary(fn: Callable) -> Callable:
    return lambda node, inputs: [fn(inputs[0], inputs[1])]


OPS: dict[str, Callable] = {
    "Conv": conv,
    "ConvTranspose": conv_transpose,
    "Gemm": gemm,
    "MatMul": _binary(torch.matmul),
    "Add": _binary(torch.add),
    "Sub": _binary(torch.sub),
    "Mul": _binary(torch.mul),
    "Div": _binary(torch.div),
    "Pow": _binary(torch.pow),
    "Sqrt": _unary(torch.sqrt),
    "Exp": _unary(torch.exp),
    "Log": _unary(torch.log),
    "Neg": _unary(torch.neg),
    "Abs": _unary(torch.abs),
    "Erf": _unary(torch.erf),
    "Relu": _unary(F.relu),
    "Sigmoid": _unary(torch.sigmoid),
    "Tanh": _unary(torch.tanh),
    "HardSwish": _unary(F.hardswish),
    "HardSigmoid": hard_sigmoid,
    "LeakyRelu": lambda node, inputs: [F.leaky_relu(inputs[0], attrs(node).get("alpha", 0.01))],
    "Clip": clip,
    "Softmax": softmax,
    "GlobalAveragePool": _unary(lambda x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True)),
    "GlobalMaxPool": _unary(lambda x: x.amax(dim=tuple(range(2, x.dim())), keepdim=True)),
    "AveragePool": average_pool,
    "MaxPool": max_pool,
    "ReduceMean": reduce("mean"),
    "ReduceSum": reduce("sum"),
    "Flatten": flatten,
    "Reshape": reshape,
    "Transpose": lambda node, inputs: [inputs[0].permute(*attrs(node)["perm"])],
    "Concat": concat,
    "Split": split,
    "Slice": slice_op,
    "Squeeze": squeeze,
    "Unsqueeze": unsqueeze,
    "Identity": _unary(lambda x: x),
    "Dropout": _unary(lambda x: x),
    "Constant": constant,
    "BatchNormalization": batch_norm,
    "Resize": resize,
    "Cast": cast,
    "Shape": _unary(lambda x: torch.tensor(list(x.shape), dtype=torch.int64)),
    "Gather": gather,
    "Pad": pad,
}


def unsupported_nodes(graph: onnx.GraphProto) -> list[str]:
    """One line per node of ``graph`` that has no torch form (empty: the graph runs in torch)."""
    return [
        f"node '{node.name}': operator {node.op_type} has no torch form"
        for node in graph.node
        if node.op_type not in OPS or node.domain not in ("", "ai.onnx")
    ]


def run_node(node: onnx.NodeProto, inputs: list) -> list:
    """The outputs of ``node`` (an operator of :data:`OPS`)."""
    op = OPS.get(node.op_type)
    if op is None or node.domain not in ("", "ai.onnx"):
        raise UnsupportedOp(f"node '{node.name}': operator {node.op_type} has no torch form")
    return op(node, inputs)
