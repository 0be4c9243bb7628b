"""Budget options: absolute figures with units, or shares of the original's figure (0.5x); Budgets owns the
one feasibility test."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest

from hanasc.core.budgets import Budgets, parse_latency_budget, parse_relative_budget
from hanasc.core.errors import HanascError


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("8ms", "latency", (8.0, None)),
        ("0.5x", "latency", (None, 0.5)),
        ("2MB", "memory", (2.0, None)),
        ("512KB", "memory", (0.512, None)),
        ("0.25X", "memory", (None, 0.25)),
        (None, "memory", (None, None)),
    ],
)
def test_absolute_and_relative_budgets(text, kind, expected):
    value, share = parse_relative_budget(text, kind, "--opt")
    assert (value is None, share is None) == (expected[0] is None, expected[1] is None)
    assert value == pytest.approx(expected[0]) if value is not None else share == expected[1]


@pytest.mark.parametrize("text", ["halfx", "-1x", "0x", "2 parsecs", "x"])
def test_bad_budgets_name_the_option(text):
    with pytest.raises(HanascError, match="--memory") as info:
        parse_relative_budget(text, "memory", "--memory")
    assert "\n" not in str(info.value)


def test_latency_budget_is_the_relative_parser():
    assert parse_latency_budget("0.6x") == (None, 0.6)


def test_budgets_feasibility_is_written_once():
    budgets = Budgets(latency_ms=5.0, energy_mj=2.0)
    within = SimpleNamespace(latency_ms=5.0, memory_mb=99.0, energy_mj=None)  # None energy counts as 0
    over = SimpleNamespace(latency_ms=6.0, memory_mb=1.0, energy_mj=3.0)
    assert budgets.feasible(within) and not budgets.feasible(over)
    assert budgets.violations(over) == {"latency_ms": 1.0, "energy_mj": 1.0}
    assert budgets.limits() == {"latency_ms": 5.0, "energy_mj": 2.0}
    assert budgets.describe() == "--budget 5ms, --energy 2mJ"
    assert Budgets().feasible(over) and Budgets().describe() == "" and not Budgets().limits()
    excess = budgets.relative_excess((np.array([5.0, 10.0]), np.array([1.0, 1.0]), np.array([1.0, 3.0])))
    np.testing.assert_allclose(excess, [0.0, 1.5])
    assert budgets.within("latency_ms", 5.0) and budgets.within("memory_mb", 1e9)
    with pytest.raises(dataclasses.FrozenInstanceError):
        budgets.latency_ms = 1.0  # type: ignore[misc]
