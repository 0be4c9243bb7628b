"""How good is the host latency model? Sample architectures, measure each end to end, compare predictors.

    python bench/bench_latency_model.py                         # the full study: 120 models, ~1 h here
    python bench/bench_latency_model.py --models 12 --budget-minutes 2   # small scale
    TVM_NUM_THREADS=1 taskset -c 0 python bench/bench_latency_model.py --cache DIR   # pinned, own store

Steps: (1) profile kernels of EfficientNet-Lite0's search space (+ random shapes) on this CPU within the
budget, each timed alone in TVM's default lowering (``bench_network_latency.py`` trains on kernels timed
inside whole shipped networks instead), and train the XGBoost model; (2) sample N
architectures from the search space (``variants()``: all choice kinds mixed), materialize each with the
hanasc passes, build it as hanasc ships it (``compile_late_bound``) and measure its median end-to-end time
(rows are appended to a CSV, so an interrupted run resumes);
(3) print, for each predictor, the share of models within ±10 % of measured, RMSPE and Spearman rank
correlation:

- xgboost: Σ predicted kernel time × calls + per-call overhead fitted on swept chains (no model measured),
- lookup: Σ kernel times from the profile (exact kernel signature, else nearest profiled kernel of the
  same kind), no overhead: the classic per-layer lookup table,
- FLOPs-proportional: ms ∝ FLOPs, the ratio fitted on k measured models (scored on the others),
- calibrated (k = 10, 30, 100): the roofline prior (or the lookup sum) corrected by scale + per-call
  overhead fitted on k whole-model measurements only, scored on the other models; random splits.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def variants(n: int, seed: int = 0, skip: int = 0) -> Iterator:
    """``n`` architectures from EfficientNet-Lite0's search space, materialized by the hanasc passes
    (:func:`hanasc.search.architecture_samples.sample_architectures`: every choice kind mixed, a per-model
    change rate drawn from U(0.05, 0.9), so the sample spans near-original to heavily changed models)."""
    from hanasc.frontend.model_zoo import fetch
    from hanasc.search.architecture_samples import sample_architectures

    return sample_architectures(fetch("efficientnet-lite0"), n, seed, skip)


def metrics(pred, meas) -> tuple[float, float, float]:
    from scipy.stats import spearmanr

    from hanasc.cost_models.latency_calibration import rmspe

    pred, meas = np.asarray(pred, float), np.asarray(meas, float)
    within = float(np.mean(np.abs(pred / meas - 1) <= 0.10) * 100)
    rho = float(spearmanr(pred, meas).statistic) if len(meas) > 2 else float("nan")
    return within, rmspe(pred, meas), rho


def lookup_sum(lowered, rows) -> float:
    """Σ profiled kernel times: exact signature, else the nearest profiled kernel of the same kind."""
    from hanasc.cost_models.kernels import feature_vector

    by_sig = {r.signature: r for r in rows}
    feats = np.array([feature_vector(r.features) for r in rows])
    scale = feats.std(axis=0) + 1e-9
    total = 0.0
    for k in lowered.kernels:
        if k.signature in by_sig:
            total += by_sig[k.signature].median_s * k.calls
            continue
        same = [i for i, r in enumerate(rows) if r.features.op_kind == k.features.op_kind] or list(
            range(len(rows))
        )
        v = np.array(feature_vector(k.features))
        best = min(same, key=lambda i: float(np.sum(((feats[i] - v) / scale) ** 2)))
        total += rows[best].median_s * k.calls
    return total


def split_metrics(pred, meas, k: int, splits: int, seed: int) -> tuple[float, float, float, int]:
    """Mean metrics over ``splits`` random splits: ``pred(fit_idx)`` fits on k models, scored on the rest."""
    rng = np.random.default_rng(seed)
    scores, held = [], 0
    for _ in range(splits):
        order = rng.permutation(len(meas))
        fit, rest = order[:k], order[k:]
        scores.append(metrics(pred(fit)[rest], meas[rest]))
        held = len(rest)
    within, err, rho = np.mean(np.array(scores), axis=0)
    return float(within), float(err), float(rho), held


COLUMNS = ("label", "measured", "spread", "xgb", "flops", "lookup", "prior_sum", "calls", "kernels")


def load_records(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open() as f:
        return [{k: (v if k == "label" else float(v)) for k, v in row.items()} for row in csv.DictReader(f)]


def append_record(path: Path, record: dict) -> None:
    new = not path.is_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({k: record[k] for k in COLUMNS})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=120)
    parser.add_argument("--budget-minutes", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--splits", type=int, default=20, help="random fit/held-out splits per k")
    parser.add_argument("--cache", type=Path, default=None, help="cache root (default: the hanasc cache)")
    parser.add_argument(
        "--records", type=Path, default=None, help="CSV of measured models, appended and reused (resume)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--build",
        choices=("artifact", "folded"),
        default="folded",
        help="artifact: integer weights bound after fusion (what hanasc deploys); folded: all weights folded",
    )
    parser.add_argument("--report-only", action="store_true", help="print the tables from --records only")
    args = parser.parse_args()

    from hanasc.compile.profile_job import ProfilePlan, profile_target
    from hanasc.core.relax_params import bind_weights
    from hanasc.cost_models.estimate import CostContext
    from hanasc.cost_models.kernels import lower_to_kernels
    from hanasc.cost_models.latency_model import load_latest
    from hanasc.cost_models.prior import roofline
    from hanasc.cost_models.profiler import Session
    from hanasc.cost_models.spec import load_spec
    from hanasc.cost_models.timing import measure_model, time_executable
    from hanasc.frontend.model_zoo import fetch
    from hanasc.targets import host
    from hanasc.targets.late_binding import compile_late_bound

    ctx = CostContext(root=args.cache)
    device = Session.local().device_id
    records_path = args.records or ctx.cache() / "bench" / f"latency_models_{args.build}_seed{args.seed}.csv"
    if args.report_only:
        report(load_records(records_path), load_latest("host", device, root=ctx.models_root()), device,
               args.splits, args.seed)  # fmt: skip
        return
    t0 = time.monotonic()
    summary = profile_target(
        "host",
        ProfilePlan(model=fetch("efficientnet-lite0"), budget_minutes=args.budget_minutes, seed=args.seed),
        db=ctx.db or ctx.cache() / "profiles.sqlite",
        model_root=ctx.models_root(),
    )
    print(summary.table(), f"\n(profiling took {time.monotonic() - t0:.0f} s)\n", flush=True)
    model = load_latest("host", device, root=ctx.models_root())
    with ctx.store() as store:
        rows = store.kernels("host", device)
    spec = load_spec("host", ctx.cache() / "host_spec.json")
    records = load_records(records_path)
    if records:
        print(f"reusing {len(records)} measured models from {records_path}")

    t0 = time.monotonic()
    for v in variants(args.models, args.seed, skip=len(records)):
        if args.build == "artifact":  # what hanasc deploys: integer weights bound after fusion
            lowered = lower_to_kernels(bind_weights(v.mod, keep_packed=True), "host")
            executable = compile_late_bound(v.mod, host.tvm_target())
            timing = time_executable(executable, v.mod, "host", repeat=args.repeat)
        else:  # every weight folded at compile time
            lowered = lower_to_kernels(bind_weights(v.mod), "host")
            timing = measure_model(bind_weights(v.mod), "host", repeat=args.repeat)
        ksum = model.predict_sum_s(lowered)
        record = dict(
            label=v.label,
            measured=timing.median_ms,
            spread=timing.spread,
            xgb=model.network_s(ksum, lowered.total_calls) * 1e3,
            flops=lowered.flops,
            lookup=lookup_sum(lowered, rows) * 1e3,
            prior_sum=sum(roofline(k.features, spec).seconds * k.calls for k in lowered.kernels),
            calls=lowered.total_calls,
            kernels=len(lowered.kernels),
        )
        append_record(records_path, record)
        records.append(record)
        print(
            f"{len(records):>3} {v.label:<40} measured {timing.median_ms:8.2f} ms (spread "
            f"{timing.spread:4.0%})  xgboost {record['xgb']:8.2f}  lookup {record['lookup']:8.2f}  "
            f"[{time.monotonic() - t0:.0f} s]",
            flush=True,
        )
    report(records, model, device, args.splits, args.seed)


def report(records: list[dict], model, device: str, splits: int, seed: int) -> None:
    """Print both tables: kernel-profile predictors, then calibration from whole-model measurements."""
    from hanasc.cost_models.latency_calibration import fit_calibration

    col = {k: np.array([r[k] for r in records], float) for k in COLUMNS if k != "label"}
    meas = col["measured"]
    n = len(records)
    print(
        f"\n{n} architectures from EfficientNet-Lite0's search space on {device}, measured end to end "
        f"(median of repeats; median spread {np.median(col['spread']):.1%}); latency model "
        f"{model.meta.version} trained on {model.meta.n_samples} kernel profiles; TVM threads: "
        f"{os.environ.get('TVM_NUM_THREADS', 'TVM default')}"
    )
    header = f"{'predictor':<52} {'scored on':<16} {'±10%':>6} {'RMSPE':>8} {'Spearman':>9}"

    def row(name: str, within: float, err: float, rho: float, on: str) -> None:
        print(f"{name:<52} {on:<16} {within:>5.0f}% {err:>7.1f}% {rho:>9.3f}")

    def flops_fit(fit):
        return col["flops"] * np.sum(meas[fit]) / np.sum(col["flops"][fit])

    print("\nKernel profiles only (no whole-model measurement enters the predictor)")
    print(header)
    row("xgboost: Σ kernels + per-call overhead", *metrics(col["xgb"], meas), f"all {n}")
    row("lookup table: Σ isolated per-op latencies", *metrics(col["lookup"], meas), f"all {n}")
    within, err, rho, held = split_metrics(flops_fit, meas, 10, splits, seed)
    row("FLOPs-proportional (ratio from 10 models)", within, err, rho, f"{held} held-out")
    row("roofline prior, uncalibrated", *metrics(col["prior_sum"] * 1e3, meas), f"all {n}")

    print(f"\nCalibration from whole-model measurements only (mean over {splits} random splits)")
    print(header)
    for k in (10, 30, 100):
        if k > n - 5:
            print(f"(k={k}: needs more than {k + 5} measured models)")
            continue

        def prior_fit(fit):
            cal = fit_calibration(
                list(col["prior_sum"][fit]), list(col["calls"][fit]), list(meas[fit] / 1e3), base="prior"
            )
            return cal.apply(col["prior_sum"], col["calls"]) * 1e3  # linear: works on arrays

        def lookup_fit(fit):
            cal = fit_calibration(
                list(col["lookup"][fit] / 1e3), list(col["calls"][fit]), list(meas[fit] / 1e3), base="lookup"
            )
            return cal.apply(col["lookup"] / 1e3, col["calls"]) * 1e3

        def xgb_fit(fit):
            cal = fit_calibration(
                list(col["xgb"][fit] / 1e3), list(col["calls"][fit]), list(meas[fit] / 1e3), base="xgboost"
            )
            return cal.apply(col["xgb"] / 1e3, col["calls"]) * 1e3

        for name, fn in (
            (f"xgboost, recalibrated on {k} models", xgb_fit),
            (f"roofline prior, calibrated on {k} models", prior_fit),
            (f"lookup table, calibrated on {k} models", lookup_fit),
            (f"FLOPs-proportional, fitted on {k} models", flops_fit),
        ):
            within, err, rho, held = split_metrics(fn, meas, k, splits, seed)
            row(name, within, err, rho, f"{held} held-out")


if __name__ == "__main__":
    main()
