"""The bundle of an Intel VPU / NPU through OpenVINO: Myriad X (FP16), NPU 3720 (Meteor Lake), NPU 4000
(Lunar Lake); the generations are :mod:`hanasc.targets.vpu_targets`.

TVM has no backend for these devices; OpenVINO is the toolchain. A bundle holds the OpenVINO IR with
per-layer precisions (``model.xml``/``model.bin``), the same model as opset-13 ONNX (``model.onnx``), golden
outputs (``golden.npz``) and ``vpu_manifest.json``. The device blob is built on the device unless an NPU is
present here.
"""

from __future__ import annotations

import json
import math
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx

from hanasc.core.atomic import atomic_dir
from hanasc.core.errors import HanascError
from hanasc.core.layers import layer_table
from hanasc.targets import vpu_checks
from hanasc.targets.bundle import BundleReport, file_sizes
from hanasc.targets.vpu_export import calibration_items, export
from hanasc.targets.vpu_golden import (  # noqa: F401  (verify_bundle: part of this module's API)
    MANIFEST,
    run_checks,
    sha256_of,
    verify_bundle,
    write_golden,
)
from hanasc.targets.vpu_onnx import to_opset13
from hanasc.targets.vpu_plan import VpuGeneration, VpuPlanError


def _layers(model: onnx.ModelProto):
    return layer_table(onnx.shape_inference.infer_shapes(model))


def _single_input(model: onnx.ModelProto) -> tuple[str, tuple[int, ...]]:
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise HanascError(f"VPU bundles take models with one input; this one has {len(inputs)}")
    dims = inputs[0].type.tensor_type.shape.dim
    if any(not d.HasField("dim_value") or d.dim_value <= 0 for d in dims):
        raise HanascError(f"input '{inputs[0].name}' has a dynamic shape; the VPU needs static shapes")
    return inputs[0].name, tuple(d.dim_value for d in dims)


