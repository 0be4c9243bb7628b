"""The accuracy predictor (the HA-NAS surrogate): XGBoost on one-hot Config encodings.

Trained on Configs evaluated with the simulator on the calibration split; its rank correlation
(Kendall tau) on held-out Configs is reported, and search queries it instead of the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hanasc.space import SearchSpace


def encode(space: SearchSpace, genomes: np.ndarray) -> np.ndarray:
    """One-hot features of genomes (one column per slot choice)."""
    genomes = np.atleast_2d(genomes)
    columns = []
    for i, slot in enumerate(space.slots):
        for c in range(len(slot.choices)):
            columns.append(genomes[:, i] == c)
    return np.stack(columns, axis=1).astype(np.float32)


@dataclass
class PredictorReport:
    """How well the predictor ranks held-out Configs."""

    train_samples: int
    test_samples: int
    kendall_tau: float
    mae: float

    def to_json(self) -> dict:
        return {
            "model": "xgboost.XGBRegressor on one-hot Config encodings",
            "train_samples": self.train_samples,
            "test_samples": self.test_samples,
            "kendall_tau": self.kendall_tau,
            "mae": self.mae,
        }


class AccuracyPredictor:
    """Fit on (genome, simulated accuracy) pairs; predict accuracy of new genomes."""

    def __init__(self, space: SearchSpace, seed: int = 0) -> None:
        self.space = space
        self.seed = seed
        self.model = None
        self.report: PredictorReport | None = None

    def _new_model(self):
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
        features = encode(self.space, genomes)
        model = self._new_model().fit(features[train], scores[train])
        predicted = model.predict(features[test])
        tau = kendalltau(predicted, scores[test]).statistic
        self.report = PredictorReport(
            train_samples=len(train),
            test_samples=len(test),
            kendall_tau=float(np.nan_to_num(tau)),
            mae=float(np.abs(predicted - scores[test]).mean()),
        )
        self.model = self._new_model().fit(features, scores)
        return self.report

    def predict(self, genomes: np.ndarray) -> np.ndarray:
        return self.model.predict(encode(self.space, genomes)).astype(np.float64)
