"""The roofline prior: arithmetic, precision fallback, spec files with sources, labelled prior."""

from __future__ import annotations

import pytest

from hanasc.cost_models.kernels import KernelFeatures, TensorInfo
from hanasc.cost_models.prior import roofline
from hanasc.cost_models.spec import HardwareSpec, load_spec
from hanasc.targets.registry import all_targets


def _spec(**kw) -> HardwareSpec:
    base = dict(
        name="t",
        peak_ops_per_s={"fp32": 1e9, "int8": 4e9},
        memory_bandwidth_Bps=1e8,
        on_chip_bytes=0,
        on_chip_bandwidth_Bps=1e9,
        kernel_launch_s=1e-6,
        energy_pj_per_op={"fp32": 1.0, "int8": 0.25},
        energy_pj_per_byte=10.0,
    )
    return HardwareSpec(**{**base, **kw})


def _features(flops: float, nbytes: int, dtype: str = "float32") -> KernelFeatures:
    t = TensorInfo((1, 1), dtype)
    return KernelFeatures("conv2d", (), (t,), t, None, (1, 1), 1, 1, dtype, 32, 32, flops, 0, nbytes, 0)


def test_roofline_arithmetic():
    spec = _spec()
    compute = roofline(_features(2e9, 1000), spec)  # 2 s of compute, 10 us of memory
    assert compute.bound == "compute" and compute.seconds == pytest.approx(2.0 + 1e-6)
    memory = roofline(_features(1e3, 10**8), spec)  # 1 s of memory
    assert memory.bound == "memory" and memory.seconds == pytest.approx(1.0 + 1e-6)
    int8 = roofline(_features(4e9, 0, "int8"), spec)
    assert int8.precision == "int8" and int8.seconds == pytest.approx(1.0 + 1e-6)
    on_chip = roofline(_features(1e3, 10**8), _spec(on_chip_bytes=10**9))
    assert on_chip.seconds == pytest.approx(0.1 + 1e-6)


def test_precision_fallback():
    fp16_only = _spec(peak_ops_per_s={"fp16": 1e12})
    assert fp16_only.precision("fp32") == "fp16" and fp16_only.precision("int8") == "fp16"


@pytest.mark.parametrize("name", sorted(t.name for t in all_targets()))
def test_every_spec_loads_with_sources(name, tmp_path):
    spec = load_spec(name, tmp_path / "host_spec.json")
    assert spec.sources and spec.peak_ops_per_s and spec.memory_bandwidth_Bps > 0
    if name == "host":
        assert spec.measured["fp32_flops"] > 1e8  # measured here, not copied from the file
    if name == "myriadx":
        assert set(spec.peak_ops_per_s) == {"fp16"}


def test_costs_without_profile_are_labelled_prior(test_models, tmp_path):
    import hanasc
    from hanasc.cost_models.estimate import CostContext, estimate_costs

    mod = hanasc.load_model(test_models["inverted_residual"]).mod
    report = estimate_costs(mod, "npu3720", CostContext(root=tmp_path))
    assert report.latency.source == "prior"
    assert all(k.latency.source == "prior" for k in report.kernels)
    assert report.energy.source == "prior" and report.energy.value > 0
    assert report.to_json()["latency_ms"]["source"] == "prior"
    assert "prior" in report.table()
