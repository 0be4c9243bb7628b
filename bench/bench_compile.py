"""`hanasc compile` on two real workloads, at 1/2 and 1/3 of the original's measured latency.

    TVM_NUM_THREADS=1 python bench/bench_compile.py --workloads imagenet fashion   # ~1-2 h on 2 cores
    TVM_NUM_THREADS=1 python bench/bench_compile.py --workloads fashion --quick     # smaller searches

Workloads:

- ``imagenet``: EfficientNet-Lite0 (ImageNet weights) on foolbox's 20 labelled ImageNet images (5 views
  each, split by image into calibration and held-out halves). Search metric: top-1 agreement with fp32;
  also top-1 against the labels on the held-out views.
- ``fashion``: the transfer-learning model of ``bench/fashion_transfer.py`` (EfficientNet-Lite0 backbone,
  head trained on Fashion-MNIST's training split, 64x64 inputs). Searched with 1,000 validation images
  (top-1); the chosen Config is then scored on the 10,000 test images.

Rows per budget: ``joint``, ``arch`` and ``quant`` searches (``hanasc compile``'s pipeline: predictor,
NSGA-II, verification by building and measuring on this host), uniform int8 (every layer W8A8, no
search), the original (TVM default pipeline) and onnxruntime on the original ONNX, all measured in this
run (median of repeats, TVM and onnxruntime with the same thread count). Each search gets its budget as a
fraction of the original (``--budget 0.33x``), resolved against the original the compile measures itself
and times its candidates beside; its row's latency is that ratio times this bench's measurement of the
original (``--budget-from bench`` passes the fraction of the bench's measurement in ms instead: a drift
between the two measurements then moves the budget the search works to). Accuracy of compiled rows comes
from the compiled host artifact (held-out split; the compile report) and from the simulator (test split:
checked equal to the materialized model in tests). Memory is the cost model's (weights at the chosen
bit-widths + peak activations, predicted).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

SPACES = ("joint", "arch", "quant")
FRACTIONS = (1 / 2, 1 / 3, 1 / 4)


@dataclass
class Workload:
    name: str
    model_path: Path
    x: np.ndarray
    y: np.ndarray | None
    groups: np.ndarray | None
    source: str
    metric: str
    test_x: np.ndarray | None = None  # final scoring split (fashion: 10k test images)
    test_y: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    train: Path | None = None  # fine-tuning data (compile's --train-data); None: the calibration split


def imagenet_workload() -> Workload:
    import hanasc
    from hanasc.cli.compile_command import preprocess_for
    from hanasc.frontend.images import load_foolbox_imagenet
    from hanasc.frontend.model_zoo import fetch

    path = fetch("efficientnet-lite0")
    model = hanasc.load_model(path, import_tvm=False)
    ds, groups = load_foolbox_imagenet(preprocess_for(model, None, None, None, None, "RGB", 5))
    return Workload("imagenet", path, ds.x.astype(np.float32), ds.y, groups, ds.source, "agreement")


def fashion_workload(folder: Path, train: int, finetune_train: int) -> Workload:
    import fashion_transfer

    if not (folder / "fashion_effnet.onnx").is_file():
        print(f"training the Fashion-MNIST head into {folder} ...", flush=True)
        print(json.dumps(fashion_transfer.build(folder, train=train), indent=2), flush=True)
    tuning = fashion_transfer.training_set(folder, finetune_train) if finetune_train else None
    val, test = np.load(folder / "fashion_val.npz"), np.load(folder / "fashion_test.npz")
    head = json.loads((folder / "fashion_head.json").read_text())
    return Workload(
        "fashion",
        folder / "fashion_effnet.onnx",
        val["x"],
        val["y"],
        None,
        f"Fashion-MNIST validation images ({folder / 'fashion_val.npz'})",
        "top1",
        test["x"],
        test["y"],
        [f"head: {head['head']} on {head['train_images']} training images, {head['resolution']}x"
         f"{head['resolution']} inputs; torch test top-1 {head['test_top1_torch']}"]
        + ([f"fine-tuning on {finetune_train} training images unseen by the head"] if tuning else []),
        tuning,
    )  # fmt: skip


def top1(logits: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits.reshape(len(logits), -1), axis=1) == y))


@dataclass
class Row:
    label: str
    latency_ms: float | None
    latency_source: str
    accuracy: dict  # metric name -> value
    memory_mb: float | None
    search_s: float | None
    within_budget: bool | None
    note: str = ""


def _ort_rows(w: Workload, split, threads: int, work: Path, score) -> list[Row]:
    """onnxruntime fp32 and int8 (``quantize_static`` on calibration samples) on the original ONNX."""
    from bench_precision import interleaved, ort_engines

    calib = split.calib_x[: min(len(split.calib_x), 50)]
    rows = []
    engines = ort_engines(w.model_path, split.eval_x, calib, threads, work)
    tests = ort_engines(w.model_path, w.test_x, calib, threads, work) if w.test_x is not None else engines
    times = interleaved(engines, 50)  # fp32 and int8 alternately, in one loop
    for engine, on_test in zip(engines, tests, strict=True):
        ms = statistics.median(times[engine.name])
        test = on_test.outputs if w.test_x is not None else None
        rows.append(Row(f"{engine.name} ({threads} thread)", round(ms, 3), "measured",
                        score(engine.outputs, test), None, None, None))  # fmt: skip
    return rows


def _compiled_row(label: str, result, model, w: Workload, split, original_ms: float, score) -> Row:
    """A row from a compile result: its verified figures, test top-1 from the simulator with the run's own
    activation ranges and (when fine-tuned) its tuned weights. The latency is the compile's ratio to the
    original timed beside it, times ``original_ms`` (the bench's own measurement, which the other rows
    share); whether it is within budget is the compile's own judgement against the budget it resolved."""
    from hanasc.frontend.calibration import ActivationRanges
    from hanasc.passes.config import Config
    from hanasc.recovery.finetune import TUNED_WEIGHTS_FILE, load_tuned
    from hanasc.search.simulator import Simulator

    r = result.report["result"]
    config = Config.from_json(r["config"])
    ranges = ActivationRanges.load(result.out / "activation_ranges.json")
    tuned_path = result.out / TUNED_WEIGHTS_FILE
    values = load_tuned(tuned_path) if tuned_path.is_file() else None
    simulator = Simulator(model, batch=32)
    feeds = simulator.feeds(config, ranges, values=values)
    eval_out = simulator.run(config, split.eval_x, ranges, feeds=feeds)
    test_out = simulator.run(config, w.test_x, ranges, feeds=feeds) if w.test_x is not None else None
    acc = score(eval_out, test_out)
    acc[next(iter(acc))] = r["accuracy"]["value"]  # the compiled artifact's held-out score (the report's)
    lat = r["latency_ms"]
    budget = result.report["budget"]["latency_ms"]
    ratio = lat.get("ratio_to_original")
    note = _summary(config, len(model.layers)) + (" (fine-tuned)" if values is not None else "")
    note += f"; {lat['value']} ms against the compile's budget {budget} ms"
    if ratio is not None:
        note += f" ({ratio:.3f}x the original timed beside it)"
    ratios = [
        a["estimate_over_measured"]
        for a in result.report["verification"]["attempts"]
        if "estimate_over_measured" in a
    ]
    if ratios:  # how far the estimate the search trusted was from each verified artifact
        note += f"; estimate/measured {', '.join(f'{x:.2f}' for x in ratios)}"
    latency = round(ratio * original_ms, 3) if ratio is not None else lat["value"]
    return Row(label, latency, lat["source"], acc, r["memory_mb"]["value"],
               result.report["search"]["wall_s_total"], lat["value"] <= budget, note)  # fmt: skip


