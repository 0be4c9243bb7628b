"""The Python API: one function per ``hanasc`` command, with the command's options as keyword arguments
(same names, defaults, checks and errors: :class:`~hanasc.core.errors.HanascError` subclasses, never
``sys.exit``), returning frozen results whose figures carry their provenance
(:mod:`~hanasc.api.results`). The CLI (:mod:`hanasc.cli`) parses options, calls these and prints.

- :func:`compile` (:mod:`~hanasc.api.compile_job`), :func:`apply` (:mod:`~hanasc.api.apply_job`),
- :func:`costs`, :func:`calibrate`, :func:`profile` (:mod:`~hanasc.api.cost_jobs`),
- :func:`inspect` (:mod:`~hanasc.api.inspect_job`).

``compile`` and ``apply`` load TVM and torch: they are imported on first use, and the cost jobs load TVM
inside their functions, so ``import hanasc.api`` and ``import hanasc`` stay light.
"""

from __future__ import annotations

from hanasc.api.cost_jobs import calibrate, costs, profile
from hanasc.api.inspect_job import inspect
from hanasc.api.options import CompileRequest
from hanasc.api.results import (
    ApplyResult,
    Artifact,
    CalibrateResult,
    CompileResult,
    CostsResult,
    InspectResult,
    ModelCosts,
    ModelFigures,
    ProfileResult,
    ReportFigure,
)

__all__ = [
    "ApplyResult",
    "Artifact",
    "CalibrateResult",
    "CompileRequest",
    "CompileResult",
    "CostsResult",
    "InspectResult",
    "ModelCosts",
    "ModelFigures",
    "NoModelMeetsBudgets",
    "ProfileResult",
    "ReportFigure",
    "apply",
    "calibrate",
    "compile",
    "costs",
    "inspect",
    "profile",
]


def __getattr__(name: str):
    """The building jobs, imported on first use (they load TVM and torch)."""
    if name == "compile":
        from hanasc.api.compile_job import compile as job

        return job
    if name == "apply":
        from hanasc.api.apply_job import apply as job

        return job
    if name == "NoModelMeetsBudgets":
        from hanasc.compile.unmet import NoModelMeetsBudgets

        return NoModelMeetsBudgets
    raise AttributeError(f"module 'hanasc.api' has no attribute '{name}'")
