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
import statistics
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hanasc.errors import HanascError
from hanasc.frontend import LoadedModel
from hanasc.metrics import Metric
from hanasc.recovery import ranges_for_replay, refitted_layers
from hanasc.search import Budgets, Candidate, run_search
from hanasc.selection import AccuracyFloor, Verified, select
from hanasc.space import SearchSpace, SpaceOptions, build_space
from hanasc.targets.quiet import export_library


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


def fig(value, source: str, **detail) -> dict:
    """A figure with its provenance."""
    return {"value": value, "source": source, **detail}


def measure_host(executable, inputs: list[np.ndarray], repeat: int) -> dict:
    """Median latency of ``main`` on this CPU (time_evaluator, 1 warm-up, ``repeat`` runs)."""
    import tvm
    from tvm import relax

    dev = tvm.cpu()
    vm = relax.VirtualMachine(executable, dev)
    args = [tvm.runtime.tensor(np.ascontiguousarray(x), device=dev) for x in inputs]
    vm["main"](*args)
    result = vm.time_evaluator("main", dev, number=1, repeat=repeat)(*args)
    samples = [float(s) * 1e3 for s in result.results]
    from hanasc.cost_models.profiler import Session

    return fig(
        round(statistics.median(samples), 3),
        "measured",
        where=f"host ({Session.local().device_id})",
        runs=repeat,
        statistic="median",
        spread_ms=[round(min(samples), 3), round(max(samples), 3)],
        tool="TVM VirtualMachine.time_evaluator",
    )


def measure_remote(mod, info, session, repeat: int) -> tuple[object, dict]:
    """Build ``mod`` for the target (integer weights late-bound), time it on the RPC session's device
    (uploaded, cross-linked if needed); returns the executable and its latency figure."""
    from hanasc.cost_models.measure import time_executable
    from hanasc.targets.late_binding import compile_late_bound

    executable = compile_late_bound(mod, info.tvm_target())
    timing = time_executable(executable, mod, info.name, session, repeat)
    return executable, fig(
        round(timing.median_ms, 3),
        "measured",
        where=f"{session.device_id} (TVM RPC)",
        runs=repeat,
        statistic="median",
        spread=round(timing.spread, 3),
        tool="TVM VirtualMachine.time_evaluator over RPC",
    )


def run_host(executable, x: np.ndarray) -> np.ndarray:
    from hanasc.targets import host

    return np.concatenate([host.run(executable, [s[None]])[0] for s in x])


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


def uniform_genomes(space: SearchSpace) -> list[np.ndarray]:
    """The identity, then one genome per precision choice applied to every layer."""
    genomes = [space.identity()]
    precision = [i for i, s in enumerate(space.slots) if s.kind == "precision"]
    if precision:
        for choice in range(1, len(space.slots[precision[0]].choices)):
            g = space.identity()
            g[precision] = choice
            genomes.append(g)
    return genomes


def predictor_image_count(macs: int) -> int:
    """Samples the simulator scores each predictor Config on: about 5 GMAC of work per Config, 12 to 64.

    EfficientNet-Lite0 at 224x224 (0.39 GMAC) gets 13; at 64x64 (0.03 GMAC) 64: a small model's scores are
    cheap, and 12 samples of a 10-class problem rank Configs by noise.
    """
    return int(np.clip(round(5e9 / max(macs, 1)), 12, 64))


def uniform_genome(space: SearchSpace, precision: tuple[int, int]) -> np.ndarray | None:
    """Every precision gene set to ``precision`` (None when the space does not offer it)."""
    slots = [i for i, s in enumerate(space.slots) if s.kind == "precision"]
    if not slots or precision not in space.slots[slots[0]].choices:
        return None
    genome = space.identity()
    genome[slots] = space.slots[slots[0]].choices.index(precision)
    return genome


