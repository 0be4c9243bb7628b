"""Joint search: pymoo NSGA-II over the integer genome, budgets as constraints, checkpointed."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hanasc.atomic import atomic_file
from hanasc.space import SearchSpace


@dataclass
class Budgets:
    """Constraints (None: unconstrained)."""

    latency_ms: float | None = None
    memory_mb: float | None = None
    energy_mj: float | None = None
    latency_fraction: float | None = None  # `--budget 0.5x`: latency_ms is set from the original's latency


@dataclass
class Candidate:
    """One evaluated genome: predicted accuracy and estimated costs."""

    genome: list[int]
    accuracy: float
    latency_ms: float
    memory_mb: float
    energy_mj: float | None = None

    def feasible(self, budgets: Budgets) -> bool:
        return (
            (budgets.latency_ms is None or self.latency_ms <= budgets.latency_ms)
            and (budgets.memory_mb is None or self.memory_mb <= budgets.memory_mb)
            and (budgets.energy_mj is None or (self.energy_mj or 0.0) <= budgets.energy_mj)
        )


# genomes (n, slots) -> (accuracy, latency_ms, memory_mb, energy_mj) arrays of length n
Objectives = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


@dataclass
class SearchResult:
    front: list[Candidate]
    evaluated: list[Candidate]
    generations: int
    evaluations: int
    wall_s: float
    seed: int
    resumed_from: int = 0
    rounds: list = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "algorithm": "pymoo NSGA-II (integer genome, SBX + polynomial mutation with rounding repair)",
            "seed": self.seed,
            "generations": self.generations,
            "evaluations": self.evaluations,
            "wall_s": round(self.wall_s, 2),
            "resumed_from_generation": self.resumed_from,
            "refinement_rounds": self.rounds,
        }


@dataclass
class _Archive:
    """Every genome evaluated so far (survives a resume)."""

    entries: dict[tuple[int, ...], Candidate] = field(default_factory=dict)

    def evaluate(self, genomes: np.ndarray, objectives: Objectives) -> list[Candidate]:
        keys = [tuple(int(g) for g in row) for row in genomes]
        todo = [k for k in dict.fromkeys(keys) if k not in self.entries]
        if todo:
            acc, lat, mem, energy = objectives(np.array(todo, dtype=int))
            for i, key in enumerate(todo):
                self.entries[key] = Candidate(
                    list(key),
                    float(acc[i]),
                    float(lat[i]),
                    float(mem[i]),
                    None if energy is None else float(energy[i]),
                )
        return [self.entries[k] for k in keys]


def _problem(space: SearchSpace, objectives: Objectives, budgets: Budgets, archive: _Archive):
    from pymoo.core.problem import Problem

    use_energy = budgets.energy_mj is not None
    constraints = [b for b in (budgets.latency_ms, budgets.memory_mb, budgets.energy_mj) if b is not None]

    class HanascProblem(Problem):
        def __init__(self) -> None:
            super().__init__(
                n_var=len(space),
                n_obj=4 if use_energy else 3,
                n_ieq_constr=len(constraints),
                xl=np.zeros(len(space)),
                xu=space.upper_bounds.astype(float),
                vtype=int,
            )

        def _evaluate(self, x, out, *args, **kwargs):
            cands = archive.evaluate(np.rint(x).astype(int), objectives)
            f = [
                [-c.accuracy, c.latency_ms, c.memory_mb] + ([c.energy_mj or 0.0] if use_energy else [])
                for c in cands
            ]
            out["F"] = np.array(f, dtype=float)
            if constraints:
                g = []
                for c in cands:
                    row = []
                    if budgets.latency_ms is not None:
                        row.append(c.latency_ms - budgets.latency_ms)
                    if budgets.memory_mb is not None:
                        row.append(c.memory_mb - budgets.memory_mb)
                    if budgets.energy_mj is not None:
                        row.append((c.energy_mj or 0.0) - budgets.energy_mj)
                    g.append(row)
                out["G"] = np.array(g, dtype=float)

    return HanascProblem()


def pareto_front(cands: list[Candidate]) -> list[Candidate]:
    """Non-dominated candidates over (accuracy up, latency down, memory down)."""
    front = []
    for c in cands:
        dominated = any(
            o.accuracy >= c.accuracy
            and o.latency_ms <= c.latency_ms
            and o.memory_mb <= c.memory_mb
            and (o.accuracy > c.accuracy or o.latency_ms < c.latency_ms or o.memory_mb < c.memory_mb)
            for o in cands
        )
        if not dominated:
            front.append(c)
    return sorted(front, key=lambda c: c.latency_ms)


def run_search(
    space: SearchSpace,
    objectives: Objectives,
    budgets: Budgets,
    *,
    seed: int = 0,
    pop_size: int = 48,
    generations: int = 30,
    seeds: list[np.ndarray] | None = None,
    checkpoint: Path | None = None,
    resume: bool = False,
    on_generation: Callable[[int, list[Candidate]], None] | None = None,
) -> SearchResult:
    """NSGA-II from an initial population (``seeds`` first, then random); state saved every generation."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair

    start = time.perf_counter()
    archive, done, population = _Archive(), 0, None
    if resume and checkpoint is not None and checkpoint.exists():
        state = json.loads(checkpoint.read_text())
        done = int(state["generation"])
        population = np.array(state["population"], dtype=int)
        for entry in state["archive"]:
            archive.entries[tuple(entry["genome"])] = Candidate(**entry)
    if population is None:
        rng = np.random.default_rng(seed)
        rows = [np.asarray(s, dtype=int) for s in (seeds or [])][:pop_size]
        while len(rows) < pop_size:
            rows.append(space.sample(rng))
        population = np.array(rows, dtype=int)
    problem = _problem(space, objectives, budgets, archive)
    algorithm = NSGA2(
        pop_size=pop_size,
        sampling=population.astype(float),
        crossover=SBX(prob=0.9, eta=5, vtype=float, repair=RoundingRepair()),
        mutation=PM(eta=5, vtype=float, repair=RoundingRepair()),
        eliminate_duplicates=True,
    )
    algorithm.setup(
        problem, termination=("n_gen", max(1, generations - done)), seed=seed + done, verbose=False
    )
    generation = done
    while algorithm.has_next():
        algorithm.next()
        generation += 1
        current = np.rint(algorithm.pop.get("X")).astype(int)
        if checkpoint is not None:
            _save(checkpoint, generation, current, archive)
        if on_generation is not None:
            on_generation(generation, list(archive.entries.values()))
    evaluated = list(archive.entries.values())
    return SearchResult(
        front=pareto_front(evaluated),
        evaluated=evaluated,
        generations=generation,
        evaluations=len(evaluated),
        wall_s=time.perf_counter() - start,
        seed=seed,
        resumed_from=done,
    )


def _save(path: Path, generation: int, population: np.ndarray, archive: _Archive) -> None:
    state = {
        "generation": generation,
        "population": population.tolist(),
        "archive": [asdict(c) for c in archive.entries.values()],
    }
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(state))
