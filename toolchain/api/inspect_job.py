"""``hanasc.inspect``: the layers the search can change, with shapes, MACs, parameters and peak activation
memory (static counts from the cleaned graph); no TVM is imported."""

from __future__ import annotations

from hanasc.api.options import InputShapes, ModelArg, load
from hanasc.api.results import InspectResult

SOURCE = "static count from the cleaned graph (not measured)"


def inspect(model: ModelArg, *, input_shape: InputShapes = None) -> InspectResult:
    """The layer table of ``model`` (an ONNX path, a zoo name or a loaded model)."""
    loaded = load(model, input_shape)
    return InspectResult(
        path=loaded.path,
        inputs=tuple(loaded.inputs),
        outputs=tuple(loaded.output_names),
        layers=tuple(loaded.layers),
        totals=loaded.totals,
        source=SOURCE,
    )
