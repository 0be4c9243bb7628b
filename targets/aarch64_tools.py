"""The aarch64 cross toolchain (Debian packages) and the cross-built C++ bundle runner."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from hanasc.core.atomic import atomic_file
from hanasc.core.errors import HanascError
from hanasc.core.paths import cache_dir
from hanasc.targets.aarch64_runtime import ffi_include_dirs

CXX = "aarch64-linux-gnu-g++"
OBJDUMP = "aarch64-linux-gnu-objdump"
QEMU = "qemu-aarch64"
SYSROOT = Path("/usr/aarch64-linux-gnu")
PACKAGES = {CXX: "g++-aarch64-linux-gnu", OBJDUMP: "binutils-aarch64-linux-gnu", QEMU: "qemu-user"}
RUNNER_SOURCE = Path(__file__).parent / "runner" / "runner.cc"
RUNNER_HELPERS = RUNNER_SOURCE.parent / "ffi_util.h"  # shared with the C API (hanasc_model.cc)


def require_tool(name: str) -> str:
    """The full path of a cross tool, or a HanascError naming the Debian package that provides it."""
    path = shutil.which(name)
    if path is None:
        package = PACKAGES.get(name, name)
        raise HanascError(
            f"'{name}' not found on PATH; install the Debian package {package} (apt-get install {package})"
        )
    return path


def cross_compiler():
    """``fcompile`` for ``export_library``: the aarch64 g++ (checked to exist)."""
    from tvm.support import cc

    return cc.cross_compiler(require_tool(CXX))


def first_error(stderr: str) -> str:
    """The compiler's first ``error:`` line (else its last line)."""
    lines = stderr.strip().splitlines() or ["failed"]
    return next((ln for ln in lines if "error:" in ln), lines[-1])


def compile_cached(cmd: list[str], kind: str, key: str, name: str) -> Path:
    """Run a compiler command ending in ``-o`` (the output path is appended) once per ``key``; the result is
    kept in ``cache_dir()/kind/key[:16]/name`` and written whole."""
    path = cache_dir() / kind / key[:16] / name
    if path.is_file():
        return path
    with atomic_file(path) as tmp:
        done = subprocess.run([*cmd, str(tmp)], capture_output=True, text=True)
        if done.returncode != 0:
            raise HanascError(f"building {name} ({Path(cmd[0]).name}) failed: {first_error(done.stderr)}")
        tmp.chmod(0o755)
    return path


def build_runner(runtime: Path) -> Path:
    """The runner cross-compiled against ``runtime`` (cached by source, headers and runtime versions)."""
    cxx = require_tool(CXX)
    digest = hashlib.sha256(RUNNER_SOURCE.read_bytes() + RUNNER_HELPERS.read_bytes())
    digest.update((runtime / "versions.json").read_bytes())
    includes = [f"-I{d}" for d in ffi_include_dirs()]
    cmd = [cxx, "-std=c++17", "-O2", *includes, str(RUNNER_SOURCE)]
    cmd += [f"-L{runtime}", "-ltvm_runtime", "-ltvm_ffi", "-ldl", "-Wl,-rpath,$ORIGIN/rt", "-o"]
    return compile_cached(cmd, "aarch64-runner", digest.hexdigest(), "runner")


def qemu_command() -> list[str]:
    """The qemu-user command line that runs an aarch64 program with the Debian aarch64 libraries."""
    return [require_tool(QEMU), "-L", str(SYSROOT)]


def disassemble(library: Path) -> str:
    """``objdump -d`` of an aarch64 object."""
    done = subprocess.run([require_tool(OBJDUMP), "-d", str(library)], capture_output=True, text=True)
    if done.returncode != 0:
        raise HanascError(f"{OBJDUMP} failed on {library}: {done.stderr.strip()}")
    return done.stdout
