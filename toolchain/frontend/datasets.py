"""Input data for calibration and evaluation: ``.npz`` files holding the model's inputs (and ``y``, labels).

One rule reads every ``.npz`` (``--data``, ``--train-data``, ``apply --data``, ``costs --data``, calibration
files), :func:`npz_keys`: arrays keyed by the model's input names (every input of a multi-input model), or,
for a one-input model, an array named ``x`` or the one array besides ``y`` whatever its key. ``y`` holds
labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hanasc.core.errors import HanascError
from hanasc.frontend.onnx_loader import InputSpec

LABELS = "y"


class DataError(HanascError):
    """Unreadable or mismatching ``--data``."""


@dataclass
class Dataset:
    """Samples shaped like the model input (without its batch dimension), optional integer labels.

    ``x`` holds the first input's samples (a one-input model's only input); ``inputs`` every input's by
    name when the data gave them by name (an ``.npz``), else it is empty and ``x`` is the only input."""

    x: np.ndarray
    y: np.ndarray | None
    source: str
    inputs: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.x)

    def feeds(self, specs: Sequence[InputSpec]) -> dict[str, np.ndarray]:
        """Input name -> samples (N, ...) for every input of ``specs``: what calibration takes."""
        return dict(self.inputs) if self.inputs else {specs[0].name: self.x}


def npz_keys(files: Sequence[str], specs: Sequence[InputSpec]) -> dict[str, str] | None:
    """Input name -> the key of its array among ``files``, by the one rule of this module; None when the
    arrays do not fit the model's inputs."""
    names = [s.name for s in specs]
    if all(name in files for name in names):
        return {name: name for name in names}
    if len(names) == 1:
        if "x" in files:
            return {names[0]: "x"}
        unlabelled = [f for f in files if f != LABELS]
        if len(unlabelled) == 1:
            return {names[0]: unlabelled[0]}
    return None


def _expected(specs: Sequence[InputSpec]) -> str:
    names = ", ".join(f"'{s.name}'" for s in specs)
    if len(specs) == 1:
        return f"an array {names} (the model's input), 'x', or a single array"
    return f"arrays {names} (one per model input, keyed by its name)"


def load_npz(path: Path, specs: Sequence[InputSpec] | InputSpec) -> Dataset:
    """Read the inputs (N, *input shape without batch) and optional ``y`` (N,) from an ``.npz`` file."""
    path = Path(path)
    specs = [specs] if isinstance(specs, InputSpec) else list(specs)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = npz_keys(data.files, specs)
            if keys is None:
                raise DataError(
                    f"{path}: found arrays {', '.join(repr(f) for f in data.files) or 'none'}; expected "
                    f"{_expected(specs)}, and labels as 'y'"
                )
            arrays = {name: np.asarray(data[key]) for name, key in keys.items()}
            labelled = LABELS in data.files and LABELS not in keys.values()
            y = np.asarray(data[LABELS]) if labelled else None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({str(exc).splitlines()[0]})") from None
    for spec in specs:
        x, key = arrays[spec.name], keys[spec.name]
        if x.shape[1:] != tuple(spec.shape[1:]):
            raise DataError(
                f"{path}: {key} has samples of shape {x.shape[1:]}, the model's input '{spec.name}' "
                f"takes {tuple(spec.shape[1:])}"
            )
        if len(x) != len(arrays[specs[0].name]):
            raise DataError(
                f"{path}: {key} has {len(x)} samples, {keys[specs[0].name]} {len(arrays[specs[0].name])}"
            )
        arrays[spec.name] = x.astype(spec.dtype, copy=False)
    x = arrays[specs[0].name]
    if y is not None and y.shape != (len(x),):
        raise DataError(f"{path}: y has shape {y.shape}, expected ({len(x)},)")
    return Dataset(x=x, y=y, source=str(path), inputs=arrays)
