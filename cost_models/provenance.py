"""The figure type: every number hanasc reports carries where it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Source = Literal["measured", "predicted", "prior"]
SOURCES: tuple[str, ...] = ("measured", "predicted", "prior")


@dataclass(frozen=True)
class Figure:
    """A value with its unit and provenance.

    ``source`` is ``measured`` (``detail``: where, how many runs, median), ``predicted`` (which model,
    trained on what) or ``prior`` (a roofline from a published spec; never passed off as measured).
    """

    value: float
    unit: str
    source: Source
    detail: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, not {self.source!r}")

    def to_json(self) -> dict:
        return {"value": self.value, "unit": self.unit, "source": self.source, **self.detail}

    def __str__(self) -> str:
        return f"{self.value:.4g} {self.unit} ({self.source})"


def figure(value, unit: str, source: str, **detail) -> dict:
    """The JSON form of a :class:`Figure` (reports): its value, unit, provenance and detail; ``source`` is
    checked like the Figure's."""
    return Figure(value, unit, source, detail).to_json()  # type: ignore[arg-type]


def combine_sources(sources: list[str]) -> Source:
    """The weakest provenance of a sum: any prior term makes it prior, else any model makes it predicted."""
    if "prior" in sources:
        return "prior"
    if "predicted" in sources:
        return "predicted"
    return "measured"
