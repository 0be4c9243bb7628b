"""Build a VPU bundle's OpenVINO IR: NNCF INT8 (QDQ) on planned layers, INT4 dense weights, FP16 else.

One quantization feeds both artifacts: NNCF quantizes the opset-13 ONNX (QuantizeLinear/DequantizeLinear
around the INT8 layers), OpenVINO converts that ONNX (QDQ pairs become FakeQuantize, weight QDQ becomes
int8 constants), INT4 weights are compressed on the IR and mirrored back into the ONNX, and the remaining
float constants are stored as FP16.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from hanasc.core.errors import HanascError
from hanasc.core.logs import quiet_logger
from hanasc.targets.vpu_checks import find_layer_ops, weight_source
from hanasc.targets.vpu_onnx import insert_weight_dequantize, round_to_fp16

WEIGHTED_OV_OPS = ("Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData", "Gather")


class CalibrationError(HanascError):
    """Calibration inputs do not fit the model's input."""


@dataclass
class ExportResult:
    """The converted model: the ONNX it came from (opset 13, QDQ where quantized) and the OpenVINO model."""

    onnx_model: onnx.ModelProto
    ov_model: object  # openvino.Model
    timings_s: dict[str, float] = field(default_factory=dict)
    fp16_constants: int = 0


def calibration_items(calib: np.ndarray, name: str, shape: tuple[int, ...]) -> list[dict[str, np.ndarray]]:
    """Split ``calib`` (N, *shape) -- or (N, *shape[1:]) for a batch-1 input -- into per-sample feeds."""
    calib = np.asarray(calib, dtype=np.float32)
    if calib.ndim == len(shape) + 1 and tuple(calib.shape[1:]) == tuple(shape):
        samples = list(calib)
    elif shape and shape[0] == 1 and tuple(calib.shape[1:]) == tuple(shape[1:]):
        samples = [s[None] for s in calib]
    else:
        raise CalibrationError(
            f"calibration inputs have shape {tuple(calib.shape)}; expected (N, {', '.join(map(str, shape))})"
        )
    if not samples:
        raise CalibrationError("calibration inputs are empty (need at least one sample)")
    return [{name: np.ascontiguousarray(s)} for s in samples]


def quantize_int8(
    model13: onnx.ModelProto, int8_layers: list[str], items: list[dict[str, np.ndarray]], npu: bool
) -> onnx.ModelProto:
    """NNCF post-training INT8 (symmetric, per-channel weights) on ``int8_layers`` only; QDQ ONNX out."""
    import nncf

    others = [n.name for n in model13.graph.node if n.name not in set(int8_layers)]
    with quiet_logger("nncf", logging.ERROR):
        quantized = nncf.quantize(
            model13,
            nncf.Dataset(items),
            subset_size=len(items),
            target_device=nncf.TargetDevice.NPU if npu else nncf.TargetDevice.ANY,
            ignored_scope=nncf.IgnoredScope(names=others, validate=False),
        )
    return round_to_fp16(quantized)


def compress_int4(ov_model, onnx_model: onnx.ModelProto, int4_layers: list[str]) -> None:
    """INT4 symmetric per-channel weights on the ``int4_layers`` MatMuls (IR), mirrored into the ONNX."""
    import nncf

    targets = find_layer_ops(ov_model, int4_layers)
    keep = {op.get_friendly_name() for op in targets.values()}
    others = [
        op.get_friendly_name()
        for op in ov_model.get_ordered_ops()
        if op.get_type_name() in WEIGHTED_OV_OPS and op.get_friendly_name() not in keep
    ]
    with quiet_logger("nncf", logging.ERROR):
        nncf.compress_weights(
            ov_model,
            mode=nncf.CompressWeightsMode.INT4_SYM,
            ratio=1.0,
            group_size=-1,
            all_layers=True,
            backup_mode=nncf.BackupMode.NONE,
            ignored_scope=nncf.IgnoredScope(names=others, validate=False),
        )
    for layer, op in find_layer_ops(ov_model, int4_layers).items():
        q, scale = _int4_weight(op, layer)
        _mirror_weight(onnx_model, f"{layer}.weight", q, scale, layer)


def _int4_weight(op, layer: str) -> tuple[np.ndarray, np.ndarray]:
    const, chain = weight_source(op)
    if str(const.get_output_element_type(0)) != "<Type: 'int4_t'>":
        raise HanascError(f"layer '{layer}': NNCF did not compress the weight to INT4 (check the plan)")
    scales = [
        n.input_value(1).get_node()
        for n in chain
        if n.get_type_name() == "Multiply" and n.input_value(1).get_node().get_type_name() == "Constant"
    ]
    if not scales:
        raise HanascError(f"layer '{layer}': INT4 weight has no scale constant")
    shape = tuple(const.get_output_shape(0))
    packed = const.get_data().view(np.uint8).ravel()
    nibbles = np.empty(packed.size * 2, np.int8)
    nibbles[0::2] = (packed & 0x0F).astype(np.int8)
    nibbles[1::2] = (packed >> 4).astype(np.int8)
    nibbles[nibbles >= 8] -= 16
    q = nibbles[: int(np.prod(shape))].reshape(shape)
    scale = scales[0].get_data().astype(np.float32)
    return q, scale


