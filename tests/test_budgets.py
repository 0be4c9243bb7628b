"""Budget options: absolute figures with units, or shares of the original's figure (0.5x)."""

from __future__ import annotations

import pytest

from hanasc.core.budgets import parse_latency_budget, parse_relative_budget
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
