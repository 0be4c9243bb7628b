"""Element-wise constants in shapes ConvertLayout can block: a ones-shape constant as a scalar, a rank-3
per-channel constant at rank 4 (paddle2onnx's folded batch norm and activation scale)."""

from __future__ import annotations

import re

import numpy as np
import onnxruntime as ort
import tvm
from builders import save_graph
from onnx import numpy_helper

import hanasc
from hanasc.core.relax_params import bind_weights
from hanasc.targets import host
from hanasc.targets.lowering.blocked_layout import convert_to_blocked
from hanasc.targets.lowering.broadcast_constants import full_rank_constants


def _scaled_convs(path):
    """conv -> x * (1,1,1,1) -> x + (16,1,1) -> relu -> conv, on (1, 16, 8, 8)."""
    from onnx import helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((16, 16, 1, 1)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal((16, 16, 3, 3)).astype(np.float32), "w2"),
        numpy_helper.from_array(np.full((1, 1, 1, 1), 1.5, np.float32), "scale"),
        numpy_helper.from_array(rng.standard_normal((16, 1, 1)).astype(np.float32), "shift"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["a"]),
        helper.make_node("Mul", ["scale", "a"], ["b"]),
        helper.make_node("Add", ["b", "shift"], ["c"]),
        helper.make_node("Relu", ["c"], ["d"]),
        helper.make_node("Conv", ["d", "w2"], ["output"], pads=[1, 1, 1, 1]),
    ]
    return save_graph(path, nodes, inits, [1, 16, 8, 8], [1, 16, 8, 8])


def _activation_transforms(mod) -> int:
    """Layout transforms of activations (weights' transforms read a constant and fold away)."""
    return len(re.findall(r"R\.layout_transform\((?!metadata)", mod["main"].script()))


def test_constants_take_the_blocked_layout_and_values_hold(tmp_path):
    path = _scaled_convs(tmp_path / "scaled.onnx")
    bound = bind_weights(hanasc.load_model(path).mod)
    shapes = [
        tuple(int(d) for d in arg.ty.shape)
        for block in full_rank_constants(bound)["main"].body.blocks
        for binding in block.bindings
        if getattr(getattr(binding.value, "op", None), "name", "") in ("relax.multiply", "relax.add")
        for arg in binding.value.args
        if isinstance(arg, tvm.ir.expr.Constant)
    ]
    assert shapes == [(), (1, 16, 1, 1)]  # the scale a scalar, the shift at rank 4
    # the whole chain blocked: the input into the blocks and the output out of them, nothing between
    assert _activation_transforms(convert_to_blocked(bound)) == 2
    x = np.random.default_rng(1).standard_normal((1, 16, 8, 8)).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    got = host.run(host.build_artifact(hanasc.load_model(path).mod), [x])[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
