"""VPU targets (OpenVINO): real conversion, NNCF quantization, CPU-plugin runs and audits on small models."""

from __future__ import annotations

import hashlib
import json
import platform
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import openvino as ov
import pytest
from builders import single_op_model

import hanasc
from hanasc.core.errors import HanascError
from hanasc.passes.config import Config, LayerChoice
from hanasc.targets import vpu, vpu_checks
from hanasc.targets.registry import get_target
from hanasc.targets.vpu_onnx import OnnxExportError, to_opset13
from hanasc.targets.vpu_targets import MYRIADX, NPU3720, NPU4000


@pytest.fixture(scope="module")
def loaded(test_models):
    return {name: hanasc.load_model(path, import_tvm=False) for name, path in test_models.items()}


def _calib(model, n: int = 8) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, *model.inputs[0].shape)).astype(np.float32)


def _ir(folder: Path):
    return ov.Core().read_model(str(folder / "model.xml"))


def _manifest(folder: Path) -> dict:
    return json.loads((folder / vpu.MANIFEST).read_text())


def test_generations_and_aliases():
    assert get_target("vpu") is NPU3720
    assert get_target("npu4000").precisions == ("fp16", "int8", "int4")
    assert get_target("myriadx").precisions == ("fp16",)
    assert NPU3720.allowed_choices("dense")["w_bits"] == (16, 8, 4)
    assert NPU3720.allowed_choices("conv")["w_bits"] == (16, 8)
    assert MYRIADX.allowed_choices("conv") == {"w_bits": (16,), "a_bits": (16,)}
    with pytest.raises(HanascError, match="unknown target 'myriad2'"):
        get_target("myriad2")


def test_plan_from_config(loaded):
    layers = loaded["dense_head"].layers  # conv, fc1, fc2
    config = Config(
        layers={
            "conv": LayerChoice(w_bits=8, a_bits=8),
            "fc1": LayerChoice(w_bits=4),
            "fc2": LayerChoice(w_bits=16),
        }
    )
    assert NPU3720.plan_from_config(config, layers) == {"conv": "int8", "fc1": "int4", "fc2": "fp16"}
    assert set(MYRIADX.plan_from_config(config, layers).values()) == {"fp16"}


def test_float_bundle_npu(loaded, tmp_path):
    model = loaded["inverted_residual"]
    out = tmp_path / "fp16"
    report = NPU3720.build_bundle(model.onnx_model, {}, None, out)
    assert {"model.xml", "model.bin", "model.onnx", "golden.npz", vpu.MANIFEST} <= set(report.files)
    assert all(c["passed"] for c in report.checks.values()), report.checks
    assert report.checks["cpu_vs_onnxruntime"]["details"]["max_rel_err"] <= 1e-3
    manifest = _manifest(out)
    assert manifest["generation"] == "npu3720" and set(manifest["precision_plan"].values()) == {"fp16"}
    assert manifest["latency_estimate"] == {"status": "not estimated"}
    assert manifest["device_blob"]["status"] in ("built", "not built")
    assert manifest["tools"]["openvino"].startswith("2026.4.1") and manifest["tools"]["nncf"] == "3.4.0"
    assert manifest["inputs"][0]["shape"] == [1, 3, 32, 32]
    golden = np.load(out / "golden.npz")
    entry = manifest["golden"]["outputs"][0]
    assert entry["values"] is None  # 16,384 values: in golden.npz only, checksummed in the manifest
    assert hashlib.sha256(golden["output:0"].astype(np.float32).tobytes()).hexdigest() == entry["sha256_f32"]
    # IR: FP16 weight constants, no FakeQuantize; ONNX: opset 13, float, readable by onnxruntime.
    ir = _ir(out)
    assert "FakeQuantize" not in {op.get_type_name() for op in ir.get_ordered_ops()}
    assert {ly["weight_type"] for ly in report.checks["precision_audit"]["details"]["layers"].values()} == {
        "f16"
    }
    onnx_model = onnx.load(str(out / "model.onnx"))
    assert onnx_model.opset_import[0].version == 13
    assert not {n.op_type for n in onnx_model.graph.node} & {"QuantizeLinear", "DequantizeLinear"}
    ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert all(c.passed for c in vpu.verify_bundle(out))


