"""The core a simulation runs on: the qemu-user that executes its code, the llvm-mca scheduling model that
costs it and the clock that turns cycles into time (the ``simulation`` block of a target's spec; for the
host, this CPU as LLVM and /proc/cpuinfo see it)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hanasc.core.errors import HanascError
from hanasc.cost_models.simulation.mca import SchedulingModel
from hanasc.cost_models.target_info import get_target
from hanasc.targets.aarch64_tools import SYSROOT

HOST_MCA = "llvm-mca-19"
SYSROOTS = {"aarch64": SYSROOT}


@dataclass(frozen=True)
class SimCore:
    """What simulating one core needs."""

    target: str
    qemu: tuple[str, ...]  # the qemu-user command prefix
    model: SchedulingModel
    clock_hz: float
    note: str = ""  # how the scheduling model or clock was chosen
    bundle_runner: bool = True  # the bundle ships the runner (else: the runner built for this machine)

    @property
    def clock_ghz(self) -> float:
        return self.clock_hz / 1e9

    @property
    def provenance(self) -> str:
        return (
            f"simulated (qemu block counts x llvm-mca {self.model.version} {self.model.cpu} model, "
            f"clock {self.clock_ghz:.2f} GHz, 1 core)"
        )


def core_for(target_name: str) -> SimCore:
    """The simulated core of a target whose spec has a ``simulation`` block (the host's: :func:`host_core`,
    used to validate the method)."""
    target = get_target(target_name)
    spec = json.loads(target.spec_path.read_text())
    sim = spec.get("simulation")
    if sim is None:
        raise HanascError(
            f"--target {target.name}: cannot be simulated (its spec {target.spec_path.name} names no "
            "scheduling model and clock); simulate serves Arm cores such as cortex-a78"
        )
    arch = sim["triple"].split("-")[0]
    qemu = [_require_qemu(sim["qemu"])]
    if arch in SYSROOTS:
        qemu += ["-L", str(SYSROOTS[arch])]
    model = SchedulingModel(sim["mca"], sim["triple"], sim["mcpu"], sim.get("mattr", ""))
    return SimCore(target.name, tuple(qemu), model, float(sim["clock_hz"]), sim.get("note", ""))


def host_core(cpuinfo: Path = Path("/proc/cpuinfo")) -> SimCore:
    """This CPU: llvm-mca's model of the host CPU LLVM detects, at the clock /proc/cpuinfo reports."""
    text = cpuinfo.read_text()
    mhz = re.search(r"^cpu MHz\s*:\s*([\d.]+)", text, re.M)
    if mhz is None:
        raise HanascError(f"{cpuinfo}: no 'cpu MHz' line to take the host clock from")
    tool = shutil.which(HOST_MCA)
    if tool is None:
        raise HanascError(f"'{HOST_MCA}' not found on PATH; install it (apt-get install llvm-19)")
    version = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout
    cpu = re.search(r"Host CPU:\s*(\S+)", version)
    model = SchedulingModel(HOST_MCA, "x86_64-linux-gnu", cpu.group(1) if cpu else "native")
    note = f"host CPU as LLVM detects it ({model.cpu}); clock: /proc/cpuinfo 'cpu MHz'"
    qemu = (_require_qemu("qemu-x86_64"),)
    return SimCore("host", qemu, model, float(mhz.group(1)) * 1e6, note, bundle_runner=False)


def _require_qemu(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise HanascError(f"'{name}' not found on PATH; install the Debian package qemu-user")
    return path
