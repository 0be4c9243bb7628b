"""Device latency without the device: the host as a device the cost model has never profiled.

    python bench/bench_device_prior.py                 # 45 + 95 architectures of 2 base models, ~40 min here
    python bench/bench_device_prior.py --quick         # 8 + 16 architectures: a smoke run, not the done-when
    python bench/bench_device_prior.py --report-only   # the table from the stored records

Steps: (1) sample architectures from the search spaces of two base models (EfficientNet-Lite0 from hanasc's
zoo at 64x64, and a MobileNetV2-style CNN built here at 64x64): each gene leaves the original with a
per-model probability p ~ U(0.05, 0.9); each Config is materialized by the hanasc passes, built by the host's
shipped pipeline (``host.build_artifact``), and timed end to end alternately with a fixed reference model
(the first base model, unchanged; its latency = the median per-round ratio to the reference x the reference's
median over the whole run, so the machine's drift between models cancels; ``TVM_NUM_THREADS``
threads, 1 by default: the "device runner" thread count; with one thread the clock is the runner thread's
CPU time, so other processes on a shared machine do not inflate it). The kernels the cost model sees
(features of the fused PrimFuncs) are stored with each timing, so predictors are recomputed from the records.
(2) Score predictors with no kernel profile of this machine (profiles disabled):

- prior: the efficiency-aware roofline prior alone (``cost_models.efficiency``),
- calibrated-k (k = 10, 30): the prior bent by ``cost_models.calibration.fit`` on k whole-model timings,
  scored on the others (>= 100 held out), mean over random splits,
- old one-scale: the pre-efficiency calibration (one scale + per-call + fixed on the plain roofline),
- MACs: ms = a x MACs, a fitted on the same k timings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("TVM_NUM_THREADS", "1")


@dataclass
class Variant:
    base: str
    label: str
    mod: object  # the materialized Relax module, weights as parameters


def mobilenet_v2_style(path: Path) -> Path:
    """A small MobileNetV2-style CNN (stem, 7 inverted-residual blocks, head), exported to ONNX."""
    import torch
    from torch import nn

    def block(cin: int, cout: int, stride: int, expand: int) -> nn.Module:
        hidden = cin * expand
        return nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        )

    class Residual(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return x + self.inner(x)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 16, 3, 1, 1, bias=False),
                nn.BatchNorm2d(16),
                nn.ReLU6(),
                block(16, 24, 2, 4),
                Residual(block(24, 24, 1, 4)),
                block(24, 32, 2, 4),
                Residual(block(32, 32, 1, 4)),
                block(32, 64, 2, 4),
                Residual(block(64, 64, 1, 4)),
                nn.Conv2d(64, 256, 1, bias=False),
                nn.BatchNorm2d(256),
                nn.ReLU6(),
            )
            self.fc = nn.Linear(256, 10)

        def forward(self, x):
            return self.fc(self.features(x).mean(dim=(2, 3)))

    torch.manual_seed(0)
    net = Net().eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        net,
        (torch.randn(1, 3, 32, 32),),
        str(path),
        input_names=["input"],
        output_names=["output"],
        opset_version=17,
        dynamo=False,
    )
    return path


def base_models(cache: Path) -> dict[str, tuple[Path, dict]]:
    """name -> (ONNX path, input shapes)."""
    from hanasc.frontend.model_zoo import fetch

    mbv2 = cache / "bench" / "mbv2_style.onnx"
    if not mbv2.exists():
        mobilenet_v2_style(mbv2)
    return {
        "lite0@64": (fetch("efficientnet-lite0"), {"input": (1, 3, 64, 64)}),
        "mbv2s@64": (mbv2, {"input": (1, 3, 64, 64)}),
    }


def variants(base: str, path: Path, shapes: dict, n: int, seed: int, skip: set[str]) -> Iterator[Variant]:
    """``n`` architectures of one base model's search space, materialized by the hanasc passes."""
    import hanasc
    from hanasc.frontend.calibration import calibrate
    from hanasc.passes.materialize import materialize
    from hanasc.search.architecture_samples import mixed_genome
    from hanasc.search.space import build_space

    model = hanasc.load_model(path, shapes)
    space = build_space(model)
    shape = model.inputs[0].shape
    rng = np.random.default_rng(seed)
    ranges = calibrate(model, [rng.standard_normal(shape).astype("float32") for _ in range(4)])
    for i in range(n):
        genome = mixed_genome(space, rng)
        label = f"{base}/m{i:03d}" if seed < 2 else f"{base}/s{seed}/m{i:03d}"
        if label in skip:  # measured before (resume): same random draws, no materialization
            continue
        yield Variant(base, label, materialize(model.mod, space.decode(genome), ranges))


