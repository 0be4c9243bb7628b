"""SeparableConv: materialized depthwise + pointwise equals the simulation weight in the original graph."""

from __future__ import annotations

import numpy as np
import pytest

import hanasc
from hanasc.core.relax_params import bind_weights, weights_of
from hanasc.passes.config import Config, ConfigError, LayerChoice
from hanasc.passes.separable import (
    SeparableConv,
    decompose_separable,
    reconstruct_separable,
    separable_errors,
    simulate_separable,
)
from hanasc.passes.weights import weight_values
from hanasc.targets import host

TOL = 1e-4  # max abs difference relative to the output's scale


def rel_max_diff(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def rel_l2(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def run_bound(mod, x: np.ndarray, weights: dict[str, np.ndarray] | None = None) -> np.ndarray:
    return host.run(host.build(bind_weights(mod, weights)), [x])[0]


def test_rank1_kernel_is_recovered_exactly():
    rng = np.random.default_rng(0)
    dw = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    pw = rng.standard_normal((6, 4, 1, 1)).astype(np.float32)
    w = reconstruct_separable(dw, pw)
    dw2, pw2, error = decompose_separable(w)
    assert dw2.shape == (4, 1, 3, 3) and pw2.shape == (6, 4, 1, 1) and dw2.dtype == np.float32
    assert error < 1e-6
    np.testing.assert_allclose(reconstruct_separable(dw2, pw2), w, atol=1e-5)


def test_error_is_the_best_rank1_residual():
    """rel_error is ||W - W'|| / ||W||, and W' is optimal: the residual is the tail of each slice's SVD."""
    w = np.random.default_rng(1).standard_normal((8, 3, 5, 5)).astype(np.float32)
    dw, pw, error = decompose_separable(w)
    w2 = reconstruct_separable(dw, pw)
    assert error == pytest.approx(np.linalg.norm(w - w2) / np.linalg.norm(w), rel=1e-5)
    tail = sum(
        (np.linalg.svd(w[:, i].reshape(8, 25).astype(np.float64), compute_uv=False)[1:] ** 2).sum()
        for i in range(3)
    )
    assert error == pytest.approx(np.sqrt(tail) / np.linalg.norm(w.astype(np.float64)), rel=1e-5)
    np.testing.assert_array_equal(simulate_separable(w), w2)
    assert 0.0 < error < 1.0


@pytest.fixture(scope="module")
def plain(test_models):
    return hanasc.load_model(test_models["plain_conv"])


def test_materialized_equals_simulation(plain):
    """3x3 (3->16) and 5x5 stride-2 (16->32) convs made separable; compiled and compared with TVM."""
    layers = ["body.body.0", "body.body.3"]
    config = Config(layers={name: LayerChoice(separable=True) for name in layers})
    new = SeparableConv(config)(plain.mod)

    before, after = weight_values(plain.mod["main"]), weight_values(new["main"])
    for name in layers:
        cout, cin, kh, kw = before[f"{name}.weight"].shape
        assert f"{name}.weight" not in after
        assert after[f"{name}.dw.weight"].shape == (cin, 1, kh, kw)
        assert after[f"{name}.pw.weight"].shape == (cout, cin, 1, 1)
        assert f"{name}.bias" in after
    saved = sum(
        before[f"{n}.weight"].size - after[f"{n}.dw.weight"].size - after[f"{n}.pw.weight"].size
        for n in layers
    )
    assert (
        sum(v.size for v in before.values()) - sum(v.size for v in after.values())
        == saved
        == 432 - 27 - 48 + 12800 - 400 - 512
    )

    x = plain.example_inputs()["input"]
    simulated = weights_of(plain.mod)
    for name in layers:
        simulated[f"{name}.weight"] = simulate_separable(simulated[f"{name}.weight"])
    materialized = run_bound(new, x)
    simulation = run_bound(plain.mod, x, simulated)
    original = run_bound(plain.mod, x)
    assert materialized.shape == original.shape == (1, 32)
    assert rel_max_diff(materialized, simulation) <= TOL
    output_error = rel_l2(materialized, original)  # the substitution really changes the model
    print(f"plain_conv separable {layers}: output relative L2 error {output_error:.4f}")
    assert 0.01 < output_error < 2.0


def test_separable_errors_per_layer(test_models, plain):
    errors = separable_errors(plain.mod, ["body.body.0", "body.body.3", "body.body.6"])
    w = weights_of(plain.mod)
    for name, error in errors.items():
        assert error == pytest.approx(decompose_separable(w[f"{name}.weight"])[2])
        assert 0.0 < error < 1.0
    stem = hanasc.load_model(test_models["inverted_residual"])
    assert separable_errors(weights_of(stem.mod), ["stem.stem.0"])["stem.stem.0"] > 0.0
    print({k: round(v, 4) for k, v in errors.items()})
    with pytest.raises(ConfigError, match=r"block\.block\.0"):
        separable_errors(stem.mod, ["block.block.0"])  # 1x1


def test_idempotent_and_leaves_other_layers(plain):
    config = Config(layers={"body.body.6": LayerChoice(separable=True)})
    once = SeparableConv(config)(plain.mod)
    twice = SeparableConv(config)(once)
    names = [p.name for p in twice["main"].params]
    assert names == [p.name for p in once["main"].params]
    assert names.count("body.body.6.dw.weight") == 1 and "body.body.0.weight" in names


@pytest.mark.parametrize(
    "model, layer, reason",
    [
        ("inverted_residual", "block.block.3", "depthwise"),
        ("inverted_residual", "block.block.0", "1x1"),
        ("dense_head", "fc1", "dense"),
    ],
)
def test_config_errors(test_models, model, layer, reason):
    loaded = hanasc.load_model(test_models[model])
    with pytest.raises(ConfigError, match=rf"'{layer}'.*{reason}"):
        SeparableConv(Config(layers={layer: LayerChoice(separable=True)}))(loaded.mod)
