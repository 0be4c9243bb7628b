"""Architectures sampled from a model's search space and materialized by the passes: what the latency model
of a target that runs on this CPU is trained on (``hanasc profile --networks``).

Each genome mixes every choice kind: a change rate ``p`` ~ U(0.05, 0.9) is drawn per architecture, then each
gene leaves the original with probability ``p`` for a uniformly drawn other choice, so the sample spans
near-original to heavily changed models. Activation ranges for 8-bit activations come from random inputs:
latency does not depend on the values.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hanasc.frontend.calibration import calibrate
from hanasc.frontend.loading import load_model
from hanasc.passes.materialize import materialize
from hanasc.search.space import build_space


@dataclass
class SampledArchitecture:
    label: str  # index and the changed genes by kind ("m003 prec12 widt4")
    mod: object  # the materialized Relax module, weights as parameters


def sample_architectures(
    model_path: str | Path, n: int, seed: int = 0, skip: int = 0
) -> Iterator[SampledArchitecture]:
    """``n`` architectures of ``model_path``'s search space (the original's input shape, batch 1); the
    first ``skip`` are drawn but not materialized (a resumed run gets the same sequence)."""
    model = load_model(model_path)
    space = build_space(model)
    data = np.random.default_rng(seed + 1)
    samples = [
        {s.name: data.standard_normal(s.shape).astype(s.dtype) for s in model.inputs} for _ in range(4)
    ]
    ranges = calibrate(model, samples)
    rng = np.random.default_rng(seed)
    for i in range(n):
        genome = mixed_genome(space, rng)
        if i < skip:
            continue
        kinds: dict[str, int] = {}
        for slot, gene in zip(space.slots, genome, strict=True):
            if gene:
                kinds[slot.kind] = kinds.get(slot.kind, 0) + 1
        label = f"m{i:03d} " + " ".join(f"{k[:4]}{v}" for k, v in sorted(kinds.items()))
        yield SampledArchitecture(label.strip(), materialize(model.mod, space.decode(genome), ranges))


def mixed_genome(space, rng: np.random.Generator) -> np.ndarray:
    """One genome of ``space``: a change rate ``p`` ~ U(0.05, 0.9), then each gene with a choice leaves the
    original with probability ``p`` for a uniformly drawn other choice."""
    p = rng.uniform(0.05, 0.9)
    genome = space.identity()
    for g, slot in enumerate(space.slots):
        if len(slot.choices) > 1 and rng.random() < p:
            genome[g] = rng.integers(1, len(slot.choices))
    return genome
