"""Verification of the compile job's candidates: each materialized (with its recovery), compiled and
measured on the host or the device over RPC (or predicted where neither is reachable), and scored on the
held-out data; the ranked candidates are verified until one meets the budgets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hanasc.compile.finetune_stage import held_out_with
from hanasc.compile.report import SCORE_UNIT
from hanasc.core.errors import HanascError
from hanasc.cost_models.provenance import figure
from hanasc.search.nsga2 import Candidate
from hanasc.search.seeds import uniform_genome
from hanasc.search.selection import AccuracyFloor, Verified
from hanasc.search.space import SearchSpace

if TYPE_CHECKING:
    from hanasc.compile.context import CompileOptions, RunContext, Stage


def measure_remote(mod, info, session, repeat: int) -> tuple[object, dict]:
    """Build ``mod`` for the target (integer weights late-bound), time it on the RPC session's device
    (uploaded, cross-linked if needed); returns the executable and its latency figure."""
    from hanasc.cost_models.timing import time_executable
    from hanasc.targets.late_binding import compile_late_bound

    executable = compile_late_bound(mod, info.tvm_target())
    timing = time_executable(executable, mod, info.name, session, repeat)
    return executable, figure(
        round(timing.median_ms, 3),
        "ms",
        "measured",
        where=f"{session.device_id} (TVM RPC)",
        runs=repeat,
        statistic="median",
        spread=round(timing.spread, 3),
        tool="TVM VirtualMachine.time_evaluator over RPC",
    )


def run_host(executable, x: np.ndarray) -> np.ndarray:
    from hanasc.targets import host

    return np.concatenate([host.run(executable, [s[None]])[0] for s in x])


@dataclass
class VerifiedModel:
    """A verified model: its search candidate, its figures (latency, accuracy, module, ...) and summary."""

    candidate: Candidate
    figures: dict
    summary: Verified


def _uniform_int8_candidate(space: SearchSpace, predictor, costs, budgets, unique: list[Candidate]) -> list:
    """Uniform W8A8 as a candidate of its own when its estimate fits the budgets: the precision change
    that costs the least accuracy, measured before the search on the host, so the search's best front
    (which may hold only changes the simulator scores lower) never leaves the user without it."""
    int8 = uniform_genome(space, (8, 8))
    if int8 is None or any(list(int8) == list(u.genome) for u in unique):
        return []
    lat, mem, energy = (float(v[0]) for v in costs(int8[None]))
    candidate = Candidate(int8.tolist(), float(predictor.predict(int8[None])[0]), lat, mem, energy)
    return [candidate] if candidate.feasible(budgets) else []


def _verify_ranked(
    ctx: RunContext, space: SearchSpace, ranked: list[Candidate], held_out: dict, floor: AccuracyFloor
) -> tuple[list[dict], list[VerifiedModel]]:
    """Verify candidates best held-out accuracy first, until one meets the budgets and the floor.

    Candidates whose held-out score (the simulator, on the same samples the artifact is judged on) is
    already below the floor are not built; when every candidate is, the best one is still verified so the
    error can say what the budget allows.
    """
    budgets = ctx.options.budgets
    above = [c for c in ranked if floor.kept(held_out[tuple(c.genome)])]
    attempts = [
        {"genome": c.genome, "skipped": f"held-out {held_out[tuple(c.genome)]:.4f} below the floor"}
        for c in ranked
        if c not in above
    ]
    verified: list[VerifiedModel] = []
    for index, c in enumerate((above or ranked[:1])[: ctx.options.max_attempts]):
        lat_now = float(ctx.costs(np.array(c.genome)[None])[0][0])  # with everything learned so far
        if budgets.latency_ms is not None and lat_now > budgets.latency_ms:
            attempts.append(
                {"genome": c.genome, "skipped": f"re-estimated at {lat_now:.2f} ms after calibration"}
            )
            continue
        figures = _verify(ctx, space.decode(c.genome), c, lat_now)
        attempts.append(figures["attempt"])
        summary = Verified(
            f"candidate {index + 1}",
            figures["latency"]["value"],
            figures["score"],
            c.memory_mb,
            c.energy_mj,
            figures["latency"]["source"],
        )
        verified.append(VerifiedModel(c, figures, summary))
        if summary.meets(budgets) and floor.kept(summary.accuracy):
            break
        if not figures["meets_budget"]:
            ctx.costs.observe(c.genome, figures["latency"]["value"])  # the estimate learns from the miss
    return attempts, verified


def _held_out_accuracy(ctx: RunContext, outputs: np.ndarray, engine: str) -> tuple[float, dict]:
    """The metric of ``outputs`` on the held-out split: the unrounded score and its figure."""
    score = ctx.metric(outputs, ctx.split.eval_y, ctx.ref_eval)
    return score, figure(
        round(score, 4),
        SCORE_UNIT,
        "measured",
        metric=ctx.metric.name,
        description=ctx.metric.description,
        on=f"held-out split ({len(ctx.split.eval_x)} samples)",
        engine=engine,
    )


def _original_verified(ctx: RunContext, space: SearchSpace, predictor, measured: dict | None):
    """The original as a verified candidate: measured latency where reachable, its held-out accuracy."""
    identity = space.identity()
    lat, mem, energy = (float(v[0]) for v in ctx.costs(identity[None]))
    latency = measured if measured is not None else figure(round(lat, 3), "ms", **ctx.costs.source())
    score, accuracy = _held_out_accuracy(ctx, ctx.ref_eval, "the original model")
    candidate = Candidate(identity.tolist(), float(predictor.predict(identity[None])[0]), lat, mem, energy)
    figures = {"latency": latency, "accuracy": accuracy, "score": score, "config": space.decode(identity)}
    summary = Verified("original", latency["value"], score, mem, energy, latency["source"])
    return VerifiedModel(candidate, figures, summary)


def _materialize_original(ctx: RunContext, original: VerifiedModel) -> VerifiedModel:
    """The original's figures completed with its module and, on the host, its built artifact."""
    figures = dict(original.figures)
    figures["mod"] = ctx.model.mod
    executable = None
    if _on_host(ctx):  # the reference artifact when no tuning since has changed what a build gives
        reusable = ctx.reference is not None and ctx.options.tune_minutes <= 0
        executable = ctx.reference.built() if reusable else _build_host(ctx.model.mod, ctx.options, ctx.stage)
    figures["executable"] = executable
    figures["meets_budget"] = original.summary.meets(ctx.options.budgets)
    return VerifiedModel(original.candidate, figures, original.summary)


