"""The numpy side of the simulator: a Config's weights and activation gates, with the passes' own functions.

The weight steps and their order are the choice kinds' (:mod:`hanasc.passes.kinds`).
"""

from __future__ import annotations

import numpy as np

from hanasc.core.layers import LayerInfo
from hanasc.passes.config import Config
from hanasc.passes.kinds import simulate_weights
from hanasc.passes.kinds.bits import activation_gates

__all__ = ["activation_gates", "simulated_weights"]


def simulated_weights(
    func,
    layers: list[LayerInfo],
    weights: dict[str, np.ndarray],
    config: Config,
    axes: dict[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """Weights of the original shapes that make the original graph compute ``config``: the weight step of
    every choice kind (:func:`hanasc.passes.kinds.kinds`), in order.

    ``axes`` gives each weight's output-channel axis (``quant_reference.weight_channel_axes``; default 0).
    """
    return simulate_weights(func, layers, weights, config, axes)
