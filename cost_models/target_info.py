"""What the cost models need to know about a target: its compiler, device and spec file.

Names, aliases, the TVM target and the unknown-target error come from the one target registry
(:mod:`hanasc.targets.registry`), so the kernels profiled are compiled for exactly the TVM target that
ships (see docs/costs.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hanasc.targets.registry import UnknownTargetError

SPEC_DIR = Path(__file__).parent / "specs"


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

    @property
    def runs_on_this_cpu(self) -> bool:
        """Its kernels are compiled for and run on this machine's CPU (no cross compiler, no GPU)."""
        return self.compiles_with_tvm and self.device_type == "cpu" and self.cross_cc is None

    @property
    def prior_lowering(self) -> str:
        """The kernels the device prior and its calibration read when no latency model is trained: the
        shipped build's (``"shipped"``: blocked layouts, int8 dot-product kernels, layout transforms) on the
        LLVM CPU targets, whose lowering hanasc defines (:func:`hanasc.targets.pipelines.to_blocked_layout`);
        TVM's default fusion (``"default"``) on the others."""
        return "shipped" if self.compiler == "tvm-llvm" else "default"

    def tvm_target(self):
        """The TVM target kernels are compiled for: the registry's (what ships); the host CPU for OpenVINO
        targets (features only)."""
        from hanasc.targets import host, registry

        if not self.compiles_with_tvm:
            return host.tvm_target()
        return registry.get_target(self.name).tvm_target()

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
    """Look a target up by name or alias (the registry's); a one-line error names the known ones."""
    from hanasc.targets import registry

    canonical = registry.get_target(name).name
    if canonical not in TARGETS:
        raise UnknownTargetError(
            f"target '{canonical}' has no cost model (cost models: {', '.join(TARGETS)})"
        )
    return TARGETS[canonical]
