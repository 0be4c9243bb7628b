"""Compile a hanasc module so that integer weights reach the library as stored (int8, packed 4/2-bit).

Float weights are bound as constants before the pipeline (so constant folding sees them); integer weights
are bound after legalization and fusion, inside the target's own default pipeline, so FoldConstant cannot
widen them at compile time and the library unpacks/dequantizes them at run time. Used by every Relax target
(host, cortex-a78, jetson-orin): their libraries carry the bit-widths the search chose.
"""

from __future__ import annotations


def _backend(target):
    """The module of TVM's default pipeline stages for ``target`` (``get_default_pipeline``'s choice)."""
    from tvm.relax.backend.cpu_generic import pipeline as cpu
    from tvm.relax.backend.cuda import pipeline as cuda

    backends = {"llvm": cpu, "cuda": cuda}
    if target.kind.name not in backends:
        raise ValueError(f"late binding supports llvm and cuda targets, not '{target.kind.name}'")
    return backends[target.kind.name]


def compile_late_bound(mod, target):
    """Compile ``mod`` (weights as parameters, or already bound) for ``target``: TVM's default pipeline,
    with integer weights bound after fusion. Without integer weights it is exactly the default build."""
    import tvm
    from tvm import relax

    from hanasc.relax_params import bind_weights, is_packed, weights_of

    packed = {k: v for k, v in weights_of(mod).items() if is_packed(v)}
    if not packed:
        bound = bind_weights(mod) if weights_of(mod) else mod
        return tvm.compile(bound, target=target, relax_pipeline=relax.get_default_pipeline(target))
    stages = _backend(target)
    early = bind_weights(mod, keep_packed=True)

    @tvm.transform.module_pass(opt_level=0, name="hanasc.LateBindPackedPipeline")
    def pipeline(m: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target:
            m = tvm.transform.Sequential(
                stages.library_dispatch_passes(target) + stages.legalize_passes(target)
            )(m)
            m = relax.transform.BindParams("main", {k: tvm.runtime.tensor(v) for k, v in packed.items()})(m)
            m["main"] = m["main"].without_attr("num_input")
            return tvm.transform.Sequential(
                stages.dataflow_lower_passes(target) + stages.finalize_passes(target)
            )(m)

    return tvm.compile(early, target=target, relax_pipeline=pipeline)
