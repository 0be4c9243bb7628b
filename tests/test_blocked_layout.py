"""Channel-blocked (NCHW16c) convolutions: the layout rewrite, its lowering, and numerical agreement."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import tvm
from torch import nn
from tvm import relax

from hanasc.targets.lowering import blocked_layout, blocked_lowering


def _blocked_convs(script: str) -> int:
    """Blocked convolutions in a printed ``main``: NCHW8c ops, and NCHW16c ones already lowered."""
    return len(re.findall(r'data_layout="NCHW\d+c"', script)) + len(
        re.findall(r"call_tir\((?:cls\.)?conv2d_nchwc", script)
    )


def _conv_module(cin: int, cout: int, k: int, stride: int, groups: int, hw: int = 9):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((cout, cin // groups, k, k)).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, cin, hw, hw), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(w), strides=stride, padding=k // 2, groups=groups))
            out = bb.emit_output(relax.op.clip(y, 0.0, 6.0))
        bb.emit_func_output(out)
    return bb.get()


def _fused_build(mod):
    from hanasc.targets import host, tuning

    target = host.tvm_target()
    with target:
        return tvm.compile(mod, target=target, relax_pipeline=tuning.tuned_pipeline(target, database=False))


@pytest.mark.parametrize(
    "cin,cout,k,stride,groups",
    [(32, 16, 1, 1, 1), (16, 32, 3, 2, 1), (32, 32, 3, 1, 32), (32, 32, 5, 2, 32)],
    ids=["pointwise", "3x3-s2", "depthwise", "depthwise-5x5-s2"],
)
def test_blocked_conv_equals_nchw(cin, cout, k, stride, groups):
    from hanasc.targets import host

    mod = _conv_module(cin, cout, k, stride, groups)
    blocked = blocked_layout.convert_to_blocked(mod)
    script = blocked["main"].script()
    assert _blocked_convs(script) == 1
    assert "R.clip" not in script  # clip became maximum/minimum, which follow the layout
    x = np.random.default_rng(1).standard_normal((1, cin, 9, 9)).astype("float32")
    want = host.run(host.build(mod), [x])[0]
    got = host.run(_fused_build(blocked), [x])[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_channels_not_a_multiple_of_the_block_stay_nchw():
    mod = _conv_module(3, 24, 3, 1, 1)
    script = blocked_layout.convert_to_blocked(mod)["main"].script()
    assert _blocked_convs(script) == 0 and "layout_transform" not in script


@pytest.mark.parametrize("cin,cout,block", [(24, 40, 8), (36, 12, 4), (18, 54, 2)])
def test_smaller_block_for_channels_that_16_does_not_divide(cin, cout, block):
    """Odd channel counts come from width pruning: they still get a block (else naive NCHW loops)."""
    script = blocked_layout.convert_to_blocked(_conv_module(cin, cout, 1, 1, 1))["main"].script()
    assert _blocked_convs(script) == 1 and f"i1 % {block})" in script


def test_int8_blocked_conv_accumulates_in_int32():
    from hanasc.targets import host

    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (32, 16, 3, 3)).astype("int8")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 16, 7, 7), "int8"))
    with bb.function("main", [x]):
        out = bb.emit(relax.op.nn.conv2d(x, relax.const(w), padding=1, out_dtype="int32"))
        bb.emit_func_output(out)
    mod = bb.get()
    data = rng.integers(-127, 128, (1, 16, 7, 7)).astype("int8")
    want = host.run(host.build(mod), [data])[0]
    got = host.run(_fused_build(blocked_layout.convert_to_blocked(mod)), [data])[0]
    assert np.abs(want).max() > 127  # int8 products would have overflowed
    np.testing.assert_array_equal(got, want)


def test_imported_onnx_clip_follows_the_layout(test_models):
    """The ONNX importer lowers Clip to call_tir(maximum/minimum); those become Relax ops."""
    import hanasc
    from hanasc.core.relax_params import bind_weights
    from hanasc.targets import host

    loaded = hanasc.load_model(test_models["inverted_residual"])
    mod = bind_weights(loaded.mod)
    before = mod.script()
    assert "call_tir" in mod["main"].script()
    blocked = blocked_layout.convert_to_blocked(mod, pair_kernels=True)
    assert mod.script() == before  # the caller's module is not edited in place
    script = blocked["main"].script()
    assert not re.search(r"call_tir\((?:cls\.)?(maximum|minimum)", script)
    assert _blocked_convs(script) == 3  # the 1x1s and the depthwise; the RGB stem stays NCHW
    # the block's ReLU6s run blocked: no NCHW round trip between its three convolutions; weight
    # transforms fold away, leaving the stem's output (to the block and to the skip) and the result
    folded = relax.transform.FoldConstant()(blocked)["main"].script()
    assert folded.count("R.layout_transform(") == 3
    x = loaded.example_inputs()["input"]
    want = host.run(host.build(mod), [x])[0]
    got = host.run(_fused_build(blocked), [x])[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_unsupported_blocked_layout_is_refused():
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 2, 8, 8, 16), "float32"))
    w = relax.const(np.zeros((32, 32, 1, 1), "float32"))
    with bb.function("main", [x]):
        out = bb.emit(relax.op.nn.conv2d(x, w, data_layout="NCHW16c", kernel_layout="OIHW"))
        bb.emit_func_output(out)
    with pytest.raises(ValueError, match="unsupported blocked conv2d"):
        relax.transform.LegalizeOps(blocked_lowering.legalize_map())(bb.get())


class _SqueezeExcite(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, channels // 4, 1)
        self.expand = nn.Conv2d(channels // 4, channels, 1)

    def forward(self, x):
        gate = nn.functional.adaptive_avg_pool2d(x, 1)
        return x * nn.functional.hardsigmoid(self.expand(torch.relu(self.reduce(gate))))


class _AngleClassifier(nn.Module):
    """The shape of PP-OCR's text-angle classifier: stem, MaxPool, depthwise + squeeze-excite with
    hard-sigmoid, hardswish, a second MaxPool, a dense head; blocks 16 and 4 both occur."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.Hardswish())
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.depthwise = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.BatchNorm2d(16), nn.ReLU())
        self.se = _SqueezeExcite(16)
        self.pointwise = nn.Sequential(nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.Hardswish())
        self.pool2 = nn.MaxPool2d(2, 2)
        self.fc = nn.Linear(32, 2)

    def forward(self, x):
        y = self.pool2(self.pointwise(self.se(self.depthwise(self.pool(self.stem(x))))))
        return self.fc(y.mean((2, 3)))


