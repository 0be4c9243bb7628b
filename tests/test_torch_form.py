"""The trainable torch form agrees with the simulator (and so with the materialized model) for every
choice kind, and its gradients reach the weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_simulator import CASES, INTEGER_CASES, assert_agree, calibration, materialized_outputs

import hanasc
from hanasc.passes.config import Config, LayerChoice
from hanasc.recovery.bias_correction import recovered_weights
from hanasc.recovery.torch_form import TorchForm
from hanasc.search.simulator import Simulator


@pytest.fixture(scope="module")
def residual_model(test_models):
    return hanasc.load_model(test_models["inverted_residual"])


@pytest.fixture(scope="module")
def samples(residual_model):
    rng = np.random.default_rng(3)
    return rng.standard_normal((6, *residual_model.inputs[0].shape[1:])).astype(np.float32)


def torch_outputs(model, config, ranges, values, x) -> np.ndarray:
    form = TorchForm(model, config, ranges, values)
    with torch.no_grad():
        return form(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("case", sorted(CASES))
def test_three_forms_agree(case, residual_model, samples):
    """Relax pass (materialized), simulation and torch form give the same outputs."""
    config = CASES[case](residual_model)
    ranges = calibration(residual_model, samples)
    values = recovered_weights(residual_model, config, ranges)
    form = torch_outputs(residual_model, config, ranges, values, samples)
    sim = Simulator(residual_model, batch=3).run(config, samples, ranges)
    assert_agree(form, sim, integer=case in INTEGER_CASES)
    if case in ("combined", "skip", "w4a8"):  # the shipped form too (the simulator's own test covers all)
        assert_agree(form, materialized_outputs(residual_model, config, ranges, samples), integer=True)


def test_kernel_shrink_and_dense_head(test_models):
    for name, layer_index, choice in (
        ("plain_conv", 1, LayerChoice(kernel=3)),
        ("dense_head", -1, LayerChoice(w_bits=8, a_bits=8)),
        ("se_hardswish", 0, LayerChoice(w_bits=16, a_bits=16)),
    ):
        model = hanasc.load_model(test_models[name])
        x = np.random.default_rng(0).standard_normal((4, *model.inputs[0].shape[1:])).astype(np.float32)
        ranges = calibration(model, x)
        config = Config({model.layers[layer_index].name: choice})
        sim = Simulator(model, batch=4).run(config, x, ranges)
        values = recovered_weights(model, config, ranges)
        assert_agree(torch_outputs(model, config, ranges, values, x), sim, integer=choice.a_bits == 8)


def test_gradients_pass_straight_through_quantization(residual_model, samples):
    config = CASES["w4a8"](residual_model)
    ranges = calibration(residual_model, samples)
    form = TorchForm(residual_model, config, ranges)
    form(torch.from_numpy(samples)).square().mean().backward()
    grads = [p.grad for p in form.params]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_an_operator_without_torch_form_is_refused_in_one_line(test_models):
    """--finetune-minutes on a model with an operator the torch form lacks: a HanascError naming the node."""
    import onnx
    from onnx import TensorProto, helper

    from hanasc.compile.finetune_stage import check_finetune
    from hanasc.core.errors import HanascError
    from hanasc.recovery.torch_ops import unsupported_nodes
    from hanasc.targets.registry import get_target

    model = hanasc.load_model(test_models["plain_conv"])
    assert unsupported_nodes(model.onnx_model.graph) == []
    graph = onnx.ModelProto()
    graph.CopyFrom(model.onnx_model)
    out = graph.graph.output[0].name
    graph.graph.node.append(helper.make_node("LRN", [out], ["lrn_out"], name="odd_lrn", size=3))
    graph.graph.output[0].CopyFrom(helper.make_tensor_value_info("lrn_out", TensorProto.FLOAT, None))

    class Loaded:
        path, onnx_model = model.path, graph

    with pytest.raises(HanascError, match="node 'odd_lrn': operator LRN has no torch form"):
        check_finetune(get_target("host"), Loaded, 1.0)
    check_finetune(get_target("host"), Loaded, 0.0)  # no fine-tuning asked: nothing to check
