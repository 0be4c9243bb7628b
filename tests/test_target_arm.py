"""The target registry, the host bundle and the cortex-a78 bundle (cross-built, run under qemu-aarch64)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hanasc.core.errors import HanascError
from hanasc.passes.config import Config, LayerChoice
from hanasc.targets import aarch64_runtime, aarch64_tools, bundle, cortex_a78, registry
from hanasc.targets.base import BundleInputs

LATENCY = re.compile(r"^latency_ms median=(\d+\.\d+) min=\d+\.\d+ max=\d+\.\d+ runs=(\d+) device=cpu$", re.M)


def _bound(path: Path):
    import hanasc
    from hanasc.core.relax_params import bind_weights

    model = hanasc.load_model(path, None)
    return model, bind_weights(model.mod)


def _within_tolerance(outputs: list[np.ndarray], reference: list[np.ndarray]) -> tuple[float, float]:
    scale = max(1.0, max(float(np.abs(r).max()) for r in reference))
    return bundle.max_abs_diff(outputs, reference), cortex_a78.RTOL * scale


# --- registry -----------------------------------------------------------------------------------------------


def test_unknown_target_lists_known_names():
    with pytest.raises(registry.UnknownTargetError) as err:
        registry.get_target("tpu9000")
    message = str(err.value)
    assert message.startswith("unknown target 'tpu9000'; known: ")
    for name in ("host", "cortex-a78", "jetson-orin"):
        assert name in message
    assert "\n" not in message


def test_names_aliases_and_target_json():
    names = [t.name for t in registry.all_targets()]
    assert names[:3] == ["host", "cortex-a78", "jetson-orin"]
    assert registry.get_target("ARM").name == "cortex-a78"
    assert registry.get_target("orin").tvm_target_json["host"] == cortex_a78.TARGET_JSON
    assert registry.get_target("cortex-a78").tvm_target().kind.name == "llvm"
    assert registry.get_target("vpu").name == "npu3720"
    assert registry.get_target("vpu").tvm_target_json is None
    assert registry.get_target("vpu").tvm_target() is None


def test_families_answer_the_contract():
    host, a78, npu = registry.get_target("host"), registry.get_target("a78"), registry.get_target("vpu")
    assert host.measurer(None).local and host.measurer(None).host_library
    assert a78.measurer(None) is None and not a78.measurer(object()).local
    a78.check_tuning("127.0.0.1:9091")
    with pytest.raises(HanascError, match="give --rpc HOST:PORT"):
        a78.check_tuning(None)
    assert npu.measurer(None) is None
    with pytest.raises(HanascError, match="not compiled by TVM"):
        npu.check_tuning("127.0.0.1:9091")
    with pytest.raises(HanascError, match=r"w\.npz: fine-tuned weights cannot reach npu3720's bundle"):
        npu.check_tuned_weights("w.npz")
    host.check_tuned_weights("w.npz")
    assert npu.cost_key() == "npu3720:features-only" and npu.bundle_input == "onnx"
    assert [t.spec_path.is_file() for t in registry.all_targets()] == [True] * 6


def test_missing_target_module_is_tolerated():
    modules = [*registry.TARGET_MODULES[:3], "hanasc.targets.fake"]
    reg = registry.load_registry(modules)
    assert [t.name for t in registry.all_targets(reg)] == ["host", "cortex-a78", "jetson-orin"]
    with pytest.raises(HanascError, match=r"hanasc\.targets\.fake not loaded: no module hanasc"):
        registry.get_target("fake", reg)


def test_check_choices(test_models):
    import hanasc

    layers = hanasc.load_model(test_models["dense_head"], None, import_tvm=False).layers
    conv = next(layer.name for layer in layers if layer.op == "conv")
    dense = next(layer.name for layer in layers if layer.op == "dense")
    fp16 = Config(layers={conv: LayerChoice(w_bits=16, a_bits=16)})
    registry.check_choices("cortex-a78", fp16, layers)
    registry.check_choices("jetson-orin", fp16, layers)
    with pytest.raises(
        registry.UnsupportedChoiceError, match=r"target 'host', layer .*: a_bits=16 not supported"
    ):
        registry.check_choices("host", fp16, layers)
    with pytest.raises(registry.UnsupportedChoiceError, match="no such layer"):
        registry.check_choices("host", Config(layers={"nope": LayerChoice(w_bits=8)}), layers)
    with pytest.raises(registry.UnsupportedChoiceError, match="kernel shrinking"):
        registry.check_choices("host", Config(layers={dense: LayerChoice(kernel=1)}), layers)
    registry.check_choices("host", Config(layers={conv: LayerChoice(w_bits=4, a_bits=8)}), layers)


# --- host bundle --------------------------------------------------------------------------------------------


def test_host_bundle_runs_with_its_script(test_models, tmp_path):
    model, mod = _bound(test_models["plain_conv"])
    inputs = BundleInputs(tmp_path / "host", relax_mod=mod, probe_inputs=model.example_inputs())
    report = registry.get_target("host").bundle(inputs)
    assert {"model.so", "run.py", "probe_input.bin", "probe_output.bin", "bundle.json", "README.md"} <= set(
        report.files
    )
    done = subprocess.run(
        [sys.executable, "run.py", "3"], cwd=tmp_path / "host", capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "max_abs_diff 0" in done.stdout
    assert re.search(r"^latency_ms median=\d+\.\d+ .* runs=3 device=cpu$", done.stdout, re.M)


# --- cortex-a78 ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def a78_bundle(test_models, tmp_path_factory) -> tuple[Path, bundle.BundleReport]:
    model, mod = _bound(test_models["inverted_residual"])
    out = tmp_path_factory.mktemp("a78") / "bundle"
    return out, cortex_a78.build_bundle(mod, out, model.example_inputs())


def test_a78_bundle_contents(a78_bundle):
    out, report = a78_bundle
    expected = {"model.so", "runner", "rt/libtvm_runtime.so", "rt/libtvm_ffi.so", "probe_input.bin"}
    assert expected | {"probe_output.bin", "bundle.json", "README.md"} <= set(report.files)
    for name in ("model.so", "runner", "rt/libtvm_runtime.so"):
        header = (out / name).read_bytes()[:20]
        assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64
    assert "--input probe_input.bin:1x3x32x32" in (out / "README.md").read_text()
    assert bundle.read_manifest(out)["tvm_target"].count("cortex-a78") == 1


def test_a78_code_uses_neon(a78_bundle):
    simd = a78_bundle[1].checks["simd"]
    assert simd["neon"] > 100 and simd["fmla_vector"] > 10, simd


def test_a78_int8_conv_uses_sdot_and_fp16_is_native():
    simd = cortex_a78.conv_simd_counts("int8")
    assert simd["sdot"] >= 1, simd
    simd = cortex_a78.conv_simd_counts("float16")
    assert simd["fp16_scalar"] + simd["fp16_vector"] >= 1, simd


@pytest.mark.parametrize("bits", [8, 4])
def test_a78_w8a8_bundle_runs_sdot_kernels_and_matches_host_under_qemu(test_models, tmp_path, bits):
    """The shipped W8A8 (W4A8) build: every int8 pointwise conv is an sdot kernel (audited per function in
    the library; 4-bit weights unpacked inside it), and the bundle under qemu-aarch64 matches the host build
    (x86 pair kernels)."""
    import hanasc
    from hanasc.frontend.calibration import calibrate
    from hanasc.recovery.bias_correction import materialize_recovered

    model = hanasc.load_model(test_models["inverted_residual"])
    rng = np.random.default_rng(0)
    ranges = calibrate(model, rng.standard_normal((8, *model.inputs[0].shape[1:])).astype("float32"))
    config = Config(layers={layer.name: LayerChoice(w_bits=bits, a_bits=8) for layer in model.layers})
    out = tmp_path / f"w{bits}a8"
    cortex_a78.build_bundle(materialize_recovered(model, config, ranges), out, model.example_inputs())
    kernels = cortex_a78.kernel_simd_counts(aarch64_tools.disassemble(out / "model.so"))
    sdot = {name: c["sdot"] for name, c in kernels.items() if "int_sdot" in name and "compute" in name}
    assert len(sdot) == 2 and all(count >= 4 for count in sdot.values()), sdot  # expand and project
    outputs, diff = cortex_a78.check_under_qemu(out)
    _, tolerance = _within_tolerance(outputs, bundle.probe_reference(out))
    assert diff <= tolerance, (diff, tolerance)


def test_a78_under_qemu_matches_host(a78_bundle):
    out, _ = a78_bundle
    result = cortex_a78.run_under_qemu(out, runs=2)
    diff, tol = _within_tolerance(result.outputs, bundle.probe_reference(out))
    assert diff <= tol, (diff, tol)
    match = LATENCY.search(result.stdout)
    assert match and match.group(2) == "2", result.stdout
    assert "output 0 float32 1x16x32x32" in result.stdout
    outputs, diff2 = cortex_a78.check_under_qemu(out)
    assert outputs[0].shape == (1, 16, 32, 32) and diff2 == pytest.approx(diff)


def test_runner_rejects_a_wrong_input_size(a78_bundle, tmp_path):
    out, _ = a78_bundle
    (tmp_path / "short.bin").write_bytes(b"\0" * 16)
    cmd = [
        *cortex_a78.aarch64_tools.qemu_command(),
        "./runner",
        "./model.so",
        "--input",
        f"{tmp_path}/short.bin:1x3x32x32",
    ]
    done = subprocess.run(cmd, cwd=out, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "runner: error:" in done.stderr and "16 bytes" in done.stderr


def test_missing_cross_compiler_names_the_package(test_models, tmp_path, monkeypatch):
    model, mod = _bound(test_models["plain_conv"])
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(HanascError, match=r"aarch64-linux-gnu-g\+\+' not found.*g\+\+-aarch64-linux-gnu"):
        cortex_a78.build_bundle(mod, tmp_path / "b", model.example_inputs())
    assert not (tmp_path / "b").exists()


def test_missing_qemu_names_the_package(a78_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(HanascError, match=r"'qemu-aarch64' not found.*qemu-user"):
        cortex_a78.check_under_qemu(a78_bundle[0])


def test_missing_runtime_names_the_fetch_command(test_models, tmp_path, monkeypatch):
    model, mod = _bound(test_models["plain_conv"])
    monkeypatch.setenv("HANASC_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(HanascError) as err:
        cortex_a78.build_bundle(mod, tmp_path / "b", model.example_inputs())
    assert str(err.value).endswith(f"run: {aarch64_runtime.FETCH_COMMAND}")


@pytest.mark.slow
def test_a78_efficientnet_under_qemu(effnet_path, tmp_path):
    model, mod = _bound(effnet_path)
    out = tmp_path / "effnet"
    report = cortex_a78.build_bundle(mod, out, model.example_inputs())
    assert report.checks["simd"]["neon"] > 1000
    outputs, diff = cortex_a78.check_under_qemu(out)
    reference = bundle.probe_reference(out)
    assert outputs[0].shape == (1, 1000)
    assert diff <= cortex_a78.RTOL * max(1.0, float(np.abs(reference[0]).max())), diff
    assert np.argmax(outputs[0]) == np.argmax(reference[0])
