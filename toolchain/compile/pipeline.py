"""``hanasc compile``: accuracy predictor, joint NSGA-II search under budgets, verification, the output.

Data flow: data split (calibration / held-out) -> activation ranges -> search space -> simulator-evaluated
sample Configs -> accuracy predictor -> NSGA-II on (predicted accuracy, estimated latency, memory[, energy])
-> best candidates re-evaluated on held-out data -> the best feasible one materialized, compiled, measured
(host) -> if it misses the budget the estimate learns from the miss and the next candidate is taken ->
report and artifacts written atomically.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from hanasc.compile.compare import compare_section
from hanasc.compile.context import CompileOptions, RunContext, Split, Stage, split_data
from hanasc.compile.finetune_stage import check_finetune, finetune_shortlist
from hanasc.compile.references import measure_references
from hanasc.compile.report import SCORE_UNIT, Outcome, _original_figures, _report, _write_outputs
from hanasc.compile.rounds import (
    PredictorSamples,
    build_ladder,
    fit_predictor,
    held_out_scores,
    ladder_section,
    measure_sensitivity,
    search_rounds,
    shortlist,
)
from hanasc.compile.unmet import (
    InfeasibleBudgetError,
    NoModelMeetsBudgets,
    Reachable,
    select_or_raise,
)
from hanasc.compile.verify import (
    _check_tuning,
    _materialize_original,
    _original_verified,
    _verify_ranked,
)
from hanasc.core.atomic import atomic_dir
from hanasc.core.cache_safety import file_lock
from hanasc.core.metrics import Metric
from hanasc.core.paths import cache_dir
from hanasc.cost_models.profiler import Session
from hanasc.cost_models.provenance import figure
from hanasc.frontend.calibration import calibrate
from hanasc.frontend.loading import LoadedModel
from hanasc.passes.config import Config
from hanasc.recovery.bias_correction import refitted_layers
from hanasc.search import sensitivity
from hanasc.search.costs import SearchCosts
from hanasc.search.nsga2 import Candidate
from hanasc.search.seeds import predictor_image_count
from hanasc.search.selection import AccuracyFloor
from hanasc.search.simulator import Simulator
from hanasc.search.space import SearchSpace, SpaceOptions, build_space
from hanasc.targets.registry import get_target

__all__ = [
    "CompileOptions",
    "CompileOutput",
    "InfeasibleBudgetError",
    "NoModelMeetsBudgets",
    "Reachable",
    "Split",
    "Stage",
    "compile_model",
    "split_data",
]


def _space_options(info, mode: str) -> SpaceOptions:
    """Precision pairs (weight bits, activation bits) the target runs."""
    c = info.choices
    pairs = [(32, 32)]
    if 16 in c.act_bits and 16 in c.compute_weight_bits:
        pairs.append((16, 16))
    if 8 in c.act_bits:
        pairs += [(w, 8) for w in (8, 4, 2) if w in c.weight_bits]
    pairs += [(w, 32) for w in (8, 4, 2) if w in c.weight_bits]
    return SpaceOptions(precisions=tuple(pairs), mode=mode)


def run_key(model: LoadedModel, options: CompileOptions, data_source: str) -> str:
    text = json.dumps(
        [
            str(model.path.resolve()),
            model.path.stat().st_size,
            options.target,
            options.space,
            options.seed,
            options.budgets.__dict__,
            options.metric,
            data_source,
            options.predictor_samples,
            options.finetune_minutes,
            options.finetune_candidates,
        ],
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class CompileOutput:
    """The report (report.json's content) and the folder the job wrote."""

    report: dict
    out: Path


@dataclass
class _Job:
    """One compile's inputs, as :func:`compile_model` got them."""

    model: LoadedModel
    split: Split
    options: CompileOptions
    out: Path
    metric: Metric
    stage: Stage


def compile_model(
    model: LoadedModel,
    split: Split,
    options: CompileOptions,
    out: Path,
    metric: Metric,
    stage: Stage | None = None,
) -> CompileOutput:
    """The main job; raises :class:`NoModelMeetsBudgets` (exit 2, nothing written) when no model meets the
    budgets and the accuracy floor (:class:`InfeasibleBudgetError` when no configuration can).

    The run's work folder (predictor samples, search checkpoints: what ``--resume`` reads) is locked for
    the run, so two identical compiles at once take turns instead of overwriting each other's state.
    """
    job = _Job(model, split, options, Path(out), metric, stage or Stage())
    work = cache_dir() / "runs" / run_key(model, options, split.description["source"])
    with file_lock(work / ".lock", "this run's work folder (the same model, data and options)"):
        return _compile_in(work, job)


def _compile_in(work: Path, job: _Job) -> CompileOutput:
    """The stages in order: references, budgets, predictor, search rounds, held-out shortlist, verification
    and selection, report and outputs."""
    options, out, metric = job.options, job.out, job.metric
    started = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    run, samples = _prepare(work, job)
    original_measure = measure_references(run)
    fastest_ms = _resolve_budgets(run, original_measure)

    found = measure_sensitivity(run, samples)
    ladder = build_ladder(run, samples, found)
    fit_predictor(run, samples)
    result, pred_report = search_rounds(run, samples, ladder)
    budgets = options.budgets
    feasible = sorted((c for c in result.evaluated if c.feasible(budgets)), key=lambda c: -c.accuracy)
    if not feasible:
        best_ms = min(c.latency_ms for c in result.evaluated)
        raise InfeasibleBudgetError(
            _nothing_found(run, result.evaluated, fastest_ms),
            Reachable(min(best_ms, fastest_ms), run.costs.source()["source"], what="estimated by the search"),
        )
    unique = shortlist(run, feasible, samples, ladder)
    held_out = held_out_scores(run, unique)

    original_verified = _original_verified(run, run.space, samples.predictor, original_measure)
    floor = AccuracyFloor(original_verified.summary.accuracy, options.max_loss, metric.point, metric.name)
    run.stage.log(f"accuracy floor: {floor.describe()}")
    ranked = sorted(unique, key=lambda c: (-held_out[tuple(c.genome)], c.latency_ms))
    finetuned = finetune_shortlist(run, ranked, held_out)
    if finetuned:  # tuned scores may reorder the shortlist
        ranked = sorted(unique, key=lambda c: (-held_out[tuple(c.genome)], c.latency_ms))
    attempts, verified_list = _verify_ranked(
        run, run.space, ranked, held_out, floor, original_verified.summary
    )
    selection = select_or_raise(original_verified.summary, [v.summary for v in verified_list], budgets, floor)
    chosen = next(v for v in [original_verified, *verified_list] if v.summary.label == selection.chosen.label)
    if chosen is original_verified:
        run.stage.log(f"returning the original model: {selection.reason}")
        chosen = _materialize_original(run, original_verified)

    outcome = Outcome(
        original=_original_figures(run, original_measure),
        verified=chosen.figures,
        candidate=chosen.candidate,
        result=result,
        pred_report=pred_report,
        attempts=attempts,
        held_out=held_out,
        wall_s=time.perf_counter() - started,
    )
    report = _report(run, outcome)
    report["selection"] = selection.to_json(floor)
    report["original"]["predicted_score"] = figure(
        round(original_verified.candidate.accuracy, 4),
        SCORE_UNIT,
        "predicted",
        model="accuracy predictor (on Config encodings)",
        score=metric.smooth_description,
    )
    report["sensitivity"] = sensitivity.summary(found)
    report["ladder"] = ladder_section(run, samples, ladder, held_out)
    report["recovery"] = _recovery_section(run, chosen.figures["config"])
    report["recovery"]["fine_tuning"] = _finetune_section(run, finetuned, chosen.candidate)
    report["compare"] = compare_section(run, chosen.figures, floor)
    if chosen.summary.is_original:
        report["warnings"].append(
            f"the original model is returned unchanged: {selection.reason} "
            f"({floor.describe()}); a looser budget or a larger --max-loss allows changes"
        )

    with atomic_dir(out) as tmp:
        _write_outputs(tmp, run, outcome, report)
    return CompileOutput(report, out)


def _prepare(work: Path, job: _Job) -> tuple[RunContext, PredictorSamples]:
    """Activation ranges, simulator, references, search space, cost model and RPC session: the run
    context, and the predictor's samples on a subset of the calibration split."""
    model, split, options, metric, stage = job.model, job.split, job.options, job.metric, job.stage
    info = get_target(options.target)
    _check_tuning(info, options)
    check_finetune(info, model, options.finetune_minutes)
    rng = np.random.default_rng(options.seed)
    stage.log("calibrating activation ranges on the calibration split")
    ranges = _calibrate(model, split.calib_x, info)
    simulator = Simulator(model, batch=8)
    ref_calib = simulator.run(Config(), split.calib_x)
    ref_eval = simulator.run(Config(), split.eval_x)
    n_images = options.predictor_images or predictor_image_count(model.totals.macs)
    apart = _held_apart(split, rng)
    search_ranges = None
    if apart is None:
        pick = rng.permutation(len(split.calib_x))[:n_images]
        stage.log(f"accuracy predictor samples are scored on {len(pick)} calibration samples")
    else:
        fit, score = apart
        search_ranges = _calibrate(model, split.calib_x[fit], info)
        pick = score[rng.permutation(len(score))[:n_images]]
        stage.log(
            f"accuracy predictor samples are scored on {len(pick)} calibration samples held apart from the "
            f"{len(fit)} that fit the search's ranges and refits"
        )

    space = build_space(model, _space_options(info, options.space))
    stage.log(
        f"search space: {len(space)} genes, 10^{space.log10_size():.1f} configurations ({options.space})"
    )
    costs = SearchCosts(
        model, space, info.name, device=options.device, budget_confidence=options.budget_confidence
    )
    session = None
    if options.rpc:
        stage.log(f"connecting to the TVM RPC server at {options.rpc}")
        session = Session.from_address(rpc_addr=options.rpc)
    run = RunContext(
        model=model,
        info=info,
        ranges=ranges,
        split=split,
        ref_eval=ref_eval,
        metric=metric,
        probe=[model.example_inputs(seed=1)[s.name] for s in model.inputs],
        options=options,
        costs=costs,
        stage=stage,
        simulator=simulator,
        session=session,
        space=space,
        work=work,
        rng=rng,
        search_ranges=search_ranges,
    )
    pred_y = None if split.calib_y is None else split.calib_y[pick]
    return run, PredictorSamples(run, split.calib_x[pick], pred_y, ref_calib[pick])


def _calibrate(model: LoadedModel, x: np.ndarray, info):
    """Activation ranges (99.99th percentile) with the statistics recovery uses, where it applies."""
    return info.shipped_ranges(calibrate(model, x, method="percentile", percentile=99.99))


MIN_GROUPS_APART = 4


def _held_apart(split: Split, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray] | None:
    """(fit, score) indices of the calibration samples, split by source image: the search scores its
    predictor samples on data its ranges and least-squares refits were not fitted on. A refit judged on
    its own fitting data looks lossless where it generalizes worst (a classifier refitted on as many
    samples as it has inputs: agreement 1.0 on them, 0.0 on new images). None with fewer than
    :data:`MIN_GROUPS_APART` source images (then the search scores on the fitting data, as before)."""
    groups = split.calib_groups if split.calib_groups is not None else np.arange(len(split.calib_x))
    unique = np.unique(groups)
    if len(unique) < MIN_GROUPS_APART:
        return None
    fit_groups = rng.permutation(unique)[: len(unique) // 2]
    in_fit = np.isin(groups, fit_groups)
    return np.flatnonzero(in_fit), np.flatnonzero(~in_fit)


def _resolve_budgets(run: RunContext, original_measure: dict | None) -> float:
    """Budgets given as shares of the original made absolute; raises InfeasibleBudgetError when even the
    fastest configuration misses the latency budget. Returns that configuration's estimate."""
    budgets, costs, space, stage = run.options.budgets, run.costs, run.space, run.stage
    if budgets.latency_fraction is not None:  # --budget 0.5x: a share of the original's latency
        base = original_measure or figure(
            round(float(costs(space.identity()[None])[0][0]), 4), "ms", **costs.source()
        )
        budgets = replace(budgets, latency_ms=round(budgets.latency_fraction * base["value"], 4))
        stage.log(
            f"budget {budgets.latency_fraction:g}x of the original's {base['value']} ms ({base['source']}): "
            f"{budgets.latency_ms:g} ms"
        )
    if budgets.memory_fraction is not None:  # --memory 0.5x: a share of the original's predicted memory
        original_mb = float(costs(space.identity()[None])[1][0])
        budgets = replace(budgets, memory_mb=round(budgets.memory_fraction * original_mb, 4))
        stage.log(
            f"memory budget {budgets.memory_fraction:g}x of the original's {original_mb:.3f} MB "
            f"(predicted: weights + peak activations): {budgets.memory_mb:g} MB"
        )
    run.options.budgets = budgets  # frozen: the absolute budgets replace the relative ones
    fastest_ms = float(costs(_fastest_genome(space)[None])[0][0])
    if not budgets.within("latency_ms", fastest_ms):
        raise InfeasibleBudgetError(
            f"--budget {budgets.latency_ms:g}ms is infeasible on {run.info.name}: the fastest configuration "
            f"reachable is estimated at {fastest_ms:.2f} ms ({costs.source()['source']})",
            Reachable(fastest_ms, costs.source()["source"], what="the search space's fastest corner"),
        )
    return fastest_ms


def _recovery_section(run: RunContext, config) -> dict:
    """How the report's scores were recovered, and which layers of the result were refitted."""
    return {
        "method": "least-squares refit of structurally changed layers (hanasc.recovery.reconstruction, "
        "cross-validated on calibration-split input covariances), then bias correction of every changed "
        "layer (hanasc.recovery.bias_correction, on calibration-split input means)"
        if run.ranges.channel_means
        else "none (the target's own toolchain quantizes the bundle)",
        "refitted_layers": refitted_layers(run.model, config, run.ranges),
        "scores": "every simulated and verified score in this report is after recovery",
    }


def _nothing_found(run: RunContext, evaluated: list[Candidate], fastest_ms: float) -> str:
    """Why the search returned nothing within the budgets: the budget is below what the space reaches,
    or the search did not reach the part of the space that fits."""
    best_ms = min(c.latency_ms for c in evaluated)
    budget = run.options.budgets.latency_ms
    if budget is not None and fastest_ms <= budget < best_ms:
        return (
            f"the search evaluated {len(evaluated)} configurations and none was estimated within the "
            f"budgets on {run.info.name} (its fastest: {best_ms:.2f} ms), although the space's fastest "
            f"corner is estimated at {fastest_ms:.2f} ms: search longer (--generations, --population) "
            "or loosen --budget"
        )
    return (
        f"no configuration found within the budgets on {run.info.name}; fastest reachable latency "
        f"{min(best_ms, fastest_ms):.2f} ms (estimated)"
    )


def _finetune_section(run: RunContext, records: list[dict], chosen: Candidate) -> dict:
    """What fine-tuning did: every tuned candidate, and whether the result carries tuned weights."""
    if run.options.finetune_minutes <= 0:
        return {"method": "none (--finetune-minutes 0)"}
    shipped = tuple(chosen.genome) in run.tuned
    return {
        "method": "knowledge distillation from the original (KL on softened outputs, cross-entropy with "
        "labels when the metric uses them; MSE for non-class outputs) into the Config's torch form "
        "(straight-through weight and activation quantization, masks and factorizations; "
        "hanasc.recovery.finetune), on "
        + ("the training data (--train-data)" if run.split.train_x is not None else "the calibration split")
        + ", from the data-light recovery's values",
        "minutes": run.options.finetune_minutes,
        "candidates": records,
        "result_fine_tuned": shipped,
        "scores": "the result's verified score is after fine-tuning"
        if shipped
        else "the result was not fine-tuned (not among the tuned candidates, or tuning did not help)",
    }


def _fastest_genome(space: SearchSpace) -> np.ndarray:
    """A genome of the cheapest-looking choices: lowest precision, separable, 3x3, narrowest, all skipped."""
    genome = space.identity()
    for i, slot in enumerate(space.slots):
        if slot.kind == "precision":
            ints = [j for j, (w, a) in enumerate(slot.choices) if a == 8]
            genome[i] = ints[0] if ints else 0
        else:
            genome[i] = len(slot.choices) - 1
    return genome
