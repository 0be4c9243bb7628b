"""Where the compile job's search starts: the Configs the accuracy predictor is trained on (identity,
uniform precisions, single-gene changes) and the first NSGA-II population."""

from __future__ import annotations

import numpy as np

from hanasc.core.budgets import Budgets
from hanasc.search.nsga2 import Candidate
from hanasc.search.space import SearchSpace


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


def descent_seeds(space: SearchSpace, objectives, budgets: Budgets, rng: np.random.Generator, n: int) -> list:
    """Up to ``n`` genomes that meet the budgets, found by greedy descent from the uniform genomes: each step
    applies one of the three single-gene changes that buy the most budget per point of predicted accuracy
    (chosen at random among them, so the seeds differ), with the next best ones in other genes while the
    budgets are far (up to one gene in 16 per step), until the budgets are met.

    NSGA-II from seeds near the original rarely reaches an aggressive budget in a short search; these
    seeds start it inside the feasible region, at the changes the predictor thinks cost least.
    ``objectives``: genomes -> (accuracy, latency_ms, memory_mb, energy_mj) arrays."""
    if n <= 0 or not budgets.limits():
        return []
    starts = uniform_genomes(space)
    seeds: list[np.ndarray] = []
    for attempt in range(n):
        genome = starts[attempt % len(starts)].copy()
        for _ in range(4 * len(space.slots)):
            accuracy, *costs = objectives(genome[None])
            over = budgets.relative_excess(tuple(costs))[0]
            if over <= 0.0:
                seeds.append(genome)
                break
            moves = _single_changes(space, genome)
            move_acc, *move_costs = objectives(moves)
            gained = over - budgets.relative_excess(tuple(move_costs))
            useful = np.flatnonzero(gained > 1e-9)
            if not len(useful):
                break
            lost = np.maximum(accuracy[0] - np.asarray(move_acc)[useful], 0.0)
            order = list(useful[np.argsort(-(gained[useful] / (lost + 1e-4)))])
            order.insert(0, order.pop(rng.integers(min(3, len(order)))))
            # far from the budgets, several of the best changes (in different genes) at once
            genome = _combined(genome, moves[order], max(1, min(len(space.slots) // 16, int(over * 10))))
    unique = {tuple(g): g for g in seeds}
    return list(unique.values())


def _combined(genome: np.ndarray, moves: np.ndarray, count: int) -> np.ndarray:
    """``genome`` with the first ``count`` of ``moves`` (single-gene changes, best first) that change
    different genes."""
    result, changed = genome.copy(), set()
    for move in moves:
        gene = int(np.flatnonzero(move != genome)[0])
        if gene not in changed:
            result[gene] = move[gene]
            changed.add(gene)
            if len(changed) == count:
                break
    return result


def _single_changes(space: SearchSpace, genome: np.ndarray) -> np.ndarray:
    """Every genome that differs from ``genome`` in one gene."""
    moves = []
    for i, slot in enumerate(space.slots):
        for choice in range(len(slot.choices)):
            if choice != genome[i]:
                g = genome.copy()
                g[i] = choice
                moves.append(g)
    return np.array(moves, dtype=int)


def uniform_int8_candidate(space: SearchSpace, predictor, costs, budgets, unique: list[Candidate]) -> list:
    """Uniform W8A8 as a candidate of its own when its estimate fits the budgets: the precision change
    that costs the least accuracy, measured before the search on the host, so the search's best front
    (which may hold only changes the simulator scores lower) never leaves the user without it."""
    int8 = uniform_genome(space, (8, 8))
    if int8 is None or any(list(int8) == list(u.genome) for u in unique):
        return []
    lat, mem, energy = (float(v[0]) for v in costs(int8[None]))
    candidate = Candidate(int8.tolist(), float(predictor.predict(int8[None])[0]), lat, mem, energy)
    return [candidate] if candidate.feasible(budgets) else []
