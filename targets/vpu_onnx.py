"""The VPU bundle's ONNX: opset 13 (what older and current OpenVINO both read), FP16-exact weights."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper, version_converter

from hanasc.core.errors import HanascError
from hanasc.core.layers import node_attr as _attr  # one ONNX attribute reader for the project

OPSET = 13
IR_VERSION = 7  # the ONNX IR version that goes with opset 13

# Operators whose newer versions (14..) only widen types or add attributes with backward-compatible defaults:
# the node is valid opset 13 as it is, once the guards below hold.
_TYPE_ONLY_SINCE_13 = {
    "Relu", "Add", "Sub", "Mul", "Div", "Identity", "Pow", "Where", "Less", "Greater", "LessOrEqual",
    "GreaterOrEqual", "LeakyRelu", "PRelu", "Reshape", "Shape", "BatchNormalization", "Equal", "Pad",
    "Split", "Resize", "Constant", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
    "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "AveragePool", "MaxPool",
}  # fmt: skip
# Reduce ops that took `axes` as an input from opset 18 (ReduceSum already at 13).
_REDUCE_AXES_INPUT = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                      "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"}  # fmt: skip


class OnnxExportError(HanascError):
    """The model holds an operator with no opset-13 form, so the VPU ONNX cannot be written."""


def _constant_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and _attr(node, "value") is not None:
            values[node.output[0]] = numpy_helper.to_array(_attr(node, "value"))
    return values


def to_opset13(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` at opset 13 (a copy): newer opsets with type-only changes kept, HardSwish decomposed,
    Reduce axes as attrs; opsets 11-12 upgraded by ONNX's version converter.

    Raises :class:`OnnxExportError` naming the first node that has no opset-13 form.
    """
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), OPSET)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if current > OPSET:
        consts = _constant_values(model)
        nodes: list[onnx.NodeProto] = []
        for node in out.graph.node:
            nodes.extend(_downgrade_node(node, current, consts))
        del out.graph.node[:]
        out.graph.node.extend(nodes)
    elif current < 11:
        raise OnnxExportError(f"model opset {current} is too old (need >= 11)")
    elif current < OPSET:  # attributes that became inputs at 13 (Squeeze axes, Split sizes, ...)
        try:
            out = version_converter.convert_version(out, OPSET)
        except Exception as exc:  # the converter raises RuntimeError / ValidationError
            raise OnnxExportError(f"opset {current} -> 13: {str(exc).splitlines()[0]}") from None
    del out.opset_import[:]
    out.opset_import.append(helper.make_opsetid("", OPSET))
    out.ir_version = IR_VERSION
    try:
        onnx.checker.check_model(out, full_check=True)
        out = onnx.shape_inference.infer_shapes(out, strict_mode=True)
    except Exception as exc:  # onnx raises ValidationError / InferenceError
        raise OnnxExportError(f"opset-13 model failed validation: {str(exc).splitlines()[0]}") from None
    return out