def _uniform_int8_row(model, w: Workload, split, repeat: int, score) -> Row:
    """Every layer W8A8 with the compile job's calibration and recovery, built and measured here."""
    from hanasc.compile.pipeline import _calibrate
    from hanasc.compile.report import _costs_figures
    from hanasc.compile.verify import run_host
    from hanasc.cost_models.timing import measure_host
    from hanasc.passes.config import Config, LayerChoice
    from hanasc.recovery.bias_correction import materialize_recovered
    from hanasc.search.simulator import Simulator
    from hanasc.targets import host
    from hanasc.targets.registry import get_target

    info = get_target("host")
    ranges = _calibrate(model, split.calib_x, info)
    int8 = Config({layer.name: LayerChoice(w_bits=8, a_bits=8) for layer in model.layers})
    mod = materialize_recovered(model, int8, ranges)
    exe = host.build_artifact(mod)
    ms = measure_host(exe, [model.example_inputs()["input"]], repeat)["value"]
    test = Simulator(model, batch=32).run(int8, w.test_x, ranges) if w.test_x is not None else None
    acc = score(run_host(exe, split.eval_x), test)
    memory = _costs_figures(mod, info, 1.0, 0)[0]["value"]
    return Row("uniform int8 (no search)", ms, "measured", acc, memory, None, None)


