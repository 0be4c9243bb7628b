"""XGBoost latency model: fitted on a small measured sweep, predicts, saves, reloads, reports provenance."""

from __future__ import annotations

import numpy as np
import pytest

from hanasc.cost_models.sweep import LayerShape


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    from hanasc.compile.profile_job import ProfilePlan, profile_target
    from hanasc.cost_models.profiler import TimingConfig

    root = tmp_path_factory.mktemp("cache")
    layers = [LayerShape(c, c * 2, hw, hw, 1) for c in (8, 16, 32) for hw in (8, 16)]
    layers += [LayerShape(c, c, hw, hw, 3, groups=c) for c in (8, 16, 32) for hw in (8, 16)]
    summary = profile_target(
        "host",
        ProfilePlan(layers=layers, chains=3),
        db=root / "p.sqlite",
        timing=TimingConfig(3, 5),
        model_root=root / "latency_models",
    )
    return root, summary


def test_sweep_trains_a_calibrated_model(profiled):
    from hanasc.cost_models.latency_model import load_latest

    root, summary = profiled
    assert summary.measured == 12 and summary.chains_measured == 3 and not summary.failed
    model = load_latest("host", root=root / "latency_models")
    assert model.meta.version == summary.model_version and model.meta.n_samples == 12
    prov = model.meta.provenance()
    assert prov["calibrated"] and prov["trained_on"] == summary.device and prov["n_samples"] == 12
    assert model.meta.calibration.per_call_s >= 0


def test_predicts_measured_kernels_and_an_unseen_one(profiled):
    from hanasc.cost_models.kernels import lower_to_kernels
    from hanasc.cost_models.latency_model import load_latest
    from hanasc.cost_models.profiler import Session, TimingConfig, time_kernel
    from hanasc.cost_models.store import ProfileStore
    from hanasc.cost_models.sweep import layer_module
    from hanasc.cost_models.target_info import get_target

    root, summary = profiled
    model = load_latest("host", root=root / "latency_models")
    with ProfileStore(root / "p.sqlite") as store:
        rows = store.kernels("host", summary.device)
    pred = model.predict_kernels_s([r.features for r in rows])
    meas = np.array([r.median_s for r in rows])
    assert np.all(np.abs(np.log(pred / meas)) < np.log(1.5))  # fits what it was trained on
    unseen = lower_to_kernels(layer_module(LayerShape(24, 48, 12, 12, 1))).kernels[0]
    measured = time_kernel(unseen.prim_func, get_target("host"), Session.local(), TimingConfig(3, 5)).median_s
    predicted = model.predict_kernels_s([unseen.features])[0]
    assert 1 / 4 < predicted / measured < 4  # interpolates between 1x1 convs it has seen


def test_costs_use_the_model(profiled, test_models):
    import hanasc
    from hanasc.cost_models.estimate import CostContext, estimate_costs

    root, _ = profiled
    report = estimate_costs(
        hanasc.load_model(test_models["inverted_residual"]).mod, "host", CostContext(root)
    )
    assert report.latency.source == "predicted"
    assert report.latency.detail["model"].startswith("xgboost:") and report.latency.detail["calibrated"]
    assert report.latency.value > 0
