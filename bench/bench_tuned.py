"""hanasc's CPU artifact vs onnxruntime vs TVM's default pipeline, on EfficientNet-Lite0 and a MobileNetV2.

    python bench/bench_tuned.py --minutes 20 --trials 32 --runs 30

Per model: tune (kernels already in the target's database are not tuned again; kernels a default rule
schedules are not tuned), compile a second time to show zero tuning time, then time, with 1 and 2 threads,
interleaved, medians: onnxruntime (original ONNX), ``tvm-default`` (TVM's default CPU pipeline, as
``tvm.compile`` gives it), ``hanasc`` (the artifact ``hanasc compile`` ships without tuning: blocked
NCHW16c/8c convolutions with the default schedules of ``hanasc.targets.cpu_schedules``) and
``hanasc-tuned`` (the same plus MetaSchedule for the kernels no rule schedules). FLOPs are 2 x the layer
table's MACs; the roofline is the host's measured fp32 peak (``load_spec("host")``: numpy sgemm on all
cores, scaled by threads / cores). Prints a per-kernel time breakdown of the tuned module.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

ENGINES = ("onnxruntime", "tvm-default", "hanasc", "hanasc-tuned")


class _Block(nn.Module):
    """MobileNetV2 inverted residual: expand 1x1, depthwise 3x3, project 1x1 (skip when shapes allow)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.body = nn.Sequential(*layers)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.skip else self.body(x)


