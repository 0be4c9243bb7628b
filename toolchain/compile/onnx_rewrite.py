"""A Config's architecture choices written back into the ONNX graph (for runtimes that read ONNX: OpenVINO).

The Relax passes define what each choice does; this module reproduces their structure on the cleaned ONNX
graph and takes every weight from the Relax module the passes materialized, so the two agree by
construction (tests compare onnxruntime on the result with TVM on the materialized module):

The graph is edited with onnx-graphsurgeon (import, rewire, ``cleanup``, ``toposort``, export):

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

from hanasc.core.errors import HanascError
from hanasc.frontend.loading import LoadedModel
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


def _bypass_skipped_blocks(graph, skipped: list) -> None:
    """Each skipped block's Add output is replaced by its skip input (an Identity keeps a graph output's
    name); ``graph.cleanup()`` then drops the dead branches. ``graph``: an onnx-graphsurgeon Graph."""
    nodes = {node.name: node for node in graph.nodes}
    tensors = graph.tensors()
    replaced: dict = {}  # a bypassed Add's output name -> the tensor that stands for it now (chained skips)
    for block in skipped:
        add = nodes.get(block.add_node)
        if add is None:
            raise OnnxRewriteError(f"residual block '{block.name}': Add node '{block.add_node}' not found")
        skip = replaced.get(block.skip) or tensors.get(block.skip)
        if skip is None:
            raise OnnxRewriteError(f"residual block '{block.name}': skip input '{block.skip}' not found")
        out = add.outputs[0]
        replaced[out.name] = skip
        if any(out is t for t in graph.outputs):  # keep the graph output's name
            add.op, add.attrs = "Identity", {}
            add.inputs.clear()
            add.inputs.append(skip)
            continue
        for consumer in list(out.outputs):
            for i, tensor in enumerate(consumer.inputs):
                if tensor is out:
                    consumer.inputs[i] = skip
        add.outputs.clear()


def _conv_pads(node, spatial: int) -> list[int]:
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    if (auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad) not in ("NOTSET", ""):
        raise OnnxRewriteError(f"node '{node.name}': auto_pad convs cannot be shrunk (explicit pads needed)")
    return list(node.attrs.get("pads", [0] * (2 * spatial)))


def _rewrite_convs(graph, config: Config, weights: dict[str, np.ndarray]) -> None:
    """Kernel shrink and separable substitution on the Conv nodes named by ``config``."""
    import onnx_graphsurgeon as gs

    for node in list(graph.nodes):
        if node.op != "Conv" or node.name not in config.layers:
            continue
        choice, layer = config.layers[node.name], node.name
        if not isinstance(node.inputs[1], gs.Constant):
            raise OnnxRewriteError(
                f"node '{layer}': its weight '{node.inputs[1].name}' is not an initializer"
            )
        original_k = node.inputs[1].values.shape[2:]
        kernel_weight = weights[f"{layer}.dw.weight" if choice.separable else f"{layer}.weight"]
        new_k = kernel_weight.shape[2:]
        if tuple(new_k) != tuple(original_k):
            pads = _conv_pads(node, len(new_k))
            margins = [(a - b) // 2 for a, b in zip(original_k, new_k, strict=True)]
            node.attrs["pads"] = [p - m for p, m in zip(pads, margins * 2, strict=True)]
            node.attrs["kernel_shape"] = [int(k) for k in new_k]
        if not choice.separable:
            continue
        mid = gs.Variable(f"{node.outputs[0].name}.dw", dtype=node.outputs[0].dtype)
        dw_attrs = {k: v for k, v in node.attrs.items() if k != "group"}
        dw_attrs["group"] = int(kernel_weight.shape[0])
        dw_weight = gs.Constant(f"{layer}.dw.weight", np.ascontiguousarray(kernel_weight))
        depthwise = gs.Node("Conv", f"{layer}.dw", dw_attrs, [node.inputs[0], dw_weight], [mid])
        spatial = len(new_k)
        pw_weight = gs.Constant(f"{layer}.pw.weight", np.ascontiguousarray(weights[f"{layer}.pw.weight"]))
        pw_attrs = {
            "kernel_shape": [1] * spatial,
            "strides": [1] * spatial,
            "pads": [0] * (2 * spatial),
            "dilations": [1] * spatial,
            "group": 1,
        }
        outputs = list(node.outputs)
        node.outputs.clear()
        pointwise = gs.Node("Conv", f"{layer}.pw", pw_attrs, [mid, pw_weight, *node.inputs[2:]], outputs)
        node.inputs.clear()
        graph.nodes.extend([depthwise, pointwise])


def _set_weights(graph, weights: dict[str, np.ndarray]) -> None:
    """Constants take the materialized values (new shapes included); depthwise groups follow them."""
    import onnx_graphsurgeon as gs

    for node in graph.nodes:
        for tensor in node.inputs:
            if isinstance(tensor, gs.Constant) and tensor.name in weights:
                tensor.values = np.ascontiguousarray(weights[tensor.name])
        if node.op != "Conv" or len(node.inputs) < 2 or node.inputs[1].name not in weights:
            continue
        w = weights[node.inputs[1].name]
        if int(node.attrs.get("group", 1)) > 1 and w.shape[1] == 1:  # depthwise: one group per channel
            node.attrs["group"] = int(w.shape[0])


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
    import onnx_graphsurgeon as gs

    from hanasc.core.relax_params import weights_of
    from hanasc.passes.depth import residual_blocks_onnx
    from hanasc.passes.materialize import materialize

    arch = architecture_only(config)
    if not has_architecture_changes(config):
        exported = onnx.ModelProto()
        exported.CopyFrom(model.onnx_model)
        return exported, config
    weights = weights_of(materialize(model.mod, arch))
    blocks = {b.name: b for b in residual_blocks_onnx(model.onnx_model)}
    missing = [name for name in config.skip if name not in blocks]
    if missing:
        raise OnnxRewriteError(f"skipped block '{missing[0]}' is not a residual block of the ONNX graph")
    graph = gs.import_onnx(model.onnx_model)
    _bypass_skipped_blocks(graph, [blocks[name] for name in config.skip])
    graph.cleanup()
    present = {node.name for node in graph.nodes}
    _rewrite_convs(graph, Config({k: v for k, v in arch.layers.items() if k in present}), weights)
    _set_weights(graph, weights)
    graph.cleanup().toposort()
    for tensor in graph.tensors().values():  # stale shapes: inference below recomputes them
        if isinstance(tensor, gs.Variable) and tensor not in graph.inputs and tensor not in graph.outputs:
            tensor.shape = None
    exported = gs.export_onnx(graph)
    exported.ir_version = model.onnx_model.ir_version
    try:
        exported = onnx.shape_inference.infer_shapes(exported, strict_mode=True)
        onnx.checker.check_model(exported)
    except Exception as exc:  # onnx raises several types; the user needs the first line
        raise OnnxRewriteError(
            f"the architecture-changed ONNX graph is invalid: {str(exc).strip().splitlines()[0]}"
        ) from None
    return exported, rename_choices(config, exported.graph)