def _mirror_weight(model: onnx.ModelProto, weight: str, q: np.ndarray, scale: np.ndarray, layer: str) -> None:
    init = next((i for i in model.graph.initializer if i.name == weight), None)
    if init is None:
        raise HanascError(f"layer '{layer}': weight '{weight}' not found in the ONNX model")
    onnx_shape = tuple(init.dims)
    if q.shape != onnx_shape and q.ndim == 2 and q.T.shape == onnx_shape:
        q, scale = q.T, scale.reshape(q.shape[0], -1).T
    if q.shape != onnx_shape:
        raise HanascError(f"layer '{layer}': INT4 weight shape {q.shape} does not match ONNX {onnx_shape}")
    scale = scale.reshape([d for d in scale.shape] + [1] * (q.ndim - scale.ndim))
    axes = [i for i, (s, w) in enumerate(zip(scale.shape, q.shape, strict=True)) if s == w and w != 1]
    if len(axes) != 1 or scale.size != q.shape[axes[0]]:
        raise HanascError(f"layer '{layer}': INT4 scale shape {scale.shape} is not per-channel")
    insert_weight_dequantize(model, weight, q, scale.ravel(), axes[0])


def _is_dequant_scale(const) -> bool:
    """A constant that scales (or shifts) integer weights: keep it in FP32 next to its FakeQuantize peers."""
    for target in const.output(0).get_target_inputs():
        node = target.get_node()
        if node.get_type_name() == "FakeQuantize":
            return True
        if node.get_type_name() in ("Multiply", "Subtract"):
            other = node.input_value(1 - target.get_index()).get_node()
            if other.get_type_name() == "Convert" and other.input_value(0).get_element_type().is_integral():
                return True
    return False


def _replace_output(old, new) -> None:
    """Every consumer of ``old``'s output reads ``new``'s instead, which takes over its tensor names."""
    names = old.output(0).get_names()
    for target in list(old.output(0).get_target_inputs()):
        target.replace_source_output(new.output(0))
    if names:
        new.output(0).get_tensor().set_names(names)


def compress_float_constants(ov_model) -> int:
    """Store FP32 constants (2+ elements, in FP16 range) as FP16 + Convert, as ``save_model`` does for float
    models; integer weights, their scales and FakeQuantize ranges are left alone, and so are constants the
    conversion folded into values FP16 cannot hold exactly (the IR keeps describing the ONNX's numbers; the
    device compiler rounds them). Returns how many."""
    import openvino as ov
    from openvino import opset13 as ops

    count = 0
    for const in ov_model.get_ordered_ops():
        if const.get_type_name() != "Constant" or const.get_output_element_type(0) != ov.Type.f32:
            continue
        data = const.get_data()
        if data.size < 2 or np.abs(data).max(initial=0) > 65504 or _is_dequant_scale(const):
            continue
        if not np.array_equal(data.astype(np.float16).astype(data.dtype), data):
            continue  # folded by the conversion (e.g. conv weight x a following multiply): not in the ONNX
        half = ops.constant(data.astype(np.float16))
        half.set_friendly_name(f"{const.get_friendly_name()}_compressed")
        back = ops.convert(half, ov.Type.f32)
        back.set_friendly_name(const.get_friendly_name())
        _replace_output(const, back)
        count += 1
    ov_model.validate_nodes_and_infer_types()
    return count


def slices_to_strided(ov_model) -> int:
    """Rewrite each Slice-8 with constant bounds as the equivalent StridedSlice-1 (on every VPU op list;
    OpenVINO's device plugins make the same rewrite). Returns how many were rewritten."""
    from openvino import opset1

    count = 0
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() != "Slice" or not op.get_input_partial_shape(0).rank.is_static:
            continue
        bounds = [op.input_value(i).get_node() for i in range(1, op.get_input_size())]
        if any(b.get_type_name() != "Constant" for b in bounds):
            continue
        rank = op.get_input_partial_shape(0).rank.get_length()
        start, stop, step, *rest = (b.get_data().astype(np.int64).reshape(-1) for b in bounds)
        axes = rest[0] if rest else np.arange(len(start))
        begin, end, strides = np.zeros(rank, np.int64), np.zeros(rank, np.int64), np.ones(rank, np.int64)
        ignored = [1] * rank  # OpenVINO masks: 1 = take the whole dimension
        for a, b, e, s in zip(axes % rank, start, stop, step, strict=True):
            begin[a], end[a], strides[a], ignored[a] = b, e, s, 0
        strided = opset1.strided_slice(op.input_value(0), begin, end, strides, ignored, list(ignored))
        strided.set_friendly_name(op.get_friendly_name())
        _replace_output(op, strided)
        count += 1
    if count:
        ov_model.validate_nodes_and_infer_types()
    return count


def export(
    model13: onnx.ModelProto,
    plan: dict[str, str],
    items: list[dict[str, np.ndarray]] | None,
    work_dir: Path,
    npu: bool,
) -> ExportResult:
    """Quantize (INT8 layers), convert to OpenVINO, compress INT4 dense weights, store floats as FP16."""
    import openvino as ov

    timings: dict[str, float] = {}
    int8 = [layer for layer, p in plan.items() if p == "int8"]
    int4 = [layer for layer, p in plan.items() if p == "int4"]
    model = onnx.ModelProto()
    model.CopyFrom(model13)
    round_to_fp16(model)
    if int8:
        t = time.perf_counter()
        model = quantize_int8(model, int8, items or [], npu)
        timings["nncf_quantize_s"] = time.perf_counter() - t
    t = time.perf_counter()
    staging = work_dir / "staging.onnx"
    onnx.save(model, str(staging))
    ov_model = ov.convert_model(str(staging))
    staging.unlink()
    slices_to_strided(ov_model)
    timings["convert_s"] = time.perf_counter() - t
    if int4:
        t = time.perf_counter()
        compress_int4(ov_model, model, int4)
        timings["nncf_compress_weights_s"] = time.perf_counter() - t
    fp16 = compress_float_constants(ov_model)
    return ExportResult(onnx_model=model, ov_model=ov_model, timings_s=timings, fp16_constants=fp16)
