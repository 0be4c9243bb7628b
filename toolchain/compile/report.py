"""The compile job's outputs: the report (JSON figures with provenance, the markdown summary), the layer
table and the files written atomically to ``--out`` (config, report, plots, artifacts)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hanasc.compile.apply_pipeline import build_target_bundle
from hanasc.compile.plots import HeldOutPanel, SearchPanel, breakdown_plot, pareto_plot
from hanasc.compile.report_markdown import report_markdown
from hanasc.core.relax_params import weights_of
from hanasc.cost_models.estimate import estimate_costs
from hanasc.cost_models.provenance import figure
from hanasc.passes.kinds import by_column
from hanasc.recovery.bias_correction import ranges_for_replay
from hanasc.targets.quiet import export_library

SCORE_UNIT = "score (metric's units, higher is better)"

if TYPE_CHECKING:
    from hanasc.compile.context import RunContext
    from hanasc.search.nsga2 import Candidate, SearchResult


def _costs_figures(mod, info, scale: float, n_measured: int) -> tuple[dict, dict, dict]:
    """Memory, energy and latency-by-operator-type of a module from the cost models."""
    report = estimate_costs(mod, info.name)  # weights as parameters: the cost lowering binds them as shipped
    mem = report.memory["total"]
    memory = figure(
        round(mem.value / 1e6, 3),
        "MB",
        mem.source,
        **mem.detail,
        weights_mb=round(report.memory["weights"].value / 1e6, 3),
        activations_mb=round(report.memory["activations"].value / 1e6, 3),
    )
    energy = figure(round(report.energy.value, 4), "mJ", report.energy.source, **report.energy.detail)
    by_kind: dict[str, float] = {}
    for k in report.kernels:
        by_kind[k.op_kind] = by_kind.get(k.op_kind, 0.0) + k.latency.value * k.calls * scale
    sources = sorted({k.latency.source for k in report.kernels})
    breakdown = {
        "ms_by_op_kind": by_kind,
        "source": sources[0] if len(sources) == 1 else "mixed",
        "detail": f"per-kernel estimates x {scale:.3f} (scale fitted to {n_measured} whole-model "
        "measurements)",
    }
    return memory, energy, breakdown


def _params(mod) -> dict:
    weights = weights_of(mod)
    return figure(
        int(sum(v.size for k, v in weights.items() if not k.endswith(".scale"))),
        "parameters",
        "measured",
        how="counted from the module's weight parameters",
        weight_bytes=int(sum(v.nbytes for v in weights.values())),
    )


@dataclass
class Outcome:
    """What the search and verification produced for the report: the original's figures, the chosen
    model's verified figures and search candidate, the last search result, the predictor's report, the
    verification attempts, the held-out scores of the shortlist and the run's wall time."""

    original: dict
    verified: dict
    candidate: Candidate
    result: SearchResult
    pred_report: object  # hanasc.search.predictor.PredictorReport
    attempts: list[dict]
    held_out: dict[tuple, float]
    wall_s: float


def _original_figures(run: RunContext, measured: dict | None) -> dict:
    """The original's latency (measured, else estimated), memory, energy and held-out accuracy."""
    model, info, split, ref_eval, metric, costs = (
        run.model,
        run.info,
        run.split,
        run.ref_eval,
        run.metric,
        run.costs,
    )
    if measured is not None:
        latency = measured
    else:
        latency = figure(round(float(costs(run.space.identity()[None])[0][0]), 3), "ms", **costs.source())
    memory, energy, breakdown = _costs_figures(model.mod, info, costs.scale, len(costs.observations))
    return {
        "latency_ms": latency,
        "memory_mb": memory,
        "energy_mj": energy,
        "accuracy": figure(
            round(metric(ref_eval, split.eval_y, ref_eval), 4),
            SCORE_UNIT,
            "measured",
            metric=metric.name,
            on=f"held-out split ({len(split.eval_x)} samples)",
            engine="onnxruntime on the original model",
        ),
        "params": _params(model.mod),
        "breakdown": breakdown,
    }


