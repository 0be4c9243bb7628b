"""Least-squares reconstruction: refits reduce the output error of structural changes on held-out data,
are cross-validated (no refit where it would not help), and ship: simulator, materialized module and a
replay from the saved ranges agree."""

from __future__ import annotations

import numpy as np
import pytest

import hanasc
from hanasc.frontend.calibration import ActivationRanges, calibrate
from hanasc.frontend.layer_statistics import PatchGeometry, conv_patches
from hanasc.passes.config import Config, LayerChoice
from hanasc.recovery.bias_correction import recovered_weights
from hanasc.recovery.reconstruction import refit_depthwise, refit_matrix
from hanasc.recovery.rounding import output_error
from hanasc.search.simulator import Simulator


def _halves(p: np.ndarray) -> np.ndarray:
    """Covariances of the even and odd rows of patches ``p`` (N, D), stacked: the calibration halves."""
    return np.stack([np.cov(p[i::2].T, bias=True) for i in range(2)])


def _correlated(rng, n: int, d: int) -> np.ndarray:
    mix = rng.standard_normal((d, d)) / np.sqrt(d) + np.eye(d)
    return rng.standard_normal((n, 4)) @ rng.standard_normal((4, d)) + rng.standard_normal((n, d)) @ mix * 0.3


def test_refit_matrix_beats_dropping_columns_on_held_out_data():
    rng = np.random.default_rng(0)
    d, o = 24, 8
    w = rng.standard_normal((o, d))
    keep = np.zeros(d, dtype=bool)
    keep[::2] = True
    data = _correlated(rng, 4000, d)
    train, held = data[:2000], data[2000:]
    fit = refit_matrix(w, _halves(train), keep)
    assert fit is not None and np.array_equal(fit[:, ~keep], w[:, ~keep])  # removed columns left as they were
    held_cov = np.cov(held.T, bias=True)[None]
    plain = np.where(keep, w, 0.0)
    refit = np.where(keep, fit, 0.0)
    assert output_error(w[None], refit[None], held_cov) < 0.5 * output_error(w[None], plain[None], held_cov)
    # with plenty of data the refit is the ordinary least-squares solution on the kept columns
    centred = train - train.mean(axis=0)
    lstsq = np.linalg.lstsq(centred[:, keep], centred @ w.T, rcond=None)[0].T
    np.testing.assert_allclose(fit[:, keep], lstsq, rtol=0.05, atol=0.05)


def test_no_refit_when_the_inputs_are_uncorrelated():
    """White inputs: the kept columns are already the best fit; cross-validation keeps the Config's own."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 16))
    keep = np.arange(16) < 10
    assert refit_matrix(w, _halves(rng.standard_normal((400, 16))), keep) is None


def test_no_refit_from_too_few_samples():
    """Fewer samples than inputs: a refit would fit the samples, not the layer."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((4, 64))
    keep = np.arange(64) % 3 != 0
    fit = refit_matrix(w, _halves(rng.standard_normal((20, 64))), keep)
    held = np.cov(rng.standard_normal((4000, 64)).T, bias=True)[None]
    if fit is not None:  # allowed only if it does not hurt on fresh data
        plain = np.where(keep, w, 0.0)
        assert output_error(w[None], np.where(keep, fit, 0)[None], held) <= 1.05 * output_error(
            w[None], plain[None], held
        )


def test_depthwise_refit_per_channel():
    rng = np.random.default_rng(3)
    c, k = 5, 9
    w = rng.standard_normal((c, 1, 3, 3))
    keep = np.zeros(k, dtype=bool)
    keep[4] = True  # the centre tap of a 3x3 -> 1x1 shrink
    smooth = rng.standard_normal((3000, c, 1)) + 0.3 * rng.standard_normal((3000, c, k))  # correlated taps
    halves = np.stack([np.einsum("pci,pcj->cij", s, s) / len(s) for s in (smooth[0::2], smooth[1::2])])
    fit = refit_depthwise(w, halves, keep)
    assert fit is not None
    flat, refit = w.reshape(c, -1), fit.reshape(c, -1)
    # the centre takes the sum of the taps it stands in for
    np.testing.assert_allclose(refit[:, 4], flat.sum(axis=1), rtol=0.1, atol=0.1)


