"""Activation calibration: the range of each searchable layer's data input, measured with onnxruntime.

The cleaned ONNX model is run with every layer's input tensor added as an extra graph output, one model
batch at a time (a batch-1 model sees the samples one by one). Methods:

- ``minmax``: the smallest and largest value seen over all samples;
- ``percentile``: per sample, the ``100 - p`` and ``p`` percentiles; the range is their mean over samples
  (NNCF's "mean percentile" statistic), which ignores rare outliers and keeps memory bounded.

The int8 scale of a layer is ``hanasc.passes.quantize.activation_scale(lo, hi)``. The per-channel mean of each
layer's input is kept too (``channel_means``): bias correction (:mod:`hanasc.recovery.bias_correction`) uses
it; so is
the covariance of its input patches (``covariances``, :mod:`hanasc.frontend.layer_statistics`) for
least-squares reconstruction (:mod:`hanasc.recovery.reconstruction`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from hanasc.core.atomic import atomic_file
from hanasc.core.errors import CalibrationError
from hanasc.frontend.datasets import load_npz
from hanasc.frontend.layer_statistics import (
    PatchStatistics,
    load_covariances,
    refittable_layers,
    save_covariances,
)
from hanasc.passes.quant_reference import activation_scale

METHODS = ("minmax", "percentile")
FORMAT = "hanasc.activation_ranges/1"


@dataclass
class ActivationRanges:
    """Calibrated ``(lo, hi)`` of each layer's input tensor, keyed by layer name."""

    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    method: str = "minmax"
    samples: int = 0
    percentile: float | None = None
    channel_means: dict[str, np.ndarray] = field(default_factory=dict, compare=False)  # layer -> input mean
    # layer -> input patch covariance (hanasc.frontend.layer_statistics); saved beside the JSON as an .npz
    covariances: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    def __contains__(self, layer: str) -> bool:
        return layer in self.ranges

    def __getitem__(self, layer: str) -> tuple[float, float]:
        return self.ranges[layer]

    def scale(self, layer: str) -> float:
        """The int8 per-tensor scale of ``layer``'s input."""
        return activation_scale(*self.ranges[layer])

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "method": self.method,
            "samples": self.samples,
            "percentile": self.percentile,
            "ranges": {name: [lo, hi] for name, (lo, hi) in self.ranges.items()},
            "channel_means": {name: [float(v) for v in m] for name, m in self.channel_means.items()},
        }

    @classmethod
    def from_json(cls, data: dict, source: str = "ranges") -> ActivationRanges:
        if not isinstance(data, dict) or not isinstance(data.get("ranges"), dict):
            raise CalibrationError(f"{source}: expected a JSON object with 'ranges'")
        if data.get("method", "minmax") not in METHODS:
            raise CalibrationError(f"{source}: unknown method '{data.get('method')}' (expected {METHODS})")
        ranges = {}
        for name, pair in data["ranges"].items():
            if not (isinstance(pair, list | tuple) and len(pair) == 2 and all(np.isfinite(pair))):
                raise CalibrationError(f"{source}: layer '{name}': range must be two finite numbers")
            ranges[name] = (float(pair[0]), float(pair[1]))
        means = data.get("channel_means", {})
        if not isinstance(means, dict) or not all(_finite_numbers(m) for m in means.values()):
            raise CalibrationError(f"{source}: 'channel_means' must map layers to lists of finite numbers")
        return cls(
            ranges,
            data.get("method", "minmax"),
            int(data.get("samples", 0)),
            data.get("percentile"),
            {name: np.asarray(m, dtype=np.float32) for name, m in means.items()},
        )

    def save(self, path: Path) -> None:
        """The JSON at ``path``; the covariances (if any) beside it, ``path`` with suffix ``.npz``."""
        if self.covariances:
            save_covariances(self.covariances, statistics_path(path))
        with atomic_file(Path(path)) as tmp:
            tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> ActivationRanges:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise CalibrationError(f"{path}: no such file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CalibrationError(f"{path}: malformed JSON ({exc})") from None

        ranges = cls.from_json(data, source=str(path))
        ranges.covariances = load_covariances(statistics_path(path))
        return ranges


def statistics_path(ranges_path: Path) -> Path:
    """Where the layer statistics of a ranges file live: beside it, suffix ``.npz``."""
    return Path(ranges_path).with_suffix(".npz")


def _finite_numbers(value) -> bool:
    """Whether ``value`` is a list of finite numbers."""
    if not isinstance(value, list) or not all(isinstance(v, int | float) for v in value):
        return False
    return bool(np.all(np.isfinite(np.asarray(value, dtype=np.float64))))


def layer_input_tensors(model: onnx.ModelProto, layers: Iterable[str]) -> dict[str, str]:
    """The data input tensor of each named layer node (layer -> tensor name)."""
    wanted = set(layers)
    found = {node.name: node.input[0] for node in model.graph.node if node.name in wanted}
    missing = sorted(wanted - set(found))
    if missing:
        raise CalibrationError(f"calibration: layer '{missing[0]}' is not a node of the model")
    return found


def _with_outputs(model: onnx.ModelProto, tensors: Iterable[str]) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    present = {o.name for o in graph.output} | {i.name for i in graph.input}
    infos = {v.name: v for v in graph.value_info}
    for name in dict.fromkeys(tensors):
        if name in present:
            continue
        info = infos.get(name) or onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
        graph.output.append(info)
        present.add(name)
    return model


def _model_batches(loaded, batches: Iterable) -> Iterable[dict[str, np.ndarray]]:
    """Split user batches into feeds of the model's own (static) batch size."""
    specs = {s.name: s for s in loaded.inputs}
    for index, batch in enumerate(batches):
        if not isinstance(batch, Mapping):
            if len(specs) != 1:
                raise CalibrationError(
                    f"calibration: batch {index}: the model has {len(specs)} inputs, pass a dict"
                )
            batch = {next(iter(specs)): batch}
        unknown = set(batch) - set(specs)
        if unknown:
            raise CalibrationError(f"calibration: batch {index}: unknown input '{sorted(unknown)[0]}'")
        arrays = {}
        for name, spec in specs.items():
            if name not in batch:
                raise CalibrationError(f"calibration: batch {index}: input '{name}' missing")
            x = np.asarray(batch[name], dtype=spec.dtype)
            if x.ndim == len(spec.shape) - 1:
                x = x[None]
            if tuple(x.shape[1:]) != tuple(spec.shape[1:]) or x.shape[0] % spec.shape[0]:
                raise CalibrationError(
                    f"calibration: batch {index}: input '{name}' has shape {tuple(x.shape)}, "
                    f"model expects (N*{spec.shape[0]}, {', '.join(map(str, spec.shape[1:]))})"
                )
            arrays[name] = x
        n = {x.shape[0] // specs[k].shape[0] for k, x in arrays.items()}
        if len(n) != 1:
            raise CalibrationError(f"calibration: batch {index}: inputs have different batch sizes")
        for i in range(n.pop()):
            yield {k: x[i * specs[k].shape[0] : (i + 1) * specs[k].shape[0]] for k, x in arrays.items()}


def calibrate(
    loaded,
    batches: Iterable,
    method: str = "minmax",
    percentile: float = 99.99,
    layers: Iterable[str] | None = None,
) -> ActivationRanges:
    """Measure the input range of every searchable layer (or of ``layers``) on calibration ``batches``.

    ``batches`` yields arrays (single-input models) or dicts input name -> array, with a leading batch axis
    that is a multiple of the model's batch size.
    """
    import onnxruntime as ort

    if method not in METHODS:
        raise CalibrationError(f"calibration: unknown method '{method}' (expected {', '.join(METHODS)})")
    if method == "percentile" and not 50.0 < percentile <= 100.0:
        raise CalibrationError(f"calibration: percentile={percentile} must be in (50, 100]")
    names = list(layers) if layers is not None else [layer.name for layer in loaded.layers]
    tensors = layer_input_tensors(loaded.onnx_model, names)
    outputs = list(dict.fromkeys(t for t in tensors.values()))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        _with_outputs(loaded.onnx_model, outputs).SerializeToString(),
        options,
        providers=["CPUExecutionProvider"],
    )
    fetch = [t for t in outputs if t not in {s.name for s in loaded.inputs}]
    refittable = refittable_layers(loaded.mod["main"], [x for x in loaded.layers if x.name in tensors])
    patch_stats = PatchStatistics.for_model(loaded.onnx_model, refittable)
    stats: dict[str, list[tuple[float, float]]] = {t: [] for t in outputs}
    sums: dict[str, np.ndarray] = {}
    samples = 0
    for feed in _model_batches(loaded, batches):
        values = dict(zip(fetch, session.run(fetch, feed), strict=True)) if fetch else {}
        values.update({k: v for k, v in feed.items() if k in stats})
        for tensor in outputs:
            x = values[tensor]
            if method == "minmax":
                stats[tensor].append((float(x.min()), float(x.max())))
            else:
                lo, hi = np.percentile(x, [100.0 - percentile, percentile])
                stats[tensor].append((float(lo), float(hi)))
            if x.ndim >= 2:  # mean over the batch and spatial axes, per channel (axis 1)
                per_channel = np.moveaxis(x, 1, 0).reshape(x.shape[1], -1).mean(axis=1, dtype=np.float64)
                sums[tensor] = sums.get(tensor, 0.0) + per_channel
        for layer, tensor in tensors.items():
            patch_stats.add(layer, values[tensor], samples)
        samples += 1
    if samples == 0:
        raise CalibrationError("calibration: no samples in the calibration data")
    ranges = {}
    for layer, tensor in tensors.items():
        pairs = np.asarray(stats[tensor], dtype=np.float64)
        if method == "minmax":
            ranges[layer] = (float(pairs[:, 0].min()), float(pairs[:, 1].max()))
        else:
            ranges[layer] = (float(pairs[:, 0].mean()), float(pairs[:, 1].mean()))
    means = {layer: (sums[t] / samples).astype(np.float32) for layer, t in tensors.items() if t in sums}
    return ActivationRanges(
        ranges,
        method,
        samples,
        percentile if method == "percentile" else None,
        means,
        patch_stats.covariances(),
    )


def load_calibration_data(path: Path, loaded) -> list[dict[str, np.ndarray]]:
    """Calibration batches from an ``.npz``, read by the one rule of :func:`hanasc.frontend.datasets.npz_keys`
    (arrays named after the model inputs, or for a one-input model ``x`` or its one array)."""
    return [load_npz(path, loaded.inputs).feeds(loaded.inputs)]
