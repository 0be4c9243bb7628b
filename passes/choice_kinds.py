"""The kinds of change the search makes, each declared once, in the order they are applied.

A choice kind names its forms: the Relax pass that applies it to the module that ships
(:class:`hanasc.passes.materialize.MaterializeConfig` composes them in this order), its simulation (the
weight step :func:`hanasc.search.simulated_weights.simulated_weights` applies, in this order, to the
original graph's weights, or the graph gate the simulator builds for it) and its ONNX rewrite (for runtimes
that read ONNX: :mod:`hanasc.compile.onnx_rewrite`), and how its trainable torch form
(:mod:`hanasc.recovery.torch_form`, what fine-tuning trains) computes it. Adding a kind means adding an
entry here with all of them, and tests that they agree (``tests/test_choice_kinds.py``,
``tests/test_torch_form.py``).

Order: prune channels -> skip residual blocks -> shrink kernels -> separable substitution -> quantize.
Pruning runs on the whole graph so that its channel groups and importances are those the simulator
computes (a skipped block's layers still count); quantization comes last so that it sees the final
weights (the depthwise and pointwise halves of a separable layer are quantized by the separable step, each
on its own, as :class:`~hanasc.passes.quantize.QuantizeLayers` quantizes the two convs it finds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hanasc.passes.config import Config

WeightStep = Callable[[object, list, dict, Config, dict], dict]  # (func, layers, weights, config, axes)


@dataclass(frozen=True)
class ChoiceKind:
    """One kind of change: the Config fields it reads and its three forms."""

    name: str
    fields: tuple[str, ...]  # Config.skip or LayerChoice fields
    relax_pass: Callable[[Config, object], object]  # (config, ranges) -> a tvm module pass
    whole_config: bool  # the pass sees every layer (True) or only those outside skipped blocks
    simulate: WeightStep | None  # the simulator's weight step; None: a gate in the simulation graph
    simulation: str  # how the simulator reproduces it (for docs and reports)
    # the hanasc.compile.onnx_rewrite function that writes it into ONNX (None: not there)
    onnx_rewrite: str | None
    torch_form: str  # how the trainable torch form (hanasc.recovery.torch_form, for fine-tuning) computes it


def _prune(config: Config, ranges):
    from hanasc.passes.width import PruneChannels

    return PruneChannels(config)


def _skip(config: Config, ranges):
    from hanasc.passes.depth import SkipBlocks

    return SkipBlocks(config)


def _shrink(config: Config, ranges):
    from hanasc.passes.kernel_shrink import ShrinkKernel

    return ShrinkKernel(config)


def _separable(config: Config, ranges):
    from hanasc.passes.separable import SeparableConv

    return SeparableConv(config)


def _quantize(config: Config, ranges):
    from hanasc.passes.quantize import QuantizeLayers

    return QuantizeLayers(config, ranges)


def simulate_width(func, layers: list, weights: dict, config: Config, axes: dict) -> dict:
    """Pruned channels as zeroed weights of the original shapes (:func:`hanasc.passes.width.width_masks`)."""
    from hanasc.passes.width import width_masks

    if any(config.choice(layer.name).width < 1.0 for layer in layers):
        return dict(width_masks(func, weights, config))
    return weights


def simulate_kernel(func, layers: list, weights: dict, config: Config, axes: dict) -> dict:
    """A shrunk kernel as the original kernel zeroed outside its centre."""
    from hanasc.passes.kernel_shrink import zero_outside_centre

    for layer in layers:
        k, w = config.choice(layer.name).kernel, weights[layer.weight]
        if k is not None and k < w.shape[-1]:
            weights[layer.weight] = zero_outside_centre(w, k)
    return weights


def simulate_separable(func, layers: list, weights: dict, config: Config, axes: dict) -> dict:
    """A separable layer as the product of its depthwise and pointwise factors, each quantized to the
    layer's weight bits as the two convs the pass makes are."""
    from hanasc.passes.quant_reference import fake_quantize_weight
    from hanasc.passes.separable import decompose_separable, reconstruct_separable

    for layer in layers:
        choice = config.choice(layer.name)
        if choice.separable:
            dw, pw, _ = decompose_separable(weights[layer.weight])
            weights[layer.weight] = reconstruct_separable(
                fake_quantize_weight(dw, choice.w_bits), fake_quantize_weight(pw, choice.w_bits)
            )
    return weights


def simulate_precision(func, layers: list, weights: dict, config: Config, axes: dict) -> dict:
    """Quantized weights of the layers not made separable (those were quantized by their factors)."""
    from hanasc.passes.quant_reference import fake_quantize_weight

    for layer in layers:
        choice = config.choice(layer.name)
        if not choice.separable:
            axis = axes.get(layer.weight, 0)
            weights[layer.weight] = fake_quantize_weight(weights[layer.weight], choice.w_bits, axis=axis)
    return weights


CHOICE_KINDS: tuple[ChoiceKind, ...] = (
    ChoiceKind(
        "width",
        ("width",),
        _prune,
        True,
        simulate_width,
        "pruned channels zeroed in the original weights",
        "_set_weights",
        "the simulation's mask in the forward pass, straight-through gradient (pruned entries stay zero)",
    ),
    ChoiceKind(
        "depth",
        ("skip",),
        _skip,
        True,
        None,
        "the block's residual branch multiplied by a 0/1 gate in the simulation graph",
        "_bypass_skipped_blocks",
        "the block's branch multiplied by 0 at its Add, as the simulation graph gates it",
    ),
    ChoiceKind(
        "kernel",
        ("kernel",),
        _shrink,
        False,
        simulate_kernel,
        "the kernel zeroed outside its centre",
        "_rewrite_convs",
        "the simulation's crop in the forward pass, straight-through gradient",
    ),
    ChoiceKind(
        "separable",
        ("separable",),
        _separable,
        False,
        simulate_separable,
        "the product of the (quantized) depthwise and pointwise factors",
        "_rewrite_convs",
        "the simulation's factorization of the current weight in the forward pass (a projection), "
        "straight-through gradient to the original-shape weight",
    ),
    ChoiceKind(
        "precision",
        ("w_bits", "a_bits"),
        _quantize,
        False,
        simulate_precision,
        "fake-quantized weights, and activation fake-quantizers gated in the simulation graph",
        None,  # the target's own toolchain quantizes an exported ONNX graph
        "the simulation's fake-quantized weights and the same activation fake-quantizers, rounding "
        "straight-through",
    ),
)


def relax_passes(config: Config, rest: Config, ranges=None) -> list:
    """The Relax passes of every kind, in order: ``config`` for the kinds that see the whole Config,
    ``rest`` (the layers outside skipped blocks) for the others."""
    return [kind.relax_pass(config if kind.whole_config else rest, ranges) for kind in CHOICE_KINDS]


def simulate_weights(func, layers: list, weights: dict, config: Config, axes: dict | None = None) -> dict:
    """Every kind's weight step, in order, on a copy of ``weights``."""
    out = dict(weights)
    for kind in CHOICE_KINDS:
        if kind.simulate is not None:
            out = kind.simulate(func, layers, out, config, axes or {})
    for layer in layers:
        out[layer.weight] = np.ascontiguousarray(out[layer.weight], dtype=np.float32)
    return out
