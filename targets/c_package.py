"""The C package of a CPU or GPU bundle: the C API (``include/hanasc_model.h``, ``lib/libhanasc_model.so``
and ``.a`` with the model embedded), ``model.io``, pkg-config and CMake files, the TVM runtime in ``rt/``, a
``MANIFEST.sha256`` of every file, and a ``.tar.gz`` of the bundle beside it (docs/deploy-c.md). A GPU
bundle (``"device": "cuda"`` in its manifest) says ``device cuda`` in ``model.io`` and embeds its
precompiled kernels too; the C API loads ``rt/libtvm_runtime_cuda.so`` at run time, as the runner does.

:func:`with_c_api` wraps a target's bundle builder: the builder writes into a temporary folder, the C
package is added there, and the folder is renamed into place only when everything succeeded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from hanasc.core.atomic import atomic_dir, atomic_file
from hanasc.core.errors import HanascError
from hanasc.targets import aarch64_runtime, aarch64_tools, bundle

SOURCE_DIR = Path(__file__).parent / "runner"
HEADER = SOURCE_DIR / "hanasc_model.h"
SOURCE = SOURCE_DIR / "hanasc_model.cc"
IO_FILE = "model.io"
CHECKSUMS = "MANIFEST.sha256"
RUNTIME_LIBS = ("libtvm_runtime.so", "libtvm_ffi.so")
CUDA_RUNTIME = "libtvm_runtime_cuda.so"  # loaded by the C API at run time, from beside libtvm_runtime.so
STATIC_DEPS = ("stdc++", "dl", "pthread", "m")
_BLOB = """\
    .section .rodata
    .balign 16
    .global hanasc_model_blob_start
    .global hanasc_model_blob_end
    .global hanasc_model_io_start
    .global hanasc_model_io_end
    .global hanasc_model_kernels_start
    .global hanasc_model_kernels_end
    .global hanasc_model_kernel_source_start
    .global hanasc_model_kernel_source_end
hanasc_model_blob_start:
    .incbin "{library}"
hanasc_model_blob_end:
hanasc_model_io_start:
    .incbin "{io}"
hanasc_model_io_end:
hanasc_model_kernels_start:
{kernels}
hanasc_model_kernels_end:
hanasc_model_kernel_source_start:
{kernel_source}
hanasc_model_kernel_source_end:
    .section .note.GNU-stack,"",%progbits
"""


@dataclass(frozen=True)
class Toolchain:
    """The C++ compiler and archiver of a bundle's CPU, and the TVM runtime libraries built for it."""

    cxx: str
    ar: str
    runtime: Path

    @property
    def key(self) -> str:
        return Path(self.cxx).name


def host_runtime() -> Path:
    """The folder of the installed apache-tvm's libtvm_runtime.so, found without importing TVM."""
    spec = importlib.util.find_spec("tvm")
    if spec is None or not spec.submodule_search_locations:
        raise HanascError("the Python package 'tvm' is not installed (pip install apache-tvm)")
    return Path(next(iter(spec.submodule_search_locations))) / "lib"


def toolchain(cross_cxx: str | None) -> Toolchain:
    """The host's g++ and the installed TVM runtime, or the cross g++ and the cached aarch64 runtime."""
    if cross_cxx is None:
        cxx = shutil.which("g++")
        if cxx is None:
            raise HanascError("'g++' not found on PATH; install the Debian package g++ (apt-get install g++)")
        return Toolchain(cxx, shutil.which("ar") or "ar", host_runtime())
    cxx = aarch64_tools.require_tool(cross_cxx)
    return Toolchain(cxx, cxx.removesuffix("g++") + "ar", aarch64_runtime.require())


def _runtime_file(tools: Toolchain, lib: str) -> Path:
    """A runtime library: beside libtvm_runtime.so, or (host wheels) in tvm_ffi/lib."""
    path = tools.runtime / lib
    if not path.is_file() and lib == "libtvm_ffi.so":
        path = tools.runtime.parent.parent / "tvm_ffi" / "lib" / lib
    if not path.is_file():
        raise HanascError(f"TVM runtime library missing: {path}")
    return path