@pytest.fixture(scope="module")
def angle_classifier(tmp_path_factory):
    """The issue's failing model in small: non-square 48x192 input, opset 11."""
    path = tmp_path_factory.mktemp("angle") / "angle.onnx"
    torch.manual_seed(0)
    model = _AngleClassifier().eval()
    with torch.no_grad():
        for bn in model.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.2, 0.2)
                bn.running_var.uniform_(0.5, 1.5)
    torch.onnx.export(
        model,
        (torch.randn(1, 3, 48, 192),),
        str(path),
        input_names=["input"],
        output_names=["output"],
        opset_version=11,
        dynamo=False,
    )
    return path


def test_maxpool_between_blocked_convs_compiles_and_matches_onnxruntime(angle_classifier):
    """A MaxPool left in NCHW16c by the first round used to crash the next round's ConvertLayout
    (``InferLayoutPool2d: Unsupported initial layout``): it is lowered between rounds now."""
    import onnxruntime as ort

    import hanasc
    from hanasc.core.relax_params import bind_weights
    from hanasc.targets import host, pipelines

    loaded = hanasc.load_model(angle_classifier)
    report = blocked_layout.LayoutReport()
    blocked = blocked_layout.convert_to_blocked(bind_weights(loaded.mod), report=report)
    assert not report.fell_back, report.summary()
    script = blocked["main"].script()
    assert _blocked_convs(script) == 4  # all but the RGB stem; the SE's 16->4 conv gets block 4
    assert re.search(r"call_tir\((?:cls\.)?max_pool2d", script)  # the blocked pool, lowered in NCHW16c
    x = np.random.default_rng(3).standard_normal((1, 3, 48, 192)).astype("float32")
    with pipelines.collect_build_reports() as builds:
        got = host.run(host.build_artifact(loaded.mod), [x])[0]
    want = ort.InferenceSession(str(angle_classifier)).run(None, {"input": x})[0]
    assert np.abs(want).max() > 0.01
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    (build,) = builds
    assert not build.rebuilds and not build.layout_fell_back
    # every kernel has a default schedule now (the padded NCHW max pool by ChannelBlockReduction along
    # its rows, the dense head by RowMatmul, the squeeze-excite means): none counted as naive
    assert build.fallback_kernels == len(build.naive) == 0
    assert f"{build.fallback_kernels} of {build.kernels} kernels" in build.line()


