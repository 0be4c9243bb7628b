"""The latency model: one XGBoost regressor per target (and device) on kernel features, predicting log time.

Network latency = Σ kernel time × calls + per-call runtime overhead (+ fixed), the overhead fitted by least
squares from whole-model measurements (``calibration``). Saved, versioned, under the user cache.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hanasc.core.atomic import atomic_file
from hanasc.core.paths import cache_dir
from hanasc.cost_models.kernels import FEATURE_NAMES, KernelFeatures, feature_vector
from hanasc.cost_models.latency_calibration import Calibration
from hanasc.cost_models.store import KernelRow

XGB_PARAMS = {"n_estimators": 400, "max_depth": 6, "learning_rate": 0.05, "subsample": 0.9, "n_jobs": 2}


@dataclass(frozen=True)
class ModelMeta:
    """What a latency model is: its provenance."""

    version: str
    target: str
    device: str
    tvm_version: str
    n_samples: int
    trained_at: float
    feature_names: tuple[str, ...] = FEATURE_NAMES
    calibration: Calibration | None = None
    lowering: str = "default"  # the kernels it predicts: kernels.lower_to_kernels(..., lowering=...)

    def to_json(self) -> dict:
        data = asdict(self)
        data["calibration"] = self.calibration.to_json() if self.calibration else None
        return data

    @classmethod
    def from_json(cls, data: dict) -> ModelMeta:
        data = dict(data)
        data["feature_names"] = tuple(data["feature_names"])
        data["calibration"] = Calibration.from_json(data["calibration"]) if data["calibration"] else None
        return cls(**data)

    def provenance(self) -> dict:
        return {
            "model": f"xgboost:{self.version}",
            "trained_on": self.device,
            "n_samples": self.n_samples,
            "calibrated": self.calibration is not None,
            "calibration_models": self.calibration.n_models if self.calibration else 0,
            "kernels_from": "timed inside whole networks built as shipped"
            if self.lowering == "shipped"
            else "timed alone (TVM's default lowering)",
        }


@dataclass
class LatencyModel:
    meta: ModelMeta
    booster: object = field(repr=False)  # xgboost.XGBRegressor

    def predict_kernels_s(self, features: list[KernelFeatures]) -> np.ndarray:
        """Predicted seconds per call of each kernel."""
        if not features:
            return np.zeros(0)
        x = np.array([feature_vector(f) for f in features], dtype=np.float32)
        return np.exp(self.booster.predict(x).astype(np.float64))

    def predict_sum_s(self, lowered) -> float:
        """Σ predicted seconds x calls of the kernels of one lowered module (``kernels.LoweredModel``)."""
        times = self.predict_kernels_s([k.features for k in lowered.kernels])
        return float(sum(t * k.calls for t, k in zip(times, lowered.kernels, strict=True)))

    def network_s(self, kernel_sum_s: float, calls: int) -> float:
        """Σ kernel time × calls, plus the fitted per-call overhead (none until calibrated)."""
        cal = self.meta.calibration
        return cal.apply(kernel_sum_s, calls) if cal else kernel_sum_s

    def with_calibration(self, cal: Calibration) -> LatencyModel:
        return LatencyModel(ModelMeta(**{**asdict(self.meta), "calibration": cal}), self.booster)

    def save(self, root: Path | None = None) -> Path:
        """Write ``<root>/<target>/<device>/<version>.{ubj,json}`` and point ``latest.json`` at it."""
        folder = model_folder(self.meta.target, self.meta.device, root)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_file(folder / f"{self.meta.version}.ubj") as tmp:
            self.booster.save_model(str(tmp.with_suffix(".ubj")))
            tmp.with_suffix(".ubj").replace(tmp)
        for name in (f"{self.meta.version}.json", "latest.json"):
            with atomic_file(folder / name) as tmp:
                tmp.write_text(json.dumps(self.meta.to_json(), indent=2))
        return folder / f"{self.meta.version}.ubj"


def train(
    rows: list[KernelRow], target: str, device: str, params: dict | None = None, lowering: str = "default"
) -> LatencyModel:
    """Fit log(seconds) on kernel features of measured rows (one target, one device, the rows of one
    ``lowering``)."""
    import xgboost as xgb

    rows = [r for r in rows if r.features.lowering == lowering]
    if len(rows) < 4:
        raise ValueError(f"need at least 4 measured kernels to train a latency model, have {len(rows)}")
    x = np.array([feature_vector(r.features) for r in rows], dtype=np.float32)
    y = np.log(np.array([r.median_s for r in rows]))
    booster = xgb.XGBRegressor(**{**XGB_PARAMS, **(params or {})})
    booster.fit(x, y)
    digest = hashlib.sha256("|".join(sorted(r.signature for r in rows)).encode()).hexdigest()[:8]
    meta = ModelMeta(
        version=f"v{time.strftime('%Y%m%d%H%M%S')}-{len(rows)}-{digest}",
        target=target,
        device=device,
        tvm_version=rows[0].tvm_version,
        n_samples=len(rows),
        trained_at=time.time(),
        lowering=lowering,
    )
    return LatencyModel(meta, booster)


def model_folder(target: str, device: str, root: Path | None = None) -> Path:
    base = Path(root) if root else cache_dir() / "latency_models"
    return base / target / _slug(device)


def has_model(target: str, device: str | None = None, root: Path | None = None) -> bool:
    """Whether a model was saved for the target (and device), without importing xgboost."""
    base = Path(root) if root else cache_dir() / "latency_models"
    folders = [model_folder(target, device, root)] if device else sorted((base / target).glob("*"))
    return any((folder / "latest.json").exists() for folder in folders)


def load_latest(target: str, device: str | None = None, root: Path | None = None) -> LatencyModel | None:
    """The newest saved model for a target (for one device, or any device), or None."""
    base = Path(root) if root else cache_dir() / "latency_models"
    folders = [model_folder(target, device, root)] if device else sorted((base / target).glob("*"))
    metas = []
    for folder in folders:
        latest = folder / "latest.json"
        if latest.exists():
            metas.append((ModelMeta.from_json(json.loads(latest.read_text())), folder))
    if not metas:
        return None
    import xgboost as xgb

    meta, folder = max(metas, key=lambda m: m[0].trained_at)
    booster = xgb.XGBRegressor()
    booster.load_model(str(folder / f"{meta.version}.ubj"))
    return LatencyModel(meta, booster)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "device"