def _layers_table(model, config, space) -> list[dict]:
    """One row per layer: its name and op, then every choice kind's cells (in the kinds' column order)."""
    cells = [kind.report_cells(model, config) for kind in by_column()]
    return [
        {"name": layer.name, "op": layer.op, **{k: v for c in cells for k, v in c[layer.name].items()}}
        for layer in model.layers
    ]


def _report(run: RunContext, outcome: Outcome) -> dict:
    """The report (``report.json``) of a run, every figure with its provenance."""
    model, info, options, split, metric, costs, space = (
        run.model,
        run.info,
        run.options,
        run.split,
        run.metric,
        run.costs,
        run.space,
    )
    original, verified, candidate, result, pred_report = (
        outcome.original,
        outcome.verified,
        outcome.candidate,
        outcome.result,
        outcome.pred_report,
    )
    memory, energy, breakdown = _costs_figures(verified["mod"], info, costs.scale, len(costs.observations))
    budgets = options.budgets
    return {
        "format": "hanasc.report/1",
        "model": str(model.path),
        "target": info.name,
        "budget": {
            "latency_ms": budgets.latency_ms,
            "memory_mb": budgets.memory_mb,
            "energy_mj": budgets.energy_mj,
            "latency_share_of_original": budgets.latency_fraction,
            "memory_share_of_original": budgets.memory_fraction,
        },
        "data": split.description,
        "metric": {
            "name": metric.name,
            "description": metric.description,
            "search_score": metric.smooth_description,
        },
        "original": original,
        "result": {
            "latency_ms": verified["latency"],
            "memory_mb": memory,
            "energy_mj": energy,
            "accuracy": verified["accuracy"],
            "params": _params(verified["mod"]),
            "breakdown": breakdown,
            "predicted_score": figure(
                round(candidate.accuracy, 4),
                SCORE_UNIT,
                "predicted",
                model=f"accuracy predictor ({pred_report.model} on Config encodings)",
                score=metric.smooth_description,
            ),
            "estimated_latency_ms": figure(round(candidate.latency_ms, 3), "ms", **costs.source()),
            "config": verified["config"].to_json(),
            "layers": _layers_table(model, verified["config"], space),
        },
        "pareto": [
            {
                "accuracy": round(c.accuracy, 4),
                "latency_ms": round(c.latency_ms, 3),
                "memory_mb": round(c.memory_mb, 3),
                "accuracy_source": "predicted",
                "accuracy_meaning": metric.smooth_description,
                "latency_source": costs.source()["source"],
                "memory_source": "predicted",
            }
            for c in result.front
        ],
        "search": {
            **result.summary(),
            "space": options.space,
            "genes": len(space),
            "log10_configurations": round(space.log10_size(), 1),
            "wall_s_total": round(outcome.wall_s, 1),
            "population": options.population,
        },
        "predictor": pred_report.to_json(),
        "latency_estimate": costs.source(),
        "verification": {
            "attempts": outcome.attempts,
            "held_out_scores": [{"genome": list(k), metric.name: v} for k, v in outcome.held_out.items()],
        },
        "warnings": accuracy_warnings(original["accuracy"]["value"], verified["accuracy"]["value"], metric)
        + chance_warnings(
            original["accuracy"]["value"], run.ref_eval, metric, run.split.description["source"]
        ),
    }


def accuracy_warnings(original: float, result: float, metric) -> list[str]:
    """A warning when the result kept less than half of the original's score on the held-out split."""
    if original > 0 and result < 0.5 * original:
        return [
            f"accuracy collapsed: {metric.name} {result:.3f} against the original's {original:.3f} on the "
            "held-out split; the budget needs changes this model does not survive without fine-tuning "
            "(a looser budget, or --space quant, keeps more)"
        ]
    return []


