"""``hanasc.compile``: the compile job from the CLI's options: checks, data, the pipeline, a typed result.

A compile that finds no model within the budgets and the accuracy floor raises
:class:`hanasc.compile.pipeline.NoModelMeetsBudgets` (exit 2 in the CLI) whose ``reachable`` holds what
could be reached; nothing is written then. A returned :class:`~hanasc.api.results.CompileResult` met them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from hanasc.api.data import LoadedData, load_data, preprocess_for
from hanasc.api.options import CompileRequest, InputShapes, ModelArg, load
from hanasc.api.results import Artifact, CompileResult, ModelFigures, frozen_mapping
from hanasc.compile.context import with_training
from hanasc.compile.peers import parse_compare
from hanasc.compile.pipeline import CompileOptions, CompileOutput, Stage, compile_model, split_data
from hanasc.core.budgets import parse_budget, parse_confidence, parse_latency_budget, parse_relative_budget
from hanasc.core.errors import HanascError
from hanasc.core.executor import cluster_address
from hanasc.core.metrics import Metric, choose_metric
from hanasc.frontend.loading import LoadedModel
from hanasc.passes.config import Config
from hanasc.search.nsga2 import Budgets
from hanasc.targets.registry import get_target


class Progress(Protocol):
    """What ``progress=`` receives: a stage starts (with its number of steps, or None), a step ends, a line
    of log. The CLI's progress bars are one; any object with these three methods is another."""

    def start(self, name: str, total: int | None) -> None: ...

    def advance(self, text: str = "") -> None: ...

    def log(self, text: str) -> None: ...


def compile(
    model: ModelArg,
    *,
    input_shape: InputShapes = None,
    progress: Progress | None = None,
    **options,
) -> CompileResult:
    """Search per-layer quantization and architecture changes under budgets, compile and verify the winner
    into ``out`` (config.json, report.json, report.md, the library or the target's bundle).

    ``options`` are ``hanasc compile``'s options with the same names and defaults
    (:class:`~hanasc.api.options.CompileRequest`): ``target="host"``, ``budget="8ms"`` or ``"0.5x"``,
    ``data="calib.npz"``, ``out="out"``, ``max_loss=1.0``, ... Bad input raises a
    :class:`~hanasc.core.errors.HanascError` naming the option or file; no model within the budgets and
    the floor raises :class:`~hanasc.compile.pipeline.NoModelMeetsBudgets` (``.reachable``).
    """
    request = CompileRequest.from_options(options)
    loaded = load(model, input_shape)
    return run_request(loaded, request, progress)


def run_request(
    model: LoadedModel, request: CompileRequest, progress: Progress | None = None
) -> CompileResult:
    """Check the request, load the data, run the pipeline; the typed result."""
    r = request
    compare = parse_compare(r.compare)  # before any work: an engine named that is not installed is exit 2
    r.check()
    _check_inputs(model)
    options = _compile_options(r, compare)
    preprocess = preprocess_for(model, r.size, r.resize, r.mean, r.std, r.channel_order, r.views)
    data = load_data(model, r.data, preprocess)
    training = None if r.train_data is None else load_data(model, r.train_data, preprocess)
    metric = choose_metric(r.metric, data.y is not None, model.is_classifier())
    if metric.needs_labels:
        model.check_labels(data.y, data.source)  # before the search, not after it
    if metric.needs_classes:
        model.check_classifier_output(metric.name)
    model.check_finite_activations(data.x, data.source)
    split = split_data(data.x, data.y, data.groups, options.seed, data.source)
    if training is not None:
        split = with_training(split, *_checked_training(model, metric, training))
    stage = Stage() if progress is None else Stage(progress.start, progress.advance, progress.log)
    output = compile_model(model, split, options, Path(r.out), metric, stage)
    return compile_result(output, options.target, metric.name)


def _check_inputs(model: LoadedModel) -> None:
    """The search simulates one-input models; several inputs are refused before any work, in one line."""
    if len(model.inputs) != 1:
        names = ", ".join(s.name for s in model.inputs)
        raise HanascError(
            f"{model.path}: {len(model.inputs)} inputs ({names}); compile searches one-input models "
            "(apply, costs and calibration take data for every input)"
        )


def _compile_options(r: CompileRequest, compare) -> CompileOptions:
    """The pipeline's options from the request (target looked up, budgets parsed)."""
    info = get_target(r.target)
    latency_ms, latency_fraction = parse_latency_budget(r.budget)
    memory_mb, memory_fraction = parse_relative_budget(r.memory, "memory", "--memory")
    energy = parse_budget(r.energy, "energy", "--energy")
    return CompileOptions(
        target=info.name,
        budgets=Budgets(latency_ms, memory_mb, energy, latency_fraction, memory_fraction),
        space=r.space,
        seed=r.seed,
        metric=r.metric,
        predictor_samples=r.samples,
        population=r.population,
        generations=r.generations,
        resume=r.resume,
        tune_minutes=r.tune_minutes,
        rpc=r.rpc,
        max_loss=r.max_loss,
        max_attempts=r.verify_limit,
        device=r.device,
        budget_confidence=parse_confidence(r.budget_confidence),
        finetune_minutes=r.finetune_minutes,
        finetune_candidates=r.finetune_candidates,
        compare=compare,
        workers=r.workers,
        cluster=cluster_address(r.cluster),
    )


def _checked_training(model: LoadedModel, metric: Metric, training: LoadedData) -> tuple:
    """(x, y, source) of ``train_data``, checked like ``data`` (labels only where the metric uses them)."""
    if metric.needs_labels and training.y is not None:
        model.check_labels(training.y, training.source)
    model.check_finite_activations(training.x, training.source)
    return training.x, training.y if metric.needs_labels else None, training.source


def compile_result(output: CompileOutput, target: str, metric: str) -> CompileResult:
    """The typed result of a finished compile, from its report and folder."""
    report, out = output.report, Path(output.out)
    artifact = report.get("artifact", {})
    return CompileResult(
        target=target,
        metric=metric,
        original=ModelFigures.from_report(report["original"]),
        result=ModelFigures.from_report(report["result"]),
        config=Config.load(out / "config.json"),
        is_original=report.get("selection", {}).get("chosen") == "original",
        artifact=Artifact.in_folder(out, artifact.get("host_library"), artifact.get("bundle"), "report"),
        budget=frozen_mapping(report.get("budget")),
        selection=frozen_mapping(report.get("selection")),
        warnings=tuple(report.get("warnings", [])),
        report=frozen_mapping(report),
    )
