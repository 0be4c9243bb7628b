"""Compile a hanasc module so that integer weights reach the library as stored (int8, packed 4/2-bit).

Float weights are bound as constants before the pipeline (so constant folding sees them); integer weights
are bound after legalization and fusion, inside the target's own default pipeline, so FoldConstant cannot
widen them at compile time and the library unpacks/dequantizes them at run time. Used by every Relax target
(host, cortex-a78, jetson-orin): their libraries carry the bit-widths the search chose.
"""

from __future__ import annotations


def compile_late_bound(mod, target):
    """Compile ``mod`` (weights as parameters, or already bound) for ``target`` with hanasc's pipeline
    (:mod:`hanasc.targets.pipelines`: on CPUs channel-blocked convolutions with default schedules, on
    GPUs TVM's dlight defaults), integer weights bound after fusion."""
    import tvm
    from tvm import relax

    from hanasc.relax_params import bind_weights, is_packed, weights_of
    from hanasc.targets import pipelines

    if target.kind.name not in ("llvm", "cuda"):
        raise ValueError(f"late binding supports llvm and cuda targets, not '{target.kind.name}'")
    packed = {k: v for k, v in weights_of(mod).items() if is_packed(v)}
    early = bind_weights(mod, keep_packed=True) if weights_of(mod) else mod
    if not pipelines.is_gpu(target):
        from hanasc.passes.blocked_layout import convert_to_blocked

        early = convert_to_blocked(early)
    stages = pipelines.backend(target)
    late = {k: tvm.runtime.tensor(v) for k, v in packed.items()}
    database = tuned_records(target)

    @tvm.transform.module_pass(opt_level=0, name="hanasc.LateBindPackedPipeline")
    def pipeline(m: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target:
            m = tvm.transform.Sequential(pipelines.fused_passes(target))(m)
            if database is not None:  # kernels tuned before, by any model, for this target
                with database:
                    m = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(m)
            m = tvm.transform.Sequential(pipelines.default_schedule_passes(target))(m)
            if late:
                m = relax.transform.BindParams("main", late)(m)
                m["main"] = m["main"].without_attr("num_input")
            return tvm.transform.Sequential(
                stages.dataflow_lower_passes(target) + stages.finalize_passes(target)
            )(m)

    return tvm.compile(early, target=target, relax_pipeline=pipeline)


def tuned_records(target):
    """The target's persistent MetaSchedule database (:mod:`hanasc.targets.tuning`), if it has records."""
    from hanasc.targets import tuning

    path = tuning.database_dir(tuning.resolve_target(target))
    records = path / "database_tuning_record.json"
    if not records.is_file() or records.stat().st_size == 0:
        return None
    with tuning.light_intrinsics(tuning.is_gpu(target)):
        return tuning.open_database(path)
