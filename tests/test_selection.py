"""How compile chooses its result: the original is a candidate, budgets and the accuracy floor are
constraints, the best accuracy wins, a result dominated by the original is never returned."""

from __future__ import annotations

import pytest

from hanasc.search.nsga2 import Budgets
from hanasc.search.selection import AccuracyFloor, NoAcceptableResultError, Verified, dominated_by, select

ORIGINAL = Verified("original", latency_ms=10.0, accuracy=0.90, memory_mb=5.0)
FLOOR = AccuracyFloor(original=0.90, max_loss=1.0, point=0.01, metric="top1")


def test_best_accuracy_within_budget_and_floor_wins():
    fast_bad = Verified("candidate 1", 4.0, 0.85, 2.0)
    fast_good = Verified("candidate 2", 6.0, 0.895, 3.0)
    faster_same = Verified("candidate 3", 5.0, 0.895, 3.0)
    chosen = select(ORIGINAL, [fast_bad, fast_good, faster_same], Budgets(latency_ms=7.0), FLOOR).chosen
    assert chosen is faster_same  # the tie on accuracy goes to lower latency


def test_original_wins_a_loose_budget_unless_matched():
    slower = Verified("candidate 1", 8.0, 0.89, 4.0)
    assert select(ORIGINAL, [slower], Budgets(latency_ms=100.0), FLOOR).chosen is ORIGINAL
    matched = Verified("candidate 2", 8.0, 0.90, 4.0)
    assert select(ORIGINAL, [slower, matched], Budgets(latency_ms=100.0), FLOOR).chosen is matched


def test_a_result_dominated_by_the_original_is_never_returned():
    # as accurate but slower and bigger than the original: the original comes back
    worse = Verified("candidate 1", 12.0, 0.90, 6.0)
    selection = select(ORIGINAL, [worse], Budgets(latency_ms=100.0), FLOOR)
    assert selection.chosen is ORIGINAL
    assert dominated_by(worse, ORIGINAL) and not dominated_by(ORIGINAL, worse)


def test_no_candidate_meets_budget_and_floor_names_what_is_reachable():
    collapsed = Verified("candidate 1", 5.0, 0.40, 2.0)
    kept = Verified("candidate 2", 8.5, 0.895, 4.0)
    with pytest.raises(NoAcceptableResultError) as error:
        select(ORIGINAL, [collapsed, kept], Budgets(latency_ms=6.0), FLOOR)
    message = str(error.value)
    assert "\n" not in message
    assert "fastest verified latency that kept the floor: 8.5 ms" in message
    assert "best top1 within the budgets: 0.4 at 5 ms (measured, candidate 1)" in message
    assert "--budget 6ms" in message


def test_floor_is_counted_in_points_of_the_metric():
    floor = AccuracyFloor(original=0.90, max_loss=5.0, point=0.01, metric="agreement")
    assert floor.kept(0.85) and not floor.kept(0.849)
    assert "--max-loss 5 points" in floor.describe()


def test_memory_budget_is_a_constraint_like_latency():
    small = Verified("candidate 1", 9.0, 0.90, 1.0)
    big = Verified("candidate 2", 8.0, 0.90, 9.0)
    chosen = select(ORIGINAL, [small, big], Budgets(memory_mb=2.0), FLOOR).chosen
    assert chosen is small