@dataclass
class Reference:
    """The model every variant is timed beside (the first base model, unchanged)."""

    label: str
    mod: object
    executable: object


def reference_model(cache: Path) -> Reference:
    import hanasc
    from hanasc.targets import host

    label, (path, shapes) = next(iter(base_models(cache).items()))
    model = hanasc.load_model(path, shapes)
    return Reference(f"{label} original", model.mod, host.build_artifact(model.mod))


def measure(variant: Variant, repeat: int, reference: Reference) -> dict:
    """Build with the shipped pipeline, time end to end alternately with the reference model (one round:
    one sample of each, thread CPU time with one thread), and keep what the cost model sees of it."""
    from hanasc.core.relax_params import bind_weights
    from hanasc.cost_models.kernels import lower_to_kernels
    from hanasc.cost_models.timing import cpu_time_sampler, median_ratio, round_robin, time_executable
    from hanasc.targets import host

    lowered = lower_to_kernels(bind_weights(variant.mod, keep_packed=True), "host")
    shipped = lower_to_kernels(variant.mod, "host", "shipped")  # binds the weights as the build does
    executable = host.build_artifact(variant.mod)
    record = {"label": variant.label, "base": variant.base, "runs": repeat}
    if os.environ["TVM_NUM_THREADS"] == "1":  # CPU time of the runner thread: other tenants do not count
        samplers = [
            cpu_time_sampler(executable, variant.mod, min_repeat_ms=20),
            cpu_time_sampler(reference.executable, reference.mod, min_repeat_ms=20),
        ]
        own, beside = round_robin(samplers, repeat)
        median = float(np.median(own))
        record.update(
            raw_ms=median,
            spread=(max(own) - min(own)) / median,
            ratio=median_ratio(own, beside),
            reference=reference.label,
            reference_ms=float(np.median(beside)),
            clock="this CPU, thread CPU time",
        )
    else:
        timing = time_executable(executable, variant.mod, "host", repeat=repeat, min_repeat_ms=40)
        record.update(raw_ms=timing.median_ms, spread=timing.spread, clock=timing.device)
    return record | {
        "threads": int(os.environ["TVM_NUM_THREADS"]),
        "calls": lowered.total_calls,
        "flops": lowered.flops,
        "kernels": [{"calls": k.calls, "features": k.features.to_json()} for k in lowered.kernels],
        "calls_shipped": shipped.total_calls,
        "kernels_shipped": [{"calls": k.calls, "features": k.features.to_json()} for k in shipped.kernels],
    }


def measured_ms(records: list[dict]) -> np.ndarray:
    """Each record's latency: its median ratio to the reference model timed beside it, times the reference's
    median over the whole run (the machine's drift between records cancels); the raw median where the record
    has no reference (multi-threaded runs)."""
    beside = [r["reference_ms"] for r in records if "ratio" in r]
    scale = float(np.median(beside)) if beside else 0.0
    return np.array([r["ratio"] * scale if "ratio" in r else r["raw_ms"] for r in records])


