"""Efficiency-aware prior: the share of the roofline a kernel reaches, by kind, precision and size.

A roofline alone assumes every kernel runs at the device's peak; real kernels reach a fraction of it that
depends on their kind (standard / pointwise / depthwise conv, dense, pool, elementwise), their size and
their precision. Measured on this machine through the shipped pipeline
(``hanasc.targets.host.build_artifact``: blocked layout, default schedules), each kernel's time inside the
built library (VM instrument hook) is compared with its roofline at the reference peak (one core), and one
curve per kind and precision is fitted:

    seconds = compute_s / compute_eff + memory_s / memory_eff + fixed_s x speed
    efficiency = max(compute_s, memory_s) / seconds

``compute_s`` = FLOPs / peak and ``memory_s`` = bytes / bandwidth are the two roofline terms on the device;
``compute_eff`` and ``memory_eff`` the fractions of peak and bandwidth large kernels of the kind reach, and
``fixed_s`` a per-kernel fixed cost (scaled by ``speed`` = reference core peak / target core peak on another
device). Small kernels are dominated by ``fixed_s``, so their efficiency falls with size. The model is a
small JSON: the fit shipped in ``specs/efficiency-host.json``, or a refit under the cache.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hanasc.core.atomic import atomic_file
from hanasc.core.cache_safety import cache_warning
from hanasc.core.paths import cache_dir
from hanasc.cost_models.kernels import KernelFeatures
from hanasc.cost_models.prior import dtype_precision

KINDS = ("conv", "pointwise", "depthwise", "dense", "pool", "elementwise")
SHIPPED = Path(__file__).parent / "specs" / "efficiency-host.json"
FORMAT = "hanasc.efficiency/2"


def kernel_kind(f: KernelFeatures) -> str:
    """The efficiency class of a fused kernel."""
    if f.op_kind in ("conv2d", "group_conv"):
        return "pointwise" if tuple(f.kernel_size) == (1, 1) else "conv"
    if f.op_kind in ("depthwise", "dense", "pool"):
        return f.op_kind
    if f.op_kind == "reduce":
        return "pool"
    return "elementwise"


def calibration_key(f: KernelFeatures) -> str:
    """``kind/precision``: the kernel class a device calibration gives its own factor."""
    return f"{kernel_kind(f)}/{dtype_precision(f.compute_dtype)}"


@dataclass(frozen=True)
class Curve:
    """Time of one kernel class: ``compute_s / compute_eff + memory_s / memory_eff + fixed_s x speed``."""

    compute_eff: float
    memory_eff: float
    fixed_s: float
    n: int = 0
    rmse_log: float = float("nan")  # fit error in natural log of seconds

    def seconds(self, compute_s: float, memory_s: float, speed: float = 1.0) -> float:
        return compute_s / self.compute_eff + memory_s / self.memory_eff + self.fixed_s * speed

    def efficiency(self, compute_s: float, memory_s: float, speed: float = 1.0) -> float:
        return max(compute_s, memory_s) / self.seconds(compute_s, memory_s, speed)


@dataclass(frozen=True)
class Roof:
    """The peaks a kernel's roofline is computed against (one runner's cores, sustained clock)."""

    peak_ops_per_s: dict[str, float]
    bandwidth_Bps: float
    threads: int

    def terms(self, f: KernelFeatures) -> tuple[float, float, str]:
        """(compute seconds, memory seconds, precision) of one kernel call at these peaks."""
        precision = dtype_precision(f.compute_dtype)
        peak = self.peak_ops_per_s.get(precision) or self.peak_ops_per_s["fp32"]
        return f.flops / peak, f.bytes_moved / self.bandwidth_Bps, precision


@dataclass(frozen=True)
class EfficiencyModel:
    """Curves per ``kind/precision`` (with ``kind/*`` and ``*/*`` fallbacks) and what they were fitted on."""

    version: str
    reference: dict  # device, core peak (fp32), bandwidth, threads, precision ratios, TVM version, samples
    curves: dict[str, Curve] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"efficiency:{self.version} (fitted on {self.reference.get('device', '?')})"

    def reference_roof(self, threads: int | None = None) -> Roof:
        """The roofline the curves were fitted against (the reference core peak x ``threads``)."""
        threads = threads or int(self.reference.get("threads", 1))
        peak = float(self.reference["fp32_core_peak"]) * threads
        ratios = self.reference.get("precision_ratio_to_fp32", {"fp32": 1.0})
        return Roof({p: peak * r for p, r in ratios.items()}, float(self.reference["bandwidth_Bps"]), threads)

    def curve(self, kind: str, precision: str) -> Curve:
        for key in (f"{kind}/{precision}", f"{kind}/*", "*/*"):
            if key in self.curves:
                return self.curves[key]
        raise KeyError(f"efficiency model {self.version} has no curve for {kind}/{precision}")

    def kernel_seconds(self, f: KernelFeatures, roof: Roof) -> tuple[float, dict]:
        """Predicted seconds of one kernel call on a device with ``roof``, and how it was obtained."""
        compute_s, memory_s, precision = roof.terms(f)
        kind = kernel_kind(f)
        curve = self.curve(kind, precision)
        speed = self.reference_roof(roof.threads).peak_ops_per_s["fp32"] / roof.peak_ops_per_s["fp32"]
        seconds = curve.seconds(compute_s, memory_s, speed)
        efficiency = max(compute_s, memory_s) / seconds
        return seconds, {"kind": kind, "precision": precision, "efficiency": round(efficiency, 4)}

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "version": self.version,
            "reference": self.reference,
            "curves": {k: asdict(c) for k, c in self.curves.items()},
        }

    @classmethod
    def from_json(cls, data: dict) -> EfficiencyModel:
        if data.get("format") != FORMAT:
            raise ValueError(f"not an efficiency model (format {data.get('format')!r}, expected {FORMAT})")
        return cls(data["version"], data["reference"], {k: Curve(**c) for k, c in data["curves"].items()})

    def save(self, path: Path) -> None:

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n")


def cache_path(cache: Path | None = None) -> Path:
    return (Path(cache) if cache else cache_dir()) / "efficiency.json"


def load_efficiency(cache: Path | None = None) -> EfficiencyModel:
    """A refit under the cache (``hanasc.cost_models.efficiency`` main) if any, else the shipped fit."""
    path = cache_path(cache)
    if path.is_file():
        try:
            return EfficiencyModel.from_json(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:  # another version's, or damaged
            cache_warning(f"{path}: unusable efficiency model ({str(exc)[:120]}); the shipped fit is used")
    return EfficiencyModel.from_json(json.loads(SHIPPED.read_text()))


# --- fitting ----------------------------------------------------------------------------------------------
def fit_curve(compute_s: np.ndarray, memory_s: np.ndarray, seconds: np.ndarray) -> Curve:
    """Least squares in log seconds (robust soft-L1 loss); the three coefficients stay positive."""
    from scipy.optimize import least_squares

    c, m = np.asarray(compute_s, float), np.asarray(memory_s, float)
    y = np.log(np.asarray(seconds, float))

    def residual(p: np.ndarray) -> np.ndarray:
        return np.log(c * np.exp(p[0]) + m * np.exp(p[1]) + np.exp(p[2])) - y

    start = np.array([0.0, 0.0, math.log(max(float(np.exp(y.min())) * 0.5, 1e-7))])
    result = least_squares(residual, start, loss="soft_l1", f_scale=0.3, bounds=(-25.0, 25.0))
    inv_c, inv_m, fixed = np.maximum(np.exp(result.x), 1e-6)  # 1e6: the term plays no part
    rmse = float(np.sqrt(np.mean(residual(result.x) ** 2)))
    return Curve(
        compute_eff=1.0 / inv_c, memory_eff=1.0 / inv_m, fixed_s=float(fixed), n=len(y), rmse_log=rmse
    )


def fit(
    samples: list[tuple[KernelFeatures, float]], reference: dict, min_samples: int = 5
) -> EfficiencyModel:
    """Curves per kind/precision (enough samples), per kind and overall, from (features, seconds) pairs."""
    model = EfficiencyModel("unfitted", reference)
    roof = model.reference_roof()
    groups: dict[str, list[tuple[float, float, float]]] = {}
    for f, seconds in samples:
        compute_s, memory_s, precision = roof.terms(f)
        kind = kernel_kind(f)
        for key in (f"{kind}/{precision}", f"{kind}/*", "*/*"):
            groups.setdefault(key, []).append((compute_s, memory_s, seconds))
    curves = {}
    for key, rows in sorted(groups.items()):
        if len(rows) >= min_samples or key == "*/*":
            c, m, s = np.array(rows).T
            curves[key] = fit_curve(c, m, s)
    digest = f"{len(samples)}k"
    version = f"e{time.strftime('%Y%m%d%H%M%S')}-{digest}"
    return EfficiencyModel(version, {**reference, "samples": len(samples)}, curves)