def _pooled_blocked_module():
    """A max_pool2d already in NCHW16c (5-D input) feeding an NCHW conv with 8 output channels: TVM's
    pool layout rule rejects 5-D inputs, so ConvertLayout raises on this module."""
    w = relax.const(np.random.default_rng(0).standard_normal((8, 16, 3, 3)).astype("float32"))
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 1, 8, 8, 16), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            pooled = bb.emit(relax.op.nn.max_pool2d(x, 3, 1, 1, layout="NCHW16c"))
            nchw = bb.emit(relax.op.layout_transform(pooled, lambda n, c, h, w_, b: (n, c * 16 + b, h, w_)))
            out = bb.emit_output(relax.op.nn.conv2d(nchw, w, padding=1))
        bb.emit_func_output(out)
    return bb.get()


def test_op_without_a_layout_rule_stays_nchw_and_is_reported():
    from hanasc.targets import host

    mod = _pooled_blocked_module()
    with pytest.raises(Exception, match="Unsupported initial layout"):
        relax.transform.ConvertLayout({"relax.nn.conv2d": ["NCHW8c", "OIHW1i8o"]})(mod)
    report = blocked_layout.LayoutReport()
    blocked = blocked_layout.convert_to_blocked(mod, report=report)
    assert report.kept_nchw == {"relax.nn.max_pool2d": 1} and not report.skipped_blocks
    assert "Unsupported initial layout" in report.errors[0]
    assert "1 nn.max_pool2d kept NCHW" in report.summary()
    assert _blocked_convs(blocked["main"].script()) == 1  # the conv after it still runs blocked
    x = np.random.default_rng(1).standard_normal((1, 1, 8, 8, 16)).astype("float32")
    want = host.run(host.build(mod), [x])[0]
    np.testing.assert_allclose(host.run(_fused_build(blocked), [x])[0], want, rtol=1e-5, atol=1e-5)


def test_failed_blocked_build_is_redone_in_nchw(monkeypatch, test_models):
    """Whatever breaks the blocked build, the library is built in NCHW instead and the rebuild reported."""
    import hanasc
    from hanasc.targets import host, pipelines

    def broken(*_args, **_kwargs):
        raise tvm.error.InternalError("Check failed: no rule for this op")

    loaded = hanasc.load_model(test_models["se_hardswish"])
    x = loaded.example_inputs()["input"]
    want = host.run(host.build_artifact(loaded.mod), [x])[0]
    monkeypatch.setattr(blocked_layout, "convert_to_blocked", broken)
    with pipelines.collect_build_reports() as builds:
        got = host.run(host.build_artifact(loaded.mod), [x])[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    (build,) = builds
    assert len(build.rebuilds) == 1 and "no rule for this op" in build.rebuilds[0]
    assert "whole module NCHW" in build.line()
