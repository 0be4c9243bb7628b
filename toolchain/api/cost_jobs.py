"""``hanasc.costs``, ``hanasc.calibrate`` and ``hanasc.profile``: the cost-model jobs, typed results.

TVM loads inside these functions (and for ``costs`` without a Config, without torch: tvm_ffi imports
torch eagerly, 3-4 s of a costs call), so importing this module is cheap.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from os import PathLike
from pathlib import Path

from hanasc.api.data import calibration_samples
from hanasc.api.options import InputShapes, ModelArg, input_shapes, load
from hanasc.api.results import CalibrateResult, CostsResult, ModelCosts, ProfileResult, ReportFigure
from hanasc.core.errors import HanascError
from hanasc.cost_models.target_info import get_target as cost_target
from hanasc.frontend.model_zoo import resolve_model_arg
from hanasc.targets.registry import check_choices, get_target

CALIBRATE_BASES = ("auto", "prior", "model")


def costs(
    models: ModelArg | Sequence[ModelArg],
    *,
    target: str = "host",
    device: str | None = None,
    config: str | PathLike | None = None,
    data: str | PathLike | None = None,
    memory: bool = False,
    confidence: float = 0.9,
    threads: int | None = None,
    input_shape: InputShapes = None,
) -> CostsResult:
    """Estimated latency per kernel and in total (with an interval once calibrated for ``device``),
    energy, and memory with ``memory=True``, of each model (with ``config`` materialized first); every
    figure with its provenance."""
    if not 0.5 <= confidence < 1.0:
        raise HanascError(f"--confidence {confidence:g}: must be in [0.5, 1)")
    if threads is not None and threads <= 0:
        raise HanascError(f"--threads {threads}: must be positive")
    name = cost_target(target).name
    policy = None
    if config is None:
        _import_tvm_without_torch()  # latency of the model as is: torch is not needed
    else:
        from hanasc.passes.config import Config

        policy = Config.load(Path(config))
    from hanasc.cost_models.estimate import CostContext, estimate_costs

    ctx = CostContext(device=device)
    given = [models] if isinstance(models, str | PathLike) or not isinstance(models, Sequence) else models
    rows = []
    for model in given:
        mod = _costs_module(model, input_shape, policy, data, target)
        report = estimate_costs(mod, name, ctx, memory=memory, confidence=confidence, threads=threads)
        rows.append(
            ModelCosts(
                model=str(getattr(model, "path", model)),
                latency_ms=ReportFigure.from_json(report.latency.to_json()),
                energy_mj=ReportFigure.from_json(report.energy.to_json()),
                memory_bytes={k: ReportFigure.from_json(v.to_json()) for k, v in report.memory.items()},
                report=report,
            )
        )
    return CostsResult(target=name, models=tuple(rows))


def _import_tvm_without_torch() -> None:
    """Import TVM while ``import torch`` fails, when neither is imported yet; later ``import torch`` works
    as usual."""
    if "tvm" in sys.modules or "torch" in sys.modules:
        return
    sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        import tvm  # noqa: F401
    finally:
        del sys.modules["torch"]


def _costs_module(model: ModelArg, input_shape: InputShapes, policy, data, target: str):
    """The module ``costs`` estimates: the model as is, or with ``policy`` materialized; weights stay
    parameters, so that the cost model's lowering binds them as the build does (integer weights late: the
    dot-product kernels and their prepacked weights exist only then)."""
    loaded = load(model, input_shape)
    if policy is None:
        return loaded.mod
    from hanasc.compile.apply_pipeline import calibrate_for
    from hanasc.recovery.bias_correction import materialize_recovered

    check_choices(get_target(target), policy, loaded.layers)
    samples = calibration_samples(loaded, data)
    return materialize_recovered(loaded, policy, calibrate_for(loaded, policy, samples))


def calibrate(
    measurements: str | PathLike | None = None,
    *,
    target: str = "host",
    device: str = "default",
    base: str = "auto",
    export: str | PathLike | None = None,
    import_: str | PathLike | None = None,
    input_shape: InputShapes = None,
) -> CalibrateResult:
    """Calibrate ``target``'s latency estimates for one device from whole-model timings (a CSV:
    model,ms[,threads][,runtime]); or ``export`` the device's calibration to a file, or ``import_`` one."""
    if base not in CALIBRATE_BASES:
        raise HanascError(f"--base {base}: auto, prior or model")
    if sum(x is not None for x in (measurements, export, import_)) != 1:
        raise HanascError("calibrate: give a measurements CSV, --export FILE or --import FILE (one of them)")
    from hanasc.cost_models import device_timings
    from hanasc.cost_models.estimate import CostContext

    name = cost_target(target).name
    ctx = CostContext(device=device if import_ is None or device != "default" else None)
    if import_ is not None:
        cal = device_timings.import_calibration(Path(import_), ctx)
        table = device_timings.calibration_table(cal, cal.target)
        return CalibrateResult("installed", cal.target, cal.device, cal, table, Path(import_))
    if export is not None:
        path = device_timings.export_calibration(name, ctx, Path(export))
        return CalibrateResult("exported", name, device, None, "", Path(path))
    rows = device_timings.read_measurements_csv(Path(measurements))
    cal = device_timings.calibrate(name, rows, ctx, base, input_shapes(input_shape) or None)
    table = device_timings.calibration_table(cal, name)
    return CalibrateResult("calibrated", name, getattr(cal, "device", device), cal, table)


def profile(
    *,
    target: str,
    rpc: str | None = None,
    tracker: str | None = None,
    key: str | None = None,
    budget_minutes: float = 10.0,
    model: str | PathLike | None = None,
    db: str | PathLike | None = None,
    networks: int = 0,
    progress: Callable[[int, int, str], None] | None = None,
) -> ProfileResult:
    """Profile ``target``'s kernels (locally, or on a device over TVM RPC: ``rpc`` or ``tracker`` +
    ``key``) and train its latency model; with ``networks``, time that many architectures of ``model``'s
    search space kernel by kernel inside their shipped builds. ``progress(done, total, label)``."""
    from hanasc.compile.profile_job import ProfilePlan, Session, profile_target

    if networks < 0:
        raise HanascError(f"--networks {networks}: must be 0 or more")
    info = get_target(target)
    session = Session.from_address(rpc_addr=rpc, tracker=tracker, key=key)
    plan = ProfilePlan(
        model=str(resolve_model_arg(str(model))) if model else None,
        budget_minutes=budget_minutes,
        networks=networks,
    )
    summary = profile_target(info.name, plan, session=session, db=Path(db) if db else None, progress=progress)
    return ProfileResult(
        target=summary.target,
        device=summary.device,
        store=Path(summary.db),
        kernels_measured=summary.measured,
        kernels_reused=summary.reused,
        kernels_failed=tuple(summary.failed),
        latency_model=summary.model_version,
        latency_model_samples=summary.model_samples,
        seconds=summary.seconds,
        summary=summary,
    )
