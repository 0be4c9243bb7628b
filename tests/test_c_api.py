"""The C API of a bundle (docs/deploy-c.md): the files every CPU bundle ships, the example app built with
CMake for the host and (cross) for cortex-a78 under qemu, equal to the Python runtime; bad buffers."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from hanasc.targets import c_package

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "c-app"
TOLERANCE = 1e-5


def run(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})}
    )
    assert done.returncode == 0, f"{cmd}\n{done.stdout}\n{done.stderr}"
    return done


def cmake_build(source: Path, build: Path, *options: str) -> None:
    """Configure and build a CMake project (Makefiles) in ``build``."""
    run(["cmake", "-S", str(source), "-B", str(build), *options])
    run(["cmake", "--build", str(build)])


def apply_bundle(model: Path, out: Path, target: str) -> Path:
    """``hanasc apply`` of a Config that changes nothing; returns the target's bundle folder."""
    config = out.parent / f"{out.name}-config.json"
    config.write_text(json.dumps({"layers": {}, "skip": []}))
    done = run_cli("apply", str(model), str(config), "--out", str(out), "--target", target)
    assert done.returncode == 0, done.stderr
    return out / target


def python_runtime(bundle_dir: Path, x: np.ndarray) -> np.ndarray:
    """The host bundle's model.so run by TVM's Python runtime."""
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(tvm.runtime.load_module(str(bundle_dir / "model.so")), tvm.cpu())
    return vm["main"](tvm.runtime.tensor(x, tvm.cpu())).numpy()


def write_pgm(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A P5 image of the input's height and width; returns the float input the app makes of it."""
    pixels = np.random.default_rng(3).integers(0, 256, shape[2:], dtype=np.uint8)
    path.write_bytes(f"P5\n{shape[3]} {shape[2]}\n255\n".encode() + pixels.tobytes())
    return (pixels.astype(np.float32) / 255.0).reshape(shape)


@pytest.fixture(scope="module")
def host_bundle(test_models, tmp_path_factory) -> Path:
    return apply_bundle(test_models["dense_head"], tmp_path_factory.mktemp("c-host") / "out", "host")


@pytest.fixture(scope="module")
def host_app(host_bundle, tmp_path_factory) -> Path:
    build = tmp_path_factory.mktemp("c-host-build")
    cmake_build(EXAMPLE, build, f"-DCMAKE_PREFIX_PATH={host_bundle}")
    return build


def top5_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("top")]


def test_bundle_ships_the_c_package(host_bundle):
    for name in (
        "include/hanasc_model.h",
        "lib/libhanasc_model.so",
        "lib/libhanasc_model.a",
        "lib/pkgconfig/hanasc_model.pc",
        "lib/cmake/hanasc_model/hanasc_model-config.cmake",
        "rt/libtvm_runtime.so",
        "model.io",
        "MANIFEST.sha256",
    ):
        assert (host_bundle / name).is_file(), name
    listed = {line.split("  ", 1)[1] for line in (host_bundle / "MANIFEST.sha256").read_text().splitlines()}
    on_disk = {str(p.relative_to(host_bundle)) for p in host_bundle.rglob("*") if p.is_file()}
    assert listed == on_disk - {"MANIFEST.sha256"}
    run(["sha256sum", "-c", "--quiet", "MANIFEST.sha256"], cwd=host_bundle)
    (host_bundle / "probe_input.bin").write_bytes(b"changed")
    try:
        assert c_package.verify_checksums(host_bundle) == ["probe_input.bin"]
    finally:
        with tarfile.open(c_package.archive_path(host_bundle)) as tar:  # restore it from the archive
            member = tar.extractfile("host/probe_input.bin")
            (host_bundle / "probe_input.bin").write_bytes(member.read())
    assert c_package.verify_checksums(host_bundle) == []
    with tarfile.open(c_package.archive_path(host_bundle)) as tar:
        names = {m.name.removeprefix("host/") for m in tar.getmembers() if m.isfile()}
    assert names == on_disk
    assert "input input float32 4 1 1 28 28" in (host_bundle / "model.io").read_text()
    assert "find_package(hanasc_model" in (host_bundle / "README.md").read_text()


def test_c_app_on_the_host_equals_the_python_runtime(host_bundle, host_app, tmp_path):
    x = write_pgm(tmp_path / "digit.pgm", (1, 1, 28, 28))
    expected = python_runtime(host_bundle, x).reshape(-1)
    for app, args in (("c-app", [str(host_bundle)]), ("c-app-static", [])):
        dump = tmp_path / f"{app}.bin"
        done = run([str(host_app / app), str(tmp_path / "digit.pgm"), *args, "--dump", str(dump)])
        got = np.fromfile(dump, np.float32)
        assert np.max(np.abs(got - expected)) <= TOLERANCE, app
        order = np.argsort(-expected)[:5]
        indices = [int(line.split("index=")[1].split()[0]) for line in top5_lines(done.stdout)]
        assert indices == [int(i) for i in order], done.stdout


