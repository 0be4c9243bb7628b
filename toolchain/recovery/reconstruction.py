"""Least-squares reconstruction: refit the layers a Config changes structurally (He et al. 2017).

A layer ``y = W p`` whose Config removes some of its patch entries (input channels pruned by a narrower
producer group, kernel taps outside a shrunk centre) is refitted on the entries it keeps, ``S``, so that it
reproduces the original output on the calibration data:

    W'_S = W C[:, S] (C[S, S] + lambda I)^-1        (C: centred covariance of the original input patches)

with ``lambda`` chosen by two-fold cross-validation over the calibration halves (no refit at all when the
Config's own weight does as well on held-out statistics), and bias correction
(:mod:`hanasc.recovery.bias_correction`)
then matches the mean. A layer made separable keeps the
depthwise factor of its SVD and refits the pointwise factor the same way on the depthwise outputs' statistics.
Depthwise convs (kernel shrink) are refitted per channel.

The refit writes the kept entries of the ORIGINAL-shape weight and leaves the removed ones as they were, so
the Config's own passes (width slicing, kernel crop, separable split, quantization) then act on it unchanged:
the simulator, the materialized module and ``hanasc apply`` compute the same weights. Width groups choose
their kept channels from producer filter norms, and a refitted consumer may produce another group, so the
refit is repeated until the kept channels it assumed are those the Config then keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hanasc.core.layers import LayerInfo
from hanasc.passes.channel_groups import channel_groups
from hanasc.passes.separable import decompose_separable
from hanasc.passes.width import kept_channels
from hanasc.recovery.rounding import rounded_by_output_error

RIDGES = (1e-3, 1e-2, 1e-1)  # times the mean kept variance; chosen by cross-validation
MAX_ROUNDS = 4


@dataclass(frozen=True)
class _Reduced:
    """A refit problem on one half's statistics, in the basis: ``gram = B^T C B``, ``cross = W C B``.

    The output error of ``W' = P B^T`` is ``tr(W C W^T) - 2 <P, cross> + <P gram, P>``, so fits and their
    errors need only these (``m`` x ``m`` instead of ``D`` x ``D``).
    """

    gram: np.ndarray  # (B, m, m)
    cross: np.ndarray  # (B, O, m)

    @classmethod
    def of(cls, w: np.ndarray, cov: np.ndarray, basis: np.ndarray) -> _Reduced:
        """``basis``: kept entry indices (1-D ints) or a dense (B, D, m) basis."""
        cov = cov.astype(np.float64)
        if basis.ndim == 1:
            return cls(cov[:, basis][:, :, basis], w @ cov[:, :, basis])
        cb = cov @ basis
        return cls(basis.transpose(0, 2, 1) @ cb, w @ cb)

    def fit(self, ridge: float) -> np.ndarray:
        """The ridge least-squares ``P`` (B, O, m)."""
        m = self.gram.shape[-1]
        scale = np.maximum(np.trace(self.gram, axis1=1, axis2=2) / m, 1e-12)
        gram = self.gram + (ridge * scale)[:, None, None] * np.eye(m)
        return _solve_spd(gram, self.cross.transpose(0, 2, 1)).transpose(0, 2, 1)

    def error(self, p: np.ndarray) -> float:
        """The output error of ``P`` up to the constant ``tr(W C W^T)``."""
        return float(np.sum((p @ self.gram) * p) - 2.0 * np.sum(p * self.cross))


def _solve_spd(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """``gram^-1 rhs`` for symmetric positive definite ``gram`` (B, m, m): one Cholesky solve for a single
    large system, numpy's batched solve for many small ones (depthwise channels)."""
    try:
        if gram.shape[0] == 1 and gram.shape[1] > 64:
            from scipy.linalg import cho_factor, cho_solve

            factor = cho_factor(np.ascontiguousarray(gram[0]), check_finite=False)
            return cho_solve(factor, np.ascontiguousarray(rhs[0]), check_finite=False)[None]
        return np.linalg.solve(gram, rhs)
    except np.linalg.LinAlgError:  # not positive definite in floating point: a rank-deficient covariance
        # (dead or constant channels) whose rounding errors outweigh a small ridge; the minimum-norm solve
        return np.linalg.pinv(gram, hermitian=True) @ rhs


def cross_validated_fit(w: np.ndarray, halves: np.ndarray, basis: np.ndarray, plain: np.ndarray):
    """``P`` (B, O, m) of the refit ``P basis^T`` of ``w`` (B, O, D) whose ridge does best fitted on one
    half of the calibration statistics and judged on the other (``halves``: (2, B, D, D)); None when
    ``plain`` (the Config's own weight in the basis) does at least as well."""
    parts = [_Reduced.of(w, halves[i], basis) for i in range(2)]
    best, best_error = None, parts[0].error(plain) + parts[1].error(plain)
    margin = 1e-3 * abs(best_error)
    for ridge in RIDGES:
        error = parts[1].error(parts[0].fit(ridge)) + parts[0].error(parts[1].fit(ridge))
        if error < best_error - margin:
            best, best_error = ridge, error
    if best is None:
        return None
    return _Reduced.of(w, halves.astype(np.float64).mean(axis=0), basis).fit(best)


