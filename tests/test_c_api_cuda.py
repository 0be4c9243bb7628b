"""The C API of the jetson-orin (CUDA) bundle (docs/deploy-c.md): what the bundle ships, the aarch64 library's
symbols and embedded kernels, the example app cross-built with CMake and run under qemu (where it stops at
the missing CUDA runtime, as the device-less machine must); on a machine with a GPU, the same C API runs a
model built for that GPU and equals TVM's Python runtime."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from test_c_api import CHECKS, EXAMPLE, TOLERANCE, apply_bundle, cmake_build, run

from hanasc.core.errors import HanascError
from hanasc.targets import bundle, c_package

QEMU = ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"]
API = (
    "hanasc_model_create",
    "hanasc_model_create_embedded",
    "hanasc_model_num_inputs",
    "hanasc_model_num_outputs",
    "hanasc_model_input_info",
    "hanasc_model_output_info",
    "hanasc_model_run",
    "hanasc_model_last_error",
    "hanasc_model_destroy",
)
needs_qemu = pytest.mark.skipif(shutil.which("qemu-aarch64") is None, reason="needs qemu-user")


def tiny_model(path: Path) -> None:
    """Conv 3x3 (1 -> 4 channels) + ReLU + Gemm to 10 on a 1x1x8x8 input: a few CUDA kernels, built fast."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((4, 1, 3, 3)) / 3).astype(np.float32)
    fc = (rng.standard_normal((10, 4 * 8 * 8)) / 16).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1, name="fc"),
    ]
    io = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "tiny",
        [io("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [io("y", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(fc, "fc")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.fixture(scope="module")
def orin_bundle(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("c-orin")
    tiny_model(folder / "tiny.onnx")
    return apply_bundle(folder / "tiny.onnx", folder / "out", "jetson-orin")


def test_orin_bundle_ships_the_c_package(orin_bundle):
    for name in (
        "include/hanasc_model.h",
        "lib/libhanasc_model.so",
        "lib/libhanasc_model.a",
        "lib/pkgconfig/hanasc_model.pc",
        "lib/pkgconfig/hanasc_model-static.pc",
        "lib/cmake/hanasc_model/hanasc_model-config.cmake",
        "rt/libtvm_runtime.so",
        "rt/libtvm_ffi.so",
        "rt/libtvm_runtime_cuda.so",
        "kernels.cubin",
        "kernels.cu",
        "runner",
        "model.so",
    ):
        assert (orin_bundle / name).is_file(), name
    assert (orin_bundle / "model.io").read_text().splitlines() == [
        "hanasc.io/1",
        "device cuda",
        "input x float32 4 1 1 8 8",
        "output output0 float32 2 1 10",
    ]
    assert c_package.verify_checksums(orin_bundle) == []
    listed = {line.split("  ", 1)[1] for line in (orin_bundle / "MANIFEST.sha256").read_text().splitlines()}
    on_disk = {str(p.relative_to(orin_bundle)) for p in orin_bundle.rglob("*") if p.is_file()}
    assert listed == on_disk - {"MANIFEST.sha256"}
    with tarfile.open(c_package.archive_path(orin_bundle)) as tar:
        names = {m.name.removeprefix("jetson-orin/") for m in tar.getmembers() if m.isfile()}
    assert names == on_disk
    manifest = bundle.read_manifest(orin_bundle)
    assert manifest["device"] == "cuda" and "libtvm_runtime_cuda.so" in manifest["contents"]["rt/"]
    readme = (orin_bundle / "README.md").read_text()
    assert "find_package(hanasc_model" in readme and "device cuda" in readme
    pc = (orin_bundle / "lib" / "pkgconfig" / "hanasc_model.pc").read_text()
    assert "jetson-orin" in pc and str(orin_bundle) not in pc


def test_the_library_is_aarch64_exports_the_api_and_holds_the_kernels(orin_bundle):
    library = orin_bundle / "lib" / "libhanasc_model.so"
    header = run(["readelf", "-h", str(library)]).stdout
    assert "AArch64" in header
    exported = run(["readelf", "--dyn-syms", "-W", str(library)]).stdout
    defined = {line.split()[-1] for line in exported.splitlines() if " FUNC " in line and " UND " not in line}
    assert set(API) <= defined
    dynamic = run(["readelf", "-d", str(library)]).stdout
    assert "[libtvm_runtime.so]" in dynamic and "$ORIGIN/../rt" in dynamic
    assert "libtvm_runtime_cuda" not in dynamic  # loaded at run time (it needs the device's libcudart)
    data = library.read_bytes()
    assert b"libtvm_runtime_cuda.so" in data and b"tvm_callback_cuda_compile" in data
    static = (orin_bundle / "lib" / "libhanasc_model.a").read_bytes()
    for kernels in ("kernels.cubin", "kernels.cu", "model.so"):  # embedded, for hanasc_model_create_embedded
        content = (orin_bundle / kernels).read_bytes()
        assert content in data and content in static, kernels


@needs_qemu
def test_example_cross_builds_and_stops_at_the_missing_cuda_runtime(orin_bundle, tmp_path):
    build = tmp_path / "build"
    toolchain = c_package.cmake_dir() / "aarch64-linux-gnu.cmake"
    cmake_build(EXAMPLE, build, f"-DCMAKE_PREFIX_PATH={orin_bundle}", f"-DCMAKE_TOOLCHAIN_FILE={toolchain}")
    probe = str(orin_bundle / "probe_input.bin")
    for app, args in (("c-app", [probe, str(orin_bundle)]), ("c-app-static", [probe])):
        assert "AArch64" in run(["readelf", "-h", str(build / app)]).stdout
        done = subprocess.run([*QEMU, str(build / app), *args], capture_output=True, text=True, timeout=120)
        # The C API read `device cuda` and loads the CUDA runtime of rt/: here, without libcudart, it says so.
        assert done.returncode == 1, (app, done.stdout, done.stderr)
        assert done.stderr.startswith("c-app: loading the model: "), done.stderr
        assert "cannot load " in done.stderr and "rt/libtvm_runtime_cuda.so: libcudart.so.13" in done.stderr


CREATE = r"""
#include <stdio.h>
#include "hanasc_model.h"

int main(int argc, char** argv) {
  hanasc_model* m = NULL;
  hanasc_status s = hanasc_model_create(argv[1], &m);
  printf("status %d null %d: %s\n", (int)s, m == NULL, hanasc_model_last_error());
  hanasc_model_destroy(m);
  return argc == 2 ? 0 : 1;
}
"""


@needs_qemu
def test_a_bad_device_line_is_a_load_error(orin_bundle, tmp_path):
    moved = tmp_path / "bundle"
    shutil.copytree(orin_bundle, moved)
    io = moved / "model.io"
    io.write_text(io.read_text().replace("device cuda", "device tpu"))
    source = tmp_path / "create.c"
    source.write_text(CREATE)
    lib = moved / "lib"
    cmd = ["aarch64-linux-gnu-gcc", str(source), f"-I{moved / 'include'}", f"-L{lib}", "-lhanasc_model"]
    run([*cmd, f"-Wl,-rpath,{lib}", f"-Wl,-rpath-link,{moved / 'rt'}", "-o", str(tmp_path / "create")])
    done = run([*QEMU, str(tmp_path / "create"), str(moved)])
    assert done.stdout.startswith("status 2 null 1: "), done.stdout  # HANASC_ERROR_LOAD, no model
    assert "unknown device 'tpu' (cpu or cuda)" in done.stdout


def test_a_gpu_bundle_without_its_kernels_is_refused(orin_bundle, tmp_path):
    broken = tmp_path / "jetson-orin"
    shutil.copytree(orin_bundle, broken)
    (broken / "kernels.cubin").unlink()
    with pytest.raises(HanascError, match=r"kernels.cubin: the GPU bundle's kernels are missing"):
        c_package.add_c_package(broken, "jetson-orin", "aarch64-linux-gnu-g++", ["x"])


def test_c_api_runs_on_the_local_gpu(tmp_path):
    """The CUDA path end to end: the model built for this GPU (jetson-orin's pipeline), its kernels
    precompiled with nvcc/ptxas, the host's C package; outputs equal TVM's Python runtime on the GPU."""
    from hanasc.targets.cuda_toolchain import local_gpu_available

    if not local_gpu_available():
        pytest.skip("needs a CUDA GPU on this machine")
    import tvm

    import hanasc
    from hanasc.core.relax_params import bind_weights
    from hanasc.targets import cuda_kernels, jetson_orin
    from hanasc.targets.quiet import export_library

    tiny_model(tmp_path / "tiny.onnx")
    mod = bind_weights(hanasc.load_model(tmp_path / "tiny.onnx", None).mod)
    executable = jetson_orin.build_for_local_gpu(mod)
    x = np.random.default_rng(1).standard_normal((1, 1, 8, 8)).astype(np.float32)
    expected = jetson_orin.run_on_local_gpu(executable, [x], runs=1)[0][0].reshape(-1)
    folder = tmp_path / "gpu"
    folder.mkdir()
    export_library(executable, folder / "model.so")
    source = cuda_kernels.find_cuda_module(executable).inspect_source()
    (folder / "kernels.cu").write_text(source)
    target = jetson_orin.local_gpu_target()
    arch = "sm_" + tvm.cuda(0).compute_version.replace(".", "")
    with target:
        (folder / "kernels.ptx").write_text(cuda_kernels.compile_ptx(source, arch))
    cuda_kernels.assemble_cubin(folder / "kernels.ptx", folder / "kernels.cubin", arch)
    manifest = {"format": "hanasc.bundle/1", "target": "local-gpu", "device": "cuda", "contents": {}}
    manifest["kernels"] = {"cubin": "kernels.cubin", "source": "kernels.cu", "arch": arch}
    manifest |= bundle.write_probe(folder, [x], [expected.reshape(1, 10)])
    bundle.write_manifest(folder, manifest)
    c_package.add_c_package(folder, "local-gpu", None, ["x"])
    (tmp_path / "checks.c").write_text(CHECKS)
    pc = {"PKG_CONFIG_PATH": str(folder / "lib" / "pkgconfig")}
    flags = run(["pkg-config", "--cflags", "--libs", "hanasc_model"], env=pc).stdout.split()
    run(["cc", str(tmp_path / "checks.c"), "-o", str(tmp_path / "checks"), *flags])
    assert run([str(tmp_path / "checks"), str(folder)]).stdout.strip().endswith("ok 2 x float32")
    build = tmp_path / "build"
    cmake_build(EXAMPLE, build, f"-DCMAKE_PREFIX_PATH={folder}")
    for app, args in (("c-app", [str(folder)]), ("c-app-static", [])):
        dump = tmp_path / f"{app}.bin"
        run([str(build / app), str(folder / "probe_input.bin"), *args, "--dump", str(dump)])
        assert np.max(np.abs(np.fromfile(dump, np.float32) - expected)) <= TOLERANCE, app