def test_c_app_built_for_a78_under_qemu_prints_what_the_host_build_prints(
    test_models, host_bundle, host_app, tmp_path
):
    bundle = apply_bundle(test_models["dense_head"], tmp_path / "out", "cortex-a78")
    header = (bundle / "lib" / "libhanasc_model.so").read_bytes()[:20]
    assert int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64
    build = tmp_path / "build-a78"
    toolchain = c_package.cmake_dir() / "aarch64-linux-gnu.cmake"
    cmake_build(EXAMPLE, build, f"-DCMAKE_PREFIX_PATH={bundle}", f"-DCMAKE_TOOLCHAIN_FILE={toolchain}")
    image = tmp_path / "digit.pgm"
    x = write_pgm(image, (1, 1, 28, 28))
    qemu = ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"]
    arm = run([*qemu, str(build / "c-app-static"), str(image), "--dump", str(tmp_path / "arm.bin")])
    host = run([str(host_app / "c-app-static"), str(image)])
    assert arm.stdout == host.stdout and len(top5_lines(arm.stdout)) == 5
    expected = python_runtime(host_bundle, x).reshape(-1)
    assert np.max(np.abs(np.fromfile(tmp_path / "arm.bin", np.float32) - expected)) <= TOLERANCE
    from_dir = run([*qemu, str(build / "c-app"), str(image), str(bundle)])
    assert top5_lines(from_dir.stdout) == top5_lines(host.stdout)


CHECKS = r"""
#include <stdio.h>
#include <string.h>
#include "hanasc_model.h"

int main(int argc, char** argv) {
  hanasc_model* m = NULL;
  hanasc_tensor_info in, out;
  static float x[4096], y[4096];
  const void* ins[1] = {x};
  void* outs[1] = {y};
  size_t in_size, out_size;
  if (hanasc_model_create("/no/such/bundle", &m) != HANASC_ERROR_LOAD || m != NULL) return 10;
  printf("missing: %s\n", hanasc_model_last_error());
  if (hanasc_model_create(argv[1], &m) != HANASC_OK) return 11;
  if (hanasc_model_input_info(m, 0, &in) || hanasc_model_output_info(m, 0, &out)) return 12;
  if (hanasc_model_input_info(m, 5, &in) != HANASC_ERROR_ARGUMENT) return 13;
  in_size = in.nbytes - 4, out_size = out.nbytes;
  if (hanasc_model_run(m, ins, &in_size, outs, &out_size) != HANASC_ERROR_BUFFER_SIZE) return 14;
  printf("small input: %s\n", hanasc_model_last_error());
  in_size = in.nbytes, out_size = out.nbytes + 4;
  if (hanasc_model_run(m, ins, &in_size, outs, &out_size) != HANASC_ERROR_BUFFER_SIZE) return 15;
  printf("large output: %s\n", hanasc_model_last_error());
  if (hanasc_model_run(NULL, ins, &in_size, outs, &out_size) != HANASC_ERROR_ARGUMENT) return 16;
  out_size = out.nbytes;
  if (hanasc_model_run(m, ins, &in_size, outs, &out_size) != HANASC_OK) return 17;
  if (strlen(hanasc_model_last_error()) != 0) return 18;
  hanasc_model_destroy(m);
  hanasc_model_destroy(NULL);
  printf("ok %d %s %s\n", argc, in.name, out.dtype);
  return 0;
}
"""


def test_wrong_buffer_size_returns_an_error_code_and_a_message(host_bundle, tmp_path):
    source = tmp_path / "checks.c"
    source.write_text(CHECKS)
    pc = {"PKG_CONFIG_PATH": str(host_bundle / "lib" / "pkgconfig")}
    flags = run(["pkg-config", "--cflags", "--libs", "hanasc_model"], env=pc).stdout.split()
    run(["cc", str(source), "-o", str(tmp_path / "checks"), *flags])
    done = subprocess.run([str(tmp_path / "checks"), str(host_bundle)], capture_output=True, text=True)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    assert "/no/such/bundle" in lines["missing"]
    assert "input 0 ('input') is 3132 bytes; it needs 3136" in lines["small input"]
    assert "output 0 ('output0') is 44 bytes; it needs 40" in lines["large output"]
    assert done.stdout.strip().endswith("ok 2 input float32")