def is_gpu(manifest: dict) -> bool:
    """Whether the bundle's model runs on a CUDA GPU (its manifest's ``device``)."""
    return manifest.get("device", "cpu") == "cuda"


def write_io(folder: Path, manifest: dict, input_names: list[str]) -> None:
    """``model.io``: one line per input and output (role, name, dtype, ndim, shape) for the C API, after
    ``device cuda`` for a GPU bundle (a CPU bundle has no device line)."""
    lines = ["hanasc.io/1"] + (["device cuda"] if is_gpu(manifest) else [])
    for role, specs in (("input", manifest["inputs"]), ("output", manifest["outputs"])):
        for i, spec in enumerate(specs):
            given = input_names[i] if role == "input" and i < len(input_names) else ""
            name = "_".join(given.split()) or f"{role}{i}"  # one word: the C API splits on spaces
            shape = [str(int(d)) for d in spec["shape"]]
            lines.append(" ".join([role, name, spec["dtype"], str(len(shape)), *shape]))
    (folder / IO_FILE).write_text("\n".join(lines) + "\n")


def _wrapper_object(tools: Toolchain) -> Path:
    """``hanasc_model.o`` for this toolchain (cached by sources, compiler and runtime version)."""
    includes = [f"-I{d}" for d in aarch64_runtime.ffi_include_dirs()]
    flags = ["-std=c++17", "-O2", "-fPIC", "-fvisibility=hidden", "-DHANASC_MODEL_EMBEDDED"]
    flags.append(f"-I{SOURCE_DIR}")
    digest = hashlib.sha256(SOURCE.read_bytes() + HEADER.read_bytes())
    digest.update(aarch64_tools.RUNNER_HELPERS.read_bytes())
    digest.update(" ".join([tools.key, *flags, *map(str, includes)]).encode())
    digest.update(str(sorted(aarch64_runtime.host_versions().items())).encode())  # = rt/'s versions
    return aarch64_tools.compile_cached(
        [tools.cxx, *flags, *includes, "-c", str(SOURCE), "-o"], "c-api", digest.hexdigest(), "hanasc_model.o"
    )


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise HanascError(f"{what} failed: {aarch64_tools.first_error(done.stderr)}")


def _blob(folder: Path, manifest: dict) -> str:
    """The assembler source embedding ``model.so``, ``model.io`` and, for a GPU bundle, its kernels."""
    kernels = ["", ""]
    if is_gpu(manifest):
        names = manifest.get("kernels", {})
        paths = [folder / names.get(key, "") for key in ("cubin", "source")]
        missing = [path for path in paths if not path.is_file()]
        if missing:
            raise HanascError(f"{missing[0]}: the GPU bundle's kernels are missing (bundle.json 'kernels')")
        kernels = [f'    .incbin "{path}"' for path in paths]
    return _BLOB.format(
        library=folder / "model.so", io=folder / IO_FILE, kernels=kernels[0], kernel_source=kernels[1]
    )


def build_libraries(folder: Path, tools: Toolchain, manifest: dict) -> None:
    """``lib/libhanasc_model.{so,a}`` (the C API + ``model.so``, ``model.io`` and a GPU bundle's kernels
    embedded) and ``rt/``."""
    lib, rt = folder / "lib", folder / "rt"
    lib.mkdir(exist_ok=True)
    rt.mkdir(exist_ok=True)
    for name in RUNTIME_LIBS + ((CUDA_RUNTIME,) if is_gpu(manifest) else ()):
        if not (rt / name).is_file():
            shutil.copy2(_runtime_file(tools, name), rt / name)
    blob_source = lib / ".blob.S"
    blob_source.write_text(_blob(folder, manifest))
    blob = lib / ".blob.o"
    try:
        _run([tools.cxx, "-c", str(blob_source), "-o", str(blob)], "assembling the embedded model")
        wrapper = _wrapper_object(tools)
        cmd = [tools.cxx, "-shared", "-o", str(lib / "libhanasc_model.so"), str(wrapper), str(blob)]
        cmd += ["-Wl,-soname,libhanasc_model.so", f"-L{rt}", "-ltvm_runtime", "-ltvm_ffi", "-ldl"]
        _run([*cmd, "-Wl,-rpath,$ORIGIN/../rt"], "linking libhanasc_model.so")
        archive = [tools.ar, "rcs", str(lib / "libhanasc_model.a"), str(wrapper), str(blob)]
        _run(archive, "archiving libhanasc_model.a")
    finally:
        blob_source.unlink(missing_ok=True)
        blob.unlink(missing_ok=True)
    (folder / "include").mkdir(exist_ok=True)
    shutil.copy2(HEADER, folder / "include" / HEADER.name)


