"""Materialize a whole Config: the hanasc passes composed in the order of
:func:`hanasc.passes.kinds.kinds` (prune channels -> skip residual blocks -> shrink kernels ->
separable substitution -> quantize), the order the simulator follows too.
"""

from __future__ import annotations

import tvm

from hanasc.passes.config import Config, ConfigError
from hanasc.passes.depth import residual_blocks
from hanasc.passes.kinds import relax_passes
from hanasc.passes.weights import layer_of_weight, weight_params


@tvm.transform.module_pass(opt_level=0, name="hanasc.MaterializeConfig")
class MaterializeConfig:
    """Apply every choice of ``config`` to ``main`` (a ``tvm.transform.Sequential`` of the hanasc passes).

    Layers inside skipped residual blocks are gone after :class:`SkipBlocks`; their other choices are
    dropped for the passes that follow.
    """

    def __init__(self, config: Config, ranges=None) -> None:
        self.config = config
        self.ranges = ranges

    def transform_module(self, mod: tvm.IRModule, ctx: tvm.transform.PassContext) -> tvm.IRModule:
        skipped = {
            layer
            for block in residual_blocks(mod["main"])
            if block.name in self.config.skip
            for layer in block.layers
        }
        rest = Config({k: v for k, v in self.config.layers.items() if k not in skipped})
        sequence = tvm.transform.Sequential(
            relax_passes(self.config, rest, self.ranges), name="hanasc.MaterializeConfigSequence"
        )
        return sequence(mod)


def check_layer_names(config: Config, mod) -> None:
    """ConfigError for a Config naming a layer the module does not have."""
    known = {layer_of_weight(name) for name in weight_params(mod["main"])} - {None}
    for name in config.layers:
        if name not in known:
            close = sorted(k for k in known if name.split(".")[0] in k)[:3]
            hint = f" (similar: {', '.join(close)})" if close else ""
            raise ConfigError(f"config names unknown layer '{name}'{hint}; `hanasc inspect` lists the layers")


def materialize(mod, config: Config, ranges=None):
    """Apply ``config`` to ``mod`` and return the new module; ``mod`` itself is never changed."""
    check_layer_names(config, mod)
    if config.is_identity():
        return mod
    return MaterializeConfig(config, ranges)(mod)  # ConfigError crosses the FFI as itself (passes.config)
