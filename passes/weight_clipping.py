"""Per-channel clipping of low-bit weights by mean squared error (the scale search of NNCF / AIMET's
"MSE" range setting).

At 4 and 2 bits the max-abs scale wastes most codes on a few large weights: 2-bit codes {-1, 0, 1} at
``scale = max|w|`` round almost every weight to 0. For each output channel the clipping ratio in
:data:`RATIOS` that minimises ``||w - dequant(quant(w))||^2`` is taken (8-bit keeps the max-abs scale:
its rounding error is already small and clipping would cut outliers that matter).
"""

from __future__ import annotations

import numpy as np

RATIOS = np.array([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], dtype=np.float32)
SEARCHED_BITS = (4, 2)


def mse_scales(w: np.ndarray, amax: np.ndarray, qmax: int, axis: int) -> np.ndarray:
    """Per-channel scales ``ratio x amax / qmax`` with the ratio of least quantization error.

    ``w`` float32, ``amax`` the per-channel max-abs (length ``w.shape[axis]``), ``axis`` the channel axis.
    """
    rows = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1).astype(np.float64)  # squares of huge
    # weights overflow float32 (and would print numpy's warning): the error is summed in float64
    best_err = np.full(len(amax), np.inf, dtype=np.float64)
    best = amax / np.float32(qmax)
    for ratio in RATIOS:
        scale = (amax * ratio / np.float32(qmax)).astype(np.float32)
        safe = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float64)[:, None]
        err = ((np.clip(np.round(rows / safe), -qmax, qmax) * safe - rows) ** 2).sum(axis=1)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best = np.where(better, scale, best)
    return best.astype(np.float32)
