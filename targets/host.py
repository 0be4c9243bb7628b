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
    """Compile a hanasc module (weights as parameters) into a deployable executable.

    Weights are bound as constants; integer weights (int8, and 4/2-bit packed in uint8) are bound only after
    constant folding and fusion, so the library stores them as they are and unpacks/dequantizes them at run
    time (FoldConstant would otherwise widen them at compile time: the library would hold fp32 or int8).
    """
    import tvm
    from tvm import relax
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    from hanasc.relax_params import bind_weights, is_packed, weights_of

    target = target or tvm_target()
    packed = {k: v for k, v in weights_of(mod).items() if is_packed(v)}
    if not packed:
        return build(bind_weights(mod), target)
    early = bind_weights(mod, keep_packed=True)

    @tvm.transform.module_pass(opt_level=0, name="hanasc.LateBindPackedPipeline")
    def pipeline(m: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target:
            m = tvm.transform.Sequential(cpu.library_dispatch_passes(target) + cpu.legalize_passes(target))(m)
            m = relax.transform.BindParams("main", {k: tvm.runtime.tensor(v) for k, v in packed.items()})(m)
            m["main"] = m["main"].without_attr("num_input")
            return tvm.transform.Sequential(cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target))(
                m
            )

    return tvm.compile(early, target=target, relax_pipeline=pipeline)


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
