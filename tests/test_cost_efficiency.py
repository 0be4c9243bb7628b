"""The efficiency-aware prior: curve fitting, kernel classes, the device roof, provenance."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hanasc.cost_models.efficiency import (
    SHIPPED,
    Curve,
    EfficiencyModel,
    fit,
    fit_curve,
    kernel_kind,
    load_efficiency,
)
from hanasc.cost_models.kernels import KernelFeatures, TensorInfo


def _conv(flops: float, k: int = 3, kind: str = "conv2d", dtype: str = "float32") -> KernelFeatures:
    t = TensorInfo((1, 16, 8, 8), dtype)
    w = TensorInfo((16, 16, k, k), dtype)
    return KernelFeatures(kind, (), (t,), t, w, (k, k), 1, 1, dtype, 32, 32, flops, 0, 4096, 0)


def test_kernel_kinds():
    assert kernel_kind(_conv(1e6, 3)) == "conv"
    assert kernel_kind(_conv(1e6, 1)) == "pointwise"
    assert kernel_kind(_conv(1e6, 3, "depthwise")) == "depthwise"
    assert kernel_kind(_conv(1e6, 1, "dense")) == "dense"
    assert kernel_kind(_conv(1e6, 1, "reduce")) == "pool"
    assert kernel_kind(_conv(1e6, 1, "copy")) == "elementwise"


def test_fit_curve_recovers_its_parameters():
    rng = np.random.default_rng(0)
    compute = np.exp(rng.uniform(np.log(1e-7), np.log(1e-2), 200))
    memory = compute * np.exp(rng.uniform(-3, 3, 200))
    true = Curve(compute_eff=0.4, memory_eff=2.0, fixed_s=5e-6)
    seconds = np.array([true.seconds(c, m) for c, m in zip(compute, memory, strict=True)])
    got = fit_curve(compute, memory, seconds * np.exp(rng.normal(0, 0.05, 200)))
    assert got.compute_eff == pytest.approx(0.4, rel=0.05)
    assert got.memory_eff == pytest.approx(2.0, rel=0.1)
    assert got.fixed_s == pytest.approx(5e-6, rel=0.15)
    assert got.rmse_log < 0.08 and got.n == 200
    assert got.efficiency(1.0, 0.0) == pytest.approx(0.4, rel=0.05)  # large compute-bound kernels
    assert got.efficiency(1e-7, 0.0) < 0.1  # small kernels: the fixed cost dominates


def test_fit_per_kind_with_fallbacks_and_round_trip(tmp_path):
    reference = {"device": "test-cpu", "fp32_core_peak": 1e10, "bandwidth_Bps": 1e10, "threads": 1}
    samples = [(_conv(f), f / 1e10 / 0.5 + 2e-6) for f in np.geomspace(1e4, 1e8, 12)]
    samples += [(_conv(f, 1), f / 1e10 / 0.25) for f in np.geomspace(1e4, 1e8, 3)]  # too few: no curve
    model = fit(samples, reference)
    assert model.curve("conv", "fp32").compute_eff == pytest.approx(0.5, rel=0.05)
    assert model.curve("pointwise", "fp32") is model.curves["*/*"]  # fallback
    path = tmp_path / "efficiency.json"
    model.save(path)
    again = load_efficiency(tmp_path)
    assert again.curves.keys() == model.curves.keys() and again.version == model.version
    with pytest.raises(ValueError, match="not an efficiency model"):
        EfficiencyModel.from_json({"format": "other"})


def test_shipped_model_is_measured_and_cited():
    data = json.loads(SHIPPED.read_text())
    assert data["reference"]["device"] and data["reference"]["samples"] >= 50
    assert "build_artifact" in data["reference"]["how"]
    model = EfficiencyModel.from_json(data)
    for kind in ("conv", "pointwise", "depthwise", "dense", "pool", "elementwise"):
        curve = model.curve(kind, "fp32")
        assert curve.compute_eff > 0 and curve.memory_eff > 0 and 0 < curve.fixed_s < 1e-3


def test_a78_roof_is_per_core_times_threads_at_sustained_clock(tmp_path):
    from hanasc.cost_models.device_prior import DevicePrior, target_roof
    from hanasc.cost_models.prior import roofline
    from hanasc.cost_models.spec import load_spec

    spec = load_spec("cortex-a78", tmp_path / "host_spec.json")
    model = load_efficiency(tmp_path)
    four = target_roof(spec, model)
    one = target_roof(spec, model, threads=1)
    assert four.threads == 4 and four.peak_ops_per_s["fp32"] == pytest.approx(1.536e11 * 0.85)
    assert one.peak_ops_per_s["fp32"] == pytest.approx(four.peak_ops_per_s["fp32"] / 4)
    prior = DevicePrior.for_spec(spec, cache=tmp_path)
    f = _conv(5e7)
    seconds, detail = prior.kernel_seconds(f)
    assert seconds > roofline(f, spec).seconds  # kernels do not reach the published peak
    assert detail["efficiency_model"] == model.name and 0 < detail["efficiency"] < 2
    assert "efficiency" in prior.name


def test_costs_name_the_efficiency_model(test_models, tmp_path):
    import hanasc
    from hanasc.cost_models.estimate import CostContext, estimate_costs

    mod = hanasc.load_model(test_models["plain_conv"]).mod
    report = estimate_costs(mod, "cortex-a78", CostContext(root=tmp_path), memory=False)
    assert report.latency.source == "prior" and report.memory == {}
    assert "efficiency:" in report.latency.detail["model"]
    assert all("efficiency_model" in k.latency.detail for k in report.kernels)
    npu = estimate_costs(mod, "npu3720", CostContext(root=tmp_path), memory=False)
    assert npu.latency.detail["model"].startswith("roofline")  # no efficiency model for an NPU


def test_unusable_cached_efficiency_model_falls_back_to_the_shipped_fit(tmp_path, capsys):
    from hanasc.cost_models.efficiency import load_efficiency

    (tmp_path / "efficiency.json").write_text('{"format": "hanasc.efficiency/0"}')
    model = load_efficiency(tmp_path)
    assert model is not None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "efficiency.json" in err[0] and "shipped fit" in err[0]


def test_the_prior_reads_the_kernels_that_ship_on_cpu_targets(test_models, tmp_path):
    """CPU targets' priors read the shipped lowering (blocked convs, layout transforms); others TVM's."""
    import hanasc
    from hanasc.cost_models.estimate import CostContext, estimate_costs
    from hanasc.cost_models.target_info import get_target

    assert get_target("host").prior_lowering == "shipped"
    assert get_target("cortex-a78").prior_lowering == "shipped"
    assert get_target("jetson-orin").prior_lowering == "default"
    assert get_target("npu3720").prior_lowering == "default"
    mod = hanasc.load_model(test_models["plain_conv"]).mod
    report = estimate_costs(mod, "cortex-a78", CostContext(root=tmp_path), memory=False)
    names = [k.name for k in report.kernels]
    assert any("nchwc" in n for n in names), names  # the blocked kernels of the shipped build
    assert report.latency.value == pytest.approx(sum(k.latency.value * k.calls for k in report.kernels))


def test_efficiency_probe_pairs_every_shipped_call_with_its_features():
    """Each call the shipped build runs (layout transforms too) is one sample, with that kernel's features."""
    from hanasc.cost_models import efficiency_probe
    from hanasc.cost_models.kernels import lower_to_kernels
    from hanasc.cost_models.sweep import LayerShape, layer_module

    mod = layer_module(LayerShape(16, 32, 8, 8, 3, 1, dtype="int8"))
    pairs = efficiency_probe.probe(mod)
    lowered = lower_to_kernels(mod, "host", "shipped")
    assert len(pairs) == lowered.total_calls and len(pairs) >= 2
    kinds = [f.op_kind for f, _ in pairs]
    assert "conv2d" in kinds and "copy" in kinds, kinds  # the conv and its layout transforms
    assert all(0 < seconds < 0.1 for _, seconds in pairs)
