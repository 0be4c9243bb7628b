"""A Config's architecture choices written back into the ONNX graph (for runtimes that read ONNX: OpenVINO).

The Relax passes define what each choice does; this module reproduces their structure on the cleaned ONNX
graph and takes every weight from the Relax module the passes materialized, so the two agree by
construction (tests compare onnxruntime on the result with TVM on the materialized module):

- skipped residual block: the block's ``Add`` is bypassed (its users read the skip input; an Identity
  keeps a graph output's name), the dead branch is removed;
- width: every initializer the passes sliced takes its new shape; depthwise ``group`` follows the channels;
- kernel shrink: the cropped weight, ``kernel_shape`` and pads reduced by the crop margin;
- separable: ``L`` becomes ``L.dw`` (KxK, group = Cin, the original strides/pads/dilations) then ``L.pw``
  (1x1, the original bias).

Precision choices are not applied here (the target quantizes the exported graph itself); the returned
Config carries them over to the new node names.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hanasc.errors import HanascError
from hanasc.frontend import LoadedModel
from hanasc.layers import node_attr
from hanasc.passes.config import Config, LayerChoice


class OnnxRewriteError(HanascError):
    """The ONNX graph has a form the rewriter cannot reproduce the passes' change on."""


def architecture_only(config: Config) -> Config:
    """``config`` without precision choices (float weights and activations everywhere)."""
    layers = {
        name: dataclasses.replace(choice, w_bits=32, a_bits=32) for name, choice in config.layers.items()
    }
    return Config({k: v for k, v in layers.items() if not v.is_identity()}, skip=list(config.skip))


def has_architecture_changes(config: Config) -> bool:
    return bool(architecture_only(config).layers or config.skip)


def _set_attr(node: onnx.NodeProto, name: str, value) -> None:
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(helper.make_attribute(name, value))


def _bypass_skipped_blocks(graph: onnx.GraphProto, skipped: list) -> None:
    """Each skipped block's Add output is replaced by its skip input; the Add goes."""
    replaced: dict[str, str] = {}  # a bypassed Add's output -> what stands for it now (chained skips)
    for block in skipped:
        skip = block.skip
        while skip in replaced:
            skip = replaced[skip]
        add = next((n for n in graph.node if n.name == block.add_node), None)
        if add is None:
            raise OnnxRewriteError(f"residual block '{block.name}': Add node '{block.add_node}' not found")
        out = add.output[0]
        replaced[out] = skip
        index = list(graph.node).index(add)
        graph.node.remove(add)
        if any(output.name == out for output in graph.output):  # keep the graph output's name
            graph.node.insert(index, helper.make_node("Identity", [skip], [out], name=add.name))
            continue
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name == out:
                    node.input[i] = skip


def _remove_dead(graph: onnx.GraphProto) -> None:
    """Drop nodes whose outputs nothing uses, then unused initializers; clear stale value_info."""
    while True:
        used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    del graph.value_info[:]


def _conv_pads(node: onnx.NodeProto, spatial: int) -> list[int]:
    auto_pad = node_attr(node, "auto_pad", b"NOTSET")
    if (auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad) not in ("NOTSET", ""):
        raise OnnxRewriteError(f"node '{node.name}': auto_pad convs cannot be shrunk (explicit pads needed)")
    return list(node_attr(node, "pads", [0] * (2 * spatial)))


