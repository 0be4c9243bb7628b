"""Choosing what ``hanasc compile`` returns among verified models.

The rules (docs/compile.md, "How the result is chosen"):

- the original model (the identity Config) is always a candidate;
- a candidate is acceptable when it meets every budget and its held-out accuracy is at most ``max_loss``
  points below the original's (the accuracy floor);
- among acceptable candidates the best held-out accuracy wins; ties go to lower latency, then lower memory;
- a result dominated by the original (no faster, no smaller, no more accurate, worse in one) is never
  returned: the original is;
- when nothing is acceptable, :class:`NoAcceptableResultError` names what was reachable.
"""

from __future__ import annotations

from dataclasses import dataclass

from hanasc.core.budgets import Budgets
from hanasc.core.errors import HanascError


class NoAcceptableResultError(HanascError):
    """No verified model meets both the budgets and the accuracy floor (exit 2, nothing written)."""


@dataclass(frozen=True)
class Verified:
    """One model measured (or predicted, where the target is unreachable) after materialization."""

    label: str  # "original" or "candidate 3"
    latency_ms: float
    accuracy: float
    memory_mb: float
    energy_mj: float | None = None
    latency_source: str = "measured"

    @property
    def is_original(self) -> bool:
        return self.label == "original"

    def meets(self, budgets: Budgets) -> bool:
        return budgets.feasible(self)


@dataclass(frozen=True)
class AccuracyFloor:
    """``original - max_loss x point``: the lowest held-out accuracy a result may have.

    ``point`` is one point of the metric (0.01 for top-1 and agreement, which are fractions).
    """

    original: float
    max_loss: float
    point: float = 0.01
    metric: str = "accuracy"

    @property
    def minimum(self) -> float:
        return self.original - self.max_loss * self.point

    def kept(self, accuracy: float) -> bool:
        return accuracy >= self.minimum - 1e-9

    def describe(self) -> str:
        return (
            f"{self.metric} >= {self.minimum:.4g} (the original's {self.original:.4g} minus "
            f"--max-loss {self.max_loss:g} point{'s' if self.max_loss != 1 else ''})"
        )


def dominated_by(model: Verified, other: Verified) -> bool:
    """Whether ``other`` is no worse than ``model`` on latency, accuracy and memory, and better on one."""
    no_worse = (
        other.latency_ms <= model.latency_ms
        and other.accuracy >= model.accuracy
        and other.memory_mb <= model.memory_mb
    )
    better = (
        other.latency_ms < model.latency_ms
        or other.accuracy > model.accuracy
        or other.memory_mb < model.memory_mb
    )
    return no_worse and better


@dataclass(frozen=True)
class Selection:
    """The chosen model and why."""

    chosen: Verified
    reason: str
    acceptable: int
    considered: int

    def to_json(self, floor: AccuracyFloor) -> dict:
        return {
            "chosen": self.chosen.label,
            "reason": self.reason,
            "accuracy_floor": round(floor.minimum, 6),
            "max_loss_points": floor.max_loss,
            "acceptable": self.acceptable,
            "considered": self.considered,
            "rule": "the original is a candidate; among models meeting the budgets and the floor the best "
            "held-out accuracy wins, then lower latency, then lower memory; a result dominated by the "
            "original is never returned",
        }


def select(
    original: Verified, candidates: list[Verified], budgets: Budgets, floor: AccuracyFloor
) -> Selection:
    """The result by the rules above; raises :class:`NoAcceptableResultError` when none is acceptable."""
    pool = [original, *candidates]
    acceptable = [v for v in pool if v.meets(budgets) and floor.kept(v.accuracy)]
    if not acceptable:
        raise NoAcceptableResultError(unreachable_message(pool, budgets, floor))
    best = min(acceptable, key=lambda v: (-v.accuracy, v.latency_ms, v.memory_mb))
    reason = "best held-out accuracy among the models meeting the budgets and the floor"
    if not best.is_original and dominated_by(best, original):
        best, reason = original, f"{best.label} was dominated by the original"
    elif best.is_original:
        reason = "no candidate meeting the budgets matched the original's accuracy"
    return Selection(best, reason, len(acceptable), len(pool))


def unreachable_message(pool: list[Verified], budgets: Budgets, floor: AccuracyFloor) -> str:
    """One line: the fastest verified latency that kept the floor, and the best accuracy within budget."""
    kept = [v for v in pool if floor.kept(v.accuracy)]
    within = [v for v in pool if v.meets(budgets)]
    budget = budgets.describe()
    fastest = min(kept, key=lambda v: v.latency_ms, default=None)
    best = max(within, key=lambda v: v.accuracy, default=None)
    parts = [f"no verified model meets {budget or 'the budgets'} and {floor.describe()}"]
    parts.append(
        f"fastest verified latency that kept the floor: {fastest.latency_ms:.3g} ms "
        f"({fastest.latency_source}, {fastest.label})"
        if fastest
        else "no verified model kept the floor"
    )
    parts.append(
        f"best {floor.metric} within the budgets: {best.accuracy:.4g} at {best.latency_ms:.3g} ms "
        f"({best.latency_source}, {best.label})"
        if best
        else "no verified model met the budgets"
    )
    return "; ".join(parts)
