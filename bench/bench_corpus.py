"""Run every corpus model (docs/corpus.md) through the CLI as a user would, one table row per model.

    python bench/bench_corpus.py                       # all models, all steps
    python bench/bench_corpus.py --models ppocr-cls resnet18 --targets host vpu
    python bench/bench_corpus.py --steps inspect apply  # skip compile

For each model: ``hanasc inspect``; ``hanasc apply`` with an empty Config and with uniform int8 (W8A8 on every
layer, calibrated on random inputs); the empty-Config library run against onnxruntime on the same input (max
absolute difference); the kernels that fell back (layout kept NCHW, no default schedule: the apply summary's
build report); ``hanasc compile`` for each target with a loose budget (2x the original) and a tiny search.
Each step prints OK or its one-line error. Models come from the cache (``scripts/fetch_corpus.py``).
Writes the table to stdout and, with ``--json``, the rows to a file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGETS = ("host", "cortex-a78", "vpu")
STEPS = ("inspect", "apply", "compile")
COMPILE_ARGS = ["--budget", "2x", "--generations", "1", "--population", "4", "--samples", "8"]


def run_cli(args: list[str], timeout: float) -> tuple[str, float]:
    """``hanasc ARGS``: "OK" or its one-line error (the last line of stderr, or a traceback's last line)."""
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "hanasc.cli", *args], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return f"timeout after {timeout:.0f} s", time.perf_counter() - start
    wall = time.perf_counter() - start
    if done.returncode == 0:
        return "OK", wall
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    traceback = any(line.startswith("Traceback") for line in lines)
    last = lines[-1] if lines else f"exit {done.returncode}"
    return ("TRACEBACK: " if traceback else "") + last[:160], wall


def uniform_int8(model, path: Path) -> Path:
    from hanasc.passes.config import Config, LayerChoice

    config = Config(layers={layer.name: LayerChoice(w_bits=8, a_bits=8) for layer in model.layers})
    config.save(path)
    return path


def max_difference(library: Path, onnx_path: Path, x: np.ndarray, input_name: str) -> float:
    """The apply library (``model.so``) against onnxruntime on ``x``: max |difference| over the outputs."""
    import onnxruntime as ort
    import tvm
    from tvm import relax

    from hanasc.targets.host import flatten_outputs
    from hanasc.targets.quiet import filtered_native_stderr

    with filtered_native_stderr():  # TVM's "Scope Loaded" lines
        vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), tvm.cpu())
    got = flatten_outputs(vm["main"](tvm.runtime.tensor(x)))
    want = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {input_name: x})
    return max(float(np.abs(g.astype("float64") - w).max()) for g, w in zip(got, want, strict=True))


def fallback_of(summary: Path) -> str:
    """The apply summary's build report as ``kernels without a schedule / kernels`` (+ layout fallbacks)."""
    build = json.loads(summary.read_text()).get("build") or {}
    if not build:
        return "?"
    text = f"{build['fallback_kernels']}/{build['kernels']}"
    layout = build.get("layout") or {}
    kept = sum((layout.get("kept_nchw") or {}).values())
    if kept or layout.get("skipped_blocks") or layout.get("whole_module") or build.get("rebuilds"):
        text += f" (+{kept} ops NCHW{', rebuilt' if build.get('rebuilds') else ''})"
    return text


def bench_model(name: str, steps, targets, work: Path, timeout: float) -> dict:
    import hanasc
    from hanasc.frontend.model_zoo import fetch, get_zoo_model

    spec = get_zoo_model(name)
    path = fetch(name)
    shape = ["--input-shape", spec.shape_arg()] if spec.dynamic else []
    row: dict = {"model": name, "weights": spec.weights, "opset": spec.opset, "input": spec.shape_arg()}
    x = np.random.default_rng(0).standard_normal(spec.input_shape).astype("float32")
    folder = work / name
    folder.mkdir(parents=True, exist_ok=True)
    calib = folder / "calib.npz"
    rng = np.random.default_rng(1)
    np.savez(calib, x=rng.standard_normal((16, *spec.input_shape[1:])).astype("float32"))
    if "inspect" in steps:
        row["inspect"], row["inspect_s"] = run_cli(["inspect", str(path), *shape], timeout)
    if "apply" in steps:
        (folder / "empty.json").write_text('{"layers": {}, "skip": []}\n')
        out = folder / "apply-empty"
        row["apply"], row["apply_s"] = run_cli(
            ["apply", str(path), str(folder / "empty.json"), "--out", str(out), *shape], timeout
        )
        if row["apply"] == "OK":
            row["fallback"] = fallback_of(out / "summary.json")
            row["max_diff"] = max_difference(out / "model.so", path, x, spec.input_name)
        try:
            shapes = {spec.input_name: spec.input_shape} if spec.dynamic else None
            config = uniform_int8(hanasc.load_model(path, shapes, import_tvm=False), folder / "int8.json")
            args = [
                "apply",
                str(path),
                str(config),
                "--data",
                str(calib),
                "--out",
                str(folder / "apply-int8"),
            ]
            row["apply_int8"], row["apply_int8_s"] = run_cli([*args, *shape], timeout)
        except Exception as exc:  # the model does not load: the inspect column says why
            row["apply_int8"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    if "compile" in steps:
        for target in targets:
            args = ["compile", str(path), "--target", target, *COMPILE_ARGS, "--data", str(calib)]
            row[f"compile_{target}"], row[f"compile_{target}_s"] = run_cli(
                [*args, "--out", str(folder / f"compile-{target}"), *shape], timeout
            )
    return row


def table(rows: list[dict], targets) -> str:
    columns = ["model", "weights", "opset", "input", "inspect", "apply", "apply_int8", "max_diff", "fallback"]
    columns += [f"compile_{t}" for t in targets]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column, "not run")
            cells.append(f"{value:.2e}" if isinstance(value, float) else str(value).replace("|", "/"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    from hanasc.frontend.model_zoo import CORPUS

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="*", default=list(CORPUS))
    parser.add_argument("--targets", nargs="*", default=list(TARGETS))
    parser.add_argument("--steps", nargs="*", default=list(STEPS), choices=STEPS)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per CLI step")
    parser.add_argument("--work", type=Path, default=None, help="keep outputs here (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here (one per line)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="hanasc-corpus-") as tmp:
        work = args.work or Path(tmp)
        for name in args.models:
            row = bench_model(name, args.steps, args.targets, work, args.timeout)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            if args.json:
                with args.json.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    print(table(rows, args.targets))


if __name__ == "__main__":
    main()
