"""The Python API (issue 34, item 1): every command as a function with the CLI's option names and defaults,
typed frozen results whose figures say where they came from, errors as HanascError (never an exit), and
the round trip: compile a small model, read the result, apply its Config, the same library bytes."""

from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hanasc
from hanasc.api.apply_job import apply as api_apply
from hanasc.api.options import CompileRequest
from hanasc.api.results import ApplyResult, CompileResult, ReportFigure
from hanasc.cli import compile_command, costs_command
from hanasc.cli.app import apply as cli_apply

TINY = {"samples": 30, "population": 12, "generations": 3, "verify_limit": 2, "seed": 1}
SOURCES = ("measured", "predicted", "prior")


def tiny_model(path: Path, inputs: dict[str, int] | None = None) -> Path:
    """conv -> relu -> conv -> relu -> pool -> dense on 16x16 images; ``inputs`` name -> channels (one
    conv per input, summed: a multi-input model)."""
    rng = np.random.default_rng(0)
    inputs = inputs or {"image": 3}

    def weight(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    nodes, inits = [], []
    for i, (name, channels) in enumerate(inputs.items()):
        nodes.append(
            helper.make_node("Conv", [name, f"w{i}", f"b{i}"], [f"c{i}"], name=f"conv_{name}", pads=[1] * 4)
        )
        inits += [weight(f"w{i}", 16, channels, 3, 3), weight(f"b{i}", 16)]
    summed = "c0"
    for i in range(1, len(inputs)):
        nodes.append(helper.make_node("Add", [summed, f"c{i}"], [f"s{i}"]))
        summed = f"s{i}"
    nodes += [
        helper.make_node("Relu", [summed], ["r1"]),
        helper.make_node("Conv", ["r1", "wm", "bm"], ["c9"], name="conv_mid", pads=[1] * 4),
        helper.make_node("Relu", ["c9"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], name="fc", transB=1),
    ]
    inits += [weight("wm", 32, 16, 3, 3), weight("bm", 32), weight("wf", 10, 32), weight("bf", 10)]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, c, 16, 16]) for n, c in inputs.items()],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("api")
    model = tiny_model(folder / "model.onnx")
    data = folder / "calib.npz"
    np.savez(data, image=np.random.default_rng(1).standard_normal((32, 3, 16, 16)).astype(np.float32))
    return folder, model, data


@pytest.fixture(scope="module")
def compiled(files):
    folder, model, data = files
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HANASC_CACHE", str(folder / "cache"))
        result = hanasc.compile(
            model, target="host", budget="0.9x", data=str(data), out=folder / "out", **TINY
        )
    return folder, model, result


def test_round_trip_compile_then_apply_gives_the_same_library(compiled):
    folder, model, result = compiled
    assert isinstance(result, CompileResult) and result.met and result.target == "host"
    for figures in (result.original, result.result):
        for fig in (figures.latency_ms, figures.memory_mb, figures.accuracy, figures.energy_mj):
            assert isinstance(fig, ReportFigure) and fig.source in SOURCES
            assert fig.provenance.startswith(fig.source)
    assert (
        result.original.latency_ms.source == "measured"
        and "median of" in result.original.latency_ms.provenance
    )
    assert result.result.latency_ms.source == "measured"
    assert "held-out" in result.result.accuracy.provenance
    report = result.report
    assert result.result.latency_ms.value == report["result"]["latency_ms"]["value"]
    assert result.original.accuracy.value == report["original"]["accuracy"]["value"]
    art = result.artifact
    assert art.library == folder / "out" / "model.so" and art.library.is_file()
    assert art.report_json.is_file() and art.report_md.is_file() and art.config.is_file()
    assert result.config.to_json() == json.loads(art.config.read_text())
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.met = False  # type: ignore[misc]

    again = hanasc.apply(model, art.config, out=folder / "replay")
    assert isinstance(again, ApplyResult)
    assert again.artifact.library_sha256 == art.library_sha256  # TVM host builds are byte-deterministic
    assert again.config.to_json() == result.config.to_json()
    # the Config object with the compile's folder to replay from: the same bytes again
    third = hanasc.apply(model, result.config, out=folder / "replay2", replay_dir=art.out)
    assert third.artifact.library_sha256 == art.library_sha256


def test_compile_is_both_the_function_and_the_sub_package(compiled):
    assert callable(hanasc.compile)
    assert hanasc.compile.pipeline.compile_model is not None  # the sub-package's modules stay reachable
    from hanasc.compile.pipeline import compile_model

    assert compile_model is hanasc.compile.pipeline.compile_model


def test_import_hanasc_is_light():
    """``import hanasc`` and the light parts of the API (inspect, costs, result types) load no TVM."""
    code = "import sys, hanasc; hanasc.inspect, hanasc.costs, hanasc.CompileResult; print(*sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert not {"tvm", "torch", "openvino"} & set(loaded.stdout.split())


def _defaults(fn, skip=()) -> dict:
    return {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty and name not in skip
    }


def test_the_api_has_the_cli_options_and_defaults():
    request = {f.name: f.default for f in dataclasses.fields(CompileRequest)}
    assert _defaults(compile_command.compile_, skip=("input_shape",)) == request
    assert _defaults(cli_apply) == _defaults(api_apply, skip=("replay_dir",))
    assert _defaults(costs_command.costs, skip=("as_json",)) == _defaults(hanasc.costs)
    assert _defaults(costs_command.calibrate) == _defaults(hanasc.calibrate)
    assert _defaults(costs_command.profile) == _defaults(hanasc.profile, skip=("progress",))


def test_bad_options_raise_one_line_errors_and_write_nothing(files):
    folder, model, data = files
    cases = [
        ({"space": "everything"}, "--space everything: joint, arch or quant"),
        ({"budgte": "8ms"}, "unknown option 'budgte'"),
        ({"budget": "8 parsecs"}, "--budget"),
        ({"max_loss": -1.0}, "--max-loss"),
        ({"data": str(folder / "missing.npz")}, "missing.npz"),
    ]
    for options, needle in cases:
        out = folder / "never"
        with pytest.raises(hanasc.HanascError) as error:
            hanasc.compile(model, **{"data": str(data), "out": out, **options})
        assert needle in str(error.value) and "\n" not in str(error.value)
        assert not out.exists()


def test_no_model_within_the_budget_raises_with_what_is_reachable(files):
    folder, model, data = files
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HANASC_CACHE", str(folder / "cache-infeasible"))
        with pytest.raises(hanasc.NoModelMeetsBudgets) as error:
            hanasc.compile(model, budget="0.0001ms", data=str(data), out=folder / "none", **TINY)
    reachable = error.value.reachable
    assert reachable.fastest_latency_ms > 0.0001 and reachable.latency_source in SOURCES
    assert "infeasible" in str(error.value) and error.value.exit_code == 2
    assert not (folder / "none").exists()


def test_inspect_and_costs(files):
    _, model, _ = files
    table = hanasc.inspect(model)
    assert [layer.name for layer in table.layers] == ["conv_image", "conv_mid", "fc"]
    assert table.to_json()["inputs"] == [{"name": "image", "shape": [1, 3, 16, 16], "dtype": "float32"}]
    costs = hanasc.costs(model, target="host")
    assert costs.target == "host" and len(costs.models) == 1
    assert costs.models[0].latency_ms.source in SOURCES and costs.models[0].latency_ms.value > 0
    assert costs.models[0].to_json()["model"] == str(model)
