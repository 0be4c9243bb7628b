"""Rounding of 8/4/2-bit weights by output error (GPTQ, Frantar et al. 2023), on the shipped scale grid.

Rounding each weight to its nearest code is optimal per weight, not per output: on a layer whose rows hold a
few large weights (a classifier head trained on few images: max |w| 100x the mean) the max-abs step is as
large as a typical weight, and nearest rounding costs a Fashion-MNIST head 4 points of top-1 at 8 bits. GPTQ
rounds the patch entries one at a time and moves each rounding error onto the entries not rounded yet, in
proportion to how the layer's input correlates them (the inverse of the input covariance), so the output
``W p`` changes least.

The result stays on the grid the quantization pass computes (:func:`hanasc.passes.quant_reference.
quantize_weight`: per output channel ``max|w| / 127`` at 8 bits, the clipping of least weight error at 4 and
2 bits): the entry holding each row's maximum is pinned (never moved), so it takes the largest code and
the pass, reading the rounded weight, finds the same step (at 4/2 bits its clipping search finds ratio 1
exact). The rounded weight is returned as floats on that grid, so the simulator, the materialized module and
``hanasc apply`` quantize it to exactly these codes. Like the least-squares refits, it is kept only
where it beats nearest rounding on the held-out half of the calibration statistics.
"""

from __future__ import annotations

import numpy as np

from hanasc.passes.quant_reference import fake_quantize_weight, quantize_weight, weight_qmax

DAMPING = 0.01  # times the mean input variance, added to the covariance's diagonal (GPTQ's default)
BLOCK = 128  # entries rounded between two updates of the rest (lazy batch updates)


def output_error(w: np.ndarray, w_new: np.ndarray, cov: np.ndarray) -> float:
    """``E||(w - w_new) p||^2`` summed over outputs, for patches ``p`` of covariance ``cov``
    (batched: ``w`` (B, O, D), ``cov`` (B, D, D))."""
    e = w - w_new
    return float(np.sum((e @ cov) * e))


def nearest(w: np.ndarray, scale: np.ndarray, qmax: int) -> np.ndarray:
    """``w`` (O, D) rounded to the nearest code of each row's step ``scale`` (O,), as floats."""
    return np.clip(np.round(w / scale[:, None]), -qmax, qmax) * scale[:, None]


def pass_scale(w: np.ndarray, bits: int) -> np.ndarray:
    """The per-row step the quantization pass gives ``w`` (O, D) at ``bits`` bits."""
    return quantize_weight(w.astype(np.float32), bits)[1].astype(np.float64)


def _inverse_factor(cov: np.ndarray) -> np.ndarray:
    """Upper Cholesky factor ``U`` of the damped inverse covariance (``H^-1 = U^T U``). A covariance that is
    not positive definite in floating point (dead or constant channels, rounding of a rank-deficient
    estimate) has its eigenvalues raised to the damping first."""
    from scipy.linalg import cho_factor, cho_solve

    d = cov.shape[0]
    cov = (cov + cov.T) / 2
    damping = DAMPING * max(float(np.mean(np.diag(cov))), 1e-12)
    try:
        factor = cho_factor(cov + damping * np.eye(d), check_finite=False)
        return np.linalg.cholesky(cho_solve(factor, np.eye(d), check_finite=False)).T
    except np.linalg.LinAlgError:  # (scipy.linalg raises the same class)
        values, vectors = np.linalg.eigh(cov)
        inverse = (vectors / np.maximum(values + damping, damping)) @ vectors.T
        return np.linalg.cholesky((inverse + inverse.T) / 2).T


def gptq(w: np.ndarray, cov: np.ndarray, bits: int = 8) -> np.ndarray:
    """``w`` (O, D) rounded by output error for inputs of covariance ``cov`` (D, D), on the pass's grid
    for ``bits`` (:func:`pass_scale`; each row's largest entry pinned), as floats."""
    qmax = weight_qmax(bits)
    w = np.array(w, dtype=np.float64, copy=True)
    scale = pass_scale(w, bits)
    movable = np.ones(w.shape, dtype=bool)
    movable[np.arange(len(w)), np.abs(w).argmax(axis=1)] = False
    u = _inverse_factor(cov.astype(np.float64))
    out = np.empty_like(w)
    for start in range(0, w.shape[1], BLOCK):
        stop = min(start + BLOCK, w.shape[1])
        errors = np.empty((len(w), stop - start))
        for i in range(start, stop):
            out[:, i] = nearest(w[:, i : i + 1], scale, qmax)[:, 0]
            errors[:, i - start] = (w[:, i] - out[:, i]) / u[i, i]
            w[:, i + 1 : stop] -= (
                np.outer(errors[:, i - start], u[i, i + 1 : stop]) * movable[:, i + 1 : stop]
            )
        w[:, stop:] -= (errors @ u[start:stop, stop:]) * movable[:, stop:]
    return out


def rounded_by_output_error(w: np.ndarray, halves: np.ndarray, bits: int = 8) -> np.ndarray | None:
    """GPTQ rounding of ``w`` (O, D) at ``bits`` with the calibration statistics ``halves`` (2, D, D), or
    None when it does not beat nearest rounding on held-out statistics (rounded on one half, judged on the
    other)."""
    w = w.astype(np.float64)
    plain = fake_quantize_weight(w, bits).astype(np.float64)  # the pass's own nearest rounding
    plain_error = held_error = 0.0
    try:
        for fit, judge in ((0, 1), (1, 0)):
            cov = halves[judge].astype(np.float64)
            plain_error += output_error(w, plain, cov)
            held_error += output_error(w, gptq(w, halves[fit], bits), cov)
        if held_error >= plain_error * (1 - 1e-3):
            return None
        return gptq(w, halves.astype(np.float64).mean(axis=0), bits)
    except np.linalg.LinAlgError:  # statistics too degenerate even after damping: nearest rounding
        return None