def test_myriadx_float_bundle(loaded, tmp_path):
    model = loaded["plain_conv"]
    report = MYRIADX.build_bundle(
        model.onnx_model, {}, None, tmp_path / "mx", {"provenance": "prior", "ms": 3.1}
    )
    assert all(c["passed"] for c in report.checks.values()), report.checks
    manifest = _manifest(tmp_path / "mx")
    assert manifest["device_blob"]["status"] == "not built" and "MYRIAD" in manifest["device_blob"]["build"]
    assert manifest["latency_estimate"] == {"status": "estimated", "provenance": "prior", "ms": 3.1}
    ops = report.checks["supported_ops"]["details"]["op_counts"]
    assert all(int(label.rsplit("opset", 1)[1]) <= 10 for label in ops)


def test_mixed_int8_plan(loaded, tmp_path):
    model = loaded["inverted_residual"]
    names = [ly.name for ly in model.layers]  # stem conv, expand 1x1, depthwise 3x3, project 1x1
    plan = {names[0]: "int8", names[2]: "int8", names[3]: "fp16"}
    out = tmp_path / "mixed"
    report = NPU3720.build_bundle(model.onnx_model, plan, _calib(model), out)
    assert all(c["passed"] for c in report.checks.values()), report.checks
    layers = report.checks["precision_audit"]["details"]["layers"]
    for name in (names[0], names[2]):
        assert layers[name]["input_fq_levels"] == 256 and layers[name]["weight_type"] == "i8"
    for name in (names[1], names[3]):
        assert layers[name]["input_fq_levels"] is None and layers[name]["weight_type"] == "f16"
    cmp = report.checks["cpu_vs_onnxruntime"]["details"]
    assert cmp["cosine"] >= 0.99 and cmp["sqnr_db"] >= 20
    onnx_ops = [n.op_type for n in onnx.load(str(out / "model.onnx")).graph.node]
    assert "QuantizeLinear" in onnx_ops and "DequantizeLinear" in onnx_ops
    # The audit can fail: the same IR checked against a different plan.
    wrong = vpu_checks.audit_precisions(_ir(out), {names[0]: "fp16", names[1]: "int8"})
    assert not wrong.passed and wrong.details["mismatched"] == [names[0], names[1]]


def test_int4_dense_plan(loaded, tmp_path):
    model = loaded["dense_head"]
    out = tmp_path / "int4"
    report = NPU4000.build_bundle(model.onnx_model, {"fc1": "int4", "conv": "int8"}, _calib(model), out)
    assert all(c["passed"] for c in report.checks.values()), report.checks
    layers = report.checks["precision_audit"]["details"]["layers"]
    assert layers["fc1"]["weight_type"] == "i4" and layers["fc2"]["weight_type"] == "f16"
    # The ONNX holds the same 4-bit values (int8 container + per-channel DequantizeLinear).
    onnx_model = onnx.load(str(out / "model.onnx"))
    q = next(onnx.numpy_helper.to_array(i) for i in onnx_model.graph.initializer if i.name == "fc1.weight.q")
    scale = next(
        onnx.numpy_helper.to_array(i) for i in onnx_model.graph.initializer if i.name == "fc1.weight.scale"
    )
    assert q.min() >= -8 and q.max() <= 7 and len(np.unique(q)) > 8
    original = next(
        onnx.numpy_helper.to_array(i) for i in model.onnx_model.graph.initializer if i.name == "fc1.weight"
    )
    deq = q * scale.reshape(-1, 1)
    cosine = (deq * original).sum() / np.linalg.norm(deq) / np.linalg.norm(original)
    assert cosine > 0.98  # right nibble order and scale: INT4 reproduces the float weights
    xml_bytes = report.files["model.bin"]
    assert xml_bytes < original.size  # 4-bit fc1 (100k weights) dominates: under one byte per weight


def test_unsupported_op_rejected_without_output(loaded, tmp_path):
    model = loaded["se_hardswish"]  # hardsigmoid gate: not in the MYRIAD plugin's layer table
    out = tmp_path / "mx_se"
    with pytest.raises(HanascError, match=r"supported_ops.*HardSigmoid"):
        MYRIADX.build_bundle(model.onnx_model, {}, None, out)
    assert not out.exists()


