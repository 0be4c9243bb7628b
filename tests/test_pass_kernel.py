"""ShrinkKernel: the cropped conv with reduced padding equals the zero-ring simulation weight, exactly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tvm import relax

import hanasc
from hanasc.core.relax_params import bind_weights, weights_of
from hanasc.passes.config import Config, ConfigError, LayerChoice
from hanasc.passes.kernel_shrink import ShrinkKernel, crop_kernel, zero_outside_centre
from hanasc.passes.separable import SeparableConv, simulate_separable
from hanasc.passes.weights import weight_values
from hanasc.targets import host

TOL = 1e-4


@dataclass
class ConvSpec:
    name: str
    cout: int
    k: int
    stride: int = 1
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)  # top, left, bottom, right
    depthwise: bool = False
    dilation: int = 1


def conv_chain(path: Path, specs: list[ConvSpec], cin: int = 8, size: int = 16) -> Path:
    """A chain of convs (with bias, ReLU between) built with onnx.helper; node names are the layer names."""
    rng = np.random.default_rng(0)
    nodes, inits, current, channels = [], [], "input", cin
    for spec in specs:
        cout = channels if spec.depthwise else spec.cout
        group = channels if spec.depthwise else 1
        w = rng.standard_normal((cout, channels // group, spec.k, spec.k)).astype(np.float32) * 0.3
        b = rng.standard_normal(cout).astype(np.float32) * 0.1
        inits += [numpy_helper.from_array(w, f"w_{spec.name}"), numpy_helper.from_array(b, f"b_{spec.name}")]
        nodes.append(
            helper.make_node(
                "Conv",
                [current, f"w_{spec.name}", f"b_{spec.name}"],
                [f"{spec.name}_out"],
                name=spec.name,
                kernel_shape=[spec.k, spec.k],
                strides=[spec.stride] * 2,
                pads=list(spec.pads),
                group=group,
                dilations=[spec.dilation] * 2,
            )
        )
        nodes.append(
            helper.make_node("Relu", [f"{spec.name}_out"], [f"{spec.name}_act"], name=f"relu_{spec.name}")
        )
        current, channels = f"{spec.name}_act", cout
    nodes[-1].output[0] = "output"
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, cin, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, channels, size, size])],
        initializer=inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def run_bound(mod, x, weights=None) -> np.ndarray:
    return host.run(host.build(bind_weights(mod, weights)), [x])[0]


def rel_max_diff(got, want) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def test_crop_and_zero_ring():
    w = np.arange(2 * 3 * 5 * 5, dtype=np.float32).reshape(2, 3, 5, 5)
    c = crop_kernel(w, 3)
    assert c.shape == (2, 3, 3, 3) and c.flags.c_contiguous
    np.testing.assert_array_equal(c, w[:, :, 1:4, 1:4])
    np.testing.assert_array_equal(crop_kernel(w, 1)[..., 0, 0], w[..., 2, 2])
    z = zero_outside_centre(w, 3)
    assert z.shape == w.shape
    np.testing.assert_array_equal(z[:, :, 1:4, 1:4], c)
    assert np.count_nonzero(z[:, :, [0, 4], :]) == 0 and np.count_nonzero(z[:, :, :, [0, 4]]) == 0
    np.testing.assert_array_equal(zero_outside_centre(w, 5), w)
    with pytest.raises(ValueError):
        crop_kernel(w, 4)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Like EfficientNet-Lite: 5x5 depthwise stride 2 with asymmetric padding, 5x5 depthwise, a 7x7 conv."""
    path = conv_chain(
        tmp_path_factory.mktemp("kernel") / "chain.onnx",
        [
            ConvSpec("dw_s2", 8, 5, stride=2, pads=(1, 1, 2, 2), depthwise=True),
            ConvSpec("dw", 8, 5, pads=(2, 2, 2, 2), depthwise=True),
            ConvSpec("conv7", 12, 7, pads=(3, 3, 3, 3)),
            ConvSpec("tight", 12, 3, pads=(0, 0, 0, 0)),
            ConvSpec("dilated", 12, 3, pads=(2, 2, 2, 2), dilation=2),
        ],
    )
    return hanasc.load_model(path)


