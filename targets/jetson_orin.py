"""The jetson-orin target: CUDA sm_87 kernels with an aarch64 Cortex-A78 host side.

Kernels are scheduled by :func:`hanasc.targets.pipelines.gpu_default_rules`: int8 GEMMs and convolutions as
``dp4a`` (:mod:`hanasc.targets.cuda_int8`), fp16 GEMMs whose sizes all exceed 64 on tensor cores (dlight's
``wmma`` tensorization), the rest by dlight's other rules.

Built and checked offline here (no GPU needed); ``build_for_local_gpu`` / ``run_on_local_gpu`` run the same
model on a GPU of this machine, when there is one.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from hanasc.core.atomic import atomic_dir
from hanasc.core.errors import HanascError
from hanasc.targets import aarch64_runtime, aarch64_tools, bundle, bundle_readme, cuda_kernels, host
from hanasc.targets.base import Choices
from hanasc.targets.cortex_a78 import TARGET_JSON as A78_TARGET_JSON
from hanasc.targets.cuda_toolchain import kernel_compiler, local_gpu_available
from hanasc.targets.host import flatten_outputs
from hanasc.targets.quiet import export_library
from hanasc.targets.tvm_family import CudaTarget

ARCH = "sm_87"
TARGET_JSON = {"kind": "cuda", "arch": ARCH, "host": A78_TARGET_JSON}
TARGET = CudaTarget(
    name="jetson-orin",
    aliases=("orin",),
    description="NVIDIA Jetson Orin: CUDA sm_87 kernels with an aarch64 A78 host",
    tvm_target_json=TARGET_JSON,
    choices=Choices(compute_weight_bits=(32, 16, 8), storage_weight_bits=(4, 2), act_bits=(32, 16, 8)),
    builder="hanasc.targets.jetson_orin:build_bundle",
    checked_here="build; sm_87 PTX/cubin; launch bounds, shared memory, registers within limits",
    checked_on_device="numerics and latency (or on a lent GPU as plain cuda)",
    kernel_notes=(
        "int8 GEMMs and convs: dp4a (4 byte products per instruction, int32 sums); fp16 GEMMs "
        "with every size > 64: tensor cores (wmma); int8 depthwise, int8 tensor cores: not yet "
        "(plain CUDA); the rest: dlight's default schedules"
    ),
)
TARGETS = (TARGET,)


def tvm_target():
    import tvm

    return tvm.target.Target(TARGET_JSON)


def build_bundle(mod, out_dir: Path, probe_inputs: list[np.ndarray] | dict) -> bundle.BundleReport:
    """Build ``mod`` (weights bound, or as parameters: integer weights then stay packed) for Orin: aarch64
    host library, precompiled sm_87 kernels, runner."""
    import tvm

    from hanasc.targets.late_binding import compile_late_bound  # deferred: TVM (look-ups import no TVM)

    probe_inputs = bundle.as_list(probe_inputs)
    runtime = aarch64_runtime.require(cuda=True)
    aarch64_tools.require_tool(aarch64_tools.CXX)
    start = time.perf_counter()
    runner = aarch64_tools.build_runner(runtime)
    reference = host.run(host.build_artifact(mod), probe_inputs)
    target = tvm_target()
    compile_start = time.perf_counter()
    executable = compile_late_bound(mod, target)
    compile_seconds = time.perf_counter() - compile_start
    cuda_mod = cuda_kernels.find_cuda_module(executable)
    if cuda_mod is None:
        raise HanascError("the CUDA build holds no CUDA kernels")
    source = cuda_mod.inspect_source()
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        tmp.chmod(0o755)  # a bundle is copied to a device: readable by others, like any build output
        export_library(executable, tmp / "model.so", fcompile=aarch64_tools.cross_compiler())
        (tmp / "kernels.cu").write_text(source)
        nvcc_start = time.perf_counter()
        with target:
            ptx = cuda_kernels.compile_ptx(source, ARCH)
        (tmp / "kernels.ptx").write_text(ptx)
        ptxas_report = cuda_kernels.assemble_cubin(tmp / "kernels.ptx", tmp / "kernels.cubin", ARCH)
        nvcc_seconds = time.perf_counter() - nvcc_start
        check = cuda_kernels.check_kernels(source, ptx, ptxas_report, ARCH)
        if check.problems:
            raise HanascError(f"{TARGET.name}: kernel outside the {ARCH} limits: {check.problems[0]}")
        shutil.copy2(runner, tmp / "runner")
        (tmp / "rt").mkdir()
        for lib in aarch64_runtime.CPU_LIBS + aarch64_runtime.CUDA_LIBS:
            shutil.copy2(runtime / lib, tmp / "rt" / lib)
        manifest = {
            "format": "hanasc.bundle/1",
            "target": TARGET.name,
            "tvm_target": str(target),
            "tvm_version": tvm.__version__,
            "device": "cuda",
            "contents": _contents(),
            "kernels": {"cubin": "kernels.cubin", "ptx": "kernels.ptx", "source": "kernels.cu", "arch": ARCH},
            **bundle.write_probe(tmp, probe_inputs, reference),
        }
        bundle.write_manifest(tmp, manifest)
        extra = " --device cuda --kernels kernels.cubin --kernel-source kernels.cu"
        command = bundle_readme.runner_command(manifest, extra)
        (tmp / "README.md").write_text(bundle_readme.render(manifest, _device_setup(), command, _notes()))
    return bundle.BundleReport(
        target=TARGET.name,
        out_dir=out_dir,
        files=bundle.file_sizes(out_dir),
        build_seconds=time.perf_counter() - start,
        checks={
            "compile_seconds": round(compile_seconds, 2),
            "nvcc_ptxas_seconds": round(nvcc_seconds, 2),
            "kernels": check.to_json(),
        },
        notes=[
            "kernels checked offline (PTX target, launch bounds, smem, registers); numerics, latency on a GPU"
        ],
    )


def _contents() -> dict[str, str]:
    return {
        "model.so": "host side of the model (aarch64 shared library; embeds the CUDA source of the kernels)",
        "kernels.cubin": f"the kernels compiled for {ARCH} (nvcc -> PTX, ptxas -> SASS)",
        "kernels.ptx": f"the same kernels as PTX (.target {ARCH})",
        "kernels.cu": "the CUDA source TVM generated (runner and C API check model.so embeds it)",
        "runner": "C++ runner (aarch64); --device cuda loads rt/libtvm_runtime_cuda.so, serves kernels.cubin",
        "rt/": "TVM runtime for aarch64: libtvm_runtime.so, libtvm_ffi.so, libtvm_runtime_cuda.so",
        "probe_input.bin": "a probe input (raw float32)",
        "probe_output.bin": "the host build's output for the probe input",
        "bundle.json": "this bundle's manifest (shapes, dtypes, target, kernels)",
    }


def _device_setup() -> list[str]:
    return [
        "Copy this folder to the Jetson Orin (aarch64 Linux, glibc >= 2.28).",
        "`rt/libtvm_runtime_cuda.so` links `libcudart.so.13` and `libcuda.so.1`: the device needs a CUDA 13 "
        "runtime and a driver that supports CUDA 13 (a JetPack release with CUDA 13). With an older CUDA "
        "(e.g. JetPack 6 / CUDA 12) build `libtvm_runtime_cuda.so` from the TVM 0.27 sources against it.",
        "Put the CUDA libraries on the loader path if they are not there already, e.g. "
        "`export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$LD_LIBRARY_PATH`.",
        "Lock the clocks before timing: `sudo nvpmodel -m 0 && sudo jetson_clocks`.",
    ]


def _notes() -> list[str]:
    return [
        "model.so embeds the CUDA source; TVM compiles it when the library is loaded unless someone supplies "
        "the binary. The runner does: it registers `tvm_callback_cuda_compile` to return kernels.cubin, "
        "after checking the embedded source equals kernels.cu. No Python, nvcc or NVRTC runs on the device.",
        "The latency line times one call of `main` followed by a stream synchronize.",
    ]


def local_gpu_target():
    """A CUDA target for this machine's GPU (its own arch), with this machine's CPU as host."""
    import tvm

    dev = tvm.cuda(0)
    arch = "sm_" + dev.compute_version.replace(".", "")
    return tvm.target.Target({"kind": "cuda", "arch": arch}, host=host.tvm_target())


def build_for_local_gpu(mod):
    """Build ``mod`` with the pipeline of the Orin bundle (:func:`compile_late_bound`: dp4a int8 GEMMs,
    dlight schedules), for the GPU of this machine."""
    from hanasc.targets.late_binding import compile_late_bound  # deferred: TVM (look-ups import no TVM)

    if not local_gpu_available():
        raise HanascError("no CUDA GPU on this machine")
    with kernel_compiler():
        return compile_late_bound(mod, local_gpu_target())


def run_on_local_gpu(
    executable, inputs: list[np.ndarray] | dict, runs: int = 20
) -> tuple[list[np.ndarray], float]:
    """Run on this machine's GPU; return the outputs and the median latency in ms over ``runs`` calls."""
    import tvm
    from tvm import relax

    dev = tvm.cuda(0)
    with kernel_compiler():
        vm = relax.VirtualMachine(executable, dev)
        args = [tvm.runtime.tensor(np.ascontiguousarray(x), dev) for x in bundle.as_list(inputs)]
        outputs = flatten_outputs(vm["main"](*args))
        timer = vm.time_evaluator("main", dev, number=1, repeat=max(1, runs), min_repeat_ms=0)
        median_ms = float(np.median(timer(*args).results) * 1e3)
    return outputs, median_ms
