"""The aarch64 TVM runtime libraries, taken from the aarch64 wheels of the TVM packages installed here.

Fetched once at install time (``python -m hanasc.targets.aarch64_runtime``) into
``cache_dir()/aarch64-runtime``; builds never download anything and fail with that command when they are
missing. The versions match the host's ``apache-tvm`` / ``apache-tvm-ffi`` exactly, so the C++ runner can
be compiled against the host's tvm-ffi headers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

from hanasc.core.atomic import atomic_dir
from hanasc.core.errors import HanascError
from hanasc.core.paths import cache_dir

FETCH_COMMAND = "python -m hanasc.targets.aarch64_runtime"
PLATFORM = "manylinux_2_28_aarch64"
CPU_LIBS = ("libtvm_runtime.so", "libtvm_ffi.so")
CUDA_LIBS = ("libtvm_runtime_cuda.so",)
_WHEEL_MEMBERS = {  # library -> path inside its wheel
    "libtvm_runtime.so": "tvm/lib/libtvm_runtime.so",
    "libtvm_runtime_cuda.so": "tvm/lib/libtvm_runtime_cuda.so",
    "libtvm_ffi.so": "tvm_ffi/lib/libtvm_ffi.so",
}
_STAMP = "versions.json"


def host_versions() -> dict[str, str]:
    """The installed TVM package versions the aarch64 runtime must match."""
    return {pkg: metadata.version(pkg) for pkg in ("apache-tvm", "apache-tvm-ffi")}


def runtime_dir() -> Path:
    return cache_dir() / "aarch64-runtime"


def fetch(dest: Path | None = None) -> Path:
    """Download the aarch64 wheels of the installed TVM versions and keep their runtime libraries."""
    dest = dest or runtime_dir()
    versions = host_versions()
    with tempfile.TemporaryDirectory() as wheels:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
        cmd += ["--platform", PLATFORM, "--python-version", "3.11", "--dest", wheels]
        cmd += [f"{pkg}=={ver}" for pkg, ver in versions.items()]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise HanascError(f"could not download the aarch64 TVM wheels: {last}")
        with atomic_dir(dest) as tmp:
            for wheel in Path(wheels).glob("*.whl"):
                with zipfile.ZipFile(wheel) as zf:
                    for lib, member in _WHEEL_MEMBERS.items():
                        if member in zf.namelist():
                            (tmp / lib).write_bytes(zf.read(member))
            missing = [lib for lib in _WHEEL_MEMBERS if not (tmp / lib).exists()]
            if missing:
                raise HanascError(f"the aarch64 wheels hold no {missing[0]}")
            (tmp / _STAMP).write_text(json.dumps(versions, indent=2) + "\n")
    return dest


def require(cuda: bool = False) -> Path:
    """The aarch64 runtime folder, or a HanascError naming the command that fetches it."""
    folder = runtime_dir()
    libs = CPU_LIBS + (CUDA_LIBS if cuda else ())
    missing = [lib for lib in libs if not (folder / lib).is_file()]
    if missing:
        raise HanascError(f"aarch64 TVM runtime missing ({folder / missing[0]}); run: {FETCH_COMMAND}")
    stamp = folder / _STAMP
    recorded = json.loads(stamp.read_text()) if stamp.is_file() else {}
    if recorded != host_versions():
        raise HanascError(
            f"aarch64 TVM runtime in {folder} is for {recorded or 'unknown versions'}, "
            f"not the installed {host_versions()}; run: {FETCH_COMMAND}"
        )
    return folder


def ffi_include_dirs() -> list[Path]:
    """The tvm-ffi headers (and dlpack) of the installed tvm_ffi package, the same version as the runtime."""
    import tvm_ffi

    root = Path(tvm_ffi.__file__).parent / "include"
    return [root, root / "dlpack"] if (root / "dlpack").is_dir() else [root]


def main() -> int:
    try:
        folder = fetch()
    except HanascError as exc:
        print(f"hanasc: error: {exc}", file=sys.stderr)
        return 2
    print(f"aarch64 TVM runtime ({', '.join(_WHEEL_MEMBERS)}) in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
