"""Issue 36: does mixed precision find the answer? ``hanasc compile`` per model and budget, as a user runs it.

    python bench/bench_mixed.py [--models efficientnet-lite0 ppocr-cls ppocr-det ppocr-rec fashion]
        [--budgets 0.8 0.6] [--max-loss 1] [--runs 30] [--threads 1] [--json out.json]
        [--samples N --population N --generations N]   # passed through to compile (default: its own)

Per model with trained weights and per budget it runs ``hanasc compile MODEL --target host --budget Bx
--max-loss L --data DATA --out DIR [--metric M]`` in a subprocess (``TVM_NUM_THREADS`` = ``--threads``); a
non-zero exit is a row with the CLI's one-line error. From ``DIR/report.json``: the result's and the
original's latency (``ratio_to_original``: the candidate timed beside the original), their held-out
metric, the chosen Config's W8A8 / W4 / float layer counts, and the ``ladder`` section (points, points
within the budget, points within budget and floor; "no ladder" when the report has none).

Then, in one process, medians of ``--runs`` interleaved runs (each engine once per round) of: hanasc fp32
(``hanasc apply`` with an empty Config), each budget's result (``DIR/model.so``), hanasc uniform W8A8
(``hanasc apply`` with every layer W8A8 and ``--data`` the calibration half; ``--uniform-calibration
compile`` replays the first successful compile's activation ranges instead), and onnxruntime / OpenVINO
fp32 and int8 (``bench_precision.ort_engines`` / ``openvino_engines``: ``hanasc.compile.peers``, as the
compile's ``--compare`` builds them, calibrated on 32 samples of the same calibration half).
Every engine is scored on the compile's held-out half with the compile's metric: ``top1`` against labels,
``agreement`` / ``fidelity`` against the same engine family's fp32 (hanasc against hanasc fp32).

Data (the compile's split, reproduced here with ``split_data`` and the same seed):

- ``efficientnet-lite0``: ``imagenet-samples`` (foolbox's 20 labelled ImageNet images, 5 views each), metric
  ``agreement`` as ``hanasc demo`` uses;
- ``ppocr-cls``: synthetic text lines (PIL's default font), half turned by 180 degrees (labels), ``top1``;
- ``ppocr-det``: synthetic pages of 2-4 text lines; ``ppocr-rec``: synthetic text lines; metric ``fidelity``
  (R² against the original's maps / sequences). No real text images ship offline: the table says so;
- ``fashion``: the Fashion-MNIST head of ``bench/fashion_transfer.py`` (built on first use, as
  ``bench_compile.py`` does), its 1,000 validation images, ``top1``.

The summary checks the issue's three claims, PASS / FAIL / N.A. with the numbers:

1. every (model, budget) where some ladder point met budget and floor returned exit 0 with a result meeting
   both (a point "met both" per the report's ladder; without a ladder, uniform W8A8 measured here, the
   ladder's all-int8 end, is the witness);
2. every model reaches <= 0.75x of hanasc fp32 at <= 1 point loss (best over budgets, measured here);
3. where uniform W8A8 loses more than 1 point, some budget's result is faster than onnxruntime int8 and
   OpenVINO int8 and more accurate than both (measured here).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODELS = ("efficientnet-lite0", "ppocr-cls", "ppocr-det", "ppocr-rec", "fashion")
POINT = 0.01  # one point of every metric used here (top1, agreement, fidelity R²)
OCR_SAMPLES = {"ppocr-cls": 200, "ppocr-det": 32, "ppocr-rec": 64}  # cls: 100 held out, 1 point each
WORDS = (
    "invoice",
    "total",
    "2026",
    "OCR",
    "model",
    "budget",
    "latency",
    "int8",
    "12.50",
    "Zurich",
    "page",
    "No.",
    "4711",
    "receipt",
    "compile",
    "SALE",
    "open",
    "24/7",
    "hanasc",
    "EUR",
    "Tel.",
    "street",
)


@dataclass
class Case:
    """A model as the bench runs it: the compile's arguments and the same data in memory."""

    name: str
    cli_model: str  # compile's MODEL argument (a zoo name or a path)
    path: Path  # the ONNX file (onnxruntime, OpenVINO)
    data: str  # compile's --data
    data_note: str
    metric: str
    x: np.ndarray
    y: np.ndarray | None
    groups: np.ndarray | None
    source: str
    shape_args: list[str] = field(default_factory=list)  # --input-shape (compile and apply)
    data_args: list[str] = field(default_factory=list)  # --views (compile only)
    shapes: dict | None = None


