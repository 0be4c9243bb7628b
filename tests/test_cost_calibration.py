"""Calibration from whole-model measurements only."""

from __future__ import annotations

import pytest

from hanasc.cost_models.latency_calibration import fit_calibration, rmspe


def test_fit_recovers_scale_and_overhead():
    sums = [1e-3, 2e-3, 5e-3, 8e-3, 3e-3]
    calls = [10, 40, 20, 60, 30]
    measured = [2.5 * s + 20e-6 * c + 1e-4 for s, c in zip(sums, calls, strict=True)]
    cal = fit_calibration(sums, calls, measured, base="prior")
    assert cal.scale == pytest.approx(2.5, rel=1e-6)
    assert cal.per_call_s == pytest.approx(20e-6, rel=1e-5)
    assert cal.fixed_s == pytest.approx(1e-4, rel=1e-4)
    assert cal.fit_rmspe < 1e-6 and cal.n_models == 5
    one = fit_calibration([1e-3], [10], [3e-3], base="prior")  # too few rows: scale only
    assert one.scale == pytest.approx(3.0) and one.per_call_s == 0


def test_calibrate_from_csv_on_measured_models(test_models, tmp_path):
    import hanasc
    from hanasc.cost_models.device_timings import calibrate_from_csv
    from hanasc.cost_models.estimate import CostContext, estimate_costs
    from hanasc.cost_models.timing import time_executable
    from hanasc.targets import host

    ctx = CostContext(root=tmp_path)
    names = ["plain_conv", "inverted_residual", "se_hardswish", "dense_head"]
    mods = {n: hanasc.load_model(test_models[n]).mod for n in names}
    measured = {  # the shipped build, as hanasc compile measures it
        n: time_executable(host.build_artifact(mods[n]), mods[n], repeat=9, min_repeat_ms=20).median_ms
        for n in names
    }
    csv = tmp_path / "m.csv"
    csv.write_text("model,ms\n" + "".join(f"{test_models[n]},{measured[n]}\n" for n in names))
    before = {n: estimate_costs(hanasc.load_model(test_models[n]).mod, "host", ctx) for n in names}
    assert all(r.latency.source == "prior" for r in before.values())
    cal = calibrate_from_csv("host", csv, ctx, base="prior")
    assert cal.n_models == 4 and cal.device == "default" and "efficiency" in cal.prior
    assert ctx.device_calibration_path("host").is_file()
    after = {n: estimate_costs(hanasc.load_model(test_models[n]).mod, "host", ctx) for n in names}
    assert all(r.latency.source == "predicted" for r in after.values())
    assert all("interval_ms" in r.latency.detail for r in after.values())
    err_before = rmspe([before[n].latency.value for n in names], [measured[n] for n in names])
    err_after = rmspe([after[n].latency.value for n in names], [measured[n] for n in names])
    # fitted on these four: closer than the prior on them (four models of 9-130 us, whose prior ratios
    # span 0.6-1.7x: one scale, what leave-one-out picks from four, leaves ~40 % RMSPE)
    assert err_after < err_before and err_after < 50.0
    other = CostContext(root=tmp_path, device="another-board")  # one calibration per device
    assert (
        estimate_costs(hanasc.load_model(test_models[names[0]]).mod, "host", other).latency.source == "prior"
    )


def test_bad_csv_is_a_one_line_error(tmp_path):
    from hanasc.cost_models.device_timings import read_measurements_csv
    from hanasc.cost_models.estimate import CalibrationInputError

    bad = tmp_path / "bad.csv"
    bad.write_text("name,time\nx,1\n")
    with pytest.raises(CalibrationInputError, match="columns 'model' and 'ms'"):
        read_measurements_csv(bad)
    bad.write_text("model,ms\nmissing.onnx,3\n")
    with pytest.raises(CalibrationInputError, match="not found"):
        read_measurements_csv(bad)
