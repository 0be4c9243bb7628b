"""The choice kinds, in the order they are applied, and the one way to add a kind (:func:`register`).

Order: prune channels (width) -> skip residual blocks (depth) -> shrink kernels -> separable substitution
-> quantize (bits). Pruning runs on the whole graph so that its channel groups and importances are those
the simulator computes (a skipped block's layers still count); quantization comes last so that it sees the
final weights (the depthwise and pointwise halves of a separable layer are quantized by the separable
step, each on its own, as :class:`~hanasc.passes.quantize.QuantizeLayers` quantizes the two convs it finds).

Every loop over kinds (the search space's genes, materialization, the simulator's weight steps, the ONNX
rewrite, the torch form, the cost model's kernel shapes, a target's checks, the report) reads
:func:`kinds`; a new kind is one module with a :class:`~hanasc.passes.kinds.base.ChoiceKind` subclass,
one :func:`register` call and its test (``tests/test_toy_kind.py`` shows one).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hanasc.passes.config import Config, LayerChoice, declare_field, forget_field
from hanasc.passes.kinds.base import ChoiceKind, KernelSpec, OnnxEdit, OnnxRewriteError, Slot
from hanasc.passes.kinds.bits import Bits
from hanasc.passes.kinds.kernel import Kernel
from hanasc.passes.kinds.separable import Separable
from hanasc.passes.kinds.skip import Skip
from hanasc.passes.kinds.width import Width

__all__ = [
    "ChoiceKind",
    "KernelSpec",
    "OnnxEdit",
    "OnnxRewriteError",
    "Slot",
    "architecture_only",
    "by_column",
    "by_name",
    "kinds",
    "precision_only",
    "register",
    "relax_passes",
    "simulate_weights",
    "unregister",
]

_KINDS: list[ChoiceKind] = [Width(), Skip(), Kernel(), Separable(), Bits()]


def kinds() -> tuple[ChoiceKind, ...]:
    """The registered kinds, in application order."""
    return tuple(_KINDS)


def by_name(name: str) -> ChoiceKind:
    return next(k for k in _KINDS if k.name == name)


def by_column() -> tuple[ChoiceKind, ...]:
    """The kinds in column order: the order of a target's checks and of the report's per-layer table."""
    return tuple(sorted(_KINDS, key=lambda k: k.column_rank))


def register(kind: ChoiceKind, after: str | None = None) -> ChoiceKind:
    """Add ``kind`` (applied after the kind named ``after``, or last) and let Configs carry its
    ``extra_fields``; its genes follow the existing ones (by its ``gene_rank``)."""
    if any(k.name == kind.name for k in _KINDS):
        raise ValueError(f"choice kind '{kind.name}' is registered already")
    for spec in kind.extra_fields:
        declare_field(spec)
    index = len(_KINDS) if after is None else _KINDS.index(by_name(after)) + 1
    _KINDS.insert(index, kind)
    return kind


def unregister(name: str) -> None:
    """Remove the kind ``name`` (and the Config fields it declared)."""
    kind = by_name(name)
    _KINDS.remove(kind)
    for spec in kind.extra_fields:
        forget_field(spec.name)


def relax_passes(config: Config, rest: Config, ranges=None) -> list:
    """The Relax passes of every kind, in order: ``config`` for the kinds that see the whole Config,
    ``rest`` (the layers outside skipped blocks) for the others."""
    return [kind.relax_pass(config if kind.whole_config else rest, ranges) for kind in _KINDS]


def simulate_weights(func, layers: list, weights: dict, config: Config, axes: dict | None = None) -> dict:
    """Every kind's weight step, in order, on a copy of ``weights``."""
    out = dict(weights)
    for kind in _KINDS:
        out = kind.simulate(func, layers, out, config, axes or {})
    for layer in layers:
        out[layer.weight] = np.ascontiguousarray(out[layer.weight], dtype=np.float32)
    return out


def precision_only(choice: LayerChoice) -> LayerChoice:
    """``choice`` with only the fields of the kinds that are not architecture changes (bits)."""
    out = LayerChoice()
    for kind in _KINDS:
        if not kind.architecture:
            for name in kind.fields:
                out.set(name, choice.get(name))
    return out


def architecture_only(choice: LayerChoice) -> LayerChoice:
    """``choice`` with the fields of the kinds that are not architecture changes (bits) reset."""
    out = dataclasses.replace(choice)
    for kind in _KINDS:
        if not kind.architecture:
            for name in kind.fields:
                out.set(name, LayerChoice().get(name))
    return out