def run_workload(w: Workload, args) -> dict:
    import hanasc
    from hanasc.compile.context import with_training
    from hanasc.compile.pipeline import CompileOptions, compile_model, split_data
    from hanasc.compile.report import _costs_figures
    from hanasc.compile.verify import run_host
    from hanasc.core.errors import HanascError
    from hanasc.core.metrics import choose_metric
    from hanasc.cost_models.timing import measure_host
    from hanasc.passes.config import Config
    from hanasc.search.nsga2 import Budgets
    from hanasc.search.simulator import Simulator
    from hanasc.targets import host
    from hanasc.targets.registry import get_target

    model = hanasc.load_model(w.model_path)
    info = get_target("host")
    metric = choose_metric(w.metric, w.y is not None)
    split = split_data(w.x, w.y, w.groups, args.seed, w.source)
    if w.train is not None:
        with np.load(w.train) as data:
            split = with_training(split, data["x"], data["y"], str(w.train))
    probe = [model.example_inputs()["input"]]
    simulator = Simulator(model, batch=32)
    ref_eval = simulator.run(Config(), split.eval_x)
    threads = int(os.environ.get("TVM_NUM_THREADS", os.cpu_count() or 1))

    def score(outputs_eval: np.ndarray, outputs_test: np.ndarray | None) -> dict:
        acc = {metric.name: round(metric(outputs_eval, split.eval_y, ref_eval), 4)}
        if split.eval_y is not None and metric.name != "top1":
            acc["top1"] = round(top1(outputs_eval, split.eval_y), 4)
        if outputs_test is not None:
            acc["test_top1"] = round(top1(outputs_test, w.test_y), 4)
        return acc

    print(f"\n=== {w.name}: {model.path} ===", flush=True)
    original_exe = host.build_artifact(model.mod)
    original = measure_host(original_exe, probe, args.repeat)
    test_ref = simulator.run(Config(), w.test_x) if w.test_x is not None else None
    original_acc = score(run_host(original_exe, split.eval_x), test_ref)
    memory = _costs_figures(model.mod, info, 1.0, 0)[0]["value"]
    with tempfile.TemporaryDirectory() as tmp:
        base = [
            Row("original (hanasc fp32)", original["value"], "measured", original_acc, memory, None, None),
            *_ort_rows(w, split, threads, Path(tmp), score),
        ]
    print(f"original {original['value']} ms; {[r.__dict__ for r in base[1:]]}", flush=True)
    base.append(_uniform_int8_row(model, w, split, args.repeat, score))

    runs = [(space, 0.0) for space in args.spaces]
    if args.finetune_minutes > 0:
        runs += [(space, args.finetune_minutes) for space in args.finetune_spaces]
    tables = {}
    for fraction in args.fractions:
        budget = round(original["value"] * fraction, 3)
        rows = []
        for space, minutes in runs:
            label = space + (f" + fine-tuning ({minutes:g} min)" if minutes else " + reconstruction")
            options = CompileOptions(
                target="host",
                budgets=(
                    Budgets(latency_fraction=fraction)
                    if args.budget_from == "compile"
                    else Budgets(latency_ms=budget)
                ),
                space=space,
                seed=args.seed,
                metric=metric.name,
                predictor_samples=args.samples,
                population=args.population,
                generations=args.generations,
                rounds=args.rounds,
                finetune_minutes=minutes,
                max_loss=args.max_loss,
            )
            t0 = time.perf_counter()
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    result = compile_model(model, split, options, Path(tmp) / "out", metric)
                    rows.append(_compiled_row(label, result, model, w, split, original["value"], score))
            except HanascError as exc:  # infeasible, or no verified model met the budget and the floor
                rows.append(
                    Row(label, None, "-", {}, None, round(time.perf_counter() - t0, 1), False, str(exc))
                )
            print(f"{label} @ {budget} ms: {rows[-1]}", flush=True)
        tables[f"{fraction:.3f}"] = {
            "budget_ms": budget,
            "budget_from": args.budget_from,
            "rows": [r.__dict__ for r in rows + base],
        }
    return {"workload": w.name, "model": str(model.path), "notes": w.notes, "tables": tables}


