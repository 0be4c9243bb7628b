"""How good is the host latency model? Sample architectures, measure each end to end, compare predictors.

    python bench/bench_latency_model.py --models 100 --budget-minutes 30     # the full study
    python bench/bench_latency_model.py --models 12 --budget-minutes 4 --resolutions 96 128   # small scale

Steps: (1) profile kernels of EfficientNet-Lite0's search space (+ random shapes) on this CPU within the
budget and train the XGBoost model; (2) build N architecture variants (``variants()``: swap it for the
passes' materializer once it exists), compile each with the fused default pipeline and measure its median
end-to-end time; (3) print, for each predictor, the share of models within ±10 % of measured, RMSPE and
Spearman rank correlation:

- xgboost: Σ predicted kernel time × calls + per-call overhead fitted on swept chains (no model measured),
- flops: ms ∝ FLOPs, the ratio fitted on the first 10 measured models (evaluated on the rest),
- lookup: Σ kernel times from the profile (exact kernel signature, else nearest profiled kernel of the
  same kind), no overhead: the classic per-layer lookup table,
- calibrated prior (k): roofline prior corrected by scale + overhead fitted on k whole-model
  measurements only (evaluated on the rest).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Variant:
    label: str
    onnx_path: Path


def variants(n: int, folder: Path, resolutions: tuple[int, ...], seed: int = 0) -> Iterator[Variant]:
    """EfficientNet-Lite0-like architectures: random width/depth coefficients and input resolutions.

    Random weights (latency does not depend on them). Replace with the search space + materializer.
    """
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    rng = random.Random(seed)
    grid = [
        (w, d, r)
        for w in (0.25, 0.35, 0.4, 0.5, 0.6, 0.75, 0.9, 1.0, 1.1)
        for d in (0.5, 0.75, 1.0, 1.2)
        for r in resolutions
    ]
    for i, (width, depth, res) in enumerate(rng.sample(grid, min(n, len(grid)))):
        model = EfficientNet.from_name(
            "efficientnet-lite0", width_coefficient=width, depth_coefficient=depth
        ).eval()
        path = folder / f"v{i}_w{width}_d{depth}_r{res}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (torch.zeros(1, 3, res, res),),
                str(path),
                input_names=["input"],
                output_names=["logits"],
                opset_version=17,
                dynamo=False,
            )
        yield Variant(f"w{width} d{depth} r{res}", path)


def metrics(pred, meas) -> tuple[float, float, float]:
    from scipy.stats import spearmanr

    from hanasc.cost_models.calibration import rmspe

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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--budget-minutes", type=float, default=30.0)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[160, 192, 224])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=None, help="cache root (default: the hanasc cache)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import hanasc
    from hanasc.cost_models.calibration import fit_calibration
    from hanasc.cost_models.estimate import CostContext
    from hanasc.cost_models.kernels import lower_to_kernels
    from hanasc.cost_models.latency_model import load_latest
    from hanasc.cost_models.measure import measure_model
    from hanasc.cost_models.prior import roofline
    from hanasc.cost_models.profiler import Session
    from hanasc.cost_models.profiling import profile_target
    from hanasc.cost_models.spec import load_spec
    from hanasc.model_zoo import fetch
    from hanasc.relax_params import bind_weights

    ctx = CostContext(root=args.cache)
    device = Session.local().device_id
    t0 = time.monotonic()
    summary = profile_target(
        "host",
        model=fetch("efficientnet-lite0"),
        budget_minutes=args.budget_minutes,
        db=ctx.db or ctx.cache() / "profiles.sqlite",
        model_root=ctx.models_root(),
        seed=args.seed,
    )
    print(summary.table(), f"\n(profiling took {time.monotonic() - t0:.0f} s)\n")
    model = load_latest("host", device, root=ctx.models_root())
    with ctx.store() as store:
        rows = store.kernels("host", device)
    spec = load_spec("host", ctx.cache() / "host_spec.json")

    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for v in variants(args.models, Path(tmp), tuple(args.resolutions), args.seed):
            mod = bind_weights(hanasc.load_model(v.onnx_path).mod)
            lowered = lower_to_kernels(mod, "host")
            measured = measure_model(mod, "host", repeat=args.repeat).median_ms
            kpred = model.predict_kernels_s([k.features for k in lowered.kernels])
            ksum = float(sum(t * k.calls for t, k in zip(kpred, lowered.kernels, strict=True)))
            prior_sum = sum(roofline(k.features, spec).seconds * k.calls for k in lowered.kernels)
            records.append(
                dict(
                    label=v.label,
                    measured=measured,
                    xgb=model.network_s(ksum, lowered.total_calls) * 1e3,
                    flops=lowered.flops,
                    lookup=lookup_sum(lowered, rows) * 1e3,
                    prior_sum=prior_sum,
                    calls=lowered.total_calls,
                )
            )
            r = records[-1]
            print(
                f"{len(records):>3} {v.label:<18} measured {measured:8.2f} ms  xgboost {r['xgb']:8.2f}  "
                f"lookup {r['lookup']:8.2f}  kernels {len(lowered.kernels)}  calls {lowered.total_calls}"
            )

    meas = np.array([r["measured"] for r in records])
    n_fit = min(10, len(records) - 2)
    held = slice(n_fit, None)
    table = [("xgboost (kernel profiles, chain overhead)", np.array([r["xgb"] for r in records]), "all")]
    table.append(("lookup table sum", np.array([r["lookup"] for r in records]), "all"))
    ratio = np.sum(meas[:n_fit]) / np.sum([r["flops"] for r in records[:n_fit]])
    table.append(
        (f"FLOPs-proportional (fit on {n_fit})", np.array([r["flops"] for r in records]) * ratio, "held")
    )
    for k in (10, 30, 100):
        if k > len(records) - 2:
            continue
        cal = fit_calibration(
            [r["prior_sum"] for r in records[:k]],
            [r["calls"] for r in records[:k]],
            list(meas[:k] / 1e3),
            base="prior",
        )
        pred = np.array([cal.apply(r["prior_sum"], r["calls"]) * 1e3 for r in records])
        table.append((f"calibrated prior ({k} models)", pred, f"from {k}"))
    table.append(("uncalibrated prior", np.array([r["prior_sum"] * 1e3 for r in records]), "all"))

    print(
        f"\n{len(records)} architectures on {device}; "
        f"model {model.meta.version} ({model.meta.n_samples} kernels)"
    )
    print(f"{'predictor':<44} {'evaluated on':<14} {'±10%':>6} {'RMSPE':>8} {'Spearman':>9}")
    for name, pred, on in table:
        if on == "all":
            sel = slice(None)
        elif on == "held":
            sel = held
        else:
            sel = slice(int(on.split()[1]), None)
        within, err, rho = metrics(pred[sel], meas[sel])
        n = len(meas[sel])
        print(f"{name:<44} {f'{n} models':<14} {within:>5.0f}% {err:>7.1f}% {rho:>9.3f}")


if __name__ == "__main__":
    main()
