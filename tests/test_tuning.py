"""MetaSchedule tuning with a persistent database: a few real trials on a tiny model (no timings asserted)."""

from __future__ import annotations

import numpy as np
import pytest

from hanasc.targets.rpc_address import RpcAddress, RpcAddressError
from hanasc.targets.tuning import RpcDevice, TuningError, TuningOptions


@pytest.fixture(scope="module")
def tiny(test_models):
    import hanasc
    from hanasc.core.relax_params import bind_weights

    loaded = hanasc.load_model(test_models["inverted_residual"])
    return bind_weights(loaded.mod), loaded.example_inputs()["input"]


def test_tuning_writes_database_matches_untuned_and_second_run_hits(tiny, tmp_path):
    from hanasc.targets import host, tuning

    mod, x = tiny
    target = host.tvm_target()
    # every kernel of the tiny model has a default schedule: tune them anyway to exercise the database
    options = TuningOptions(trials_per_task=2, trials_per_iter=2, population=16, tune_scheduled=True)
    first = tuning.tune_and_build(mod, target, minutes=2.0, db_dir=tmp_path, options=options)
    assert first.tasks_total >= 3
    assert first.database_hits == 0
    assert first.tasks_tuned == first.tasks_total and first.tasks_left == 0
    assert first.trials >= first.tasks_total
    assert (tmp_path / "database_tuning_record.json").stat().st_size > 0

    untuned = host.run(host.build(mod), [x])[0]
    tuned = host.run(first.executable, [x])[0]
    np.testing.assert_allclose(tuned, untuned, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(untuned).max())))

    second = tuning.tune_and_build(mod, target, minutes=2.0, db_dir=tmp_path, options=options)
    assert second.database_hits == second.tasks_total == first.tasks_total
    assert second.tasks_tuned == 0 and second.trials == 0 and second.tuning_seconds == 0.0
    np.testing.assert_array_equal(host.run(second.executable, [x])[0], tuned)


def test_database_folder_is_per_target(tmp_path):
    import tvm

    from hanasc.targets import host, tuning
    from hanasc.targets.cortex_a78 import TARGET_JSON

    a78 = tvm.target.Target({**TARGET_JSON, "num-cores": 4})
    assert str(tuning.resolve_target("cortex-a78")) == str(a78)  # names resolve, num-cores added
    here = tuning.database_dir(host.tvm_target(), tmp_path)
    there = tuning.database_dir(a78, tmp_path)
    assert here.parent == there.parent == tmp_path and here != there
    assert tuning.database_dir(host.tvm_target(), tmp_path) == here  # stable across calls


def test_rpc_address_parsing_and_aarch64_needs_a_device(tiny, tmp_path):
    from hanasc.targets import tuning

    assert RpcDevice.parse("10.0.0.5:9091") == RpcDevice("10.0.0.5", 9091)
    assert RpcDevice.parse("a78@tracker:9190") == RpcDevice("tracker", 9190, key="a78")
    with pytest.raises(RpcAddressError, match="--rpc 'no-port'"):
        RpcDevice.parse("no-port")
    with pytest.raises(TuningError, match="needs a device"):
        options = TuningOptions(tune_scheduled=True)  # there is something to tune
        tuning.tune_and_build(tiny[0], "cortex-a78", minutes=1.0, db_dir=tmp_path, options=options)


def test_default_scheduled_kernels_are_not_tuned_and_builds_apply_the_database(
    test_models, tmp_path, monkeypatch
):
    """Convs, matmuls and element-wise kernels have default schedules (not tuned); the softmax has none
    (tuned); the host artifact applies the target's records."""
    import hanasc
    from hanasc.core.relax_params import bind_weights
    from hanasc.targets import host, late_binding, tuning

    monkeypatch.setenv("HANASC_CACHE", str(tmp_path))
    loaded = hanasc.load_model(test_models["dense_softmax"])
    mod, x = bind_weights(loaded.mod), loaded.example_inputs()["input"]
    assert late_binding.tuned_records(host.tvm_target()) is None  # an empty cache: nothing to apply
    options = TuningOptions(trials_per_task=2, trials_per_iter=2, population=16)
    report = tuning.tune_and_build(mod, "host", minutes=2.0, options=options, build=False)
    assert report.executable is None and report.default_scheduled >= 1
    assert report.tasks_total >= 1 and report.tasks_left == 0
    assert report.database_dir.parent == tmp_path / "tuning"
    assert late_binding.tuned_records(host.tvm_target()) is not None
    artifact = host.build_artifact(mod)  # with the records
    np.testing.assert_allclose(
        host.run(artifact, [x])[0], host.run(host.build(mod), [x])[0], rtol=1e-4, atol=1e-4
    )


def test_cuda_tuning_path_builds_with_database_and_dlight_and_needs_a_gpu(tiny, tmp_path):
    """jetson-orin: tasks from the CUDA pipeline's fused kernels; measuring them needs the device."""
    from hanasc.targets import tuning

    target = tuning.resolve_target("jetson-orin")
    assert int(target.attrs["max_threads_per_block"]) == 1024 and "num-cores" not in target.attrs
    built = tuning.tune_and_build(tiny[0], "jetson-orin", minutes=0, db_dir=tmp_path)
    assert built.tasks_total >= 3 and built.database_hits == 0 and built.default_scheduled == 0
    assert built.executable is not None  # every kernel from dlight's defaults
    with pytest.raises(TuningError, match="needs its GPU"):  # the Orin's host is aarch64: over RPC only
        tuning.tune_and_build(tiny[0], "jetson-orin", minutes=1.0, db_dir=tmp_path)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("10.0.0.5:9091", RpcAddress("10.0.0.5", 9091)),
        ("a78@tracker.lan:9190", RpcAddress("tracker.lan", 9190, "a78")),
        ("[::1]:9090", RpcAddress("::1", 9090)),
    ],
)
def test_one_rpc_address_parser(spec, expected):
    assert RpcAddress.parse(spec) == expected
    assert str(RpcAddress.parse(str(expected))) == str(expected)


@pytest.mark.parametrize("spec", ["no-port", "host:0", "host:99999", "a@b@c:1", ":9090"])
def test_bad_rpc_address_is_one_line(spec):
    from hanasc.cost_models.profiler import Session

    with pytest.raises(RpcAddressError) as info:
        Session.from_address(rpc_addr=spec)
    assert spec in str(info.value) and "\n" not in str(info.value)
