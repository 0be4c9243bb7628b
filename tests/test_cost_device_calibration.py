"""Device calibration: per-kind factors, per-call overhead, XGBoost residual, interval, storage per device."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hanasc.cost_models.efficiency import KINDS
from hanasc.cost_models.latency_calibration import DeviceCalibration, ModelTerms, fit_device

TRUE = {"conv": 2.0, "pointwise": 1.5, "depthwise": 4.0, "dense": 1.0, "pool": 1.0, "elementwise": 3.0}


def _models(n: int, seed: int = 0, noise: float = 0.01, bend=None):
    rng = np.random.default_rng(seed)
    terms, measured = [], []
    for _ in range(n):
        by_kind = {k: float(rng.uniform(0, 2e-3)) for k in KINDS}
        calls = int(rng.integers(10, 80))
        t = ModelTerms(by_kind, calls, flops=1e6 * calls, by_precision={"fp32": sum(by_kind.values())})
        y = sum(TRUE[k] * s for k, s in by_kind.items()) + 5e-6 * calls
        if bend is not None:
            y *= bend(t)
        terms.append(t)
        measured.append(y * float(np.exp(rng.normal(0, noise))))
    return terms, measured


def _fit(terms, measured, **kw) -> DeviceCalibration:
    return fit_device(terms, measured, device="d", target="cortex-a78", kinds=KINDS, prior="test prior", **kw)


def test_ten_timings_bend_per_kind_and_generalize():
    terms, measured = _models(10)
    cal = _fit(terms, measured)
    assert cal.method == "per-kind" and cal.n_models == 10
    assert cal.cv["folds"] == "leave-one-out" and cal.cv["rmspe"] < 10
    test_terms, test_y = _models(50, seed=1)
    pred = np.array([cal.predict_s(t) for t in test_terms])
    assert np.mean(np.abs(pred / test_y - 1) <= 0.10) >= 0.9
    one = _fit(terms, measured, allow_xgboost=False)
    assert one.cv["candidates"]["one-scale@inf"] > cal.cv["rmspe"]  # one scale cannot fit per-kind truth


def test_uniform_truth_keeps_factors_together():
    rng = np.random.default_rng(3)
    terms = [ModelTerms({k: float(rng.uniform(0, 1e-3)) for k in KINDS}, 20) for _ in range(10)]
    measured = [2.5 * t.total_s * float(np.exp(rng.normal(0, 0.01))) for t in terms]
    cal = _fit(terms, measured)
    assert all(f == pytest.approx(2.5, rel=0.1) for f in cal.factors.values())


def test_thirty_timings_try_an_xgboost_residual():
    terms, measured = _models(40, bend=lambda t: 1.0 + 0.8 * (t.calls > 45))  # what no factor explains
    cal = _fit(terms, measured)
    assert "per-kind+xgboost@" + f"{cal.ridge:g}" in cal.cv["candidates"] or cal.method == "per-kind+xgboost"
    assert cal.method == "per-kind+xgboost" and cal.xgb_json
    again = DeviceCalibration.from_json(json.loads(json.dumps(cal.to_json())))
    assert again.predict_s(terms[0]) == pytest.approx(cal.predict_s(terms[0]), rel=1e-6)


def test_interval_from_held_out_errors():
    terms, measured = _models(20, noise=0.05)
    cal = _fit(terms, measured)
    lo, hi = cal.interval(1.0, 0.9)
    assert lo < 1.0 < hi and cal.upper(1.0, 0.9) <= hi * 1.0001
    assert cal.upper(1.0, 0.95) >= cal.upper(1.0, 0.8)
    assert len(cal.residuals_log) == 20


def test_legacy_calibration_is_migrated_with_one_warning(tmp_path, capsys):
    from hanasc.cost_models.estimate import CostContext, load_device_calibration

    ctx = CostContext(root=tmp_path)
    legacy = ctx.calibration_path("cortex-a78", "prior")
    legacy.parent.mkdir(parents=True)
    legacy.write_text(json.dumps({"scale": 7.0, "per_call_s": 1e-5, "fixed_s": 0.0, "n_models": 4,
                                  "fit_rmspe": 12.0, "base": "prior"}))  # fmt: skip
    cal = load_device_calibration(ctx, "cortex-a78")
    assert cal.method == "one-scale" and cal.factors == {} and cal.factor("conv/fp32") == 7.0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "migrated" in err
    assert ctx.device_calibration_path("cortex-a78").is_file()
    assert load_device_calibration(ctx, "cortex-a78") is not None and capsys.readouterr().err == ""
    assert load_device_calibration(CostContext(root=tmp_path, device="board2"), "cortex-a78") is None


def test_csv_columns_and_bad_rows(tmp_path):
    from hanasc.cost_models.device_timings import read_measurements_csv
    from hanasc.cost_models.estimate import CalibrationInputError

    (tmp_path / "a.onnx").write_bytes(b"x")
    good = tmp_path / "m.csv"
    good.write_text("model,ms,threads,runtime\na.onnx,3.5,2,onnxruntime 1.20\na.onnx,4,,\n")
    rows = read_measurements_csv(good)
    assert rows[0].threads == 2 and rows[0].runtime == "onnxruntime 1.20" and rows[1].threads is None
    for body, message in [
        ("model,ms,threads\na.onnx,3,zero\n", "'threads' must be a positive integer"),
        ("model,ms\na.onnx,-1\n", "'ms' must be a positive number"),
        ("model,ms\n", "no measurements"),
        ("model,ms\n,3\n", "empty 'model'"),
    ]:
        good.write_text(body)
        with pytest.raises(CalibrationInputError, match=message):
            read_measurements_csv(good)


def test_export_import_per_device(tmp_path):
    from hanasc.cost_models.device_timings import export_calibration, import_calibration
    from hanasc.cost_models.estimate import (
        CalibrationInputError,
        CostContext,
        load_device_calibration,
        save_device_calibration,
    )

    terms, measured = _models(10)
    a = CostContext(root=tmp_path, device="board-a")
    save_device_calibration(_fit(terms, measured), a.device_calibration_path("cortex-a78"))
    shared = export_calibration("cortex-a78", a, tmp_path / "shared.json")
    other = CostContext(root=tmp_path / "other", device="board-b")
    cal = import_calibration(shared, other)
    assert cal.device == "board-b" and load_device_calibration(other, "cortex-a78") is not None
    assert load_device_calibration(CostContext(root=tmp_path / "other"), "cortex-a78") is None
    with pytest.raises(CalibrationInputError, match="no calibration"):
        export_calibration("cortex-a78", CostContext(root=tmp_path, device="nobody"), tmp_path / "x.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(CalibrationInputError, match="not a hanasc device calibration"):
        import_calibration(tmp_path / "bad.json", other)


def test_search_sees_the_upper_bound_of_a_calibrated_device(test_models, tmp_path, monkeypatch):
    import hanasc
    from hanasc.cost_models.estimate import CostContext, save_device_calibration
    from hanasc.search.costs import SearchCosts
    from hanasc.search.space import build_space

    monkeypatch.setenv("HANASC_CACHE", str(tmp_path))
    model = hanasc.load_model(test_models["plain_conv"])
    space = build_space(model)
    genome = np.atleast_2d(space.identity())
    plain = SearchCosts(model, space, "cortex-a78")
    assert plain.source()["source"] == "prior" and "efficiency" in plain.source()["kernels"]
    terms, measured = _models(12, noise=0.1)
    cal = _fit(terms, measured)
    cal.factors, cal.scale = {}, 3.0  # every kernel class: 3x
    cal.per_call_s = 0.0
    save_device_calibration(
        cal, CostContext(root=tmp_path, device="b1").device_calibration_path("cortex-a78")
    )
    calibrated = SearchCosts(model, space, "cortex-a78", device="b1", budget_confidence=0.9)
    lat_plain, lat_cal = plain(genome)[0][0], calibrated(genome)[0][0]
    upper = cal.upper(1.0, 0.9)
    assert upper > 1.0 and lat_cal == pytest.approx(3.0 * lat_plain * upper, rel=1e-6)
    loose = SearchCosts(model, space, "cortex-a78", device="b1", budget_confidence=0.6)
    assert loose(genome)[0][0] < lat_cal
    assert calibrated.source()["source"] == "predicted" and "latency_objective" in calibrated.source()
