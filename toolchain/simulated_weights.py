"""The numpy side of the simulator: a Config's weights and activation gates, with the passes' own functions.

The order follows materialization (:mod:`hanasc.passes.materialize`): width, kernel, separable, quantize.
"""

from __future__ import annotations

import numpy as np

from hanasc.layers import LayerInfo
from hanasc.passes.config import Config, ConfigError


def simulated_weights(
    func,
    layers: list[LayerInfo],
    weights: dict[str, np.ndarray],
    config: Config,
    axes: dict[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """Weights of the original shapes that make the original graph compute ``config``.

    ``axes`` gives each weight's output-channel axis (``quantize.weight_channel_axes``; default 0).
    """
    from hanasc.passes.kernel_shrink import zero_outside_centre
    from hanasc.passes.quantize import fake_quantize_weight
    from hanasc.passes.separable import decompose_separable, reconstruct_separable
    from hanasc.passes.width import width_masks

    out = dict(weights)
    if any(config.choice(layer.name).width < 1.0 for layer in layers):
        out = dict(width_masks(func, out, config))
    for layer in layers:
        choice = config.choice(layer.name)
        w = out[layer.weight]
        axis = (axes or {}).get(layer.weight, 0)
        if choice.kernel is not None and choice.kernel < w.shape[-1]:
            w = zero_outside_centre(w, choice.kernel)
        if choice.separable:
            dw, pw, _ = decompose_separable(w)
            w = reconstruct_separable(
                fake_quantize_weight(dw, choice.w_bits), fake_quantize_weight(pw, choice.w_bits)
            )
        else:
            w = fake_quantize_weight(w, choice.w_bits, axis=axis)
        out[layer.weight] = np.ascontiguousarray(w, dtype=np.float32)
    return out


def activation_gates(layer: str, config: Config, ranges) -> tuple[float, float, float]:
    """(scale, int8 gate, fp16 gate) of the fake-quantizer in front of ``layer``."""
    choice = config.choice(layer)
    if choice.a_bits == 8:
        if ranges is None or layer not in ranges.ranges:
            raise ConfigError(f"layer '{layer}': a_bits=8 needs calibrated activation ranges (give --data)")
        return ranges.scale(layer), 1.0, 0.0
    fp16 = 1.0 if choice.a_bits == 16 or choice.w_bits == 16 else 0.0
    return 1.0, 0.0, fp16