def _summary(config, layers: int) -> str:
    """A short description of a Config: bit-width counts and architecture changes."""
    bits: dict[str, int] = {}
    arch = {"separable": 0, "kernel": 0, "width": 0}
    for choice in config.layers.values():
        if (choice.w_bits, choice.a_bits) != (32, 32):
            key = f"w{choice.w_bits}a{choice.a_bits}"
            bits[key] = bits.get(key, 0) + 1
        arch["separable"] += choice.separable
        arch["kernel"] += choice.kernel is not None
        arch["width"] += choice.width < 1
    parts = [f"{k}x{v}" for k, v in sorted(bits.items())] + [f"{k}:{v}" for k, v in arch.items() if v]
    if config.skip:
        parts.append(f"skip:{len(config.skip)}")
    return " ".join(parts) or "unchanged"


def print_tables(results: list[dict]) -> None:
    for res in results:
        print(f"\n## {res['workload']}: {res['model']}")
        for note in res["notes"]:
            print(f"({note})")
        for fraction, table in res["tables"].items():
            where = (
                "; each compile resolves the fraction against the original it measures, and its rows are "
                "its ratio to that original x this bench's"
                if table.get("budget_from") == "compile"
                else ""
            )
            print(
                f"\nbudget {table['budget_ms']} ms ({float(fraction):.2f} of the original's measured "
                f"latency{where})"
            )
            names = sorted({k for r in table["rows"] for k in r["accuracy"]})
            metrics = " ".join(f"{n:>10}" for n in names)
            header = f"{'row':<44} {'measured ms':>11} {'in budget':>9} {metrics}"
            print(header + f" {'pred. MB':>10} {'search s':>9}  choices")
            for r in table["rows"]:
                lat = f"{r['latency_ms']:.2f}" if r["latency_ms"] is not None else "-"
                ok = {True: "yes", False: "NO", None: ""}[r["within_budget"]]
                accs = " ".join(
                    f"{r['accuracy'][n]:>10.4f}" if n in r["accuracy"] else f"{'-':>10}" for n in names
                )
                mem = f"{r['memory_mb']:.2f}" if r["memory_mb"] is not None else "-"
                search = f"{r['search_s']:.0f}" if r["search_s"] is not None else "-"
                print(f"{r['label']:<44} {lat:>11} {ok:>9} {accs} {mem:>10} {search:>9}  {r['note']}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workloads", nargs="+", default=["imagenet", "fashion"])
    parser.add_argument("--spaces", nargs="*", default=list(SPACES), help="none: only the fine-tuned rows")
    parser.add_argument("--fashion-dir", type=Path, default=Path.home() / ".cache" / "hanasc" / "fashion")
    parser.add_argument("--fashion-train", type=int, default=12000, help="training images for the head")
    parser.add_argument("--samples", type=int, default=160, help="predictor samples per search")
    parser.add_argument("--population", type=int, default=32)
    parser.add_argument("--generations", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quick", action="store_true", help="smaller searches (80 samples, 16 x 10, 2 rounds)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--fractions", nargs="+", type=float, default=list(FRACTIONS))
    parser.add_argument("--max-loss", type=float, default=100.0, help="compile's accuracy floor (points)")
    parser.add_argument(
        "--budget-from", choices=("compile", "bench"), default="compile",
        help="compile: each compile gets the fraction (--budget 0.33x) and resolves it against the original "
        "it measures itself, which its candidates are timed beside; bench: the bench's own measurement "
        "times the fraction, in ms (a drift between the two measurements then moves the budget)",
    )  # fmt: skip
    parser.add_argument("--finetune-minutes", type=float, default=0.0, help="adds fine-tuned rows")
    parser.add_argument("--finetune-spaces", nargs="+", default=["joint", "arch"])
    parser.add_argument(
        "--finetune-train", type=int, default=0,
        help="fashion: fine-tune on this many training images unseen by the head (0: the calibration split)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.samples, args.population, args.generations, args.rounds = 80, 16, 10, 2
    from bench_precision import isa_line

    print(isa_line(), flush=True)
    started = time.perf_counter()
    results = []
    for name in args.workloads:
        w = (
            imagenet_workload()
            if name == "imagenet"
            else fashion_workload(args.fashion_dir, args.fashion_train, args.finetune_train)
        )
        results.append(run_workload(w, args))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    print_tables(results)
    print(
        f"\nTVM threads: {os.environ.get('TVM_NUM_THREADS', 'TVM default')}; search settings: "
        f"{args.samples} predictor samples, population {args.population} x {args.generations} generations, "
        f"{args.rounds} rounds; seed {args.seed}; bench wall time {time.perf_counter() - started:.0f} s\n"
        "latency: measured here (median of repeats); memory: predicted (weights at the chosen bit-widths + "
        "static plan); accuracy: compiled host artifact (held-out split) and simulator (test split)"
    )


if __name__ == "__main__":
    main()