@pytest.mark.parametrize(
    ("target", "plan", "message"),
    [
        (MYRIADX, {"conv": "int8"}, "INT8 is not available on myriadx"),
        (NPU3720, {"conv": "int4"}, "'conv' is a conv: INT4 weights are for dense layers only"),
        (NPU3720, {"nope": "fp16"}, "unknown layer 'nope'"),
        (NPU3720, {"fc1": "int3"}, "precision 'int3' unknown"),
    ],
)
def test_plan_errors(loaded, tmp_path, target, plan, message):
    with pytest.raises(HanascError, match=message) as err:
        target.build_bundle(loaded["dense_head"].onnx_model, plan, None, tmp_path / "x")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "x").exists()


def test_calibration_errors(loaded, tmp_path):
    model = loaded["dense_head"]
    with pytest.raises(HanascError, match="need calibration inputs"):
        NPU3720.build_bundle(model.onnx_model, {"conv": "int8"}, None, tmp_path / "x")
    with pytest.raises(HanascError, match="calibration inputs have shape"):
        NPU3720.build_bundle(model.onnx_model, {"conv": "int8"}, np.zeros((4, 3, 3)), tmp_path / "x")
    with pytest.raises(HanascError, match="provenance"):
        NPU3720.build_bundle(model.onnx_model, {}, None, tmp_path / "x", {"ms": 1.0})


def test_opset13_export(loaded, tmp_path):
    model = loaded["se_hardswish"].onnx_model  # HardSwish (opset 14) must be decomposed
    down = to_opset13(model)
    assert "HardSwish" not in {n.op_type for n in down.graph.node}
    x = {"input": np.random.default_rng(3).standard_normal((1, 3, 32, 32)).astype(np.float32)}
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
    got = ort.InferenceSession(down.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, x)[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    trilu = onnx.load(str(single_op_model("Trilu", tmp_path / "trilu.onnx")))
    with pytest.raises(OnnxExportError, match=r"my_trilu.*Trilu.*no opset-13 form"):
        to_opset13(trilu)


@pytest.mark.slow
def test_efficientnet_lite0_mixed(effnet_path, tmp_path):
    model = hanasc.load_model(effnet_path, import_tvm=False)
    convs = [ly.name for ly in model.layers if ly.op != "dense"]
    plan = {name: ("int8" if i % 2 == 0 else "fp16") for i, name in enumerate(convs)}
    calib = _calib(model, n=16)
    timings, sizes = {}, {}
    for label, p in (("fp16", {}), ("mixed", plan)):
        t = time.perf_counter()
        report = NPU3720.build_bundle(model.onnx_model, p, calib, tmp_path / label)
        timings[label] = time.perf_counter() - t
        sizes[label] = report.files["model.bin"]
        assert all(c["passed"] for c in report.checks.values()), report.checks
        print(label, f"{timings[label]:.1f}s", sizes[label], report.checks["cpu_vs_onnxruntime"]["summary"])
    audit = report.checks["precision_audit"]["details"]["layers"]
    assert sum(ly["found"] == "int8" for ly in audit.values()) == len(plan) - list(plan.values()).count(
        "fp16"
    )
    assert sizes["mixed"] < sizes["fp16"]


@pytest.mark.slow
def test_efficientnet_lite0_architecture_changes(effnet_path, tmp_path):
    """Separable, kernel, width and skip choices reach the IR; int8 layers keep their precision."""
    from hanasc.compile.apply_pipeline import build_target_bundle
    from hanasc.search.space import build_space

    model = hanasc.load_model(effnet_path)
    space = build_space(model)
    config = space.decode(space.sample(np.random.default_rng(5)))
    config.layers.setdefault("conv_stem", LayerChoice()).separable = True  # EffNet's one KxK standard conv
    for choice in config.layers.values():  # NPU precisions: W8A8 or float
        choice.w_bits, choice.a_bits = (8, 8) if choice.w_bits <= 8 else (32, 32)
    report = build_target_bundle(
        get_target("npu3720"), model, config, None, tmp_path / "npu", _calib(model, n=8), None
    )
    assert all(c["passed"] for c in report["checks"].values()), report["checks"]
    graph = onnx.load(str(tmp_path / "npu" / "model.onnx")).graph
    names = {n.name for n in graph.node}
    assert {"conv_stem.dw", "conv_stem.pw"} <= names and "conv_stem" not in names
    assert len([n for n in graph.node if n.op_type == "Add"]) == 9 - len(config.skip)


def test_quantized_check_threshold_follows_the_cpu():
    """Without VNNI, OpenVINO's CPU plugin computes int8 at reduced precision: a lower SQNR bar there only."""
    from hanasc.targets.vpu_checks import QUANT_MIN_SQNR_DB, quant_min_sqnr_db

    assert quant_min_sqnr_db({"avx2", "avx512f", "avx512_vnni"}) == QUANT_MIN_SQNR_DB
    if platform.machine() == "x86_64":
        assert quant_min_sqnr_db({"avx2", "fma"}) < QUANT_MIN_SQNR_DB


def test_squeeze_excite_kept_float_by_the_quantizer(loaded, tmp_path):
    """NNCF leaves squeeze-excite convs in float: the plan follows what the device runs; rest audited."""
    model = loaded["se_hardswish"]
    plan = {layer.name: "int8" for layer in model.layers}
    report = NPU3720.build_bundle(model.onnx_model, plan, _calib(model), tmp_path / "se")
    assert all(c["passed"] for c in report.checks.values()), report.checks
    kept = _manifest(tmp_path / "se")["kept_float_by_quantizer"]["layers"]
    assert kept and set(kept) < set(plan)  # the SE pair only, not every layer
    layers = report.checks["precision_audit"]["details"]["layers"]
    assert all(layers[name]["found"] == ("fp16" if name in kept else "int8") for name in plan)
    assert any("kept FP16 by the quantizer" in note for note in report.notes)


def test_slice_becomes_strided_slice(tmp_path):
    """A channel split as ONNX Slice (Slice-8 in OpenVINO) is rewritten as StridedSlice, same values."""
    from onnx import TensorProto, helper, numpy_helper

    from hanasc.targets.vpu_export import slices_to_strided

    consts = [
        numpy_helper.from_array(np.array(v, np.int64), n)
        for n, v in (("s", [2, 1]), ("e", [2**62, -1]), ("a", [1, 3]), ("st", [1, 2]))
    ]
    node = helper.make_node("Slice", ["x", "s", "e", "a", "st"], ["y"], name="split_half")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 5, 7])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=consts,
    )
    path = tmp_path / "slice.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    ov_model = ov.convert_model(str(path))
    assert slices_to_strided(ov_model) == 1
    kinds = {op.get_type_name() for op in ov_model.get_ordered_ops()}
    assert "StridedSlice" in kinds and "Slice" not in kinds
    x = np.random.default_rng(0).standard_normal((1, 6, 5, 7)).astype(np.float32)
    got = ov.Core().compile_model(ov_model, "CPU")([x])[0]
    want = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, want)


