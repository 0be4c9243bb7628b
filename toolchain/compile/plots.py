"""PNG plots for people: the Pareto front, and latency by operator type (original vs result)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hanasc.core.atomic import atomic_file


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass
class SearchPanel:
    """The search's view: (latency, predicted score) of every evaluated Config and of the front, the
    original and the result on the same scale, the budget, and the axis and legend labels."""

    evaluated: list[tuple[float, float]]
    front: list[tuple[float, float]]
    original: tuple[float, float]
    chosen: tuple[float, float] | None
    budget_ms: float | None
    accuracy_label: str
    latency_label: str
    original_label: str = "original"
    chosen_label: str = "result (verified)"


def pareto_plot(path: Path, search: SearchPanel, held_out: HeldOutPanel | None = None) -> list[str]:
    """Left: predicted score vs estimated latency (all evaluated points, the front, the budget line, the
    original and the result on the search's scale). Right, with ``held_out``: the metric on held-out data
    vs verified latency (original, every verified candidate, the result): two scales, two labelled axes.
    Returns the y-axis labels (one per panel)."""
    evaluated, front, original, chosen = search.evaluated, search.front, search.original, search.chosen
    budget_ms, accuracy_label, latency_label = search.budget_ms, search.accuracy_label, search.latency_label
    original_label, chosen_label = search.original_label, search.chosen_label
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2 if held_out else 1, figsize=(12 if held_out else 7, 4.5), dpi=120)
    ax = axes[0] if held_out else axes
    if evaluated:
        ax.scatter([p[0] for p in evaluated], [p[1] for p in evaluated], s=8, c="0.75", label="evaluated")
    if front:
        ax.scatter(
            [p[0] for p in front],
            [p[1] for p in front],
            s=14,
            c="tab:blue",
            label="Pareto front (latency, accuracy, memory)",
        )
        line, best = [], -float("inf")
        for p in sorted(front):  # the accuracy-vs-latency front alone, as a staircase
            if p[1] > best:
                line.append(p)
                best = p[1]
        ax.step([p[0] for p in line], [p[1] for p in line], where="post", c="tab:blue", lw=1)
    ax.scatter([original[0]], [original[1]], marker="*", s=160, c="black", label=original_label, zorder=5)
    if chosen is not None:
        ax.scatter([chosen[0]], [chosen[1]], marker="D", s=70, c="tab:red", label=chosen_label, zorder=6)
    _budget_line(ax, budget_ms)
    ax.set_xlabel(latency_label, fontsize=8)
    ax.set_ylabel("predicted score (search)")
    ax.set_title(accuracy_label, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    if held_out:
        _held_out_panel(axes[1], held_out, budget_ms)
    labels = [a.get_ylabel() for a in (axes if held_out else [axes])]
    fig.tight_layout()
    with atomic_file(Path(path)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return labels


@dataclass
class HeldOutPanel:
    """The verified models on the metric's own scale: ``(latency ms, held-out metric)`` points."""

    metric: str
    latency_label: str
    original: tuple[float, float]
    candidates: list[tuple[float, float]]
    result: tuple[float, float] | None


def _budget_line(ax, budget_ms: float | None) -> None:
    if budget_ms is not None:
        ax.axvline(budget_ms, ls="--", c="tab:red", lw=1, label=f"budget {budget_ms:g} ms")


def _held_out_panel(ax, panel: HeldOutPanel, budget_ms: float | None) -> None:
    if panel.candidates:
        xs, ys = zip(*panel.candidates, strict=True)
        ax.scatter(xs, ys, s=30, c="tab:blue", label="verified candidates")
    ax.scatter(*panel.original, marker="*", s=160, c="black", label="original", zorder=5)
    if panel.result is not None:
        ax.scatter(*panel.result, marker="D", s=70, c="tab:red", label="result", zorder=6)
    _budget_line(ax, budget_ms)
    ax.set_xlabel(panel.latency_label, fontsize=8)
    ax.set_ylabel(f"{panel.metric} (held-out)")
    ax.set_title("verified models on held-out data", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")


def breakdown_plot(path: Path, original: dict[str, float], result: dict[str, float], title: str) -> None:
    """Side-by-side bars of latency per operator type."""
    plt = _pyplot()
    kinds = sorted(set(original) | set(result), key=lambda k: -(original.get(k, 0) + result.get(k, 0)))
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    xs = range(len(kinds))
    ax.bar([x - 0.2 for x in xs], [original.get(k, 0) for k in kinds], width=0.4, label="original")
    ax.bar([x + 0.2 for x in xs], [result.get(k, 0) for k in kinds], width=0.4, label="result")
    ax.set_xticks(list(xs), kinds, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("ms")
    ax.set_title(title, fontsize=9)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_file(Path(path)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
