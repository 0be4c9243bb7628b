"""Per-layer quantization: numpy reference, packing, calibration, materialized vs fake vs ORT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper
from torch import nn

import hanasc
from hanasc.core.relax_params import bind_weights
from hanasc.frontend.calibration import ActivationRanges, CalibrationError, calibrate
from hanasc.passes.config import Config, ConfigError, LayerChoice
from hanasc.passes.packing import pack_bits, packed_size, unpack_bits
from hanasc.passes.quant_reference import (
    QMAX,
    QMIN,
    activation_scale,
    fake_quantize_activation,
    fake_quantize_weight,
    quantize_weight,
    weight_channel_axes,
)
from hanasc.passes.quantize import FakeQuantizeLayers, QuantizeLayers, parameter_bytes, plan_weight
from hanasc.passes.weights import weight_values
from hanasc.targets import host

COMBOS = [(16, 32), (16, 16), (8, 32), (4, 32), (2, 32), (8, 8), (4, 8), (2, 8), (32, 16)]


class Separable(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 3, padding=1, groups=cin)
        self.pw = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class TinyNet(nn.Module):
    """conv, depthwise conv, a depthwise-separable pair named like the separable pass names it, dense."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.dwconv = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.sep = Separable(8, 16)
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.stem(x))
        y = torch.clamp(self.dwconv(y), 0.0, 6.0)
        y = torch.relu(self.sep(y))
        return self.fc(nn.functional.avg_pool2d(y, 4).flatten(1))


SHAPE = (1, 3, 16, 16)
LAYERS = ("stem", "dwconv", "sep", "fc")  # "sep" owns sep.dw.weight and sep.pw.weight


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    model = TinyNet().eval()
    path = Path(tmp_path_factory.mktemp("quant")) / "tiny.onnx"
    torch.onnx.export(
        model,
        (torch.randn(SHAPE),),
        str(path),
        input_names=["input"],
        output_names=["output"],
        opset_version=17,
        dynamo=False,
    )
    return model, path, hanasc.load_model(path)


def samples(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(SHAPE).astype(np.float32) for _ in range(n)]


@pytest.fixture(scope="module")
def tiny_ranges(tiny):
    _, _, loaded = tiny
    ranges = calibrate(loaded, samples(4))
    ranges.ranges["sep"] = ranges.ranges["sep.dw"]  # the separable layer's input is the dw conv's input
    return ranges


def run_mod(mod, x: np.ndarray) -> np.ndarray:
    return host.run(host.build(bind_weights(mod)), [x])[0]


def onnx_reference(loaded, config: Config, ranges: ActivationRanges, x: np.ndarray) -> np.ndarray:
    """onnxruntime on the cleaned ONNX with fake-quantized weights and Div/Round/Clip/Mul or Cast inputs."""
    model = onnx.ModelProto.FromString(loaded.onnx_model.SerializeToString())
    inits = {init.name: init for init in model.graph.initializer}
    axes = weight_channel_axes(model)
    nodes = []
    for node in model.graph.node:
        plan = plan_weight(node.input[1], config) if node.op_type in ("Conv", "Gemm") else None
        if plan is not None:
            w = fake_quantize_weight(
                numpy_helper.to_array(inits[node.input[1]]), plan.w_bits, axes[node.input[1]]
            )
            if plan.compute == "float16":
                w = w.astype(np.float16).astype(np.float32)
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(w, node.input[1]))
            x_in, p = node.input[0], f"{node.name}_q"
            if plan.compute == "int8":
                s = activation_scale(*ranges[plan.layer])
                for name, value in ((f"{p}_s", s), (f"{p}_lo", float(QMIN)), (f"{p}_hi", float(QMAX))):
                    model.graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), name))
                nodes += [
                    helper.make_node("Div", [x_in, f"{p}_s"], [f"{p}_d"]),
                    helper.make_node("Round", [f"{p}_d"], [f"{p}_r"]),
                    helper.make_node("Clip", [f"{p}_r", f"{p}_lo", f"{p}_hi"], [f"{p}_c"]),
                    helper.make_node("Mul", [f"{p}_c", f"{p}_s"], [f"{p}_x"]),
                ]
                node.input[0] = f"{p}_x"
            elif plan.compute == "float16":
                nodes += [
                    helper.make_node("Cast", [x_in], [f"{p}_h"], to=onnx.TensorProto.FLOAT16),
                    helper.make_node("Cast", [f"{p}_h"], [f"{p}_x"], to=onnx.TensorProto.FLOAT),
                ]
                node.input[0] = f"{p}_x"
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def uniform(w_bits: int, a_bits: int, layers=LAYERS) -> Config:
    return Config(layers={name: LayerChoice(w_bits=w_bits, a_bits=a_bits) for name in layers})


