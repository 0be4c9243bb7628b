"""Efficiency-aware prior: the share of the roofline a kernel reaches, by kind, precision and size.

A roofline alone assumes every kernel runs at the device's peak; real kernels reach a fraction of it that
depends on their kind (standard / pointwise / depthwise conv, dense, pool, elementwise), their size and
their precision. Measured on this machine through the shipped pipeline
(``hanasc.targets.host.build_artifact``: blocked layout, default schedules), each kernel's time inside the
built library (VM instrument hook) is compared with its roofline at the reference peak (one core), and one
curve per kind and precision is fitted:

    seconds = (roofline_s + half_s x speed) / emax        (efficiency = emax x roof / (roof + half_s))

``emax`` is what large kernels reach, ``half_s`` the roofline time at which a kernel reaches half of it (a
per-kernel fixed cost, scaled by ``speed`` = reference core peak / target core peak on another device). The
model is a small JSON: the fit shipped in ``specs/efficiency-host.json``, or a refit under the cache.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hanasc.cost_models.kernels import KernelFeatures
from hanasc.cost_models.prior import dtype_precision

KINDS = ("conv", "pointwise", "depthwise", "dense", "pool", "elementwise")
SHIPPED = Path(__file__).parent / "specs" / "efficiency-host.json"
FORMAT = "hanasc.efficiency/1"


def kernel_kind(f: KernelFeatures) -> str:
    """The efficiency class of a fused kernel."""
    if f.op_kind in ("conv2d", "group_conv"):
        return "pointwise" if tuple(f.kernel_size) == (1, 1) else "conv"
    if f.op_kind in ("depthwise", "dense", "pool"):
        return f.op_kind
    if f.op_kind == "reduce":
        return "pool"
    return "elementwise"


@dataclass(frozen=True)
class Curve:
    """Saturating efficiency of one kernel class: ``emax x roof / (roof + half_s)``."""

    emax: float
    half_s: float
    n: int = 0
    rmse_log: float = float("nan")  # fit error in natural log of seconds

    def seconds(self, roof_s: float, speed: float = 1.0) -> float:
        return (roof_s + self.half_s * speed) / self.emax

    def efficiency(self, roof_s: float, speed: float = 1.0) -> float:
        return roof_s / self.seconds(roof_s, speed)


@dataclass(frozen=True)
class Roof:
    """The peaks a kernel's roofline is computed against (one runner's cores, sustained clock)."""

    peak_ops_per_s: dict[str, float]
    bandwidth_Bps: float
    threads: int

    def seconds(self, f: KernelFeatures) -> tuple[float, str]:
        """(roofline seconds, precision): max of compute and memory time, no launch cost."""
        precision = dtype_precision(f.compute_dtype)
        peak = self.peak_ops_per_s.get(precision) or self.peak_ops_per_s["fp32"]
        return max(f.flops / peak, f.bytes_moved / self.bandwidth_Bps), precision


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
        roof_s, precision = roof.seconds(f)
        kind = kernel_kind(f)
        curve = self.curve(kind, precision)
        speed = self.reference_roof(roof.threads).peak_ops_per_s["fp32"] / roof.peak_ops_per_s["fp32"]
        seconds = curve.seconds(roof_s, speed)
        return seconds, {"kind": kind, "precision": precision, "efficiency": round(roof_s / seconds, 4)}

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
        from hanasc.atomic import atomic_file

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n")


def cache_path(cache: Path | None = None) -> Path:
    from hanasc.paths import cache_dir

    return (Path(cache) if cache else cache_dir()) / "efficiency.json"


def load_efficiency(cache: Path | None = None) -> EfficiencyModel:
    """A refit under the cache (``hanasc.cost_models.efficiency`` main) if any, else the shipped fit."""
    path = cache_path(cache)
    chosen = path if path.is_file() else SHIPPED
    return EfficiencyModel.from_json(json.loads(chosen.read_text()))


# --- fitting ----------------------------------------------------------------------------------------------
def fit_curve(roof_s: np.ndarray, seconds: np.ndarray) -> Curve:
    """Least squares in log seconds of ``(roof + half) / emax``; a robust (soft L1) loss."""
    from scipy.optimize import least_squares

    roof_s, seconds = np.asarray(roof_s, float), np.asarray(seconds, float)
    y = np.log(seconds)

    def residual(p: np.ndarray) -> np.ndarray:
        return np.log(roof_s + math.exp(p[1])) - p[0] - y

    start = np.array([math.log(0.3), math.log(max(float(np.median(seconds)) * 0.05, 1e-7))])
    result = least_squares(residual, start, loss="soft_l1", f_scale=0.3)
    emax, half = math.exp(result.x[0]), math.exp(result.x[1])
    rmse = float(np.sqrt(np.mean(residual(result.x) ** 2)))
    return Curve(emax=emax, half_s=half, n=len(y), rmse_log=rmse)


def fit(
    samples: list[tuple[KernelFeatures, float]], reference: dict, min_samples: int = 5
) -> EfficiencyModel:
    """Curves per kind/precision (enough samples), per kind and overall, from (features, seconds) pairs."""
    model = EfficiencyModel("unfitted", reference)
    roof = model.reference_roof()
    groups: dict[str, list[tuple[float, float]]] = {}
    for f, seconds in samples:
        roof_s, precision = roof.seconds(f)
        kind = kernel_kind(f)
        for key in (f"{kind}/{precision}", f"{kind}/*", "*/*"):
            groups.setdefault(key, []).append((roof_s, seconds))
    curves = {}
    for key, pairs in sorted(groups.items()):
        if len(pairs) >= min_samples or key == "*/*":
            r, s = np.array(pairs).T
            curves[key] = fit_curve(r, s)
    digest = f"{len(samples)}k"
    version = f"e{time.strftime('%Y%m%d%H%M%S')}-{digest}"
    return EfficiencyModel(version, {**reference, "samples": len(samples)}, curves)
