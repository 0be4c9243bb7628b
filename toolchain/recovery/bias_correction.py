"""Recovery without training: least-squares refits (:mod:`hanasc.recovery.reconstruction`) of the layers a
Config changes structurally, then bias correction of every changed layer (Nagel et al. 2019, "Data-Free
Quantization", empirical variant; the mean compensation of channel pruning).

A layer whose weights a Config changes (quantized, kernel shrunk, made separable, input channels pruned)
computes ``W' x + b`` instead of ``W x + b``; over the calibration data its output is off by
``(W' - W) E[x]`` on average. Subtracting that from the bias removes the shift. ``E[x]`` is the per-channel
mean of the layer's input in the ORIGINAL model, measured with the activation ranges
(:attr:`hanasc.frontend.calibration.ActivationRanges.channel_means`), so the correction is a function of the
Config and the ranges alone: the simulator, the materialized module and ``hanasc apply`` (which reads the
saved ``activation_ranges.json``) compute the same biases.

Channels a Config removes (rows whose new weights are all zero) keep the bias the Config gives them.
Layers without a bias, and ranges without channel means (files written before means were kept), are left
as they are.
"""

from __future__ import annotations

import numpy as np

from hanasc.core.layers import LayerInfo
from hanasc.core.relax_params import with_weight_values
from hanasc.passes.kinds import simulate_weights as simulated_weights
from hanasc.passes.materialize import materialize
from hanasc.passes.quant_reference import weight_channel_axes
from hanasc.recovery.reconstruction import Reconstruction


def output_shift(delta: np.ndarray, mean_in: np.ndarray, groups: int, axis: int) -> np.ndarray | None:
    """``delta`` (the weight change) applied to the mean input, per output channel; None if not a conv
    (OIHW, grouped) or dense (``axis`` 0: (N, K); else (K, N)) weight, or if the mean does not fit."""
    delta = delta.astype(np.float64)
    if delta.ndim == 4:
        out_channels, per_group = delta.shape[:2]
        if mean_in.shape != (per_group * groups,) or out_channels % groups:
            return None
        group = np.arange(out_channels) // (out_channels // groups)
        index = group[:, None] * per_group + np.arange(per_group)[None, :]
        return (delta.sum(axis=(2, 3)) * mean_in[index]).sum(axis=1)
    if delta.ndim == 2:
        matrix = delta if axis == 0 else delta.T  # (N, K)
        return matrix @ mean_in if mean_in.shape == (matrix.shape[1],) else None
    return None


def corrected_biases(
    layers: list[LayerInfo],
    original: dict[str, np.ndarray],
    changed: dict[str, np.ndarray],
    means: dict[str, np.ndarray],
    axes: dict[str, int],
) -> dict[str, np.ndarray]:
    """New bias values (by parameter name) for the layers whose weights differ between ``original`` and
    ``changed`` (same shapes: the simulator's form of a Config)."""
    biases = {}
    for layer in layers:
        if layer.bias is None or layer.name not in means or layer.bias not in changed:
            continue
        old, new = original[layer.weight], changed[layer.weight]
        if old.shape != new.shape or np.array_equal(old, new):
            continue
        mean_in = np.asarray(means[layer.name], dtype=np.float64)
        shift = output_shift(new - old, mean_in, layer.groups, axes.get(layer.weight, 0))
        if shift is None:
            continue
        axis = axes.get(layer.weight, 0)
        removed = ~np.any(np.moveaxis(new, axis, 0).reshape(new.shape[axis], -1) != 0, axis=1)
        shift[removed] = 0.0
        bias = changed[layer.bias].astype(np.float64)
        biases[layer.bias] = (bias - shift.reshape(bias.shape)).astype(np.float32)
    return biases


def recovered_simulation(
    func,
    layers: list[LayerInfo],
    original: dict[str, np.ndarray],
    config,
    ranges,
    axes: dict[str, int],
    reconstruction=None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(recovered values, simulated weights) of ``config``: least-squares refits (``reconstruction``, a
    :class:`hanasc.recovery.reconstruction.Reconstruction`), then the Config's simulation of the refitted
    weights, then bias correction against ``original``. The recovered values (refitted weights and corrected
    biases, original shapes) are what the materialized module gets before the Config's passes run."""
    refits = reconstruction.refit(original, config) if reconstruction is not None else {}
    simulated = simulated_weights(func, layers, {**original, **refits}, config, axes)
    means = getattr(ranges, "channel_means", None) or {}
    biases = corrected_biases(layers, original, simulated, means, axes) if means else {}
    simulated.update(biases)
    return {**refits, **biases}, simulated


def reconstruction_for(model, ranges, axes: dict[str, int] | None = None):
    """The least-squares :class:`~hanasc.recovery.reconstruction.Reconstruction` of ``model`` from the
    covariances in ``ranges``; None when the ranges carry none."""
    covariances = getattr(ranges, "covariances", None) or {}
    if not covariances:
        return None

    axes = weight_channel_axes(model.onnx_model) if axes is None else axes
    return Reconstruction(model.mod["main"], model.layers, covariances, axes)


def recovered_weights(model, config, ranges) -> dict[str, np.ndarray]:
    """The weight and bias values that recover ``config`` on ``model`` (empty when nothing is recovered)."""
    if config.is_identity() or not (
        getattr(ranges, "channel_means", None) or getattr(ranges, "covariances", None)
    ):
        return {}
    axes = weight_channel_axes(model.onnx_model)
    values, _ = recovered_simulation(
        model.mod["main"],
        model.layers,
        model.weights(),
        config,
        ranges,
        axes,
        reconstruction_for(model, ranges, axes),
    )
    return values


def refitted_layers(model, config, ranges) -> list[str]:
    """The layers whose weights least-squares reconstruction changes for ``config``."""
    reconstruction = reconstruction_for(model, ranges)
    if reconstruction is None:
        return []
    refits = reconstruction.refit(model.weights(), config)
    return [layer.name for layer in model.layers if layer.weight in refits]


def ranges_for_replay(ranges, refitted: list[str]):
    """``ranges`` with the covariances of only the ``refitted`` layers (:func:`refitted_layers` of the
    shipped Config): what ``hanasc apply`` needs to replay the shipped weights, without the statistics of
    every other layer."""
    from dataclasses import replace

    keep = set(refitted)
    return replace(ranges, covariances={k: v for k, v in ranges.covariances.items() if k in keep})


def recovered_module(model, config, ranges):
    """``model.mod`` with the corrected biases of ``config`` (the module the Config passes then change)."""
    values = recovered_weights(model, config, ranges)
    return with_weight_values(model.mod, values) if values else model.mod


def materialize_recovered(model, config, ranges, tuned: dict[str, np.ndarray] | None = None):
    """``config`` materialized with the real passes on the bias-corrected module: what ships. With
    ``tuned`` (fine-tuned values, original shapes: :mod:`hanasc.recovery.finetune`), on the module holding
    those instead (they already include the recovery they started from)."""
    mod = with_weight_values(model.mod, tuned) if tuned else recovered_module(model, config, ranges)
    return materialize(mod, config, ranges)
