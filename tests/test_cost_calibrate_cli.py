"""``hanasc calibrate`` on the command line: one calibration per device, export/import, bad input."""

from __future__ import annotations

import json

from conftest import run_cli
from test_cost_device_calibration import _fit, _models


def test_calibrate_cli_import_export_and_bad_input(tmp_path):
    env = {"HANASC_CACHE": str(tmp_path / "cache")}
    bad = run_cli("calibrate", "--target", "cortex-a78", env=env)
    assert bad.returncode == 2 and "give a measurements CSV" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    terms, measured = _models(10)
    shared = tmp_path / "board.json"
    shared.write_text(json.dumps(_fit(terms, measured).to_json()))
    done = run_cli("calibrate", "--import", str(shared), "--device", "lab-board", env=env)
    assert done.returncode == 0, done.stderr
    assert "for device 'lab-board'" in done.stdout and "held-out RMSPE" in done.stdout
    assert (tmp_path / "cache" / "calibration" / "cortex-a78" / "lab-board.json").is_file()
    out = tmp_path / "again.json"
    again = run_cli(
        "calibrate", "--target", "cortex-a78", "--device", "lab-board", "--export", str(out), env=env
    )
    assert again.returncode == 0 and json.loads(out.read_text())["device"] == "lab-board"
    broken = tmp_path / "broken.json"
    broken.write_text("not json")
    failed = run_cli("calibrate", "--import", str(broken), env=env)
    assert failed.returncode == 2 and str(broken) in failed.stderr
    assert not (tmp_path / "cache" / "calibration" / "cortex-a78" / "default.json").exists()


def test_costs_cli_takes_several_models_without_memory(test_models, tmp_path):
    env = {"HANASC_CACHE": str(tmp_path / "cache")}
    a, b = str(test_models["plain_conv"]), str(test_models["dense_head"])
    done = run_cli("costs", a, b, "--target", "cortex-a78", "--json", env=env)
    assert done.returncode == 0, done.stderr
    reports = json.loads(done.stdout)
    assert [r["model"] for r in reports] == [a, b]
    assert all(r["memory_bytes"] == {} and r["latency_ms"]["source"] == "prior" for r in reports)
    assert all("efficiency" in r["latency_ms"]["model"] for r in reports)
    bad = run_cli("costs", a, "--confidence", "1.5", env=env)
    assert bad.returncode == 2 and "--confidence" in bad.stderr


def test_costs_cli_reads_the_kernels_an_int8_config_ships(test_models, tmp_path):
    """``hanasc costs --config`` (uniform W8A8) estimates the int8 dot-product kernels the build runs (weights
    bound as the build binds them), not int32-widened convs on constant weights."""
    import numpy as np

    import hanasc

    path = test_models["inverted_residual"]
    loaded = hanasc.load_model(path)
    layers = loaded.layers
    config = tmp_path / "w8a8.json"
    config.write_text(json.dumps({"layers": {layer.name: {"w_bits": 8, "a_bits": 8} for layer in layers}}))
    data = tmp_path / "calib.npz"
    np.savez(data, x=np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32))
    env = {"HANASC_CACHE": str(tmp_path / "cache")}
    done = run_cli(
        "costs",
        str(path),
        "--target",
        "host",
        "--config",
        str(config),
        "--data",
        str(data),
        "--json",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    names = [kernel["name"] for kernel in json.loads(done.stdout)["kernels"]]
    assert sum("conv2d_nchwc_int_" in name for name in names) == 2, names  # the expand and project 1x1s
