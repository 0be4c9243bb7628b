"""Checks on a VPU bundle: static shapes, supported ops, per-layer precision audit, CPU plugin vs ORT."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from hanasc.core.errors import HanascError

SPEC_FILE = Path(__file__).parent / "specs" / "vpu_ops.json"
LAYER_OV_OPS = ("Convolution", "GroupConvolution", "MatMul")
_WEIGHT_PATH_OPS = ("Convert", "Multiply", "Subtract", "Reshape", "Transpose", "Unsqueeze", "Squeeze")
_WEIGHT_TYPES = {"f16": "fp16", "f32": "fp32", "i8": "int8", "u8": "int8", "i4": "int4", "u4": "int4"}

FLOAT_MAX_REL_ERR = 1e-3  # max |ov - ort| / max |ort|, FP16-exact weights on both sides
QUANT_MIN_COSINE = 0.99
QUANT_MIN_SQNR_DB = 20.0
# x86 without VNNI: oneDNN's u8 x s8 convolutions go through vpmaddubsw, whose int16 pair sums saturate, so
# OpenVINO's CPU plugin runs int8 weights at reduced precision there (measured on EfficientNet-Lite0, half
# the layers int8, on a Zen 3 AVX2 core: cosine 0.9937, SQNR 19.0 dB against onnxruntime).
QUANT_MIN_SQNR_DB_NO_VNNI = 17.0


def quant_min_sqnr_db(cpu_flags: set[str] | None = None) -> float:
    """The SQNR a quantized bundle must reach against onnxruntime on this machine's CPU plugin."""
    import platform

    if cpu_flags is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return QUANT_MIN_SQNR_DB
        line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
        cpu_flags = set(line.split(":", 1)[-1].split())
    x86 = platform.machine() in ("x86_64", "AMD64", "i686")
    vnni = bool(cpu_flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    return QUANT_MIN_SQNR_DB_NO_VNNI if x86 and not vnni else QUANT_MIN_SQNR_DB


@dataclass
class CheckReport:
    """One check's verdict, a one-line summary, and details for the manifest."""

    name: str
    passed: bool
    summary: str
    details: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


@cache
def op_spec(key: str) -> dict:
    """The supported-op entry ``key`` of ``specs/vpu_ops.json`` (ops, max_opset, source)."""
    spec = json.loads(SPEC_FILE.read_text())["op_lists"]
    return spec[key]


def find_layer_ops(ov_model, layers: list[str], shapes: dict[str, tuple] | None = None) -> dict[str, object]:
    """The Convolution / GroupConvolution / MatMul node of each hanasc layer in an OpenVINO model.

    OpenVINO's ONNX frontend names the compute node ``<layer>`` (no bias) or ``<layer>/WithoutBiases``,
    or keeps ``<layer>.weight`` in its weight constant's name. A conv fused with a following multiply takes
    the multiply's name and a folded weight; for those, ``shapes`` (layer -> (output shape, weight size))
    picks the first unclaimed node, in graph order, of that output shape and weight size.
    """
    ops = [op for op in ov_model.get_ordered_ops() if op.get_type_name() in LAYER_OV_OPS]
    by_name = {op.get_friendly_name(): op for op in ops}
    found: dict[str, object] = {}
    for layer in layers:
        op = by_name.get(f"{layer}/WithoutBiases") or by_name.get(layer)
        if op is None:
            op = next((c for c in ops if _weight_named(c, layer)), None)
        if op is not None:
            found[layer] = op
    claimed = {id(op) for op in found.values()}
    for layer in layers:
        if layer in found or layer not in (shapes or {}):
            continue
        op = next((c for c in ops if id(c) not in claimed and _shape_key(c) == tuple(shapes[layer])), None)
        if op is None:
            continue
        found[layer] = op
        claimed.add(id(op))
    missing = [layer for layer in layers if layer not in found]
    if missing:
        raise HanascError(f"layer '{missing[0]}': no Convolution/MatMul for it in the OpenVINO model")
    return {layer: found[layer] for layer in layers}


def _weight_named(op, layer: str) -> bool:
    const, _ = weight_source(op)
    return any(f"{layer}.weight" in n for n in {const.get_friendly_name(), *const.output(0).get_names()})


def _shape_key(op) -> tuple:
    """(output shape, weight element count) of a layer node, as ``layer_shapes`` gives them."""
    weight = op.get_input_partial_shape(1)
    size = math.prod(d.get_length() for d in weight) if weight.is_static else -1
    out = op.get_output_partial_shape(0)
    return (tuple(d.get_length() for d in out) if out.is_static else (), size)


def layer_shapes(layers) -> dict[str, tuple]:
    """Layer -> (output shape, weight element count) from the layer table (``LayerInfo`` list)."""
    return {ly.name: (tuple(ly.out_shape), math.prod(ly.weight_shape)) for ly in layers}


def layer_nodes(ov_model, layers) -> dict[str, str]:
    """Layer -> the friendly name of its compute node (kept in the manifest: names survive save/read)."""
    found = find_layer_ops(ov_model, [ly.name for ly in layers], layer_shapes(layers))
    return {layer: op.get_friendly_name() for layer, op in found.items()}


def _ops_by_node(ov_model, plan: dict[str, str], nodes: dict[str, str] | None) -> dict[str, object]:
    if not nodes:
        return find_layer_ops(ov_model, list(plan))
    by_name = {op.get_friendly_name(): op for op in ov_model.get_ordered_ops()}
    missing = [layer for layer in plan if nodes.get(layer) not in by_name]
    if missing:
        node = nodes.get(missing[0])
        raise HanascError(f"layer '{missing[0]}': its node '{node}' is not in the OpenVINO model")
    return {layer: by_name[nodes[layer]] for layer in plan}


def weight_source(op) -> tuple[object, list]:
    """Follow input 1 of ``op`` up through Convert/Multiply/Reshape/... to its data source (a Constant)."""
    node, chain = op.input_value(1).get_node(), []
    while node.get_type_name() in _WEIGHT_PATH_OPS:
        chain.append(node)
        node = node.input_value(0).get_node()
    return node, chain


def _element(node) -> str:
    return node.get_output_element_type(0).get_type_name()


def layer_precision(op) -> dict:
    """What the IR really does for one layer: FakeQuantize levels on its input, weight constant type."""
    producer = op.input_value(0).get_node()
    levels = producer.get_attributes().get("levels") if producer.get_type_name() == "FakeQuantize" else None
    const, _ = weight_source(op)
    weight = _element(const) if const.get_type_name() == "Constant" else f"dynamic:{const.get_type_name()}"
    kind = _WEIGHT_TYPES.get(weight, weight)
    if levels == 256 and kind == "int8":
        found = "int8"
    elif levels is None and kind in ("fp16", "int4"):
        found = kind
    elif levels is None and kind == "fp32":
        found = "fp16"  # a weight the conversion folded (see compress_float_constants): the device rounds it
    else:
        found = f"weights {kind}, input FakeQuantize levels {levels}"
    return {"op": op.get_type_name(), "ir_node": op.get_friendly_name(), "input_fq_levels": levels,
            "weight_type": weight, "found": found}  # fmt: skip


def check_static_shapes(ov_model) -> CheckReport:
    """Every input, output and intermediate tensor of the IR has a static shape."""
    dynamic = [
        f"{op.get_friendly_name()}:{i}"
        for op in ov_model.get_ordered_ops()
        for i in range(op.get_output_size())
        if not op.get_output_partial_shape(i).is_static
    ]
    io = {
        "inputs": {p.get_any_name(): list(p.get_partial_shape().to_shape()) for p in ov_model.inputs}
        if not dynamic
        else {},
    }
    summary = "all shapes static" if not dynamic else f"{len(dynamic)} dynamic tensors, e.g. {dynamic[0]}"
    return CheckReport("static_shapes", not dynamic, summary, {"dynamic": dynamic[:20], **io})


def check_supported_ops(ov_model, spec_key: str) -> CheckReport:
    """Every op type in the IR is on the generation's supported list (and within its opset, if bounded)."""
    spec = op_spec(spec_key)
    allowed, max_opset = set(spec["ops"]), spec.get("max_opset")
    counts: Counter[str] = Counter()
    bad: set[str] = set()
    for op in ov_model.get_ordered_ops():
        info = op.get_type_info()
        label = f"{info.name}-{info.version_id}"
        counts[label] += 1
        version = int(info.version_id.removeprefix("opset")) if info.version_id.startswith("opset") else None
        if info.name not in allowed or (max_opset and (version is None or version > max_opset)):
            bad.add(label)
    summary = (
        f"{len(counts)} op types, all supported ({spec_key})"
        if not bad
        else f"unsupported on {spec_key}: {', '.join(sorted(bad))}"
    )
    return CheckReport(
        "supported_ops",
        not bad,
        summary,
        {"op_counts": dict(sorted(counts.items())), "unsupported": sorted(bad)},
    )


def kept_float_by_quantizer(ov_model, plan: dict[str, str], nodes: dict[str, str] | None = None) -> list[str]:
    """Layers planned INT8 that the quantizer left entirely in float (no input FakeQuantize, FP16 weights):
    NNCF's ignored patterns (e.g. the squeeze-excite convolutions) keep them so on every device."""
    planned = {layer: p for layer, p in plan.items() if p == "int8"}
    ops = _ops_by_node(ov_model, planned, nodes)
    return [layer for layer in planned if layer_precision(ops[layer])["found"] == "fp16"]


def audit_precisions(ov_model, plan: dict[str, str], nodes: dict[str, str] | None = None) -> CheckReport:
    """Per layer, the IR's FakeQuantize levels and weight constant type match the planned precision
    (``nodes``: layer -> compute node name, from :func:`layer_nodes`; by name rules without it)."""
    layers = {layer: layer_precision(op) for layer, op in _ops_by_node(ov_model, plan, nodes).items()}
    mismatched = []
    for layer, found in layers.items():
        found["planned"] = plan[layer]
        if found["found"] != plan[layer]:
            mismatched.append(layer)
    tally = Counter(f["found"] for f in layers.values())
    summary = (
        f"{len(layers)} layers match the plan ({', '.join(f'{k}: {v}' for k, v in sorted(tally.items()))})"
        if not mismatched
        else f"{len(mismatched)} layers differ from the plan, e.g. '{mismatched[0]}': "
        f"planned {plan[mismatched[0]]}, found {layers[mismatched[0]]['found']}"
    )
    return CheckReport(
        "precision_audit", not mismatched, summary, {"layers": layers, "mismatched": mismatched}
    )


def agreement(ours: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Max relative error (to the reference's range), cosine similarity and SQNR (dB) of two outputs."""
    a, b = np.asarray(ours, np.float64).ravel(), np.asarray(ref, np.float64).ravel()
    diff = a - b
    scale = np.abs(b).max() or 1.0
    noise = float((diff**2).sum())
    norm = float(np.linalg.norm(a) * np.linalg.norm(b)) or 1.0
    return {
        "max_rel_err": float(np.abs(diff).max() / scale),
        "cosine": float((a * b).sum() / norm),
        "sqnr_db": float(10 * np.log10((b**2).sum() / noise)) if noise > 0 else float("inf"),
    }


def run_openvino_cpu(xml: Path, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    """Run the IR on OpenVINO's CPU plugin in FP32 (no bf16/fp16 execution hints), one result per feed."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    outs = []
    for feed in feeds:
        result = request.infer(feed)
        outs.append([np.array(result[o]) for o in compiled.outputs])
    return outs


def run_onnxruntime(onnx_path: Path, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return [session.run(None, feed) for feed in feeds]


def compare_cpu_with_onnxruntime(
    xml: Path, onnx_path: Path, feeds: list[dict[str, np.ndarray]], quantized: bool
) -> CheckReport:
    """The IR on OpenVINO's CPU plugin against onnxruntime on the bundle's ONNX, same inputs.

    Float: max relative error <= 1e-3. Quantized (rounding differs between engines): cosine >= 0.99 and
    SQNR >= 20 dB (17 dB on x86 CPUs without VNNI, :func:`quant_min_sqnr_db`); never exact equality.
    """
    ov_outs, ort_outs = run_openvino_cpu(xml, feeds), run_onnxruntime(onnx_path, feeds)
    worst = {"max_rel_err": 0.0, "cosine": 1.0, "sqnr_db": float("inf")}
    for ours, refs in zip(ov_outs, ort_outs, strict=True):
        for a, b in zip(ours, refs, strict=True):
            m = agreement(a, b)
            worst = {
                "max_rel_err": max(worst["max_rel_err"], m["max_rel_err"]),
                "cosine": min(worst["cosine"], m["cosine"]),
                "sqnr_db": min(worst["sqnr_db"], m["sqnr_db"]),
            }
    if quantized:
        min_sqnr = quant_min_sqnr_db()
        passed = worst["cosine"] >= QUANT_MIN_COSINE and worst["sqnr_db"] >= min_sqnr
        rule = f"cosine >= {QUANT_MIN_COSINE}, SQNR >= {min_sqnr} dB"
    else:
        passed = worst["max_rel_err"] <= FLOAT_MAX_REL_ERR
        rule = f"max relative error <= {FLOAT_MAX_REL_ERR}"
    summary = (
        f"CPU plugin vs onnxruntime over {len(feeds)} inputs: max rel err {worst['max_rel_err']:.2e}, "
        f"cosine {worst['cosine']:.6f}, SQNR {worst['sqnr_db']:.1f} dB ({rule})"
    )
    return CheckReport("cpu_vs_onnxruntime", passed, summary, {**worst, "rule": rule, "inputs": len(feeds)})