def _rewrite_convs(graph: onnx.GraphProto, config: Config, weights: dict[str, np.ndarray]) -> None:
    """Kernel shrink and separable substitution on the Conv nodes named by ``config``."""
    for node in list(graph.node):
        if node.op_type != "Conv" or node.name not in config.layers:
            continue
        choice = config.layers[node.name]
        layer = node.name
        init = next((i for i in graph.initializer if i.name == node.input[1]), None)
        if init is None:
            raise OnnxRewriteError(f"node '{layer}': its weight '{node.input[1]}' is not an initializer")
        original_k = numpy_helper.to_array(init).shape[2:]
        kernel_weight = weights[f"{layer}.dw.weight" if choice.separable else f"{layer}.weight"]
        new_k = kernel_weight.shape[2:]
        if tuple(new_k) != tuple(original_k):
            pads = _conv_pads(node, len(new_k))
            margins = [(a - b) // 2 for a, b in zip(original_k, new_k, strict=True)]
            _set_attr(node, "pads", [p - m for p, m in zip(pads, margins * 2, strict=True)])
            _set_attr(node, "kernel_shape", [int(k) for k in new_k])
        if not choice.separable:
            continue
        index = list(graph.node).index(node)
        mid = f"{node.output[0]}.dw"
        depthwise = helper.make_node("Conv", [node.input[0], f"{layer}.dw.weight"], [mid], name=f"{layer}.dw")
        depthwise.attribute.extend(a for a in node.attribute if a.name != "group")
        _set_attr(depthwise, "group", int(kernel_weight.shape[0]))
        pointwise = helper.make_node(
            "Conv",
            [mid, f"{layer}.pw.weight", *node.input[2:]],
            list(node.output),
            name=f"{layer}.pw",
            kernel_shape=[1] * len(new_k),
            strides=[1] * len(new_k),
            pads=[0] * (2 * len(new_k)),
            dilations=[1] * len(new_k),
            group=1,
        )
        graph.node.remove(node)
        graph.node.insert(index, pointwise)
        graph.node.insert(index, depthwise)


def _set_weights(graph: onnx.GraphProto, weights: dict[str, np.ndarray]) -> None:
    """Initializers take the materialized values (new shapes included); depthwise groups follow them."""
    inits = {i.name: i for i in graph.initializer}
    for name, value in weights.items():
        tensor = numpy_helper.from_array(np.ascontiguousarray(value), name)
        if name in inits:
            inits[name].CopyFrom(tensor)
        else:
            graph.initializer.append(tensor)
    for node in graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in weights:
            continue
        group = int(node_attr(node, "group", 1))
        w = weights[node.input[1]]
        if group > 1 and w.shape[1] == 1:  # depthwise: one group per channel
            _set_attr(node, "group", int(w.shape[0]))


def rename_choices(config: Config, graph: onnx.GraphProto) -> Config:
    """``config``'s choices for the exported graph's layers: ``L.dw``/``L.pw`` inherit ``L``'s precision."""
    names = {node.name for node in graph.node}
    layers: dict[str, LayerChoice] = {}
    for name, choice in config.layers.items():
        precision = LayerChoice(w_bits=choice.w_bits, a_bits=choice.a_bits)
        targets = [f"{name}.dw", f"{name}.pw"] if choice.separable else [name]
        for target in targets:
            if target in names and not precision.is_identity():
                layers[target] = dataclasses.replace(precision)
    return Config(layers)


def export_architecture(model: LoadedModel, config: Config) -> tuple[onnx.ModelProto, Config]:
    """The cleaned ONNX with ``config``'s architecture choices applied, and the Config renamed to match.

    Weights come from :func:`hanasc.passes.materialize.materialize` on the float (architecture-only)
    Config, so the exported graph computes what the Relax module computes.
    """
    from hanasc.passes.depth import residual_blocks_onnx
    from hanasc.passes.materialize import materialize
    from hanasc.relax_params import weights_of

    arch = architecture_only(config)
    exported = onnx.ModelProto()
    exported.CopyFrom(model.onnx_model)
    if not has_architecture_changes(config):
        return exported, config
    weights = weights_of(materialize(model.mod, arch))
    graph = exported.graph
    blocks = {b.name: b for b in residual_blocks_onnx(model.onnx_model)}
    missing = [name for name in config.skip if name not in blocks]
    if missing:
        raise OnnxRewriteError(f"skipped block '{missing[0]}' is not a residual block of the ONNX graph")
    _bypass_skipped_blocks(graph, [blocks[name] for name in config.skip])
    _remove_dead(graph)
    present = {node.name for node in graph.node}
    _rewrite_convs(graph, Config({k: v for k, v in arch.layers.items() if k in present}), weights)
    used = {name for node in graph.node for name in node.input}
    _set_weights(graph, {k: v for k, v in weights.items() if k in used})
    _remove_dead(graph)
    try:
        exported = onnx.shape_inference.infer_shapes(exported, strict_mode=True)
        onnx.checker.check_model(exported)
    except Exception as exc:  # onnx raises several types; the user needs the first line
        raise OnnxRewriteError(
            f"the architecture-changed ONNX graph is invalid: {str(exc).strip().splitlines()[0]}"
        ) from None
    return exported, rename_choices(config, exported.graph)
