"""`hanasc inspect` and `hanasc models` from the shell."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from conftest import run_cli


def test_help_lists_commands_and_each_has_examples():
    exe = shutil.which("hanasc")
    assert exe, "the hanasc console script is installed"
    result = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("inspect", "models", "demo"):
        assert command in result.stdout
    for command in (["inspect"], ["models", "fetch"], ["models", "list"], ["demo"]):
        sub = run_cli(*command, "--help")
        assert sub.returncode == 0 and "Example" in sub.stdout, command


def test_inspect_json_keys(test_models):
    result = run_cli("inspect", str(test_models["dense_head"]), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert {"macs", "params", "peak_activation_bytes"} <= set(data["totals"])
    for layer in data["layers"]:
        assert {"name", "op", "macs", "params", "weight_bytes", "out_shape"} <= set(layer)
    assert [layer["op"] for layer in data["layers"]] == ["conv", "dense", "dense"]


def test_inspect_table(test_models):
    result = run_cli("inspect", str(test_models["inverted_residual"]))
    assert result.returncode == 0, result.stderr
    assert "depthwise_conv" in result.stdout and "peak activation memory" in result.stdout


@pytest.mark.slow
def test_inspect_efficientnet_lite0(effnet_path):
    result = run_cli("inspect", str(effnet_path), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    ops = [layer["op"] for layer in data["layers"]]
    assert ops.count("conv") + ops.count("depthwise_conv") == 49
    assert ops[-1] == "dense" and ops.count("dense") == 1
    assert data["totals"]["macs"] == pytest.approx(385e6, rel=0.02)
    assert data["totals"]["params"] == pytest.approx(4.63e6, rel=0.02)
    assert sum(layer["macs"] for layer in data["layers"]) == data["totals"]["macs"]


def test_demo_budget_follows_the_cpu_int8_kernels():
    """0.6 of the original where int8 runs on AVX512-VNNI (met there at 0.58x), 0.8 on AVX2 only."""
    import tvm

    from hanasc.cli.compile_command import demo_budget_fraction

    vnni = tvm.target.Target({"kind": "llvm", "mcpu": "icelake-server"})
    avx2 = tvm.target.Target({"kind": "llvm", "mcpu": "znver3"})
    assert demo_budget_fraction(vnni)[0] == 0.6 and demo_budget_fraction(avx2)[0] == 0.8
    assert "AVX512-VNNI" in demo_budget_fraction(vnni)[1]
