"""The jetson-orin target: CUDA sm_87 build without a GPU, kernels checked offline; a local GPU run if any."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hanasc.core.errors import HanascError
from hanasc.targets import bundle, cuda_kernels, jetson_orin
from hanasc.targets.cuda_toolchain import local_gpu_available

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc (CUDA toolkit)")


def _bound(path: Path):
    import hanasc
    from hanasc.core.relax_params import bind_weights

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


def _uniform(model, bits: int):
    """``model`` with every layer at W``bits``A``bits``, calibrated on random inputs."""
    from hanasc.frontend.calibration import calibrate
    from hanasc.passes.config import Config, LayerChoice
    from hanasc.recovery.bias_correction import materialize_recovered

    shape = model.inputs[0].shape
    x = np.random.default_rng(0).standard_normal((4, *shape[1:])).astype("float32")
    layers = {layer.name: LayerChoice(w_bits=bits, a_bits=bits) for layer in model.layers}
    return materialize_recovered(model, Config(layers=layers), calibrate(model, x))


@pytest.fixture(scope="module")
def int8_orin_source(test_models) -> str:
    """The CUDA source of the Orin build of an inverted-residual block at W8A8 (stem with 27 taps,
    expand 1x1, 3x3 depthwise, project 1x1)."""
    import hanasc
    from hanasc.targets.late_binding import compile_late_bound

    mod = _uniform(hanasc.load_model(test_models["inverted_residual"]), 8)
    executable = compile_late_bound(mod, jetson_orin.tvm_target())
    return cuda_kernels.find_cuda_module(executable).inspect_source()


def test_orin_int8_convs_run_dp4a(int8_orin_source, tmp_path):
    kernels = cuda_kernels.kernel_bodies(int8_orin_source)
    convs = {n: b for n, b in kernels.items() if n.startswith("fused_conv2d") and "group_conv2d" not in b}
    depthwise = {n: b for n, b in kernels.items() if "group_conv2d" in b}
    assert len(convs) >= 3 and depthwise
    for name, body in convs.items():  # every int8 GEMM-like conv: byte quads, accumulator as third operand
        assert re.search(r"= __dp4a\((\*\(int\*\)\()?\w+_shared_ptr", body), name
        assert "+ __dp4a(" not in body, name
    for name, body in depthwise.items():  # one thread per output: no cross-thread reduction
        assert "__shfl_down_sync" not in body and "__syncthreads" not in body, name
    with jetson_orin.tvm_target():
        ptx = cuda_kernels.compile_ptx(int8_orin_source, jetson_orin.ARCH)
    assert ptx.count("dp4a.s32.s32") >= 16 * len(convs)
    (tmp_path / "k.ptx").write_text(ptx)
    report = cuda_kernels.assemble_cubin(tmp_path / "k.ptx", tmp_path / "k.cubin", jetson_orin.ARCH)
    assert cuda_kernels.check_kernels(int8_orin_source, ptx, report, jetson_orin.ARCH).problems == []


def test_orin_int8_global_loads_stay_aligned(int8_orin_source):
    """Word loads from global memory only where a row holds a multiple of 4 bytes: the stem's 27 taps a
    filter are copied byte by byte (a 4-byte load there would fault on the GPU)."""
    stem = [b for b in cuda_kernels.kernel_bodies(int8_orin_source).values() if "stem" in b or "* 27)" in b]
    assert stem
    for body in stem:
        assert not re.search(r"\*\(int\*\)\(\w+_weight_ptr", body)


def test_dp4a_needs_sm61(test_models):
    import tvm

    import hanasc
    from hanasc.targets.late_binding import compile_late_bound

    mod = _uniform(hanasc.load_model(test_models["plain_conv"]), 8)
    old = tvm.target.Target({"kind": "cuda", "arch": "sm_60"}, host=jetson_orin.tvm_target().host)
    source = cuda_kernels.find_cuda_module(compile_late_bound(mod, old)).inspect_source()
    assert "= __dp4a(" not in source and "fused_conv2d" in source


def test_int8_gemm_the_dp4a_tiling_cannot_take_falls_back_to_scalar(test_models, monkeypatch):
    """A schedule failure is not a build failure: dlight's scalar GEMM (not its int8 tensor cores)."""
    import hanasc
    from hanasc.targets import cuda_int8
    from hanasc.targets.late_binding import compile_late_bound

    def fail(*_args):
        raise ValueError("a form the tiling does not take")

    monkeypatch.setattr(cuda_int8.Dp4aMatmul, "_schedule", fail)
    mod = _uniform(hanasc.load_model(test_models["inverted_residual"]), 8)
    source = cuda_kernels.find_cuda_module(compile_late_bound(mod, jetson_orin.tvm_target())).inspect_source()
    assert "fused_conv2d" in source and "__dp4a(" not in source.split("#endif // __CUDA_ARCH__ >= 610")[-1]
    assert "wmma" not in source


def test_dp4a_intrinsic_registers_once():
    from hanasc.targets.cuda_int8 import intrinsic_name

    assert intrinsic_name("uint8", "int8") == intrinsic_name("uint8", "int8") == "hanasc_dp4a_uint8_int8_acc"


@pytest.mark.slow
@pytest.mark.parametrize("bits", [32, 8])
def test_orin_efficientnet_offline(effnet_path, tmp_path, bits):
    """fp32 and W8A8 (which crashed in dlight's int8 tensor-core rule before the dp4a rule took it)."""
    import hanasc

    model = hanasc.load_model(effnet_path)
    mod = _uniform(model, bits) if bits < 32 else _bound(effnet_path)[1]
    report = jetson_orin.build_bundle(mod, tmp_path / "effnet", model.example_inputs())
    _assert_kernels_within_limits(report.checks)
    assert len(report.checks["kernels"]["kernels"]) > 20
    source = (tmp_path / "effnet" / "kernels.cu").read_text()
    assert (source.count("= __dp4a(") > 0) == (bits == 8)


@pytest.mark.skipif(not local_gpu_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("bits", [32, 8])
def test_local_gpu_matches_host(test_models, bits):
    """The shipped pipeline on a real GPU (dp4a int8 convs, one-thread depthwise) against the host build."""
    import hanasc
    from hanasc.targets import host

    model = hanasc.load_model(test_models["inverted_residual"])
    mod = _uniform(model, bits) if bits < 32 else _bound(test_models["inverted_residual"])[1]
    inputs = list(model.example_inputs().values())
    reference = host.run(host.build_artifact(mod), inputs)
    outputs, median_ms = jetson_orin.run_on_local_gpu(jetson_orin.build_for_local_gpu(mod), inputs, runs=5)
    # int8: the same integer sums; the float epilogue may round one code differently (one output step)
    tolerance = 1e-4 if bits == 32 else 0.05
    assert bundle.max_abs_diff(outputs, reference) <= tolerance * max(1.0, float(np.abs(reference[0]).max()))
    assert median_ms > 0
