"""Channel-blocked (NCHW16c) convolutions: the layout rewrite, its lowering, and numerical agreement."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm
from tvm import relax

from hanasc.passes import blocked_layout


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
    from hanasc.relax_params import bind_weights
    from hanasc.targets import host

    loaded = hanasc.load_model(test_models["inverted_residual"])
    mod = bind_weights(loaded.mod)
    assert "call_tir" in mod["main"].script()
    blocked = blocked_layout.convert_to_blocked(mod)
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
        relax.transform.LegalizeOps(blocked_layout.legalize_map())(bb.get())
