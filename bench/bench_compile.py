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
run (median of repeats, TVM and onnxruntime with the same thread count). Accuracy of compiled rows comes
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
FRACTIONS = (1 / 2, 1 / 3)


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


def imagenet_workload() -> Workload:
    import hanasc
    from hanasc.compile_cli import preprocess_for
    from hanasc.images import load_foolbox_imagenet
    from hanasc.model_zoo import fetch

    path = fetch("efficientnet-lite0")
    model = hanasc.load_model(path, import_tvm=False)
    ds, groups = load_foolbox_imagenet(preprocess_for(model, None, None, None, None, "RGB", 5))
    return Workload("imagenet", path, ds.x.astype(np.float32), ds.y, groups, ds.source, "agreement")


def fashion_workload(folder: Path, train: int) -> Workload:
    import fashion_transfer

    if not (folder / "fashion_effnet.onnx").is_file():
        print(f"training the Fashion-MNIST head into {folder} ...", flush=True)
        print(json.dumps(fashion_transfer.build(folder, train=train), indent=2), flush=True)
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
         f"{head['resolution']} inputs; torch test top-1 {head['test_top1_torch']}"],
    )  # fmt: skip


def ort_latency_ms(path: Path, x: np.ndarray, repeat: int, threads: int) -> float:
    """Median onnxruntime latency of one sample (all graph optimizations, ``threads`` intra-op)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for _ in range(3):
        session.run(None, {name: x})
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        session.run(None, {name: x})
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


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


def run_workload(w: Workload, args) -> dict:
    import hanasc
    from hanasc.calibration import calibrate
    from hanasc.compile_pipeline import CompileOptions, InfeasibleBudgetError, compile_model, split_data
    from hanasc.compile_report import _costs_figures
    from hanasc.compile_verify import run_host
    from hanasc.host_timing import measure_host
    from hanasc.metrics import choose_metric
    from hanasc.passes.config import Config, LayerChoice
    from hanasc.passes.materialize import materialize
    from hanasc.search import Budgets
    from hanasc.simulator import Simulator
    from hanasc.targets import host
    from hanasc.targets.registry import get_target

    model = hanasc.load_model(w.model_path)
    info = get_target("host")
    metric = choose_metric(w.metric, w.y is not None)
    split = split_data(w.x, w.y, w.groups, args.seed, w.source)
    probe = [model.example_inputs()["input"]]
    ranges = calibrate(model, split.calib_x, method="percentile", percentile=99.99)
    simulator = Simulator(model, batch=32)
    ref_eval = simulator.run(Config(), split.eval_x)
    threads = int(os.environ.get("TVM_NUM_THREADS", os.cpu_count() or 1))

    def scores(config: Config, outputs_eval: np.ndarray) -> dict:
        acc = {metric.name: round(metric(outputs_eval, split.eval_y, ref_eval), 4)}
        if split.eval_y is not None and metric.name != "top1":
            acc["top1"] = round(top1(outputs_eval, split.eval_y), 4)
        if w.test_x is not None:
            acc["test_top1"] = round(top1(simulator.run(config, w.test_x, ranges), w.test_y), 4)
        return acc

    print(f"\n=== {w.name}: {model.path} ===", flush=True)
    original_exe = host.build_artifact(model.mod)
    original = measure_host(original_exe, probe, args.repeat)
    ort_ms = ort_latency_ms(model.path, probe[0], args.repeat * 5, threads)
    original_acc = scores(Config(), run_host(original_exe, split.eval_x))
    memory = _costs_figures(model.mod, info, 1.0, 0)[0]["value"]
    base = [
        Row("original (TVM default)", original["value"], "measured", original_acc, memory, None, None),
        Row(f"onnxruntime on the original ({threads} thread)", round(ort_ms, 3), "measured",
            original_acc, None, None, None),
    ]  # fmt: skip
    print(f"original {original['value']} ms (TVM), onnxruntime {ort_ms:.2f} ms, {original_acc}", flush=True)

    int8 = Config({layer.name: LayerChoice(w_bits=8, a_bits=8) for layer in model.layers})
    int8_mod = materialize(model.mod, int8, ranges)
    int8_exe = host.build_artifact(int8_mod)
    int8_ms = measure_host(int8_exe, probe, args.repeat)["value"]
    int8_acc = scores(int8, run_host(int8_exe, split.eval_x))
    int8_mem = _costs_figures(int8_mod, info, 1.0, 0)[0]["value"]

    tables = {}
    for fraction in FRACTIONS:
        budget = round(original["value"] * fraction, 2)
        rows = []
        for space in args.spaces:
            options = CompileOptions(
                target="host",
                budgets=Budgets(latency_ms=budget),
                space=space,
                seed=args.seed,
                metric=metric.name,
                predictor_samples=args.samples,
                population=args.population,
                generations=args.generations,
                rounds=args.rounds,
            )
            t0 = time.perf_counter()
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    result = compile_model(
                        model, split, options, Path(tmp) / "out", metric, original_latency=original
                    )
            except InfeasibleBudgetError as exc:
                rows.append(
                    Row(space, None, "-", {}, None, round(time.perf_counter() - t0, 1), False, str(exc))
                )
                print(f"{space} @ {budget} ms: infeasible: {exc}", flush=True)
                continue
            r = result.report["result"]
            config = Config.from_json(r["config"])
            acc = {metric.name: r["accuracy"]["value"]}
            if (split.eval_y is not None and metric.name != "top1") or w.test_x is not None:
                acc = {**scores(config, simulator.run(config, split.eval_x, ranges)), **acc}
            lat = r["latency_ms"]
            rows.append(
                Row(space, lat["value"], lat["source"], acc, r["memory_mb"]["value"],
                    result.report["search"]["wall_s_total"], lat["value"] <= budget,
                    _summary(config, len(model.layers)))
            )  # fmt: skip
            print(f"{space} @ {budget} ms: {rows[-1]}", flush=True)
        rows.append(
            Row("uniform int8 (no search)", int8_ms, "measured", int8_acc, int8_mem, None, int8_ms <= budget)
        )
        tables[f"{fraction:.3f}"] = {"budget_ms": budget, "rows": [r.__dict__ for r in rows + base]}
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
            print(
                f"\nbudget {table['budget_ms']} ms ({float(fraction):.2f} of the original's measured latency)"
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
    parser.add_argument("--spaces", nargs="+", default=list(SPACES))
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
    args = parser.parse_args()
    if args.quick:
        args.samples, args.population, args.generations, args.rounds = 80, 16, 10, 2
    started = time.perf_counter()
    results = []
    for name in args.workloads:
        w = (
            imagenet_workload()
            if name == "imagenet"
            else fashion_workload(args.fashion_dir, args.fashion_train)
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
