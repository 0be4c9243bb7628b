"""hanasc's Relax passes, for use in your own TVM pipelines (``tvm.transform`` module passes).

Each applies one kind of choice of a :class:`~hanasc.passes.config.Config` (the kinds and their order:
:func:`hanasc.passes.kinds.kinds`); :class:`MaterializeConfig` applies them all. The names
resolve on first use, so ``import hanasc.passes.config`` stays free of TVM.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "MaterializeConfig": "hanasc.passes.materialize",
    "materialize": "hanasc.passes.materialize",
    "PruneChannels": "hanasc.passes.width",
    "SkipBlocks": "hanasc.passes.depth",
    "ShrinkKernel": "hanasc.passes.kernel_shrink",
    "SeparableConv": "hanasc.passes.separable",
    "QuantizeLayers": "hanasc.passes.quantize",
    "FakeQuantizeLayers": "hanasc.passes.quantize",
    "Config": "hanasc.passes.config",
    "LayerChoice": "hanasc.passes.config",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hanasc.passes' has no attribute '{name}'")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
