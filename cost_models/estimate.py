"""``hanasc costs``: latency, memory and energy of a module on a target (``hanasc calibrate`` fits
whole-model device timings: :mod:`hanasc.cost_models.device_timings`).

Per kernel, the best source available wins: a measured time from the profile store (same target, TVM
version, device, kernel signature), else the target's XGBoost model, else the roofline prior. The total adds
the fitted runtime overhead where a calibration exists; a total built on any prior term is labelled prior,
unless whole-model measurements calibrated it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hanasc.core.atomic import atomic_file
from hanasc.core.errors import HanascError
from hanasc.core.paths import cache_dir
from hanasc.cost_models.cost_report import CostReport, KernelCost
from hanasc.cost_models.device_prior import DevicePrior
from hanasc.cost_models.energy import estimate_energy
from hanasc.cost_models.kernels import LoweredModel, lower_for_costs
from hanasc.cost_models.latency_calibration import (
    DeviceCalibration,
    load_calibration,
    migrate_legacy,
)
from hanasc.cost_models.latency_model import has_model, load_latest
from hanasc.cost_models.memory import estimate_memory
from hanasc.cost_models.provenance import Figure, combine_sources
from hanasc.cost_models.spec import HardwareSpec, load_spec
from hanasc.cost_models.store import ProfileStore
from hanasc.cost_models.target_info import get_target

DEFAULT_DEVICE = "default"
DEFAULT_CONFIDENCE = 0.9


class CalibrationInputError(HanascError):
    """A measurements CSV that is missing, malformed, or names models that cannot be read."""


@dataclass(frozen=True)
class CostContext:
    """Where estimates come from: the cache root (latency models, calibrations), the profile store, and the
    device whose calibration applies (one per device: ``hanasc calibrate --device NAME``)."""

    root: Path | None = None  # default: hanasc.core.paths.cache_dir()
    db: Path | None = None  # default: <cache>/profiles.sqlite
    device: str | None = None  # default: "default"

    def cache(self) -> Path:
        return Path(self.root) if self.root else cache_dir()

    def models_root(self) -> Path:
        return self.cache() / "latency_models"

    def calibration_path(self, target: str, base: str) -> Path:
        """The pre-device calibration file (XGBoost-model overhead; legacy one-scale prior calibration)."""
        return self.cache() / "calibration" / f"{target}-{base}.json"

    def device_calibration_path(self, target: str, device: str | None = None) -> Path:
        return (
            self.cache() / "calibration" / target / f"{_slug(device or self.device or DEFAULT_DEVICE)}.json"
        )

    def store(self) -> ProfileStore:
        return ProfileStore(self.db or self.cache() / "profiles.sqlite")


def _slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or DEFAULT_DEVICE


def load_device_calibration(
    ctx: CostContext, target: str, device: str | None = None, prior_name: str | None = None
):
    """The device's calibration of ``target``'s prior, or None; a legacy one-scale calibration of the
    default device is migrated once (with a one-line warning on stderr). ``prior_name``: the prior it is
    to bend; a calibration fitted on another efficiency-aware prior (another efficiency fit or lowering)
    is not applied (one-line warning): its per-kind factors corrected other numbers."""
    import json
    import sys

    path = ctx.device_calibration_path(target, device)
    if path.is_file():
        try:
            cal = DeviceCalibration.from_json(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError) as exc:
            raise CalibrationInputError(f"{path}: not a device calibration ({exc})") from None
        stale = prior_name and cal.prior.startswith("efficiency-aware") and cal.prior != prior_name
        if stale:
            print(f"hanasc: {path} was fitted on another prior ({cal.prior}); not applied: run hanasc "
                  "calibrate again with the same timings", file=sys.stderr)  # fmt: skip
            return None
        return cal
    legacy = ctx.calibration_path(target, "prior")
    if (device or ctx.device or DEFAULT_DEVICE) == DEFAULT_DEVICE and legacy.is_file():
        cal = migrate_legacy(json.loads(legacy.read_text()), DEFAULT_DEVICE, target)
        save_device_calibration(cal, path)
        print(f"hanasc: migrated {legacy} to {path} (one scale for every kernel kind; recalibrate for "
              "per-kind factors and an interval)", file=sys.stderr)  # fmt: skip
        return cal
    return None


def save_device_calibration(cal: DeviceCalibration, path: Path) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(cal.to_json(), indent=1) + "\n")


@dataclass(frozen=True)
class KernelTimes:
    """Seconds per call of each kernel and where each figure came from."""

    seconds: list[float]
    sources: list[str]
    detail: list[dict]


def kernel_times(
    lowered: LoweredModel,
    spec: HardwareSpec,
    model,
    store: ProfileStore | None,
    prior: DevicePrior | None = None,
) -> KernelTimes:
    """Per kernel: measured profile, else the XGBoost model (``model``), else the device prior."""
    prior = prior or DevicePrior.for_spec(spec)
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
            t, how = prior.kernel_seconds(kernel.features)
            seconds.append(t)
            sources.append("prior")
            detail.append(how)
    return KernelTimes(seconds, sources, detail)


def _latency_model(cost_target, ctx: CostContext):
    """The target's trained XGBoost model (xgboost is imported only when one exists), or None (also for
    targets whose kernels are not profiled: none is ever trained for them)."""
    if not has_model(cost_target.name, root=ctx.models_root()):
        return None
    return load_latest(cost_target.name, root=ctx.models_root())


def costed_lowering(cost_target, model) -> str:
    """The kernels a cost figure reads: those the target's latency model was trained on (``model``), else
    the prior's (:attr:`hanasc.cost_models.target_info.CostTarget.prior_lowering`)."""
    return model.meta.lowering if model is not None else cost_target.prior_lowering


