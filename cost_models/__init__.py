"""Per-target cost models: fused-kernel features, profiler (local + TVM RPC), SQLite profile store,
XGBoost latency model per target, roofline prior, memory and energy. Every figure carries its provenance.

The CLI calls :func:`profile_target`, :func:`estimate_costs` and :func:`calibrate_from_csv`. Submodules
import TVM lazily, so importing this package is cheap.
"""

from __future__ import annotations

from hanasc.cost_models.provenance import Figure

__all__ = ["Figure", "calibrate", "calibrate_from_csv", "estimate_costs", "profile_target"]


def __getattr__(name: str):
    if name in ("estimate_costs", "calibrate", "calibrate_from_csv"):
        from hanasc.cost_models import estimate

        return getattr(estimate, name)
    if name == "profile_target":
        from hanasc.cost_models.profile_job import profile_target

        return profile_target
    raise AttributeError(name)
