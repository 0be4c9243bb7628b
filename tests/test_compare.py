"""`--compare`: the result timed alternately with onnxruntime and OpenVINO (fp32, int8) of the original,
scored with the compile's metric; absent with a reason where the result does not run here; bad engines
refused in one line before any work; an engine that cannot take the model is a row saying so."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import test_cli_compile
from conftest import run_cli
from test_bad_input import assert_one_line_error

from hanasc.compile.compare import compare_section, why_absent
from hanasc.compile.context import CompileOptions, Split, Stage
from hanasc.compile.peers import parse_compare
from hanasc.compile.report_markdown import _compare_lines
from hanasc.core.errors import HanascError
from hanasc.core.metrics import METRICS
from hanasc.frontend.onnx_loader import InputSpec
from hanasc.search.selection import AccuracyFloor
from hanasc.targets.registry import get_target

# test_cli_compile's fixtures: its tiny host compile (dense_head, agreement, --budget 5x) and its data
compiled, data = test_cli_compile.compiled, test_cli_compile.data
NAMES = ["onnxruntime fp32", "onnxruntime int8", "OpenVINO fp32", "OpenVINO int8"]


@pytest.fixture(scope="module")
def compiled_report(compiled):
    """report.json and report.md of test_cli_compile's tiny host compile (the default --compare: both)."""
    out, result, _ = compiled
    assert result.returncode == 0, result.stderr
    return json.loads((out / "report.json").read_text()), (out / "report.md").read_text(), result


def test_host_report_has_the_four_rows_with_ratios(compiled_report):
    report, _, _ = compiled_report
    compare = report["compare"]
    assert compare["engines"] == ["onnxruntime", "openvino"]
    rows = {row["name"]: row for row in compare["rows"]}
    assert list(rows) == NAMES
    result_ms = compare["result"]["ms"]
    assert result_ms["source"] == "measured" and result_ms["runs"] == compare["rounds"]
    assert compare["result"]["metric"] == report["result"]["accuracy"]
    floor = report["selection"]["accuracy_floor"]
    for name, row in rows.items():
        assert "failed" not in row, row
        assert row["ms"]["source"] == "measured" and row["ms"]["value"] > 0, name
        assert row["ms"]["threads"] == compare["threads"] >= 1
        assert row["provenance"].startswith(f"measured here: {compare['rounds']} interleaved runs, median")
        assert row["metric"]["metric"] == "agreement" and row["metric"]["on"].startswith("held-out split")
        assert row["within_floor"] == (row["metric"]["value"] >= floor - 1e-4), name
        # the median per-round ratio sits near the ratio of the medians (the same loop)
        assert 0.5 < row["ratio"] / (result_ms["value"] / row["ms"]["value"]) < 2, row
    assert rows["onnxruntime fp32"]["metric"]["value"] == 1.0  # onnxruntime runs the original itself
    assert rows["OpenVINO fp32"]["metric"]["value"] >= 0.95
    assert "quantize_static" in rows["onnxruntime int8"]["how"]
    assert "nncf.quantize" in rows["OpenVINO int8"]["how"]
    ratios = [f"{rows[n]['ratio']:.2f} of {n}" for n in ("onnxruntime int8", "OpenVINO int8")]
    assert all(r in compare["summary"] for r in ratios)


def test_host_markdown_says_the_ratio_to_each_int8(compiled_report):
    _, markdown, result = compiled_report
    line = next(line for line in markdown.splitlines() if line.startswith("**Result:"))
    assert " of onnxruntime int8 (" in line and " of OpenVINO int8 (" in line
    assert "interleaved runs, median" in line
    for name in NAMES:
        assert f"| {name} | " in markdown
    assert "Statistics collection" not in result.stdout + result.stderr  # NNCF's bars stay quiet
    against = next(line for line in result.stdout.splitlines() if line.startswith("against:"))
    assert " of onnxruntime int8 (" in against and "interleaved runs, median" in against  # the console too
    assert "pre-processing before quantization" not in result.stdout + result.stderr


def _run(target: str, compare=None, rpc=None) -> SimpleNamespace:
    options = CompileOptions(target=target, compare=compare, rpc=rpc)
    return SimpleNamespace(options=options, info=get_target(target), session=None, stage=Stage())