def write_build_files(folder: Path, target: str, version: str) -> None:
    """pkg-config (shared and static) and CMake config files, all relative to the bundle's folder."""
    pc = folder / "lib" / "pkgconfig"
    pc.mkdir(parents=True, exist_ok=True)
    head = [
        "prefix=${pcfiledir}/../..",
        "libdir=${prefix}/lib",
        "includedir=${prefix}/include",
        "rtdir=${prefix}/rt",
        "",
        "Name: hanasc_model",
        f"Version: {version}",
        "Cflags: -I${includedir}",
    ]
    rt = "-L${rtdir} -ltvm_runtime -ltvm_ffi -Wl,-rpath,${rtdir}"
    shared = [f"Description: hanasc model for {target} (C API, shared library)"]
    shared += ["Libs: -L${libdir} -lhanasc_model -Wl,-rpath,${libdir} " + rt]
    static = [f"Description: hanasc model for {target} (C API, static library; needs the TVM runtime in rt/)"]
    static += ["Libs: ${libdir}/libhanasc_model.a " + rt + " " + " ".join(f"-l{d}" for d in STATIC_DEPS)]
    (pc / "hanasc_model.pc").write_text("\n".join(head + shared) + "\n")
    (pc / "hanasc_model-static.pc").write_text("\n".join(head + static) + "\n")
    cmake = folder / "lib" / "cmake" / "hanasc_model"
    cmake.mkdir(parents=True, exist_ok=True)
    template = (cmake_dir() / "hanasc_model-config.cmake.in").read_text()
    text = template.replace("@TARGET@", target).replace("@VERSION@", version)
    (cmake / "hanasc_model-config.cmake").write_text(text.replace("@STATIC_DEPS@", ";".join(STATIC_DEPS)))
    (cmake / "hanasc_model-config-version.cmake").write_text(
        f'set(PACKAGE_VERSION "{version}")\nset(PACKAGE_VERSION_COMPATIBLE TRUE)\n'
        "if(PACKAGE_FIND_VERSION STREQUAL PACKAGE_VERSION)\n  set(PACKAGE_VERSION_EXACT TRUE)\nendif()\n"
    )


def write_checksums(folder: Path) -> None:
    """``MANIFEST.sha256``: ``sha256sum -c`` format, every file of the bundle but itself."""
    lines = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS):
        lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.relative_to(folder)}")
    (folder / CHECKSUMS).write_text("\n".join(lines) + "\n")


def verify_checksums(folder: Path) -> list[str]:
    """The files whose SHA-256 differs from ``MANIFEST.sha256`` (or that are missing)."""
    bad = []
    for line in (Path(folder) / CHECKSUMS).read_text().splitlines():
        digest, name = line.split("  ", 1)
        path = Path(folder) / name
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            bad.append(name)
    return bad


def cmake_dir() -> Path:
    """hanasc's CMake files: HanascModel.cmake (``hanasc_add_model``), the aarch64 toolchain file."""
    return Path(__file__).parent / "cmake"


def archive_path(out_dir: Path) -> Path:
    return out_dir.with_name(out_dir.name + ".tar.gz")


def add_c_package(folder: Path, target: str, cross_cxx: str | None, input_names: list[str]) -> None:
    """Add the C package to the bundle in ``folder`` (its ``bundle.json`` and ``model.so`` written)."""
    manifest = bundle.read_manifest(folder)
    tools = toolchain(cross_cxx)
    write_io(folder, manifest, input_names)
    build_libraries(folder, tools, manifest)
    write_build_files(folder, target, metadata.version("hanasc"))
    manifest["contents"].update(CONTENTS | (GPU_CONTENTS if is_gpu(manifest) else {}))
    bundle.write_manifest(folder, manifest)
    readme = folder / "README.md"
    if readme.is_file():
        section = README_SECTION + (README_GPU if is_gpu(manifest) else "")
        readme.write_text(readme.read_text().rstrip("\n") + "\n\n" + section)
    write_checksums(folder)


