"""Whole-model correction: measured ≈ scale · Σ kernel estimates + per_call · kernel calls + fixed.

Fitted by non-negative least squares on whole-model measurements only (no kernel profiles needed), on top
of either the XGBoost kernel model (scale fixed to 1: only the runtime overhead is fitted) or the prior.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Calibration:
    scale: float = 1.0
    per_call_s: float = 0.0
    fixed_s: float = 0.0
    n_models: int = 0
    fit_rmspe: float = float("nan")  # on the models it was fitted on
    base: str = "prior"  # what it corrects: "prior" or a latency model version

    def apply(self, kernel_sum_s: float, calls: int) -> float:
        return self.scale * kernel_sum_s + self.per_call_s * calls + self.fixed_s

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Calibration:
        return cls(**data)


def fit_calibration(
    kernel_sums_s: list[float],
    calls: list[int],
    measured_s: list[float],
    *,
    fit_scale: bool = True,
    base: str,
) -> Calibration:
    """Least squares (non-negative) in relative error, so small and large models weigh the same.

    With fewer than 3 models only the scale (or, without scale, only the per-call overhead) is fitted.
    """
    from scipy.optimize import nnls

    k = np.asarray(kernel_sums_s, float)
    c = np.asarray(calls, float)
    y = np.asarray(measured_s, float)
    if len(y) == 0:
        raise ValueError("calibration needs at least one whole-model measurement")
    w = 1.0 / y  # relative error
    if fit_scale:
        columns = [k, c, np.ones_like(k)] if len(y) >= 3 else [k]
        a = np.stack(columns, axis=1) * w[:, None]
        coef, _ = nnls(a, y * w)
        scale, per_call, fixed = [*coef, 0.0, 0.0][:3]
    else:
        columns = [c, np.ones_like(k)] if len(y) >= 3 else [c]
        a = np.stack(columns, axis=1) * w[:, None]
        coef, _ = nnls(a, (y - k) * w)
        scale = 1.0
        per_call, fixed = [*coef, 0.0][:2]
    cal = Calibration(float(scale), float(per_call), float(fixed), len(y), base=base)
    pred = np.array([cal.apply(ki, ci) for ki, ci in zip(k, c, strict=True)])
    return Calibration(**{**asdict(cal), "fit_rmspe": float(rmspe(pred, y))})


def rmspe(pred, actual) -> float:
    """Root mean squared percentage error, in percent."""
    pred, actual = np.asarray(pred, float), np.asarray(actual, float)
    return float(np.sqrt(np.mean(((pred - actual) / actual) ** 2)) * 100.0)


def save_calibration(cal: Calibration, path: Path) -> None:
    from hanasc.atomic import atomic_file

    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(cal.to_json(), indent=2))


def load_calibration(path: Path) -> Calibration | None:
    return Calibration.from_json(json.loads(path.read_text())) if path.exists() else None
