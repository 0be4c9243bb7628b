"""The compile-once simulator agrees with the TVM-materialized model for every choice kind."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import hanasc
from hanasc.core.relax_params import bind_weights
from hanasc.passes.config import Config, LayerChoice
from hanasc.recovery.bias_correction import materialize_recovered
from hanasc.search.simulator import Simulator
from hanasc.targets import host

FLOAT_TOL = 1e-4  # relative to the output's scale


def materialized_outputs(model, config, ranges, x: np.ndarray) -> np.ndarray:
    """The shipped form: bias-corrected (when the ranges carry input means), then the real passes."""
    executable = host.build(bind_weights(materialize_recovered(model, config, ranges)))
    return np.concatenate([host.run(executable, [sample[None]])[0] for sample in x])


def calibration(model, x):
    from hanasc.frontend.calibration import calibrate

    return calibrate(model, x, method="minmax")


def assert_agree(sim: np.ndarray, mat: np.ndarray, integer: bool) -> None:
    scale = np.abs(mat).max()
    diff = np.abs(sim - mat).max()
    if integer:
        step = (mat.max() - mat.min()) / 255  # one int8 step over the output's range
        assert diff <= step, f"max diff {diff} > one quantization step {step}"
    else:
        assert diff <= FLOAT_TOL * scale, f"max diff {diff} > {FLOAT_TOL} x {scale}"


@pytest.fixture(scope="module")
def residual_model(test_models):
    return hanasc.load_model(test_models["inverted_residual"])


@pytest.fixture(scope="module")
def residual_sim(residual_model):
    return Simulator(residual_model, batch=4)


@pytest.fixture(scope="module")
def samples(residual_model):
    rng = np.random.default_rng(3)
    return rng.standard_normal((6, *residual_model.inputs[0].shape[1:])).astype(np.float32)


def test_identity_matches_onnxruntime_on_original(residual_model, residual_sim, samples, test_models):
    session = ort.InferenceSession(str(test_models["inverted_residual"]), providers=["CPUExecutionProvider"])
    reference = np.concatenate([session.run(None, {"input": s[None]})[0] for s in samples])
    np.testing.assert_allclose(residual_sim.run(Config(), samples), reference, rtol=1e-5, atol=1e-5)


def _group_layers(model, layer: str) -> list[str]:
    """Every layer sharing ``layer``'s channel group (coupled layers take one width)."""
    from hanasc.passes.channel_groups import channel_groups

    return next(g.layers for g in channel_groups(model.mod["main"], model.mod) if layer in g.layers)


def _width(model, layer: str, width: float, **extra) -> dict[str, LayerChoice]:
    return {name: LayerChoice(width=width, **extra) for name in _group_layers(model, layer)}


def _layers(model, op=None):
    return [layer.name for layer in model.layers if op is None or layer.op == op]


CASES = {
    "w16": lambda m: Config({n: LayerChoice(w_bits=16, a_bits=16) for n in _layers(m)}),
    "w8_weight_only": lambda m: Config({n: LayerChoice(w_bits=8) for n in _layers(m)}),
    "w4_weight_only": lambda m: Config({n: LayerChoice(w_bits=4) for n in _layers(m)}),
    "w2_weight_only": lambda m: Config({n: LayerChoice(w_bits=2) for n in _layers(m)}),
    "w8a8": lambda m: Config({n: LayerChoice(w_bits=8, a_bits=8) for n in _layers(m)}),
    "w4a8": lambda m: Config({n: LayerChoice(w_bits=4, a_bits=8) for n in _layers(m)}),
    "separable": lambda m: Config({_layers(m, "conv")[0]: LayerChoice(separable=True)}),
    "width": lambda m: Config(_width(m, _layers(m)[1], 0.5)),
    "skip": lambda m: Config(skip=[block_names(m)[0]]),
    "combined": lambda m: Config(
        {
            **_width(m, _layers(m)[1], 0.5, w_bits=4),
            _layers(m, "conv")[0]: LayerChoice(separable=True, w_bits=8, a_bits=8),
            _layers(m, "depthwise_conv")[0]: LayerChoice(width=0.5, w_bits=8, a_bits=8),
        }
    ),
}
INTEGER_CASES = {"w8a8", "w4a8", "combined"}