def refit_matrix(w: np.ndarray, halves: np.ndarray, keep: np.ndarray) -> np.ndarray | None:
    """``w`` (O, D) refitted on its kept columns (bool ``keep``); None when the refit does not help."""
    kept = np.flatnonzero(keep)
    w3 = w.astype(np.float64)[None]
    fit = cross_validated_fit(w3, halves[:, None], kept, w3[:, :, kept])
    if fit is None:
        return None
    out = np.array(w, dtype=np.float64, copy=True)
    out[:, kept] = fit[0]
    return out


def refit_depthwise(w: np.ndarray, halves: np.ndarray, keep: np.ndarray) -> np.ndarray | None:
    """Per-channel refit of a depthwise weight ``w`` (C, 1, kh, kw) on its kept taps (``halves``:
    (2, C, k, k)); None when the refit does not help."""
    kept = np.flatnonzero(keep)
    w3 = w.reshape(w.shape[0], 1, -1).astype(np.float64)
    fit = cross_validated_fit(w3, halves, kept, w3[:, :, kept])
    if fit is None:
        return None
    out = w3.copy()
    out[:, :, kept] = fit
    return out.reshape(w.shape)


def refit_separable(w: np.ndarray, halves: np.ndarray, keep: np.ndarray) -> np.ndarray | None:
    """The separable weight (rank one per input channel) whose pointwise factor reproduces ``w`` best.

    ``w`` (O, I, kh, kw) keeps the depthwise factors of the SVD of its kept taps; the pointwise factor is the
    least-squares map from the depthwise outputs to the original output. None when the SVD's own pointwise
    factor does as well.
    """
    o, cin, kh, kw = w.shape
    k = kh * kw
    masked = np.where(keep.reshape(1, cin, kh, kw), w, 0.0).astype(np.float64)
    dw, pw, _ = decompose_separable(masked)
    basis = np.zeros((1, cin * k, cin))
    basis[0, np.arange(cin * k), np.repeat(np.arange(cin), k)] = dw.reshape(-1)
    w3 = w.reshape(1, o, -1).astype(np.float64)
    fit = cross_validated_fit(w3, halves[:, None], basis, pw.reshape(1, o, cin).astype(np.float64))
    if fit is None:
        return None
    refit = (fit @ basis.transpose(0, 2, 1)).reshape(w.shape)
    return np.where(keep.reshape(1, cin, kh, kw), refit, w)


def centre_mask(kernel: tuple[int, int], k: int) -> np.ndarray:
    """Bool (kh*kw) of the taps inside the centred ``k x k``."""
    kh, kw = kernel
    mask = np.zeros((kh, kw), dtype=bool)
    mh, mw = (kh - k) // 2, (kw - k) // 2
    mask[mh : mh + k, mw : mw + k] = True
    return mask.reshape(-1)


