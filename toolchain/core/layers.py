"""The layer table: every layer the search can change, with shapes, MACs and parameters; peak activations."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx

SEARCHABLE_OPS = ("Conv", "Gemm", "MatMul")  # the ONNX operators the search can change


@dataclass(frozen=True)
class LayerInfo:
    """One searchable layer (conv, depthwise conv, grouped conv, dense)."""

    name: str
    op: str  # "conv" | "depthwise_conv" | "grouped_conv" | "dense"
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    groups: int
    params: int
    macs: int
    weight_bytes: int
    weight: str  # initializer / Relax parameter holding the weight
    bias: str | None

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class LayerTotals:
    macs: int
    params: int
    weight_bytes: int
    peak_activation_bytes: int


def node_attr(node: onnx.NodeProto, name: str, default=None):
    """The value of ``node``'s attribute ``name``, or ``default`` when it is absent."""
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def tensor_shapes(model: onnx.ModelProto) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Static shape and dtype of every tensor known after shape inference."""
    out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    graph = model.graph
    for info in [*graph.input, *graph.value_info, *graph.output]:
        ttype = info.type.tensor_type
        if not ttype.HasField("shape"):
            continue
        dims = tuple(d.dim_value for d in ttype.shape.dim)
        out[info.name] = (dims, onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type))
    for init in graph.initializer:
        out[init.name] = (tuple(init.dims), onnx.helper.tensor_dtype_to_np_dtype(init.data_type))
    for node in graph.node:
        if node.op_type == "Constant":
            value = node_attr(node, "value", None)
            if value is not None:
                out[node.output[0]] = (
                    tuple(value.dims),
                    onnx.helper.tensor_dtype_to_np_dtype(value.data_type),
                )
    return out


def layer_table(model: onnx.ModelProto) -> list[LayerInfo]:
    """List the searchable layers of a cleaned, shape-inferred model in graph order."""
    shapes = tensor_shapes(model)
    inits = {init.name for init in model.graph.initializer}
    layers = []
    for node in model.graph.node:
        if node.op_type not in SEARCHABLE_OPS or len(node.input) < 2 or node.input[1] not in inits:
            continue
        in_shape = shapes.get(node.input[0], ((), None))[0]
        out_shape = shapes.get(node.output[0], ((), None))[0]
        w_shape = shapes[node.input[1]][0]
        bias = node.input[2] if len(node.input) > 2 and node.input[2] in inits else None
        b_params = int(np.prod(shapes[bias][0])) if bias else 0
        w_params = int(np.prod(w_shape))
        if node.op_type == "Conv":
            groups = int(node_attr(node, "group", 1))
            kernel = tuple(w_shape[2:])
            stride = tuple(node_attr(node, "strides", [1] * len(kernel)))
            cin = in_shape[1] if len(in_shape) > 1 else w_shape[1] * groups
            if groups == 1:
                op = "conv"
            elif groups == cin and w_shape[1] == 1:
                op = "depthwise_conv"
            else:
                op = "grouped_conv"
            macs = int(np.prod(out_shape)) * int(np.prod(w_shape[1:])) if out_shape else 0
        else:
            groups, kernel, stride, op = 1, (), (), "dense"
            k_dim = w_shape[0] if node.op_type == "MatMul" or not node_attr(node, "transB", 0) else w_shape[1]
            macs = int(np.prod(out_shape)) * int(k_dim) if out_shape else 0
        params = w_params + b_params
        layers.append(
            LayerInfo(
                name=node.name,
                op=op,
                in_shape=tuple(in_shape),
                out_shape=tuple(out_shape),
                weight_shape=tuple(w_shape),
                kernel=kernel,
                stride=stride,
                groups=groups,
                params=params,
                macs=macs,
                weight_bytes=params * 4,
                weight=node.input[1],
                bias=bias,
            )
        )
    return layers


def peak_activation_bytes(model: onnx.ModelProto) -> int:
    """Peak bytes of live activations over a liveness walk of the graph in its (topological) order.

    A tensor is allocated when its producer runs and freed after its last consumer; graph inputs live
    from the start, graph outputs to the end. Weights and constants are not activations.
    """
    graph = model.graph
    shapes = tensor_shapes(model)
    constant_names = {init.name for init in graph.initializer} | {
        n.output[0] for n in graph.node if n.op_type == "Constant"
    }

    def nbytes(name: str) -> int:
        if name not in shapes or name in constant_names:
            return 0
        dims, dtype = shapes[name]
        return int(np.prod(dims)) * np.dtype(dtype).itemsize

    last_use: dict[str, int] = {}
    for step, node in enumerate(graph.node):
        for name in node.input:
            if name:
                last_use[name] = step
    outputs = {o.name for o in graph.output}
    for name in outputs:
        last_use[name] = len(graph.node)
    live = {inp.name: nbytes(inp.name) for inp in graph.input}
    peak = current = sum(live.values())
    for step, node in enumerate(graph.node):
        for name in node.output:
            if name and name not in live:
                live[name] = nbytes(name)
                current += live[name]
        peak = max(peak, current)
        for name in {*node.input, *node.output}:
            if name in live and last_use.get(name, -1) <= step and name not in outputs:
                current -= live.pop(name)
    return peak


def totals(model: onnx.ModelProto, layers: list[LayerInfo]) -> LayerTotals:
    return LayerTotals(
        macs=sum(layer.macs for layer in layers),
        params=sum(layer.params for layer in layers),
        weight_bytes=sum(layer.weight_bytes for layer in layers),
        peak_activation_bytes=peak_activation_bytes(model),
    )
