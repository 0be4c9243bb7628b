"""Per-target cost models: fused-kernel features, profiler (local + TVM RPC), SQLite profile store,
XGBoost latency model per target, roofline prior, memory and energy. Every figure carries its provenance.

The CLI calls ``estimate.estimate_costs`` (``hanasc costs``), ``device_timings`` (``hanasc calibrate``) and,
through ``hanasc.compile.profile_job``, the profiler and the store (``hanasc profile``). Submodules import
TVM lazily, so importing this package is cheap.
"""

from __future__ import annotations

from hanasc.cost_models.provenance import Figure

__all__ = ["Figure"]
