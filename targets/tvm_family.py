"""The targets TVM compiles for: LLVM CPUs (host, cortex-a78) and CUDA GPUs (jetson-orin).

Both lower through :mod:`hanasc.targets.pipelines`, build with integer weights bound after fusion
(:func:`hanasc.targets.late_binding.compile_late_bound`) and are measured here (the host) or on the
device over TVM RPC. Importing this module imports no TVM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from hanasc.core.errors import HanascError
from hanasc.targets import c_package
from hanasc.targets.base import BundleInputs, CostFacts, Measurer, Target, resolve

LLVM_CPU_COST = CostFacts("tvm-llvm", "cpu", prior_lowering="shipped")
CUDA_COST = CostFacts("tvm-cuda", "cuda", cross_cc="aarch64-linux-gnu-g++")


@dataclass(frozen=True)
class TvmTarget(Target):
    """A target TVM compiles for. ``tvm_target_from``: a ``"module:function"`` making the TVM target when
    the JSON alone does not (e.g. the host's detected mcpu); ``builder``: the ``"module:function"``
    ``build_bundle(mod, out_dir, probe_inputs)`` of its bundle."""

    tvm_target_from: str | None = None
    builder: str = ""

    def tvm_target(self):
        if self.tvm_target_from is not None:
            return resolve(self.tvm_target_from)()
        import tvm

        return tvm.target.Target(self.tvm_target_json)

    def lower(self, database: bool = True):
        from hanasc.targets.pipelines import tuned_pipeline  # deferred: TVM (look-ups import no TVM)

        return tuned_pipeline(self.tvm_target(), database=database)

    def build(self, mod):
        from hanasc.targets.late_binding import compile_late_bound  # deferred: TVM (look-ups import no TVM)

        return compile_late_bound(mod, self.tvm_target())

    def check_build(self, mod, log: Callable[[str], None]) -> None:
        log(f"compiling the original model for {self.name} (checks it builds before the search)")
        self.build(mod)

    def check_tuning(self, rpc: str | None) -> None:
        if not self.caps.runs_here and not rpc:
            raise HanascError(
                f"--tune-minutes on {self.name}: MetaSchedule measures candidates on the device; "
                "give --rpc HOST:PORT"
            )

    def measurer(self, session) -> Measurer | None:
        if session is None and not self.caps.runs_here:
            return None
        return Measurer(self.name, session, host_library=self.caps.runs_here)

    def bundle(self, inputs: BundleInputs):
        build = resolve(self.builder)
        if inputs.executable is not None and self.caps.runs_here:  # built here already: not twice
            build = partial(build, executable=inputs.executable)
        names = c_package.input_names(inputs.relax_mod)
        return c_package.with_c_api(build, inputs, self.name, self.cost.cross_cc, names)

    def device_bundle(self, inputs: BundleInputs):
        return self.bundle(inputs)  # the host's too: every CPU and GPU artifact ships its C package


@dataclass(frozen=True)
class LlvmCpuTarget(TvmTarget):
    """A CPU through TVM's LLVM backend: blocked layouts and hanasc's int8 kernels (the shipped lowering
    is what its cost prior reads)."""

    cost: CostFacts = LLVM_CPU_COST


@dataclass(frozen=True)
class CudaTarget(TvmTarget):
    """An NVIDIA GPU through TVM's CUDA backend (dlight and hanasc's GPU rules), cross-built host code."""

    cost: CostFacts = CUDA_COST