def test_conv_patches_are_im2col_in_weight_order():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    g = PatchGeometry((3, 3), (2, 1), (1, 0, 1, 2), (1, 1), False)
    patches = conv_patches(x, g, None)  # (N*OH*OW, C*k)
    out = (patches @ w.reshape(4, -1).T).reshape(2, -1, 4)
    import torch

    ref = torch.nn.functional.conv2d(
        torch.nn.functional.pad(torch.from_numpy(x), (0, 2, 1, 1)), torch.from_numpy(w), stride=(2, 1)
    )
    np.testing.assert_allclose(out.transpose(0, 2, 1).reshape(ref.shape), ref.numpy(), rtol=1e-4, atol=1e-4)
    depthwise = PatchGeometry((3, 3), (2, 1), (1, 0, 1, 2), (1, 1), True)
    per_channel = conv_patches(x, depthwise, None)  # (C, k, P)
    np.testing.assert_array_equal(per_channel.transpose(2, 0, 1).reshape(-1, 27), patches)


@pytest.fixture(scope="module")
def plain_conv(test_models):
    """The plain conv stack with correlated, offset inputs (smooth images), calibrated on half."""
    model = hanasc.load_model(test_models["plain_conv"])
    rng = np.random.default_rng(5)
    base = rng.standard_normal((48, 3, 8, 8)).astype(np.float32)
    x = np.repeat(np.repeat(base, 4, axis=2), 4, axis=3) + 0.5  # 32x32, neighbouring pixels equal
    x += 0.1 * rng.standard_normal(x.shape).astype(np.float32)
    calib, held = x[:32], x[32:]
    return model, calibrate(model, calib, method="minmax"), held


def _structural_damage(model) -> dict[str, Config]:
    names = [layer.name for layer in model.layers]
    return {
        "width": Config({names[0]: LayerChoice(width=0.5)}),
        "kernel": Config({names[1]: LayerChoice(kernel=1)}),
        "separable": Config({names[2]: LayerChoice(separable=True)}),
    }


@pytest.mark.parametrize("damage", ["width", "kernel", "separable"])
def test_reconstruction_reduces_the_error_of_a_damaged_model(plain_conv, damage):
    model, ranges, held = plain_conv
    config = _structural_damage(model)[damage]
    means_only = ActivationRanges(ranges.ranges, ranges.method, ranges.samples, None, ranges.channel_means)
    sim = Simulator(model, batch=4)
    reference = sim.run(Config(), held)
    error_bias = np.abs(sim.run(config, held, means_only) - reference).mean()
    error_refit = np.abs(sim.run(config, held, ranges) - reference).mean()
    values = recovered_weights(model, config, ranges)
    assert any(name.endswith("weight") or name in {x.weight for x in model.layers} for name in values)
    assert error_refit < 0.85 * error_bias, (error_refit, error_bias)


def test_saved_statistics_replay_the_same_refit(plain_conv, tmp_path):
    model, ranges, _ = plain_conv
    ranges.save(tmp_path / "activation_ranges.json")
    assert (tmp_path / "activation_ranges.npz").is_file()
    loaded = ActivationRanges.load(tmp_path / "activation_ranges.json")
    assert set(loaded.covariances) == set(ranges.covariances)
    config = _structural_damage(model)["width"]
    a, b = recovered_weights(model, config, ranges), recovered_weights(model, config, loaded)
    assert a.keys() == b.keys() and all(np.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a)


def test_corrupt_statistics_file_is_one_line_error(plain_conv, tmp_path):
    from hanasc.frontend.calibration import CalibrationError

    _, ranges, _ = plain_conv
    ranges.save(tmp_path / "r.json")
    (tmp_path / "r.npz").write_bytes(b"not an npz")
    with pytest.raises(CalibrationError, match=r"r\.npz"):
        ActivationRanges.load(tmp_path / "r.json")


def test_refit_survives_a_covariance_that_is_not_positive_definite():
    """Dead channels make the covariance singular; rounding can make it indefinite at a small ridge (a
    Fashion-MNIST model's 672-channel input did): the solve falls back to the minimum-norm solution."""
    from hanasc.recovery.reconstruction import _solve_spd

    rng = np.random.default_rng(0)
    basis = rng.standard_normal((100, 90))
    gram = basis @ basis.T  # rank 90 of 100
    gram[0, 0] -= 1e3  # indefinite
    rhs = rng.standard_normal((100, 4))
    for shaped in (gram[None], np.repeat(gram[None], 3, axis=0)):  # the Cholesky and the batched paths
        out = _solve_spd(shaped, np.repeat(rhs[None], len(shaped), axis=0))
        assert out.shape == (len(shaped), 100, 4) and np.isfinite(out).all()
