"""The mixed-precision ladder: from the original to uniform W8A8, one layer at a time, least sensitive first.

Step k quantizes the k layers whose W8A8 costs the least on their own (:func:`hanasc.search.sensitivity.
int8_order`). A step that the cost model does not estimate faster than the last kept one is folded into
the next (an int8 layer between float layers can cost its quantize and dequantize kernels more than it
saves), so the kept points fall strictly in estimated latency. Their genomes join NSGA-II's first
population and the candidates verification sees, so the fastest ladder point that keeps the accuracy floor
is always tried.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hanasc.search.sensitivity import INT8
from hanasc.search.space import SearchSpace


def ladder_genomes(space: SearchSpace, order: list[int]) -> list[np.ndarray]:
    """Every step: the identity, then the first k slots of ``order`` at W8A8, for k = 1..len(order)."""
    genome = space.identity()
    steps = [genome.copy()]
    for slot in order:
        genome[slot] = space.slots[slot].choices.index(INT8)
        steps.append(genome.copy())
    return steps


def monotone(genomes: list[np.ndarray], latency_ms: np.ndarray) -> list[int]:
    """Indices of the steps kept: each strictly faster (estimated) than the previous kept one."""
    kept: list[int] = []
    for i, ms in enumerate(latency_ms):
        if not kept or ms < latency_ms[kept[-1]]:
            kept.append(i)
    return kept


def thin(kept: list[int], latency_ms: np.ndarray, points: int) -> list[int]:
    """At most ``points`` of the kept steps, spread evenly in latency, both ends included."""
    if len(kept) <= points:
        return kept
    lat = latency_ms[kept]
    targets = np.linspace(lat[0], lat[-1], points)
    chosen = {kept[int(np.argmin(np.abs(lat - t)))] for t in targets} | {kept[0], kept[-1]}
    return sorted(chosen)


def precision_ladder(
    space: SearchSpace,
    order: list[int],
    latency: Callable[[np.ndarray], np.ndarray],
    points: int = 16,
) -> list[tuple[np.ndarray, float]]:
    """(genome, estimated ms) of the ladder's points, slowest (the original) first, strictly faster after.

    ``latency``: genomes (n, genes) -> estimated ms (the search's cost model)."""
    steps = ladder_genomes(space, order)
    latency_ms = np.asarray(latency(np.array(steps)), dtype=float)
    kept = thin(monotone(steps, latency_ms), latency_ms, points)
    return [(steps[i], float(latency_ms[i])) for i in kept]
