"""Input data for calibration and evaluation: ``.npz`` files with ``x`` (and ``y`` when labelled)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hanasc.core.errors import HanascError
from hanasc.frontend.onnx_loader import InputSpec


class DataError(HanascError):
    """Unreadable or mismatching ``--data``."""


@dataclass
class Dataset:
    """Samples shaped like the model input (without its batch dimension), optional integer labels."""

    x: np.ndarray
    y: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return len(self.x)


def load_npz(path: Path, spec: InputSpec) -> Dataset:
    """Read ``x`` (N, *input shape without batch) and optional ``y`` (N,) from an ``.npz`` file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            if "x" not in data:
                raise DataError(f"{path}: no array 'x' (found: {', '.join(data.files) or 'none'})")
            x = np.asarray(data["x"])
            y = np.asarray(data["y"]) if "y" in data else None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz file ({str(exc).splitlines()[0]})") from None
    sample_shape = tuple(spec.shape[1:])
    if x.shape[1:] != sample_shape:
        raise DataError(
            f"{path}: x has samples of shape {x.shape[1:]}, the model's input '{spec.name}' "
            f"takes {sample_shape}"
        )
    if y is not None and y.shape != (len(x),):
        raise DataError(f"{path}: y has shape {y.shape}, expected ({len(x)},)")
    return Dataset(x=x.astype(spec.dtype, copy=False), y=y, source=str(path))