def block_names(model) -> list[str]:
    from hanasc.passes.depth import residual_blocks

    return [b.name for b in residual_blocks(model.mod["main"])]


@pytest.mark.parametrize("case", sorted(CASES))
def test_simulator_matches_materialized(case, residual_model, residual_sim, samples):
    config = CASES[case](residual_model)
    ranges = calibration(residual_model, samples)
    sim = residual_sim.run(config, samples, ranges)
    mat = materialized_outputs(residual_model, config, ranges, samples)
    assert_agree(sim, mat, integer=case in INTEGER_CASES)


def test_kernel_shrink_on_plain_conv(test_models):
    model = hanasc.load_model(test_models["plain_conv"])
    config = Config({model.layers[1].name: LayerChoice(kernel=3)})
    x = np.random.default_rng(0).standard_normal((3, *model.inputs[0].shape[1:])).astype(np.float32)
    sim = Simulator(model, batch=2).run(config, x)
    assert_agree(sim, materialized_outputs(model, config, None, x), integer=False)


def test_dense_head_quantized(test_models):
    model = hanasc.load_model(test_models["dense_head"])
    x = np.random.default_rng(0).standard_normal((4, *model.inputs[0].shape[1:])).astype(np.float32)
    config = Config({n.name: LayerChoice(w_bits=8, a_bits=8) for n in model.layers})
    ranges = calibration(model, x)
    sim = Simulator(model, batch=4).run(config, x, ranges)
    assert_agree(sim, materialized_outputs(model, config, ranges, x), integer=True)


@pytest.mark.slow
def test_efficientnet_combined_choices(effnet_path):
    model = hanasc.load_model(effnet_path)
    names = [layer.name for layer in model.layers]
    x = np.random.default_rng(0).standard_normal((2, *model.inputs[0].shape[1:])).astype(np.float32)
    config = Config(
        {
            "conv_stem": LayerChoice(separable=True, w_bits=8, a_bits=8),
            **_width(model, names[3], 0.5, w_bits=4),
            "blocks.3._depthwise_conv": LayerChoice(kernel=3, w_bits=8, a_bits=8),
            names[-2]: LayerChoice(w_bits=16, a_bits=16),
            "fc": LayerChoice(w_bits=8),
        },
        skip=[block_names(model)[0]],
    )
    ranges = calibration(model, x)
    sim = Simulator(model, batch=2).run(config, x, ranges)
    assert_agree(sim, materialized_outputs(model, config, ranges, x), integer=True)


def test_graph_that_does_not_rebatch_runs_one_sample_at_a_time(tmp_path):
    """A reshape folded for batch 1 (PP-OCR's recognizer has them): the simulator falls back to batch 1."""
    from builders import folded_sequence_model

    path = folded_sequence_model(tmp_path / "folded.onnx")
    model = hanasc.load_model(path)
    sim = Simulator(model, batch=8)
    assert sim.batch == 1
    x = np.random.default_rng(0).standard_normal((3, 3, 8, 8)).astype(np.float32)
    session = ort.InferenceSession(str(path))
    want = np.concatenate([session.run(None, {"input": s[None]})[0] for s in x])
    np.testing.assert_allclose(sim.run(Config(), x), want, rtol=1e-5, atol=1e-5)


def test_shared_batch_one_reshape_target_is_rebatched(tmp_path):
    """Two Reshapes read one target that hard-codes batch 1 (an initializer, which the cleaner makes a
    Constant): the simulator still runs whole batches, and the torch form rebatches the same nodes."""
    import torch
    from builders import shared_flatten_model

    from hanasc.recovery.torch_form import TorchForm

    rng = np.random.default_rng(0)
    path = shared_flatten_model(tmp_path / "shared_flat.onnx")
    model = hanasc.load_model(path)
    sim = Simulator(model, batch=4)
    assert sim.batch == 4
    x = rng.standard_normal((6, 2, 4, 4)).astype(np.float32)
    session = ort.InferenceSession(str(path))
    want = np.concatenate([session.run(None, {"input": s[None]})[0] for s in x])
    np.testing.assert_allclose(sim.run(Config(), x), want, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        got = TorchForm(model, Config(), None)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
