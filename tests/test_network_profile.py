"""Kernels as shipped: features of the blocked / int8 lowering, in-network timing, the model trained on it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import hanasc
from hanasc.cost_models.kernels import lower_to_kernels
from hanasc.cost_models.network_profile import (
    NetworkProfile,
    merged_rows,
    profile_network,
    train_on_networks,
)
from hanasc.frontend.calibration import calibrate
from hanasc.passes.config import Config, LayerChoice
from hanasc.passes.materialize import materialize


@pytest.fixture(scope="module")
def residual(test_models):
    return hanasc.load_model(test_models["inverted_residual"])


def _w8a8(model):
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    ranges = calibrate(model, [s[None] for s in x])
    config = Config(layers={layer.name: LayerChoice(w_bits=8, a_bits=8) for layer in model.layers})
    return materialize(model.mod, config, ranges)


def _convs(lowered) -> list:
    return [k.features for k in lowered.kernels if k.features.op_kind in ("conv2d", "depthwise")]


def test_shipped_features_read_blocked_kernels_as_their_nchw_layers(residual):
    """The blocked kernels' features give the layers' own shapes: the same kinds, windows, groups, MACs and
    NCHW output shapes as TVM's default lowering of the same model."""
    default = _convs(lower_to_kernels(residual.mod, "host"))
    shipped = lower_to_kernels(residual.mod, "host", lowering="shipped")
    assert any(len(k.prim_func.params[0].shape) == 5 for k in shipped.kernels)  # really blocked
    got = _convs(shipped)
    assert len(got) == len(default) == 4
    for a, b in zip(got, default, strict=True):
        assert (a.op_kind, a.kernel_size, a.groups, a.stride) == (
            b.op_kind,
            b.kernel_size,
            b.groups,
            b.stride,
        )
        assert a.anchor_macs == b.anchor_macs and a.output.shape == b.output.shape
        assert a.lowering == "shipped" and b.lowering == "default"
        assert a.weight is not None and a.weight_bits == 32


def test_shipped_int8_kernels_carry_their_weight_bits(residual):
    shipped = _convs(lower_to_kernels(_w8a8(residual), "host", lowering="shipped"))
    assert shipped and all(f.weight_bits == 8 for f in shipped)
    assert {f.op_kind for f in shipped} == {"conv2d", "depthwise"}


def test_signatures_differ_between_lowerings(residual):
    default = {k.signature for k in lower_to_kernels(residual.mod, "host").kernels}
    shipped = {k.signature for k in lower_to_kernels(residual.mod, "host", lowering="shipped").kernels}
    assert not default & shipped


def test_unknown_lowering_is_refused(residual):
    with pytest.raises(ValueError, match="unknown lowering"):
        lower_to_kernels(residual.mod, "host", lowering="nchw")


@pytest.fixture(scope="module")
def profiles(residual):
    """The fp32 and W8A8 networks, each timed in place (runs kept small: a test, not a measurement)."""
    return [profile_network(mod, "host", runs=3, repeat=3) for mod in (residual.mod, _w8a8(residual))]


def test_every_kernel_the_artifact_calls_is_timed_in_place(profiles):
    for profile in profiles:
        assert profile is not None
        names = {k.name for k in profile.lowered.kernels}
        assert set(profile.call_s) == names and all(t > 0 for t in profile.call_s.values())
        assert profile.whole_s > 0 and 0.2 < profile.kernel_sum_s / profile.whole_s < 5


def test_profiles_round_trip_through_json(profiles):
    profile = profiles[1]
    back = NetworkProfile.from_json(profile.to_json())
    assert back.call_s == profile.call_s and back.whole_s == profile.whole_s
    assert [k.features for k in back.lowered.kernels] == [k.features for k in profile.lowered.kernels]
    assert back.kernel_sum_s == pytest.approx(profile.kernel_sum_s)


def test_model_trained_on_networks_predicts_shipped_kernels(profiles):
    model = train_on_networks(profiles, "host", "test-device")
    assert model.meta.lowering == "shipped" and model.meta.calibration is not None
    assert model.meta.n_samples == len(merged_rows(profiles, "host", "test-device"))
    for profile in profiles:
        predicted = model.network_s(model.predict_sum_s(profile.lowered), profile.lowered.total_calls)
        assert predicted > 0


def test_training_keeps_to_one_lowering(profiles):
    """Rows of another lowering in the same store are not mixed into a model."""
    from hanasc.cost_models.latency_model import train

    rows = merged_rows(profiles, "host", "d")
    other = [
        dataclasses.replace(r, features=dataclasses.replace(r.features, lowering="default"), median_s=1.0)
        for r in rows
    ]
    model = train(rows + other, "host", "d", lowering="shipped")
    assert model.meta.n_samples == len(rows)


def test_profile_networks_trains_the_model_costs_and_search_use(test_models, tmp_path, monkeypatch):
    """``hanasc profile --networks``: architectures of the model's space timed in place, the model of the
    shipped lowering saved; ``estimate_costs`` and the search's costs then lower the same way."""
    from hanasc.compile.profile_job import ProfilePlan, profile_target
    from hanasc.cost_models.estimate import CostContext, estimate_costs
    from hanasc.search.costs import SearchCosts
    from hanasc.search.space import build_space

    monkeypatch.setenv("HANASC_CACHE", str(tmp_path))
    path = test_models["inverted_residual"]
    plan = ProfilePlan(model=path, networks=3, budget_minutes=5)
    summary = profile_target(
        "host", plan, db=tmp_path / "profiles.sqlite", model_root=tmp_path / "latency_models"
    )
    assert summary.networks_measured == 3 and summary.model_version and not summary.failed
    assert "networks timed in place" in summary.table()

    model = hanasc.load_model(path)
    report = estimate_costs(model.mod, "host", CostContext(root=tmp_path), memory=False)
    assert report.latency.detail["kernels"]  # every kernel timed, from the store or the model
    assert report.latency.detail["model"].startswith("xgboost:")
    assert "inside whole networks" in report.latency.detail["kernels_from"]
    assert report.latency.value > 0

    costs = SearchCosts(model, build_space(model), "host")
    assert costs._lowering == "shipped"
    latency, _, _ = costs(np.stack([costs.space.identity()]))
    assert latency[0] > 0


def test_profile_networks_needs_a_model():
    from hanasc.compile.profile_job import ProfilePlan, profile_target
    from hanasc.core.errors import HanascError

    with pytest.raises(HanascError, match="--model"):
        profile_target("host", ProfilePlan(networks=2))
