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
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hanasc.compile_report import _original_figures, _report, _write_outputs, fig
from hanasc.compile_seeds import population_seeds, predictor_image_count, seed_genomes, uniform_genome
from hanasc.compile_verify import (
    VerifyContext,
    _check_tuning,
    _materialize_original,
    _original_verified,
    _uniform_int8_candidate,
    _verify_ranked,
    measure_host,
    measure_remote,
)
from hanasc.errors import HanascError
from hanasc.frontend import LoadedModel
from hanasc.metrics import Metric
from hanasc.recovery import refitted_layers
from hanasc.search import Budgets, Candidate, run_search
from hanasc.selection import AccuracyFloor, select
from hanasc.space import SearchSpace, SpaceOptions, build_space


class InfeasibleBudgetError(HanascError):
    """Even the fastest configuration misses the budget."""


@dataclass
class CompileOptions:
    target: str = "host"
    budgets: Budgets = field(default_factory=Budgets)
    space: str = "joint"
    seed: int = 0
    metric: str | None = None
    predictor_samples: int = 240
    predictor_images: int | None = None  # None: by model cost (predictor_image_count)
    population: int = 40
    generations: int = 25
    verify_candidates: int = 8
    rounds: int = 3
    refine_per_round: int = 12
    max_attempts: int = 4
    measure_repeats: int = 7
    resume: bool = False
    tune_minutes: float = 0.0
    rpc: str | None = None  # HOST:PORT of a TVM RPC server on the target device: latencies measured there
    max_loss: float = 1.0  # accuracy floor: points of the metric below the original's held-out score
    device: str | None = None  # whose latency calibration applies (hanasc calibrate --device)
    budget_confidence: float = 0.9  # a latency budget is met when the calibrated upper bound is under it


@dataclass
class Split:
    """Calibration part (ranges, predictor samples) and held-out part (reported accuracy)."""

    calib_x: np.ndarray
    calib_y: np.ndarray | None
    eval_x: np.ndarray
    eval_y: np.ndarray | None
    description: dict