@dataclass
class Reconstruction:
    """Refits of one model's layers from their input statistics; memoized per (layer, kept entries)."""

    func: object  # the model's Relax ``main``
    layers: list[LayerInfo]
    covariances: dict[str, np.ndarray]
    axes: dict[str, int]
    _groups: list | None = field(default=None, repr=False)
    _memo: dict = field(default_factory=dict, repr=False)

    def groups(self) -> list:
        if self._groups is None:
            self._groups = channel_groups(self.func)
        return self._groups

    def refit(self, original: dict[str, np.ndarray], config) -> dict[str, np.ndarray]:
        """New values (original shapes) of the weights ``config`` changes structurally; empty if none."""
        from threadpoolctl import threadpool_limits

        if not self.covariances or config.is_identity():
            return {}
        with threadpool_limits(1, user_api="blas"):  # small solves: BLAS threads only contend
            settled = self._settled_refit(original, config)
            if settled is None:
                return {}
            values, kept = settled
            return {**values, **self._rounded({**original, **values}, config, kept)}

    def _settled_refit(self, original: dict[str, np.ndarray], config) -> tuple[dict, dict] | None:
        """``(refitted values, kept channels)``, or None when the kept channels do not settle."""
        narrowed = any(config.choice(layer.name).width < 1.0 for layer in self.layers)
        assumed: dict[str, np.ndarray] | None = None
        values: dict[str, np.ndarray] = {}
        for _ in range(MAX_ROUNDS):
            current = {**original, **values}
            kept = kept_channels(self.groups(), current, config) if narrowed else {}
            if assumed is not None and _same(kept, assumed):
                return values, kept
            assumed = kept
            values = self._refit_with(original, config, kept)
        return None  # the kept channels did not settle: no refit rather than a mismatched one

    def _rounded(self, current: dict[str, np.ndarray], config, kept: dict) -> dict[str, np.ndarray]:
        """8/4/2-bit weights of standard convs and dense layers rounded by output error
        (:mod:`hanasc.recovery.rounding`) on the patch entries they keep; memoized per weight value."""
        input_keep = self._input_keep(kept)
        values = {}
        for layer in self.layers:
            choice = config.choice(layer.name)
            halves = self.covariances.get(layer.name)
            bits = choice.w_bits
            if (
                bits not in (8, 4, 2)
                or halves is None
                or layer.op not in ("conv", "dense")
                or choice.separable
            ):
                continue
            keep = self._patch_keep(layer, choice, input_keep.get(layer.weight))
            w = current[layer.weight]
            key = ("rounded", layer.name, bits, None if keep is None else keep.tobytes(), _fingerprint(w))
            if key not in self._memo:
                self._memo[key] = self._round_layer(layer, w, halves, keep, bits)
            if self._memo[key] is not None:
                values[layer.weight] = self._memo[key]
        return values

    def _round_layer(self, layer: LayerInfo, w: np.ndarray, halves, keep, bits: int) -> np.ndarray | None:
        """``w`` with its kept entries rounded by output error (its shape and dtype), or None."""

        def round_kept(matrix: np.ndarray) -> np.ndarray | None:
            kept = np.arange(matrix.shape[1]) if keep is None else np.flatnonzero(keep)
            fit = rounded_by_output_error(matrix[:, kept], halves[:, kept][:, :, kept], bits)
            if fit is None:
                return None
            out = matrix.astype(np.float64)
            out[:, kept] = fit
            return out

        return self._on_rows(layer, w, round_kept)

    def _on_rows(self, layer: LayerInfo, w: np.ndarray, solve) -> np.ndarray | None:
        """``solve`` applied to ``w`` as an (outputs, patch entries) matrix, its result (or None) back in
        ``w``'s shape and dtype: conv weights flattened per output channel, (K, N) dense weights
        transposed."""
        dense_kn = layer.op == "dense" and self.axes.get(layer.weight, 0) != 0
        fit = solve(w.T if dense_kn else w.reshape(w.shape[0], -1))
        if fit is None:
            return None
        return np.ascontiguousarray((fit.T if dense_kn else fit).reshape(w.shape), dtype=w.dtype)

    def _refit_with(self, original, config, kept: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        input_keep = self._input_keep(kept)
        values = {}
        for layer in self.layers:
            cov = self.covariances.get(layer.name)
            if cov is None:
                continue
            choice = config.choice(layer.name)
            keep = self._patch_keep(layer, choice, input_keep.get(layer.weight))
            separable = bool(choice.separable) and layer.op == "conv"
            if keep is None and not separable:
                continue
            keep = np.ones(_patch_size(layer), dtype=bool) if keep is None else keep
            key = (layer.name, separable, keep.tobytes())
            if key not in self._memo:
                self._memo[key] = self._refit_layer(layer, original[layer.weight], cov, keep, separable)
            if self._memo[key] is not None:
                values[layer.weight] = self._memo[key]
        return values

    def _refit_layer(self, layer: LayerInfo, w: np.ndarray, halves, keep, separable: bool):
        """The refitted weight (``w``'s shape and dtype), or None when the refit does not help."""
        if layer.op == "depthwise_conv":
            fit = refit_depthwise(w, halves, keep)
        elif separable:
            fit = refit_separable(w, halves, keep)
        else:
            return self._on_rows(layer, w, lambda matrix: refit_matrix(matrix, halves, keep))
        return None if fit is None else np.ascontiguousarray(fit.reshape(w.shape), dtype=w.dtype)

    def _input_keep(self, kept: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Per consumer weight: bool over its input axis, False for the entries pruned groups remove."""
        masks: dict[str, np.ndarray] = {}
        by_weight = {layer.weight: layer for layer in self.layers}
        for group in self.groups():
            if group.name not in kept:
                continue
            for s in group.slices:
                layer = by_weight.get(s.param)
                if s.role != "consumer" or layer is None:
                    continue
                size = layer.weight_shape[s.axis]
                mask = masks.setdefault(s.param, np.ones(size, dtype=bool))
                removed = np.ones(size, dtype=bool)
                removed[s.indices(kept[group.name])] = False
                mask &= ~removed
        return masks

    @staticmethod
    def _patch_keep(layer: LayerInfo, choice, input_keep: np.ndarray | None) -> np.ndarray | None:
        """Bool over the layer's patch entries it keeps (None: all, nothing removed)."""
        if layer.op == "dense":
            return None if input_keep is None or input_keep.all() else input_keep
        taps = int(np.prod(layer.kernel))
        shrink = choice.kernel is not None and choice.kernel < min(layer.kernel)
        tap_keep = centre_mask(tuple(layer.kernel), choice.kernel) if shrink else np.ones(taps, dtype=bool)
        if layer.op == "depthwise_conv":
            return tap_keep if shrink else None
        if (input_keep is None or input_keep.all()) and not shrink:
            return None
        channels = np.ones(layer.weight_shape[1], dtype=bool) if input_keep is None else input_keep
        return (channels[:, None] & tap_keep[None, :]).reshape(-1)


def _patch_size(layer: LayerInfo) -> int:
    return int(np.prod(layer.weight_shape[1:]))


def _fingerprint(w: np.ndarray) -> str:
    import hashlib

    return hashlib.blake2b(np.ascontiguousarray(w).tobytes(), digest_size=16).hexdigest()


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