def _on_host(ctx: RunContext) -> bool:
    return ctx.session is None and ctx.info.runs_here


def _verify(ctx: RunContext, config, candidate: Candidate, estimate_ms: float) -> dict:
    """Materialize, compile, measure (host, or the device over RPC) or predict, evaluate on held-out data.
    ``estimate_ms``: the cost model's latency for it now (after what earlier measurements taught it)."""
    from hanasc.recovery.bias_correction import materialize_recovered

    options, stage, split = ctx.options, ctx.stage, ctx.split
    stage.log(
        f"verifying candidate: estimated {estimate_ms:.2f} ms, predicted score "
        f"{candidate.accuracy:.3f} ({ctx.metric.smooth_description})"
    )
    tuned = ctx.tuned.get(tuple(candidate.genome))
    values = tuned.values if tuned else None  # fine-tuned weights (None: the data-light recovery's)
    mod = materialize_recovered(ctx.model, config, ctx.ranges, values)
    executable = None
    if ctx.session is not None:
        _tune(mod, ctx.info.name, options, stage, rpc=options.rpc)  # candidates measured on the device
        built, latency = measure_remote(mod, ctx.info, ctx.session, options.measure_repeats)
        outputs = held_out_with(ctx, config, values)
        engine = "the simulator (checked equal to the materialized model in tests)"
        executable = built if ctx.info.runs_here else None
    elif _on_host(ctx):
        executable = _build_host(mod, options, stage)
        latency = _measure_on_host(ctx, executable)
        outputs = run_host(executable, split.eval_x)
        engine = "the compiled host artifact"
    else:
        est = float(ctx.costs(np.array(candidate.genome)[None])[0][0])
        latency = figure(round(est, 3), "ms", **ctx.costs.source())
        outputs = held_out_with(ctx, config, values)
        engine = "the simulator (checked equal to the materialized model in tests)"
    score, accuracy = _held_out_accuracy(ctx, outputs, engine)
    budget = options.budgets.latency_ms
    meets = budget is None or latency["value"] <= budget
    attempt = {
        "genome": candidate.genome,
        "estimated_ms": round(estimate_ms, 3),
        "measured_ms" if latency["source"] == "measured" else "predicted_ms": latency["value"],
        "meets_budget": meets,
        "accuracy": accuracy["value"],
    }
    if latency["source"] == "measured":  # how far the estimate the search trusted was from the artifact
        attempt["estimate_over_measured"] = round(estimate_ms / latency["value"], 3)
        stage.log(
            f"measured {latency['value']:.3f} ms: estimate / measured {attempt['estimate_over_measured']:.3f}"
        )
    if not meets:
        stage.log(
            f"candidate missed the budget: {latency['value']} ms ({latency['source']}); learning from it"
        )
    return {
        "mod": mod,
        "executable": executable,
        "latency": latency,
        "accuracy": accuracy,
        "score": score,  # unrounded: what the floor is checked against
        "meets_budget": meets,
        "attempt": attempt,
        "config": config,
        "tuned": values,
    }


