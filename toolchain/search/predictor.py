"""The accuracy predictor (the HA-NAS surrogate): a regressor on one-hot Config encodings.

Two regressors are fitted, ridge regression (accuracy losses of layer choices add up to first order) and
XGBoost (interactions); the one with the better Kendall tau on the held-out Configs is kept and reported.

Trained on Configs evaluated with the simulator on the calibration split; its rank correlation
(Kendall tau) on held-out Configs is reported, and search queries it instead of the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hanasc.search.space import SearchSpace


def encode(space: SearchSpace, genomes: np.ndarray, sensitivity: np.ndarray | None = None) -> np.ndarray:
    """One-hot features of genomes (one column per slot choice); with a ``sensitivity`` table
    (:func:`hanasc.search.sensitivity.table`: slots x choices x (metric drop, output error)), two more
    columns: the genome's summed single-change drops and output errors, the first-order (additive) guess."""
    genomes = np.atleast_2d(genomes)
    columns = []
    for i, slot in enumerate(space.slots):
        for c in range(len(slot.choices)):
            columns.append(genomes[:, i] == c)
    features = np.stack(columns, axis=1).astype(np.float32)
    if sensitivity is None:
        return features
    picked = sensitivity[np.arange(len(space.slots))[None, :], genomes]  # (n, slots, 2)
    return np.concatenate([features, picked.sum(axis=1).astype(np.float32)], axis=1)


@dataclass
class PredictorReport:
    """How well the predictor ranks held-out Configs."""

    train_samples: int
    test_samples: int
    kendall_tau: float
    mae: float
    model: str = "xgboost"
    taus: dict | None = None
    with_sensitivity: bool = False

    def to_json(self) -> dict:
        return {
            "model": f"{self.model} on one-hot Config encodings"
            + (" and summed single-change sensitivities" if self.with_sensitivity else ""),
            "kendall_tau_by_model": self.taus,
            "train_samples": self.train_samples,
            "test_samples": self.test_samples,
            "kendall_tau": self.kendall_tau,
            "mae": self.mae,
        }


class AccuracyPredictor:
    """Fit on (genome, simulated accuracy) pairs; predict accuracy of new genomes."""

    def __init__(self, space: SearchSpace, seed: int = 0, sensitivity: np.ndarray | None = None) -> None:
        self.space = space
        self.seed = seed
        self.sensitivity = sensitivity  # slots x choices x 2, or None: one-hot features only
        self.model = None
        self.report: PredictorReport | None = None

    def _new_model(self, kind: str = "xgboost"):
        if kind == "ridge":
            return _Ridge(alpha=1.0)
        from xgboost import XGBRegressor

        return XGBRegressor(
            n_estimators=300,
            max_depth=4,
            learning_rate=0.05,
            subsample=0.9,
            colsample_bytree=0.8,
            random_state=self.seed,
            n_jobs=2,
        )

    def fit(self, genomes: np.ndarray, scores: np.ndarray, test_fraction: float = 0.2) -> PredictorReport:
        """Fit on a split, report Kendall tau on the held-out part, then refit on everything."""
        from scipy.stats import kendalltau

        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(genomes))
        n_test = max(2, int(len(genomes) * test_fraction))
        test, train = order[:n_test], order[n_test:]
        features = encode(self.space, genomes, self.sensitivity)
        results = {}
        for kind in ("ridge", "xgboost"):
            predicted = self._new_model(kind).fit(features[train], scores[train]).predict(features[test])
            tau = float(np.nan_to_num(kendalltau(predicted, scores[test]).statistic))
            results[kind] = (tau, float(np.abs(predicted - scores[test]).mean()))
        best = max(results, key=lambda k: results[k][0])
        self.report = PredictorReport(
            train_samples=len(train),
            test_samples=len(test),
            kendall_tau=results[best][0],
            mae=results[best][1],
            model=best,
            taus={k: round(v[0], 3) for k, v in results.items()},
            with_sensitivity=self.sensitivity is not None,
        )
        self.model = self._new_model(best).fit(features, scores)
        return self.report

    def predict(self, genomes: np.ndarray) -> np.ndarray:
        return self.model.predict(encode(self.space, genomes, self.sensitivity)).astype(np.float64)


class _Ridge:
    """Ridge regression with an intercept (closed form)."""

    def __init__(self, alpha: float) -> None:
        self.alpha = alpha

    def fit(self, x: np.ndarray, y: np.ndarray) -> _Ridge:
        self.mean_x, self.mean_y = x.mean(axis=0), y.mean()
        xc = x - self.mean_x
        self.coef = np.linalg.solve(xc.T @ xc + self.alpha * np.eye(x.shape[1]), xc.T @ (y - self.mean_y))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean_x) @ self.coef + self.mean_y
