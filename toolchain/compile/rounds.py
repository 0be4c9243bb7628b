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
from hanasc.search import sensitivity
from hanasc.search.ladder import precision_ladder
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
            self.scores[key] = self.score(self.outputs(key))
            self.save()
            run.stage.advance("")

    def record(self, genome, score: float) -> None:
        """A score measured elsewhere (the sensitivity stage) kept as a predictor sample."""
        self.scores[tuple(int(v) for v in genome)] = float(score)

    def save(self) -> None:
        with atomic_file(self.path) as tmp:
            tmp.write_text(json.dumps([{"genome": list(k), "score": v} for k, v in self.scores.items()]))

    def outputs(self, genome) -> np.ndarray:
        """A genome's simulated outputs on the predictor samples."""
        run = self.run
        return run.simulator.run(run.space.decode(np.asarray(genome)), self.pred_x, run.scoring_ranges)

    def score(self, outputs: np.ndarray) -> float:
        return self.run.metric.smooth(outputs, self.pred_y, self.pred_ref)

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


def measure_sensitivity(run: RunContext, samples: PredictorSamples) -> list[sensitivity.Sensitivity]:
    """Every single change (up to ``options.sensitivity_limit``, each layer's W8A8 first) simulated alone on
    the predictor samples: its metric drop and output error, kept for ``--resume``; the scores join the
    predictor's samples and the table becomes the predictor's additive features."""
    path = run.work / "sensitivity.json"
    found = None
    if run.options.resume and path.exists():
        try:
            found = sensitivity.from_json(json.loads(path.read_text()))
        except (ValueError, TypeError, KeyError, UnicodeDecodeError):
            cache_warning(f"{path}: unreadable sensitivities; they are measured again")
    if found is None:
        changes = sensitivity.single_changes(run.space, run.options.sensitivity_limit)
        run.stage.start("measuring each layer's sensitivity, one change at a time (simulator)", len(changes))
        found = sensitivity.measure(
            run.space,
            samples.outputs,
            samples.score,
            samples.pred_ref,
            changes,
            lambda: run.stage.advance(""),
        )
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps([s.to_json(digits=None) for s in found]))
    original = samples.score(samples.pred_ref)
    samples.record(run.space.identity(), original)
    for s in found:
        genome = sensitivity.single_genome(run.space, s.slot, run.space.slots[s.slot].choices.index(s.choice))
        samples.record(genome, original - s.metric_drop)
    samples.save()
    samples.predictor = AccuracyPredictor(
        run.space, seed=run.options.seed, sensitivity=sensitivity.table(run.space, found)
    )
    return found


def build_ladder(run: RunContext, samples: PredictorSamples, found: list) -> list[np.ndarray]:
    """The mixed-precision ladder's genomes (:mod:`hanasc.search.ladder`), scored by the simulator."""
    order = sensitivity.int8_order(run.space, found)
    if not order:
        return []
    points = precision_ladder(run.space, order, lambda gs: run.costs(gs)[0], run.options.ladder_points)
    genomes = [genome for genome, _ in points]
    samples.simulate(genomes, "scoring the mixed-precision ladder (simulator)")
    run.stage.log(
        f"mixed-precision ladder: {len(genomes)} points from the original ({points[0][1]:.3g} ms) "
        f"to {int((genomes[-1] != 0).sum())} layers at W8A8 ({points[-1][1]:.3g} ms), least sensitive "
        f"layers first; latencies {run.costs.source()['source']} by the search's cost model"
    )
    return genomes


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


def search_rounds(
    run: RunContext, samples: PredictorSamples, ladder: list[np.ndarray] = ()
) -> tuple[SearchResult, object]:
    """NSGA-II on (predicted accuracy, latency, memory, energy) in rounds: after each, the best predicted
    feasible Configs are simulated for real and the predictor refitted; the next round starts from the best
    really-simulated ones (and the ladder's points). Returns the last round's result (with every round's
    summary) and the predictor's last report."""
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
        population = leaders + list(ladder) + descended + population_seeds(space, run.rng, options.population)
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


def shortlist(
    run: RunContext, feasible: list[Candidate], samples: PredictorSamples, ladder: list[np.ndarray] = ()
) -> list[Candidate]:
    """The candidates held-out data and verification see: the best predicted feasible ones, plus the
    feasible Configs the simulator really scored best on the calibration split, plus every feasible point of
    the mixed-precision ladder, plus uniform W8A8."""
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
    unique += ladder_candidates(run, samples, ladder, unique)
    return unique + uniform_int8_candidate(run.space, samples.predictor, run.costs, budgets, unique)


def ladder_candidates(
    run: RunContext, samples: PredictorSamples, ladder: list[np.ndarray], taken: list[Candidate]
) -> list[Candidate]:
    """The ladder's points within the budgets (estimated) that are not candidates already."""
    if not len(ladder):
        return []
    found = []
    for genome, lat, mem, energy in zip(ladder, *run.costs(np.array(ladder)), strict=True):
        score = samples.scores[tuple(int(v) for v in genome)]
        cand = Candidate(genome.tolist(), score, float(lat), float(mem), float(energy))
        if cand.feasible(run.options.budgets) and all(cand.genome != t.genome for t in taken + found):
            found.append(cand)
    return found


def held_out_scores(run: RunContext, candidates: list[Candidate]) -> dict[tuple, float]:
    """Each candidate's metric on the held-out split (the simulator, after recovery)."""
    run.stage.start("re-evaluating the best candidates on held-out data", len(candidates))
    scores: dict[tuple, float] = {}
    for c in candidates:
        outputs = run.simulator.run(run.space.decode(c.genome), run.split.eval_x, run.ranges)
        scores[tuple(c.genome)] = run.metric(outputs, run.split.eval_y, run.ref_eval)
        run.stage.advance("")
    return scores


def ladder_section(run: RunContext, samples: PredictorSamples, ladder: list, held_out: dict) -> dict:
    """The mixed-precision ladder's points: W8A8 layers, estimated latency, simulated and held-out score."""
    lat = run.costs(np.array(ladder))[0] if len(ladder) else []
    points = []
    for genome, ms in zip(ladder, lat, strict=True):
        key = tuple(int(v) for v in genome)
        point = {"w8a8_layers": int((genome != 0).sum()), "estimated_ms": round(float(ms), 4)}
        point["simulated_score"] = round(samples.scores[key], 4)
        if key in held_out:
            point["held_out"] = round(held_out[key], 4)
        points.append(point)
    return {
        "method": "layers set to W8A8 one at a time, least sensitive first (metric drop, then output "
        "error, each measured alone); a step not estimated faster than the last kept one is folded into the "
        "next; points within the budgets are verification candidates",
        "estimated_ms": {"unit": "ms", **run.costs.source()},
        "simulated_score": "the search's smooth score, simulated on the predictor's calibration samples",
        "held_out": "the metric on the held-out split, simulated (after recovery), for points within budget",
        "points": points,
    }
