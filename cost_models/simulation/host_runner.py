"""The bundle runner (targets/runner/runner.cc) built for this machine against the installed TVM runtime,
so a host library runs under ``qemu-x86_64`` exactly as the aarch64 bundle runs under ``qemu-aarch64``."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

from hanasc.core.atomic import atomic_file
from hanasc.core.errors import HanascError
from hanasc.core.paths import cache_dir
from hanasc.targets.aarch64_runtime import ffi_include_dirs
from hanasc.targets.aarch64_tools import RUNNER_SOURCE


def runtime_lib_dirs() -> list[Path]:
    """The folders of the installed ``libtvm_runtime.so`` and ``libtvm_ffi.so``."""
    import tvm
    import tvm_ffi

    return [Path(tvm.__file__).parent / "lib", Path(tvm_ffi.__file__).parent / "lib"]


def build_host_runner() -> Path:
    """The runner compiled with the host g++ (cached by source and TVM versions), its RPATH on the
    installed runtime."""
    cxx = shutil.which("g++")
    if cxx is None:
        raise HanascError("'g++' not found on PATH; install the Debian package g++")
    digest = hashlib.sha256(RUNNER_SOURCE.read_bytes())
    digest.update(f"{metadata.version('apache-tvm')}|{metadata.version('apache-tvm-ffi')}".encode())
    path = cache_dir() / "host-runner" / digest.hexdigest()[:16] / "runner"
    if path.is_file():
        return path
    libs = runtime_lib_dirs()
    with atomic_file(path) as tmp:
        cmd = [cxx, "-std=c++17", "-O2", *(f"-I{d}" for d in ffi_include_dirs()), str(RUNNER_SOURCE)]
        cmd += [*(f"-L{d}" for d in libs), "-ltvm_runtime", "-ltvm_ffi", "-ldl"]
        cmd += [*(f"-Wl,-rpath,{d}" for d in libs), "-o", str(tmp)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise HanascError(f"building the host runner failed: {done.stderr.strip()[-300:]}")
        tmp.chmod(0o755)
    return path


def build_clock_probe() -> Path:
    """``clock_probe.c`` compiled with the host C compiler (cached by source): it prints the rate of a
    chain of dependent one-cycle adds in thread CPU time, the clock a core really runs at."""
    source = Path(__file__).with_name("clock_probe.c")
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise HanascError("no host C compiler (cc) to build the clock probe; apt-get install gcc")
    path = cache_dir() / "clock-probe" / hashlib.sha256(source.read_bytes()).hexdigest()[:16] / "clock_probe"
    if not path.is_file():
        with atomic_file(path) as tmp:
            subprocess.run([cc, "-O2", str(source), "-o", str(tmp)], check=True, capture_output=True)
            tmp.chmod(0o755)
    return path


def measured_clock_hz() -> float:
    """The clock a core runs at now (best of the probe's five runs, thread CPU time), in Hz."""
    done = subprocess.run([str(build_clock_probe())], capture_output=True, text=True, check=True)
    return float(done.stdout.strip())
