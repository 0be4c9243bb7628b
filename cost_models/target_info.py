"""What the cost models need to know about a target: a view of the one target contract.

Names, aliases, the TVM target, the cost facts (compiler, device, cross compiler, spec file) and the
unknown-target error all come from :mod:`hanasc.targets.registry`, so the kernels profiled are compiled
for exactly the TVM target that ships (see docs/costs.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hanasc.targets import registry
from hanasc.targets.base import SPEC_DIR, Target
from hanasc.targets.registry import UnknownTargetError

__all__ = ["SPEC_DIR", "CostTarget", "UnknownTargetError", "get_target"]


@dataclass(frozen=True)
class CostTarget:
    """A target as the cost models see it (its :class:`hanasc.targets.base.Target` and cost facts)."""

    target: Target

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def compiler(self) -> str:  # "tvm-llvm" | "tvm-cuda" | "openvino"
        return self.target.cost.compiler

    @property
    def device_type(self) -> str:  # TVM device of the kernels: "cpu" | "cuda"; "npu" for OpenVINO targets
        return self.target.cost.device_type

    @property
    def cross_cc(self) -> str | None:  # cross compiler for export_library when the device is elsewhere
        return self.target.cost.cross_cc

    @property
    def spec_path(self) -> Path:
        return self.target.spec_path

    @property
    def prior_lowering(self) -> str:
        """The kernels the device prior and its calibration read when no latency model is trained: the
        shipped build's (``"shipped"``: blocked layouts, int8 dot-product kernels, layout transforms) on the
        LLVM CPU targets, whose lowering hanasc defines (:func:`hanasc.targets.pipelines.to_blocked_layout`);
        TVM's default fusion (``"default"``) on the others."""
        return self.target.cost.prior_lowering

    def tvm_target(self):
        """The TVM target kernels are compiled for: the registry's (what ships); the host CPU for OpenVINO
        targets (features only)."""
        return self.target.cost_tvm_target()

    def key(self) -> str:
        """A short, stable string naming the code generator setup (part of every kernel signature)."""
        return self.target.cost_key()

    def check_profilable(self, asked: str) -> None:
        """Raise HanascError when its kernels cannot be profiled (``asked``: the name the user gave)."""
        self.target.check_profilable(asked)

    def times_in_place(self, remote: bool) -> bool:
        """Whether its kernels can be timed inside the shipped artifact on this CPU (not over RPC)."""
        return self.target.times_in_place(remote)

    def check_networks_in_place(self, remote: bool) -> None:
        self.target.check_networks_in_place(remote)


def get_target(name: str) -> CostTarget:
    """Look a target up by name or alias (the registry's); a one-line error names the known ones."""
    return CostTarget(registry.get_target(name))
