"""A Config's architecture choices written back into the ONNX graph (for runtimes that read ONNX: OpenVINO).

The Relax passes define what each choice does; each choice kind's ONNX rewrite
(``ChoiceKind.onnx_rewrite``, :mod:`hanasc.passes.kinds`) reproduces its structure on the cleaned ONNX graph,
in the kinds' order, and every weight is then taken from the Relax module the passes materialized, so the
two agree by construction (tests compare onnxruntime on the result with TVM on the materialized module).

The graph is edited with onnx-graphsurgeon (import, each kind's rewrite, the weights, ``cleanup``,
``toposort``, export):

- width: every initializer the passes sliced takes its new shape; depthwise ``group`` follows the channels;
- skipped residual block: the block's ``Add`` is bypassed (its users read the skip input; an Identity
  keeps a graph output's name), the dead branch is removed;
- kernel shrink: the cropped weight, ``kernel_shape`` and pads reduced by the crop margin;
- separable: ``L`` becomes ``L.dw`` (KxK, group = Cin, the original strides/pads/dilations) then ``L.pw``
  (1x1, the original bias).

Precision choices are not applied here (the target quantizes the exported graph itself); the returned
Config carries them over to the new node names.
"""

from __future__ import annotations

import numpy as np
import onnx

from hanasc.core.relax_params import weights_of
from hanasc.frontend.loading import LoadedModel
from hanasc.passes.config import Config, LayerChoice, choice_fields
from hanasc.passes.kinds import OnnxEdit, OnnxRewriteError, kinds, precision_only
from hanasc.passes.kinds import architecture_only as _architecture_choice
from hanasc.passes.materialize import materialize

__all__ = [
    "OnnxRewriteError",
    "architecture_only",
    "export_architecture",
    "has_architecture_changes",
    "rename_choices",
]


def architecture_only(config: Config) -> Config:
    """``config`` without precision choices (float weights and activations everywhere)."""
    layers = {name: _architecture_choice(choice) for name, choice in config.layers.items()}
    return Config({k: v for k, v in layers.items() if not v.is_identity()}, skip=list(config.skip))


def has_architecture_changes(config: Config) -> bool:
    return bool(architecture_only(config).layers or config.skip)


def _set_weights(graph, weights: dict[str, np.ndarray]) -> None:
    """Constants take the materialized values (new shapes included)."""
    import onnx_graphsurgeon as gs

    for node in graph.nodes:
        for tensor in node.inputs:
            if isinstance(tensor, gs.Constant) and tensor.name in weights:
                tensor.values = np.ascontiguousarray(weights[tensor.name])


def _check_rewritable(arch: Config) -> None:
    """OnnxRewriteError when ``arch`` uses an architecture kind that declares no ONNX rewrite."""
    default = LayerChoice()
    for kind in kinds():
        if kind.architecture and kind.onnx_rewrite is None:
            names = [f for f in kind.fields if f in choice_fields()]
            if any(c.get(f) != default.get(f) for c in arch.layers.values() for f in names):
                raise OnnxRewriteError(f"'{kind.name}' changes cannot be written into an ONNX graph")


def rename_choices(config: Config, graph: onnx.GraphProto) -> Config:
    """``config``'s choices for the exported graph's layers: ``L.dw``/``L.pw`` inherit ``L``'s precision."""
    names = {node.name for node in graph.node}
    layers: dict[str, LayerChoice] = {}
    for name, choice in config.layers.items():
        precision = precision_only(choice)
        targets = [name]
        for kind in kinds():
            targets = kind.exported_names(name, choice, targets)
        for target in targets:
            if target in names and not precision.is_identity():
                layers[target] = precision_only(precision)
    return Config(layers)


def export_architecture(model: LoadedModel, config: Config) -> tuple[onnx.ModelProto, Config]:
    """The cleaned ONNX with ``config``'s architecture choices applied, and the Config renamed to match.

    Weights come from :func:`hanasc.passes.materialize.materialize` on the float (architecture-only)
    Config, so the exported graph computes what the Relax module computes.
    """
    import onnx_graphsurgeon as gs

    arch = architecture_only(config)
    if not has_architecture_changes(config):
        exported = onnx.ModelProto()
        exported.CopyFrom(model.onnx_model)
        return exported, config
    _check_rewritable(arch)
    weights = weights_of(materialize(model.mod, arch))
    graph = gs.import_onnx(model.onnx_model)
    edit = OnnxEdit(arch, weights, model.onnx_model)
    for kind in kinds():
        if kind.onnx_rewrite is not None:
            kind.onnx_rewrite(graph, edit)
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