def load_records(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def collect(args, records_path: Path, cache: Path) -> list[dict]:
    records = load_records(records_path)
    done = {r["label"] for r in records}
    counts = [int(n) for n in args.per_base.split(",")]
    start = time.monotonic()
    bases = base_models(cache)
    if len(counts) != len(bases) or min(counts) < 1:
        raise SystemExit(
            f"--per-base {args.per_base}: one positive count per base model ({', '.join(bases)})"
        )
    reference = reference_model(cache)
    for b, (base, (path, shapes)) in enumerate(bases.items()):
        if args.only and base != args.only:
            continue
        for v in variants(base, path, shapes, counts[b], args.seed + b, done):
            record = measure(v, args.repeat, reference)
            with records_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            records.append(record)
            print(
                f"{len(records):>4} {v.label:<16} measured {record['raw_ms']:8.3f} ms "
                f"(spread {record['spread']:4.0%}, {record.get('ratio', 0):.3f}x the reference, "
                f"{record['calls']} calls)  "
                f"[{time.monotonic() - start:.0f} s]",
                flush=True,
            )
    return records


def metrics(pred, meas) -> dict[str, float]:
    from scipy.stats import spearmanr

    from hanasc.cost_models.latency_calibration import rmspe

    pred, meas = np.asarray(pred, float), np.asarray(meas, float)
    ratio = pred / meas
    return {
        "2x": float(np.mean((ratio <= 2) & (ratio >= 0.5)) * 100),
        "10%": float(np.mean(np.abs(ratio - 1) <= 0.10) * 100),
        "rmspe": rmspe(pred, meas),
        "rho": float(spearmanr(pred, meas).statistic),
        "median_ratio": float(np.median(ratio)),
    }


def predictors(records: list[dict], cache: Path, lowering: str = "shipped"):
    """Per model: efficiency-aware prior terms, the plain roofline sum, FLOPs, calls (no kernel profile);
    the kernels of the ``lowering`` the record kept (``shipped``: what the prior reads since 2026-11-29)."""
    from hanasc.cost_models.device_prior import DevicePrior, terms_from_records
    from hanasc.cost_models.kernels import KernelFeatures
    from hanasc.cost_models.prior import roofline
    from hanasc.cost_models.spec import load_spec

    spec = load_spec("host", cache / "host_spec.json")
    terms, plain = [], []
    suffix = "_shipped" if lowering == "shipped" else ""
    for r in records:
        kernels = [(KernelFeatures.from_json(k["features"]), k["calls"]) for k in r[f"kernels{suffix}"]]
        prior = DevicePrior.for_spec(spec, threads=r["threads"], cache=cache)
        terms.append(terms_from_records(kernels, r[f"calls{suffix}"], prior))
        plain.append(sum(roofline(f, spec).seconds * n for f, n in kernels))
    return prior, terms, np.array(plain)


def report(records: list[dict], splits: int, seed: int, cache: Path, lowering: str = "shipped") -> None:
    """The done-when table: prior alone, calibrated with 10 and 30 timings, old one-scale, MACs."""
    from hanasc.cost_models.latency_calibration import fit_calibration, fit_device

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_precision import isa_line

    if lowering == "shipped":
        records = [r for r in records if "kernels_shipped" in r]  # records of earlier runs lack them
    meas = measured_ms(records) / 1e3
    calls = np.array([r["calls"] for r in records])
    flops = np.array([r["flops"] for r in records])
    prior, terms, plain = predictors(records, cache, lowering)
    total = np.array([t.total_s for t in terms])
    bases = sorted({r["base"] for r in records})
    print(isa_line())
    counts = ", ".join(f"{b}: {sum(r['base'] == b for r in records)}" for b in bases)
    print(
        f"\n{len(records)} architectures ({counts})"
        f" sampled with the hanasc passes, built by host.build_artifact, measured end to end on this CPU "
        f"({records[0]['runs']} rounds, {records[0]['threads']} thread(s), each round one sample of the "
        f"model and one of the reference ({records[0].get('reference', 'none')}); latency = median ratio to "
        f"the reference x the reference's median over the run; median spread of the raw samples "
        f"{np.median([r['spread'] for r in records]):.0%}); {meas.min() * 1e3:.2f}-{meas.max() * 1e3:.2f} ms."
    )
    print(
        f"prior: {prior.name}; kernels of the {lowering} lowering; no kernel profile of this machine is used "
        "(profiles disabled)"
    )
    rows: list[tuple[str, str, dict]] = []
    rows.append(("prior (efficiency-aware), uncalibrated", f"all {len(meas)}", metrics(total, meas)))
    rows.append(("plain roofline prior (before), uncalibrated", f"all {len(meas)}", metrics(plain, meas)))
    everything = fit_device(terms, list(meas), device="bench-host", target="host", prior=prior.name)
    rows.append(
        (
            f"bound: calibration fitted on all {len(meas)} ({everything.method}), in-sample",
            f"all {len(meas)}",
            metrics([everything.predict_s(t) for t in terms], meas),
        )
    )
    rng = np.random.default_rng(seed)
    interval_rows = []
    for k in (10, 30):
        if len(meas) - k < 10:
            continue
        acc: dict[str, list[dict]] = {"new": [], "old": [], "macs": []}
        coverage, chosen = [], {}
        for _ in range(splits):
            order = rng.permutation(len(meas))
            fit, rest = order[:k], order[k:]
            cal = fit_device(
                [terms[i] for i in fit], list(meas[fit]), device="bench-host", target="host",
                prior=prior.name,
            )  # fmt: skip
            pred = np.array([cal.predict_s(terms[i]) for i in rest])
            acc["new"].append(metrics(pred, meas[rest]))
            chosen[cal.method] = chosen.get(cal.method, 0) + 1
            lo_hi = np.array([cal.interval(p, 0.9) for p in pred])
            coverage.append(np.mean((meas[rest] >= lo_hi[:, 0]) & (meas[rest] <= lo_hi[:, 1])) * 100)
            old = fit_calibration(list(plain[fit]), list(calls[fit]), list(meas[fit]), base="prior")
            acc["old"].append(metrics([old.apply(plain[i], calls[i]) for i in rest], meas[rest]))
            a = meas[fit].sum() / flops[fit].sum()
            acc["macs"].append(metrics(a * flops[rest], meas[rest]))
        held = f"{len(meas) - k} held out"
        # nanmean: a split whose fit predicts one value for every model has no rank correlation
        mean = {n: {m: float(np.nanmean([d[m] for d in v])) for m in v[0]} for n, v in acc.items()}
        methods = ", ".join(f"{m} x{c}" for m, c in sorted(chosen.items()))
        rows.append((f"calibrated with {k} timings ({methods})", held, mean["new"]))
        rows.append((f"old one-scale calibration, {k} timings", held, mean["old"]))
        rows.append((f"MACs baseline: ms = a x MACs, a from {k} timings", held, mean["macs"]))
        interval_rows.append((k, float(np.mean(coverage))))
    print(
        f"\n{'predictor':<58} {'scored on':<14} {'in 2x':>6} {'±10%':>6} {'RMSPE':>7} {'Spearman':>9} "
        f"{'pred/meas':>9}"
    )
    for name, on, m in rows:
        print(
            f"{name:<58} {on:<14} {m['2x']:>5.0f}% {m['10%']:>5.0f}% {m['rmspe']:>6.1f}% {m['rho']:>9.3f}"
            f" {m['median_ratio']:>9.2f}"
        )
    print(f"(calibrated rows: mean over {splits} random splits; 'pred/meas' is the median ratio)")
    for k, cov in interval_rows:
        print(
            f"90 % prediction interval from the calibration's held-out error, {k} timings: covers "
            f"{cov:.0f} % of held-out models"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--per-base",
        default="45,95",
        help="architectures per base model (lite0@64, mbv2s@64), comma-separated",
    )
    parser.add_argument("--quick", action="store_true", help="8 + 16 architectures, 5 splits: a smoke run")
    parser.add_argument("--repeat", type=int, default=10, help="timing repeats per model (median)")
    parser.add_argument("--splits", type=int, default=20, help="random calibration/held-out splits")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=None, help="cache root (default: the hanasc cache)")
    parser.add_argument(
        "--records", type=Path, action="append", help="JSONL of measured models (resumed; several: merged)"
    )
    parser.add_argument("--only", default=None, help="measure only this base model (parallel runs)")
    parser.add_argument("--report-only", action="store_true", help="print the table from --records only")
    parser.add_argument(
        "--lowering",
        choices=("shipped", "default"),
        default="shipped",
        help="the kernels the predictors read: the shipped build's (what the prior uses) or TVM's default",
    )
    args = parser.parse_args()
    if args.quick:
        args.per_base, args.splits = "8,16", 5

    from hanasc.core.paths import cache_dir

    cache = args.cache or cache_dir()
    paths = args.records or [cache / "bench" / f"device_prior_paired_seed{args.seed}.jsonl"]
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        records = list({r["label"]: r for p in reversed(paths) for r in load_records(p)}.values())
    else:
        records = collect(args, paths[0], cache)
    report(records, args.splits, args.seed, cache, args.lowering)


if __name__ == "__main__":
    main()
