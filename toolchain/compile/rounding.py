"""Rounding of 8-bit weights by output error (GPTQ, Frantar et al. 2023), on the shipped scale grid.

Rounding each weight to its nearest code is optimal per weight, not per output: on a layer whose rows hold a
few large weights (a classifier head trained on few images: max |w| 100x the mean) the max-abs step is as
large as a typical weight, and nearest rounding costs a Fashion-MNIST head 4 points of top-1 at 8 bits. GPTQ
rounds the patch entries one at a time and moves each rounding error onto the entries not rounded yet, in
proportion to how the layer's input correlates them (the inverse of the input covariance), so the output
``W p`` changes least.

The result stays on the grid the quantization pass computes: per output channel the step is ``max|w| /
127``, and the entry holding that maximum is pinned (never moved, so it rounds to +-127 and the pass finds
the same step). The rounded weight is returned as floats on that grid, so the simulator, the materialized
module and ``hanasc apply`` quantize it to exactly these codes. Like the least-squares refits, it is kept only
where it beats nearest rounding on the held-out half of the calibration statistics.
"""

from __future__ import annotations

import numpy as np

QMAX = 127
DAMPING = 0.01  # times the mean input variance, added to the covariance's diagonal (GPTQ's default)
BLOCK = 128  # entries rounded between two updates of the rest (lazy batch updates)


def nearest(w: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``w`` (O, D) rounded to the nearest code of each row's step ``scale`` (O,), as floats."""
    return np.clip(np.round(w / scale[:, None]), -QMAX, QMAX) * scale[:, None]


def max_abs_scale(w: np.ndarray) -> np.ndarray:
    """The per-row step of the 8-bit quantization pass: ``max|w| / 127`` (1 for an all-zero row)."""
    amax = np.abs(w).max(axis=1)
    return np.where(amax > 0, amax / QMAX, 1.0)


def _inverse_factor(cov: np.ndarray) -> np.ndarray:
    """Upper Cholesky factor ``U`` of the damped inverse covariance (``H^-1 = U^T U``)."""
    from scipy.linalg import cho_factor, cho_solve

    d = cov.shape[0]
    damped = cov + DAMPING * max(float(np.mean(np.diag(cov))), 1e-12) * np.eye(d)
    inverse = cho_solve(cho_factor(damped, check_finite=False), np.eye(d), check_finite=False)
    return np.linalg.cholesky(inverse).T


def gptq(w: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """``w`` (O, D) rounded by output error for inputs of covariance ``cov`` (D, D), on the grid of
    :func:`max_abs_scale` (each row's largest entry pinned), as floats."""
    w = np.array(w, dtype=np.float64, copy=True)
    scale = max_abs_scale(w)
    movable = np.ones(w.shape, dtype=bool)
    movable[np.arange(len(w)), np.abs(w).argmax(axis=1)] = False
    u = _inverse_factor(cov.astype(np.float64))
    out = np.empty_like(w)
    for start in range(0, w.shape[1], BLOCK):
        stop = min(start + BLOCK, w.shape[1])
        errors = np.empty((len(w), stop - start))
        for i in range(start, stop):
            out[:, i] = nearest(w[:, i : i + 1], scale)[:, 0]
            errors[:, i - start] = (w[:, i] - out[:, i]) / u[i, i]
            w[:, i + 1 : stop] -= (
                np.outer(errors[:, i - start], u[i, i + 1 : stop]) * movable[:, i + 1 : stop]
            )
        w[:, stop:] -= (errors @ u[start:stop, stop:]) * movable[:, stop:]
    return out


def rounded_by_output_error(w: np.ndarray, halves: np.ndarray) -> np.ndarray | None:
    """GPTQ rounding of ``w`` (O, D) with the calibration statistics ``halves`` (2, D, D), or None when it
    does not beat nearest rounding on held-out statistics (rounded on one half, judged on the other)."""
    from hanasc.compile.reconstruction import output_error

    w = w.astype(np.float64)
    plain = nearest(w, max_abs_scale(w))
    plain_error = held_error = 0.0
    for fit, judge in ((0, 1), (1, 0)):
        cov = halves[judge].astype(np.float64)
        plain_error += output_error(w, plain, cov)
        held_error += output_error(w, gptq(w, halves[fit]), cov)
    if held_error >= plain_error * (1 - 1e-3):
        return None
    return gptq(w, halves.astype(np.float64).mean(axis=0))
