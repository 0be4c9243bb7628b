"""Simulator vs the naive way, on EfficientNet-Lite0: setup time and time per evaluated Config.

Rows, measured in one run on the same random Configs (all choice kinds mixed) and the same images:
  - simulator (onnxruntime over the simulation graph, built once; a Config only changes its inputs),
  - TVM compile-once (main(input, *weights) compiled once, untuned; weights from the same numpy code),
  - naive (materialize the Config with the real passes + compile + run, per Config).
Usage: python bench/bench_simulator.py [--configs 8] [--naive 2] [--images 16]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import hanasc
from hanasc.core.relax_params import bind_weights
from hanasc.frontend.model_zoo import fetch
from hanasc.passes.materialize import materialize
from hanasc.search.simulated_weights import simulated_weights
from hanasc.search.simulator import Simulator
from hanasc.search.space import build_space
from hanasc.targets import host


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=8)
    parser.add_argument("--naive", type=int, default=2)
    parser.add_argument("--images", type=int, default=16)
    args = parser.parse_args()

    from hanasc.frontend.calibration import calibrate

    model = hanasc.load_model(fetch("efficientnet-lite0"))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.images, *model.inputs[0].shape[1:])).astype(np.float32)
    ranges = calibrate(model, x[:8])
    space = build_space(model)
    configs = [space.decode(space.sample(rng)) for _ in range(args.configs)]

    sim, sim_setup = timed(lambda: Simulator(model, batch=8))
    sim_times = [timed(lambda c=c: sim.run(c, x, ranges))[1] for c in configs]

    tvm_exe, tvm_setup = timed(lambda: host.build(model.mod))
    func = model.mod["main"]

    def tvm_eval(config):
        weights = simulated_weights(func, model.layers, model.weights(), config)
        return [host.run(tvm_exe, [s[None], *weights.values()]) for s in x]

    tvm_times = [timed(lambda c=c: tvm_eval(c))[1] for c in configs[: args.naive]]

    def naive(config):
        exe = host.build(bind_weights(materialize(model.mod, config, ranges)))
        return [host.run(exe, [s[None]]) for s in x]

    naive_times = [timed(lambda c=c: naive(c))[1] for c in configs[: args.naive]]

    print(
        f"EfficientNet-Lite0, {args.images} images per Config, "
        f"search space 10^{space.log10_size():.0f} Configs"
    )
    print(
        f"{'method':<46}{'setup s':>9}{'s/Config (median)':>19}{'ms/image':>10}{'Configs':>9}{'vs naive':>10}"
    )
    naive_med = statistics.median(naive_times)
    rows = [
        ("simulator: onnxruntime, sim graph built once", sim_setup, sim_times),
        ("TVM compile-once, weights as inputs, untuned", tvm_setup, tvm_times),
        ("naive: materialize + compile per Config", 0.0, naive_times),
    ]
    for name, setup, times in rows:
        med = statistics.median(times)
        print(
            f"{name:<46}{setup:>9.1f}{med:>19.2f}{1000 * med / args.images:>10.1f}{len(times):>9}"
            f"{naive_med / med:>9.1f}x"
        )
    print("All figures measured on this machine (wall clock, median over the Configs listed).")


if __name__ == "__main__":
    main()
