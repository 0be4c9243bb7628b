"""The host latency model trained on kernels timed inside whole shipped networks, scored on others.

    TVM_NUM_THREADS=1 taskset -c 1 python bench/bench_network_latency.py --models 120 --train 30
    python bench/bench_network_latency.py --report-only                 # the tables from the records

Steps: (1) sample N architectures from EfficientNet-Lite0's search space (``bench_latency_model.variants``:
every choice kind mixed, materialized by the hanasc passes); (2) each is lowered by the shipped pipeline
(``lower_to_kernels(..., lowering="shipped")``), built as shipped and run with the VM's instrument hook
(:func:`hanasc.cost_models.network_profile.profile_network`): every kernel call timed in place, and the
uninstrumented whole-model time (records appended as JSON lines, so a run resumes); (3) over random splits,
the XGBoost model is trained on the in-network kernels of ``--train`` networks only
(:func:`~hanasc.cost_models.network_profile.train_on_networks`, per-call overhead fitted on their whole
times) and scores the other networks: share within ±10 % of measured, RMSPE, Spearman. Beside it: a lookup
of the training networks' kernel times (exact kernel, else nearest of its kind), FLOPs-proportional, and
the measured in-network kernel sum of the scored network itself (what the timing noise allows).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from bench_latency_model import metrics, variants
from bench_precision import isa_line


def load(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def collect(path: Path, n: int, seed: int, runs: int, repeat: int) -> None:
    """Profile architectures ``len(records) .. n-1`` and append them to ``path``."""
    from hanasc.cost_models.network_profile import profile_network

    done = len(load(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    for i, v in enumerate(variants(n, seed, skip=done), start=done):
        profile = profile_network(v.mod, "host", runs=runs, repeat=repeat)
        record = {"label": v.label, "profile": profile.to_json() if profile else None}
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if profile is None:
            print(f"{i + 1:>3} {v.label:<40} calls do not match the lowering: skipped", flush=True)
            continue
        print(
            f"{i + 1:>3} {v.label:<40} whole {profile.whole_s * 1e3:7.2f} ms (spread "
            f"{profile.whole_spread:4.0%})  Σ kernels {profile.kernel_sum_s * 1e3:7.2f} ms  "
            f"calls {profile.lowered.total_calls:>3}  [{time.monotonic() - t0:.0f} s]",
            flush=True,
        )


def lookup_ms(train, profile) -> float:
    """Σ kernel times of the training networks: the same kernel's median, else the nearest of its kind."""
    from hanasc.cost_models.kernels import feature_vector
    from hanasc.cost_models.network_profile import merged_rows

    rows = merged_rows(train, "host", "bench")
    by_sig = {r.signature: r.median_s for r in rows}
    feats = np.array([feature_vector(r.features) for r in rows])
    scale = feats.std(axis=0) + 1e-9
    total = 0.0
    for k in profile.lowered.kernels:
        if k.signature not in by_sig:
            v = np.array(feature_vector(k.features))
            kind = k.features.op_kind
            same = [i for i, r in enumerate(rows) if r.features.op_kind == kind] or range(len(rows))
            best = min(same, key=lambda i: float(np.sum(((feats[i] - v) / scale) ** 2)))
            by_sig[k.signature] = rows[best].median_s
        total += by_sig[k.signature] * k.calls
    return total * 1e3


def isolated_predictions(records: list[dict], seed: int, models_root: Path) -> np.ndarray | None:
    """The predictions, for the same networks, of the latency model trained on kernels timed alone in TVM's
    default lowering (``hanasc profile`` without ``--networks``, saved under ``models_root``): each network
    re-sampled (the same seed gives the same architectures), lowered by default and summed, with that
    model's per-call overhead fitted on its swept chains. None when no such model is there."""
    from hanasc.core.relax_params import bind_weights
    from hanasc.cost_models.kernels import lower_to_kernels
    from hanasc.cost_models.latency_model import load_latest

    model = load_latest("host", root=models_root)
    if model is None or model.meta.lowering != "default":
        return None
    predicted = []
    for record, v in zip(records, variants(len(records), seed), strict=True):  # the same order
        if record["profile"]:
            lowered = lower_to_kernels(bind_weights(v.mod, keep_packed=True), "host")
            predicted.append(model.network_s(model.predict_sum_s(lowered), lowered.total_calls) * 1e3)
    return np.array(predicted)


