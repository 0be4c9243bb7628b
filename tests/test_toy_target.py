"""Adding a target is its module plus one registration call: a toy LLVM CPU target, written into a
temporary folder, is looked up, listed by `hanasc targets`, checked against a Config and costed."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from hanasc.core.errors import HanascError
from hanasc.passes.config import Config, LayerChoice
from hanasc.targets import registry
from hanasc.targets.base import SPEC_DIR

MODULE = "hanasc_toy_x86_target"
TOY = textwrap.dedent(
    '''
    """A toy x86 CPU: the host's lowering and bundle under a name of its own."""

    import dataclasses
    from pathlib import Path

    from hanasc.targets.base import Choices
    from hanasc.targets.tvm_family import LLVM_CPU_COST, LlvmCpuTarget

    TARGETS = (
        LlvmCpuTarget(
            name="toy-x86",
            aliases=("toy",),
            description="a toy x86-64 CPU (host lowering, its own spec)",
            tvm_target_json={"kind": "llvm", "mcpu": "x86-64"},
            choices=Choices(compute_weight_bits=(32, 8), storage_weight_bits=(4,), act_bits=(32, 8)),
            cost=dataclasses.replace(LLVM_CPU_COST, spec_file=str(Path(__file__).with_name("toy-x86.json"))),
            builder="hanasc.targets.host_bundle:build_bundle",
            kernel_notes="the host's kernels",
        ),
    )
    '''
)


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy target's module and spec in ``tmp_path``, registered with one call (undone afterwards)."""
    (tmp_path / f"{MODULE}.py").write_text(TOY)
    spec = json.loads((SPEC_DIR / "cortex-a78.json").read_text())
    (tmp_path / "toy-x86.json").write_text(json.dumps({**spec, "name": "toy-x86"}))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "TARGET_MODULES", list(registry.TARGET_MODULES))
    registry.register(MODULE)  # the one registration call
    yield registry.get_target("toy-x86")
    sys.modules.pop(MODULE, None)


def test_lookup_by_name_and_alias(toy):
    assert registry.get_target("TOY") is toy
    assert [t.name for t in registry.all_targets()][-1] == "toy-x86"
    assert toy.measurer(None) is None  # a device target: measured over RPC only
    with pytest.raises(HanascError, match="give --rpc"):
        toy.check_tuning(None)


def test_listed_by_the_cli(toy):
    from typer.testing import CliRunner

    from hanasc.cli.app import app

    result = CliRunner().invoke(app, ["targets", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["toy-x86"]["aliases"] == ["toy"]
    assert rows["toy-x86"]["tvm_target"] == {"kind": "llvm", "mcpu": "x86-64"}
    assert rows["toy-x86"]["choices"]["storage_weight_bits"] == [4]


def test_check_choices(toy, test_models):
    import hanasc

    layers = hanasc.load_model(test_models["dense_head"], None, import_tvm=False).layers
    conv = next(layer.name for layer in layers if layer.op == "conv")
    registry.check_choices("toy", Config(layers={conv: LayerChoice(w_bits=4, a_bits=8)}), layers)
    with pytest.raises(registry.UnsupportedChoiceError, match=r"target 'toy-x86', layer .*: w_bits=2"):
        registry.check_choices("toy-x86", Config(layers={conv: LayerChoice(w_bits=2)}), layers)


def test_cost_lookup(toy, tmp_path):
    from hanasc.cost_models.spec import load_spec
    from hanasc.cost_models.target_info import get_target

    cost = get_target("toy")
    assert (cost.name, cost.compiler, cost.device_type, cost.prior_lowering) == (
        "toy-x86",
        "tvm-llvm",
        "cpu",
        "shipped",
    )
    assert cost.spec_path == tmp_path / "toy-x86.json"
    assert load_spec("toy-x86").name == "toy-x86"
