"""Build the simulation graph: the cleaned ONNX model with every search choice as a runtime input.

- layer weights become graph inputs (quantized, masked, cropped or rank-structured in numpy),
- each searchable layer's data input passes through an activation fake-quantizer chosen at run time
  (ONNX ``If`` on boolean inputs): ``fq8(x) = clip(round(x/s)) * s`` with a runtime scale ``s``, or an fp16
  round trip, or ``x`` unchanged (a disabled quantizer costs nothing),
- each identity-residual block's branch is multiplied by a runtime gate (0 skips the block),
- the batch dimension is enlarged so one run evaluates many samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hanasc.core.layers import LayerInfo
from hanasc.passes.onnx_batch import batch_one_reshapes


@dataclass(frozen=True)
class ResidualGate:
    """Where a residual block's branch enters its Add node."""

    block: str
    add_node: str
    branch_input: int  # index of the Add input that carries the block's branch


def act_scale_input(layer: str) -> str:
    return f"{layer}::act_scale"


def gate_q8_input(layer: str) -> str:
    return f"{layer}::gate_q8"


def gate_f16_input(layer: str) -> str:
    return f"{layer}::gate_f16"


def block_gate_input(block: str) -> str:
    return f"{block}::gate"


def build_simulation_graph(
    model: onnx.ModelProto,
    layers: list[LayerInfo],
    gates: list[ResidualGate],
    batch: int,
    qmin: float,
    qmax: float,
) -> onnx.ModelProto:
    """Return the simulation graph (a new model; ``model`` is not changed)."""
    sim = onnx.ModelProto()
    sim.CopyFrom(model)
    graph = sim.graph
    _set_batch(graph, batch)
    _weights_to_inputs(graph, layers)
    _insert_activation_quantizers(graph, layers, qmin, qmax)
    _insert_block_gates(graph, gates)
    for value_info in list(graph.value_info):
        graph.value_info.remove(value_info)
    for out in graph.output:
        if out.type.tensor_type.shape.dim:
            out.type.tensor_type.shape.dim[0].dim_value = batch
    return onnx.shape_inference.infer_shapes(sim, strict_mode=True)


def _scalar_input(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [])


def _set_batch(graph: onnx.GraphProto, batch: int) -> None:
    """Give the inputs batch ``batch``; Reshape targets that hard-code batch 1 copy dim 0 instead (each
    such Reshape reads a new initializer: the old target may be shared with other nodes)."""
    for inp in graph.input:
        dims = inp.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_value = batch
    if batch == 1:
        return  # the graph as exported (the simulator's fallback when a rebatched graph does not infer)
    targets = batch_one_reshapes(graph)
    for index, node in enumerate(graph.node):
        if node.op_type == "Reshape" and node.output[0] in targets:
            name = f"hanasc_rebatched_shape_{index}"
            graph.initializer.append(numpy_helper.from_array(targets[node.output[0]], name))
            node.input[1] = name


def _weights_to_inputs(graph: onnx.GraphProto, layers: list[LayerInfo]) -> None:
    names = {layer.weight for layer in layers} | {layer.bias for layer in layers if layer.bias}
    keep = []
    for init in graph.initializer:
        if init.name in names:
            graph.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        else:
            keep.append(init)
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _branch(name: str, nodes: list[onnx.NodeProto], output: str) -> onnx.GraphProto:
    """An If-branch subgraph producing ``output`` (shapes left to inference)."""
    return helper.make_graph(
        nodes, name, [], [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)]
    )


def _insert_activation_quantizers(
    graph: onnx.GraphProto, layers: list[LayerInfo], qmin: float, qmax: float
) -> None:
    """In front of each layer: ``If(q8) fq8(x) else If(f16) fp16(x) else x`` (disabled: no cost)."""
    by_name = {layer.name: layer for layer in layers}
    nodes = list(graph.node)
    new_nodes: list[onnx.NodeProto] = [
        helper.make_node("Constant", [], ["sim::qmin"], value=numpy_helper.from_array(np.float32(qmin))),
        helper.make_node("Constant", [], ["sim::qmax"], value=numpy_helper.from_array(np.float32(qmax))),
    ]
    for node in nodes:
        if node.name in by_name:
            layer = node.name
            x, p = node.input[0], f"sim::{layer}::"
            s, g8, g16 = act_scale_input(layer), gate_q8_input(layer), gate_f16_input(layer)
            graph.input.extend(
                [
                    _scalar_input(s),
                    helper.make_tensor_value_info(g8, TensorProto.BOOL, []),
                    helper.make_tensor_value_info(g16, TensorProto.BOOL, []),
                ]
            )
            fq8 = _branch(
                p + "fq8",
                [
                    helper.make_node("Reciprocal", [s], [p + "inv"]),  # as passes.quantize.inverse_scale
                    helper.make_node("Mul", [x, p + "inv"], [p + "scaled"]),
                    helper.make_node("Round", [p + "scaled"], [p + "round"]),
                    helper.make_node("Clip", [p + "round", "sim::qmin", "sim::qmax"], [p + "clip"]),
                    helper.make_node("Mul", [p + "clip", s], [p + "fq8"]),
                ],
                p + "fq8",
            )
            f16 = _branch(
                p + "f16",
                [
                    helper.make_node("Cast", [x], [p + "h"], to=TensorProto.FLOAT16),
                    helper.make_node("Cast", [p + "h"], [p + "f16"], to=TensorProto.FLOAT),
                ],
                p + "f16",
            )
            same = _branch(p + "same", [helper.make_node("Identity", [x], [p + "same"])], p + "same")
            inner = _branch(
                p + "inner",
                [
                    helper.make_node("If", [g16], [p + "inner"], then_branch=f16, else_branch=same),
                ],
                p + "inner",
            )
            new_nodes.append(helper.make_node("If", [g8], [p + "x"], then_branch=fq8, else_branch=inner))
            node.input[0] = p + "x"
        new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)


def _insert_block_gates(graph: onnx.GraphProto, gates: list[ResidualGate]) -> None:
    by_node = {gate.add_node: gate for gate in gates}
    new_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        gate = by_node.get(node.name)
        if gate is not None:
            g = block_gate_input(gate.block)
            graph.input.append(_scalar_input(g))
            branch = node.input[gate.branch_input]
            gated = f"sim::{gate.block}::gated"
            new_nodes.append(helper.make_node("Mul", [branch, g], [gated]))
            node.input[gate.branch_input] = gated
        new_nodes.append(node)
    missing = set(by_node) - {n.name for n in graph.node}
    if missing:
        raise ValueError(f"residual Add nodes not found in the graph: {sorted(missing)}")
    del graph.node[:]
    graph.node.extend(new_nodes)