@pytest.mark.parametrize("target", ["cortex-a78", "jetson-orin", "npu3720"])
def test_absent_with_its_reason_off_the_host(target):
    section = compare_section(_run(target), {"executable": None}, AccuracyFloor(1.0, 1.0))
    assert section == {
        "absent": f"not timed: the result runs on {target}, the peers here run on the host CPU"
    }
    assert _compare_lines(section)[0].startswith(
        f"Against other runtimes: not timed: the result runs on {target}"
    )


def test_absent_when_turned_off_or_nothing_to_time():
    assert why_absent(_run("host", compare=()), object()) == "not compared: --compare none"
    assert (
        why_absent(_run("host"), None) == "not timed: no host library of the result to time beside the peers"
    )
    assert why_absent(_run("host"), object()) is None


def test_parse_compare(monkeypatch):
    assert parse_compare(None) is None
    assert parse_compare("none") == ()
    assert parse_compare(" OpenVINO, onnxruntime,openvino") == ("openvino", "onnxruntime")
    with pytest.raises(HanascError, match="--compare foo: unknown engine"):
        parse_compare("onnxruntime,foo")
    monkeypatch.setitem(sys.modules, "nncf", None)  # importing it fails
    with pytest.raises(HanascError, match=r"--compare openvino: not installed here \(cannot import nncf\)"):
        parse_compare("openvino")
    assert parse_compare("onnxruntime") == ("onnxruntime",)


def test_unknown_engine_is_one_line_and_writes_nothing(test_models, data, tmp_path):
    out = tmp_path / "out"
    result = run_cli("compile", str(test_models["dense_head"]), "--data", str(data), "--out", str(out),
                     "--compare", "foo")  # fmt: skip
    assert_one_line_error(result, "--compare foo", "unknown engine")
    assert not out.exists()


def test_engine_not_installed_is_one_line_and_writes_nothing(test_models, data, tmp_path):
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['openvino'] = None\n")
    out = tmp_path / "out"
    result = run_cli(
        "compile", str(test_models["dense_head"]), "--data", str(data), "--out", str(out),
        "--compare", "openvino", env={"PYTHONPATH": str(blocker)},
    )  # fmt: skip
    assert_one_line_error(result, "--compare openvino: not installed here", "openvino")
    assert not out.exists()


def _save_det_model(path: Path) -> None:
    """x (1, 4, 4) -> Det: onnxruntime runs it, OpenVINO has no conversion rule for Det."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Det", ["x"], ["y"])],
        "det",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _relu_executable():
    """A host executable taking (1, 4, 4): the 'result' the peers are timed beside."""
    import tvm
    from tvm import relax

    builder = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((1, 4, 4), "float32"))
    with builder.function("main", [x]):
        builder.emit_func_output(builder.emit(relax.op.nn.relu(x)))
    return tvm.compile(builder.get(), target="llvm")


def test_an_engine_that_cannot_take_the_model_is_a_row_saying_so(tmp_path):
    import onnxruntime as ort

    path = tmp_path / "det.onnx"
    _save_det_model(path)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 4, 4)).astype(np.float32)
    reference = np.concatenate([ort.InferenceSession(str(path)).run(None, {"x": s[None]})[0] for s in x[6:]])
    run = SimpleNamespace(
        options=CompileOptions(measure_repeats=5),
        info=get_target("host"),
        session=None,
        stage=Stage(),
        model=SimpleNamespace(path=path, inputs=[InputSpec("x", (1, 4, 4), "float32")]),
        split=Split(x[:6], None, x[6:], None, {}),
        ref_eval=reference,
        metric=METRICS["fidelity"],
        probe=[x[:1]],
        work=tmp_path,
    )
    accuracy = {"value": 1.0, "source": "measured"}
    section = compare_section(
        run, {"executable": _relu_executable(), "accuracy": accuracy}, AccuracyFloor(1.0, 1.0)
    )
    rows = {row["name"]: row for row in section["rows"]}
    assert list(rows) == NAMES
    for name in ("OpenVINO fp32", "OpenVINO int8"):
        assert "Det" in rows[name]["failed"], rows[name]
    assert rows["onnxruntime fp32"]["metric"]["value"] == 1.0
    assert rows["onnxruntime fp32"]["ms"]["source"] == "measured" and rows["onnxruntime fp32"]["ratio"] > 0
    assert "OpenVINO int8 failed (" in section["summary"] and " of onnxruntime int8 (" in section["summary"]
    markdown = "\n".join(_compare_lines(section))
    assert "| OpenVINO fp32 | failed: " in markdown and "Det" in markdown
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det.onnx"]  # the quantized file was temporary