def test_depthwise_and_standard_shrink_equal_simulation(chain):
    kernels = {"dw_s2": 3, "dw": 1, "conv7": 3}
    config = Config(layers={name: LayerChoice(kernel=k) for name, k in kernels.items()})
    new = ShrinkKernel(config)(chain.mod)
    before, after = weight_values(chain.mod["main"]), weight_values(new["main"])
    for name, k in kernels.items():
        assert after[f"{name}.weight"].shape == (*before[f"{name}.weight"].shape[:2], k, k)
    paddings = {
        str(c.args[1].name): [int(p) for p in c.attrs.padding]
        for c in (b.value for b in new["main"].body.blocks[0].bindings)
        if isinstance(c, relax.Call) and c.op.name == "relax.nn.conv2d"
    }
    assert paddings["dw_s2.weight"] == [0, 0, 1, 1] and paddings["dw.weight"] == [0, 0, 0, 0]
    assert paddings["conv7.weight"] == [1, 1, 1, 1]
    removed = sum(before[n].size - after[n].size for n in before)
    assert removed == 8 * (25 - 9) + 8 * (25 - 1) + 12 * 8 * (49 - 9)

    x = chain.example_inputs()["input"]
    simulated = weights_of(chain.mod)
    for name, k in kernels.items():
        simulated[f"{name}.weight"] = zero_outside_centre(simulated[f"{name}.weight"], k)
    materialized, simulation = run_bound(new, x), run_bound(chain.mod, x, simulated)
    original = run_bound(chain.mod, x)
    assert materialized.shape == simulation.shape == original.shape
    assert rel_max_diff(materialized, simulation) <= TOL
    assert rel_max_diff(materialized, original) > 1e-2


def test_plain_conv_5x5_stride2_and_separable_commute(test_models):
    """plain_conv's 5x5 stride-2 conv shrunk to 3x3 and made separable (either pass order) = simulation."""
    loaded = hanasc.load_model(test_models["plain_conv"])
    config = Config(layers={"body.body.3": LayerChoice(kernel=3, separable=True)})
    a = ShrinkKernel(config)(SeparableConv(config)(loaded.mod))
    b = SeparableConv(config)(ShrinkKernel(config)(loaded.mod))
    assert weight_values(a["main"])["body.body.3.dw.weight"].shape == (16, 1, 3, 3)
    x = loaded.example_inputs()["input"]
    simulated = weights_of(loaded.mod)
    w = simulated["body.body.3.weight"]
    simulated["body.body.3.weight"] = simulate_separable(zero_outside_centre(w, 3))
    simulation = run_bound(loaded.mod, x, simulated)
    assert rel_max_diff(run_bound(a, x), simulation) <= TOL
    assert rel_max_diff(run_bound(b, x), simulation) <= TOL


def test_same_size_is_a_no_op(chain):
    new = ShrinkKernel(Config(layers={"dw": LayerChoice(kernel=5)}))(chain.mod)
    assert weight_values(new["main"])["dw.weight"].shape == (8, 1, 5, 5)
    assert new["main"].same_as(chain.mod["main"])


@pytest.mark.parametrize(
    "layer, k, reason",
    [
        ("dw", 7, "larger"),
        ("dw", 2, "odd"),
        ("tight", 1, "padding"),
        ("dilated", 1, "dilation"),
    ],
)
def test_config_errors(chain, layer, k, reason):
    with pytest.raises(ConfigError, match=rf"'{layer}'.*{reason}"):
        ShrinkKernel(Config(layers={layer: LayerChoice(kernel=k)}))(chain.mod)


def test_dense_layer_is_refused(test_models):
    loaded = hanasc.load_model(test_models["dense_head"])
    with pytest.raises(ConfigError, match=r"'fc1'.*dense"):
        ShrinkKernel(Config(layers={"fc1": LayerChoice(kernel=1)}))(loaded.mod)
