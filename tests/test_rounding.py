"""Rounding of 8-bit weights by output error (GPTQ on the shipped grid): less output error than nearest
rounding on held-out data, codes the quantization pass reproduces, no change where it cannot help, and the
simulator and the materialized module agree on a model whose classifier it rounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from builders import export_module
from torch import nn

import hanasc
from hanasc.frontend.calibration import calibrate
from hanasc.passes.config import Config, LayerChoice
from hanasc.passes.quant_reference import dequantize_weight, quantize_weight, weight_qmax
from hanasc.recovery.bias_correction import materialize_recovered, recovered_weights
from hanasc.recovery.rounding import gptq, nearest, output_error, pass_scale, rounded_by_output_error
from hanasc.search.simulator import Simulator
from hanasc.targets import host


def _halves(p: np.ndarray) -> np.ndarray:
    return np.stack([np.cov(p[i::2].T, bias=True) for i in range(2)])


def _heavy_tailed(rng, o: int, d: int) -> np.ndarray:
    """Rows of small weights with a few weights 100x larger (a head trained on few images)."""
    w = 0.05 * rng.standard_normal((o, d))
    for row in w:
        row[rng.choice(d, 3, replace=False)] = rng.choice([-1, 1], 3) * rng.uniform(4, 6, 3)
    return w


def _correlated(rng, n: int, d: int) -> np.ndarray:
    return rng.standard_normal((n, 8)) @ rng.standard_normal((8, d)) + 0.5 * rng.standard_normal((n, d))


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_gptq_beats_nearest_rounding_on_held_out_data(bits):
    rng = np.random.default_rng(0)
    d, o = 96, 10
    w = _heavy_tailed(rng, o, d) if bits == 8 else rng.standard_normal((o, d))
    data = _correlated(rng, 6000, d)
    train, held = data[:3000], data[3000:]
    rounded = rounded_by_output_error(w, _halves(train), bits)
    assert rounded is not None
    held_cov = np.cov(held.T, bias=True)[None]
    plain = nearest(w, pass_scale(w, bits), weight_qmax(bits))
    assert output_error(w[None], rounded[None], held_cov) < 0.6 * output_error(w[None], plain[None], held_cov)


@pytest.mark.parametrize("bits", [8, 4, 2])
def test_gptq_stays_on_the_grid_the_pass_computes(bits):
    """The quantization pass finds the same step (each row's maximum pinned at the largest code; at 4/2
    bits its clipping search picks ratio 1) and the same codes."""
    rng = np.random.default_rng(1)
    w = _heavy_tailed(rng, 12, 64)
    rounded = gptq(w, np.cov(_correlated(rng, 2000, 64).T, bias=True), bits).astype(np.float32)
    q, scale = quantize_weight(rounded, bits)
    np.testing.assert_allclose(scale, pass_scale(w, bits), rtol=1e-6)
    np.testing.assert_allclose(dequantize_weight(q, scale), rounded, rtol=1e-6, atol=1e-7)
    assert (np.abs(q).max(axis=1) == weight_qmax(bits)).all()


def test_no_rounding_change_for_white_inputs():
    """Uncorrelated inputs: nearest rounding already minimizes the output error; the weight is left alone."""
    rng = np.random.default_rng(2)
    w = rng.standard_normal((6, 32))
    assert rounded_by_output_error(w, _halves(rng.standard_normal((4000, 32)))) is None


def test_rounding_survives_a_covariance_that_is_not_positive_definite():
    """Dead inputs and a slightly negative eigenvalue (rounding of a rank-deficient estimate): rounded
    anyway, on the pass's grid, no error."""
    rng = np.random.default_rng(5)
    p = _correlated(rng, 400, 32)
    p[:, :4] = 0.0  # dead channels
    cov = np.cov(p.T, bias=True)
    values, vectors = np.linalg.eigh(cov)
    values[0] = -0.05 * values[-1]  # below minus the damping (1 % of the mean variance)
    broken = (vectors * values) @ vectors.T
    w = _heavy_tailed(rng, 6, 32)
    rounded = gptq(w, broken)
    q, scale = quantize_weight(rounded.astype(np.float32), 8)
    np.testing.assert_allclose(dequantize_weight(q, scale), rounded, rtol=1e-6, atol=1e-6)
    halves = np.stack([broken, broken])
    assert rounded_by_output_error(w, halves) is None or np.isfinite(rounded_by_output_error(w, halves)).all()


class _Head(nn.Module):
    """Conv features and a heavy-tailed classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 8 * 8, 10)
        with torch.no_grad():
            weight = _heavy_tailed(np.random.default_rng(3), 10, 16 * 8 * 8)
            self.fc.weight.copy_(torch.from_numpy(weight.astype(np.float32)))

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.fixture(scope="module")
def head_model(tmp_path_factory):
    torch.manual_seed(0)
    path = export_module(_Head().eval(), (1, 3, 8, 8), tmp_path_factory.mktemp("head") / "head.onnx")
    model = hanasc.load_model(path)
    rng = np.random.default_rng(4)
    smooth = rng.standard_normal((600, 3, 2, 2)).astype(np.float32)
    x = np.repeat(np.repeat(smooth, 4, axis=2), 4, axis=3) + 0.1 * rng.standard_normal((600, 3, 8, 8))
    return model, x.astype(np.float32)


def test_rounding_reduces_the_error_of_an_8bit_classifier(head_model):
    model, x = head_model
    calib, held = x[:400], x[400:]
    ranges = calibrate(model, calib)
    config = Config({"fc": LayerChoice(w_bits=8, a_bits=32)})
    values = recovered_weights(model, config, ranges)
    assert model.layers[-1].weight in values  # the classifier was rounded by output error
    sim = Simulator(model, batch=50)
    reference = sim.run(Config(), held)
    no_statistics = calibrate(model, calib)
    no_statistics.covariances = {}
    error_nearest = np.abs(sim.run(config, held, no_statistics) - reference).mean()
    error_rounded = np.abs(sim.run(config, held, ranges) - reference).mean()
    assert error_rounded < 0.7 * error_nearest, (error_rounded, error_nearest)
    # what ships computes what the simulator judged
    executable = host.build_artifact(materialize_recovered(model, config, ranges))
    shipped = np.concatenate([host.run(executable, [s[None]])[0] for s in held[:8]])
    np.testing.assert_allclose(shipped, sim.run(config, held[:8], ranges), rtol=1e-4, atol=1e-4)
