"""Kernel features of lowered models: FLOPs of a known conv, op kinds, calls, signatures."""

from __future__ import annotations

import pytest

from hanasc.cost_models.kernels import FEATURE_NAMES, feature_vector, lower_to_kernels


@pytest.fixture(scope="module")
def lowered(test_models):
    import hanasc
    from hanasc.core.relax_params import bind_weights

    return {
        name: lower_to_kernels(bind_weights(hanasc.load_model(test_models[name]).mod))
        for name in ("plain_conv", "inverted_residual", "dense_head")
    }


def test_flops_of_a_known_conv(lowered):
    first = lowered["plain_conv"].kernels[0]
    f = first.features
    assert f.op_kind == "conv2d" and f.kernel_size == (3, 3) and f.stride == 1 and f.groups == 1
    assert f.weight.shape == (16, 3, 3, 3)
    macs = 16 * 32 * 32 * 3 * 3 * 3
    assert f.anchor_macs == macs
    assert f.flops == 2 * macs + 2 * 16 * 32 * 32  # conv + fused bias add + relu
    assert f.bytes_moved == 4 * (3 * 32 * 32 + 16 * 3 * 3 * 3 + 16 + 16 * 32 * 32)
    strided = lowered["plain_conv"].kernels[1].features
    assert strided.kernel_size == (5, 5) and strided.stride == 2 and strided.output.shape == (1, 32, 16, 16)


def test_kinds_calls_and_order(lowered):
    kinds = [k.features.op_kind for k in lowered["inverted_residual"].kernels]
    assert kinds == ["conv2d", "conv2d", "depthwise", "conv2d"]
    dw = lowered["inverted_residual"].kernels[2].features
    assert dw.groups == 64 and dw.compute_dtype == "float32" and dw.weight_bits == 32
    dense = [k for k in lowered["dense_head"].kernels if k.features.op_kind == "dense"]
    assert len(dense) == 2 and dense[0].features.weight.shape in ((1568, 64), (64, 1568))
    for lm in lowered.values():
        assert lm.total_calls == sum(k.calls for k in lm.kernels) == len(lm.call_order)
        assert all(len(feature_vector(k.features)) == len(FEATURE_NAMES) for k in lm.kernels)


def test_signature_is_stable_and_target_specific(test_models, lowered):
    import hanasc
    from hanasc.core.relax_params import bind_weights

    mod = bind_weights(hanasc.load_model(test_models["plain_conv"]).mod)
    again = lower_to_kernels(mod)
    assert [k.signature for k in again.kernels] == [k.signature for k in lowered["plain_conv"].kernels]
    a78 = lower_to_kernels(mod, "cortex-a78")
    assert {k.signature for k in a78.kernels}.isdisjoint({k.signature for k in again.kernels})


def test_int8_and_fp16_sweep_kernels():
    from hanasc.cost_models.sweep import LayerShape, layer_module

    int8 = lower_to_kernels(layer_module(LayerShape(8, 16, 8, 8, 3, 2, dtype="int8"))).kernels[0].features
    assert int8.compute_dtype == "int8" and int8.weight_bits == 8 and int8.stride == 2
    fp16 = lower_to_kernels(layer_module(LayerShape(8, 8, 8, 8, 3, groups=8, dtype="float16"))).kernels[0]
    assert fp16.features.op_kind == "depthwise" and fp16.features.weight_bits == 16
