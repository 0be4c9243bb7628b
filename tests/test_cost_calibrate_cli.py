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
