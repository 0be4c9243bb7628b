"""The small ONNX models the fuzzer mutates: a residual block (depthwise conv, Add, Gemm) and a plain
conv + BatchNorm + MaxPool + MatMul chain, built with ``onnx.helper``."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _conv(name: str, x: str, w: str, b: str | None, out: str, **attrs) -> onnx.NodeProto:
    return helper.make_node("Conv", [x, w, b] if b else [x, w], [out], name=name, **attrs)


def _init(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name)


def residual_fixture() -> onnx.ModelProto:
    """conv 3x3 -> depthwise 3x3 -> pointwise 1x1 -> residual add -> pool -> dense (Gemm): input 1x3x16x16."""
    rng = np.random.default_rng(0)
    inits = [
        _init(rng, "stem.w", (8, 3, 3, 3)),
        _init(rng, "stem.b", (8,)),
        _init(rng, "dw.w", (8, 1, 3, 3)),
        _init(rng, "dw.b", (8,)),
        _init(rng, "pw.w", (8, 8, 1, 1)),
        _init(rng, "pw.b", (8,)),
        _init(rng, "fc.w", (10, 8)),
        _init(rng, "fc.b", (10,)),
    ]
    nodes = [
        _conv("stem", "input", "stem.w", "stem.b", "s", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["s"], ["s_act"], name="stem_relu"),
        _conv("dw", "s_act", "dw.w", "dw.b", "d", pads=[1, 1, 1, 1], group=8, kernel_shape=[3, 3]),
        helper.make_node("Relu", ["d"], ["d_act"], name="dw_relu"),
        _conv("pw", "d_act", "pw.w", "pw.b", "p", kernel_shape=[1, 1]),
        helper.make_node("Add", ["s_act", "p"], ["r"], name="residual"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="pool"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["output"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "residual",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 10])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def plain_fixture() -> onnx.ModelProto:
    """conv -> BatchNorm -> relu -> maxpool -> reshape -> MatMul + Add (dense): input 1x1x12x12."""
    rng = np.random.default_rng(1)
    inits = [
        _init(rng, "c.w", (4, 1, 3, 3)),
        numpy_helper.from_array(np.ones(4, np.float32), "bn.scale"),
        numpy_helper.from_array(np.zeros(4, np.float32), "bn.bias"),
        numpy_helper.from_array(np.full(4, 0.1, np.float32), "bn.mean"),
        numpy_helper.from_array(np.full(4, 0.9, np.float32), "bn.var"),
        numpy_helper.from_array(np.array([1, -1], np.int64), "flat"),
        _init(rng, "fc.w", (4 * 6 * 6, 5)),
        _init(rng, "fc.b", (5,)),
    ]
    nodes = [
        _conv("c", "input", "c.w", None, "c", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node(
            "BatchNormalization", ["c", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["n"], name="bn"
        ),
        helper.make_node("Relu", ["n"], ["a"], name="relu"),
        helper.make_node("MaxPool", ["a"], ["m"], name="maxpool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["m", "flat"], ["f"], name="reshape"),
        helper.make_node("MatMul", ["f", "fc.w"], ["mm"], name="fc"),
        helper.make_node("Add", ["mm", "fc.b"], ["output"], name="fc_bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "plain",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 12, 12])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 5])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def builtin_fixtures() -> dict[str, onnx.ModelProto]:
    """The fixture models built here with onnx.helper (no torch needed)."""
    return {"residual": residual_fixture(), "plain": plain_fixture()}
