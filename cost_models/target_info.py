"""What the cost models need to know about a target: its TVM target (if TVM compiles for it) and spec file.

Kept here, not in ``hanasc.targets``, so the cost models only need a target *name*; the TVM targets match
the ones ``hanasc.targets`` builds with (see docs/costs.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hanasc.errors import HanascError

SPEC_DIR = Path(__file__).parent / "specs"
ALIASES = {"vpu": "npu3720"}
A78_LLVM = {
    "kind": "llvm",
    "mtriple": "aarch64-linux-gnu",
    "mcpu": "cortex-a78",
    "mattr": ["+neon", "+dotprod"],
    "num-cores": 4,
}


class UnknownTargetError(HanascError):
    """A target name hanasc has no cost model for."""


@dataclass(frozen=True)
class CostTarget:
    """A target as the cost models see it."""

    name: str
    compiler: str  # "tvm-llvm" | "tvm-cuda" | "openvino"
    device_type: str  # TVM device of the kernels: "cpu" | "cuda"; "npu" for OpenVINO-only targets
    cross_cc: str | None = None  # cross compiler for export_library when the device is not this machine

    @property
    def spec_path(self) -> Path:
        return SPEC_DIR / f"{self.name}.json"

    @property
    def compiles_with_tvm(self) -> bool:
        return self.compiler.startswith("tvm")

    def tvm_target(self):
        """The TVM target kernels are compiled for (the host CPU for OpenVINO targets: features only)."""
        import tvm

        if self.name == "cortex-a78":
            return tvm.target.Target(A78_LLVM)
        if self.name == "jetson-orin":
            return tvm.target.Target({"kind": "cuda", "arch": "sm_87", "host": A78_LLVM})
        from hanasc.targets import host

        return host.tvm_target()

    def key(self) -> str:
        """A short, stable string naming the code generator setup (part of every kernel signature)."""
        if not self.compiles_with_tvm:
            return f"{self.name}:features-only"
        target = self.tvm_target()
        return f"{self.name}:{target.kind.name}:{target.attrs.get('mcpu', '')}:{target.attrs.get('arch', '')}"


TARGETS: dict[str, CostTarget] = {
    "host": CostTarget("host", "tvm-llvm", "cpu"),
    "cortex-a78": CostTarget("cortex-a78", "tvm-llvm", "cpu", cross_cc="aarch64-linux-gnu-g++"),
    "jetson-orin": CostTarget("jetson-orin", "tvm-cuda", "cuda", cross_cc="aarch64-linux-gnu-g++"),
    "npu3720": CostTarget("npu3720", "openvino", "npu"),
    "npu4000": CostTarget("npu4000", "openvino", "npu"),
    "myriadx": CostTarget("myriadx", "openvino", "npu"),
}


def get_target(name: str) -> CostTarget:
    """Look a target up by name or alias; a one-line error names the known ones."""
    canonical = ALIASES.get(name, name)
    if canonical not in TARGETS:
        known = ", ".join([*TARGETS, *ALIASES])
        raise UnknownTargetError(f"unknown target '{name}' (known: {known})")
    return TARGETS[canonical]
