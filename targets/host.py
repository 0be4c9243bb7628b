"""The host target: x86-64 (or whatever CPU this is) through TVM's LLVM backend; built and run here."""

from __future__ import annotations

import os

import numpy as np

NAME = "host"


def tvm_target():
    """The TVM target for this machine's CPU (mcpu detected; num-cores for MetaSchedule)."""
    import tvm

    return tvm.target.Target(
        {
            "kind": "llvm",
            "mcpu": tvm.target.codegen.llvm_get_system_cpu(),
            "num-cores": os.cpu_count() or 1,
        }
    )


def build(mod, target=None):
    """Compile a Relax module (weights bound or as inputs) with the fused default pipeline."""
    import tvm
    from tvm import relax

    target = target or tvm_target()
    return tvm.compile(mod, target=target, relax_pipeline=relax.get_default_pipeline(target))


def build_artifact(mod, target=None):
    """Compile a hanasc module (weights as parameters) into a deployable executable for this CPU.

    Integer weights (int8, and 4/2-bit packed in uint8) are bound only after fusion, so the library stores
    them as they are (:mod:`hanasc.targets.late_binding`); float weights are folded as usual.
    """
    from hanasc.targets.late_binding import compile_late_bound

    return compile_late_bound(mod, target or tvm_target())


def run(executable, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Run ``main`` once on the CPU and return its outputs as numpy arrays."""
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(executable, tvm.cpu())
    result = vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(x)) for x in inputs])
    return flatten_outputs(result)


def flatten_outputs(result) -> list[np.ndarray]:
    """A VM result (tensor or nested tuple of tensors) as a flat list of numpy arrays."""
    if hasattr(result, "numpy"):
        return [result.numpy()]
    out: list[np.ndarray] = []
    for item in result:
        out.extend(flatten_outputs(item))
    return out
