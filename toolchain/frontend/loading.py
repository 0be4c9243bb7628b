"""The frontend: ONNX file -> checked, cleaned ONNX -> Relax IRModule + layer table."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from hanasc.core.errors import HanascError
from hanasc.core.layers import LayerInfo, LayerTotals, layer_table, totals
from hanasc.frontend.onnx_cleaner import clean
from hanasc.frontend.onnx_loader import InputSpec, check_tensor_sizes, fix_input_shapes, read_onnx
from hanasc.frontend.relax_import import check_supported_ops, import_relax


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
            self._mod = import_relax(self.onnx_model, self.inputs, str(self.path))
        return self._mod

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.onnx_model.graph.output]

    def output_shapes(self) -> dict[str, tuple[int | None, ...] | None]:
        """Each graph output's inferred shape (None where shape inference left a dim or the rank unknown)."""
        shapes: dict[str, tuple[int | None, ...] | None] = {}
        for out in self.onnx_model.graph.output:
            tensor_type = out.type.tensor_type
            dims = tensor_type.shape.dim if tensor_type.HasField("shape") else None
            shapes[out.name] = (
                None
                if dims is None
                else tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
            )
        return shapes

    def is_classifier(self) -> bool:
        """Whether the first output is ``(batch, classes)`` with at least two classes."""
        (_, shape), *_ = self.output_shapes().items()
        return shape is not None and len(shape) == 2 and (shape[1] is None or shape[1] >= 2)

    def check_classifier_output(self, metric: str) -> None:
        """A metric that compares class scores needs a ``(batch, classes >= 2)`` first output (refused in one
        line before the search; ``--metric fidelity`` scores any output)."""
        if self.is_classifier():
            return
        (name, shape), *_ = self.output_shapes().items()
        raise HanascError(
            f"--metric {metric} compares class scores, but the model's output '{name}' has shape {shape}, "
            "not (batch, classes >= 2); use --metric fidelity (R² against the original, any output shape)"
        )

    def check_labels(self, labels, source: str) -> None:
        """Labels (``y``) need a classifier output ``(batch, classes)`` and classes in ``0..classes-1``."""
        (name, shape), *_ = self.output_shapes().items()
        if shape is None or len(shape) != 2 or shape[1] is None:
            raise HanascError(
                f"{source}: labels (y) need a classifier output (batch, classes), but the model's output "
                f"'{name}' has shape {shape}; use --metric fidelity (R² against the original; labels unused)"
            )
        y = np.asarray(labels)
        integral = np.issubdtype(y.dtype, np.integer) or (
            np.issubdtype(y.dtype, np.floating) and bool(np.all(np.isfinite(y) & (np.mod(y, 1) == 0)))
        )
        if y.size and (not integral or y.min() < 0 or y.max() >= shape[1]):
            raise HanascError(
                f"{source}: labels (y) must be integers 0..{shape[1] - 1} (the model has {shape[1]} "
                f"classes), found {y.dtype} from {y.min()} to {y.max()}"
            )

    def check_finite_activations(self, x: np.ndarray, source: str) -> None:
        """Run the original on the first sample(s) of ``x``: every float tensor must stay finite.

        Finite but huge weights (or inputs) can overflow float32 inside the graph; calibration and
        quantization cannot work with such a model, so this is refused before the search, in one line.
        """
        import onnxruntime as ort

        spec = self.inputs[0]
        batch = spec.shape[0] if spec.shape else 1
        if len(self.inputs) != 1 or len(x) < batch:
            return
        graph = self.onnx_model.graph
        names = [v.name for v in graph.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT]
        probe = onnx.ModelProto()
        probe.CopyFrom(self.onnx_model)
        known = {o.name for o in probe.graph.output}
        probe.graph.output.extend(v for v in graph.value_info if v.name in names and v.name not in known)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        try:
            providers = ["CPUExecutionProvider"]
            session = ort.InferenceSession(probe.SerializeToString(), options, providers=providers)
            fetch = [o.name for o in session.get_outputs()]
            sample = np.asarray(x[:batch], dtype=spec.dtype).reshape(spec.shape)
            weights = {k: v for k, v in self.weights().items() if k in _input_names(session)}
            values = session.run(fetch, {spec.name: sample, **weights})
        except Exception:  # a pre-check: the pipeline's own calibration reports such failures
            return
        computed = dict(zip(fetch, values, strict=True))
        for node in graph.node:  # the first tensor in graph order that overflows is the one to name
            for name in node.output:
                value = computed.get(name)
                if value is None or not np.issubdtype(np.asarray(value).dtype, np.floating):
                    continue
                if not np.isfinite(value).all():
                    raise HanascError(
                        f"{self.path}: tensor '{name}' (node '{node.name}') overflows to NaN or infinity "
                        f"on the first sample of {source}; the weights or the data are out of float32 range"
                    )

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


def _input_names(session) -> set[str]:
    return {i.name for i in session.get_inputs()}


def load_model(
    path: str | Path, input_shapes: dict[str, tuple[int, ...]] | None = None, *, import_tvm: bool = True
) -> LoadedModel:
    """Load, check, fix shapes, clean, and (by default) import into Relax.

    Raises a :class:`hanasc.core.errors.HanascError` subclass with a one-line reason on bad input.
    """
    path = Path(path)
    model = read_onnx(path)
    inputs = fix_input_shapes(model, dict(input_shapes or {}), source=str(path))
    check_tensor_sizes(model, str(path))  # before anything folds constants or runs the graph
    if import_tvm:
        check_supported_ops(model, str(path))  # before cleaning, so the user's node names are reported
    model = clean(model, source=str(path))
    layers = layer_table(model)
    loaded = LoadedModel(
        path=path, onnx_model=model, inputs=inputs, layers=layers, totals=totals(model, layers)
    )
    if import_tvm:
        _ = loaded.mod
    return loaded
