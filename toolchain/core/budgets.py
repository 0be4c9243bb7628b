"""Parse budget options: ``8ms`` / ``0.5s`` / ``0.5x`` (of the original's latency), ``2MB`` / ``512KB`` /
``1.5MiB`` / ``0.5x`` (of the original's memory), ``5mJ`` / ``0.1J``."""

from __future__ import annotations

import re

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
