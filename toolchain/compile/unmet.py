"""What a compile that finds no acceptable model raises: :class:`NoModelMeetsBudgets` (exit 2, nothing
written) with the figures that were reachable (:class:`Reachable`), and the one-line reasons."""

from __future__ import annotations

from dataclasses import dataclass

from hanasc.core.budgets import Budgets
from hanasc.core.errors import HanascError
from hanasc.search.selection import AccuracyFloor, NoAcceptableResultError, Selection, Verified, select


@dataclass(frozen=True)
class Reachable:
    """What a compile that found nothing could reach: the fastest latency (of a verified model that kept
    the accuracy floor, or estimated for the search space) and the best held-out accuracy within the
    budgets (None where no verified model met them)."""

    fastest_latency_ms: float | None
    latency_source: str
    best_accuracy_within_budgets: float | None = None
    what: str = ""  # which model each figure belongs to


class NoModelMeetsBudgets(HanascError):
    """No model meets the budgets and the accuracy floor: exit 2, nothing written; ``reachable`` says what
    could be reached (the message says it in one line)."""

    def __init__(self, message: str, reachable: Reachable) -> None:
        super().__init__(message)
        self.reachable = reachable


class InfeasibleBudgetError(NoModelMeetsBudgets):
    """Even the fastest configuration misses the budget (or the search reached none within it)."""


def select_or_raise(
    original: Verified, verified: list[Verified], budgets: Budgets, floor: AccuracyFloor
) -> Selection:
    """:func:`hanasc.search.selection.select`; when nothing is acceptable, :class:`NoModelMeetsBudgets`
    with the same line and the reachable figures."""
    try:
        return select(original, verified, budgets, floor)
    except NoAcceptableResultError as exc:
        pool = [original, *verified]
        fastest = min((v for v in pool if floor.kept(v.accuracy)), key=lambda v: v.latency_ms, default=None)
        best = max((v for v in pool if v.meets(budgets)), key=lambda v: v.accuracy, default=None)
        reachable = Reachable(
            fastest.latency_ms if fastest else None,
            fastest.latency_source if fastest else "",
            best.accuracy if best else None,
            what=f"fastest that kept the floor: {fastest.label if fastest else 'none'}; most accurate within "
            f"the budgets: {best.label if best else 'none'}",
        )
        raise NoModelMeetsBudgets(str(exc), reachable) from None