def text_samples(kind: str, count: int, shape: tuple[int, ...], seed: int = 0):
    """Synthetic text images preprocessed as PP-OCR does (BGR, (x/255 - 0.5) / 0.5, NCHW): single lines for
    ``cls`` (odd samples turned by 180 degrees, label 1) and ``rec``, pages of 2-4 lines for ``det``."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    height, width = shape[-2:]
    xs, ys = [], []
    for i in range(count):
        image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.integers(170, 256, 3)))
        draw = ImageDraw.Draw(image)
        lines = int(rng.integers(2, 5)) if kind == "det" else 1
        for j in range(lines):
            words = int(rng.integers(1, 3 if kind == "cls" else 4))
            text = " ".join(str(w) for w in rng.choice(WORDS, words))
            size = int(rng.integers(12, 26)) if kind == "det" else int(rng.integers(26, 36))
            top = int(j * height / lines + rng.integers(0, 6)) if kind == "det" else (height - size) // 2 - 2
            font = ImageFont.load_default(size=size)
            draw.text(
                (int(rng.integers(2, width // 4)), top),
                text,
                fill=tuple(int(v) for v in rng.integers(0, 90, 3)),
                font=font,
            )
        pixels = np.asarray(image, np.float32)
        turned = kind == "cls" and i % 2 == 1
        if turned:
            pixels = pixels[::-1, ::-1]
        xs.append(((pixels[..., ::-1] / 255.0 - 0.5) / 0.5).transpose(2, 0, 1))
        ys.append(int(turned))
    return np.ascontiguousarray(np.stack(xs), np.float32), (np.array(ys, np.int64) if kind == "cls" else None)


def make_case(name: str, work: Path, args) -> Case:
    if name == "efficientnet-lite0":
        from bench_compile import imagenet_workload

        w = imagenet_workload()
        note = f"{w.source}: 20 labelled ImageNet images x 5 views; agreement with fp32 (as hanasc demo)"
        return Case(
            name,
            name,
            w.model_path,
            "imagenet-samples",
            note,
            "agreement",
            w.x,
            w.y,
            w.groups,
            w.source,
            data_args=["--views", "5"],
        )
    if name == "fashion":
        from bench_compile import fashion_workload

        w = fashion_workload(args.fashion_dir, args.fashion_train, 0)
        data = str(args.fashion_dir / "fashion_val.npz")
        note = f"{data}: 1,000 Fashion-MNIST validation images (head unseen), top-1; {w.notes[0]}"
        return Case(name, str(w.model_path), w.model_path, data, note, "top1", w.x, w.y, None, data)
    if name in OCR_SAMPLES:
        from hanasc.frontend.model_zoo import fetch, get_zoo_model

        spec = get_zoo_model(name)
        path = fetch(name)
        kind = name.split("-")[1]
        x, y = text_samples(kind, OCR_SAMPLES[name], spec.input_shape)
        data = work / name / "text.npz"
        data.parent.mkdir(parents=True, exist_ok=True)
        np.savez(data, **({"x": x} if y is None else {"x": x, "y": y}))
        metric = "top1" if y is not None else "fidelity"
        turned = ", half turned 180 degrees (labels)" if y is not None else ""
        note = (
            f"{len(x)} SYNTHETIC text {'pages' if kind == 'det' else 'lines'} (PIL default font; no real "
            f"text images ship offline){turned}; {metric}"
        )
        extra = ["--input-shape", spec.shape_arg()] if spec.dynamic else []
        shapes = {spec.input_name: spec.input_shape} if spec.dynamic else None
        return Case(name, name, path, str(data), note, metric, x, y, None, str(data), extra, shapes=shapes)
    raise SystemExit(f"unknown model '{name}': one of {', '.join(MODELS)}")


def cli(args: list[str], timeout: float, threads: int) -> tuple[int, str, float]:
    """``hanasc ARGS`` in a subprocess: (exit code, its one-line error or "OK", wall seconds)."""
    env = {**os.environ, "TVM_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "hanasc.cli", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return -1, f"timeout after {timeout:.0f} s", time.perf_counter() - start
    wall = time.perf_counter() - start
    if done.returncode == 0:
        return 0, "OK", wall
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    said = [line for line in lines if line.startswith("hanasc: ")]
    return done.returncode, (said or lines or [f"exit {done.returncode}"])[-1][:300], wall


def layer_counts(config_json: dict, layers: int) -> dict:
    """W8A8 / W4 (any activation bits) / float (fp32, fp16) / other layers of a Config."""
    counts = {"W8A8": 0, "W4": 0, "float": 0, "other": 0}
    chosen = config_json.get("layers", {})
    for choice in chosen.values():
        w, a = choice.get("w_bits", 32), choice.get("a_bits", 32)
        key = "W8A8" if (w, a) == (8, 8) else "W4" if w == 4 else "float" if w >= 16 else "other"
        counts[key] += 1
    counts["float"] += max(0, layers - len(chosen))  # layers the Config leaves alone stay fp32
    return counts


def _number(point: dict, keys: tuple[str, ...]) -> float | None:
    for key in keys:
        value = point.get(key)
        if isinstance(value, dict):
            value = value.get("value")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def ladder_summary(report: dict, budget_ms: float | None, floor: float) -> dict | None:
    """How many ladder points the report lists, how many are within the budget, and within budget and
    floor: the point's own ``meets_budget`` / ``meets_floor`` where it says, else its latency against the
    budget and its score against the floor (None: the report has no ladder)."""
    ladder = report.get("ladder")
    if ladder is None:
        return None
    points = ladder.get("points") if isinstance(ladder, dict) else ladder
    if not isinstance(points, list):
        return {"points": None, "within_budget": None, "within_both": None}
    in_budget, both = 0, 0
    for p in points:
        ms = _number(p, ("measured_ms", "latency_ms", "estimated_ms", "predicted_ms"))
        score = _number(p, ("accuracy", "held_out", "score", "metric"))
        fits = p.get("meets_budget", p.get("within_budget"))
        fits = fits if fits is not None else (budget_ms is None or (ms is not None and ms <= budget_ms))
        kept = p.get("meets_floor", p.get("kept_floor"))
        kept = kept if kept is not None else (score is not None and score >= floor - 1e-9)
        in_budget += bool(fits)
        both += bool(fits and kept)
    return {"points": len(points), "within_budget": in_budget, "within_both": both}


def compile_figures(report: dict, layers: int, max_loss: float) -> dict:
    r, o = report["result"], report["original"]
    budget_ms = report["budget"]["latency_ms"]
    original_score = o["accuracy"]["value"]
    floor = original_score - max_loss * POINT
    result_ms = r["latency_ms"]["value"]
    return {
        "metric": report["metric"]["name"],
        "budget_ms": budget_ms,
        "result_ms": result_ms,
        "ratio_to_original": r["latency_ms"].get("ratio_to_original"),
        "original_ms": o["latency_ms"]["value"],
        "result_metric": r["accuracy"]["value"],
        "original_metric": original_score,
        "meets_budget": budget_ms is None or result_ms <= budget_ms,
        "meets_floor": r["accuracy"]["value"] >= floor - 1e-9,
        "layers": layer_counts(r["config"], layers),
        "ladder": ladder_summary(report, budget_ms, floor),
    }


def library_engine(label: str, library: Path, x: np.ndarray):
    """A ``model.so`` (``hanasc apply`` / ``hanasc compile``) as a bench_precision Engine."""
    import tvm
    from bench_precision import Engine
    from tvm import relax

    from hanasc.targets.host import flatten_outputs
    from hanasc.targets.quiet import filtered_native_stderr

    with filtered_native_stderr():  # TVM's "Scope Loaded" lines (at load and first call)
        vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
        outs = np.concatenate([flatten_outputs(vm["main"](tvm.runtime.tensor(s[None])))[0] for s in x])
    arg = tvm.runtime.tensor(x[:1])
    return Engine(label, lambda: vm["main"](arg), outs, "hanasc fp32")


def uniform_w8a8(
    case: Case, model, folder: Path, outs: list[Path], calib: Path, args
) -> tuple[int, str, str]:
    """``hanasc apply`` with every layer W8A8 into ``folder/apply``, calibrated by ``--data calib`` (apply's
    min/max ranges, with the means and covariances its recovery reads for every layer), or with
    ``--uniform-calibration compile`` the activation ranges of the first successful compile copied beside
    the Config (the compile's percentile ranges, but covariances only of the layers its result refitted:
    the other layers then get nearest rounding)."""
    from bench_corpus import uniform_int8

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    config = uniform_int8(model, folder / "config.json")
    ranges = next(
        (o / "activation_ranges.json" for o in outs if (o / "activation_ranges.json").is_file()), None
    )
    ranges = ranges if args.uniform_calibration == "compile" else None
    if ranges is not None:
        shutil.copyfile(ranges, folder / ranges.name)
        data, how = [], f"activation ranges replayed from {ranges.parent.name} (percentile, calibration half)"
    else:
        data, how = (
            ["--data", str(calib)],
            "hanasc apply --data (the calibration half: min/max over its first 64 samples)",
        )
    command = ["apply", case.cli_model, str(config), "--out", str(folder / "apply"), *data, *case.shape_args]
    code, line, _ = cli(command, args.timeout, args.threads)
    return code, line, how


def bench_case(case: Case, args, work: Path) -> dict:
    from bench_precision import interleaved, openvino_engines, ort_engines, set_tvm_threads

    import hanasc
    from hanasc.compile.context import split_data
    from hanasc.core.metrics import METRICS

    folder = work / case.name
    folder.mkdir(parents=True, exist_ok=True)
    model = hanasc.load_model(case.path, case.shapes, import_tvm=False)
    layers = len(model.layers)
    split = split_data(case.x, case.y, case.groups, 0, case.source)  # compile's split (--seed 0)
    calib_npz = folder / "calib.npz"
    np.savez(calib_npz, x=split.calib_x)
    search = []
    for option in ("samples", "population", "generations"):
        if getattr(args, option) is not None:
            search += [f"--{option}", str(getattr(args, option))]
    result: dict = {
        "model": case.name,
        "path": str(case.path),
        "data": case.data_note,
        "metric": case.metric,
        "layers": layers,
        "held_out": len(split.eval_x),
        "calibration": len(split.calib_x),
        "rows": [],
        "engines": {},
        "notes": [],
    }
    outs = []
    for budget in args.budgets:
        out = folder / f"compile-{budget:g}x"
        command = [
            "compile",
            case.cli_model,
            "--target",
            "host",
            "--budget",
            f"{budget:g}x",
            "--max-loss",
            f"{args.max_loss:g}",
            "--data",
            case.data,
            "--out",
            str(out),
            "--metric",
            case.metric,
            *case.shape_args,
            *case.data_args,
            *search,
        ]
        shutil.rmtree(out, ignore_errors=True)  # a report.json left by an earlier run is not this one's
        print(f"[{case.name}] hanasc {' '.join(command)}", file=sys.stderr, flush=True)
        code, line, wall = cli(command, args.timeout, args.threads)
        row = {"budget": budget, "exit": code, "said": line, "compile_s": round(wall, 1), "out": str(out)}
        if (out / "report.json").is_file():
            row["report"] = compile_figures(
                json.loads((out / "report.json").read_text()), layers, args.max_loss
            )
            if code == 0:
                outs.append(out)
        print(f"[{case.name}] {budget:g}x: exit {code} {line} ({wall:.0f} s)", file=sys.stderr, flush=True)
        result["rows"].append(row)

    empty = folder / "empty" / "config.json"
    shutil.rmtree(empty.parent, ignore_errors=True)
    empty.parent.mkdir()
    empty.write_text('{"layers": {}, "skip": []}\n')
    fp32_out = folder / "empty" / "apply"
    code, line, _ = cli(
        [
            "apply",
            case.cli_model,
            str(empty),
            "--out",
            str(fp32_out),
            *case.shape_args,
        ],
        args.timeout,
        args.threads,
    )
    if code != 0:
        result["notes"].append(f"hanasc apply (empty Config) exit {code}: {line}")
        return result
    u_code, u_line, u_how = uniform_w8a8(case, model, folder / "uniform", outs, calib_npz, args)
    result["uniform_w8a8"] = {"exit": u_code, "said": u_line, "calibration": u_how}

    x, calib = split.eval_x, split.calib_x[:32]
    set_tvm_threads(args.threads)
    engines = [library_engine("hanasc fp32", fp32_out / "model.so", x)]
    for row in result["rows"]:
        if row["exit"] == 0 and (Path(row["out"]) / "model.so").is_file():
            engines.append(library_engine(f"result {row['budget']:g}x", Path(row["out"]) / "model.so", x))
    if u_code == 0:
        engines.append(library_engine("hanasc W8A8", folder / "uniform" / "apply" / "model.so", x))
    for family, build in (
        ("onnxruntime", lambda: ort_engines(case.path, x, calib, args.threads, folder)),
        ("OpenVINO", lambda: openvino_engines(case.path, x, calib, args.threads)),
    ):
        try:
            engines += build()
        except Exception as exc:  # an engine that cannot take the model is a note, not a crash
            result["notes"].append(
                f"{family}: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"
            )
    times = interleaved(engines, args.runs)
    metric = METRICS[case.metric]
    by_name = {e.name: e for e in engines}
    for e in engines:
        reference = by_name[e.family_fp32].outputs if e.family_fp32 in by_name else None
        score = (
            metric(e.outputs, split.eval_y, reference)
            if reference is not None or metric.needs_labels
            else None
        )
        result["engines"][e.name] = {
            "ms": round(statistics.median(times[e.name]), 4),
            "metric": None if score is None else round(score, 4),
        }
    return result


def _ms_metric(engine: dict | None) -> str:
    if not engine:
        return "n/a"
    return (
        f"{engine['ms']:.3f} / {engine['metric']:.3f}"
        if engine["metric"] is not None
        else f"{engine['ms']:.3f}"
    )


def _selection(row: dict) -> str:
    if row["exit"] != 0:
        return f"exit {row['exit']}: {row['said']}"
    rep = row.get("report")
    if rep is None:
        return "exit 0, no report.json"
    c = rep["layers"]
    ratio = rep["ratio_to_original"]
    text = f"exit 0: W8A8 x{c['W8A8']}, W4 x{c['W4']}, float x{c['float']}" + (
        f", other x{c['other']}" if c["other"] else ""
    )
    text += f"; report {rep['result_ms']:.3f} ms" + (f" ({ratio:.3f}x)" if ratio is not None else "")
    return text + f", {rep['metric']} {rep['result_metric']:.3f} (original {rep['original_metric']:.3f})"


def _ladder(row: dict) -> str:
    ladder = (row.get("report") or {}).get("ladder")
    if ladder is None:
        return "no ladder" if row.get("report") else "-"
    return f"{ladder['within_budget']} in budget ({ladder['within_both']} + floor) / {ladder['points']}"


def print_model(res: dict, args) -> None:
    from bench_precision import table

    eng = res["engines"]
    fp32 = eng.get("hanasc fp32")
    print(
        f"\n## {res['model']} ({res['layers']} layers; {res['calibration']} calibration / {res['held_out']} "
        f"held-out samples)\n\ndata: {res['data']}"
    )
    if "uniform_w8a8" in res:
        u = res["uniform_w8a8"]
        print(
            f"uniform W8A8: {u['calibration']}"
            + ("" if u["exit"] == 0 else f"; exit {u['exit']}: {u['said']}")
        )
    for note in res["notes"]:
        print(f"note: {note}")
    if fp32:
        others = ", ".join(f"{n} {_ms_metric(eng.get(n))}" for n in ("onnxruntime fp32", "OpenVINO fp32"))
        print(f"hanasc fp32 {_ms_metric(fp32)} (ms / {res['metric']}); {others}\n")
    rows = []
    for row in res["rows"]:
        r = eng.get(f"result {row['budget']:g}x")
        ratio = f" ({r['ms'] / fp32['ms']:.2f}x)" if r and fp32 else ""
        rows.append(
            (
                f"{row['budget']:g}x",
                (f"{r['ms']:.3f}{ratio}" if r else "-"),
                (f"{r['metric']:.3f}" if r and r["metric"] is not None else "-"),
                _selection(row).replace("|", "/"),
                _ladder(row),
                _ms_metric(eng.get("hanasc W8A8")),
                _ms_metric(eng.get("onnxruntime int8")),
                _ms_metric(eng.get("OpenVINO int8")),
            )
        )
    header = (
        "budget",
        "result ms (x hanasc fp32)",
        f"result {res['metric']}",
        "exit / selection",
        "ladder",
        "uniform W8A8 ms / metric",
        "ORT int8 ms / metric",
        "OV int8 ms / metric",
    )
    print(table(rows, header))


def _loss(engine: dict | None, reference: dict | None) -> float | None:
    """Points lost against ``reference`` (an engine's own fp32)."""
    if not engine or not reference or engine["metric"] is None or reference["metric"] is None:
        return None
    return (reference["metric"] - engine["metric"]) / POINT


def checks(results: list[dict], args) -> list[tuple[str, str, list[str]]]:
    """The issue's three checks: (name, PASS / FAIL / N.A., the numbers behind it)."""
    one, two, three = [], [], []
    ok1, ok2, ok3 = True, True, True
    for res in results:
        eng = res["engines"]
        fp32, uni = eng.get("hanasc fp32"), eng.get("hanasc W8A8")
        u_loss = _loss(uni, fp32)
        best = None
        for row in res["rows"]:
            rep = row.get("report") or {}
            ladder = rep.get("ladder")
            witness = None
            if ladder and ladder.get("within_both"):
                witness = f"{ladder['within_both']} ladder point(s) met budget and floor"
            elif (
                ladder is None
                and uni
                and fp32
                and u_loss is not None
                and uni["ms"] / fp32["ms"] <= row["budget"]
                and u_loss <= args.max_loss
            ):
                witness = f"uniform W8A8 measured here: {uni['ms'] / fp32['ms']:.2f}x, -{u_loss:.1f} pts"
            if witness:
                met = row["exit"] == 0 and rep.get("meets_budget") and rep.get("meets_floor")
                ok1 &= bool(met)
                one.append(
                    f"{res['model']} {row['budget']:g}x: {witness}; exit {row['exit']}"
                    + ("" if met else f" FAIL ({_selection(row)})")
                )
            r = eng.get(f"result {row['budget']:g}x")
            loss = _loss(r, fp32)
            if r and fp32 and loss is not None and loss <= 1 + 1e-9:
                ratio = r["ms"] / fp32["ms"]
                if best is None or ratio < best[0]:
                    best = (ratio, row["budget"], loss)
        if fp32:
            ok2 &= best is not None and best[0] <= 0.75
            two.append(
                f"{res['model']}: "
                + (
                    f"{best[0]:.2f}x at {best[1]:g}x budget, -{best[2]:.1f} pts"
                    if best
                    else "no result within 1 point"
                )
            )
        if u_loss is not None and u_loss > 1:
            ort, ov = eng.get("onnxruntime int8"), eng.get("OpenVINO int8")
            wins = []
            for row in res["rows"]:
                r = eng.get(f"result {row['budget']:g}x")
                scored = r and ort and ov and None not in (r["metric"], ort["metric"], ov["metric"])
                if (
                    scored
                    and r["ms"] < min(ort["ms"], ov["ms"])
                    and r["metric"] > max(ort["metric"], ov["metric"])
                ):
                    wins.append(f"{row['budget']:g}x {r['ms']:.3f} ms / {r['metric']:.3f}")
            ok3 &= bool(wins)
            three.append(
                f"{res['model']}: uniform W8A8 -{u_loss:.1f} pts; ORT int8 {_ms_metric(ort)}, OV int8 "
                f"{_ms_metric(ov)}; result " + ("; ".join(wins) if wins else "none faster and more accurate")
            )

    def verdict(lines: list[str], ok: bool) -> str:
        return "N.A." if not lines else "PASS" if ok else "FAIL"

    return [
        (
            "1. a budget + floor some ladder point meets: exit 0 with a result meeting both",
            verdict(one, ok1),
            one,
        ),
        ("2. every model <= 0.75x hanasc fp32 at <= 1 point loss (best budget)", verdict(two, ok2), two),
        (
            "3. uniform W8A8 loses > 1 point: result faster and more accurate than ORT and OV int8",
            verdict(three, ok3),
            three,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.8, 0.6], help="shares of the original")
    parser.add_argument("--max-loss", type=float, default=1.0, help="compile's floor (points)")
    parser.add_argument("--runs", type=int, default=30, help="interleaved timing rounds")
    parser.add_argument("--threads", type=int, default=1, help="TVM, onnxruntime and OpenVINO threads")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--samples", type=int, default=None, help="compile --samples (default: its own)")
    parser.add_argument("--population", type=int, default=None, help="compile --population")
    parser.add_argument("--generations", type=int, default=None, help="compile --generations")
    parser.add_argument(
        "--uniform-calibration",
        choices=("data", "compile"),
        default="data",
        help="uniform W8A8: apply --data on the calibration half, or replay the compile's activation ranges",
    )
    parser.add_argument("--timeout", type=float, default=5400, help="seconds per CLI call")
    parser.add_argument("--work", type=Path, default=None, help="keep compile outputs here (default: temp)")
    parser.add_argument("--fashion-dir", type=Path, default=Path.home() / ".cache" / "hanasc" / "fashion")
    parser.add_argument("--fashion-train", type=int, default=12000, help="training images for the head")
    args = parser.parse_args()
    from bench_precision import isa_line

    print(isa_line())
    thread = "1 thread" if args.threads == 1 else f"{args.threads} threads"
    search = (
        ", ".join(
            f"{o} {getattr(args, o)}"
            for o in ("samples", "population", "generations")
            if getattr(args, o) is not None
        )
        or "compile's defaults"
    )
    print(
        f"measured here, medians of {args.runs} interleaved runs, {thread}; hanasc compile --target host "
        f"--max-loss {args.max_loss:g}, search: {search}; metric cells: the compile's metric on its held-out "
        "half (agreement / fidelity against the engine's own fp32)"
    )
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="hanasc-mixed-") as tmp:
        work = args.work or Path(tmp)
        for name in args.models:
            res = bench_case(make_case(name, work, args), args, work)
            results.append(res)
            print_model(res, args)
            sys.stdout.flush()
            if args.json:
                args.json.write_text(json.dumps(results, indent=2))
    print("\n## Issue 36 checks\n")
    for name, verdict, lines in checks(results, args):
        print(f"{verdict:>5}  {name}")
        for line in lines:
            print(f"       {line}")
    print(f"\nbench wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
