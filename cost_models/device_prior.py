"""The prior of a device hanasc cannot measure: per kernel, the roofline of one runner (per-core peak x
runner threads x sustained clock), divided by the efficiency the kernel's kind reaches at its size
(:mod:`hanasc.cost_models.efficiency`). Targets whose spec does not opt in (GPUs, NPUs) keep the plain
roofline of :mod:`hanasc.cost_models.prior`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from hanasc.cost_models.efficiency import EfficiencyModel, Roof, calibration_key, load_efficiency
from hanasc.cost_models.kernels import Kernel, KernelFeatures, LoweredModel
from hanasc.cost_models.latency_calibration import ModelTerms
from hanasc.cost_models.prior import dtype_precision, roofline
from hanasc.cost_models.spec import HardwareSpec


def runner_threads(spec: HardwareSpec, threads: int | None = None) -> int:
    """Threads the device's runner uses: given, else the spec's, else (host) TVM_NUM_THREADS or all cores."""
    if threads:
        return int(threads)
    if spec.runner_threads:
        return spec.runner_threads
    return int(os.environ.get("TVM_NUM_THREADS") or os.cpu_count() or 1)


def target_roof(spec: HardwareSpec, model: EfficiencyModel, threads: int | None = None) -> Roof:
    """The roof kernels are measured against: the host's reference core, or the published per-core peak."""
    n = runner_threads(spec, threads)
    if spec.measured:  # the host: the efficiency model's own reference core peak
        return model.reference_roof(n)
    cores = max(spec.cores, 1)
    ratio = spec.sustained_clock_ratio * min(n, cores) / cores
    return Roof({p: v * ratio for p, v in spec.peak_ops_per_s.items()}, spec.memory_bandwidth_Bps, n)


@dataclass(frozen=True)
class DevicePrior:
    """Per-kernel prior seconds on one device (the efficiency-aware prior, or the plain roofline)."""

    spec: HardwareSpec
    model: EfficiencyModel | None
    threads: int | None = None

    @classmethod
    def for_spec(cls, spec: HardwareSpec, threads: int | None = None, cache=None) -> DevicePrior:
        return cls(spec, load_efficiency(cache) if spec.efficiency == "cpu" else None, threads)

    @property
    def name(self) -> str:
        if self.model is None:
            return f"roofline from the {self.spec.name} spec (no efficiency model for this kind of target)"
        return f"efficiency-aware roofline ({self.model.name}) on the {self.spec.name} spec"

    def kernel_seconds(self, f: KernelFeatures) -> tuple[float, dict]:
        if self.model is None:
            est = roofline(f, self.spec)
            return est.seconds, {"model": "roofline", "bound": est.bound, "precision": est.precision}
        roof = target_roof(self.spec, self.model, self.threads)
        seconds, detail = self.model.kernel_seconds(f, roof)
        return seconds, {"model": "efficiency-aware roofline", "efficiency_model": self.model.name, **detail}

    def terms(self, lowered: LoweredModel) -> ModelTerms:
        """Prior seconds of a whole model per ``kind/precision`` and per precision, with its call count."""
        by_kind: dict[str, float] = {}
        by_precision: dict[str, float] = {}
        for k in lowered.kernels:
            seconds = self.kernel_seconds(k.features)[0] * k.calls
            key = calibration_key(k.features)
            by_kind[key] = by_kind.get(key, 0.0) + seconds
            p = dtype_precision(k.features.compute_dtype)
            by_precision[p] = by_precision.get(p, 0.0) + seconds
        return ModelTerms(by_kind, lowered.total_calls, lowered.flops, by_precision)


def terms_from_records(
    kernels: list[tuple[KernelFeatures, int]], calls: int, prior: DevicePrior
) -> ModelTerms:
    """:meth:`DevicePrior.terms` from stored (features, calls) pairs (no lowering)."""
    fake = [Kernel(f"k{i}", "", f, n, None) for i, (f, n) in enumerate(kernels)]
    return prior.terms(LoweredModel("stored", fake, ["k"] * calls))