def split_data(
    x: np.ndarray, y: np.ndarray | None, groups: np.ndarray | None, seed: int, source: str
) -> Split:
    """Half the source images for calibration, half held out (views of one image stay together)."""
    groups = np.arange(len(x)) if groups is None else groups
    unique = np.unique(groups)
    if len(unique) < 2:
        raise HanascError(f"{source}: need at least 2 samples to split into calibration and held-out parts")
    rng = np.random.default_rng(seed)
    held = set(rng.permutation(unique)[: len(unique) // 2].tolist())
    mask = np.array([g in held for g in groups])
    return Split(
        calib_x=x[~mask],
        calib_y=None if y is None else y[~mask],
        eval_x=x[mask],
        eval_y=None if y is None else y[mask],
        description={
            "source": source,
            "samples": len(x),
            "source_images": len(unique),
            "calibration": {
                "samples": int((~mask).sum()),
                "used_for": "activation ranges, predictor samples",
            },
            "held_out": {"samples": int(mask.sum()), "used_for": "reported accuracy of original and result"},
        },
    )


@dataclass
class Stage:
    """Progress reporting hooks (the CLI shows rich bars)."""

    start: Callable[[str, int | None], None] = lambda name, total: None
    advance: Callable[[str], None] = lambda text="": None
    log: Callable[[str], None] = lambda text: None


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


@dataclass
class _SavedMeasurements:
    """The measurements made before the search (per uniform dtype), kept for ``--resume``."""

    path: Path
    resume: bool
    entries: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (self.resume and self.path.is_file()):
            return
        try:
            self.entries = dict(json.loads(self.path.read_text()))
        except (ValueError, TypeError, UnicodeDecodeError):
            from hanasc.cache_safety import cache_warning

            cache_warning(f"{self.path}: unreadable measurements; they are taken again")

    def put(self, dtype: str | None, latency: dict, shipped=None, with_other: bool = False) -> None:
        if dtype is None:
            return
        self.entries[dtype] = {
            "latency": latency,
            "layer_ms": shipped.layer_ms if shipped is not None else None,
            "other_ms": shipped.other_ms if shipped is not None and with_other else None,
        }
        from hanasc.atomic import atomic_file

        with atomic_file(self.path) as tmp:
            tmp.write_text(json.dumps(self.entries))


def _load_samples(path: Path) -> dict[tuple, float]:
    """Saved predictor samples (genome -> score), or none (one-line warning) when the file is unreadable."""
    from hanasc.cache_safety import cache_warning

    try:
        return {tuple(int(g) for g in e["genome"]): float(e["score"]) for e in json.loads(path.read_text())}
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        cache_warning(f"{path}: unreadable predictor samples; they are simulated again")
        return {}


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
        ],
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class CompileResult:
    report: dict
    out: Path


def compile_model(
    model: LoadedModel,
    split: Split,
    options: CompileOptions,
    out: Path,
    metric: Metric,
    stage: Stage | None = None,
) -> CompileResult:
    """The main job; raises InfeasibleBudgetError (exit 2) when no configuration can meet the budgets.

    The run's work folder (predictor samples, search checkpoints: what ``--resume`` reads) is locked for
    the run, so two identical compiles at once take turns instead of overwriting each other's state.
    """
    from hanasc.cache_safety import file_lock
    from hanasc.paths import cache_dir

    work = cache_dir() / "runs" / run_key(model, options, split.description["source"])
    with file_lock(work / ".lock", "this run's work folder (the same model, data and options)"):
        return _compile_in(work, model, split, options, out, metric, stage)


def _compile_in(
    work: Path,
    model: LoadedModel,
    split: Split,
    options: CompileOptions,
    out: Path,
    metric: Metric,
    stage: Stage | None = None,
) -> CompileResult:
    from hanasc.atomic import atomic_dir, atomic_file
    from hanasc.calibration import calibrate
    from hanasc.predictor import AccuracyPredictor
    from hanasc.search_costs import SearchCosts
    from hanasc.simulator import Simulator
    from hanasc.targets.registry import get_target

    stage = stage or Stage()
    started = time.perf_counter()
    info = get_target(options.target)
    _check_tuning(info, options)
    budgets = options.budgets
    rng = np.random.default_rng(options.seed)
    work.mkdir(parents=True, exist_ok=True)

    # 1. calibration, simulator, references ----------------------------------------------------------------
    stage.log("calibrating activation ranges on the calibration split")
    ranges = calibrate(model, split.calib_x, method="percentile", percentile=99.99)
    if info.tvm_target() is None:  # OpenVINO quantizes this target's bundle: hanasc's bias correction
        ranges.channel_means = {}  # would make the simulator judge a model that does not ship
        ranges.covariances = {}
    simulator = Simulator(model, batch=8)
    from hanasc.passes.config import Config

    ref_calib = simulator.run(Config(), split.calib_x)
    ref_eval = simulator.run(Config(), split.eval_x)
    n_images = options.predictor_images or predictor_image_count(model.totals.macs)
    pick = rng.permutation(len(split.calib_x))[:n_images]
    stage.log(f"accuracy predictor samples are scored on {len(pick)} calibration samples")
    pred_x, pred_ref = split.calib_x[pick], ref_calib[pick]
    pred_y = None if split.calib_y is None else split.calib_y[pick]

    # 2. space and costs -----------------------------------------------------------------------------------
    space = build_space(model, _space_options(info, options.space))
    stage.log(
        f"search space: {len(space)} genes, 10^{space.log10_size():.1f} configurations ({options.space})"
    )
    costs = SearchCosts(
        model, space, info.name, device=options.device, budget_confidence=options.budget_confidence
    )

    session = None
    if options.rpc:
        from hanasc.cost_models.profiler import Session

        stage.log(f"connecting to the TVM RPC server at {options.rpc}")
        session = Session.from_address(rpc_addr=options.rpc)
    where = f"{info.name} over RPC at {options.rpc}" if session is not None else "the host"
    original_measure = None
    probe = [model.example_inputs(seed=1)[s.name] for s in model.inputs]

    layer_names = [layer.name for layer in model.layers]

    saved = _SavedMeasurements(work / "measurements.json", options.resume)

    def measure(mod, dtype: str | None = None) -> dict:
        """Latency of a materialized module where the target is reachable (the host or the RPC device);
        on the host, a uniform ``dtype`` build also gives the search its per-layer times. Kept in the
        work folder: a resumed run reuses them, so its search sees what the interrupted one saw."""
        if dtype is not None and dtype in saved.entries:
            entry = saved.entries[dtype]
            if entry.get("layer_ms"):
                costs.use_shipped_times(dtype, entry["layer_ms"], entry.get("other_ms"))
            stage.log(f"the {dtype} measurements of the interrupted run are reused (--resume)")
            return entry["latency"]
        if session is not None:
            latency = measure_remote(mod, info, session, options.measure_repeats)[1]
            saved.put(dtype, latency)
            return latency
        from hanasc.layer_timing import time_layers
        from hanasc.targets import host

        executable = host.build_artifact(mod)  # untuned
        shipped = None
        if dtype is not None:
            shipped = time_layers(executable, probe, layer_names)
            if shipped is not None:
                other = shipped.other_ms if dtype == "float32" else None
                costs.use_shipped_times(dtype, shipped.layer_ms, other)
                stage.log(f"per-layer times of the shipped {dtype} artifact measured for the estimate")
        latency = measure_host(executable, probe, options.measure_repeats)
        saved.put(dtype, latency, shipped, dtype == "float32")
        return latency

    measurable = info.runs_here or session is not None
    from hanasc.targets.pipelines import collect_build_reports

    with collect_build_reports() as builds:  # what the build fell back on (layout, naive kernels)
        if measurable:
            stage.log(f"compiling and measuring the original model on {where}")
            with _fails_as_one_line(model, info.name):
                original_measure = measure(model.mod, "float32")
        elif not measurable and info.tvm_target() is not None:  # fail in seconds, not after the search
            from hanasc.targets.late_binding import compile_late_bound

            stage.log(f"compiling the original model for {info.name} (checks it builds before the search)")
            with _fails_as_one_line(model, info.name):
                compile_late_bound(model.mod, info.tvm_target())
    if builds:
        stage.log(builds[0].line())
    if original_measure is not None:
        costs.observe(space.identity(), original_measure["value"])
    int8 = uniform_genome(space, (8, 8))
    if measurable and int8 is not None:  # a second measurement: int8 kernels scale on their own
        from hanasc.recovery import materialize_recovered

        stage.log(f"compiling and measuring uniform int8 on {where} (calibrates the int8 kernel estimate)")
        int8_mod = materialize_recovered(model, space.decode(int8), ranges)
        costs.observe(int8, measure(int8_mod, "int8")["value"])

    if budgets.latency_fraction is not None:  # --budget 0.5x: a share of the original's latency
        base = original_measure or fig(round(float(costs(space.identity()[None])[0][0]), 4), **costs.source())
        budgets.latency_ms = round(budgets.latency_fraction * base["value"], 4)
        stage.log(
            f"budget {budgets.latency_fraction:g}x of the original's {base['value']} ms ({base['source']}): "
            f"{budgets.latency_ms:g} ms"
        )
    if budgets.memory_fraction is not None:  # --memory 0.5x: a share of the original's predicted memory
        original_mb = float(costs(space.identity()[None])[1][0])
        budgets.memory_mb = round(budgets.memory_fraction * original_mb, 4)
        stage.log(
            f"memory budget {budgets.memory_fraction:g}x of the original's {original_mb:.3f} MB "
            f"(predicted: weights + peak activations): {budgets.memory_mb:g} MB"
        )
    fastest = _fastest_genome(space)
    fastest_ms = float(costs(fastest[None])[0][0])
    if budgets.latency_ms is not None and fastest_ms > budgets.latency_ms:
        raise InfeasibleBudgetError(
            f"--budget {budgets.latency_ms:g}ms is infeasible on {info.name}: the fastest configuration "
            f"reachable is estimated at {fastest_ms:.2f} ms ({costs.source()['source']})"
        )

    # 3. accuracy predictor --------------------------------------------------------------------------------
    samples_path = work / "predictor_samples.json"
    scores: dict[tuple, float] = {}
    if options.resume and samples_path.exists():
        scores = _load_samples(samples_path)

    def simulate(gs: list, title: str) -> None:
        """Score genomes with the simulator on the predictor images (kept on disk for --resume)."""
        todo = [tuple(int(v) for v in g) for g in gs]
        todo = [k for k in dict.fromkeys(todo) if k not in scores]
        stage.start(title, len(todo))
        for key in todo:
            out_sim = simulator.run(space.decode(np.array(key)), pred_x, ranges)
            scores[key] = metric.smooth(out_sim, pred_y, pred_ref)
            with atomic_file(samples_path) as tmp:  # a kill mid-write leaves the previous file
                tmp.write_text(json.dumps([{"genome": list(k), "score": v} for k, v in scores.items()]))
            stage.advance("")

    simulate(seed_genomes(space, rng, options.predictor_samples), "evaluating sample Configs (simulator)")
    predictor = AccuracyPredictor(space, seed=options.seed)

    def refit():
        keys = list(scores)
        return predictor.fit(np.array(keys), np.array([scores[k] for k in keys]))

    pred_report = refit()
    stage.log(
        f"accuracy predictor: {pred_report.model}, Kendall tau {pred_report.kendall_tau:.3f} "
        f"on {pred_report.test_samples} held-out Configs"
    )

    # 4. search, in rounds: the best predicted Configs are simulated for real and the predictor refitted -----
    def objectives(gs: np.ndarray):
        lat, mem, energy = costs(gs)
        return predictor.predict(gs), lat, mem, energy

    def on_generation(gen: int, evaluated: list[Candidate]) -> None:
        feasible = [c for c in evaluated if c.feasible(budgets)]
        best = max(feasible, key=lambda c: c.accuracy, default=None)
        stage.advance(
            f"best feasible: predicted score {best.accuracy:.3f}, {best.latency_ms:.2f} ms"
            if best
            else "no feasible candidate yet"
        )

    per_round = max(1, options.generations // options.rounds)
    population = population_seeds(space, rng, options.population)
    rounds, total_evaluations = [], 0
    for index in range(options.rounds):
        stage.start(f"NSGA-II search, round {index + 1}/{options.rounds}", per_round)
        result = run_search(
            space,
            objectives,
            budgets,
            seed=options.seed + index,
            pop_size=options.population,
            generations=per_round,
            seeds=population,
            checkpoint=work / f"search_checkpoint_{index}.json",
            resume=options.resume,
            on_generation=on_generation,
        )
        total_evaluations += result.evaluations
        feasible = sorted((c for c in result.evaluated if c.feasible(budgets)), key=lambda c: -c.accuracy)
        top = [c.genome for c in feasible[: options.refine_per_round]]
        simulate(top, f"simulating the best predicted Configs, round {index + 1}")
        rounds.append(
            {
                "round": index + 1,
                "evaluations": result.evaluations,
                "top_predicted": [round(c.accuracy, 4) for c in feasible[: options.refine_per_round]],
                "top_simulated": [round(scores[tuple(g)], 4) for g in top],
            }
        )
        pred_report = refit()
        stage.log(
            f"round {index + 1}: simulated {len(top)} best predicted Configs; predictor refitted on "
            f"{len(scores)} (Kendall tau {pred_report.kendall_tau:.3f})"
        )
        # next round starts from the best really-simulated feasible Configs plus this round's population
        best_real = sorted(top, key=lambda g: -scores[tuple(g)])
        population = [np.array(g) for g in best_real] + population_seeds(space, rng, options.population)
        population = population[: options.population]
    result.generations = per_round * options.rounds
    result.evaluations = total_evaluations
    result.rounds = rounds
    result.seed = options.seed
    feasible = sorted((c for c in result.evaluated if c.feasible(budgets)), key=lambda c: -c.accuracy)
    if not feasible:
        best_ms = min(c.latency_ms for c in result.evaluated)
        raise InfeasibleBudgetError(
            f"no configuration found within the budgets on {info.name}; fastest reachable latency "
            f"{min(best_ms, fastest_ms):.2f} ms (estimated)"
        )

    # 5. re-evaluate the best candidates on held-out data, then verify ------------------------------------
    unique: list[Candidate] = []
    for c in feasible:
        if all(c.genome != u.genome for u in unique):
            unique.append(c)
        if len(unique) >= options.verify_candidates:
            break
    # plus the feasible Configs the simulator really scored best on the calibration split
    sampled = sorted(scores, key=lambda k: -scores[k])
    sample_costs = costs(np.array(sampled))
    extra = 0
    for k, lat, mem, energy in zip(sampled, *sample_costs, strict=True):
        cand = Candidate(list(k), scores[k], float(lat), float(mem), float(energy))
        if (
            extra < options.verify_candidates // 2
            and cand.feasible(budgets)
            and all(cand.genome != u.genome for u in unique)
        ):
            unique.append(cand)
            extra += 1
    unique += _uniform_int8_candidate(space, predictor, costs, budgets, unique)
    stage.start("re-evaluating the best candidates on held-out data", len(unique))
    held_out: dict[tuple, float] = {}
    for c in unique:
        held_out[tuple(c.genome)] = metric(
            simulator.run(space.decode(c.genome), split.eval_x, ranges), split.eval_y, ref_eval
        )
        stage.advance("")
    ctx = VerifyContext(
        model, info, ranges, split, ref_eval, metric, probe, options, costs, stage, simulator, session
    )
    original_verified = _original_verified(ctx, space, predictor, original_measure)
    floor = AccuracyFloor(original_verified.summary.accuracy, options.max_loss, metric.point, metric.name)
    stage.log(f"accuracy floor: {floor.describe()}")
    ranked = sorted(unique, key=lambda c: (-held_out[tuple(c.genome)], c.latency_ms))
    attempts, verified_list = _verify_ranked(ctx, space, ranked, held_out, floor)
    selection = select(
        original_verified.summary,
        [v.summary for v in verified_list],
        budgets,
        floor,
    )
    chosen = next(v for v in [original_verified, *verified_list] if v.summary.label == selection.chosen.label)
    if chosen is original_verified:
        stage.log(f"returning the original model: {selection.reason}")
        chosen = _materialize_original(ctx, original_verified)
    candidate, verified = chosen.candidate, chosen.figures

    # 6. report and artifacts ------------------------------------------------------------------------------
    original = _original_figures(model, info, split, ref_eval, metric, original_measure, costs, space)
    report = _report(
        model,
        info,
        options,
        split,
        metric,
        original,
        verified,
        candidate,
        space,
        result,
        pred_report,
        costs,
        attempts,
        held_out,
        time.perf_counter() - started,
    )
    report["selection"] = selection.to_json(floor)
    report["original"]["predicted_score"] = fig(
        round(original_verified.candidate.accuracy, 4),
        "predicted",
        model="accuracy predictor (on Config encodings)",
        score=metric.smooth_description,
    )
    report["recovery"] = {
        "method": "least-squares refit of structurally changed layers (hanasc.reconstruction, "
        "cross-validated on calibration-split input covariances), then bias correction of every changed "
        "layer (hanasc.recovery, on calibration-split input means)"
        if ranges.channel_means
        else "none (the target's own toolchain quantizes the bundle)",
        "refitted_layers": refitted_layers(model, verified["config"], ranges),
        "scores": "every simulated and verified score in this report is after recovery",
    }
    if chosen.summary.is_original:
        report["warnings"].append(
            f"the original model is returned unchanged: {selection.reason} "
            f"({floor.describe()}); a looser budget or a larger --max-loss allows changes"
        )
    with atomic_dir(Path(out)) as tmp:
        _write_outputs(
            tmp,
            report,
            verified,
            model,
            info,
            space,
            result,
            candidate,
            original,
            budgets,
            ranges,
            split,
            metric,
        )
    return CompileResult(report, Path(out))


@contextmanager
def _fails_as_one_line(model: LoadedModel, target: str):
    """A TVM failure while building the original model becomes one line naming the model and target."""
    try:
        yield
    except HanascError:
        raise
    except Exception as exc:  # TVM raises many types (TVMError, InternalError, ValueError, ...)
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if "Check failed" in line or "Error" in line), None)
        reason = (reason or (lines[0] if lines else type(exc).__name__))[:300]
        raise HanascError(f"{model.path}: cannot be compiled for {target}: {reason}") from None


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
