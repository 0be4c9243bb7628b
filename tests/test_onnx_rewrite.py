"""Architecture choices written back into ONNX: structure, and onnxruntime == TVM on the Relax module."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import tvm
from tvm import relax

import hanasc
from hanasc.compile.onnx_rewrite import architecture_only, export_architecture
from hanasc.core.relax_params import bind_weights
from hanasc.passes.config import Config, LayerChoice
from hanasc.passes.materialize import materialize
from hanasc.search.space import build_space


def _outputs(model, config: Config, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, object]:
    """(onnxruntime on the exported graph, TVM on the materialized module, exported graph)."""
    exported, renamed = export_architecture(model, config)
    session = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"])
    ort_out = session.run(None, {model.inputs[0].name: x})[0]
    mod = bind_weights(materialize(model.mod, architecture_only(config)))
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    tvm_out = vm["main"](tvm.runtime.tensor(x)).numpy()
    return ort_out, tvm_out, (exported, renamed)


def _input(model, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(model.inputs[0].shape).astype(np.float32)


def _assert_close(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= 1e-4 * max(1.0, float(np.abs(b).max()))


def test_separable_and_kernel_shrink_structure(test_models):
    model = hanasc.load_model(test_models["plain_conv"])
    config = Config(
        {
            "body.body.0": LayerChoice(separable=True, w_bits=8, a_bits=8),
            "body.body.3": LayerChoice(kernel=3, separable=True, width=0.5),
        }
    )
    ort_out, tvm_out, (exported, renamed) = _outputs(model, config, _input(model))
    _assert_close(ort_out, tvm_out)
    nodes = {n.name: n for n in exported.graph.node}
    assert "body.body.0" not in nodes and {"body.body.0.dw", "body.body.0.pw"} <= set(nodes)
    attrs = {a.name: a for a in nodes["body.body.3.dw"].attribute}
    assert list(attrs["kernel_shape"].ints) == [3, 3]
    assert list(attrs["pads"].ints) == [1, 1, 1, 1]
    assert list(attrs["strides"].ints) == [2, 2]
    assert attrs["group"].i == 16
    assert renamed.layers == {
        "body.body.0.dw": LayerChoice(w_bits=8, a_bits=8),
        "body.body.0.pw": LayerChoice(w_bits=8, a_bits=8),
    }
    weights = {i.name: i for i in exported.graph.initializer}
    assert "body.body.0.weight" not in weights
    assert list(weights["body.body.3.pw.weight"].dims) == [16, 16, 1, 1]
    assert list(weights["body.body.6.weight"].dims)[:2] == [32, 16]


def test_skip_block_removes_branch(test_models):
    model = hanasc.load_model(test_models["inverted_residual"])
    config = Config({}, skip=["block.block"])
    ort_out, tvm_out, (exported, _) = _outputs(model, config, _input(model))
    _assert_close(ort_out, tvm_out)
    assert not [n for n in exported.graph.node if n.op_type == "Add"]
    assert not [n for n in exported.graph.node if n.name.startswith("block.block")]


@pytest.mark.parametrize("name", ["inverted_residual", "se_hardswish", "dense_head"])
def test_random_space_samples_match(test_models, name):
    model = hanasc.load_model(test_models[name])
    space = build_space(model)
    rng = np.random.default_rng(1)
    for _ in range(3):
        config = space.decode(space.sample(rng))
        ort_out, tvm_out, _ = _outputs(model, config, _input(model))
        _assert_close(ort_out, tvm_out)


def test_precision_only_config_leaves_graph(test_models):
    model = hanasc.load_model(test_models["plain_conv"])
    config = Config({"body.body.0": LayerChoice(w_bits=8, a_bits=8)})
    exported, renamed = export_architecture(model, config)
    assert exported.SerializeToString() == model.onnx_model.SerializeToString()
    assert renamed is config


@pytest.mark.slow
def test_efficientnet_lite0_random_architectures(effnet_path):
    model = hanasc.load_model(effnet_path)
    space = build_space(model)
    rng = np.random.default_rng(3)
    for _ in range(2):
        config = space.decode(space.sample(rng))
        assert config.skip and any(c.separable for c in config.layers.values())
        ort_out, tvm_out, _ = _outputs(model, config, _input(model))
        _assert_close(ort_out, tvm_out)
