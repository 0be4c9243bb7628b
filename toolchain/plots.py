"""PNG plots for people: the Pareto front, and latency by operator type (original vs result)."""

from __future__ import annotations

from pathlib import Path

from hanasc.atomic import atomic_file


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def pareto_plot(
    path: Path,
    evaluated: list[tuple[float, float]],
    front: list[tuple[float, float]],
    original: tuple[float, float],
    chosen: tuple[float, float] | None,
    budget_ms: float | None,
    accuracy_label: str,
    latency_label: str,
    original_label: str = "original",
    chosen_label: str = "result (verified)",
) -> None:
    """Accuracy vs latency: all evaluated points, the front, the budget line, the original and the result.

    Every point is on one scale (the search's score); the labels can carry other figures (held-out metric).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
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
    if budget_ms is not None:
        ax.axvline(budget_ms, ls="--", c="tab:red", lw=1, label=f"budget {budget_ms:g} ms")
    ax.set_xlabel(latency_label, fontsize=8)
    ax.set_ylabel("accuracy")
    ax.set_title(accuracy_label, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_file(Path(path)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


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
