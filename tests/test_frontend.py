"""Frontend: loading, cleaning, the layer table, peak activation memory and the Relax import."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import single_op_model
from onnx import TensorProto, helper

import hanasc
from hanasc.core.layers import peak_activation_bytes
from hanasc.core.relax_params import weights_of
from hanasc.frontend.onnx_loader import parse_input_shape


def test_plain_conv_layer_table(test_models):
    model = hanasc.load_model(test_models["plain_conv"], import_tvm=False)
    assert [layer.op for layer in model.layers] == ["conv", "conv", "conv"]
    first, second, third = model.layers
    assert first.macs == 1 * 16 * 32 * 32 * 3 * 3 * 3
    assert second.kernel == (5, 5) and second.stride == (2, 2)
    assert second.out_shape == (1, 32, 16, 16)
    assert second.macs == 32 * 16 * 16 * 16 * 5 * 5
    # BatchNorm was folded into the convs: every conv has a bias, and no BN node is left
    assert all(layer.bias for layer in model.layers)
    assert "BatchNormalization" not in {n.op_type for n in model.onnx_model.graph.node}
    assert third.params == 32 * 32 * 9 + 32
    assert model.totals.params == sum(layer.params for layer in model.layers)


def test_op_kinds_of_every_test_model(test_models):
    kinds = {
        name: [layer.op for layer in hanasc.load_model(p, import_tvm=False).layers]
        for name, p in test_models.items()
    }
    assert kinds["inverted_residual"] == ["conv", "conv", "depthwise_conv", "conv"]
    assert kinds["se_hardswish"] == ["conv", "conv", "conv", "conv"]
    assert kinds["dense_head"] == ["conv", "dense", "dense"]


def test_dense_layer_macs(test_models):
    model = hanasc.load_model(test_models["dense_head"], import_tvm=False)
    fc1 = model.layers[1]
    assert fc1.macs == 8 * 14 * 14 * 64
    assert fc1.params == 8 * 14 * 14 * 64 + 64


def test_relax_module_has_named_weight_params(test_models):
    model = hanasc.load_model(test_models["inverted_residual"])
    params = [p.name for p in model.mod["main"].params]
    assert params[0] == "input"
    for layer in model.layers:
        assert layer.weight in params
    weights = weights_of(model.mod)
    onnx_weights = model.weights()
    for name, value in onnx_weights.items():
        np.testing.assert_array_equal(weights[name], value)


def test_peak_activation_is_a_liveness_walk_not_a_sum():
    # input[256] -> a=concat(input,input)[512] -> b=relu(a) -> c=relu(b): at most two 512-float tensors live
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node("Concat", ["input", "input"], ["a"], name="cat", axis=0),
        helper.make_node("Relu", ["a"], ["b"], name="relu1"),
        helper.make_node("Relu", ["b"], ["c"], name="relu2"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input", f, [256])],
        [helper.make_tensor_value_info("c", f, [512])],
    )
    model = onnx.shape_inference.infer_shapes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    )
    assert peak_activation_bytes(model) == (512 + 512) * 4
    assert peak_activation_bytes(model) < (256 + 3 * 512) * 4


def test_symbolic_shape_fixed_from_option(tmp_path):
    path = single_op_model("Relu", tmp_path / "relu.onnx")
    model = onnx.load(path)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.save(model, path)
    loaded = hanasc.load_model(path, {"input": (2, 4, 8, 8)})
    assert loaded.inputs[0].shape == (2, 4, 8, 8)


@pytest.mark.parametrize(
    "text,expected", [("x=1x3x224x224", ("x", (1, 3, 224, 224))), ("a.b=4,5", ("a.b", (4, 5)))]
)
def test_parse_input_shape(text, expected):
    assert parse_input_shape(text) == expected


@pytest.mark.parametrize("text", ["x", "x=", "x=1xax2", "=1x2", "x=0x3"])
def test_parse_input_shape_rejects(text):
    with pytest.raises(hanasc.HanascError):
        parse_input_shape(text)