def _measure_on_host(ctx: RunContext, executable) -> dict:
    """A candidate's host latency: timed alternately with the original when the original's reference
    latency is known (:class:`hanasc.cost_models.timing.HostReference`), so both are read in the same
    phase of the machine; otherwise on its own."""
    from hanasc.cost_models.timing import measure_host

    rounds = ctx.options.measure_repeats
    if ctx.reference is None:
        return measure_host(executable, ctx.probe, rounds)
    return ctx.reference.measure_beside(executable, ctx.probe, rounds)


def _build_host(mod, options: CompileOptions, stage: Stage):
    from hanasc.targets import host

    _tune(mod, "host", options, stage)
    return host.build_artifact(mod)


def _check_tuning(info, options: CompileOptions) -> None:
    """--tune-minutes needs a TVM target whose kernels can be measured: the host, or the device over --rpc."""
    if options.tune_minutes <= 0:
        return
    if info.tvm_target() is None:
        raise HanascError(f"--tune-minutes: target '{info.name}' is not compiled by TVM (nothing to tune)")
    if not info.runs_here and not options.rpc:
        raise HanascError(
            f"--tune-minutes on {info.name}: MetaSchedule measures candidates on the device; "
            "give --rpc HOST:PORT"
        )


def _tune(mod, target_name: str, options: CompileOptions, stage: Stage, rpc: str | None = None) -> None:
    """MetaSchedule tuning of ``mod``'s kernels into the target's persistent database, which every later
    build for the target applies (:func:`hanasc.targets.late_binding.compile_late_bound`)."""
    if options.tune_minutes <= 0:
        return
    from hanasc.core.relax_params import bind_weights
    from hanasc.targets.tuning import RpcDevice, tune_and_build

    stage.start(f"tuning {target_name} kernels (MetaSchedule, up to {options.tune_minutes:g} min)", None)
    report = tune_and_build(
        bind_weights(mod, keep_packed=True),  # the kernels the artifact runs: packed weights stay inputs
        target_name,
        minutes=options.tune_minutes,
        progress=stage.advance,
        rpc=RpcDevice.parse(rpc) if rpc else None,
        build=False,
    )
    stage.log(f"tuning: {report.summary()}; database {report.database_dir}")