def _jsonable(value):
    """Manifest values: non-finite floats become strings (JSON has no Infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _tool_versions() -> dict[str, str]:
    import nncf
    import onnxruntime
    import openvino

    return {
        "openvino": openvino.get_version(),
        "nncf": nncf.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "hanasc": metadata.version("hanasc"),
    }


def _latency_entry(latency_estimate: dict | None) -> dict:
    if latency_estimate is None:
        return {"status": "not estimated"}
    if "provenance" not in latency_estimate:
        raise HanascError("latency estimate lacks 'provenance' (measured / predicted / prior)")
    return {"status": "estimated", **latency_estimate}


def _io_specs(ov_model) -> dict:
    def spec(port) -> dict:
        return {
            "name": port.get_any_name(),
            "shape": list(port.get_partial_shape().to_shape()),
            "dtype": port.get_element_type().get_type_name(),
        }

    return {"inputs": [spec(p) for p in ov_model.inputs], "outputs": [spec(p) for p in ov_model.outputs]}


def _device_blob(target: VpuGeneration, xml: Path, folder: Path) -> dict:
    """Build ``model.blob`` when this machine has the NPU of this generation; otherwise say how to."""
    import openvino as ov

    how = (
        f"on the device: core = ov.Core(); compiled = core.compile_model(core.read_model('model.xml'), "
        f"'{target.device}'); open('model.blob', 'wb').write(compiled.export_model())"
        if target.is_npu
        else "on a host with OpenVINO 2022.3 LTS and the stick attached: "
        "compile_tool -m model.onnx -d MYRIAD "
        "-ip FP16 -op FP16 (or load model.onnx with the MYRIAD plugin at run time)"
    )
    core = ov.Core()
    if not target.is_npu or "NPU" not in core.available_devices:
        return {
            "status": "not built",
            "reason": f"no {target.device} device on the build machine",
            "build": how,
        }
    arch = str(core.get_property("NPU", "DEVICE_ARCHITECTURE"))
    if target.architecture and target.architecture not in arch:
        return {
            "status": "not built",
            "reason": f"the NPU here is {arch}, not {target.architecture}",
            "build": how,
        }
    compiled = core.compile_model(core.read_model(str(xml)), "NPU")
    (folder / "model.blob").write_bytes(compiled.export_model())
    return {"status": "built", "device_architecture": arch, "build": how}


def build_bundle(
    target: VpuGeneration,
    onnx_model: onnx.ModelProto,
    precision_plan: dict[str, str],
    calibration_inputs: np.ndarray | None,
    out_dir: Path,
    latency_estimate: dict | None = None,
) -> BundleReport:
    """Write ``out_dir``: model.xml/.bin, model.onnx, golden.npz, vpu_manifest.json (model.blob on an NPU).

    ``onnx_model`` is the transformed model (hanasc layer names); ``precision_plan`` maps layer -> fp16 /
    int8 / int4 (layers not named stay FP16); ``calibration_inputs`` (N, *input shape) calibrate INT8.
    Every check runs before anything is written; a failed check raises and leaves ``out_dir`` untouched.
    """
    import openvino as ov

    start = time.perf_counter()
    layers = _layers(onnx_model)
    plan = target.validate_plan(precision_plan, layers)
    input_name, shape = _single_input(onnx_model)
    quantized = any(p != "fp16" for p in plan.values())
    needs_calibration = any(p == "int8" for p in plan.values())
    if needs_calibration and calibration_inputs is None:
        raise VpuPlanError(f"{target.name}: INT8 layers need calibration inputs")
    items = calibration_items(calibration_inputs, input_name, shape) if needs_calibration else None
    latency = _latency_entry(latency_estimate)
    timings: dict[str, float] = {}
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        t = time.perf_counter()
        model13 = to_opset13(onnx_model)
        timings["onnx_opset13_s"] = time.perf_counter() - t
        result = export(model13, plan, items, tmp, target.is_npu)
        timings.update(result.timings_s)
        nodes = vpu_checks.layer_nodes(result.ov_model, layers)
        kept_float = vpu_checks.kept_float_by_quantizer(result.ov_model, plan, nodes)
        plan.update(dict.fromkeys(kept_float, "fp16"))  # what the device runs; the audit checks the rest
        t = time.perf_counter()
        ov.save_model(result.ov_model, str(tmp / "model.xml"), compress_to_fp16=False)
        onnx.save(result.onnx_model, str(tmp / "model.onnx"))
        timings["save_s"] = time.perf_counter() - t
        checks = run_checks(target, tmp, plan, input_name, shape, quantized, nodes)
        failed = [c for c in checks if not c.passed]
        if failed:
            raise HanascError(f"{target.name}: bundle check '{failed[0].name}' failed: {failed[0].summary}")
        golden = write_golden(tmp, input_name, shape, quantized)
        ir = ov.Core().read_model(str(tmp / "model.xml"))
        blob = _device_blob(target, tmp / "model.xml", tmp)
        files = {p: {"sha256": sha256_of(tmp / p), "bytes": size} for p, size in file_sizes(tmp).items()}
        manifest = {
            "format": "hanasc.vpu-manifest/1",
            "generation": target.name,
            "aliases": list(target.aliases),
            "description": target.description,
            "device": target.device,
            "precisions_allowed": list(target.precisions),
            "precision_plan": dict(sorted(plan.items())),
            "layer_nodes": dict(sorted(nodes.items())),
            "kept_float_by_quantizer": {
                "layers": kept_float,
                "note": "planned INT8; NNCF's ignored patterns (e.g. squeeze-excite) keep them FP16",
            },
            **_io_specs(ir),
            "files": files,
            "tools": _tool_versions(),
            "latency_estimate": latency,
            "golden": golden,
            "device_blob": blob,
            "onnx": {
                "opset": 13,
                "note": "INT8 layers as QDQ; INT4 weights as int8-held values + DequantizeLinear",
            },
            "checks": {c.name: {"passed": c.passed, "summary": c.summary} for c in checks},
            "timings_s": timings,
            "fp16_constants": result.fp16_constants,
        }
        (tmp / MANIFEST).write_text(json.dumps(_jsonable(manifest), indent=2) + "\n")
        sizes = file_sizes(tmp)
    notes = [f"device blob: {blob['status']}" + (f" ({blob['reason']})" if "reason" in blob else "")]
    if kept_float:
        notes.append(
            f"{len(kept_float)} layers planned INT8 kept FP16 by the quantizer (NNCF ignored patterns, "
            f"e.g. squeeze-excite): {', '.join(kept_float[:3])}{', ...' if len(kept_float) > 3 else ''}"
        )
    return BundleReport(
        target=target.name,
        out_dir=out_dir,
        files=sizes,
        build_seconds=time.perf_counter() - start,
        checks={c.name: _jsonable(c.to_json()) for c in checks},
        notes=notes,
    )
