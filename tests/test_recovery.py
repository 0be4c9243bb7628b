"""Recovery without training: bias correction removes the mean output shift a Config causes, the same in
the simulator, the materialized module and a replay from the saved ranges."""

from __future__ import annotations

import numpy as np
import pytest

import hanasc
from hanasc.frontend.calibration import ActivationRanges, calibrate
from hanasc.passes.config import Config, LayerChoice
from hanasc.recovery.bias_correction import output_shift, recovered_weights
from hanasc.search.simulator import Simulator


def _conv_valid(x: np.ndarray, w: np.ndarray, groups: int) -> np.ndarray:
    """Direct grouped convolution, no padding, stride 1 (reference for the mean algebra)."""
    n, _, h, wd = x.shape
    o, per_group, kh, kw = w.shape
    oh, ow = h - kh + 1, wd - kw + 1
    out = np.zeros((n, o, oh, ow))
    for oc in range(o):
        g = oc // (o // groups)
        for i in range(per_group):
            for dy in range(kh):
                for dx in range(kw):
                    out[:, oc] += w[oc, i, dy, dx] * x[:, g * per_group + i, dy : dy + oh, dx : dx + ow]
    return out


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_output_shift_is_the_mean_output_change(groups):
    rng = np.random.default_rng(groups)
    # constant over space per sample and channel, so every output pixel sees the same statistics
    x = np.broadcast_to(rng.standard_normal((64, 4, 1, 1)) + rng.uniform(-2, 2, (1, 4, 1, 1)), (64, 4, 6, 6))
    w = rng.standard_normal((8, 4 // groups, 3, 3))
    delta = rng.standard_normal(w.shape) * 0.1
    measured = (_conv_valid(x, w + delta, groups) - _conv_valid(x, w, groups)).mean(axis=(0, 2, 3))
    predicted = output_shift(delta, x.mean(axis=(0, 2, 3)), groups, axis=0)
    np.testing.assert_allclose(predicted, measured, rtol=1e-6, atol=1e-9)


def test_output_shift_of_dense_weights_in_both_layouts():
    rng = np.random.default_rng(0)
    delta, mean = rng.standard_normal((5, 3)), rng.standard_normal(3)
    np.testing.assert_allclose(output_shift(delta, mean, 1, axis=0), delta @ mean)
    np.testing.assert_allclose(output_shift(delta.T, mean, 1, axis=1), delta @ mean)


@pytest.fixture(scope="module")
def shifted_data(test_models):
    """Inputs with a strong per-channel offset, so that a damaged layer's mean shift matters."""
    model = hanasc.load_model(test_models["inverted_residual"])
    rng = np.random.default_rng(7)
    x = rng.standard_normal((24, *model.inputs[0].shape[1:])).astype(np.float32) + 1.5
    return model, x


DAMAGE = {
    "2-bit weights": lambda names: Config({n: LayerChoice(w_bits=2) for n in names}),
    "kernel shrink": lambda names: Config({names[2]: LayerChoice(kernel=1)}),  # the depthwise 3x3
    "4-bit weights + int8 activations": lambda names: Config(
        {n: LayerChoice(w_bits=4, a_bits=8) for n in names}
    ),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_bias_correction_reduces_the_error_of_a_damaged_model(shifted_data, damage):
    model, x = shifted_data
    calib, held = x[:12], x[12:]
    names = [layer.name for layer in model.layers]
    config = DAMAGE[damage](names)
    ranges = calibrate(model, calib, method="minmax")
    plain = ActivationRanges(ranges.ranges, ranges.method, ranges.samples)  # the same ranges, no means
    sim = Simulator(model, batch=4)
    reference = sim.run(Config(), held)
    error_plain = np.abs(sim.run(config, held, plain) - reference).mean()
    error_recovered = np.abs(sim.run(config, held, ranges) - reference).mean()
    assert recovered_weights(model, config, ranges), "nothing was corrected"
    assert error_recovered < 0.9 * error_plain, (error_recovered, error_plain)


def test_ranges_file_keeps_the_means(shifted_data, tmp_path):
    model, x = shifted_data
    ranges = calibrate(model, x[:4])
    ranges.save(tmp_path / "r.json")
    loaded = ActivationRanges.load(tmp_path / "r.json")
    assert set(loaded.channel_means) == {layer.name for layer in model.layers}
    for name, mean in ranges.channel_means.items():
        np.testing.assert_allclose(loaded.channel_means[name], mean, rtol=1e-6)
    config = Config({model.layers[0].name: LayerChoice(w_bits=2)})
    a, b = recovered_weights(model, config, ranges), recovered_weights(model, config, loaded)
    assert a.keys() == b.keys() and all(np.allclose(a[k], b[k]) for k in a)


@pytest.mark.parametrize("bits", [4, 2])
def test_low_bit_weights_clip_by_least_error(bits):
    """A few large weights no longer cost every other weight its codes: less error than max-abs."""
    from hanasc.passes.quant_reference import fake_quantize_weight, weight_qmax

    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    w[:, 0, 0, 0] *= 8  # one outlier per channel
    qmax = weight_qmax(bits)
    amax = np.abs(w).reshape(16, -1).max(axis=1)[:, None, None, None] / qmax
    max_abs = np.clip(np.round(w / amax), -qmax, qmax) * amax
    gain = ((fake_quantize_weight(w, bits) - w) ** 2).mean() / ((max_abs - w) ** 2).mean()
    assert gain < (0.95 if bits == 4 else 0.75), gain
