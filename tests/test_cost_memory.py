"""Memory model against the real artifact: .so size and peak RSS of a process running it."""

from __future__ import annotations

import numpy as np
import pytest


def _big_module():
    """conv 16->16 3x3 on 1x16x256x256 (4 MiB activations) then a 1 MiB weight conv: easy to see in RSS."""
    from tvm import relax

    rng = np.random.default_rng(0)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 16, 256, 256), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            w1 = relax.const(rng.standard_normal((16, 16, 3, 3)).astype("float32"))
            y = bb.emit(relax.op.nn.relu(relax.op.nn.conv2d(x, w1, padding=1)))
            w2 = relax.const(rng.standard_normal((16, 16, 32, 32)).astype("float32"))
            y = bb.emit(relax.op.nn.conv2d(y, w2, strides=32))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    return bb.get()


def test_weights_are_counted_at_their_dtype(test_models):
    import hanasc
    from hanasc.core.relax_params import bind_weights
    from hanasc.cost_models.memory import weight_bytes

    loaded = hanasc.load_model(test_models["plain_conv"])
    expected = 4 * (16 * 3 * 9 + 16 + 32 * 16 * 25 + 32 + 32 * 32 * 9 + 32)
    assert sum(weight_bytes(loaded.mod).values()) == expected  # weights as parameters
    assert sum(weight_bytes(bind_weights(loaded.mod)).values()) == expected  # weights bound
    from hanasc.cost_models.sweep import LayerShape, layer_module

    int8 = weight_bytes(layer_module(LayerShape(8, 16, 8, 8, 3, dtype="int8")))
    assert int8["int8"] == 16 * 8 * 9


def test_memory_estimate_matches_artifact():
    from hanasc.cost_models.kernels import lower_to_kernels
    from hanasc.cost_models.memory import check_artifact, estimate_memory

    mod = _big_module()
    est = estimate_memory(mod, lower_to_kernels(mod), "host")
    act = 16 * 256 * 256 * 4
    assert est.weight_bytes == 4 * (16 * 16 * 9 + 16 * 16 * 32 * 32)
    # the shipped (channel-blocked) build holds the input, its blocked copy and the conv output at once
    assert est.activation_peak_bytes == pytest.approx(act * 3, abs=64 * 1024)
    art = check_artifact(mod)
    assert art.so_bytes >= est.weight_bytes  # the constants are inside the library
    needed = est.activation_peak_bytes + est.weight_bytes
    # the process really holds what the model says; RSS adds code pages and allocator slack, no more
    assert 0.8 * needed <= art.rss_delta_bytes <= 3 * (needed + est.workspace_bytes) + (16 << 20)


def test_int8_workspace_is_what_the_scheduled_kernels_allocate(test_models):
    """The workspace counts the buffers a kernel keeps once scheduled (pads), not every fused stage of the
    unscheduled kernel (an int8 conv's int32 sums, casts and requantization, each full size): a W8A8 model
    then needs less memory than its fp32 original, as its artifact does."""
    import hanasc
    from hanasc.cost_models.kernels import lower_for_costs
    from hanasc.cost_models.memory import estimate_memory
    from hanasc.frontend.calibration import calibrate
    from hanasc.passes.config import Config, LayerChoice
    from hanasc.recovery.bias_correction import materialize_recovered

    model = hanasc.load_model(test_models["inverted_residual"])
    rng = np.random.default_rng(0)
    ranges = calibrate(model, rng.standard_normal((4, *model.inputs[0].shape[1:])).astype("float32"))
    w8a8 = Config(layers={layer.name: LayerChoice(w_bits=8, a_bits=8) for layer in model.layers})
    estimates = {}
    for name, config in (("fp32", Config()), ("w8a8", w8a8)):
        mod = materialize_recovered(model, config, ranges)
        lowered = lower_for_costs(mod, "host", "shipped")
        estimates[name] = estimate_memory(mod, lowered, "host")
        unscheduled = max(k.features.scratch_bytes for k in lowered.kernels)
        assert estimates[name].workspace_bytes < unscheduled
    assert estimates["w8a8"].total_bytes < estimates["fp32"].total_bytes
