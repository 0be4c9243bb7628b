"""The jetson-orin target: CUDA sm_87 build without a GPU, kernels checked offline; a local GPU run if any."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hanasc.errors import HanascError
from hanasc.targets import bundle, cuda_kernels, jetson_orin

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (CUDA toolkit)")


def _bound(path: Path):
    import hanasc
    from hanasc.relax_params import bind_weights

    model = hanasc.load_model(path, None)
    return model, bind_weights(model.mod)


def _assert_kernels_within_limits(checks: dict) -> None:
    kernels = checks["kernels"]
    assert kernels["ptx_target"] == "sm_87" and kernels["problems"] == []
    assert kernels["kernels"], "no kernels"
    for k in kernels["kernels"]:
        assert 0 < k["threads"] <= cuda_kernels.MAX_THREADS_PER_BLOCK, k
        assert k["static_smem"] <= cuda_kernels.MAX_STATIC_SMEM_PER_BLOCK, k
        assert 0 < k["registers"] <= cuda_kernels.MAX_REGS_PER_THREAD, k


@pytest.fixture(scope="module")
def orin_bundle(test_models, tmp_path_factory) -> tuple[Path, bundle.BundleReport]:
    model, mod = _bound(test_models["se_hardswish"])
    out = tmp_path_factory.mktemp("orin") / "bundle"
    return out, jetson_orin.build_bundle(mod, out, model.example_inputs())


def test_orin_bundle_contents(orin_bundle):
    out, report = orin_bundle
    for name in (
        "model.so",
        "kernels.cubin",
        "kernels.ptx",
        "kernels.cu",
        "runner",
        "rt/libtvm_runtime_cuda.so",
    ):
        assert name in report.files, name
    for name in ("model.so", "runner", "rt/libtvm_runtime_cuda.so"):
        header = (out / name).read_bytes()[:20]
        assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64
    cubin = (out / "kernels.cubin").read_bytes()[:20]
    assert cubin[:4] == b"\x7fELF" and int.from_bytes(cubin[18:20], "little") == 190  # EM_CUDA
    assert "--device cuda --kernels kernels.cubin" in (out / "README.md").read_text()
    assert "libcudart.so.13" in (out / "README.md").read_text()


def test_orin_kernels_are_sm87_and_within_limits(orin_bundle):
    out, report = orin_bundle
    ptx = (out / "kernels.ptx").read_text()
    assert "\n.target sm_87" in ptx
    source = (out / "kernels.cu").read_text()
    names = set(re.findall(r"__global__\s+void\s+(?:__launch_bounds__\(\d+\)\s+)?(\w+)", source))
    assert len(names) == ptx.count(".entry ") == len(report.checks["kernels"]["kernels"]) > 0
    _assert_kernels_within_limits(report.checks)


def test_orin_model_embeds_the_bundled_kernel_source(orin_bundle):
    out, _ = orin_bundle
    # The runner checks the embedded source against kernels.cu before serving the cubin; check it here too.
    assert (out / "kernels.cu").read_bytes()[:4000] in (out / "model.so").read_bytes()


@pytest.mark.skipif(shutil.which("qemu-aarch64") is None, reason="needs qemu-user")
def test_runner_without_cuda_says_what_is_missing(orin_bundle):
    # Under qemu there is no aarch64 CUDA runtime: the runner must stop with one line naming it.
    out, _ = orin_bundle
    cmd = ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu", "./runner", "./model.so"]
    cmd += ["--input", "probe_input.bin:1x3x32x32", "--device", "cuda", "--kernels", "kernels.cubin"]
    done = subprocess.run(cmd, cwd=out, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith("runner: error: cannot load ") and "libcudart.so.13" in done.stderr


def test_limits_are_enforced():
    source = 'extern "C" __global__ void __launch_bounds__(2048) k(float* a) {}'
    ptx = (
        ".version 8.0\n.target sm_87\n.visible .entry k(\n.param .u64 a\n)\n.maxntid 2048, 1, 1\n{\nret;\n}\n"
    )
    report = (
        "ptxas info    : Compiling entry function 'k' for 'sm_87'\n"
        "ptxas info    : Used 40 registers, 65536 bytes smem"
    )
    check = cuda_kernels.check_kernels(source, ptx, report, "sm_87")
    problems = " ".join(check.problems)
    assert "2048 threads per block > 1024" in problems
    assert "65536 bytes static shared memory > 49152" in problems
    assert "40 registers x 2048 threads" in problems
    wrong_arch = cuda_kernels.check_kernels(source, ptx.replace("sm_87", "sm_90"), report, "sm_87")
    assert "PTX targets sm_90, not sm_87" in wrong_arch.problems


def test_missing_nvcc_is_a_hanasc_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(HanascError, match="'nvcc' not found"):
        cuda_kernels.compile_ptx('extern "C" __global__ void k() {}', "sm_87")


@pytest.mark.slow
def test_orin_efficientnet_offline(effnet_path, tmp_path):
    model, mod = _bound(effnet_path)
    report = jetson_orin.build_bundle(mod, tmp_path / "effnet", model.example_inputs())
    _assert_kernels_within_limits(report.checks)
    assert len(report.checks["kernels"]["kernels"]) > 20


@pytest.mark.skipif(not jetson_orin.local_gpu_available(), reason="needs a CUDA GPU")
def test_local_gpu_matches_host(test_models):
    from hanasc.targets import host

    model, mod = _bound(test_models["se_hardswish"])
    inputs = list(model.example_inputs().values())
    reference = host.run(host.build(mod), inputs)
    outputs, median_ms = jetson_orin.run_on_local_gpu(jetson_orin.build_for_local_gpu(mod), inputs, runs=5)
    assert bundle.max_abs_diff(outputs, reference) <= 1e-4 * max(1.0, float(np.abs(reference[0]).max()))
    assert median_ms > 0