class MobileNetV2(nn.Module):
    """The MobileNetV2 of Sandler et al. 2018 (width 1.0, 1000 classes), random weights."""

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2))
    SETTINGS += ((6, 320, 1, 1),)

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6()]
        cin = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(_Block(cin, c, s if i == 0 else 1, t))
                cin = c
        layers += [nn.Conv2d(cin, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(1280, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def export_mobilenet_v2(folder: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from builders import randomize_bn

    torch.manual_seed(0)
    model = MobileNetV2().eval()
    randomize_bn(model)
    path = folder / "mobilenet_v2.onnx"
    torch.onnx.export(
        model,
        (torch.randn(1, 3, 224, 224),),
        str(path),
        input_names=["input"],
        output_names=["output"],
        opset_version=17,
        dynamo=False,
    )
    return path


@dataclass
class ModelResult:
    name: str
    gflops: float
    medians_ms: dict[tuple[str, int], float]  # (engine, threads) -> median ms
    first: object  # TunedBuild of the first compile
    second: object  # TunedBuild of the second compile
    max_diff: dict[str, float]  # engine -> max |output - onnxruntime's|
    kernels: list[tuple[str, float, float]]  # name, ms, GFLOP


def set_tvm_threads(n: int) -> None:
    import tvm

    tvm.get_global_func("runtime.config_threadpool")(1, n)


def ort_session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def vm_caller(executable, x: np.ndarray):
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(executable, tvm.cpu())
    arg = tvm.runtime.tensor(x)
    return vm, (lambda: vm["main"](arg))


def interleaved_medians(callers: dict[str, object], runs: int, warmup: int = 3) -> dict[str, float]:
    """Each engine once per round, ``runs`` rounds; median milliseconds per engine."""
    for call in callers.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = defaultdict(list)
    for _ in range(runs):
        for name, call in callers.items():
            start = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def kernel_breakdown(executable, x: np.ndarray, fused_mod, runs: int = 10) -> list[tuple[str, float, float]]:
    """Median-per-call milliseconds of each kernel (VM instrument), with its FLOPs from the fused module."""
    import tvm
    from tvm.s_tir.analysis import estimate_tir_flops

    vm, call = vm_caller(executable, x)
    samples: dict[str, list[float]] = defaultdict(list)
    started: dict[str, float] = {}

    def instrument(func, name, before_run, ret, *args):
        if before_run:
            started[name] = time.perf_counter()
        else:
            samples[name].append(time.perf_counter() - started[name])
        return 0

    call()
    vm.set_instrument(instrument)
    for _ in range(runs):
        call()
    flops = {}
    for gv, func in fused_mod.functions.items():
        if isinstance(func, tvm.tirx.PrimFunc):
            try:
                flops[gv.name_hint] = estimate_tir_flops(tvm.IRModule({"main": func})) / 1e9
            except Exception:
                flops[gv.name_hint] = float("nan")
    rows = []
    for name, t in samples.items():
        calls_per_run = max(1, len(t) // runs)
        rows.append((name, statistics.median(t) * 1e3 * calls_per_run, flops.get(name, float("nan"))))
    return sorted(rows, key=lambda r: -r[1])


def bench_model(
    name: str, path: Path, minutes: float, runs: int, db_dir: Path | None, trials: int
) -> ModelResult:
    import hanasc
    from hanasc.core.relax_params import bind_weights
    from hanasc.targets import host, pipelines, tuning

    loaded = hanasc.load_model(path)
    mod = bind_weights(loaded.mod)
    target = host.tvm_target()
    x = loaded.example_inputs()[loaded.inputs[0].name]
    untuned = host.build_artifact(loaded.mod)  # before tuning: later builds apply the database's records
    print(f"[{name}] tuning up to {minutes} min ...", flush=True)
    options = tuning.TuningOptions(trials_per_task=trials, trials_per_iter=min(trials, 16), group=4)
    say = lambda msg: print(f"  {msg}", flush=True)  # noqa: E731
    first = tuning.tune_and_build(mod, target, minutes=minutes, db_dir=db_dir, options=options, progress=say)
    print(f"[{name}] first compile: {first.summary()}", flush=True)
    second = tuning.tune_and_build(mod, target, minutes=minutes, db_dir=db_dir, options=options)
    print(f"[{name}] second compile: {second.summary()}", flush=True)
    executables = {
        "tvm-default": host.build(mod),
        "hanasc": untuned,
        "hanasc-tuned": first.executable,
    }
    ref = ort_session(path, 1).run(None, {loaded.inputs[0].name: x})[0]
    diffs = {engine: float(np.abs(host.run(exe, [x])[0] - ref).max()) for engine, exe in executables.items()}
    medians: dict[tuple[str, int], float] = {}
    for threads in (1, 2):
        set_tvm_threads(threads)
        sess = ort_session(path, threads)
        callers = {"onnxruntime": lambda sess=sess: sess.run(None, {loaded.inputs[0].name: x})}
        callers |= {engine: vm_caller(exe, x)[1] for engine, exe in executables.items()}
        for engine, ms in interleaved_medians(callers, runs).items():
            medians[(engine, threads)] = ms
    set_tvm_threads(1)
    resolved = tuning.resolve_target(target)
    fused = tuning.tuning_module(pipelines.to_blocked_layout(mod, resolved), resolved)
    kernels = kernel_breakdown(first.executable, x, fused)
    return ModelResult(
        name=name,
        gflops=2 * loaded.totals.macs / 1e9,
        medians_ms=medians,
        first=first,
        second=second,
        max_diff=diffs,
        kernels=kernels,
    )


def print_report(results: list[ModelResult], peak_flops: float, cores: int, runs: int) -> None:
    print(f"\nhost fp32 peak (measured, numpy sgemm, {cores} cores): {peak_flops / 1e9:.1f} GFLOP/s")
    print(f"medians of {runs} interleaved runs, batch 1, 224x224, fp32\n")
    print("| model | GFLOP | threads | engine | median ms | vs onnxruntime | GFLOP/s | % of peak |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        for threads in (1, 2):
            peak = peak_flops * threads / cores
            ort_ms = r.medians_ms[("onnxruntime", threads)]
            for engine in ENGINES:
                ms = r.medians_ms[(engine, threads)]
                rate = r.gflops / (ms / 1e3)
                print(
                    f"| {r.name} | {r.gflops:.3f} | {threads} | {engine} | {ms:.2f} | {ms / ort_ms:.2f}x "
                    f"| {rate:.1f} | {100 * rate * 1e9 / peak:.1f}% |"
                )
    print(
        "\n| model | compile | default-scheduled kernels | kernels to tune | database hits | tuned now "
        "| untuned | trials | tuning min |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for label, b in (("first", r.first), ("second", r.second)):
            print(
                f"| {r.name} | {label} | {b.default_scheduled} | {b.tasks_total} | {b.database_hits} "
                f"| {b.tasks_tuned} | {b.tasks_left} | {b.trials} | {b.tuning_seconds / 60:.1f} |"
            )
    for r in results:
        total = sum(ms for _, ms, _ in r.kernels)
        diffs = ", ".join(f"{e} {d:.1e}" for e, d in r.max_diff.items())
        print(f"\n{r.name}: hanasc-tuned kernels, 1 thread (sum {total:.2f} ms; max |out - ort|: {diffs})")
        print("| kernel | ms | share | GFLOP | GFLOP/s |")
        print("|---|---|---|---|---|")
        for name, ms, gflop in r.kernels[:15]:
            print(f"| {name} | {ms:.3f} | {100 * ms / total:.1f}% | {gflop:.4f} | {gflop / (ms / 1e3):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="tuning budget per model")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--trials", type=int, default=32, help="MetaSchedule trials per kernel")
    parser.add_argument("--db-dir", type=Path, default=None, help="default: cache_dir()/tuning/<target>")
    args = parser.parse_args()
    from hanasc.cost_models.spec import load_spec
    from hanasc.frontend.model_zoo import fetch

    with tempfile.TemporaryDirectory() as scratch:
        models = [
            ("efficientnet-lite0", fetch("efficientnet-lite0")),
            ("mobilenet-v2", export_mobilenet_v2(Path(scratch))),
        ]
        results = [bench_model(n, p, args.minutes, args.runs, args.db_dir, args.trials) for n, p in models]
    print_report(results, load_spec("host").peak("fp32"), os.cpu_count() or 1, args.runs)


if __name__ == "__main__":
    main()
