"""Offline checks of TVM-generated CUDA kernels: PTX/cubin for an arch, launch bounds, smem, registers."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hanasc.core.errors import HanascError

# Limits of compute capability 8.7 (Jetson Orin), from the CUDA programming guide's table.
MAX_THREADS_PER_BLOCK = 1024
MAX_STATIC_SMEM_PER_BLOCK = 48 * 1024
MAX_REGS_PER_THREAD = 255
MAX_REGS_PER_BLOCK = 64 * 1024

_GLOBAL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\((\d+)\)\s+)?(\w+)\s*\(')
_ENTRY = re.compile(r"\.entry\s+(\w+)\s*\(")
_MAXNTID = re.compile(r"\.maxntid\s+(\d+)\s*,\s*(\d+)\s*,\s*(\d+)")
_PTXAS_FUNC = re.compile(r"Compiling entry function '(\w+)' for '(\w+)'")
_PTXAS_USAGE = re.compile(r"Used (\d+) registers(?:.*?(\d+) bytes smem)?")


@dataclass
class KernelInfo:
    """One kernel: threads per block (from __launch_bounds__ / .maxntid), static smem, registers."""

    name: str
    threads: int | None = None
    static_smem: int = 0
    registers: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class KernelCheck:
    """The result of checking a set of kernels for one architecture."""

    arch: str
    ptx_target: str
    kernels: list[KernelInfo]
    dynamic_smem: bool

    @property
    def problems(self) -> list[str]:
        out = [f"PTX targets {self.ptx_target}, not {self.arch}"] if self.ptx_target != self.arch else []
        return out + [f"{k.name}: {p}" for k in self.kernels for p in k.problems]

    @property
    def max_threads(self) -> int:
        return max((k.threads or 0 for k in self.kernels), default=0)

    @property
    def max_static_smem(self) -> int:
        return max((k.static_smem for k in self.kernels), default=0)

    def to_json(self) -> dict:
        return {
            **asdict(self),
            "problems": self.problems,
            "max_threads": self.max_threads,
            "max_static_smem": self.max_static_smem,
        }


def kernel_bodies(source: str) -> dict[str, str]:
    """Kernel name -> its definition (signature and body) for every kernel a CUDA source defines (not the
    forward declarations: a declaration reaches its ``;`` before any ``{``)."""
    bodies = {}
    for part in re.split(r'(?=extern "C" __global__)', source)[1:]:
        if (m := _GLOBAL.match(part)) and re.match(r"[^;{]*\{", part):
            bodies[m.group(2)] = part
    return bodies


def find_cuda_module(executable):
    """The CUDA device module inside a built Relax executable (or None)."""
    stack = [executable.mod]
    while stack:
        mod = stack.pop()
        if mod.kind == "cuda":
            return mod
        stack.extend(mod.imports)
    return None


def compile_ptx(source: str, arch: str) -> str:
    """CUDA source -> PTX with nvcc (through TVM's helper)."""
    from tvm.support import nvcc

    if shutil.which("nvcc") is None:
        raise HanascError("'nvcc' not found on PATH; install the CUDA toolkit (13.x) to build CUDA bundles")
    return bytes(nvcc.compile_cuda(source, "ptx", arch=arch, compiler="nvcc")).decode()


def assemble_cubin(ptx_path: Path, cubin_path: Path, arch: str) -> str:
    """PTX -> cubin with ptxas; returns ptxas's verbose report (registers and smem per kernel)."""
    ptxas = shutil.which("ptxas")
    if ptxas is None:
        raise HanascError("'ptxas' not found on PATH; install the CUDA toolkit (13.x) to build CUDA bundles")
    cmd = [ptxas, f"-arch={arch}", "-O3", "-v", str(ptx_path), "-o", str(cubin_path)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise HanascError(f"ptxas failed for {arch}: {done.stderr.strip().splitlines()[-1]}")
    return done.stdout + done.stderr


def _limit_problems(info: KernelInfo) -> list[str]:
    """What of one kernel's launch bound, registers and static shared memory exceeds the block limits."""
    problems = []
    if info.threads is None:
        problems.append("no launch bound (threads per block unknown offline)")
    elif info.threads > MAX_THREADS_PER_BLOCK:
        problems.append(f"{info.threads} threads per block > {MAX_THREADS_PER_BLOCK}")
    if info.static_smem > MAX_STATIC_SMEM_PER_BLOCK:
        problems.append(f"{info.static_smem} bytes static shared memory > {MAX_STATIC_SMEM_PER_BLOCK}")
    if info.registers > MAX_REGS_PER_THREAD:
        problems.append(f"{info.registers} registers per thread > {MAX_REGS_PER_THREAD}")
    if info.threads and info.registers * info.threads > MAX_REGS_PER_BLOCK:
        problems.append(f"{info.registers} registers x {info.threads} threads > {MAX_REGS_PER_BLOCK}")
    return problems


def check_kernels(source: str, ptx: str, ptxas_report: str, arch: str) -> KernelCheck:
    """Check every kernel against the block limits of ``arch`` (cc 8.7 limits)."""
    kernels: dict[str, KernelInfo] = {}
    for bound, name in _GLOBAL.findall(source):  # declarations and definitions: keep any bound given
        info = kernels.setdefault(name, KernelInfo(name))
        info.threads = int(bound) if bound else info.threads
    ptx_target = m.group(1) if (m := re.search(r"^\.target\s+(\w+)", ptx, re.M)) else "none"
    for block in re.split(r"(?=\.visible\s+\.entry|\.entry)", ptx)[1:]:
        entry = _ENTRY.search(block)
        if entry is None or entry.group(1) not in kernels:
            continue
        info = kernels[entry.group(1)]
        if nt := _MAXNTID.search(block):
            threads = int(nt.group(1)) * int(nt.group(2)) * int(nt.group(3))
            if info.threads is not None and info.threads != threads:
                info.problems.append(f"__launch_bounds__({info.threads}) but .maxntid gives {threads}")
            info.threads = threads
    current = None
    for line in ptxas_report.splitlines():
        if m := _PTXAS_FUNC.search(line):
            current = kernels.get(m.group(1))
        elif current is not None and (m := _PTXAS_USAGE.search(line)):
            current.registers = int(m.group(1))
            current.static_smem = int(m.group(2) or 0)
    for info in kernels.values():
        info.problems += _limit_problems(info)
    missing = [k for k in kernels if f".entry {k}(" not in ptx]
    if missing:
        raise HanascError(f"kernel {missing[0]} is in the CUDA source but not in the PTX")
    dynamic = bool(re.search(r"extern\s+__shared__", source))
    return KernelCheck(arch, ptx_target, list(kernels.values()), dynamic)
