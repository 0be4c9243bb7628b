"""hanasc_add_model (targets/cmake/HanascModel.cmake): the build step re-runs when the model changes and not
otherwise, the app links the target it exposes, and a missing model stops CMake with one line."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_c_api import EXAMPLE, run, top5_lines

from hanasc.targets import c_package

PREAMBLE = """\
cmake_minimum_required(VERSION 3.16)
project(app C)
execute_process(COMMAND python3 -m hanasc.cmake OUTPUT_VARIABLE HANASC_CMAKE_DIR
                OUTPUT_STRIP_TRAILING_WHITESPACE)
list(APPEND CMAKE_MODULE_PATH "${HANASC_CMAKE_DIR}")
include(HanascModel)
"""  # what an application's CMakeLists.txt writes to find hanasc_add_model
APP = """\
add_executable(app main.c)
target_link_libraries(app PRIVATE classifier)
"""
PROJECT = PREAMBLE + "hanasc_add_model(classifier MODEL {model} TARGET host CONFIG config.json)\n" + APP


def make_project(folder: Path, model: Path, model_name: str = "model.onnx") -> Path:
    folder.mkdir()
    if model.is_file():
        shutil.copy2(model, folder / "model.onnx")
    shutil.copy2(EXAMPLE / "main.c", folder / "main.c")
    (folder / "config.json").write_text(json.dumps({"layers": {}, "skip": []}))
    (folder / "CMakeLists.txt").write_text(PROJECT.replace("{model}", model_name))
    return folder


@pytest.mark.slow  # two hanasc apply runs and three builds: ~50 s on 2 loaded cores
def test_add_model_reruns_only_when_the_model_changes(test_models, tmp_path):
    project = make_project(tmp_path / "project", test_models["dense_head"])
    build = tmp_path / "build"
    run(["cmake", "-S", str(project), "-B", str(build)])
    library = build / "classifier" / "apply" / "host" / "lib" / "libhanasc_model.so"

    first = run(["cmake", "--build", str(build)])
    assert "hanasc: classifier" in first.stdout and library.is_file()
    stamp = library.stat().st_mtime_ns
    again = run(["cmake", "--build", str(build)])
    assert "hanasc: classifier" not in again.stdout and library.stat().st_mtime_ns == stamp

    shutil.copyfile(test_models["dense_softmax"], project / "model.onnx")  # another model (newer mtime)
    changed = run(["cmake", "--build", str(build)])
    assert "hanasc: classifier" in changed.stdout and library.stat().st_mtime_ns > stamp

    probe = build / "classifier" / "apply" / "host" / "probe_input.bin"
    scores = run([str(build / "app"), str(probe)])
    assert len(top5_lines(scores.stdout)) == 5
    expected = np.fromfile(probe.parent / "probe_output.bin", np.float32)
    assert f"score={expected.max():.5f}" in top5_lines(scores.stdout)[0]  # the new model's (softmax) output


def test_missing_model_is_one_cmake_error_line(tmp_path):
    project = make_project(tmp_path / "project", tmp_path / "none.onnx", "missing.onnx")
    build = tmp_path / "build"
    done = subprocess.run(["cmake", "-S", str(project), "-B", str(build)], capture_output=True, text=True)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if "hanasc_add_model" in line and "not found" in line]
    assert len(lines) == 1, done.stderr
    assert (
        lines[0].strip() == f"hanasc_add_model(classifier): MODEL file not found: {project / 'missing.onnx'}"
    )
    assert not (build / "classifier").exists() and not list(build.glob("*.hanasc-version"))


def test_cmake_dir_holds_the_module_and_the_toolchain_file():
    printed = run(["python3", "-m", "hanasc.cmake"]).stdout.strip()
    assert Path(printed) == c_package.cmake_dir()
    assert {"HanascModel.cmake", "aarch64-linux-gnu.cmake"} <= {p.name for p in Path(printed).iterdir()}


SEARCH_PROJECT = (
    PREAMBLE
    + """\
hanasc_add_model(classifier MODEL model.onnx TARGET a78 BUDGET 1.5x DATA calib.npz STATIC
                 ARGS --generations 2 --population 8)
"""
    + APP
)


@pytest.mark.slow  # a search (hanasc compile), its Config applied, a cross build: ~3 min on 2 loaded cores
def test_add_model_searches_then_links_statically_for_a78(test_models, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copyfile(test_models["dense_head"], project / "model.onnx")
    shutil.copy2(EXAMPLE / "main.c", project / "main.c")
    calib = np.random.default_rng(0).standard_normal((32, 1, 28, 28)).astype(np.float32)
    np.savez(project / "calib.npz", x=calib)
    (project / "CMakeLists.txt").write_text(SEARCH_PROJECT)
    build = tmp_path / "build"
    toolchain = c_package.cmake_dir() / "aarch64-linux-gnu.cmake"
    run(["cmake", "-S", str(project), "-B", str(build), f"-DCMAKE_TOOLCHAIN_FILE={toolchain}"])
    run(["cmake", "--build", str(build)])
    out = build / "classifier"
    assert (out / "compile" / "report.json").is_file()  # the search ran, then its Config was applied
    bundle = out / "apply" / "cortex-a78"
    needed = run(["readelf", "-d", str(build / "app")]).stdout
    assert "libhanasc_model" not in needed and "libtvm_runtime.so" in needed
    qemu = ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"]
    done = run(
        [*qemu, str(build / "app"), str(bundle / "probe_input.bin"), "--dump", str(tmp_path / "o.bin")]
    )
    assert len(top5_lines(done.stdout)) == 5
    reference = np.fromfile(bundle / "probe_output.bin", np.float32)  # the host build of the same Config
    assert np.max(np.abs(np.fromfile(tmp_path / "o.bin", np.float32) - reference)) <= 1e-4 * max(
        1.0, float(np.max(np.abs(reference)))
    )
    assert "hanasc: classifier" not in run(["cmake", "--build", str(build)]).stdout
