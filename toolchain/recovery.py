"""Recovery without training: bias correction of every changed layer (Nagel et al. 2019, "Data-Free
Quantization", empirical variant; the mean compensation of channel pruning).

A layer whose weights a Config changes (quantized, kernel shrunk, made separable, input channels pruned)
computes ``W' x + b`` instead of ``W x + b``; over the calibration data its output is off by
``(W' - W) E[x]`` on average. Subtracting that from the bias removes the shift. ``E[x]`` is the per-channel
mean of the layer's input in the ORIGINAL model, measured with the activation ranges
(:attr:`hanasc.calibration.ActivationRanges.channel_means`), so the correction is a function of the Config
and the ranges alone: the simulator, the materialized module and ``hanasc apply`` (which reads the saved
``activation_ranges.json``) compute the same biases.

Channels a Config removes (rows whose new weights are all zero) keep the bias the Config gives them.
Layers without a bias, and ranges without channel means (files written before means were kept), are left
as they are.
"""

from __future__ import annotations

import numpy as np

from hanasc.layers import LayerInfo


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


def recovered_weights(model, config, ranges) -> dict[str, np.ndarray]:
    """The bias values that recover ``config`` on ``model`` (empty when there is nothing to correct)."""
    from hanasc.passes.quantize import weight_channel_axes
    from hanasc.simulated_weights import simulated_weights

    means = getattr(ranges, "channel_means", None) or {}
    if not means or config.is_identity():
        return {}
    original = model.weights()
    axes = weight_channel_axes(model.onnx_model)
    changed = simulated_weights(model.mod["main"], model.layers, original, config, axes)
    return corrected_biases(model.layers, original, changed, means, axes)


def recovered_module(model, config, ranges):
    """``model.mod`` with the corrected biases of ``config`` (the module the Config passes then change)."""
    from hanasc.relax_params import with_weight_values

    values = recovered_weights(model, config, ranges)
    return with_weight_values(model.mod, values) if values else model.mod


def materialize_recovered(model, config, ranges):
    """``config`` materialized with the real passes on the bias-corrected module: what ships."""
    from hanasc.passes.materialize import materialize

    return materialize(recovered_module(model, config, ranges), config, ranges)