def report(
    records: list[dict], n_train: int, splits: int, seed: int, isolated_root: Path | None = None
) -> None:
    from hanasc.cost_models.network_profile import NetworkProfile, train_on_networks
    from hanasc.cost_models.profiler import Session

    profiles = [NetworkProfile.from_json(r["profile"]) for r in records if r["profile"]]
    n = len(profiles)
    meas = np.array([p.whole_s * 1e3 for p in profiles])
    flops = np.array([p.lowered.flops for p in profiles])
    ksum = np.array([p.kernel_sum_s * 1e3 for p in profiles])
    print(
        f"\n{n} architectures from EfficientNet-Lite0's search space ({len(records) - n} skipped), built as "
        f"shipped and measured on {Session.local().device_id}; {meas.min():.2f}-{meas.max():.2f} ms, median "
        f"spread of repeats {np.median([p.whole_spread for p in profiles]):.1%}; clock: "
        f"{profiles[0].clock}; TVM threads: {os.environ.get('TVM_NUM_THREADS', 'TVM default')}"
    )
    print(isa_line())
    rng = np.random.default_rng(seed)
    scores: dict[str, list] = {}
    for _ in range(splits):
        order = rng.permutation(n)
        train_idx, test_idx = order[:n_train], order[n_train:]
        train = [profiles[i] for i in train_idx]
        model = train_on_networks(train, "host", "bench")
        cal = model.meta.calibration
        test = [profiles[i] for i in test_idx]
        pred = np.array(
            [model.network_s(model.predict_sum_s(p.lowered), p.lowered.total_calls) for p in test]
        )
        look = np.array([cal.apply(lookup_ms(train, p) / 1e3, p.lowered.total_calls) for p in test])
        ratio = meas[train_idx].sum() / flops[train_idx].sum()
        own = np.array([cal.apply(p.kernel_sum_s, p.lowered.total_calls) for p in test])
        for name, values in (
            ("xgboost on in-network kernels + per-call overhead", pred * 1e3),
            ("lookup of the training networks' kernels + overhead", look * 1e3),
            ("FLOPs-proportional (ratio from the training networks)", flops[test_idx] * ratio),
            ("bound: the scored network's own kernel times + overhead", own * 1e3),
        ):
            scores.setdefault(name, []).append(metrics(values, meas[test_idx]))
    print(f"\nTrained on {n_train} networks, scored on the other {n - n_train}; mean over {splits} splits")
    print(f"{'predictor':<58} {'±10%':>6} {'RMSPE':>8} {'Spearman':>9}")
    for name, values in scores.items():
        within, err, rho = np.mean(np.array(values), axis=0)
        print(f"{name:<58} {within:>5.0f}% {err:>7.1f}% {rho:>9.3f}")
    print(f"(Σ in-network kernel times / whole-model time, median: {np.median(ksum / meas):.3f})")
    isolated = isolated_predictions(records, seed, isolated_root) if isolated_root else None
    if isolated is not None:
        from hanasc.cost_models.latency_calibration import fit_calibration

        print("\nThe model trained on kernels timed alone (TVM's default lowering), same networks:")
        print(f"{'xgboost on isolated kernels + chain overhead (all ' + str(n) + ')':<58} ", end="")
        within, err, rho = metrics(isolated, meas)
        print(f"{within:>5.0f}% {err:>7.1f}% {rho:>9.3f}")
        rows = []
        for _ in range(splits):
            order = rng.permutation(n)
            fit, rest = order[:n_train], order[n_train:]
            calls = np.array([p.lowered.total_calls for p in profiles], float)
            cal = fit_calibration(
                list(isolated[fit] / 1e3), list(calls[fit]), list(meas[fit] / 1e3), base="x"
            )
            rows.append(metrics(cal.apply(isolated[rest] / 1e3, calls[rest]) * 1e3, meas[rest]))
        within, err, rho = np.mean(np.array(rows), axis=0)
        name = f"  recalibrated on the {n_train} training networks"
        print(f"{name:<58} {within:>5.0f}% {err:>7.1f}% {rho:>9.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=120)
    parser.add_argument("--train", type=int, default=30, help="networks the model is trained on per split")
    parser.add_argument("--runs", type=int, default=15, help="instrumented runs per network")
    parser.add_argument("--repeat", type=int, default=15, help="whole-model timings per network (median)")
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--records", type=Path, default=None, help="JSON lines of profiled networks (resume)")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument(
        "--isolated-models",
        type=Path,
        default=None,
        help="latency_models folder of a `hanasc profile` run (kernels timed alone): compared on the same "
        "networks",
    )
    args = parser.parse_args()
    from hanasc.core.paths import cache_dir

    path = args.records or cache_dir() / "bench" / f"network_latency_seed{args.seed}.jsonl"
    if not args.report_only:
        collect(path, args.models, args.seed, args.runs, args.repeat)
    report(load(path), args.train, args.splits, args.seed, args.isolated_models)


if __name__ == "__main__":
    main()