def test_conv_fused_with_a_multiply_is_still_audited(tmp_path):
    """OpenVINO fuses a conv with the per-channel multiply after it and names the node after the multiply;
    the audit finds the layer by shape and keeps the mapping in the manifest for verify_bundle."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "conv.weight"),
        numpy_helper.from_array(rng.uniform(0.5, 2, (1, 4, 1, 1)).astype(np.float32), "gain"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv.weight"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["c", "gain"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fused",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 8, 8])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    report = NPU3720.build_bundle(model, {"conv": "fp16"}, None, tmp_path / "b")
    assert report.checks["precision_audit"]["passed"], report.checks["precision_audit"]
    node = _manifest(tmp_path / "b")["layer_nodes"]["conv"]
    assert node not in ("conv", "conv/WithoutBiases")  # really the fused, renamed node
    assert all(c.passed for c in vpu.verify_bundle(tmp_path / "b"))


def test_opset11_model_is_upgraded_to_13():
    """Squeeze's axes moved from an attribute to an input at opset 13: the converter rewrites it."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Squeeze", ["x"], ["s"], axes=[2, 3]),
        helper.make_node("Softmax", ["s"], ["y"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    upgraded = to_opset13(model)
    assert upgraded.opset_import[0].version == 13
    squeeze = next(n for n in upgraded.graph.node if n.op_type == "Squeeze")
    assert len(squeeze.input) == 2 and not squeeze.attribute
    x = np.random.default_rng(0).standard_normal((1, 4, 1, 1)).astype(np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]  # noqa: E731
    np.testing.assert_allclose(run(upgraded), run(model), rtol=1e-6)
