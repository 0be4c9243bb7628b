"""Verification of the compile job's candidates: each materialized (with its recovery), compiled and
measured on the host or the device over RPC (or predicted where neither is reachable), and scored on the
held-out data; the ranked candidates are verified until one meets the budgets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hanasc.compile.finetune_stage import held_out_with
from hanasc.compile.report import SCORE_UNIT
from hanasc.compile.verify_builds import WalkBuilds
from hanasc.core.relax_params import bind_weights
from hanasc.cost_models.provenance import figure
from hanasc.cost_models.timing import measure_host, time_executable
from hanasc.search.nsga2 import Candidate
from hanasc.search.selection import AccuracyFloor, Verified, dominated_by
from hanasc.search.space import SearchSpace
from hanasc.targets import host
from hanasc.targets.tuning import RpcDevice, tune_and_build

if TYPE_CHECKING:
    from hanasc.compile.context import CompileOptions, RunContext, Stage


def measure_remote(mod, info, session, repeat: int) -> tuple[object, dict]:
    """Build ``mod`` for the target (integer weights late-bound), time it on the RPC session's device
    (uploaded, cross-linked if needed); returns the executable and its latency figure."""
    executable = info.build(mod)
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
    return np.concatenate([host.run(executable, [s[None]])[0] for s in x])


@dataclass
class VerifiedModel:
    """A verified model: its search candidate, its figures (latency, accuracy, module, ...) and summary."""

    candidate: Candidate
    figures: dict
    summary: Verified


def _verify_ranked(
    ctx: RunContext,
    space: SearchSpace,
    ranked: list[Candidate],
    held_out: dict,
    floor: AccuracyFloor,
    original: Verified | None = None,
) -> tuple[list[dict], list[VerifiedModel]]:
    """Verify candidates best held-out accuracy first, until one meets the budgets and the floor without
    being dominated by the ``original`` (selection would not return it), or ``options.max_attempts``
    (``--verify-limit``) have been built.

    Candidates whose held-out score (the simulator, on the same samples the artifact is judged on) is
    already below the floor are not built, nor those the cost model, having learned from the misses so
    far, now puts over the latency budget (neither counts against the limit); when every candidate is below
    the floor, the best one is still verified so the error can say what the budget allows.
    """
    budgets = ctx.options.budgets
    above = [c for c in ranked if floor.kept(held_out[tuple(c.genome)])]
    attempts = [
        {"genome": c.genome, "skipped": f"held-out {held_out[tuple(c.genome)]:.4f} below the floor"}
        for c in ranked
        if c not in above
    ]
    walk = above or ranked[:1]
    builds = WalkBuilds(
        ctx,
        walk,
        within_budget=lambda c: budgets.within("latency_ms", _estimate(ctx, c)),
        tune=lambda mod: _tune(mod, "host", ctx.options, ctx.stage),
    )
    try:
        verified = _walk(ctx, space, walk, builds, floor, original, attempts)
    finally:
        builds.close()
    if builds.summary():
        ctx.stage.log(builds.summary())
    return attempts, verified


def _estimate(ctx: RunContext, candidate: Candidate) -> float:
    """The cost model's latency for ``candidate`` with everything learned so far."""
    return float(ctx.costs(np.array(candidate.genome)[None])[0][0])