def test_the_archive_unpacked_elsewhere_builds_and_runs(host_bundle, tmp_path):
    with tarfile.open(c_package.archive_path(host_bundle)) as tar:
        tar.extractall(tmp_path / "moved", filter="data")
    moved = tmp_path / "moved" / "host"
    assert c_package.verify_checksums(moved) == []
    (tmp_path / "checks.c").write_text(CHECKS)
    pc = {"PKG_CONFIG_PATH": str(moved / "lib" / "pkgconfig")}
    flags = run(["pkg-config", "--cflags", "--libs", "hanasc_model"], env=pc).stdout.split()
    assert str(host_bundle) not in " ".join(flags)  # the package names no path of where it was built
    run(["cc", str(tmp_path / "checks.c"), "-o", str(tmp_path / "checks"), *flags])
    assert run([str(tmp_path / "checks"), str(moved)]).stdout.strip().endswith("ok 2 input float32")


def test_the_static_pkg_config_links_a_c_program(host_bundle, tmp_path):
    source = tmp_path / "embedded.c"
    source.write_text(CHECKS.replace("hanasc_model_create(argv[1], &m)", "hanasc_model_create_embedded(&m)"))
    pc = {"PKG_CONFIG_PATH": str(host_bundle / "lib" / "pkgconfig")}
    flags = run(["pkg-config", "--cflags", "--libs", "hanasc_model-static"], env=pc).stdout.split()
    run(["cc", str(source), "-o", str(tmp_path / "embedded"), *flags])
    needed = run(["readelf", "-d", str(tmp_path / "embedded")]).stdout
    assert "libtvm_runtime.so" in needed and "libhanasc_model" not in needed  # the model is linked in
    done = subprocess.run([str(tmp_path / "embedded"), "unused"], capture_output=True, text=True)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    assert "ok 2 input float32" in done.stdout


TWO_IO = r"""
#include <stdio.h>
#include "hanasc_model.h"

int main(int argc, char** argv) {
  hanasc_model* m = NULL;
  hanasc_tensor_info info;
  float a[4] = {1, 2, 3, 4}, b[8] = {1, 1, 1, 1, -1, -1, -1, -1}, sum[8], sq[4];
  const void* ins[2] = {a, b};
  void* outs[2] = {sum, sq};
  size_t in_sizes[2] = {sizeof a, sizeof b}, out_sizes[2] = {sizeof sum, sizeof sq};
  int i;
  if (argc != 2 || hanasc_model_create(argv[1], &m) != HANASC_OK) return 1;
  for (i = 0; i < hanasc_model_num_inputs(m); ++i) {
    hanasc_model_input_info(m, i, &info);
    printf("input %s %s %d %ld\n", info.name, info.dtype, info.ndim, (long)info.shape[info.ndim - 1]);
  }
  for (i = 0; i < hanasc_model_num_outputs(m); ++i) {
    hanasc_model_output_info(m, i, &info);
    printf("output %s %s %lu\n", info.name, info.dtype, (unsigned long)info.nbytes);
  }
  if (hanasc_model_run(m, ins, in_sizes, outs, out_sizes) != HANASC_OK) return 2;
  for (i = 0; i < 8; ++i) printf("%.6f ", sum[i]);
  for (i = 0; i < 4; ++i) printf("%.6f ", sq[i]);
  printf("\n");
  hanasc_model_destroy(m);
  return 0;
}
"""


def two_io_model(path: Path) -> np.ndarray:
    """A model with inputs a (1x4), b (1x8) and outputs a @ w.T + b, a * a; returns w."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.arange(32, dtype=np.float32).reshape(8, 4) / 10
    nodes = [
        helper.make_node("Gemm", ["a", "w"], ["g"], transB=1, name="fc"),
        helper.make_node("Add", ["g", "b"], ["sum"]),
        helper.make_node("Mul", ["a", "a"], ["sq"]),
    ]
    io = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "two_io",
        [io("a", TensorProto.FLOAT, [1, 4]), io("b", TensorProto.FLOAT, [1, 8])],
        [io("sum", TensorProto.FLOAT, [1, 8]), io("sq", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(w, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return w


def test_two_inputs_and_two_outputs(tmp_path):
    w = two_io_model(tmp_path / "two.onnx")
    bundle = apply_bundle(tmp_path / "two.onnx", tmp_path / "out", "host")
    (tmp_path / "two.c").write_text(TWO_IO)
    pc = {"PKG_CONFIG_PATH": str(bundle / "lib" / "pkgconfig")}
    flags = run(["pkg-config", "--cflags", "--libs", "hanasc_model"], env=pc).stdout.split()
    run(["cc", str(tmp_path / "two.c"), "-o", str(tmp_path / "two"), *flags])
    lines = run([str(tmp_path / "two"), str(bundle)]).stdout.splitlines()
    assert lines[:4] == [
        "input a float32 2 4",
        "input b float32 2 8",
        "output output0 float32 32",
        "output output1 float32 16",
    ]
    a, b = np.array([[1, 2, 3, 4]], np.float32), np.array([[1] * 4 + [-1] * 4], np.float32)
    expected = np.concatenate([(a @ w.T + b).ravel(), (a * a).ravel()])
    assert np.max(np.abs(np.array(lines[4].split(), np.float32) - expected)) <= TOLERANCE
