"""`hanasc apply`: materialize a Config, compile for the host, write library + summary; bad Configs exit 2."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from test_bad_input import assert_one_line_error


def write_config(path, layers: dict, skip: list | None = None):
    path.write_text(json.dumps({"layers": layers, "skip": skip or []}))
    return path


def test_apply_writes_library_and_summary(tmp_path, test_models):
    data = tmp_path / "calib.npz"
    np.savez(data, x=np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32))
    config = write_config(
        tmp_path / "c.json",
        {
            "stem.stem.0": {"w_bits": 8, "a_bits": 8},
            "block.block.0": {"width": 0.5, "w_bits": 4},
            "block.block.3": {"width": 0.5},
            "block.block.6": {"w_bits": 2},
        },
    )
    out = tmp_path / "out"
    result = run_cli(
        "apply", str(test_models["inverted_residual"]), str(config), "--out", str(out), "--data", str(data)
    )
    assert result.returncode == 0, result.stderr
    assert {p.name for p in out.iterdir()} >= {"model.so", "config.json", "summary.json", "summary.md"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["weight_bytes_after"] < summary["weight_bytes_before"]
    changed = {layer["name"]: layer for layer in summary["layers"]}
    assert changed["block.block.0"]["bytes_after"] < changed["block.block.0"]["bytes_before"] / 4
    assert "block.block.6" in changed and "| block.block.0 |" in (out / "summary.md").read_text()
    # the written config replays
    again = run_cli(
        "apply",
        str(test_models["inverted_residual"]),
        str(out / "config.json"),
        "--out",
        str(tmp_path / "again"),
        "--data",
        str(data),
    )
    assert again.returncode == 0, again.stderr


def test_apply_unknown_layer(tmp_path, test_models):
    config = write_config(tmp_path / "c.json", {"no.such.layer": {"w_bits": 8}})
    out = tmp_path / "out"
    result = run_cli("apply", str(test_models["plain_conv"]), str(config), "--out", str(out))
    assert_one_line_error(result, "no.such.layer")
    assert not out.exists()


def test_apply_choice_the_layer_cannot_take(tmp_path, test_models):
    config = write_config(tmp_path / "c.json", {"block.block.3": {"separable": True}})
    out = tmp_path / "out"
    result = run_cli("apply", str(test_models["inverted_residual"]), str(config), "--out", str(out))
    assert_one_line_error(result, "block.block.3", "depthwise")
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_apply_width_leaving_zero_channels(tmp_path, test_models):
    config = write_config(tmp_path / "c.json", {"conv": {"width": 0.01}})
    result = run_cli("apply", str(test_models["dense_head"]), str(config), "--out", str(tmp_path / "o"))
    assert_one_line_error(result, "conv")


def test_apply_malformed_json(tmp_path, test_models):
    config = tmp_path / "c.json"
    config.write_text("{layers: nope")
    result = run_cli("apply", str(test_models["plain_conv"]), str(config), "--out", str(tmp_path / "o"))
    assert_one_line_error(result, "c.json", "malformed JSON")


def test_apply_int8_activations_without_data(tmp_path, test_models):
    config = write_config(tmp_path / "c.json", {"body.body.0": {"w_bits": 8, "a_bits": 8}})
    result = run_cli("apply", str(test_models["plain_conv"]), str(config), "--out", str(tmp_path / "o"))
    assert_one_line_error(result, "body.body.0", "--data")


def test_apply_unknown_block(tmp_path, test_models):
    config = write_config(tmp_path / "c.json", {}, skip=["blocks.99"])
    result = run_cli(
        "apply", str(test_models["inverted_residual"]), str(config), "--out", str(tmp_path / "o")
    )
    assert_one_line_error(result, "blocks.99")


@pytest.mark.parametrize(
    "target,files",
    [
        ("cortex-a78", {"model.so", "runner", "rt", "README.md"}),
        ("jetson-orin", {"model.so", "kernels.cubin", "kernels.ptx", "README.md"}),
        ("npu3720", {"model.xml", "model.bin", "model.onnx", "vpu_manifest.json"}),
    ],
)
def test_apply_builds_target_bundle(tmp_path, test_models, target, files):
    layers = {
        "stem.stem.0": {"separable": True},
        "block.block.0": {"width": 0.5},
        "block.block.3": {"width": 0.5},
        "block.block.6": {"w_bits": 8},
    }
    config = write_config(tmp_path / "c.json", layers)
    out = tmp_path / "out"
    result = run_cli(
        "apply", str(test_models["inverted_residual"]), str(config), "--target", target, "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert files <= {p.name for p in (out / target).iterdir()}
    assert json.loads((out / "summary.json").read_text())["bundle"]["target"] == target
    if target == "npu3720":  # the architecture changes are in the exported graph
        import onnx

        graph = onnx.load(str(out / target / "model.onnx")).graph
        assert {"stem.stem.0.dw", "stem.stem.0.pw"} <= {n.name for n in graph.node}
        widths = {i.name: list(i.dims) for i in graph.initializer}
        assert widths["block.block.0.weight"][0] == 32


def test_apply_choice_the_target_cannot_run(tmp_path, test_models):
    config = write_config(tmp_path / "c.json", {"block.block.6": {"w_bits": 8, "a_bits": 8}})
    result = run_cli(
        "apply",
        str(test_models["inverted_residual"]),
        str(config),
        "--target",
        "myriadx",
        "--out",
        str(tmp_path / "o"),
    )
    assert_one_line_error(result, "myriadx", "block.block.6")


def test_targets_lists_every_target():
    result = run_cli("targets", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert {"host", "cortex-a78", "jetson-orin", "npu3720", "npu4000", "myriadx"} <= set(rows)
    assert rows["cortex-a78"]["tvm_target"]["mtriple"] == "aarch64-linux-gnu"
    assert all(row["cost_model"].startswith(("prior", "predicted")) for row in rows.values())
    assert all(row["kernels"] for row in rows.values())  # how each precision is computed, per target
    flags = Path("/proc/cpuinfo").read_text()
    x86 = platform.machine() == "x86_64"
    vnni = x86 and "avx512_vnni" in flags and "avx512vl" in flags
    assert ("vpdpbusd" in rows["host"]["kernels"]) == vnni  # the int8 instruction this CPU runs
    assert ("vpmaddwd" in rows["host"]["kernels"]) == ("avx2" in flags and x86 and not vnni)


def test_costs_labels_every_figure(test_models):
    result = run_cli("costs", str(test_models["inverted_residual"]), "--target", "cortex-a78", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    text = json.dumps(report)
    assert '"source": "prior"' in text or '"source": "predicted"' in text


def test_apply_replays_tuned_weights_beside_the_config(tmp_path, test_models):
    """tuned_weights.npz beside CONFIG (as compile --finetune-minutes writes it) is what the library holds."""
    import tvm

    import hanasc
    from hanasc.frontend.calibration import calibrate
    from hanasc.passes.config import Config, LayerChoice
    from hanasc.recovery.finetune import save_tuned
    from hanasc.search.simulator import Simulator
    from hanasc.targets import host

    model = hanasc.load_model(test_models["plain_conv"])
    x = np.random.default_rng(0).standard_normal((6, 3, 32, 32)).astype(np.float32)
    config = Config({layer.name: LayerChoice(w_bits=4, a_bits=8) for layer in model.layers})
    folder = tmp_path / "compiled"
    folder.mkdir()
    config.save(folder / "config.json")
    ranges = calibrate(model, x, method="minmax")
    ranges.save(folder / "activation_ranges.json")
    rng = np.random.default_rng(1)
    tuned = {name: value + 0.05 * rng.standard_normal(value.shape).astype(np.float32)
             for name, value in model.weights().items()}  # fmt: skip
    save_tuned(folder / "tuned_weights.npz", tuned)
    out = tmp_path / "out"
    result = run_cli("apply", str(test_models["plain_conv"]), str(folder / "config.json"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "tuned_weights.npz").is_file() and "fine-tuned weights replayed" in result.stdout
    library = tvm.runtime.load_module(str(out / "model.so"))
    sim = Simulator(model, batch=2)
    want = sim.run(config, x, ranges, feeds=sim.feeds(config, ranges, values=tuned))
    untuned = sim.run(config, x, ranges)
    got = np.concatenate([host.run(library, [s[None]])[0] for s in x])
    step = (want.max() - want.min()) / 255
    assert np.abs(got - want).max() <= step < np.abs(untuned - want).max()
    # a tuned file that does not fit the model: one line, nothing written
    save_tuned(folder / "tuned_weights.npz", {"no.such.weight": np.zeros(3, np.float32)})
    bad = run_cli(
        "apply", str(test_models["plain_conv"]), str(folder / "config.json"), "--out", str(tmp_path / "b")
    )
    assert_one_line_error(bad, "tuned_weights.npz", "no.such.weight")
    assert not (tmp_path / "b").exists()