def _downgrade_node(node: onnx.NodeProto, opset: int, consts: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    if node.domain not in ("", "ai.onnx"):
        raise OnnxExportError(f"node '{node.name}': custom domain '{node.domain}' has no opset-13 form")
    since = onnx.defs.get_schema(node.op_type, opset).since_version
    if since <= OPSET:
        return [node]
    if node.op_type == "HardSwish":
        return _hardswish13(node)
    if node.op_type not in _TYPE_ONLY_SINCE_13:
        raise OnnxExportError(f"node '{node.name}': {node.op_type} (opset {since}) has no opset-13 form")
    _check_guards(node, since)
    known = onnx.defs.get_schema(node.op_type, OPSET).attributes
    kept = [a for a in node.attribute if a.name in known]  # the guards checked that the rest are defaults
    del node.attribute[:]
    node.attribute.extend(kept)
    if node.op_type in _REDUCE_AXES_INPUT and len(node.input) > 1 and node.input[1]:
        axes = consts.get(node.input[1])
        if axes is None:
            raise OnnxExportError(f"node '{node.name}': {node.op_type} axes must be constant for opset 13")
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        attrs.pop("noop_with_empty_axes", None)
        return [
            helper.make_node(
                node.op_type, [node.input[0]], list(node.output), name=node.name,
                axes=[int(a) for a in axes.ravel()], **attrs,
            )
        ]  # fmt: skip
    return [node]


def _hardswish13(node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """HardSwish(x) = x * Clip(x + 3, 0, 6) / 6 (OpenVINO fuses it back into HSwish)."""
    x, base = node.input[0], f"{node.output[0]}__hswish"
    consts = {v: f"{base}_c{v}" for v in (0, 3, 6)}
    nodes = [
        helper.make_node(
            "Constant", [], [name], name=name, value=numpy_helper.from_array(np.array(v, np.float32), name)
        )
        for v, name in consts.items()
    ]
    return [
        *nodes,
        helper.make_node("Add", [x, consts[3]], [f"{base}_add"], name=f"{node.name}/add"),
        helper.make_node(
            "Clip", [f"{base}_add", consts[0], consts[6]], [f"{base}_clip"], name=f"{node.name}/clip"
        ),
        helper.make_node("Mul", [x, f"{base}_clip"], [f"{base}_mul"], name=f"{node.name}/mul"),
        helper.make_node("Div", [f"{base}_mul", consts[6]], list(node.output), name=node.name),
    ]


def _check_guards(node: onnx.NodeProto, since: int) -> None:
    bad = None
    if node.op_type == "Reshape" and _attr(node, "allowzero", 0):
        bad = "allowzero=1"
    elif node.op_type == "Shape" and (_attr(node, "start") is not None or _attr(node, "end") is not None):
        bad = "start/end"
    elif node.op_type == "BatchNormalization" and (_attr(node, "training_mode", 0) or len(node.output) > 1):
        bad = "training mode"
    elif node.op_type == "Pad" and (len(node.input) > 3 or _attr(node, "mode", b"constant") == b"wrap"):
        bad = "axes input or wrap mode"
    elif node.op_type == "Split" and _attr(node, "num_outputs") is not None:
        bad = "num_outputs"
    elif node.op_type == "Resize" and any(
        _attr(node, a) not in (None, 0, b"stretch") for a in ("antialias", "axes", "keep_aspect_ratio_policy")
    ):
        bad = "antialias/axes/keep_aspect_ratio_policy"
    elif node.op_type in ("AveragePool", "MaxPool") and _attr(node, "ceil_mode", 0) and since >= 19:
        bad = "ceil_mode"
    elif node.op_type in _REDUCE_AXES_INPUT and _attr(node, "noop_with_empty_axes", 0):
        bad = "noop_with_empty_axes"
    if bad:
        raise OnnxExportError(f"node '{node.name}': {node.op_type} with {bad} has no opset-13 form")


def _qdq_params(model: onnx.ModelProto) -> set[str]:
    """Names of scales and zero points of QuantizeLinear/DequantizeLinear nodes (never rounded)."""
    return {
        name
        for node in model.graph.node
        if node.op_type in ("QuantizeLinear", "DequantizeLinear")
        for name in node.input[1:]
    }


def _fp16_exact(arr: np.ndarray) -> np.ndarray:
    if arr.dtype != np.float32 or arr.size < 2 or np.abs(arr).max(initial=0) > 65504:
        return arr
    return arr.astype(np.float16).astype(np.float32)


def round_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Round float32 weights and constants (2+ elements) to FP16-representable values, in place.

    The IR stores these as FP16, so the ONNX then describes exactly the same numbers; QDQ scales and
    zero points stay as they are (OpenVINO keeps FakeQuantize ranges in FP32).
    """
    skip = _qdq_params(model)
    for init in model.graph.initializer:
        if init.name not in skip and init.data_type == onnx.TensorProto.FLOAT:
            init.CopyFrom(numpy_helper.from_array(_fp16_exact(numpy_helper.to_array(init)), init.name))
    for node in model.graph.node:
        value = _attr(node, "value") if node.op_type == "Constant" else None
        if value is not None and node.output[0] not in skip and value.data_type == onnx.TensorProto.FLOAT:
            rounded = numpy_helper.from_array(_fp16_exact(numpy_helper.to_array(value)), value.name)
            for a in node.attribute:
                if a.name == "value":
                    a.t.CopyFrom(rounded)
    return model


def insert_weight_dequantize(
    model: onnx.ModelProto, weight: str, q: np.ndarray, scale: np.ndarray, axis: int
) -> None:
    """Replace float initializer ``weight`` by int8 ``q`` + per-axis DequantizeLinear (opset 13), in place.

    Used for INT4 weights: opset 13 has no int4 type, so the 4-bit values travel in an int8 container.
    """
    inits = {init.name: init for init in model.graph.initializer}
    if weight not in inits:
        raise OnnxExportError(f"weight '{weight}' is not an initializer of the ONNX model")
    q_name, s_name, z_name, out = f"{weight}.q", f"{weight}.scale", f"{weight}.zero_point", f"{weight}.dq"
    model.graph.initializer.remove(inits[weight])
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(q.astype(np.int8), q_name),
            numpy_helper.from_array(scale.astype(np.float32).ravel(), s_name),
            numpy_helper.from_array(np.zeros(scale.size, np.int8), z_name),
        ]
    )
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name == weight:
                node.input[i] = out
    dq = helper.make_node("DequantizeLinear", [q_name, s_name, z_name], [out], name=f"{weight}/dq", axis=axis)
    model.graph.node.insert(0, dq)
