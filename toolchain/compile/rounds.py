"""The compile job's search stage: simulator-scored predictor samples (kept for ``--resume``), NSGA-II in
rounds that simulate the best predicted Configs and refit the predictor, and the shortlist of candidates
that the held-out data and verification see."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hanasc.compile.context import RunContext
from hanasc.core.atomic import atomic_file
from hanasc.core.cache_safety import cache_warning
from hanasc.search.nsga2 import Candidate, NsgaSettings, SearchResult, run_search
from hanasc.search.predictor import AccuracyPredictor
from hanasc.search.seeds import descent_seeds, population_seeds, seed_genomes, uniform_int8_candidate


class PredictorSamples:
    """Genome -> simulated score on the predictor images, saved after each one (a kill mid-write leaves the
    previous file), and the accuracy predictor fitted on them."""

    def __init__(self, run: RunContext, pred_x: np.ndarray, pred_y, pred_ref: np.ndarray) -> None:

        self.run, self.pred_x, self.pred_y, self.pred_ref = run, pred_x, pred_y, pred_ref
        self.path: Path = run.work / "predictor_samples.json"
        self.scores: dict[tuple, float] = {}
        if run.options.resume and self.path.exists():
            self.scores = _load_samples(self.path)
        self.predictor = AccuracyPredictor(run.space, seed=run.options.seed)

    def simulate(self, genomes: list, title: str) -> None:
        """Score the genomes not scored yet with the simulator."""

        run = self.run
        todo = [tuple(int(v) for v in g) for g in genomes]
        todo = [k for k in dict.fromkeys(todo) if k not in self.scores]
        run.stage.start(title, len(todo))
        for key in todo:
            out_sim = run.simulator.run(run.space.decode(np.array(key)), self.pred_x, run.scoring_ranges)
            self.scores[key] = run.metric.smooth(out_sim, self.pred_y, self.pred_ref)
            with atomic_file(self.path) as tmp:
                tmp.write_text(json.dumps([{"genome": list(k), "score": v} for k, v in self.scores.items()]))
            run.stage.advance("")

    def refit(self):
        keys = list(self.scores)
        return self.predictor.fit(np.array(keys), np.array([self.scores[k] for k in keys]))


def _load_samples(path: Path) -> dict[tuple, float]:
    """Saved predictor samples (genome -> score), or none (one-line warning) when the file is unreadable."""

    try:
        return {tuple(int(g) for g in e["genome"]): float(e["score"]) for e in json.loads(path.read_text())}
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        cache_warning(f"{path}: unreadable predictor samples; they are simulated again")
        return {}


def fit_predictor(run: RunContext, samples: PredictorSamples):
    """Simulate the seed Configs and fit the predictor on them; returns its report."""
    samples.simulate(
        seed_genomes(run.space, run.rng, run.options.predictor_samples),
        "evaluating sample Configs (simulator)",
    )
    report = samples.refit()
    run.stage.log(
        f"accuracy predictor: {report.model}, Kendall tau {report.kendall_tau:.3f} "
        f"on {report.test_samples} held-out Configs"
    )
    return report


def search_rounds(run: RunContext, samples: PredictorSamples) -> tuple[SearchResult, object]:
    """NSGA-II on (predicted accuracy, latency, memory, energy) in rounds: after each, the best predicted
    feasible Configs are simulated for real and the predictor refitted; the next round starts from the best
    really-simulated ones. Returns the last round's result (with every round's summary) and the predictor's
    last report."""
    options, budgets, stage, space = run.options, run.options.budgets, run.stage, run.space

    def objectives(gs: np.ndarray):
        lat, mem, energy = run.costs(gs)
        return samples.predictor.predict(gs), lat, mem, energy

    def on_generation(gen: int, evaluated: list[Candidate]) -> None:
        feasible = [c for c in evaluated if c.feasible(budgets)]
        best = max(feasible, key=lambda c: c.accuracy, default=None)
        stage.advance(
            f"best feasible: predicted score {best.accuracy:.3f}, {best.latency_ms:.2f} ms"
            if best
            else "no feasible candidate yet"
        )

    def first_population(leaders: list[np.ndarray]) -> list[np.ndarray]:
        # a quarter of it descended greedily into the budgets (an eighth after the first round, which
        # passes on its best): an aggressive budget starts feasible
        share = 8 if leaders else 4
        descended = descent_seeds(space, objectives, budgets, run.rng, options.population // share)
        population = leaders + descended + population_seeds(space, run.rng, options.population)
        return population[: options.population]

    per_round = max(1, options.generations // options.rounds)
    population = first_population([])
    rounds, total_evaluations, pred_report = [], 0, None
    for index in range(options.rounds):
        stage.start(f"NSGA-II search, round {index + 1}/{options.rounds}", per_round)
        settings = NsgaSettings(
            seed=options.seed + index,
            pop_size=options.population,
            generations=per_round,
            checkpoint=run.work / f"search_checkpoint_{index}.json",
            resume=options.resume,
        )
        result = run_search(
            space, objectives, budgets, settings, seeds=population, on_generation=on_generation
        )
        total_evaluations += result.evaluations
        feasible = sorted((c for c in result.evaluated if c.feasible(budgets)), key=lambda c: -c.accuracy)
        top = [c.genome for c in feasible[: options.refine_per_round]]
        samples.simulate(top, f"simulating the best predicted Configs, round {index + 1}")
        rounds.append(
            {
                "round": index + 1,
                "evaluations": result.evaluations,
                "top_predicted": [round(c.accuracy, 4) for c in feasible[: options.refine_per_round]],
                "top_simulated": [round(samples.scores[tuple(g)], 4) for g in top],
            }
        )
        pred_report = samples.refit()
        stage.log(
            f"round {index + 1}: simulated {len(top)} best predicted Configs; predictor refitted on "
            f"{len(samples.scores)} (Kendall tau {pred_report.kendall_tau:.3f})"
        )
        best_real = sorted(top, key=lambda g: -samples.scores[tuple(g)])
        population = first_population([np.array(g) for g in best_real])
    result.generations = per_round * options.rounds
    result.evaluations = total_evaluations
    result.rounds = rounds
    result.seed = options.seed
    return result, pred_report


def shortlist(run: RunContext, feasible: list[Candidate], samples: PredictorSamples) -> list[Candidate]:
    """The candidates held-out data and verification see: the best predicted feasible ones, plus the
    feasible Configs the simulator really scored best on the calibration split, plus uniform W8A8."""
    options, budgets = run.options, run.options.budgets
    unique: list[Candidate] = []
    for c in feasible:
        if all(c.genome != u.genome for u in unique):
            unique.append(c)
        if len(unique) >= options.verify_candidates:
            break
    sampled = sorted(samples.scores, key=lambda k: -samples.scores[k])
    extra = 0
    for k, lat, mem, energy in zip(sampled, *run.costs(np.array(sampled)), strict=True):
        cand = Candidate(list(k), samples.scores[k], float(lat), float(mem), float(energy))
        if (
            extra < options.verify_candidates // 2
            and cand.feasible(budgets)
            and all(cand.genome != u.genome for u in unique)
        ):
            unique.append(cand)
            extra += 1
    return unique + uniform_int8_candidate(run.space, samples.predictor, run.costs, budgets, unique)


def held_out_scores(run: RunContext, candidates: list[Candidate]) -> dict[tuple, float]:
    """Each candidate's metric on the held-out split (the simulator, after recovery)."""
    run.stage.start("re-evaluating the best candidates on held-out data", len(candidates))
    scores: dict[tuple, float] = {}
    for c in candidates:
        outputs = run.simulator.run(run.space.decode(c.genome), run.split.eval_x, run.ranges)
        scores[tuple(c.genome)] = run.metric(outputs, run.split.eval_y, run.ref_eval)
        run.stage.advance("")
    return scores
