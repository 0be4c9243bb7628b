"""``hanasc costs`` and ``hanasc calibrate``: latency, memory and energy of a module on a target.

Per kernel, the best source available wins: a measured time from the profile store (same target, TVM
version, device, kernel signature), else the target's XGBoost model, else the roofline prior. The total adds
the fitted runtime overhead where a calibration exists; a total built on any prior term is labelled prior,
unless whole-model measurements calibrated it.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from hanasc.cost_models.calibration import Calibration, fit_calibration, load_calibration, save_calibration
from hanasc.cost_models.energy import estimate_energy
from hanasc.cost_models.kernels import LoweredModel, lower_to_kernels
from hanasc.cost_models.latency_model import LatencyModel, load_latest
from hanasc.cost_models.memory import estimate_memory
from hanasc.cost_models.prior import roofline
from hanasc.cost_models.provenance import Figure, combine_sources
from hanasc.cost_models.report import CostReport, KernelCost
from hanasc.cost_models.spec import HardwareSpec, load_spec
from hanasc.cost_models.store import ModelRow, ProfileStore, tvm_version
from hanasc.cost_models.target_info import get_target
from hanasc.errors import HanascError


class CalibrationInputError(HanascError):
    """A measurements CSV that is missing, malformed, or names models that cannot be read."""


@dataclass(frozen=True)
class CostContext:
    """Where estimates come from: the cache root (latency models, calibrations) and the profile store."""

    root: Path | None = None  # default: hanasc.paths.cache_dir()
    db: Path | None = None  # default: <cache>/profiles.sqlite

    def cache(self) -> Path:
        from hanasc.paths import cache_dir

        return Path(self.root) if self.root else cache_dir()

    def models_root(self) -> Path:
        return self.cache() / "latency_models"

    def calibration_path(self, target: str, base: str) -> Path:
        return self.cache() / "calibration" / f"{target}-{base}.json"

    def store(self) -> ProfileStore:
        return ProfileStore(self.db or self.cache() / "profiles.sqlite")


@dataclass(frozen=True)
class KernelTimes:
    """Seconds per call of each kernel and where each figure came from."""

    seconds: list[float]
    sources: list[str]
    detail: list[dict]


def kernel_times(
    lowered: LoweredModel, spec: HardwareSpec, model: LatencyModel | None, store: ProfileStore | None
) -> KernelTimes:
    seconds, sources, detail = [], [], []
    predicted = model.predict_kernels_s([k.features for k in lowered.kernels]) if model else None
    for i, kernel in enumerate(lowered.kernels):
        row = (
            store.get_kernel(lowered.target, model.meta.device, kernel.signature) if store and model else None
        )
        if row is not None:
            seconds.append(row.median_s)
            sources.append("measured")
            detail.append({"device": row.device, "repeats": row.repeats, "statistic": "median"})
        elif predicted is not None:
            seconds.append(float(predicted[i]))
            sources.append("predicted")
            detail.append(model.meta.provenance())
        else:
            est = roofline(kernel.features, spec)
            seconds.append(est.seconds)
            sources.append("prior")
            detail.append({"model": "roofline", "bound": est.bound, "precision": est.precision})
    return KernelTimes(seconds, sources, detail)


def estimate_costs(mod, target: str, ctx: CostContext = CostContext()) -> CostReport:
    """Latency, memory and energy of a Relax module (weights bound or as parameters) on a target."""
    from hanasc.cost_models.memory import _bound

    cost_target = get_target(target)
    spec = load_spec(cost_target.name, ctx.cache() / "host_spec.json")
    lowered = lower_to_kernels(_bound(mod), cost_target.name)
    model = load_latest(cost_target.name, root=ctx.models_root()) if cost_target.compiles_with_tvm else None
    with ctx.store() as store:
        times = kernel_times(lowered, spec, model, store)
    kernel_sum = sum(t * k.calls for t, k in zip(times.seconds, lowered.kernels, strict=True))
    source = combine_sources(times.sources)
    notes: list[str] = []
    detail: dict = {"kernels": dict(_count(times.sources)), "kernel_calls": lowered.total_calls}
    if model is not None:
        cal = load_calibration(ctx.calibration_path(cost_target.name, "model"))
        if cal is not None and cal.base == model.meta.version:
            model = model.with_calibration(cal)
        total_s = model.network_s(kernel_sum, lowered.total_calls)
        detail.update(model.meta.provenance())
        if model.meta.calibration is None:
            notes.append("no whole-model measurements yet: runtime overhead between kernels not included")
    else:
        cal = load_calibration(ctx.calibration_path(cost_target.name, "prior"))
        if cal is not None:
            total_s = cal.apply(kernel_sum, lowered.total_calls)
            source = "predicted"
            detail.update({"model": "calibrated roofline", "calibration_models": cal.n_models})
        else:
            total_s = kernel_sum
            notes.append(f"no profile or calibration for '{cost_target.name}': roofline prior from its spec")
    kernels = [
        KernelCost(
            k.name,
            k.features.op_kind,
            k.calls,
            k.features.flops,
            k.features.bytes_moved,
            Figure(t * 1e3, "ms", src, d),
        )
        for k, t, src, d in zip(lowered.kernels, times.seconds, times.sources, times.detail, strict=True)
    ]
    memory = estimate_memory(mod, lowered, cost_target.name)
    how = {"model": "static memory plan of the lowered module"}
    energy = estimate_energy(lowered, spec)
    return CostReport(
        target=cost_target.name,
        kernels=kernels,
        latency=Figure(total_s * 1e3, "ms", source, detail),
        memory={
            "weights": Figure(
                memory.weight_bytes, "B", "predicted", {**how, "by_dtype": memory.weight_bytes_by_dtype}
            ),
            "activations": Figure(memory.activation_peak_bytes, "B", "predicted", how),
            "workspace": Figure(memory.workspace_bytes, "B", "predicted", how),
            "total": Figure(memory.total_bytes, "B", "predicted", how),
        },
        energy=Figure(
            energy.total_j * 1e3,
            "mJ",
            "prior",
            {"model": "ops x pJ/op + bytes x pJ/byte from spec", "ops_by_precision": energy.ops_by_precision},
        ),
        flops=lowered.flops,
        notes=notes,
    )


def _count(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


def calibrate(
    target: str,
    rows: list[tuple[str | Path, float]],
    ctx: CostContext = CostContext(),
    base: str = "auto",
    input_shapes: dict | None = None,
) -> Calibration:
    """Fit scale + per-call + fixed overhead from whole-model measurements ``(onnx_path, measured_ms)``.

    ``base``: "prior" corrects the roofline prior; "model" the target's XGBoost model; "auto" picks the
    model if one was trained. The fit is saved under the cache and used by :func:`estimate_costs`.
    """
    from hanasc.frontend import load_model
    from hanasc.relax_params import bind_weights

    if not rows:
        raise CalibrationInputError("calibration needs at least one (model, ms) measurement")
    cost_target = get_target(target)
    spec = load_spec(cost_target.name, ctx.cache() / "host_spec.json")
    model = load_latest(cost_target.name, root=ctx.models_root()) if cost_target.compiles_with_tvm else None
    use_model = model is not None and base in ("auto", "model")
    if base == "model" and model is None:
        raise CalibrationInputError(f"no latency model trained for '{cost_target.name}' (run hanasc profile)")
    sums, calls, measured = [], [], []
    with ctx.store() as store:
        for path, ms in rows:
            mod = bind_weights(load_model(path, input_shapes).mod)
            lowered = lower_to_kernels(mod, cost_target.name)
            times = kernel_times(lowered, spec, model if use_model else None, store if use_model else None)
            sums.append(sum(t * k.calls for t, k in zip(times.seconds, lowered.kernels, strict=True)))
            calls.append(lowered.total_calls)
            measured.append(float(ms) / 1e3)
            from hanasc.cost_models.measure import module_hash

            store.put_model(
                ModelRow(
                    module_hash(mod),
                    Path(path).name,
                    cost_target.name,
                    "user",
                    tvm_version(),
                    float(ms),
                    0,
                    "imported",
                    lowered.total_calls,
                )
            )
    kind = "model" if use_model else "prior"
    cal = fit_calibration(
        sums, calls, measured, fit_scale=True, base=model.meta.version if use_model else "prior"
    )
    save_calibration(cal, ctx.calibration_path(cost_target.name, kind))
    return cal


def read_measurements_csv(path: str | Path) -> list[tuple[Path, float]]:
    """Rows ``model,ms`` (header required; model paths relative to the CSV's folder)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CalibrationInputError(f"{path}: no such file") from None
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames or not {"model", "ms"} <= set(reader.fieldnames):
        raise CalibrationInputError(f"{path}: expected a header with columns 'model' and 'ms'")
    rows = []
    for line, row in enumerate(reader, start=2):
        try:
            ms = float(row["ms"])
        except (TypeError, ValueError):
            raise CalibrationInputError(f"{path}:{line}: 'ms' is not a number: {row['ms']!r}") from None
        if ms <= 0:
            raise CalibrationInputError(f"{path}:{line}: 'ms' must be positive")
        model = (path.parent / row["model"]).resolve()
        if not model.exists():
            raise CalibrationInputError(f"{path}:{line}: model '{row['model']}' not found")
        rows.append((model, ms))
    return rows


def calibrate_from_csv(
    target: str, csv_path: str | Path, ctx: CostContext = CostContext(), base: str = "auto"
):
    """``hanasc calibrate --target T measurements.csv``: returns the fitted calibration."""
    return calibrate(target, read_measurements_csv(csv_path), ctx, base)


def calibration_table(cal: Calibration, target: str) -> str:
    rows = [
        ("target", target),
        ("corrects", cal.base),
        ("models", str(cal.n_models)),
        ("scale", f"{cal.scale:.4g}"),
        ("overhead per kernel call", f"{cal.per_call_s * 1e6:.2f} us"),
        ("fixed overhead", f"{cal.fixed_s * 1e3:.4f} ms"),
        ("RMSPE on these models", f"{cal.fit_rmspe:.1f} %"),
    ]
    return "\n".join(f"{k:<26} {v}" for k, v in rows)
