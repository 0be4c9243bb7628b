"""Per-layer sensitivity, measured: every single-gene change of a space scored on its own.

For each slot (a layer's precision, a channel group's width, a kernel, a separable substitution, a block
skip) and each of its choices, the model with only that change is run through the simulator on the
calibration samples; the metric drop against the original and the relative output error are kept. These
are what HAWQ-style mixed precision orders layers by, what :mod:`hanasc.search.ladder` climbs, and, as
predictor samples, what the accuracy predictor learns single changes from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from hanasc.search.space import SearchSpace

INT8 = (8, 8)


@dataclass(frozen=True)
class Sensitivity:
    """One single-gene change: which slot and choice, what it costs in metric and in output error."""

    slot: int
    kind: str
    layers: tuple[str, ...]
    choice: object
    metric_drop: float  # the original's score minus the changed model's (positive: worse)
    output_error: float  # ||y' - y|| / ||y|| over the calibration samples

    def to_json(self, digits: int | None = 5) -> dict:
        """A JSON object (``digits=None``: the values unrounded, as a resumed run must read them)."""
        data = asdict(self)
        data["choice"] = list(self.choice) if isinstance(self.choice, tuple) else self.choice
        data["layers"] = list(self.layers)
        if digits is not None:
            data["metric_drop"] = round(self.metric_drop, digits)
            data["output_error"] = round(self.output_error, digits)
        return data


def single_changes(space: SearchSpace, limit: int) -> list[tuple[int, int]]:
    """(slot, choice index) of the single changes to measure, at most ``limit``: every layer's W8A8 first
    (the ladder needs all of them), then every other choice in slot order."""
    int8 = [(i, s.choices.index(INT8)) for i, s in enumerate(space.slots) if INT8 in s.choices]
    rest = [
        (i, c)
        for i, slot in enumerate(space.slots)
        for c in range(1, len(slot.choices))
        if (i, c) not in int8
    ]
    return (int8 + rest)[:limit]


def single_genome(space: SearchSpace, slot: int, choice: int) -> np.ndarray:
    genome = space.identity()
    genome[slot] = choice
    return genome


def output_error(outputs: np.ndarray, reference: np.ndarray) -> float:
    """Relative L2 distance of ``outputs`` from ``reference``."""
    scale = float(np.linalg.norm(reference)) or 1.0
    return float(np.linalg.norm(outputs.astype(np.float64) - reference) / scale)


def measure(
    space: SearchSpace,
    run_genome: Callable[[np.ndarray], np.ndarray],
    score: Callable[[np.ndarray], float],
    reference: np.ndarray,
    changes: list[tuple[int, int]],
    progress: Callable[[], None] = lambda: None,
) -> list[Sensitivity]:
    """Each change's :class:`Sensitivity`; ``run_genome`` gives a genome's outputs on the calibration
    samples, ``score`` the metric of outputs, ``reference`` the original's outputs."""
    original = score(reference)
    found = []
    for slot, choice in changes:
        outputs = run_genome(single_genome(space, slot, choice))
        s = space.slots[slot]
        found.append(
            Sensitivity(
                slot,
                s.kind,
                tuple(s.layers),
                s.choices[choice],
                original - score(outputs),
                output_error(outputs, reference),
            )
        )
        progress()
    return found


def int8_order(space: SearchSpace, sensitivities: list[Sensitivity]) -> list[int]:
    """Precision slots from the least to the most sensitive to W8A8 (metric drop, then output error)."""
    int8 = {s.slot: s for s in sensitivities if s.choice == INT8}
    return sorted(int8, key=lambda i: (int8[i].metric_drop, int8[i].output_error, i))


def table(space: SearchSpace, sensitivities: list[Sensitivity]) -> np.ndarray:
    """Slots x choices x (metric drop, output error) of the measured single changes (0 where unmeasured,
    and for every slot's original choice)."""
    widest = max((len(s.choices) for s in space.slots), default=1)
    values = np.zeros((len(space.slots), widest, 2), dtype=np.float64)
    for s in sensitivities:
        values[s.slot, space.slots[s.slot].choices.index(s.choice)] = (s.metric_drop, s.output_error)
    return values


def summary(sensitivities: list[Sensitivity], top: int = 10) -> dict:
    """The report's view: how many changes were measured and the most sensitive layers at W8A8."""
    int8 = sorted((s for s in sensitivities if s.choice == INT8), key=lambda s: -s.output_error)
    return {
        "method": "each single change applied alone, simulated on the calibration samples the predictor "
        "is scored on: metric drop against the original and relative output error",
        "changes_measured": len(sensitivities),
        "most_sensitive_at_w8a8": [s.to_json() for s in int8[:top]],
        "all": [s.to_json() for s in sensitivities],
    }


def from_json(rows: list[dict]) -> list[Sensitivity]:
    """Sensitivities saved with :meth:`Sensitivity.to_json` (a resumed run reads them back)."""
    return [
        Sensitivity(
            int(r["slot"]),
            r["kind"],
            tuple(r["layers"]),
            tuple(r["choice"]) if isinstance(r["choice"], list) else r["choice"],
            float(r["metric_drop"]),
            float(r["output_error"]),
        )
        for r in rows
    ]