CONTENTS = {
    "model.io": "the inputs and outputs (name, dtype, shape) the C API reads",
    "include/hanasc_model.h": "the C API (docs/deploy-c.md)",
    "lib/libhanasc_model.so": "the C API + this model (shared; needs rt/)",
    "lib/libhanasc_model.a": "the C API + this model (static; link rt/'s libraries, stdc++, dl, pthread, m)",
    "lib/pkgconfig/": "hanasc_model.pc (shared), hanasc_model-static.pc",
    "lib/cmake/hanasc_model/": "find_package(hanasc_model): hanasc_model::hanasc_model (+ _static)",
    "rt/": "the TVM runtime for this CPU: libtvm_runtime.so, libtvm_ffi.so (the build's version)",
    "MANIFEST.sha256": "SHA-256 of every file (sha256sum -c MANIFEST.sha256)",
}

GPU_CONTENTS = {
    "model.io": "the device (cuda) and the inputs and outputs (name, dtype, shape) the C API reads",
    "lib/libhanasc_model.so": "the C API + this model and its kernels (shared; needs rt/, CUDA at run time)",
    "lib/libhanasc_model.a": "the C API + this model and its kernels (static; link rt/'s libraries, stdc++, "
    "dl, pthread, m)",
    "rt/": "the TVM runtime for aarch64: libtvm_runtime.so, libtvm_ffi.so, libtvm_runtime_cuda.so (the C API "
    "and the runner load the last at run time)",
}

README_GPU = """
The model runs on the GPU (`device cuda` in `model.io`): `hanasc_model_create` loads
`rt/libtvm_runtime_cuda.so` (which needs the device's CUDA runtime and driver) and serves the precompiled
`kernels.cubin`, as the runner's `--device cuda` does; the library copies your host buffers to the GPU and
the outputs back.
"""

README_SECTION = """\
## Use it from C/C++

`include/hanasc_model.h` is the C API (create from this folder or from the model embedded in the library,
inputs/outputs, run on your buffers, errors as codes + a message). In your CMake project:

    find_package(hanasc_model REQUIRED)   # cmake -DCMAKE_PREFIX_PATH=/path/to/this/folder
    target_link_libraries(app PRIVATE hanasc_model::hanasc_model)   # or hanasc_model::hanasc_model_static

or with pkg-config: `PKG_CONFIG_PATH=$PWD/lib/pkgconfig pkg-config --cflags --libs hanasc_model` (and
`hanasc_model-static`). The libraries need the TVM runtime in `rt/`. Check the files with
`sha256sum -c MANIFEST.sha256`.
"""


def with_c_api(
    build: Callable, inputs, target: str, cross_cxx: str | None, input_names: list[str]
) -> bundle.BundleReport:
    """Run ``build(mod, dir, probe_inputs)`` into a temporary folder, add the C package, rename it to
    ``inputs.out_dir``; then write ``<out_dir>.tar.gz`` (whole, or not at all)."""
    out_dir = Path(inputs.out_dir)
    with atomic_file(archive_path(out_dir)) as archive:  # renamed only after the bundle is in place
        with atomic_dir(out_dir) as tmp:
            report = build(inputs.relax_mod, tmp, inputs.probe_inputs)
            add_c_package(tmp, target, cross_cxx, input_names)
            with tarfile.open(archive, "w:gz") as tar:
                tar.add(tmp, arcname=out_dir.name)
        archive.chmod(0o644)
    report.out_dir = out_dir
    report.files = bundle.file_sizes(out_dir)
    report.notes.append(f"C API package and {archive_path(out_dir).name} (SHA-256 in {CHECKSUMS})")
    return report


def input_names(relax_mod) -> list[str]:
    """The names of ``main``'s inputs (the ONNX input names; the weights that follow are not inputs)."""
    if relax_mod is None:
        return []
    main = relax_mod["main"]
    count = int(main.attrs["num_input"]) if main.attrs and "num_input" in main.attrs else len(main.params)
    return [param.name for param in main.params[:count]]
