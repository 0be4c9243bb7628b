"""Whole-model correction: measured ≈ scale · Σ kernel estimates + per_call · kernel calls + fixed.

Fitted by non-negative least squares on whole-model measurements only (no kernel profiles needed), on top
of either the XGBoost kernel model (scale fixed to 1: only the runtime overhead is fitted) or the prior.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hanasc.core.atomic import atomic_file


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
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(cal.to_json(), indent=2))


def load_calibration(path: Path) -> Calibration | None:
    return Calibration.from_json(json.loads(path.read_text())) if path.exists() else None


# --- device calibration: per-kind factors, per-call overhead, optional XGBoost residual ---------------------
DEVICE_FORMAT = "hanasc.device_calibration/2"
RIDGE_GRID = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
XGB_MIN_MODELS = 30


@dataclass(frozen=True)
class ModelTerms:
    """What a calibration sees of one model: prior seconds per kernel class (``kind/precision``), kernel
    calls, and features."""

    by_kind: dict[str, float]
    calls: int
    flops: float = 0.0
    by_precision: dict[str, float] | None = None  # prior seconds per precision (residual features)

    @property
    def total_s(self) -> float:
        return float(sum(self.by_kind.values()))

    def residual_features(self, kinds: tuple[str, ...]) -> list[float]:
        """Whole-model features of the XGBoost residual: size, call count, time shares by kind/precision."""
        total = max(self.total_s, 1e-12)
        precision = self.by_precision or {}
        return [
            float(np.log(total)),
            float(np.log(self.calls + 1)),
            float(np.log(self.flops + 1)),
            *(self.by_kind.get(k, 0.0) / total for k in kinds),
            *(precision.get(p, 0.0) / total for p in ("fp32", "fp16", "int8")),
        ]


@dataclass
class DeviceCalibration:
    """measured ≈ Σ_class factor_class x prior_class + per_call x calls (x exp(XGBoost residual)).

    A class is ``kind/precision`` (``pointwise/int8``); classes no timing had keep ``scale``, the one-scale
    fit.

    Fitted on whole-model timings of one device; ``cv`` is the calibration's own held-out error
    (leave-one-out or k-fold predictions of models it was not fitted on) and ``residuals_log`` the held-out
    log errors the prediction interval is read from.
    """

    device: str
    target: str
    kinds: tuple[str, ...]
    factors: dict[str, float]
    per_call_s: float
    method: str  # "one-scale" | "per-kind" | "per-kind+xgboost"
    ridge: float
    n_models: int
    cv: dict = field(default_factory=dict)  # rmspe, within_10, folds
    residuals_log: list[float] = field(default_factory=list)
    prior: str = ""  # the prior it bends (efficiency model name)
    fixed_s: float = 0.0
    xgb_json: str | None = None  # the residual booster (JSON), only when chosen
    notes: list[str] = field(default_factory=list)
    scale: float = 1.0  # the one-scale fit: the factor of classes the timings did not contain

    def factor(self, key: str) -> float:
        return self.factors.get(key, self.scale)

    def predict_s(self, terms: ModelTerms) -> float:
        base = sum(self.factor(k) * s for k, s in terms.by_kind.items())
        base += self.per_call_s * terms.calls + self.fixed_s
        if self.xgb_json:
            base *= float(np.exp(self._booster().predict(np.array([terms.residual_features(self.kinds)]))[0]))
        return float(base)

    def _booster(self):
        cached = getattr(self, "_xgb", None)
        if cached is None:
            import xgboost as xgb

            cached = xgb.XGBRegressor()
            cached.load_model(bytearray(self.xgb_json.encode()))
            self._xgb = cached
        return cached

    def interval(self, seconds: float, confidence: float = 0.9) -> tuple[float, float]:
        """Two-sided interval holding ``confidence`` of the held-out errors (widened for few models)."""
        lo, hi = np.quantile(self._residuals(), [(1 - confidence) / 2, (1 + confidence) / 2])
        return seconds * float(np.exp(lo)), seconds * float(np.exp(hi))

    def upper(self, seconds: float, confidence: float = 0.9) -> float:
        """One-sided upper bound: the measured time stays under it with ``confidence`` (held-out errors)."""
        return seconds * float(np.exp(np.quantile(self._residuals(), confidence)))

    def _residuals(self) -> np.ndarray:
        r = np.asarray(self.residuals_log or [0.0], float)
        # small samples understate the tails: widen by the t-like factor sqrt(n / (n - 1)) (n >= 2)
        return r * np.sqrt(len(r) / max(len(r) - 1, 1))

    def to_json(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        data["kinds"] = list(self.kinds)
        return {"format": DEVICE_FORMAT, **data}

    @classmethod
    def from_json(cls, data: dict) -> DeviceCalibration:
        data = {k: v for k, v in data.items() if k != "format"}
        data["kinds"] = tuple(data["kinds"])
        return cls(**data)

    def describe(self) -> dict:
        """The provenance detail of a figure it produced."""
        return {
            "model": f"calibrated prior ({self.method})",
            "prior": self.prior,
            "device": self.device,
            "calibration_models": self.n_models,
            "calibration_heldout_rmspe": round(self.cv.get("rmspe", float("nan")), 2),
        }


def migrate_legacy(data: dict, device: str, target: str) -> DeviceCalibration:
    """A pre-2 calibration (one scale + per-call + fixed) as a device calibration (every factor = scale)."""
    old = Calibration.from_json(data)
    return DeviceCalibration(
        device=device,
        target=target,
        kinds=(),
        factors={},
        scale=old.scale,
        per_call_s=old.per_call_s,
        method="one-scale",
        ridge=float("inf"),
        n_models=old.n_models,
        cv={"rmspe": old.fit_rmspe, "note": "in-sample (migrated from a one-scale calibration)"},
        residuals_log=[],
        prior=f"roofline ({old.base})",
        fixed_s=old.fixed_s,
        notes=["migrated from a one-scale calibration: recalibrate for per-kind factors and an interval"],
    )


def _design(terms: list[ModelTerms], kinds: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    x = np.array([[t.by_kind.get(k, 0.0) for k in kinds] for t in terms], float)
    c = np.array([t.calls for t in terms], float)
    return x, c


def _fit_linear(x: np.ndarray, c: np.ndarray, y: np.ndarray, ridge: float) -> tuple[np.ndarray, float, float]:
    """Per-kind factors and per-call seconds by NNLS in relative error, factors pulled toward one scale.

    ``ridge = inf``: one scale for every kind. The one-scale fit (scale, per-call) comes first; the per-kind
    factors are then regularised toward that scale with weight ``ridge`` (per factor, in relative error
    units), so kinds the timings cannot tell apart keep the common scale.
    """
    from scipy.optimize import nnls

    w = 1.0 / y
    total = x.sum(axis=1)
    a = np.stack([total, c], axis=1) * w[:, None]
    (scale, per_call), _ = nnls(a, np.ones_like(y))
    if not np.isfinite(ridge):
        return np.full(x.shape[1], scale), float(per_call), float(scale)
    k = x.shape[1]
    used = x.sum(axis=0) > 0
    rows = np.concatenate([x * w[:, None], (c * w)[:, None]], axis=1)
    reg = np.zeros((k, k + 1))
    reg[np.arange(k), np.arange(k)] = np.sqrt(ridge)
    a = np.concatenate([rows, reg], axis=0)
    b = np.concatenate([np.ones_like(y), np.sqrt(ridge) * np.full(k, scale)])
    coef, _ = nnls(a, b)
    factors = np.where(used, coef[:k], scale)
    return factors, float(coef[k]), float(scale)


def _folds(n: int, seed: int = 0) -> list[np.ndarray]:
    """Leave-one-out up to 20 models, else 10 random folds."""
    if n <= 20:
        return [np.array([i]) for i in range(n)]
    order = np.random.default_rng(seed).permutation(n)
    return [order[i::10] for i in range(10)]


def _xgb_residual(feats: np.ndarray, log_ratio: np.ndarray):
    import xgboost as xgb

    booster = xgb.XGBRegressor(
        n_estimators=120, max_depth=2, learning_rate=0.05, subsample=0.8, reg_lambda=5.0, n_jobs=1
    )
    booster.fit(feats, log_ratio)
    return booster


def _candidate_predict(method: str, ridge: float, fit_idx, test_idx, x, c, y, feats) -> np.ndarray:
    factors, per_call, _ = _fit_linear(x[fit_idx], c[fit_idx], y[fit_idx], ridge)
    pred = x[test_idx] @ factors + per_call * c[test_idx]
    if method == "per-kind+xgboost":
        base_fit = x[fit_idx] @ factors + per_call * c[fit_idx]
        booster = _xgb_residual(feats[fit_idx], np.log(y[fit_idx] / base_fit))
        pred = pred * np.exp(booster.predict(feats[test_idx]))
    return pred


def fit_device(
    terms: list[ModelTerms],
    measured_s: list[float],
    *,
    device: str,
    target: str,
    prior: str,
    kinds: tuple[str, ...] | None = None,
    allow_xgboost: bool = True,
) -> DeviceCalibration:
    """Choose one-scale / per-kind (ridge from a grid) / per-kind + XGBoost residual by cross-validation.

    ``kinds``: the kernel classes given a factor (default: every class the models contain)."""
    if len(terms) != len(measured_s) or not terms:
        raise ValueError("calibration needs at least one (model, measured time) pair")
    kinds = tuple(kinds or sorted({k for t in terms for k, s in t.by_kind.items() if s > 0}))
    x, c = _design(terms, kinds)
    y = np.asarray(measured_s, float)
    feats = np.array([t.residual_features(kinds) for t in terms], float)
    n = len(y)
    candidates: list[tuple[str, float]] = [("one-scale", float("inf"))]
    if n >= 3:
        candidates += [("per-kind", r) for r in RIDGE_GRID]
    folds = _folds(n)
    scored = []
    for method, ridge in candidates:
        pred = np.empty(n)
        for test in folds:
            fit_idx = np.setdiff1d(np.arange(n), test)
            pred[test] = _candidate_predict(
                method, ridge, fit_idx if len(fit_idx) else test, test, x, c, y, feats
            )
        scored.append((rmspe(pred, y), method, ridge, pred))
    best = min(scored, key=lambda s: s[0])
    if allow_xgboost and n >= XGB_MIN_MODELS:
        ridge = best[2] if np.isfinite(best[2]) else 1.0
        pred = np.empty(n)
        for test in folds:
            fit_idx = np.setdiff1d(np.arange(n), test)
            pred[test] = _candidate_predict("per-kind+xgboost", ridge, fit_idx, test, x, c, y, feats)
        scored.append((rmspe(pred, y), "per-kind+xgboost", ridge, pred))
        best = min(scored, key=lambda s: s[0])
    err, method, ridge, heldout = best
    factors, per_call, scale = _fit_linear(x, c, y, ridge)
    xgb_json = None
    if method == "per-kind+xgboost":
        booster = _xgb_residual(feats, np.log(y / (x @ factors + per_call * c)))
        xgb_json = bytes(booster.get_booster().save_raw("json")).decode()
    log_res = np.log(y / heldout)
    return DeviceCalibration(
        device=device,
        target=target,
        kinds=tuple(kinds),
        factors={k: float(f) for k, f in zip(kinds, factors, strict=True)},
        per_call_s=per_call,
        method=method,
        ridge=float(ridge),
        n_models=n,
        cv={
            "rmspe": float(err),
            "within_10": float(np.mean(np.abs(heldout / y - 1) <= 0.10) * 100),
            "folds": "leave-one-out" if len(folds) == n else f"{len(folds)}-fold",
            "candidates": {f"{m}@{r:g}": round(float(e), 2) for e, m, r, _ in scored},
        },
        residuals_log=[float(v) for v in log_res],
        prior=prior,
        xgb_json=xgb_json,
        scale=scale,
    )
