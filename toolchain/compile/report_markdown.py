"""The compile report as markdown (``report.md``): the original against the result, how each figure was
obtained, the search, the recovery, the per-layer choices, the selection and the verification attempts."""

from __future__ import annotations

from pathlib import Path

from hanasc.passes.kinds import by_column


def fmt_figure(f: dict) -> str:
    detail = ""
    if f["source"] == "measured" and "runs" in f:
        detail = f", median of {f['runs']}"
    return f"{f['value']} ({f['source']}{detail}{beside_original(f)})"


def beside_original(f: dict) -> str:
    """How a latency timed alternately with the original reads (:mod:`hanasc.cost_models.timing`), or ''."""
    if "ratio_to_original" not in f:
        return ""
    return (
        f": {f['ratio_to_original']:g}x the original timed alternately with it, raw {f['raw_median_ms']} "
        f"vs {f['original_in_loop_ms']} ms"
    )


def _recovery_lines(recovery: dict) -> list[str]:
    """How the scores were recovered, and what fine-tuning did (before/after figures)."""
    if not recovery:
        return []
    lines = [f"Recovery: {recovery['method']}; refitted layers: {len(recovery['refitted_layers'])}.", ""]
    tuning = recovery.get("fine_tuning", {})
    for i, c in enumerate(tuning.get("candidates", []), 1):
        kept = "kept" if c["kept"] else "not kept"
        lines.append(
            f"- fine-tuned candidate {i}: {c['steps']} steps in {c['seconds']} s, distillation loss "
            f"{c['distillation_loss_before']} -> {c['distillation_loss_after']} (calibration split), "
            f"held-out score {c['held_out_before']} -> {c['held_out_after']} ({kept})"
        )
    if tuning.get("candidates"):
        lines += ["", tuning["scores"][0].upper() + tuning["scores"][1:] + ".", ""]
    return lines


def _ladder_lines(ladder: dict) -> list[str]:
    """The mixed-precision ladder: each point's W8A8 layers, estimated latency and scores."""
    if not ladder.get("points"):
        return []
    lines = ["Mixed-precision ladder (least sensitive layers to W8A8 first):", ""]
    lines += ["| W8A8 layers | estimated ms | simulated score | held-out |", "|---|---|---|---|"]
    for p in ladder["points"]:
        lines.append(
            f"| {p['w8a8_layers']} | {p['estimated_ms']} | {p['simulated_score']} | {p.get('held_out', '')} |"
        )
    return [*lines, ""]


def _compare_lines(compare: dict | None) -> list[str]:
    """The result against the runtimes a user may already run (``compare``), or why that is absent."""
    if compare is None:
        return []
    if "absent" in compare:
        return [f"Against other runtimes: {compare['absent']}.", ""]
    res = compare["result"]
    lines = [
        f"**Result: {compare['summary']}** ({res['provenance']}; ratio = {compare['ratio_meaning']}).",
        "",
        "| engine | ms | held-out metric | within the floor | result / it | how |",
        "|---|---|---|---|---|---|",
        f"| {res['name']} | {res['ms']['value']} | {res['metric']['value']} | | 1.00 | |",
    ]
    for row in compare["rows"]:
        if "failed" in row:
            lines.append(f"| {row['name']} | failed: {row['failed']} | | | | |")
            continue
        lines.append(
            f"| {row['name']} | {row['ms']['value']} | {row['metric']['value']} | "
            f"{'yes' if row['within_floor'] else 'no'} | {row['ratio']:.2f} | {row['how']} |"
        )
    lines += [
        "",
        f"Peers: the original model, quantized on {compare['calibration']}; metric on {compare['held_out']}; "
        f"every figure {res['provenance']}, alternately with the result.",
        "",
    ]
    return lines