def chance_warnings(original: float, reference: np.ndarray, metric, source: str) -> list[str]:
    """A warning when the ORIGINAL scores no better than chance against the labels: the data's
    preprocessing or labels likely do not match the model, and every accuracy figure is then meaningless."""
    if not metric.needs_labels or reference.ndim != 2 or reference.shape[1] < 2:
        return []
    chance = 1.0 / reference.shape[1]
    if original > 2.0 * chance:
        return []
    return [
        f"the original model scores {metric.name} {original:.3f} on the held-out split of {source}, "
        f"no better than chance ({chance:.3f} for {reference.shape[1]} classes): check the labels and the "
        "preprocessing (--size, --resize, --mean, --std, --channel-order) before trusting any accuracy "
        "figure here"
    ]


def _write_outputs(tmp: Path, run: RunContext, outcome: Outcome, report: dict) -> None:
    """The artifact (host library or the target's bundle), config, activation ranges, report and plots,
    into ``tmp`` (the caller renames it into place)."""
    model, info, split, metric, ranges, budgets = (
        run.model,
        run.info,
        run.split,
        run.metric,
        run.ranges,
        run.options.budgets,
    )
    verified, result, original = outcome.verified, outcome.result, outcome.original

    config = verified["config"]
    if verified["executable"] is not None:
        export_library(verified["executable"], tmp / "model.so")
        report["artifact"] = {"host_library": "model.so", "bytes": (tmp / "model.so").stat().st_size}
    else:
        bundle = build_target_bundle(
            info, model, config, verified["mod"], tmp / info.name, split.calib_x, ranges
        )
        report["artifact"] = {"bundle": info.name, **bundle}
    config.save(tmp / "config.json")
    if verified.get("tuned"):  # fine-tuned values: what `hanasc apply` replays beside config.json
        from hanasc.recovery.finetune import TUNED_WEIGHTS_FILE, save_tuned

        save_tuned(tmp / TUNED_WEIGHTS_FILE, verified["tuned"])
    refitted = report["recovery"]["refitted_layers"]  # of this Config, computed once for the report
    ranges_for_replay(ranges, refitted).save(tmp / "activation_ranges.json")  # + .npz of refits
    (tmp / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (tmp / "report.md").write_text(report_markdown(report))
    lat_source = report["latency_estimate"]["source"]
    search = SearchPanel(
        evaluated=[(c.latency_ms, c.accuracy) for c in result.evaluated],
        front=[(c.latency_ms, c.accuracy) for c in result.front],
        original=(original["latency_ms"]["value"], original["predicted_score"]["value"]),
        chosen=(verified["latency"]["value"], report["result"]["predicted_score"]["value"]),
        budget_ms=budgets.latency_ms,
        accuracy_label=f"search: predicted {metric.smooth_description} (every point)",
        original_label=f"original ({metric.name} {original['accuracy']['value']:g} held-out)",
        chosen_label=f"result ({metric.name} {verified['accuracy']['value']:g} held-out, verified)",
        latency_label=f"latency ms (search: {lat_source}; "
        f"original/result: {original['latency_ms']['source']})",
    )
    pareto_plot(
        tmp / "pareto.png",
        search,
        held_out=HeldOutPanel(
            metric=metric.name,
            latency_label=f"latency ms ({verified['latency']['source']})",
            original=(original["latency_ms"]["value"], original["accuracy"]["value"]),
            candidates=[
                (a.get("measured_ms", a.get("predicted_ms")), a["accuracy"])
                for a in report["verification"]["attempts"]
                if "accuracy" in a
            ],
            result=(verified["latency"]["value"], verified["accuracy"]["value"]),
        ),
    )
    breakdown_plot(
        tmp / "breakdown.png",
        original["breakdown"]["ms_by_op_kind"],
        report["result"]["breakdown"]["ms_by_op_kind"],
        f"latency by operator type on {info.name} ({report['result']['breakdown']['detail']})",
    )
