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


def build_runner(runtime: Path) -> Path:
    """The runner cross-compiled against ``runtime`` (cached by source, headers and runtime versions)."""
    cxx = require_tool(CXX)
    digest = hashlib.sha256(RUNNER_SOURCE.read_bytes())
    digest.update((runtime / "versions.json").read_bytes())
    path = cache_dir() / "aarch64-runner" / digest.hexdigest()[:16] / "runner"
    if path.is_file():
        return path
    includes = [f"-I{d}" for d in ffi_include_dirs()]
    with atomic_file(path) as tmp:
        cmd = [cxx, "-std=c++17", "-O2", *includes, str(RUNNER_SOURCE), "-o", str(tmp)]
        cmd += [f"-L{runtime}", "-ltvm_runtime", "-ltvm_ffi", "-ldl", "-Wl,-rpath,$ORIGIN/rt"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise HanascError(f"building the aarch64 runner failed: {done.stderr.strip().splitlines()[-1]}")
        tmp.chmod(0o755)
    return path


def qemu_command() -> list[str]:
    """The qemu-user command line that runs an aarch64 program with the Debian aarch64 libraries."""
    return [require_tool(QEMU), "-L", str(SYSROOT)]


def disassemble(library: Path) -> str:
    """``objdump -d`` of an aarch64 object."""
    done = subprocess.run([require_tool(OBJDUMP), "-d", str(library)], capture_output=True, text=True)
    if done.returncode != 0:
        raise HanascError(f"{OBJDUMP} failed on {library}: {done.stderr.strip()}")
    return done.stdout