def estimate_costs(
    mod,
    target: str,
    ctx: CostContext = CostContext(),
    *,
    memory: bool = True,
    confidence: float = DEFAULT_CONFIDENCE,
    threads: int | None = None,
) -> CostReport:
    """Latency (with an interval once calibrated), memory (``memory=True``) and energy of a Relax module
    (weights bound or as parameters) on a target, each figure with its provenance."""
    cost_target = get_target(target)
    spec = load_spec(cost_target.name, ctx.cache() / "host_spec.json")
    prior = DevicePrior.for_spec(spec, threads, ctx.cache())
    model = _latency_model(cost_target, ctx)
    lowered = lower_for_costs(mod, cost_target.name, costed_lowering(cost_target, model))
    with ctx.store() as store:
        times = kernel_times(lowered, spec, model, store, prior)
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
        device_cal = load_device_calibration(ctx, cost_target.name, prior_name=prior.name)
        if device_cal is not None:
            total_s = device_cal.predict_s(prior.terms(lowered))
            source = "predicted"
            detail.update(device_cal.describe())
            if device_cal.residuals_log:
                lo, hi = device_cal.interval(total_s, confidence)
                detail["interval_ms"] = [round(lo * 1e3, 4), round(hi * 1e3, 4)]
                detail["confidence"] = confidence
                detail["interval_from"] = f"held-out error of the calibration ({device_cal.cv.get('folds')})"
        else:
            total_s = kernel_sum
            detail["model"] = prior.name
            notes.append(
                f"no profile or calibration for '{cost_target.name}' (device "
                f"'{ctx.device or DEFAULT_DEVICE}'): {prior.name}"
            )
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
    energy = estimate_energy(lowered, spec)
    return CostReport(
        target=cost_target.name,
        kernels=kernels,
        latency=Figure(total_s * 1e3, "ms", source, detail),
        memory=_memory_figures(mod, lowered, cost_target.name) if memory else {},
        energy=Figure(
            energy.total_j * 1e3,
            "mJ",
            "prior",
            {"model": "ops x pJ/op + bytes x pJ/byte from spec", "ops_by_precision": energy.ops_by_precision},
        ),
        flops=lowered.flops,
        notes=notes,
    )


def _memory_figures(mod, lowered: LoweredModel, target: str) -> dict[str, Figure]:
    memory = estimate_memory(mod, lowered, target)
    how = {"model": "static memory plan of the lowered module"}
    return {
        "weights": Figure(
            memory.weight_bytes, "B", "predicted", {**how, "by_dtype": memory.weight_bytes_by_dtype}
        ),
        "activations": Figure(memory.activation_peak_bytes, "B", "predicted", how),
        "workspace": Figure(memory.workspace_bytes, "B", "predicted", how),
        "total": Figure(memory.total_bytes, "B", "predicted", how),
    }


def _count(items: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out
