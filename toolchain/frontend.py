"""The frontend: ONNX file -> checked, cleaned ONNX -> Relax IRModule + layer table."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from hanasc.layers import LayerInfo, LayerTotals, layer_table, totals
from hanasc.onnx_cleaner import clean
from hanasc.onnx_loader import InputSpec, check_tensor_sizes, fix_input_shapes, read_onnx


@dataclass
class LoadedModel:
    """A model ready for hanasc: the cleaned ONNX, its static inputs, the layer table and the Relax module."""

    path: Path
    onnx_model: onnx.ModelProto
    inputs: list[InputSpec]
    layers: list[LayerInfo]
    totals: LayerTotals
    _mod: object | None = field(default=None, repr=False)

    @property
    def mod(self):
        """The Relax IRModule (imported on first use: importing TVM takes seconds)."""
        if self._mod is None:
            from hanasc.relax_import import import_relax

            self._mod = import_relax(self.onnx_model, self.inputs, str(self.path))
        return self._mod

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.onnx_model.graph.output]

    def layer(self, name: str) -> LayerInfo:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def weights(self) -> dict[str, np.ndarray]:
        """The layer weights by initializer name (the Relax parameter names)."""
        return {init.name: onnx.numpy_helper.to_array(init) for init in self.onnx_model.graph.initializer}

    def example_inputs(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Deterministic random inputs of the right shapes and dtypes."""
        rng = np.random.default_rng(seed)
        return {s.name: rng.standard_normal(s.shape).astype(s.dtype) for s in self.inputs}


def load_model(
    path: str | Path, input_shapes: dict[str, tuple[int, ...]] | None = None, *, import_tvm: bool = True
) -> LoadedModel:
    """Load, check, fix shapes, clean, and (by default) import into Relax.

    Raises a :class:`hanasc.errors.HanascError` subclass with a one-line reason on bad input.
    """
    path = Path(path)
    model = read_onnx(path)
    inputs = fix_input_shapes(model, dict(input_shapes or {}), source=str(path))
    check_tensor_sizes(model, str(path))  # before anything folds constants or runs the graph
    if import_tvm:
        from hanasc.relax_import import check_supported_ops

        check_supported_ops(model, str(path))  # before cleaning, so the user's node names are reported
    model = clean(model, source=str(path))
    layers = layer_table(model)
    loaded = LoadedModel(
        path=path, onnx_model=model, inputs=inputs, layers=layers, totals=totals(model, layers)
    )
    if import_tvm:
        _ = loaded.mod
    return loaded
