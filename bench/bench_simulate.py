"""Host validation of the simulated latency (docs/costs.md, "Simulated latency").

The method of ``hanasc simulate`` (qemu block counts x llvm-mca cycles at a clock) applied to this CPU, where
the truth is measurable: each model is built once into a library, timed natively (TVM's VM, 1 thread,
thread CPU time, medians over interleaved rounds) and simulated under qemu-x86_64 (the bundle runner built
for x86-64) with llvm-mca's model of this CPU, at the clock a probe measures (thread CPU time too).
Models: the corpus models that are cached (``hanasc models list``) and architectures sampled from the search
spaces of two of them (``hanasc.search.architecture_samples``).

The libraries are built for AVX2 (``-mcpu=znver3``): qemu 7.2's TCG has no AVX-512, so the host's own
AVX-512 build cannot run under it; the same AVX2 library is both measured and simulated.

    nice -n 10 python3 bench/bench_simulate.py --archs 6 --out /tmp/h5/sim_validation.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ["TVM_NUM_THREADS"] = "1"  # before TVM starts its thread pool: kernels run on the calling thread

import numpy as np

from hanasc.cost_models.simulation.cores import host_core
from hanasc.cost_models.simulation.host_runner import measured_clock_hz
from hanasc.cost_models.simulation.simulate import simulate_bundle
from hanasc.cost_models.simulation.validation import record
from hanasc.targets import bundle

BUILD_TARGET = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "znver3"}
CORPUS = (
    "efficientnet-lite0",
    "ppocr-cls",
    "ppocr-det",
    "ppocr-rec",
    "mobilenetv3-small",
    "shufflenetv2",
    "resnet18",
    "squeezenet1.1",
    "mobilenetv2-dynbatch",
    "unet-tiny",
)
SPACES = ("efficientnet-lite0", "unet-tiny")  # static input shapes: their spaces sample as they are


def build(mod, probe: list[np.ndarray], out: Path) -> Path:
    """``mod`` compiled for BUILD_TARGET into ``out/model.so``, with the probe input, its output and a host
    manifest (this CPU runs AVX2 code: the reference output comes from the same executable)."""
    import tvm

    from hanasc.targets import host
    from hanasc.targets.late_binding import compile_late_bound
    from hanasc.targets.quiet import export_library

    out.mkdir(parents=True, exist_ok=True)
    executable = compile_late_bound(mod, tvm.target.Target(BUILD_TARGET))
    export_library(executable, out / "model.so")
    reference = host.run(executable, probe)
    bundle.write_manifest(out, {"target": "host", **bundle.write_probe(out, probe, reference)})
    return out


def models(archs: int, corpus: tuple[str, ...], seed: int = 3):
    """(name, relax module, probe inputs) of the cached corpus models and ``archs`` architectures of each
    search space in SPACES."""
    from hanasc.core.relax_params import bind_weights
    from hanasc.frontend.loading import load_model
    from hanasc.frontend.model_zoo import get_zoo_model, zoo_path
    from hanasc.search.architecture_samples import sample_architectures

    for name in corpus:
        if zoo_path(name).exists():
            spec = get_zoo_model(name)
            model = load_model(zoo_path(name), {spec.input_name: spec.input_shape} if spec.dynamic else None)
            yield name, bind_weights(model.mod), list(model.example_inputs().values())
    for name in SPACES:
        if archs and zoo_path(name).exists():
            probe = list(load_model(zoo_path(name)).example_inputs().values())
            for arch in sample_architectures(zoo_path(name), archs, seed=seed):
                yield f"{name} {arch.label}", arch.mod, probe


def measure(folders: dict[str, Path], rounds: int, runs: int) -> tuple[dict[str, float], float]:
    """Median latency (ms) of each library, in thread CPU time (1 TVM thread: the calling one; time slices
    other processes take on this shared machine do not count), rounds interleaved over the models; and the
    median clock the clock probe measured between the rounds."""
    import tvm
    from tvm import relax

    calls = {}
    for name, folder in folders.items():
        manifest = bundle.read_manifest(folder)
        vm = relax.VirtualMachine(tvm.runtime.load_module(str(folder / "model.so")), tvm.cpu())
        args = [
            tvm.runtime.tensor(np.fromfile(folder / s.file, np.float32).reshape(s.shape))
            for s in bundle.tensor_specs(manifest["inputs"])
        ]
        vm["main"](*args)  # the first call allocates
        calls[name] = (vm["main"], args)
    samples: dict[str, list[float]] = {name: [] for name in folders}
    clocks = []
    for _ in range(rounds):
        clocks.append(measured_clock_hz())
        for name, (fmain, args) in calls.items():
            for _ in range(runs):
                start = time.thread_time()
                fmain(*args)
                samples[name].append((time.thread_time() - start) * 1e3)
    return {name: statistics.median(v) for name, v in samples.items()}, statistics.median(clocks)


def kernel_class(name: str) -> str:
    for key in ("depthwise", "conv2d", "matmul", "dense", "pool", "layout_transform", "mean"):
        if key in name:
            return key
    return "runtime" if name.startswith("(") else "other"


def report(rows: list[dict], core, clock_hz: float) -> dict:
    """Print the table and its summary (errors at the probe's measured clock, and at /proc/cpuinfo's);
    return the summary."""
    from scipy.stats import spearmanr

    sim = np.array([r["cycles"] / r.get("clock_hz", clock_hz) * 1e3 for r in rows])
    nominal = np.array([r["simulated_ms"] for r in rows])
    meas = np.array([r["measured_ms"] for r in rows])
    err = sim / meas - 1
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_precision import isa_line

    print(f"\n{isa_line()}")
    print(
        f"{core.model.description}; clock {clock_hz / 1e9:.3f} GHz measured by the clock probe (thread CPU "
        f"time) between the timings (/proc/cpuinfo says {core.clock_ghz:.3f} GHz)"
    )
    print(f"libraries built for {json.dumps(BUILD_TARGET)} (AVX2; qemu 7.2 TCG has no AVX-512)")
    print(f"{'model':<44} {'measured ms':>12} {'simulated ms':>13} {'error':>8}")
    for r, s_ms, e in zip(rows, sim, err, strict=True):
        print(f"{r['name'][:44]:<44} {r['measured_ms']:>12.3f} {s_ms:>13.3f} {e:>+8.1%}")
    rho = spearmanr(sim, meas).statistic if len(rows) > 2 else float("nan")
    print(
        f"\n{len(rows)} models: within ±10 %: {np.mean(np.abs(err) <= 0.10):.0%}, within ±20 %: "
        f"{np.mean(np.abs(err) <= 0.20):.0%}, median |error| {np.median(np.abs(err)):.1%}, "
        f"mean error {np.mean(err):+.1%}, Spearman {rho:.3f}"
    )
    at_nominal = np.abs(nominal / meas - 1)
    print(f"at the /proc/cpuinfo clock: within ±20 %: {np.mean(at_nominal <= 0.20):.0%}")
    shares: dict[str, list[float]] = {}
    for r in rows:
        total = sum(r["kernel_ms"].values())
        for cls, ms in r["kernel_ms"].items():
            shares.setdefault(cls, []).append(ms / max(total, 1e-12))
    print(
        "simulated time by kernel class (mean share over models): "
        + ", ".join(
            f"{c} {np.mean(v):.0%}" for c, v in sorted(shares.items(), key=lambda kv: -np.mean(kv[1]))
        )
    )
    per_class_fit(rows, clock_hz)
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": f"{core.model.cpu} at {clock_hz / 1e9:.2f} GHz (measured)",
        "models": len(rows),
        "within_10": float(np.mean(np.abs(err) <= 0.10)),
        "within_20": float(np.mean(np.abs(err) <= 0.20)),
        "spearman": float(rho),
        "median_abs_error": float(np.median(np.abs(err))),
    }


def per_class_fit(rows: list[dict], clock_hz: float) -> None:
    """Per kernel class: the factor that best maps its simulated time to the measured totals
    (non-negative least squares over the models; 1.0 = the simulation is right for that class)."""
    from scipy.optimize import nnls

    classes = sorted({c for r in rows for c in r["kernel_ms"]})

    def scale(r: dict) -> float:  # ms at /proc/cpuinfo's clock -> at the probe's
        return r["cycles"] / r["simulated_ms"] * 1e3 / r.get("clock_hz", clock_hz)

    a = np.array([[r["kernel_ms"].get(c, 0.0) * scale(r) for c in classes] for r in rows])
    factors, _ = nnls(a, np.array([r["measured_ms"] for r in rows]))
    fitted = [f"{c} {f:.2f}" for i, (c, f) in enumerate(zip(classes, factors, strict=True)) if a[:, i].any()]
    print("measured / simulated per kernel class (NNLS over the models): " + ", ".join(fitted))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", type=int, default=6, help="architectures per search space")
    ap.add_argument("--corpus", nargs="*", default=list(CORPUS))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, help="write the rows as JSON")
    ap.add_argument(
        "--record", action="store_true", help="keep the summary as the figure `hanasc simulate` prints"
    )
    ap.add_argument("--seed", type=int, default=3, help="seed of the sampled architectures")
    ap.add_argument(
        "--report", type=Path, nargs="+", help="only print the report of the rows earlier --out files wrote"
    )
    args = ap.parse_args()
    core = host_core()
    if args.report:
        runs = [json.loads(path.read_text()) for path in args.report]
        rows = [{"clock_hz": run["probe_clock_hz"], **r} for run in runs for r in run["rows"]]
        summary = report(rows, core, statistics.median(run["probe_clock_hz"] for run in runs))
        if args.record:
            record(summary)
        return
    rows = []
    with tempfile.TemporaryDirectory(prefix="hanasc-bench-sim-") as scratch:
        folders: dict[str, Path] = {}
        for i, (name, mod, probe) in enumerate(models(args.archs, tuple(args.corpus), args.seed)):
            folders[name] = build(mod, probe, Path(scratch) / f"m{i:03d}")
        measured, clock_hz = measure(folders, args.rounds, args.runs)
        for name, folder in folders.items():
            start = time.perf_counter()
            sim = simulate_bundle(folder, core)
            by_class: dict[str, float] = {}
            for k in sim.kernels:
                by_class[kernel_class(k.name)] = by_class.get(kernel_class(k.name), 0.0) + sim.ms(k.cycles)
            rows.append(
                {
                    "name": name,
                    "measured_ms": measured[name],
                    "simulated_ms": sim.total_ms,
                    "cycles": sim.cycles,
                    "kernel_ms": by_class,
                    "simulate_seconds": time.perf_counter() - start,
                }
            )
            print(f"{name}: measured {measured[name]:.3f} ms, simulated {sim.total_ms:.3f} ms", flush=True)
    summary = report(rows, core, clock_hz)
    if args.record:
        record(summary)
    if args.out:
        data = {"core": core.provenance, "probe_clock_hz": clock_hz, "rows": rows}
        args.out.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