def _walk(
    ctx: RunContext,
    space: SearchSpace,
    walk: list[Candidate],
    builds: WalkBuilds,
    floor: AccuracyFloor,
    original: Verified | None,
    attempts: list[dict],
) -> list[VerifiedModel]:
    """The walk of :func:`_verify_ranked` (skips and attempts appended to ``attempts``); host builds come
    from ``builds`` (:mod:`hanasc.compile.verify_builds`: batches on the executor, then timed in turn)."""
    budgets = ctx.options.budgets
    verified: list[VerifiedModel] = []
    for c in walk:
        if len(verified) >= ctx.options.max_attempts:
            break
        lat_now = _estimate(ctx, c)
        if not budgets.within("latency_ms", lat_now):
            attempts.append(
                {"genome": c.genome, "skipped": f"re-estimated at {lat_now:.2f} ms after calibration"}
            )
            continue
        figures = _verify(ctx, space.decode(c.genome), c, lat_now, builds)
        attempts.append(figures["attempt"])
        summary = Verified(
            f"candidate {len(verified) + 1}",
            figures["latency"]["value"],
            figures["score"],
            c.memory_mb,
            c.energy_mj,
            figures["latency"]["source"],
        )
        verified.append(VerifiedModel(c, figures, summary))
        dominated = original is not None and dominated_by(summary, original)
        if summary.meets(budgets) and floor.kept(summary.accuracy) and not dominated:
            break
        if not figures["meets_budget"]:
            ctx.costs.observe(c.genome, figures["latency"]["value"])  # the estimate learns from the miss
    return verified


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
    measurer = ctx.info.measurer(ctx.session)
    if measurer is not None and measurer.local:  # the reference artifact when no tuning since has changed
        reusable = ctx.reference is not None and ctx.options.tune_minutes <= 0  # what a build gives
        executable = ctx.reference.built() if reusable else _build_host(ctx.model.mod, ctx.options, ctx.stage)
    elif measurer is not None and measurer.host_library:  # measured over RPC: ships as model.so too
        executable = _build_host(ctx.model.mod, ctx.options, ctx.stage)
    figures["executable"] = executable
    figures["meets_budget"] = original.summary.meets(ctx.options.budgets)
    return VerifiedModel(original.candidate, figures, original.summary)


def _verify(ctx: RunContext, config, candidate: Candidate, estimate_ms: float, builds: WalkBuilds) -> dict:
    """Materialize, compile, measure (host, or the device over RPC) or predict, evaluate on held-out data.
    ``estimate_ms``: the cost model's latency for it now (after what earlier measurements taught it);
    ``builds``: the walk's modules and host artifacts (:mod:`hanasc.compile.verify_builds`)."""
    options, stage, split = ctx.options, ctx.stage, ctx.split
    stage.log(
        f"verifying candidate: estimated {estimate_ms:.2f} ms, predicted score "
        f"{candidate.accuracy:.3f} ({ctx.metric.smooth_description})"
    )
    mod, values = builds.module(config, candidate)  # values: fine-tuned weights (None: data-light recovery)
    executable = None
    measurer = ctx.info.measurer(ctx.session)
    if measurer is None:
        latency = figure(round(estimate_ms, 3), "ms", **ctx.costs.source())  # the estimate the walk just made
        outputs = held_out_with(ctx, config, values)
        engine = "the simulator (checked equal to the materialized model in tests)"
    elif measurer.local:
        executable = builds.executable(candidate)  # built with the next ones, then timed alone
        latency = _measure_on_host(ctx, executable)
        outputs = run_host(executable, split.eval_x)
        engine = "the compiled host artifact"
    else:
        _tune(mod, ctx.info.name, options, stage, rpc=options.rpc)  # candidates measured on the device
        built, latency = measure_remote(mod, ctx.info, measurer.session, options.measure_repeats)
        outputs = held_out_with(ctx, config, values)
        engine = "the simulator (checked equal to the materialized model in tests)"
        executable = built if measurer.host_library else None
    score, accuracy = _held_out_accuracy(ctx, outputs, engine)
    meets = options.budgets.within("latency_ms", latency["value"])
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
    rounds = ctx.options.measure_repeats
    if ctx.reference is None:
        return measure_host(executable, ctx.probe, rounds)
    return ctx.reference.measure_beside(executable, ctx.probe, rounds)


def _build_host(mod, options: CompileOptions, stage: Stage):
    _tune(mod, "host", options, stage)
    return host.build_artifact(mod)


def _check_tuning(info, options: CompileOptions) -> None:
    """--tune-minutes needs a TVM target whose kernels can be measured: the host, or the device over --rpc."""
    if options.tune_minutes > 0:
        info.check_tuning(options.rpc)


def _tune(mod, target_name: str, options: CompileOptions, stage: Stage, rpc: str | None = None) -> None:
    """MetaSchedule tuning of ``mod``'s kernels into the target's persistent database, which every later
    build for the target applies (:func:`hanasc.targets.late_binding.compile_late_bound`)."""
    if options.tune_minutes <= 0:
        return
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
