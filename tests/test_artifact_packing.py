"""Integer weights stay as stored in the host library: int8 and packed 4/2-bit really shrink it."""

from __future__ import annotations

import numpy as np
import pytest

import hanasc
from hanasc.core.relax_params import bind_weights
from hanasc.passes.config import Config, LayerChoice
from hanasc.passes.materialize import materialize
from hanasc.targets import host


@pytest.fixture(scope="module")
def model(test_models):
    return hanasc.load_model(test_models["dense_head"])


def library_bytes(executable, tmp_path, name: str) -> int:
    path = tmp_path / f"{name}.so"
    executable.export_library(str(path))
    return path.stat().st_size


def test_packed_weights_shrink_the_library(model, tmp_path):
    x = model.example_inputs()["input"]
    sizes = {}
    for bits in (32, 8, 4, 2):
        mod = materialize(model.mod, Config({"fc1": LayerChoice(w_bits=bits)}))
        artifact = host.build_artifact(mod)
        sizes[bits] = library_bytes(artifact, tmp_path, f"w{bits}")
        folded = host.build(bind_weights(mod))  # the same module with every weight folded at compile time
        np.testing.assert_array_equal(host.run(artifact, [x])[0], host.run(folded, [x])[0])
    fc1 = 64 * 1568  # weights of fc1
    # each step down in bits saves about the bytes the weights no longer take (less the unpacking kernel)
    assert sizes[32] - sizes[8] >= 0.75 * fc1 * 3
    assert sizes[8] - sizes[4] >= 0.75 * fc1 / 2
    assert sizes[4] - sizes[2] >= 0.75 * fc1 / 4


def test_a78_bundle_keeps_packed_weights(model, tmp_path):
    """The cortex-a78 library stores 4-bit fc1 packed; under qemu it computes what the host build does."""
    from hanasc.targets import cortex_a78

    mod = materialize(model.mod, Config({"fc1": LayerChoice(w_bits=4)}))
    probe = model.example_inputs()
    late = cortex_a78.build_bundle(mod, tmp_path / "late", probe)
    folded = cortex_a78.build_bundle(bind_weights(mod), tmp_path / "folded", probe)
    fc1 = 64 * 1568
    assert folded.files["model.so"] - late.files["model.so"] >= 0.75 * fc1 * (4 - 0.5)
    _, diff = cortex_a78.check_under_qemu(tmp_path / "late")
    assert diff <= cortex_a78.RTOL * max(
        1.0, float(np.abs(host.run(host.build_artifact(mod), [probe["input"]])[0]).max())
    )


def test_cuda_build_keeps_packed_weights(model, tmp_path):
    """Late binding works in the CUDA pipeline too: the Orin host library stores fc1 packed (offline)."""
    from hanasc.targets import aarch64_tools, jetson_orin
    from hanasc.targets.late_binding import compile_late_bound

    aarch64_tools.require_tool(aarch64_tools.CXX)
    mod = materialize(model.mod, Config({"fc1": LayerChoice(w_bits=4)}))
    sizes = {}
    for label, source in (("late", mod), ("folded", bind_weights(mod))):
        executable = compile_late_bound(source, jetson_orin.tvm_target())
        path = tmp_path / f"{label}.so"
        executable.export_library(str(path), fcompile=aarch64_tools.cross_compiler())
        sizes[label] = path.stat().st_size
    assert sizes["folded"] - sizes["late"] >= 0.75 * 64 * 1568 * (4 - 0.5)
