"""The SQLite profile store: insert, reuse, keys."""

from __future__ import annotations

from hanasc.cost_models.kernels import KernelFeatures, TensorInfo
from hanasc.cost_models.store import KernelRow, ModelRow, ProfileStore


def _features() -> KernelFeatures:
    t = TensorInfo((1, 8, 4, 4), "float32")
    return KernelFeatures(
        "conv2d",
        ("conv2d_nchw",),
        (t,),
        t,
        TensorInfo((8, 8, 3, 3), "float32"),
        (3, 3),
        1,
        1,
        "float32",
        32,
        32,
        1e4,
        4608,
        1000,
        0,
    )


def _row(sig: str, device: str = "cpu-a", version: str = "0.27", ms: float = 1.0) -> KernelRow:
    return KernelRow("host", version, device, sig, _features(), ms / 1e3, 0.1, 5, 10)


def test_insert_get_and_keys(tmp_path):
    db = tmp_path / "p.sqlite"
    with ProfileStore(db) as store:
        store.put_kernel(_row("abc"))
        store.put_kernel(_row("abc", device="cpu-b", ms=2.0))
        store.put_kernel(_row("abc", version="0.26", ms=3.0))
        assert store.get_kernel("host", "cpu-a", "abc", version="0.27").median_s == 1e-3
        assert store.get_kernel("host", "cpu-b", "abc", version="0.27").median_s == 2e-3
        assert store.get_kernel("host", "cpu-a", "abc", version="0.26").median_s == 3e-3
        assert store.get_kernel("host", "cpu-a", "zzz", version="0.27") is None
        assert store.get_kernel("cortex-a78", "cpu-a", "abc", version="0.27") is None
        store.put_kernel(_row("abc", ms=5.0))  # re-measuring replaces, never duplicates
        assert len(store.kernels("host", "cpu-a", version="0.27")) == 1
    with ProfileStore(db) as store:  # persisted; features round-trip
        row = store.get_kernel("host", "cpu-a", "abc", version="0.27")
        assert row.median_s == 5e-3 and row.features == _features()


def test_model_rows(tmp_path):
    with ProfileStore(tmp_path / "p.sqlite") as store:
        store.put_model(ModelRow("h1", "a.onnx", "host", "cpu-a", "0.27", 12.5, 7, "measured", 40))
        store.put_model(ModelRow("h2", "b.onnx", "npu3720", "user", "0.27", 3.0, 0, "imported"))
        assert [r.ms for r in store.models("host")] == [12.5]
        assert store.models("npu3720")[0].source == "imported"


def test_profiling_reuses_stored_kernels(tmp_path):
    from hanasc.compile.profile_job import ProfilePlan, profile_target
    from hanasc.cost_models.profiler import TimingConfig
    from hanasc.cost_models.sweep import LayerShape

    layers = [LayerShape(4, 8, 8, 8, 3), LayerShape(8, 8, 8, 8, 3, groups=8)]
    plan = ProfilePlan(layers=layers, chains=0, train_model=False, shipped_kernels=True)
    kw = dict(db=tmp_path / "p.sqlite", timing=TimingConfig(2, 2))
    first = profile_target("host", plan, **kw)
    second = profile_target("host", plan, **kw)
    assert first.measured == 2 and first.reused == 0
    assert second.measured == 0 and second.reused == 2
    assert first.shipped == first.measured  # host kernels are timed inside the artifact that ships


def test_host_profiles_store_the_shipped_kernel_times(tmp_path, monkeypatch):
    """A kernel that gets faster in the artifact gets faster in the profile store: the stored time is the
    one measured inside the shipped build (here replaced by known samples), not the kernel built alone."""
    from hanasc.compile import profile_job
    from hanasc.compile.profile_job import ProfilePlan, profile_target
    from hanasc.cost_models import efficiency_probe
    from hanasc.cost_models.profiler import Session, TimingConfig
    from hanasc.cost_models.sweep import LayerShape

    real = efficiency_probe.shipped_kernel_samples
    seen = []

    def known_samples(mod, runs):
        seen.append(len(real(mod, 2)))  # the real shipped build runs and pairs with the kernels
        return [[0.5e-3, 0.7e-3, 0.6e-3]] * seen[-1]

    monkeypatch.setattr(profile_job, "shipped_kernel_samples", known_samples)
    plan = ProfilePlan(layers=[LayerShape(4, 8, 8, 8, 3)], chains=0, train_model=False, shipped_kernels=True)
    db = tmp_path / "p.sqlite"
    summary = profile_target("host", plan, db=db, timing=TimingConfig(2, 2))
    assert seen == [1] and summary.shipped == summary.measured == 1
    (row,) = ProfileStore(db).kernels("host", Session.local().device_id)
    assert row.median_s == 0.6e-3 and row.repeats == 3
