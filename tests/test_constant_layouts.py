"""Layout ops and element-wise arithmetic on constants folded in numpy before legalization
(:mod:`hanasc.targets.lowering.constant_layouts`): what it folds, what it leaves, and builds that do not
change."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import relax

import hanasc
from hanasc.frontend.calibration import calibrate
from hanasc.passes.config import Config, LayerChoice
from hanasc.recovery.bias_correction import materialize_recovered
from hanasc.targets import host, pipelines
from hanasc.targets.late_binding import compile_late_bound
from hanasc.targets.lowering.constant_layouts import fold_constant_layouts


def _ops(mod) -> list[str]:
    return [
        b.value.op.name
        for block in mod["main"].body.blocks
        for b in block.bindings
        if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op)
    ]


def _module(x_shape=(1, 32, 4, 4)):
    """A graph computing on constants the way a blocked, quantized build does: a weight blocked by a
    layout_transform, a scale reshaped and multiplied by another, a bias transposed, then used with the
    input; plus a float -> int8 cast of a constant (overflow possible: left alone)."""
    rng = np.random.default_rng(0)
    weight = relax.const(rng.standard_normal((32, 4, 4)).astype("float32"))
    scale = relax.const(rng.random(32).astype("float32"))
    other = relax.const(np.float32(0.0173))
    codes = relax.const(rng.uniform(-300, 300, (32,)).astype("float32"))
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(x_shape, "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            index_map = tvm.tirx.IndexMap.from_func(lambda c, h, w: (c // 16, h, w, c % 16), ndim=3)
            blocked = bb.emit(relax.op.layout_transform(weight, index_map))
            back = bb.emit(relax.op.reshape(relax.op.permute_dims(blocked, [0, 3, 1, 2]), (32, 4, 4)))
            scales = bb.emit(relax.op.multiply(relax.op.reshape(scale, (32, 1, 1)), other))
            cast = bb.emit(relax.op.astype(codes, "int8"))
            y = bb.emit(relax.op.add(relax.op.multiply(x, back), scales))
            wide = relax.op.reshape(relax.op.astype(cast, "float32"), (32, 1, 1))
            out = bb.emit_output(relax.op.add(y, wide))
        bb.emit_func_output(out)
    return bb.get()


def test_constant_layout_and_scale_ops_fold_and_equal_tvm():
    mod = _module()
    folded = fold_constant_layouts(mod)
    ops = _ops(folded)
    assert not {"relax.layout_transform", "relax.permute_dims"} & set(ops), ops
    assert ops.count("relax.multiply") == 1 and ops.count("relax.astype") == 2, ops  # x * w; the int8 cast
    x = np.random.default_rng(1).standard_normal((1, 32, 4, 4)).astype(np.float32)

    def run(m):  # TVM's own default pipeline: its FoldConstant computes what was not folded here
        vm = relax.VirtualMachine(tvm.compile(m, target="llvm"), tvm.cpu())
        return vm["main"](tvm.runtime.tensor(x)).numpy()

    np.testing.assert_array_equal(run(folded), run(mod))


@pytest.mark.parametrize(
    "source,target,folds",
    [
        ("float32", "float16", True),
        ("int8", "int32", True),
        ("float32", "int8", False),
        ("int32", "int8", False),
    ],
)
def test_only_casts_that_cannot_overflow_fold(source, target, folds):
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((4,), target))
    with bb.function("main", [x]):
        with bb.dataflow():
            c = bb.emit(relax.op.astype(relax.const(np.array([1, -2, 3, 100], source)), target))
            out = bb.emit_output(relax.op.add(x, c))
        bb.emit_func_output(out)
    assert ("relax.astype" in _ops(fold_constant_layouts(bb.get()))) != folds


def test_int8_build_is_unchanged_by_the_folding(test_models, monkeypatch):
    """A W8A8 build with the folding gives the same outputs, bit for bit, as one that leaves the constants
    to TVM's FoldConstant, and its pipeline has nothing left for FoldConstant to compile."""
    model = hanasc.load_model(test_models["inverted_residual"])
    rng = np.random.default_rng(0)
    ranges = calibrate(model, rng.standard_normal((4, *model.inputs[0].shape[1:])).astype("float32"))
    config = Config(layers={layer.name: LayerChoice(w_bits=8, a_bits=8) for layer in model.layers})
    mod = materialize_recovered(model, config, ranges)
    x = rng.standard_normal(model.inputs[0].shape).astype(np.float32)
    folded = host.run(compile_late_bound(mod, host.tvm_target()), [x])[0]
    original = pipelines.fused_passes

    def without_folding(target):
        return [p for p in original(target) if "FoldConstantLayouts" not in str(p.info.name)]

    monkeypatch.setattr(pipelines, "fused_passes", without_folding)
    plain = host.run(compile_late_bound(mod, host.tvm_target()), [x])[0]
    np.testing.assert_array_equal(folded, plain)