# ------------------------------------------------------------------------------------------- numpy reference


@pytest.mark.parametrize("bits,qmax", [(8, 127), (4, 7), (2, 1)])
def test_quantize_weight_is_symmetric_per_channel(bits, qmax):
    rng = np.random.default_rng(0)
    w = (
        rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
        * np.arange(1, 7, dtype=np.float32)[:, None, None, None]
    )
    w[2] = 0.0  # an all-zero channel must not divide by zero
    q, scale = quantize_weight(w, bits)
    assert q.dtype == np.int8 and scale.dtype == np.float32 and scale.shape == (6,)
    assert np.abs(q).max() == qmax and q[2].max() == 0 and q[2].min() == 0 and scale[2] == 1.0
    err = np.abs(fake_quantize_weight(w, bits) - w)
    step = scale[:, None, None, None]
    for c in (0, 1, 3, 4, 5):
        assert np.abs(q[c]).max() == qmax  # the largest weight of each channel maps to qmax
        if bits == 8:  # max-abs scale
            np.testing.assert_allclose(scale[c], np.abs(w[c]).max() / qmax, rtol=1e-6)
        else:  # clipped by least error: never a wider step than max-abs
            assert scale[c] <= np.abs(w[c]).max() / qmax * (1 + 1e-6)
    inside = np.abs(w) <= step * qmax
    assert np.all((err <= step / 2 + 1e-6) | ~inside)  # at most half a step where not clipped
    if bits == 8:
        assert inside.all()


def test_fake_quantize_weight_float_choices_and_axis():
    w = np.random.default_rng(1).standard_normal((5, 7)).astype(np.float32)
    np.testing.assert_array_equal(fake_quantize_weight(w, 32), w)
    np.testing.assert_array_equal(fake_quantize_weight(w, 16), w.astype(np.float16).astype(np.float32))
    assert not np.array_equal(fake_quantize_weight(w, 16), w)
    q, scale = quantize_weight(w, 8, axis=1)  # (K, N) matmul weights: channels on the last axis
    assert scale.shape == (7,) and np.abs(q).max(axis=0).tolist() == [127] * 7


def test_activation_fake_quantization():
    assert activation_scale(-2.0, 1.0) == pytest.approx(2.0 / QMAX) and activation_scale(0.0, 0.0) == 1.0
    s = activation_scale(-1.0, 1.0)
    x = np.array([-5.0, -1.0, -0.3, 0.0, 0.5 * s, 1.5 * s, 0.3, 1.0, 5.0], np.float32)
    got = fake_quantize_activation(x, s)
    codes = np.round(got / np.float32(s))
    assert codes.tolist() == [-127, -127, np.round(-0.3 / s), 0, 0, 2, np.round(0.3 / s), 127, 127]


