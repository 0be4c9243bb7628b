"""Parse budget options: ``8ms`` / ``0.5s`` / ``0.5x`` (of the original's latency), ``2MB`` / ``512KB`` /
``1.5MiB`` / ``0.5x`` (of the original's memory), ``5mJ`` / ``0.1J``; and :class:`Budgets`, the
constraints they become, with the one feasibility test."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from hanasc.core.errors import HanascError

_UNITS = {
    "latency": {"ms": 1.0, "s": 1000.0, "us": 1e-3, "": 1.0},
    "memory": {"mb": 1.0, "mib": 1.048576, "kb": 1e-3, "kib": 1.024e-3, "gb": 1000.0, "b": 1e-6, "": 1.0},
    "energy": {"mj": 1.0, "j": 1000.0, "uj": 1e-3, "": 1.0},
}
_CANONICAL = {"latency": "ms", "memory": "MB", "energy": "mJ"}


def parse_budget(text: str | None, kind: str, option: str) -> float | None:
    """The budget in ms, MB or mJ; a one-line HanascError naming the option on bad input."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e-?\d+)?)\s*([a-zA-Z]*)\s*", text)
    units = _UNITS[kind]
    if not match or match[2].lower() not in units:
        raise HanascError(
            f"{option} '{text}': expected a number with a unit, e.g. 8{_CANONICAL[kind]} "
            f"(units: {', '.join(u for u in units if u)})"
        )
    value = float(match[1]) * units[match[2].lower()]
    if value <= 0:
        raise HanascError(f"{option} '{text}': must be positive")
    return value


def parse_latency_budget(text: str | None, option: str = "--budget") -> tuple[float | None, float | None]:
    """``(ms, None)`` for an absolute budget, ``(None, fraction)`` for ``0.5x`` (a share of the original's
    latency, resolved once the original is measured or predicted); one-line HanascError on bad input."""
    return parse_relative_budget(text, "latency", option)


def parse_relative_budget(text: str | None, kind: str, option: str) -> tuple[float | None, float | None]:
    """``(value, None)`` for an absolute budget (ms, MB or mJ), ``(None, fraction)`` for ``0.5x`` (a share of
    the original's figure); one-line HanascError naming the option on bad input."""
    if text is not None and text.strip().lower().endswith("x"):
        number = text.strip()[:-1]
        try:
            fraction = float(number)
        except ValueError:
            raise HanascError(
                f"{option} '{text}': expected a share of the original's {kind} such as 0.5x, "
                f"or 8{_CANONICAL[kind]}"
            ) from None
        if not 0 < fraction < float("inf"):
            raise HanascError(f"{option} '{text}': the share must be positive, e.g. 0.5x")
        return None, fraction
    return parse_budget(text, kind, option), None


DEFAULT_BUDGET_CONFIDENCE = 0.9
"""``--budget-confidence`` default: a latency budget counts as met when the upper end of the estimate's 90 %
one-sided interval (from the device calibration's held-out error) is under it. Without a calibration with
held-out errors the estimate itself is compared (nothing to widen it by)."""


def parse_confidence(value: float | None, option: str = "--budget-confidence") -> float:
    """A confidence in [0.5, 1); the default when None; one-line HanascError naming the option otherwise."""
    if value is None:
        return DEFAULT_BUDGET_CONFIDENCE
    if not 0.5 <= value < 1.0:
        raise HanascError(f"{option} {value:g}: must be at least 0.5 and below 1 (e.g. 0.9)")
    return float(value)


BUDGET_FIELDS = ("latency_ms", "memory_mb", "energy_mj")
_OPTIONS = {
    "latency_ms": ("--budget", "ms"),
    "memory_mb": ("--memory", "MB"),
    "energy_mj": ("--energy", "mJ"),
}


@dataclass(frozen=True)
class Budgets:
    """The constraints of a search (None: unconstrained), and the one feasibility test.

    An estimate is anything with ``latency_ms``, ``memory_mb`` and ``energy_mj`` (None energy counts as 0).
    """

    latency_ms: float | None = None
    memory_mb: float | None = None
    energy_mj: float | None = None
    latency_fraction: float | None = None  # `--budget 0.5x`: latency_ms is set from the original's latency
    memory_fraction: float | None = None  # `--memory 0.5x`: memory_mb is set from the original's memory

    def limits(self) -> dict[str, float]:
        """The budgets that are set, by field (in :data:`BUDGET_FIELDS` order)."""
        return {name: getattr(self, name) for name in BUDGET_FIELDS if getattr(self, name) is not None}

    def within(self, name: str, value: float) -> bool:
        """Whether ``value`` meets the budget ``name`` (always, when that budget is not set)."""
        limit = getattr(self, name)
        return limit is None or value <= limit

    def violations(self, estimate) -> dict[str, float]:
        """Each set budget's excess (estimate minus budget: positive when over), by field."""
        return {name: _value(estimate, name) - limit for name, limit in self.limits().items()}

    def feasible(self, estimate) -> bool:
        """Whether ``estimate`` meets every budget."""
        return all(_value(estimate, name) <= limit for name, limit in self.limits().items())

    def relative_excess(self, costs: tuple) -> np.ndarray:
        """The sum of each genome's relative excesses over the set budgets (0 when all are met).
        ``costs``: the (latency_ms, memory_mb, energy_mj) arrays."""
        over = np.zeros(len(costs[0]))
        for values, name in zip(costs, BUDGET_FIELDS, strict=True):
            limit = getattr(self, name)
            if limit is not None and values is not None:
                over += np.maximum(np.asarray(values) - limit, 0.0) / limit
        return over

    def describe(self) -> str:
        """The set budgets as their options, e.g. ``--budget 8ms, --memory 2MB`` (empty when none)."""
        return ", ".join(
            f"{_OPTIONS[name][0]} {limit:g}{_OPTIONS[name][1]}" for name, limit in self.limits().items()
        )


def _value(estimate, name: str) -> float:
    value = getattr(estimate, name)
    return 0.0 if value is None else value
