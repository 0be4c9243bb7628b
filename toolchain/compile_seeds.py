"""Where the compile job's search starts: the Configs the accuracy predictor is trained on (identity,
uniform precisions, single-gene changes) and the first NSGA-II population."""

from __future__ import annotations

import numpy as np

from hanasc.space import SearchSpace


def uniform_genomes(space: SearchSpace) -> list[np.ndarray]:
    """The identity, then one genome per precision choice applied to every layer."""
    genomes = [space.identity()]
    precision = [i for i, s in enumerate(space.slots) if s.kind == "precision"]
    if precision:
        for choice in range(1, len(space.slots[precision[0]].choices)):
            g = space.identity()
            g[precision] = choice
            genomes.append(g)
    return genomes


def predictor_image_count(macs: int) -> int:
    """Samples the simulator scores each predictor Config on: about 5 GMAC of work per Config, 12 to 64.

    EfficientNet-Lite0 at 224x224 (0.39 GMAC) gets 13; at 64x64 (0.03 GMAC) 64: a small model's scores are
    cheap, and 12 samples of a 10-class problem rank Configs by noise.
    """
    return int(np.clip(round(5e9 / max(macs, 1)), 12, 64))


def uniform_genome(space: SearchSpace, precision: tuple[int, int]) -> np.ndarray | None:
    """Every precision gene set to ``precision`` (None when the space does not offer it)."""
    slots = [i for i, s in enumerate(space.slots) if s.kind == "precision"]
    if not slots or precision not in space.slots[slots[0]].choices:
        return None
    genome = space.identity()
    genome[slots] = space.slots[slots[0]].choices.index(precision)
    return genome


def seed_genomes(space: SearchSpace, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """Predictor samples: identity, one uniform genome per precision, uniform int8 with one layer kept
    float (which layer int8 hurts, in the context the search starts from; up to n/4 of them), single-gene
    changes (each slot's sensitivity), then random changes (mostly sparse, some dense)."""
    genomes = uniform_genomes(space)
    int8 = uniform_genome(space, (8, 8))
    if int8 is not None:
        reverts = []
        for i, slot in enumerate(space.slots):
            if slot.kind == "precision":
                g = int8.copy()
                g[i] = 0
                reverts.append(g)
        genomes += [reverts[i] for i in sorted(rng.permutation(len(reverts))[: n // 4])]
    singles = []
    for i, slot in enumerate(space.slots):
        for choice in range(1, len(slot.choices)):
            g = space.identity()
            g[i] = choice
            singles.append(g)
    order = rng.permutation(len(singles))[: max(0, int(0.5 * n) - len(genomes))]
    genomes += [singles[i] for i in order]
    uniforms = uniform_genomes(space)
    while len(genomes) < n:
        density = rng.choice([rng.uniform(0.02, 0.15), rng.uniform(0.15, 1.0)], p=[0.6, 0.4])
        g = uniforms[rng.integers(len(uniforms))].copy()  # the identity or a uniform precision, then changes
        for i, slot in enumerate(space.slots):
            if rng.random() < density:
                g[i] = rng.integers(1, len(slot.choices))
        genomes.append(g)
    return genomes[:n]


def population_seeds(space: SearchSpace, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """NSGA-II's first population: identity, uniform precisions, then sparse random changes of those (so a
    tight budget finds uniform int8 plus a few architecture changes among the seeds)."""
    uniforms = uniform_genomes(space)
    genomes = list(uniforms)
    while len(genomes) < n:
        g = uniforms[rng.integers(len(uniforms))].copy()
        mask = rng.random(len(space.slots)) < rng.uniform(0.05, 0.4)
        g[mask] = [rng.integers(0, len(space.slots[i].choices)) for i in np.flatnonzero(mask)]
        genomes.append(g)
    return genomes[:n]