@pytest.mark.parametrize("bits", [4, 2])
def test_packing_round_trip(bits):
    half = 2 ** (bits - 1)
    q = (
        np.random.default_rng(0).integers(-half, half, size=(5, 3, 3, 3)).astype(np.int8)
    )  # 135: not a multiple
    packed = pack_bits(q, bits)
    assert packed.dtype == np.uint8 and packed.size == packed_size(q.size, bits) == -(-q.size * bits // 8)
    np.testing.assert_array_equal(unpack_bits(packed, bits, q.shape), q)
    with pytest.raises(ValueError):
        pack_bits(np.array([half], np.int8), bits)


# --------------------------------------------------------------------------------------------- calibration


def test_calibration_matches_torch_hooks(tiny):
    model, _, loaded = tiny
    data = samples(3, seed=5)
    seen: dict[str, list[np.ndarray]] = {}
    modules = {
        "stem": model.stem,
        "dwconv": model.dwconv,
        "sep.dw": model.sep.dw,
        "sep.pw": model.sep.pw,
        "fc": model.fc,
    }
    hooks = [
        m.register_forward_pre_hook(
            lambda _m, args, name=name: seen.setdefault(name, []).append(args[0].numpy())
        )
        for name, m in modules.items()
    ]
    with torch.no_grad():
        for x in data:
            model(torch.from_numpy(x))
    for h in hooks:
        h.remove()
    batch = np.concatenate(data)  # one batch of 3 for a batch-1 model: calibrate splits it
    ranges = calibrate(loaded, [batch])
    assert ranges.samples == 3 and ranges.method == "minmax" and set(ranges.ranges) == set(modules)
    for name, xs in seen.items():
        lo, hi = ranges[name]
        assert lo == pytest.approx(min(x.min() for x in xs), abs=1e-5)
        assert hi == pytest.approx(max(x.max() for x in xs), abs=1e-5)
    pct = calibrate(loaded, data, method="percentile", percentile=99.0)
    for name, xs in seen.items():
        want_hi = np.mean([np.percentile(x, 99.0) for x in xs])
        assert pct[name][1] == pytest.approx(want_hi, rel=1e-4, abs=1e-5)
        assert ranges[name][0] <= pct[name][0] <= pct[name][1] <= ranges[name][1]
    again = ActivationRanges.from_json(pct.to_json())
    assert again == pct


def test_calibration_rejects_bad_data(tiny):
    _, _, loaded = tiny
    with pytest.raises(CalibrationError, match="input 'input' has shape"):
        calibrate(loaded, [np.zeros((1, 3, 8, 8), np.float32)])
    with pytest.raises(CalibrationError, match="no samples"):
        calibrate(loaded, [])
    with pytest.raises(CalibrationError, match="unknown method"):
        calibrate(loaded, samples(1), method="kl")


# ---------------------------------------------------------------------------------------------- the passes


@pytest.mark.parametrize("w_bits,a_bits", COMBOS)
def test_materialized_matches_fake_and_onnxruntime(tiny, tiny_ranges, w_bits, a_bits):
    _, _, loaded = tiny
    config = uniform(w_bits, a_bits)
    x = samples(1, seed=9)[0]
    real_mod = QuantizeLayers(config, tiny_ranges)(loaded.mod)
    real = run_mod(real_mod, x)
    fake = run_mod(FakeQuantizeLayers(config, tiny_ranges)(loaded.mod), x)
    want = onnx_reference(loaded, config, tiny_ranges, x)
    fp32 = onnx_reference(loaded, Config(), tiny_ranges, x)
    scale = np.abs(want).max()
    # Same roundings everywhere, only float summation order differs (measured <= 4e-7 of the output scale).
    # The tolerance is 8x below the smallest effect of any choice (fp16: 1.7e-4), so a choice that was not
    # applied, or applied differently, fails.
    tol = 2e-5 * scale
    assert np.abs(fake - want).max() <= tol
    assert np.abs(real - fake).max() <= tol
    assert np.abs(real - fp32).max() > 5 * tol  # the choice really changed the numbers
    stored = {name: v.dtype for name, v in weight_values(real_mod["main"]).items()}
    expect = {8: np.int8, 4: np.uint8, 2: np.uint8}.get(w_bits, np.float16)
    assert stored["stem.weight"] == expect and stored["fc.weight"] == expect
    assert stored["stem.bias"] == np.float32


def test_separable_layer_quantizes_only_the_dw_input(tiny, tiny_ranges):
    config = uniform(4, 8, layers=("sep",))
    assert plan_weight("sep.dw.weight", config).compute == "int8"
    pw = plan_weight("sep.pw.weight", config)
    assert (pw.w_bits, pw.a_bits, pw.compute) == (4, 32, "float32")
    assert plan_weight("sep.pw.weight", uniform(32, 16, layers=("sep",))) is None
    _, _, loaded = tiny
    text = QuantizeLayers(config, tiny_ranges)(loaded.mod)["main"].script()
    assert text.count('out_dtype="int32"') == 1  # the dw conv only
    assert 'dtype="int32"' in text and text.count("right_shift") == 2 * 2  # two 4-bit unpacks, two slots each


def test_mixed_per_layer_config(tiny, tiny_ranges):
    _, _, loaded = tiny
    config = Config(
        layers={
            "stem": LayerChoice(w_bits=8, a_bits=8),
            "dwconv": LayerChoice(w_bits=16, a_bits=16),
            "sep": LayerChoice(w_bits=2, a_bits=32),
            "fc": LayerChoice(w_bits=4, a_bits=8),
        }
    )
    x = samples(1, seed=3)[0]
    real = run_mod(QuantizeLayers(config, tiny_ranges)(loaded.mod), x)
    want = onnx_reference(loaded, config, tiny_ranges, x)
    assert np.abs(real - want).max() <= 2e-5 * np.abs(want).max()


def test_dense_head_packed_weight_bytes(test_models):
    loaded = hanasc.load_model(test_models["dense_head"])
    names = [layer.name for layer in loaded.layers]
    sizes = {}
    for bits in (8, 4, 2):
        values = weight_values(QuantizeLayers(uniform(bits, 32, names))(loaded.mod)["main"])
        sizes[bits] = values["fc1.weight"].nbytes
        assert values["fc1.weight.scale"].shape == (64,)
    n = 64 * 1568
    assert sizes == {8: n, 4: n // 2, 2: n // 4}
    assert (
        parameter_bytes(QuantizeLayers(uniform(8, 32, names))(loaded.mod)["main"])
        < parameter_bytes(loaded.mod["main"]) / 3.5
    )


def test_identity_config_and_rerun_change_nothing(tiny, tiny_ranges):
    import tvm

    _, _, loaded = tiny
    for config in (Config(), Config(layers={"stem": LayerChoice(width=0.5)})):
        tvm.ir.assert_structural_equal(QuantizeLayers(config, tiny_ranges)(loaded.mod), loaded.mod)
        tvm.ir.assert_structural_equal(FakeQuantizeLayers(config, tiny_ranges)(loaded.mod), loaded.mod)
    once = QuantizeLayers(uniform(4, 8), tiny_ranges)(loaded.mod)
    tvm.ir.assert_structural_equal(QuantizeLayers(uniform(4, 8), tiny_ranges)(once), once)


@pytest.mark.parametrize(
    "choices,ranges,message",
    [
        ({"stem": LayerChoice(w_bits=8, a_bits=8)}, {}, "layer 'stem': a_bits=8 needs a calibrated"),
        ({"nope": LayerChoice(w_bits=8)}, None, "layer 'nope': no such layer"),
        (
            {"fc": LayerChoice(w_bits=16, a_bits=8)},
            {"fc": (-1.0, 1.0)},
            "layer 'fc': a_bits=8 needs w_bits <= 8",
        ),
        ({"stem": LayerChoice(w_bits=3)}, None, "layer 'stem': w_bits=3"),
    ],
)
def test_config_errors(tiny, choices, ranges, message):
    _, _, loaded = tiny
    for pass_cls in (QuantizeLayers, FakeQuantizeLayers):
        with pytest.raises(ConfigError, match=message):
            pass_cls(Config(layers=choices), ranges)(loaded.mod)


# ------------------------------------------------------------------------------------ EfficientNet-Lite0


@pytest.mark.slow
def test_efficientnet_lite0_uniform_int8(effnet_path):
    loaded = hanasc.load_model(effnet_path)
    rng = np.random.default_rng(0)
    # smooth random images (low-frequency noise, upsampled): closer to photos than white noise
    inputs = [
        np.repeat(np.repeat(rng.standard_normal((1, 3, 14, 14)), 16, axis=2), 16, axis=3).astype(np.float32)
        for _ in range(4)
    ]
    ranges = calibrate(loaded, inputs)
    config = uniform(8, 8, [layer.name for layer in loaded.layers])
    quantized = QuantizeLayers(config, ranges)(loaded.mod)
    fp32_bytes, int8_bytes = parameter_bytes(loaded.mod["main"]), parameter_bytes(quantized["main"])
    assert 0.24 < int8_bytes / fp32_bytes < 0.28
    text = quantized["main"].script()
    assert text.count('out_dtype="int32"') == len(loaded.layers)
    exe = host.build(bind_weights(quantized))
    ref = ort.InferenceSession(str(effnet_path), providers=["CPUExecutionProvider"])
    for x in inputs:
        got = host.run(exe, [x])[0]
        want = ref.run(None, {loaded.inputs[0].name: x})[0]
        # random images give near-ties between classes: int8's pick must be fp32's top class or one the
        # fp32 model scores within 0.1 of it (measured: margins 0.03-0.17, int8 error ~0.01)
        assert want[0, got.argmax()] >= want.max() - 0.1
        cos = float((got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want))
        assert cos > 0.95
