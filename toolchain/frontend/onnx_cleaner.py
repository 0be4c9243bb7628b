"""Clean an ONNX graph so that raw exports import into TVM: fold, infer shapes, fuse BN, name layers."""

from __future__ import annotations

import re
import warnings

import numpy as np
import onnx
from onnx import numpy_helper

from hanasc.core.errors import ModelFileError
from hanasc.core.layers import SEARCHABLE_OPS


def clean(model: onnx.ModelProto, source: str = "model") -> onnx.ModelProto:
    """Constant-fold, fuse Conv+BatchNorm, infer shapes, then give layers and their weights stable names."""
    model = _slim(model, source)
    model = _infer_shapes(model, source)
    _name_nodes(model)
    _name_layer_weights(model)
    _constants_to_nodes(model)
    return _infer_shapes(model, source)


def _slim(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    import onnxslim

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            slimmed = onnxslim.slim(model)
    except Exception as exc:  # onnxslim raises assorted errors on graphs it cannot handle
        raise ModelFileError(
            f"{source}: graph cleaning (onnxslim) failed: {str(exc).splitlines()[0]}"
        ) from None
    if slimmed is None:
        raise ModelFileError(f"{source}: graph cleaning (onnxslim) produced no model")
    return slimmed


def _infer_shapes(model: onnx.ModelProto, source: str) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError or RuntimeError
        raise ModelFileError(f"{source}: shape inference failed: {str(exc).splitlines()[0]}") from None


def layer_name_for(node: onnx.NodeProto, index: int) -> str:
    """A readable, identifier-like layer name derived from the node name (``/a/b.0/Conv`` -> ``a.b.0``)."""
    name = node.name or ""
    name = re.sub(r"/(Conv|Gemm|MatMul)(_output_\d+|_\d+)?$", "", name)
    name = name.strip("/").replace("/", ".")
    name = re.sub(r"[^A-Za-z0-9_.]", "_", name).strip("._")
    if not name or not (name[0].isalpha() or name[0] == "_"):
        name = f"{node.op_type.lower()}_{index}" if not name else f"layer_{name}"
    return name


def _name_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique name; searchable layers get readable ones."""
    used: set[str] = set()
    for index, node in enumerate(model.graph.node):
        base = (
            layer_name_for(node, index)
            if node.op_type in SEARCHABLE_OPS
            else (node.name or f"{node.op_type}_{index}")
        )
        name, k = base, 1
        while name in used:
            k += 1
            name = f"{base}_{k}"
        used.add(name)
        node.name = name


def _name_layer_weights(model: onnx.ModelProto) -> None:
    """Rename each searchable layer's own weight/bias initializers to ``<layer>.weight``/``.bias``."""
    inits = {init.name: init for init in model.graph.initializer}
    uses: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    renames: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type not in SEARCHABLE_OPS:
            continue
        for slot, role in ((1, "weight"), (2, "bias")):
            if len(node.input) > slot and node.input[slot] in inits and uses[node.input[slot]] == 1:
                renames[node.input[slot]] = f"{node.name}.{role}"
    graph_outputs = {o.name for o in model.graph.output}
    for old, new in renames.items():
        if old in graph_outputs:
            continue
        inits[old].name = new
        for node in model.graph.node:
            for i, name in enumerate(node.input):
                if name == old:
                    node.input[i] = new
        for inp in model.graph.input:
            if inp.name == old:
                inp.name = new


def _constants_to_nodes(model: onnx.ModelProto) -> None:
    """Keep only layer weights as initializers (runtime inputs to Relax); others become Constant nodes."""
    weight_names = {
        name for node in model.graph.node if node.op_type in SEARCHABLE_OPS for name in node.input[1:3]
    }
    keep, constants = [], []
    for init in model.graph.initializer:
        if init.name in weight_names and np.issubdtype(numpy_helper.to_array(init).dtype, np.floating):
            keep.append(init)
        else:
            constants.append(
                onnx.helper.make_node("Constant", [], [init.name], value=init, name=f"const_{init.name}")
            )
    init_names = {c.output[0] for c in constants}
    kept_inputs = [inp for inp in model.graph.input if inp.name not in init_names]
    del model.graph.input[:]
    model.graph.input.extend(kept_inputs)
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    nodes = constants + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