def seed_genomes(space: SearchSpace, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """Predictor samples: identity, one uniform genome per precision, uniform int8 with one layer kept
    float (which layer int8 hurts, in the context the search starts from; up to n/4 of them), single-gene
    changes (each slot's sensitivity), then random changes (mostly sparse, some dense)."""
    genomes = uniform_genomes(space)
    int8 = uniform_genome(space, (8, 8))
    if int8 is not None:
        reverts = []
        for i, slot in enumerate(space.slots):
            if slot.kind == "precision":
                g = int8.copy()
                g[i] = 0
                reverts.append(g)
        genomes += [reverts[i] for i in sorted(rng.permutation(len(reverts))[: n // 4])]
    singles = []
    for i, slot in enumerate(space.slots):
        for choice in range(1, len(slot.choices)):
            g = space.identity()
            g[i] = choice
            singles.append(g)
    order = rng.permutation(len(singles))[: max(0, int(0.5 * n) - len(genomes))]
    genomes += [singles[i] for i in order]
    uniforms = uniform_genomes(space)
    while len(genomes) < n:
        density = rng.choice([rng.uniform(0.02, 0.15), rng.uniform(0.15, 1.0)], p=[0.6, 0.4])
        g = uniforms[rng.integers(len(uniforms))].copy()  # the identity or a uniform precision, then changes
        for i, slot in enumerate(space.slots):
            if rng.random() < density:
                g[i] = rng.integers(1, len(slot.choices))
        genomes.append(g)
    return genomes[:n]


def population_seeds(space: SearchSpace, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """NSGA-II's first population: identity, uniform precisions, then sparse random changes of those (so a
    tight budget finds uniform int8 plus a few architecture changes among the seeds)."""
    uniforms = uniform_genomes(space)
    genomes = list(uniforms)
    while len(genomes) < n:
        g = uniforms[rng.integers(len(uniforms))].copy()
        mask = rng.random(len(space.slots)) < rng.uniform(0.05, 0.4)
        g[mask] = [rng.integers(0, len(space.slots[i].choices)) for i in np.flatnonzero(mask)]
        genomes.append(g)
    return genomes[:n]


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


def _costs_figures(mod, info, scale: float, n_measured: int) -> tuple[dict, dict, dict]:
    """Memory, energy and latency-by-operator-type of a module from the cost models."""
    from hanasc.cost_models import estimate_costs
    from hanasc.relax_params import bind_weights

    report = estimate_costs(bind_weights(mod), info.name)
    mem = report.memory["total"]
    memory = fig(
        round(mem.value / 1e6, 3),
        mem.source,
        unit="MB",
        **mem.detail,
        weights_mb=round(report.memory["weights"].value / 1e6, 3),
        activations_mb=round(report.memory["activations"].value / 1e6, 3),
    )
    energy = fig(round(report.energy.value, 4), report.energy.source, unit="mJ", **report.energy.detail)
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
    from hanasc.relax_params import weights_of

    weights = weights_of(mod)
    return fig(
        int(sum(v.size for k, v in weights.items() if not k.endswith(".scale"))),
        "measured",
        how="counted from the module's weight parameters",
        weight_bytes=int(sum(v.nbytes for v in weights.values())),
    )


@dataclass
class VerifyContext:
    """What verification needs of a compile run (built once, passed as one)."""

    model: LoadedModel
    info: object  # hanasc.targets.registry.TargetInfo
    ranges: object
    split: Split
    ref_eval: np.ndarray
    metric: Metric
    probe: list
    options: CompileOptions
    costs: object  # hanasc.search_costs.SearchCosts
    stage: Stage
    simulator: object
    session: object | None = None


@dataclass
class VerifiedModel:
    """A verified model: its search candidate, its figures (latency, accuracy, module, ...) and summary."""

    candidate: Candidate
    figures: dict
    summary: Verified


def _uniform_int8_candidate(space: SearchSpace, predictor, costs, budgets, unique: list[Candidate]) -> list:
    """Uniform W8A8 as a candidate of its own when its estimate fits the budgets: the precision change
    that costs the least accuracy, measured before the search on the host, so the search's best front
    (which may hold only changes the simulator scores lower) never leaves the user without it."""
    int8 = uniform_genome(space, (8, 8))
    if int8 is None or any(list(int8) == list(u.genome) for u in unique):
        return []
    lat, mem, energy = (float(v[0]) for v in costs(int8[None]))
    candidate = Candidate(int8.tolist(), float(predictor.predict(int8[None])[0]), lat, mem, energy)
    return [candidate] if candidate.feasible(budgets) else []


def _verify_ranked(
    ctx: VerifyContext, space: SearchSpace, ranked: list[Candidate], held_out: dict, floor: AccuracyFloor
) -> tuple[list[dict], list[VerifiedModel]]:
    """Verify candidates best held-out accuracy first, until one meets the budgets and the floor.

    Candidates whose held-out score (the simulator, on the same samples the artifact is judged on) is
    already below the floor are not built; when every candidate is, the best one is still verified so the
    error can say what the budget allows.
    """
    budgets = ctx.options.budgets
    above = [c for c in ranked if floor.kept(held_out[tuple(c.genome)])]
    attempts = [
        {"genome": c.genome, "skipped": f"held-out {held_out[tuple(c.genome)]:.4f} below the floor"}
        for c in ranked
        if c not in above
    ]
    verified: list[VerifiedModel] = []
    for index, c in enumerate((above or ranked[:1])[: ctx.options.max_attempts]):
        lat_now = float(ctx.costs(np.array(c.genome)[None])[0][0])  # with everything learned so far
        if budgets.latency_ms is not None and lat_now > budgets.latency_ms:
            attempts.append(
                {"genome": c.genome, "skipped": f"re-estimated at {lat_now:.2f} ms after calibration"}
            )
            continue
        figures = _verify(ctx, space.decode(c.genome), c)
        attempts.append(figures["attempt"])
        summary = Verified(
            f"candidate {index + 1}",
            figures["latency"]["value"],
            figures["score"],
            c.memory_mb,
            c.energy_mj,
            figures["latency"]["source"],
        )
        verified.append(VerifiedModel(c, figures, summary))
        if summary.meets(budgets) and floor.kept(summary.accuracy):
            break
        if not figures["meets_budget"]:
            ctx.costs.observe(c.genome, figures["latency"]["value"])  # the estimate learns from the miss
    return attempts, verified


def _held_out_accuracy(ctx: VerifyContext, outputs: np.ndarray, engine: str) -> tuple[float, dict]:
    """The metric of ``outputs`` on the held-out split: the unrounded score and its figure."""
    score = ctx.metric(outputs, ctx.split.eval_y, ctx.ref_eval)
    return score, fig(
        round(score, 4),
        "measured",
        metric=ctx.metric.name,
        description=ctx.metric.description,
        on=f"held-out split ({len(ctx.split.eval_x)} samples)",
        engine=engine,
    )


def _original_verified(ctx: VerifyContext, space: SearchSpace, predictor, measured: dict | None):
    """The original as a verified candidate: measured latency where reachable, its held-out accuracy."""
    identity = space.identity()
    lat, mem, energy = (float(v[0]) for v in ctx.costs(identity[None]))
    latency = measured if measured is not None else fig(round(lat, 3), **ctx.costs.source())
    score, accuracy = _held_out_accuracy(ctx, ctx.ref_eval, "the original model")
    candidate = Candidate(identity.tolist(), float(predictor.predict(identity[None])[0]), lat, mem, energy)
    figures = {"latency": latency, "accuracy": accuracy, "score": score, "config": space.decode(identity)}
    summary = Verified("original", latency["value"], score, mem, energy, latency["source"])
    return VerifiedModel(candidate, figures, summary)


def _materialize_original(ctx: VerifyContext, original: VerifiedModel) -> VerifiedModel:
    """The original's figures completed with its module and, on the host, its built artifact."""
    figures = dict(original.figures)
    figures["mod"] = ctx.model.mod
    figures["executable"] = _build_host(ctx.model.mod, ctx.options, ctx.stage) if _on_host(ctx) else None
    figures["meets_budget"] = original.summary.meets(ctx.options.budgets)
    return VerifiedModel(original.candidate, figures, original.summary)


def _on_host(ctx: VerifyContext) -> bool:
    return ctx.session is None and ctx.info.runs_here


def _verify(ctx: VerifyContext, config, candidate: Candidate) -> dict:
    """Materialize, compile, measure (host, or the device over RPC) or predict, evaluate on held-out data."""
    from hanasc.recovery import materialize_recovered

    options, stage, split = ctx.options, ctx.stage, ctx.split
    stage.log(
        f"verifying candidate: estimated {candidate.latency_ms:.2f} ms, predicted score "
        f"{candidate.accuracy:.3f} ({ctx.metric.smooth_description})"
    )
    mod = materialize_recovered(ctx.model, config, ctx.ranges)
    executable = None
    if ctx.session is not None:
        _tune(mod, ctx.info.name, options, stage, rpc=options.rpc)  # candidates measured on the device
        built, latency = measure_remote(mod, ctx.info, ctx.session, options.measure_repeats)
        outputs = ctx.simulator.run(config, split.eval_x, ctx.ranges)
        engine = "the simulator (checked equal to the materialized model in tests)"
        executable = built if ctx.info.runs_here else None
    elif _on_host(ctx):
        executable = _build_host(mod, options, stage)
        latency = measure_host(executable, ctx.probe, options.measure_repeats)
        outputs = run_host(executable, split.eval_x)
        engine = "the compiled host artifact"
    else:
        est = float(ctx.costs(np.array(candidate.genome)[None])[0][0])
        latency = fig(round(est, 3), **ctx.costs.source())
        outputs = ctx.simulator.run(config, split.eval_x, ctx.ranges)
        engine = "the simulator (checked equal to the materialized model in tests)"
    score, accuracy = _held_out_accuracy(ctx, outputs, engine)
    budget = options.budgets.latency_ms
    meets = budget is None or latency["value"] <= budget
    attempt = {
        "genome": candidate.genome,
        "estimated_ms": round(candidate.latency_ms, 3),
        "measured_ms" if latency["source"] == "measured" else "predicted_ms": latency["value"],
        "meets_budget": meets,
        "accuracy": accuracy["value"],
    }
    if not meets:
        stage.log(
            f"candidate missed the budget: {latency['value']} ms ({latency['source']}); learning from it"
        )
    return {
        "mod": mod,
        "executable": executable,
        "latency": latency,
        "accuracy": accuracy,
        "score": score,  # unrounded: what the floor is checked against
        "meets_budget": meets,
        "attempt": attempt,
        "config": config,
    }


def _build_host(mod, options: CompileOptions, stage: Stage):
    from hanasc.targets import host

    _tune(mod, "host", options, stage)
    return host.build_artifact(mod)


def _check_tuning(info, options: CompileOptions) -> None:
    """--tune-minutes needs a TVM target whose kernels can be measured: the host, or the device over --rpc."""
    if options.tune_minutes <= 0:
        return
    if info.tvm_target() is None:
        raise HanascError(f"--tune-minutes: target '{info.name}' is not compiled by TVM (nothing to tune)")
    if not info.runs_here and not options.rpc:
        raise HanascError(
            f"--tune-minutes on {info.name}: MetaSchedule measures candidates on the device; "
            "give --rpc HOST:PORT"
        )


def _tune(mod, target_name: str, options: CompileOptions, stage: Stage, rpc: str | None = None) -> None:
    """MetaSchedule tuning of ``mod``'s kernels into the target's persistent database, which every later
    build for the target applies (:func:`hanasc.targets.late_binding.compile_late_bound`)."""
    if options.tune_minutes <= 0:
        return
    from hanasc.relax_params import bind_weights
    from hanasc.targets.tuning import RpcDevice, tune_and_build

    stage.start(f"tuning {target_name} kernels (MetaSchedule, up to {options.tune_minutes:g} min)", None)
    report = tune_and_build(
        bind_weights(mod, keep_packed=True),  # the kernels the artifact runs: packed weights stay inputs
        target_name,
        minutes=options.tune_minutes,
        progress=stage.advance,
        rpc=RpcDevice.parse(rpc) if rpc else None,
        build=False,
    )
    stage.log(f"tuning: {report.summary()}; database {report.database_dir}")


def _original_figures(model, info, split, ref_eval, metric, measured, costs, space) -> dict:
    if measured is not None:
        latency = measured
    else:
        latency = fig(round(float(costs(space.identity()[None])[0][0]), 3), **costs.source())
    memory, energy, breakdown = _costs_figures(model.mod, info, costs.scale, len(costs.observations))
    return {
        "latency_ms": latency,
        "memory_mb": memory,
        "energy_mj": energy,
        "accuracy": fig(
            round(metric(ref_eval, split.eval_y, ref_eval), 4),
            "measured",
            metric=metric.name,
            on=f"held-out split ({len(split.eval_x)} samples)",
            engine="onnxruntime on the original model",
        ),
        "params": _params(model.mod),
        "breakdown": breakdown,
    }


def _layers_table(model, config, space) -> list[dict]:
    rows = []
    skipped_blocks = set(config.skip)
    from hanasc.passes.depth import residual_blocks

    in_skipped = {
        layer: b.name
        for b in residual_blocks(model.mod["main"])
        if b.name in skipped_blocks
        for layer in b.layers
    }
    for layer in model.layers:
        c = config.choice(layer.name)
        rows.append(
            {
                "name": layer.name,
                "op": layer.op,
                "w_bits": c.w_bits,
                "a_bits": c.a_bits,
                "separable": c.separable,
                "width": c.width,
                "kernel": c.kernel or layer.kernel[0] if layer.kernel else None,
                "skipped_block": in_skipped.get(layer.name),
            }
        )
    return rows


def _report(
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
    wall_s,
) -> dict:
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
            "predicted_score": fig(
                round(candidate.accuracy, 4),
                "predicted",
                model=f"accuracy predictor ({pred_report.model} on Config encodings)",
                score=metric.smooth_description,
            ),
            "estimated_latency_ms": fig(round(candidate.latency_ms, 3), **costs.source()),
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
            "wall_s_total": round(wall_s, 1),
            "population": options.population,
        },
        "predictor": pred_report.to_json(),
        "latency_estimate": costs.source(),
        "verification": {
            "attempts": attempts,
            "held_out_scores": [{"genome": list(k), metric.name: v} for k, v in held_out.items()],
        },
        "warnings": accuracy_warnings(original["accuracy"]["value"], verified["accuracy"]["value"], metric),
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


def _fmt(f: dict) -> str:
    detail = ""
    if f["source"] == "measured" and "runs" in f:
        detail = f", median of {f['runs']}"
    return f"{f['value']} ({f['source']}{detail})"


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
        f"| latency (ms) | {_fmt(o['latency_ms'])} | {_fmt(r['latency_ms'])} |",
        f"| accuracy | {_fmt(o['accuracy'])} | {_fmt(r['accuracy'])} |",
        f"| memory (MB) | {_fmt(o['memory_mb'])} | {_fmt(r['memory_mb'])} |",
        f"| energy (mJ) | {_fmt(o['energy_mj'])} | {_fmt(r['energy_mj'])} |",
        f"| parameters | {o['params']['value']:,} | {r['params']['value']:,} |",
        f"| weight bytes | {o['params']['weight_bytes']:,} | {r['params']['weight_bytes']:,} |",
        "",
        "How the figures were obtained: latency `measured` = TVM time_evaluator on this host (median);",
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
        f"evaluated with the simulator on the calibration split; it predicts "
        f"{r['predicted_score']['score']}, a smooth companion of {report['metric']['name']}). The result's "
        f"predicted score was {r['predicted_score']['value']}; its estimated latency "
        f"{r['estimated_latency_ms']['value']} ms.",
        "",
        "## Per-layer choices",
        "",
        "| layer | op | weights | activations | separable | width | kernel | skipped |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in r["layers"]:
        lines.append(
            f"| {row['name']} | {row['op']} | {row['w_bits']} | {row['a_bits']} | "
            f"{'yes' if row['separable'] else ''} | {row['width']:g} | {row['kernel'] or ''} | "
            f"{row['skipped_block'] or ''} |"
        )
    if "selection" in report:
        sel = report["selection"]
        lines += [
            "",
            f"Selection: **{sel['chosen']}** ({sel['reason']}); accuracy floor {sel['accuracy_floor']:g} "
            f"(--max-loss {sel['max_loss_points']:g} points); {sel['acceptable']} of {sel['considered']} "
            "verified models (the original included) were acceptable.",
        ]
    lines += ["", "## Verification attempts", ""]
    for a in report["verification"]["attempts"]:
        lines.append(f"- {json.dumps({k: v for k, v in a.items() if k != 'genome'})}")
    return "\n".join(lines) + "\n"


def _write_outputs(
    tmp: Path,
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
) -> None:
    from hanasc.apply_pipeline import build_target_bundle
    from hanasc.plots import breakdown_plot, pareto_plot

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
    refitted = report["recovery"]["refitted_layers"]  # of this Config, computed once for the report
    ranges_for_replay(ranges, refitted).save(tmp / "activation_ranges.json")  # + .npz of refits
    (tmp / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (tmp / "report.md").write_text(report_markdown(report))
    lat_source = report["latency_estimate"]["source"]
    pareto_plot(
        tmp / "pareto.png",
        evaluated=[(c.latency_ms, c.accuracy) for c in result.evaluated],
        front=[(c.latency_ms, c.accuracy) for c in result.front],
        original=(original["latency_ms"]["value"], original["predicted_score"]["value"]),
        chosen=(verified["latency"]["value"], report["result"]["predicted_score"]["value"]),
        budget_ms=budgets.latency_ms,
        accuracy_label=f"y: predicted {metric.smooth_description} (every point); "
        f"legend: {metric.name} on held-out data",
        original_label=f"original ({metric.name} {original['accuracy']['value']:g} held-out)",
        chosen_label=f"result ({metric.name} {verified['accuracy']['value']:g} held-out, verified)",
        latency_label=f"latency ms (search: {lat_source}; "
        f"original/result: {original['latency_ms']['source']})",
    )
    breakdown_plot(
        tmp / "breakdown.png",
        original["breakdown"]["ms_by_op_kind"],
        report["result"]["breakdown"]["ms_by_op_kind"],
        f"latency by operator type on {info.name} ({report['result']['breakdown']['detail']})",
    )