def report_markdown(report: dict) -> str:
    """The report for a person."""
    o, r, b = report["original"], report["result"], report["budget"]
    budget = ", ".join(f"{k} {v:g}" for k, v in b.items() if v is not None) or "none"
    lines = [
        f"# hanasc compile: {Path(report['model']).name} for {report['target']}",
        "",
        f"Budget: {budget}. Metric: {report['metric']['name']} ({report['metric']['description']}).",
        "",
        *[f"**Warning**: {w}.\n" for w in report.get("warnings", [])],
        "| | original | result |",
        "|---|---|---|",
        f"| latency (ms) | {fmt_figure(o['latency_ms'])} | {fmt_figure(r['latency_ms'])} |",
        f"| accuracy | {fmt_figure(o['accuracy'])} | {fmt_figure(r['accuracy'])} |",
        f"| memory (MB) | {fmt_figure(o['memory_mb'])} | {fmt_figure(r['memory_mb'])} |",
        f"| energy (mJ) | {fmt_figure(o['energy_mj'])} | {fmt_figure(r['energy_mj'])} |",
        f"| parameters | {o['params']['value']:,} | {r['params']['value']:,} |",
        f"| weight bytes | {o['params']['weight_bytes']:,} | {r['params']['weight_bytes']:,} |",
        "",
        *_compare_lines(report.get("compare")),
        "How the figures were obtained: latency `measured` = TVM time_evaluator on this host (median);",
        "the original and uniform int8 are timed alternately in one loop, the result alternately with the",
        "original and reported as the median per-round ratio x the original's latency (report.json: ratio);",
        f"`predicted`/`prior` = {report['latency_estimate']['model']} "
        f"({report['latency_estimate'].get('kernels')}); accuracy on the held-out split "
        f"({report['data']['held_out']['samples']} samples of {report['data']['source']}); memory from the "
        "static memory plan of the lowered module; energy from the target spec (prior).",
        "",
        f"Search: {report['search']['algorithm']}, seed {report['search']['seed']}, "
        f"{report['search']['evaluations']} Configs evaluated over "
        f"{report['search']['generations']} generations "
        f"in a space of 10^{report['search']['log10_configurations']} ({report['search']['space']}); "
        f"total wall time {report['search']['wall_s_total']} s.",
        f"Accuracy predictor: Kendall tau {report['predictor']['kendall_tau']:.3f} on "
        f"{report['predictor']['test_samples']} held-out Configs "
        f"(trained on {report['predictor']['train_samples']}, "
        f"evaluated with the simulator on calibration samples held apart from those that fit the search's "
        f"ranges and refits, where there are 4 or more source images; it predicts "
        f"{r['predicted_score']['score']}, a smooth companion of {report['metric']['name']}). The result's "
        f"predicted score was {r['predicted_score']['value']}; its estimated latency "
        f"{r['estimated_latency_ms']['value']} ms.",
        "",
        *_recovery_lines(report.get("recovery", {})),
        *_ladder_lines(report.get("ladder", {})),
        "## Per-layer choices",
        "",
        *_layer_rows(r["layers"]),
    ]
    if "selection" in report:
        sel = report["selection"]
        lines += [
            "",
            f"Selection: **{sel['chosen']}** ({sel['reason']}); accuracy floor {sel['accuracy_floor']:g} "
            f"(--max-loss {sel['max_loss_points']:g} points); {sel['acceptable']} of {sel['considered']} "
            "verified models (the original included) were acceptable.",
        ]
    return "\n".join(lines + _attempt_lines(report["verification"]["attempts"])) + "\n"


def _attempt_lines(attempts: list[dict]) -> list[str]:
    """The verification attempts as a table: the estimate the search trusted against the artifact."""
    lines = [
        "",
        "## Verification attempts",
        "",
        "| # | estimated ms | measured / predicted ms | estimate / measured | meets budget | accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for index, a in enumerate(attempts, 1):
        if "skipped" in a:
            lines.append(f"| {index} | skipped: {a['skipped']} | | | | |")
            continue
        got = a.get("measured_ms", a.get("predicted_ms"))
        kind = "measured" if "measured_ms" in a else "predicted"
        ratio = a.get("estimate_over_measured", "")
        lines.append(
            f"| {index} | {a['estimated_ms']} | {got} ({kind}) | {ratio} | "
            f"{'yes' if a['meets_budget'] else 'no'} | {a['accuracy']} |"
        )
    return lines


def _layer_rows(rows: list[dict]) -> list[str]:
    """The per-layer table: name and op, then every choice kind's columns (in the kinds' column order)."""
    columns = [column for kind in by_column() for column in kind.columns]
    header = ["layer", "op", *[name for name, _ in columns]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row["name"]), str(row["op"]), *[str(cell(row)) for _, cell in columns]]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
