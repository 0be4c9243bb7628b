"""The imported Relax module, compiled by TVM for the host, matches onnxruntime on the original ONNX."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import hanasc
from hanasc.core.relax_params import bind_weights
from hanasc.targets import host

RTOL = 1e-4


def assert_matches_onnxruntime(path, loaded) -> None:
    inputs = loaded.example_inputs(seed=1)
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, inputs)
    outputs = host.run(host.build(bind_weights(loaded.mod)), list(inputs.values()))
    assert len(outputs) == len(reference)
    for got, want in zip(outputs, reference, strict=True):
        assert got.shape == want.shape
        # relative to the output's scale: elementwise rtol is meaningless for values near zero
        assert np.abs(got - want).max() <= RTOL * np.abs(want).max(), np.abs(got - want).max()


@pytest.mark.parametrize("name", ["plain_conv", "inverted_residual", "se_hardswish", "dense_head"])
def test_tvm_matches_onnxruntime(test_models, name):
    assert_matches_onnxruntime(test_models[name], hanasc.load_model(test_models[name]))


def test_weights_as_runtime_inputs_match_bound(test_models):
    """The compile-once form main(input, *weights) gives the same result as bound weights."""
    from hanasc.core.relax_params import weights_of

    loaded = hanasc.load_model(test_models["inverted_residual"])
    x = loaded.example_inputs()["input"]
    bound = host.run(host.build(bind_weights(loaded.mod)), [x])[0]
    free = host.run(host.build(loaded.mod), [x, *weights_of(loaded.mod).values()])[0]
    np.testing.assert_allclose(free, bound, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_efficientnet_lite0_matches_onnxruntime(effnet_path):
    assert_matches_onnxruntime(effnet_path, hanasc.load_model(effnet_path))
