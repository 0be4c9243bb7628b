"""Joint search: pymoo NSGA-II over the integer genome, budgets as constraints, checkpointed."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hanasc.core.atomic import atomic_file
from hanasc.core.budgets import Budgets
from hanasc.core.cache_safety import cache_warning
from hanasc.search.space import SearchSpace

__all__ = ["Budgets", "Candidate", "NsgaSettings", "SearchResult", "pareto_front", "run_search"]


@dataclass
class Candidate:
    """One evaluated genome: predicted accuracy and estimated costs."""

    genome: list[int]
    accuracy: float
    latency_ms: float
    memory_mb: float
    energy_mj: float | None = None

    def feasible(self, budgets: Budgets) -> bool:
        return budgets.feasible(self)


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
    constraints = budgets.limits()

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
                out["G"] = np.array([list(budgets.violations(c).values()) for c in cands], dtype=float)

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


@dataclass
class NsgaSettings:
    """One NSGA-II run: its seed, population, generations, and the checkpoint it saves to (and, with
    ``resume``, continues from)."""

    seed: int = 0
    pop_size: int = 48
    generations: int = 30
    checkpoint: Path | None = None
    resume: bool = False


def run_search(
    space: SearchSpace,
    objectives: Objectives,
    budgets: Budgets,
    settings: NsgaSettings | None = None,
    *,
    seeds: list[np.ndarray] | None = None,
    on_generation: Callable[[int, list[Candidate]], None] | None = None,
) -> SearchResult:
    """NSGA-II from an initial population (``seeds`` first, then random); state saved every generation.

    Generation 1 evaluates the initial population; each later generation is one NSGA-II step (rank and
    crowding of the population, tournament mating, survival) seeded by ``seed + generation`` alone, so a
    run resumed from any checkpoint continues exactly as the uninterrupted run did.
    """
    settings = settings or NsgaSettings()
    seed, pop_size, generations = settings.seed, settings.pop_size, settings.generations
    checkpoint, resume = settings.checkpoint, settings.resume
    start = time.perf_counter()
    archive, done, population = _Archive(), 0, None
    if resume and checkpoint is not None and checkpoint.exists():
        state = _load_checkpoint(checkpoint)
        if state is not None:
            done = int(state["generation"])
            population = np.array(state["population"], dtype=int)
            for entry in state["archive"]:
                archive.entries[tuple(entry["genome"])] = Candidate(**entry)
    resumed_from = done
    problem = _problem(space, objectives, budgets, archive)
    if population is None:
        rng = np.random.default_rng(seed)
        rows = [np.asarray(s, dtype=int) for s in (seeds or [])][:pop_size]
        while len(rows) < pop_size:
            rows.append(space.sample(rng))
        population = np.array(rows, dtype=int)
        archive.evaluate(population, objectives)
        done = 1
        _after_generation(checkpoint, done, population, archive, on_generation)
    for generation in range(done + 1, generations + 1):
        population = _step(problem, population, seed + generation, pop_size)
        _after_generation(checkpoint, generation, population, archive, on_generation)
    evaluated = list(archive.entries.values())
    return SearchResult(
        front=pareto_front(evaluated),
        evaluated=evaluated,
        generations=max(done, generations),
        evaluations=len(evaluated),
        wall_s=time.perf_counter() - start,
        seed=seed,
        resumed_from=resumed_from,
    )


def _step(problem, population: np.ndarray, seed: int, pop_size: int) -> np.ndarray:
    """One NSGA-II generation from ``population`` (its evaluations come from the archive)."""
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair

    algorithm = NSGA2(
        pop_size=pop_size,
        sampling=population.astype(float),
        crossover=SBX(prob=0.9, eta=5, vtype=float, repair=RoundingRepair()),
        mutation=PM(eta=5, vtype=float, repair=RoundingRepair()),
        eliminate_duplicates=True,
    )
    algorithm.setup(problem, termination=("n_gen", 2), seed=seed, verbose=False)
    while algorithm.has_next():
        algorithm.next()
    return np.rint(algorithm.pop.get("X")).astype(int)


def _after_generation(checkpoint, generation: int, population, archive, on_generation) -> None:
    if checkpoint is not None:
        _save(checkpoint, generation, population, archive)
    if on_generation is not None:
        on_generation(generation, list(archive.entries.values()))


def _load_checkpoint(path: Path) -> dict | None:
    """The saved search state, or None (with a one-line warning) when the file is unreadable."""
    try:
        state = json.loads(path.read_text())
        if {"generation", "population", "archive"} <= set(state):
            return state
    except (ValueError, UnicodeDecodeError):
        pass
    cache_warning(f"{path}: unreadable search checkpoint; the search starts again")
    return None


def _save(path: Path, generation: int, population: np.ndarray, archive: _Archive) -> None:
    state = {
        "generation": generation,
        "population": population.tolist(),
        "archive": [asdict(c) for c in archive.entries.values()],
    }
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(state))
