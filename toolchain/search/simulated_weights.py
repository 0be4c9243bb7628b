"""The numpy side of the simulator: a Config's weights and activation gates, with the passes' own functions.

The weight steps and their order are the choice kinds' (:mod:`hanasc.passes.choice_kinds`).
"""

from __future__ import annotations

import numpy as np

from hanasc.core.layers import LayerInfo
from hanasc.passes.config import Config, ConfigError


def simulated_weights(
    func,
    layers: list[LayerInfo],
    weights: dict[str, np.ndarray],
    config: Config,
    axes: dict[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """Weights of the original shapes that make the original graph compute ``config``: the weight step of
    every choice kind (:data:`hanasc.passes.choice_kinds.CHOICE_KINDS`), in order.

    ``axes`` gives each weight's output-channel axis (``quant_reference.weight_channel_axes``; default 0).
    """
    from hanasc.passes.choice_kinds import simulate_weights

    return simulate_weights(func, layers, weights, config, axes)


def activation_gates(layer: str, config: Config, ranges) -> tuple[float, float, float]:
    """(scale, int8 gate, fp16 gate) of the fake-quantizer in front of ``layer``."""
    choice = config.choice(layer)
    if choice.a_bits == 8:
        if ranges is None or layer not in ranges.ranges:
            raise ConfigError(f"layer '{layer}': a_bits=8 needs calibrated activation ranges (give --data)")
        return ranges.scale(layer), 1.0, 0.0
    fp16 = 1.0 if choice.a_bits == 16 or choice.w_bits == 16 else 0.0
    return 1.0, 0.0, fp16
